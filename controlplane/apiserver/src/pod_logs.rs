//! The `pods/log` subresource (`kubectl logs`): kube's `PodLogOptions`
//! from the query, the container choice and checks kube's apiserver makes,
//! then the node's output streamed as chunked `text/plain`.
//!
//! The bytes come from a [`LogProvider`] that the node gateway registers in
//! the server [`State`] (this crate does not know about nodes' connections).
//! Dropping the response body (the client went away) drops the
//! [`LogStream`], whose drop hook lets the provider cancel the stream on
//! the node.

use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::http::Query;
use crate::registry;
use crate::server::State;
use crate::status::{ApiError, ApiResult, Target};
use crate::storage;

/// What one `kubectl logs` asks of a node, resolved against the pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    pub node: String,
    pub container: String,
    pub follow: bool,
    pub tail_lines: Option<u32>,
    /// Wall-clock lower bound (Unix ms) from `sinceSeconds`/`sinceTime`.
    pub since_ms: Option<u64>,
    pub limit_bytes: Option<u64>,
    pub timestamps: bool,
    pub previous: bool,
}

/// One piece of a log stream: output, or the error that ends it. The
/// channel closing is the normal end.
pub type LogItem = Result<Bytes, ApiError>;

/// A log stream from a provider. The first item is the node's answer to
/// the request (an error then is a refusal: no such container, …).
pub struct LogStream {
    rx: mpsc::Receiver<LogItem>,
    on_drop: Option<Box<dyn FnOnce() + Send + Sync>>,
}

impl LogStream {
    /// `on_drop` runs when the reader is done or gone (cancel the source).
    pub fn new(
        rx: mpsc::Receiver<LogItem>,
        on_drop: impl FnOnce() + Send + Sync + 'static,
    ) -> LogStream {
        LogStream {
            rx,
            on_drop: Some(Box::new(on_drop)),
        }
    }

    pub async fn next(&mut self) -> Option<LogItem> {
        self.rx.recv().await
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if let Some(f) = self.on_drop.take() {
            f();
        }
    }
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream").finish_non_exhaustive()
    }
}

/// Where container logs come from (the node gateway).
pub trait LogProvider: Send + Sync {
    /// Asks the pod's node for the stream. Fails at once when the node
    /// can't be asked (not connected, too many streams).
    fn open(&self, q: LogQuery) -> Result<LogStream, ApiError>;
}

/// How long the node gets to answer a request before the client gets 504.
const FIRST_ANSWER: Duration = Duration::from_secs(30);

/// kube's `PodLogOptions`, parsed and validated from the query string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Options {
    container: Option<String>,
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<u32>,
    since_ms: Option<u64>,
    limit_bytes: Option<u64>,
}

fn int(q: &Query, key: &str) -> ApiResult<Option<i64>> {
    q.get(key)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                ApiError::bad_request(format!("invalid {key} {v:?}: expected an integer"))
            })
        })
        .transpose()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn options(q: &Query, pod: &str) -> ApiResult<Options> {
    let tail = int(q, "tailLines")?;
    let limit = int(q, "limitBytes")?;
    let since_secs = int(q, "sinceSeconds")?;
    let since_time = q
        .get("sinceTime")
        .filter(|v| !v.is_empty())
        .map(|v| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>(
                Value::String(v.to_string()),
            )
            .map(|t| t.0.as_millisecond().max(0) as u64)
            .map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid sinceTime {v:?}: expected an RFC 3339 time"
                ))
            })
        })
        .transpose()?;
    // ValidatePodLogOptions' causes and wording.
    let mut causes = Vec::new();
    if let Some(n) = tail.filter(|n| *n < 0) {
        causes.push((
            "tailLines".to_string(),
            format!("Invalid value: {n}: must be greater than or equal to 0"),
        ));
    }
    if let Some(n) = limit.filter(|n| *n < 1) {
        causes.push((
            "limitBytes".to_string(),
            format!("Invalid value: {n}: must be greater than 0"),
        ));
    }
    if let Some(n) = since_secs.filter(|n| *n < 1) {
        causes.push((
            "sinceSeconds".to_string(),
            format!("Invalid value: {n}: must be greater than 0"),
        ));
    }
    if since_secs.is_some() && since_time.is_some() {
        causes.push((
            String::new(),
            "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified".to_string(),
        ));
    }
    if !causes.is_empty() {
        let t = Target {
            group: "",
            plural: "podlogoptions",
            kind: "PodLogOptions",
            name: pod,
        };
        return Err(ApiError::invalid(t, &causes));
    }
    Ok(Options {
        container: q.get("container").filter(|c| !c.is_empty()).map(Into::into),
        follow: q.get("follow").is_some() && q.flag("follow"),
        previous: q.get("previous").is_some() && q.flag("previous"),
        timestamps: q.get("timestamps").is_some() && q.flag("timestamps"),
        tail_lines: tail.map(|n| n.min(i64::from(u32::MAX)) as u32),
        since_ms: since_time.or_else(|| {
            since_secs.map(|s| now_ms().saturating_sub((s as u64).saturating_mul(1000)))
        }),
        limit_bytes: limit.map(|n| n as u64),
    })
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// kube's `validateContainer`: the named container must exist (init,
/// regular or ephemeral); none named is fine for a one-container pod.
fn pick_container(pod: &Value, name: &str, wanted: Option<&str>) -> ApiResult<String> {
    let containers = names(pod, "containers");
    let all: Vec<String> = names(pod, "initContainers")
        .into_iter()
        .chain(containers.iter().cloned())
        .chain(names(pod, "ephemeralContainers"))
        .collect();
    match wanted {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None if containers.is_empty() => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}"
        ))),
        None => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {name}, choose one of: [{}]",
            all.join(" ")
        ))),
    }
}

