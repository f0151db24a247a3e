//! API -> nodes: the cluster's Services and EndpointSlices for the nodes'
//! proxies. One list and watch of each for the whole gateway (every node
//! gets the same state, so a watch per session would only multiply the
//! API's work), kept as the protocol's compact [`proto::Service`]s with a
//! generation; each change becomes a delta broadcast to the sessions.
//! A session sends its node the full state (in parts of at most
//! [`SERVICE_FRAME_BUDGET`]) after registration, then the deltas; a node
//! that lost track (`ServiceResyncRequest`) or a session that fell behind
//! the broadcast gets the full state again.
//!
//! The watch runs as the gateway's own identity: it belongs to no one
//! node, and what it reads is what the node authorizer lets every node
//! read (all Services and EndpointSlices), so no node learns more through
//! it than its own credentials would show it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use skiff_apiserver::Identity;
use skiff_node_proto::{self as proto, PlaneToNode, SERVICE_FRAME_BUDGET, ServiceRef};
use tokio::sync::{Notify, broadcast, mpsc};

use crate::local_api::{LocalApi, gateway_identity};

/// `(namespace, name)` of a Service.
type Key = (String, String);

/// Deltas a session may fall behind by before it resends the full state.
const BROADCAST_DEPTH: usize = 1024;
/// Room in a frame beyond the Services themselves (the message's other
/// fields and vector lengths).
const FRAME_SLACK: usize = 256;

/// kube's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10800;

/// One generation step, as sent to nodes.
#[derive(Debug)]
pub struct Delta {
    pub from: u64,
    pub to: u64,
    pub upserts: Vec<proto::Service>,
    pub removes: Vec<ServiceRef>,
}

#[derive(Debug, Default)]
struct State {
    /// 0 until the first listing is in.
    generation: u64,
    /// Each Service with its encoded size.
    services: BTreeMap<Key, (proto::Service, usize)>,
}

/// The full state's frames, its generation, and the deltas after it.
type Snapshot = (Vec<PlaneToNode>, u64, broadcast::Receiver<Arc<Delta>>);

/// The shared Service state and the broadcast of its deltas.
#[derive(Debug)]
pub struct ServiceHub {
    state: Mutex<State>,
    deltas: broadcast::Sender<Arc<Delta>>,
    /// Wakes sessions waiting for the first listing.
    listed: Notify,
}

impl Default for ServiceHub {
    fn default() -> Self {
        ServiceHub {
            state: Mutex::default(),
            deltas: broadcast::channel(BROADCAST_DEPTH).0,
            listed: Notify::new(),
        }
    }
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn encoded_len(s: &proto::Service) -> usize {
    postcard::experimental::serialized_size(s).unwrap_or(usize::MAX)
}

enum Change {
    Upsert(proto::Service),
    Remove(Key),
}

impl ServiceHub {
    /// Applies changes (no-ops dropped) and broadcasts them as deltas of at
    /// most [`SERVICE_FRAME_BUDGET`] each, one generation per delta.
    fn publish(&self, changes: Vec<Change>, first_listing: bool) {
        let mut st = lock(&self.state);
        let mut out: Vec<Delta> = Vec::new();
        let mut size = 0;
        for c in changes {
            let (upsert, remove, len) = match c {
                Change::Upsert(s) => {
                    let key = (s.namespace.clone(), s.name.clone());
                    if st.services.get(&key).is_some_and(|(old, _)| *old == s) {
                        continue;
                    }
                    let len = encoded_len(&s);
                    st.services.insert(key, (s.clone(), len));
                    (Some(s), None, len)
                }
                Change::Remove(key) => {
                    if st.services.remove(&key).is_none() {
                        continue;
                    }
                    let len = key.0.len() + key.1.len() + 4;
                    let r = ServiceRef {
                        namespace: key.0,
                        name: key.1,
                    };
                    (None, Some(r), len)
                }
            };
            if out.is_empty() || size + len > SERVICE_FRAME_BUDGET - FRAME_SLACK {
                out.push(Delta {
                    from: 0,
                    to: 0,
                    upserts: Vec::new(),
                    removes: Vec::new(),
                });
                size = 0;
            }
            size += len;
            let d = out.last_mut().expect("pushed above");
            d.upserts.extend(upsert);
            d.removes.extend(remove);
        }
        if first_listing && st.generation == 0 {
            // The first listing is the initial state, not a change.
            st.generation = 1;
            drop(st);
            self.listed.notify_waiters();
            return;
        }
        for mut d in out {
            d.from = st.generation;
            st.generation += 1;
            d.to = st.generation;
            // No receivers is fine: no session yet.
            let _ = self.deltas.send(Arc::new(d));
        }
    }

