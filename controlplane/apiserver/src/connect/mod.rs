//! kube's connect subresources, reaching into pods without an inbound port
//! on any node: `pods/portforward` (`kubectl port-forward`, over SPDY),
//! `pods/proxy` and `services/proxy` (HTTP).
//!
//! Each connection to a pod is a [`PodStream`] from the [`PodConnector`]
//! the node gateway registers in the server [`State`]: a byte stream
//! tunnelled over the pod's node's own connection to the control plane.
//! This crate does not know about nodes' connections.

mod portforward;
mod proxy;

use std::pin::Pin;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use serde_json::Value;

use crate::registry;
use crate::selectors::{FieldSelector, Filter, LabelSelector};
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::storage;

pub use portforward::serve as portforward;

/// A byte stream to a pod: TCP's semantics (half-close included), from
/// the pod's node.
pub type PodStream = tokio::io::DuplexStream;

/// Where a connection goes: a port on a pod's address, on the node that
/// runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTarget {
    pub node: String,
    pub namespace: String,
    pub pod: String,
    pub address: String,
    pub port: u16,
}

/// How the API server reaches pods (the node gateway).
pub trait PodConnector: Send + Sync {
    /// A connection to the target, once the node made it; an error says
    /// why not (node not connected, nothing listening, too many).
    fn connect(
        &self,
        target: PodTarget,
    ) -> Pin<Box<dyn Future<Output = Result<PodStream, ApiError>> + Send + '_>>;
}

impl State {
    /// Routes connections to pods through `c` (the node gateway calls this
    /// when it starts).
    pub fn set_pod_connector(&self, c: Arc<dyn PodConnector>) {
        self.pod_connector.set(c);
    }

    fn pod_connector(&self) -> ApiResult<Arc<dyn PodConnector>> {
        self.pod_connector
            .require("pods cannot be reached: no node gateway is running")
    }
}

/// `NAME`, `NAME:PORT` or `SCHEME:NAME:PORT`, as kube's proxy paths name
/// their target.
fn split_target(spec: &str) -> ApiResult<(&str, Option<&str>)> {
    let (scheme, name, port) = match spec.split(':').collect::<Vec<_>>()[..] {
        [name] => ("", name, None),
        [name, port] => ("", name, Some(port)),
        [scheme, name, port] => (scheme, name, Some(port)),
        _ => {
            return Err(ApiError::bad_request(format!(
                "invalid proxy target {spec:?}"
            )));
        }
    };
    match scheme {
        "" | "http" => Ok((name, port.filter(|p| !p.is_empty()))),
        other => Err(ApiError::bad_request(format!(
            "scheme {other:?} is not supported: Skiff proxies plain HTTP to pods"
        ))),
    }
}

/// A pod that runs somewhere and has its address: (object, node, address).
async fn placed_pod(state: &State, ns: &str, name: &str) -> ApiResult<(Value, String, String)> {
    let pods = registry::find("", "v1", "pods").expect("registered");
    let pod = storage::get(&state.store, pods, ns, name).await?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending");
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str);
    let ip = pod.pointer("/status/podIP").and_then(Value::as_str);
    match (phase, node, ip) {
        ("Running", Some(node), Some(ip)) if !node.is_empty() && !ip.is_empty() => {
            let (node, ip) = (node.to_string(), ip.to_string());
            Ok((pod, node, ip))
        }
        _ => Err(ApiError::bad_request(format!(
            "pod {name} is not running (phase {phase}): unable to reach it"
        ))),
    }
}

/// A container port of the pod by number or name.
fn pod_port(pod: &Value, name: &str, port: Option<&str>) -> ApiResult<u16> {
    let ports = || {
        pod.pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
    };
    let number = |p: &Value| p.get("containerPort").and_then(Value::as_u64);
    let found = match port {
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(u64::from(n)),
            _ => ports()
                .find(|c| c.get("name").and_then(Value::as_str) == Some(p))
                .and_then(number),
        },
        // kube's choice: the first declared container port.
        None => ports().find_map(number),
    };
    found
        .and_then(|n| u16::try_from(n).ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ApiError::bad_request(match port {
                Some(p) => format!("pod {name} has no port {p:?}"),
                None => format!("pod {name} declares no container port: name one (NAME:PORT)"),
            })
        })
}

/// `pods/proxy`: `/api/v1/namespaces/NS/pods/NAME[:PORT]/proxy/PATH`.
pub async fn pod_proxy(
    state: &State,
    ns: &str,
    spec: &str,
    path: &str,
    req: Request<Body>,
) -> ApiResult<Response<Body>> {
    let (name, port) = split_target(spec)?;
    let (pod, node, address) = placed_pod(state, ns, name).await?;
    let port = pod_port(&pod, name, port)?;
    let target = PodTarget {
        node,
        namespace: ns.to_string(),
        pod: name.to_string(),
        address,
        port,
    };
    proxy::forward(state.pod_connector()?.as_ref(), target, path, req).await
}

