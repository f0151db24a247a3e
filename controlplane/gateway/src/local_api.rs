//! Calls the API server in process as a given identity: each request runs
//! through the API server's own handler stack (routing, the node authorizer
//! and RBAC, NodeRestriction, admission, storage) exactly as an HTTPS request
//! authenticated with that identity would, over an in-memory HTTP/1.1 pipe
//! instead of TLS and TCP.
//!
//! Why a pipe: `skiff_apiserver::handle` takes a hyper
//! `Request<Incoming>`, which only a hyper server connection can produce.
//! A public `handle_as(identity, Request<Bytes>)` in the API server would
//! remove this hop.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use skiff_apiserver::{Identity, State, with_authenticated_group};

/// Pipe buffer: large enough that typical objects pass in one write.
const PIPE_BUF: usize = 64 * 1024;

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
    ) -> Result<Response<Incoming>, String> {
        let (client_io, server_io) = tokio::io::duplex(PIPE_BUF);
        let (state, id) = (self.state.clone(), id.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (state, id) = (state.clone(), id.clone());
                async move { Ok::<_, Infallible>(skiff_apiserver::handle(state, id, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server_io), svc)
                .await;
        });
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client_io))
            .await
            .map_err(|e| format!("local api handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "skiff-gateway.local")
            .header("content-type", content_type)
            .header("accept", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("local api request: {e}"))?;
        send.send_request(req)
            .await
            .map_err(|e| format!("local api {path}: {e}"))
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