/// `GET /api/v1/namespaces/NS/pods/NAME/log` (already authorized as
/// `get pods/log`).
pub async fn get(state: &State, ns: &str, name: &str, q: &Query) -> ApiResult<Response<Body>> {
    let opts = options(q, name)?;
    let pods = registry::find("", "v1", "pods").expect("registered");
    let pod = storage::get(&state.store, pods, ns, name).await?;
    let container = pick_container(&pod, name, opts.container.as_deref())?;
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container {container:?} in pod {name:?} is waiting to start: the pod is not scheduled to a node yet"
        )));
    }
    let provider = state
        .log_provider
        .require("pod logs are unavailable: no node gateway is running")?;
    let mut stream = provider.open(LogQuery {
        namespace: ns.to_string(),
        pod: name.to_string(),
        pod_uid: storage::meta_str(&pod, "uid").unwrap_or("").to_string(),
        node: node.to_string(),
        container,
        follow: opts.follow,
        tail_lines: opts.tail_lines,
        since_ms: opts.since_ms,
        limit_bytes: opts.limit_bytes,
        timestamps: opts.timestamps,
        previous: opts.previous,
    })?;
    // Refusals become the HTTP status, as the kubelet's do in kube.
    let first = match tokio::time::timeout(FIRST_ANSWER, stream.next()).await {
        Err(_) => {
            return Err(ApiError::timeout(format!(
                "node {node:?} did not answer the log request for pod {name:?} in time"
            )));
        }
        Ok(Some(Err(e))) => return Err(e),
        Ok(Some(Ok(b))) => Some(b).filter(|b| !b.is_empty()),
        Ok(None) => None,
    };
    let body = futures_util::stream::unfold((first, stream), |(first, mut stream)| async move {
        if let Some(b) = first {
            return Some((Ok(b), (None, stream)));
        }
        loop {
            match stream.next().await? {
                Ok(b) if b.is_empty() => continue,
                Ok(b) => return Some((Ok(b), (None, stream))),
                // Mid-stream failure: abort the chunked body so the client
                // sees a broken stream, not a clean end.
                Err(e) => return Some((Err(std::io::Error::other(e.message)), (None, stream))),
            }
        }
    });
    Ok(Response::builder()
        .status(200)
        .header("content-type", "text/plain")
        .header("cache-control", "no-cache, private")
        .body(Body::from_stream(body))
        .expect("static response parts"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn q(s: &str) -> Query {
        Query::parse(Some(s))
    }

    #[test]
    fn options_follow_kube_validation() {
        let o = options(
            &q("container=a&follow=true&tailLines=2&limitBytes=10&timestamps=true&previous=false"),
            "p",
        )
        .unwrap();
        assert_eq!(
            o,
            Options {
                container: Some("a".into()),
                follow: true,
                previous: false,
                timestamps: true,
                tail_lines: Some(2),
                since_ms: None,
                limit_bytes: Some(10),
            }
        );
        assert_eq!(options(&q(""), "p").unwrap(), Options::default());
        let e = options(&q("tailLines=-1&limitBytes=0"), "p").unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: [tailLines: Invalid value: -1: must be greater than or equal to 0, limitBytes: Invalid value: 0: must be greater than 0]"
        );
        let e = options(&q("sinceSeconds=5&sinceTime=2024-01-01T00:00:00Z"), "p").unwrap_err();
        assert!(e.message.contains("at most one of `sinceTime`"), "{e:?}");
        assert_eq!(options(&q("tailLines=x"), "p").unwrap_err().code, 400);
        let t = options(&q("sinceTime=2024-01-01T00:00:01Z"), "p").unwrap();
        assert_eq!(t.since_ms, Some(1_704_067_201_000));
        let s = options(&q("sinceSeconds=60"), "p").unwrap();
        let ago = now_ms() - s.since_ms.unwrap();
        assert!((59_000..=61_000).contains(&ago), "{ago}");
    }

    #[test]
    fn container_choice_matches_kube() {
        let one = json!({"spec": {"containers": [{"name": "main"}]}});
        assert_eq!(pick_container(&one, "p", None).unwrap(), "main");
        assert_eq!(pick_container(&one, "p", Some("main")).unwrap(), "main");
        assert_eq!(
            pick_container(&one, "p", Some("x")).unwrap_err().message,
            "container x is not valid for pod p"
        );
        let two = json!({"spec": {
            "initContainers": [{"name": "init"}],
            "containers": [{"name": "a"}, {"name": "b"}]}});
        let e = pick_container(&two, "p", None).unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(
            e.message,
            "a container name must be specified for pod p, choose one of: [init a b]"
        );
        assert_eq!(pick_container(&two, "p", Some("init")).unwrap(), "init");
    }
}
