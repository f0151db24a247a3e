//! Calls the API server in process as a given identity: each request runs
//! through the API server's own handler stack (routing, the node authorizer
//! and RBAC, NodeRestriction, admission, storage) exactly as an HTTPS request
//! authenticated with that identity would, without TLS, TCP or HTTP framing.

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt as _;
use hyper::{Method, Request, Response};
use serde_json::Value;
use skiff_apiserver::{Identity, State, with_authenticated_group};
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct LocalApi {
    state: Arc<State>,
}

impl std::fmt::Debug for LocalApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalApi").finish_non_exhaustive()
    }
}

/// The identity kube gives a node's client certificate.
pub fn node_identity(node: &str) -> Identity {
    with_authenticated_group(Identity {
        name: format!("system:node:{node}"),
        uid: String::new(),
        groups: vec!["system:nodes".into()],
        service_account: None,
    })
}

/// The gateway's own identity for cluster-level upkeep (token Secrets,
/// checking a session's Node still stands).
pub fn gateway_identity() -> Identity {
    with_authenticated_group(Identity {
        name: "system:skiff-gateway".into(),
        uid: String::new(),
        groups: vec!["system:masters".into()],
        service_account: None,
    })
}

/// A JSON answer: status code and body (a Status object on errors).
#[derive(Debug, Clone)]
pub struct Answer {
    pub code: u16,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
    /// The Status message of an error answer.
    pub fn message(&self) -> String {
        self.body
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("HTTP {}", self.code))
    }
}

impl LocalApi {
    pub fn new(state: Arc<State>) -> LocalApi {
        LocalApi { state }
    }

    pub fn state(&self) -> &Arc<State> {
        &self.state
    }

    /// Sends one request as `id`; the response body may stream (watch).
    pub async fn request(
        &self,
        id: &Identity,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Response<Body>, String> {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Body::from(body))
            .map_err(|e| format!("local api request {path}: {e}"))?;
        Ok(skiff_apiserver::handle(self.state.clone(), id.clone(), req).await)
    }

    /// A request with a JSON (or patch) body, answered with JSON.
    pub async fn call(
        &self,
        id: &Identity,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Answer, String> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let resp = self.request(id, method, path, content_type, bytes).await?;
        let code = resp.status().as_u16();
        let raw = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("local api {path}: reading body: {e}"))?
            .to_bytes();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Ok(Answer { code, body })
    }

    /// Lists `path`: the list's resourceVersion and its items.
    pub async fn list(&self, id: &Identity, path: &str) -> Result<(String, Vec<Value>), String> {
        let a = self.get(id, path).await?;
        if !a.ok() {
            return Err(format!("{path}: {}", a.message()));
        }
        let rv = a
            .body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("0")
            .to_string();
        let items = match a.body.get("items") {
            Some(Value::Array(v)) => v.clone(),
            _ => Vec::new(),
        };
        Ok((rv, items))
    }

    /// Follows a watch of `path` from `rv`, handing each event on with
    /// `tag` (so one receiver can follow several watches); returns when it
    /// ends (`Ok` when the API closed it or the receiver went, so the
    /// caller lists again).
    pub async fn watch<T: Copy>(
        &self,
        id: &Identity,
        path: &str,
        rv: &str,
        tag: T,
        tx: mpsc::Sender<(T, Value)>,
    ) -> Result<(), String> {
        let path = format!("{path}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true");
        let resp = self
            .request(id, Method::GET, &path, "application/json", Vec::new())
            .await?;
        if !resp.status().is_success() {
            return Err(format!("watch {path} answered {}", resp.status()));
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| e.to_string())?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                if let Ok(ev) = serde_json::from_slice::<Value>(&line)
                    && tx.send((tag, ev)).await.is_err()
                {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    pub async fn get(&self, id: &Identity, path: &str) -> Result<Answer, String> {
        self.call(id, Method::GET, path, "application/json", None)
            .await
    }

    pub async fn create(&self, id: &Identity, path: &str, obj: &Value) -> Result<Answer, String> {
        self.call(id, Method::POST, path, "application/json", Some(obj))
            .await
    }

    /// RFC 7386 merge patch.
    pub async fn merge_patch(
        &self,
        id: &Identity,
        path: &str,
        patch: &Value,
    ) -> Result<Answer, String> {
        self.call(
            id,
            Method::PATCH,
            path,
            "application/merge-patch+json",
            Some(patch),
        )
        .await
    }
}
