//! metrics.k8s.io/v1beta1 served natively: NodeMetrics and PodMetrics as
//! metrics-server answers them, from the usage the nodes report (a
//! [`UsageSource`]: the node gateway registers one). Nothing is stored:
//! get and list only. The Nodes and Pods themselves are read from storage,
//! so names, namespaces and label selectors select exactly what they select
//! on those objects, and an object without a recent sample is left out
//! (get: 404), as metrics-server does.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::Response;
use serde_json::{Value, json};

use crate::http::{Query, json_response};
use crate::registry::Resource;
use crate::selectors::{FieldSelector, Filter, LabelSelector};
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::{registry, storage, tables};

/// A usage rate over a window: CPU as metrics-server computes it (the
/// change in cumulative CPU time over the window), memory as read at the
/// end of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub cpu_nanocores: u64,
    pub memory_bytes: u64,
}

/// A node's figures at `timestamp`, over the `window` before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSample {
    pub timestamp: SystemTime,
    pub window: Duration,
    pub usage: Usage,
}

/// A pod's containers' figures at `timestamp`, over the `window` before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSample {
    pub timestamp: SystemTime,
    pub window: Duration,
    pub containers: Vec<(String, Usage)>,
}

/// The latest usage samples (the node gateway's, from the nodes' reports).
pub trait UsageSource: Send + Sync {
    /// The node's latest sample, if recent.
    fn node(&self, name: &str) -> Option<NodeSample>;
    /// The pod's (by `metadata.uid`) latest sample, if recent.
    fn pod(&self, uid: &str) -> Option<PodSample>;
}

/// Serves an authorized verb on NodeMetrics or PodMetrics.
pub(crate) async fn serve(
    state: &State,
    r: &'static Resource,
    verb: &str,
    ns: &str,
    name: Option<&str>,
    query: &Query,
    table: &Option<Option<String>>,
) -> ApiResult<Response<Body>> {
    let source = state.usage_source.get();
    let of = objects_of(r);
    match (verb, name) {
        ("get", Some(name)) => {
            let obj = storage::get(&state.store, of, ns, name)
                .await
                .map_err(|e| match e.code {
                    404 => ApiError::not_found(storage::target(r, name)),
                    _ => e,
                })?;
            let m = metrics_of(r, source.as_deref(), &obj)
                .ok_or_else(|| ApiError::not_found(storage::target(r, name)))?;
            Ok(match table {
                Some(include) => {
                    json_response(200, &tables::table(r, &[m], include.as_deref(), json!({})))
                }
                None => json_response(200, &m),
            })
        }
        ("list", None) => {
            let filter = Filter {
                labels: LabelSelector::parse(query.get("labelSelector").unwrap_or(""))?,
                fields: FieldSelector::parse(query.get("fieldSelector").unwrap_or(""))?,
            };
            let page = storage::list_at(&state.store, of, ns, &filter, 0, None, None).await?;
            let items: Vec<Value> = page
                .items
                .iter()
                .filter_map(|o| metrics_of(r, source.as_deref(), o))
                .collect();
            Ok(match table {
                Some(include) => json_response(
                    200,
                    &tables::table(r, &items, include.as_deref(), json!({})),
                ),
                None => json_response(
                    200,
                    &json!({
                        "kind": format!("{}List", r.kind),
                        "apiVersion": r.api_version(),
                        "metadata": {},
                        "items": items,
                    }),
                ),
            })
        }
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// The stored kind a metrics kind describes.
fn objects_of(r: &Resource) -> &'static Resource {
    let plural = if r.plural == "nodes" { "nodes" } else { "pods" };
    registry::find("", "v1", plural).expect("core kinds are registered")
}

/// The metrics object for a Node or Pod, if its sample is known.
fn metrics_of(r: &Resource, source: Option<&dyn UsageSource>, obj: &Value) -> Option<Value> {
    let source = source?;
    let meta = obj.get("metadata")?;
    let mut m = json!({"name": meta.get("name")?});
    if let Some(ns) = meta.get("namespace") {
        m["namespace"] = ns.clone();
    }
    if let Some(l) = meta.get("labels") {
        m["labels"] = l.clone();
    }
    let (timestamp, window, body) = if r.plural == "nodes" {
        let s = source.node(meta.get("name")?.as_str()?)?;
        (s.timestamp, s.window, json!({"usage": usage_json(s.usage)}))
    } else {
        let s = source.pod(meta.get("uid")?.as_str()?)?;
        let containers: Vec<Value> = s
            .containers
            .iter()
            .map(|(name, u)| json!({"name": name, "usage": usage_json(*u)}))
            .collect();
        (s.timestamp, s.window, json!({"containers": containers}))
    };
    // metrics-server stamps the object when it answers.
    m["creationTimestamp"] = json!(storage::now_rfc3339());
    let mut out = json!({
        "kind": r.kind,
        "apiVersion": r.api_version(),
        "metadata": m,
        "timestamp": rfc3339(timestamp),
        "window": duration(window),
    });
    if let (Some(o), Some(b)) = (out.as_object_mut(), body.as_object()) {
        o.extend(b.clone());
    }
    Some(out)
}

fn usage_json(u: Usage) -> Value {
    json!({"cpu": format!("{}n", u.cpu_nanocores), "memory": memory(u.memory_bytes)})
}

/// Bytes as metrics-server's quantities print them (binary suffix when exact).
fn memory(bytes: u64) -> String {
    if bytes > 0 && bytes.is_multiple_of(1024) {
        format!("{}Ki", bytes / 1024)
    } else {
        bytes.to_string()
    }
}

/// A Go `time.Duration` string (`metav1.Duration`'s JSON), e.g. `10.004s`.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms % 1000 {
        0 => format!("{}s", ms / 1000),
        frac => format!(
            "{}.{}s",
            ms / 1000,
            format!("{frac:03}").trim_end_matches('0')
        ),
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    k8s_openapi::jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_windows_read_as_kube_writes_them() {
        assert_eq!(duration(Duration::from_millis(10_000)), "10s");
        assert_eq!(duration(Duration::from_millis(10_040)), "10.04s");
        assert_eq!(duration(Duration::from_millis(9_999)), "9.999s");
        assert_eq!(memory(3 << 20), "3072Ki");
        assert_eq!(memory(1000), "1000");
        assert_eq!(memory(0), "0");
        assert_eq!(
            usage_json(Usage {
                cpu_nanocores: 500_000_000,
                memory_bytes: 1 << 20
            }),
            json!({"cpu": "500000000n", "memory": "1024Ki"})
        );
    }
}
