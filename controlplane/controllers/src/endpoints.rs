//! The endpoints controllers: for each Service with a selector, the
//! Endpoints object of the same name and its EndpointSlices (labelled
//! `kubernetes.io/service-name`, one per set of resolved target ports)
//! listing the matching pods that have an IP, with kube's readiness,
//! terminating and topology-hint rules (see [`desired`]).
//!
//! Both carry an owner reference to the Service (kube sets it on slices
//! only), so the garbage collector removes them with it.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointHints, EndpointPort as SlicePort, EndpointSlice, ForNode,
    ForZone,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::util;
use crate::{Error, Shared};

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    !sel.is_empty()
        && util::namespace(&svc.metadata) == util::namespace(&pod.metadata)
        && pod
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| sel.iter().all(|(k, v)| l.get(k) == Some(v)))
}

/// The container port a Service port targets on `pod` (a named targetPort
/// resolves through the pod's container ports).
fn target_port(pod: &Pod, p: &k8s_openapi::api::core::v1::ServicePort) -> Option<i32> {
    match p.target_port.clone().unwrap_or(IntOrString::Int(p.port)) {
        IntOrString::Int(i) => Some(i),
        IntOrString::String(name) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|cp| cp.name.as_deref() == Some(name.as_str()))
            .map(|cp| cp.container_port),
    }
}

fn pod_ip(pod: &Pod) -> Option<&str> {
    pod.status
        .as_ref()?
        .pod_ip
        .as_deref()
        .filter(|ip| !ip.is_empty())
}

/// The node zone label kube copies into `Endpoint.zone`.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// `spec.trafficDistribution` that asks for same-node endpoints (kube 1.33).
const PREFER_SAME_NODE: &str = "PreferSameNode";