    /// The full state in frames, with a receiver for the deltas after it;
    /// `None` until the first listing is in.
    fn snapshot(&self) -> Option<Snapshot> {
        let st = lock(&self.state);
        if st.generation == 0 {
            return None;
        }
        // Subscribed under the lock: no delta is lost between the two.
        let rx = self.deltas.subscribe();
        let g = st.generation;
        let mut parts: Vec<Vec<proto::Service>> = vec![Vec::new()];
        let mut size = 0;
        for (s, len) in st.services.values() {
            if size + len > SERVICE_FRAME_BUDGET - FRAME_SLACK && size > 0 {
                parts.push(Vec::new());
                size = 0;
            }
            size += len;
            parts.last_mut().expect("one at least").push(s.clone());
        }
        let n = parts.len();
        let frames = parts
            .into_iter()
            .enumerate()
            .map(|(i, services)| PlaneToNode::Services {
                generation: g,
                services,
                more: i + 1 < n,
            })
            .collect();
        Some((frames, g, rx))
    }
}

/// Serves one node session (protocol version 3 or later): the full state,
/// then deltas, until the session's queue closes.
pub async fn serve_node(hub: Arc<ServiceHub>, tx: mpsc::Sender<PlaneToNode>, resync: Arc<Notify>) {
    loop {
        let listed = hub.listed.notified();
        let Some((frames, mut at, mut rx)) = hub.snapshot() else {
            listed.await;
            continue;
        };
        for f in frames {
            if tx.send(f).await.is_err() {
                return;
            }
        }
        loop {
            let d = tokio::select! {
                d = rx.recv() => d,
                _ = resync.notified() => break,
            };
            let d = match d {
                Ok(d) => d,
                // Fell behind: start over from the full state.
                Err(broadcast::error::RecvError::Lagged(_)) => break,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            if d.to <= at {
                continue;
            }
            let msg = PlaneToNode::ServiceDelta {
                from_generation: d.from,
                generation: d.to,
                upserts: d.upserts.clone(),
                removes: d.removes.clone(),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            at = d.to;
        }
    }
}

/// The raw objects the hub's state is made from.
#[derive(Default)]
struct Raw {
    services: BTreeMap<Key, Value>,
    /// EndpointSlices by (namespace, Service, slice name).
    slices: BTreeMap<(String, String, String), Value>,
    /// Which Service a slice (namespace, slice name) was filed under.
    owner: BTreeMap<Key, String>,
}

impl Raw {
    fn set_slice(&mut self, v: Value) -> [Option<Key>; 2] {
        let (ns, name) = meta(&v);
        let before = self.drop_slice(&ns, &name);
        let Some(svc) = v
            .pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return [before, None];
        };
        self.owner.insert((ns.clone(), name.clone()), svc.clone());
        self.slices.insert((ns.clone(), svc.clone(), name), v);
        [before, Some((ns, svc))]
    }

    fn drop_slice(&mut self, ns: &str, name: &str) -> Option<Key> {
        let svc = self.owner.remove(&(ns.to_string(), name.to_string()))?;
        self.slices
            .remove(&(ns.to_string(), svc.clone(), name.to_string()));
        Some((ns.to_string(), svc))
    }

    /// The compact Service for `key` now (`None`: no such Service).
    fn compact(&self, key: &Key) -> Option<proto::Service> {
        let svc = self.services.get(key)?;
        let slices = self
            .slices
            .range((key.0.clone(), key.1.clone(), String::new())..)
            .take_while(|((ns, s, _), _)| *ns == key.0 && *s == key.1)
            .map(|(_, v)| v);
        Some(compact(svc, slices))
    }
}

/// An object's (namespace, name).
pub(crate) fn meta(v: &Value) -> (String, String) {
    let s = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}

/// A `protocol` field (TCP when absent, as kube defaults it).
pub(crate) fn protocol(v: Option<&Value>) -> proto::Protocol {
    match v.and_then(Value::as_str) {
        Some("UDP") => proto::Protocol::Udp,
        Some("SCTP") => proto::Protocol::Sctp,
        _ => proto::Protocol::Tcp,
    }
}

fn port_num(v: Option<&Value>) -> Option<u16> {
    v.and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// A Service object and its EndpointSlices, as a node needs them. Kube's
/// defaults for unset fields; IPv4 slices only (nodes are IPv4). A Service
/// too large for one frame keeps the endpoints that fit.
fn compact<'a>(svc: &Value, slices: impl Iterator<Item = &'a Value>) -> proto::Service {
    let (namespace, name) = meta(svc);
    let spec = |f: &str| svc.get("spec").and_then(|s| s.get(f));
    let spec_str = |f: &str| spec(f).and_then(Value::as_str);
    let kind = match spec_str("type") {
        Some("NodePort") => proto::ServiceKind::NodePort,
        Some("LoadBalancer") => proto::ServiceKind::LoadBalancer,
        Some("ExternalName") => proto::ServiceKind::ExternalName,
        _ => proto::ServiceKind::ClusterIP,
    };
    let headless = spec_str("clusterIP") == Some("None");
    let mut cluster_ips = strings(spec("clusterIPs"));
    if cluster_ips.is_empty()
        && let Some(ip) = spec_str("clusterIP")
    {
        cluster_ips.push(ip.to_string());
    }
    cluster_ips.retain(|ip| !ip.is_empty() && ip != "None");
    if kind == proto::ServiceKind::ExternalName {
        cluster_ips.clear();
    }
    let ports = spec("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let port = port_num(p.get("port"))?;
            let target_port = match p.get("targetPort") {
                Some(Value::String(n)) => proto::TargetPort::Name(n.clone()),
                Some(v) => proto::TargetPort::Number(port_num(Some(v)).unwrap_or(port)),
                None => proto::TargetPort::Number(port),
            };
            Some(proto::ServicePort {
                name: p.get("name").and_then(Value::as_str).unwrap_or("").into(),
                protocol: protocol(p.get("protocol")),
                port,
                node_port: port_num(p.get("nodePort")),
                target_port,
            })
        })
        .collect();
    let affinity_timeout_secs = (spec_str("sessionAffinity") == Some("ClientIP")).then(|| {
        spec("sessionAffinityConfig")
            .and_then(|c| c.pointer("/clientIP/timeoutSeconds"))
            .and_then(Value::as_u64)
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or(DEFAULT_AFFINITY_TIMEOUT_SECS)
    });
    let mut s = proto::Service {
        namespace,
        name,
        kind,
        cluster_ips,
        headless,
        ports,
        affinity_timeout_secs,
        internal_local: spec_str("internalTrafficPolicy") == Some("Local"),
        external_local: spec_str("externalTrafficPolicy") == Some("Local"),
        external_name: spec_str("externalName").map(str::to_string),
        slices: slices
            .filter(|v| v.get("addressType").and_then(Value::as_str) == Some("IPv4"))
            .map(endpoint_set)
            .collect(),
    };
    trim(&mut s);
    s
}

fn endpoint_set(v: &Value) -> proto::EndpointSet {
    let ports = v
        .get("ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| {
            Some(proto::EndpointPort {
                name: p.get("name").and_then(Value::as_str).unwrap_or("").into(),
                protocol: protocol(p.get("protocol")),
                port: port_num(p.get("port"))?,
            })
        })
        .collect();
    let endpoints = v
        .get("endpoints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let cond = |c: &str| {
                e.pointer(&format!("/conditions/{c}"))
                    .and_then(Value::as_bool)
            };
            // kube: unset ready means ready; unset serving defers to ready.
            let ready = cond("ready").unwrap_or(true);
            proto::Endpoint {
                addresses: strings(e.get("addresses")),
                node_name: e.get("nodeName").and_then(Value::as_str).map(Into::into),
                hostname: e.get("hostname").and_then(Value::as_str).map(Into::into),
                ready,
                serving: cond("serving").unwrap_or(ready),
                terminating: cond("terminating").unwrap_or(false),
                for_nodes: e
                    .pointer("/hints/forNodes")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.get("name").and_then(Value::as_str).map(Into::into))
                    .collect(),
            }
        })
        .collect();
    proto::EndpointSet { ports, endpoints }
}