/// `services/proxy`: a ready endpoint of the Service, chosen at random,
/// as kube's apiserver does.
pub async fn service_proxy(
    state: &State,
    ns: &str,
    spec: &str,
    path: &str,
    req: Request<Body>,
) -> ApiResult<Response<Body>> {
    let (name, port) = split_target(spec)?;
    let services = registry::find("", "v1", "services").expect("registered");
    let svc = storage::get(&state.store, services, ns, name).await?;
    if svc.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return Err(ApiError::bad_request(format!(
            "service {name} is of type ExternalName: nothing to proxy to"
        )));
    }
    let svc_ports: Vec<&Value> = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|p| p.iter().collect())
        .unwrap_or_default();
    let port_name = |p: &Value| {
        p.get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let chosen = match port {
        Some(p) => svc_ports.iter().find(|sp| {
            port_name(sp) == p
                || sp
                    .get("port")
                    .and_then(Value::as_u64)
                    .map(|n| n.to_string())
                    == Some(p.to_string())
        }),
        None if svc_ports.len() == 1 => svc_ports.first(),
        None => svc_ports.iter().find(|sp| port_name(sp).is_empty()),
    }
    .ok_or_else(|| {
        ApiError::bad_request(format!(
            "no service port {:?} found for service {name:?}",
            port.unwrap_or("")
        ))
    })?;
    let wanted = port_name(chosen);
    let slices = registry::find("discovery.k8s.io", "v1", "endpointslices").expect("registered");
    let filter = Filter {
        labels: LabelSelector::parse(&format!("kubernetes.io/service-name={name}"))?,
        fields: FieldSelector::parse("")?,
    };
    let page = storage::list(&state.store, slices, ns, &filter, 0, None).await?;
    let mut ready = Vec::new();
    for slice in &page.items {
        let Some(port) = slice
            .get("ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|p| port_name(p) == wanted)
            .and_then(|p| p.get("port").and_then(Value::as_u64))
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice
            .get("endpoints")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let is_ready = ep.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false);
            let address = ep.pointer("/addresses/0").and_then(Value::as_str);
            let pod = ep
                .pointer("/targetRef/name")
                .and_then(Value::as_str)
                .filter(|_| ep.pointer("/targetRef/kind").and_then(Value::as_str) == Some("Pod"));
            if let (true, Some(address), Some(pod)) = (is_ready, address, pod) {
                ready.push((
                    pod.to_string(),
                    address.to_string(),
                    port,
                    ep.get("nodeName")
                        .and_then(Value::as_str)
                        .map(str::to_string),
                ));
            }
        }
    }
    if ready.is_empty() {
        return Err(ApiError::new(
            503,
            "ServiceUnavailable",
            format!("no endpoints available for service \"{name}\""),
        ));
    }
    let pick = rand_index(ready.len());
    let (pod, address, port, node) = ready.swap_remove(pick);
    let node = match node {
        Some(n) => n,
        None => placed_pod(state, ns, &pod).await?.1,
    };
    let target = PodTarget {
        node,
        namespace: ns.to_string(),
        pod,
        address,
        port,
    };
    proxy::forward(state.pod_connector()?.as_ref(), target, path, req).await
}

fn rand_index(n: usize) -> usize {
    let mut b = [0u8; 8];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).is_err() {
        return 0;
    }
    (u64::from_le_bytes(b) % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxy_targets_parse_as_kube_names_them() {
        assert_eq!(split_target("web").unwrap(), ("web", None));
        assert_eq!(split_target("web:8080").unwrap(), ("web", Some("8080")));
        assert_eq!(
            split_target("http:web:http").unwrap(),
            ("web", Some("http"))
        );
        assert_eq!(split_target("web:").unwrap(), ("web", None));
        assert_eq!(split_target("https:web:443").unwrap_err().code, 400);
        assert_eq!(split_target("a:b:c:d").unwrap_err().code, 400);
    }

    #[test]
    fn pod_ports_resolve_by_number_name_or_the_first_declared() {
        let pod = json!({"spec": {"containers": [
            {"name": "a"},
            {"name": "b", "ports": [{"name": "http", "containerPort": 8080}, {"containerPort": 9090}]}
        ]}});
        assert_eq!(pod_port(&pod, "p", None).unwrap(), 8080);
        assert_eq!(pod_port(&pod, "p", Some("http")).unwrap(), 8080);
        assert_eq!(pod_port(&pod, "p", Some("9090")).unwrap(), 9090);
        // Any number goes (kube proxies to undeclared ports too).
        assert_eq!(pod_port(&pod, "p", Some("7000")).unwrap(), 7000);
        assert!(
            pod_port(&pod, "p", Some("grpc"))
                .unwrap_err()
                .message
                .contains("no port \"grpc\"")
        );
        assert_eq!(
            pod_port(&json!({"spec": {}}), "p", None).unwrap_err().code,
            400
        );
    }
}