/// The pure decision: the Endpoints object and the EndpointSlices (one per
/// distinct set of resolved target ports, as kube cuts them) for `svc`.
/// `zone_of` gives a node's zone label. Kube's rules: Endpoints lists ready
/// pods as addresses and the others as not-ready, terminating pods left
/// out; slices keep terminating pods with `terminating: true` (so proxies
/// can drain them), `serving` their readiness; `publishNotReadyAddresses`
/// makes every pod ready; `trafficDistribution: PreferSameNode` sets each
/// endpoint's `hints.forNodes`.
pub fn desired(
    svc: &Service,
    pods: &[Arc<Pod>],
    zone_of: impl Fn(&str) -> Option<String>,
) -> (Endpoints, Vec<EndpointSlice>) {
    let ns = util::namespace(&svc.metadata);
    let name = util::name(&svc.metadata);
    let spec = svc.spec.clone().unwrap_or_default();
    let mut pods: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| selects(svc, p) && pod_ip(p).is_some())
        .filter(|p| !util::pod_succeeded(p) && !util::pod_failed(p))
        .collect();
    pods.sort_by_key(|p| util::name(&p.metadata).to_string());
    let svc_ports = spec.ports.clone().unwrap_or_default();
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let same_node = spec.traffic_distribution.as_deref() == Some(PREFER_SAME_NODE);
    let ready = |p: &Pod| publish_not_ready || (util::pod_ready(p) && !util::deleting(&p.metadata));
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.into(),
        uid: util::uid(&svc.metadata).into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    // A pod's hostname counts when it names this (headless) Service as its
    // subdomain: `<hostname>.<svc>.<ns>.svc` resolves to it.
    let hostname = |p: &Pod| {
        let ps = p.spec.as_ref()?;
        (ps.subdomain.as_deref() == Some(name))
            .then(|| ps.hostname.clone())
            .flatten()
    };
    let target_ref = |p: &Pod| ObjectReference {
        kind: Some("Pod".into()),
        namespace: Some(ns.into()),
        name: Some(util::name(&p.metadata).into()),
        uid: p.metadata.uid.clone(),
        ..Default::default()
    };
    let node_of = |p: &Pod| Some(util::pod_node(p).to_string()).filter(|n| !n.is_empty());
    // Pods grouped by their resolved ports: (name, port, protocol) each.
    type Ports = Vec<(String, i32, String)>;
    let mut groups: BTreeMap<Ports, Vec<&Pod>> = BTreeMap::new();
    for p in &pods {
        let ports: Ports = svc_ports
            .iter()
            .filter_map(|sp| {
                Some((
                    sp.name.clone().unwrap_or_default(),
                    target_port(p, sp)?,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        groups.entry(ports).or_default().push(p);
    }

    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .filter_map(|(ports, pods)| {
            let addr = |p: &&&Pod| EndpointAddress {
                ip: pod_ip(p).unwrap_or_default().into(),
                node_name: node_of(p),
                target_ref: Some(target_ref(p)),
                hostname: hostname(p),
            };
            let live: Vec<&&Pod> = pods
                .iter()
                .filter(|p| publish_not_ready || !util::deleting(&p.metadata))
                .collect();
            if live.is_empty() {
                return None;
            }
            let (up, down): (Vec<&&Pod>, Vec<&&Pod>) = live.into_iter().partition(|p| ready(p));
            Some(EndpointSubset {
                addresses: Some(up.iter().map(addr).collect()).filter(|a: &Vec<_>| !a.is_empty()),
                not_ready_addresses: Some(down.iter().map(addr).collect())
                    .filter(|a: &Vec<_>| !a.is_empty()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, port, proto)| EndpointPort {
                            name: Some(n.clone()).filter(|n| !n.is_empty()),
                            port: *port,
                            protocol: Some(proto.clone()),
                            app_protocol: None,
                        })
                        .collect(),
                ),
            })
        })
        .collect();
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: svc.metadata.labels.clone(),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        subsets: Some(subsets).filter(|s| !s.is_empty()),
    };

    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let slice = |ports: &Ports, pods: &[&Pod]| EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(name, ports)),
            namespace: Some(ns.into()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: pods
            .iter()
            .map(|p| {
                let node = node_of(p);
                let zone = node.as_deref().and_then(&zone_of);
                Endpoint {
                    addresses: vec![pod_ip(p).unwrap_or_default().into()],
                    conditions: Some(EndpointConditions {
                        ready: Some(ready(p)),
                        serving: Some(publish_not_ready || util::pod_ready(p)),
                        terminating: Some(util::deleting(&p.metadata)),
                    }),
                    hints: node.clone().filter(|_| same_node).map(|n| EndpointHints {
                        for_nodes: Some(vec![ForNode { name: n }]),
                        for_zones: zone.clone().map(|z| vec![ForZone { name: z }]),
                    }),
                    hostname: hostname(p),
                    node_name: node,
                    target_ref: Some(target_ref(p)),
                    zone,
                    ..Default::default()
                }
            })
            .collect(),
        ports: Some(
            ports
                .iter()
                .map(|(n, port, proto)| SlicePort {
                    name: Some(n.clone()),
                    port: Some(*port),
                    protocol: Some(proto.clone()),
                    app_protocol: None,
                })
                .collect(),
        ),
    };
    let mut slices: Vec<EndpointSlice> = groups
        .iter()
        .map(|(ports, pods)| slice(ports, pods))
        .collect();
    if slices.is_empty() {
        // No endpoints: kube's placeholder, a slice with neither endpoints
        // nor ports (clients see the Service has none).
        slices.push(slice(&Vec::new(), &[]));
    }
    (endpoints, slices)
}

/// A slice's name: the Service's name and a hash of its port set, so the
/// slice of one port set is found again (kube generates names and keeps
/// them; ours are derived).
pub fn slice_name(svc: &str, ports: &[(String, i32, String)]) -> String {
    let mut key = svc.to_string();
    for (n, p, proto) in ports {
        key.push_str(&format!("/{n}:{p}/{proto}"));
    }
    let s = util::safe_encode(&util::fnv32a(key.as_bytes()).to_string());
    let p = if svc.len() > 52 { &svc[..52] } else { svc };
    format!("{p}-{}", &s[..5.min(s.len())])
}

/// Creates `want` or replaces the existing object when its content differs.
async fn upsert<K>(api: &Api<K>, want: K, same: impl Fn(&K, &K) -> bool) -> Result<(), kube::Error>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = want.meta().name.clone().unwrap_or_default();
    match api.get_opt(&name).await? {
        None => api.create(&PostParams::default(), &want).await.map(drop),
        Some(cur) if same(&cur, &want) => Ok(()),
        Some(cur) => {
            let mut next = want;
            next.meta_mut().resource_version = cur.meta().resource_version.clone();
            api.replace(&name, &PostParams::default(), &next)
                .await
                .map(drop)
        }
    }
}

