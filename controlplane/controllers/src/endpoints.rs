//! The endpoints controllers: for each Service with a selector, the
//! Endpoints object of the same name and one EndpointSlice (labelled
//! `kubernetes.io/service-name`) listing the matching pods that have an IP:
//! ready ones as addresses, the others as not-ready.
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
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;

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

/// The pure decision: the Endpoints and EndpointSlice for `svc`.
pub fn desired(svc: &Service, pods: &[Arc<Pod>]) -> (Endpoints, EndpointSlice) {
    let ns = util::namespace(&svc.metadata);
    let name = util::name(&svc.metadata);
    let mut pods: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| selects(svc, p) && pod_ip(p).is_some() && !util::deleting(&p.metadata))
        .filter(|p| !util::pod_succeeded(p) && !util::pod_failed(p))
        .collect();
    pods.sort_by_key(|p| util::name(&p.metadata).to_string());
    let svc_ports = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default();
    let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
        api_version: "v1".into(),
        kind: "Service".into(),
        name: name.into(),
        uid: util::uid(&svc.metadata).into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let addr = |p: &Pod| EndpointAddress {
        ip: pod_ip(p).unwrap_or_default().into(),
        node_name: Some(util::pod_node(p).to_string()).filter(|n| !n.is_empty()),
        target_ref: Some(ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(ns.into()),
            name: Some(util::name(&p.metadata).into()),
            uid: p.metadata.uid.clone(),
            ..Default::default()
        }),
        hostname: None,
    };
    // Endpoints: one subset per distinct resolved port list.
    let mut subsets: BTreeMap<Vec<(String, i32, String)>, EndpointSubset> = BTreeMap::new();
    for p in &pods {
        let ports: Vec<(String, i32, String)> = svc_ports
            .iter()
            .filter_map(|sp| {
                Some((
                    sp.name.clone().unwrap_or_default(),
                    target_port(p, sp)?,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        let s = subsets
            .entry(ports.clone())
            .or_insert_with(|| EndpointSubset {
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
                ..Default::default()
            });
        let list = if util::pod_ready(p) {
            s.addresses.get_or_insert_with(Vec::new)
        } else {
            s.not_ready_addresses.get_or_insert_with(Vec::new)
        };
        list.push(addr(p));
    }
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: svc.metadata.labels.clone(),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        subsets: Some(subsets.into_values().collect()).filter(|s: &Vec<_>| !s.is_empty()),
    };
    let first = pods.first().copied();
    let slice_ports = svc_ports
        .iter()
        .map(|sp| SlicePort {
            name: sp.name.clone(),
            port: first.and_then(|p| target_port(p, sp)),
            protocol: sp.protocol.clone().or(Some("TCP".into())),
            app_protocol: None,
        })
        .collect();
    let mut labels = svc.metadata.labels.clone().unwrap_or_default();
    labels.insert(SERVICE_NAME_LABEL.into(), name.into());
    labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            name: Some(slice_name(name)),
            namespace: Some(ns.into()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        address_type: "IPv4".into(),
        endpoints: pods
            .iter()
            .map(|p| Endpoint {
                addresses: vec![pod_ip(p).unwrap_or_default().into()],
                conditions: Some(EndpointConditions {
                    ready: Some(util::pod_ready(p)),
                    serving: Some(util::pod_ready(p)),
                    terminating: Some(false),
                }),
                node_name: addr(p).node_name,
                target_ref: addr(p).target_ref,
                ..Default::default()
            })
            .collect(),
        ports: Some(slice_ports),
    };
    (endpoints, slice)
}

/// The slice's name: the Service's name and a fixed suffix, so there is
/// exactly one to find again.
pub fn slice_name(svc: &str) -> String {
    let s = util::safe_encode(&util::fnv32a(svc.as_bytes()).to_string());
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

async fn reconcile(svc: Arc<Service>, shared: Arc<Shared>) -> Result<Action, Error> {
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
    let pods = crate::replicaset::pods_in(&shared, &ns);
    let (ep, slice) = desired(&svc, &pods);
    upsert(
        &Api::<Endpoints>::namespaced(shared.client.clone(), &ns),
        ep,
        |a, b| a.subsets == b.subsets && a.metadata.owner_references == b.metadata.owner_references,
    )
    .await?;
    upsert(
        &Api::<EndpointSlice>::namespaced(shared.client.clone(), &ns),
        slice,
        |a, b| {
            a.endpoints == b.endpoints
                && a.ports == b.ports
                && a.metadata.labels == b.metadata.labels
        },
    )
    .await?;
    shared.retry_reset(&format!("services/{ns}/{}", util::name(&svc.metadata)));
    Ok(Action::await_change())
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
    Controller::for_shared_stream(informers.services.subscribe(), informers.services.store())
        .reconcile_on(pod_events)
        .reconcile_all_on(crate::ticks(crate::RESYNC))
        .run(reconcile, crate::error_policy, shared)
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;
    use serde_json::json;

    #[test]
    fn ready_and_not_ready_pods_with_named_ports() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "s1"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
        }))
        .unwrap();
        let with_port = |p: Arc<Pod>| {
            let mut p = (*p).clone();
            p.spec.as_mut().unwrap().containers[0].ports = Some(vec![
                serde_json::from_value(json!({"name": "http", "containerPort": 8080})).unwrap(),
            ]);
            Arc::new(p)
        };
        let pods = vec![
            with_port(pod("a", &[("app", "web")], None, "Running", true, "n1")),
            with_port(pod("b", &[("app", "web")], None, "Running", false, "n1")),
            pod("c", &[("app", "db")], None, "Running", true, "n1"),
        ];
        let (ep, slice) = desired(&svc, &pods);
        let subsets = ep.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        assert_eq!(subsets[0].ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(subsets[0].addresses.as_ref().unwrap().len(), 1);
        assert_eq!(subsets[0].not_ready_addresses.as_ref().unwrap().len(), 1);
        assert_eq!(slice.endpoints.len(), 2);
        assert_eq!(
            slice.endpoints[0].conditions.as_ref().unwrap().ready,
            Some(true)
        );
        assert_eq!(
            slice.endpoints[1].conditions.as_ref().unwrap().ready,
            Some(false)
        );
        assert_eq!(
            slice.metadata.labels.as_ref().unwrap()[SERVICE_NAME_LABEL],
            "web"
        );
        assert_eq!(slice.ports.unwrap()[0].port, Some(8080));
        // No pods: an Endpoints object without subsets.
        assert!(desired(&svc, &[]).0.subsets.is_none());
    }
}