/// Drops endpoints (last slices first) until the Service fits one frame's
/// budget.
fn trim(s: &mut proto::Service) {
    let limit = SERVICE_FRAME_BUDGET - FRAME_SLACK;
    loop {
        let len = encoded_len(s);
        if len <= limit {
            return;
        }
        let Some(set) = s.slices.iter_mut().rev().find(|x| !x.endpoints.is_empty()) else {
            return;
        };
        // Cut about the share that is over (at least one) per pass.
        let n = set.endpoints.len();
        let cut = (n * (len - limit) / len).clamp(1, n);
        set.endpoints.truncate(n - cut);
    }
}

const SERVICES: &str = "/api/v1/services";
const SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

/// The hub's one list-and-watch loop, for the gateway's life.
pub async fn run(shared: Arc<crate::Shared>, hub: Arc<ServiceHub>) {
    let api = shared.api.clone();
    let id = gateway_identity();
    let mut first = true;
    loop {
        let began = std::time::Instant::now();
        match sync(&api, &id, &hub, &mut first).await {
            // A watch the API closed at once is no reason to spin.
            Ok(()) if began.elapsed() < Duration::from_secs(1) => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok(()) => {}
            Err(e) => {
                shared
                    .journal
                    .log(format!("services: list/watch failed: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// One listing, then the two watches until either ends.
async fn sync(
    api: &LocalApi,
    id: &Identity,
    hub: &ServiceHub,
    first: &mut bool,
) -> Result<(), String> {
    let (svc_rv, svcs) = api.list(id, SERVICES).await?;
    let (slice_rv, slices) = api.list(id, SLICES).await?;
    let mut raw = Raw::default();
    for v in svcs {
        raw.services.insert(meta(&v), v);
    }
    for v in slices {
        raw.set_slice(v);
    }
    // What changed since the hub's state (everything, the first time).
    let mut changes: Vec<Change> = raw
        .services
        .keys()
        .filter_map(|k| raw.compact(k).map(Change::Upsert))
        .collect();
    let known: Vec<Key> = lock(&hub.state).services.keys().cloned().collect();
    changes.extend(
        known
            .into_iter()
            .filter(|k| !raw.services.contains_key(k))
            .map(Change::Remove),
    );
    hub.publish(changes, std::mem::take(first));

    let (etx, mut erx) = mpsc::channel::<(bool, Value)>(256);
    let w1 = api.watch(id, SERVICES, &svc_rv, true, etx.clone());
    let w2 = api.watch(id, SLICES, &slice_rv, false, etx);
    let apply = async {
        while let Some((is_svc, ev)) = erx.recv().await {
            let obj = ev.get("object").cloned().unwrap_or(Value::Null);
            let kind = ev.get("type").and_then(Value::as_str).unwrap_or("");
            let touched: Vec<Key> = match (kind, is_svc) {
                ("ADDED" | "MODIFIED", true) => {
                    let k = meta(&obj);
                    raw.services.insert(k.clone(), obj);
                    vec![k]
                }
                ("DELETED", true) => {
                    let k = meta(&obj);
                    raw.services.remove(&k);
                    vec![k]
                }
                ("ADDED" | "MODIFIED", false) => raw.set_slice(obj).into_iter().flatten().collect(),
                ("DELETED", false) => {
                    let (ns, name) = meta(&obj);
                    raw.drop_slice(&ns, &name).into_iter().collect()
                }
                ("ERROR", _) => return Err(format!("watch error: {}", obj["message"])),
                _ => continue,
            };
            let changes = touched
                .into_iter()
                .map(|k| match raw.compact(&k) {
                    Some(s) => Change::Upsert(s),
                    None => Change::Remove(k),
                })
                .collect();
            hub.publish(changes, false);
        }
        Ok(())
    };
    tokio::select! {
        r = w1 => r,
        r = w2 => r,
        r = apply => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service() -> Value {
        json!({
            "metadata": {"namespace": "default", "name": "web"},
            "spec": {
                "type": "NodePort",
                "clusterIP": "10.96.0.10",
                "clusterIPs": ["10.96.0.10"],
                "ports": [
                    {"name": "http", "port": 80, "targetPort": "web", "nodePort": 30080, "protocol": "TCP"},
                    {"name": "dns", "port": 53, "protocol": "UDP"}
                ],
                "sessionAffinity": "ClientIP",
                "internalTrafficPolicy": "Local",
                "externalTrafficPolicy": "Cluster"
            }
        })
    }

    fn slice(name: &str, endpoints: Value) -> Value {
        json!({
            "metadata": {"namespace": "default", "name": name,
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints
        })
    }

    #[test]
    fn services_and_slices_become_the_compact_form() {
        let eps = json!([
            {"addresses": ["10.244.1.5"], "nodeName": "n1", "hostname": "web-0",
             "conditions": {"ready": true, "serving": true, "terminating": false},
             "hints": {"forNodes": [{"name": "n1"}]}},
            {"addresses": ["10.244.2.5"], "nodeName": "n2",
             "conditions": {"ready": false, "serving": true, "terminating": true}},
            {"addresses": ["10.244.3.5"]}
        ]);
        let v6 = json!({"metadata": {"namespace": "default", "name": "web-v6"},
                        "addressType": "IPv6", "endpoints": [{"addresses": ["fd00::1"]}]});
        let s = compact(&service(), [slice("web-a", eps), v6].iter());
        assert_eq!(s.kind, proto::ServiceKind::NodePort);
        assert_eq!(s.cluster_ips, vec!["10.96.0.10".to_string()]);
        assert!(!s.headless);
        assert_eq!(
            s.ports[0].target_port,
            proto::TargetPort::Name("web".into())
        );
        assert_eq!(s.ports[0].node_port, Some(30080));
        assert_eq!(s.ports[1].protocol, proto::Protocol::Udp);
        assert_eq!(s.ports[1].target_port, proto::TargetPort::Number(53));
        assert_eq!(s.affinity_timeout_secs, Some(10800));
        assert!(s.internal_local && !s.external_local);
        assert_eq!(s.slices.len(), 1, "IPv6 slices are left out");
        let e = &s.slices[0].endpoints;
        assert_eq!(e[0].hostname.as_deref(), Some("web-0"));
        assert_eq!(e[0].for_nodes, vec!["n1".to_string()]);
        assert!(!e[1].ready && e[1].serving && e[1].terminating);
        // Unset conditions: ready and serving, not terminating.
        assert!(e[2].ready && e[2].serving && !e[2].terminating);
        assert_eq!(e[2].node_name, None);
    }

    #[test]
    fn headless_and_external_name_services() {
        let headless = json!({"metadata": {"namespace": "db", "name": "pg"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]}});
        let s = compact(&headless, [].iter());
        assert!(s.headless);
        assert!(s.cluster_ips.is_empty());
        let ext = json!({"metadata": {"namespace": "db", "name": "x"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}});
        let s = compact(&ext, [].iter());
        assert_eq!(s.kind, proto::ServiceKind::ExternalName);
        assert_eq!(s.external_name.as_deref(), Some("example.com"));
    }

    #[test]
    fn a_huge_service_is_trimmed_to_one_frame() {
        let eps: Vec<Value> = (0..40_000)
            .map(|i| {
                json!({"addresses": [format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)],
                            "nodeName": format!("node-with-a-long-name-{i}")})
            })
            .collect();
        let s = compact(&service(), [slice("web-a", Value::Array(eps))].iter());
        let len = encoded_len(&s);
        assert!(len <= SERVICE_FRAME_BUDGET - FRAME_SLACK, "{len}");
        assert!(s.slices[0].endpoints.len() > 10_000);
    }

    fn svc_named(name: &str, pad: usize) -> proto::Service {
        let mut s = proto::sample::service("default", name);
        s.slices[0].endpoints[0].hostname = Some("h".repeat(pad));
        s
    }

    #[tokio::test]
    async fn sessions_get_the_full_state_in_parts_then_deltas() {
        let hub = Arc::new(ServiceHub::default());
        let (tx, mut rx) = mpsc::channel(64);
        let resync = Arc::new(Notify::new());
        let task = tokio::spawn(serve_node(hub.clone(), tx, resync.clone()));
        // Three Services of ~400 KiB: more than one frame's budget.
        let big: Vec<Change> = (0..3)
            .map(|i| Change::Upsert(svc_named(&format!("s{i}"), 400 << 10)))
            .collect();
        hub.publish(big, true);
        let mut got = Vec::new();
        loop {
            let Some(PlaneToNode::Services {
                generation,
                services,
                more,
            }) = rx.recv().await
            else {
                panic!("expected Services");
            };
            assert_eq!(generation, 1);
            let bytes: usize = services.iter().map(encoded_len).sum();
            assert!(bytes <= SERVICE_FRAME_BUDGET, "{bytes}");
            got.extend(services.into_iter().map(|s| s.name));
            if !more {
                break;
            }
        }
        assert_eq!(got, ["s0", "s1", "s2"]);
        // A change, a no-op and a removal.
        hub.publish(vec![Change::Upsert(svc_named("s0", 1))], false);
        hub.publish(vec![Change::Upsert(svc_named("s0", 1))], false);
        hub.publish(vec![Change::Remove(("default".into(), "s1".into()))], false);
        match rx.recv().await {
            Some(PlaneToNode::ServiceDelta {
                from_generation: 1,
                generation: 2,
                upserts,
                removes,
            }) => {
                assert_eq!(upserts.len(), 1);
                assert!(removes.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match rx.recv().await {
            Some(PlaneToNode::ServiceDelta {
                from_generation: 2,
                generation: 3,
                removes,
                ..
            }) => assert_eq!(removes[0].name, "s1"),
            other => panic!("{other:?}"),
        }
        // The node asks again: the full state at the current generation.
        resync.notify_one();
        let mut names = Vec::new();
        loop {
            match rx.recv().await {
                Some(PlaneToNode::Services {
                    generation: 3,
                    services,
                    more,
                }) => {
                    names.extend(services.into_iter().map(|s| s.name));
                    if !more {
                        break;
                    }
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(names, ["s0", "s2"]);
        task.abort();
    }
}