struct Ctx {
    shared: Arc<Shared>,
    slices: Store<EndpointSlice>,
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let shared = &ctx.shared;
    if svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_none_or(|s| s.is_empty())
        || util::deleting(&svc.metadata)
    {
        return Ok(Action::await_change());
    }
    let ns = util::namespace(&svc.metadata).to_string();
    let name = util::name(&svc.metadata).to_string();
    let pods = crate::replicaset::pods_in(shared, &ns);
    let zone_of = |node: &str| {
        let node = shared.nodes.get(&ObjectRef::new(node))?;
        node.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned()
    };
    let (ep, slices) = desired(&svc, &pods, zone_of);
    upsert(
        &Api::<Endpoints>::namespaced(shared.client.clone(), &ns),
        ep,
        |a, b| a.subsets == b.subsets && a.metadata.owner_references == b.metadata.owner_references,
    )
    .await?;
    let api = Api::<EndpointSlice>::namespaced(shared.client.clone(), &ns);
    let wanted: Vec<String> = slices
        .iter()
        .filter_map(|s| s.metadata.name.clone())
        .collect();
    for slice in slices {
        upsert(&api, slice, |a, b| {
            a.endpoints == b.endpoints
                && a.ports == b.ports
                && a.metadata.labels == b.metadata.labels
        })
        .await?;
    }
    // Slices of port sets no pod has any more.
    for old in ctx.slices.state() {
        let labels = old.metadata.labels.clone().unwrap_or_default();
        let old_name = util::name(&old.metadata);
        if util::namespace(&old.metadata) == ns
            && labels.get(SERVICE_NAME_LABEL) == Some(&name)
            && labels.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)
            && !wanted.iter().any(|w| w == old_name)
        {
            match api.delete(old_name, &Default::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    shared.retry_reset(&format!("services/{ns}/{name}"));
    Ok(Action::await_change())
}

fn policy(svc: Arc<Service>, e: &Error, ctx: Arc<Ctx>) -> Action {
    crate::error_policy(svc, e, ctx.shared.clone())
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let services = informers.services.store();
    let pod_events = informers.pods.subscribe().flat_map(move |p| {
        let refs: Vec<ObjectRef<Service>> = services
            .state()
            .iter()
            .filter(|s| selects(s, &p))
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        futures::stream::iter(refs)
    });
    let ctx = Arc::new(Ctx {
        shared,
        slices: informers.endpointslices.store(),
    });
    informers.endpointslices.ready().await;
    Controller::for_shared_stream(informers.services.subscribe(), informers.services.store())
        .reconcile_on(pod_events)
        .reconcile_all_on(crate::ticks(crate::RESYNC))
        .run(
            crate::metrics::metered("endpoints", &ctx.shared.cfg.stats, reconcile),
            policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;
    use serde_json::json;

    fn service(spec: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn with(p: Arc<Pod>, f: impl FnOnce(&mut serde_json::Value)) -> Arc<Pod> {
        let mut v = serde_json::to_value(p.as_ref()).unwrap();
        f(&mut v);
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn named_port(p: Arc<Pod>, port: i32) -> Arc<Pod> {
        with(p, |v| {
            v["spec"]["containers"][0]["ports"] = json!([{"name": "http", "containerPort": port}])
        })
    }

    fn no_zone(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn ready_and_not_ready_pods_with_named_ports() {
        let svc = service(json!({"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}));
        let pods = vec![
            named_port(
                pod("a", &[("app", "web")], None, "Running", true, "n1"),
                8080,
            ),
            named_port(
                pod("b", &[("app", "web")], None, "Running", false, "n1"),
                8080,
            ),
            pod("c", &[("app", "db")], None, "Running", true, "n1"),
        ];
        let (ep, slices) = desired(&svc, &pods, no_zone);
        let subsets = ep.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 1);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 1);
        let [slice] = slices.as_slice() else {
            panic!("{slices:#?}")
        };
        assert_eq!(slice.endpoints.len(), 2);
        let ready: Vec<_> = slice
            .endpoints
            .iter()
            .map(|e| e.conditions.as_ref().unwrap().ready)
            .collect();
        assert_eq!(ready, [Some(true), Some(false)]);
        assert_eq!(
            slice.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "web"
        );
        assert_eq!(slice.ports.as_ref().unwrap()[0].port, Some(8080));
        assert!(slice.endpoints.iter().all(|e| e.hints.is_none()));
        // No pods: no subsets, and kube's placeholder slice.
        let (ep, slices) = desired(&svc, &[], no_zone);
        assert!(ep.subsets.is_none());
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        assert_eq!(slices[0].ports, Some(vec![]));
    }

    #[test]
    fn pods_resolving_a_named_port_differently_get_a_slice_each() {
        let svc = service(json!({"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}));
        let pods = vec![
            named_port(
                pod("a", &[("app", "web")], None, "Running", true, "n1"),
                8080,
            ),
            named_port(
                pod("b", &[("app", "web")], None, "Running", true, "n1"),
                9090,
            ),
            named_port(
                pod("c", &[("app", "web")], None, "Running", true, "n2"),
                8080,
            ),
        ];
        let (ep, slices) = desired(&svc, &pods, no_zone);
        assert_eq!(ep.subsets.unwrap().len(), 2);
        let mut got: Vec<(Option<i32>, usize)> = slices
            .iter()
            .map(|s| (s.ports.as_ref().unwrap()[0].port, s.endpoints.len()))
            .collect();
        got.sort();
        assert_eq!(got, [(Some(8080), 2), (Some(9090), 1)]);
        assert_ne!(slices[0].metadata.name, slices[1].metadata.name);
        // Names are stable: the same port set gives the same slice again.
        let (_, again) = desired(&svc, &pods[..1], no_zone);
        assert!(
            slices
                .iter()
                .any(|s| s.metadata.name == again[0].metadata.name)
        );
    }

    #[test]
    fn terminating_pods_stay_in_slices_only_and_publish_not_ready_makes_all_ready() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}));
        let going = with(
            pod("a", &[("app", "web")], None, "Running", true, "n1"),
            |v| v["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z"),
        );
        let pods = vec![
            going,
            pod("b", &[("app", "web")], None, "Running", false, "n1"),
        ];
        let (ep, slices) = desired(&svc, &pods, no_zone);
        let subsets = ep.subsets.unwrap();
        assert!(subsets[0].addresses.is_none());
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 1);
        let cond: Vec<_> = slices[0]
            .endpoints
            .iter()
            .map(|e| e.conditions.clone().unwrap())
            .map(|c| (c.ready, c.serving, c.terminating))
            .collect();
        assert_eq!(
            cond,
            [
                (Some(false), Some(true), Some(true)),
                (Some(false), Some(false), Some(false))
            ]
        );
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}],
            "publishNotReadyAddresses": true}));
        let (ep, slices) = desired(&svc, &pods, no_zone);
        assert_eq!(ep.subsets.unwrap()[0].addresses.as_ref().unwrap().len(), 2);
        assert!(
            slices[0]
                .endpoints
                .iter()
                .all(|e| e.conditions.as_ref().unwrap().ready == Some(true))
        );
    }

    #[test]
    fn prefer_same_node_hints_and_headless_hostnames() {
        let svc = service(json!({"selector": {"app": "web"}, "ports": [{"port": 80}],
            "clusterIP": "None", "trafficDistribution": "PreferSameNode"}));
        let named = with(
            pod("a", &[("app", "web")], None, "Running", true, "n1"),
            |v| {
                v["spec"]["hostname"] = json!("db-0");
                v["spec"]["subdomain"] = json!("web");
            },
        );
        let pods = vec![
            named,
            pod("b", &[("app", "web")], None, "Running", true, "n2"),
        ];
        let zone = |n: &str| (n == "n1").then(|| "z1".to_string());
        let (ep, slices) = desired(&svc, &pods, zone);
        let e = &slices[0].endpoints;
        let nodes: Vec<_> = e
            .iter()
            .map(|e| e.hints.clone().unwrap().for_nodes.unwrap()[0].name.clone())
            .collect();
        assert_eq!(nodes, ["n1", "n2"]);
        assert_eq!(e[0].zone.as_deref(), Some("z1"));
        assert_eq!(
            e[0].hints.as_ref().unwrap().for_zones.as_ref().unwrap()[0].name,
            "z1"
        );
        assert_eq!(e[0].hostname.as_deref(), Some("db-0"));
        assert_eq!(e[1].hostname, None);
        let addrs = ep.subsets.unwrap()[0].addresses.clone().unwrap();
        assert_eq!(addrs[0].hostname.as_deref(), Some("db-0"));
    }
}
