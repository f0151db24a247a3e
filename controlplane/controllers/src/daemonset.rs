//! The DaemonSet controller: one pod per eligible node (its nodeSelector
//! matches and the node's NoSchedule/NoExecute taints are tolerated), bound
//! to the node directly through `spec.nodeName` as kube did before it
//! delegated placement to the scheduler. RollingUpdate replaces pods of an
//! older template (`controller-revision-hash` label) at most
//! `maxUnavailable` at a time; OnDelete waits for the user.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::replicaset::{create_pods, delete_pods, pod_from_template, settled_pods};
use crate::util::{self, controller_of};
use crate::{Error, Shared};

pub const HASH_LABEL: &str = "controller-revision-hash";

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes that need a pod.
    pub create_on: Vec<String>,
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
}

/// The tolerations kube adds to every daemon pod: they stay on nodes that
/// are not ready, unreachable or under pressure.
fn default_tolerations() -> Vec<Toleration> {
    [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .into_iter()
    .map(|(k, e)| Toleration {
        key: Some(k.into()),
        operator: Some("Exists".into()),
        effect: Some(e.into()),
        ..Default::default()
    })
    .collect()
}

fn tolerated(tols: &[Toleration], t: &k8s_openapi::api::core::v1::Taint) -> bool {
    tols.iter().any(|tol| {
        let key = tol.key.as_deref().unwrap_or_default();
        let effect_ok = tol
            .effect
            .as_deref()
            .is_none_or(|e| e.is_empty() || e == t.effect);
        let key_ok = key.is_empty() || key == t.key;
        let value_ok = tol.operator.as_deref() == Some("Exists")
            || tol.value.as_deref().unwrap_or_default() == t.value.as_deref().unwrap_or_default();
        effect_ok && key_ok && value_ok
    })
}

/// Whether a daemon pod of `ds` belongs on `node`.
pub fn eligible(ds: &DaemonSet, node: &Node) -> bool {
    let spec = ds.spec.as_ref().and_then(|s| s.template.spec.as_ref());
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .into_iter()
        .flatten()
        .all(|(k, v)| node.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v));
    let mut tols = spec.and_then(|s| s.tolerations.clone()).unwrap_or_default();
    tols.extend(default_tolerations());
    let taints_ok = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tolerated(&tols, t));
    selector_ok && taints_ok
}

pub fn template_hash(ds: &DaemonSet) -> String {
    let t = ds.spec.as_ref().map(|s| &s.template);
    let data = serde_json::to_vec(&t).unwrap_or_default();
    util::safe_encode(&util::fnv32a(&data).to_string())
}

fn pod_hash(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()?
        .get(HASH_LABEL)
        .map(String::as_str)
}

/// The pure decision for `ds` given the nodes and its namespace's pods.
pub fn plan(ds: &DaemonSet, nodes: &[Arc<Node>], pods: &[Arc<Pod>], now: Timestamp) -> Plan {
    let uid = util::uid(&ds.metadata);
    let hash = template_hash(ds);
    let spec = ds.spec.clone().unwrap_or_default();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let mut by_node: BTreeMap<&str, Vec<&Pod>> = BTreeMap::new();
    for p in pods.iter().map(|p| p.as_ref()) {
        if controller_of(&p.metadata).is_some_and(|o| o.uid == uid) && util::pod_active(p) {
            by_node.entry(util::pod_node(p)).or_default().push(p);
        }
    }
    let mut out = Plan::default();
    let deleting = util::deleting(&ds.metadata);
    let mut desired = 0;
    let (mut scheduled, mut misscheduled, mut ready, mut available, mut updated) = (0, 0, 0, 0, 0);
    let mut outdated: Vec<&Pod> = Vec::new();
    let mut unavailable = 0;
    for node in nodes {
        let name = util::name(&node.metadata);
        let want = eligible(ds, node);
        let mine = by_node.remove(name).unwrap_or_default();
        desired += i32::from(want);
        if want {
            if mine.is_empty() {
                if !deleting {
                    out.create_on.push(name.to_string());
                }
                unavailable += 1;
                continue;
            }
            scheduled += 1;
            // Keep the newest matching pod; extra ones go.
            let mut mine = mine;
            mine.sort_by_key(|p| {
                std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            for extra in &mine[1..] {
                out.delete.push(util::name(&extra.metadata).to_string());
            }
            let p = mine[0];
            ready += i32::from(util::pod_ready(p));
            let avail = util::pod_available(p, min_ready, now);
            available += i32::from(avail);
            unavailable += i32::from(!avail);
            if pod_hash(p) == Some(hash.as_str()) {
                updated += 1;
            } else {
                outdated.push(p);
            }
        } else if !mine.is_empty() {
            misscheduled += 1;
            out.delete
                .extend(mine.iter().map(|p| util::name(&p.metadata).to_string()));
        }
    }
    // Pods on nodes that no longer exist.
    for (_, ps) in by_node {
        out.delete
            .extend(ps.iter().map(|p| util::name(&p.metadata).to_string()));
    }
    let strategy = spec.update_strategy.unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") && !deleting {
        let max_unavailable = match strategy
            .rolling_update
            .and_then(|r| r.max_unavailable)
            .unwrap_or(IntOrString::Int(1))
        {
            IntOrString::Int(i) => i,
            IntOrString::String(s) => {
                let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(0);
                (pct * desired / 100).max(1)
            }
        };
        let budget = (max_unavailable - unavailable).max(0) as usize;
        // Unavailable outdated pods first: replacing them costs nothing.
        outdated.sort_by_key(|p| util::pod_available(p, min_ready, now));
        let free = outdated
            .iter()
            .filter(|p| !util::pod_available(p, min_ready, now))
            .count();
        let n = free + budget.min(outdated.len() - free);
        for p in outdated.iter().take(n) {
            out.delete.push(util::name(&p.metadata).to_string());
        }
    }
    out.status = DaemonSetStatus {
        current_number_scheduled: scheduled,
        desired_number_scheduled: desired,
        number_misscheduled: misscheduled,
        number_ready: ready,
        number_available: Some(available),
        number_unavailable: Some((desired - available).max(0)),
        updated_number_scheduled: Some(updated),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    out
}

async fn reconcile(ds: Arc<DaemonSet>, shared: Arc<Shared>) -> Result<Action, Error> {
    let ns = util::namespace(&ds.metadata).to_string();
    let name = util::name(&ds.metadata).to_string();
    let key = format!("daemonsets/{ns}/{name}");
    let Some(pods) = settled_pods(&shared, &key, &ns) else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let plan = plan(&ds, &shared.nodes.state(), &pods, Timestamp::now());
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let owner = util::controller_ref("apps/v1", "DaemonSet", &ds.metadata);
    let hash = template_hash(&ds);
    let template = ds.spec.as_ref().map(|s| &s.template);
    let new_pods: Vec<Pod> = plan
        .create_on
        .iter()
        .map(|node| {
            let mut p =
                pod_from_template(template, &util::generate_name(&name), &ns, owner.clone());
            p.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(HASH_LABEL.into(), hash.clone());
            let spec = p.spec.get_or_insert_with(Default::default);
            spec.node_name = Some(node.clone());
            spec.tolerations
                .get_or_insert_with(Vec::new)
                .extend(default_tolerations());
            p
        })
        .collect();
    let (created, create_err) = create_pods(&api, new_pods).await;
    let (deleted, delete_err) = delete_pods(&api, &plan.delete).await;
    crate::replicaset::pod_events(
        &shared,
        ds.as_ref(),
        "daemonset-controller",
        &created,
        &deleted,
    );
    shared.expectations.expect(&key, created, deleted);
    if ds.status.as_ref() != Some(&plan.status) {
        Api::<DaemonSet>::namespaced(shared.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": plan.status})),
            )
            .await?;
    }
    if let Some(e) = create_err.or(delete_err) {
        return Err(e.into());
    }
    shared.retry_reset(&key);
    Ok(Action::await_change())
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let pod_events = informers.pods.subscribe().filter_map(|p| {
        std::future::ready(match controller_of(&p.metadata) {
            Some(o) if o.kind == "DaemonSet" => {
                Some(ObjectRef::<DaemonSet>::new(&o.name).within(util::namespace(&p.metadata)))
            }
            _ => None,
        })
    });
    // A node change (new node, labels, taints) concerns every DaemonSet.
    let node_events = futures::stream::select(
        informers.nodes.subscribe().map(|_| ()),
        crate::ticks(crate::RESYNC),
    );
    Controller::for_shared_stream(
        informers.daemonsets.subscribe(),
        informers.daemonsets.store(),
    )
    .reconcile_on(pod_events)
    .reconcile_all_on(node_events)
    .run(
        crate::metrics::metered("daemonset", &shared.cfg.stats, reconcile),
        crate::error_policy,
        shared,
    )
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::pod;

    fn ds(node_selector: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "default", "uid": "ds-uid", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}},
                     "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                     "template": {"metadata": {"labels": {"app": "agent"}},
                                  "spec": {"nodeSelector": node_selector, "containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    }

    fn node(name: &str, labels: serde_json::Value, taints: serde_json::Value) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(
                json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}),
            )
            .unwrap(),
        )
    }

    fn daemon_pod(name: &str, node: &str, hash: &str) -> Arc<Pod> {
        let mut p = (*pod(
            name,
            &[("app", "agent"), (HASH_LABEL, hash)],
            Some(("DaemonSet", "ds-uid")),
            "Running",
            true,
            node,
        ))
        .clone();
        p.metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), hash.into());
        Arc::new(p)
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds(json!({"disk": "ssd"}));
        let nodes = vec![
            node("a", json!({"disk": "ssd"}), json!([])),
            node("b", json!({"disk": "hdd"}), json!([])),
            node(
                "c",
                json!({"disk": "ssd"}),
                json!([{"key": "dedicated", "effect": "NoSchedule"}]),
            ),
            // Unreachable nodes keep their daemon pods (default tolerations).
            node(
                "d",
                json!({"disk": "ssd"}),
                json!([{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]),
            ),
        ];
        let hash = template_hash(&d);
        let pods = vec![
            daemon_pod("on-b", "b", &hash),
            daemon_pod("on-d", "d", &hash),
        ];
        let p = plan(&d, &nodes, &pods, Timestamp::now());
        assert_eq!(p.create_on, vec!["a"]);
        assert_eq!(p.delete, vec!["on-b"]);
        assert_eq!(p.status.desired_number_scheduled, 2);
        assert_eq!(p.status.current_number_scheduled, 1);
        assert_eq!(p.status.number_misscheduled, 1);
    }

    #[test]
    fn rolling_update_replaces_one_at_a_time() {
        let d = ds(json!({}));
        let nodes = vec![
            node("a", json!({}), json!([])),
            node("b", json!({}), json!([])),
        ];
        let pods = vec![daemon_pod("pa", "a", "old"), daemon_pod("pb", "b", "old")];
        let p = plan(&d, &nodes, &pods, Timestamp::now());
        assert_eq!(p.delete.len(), 1);
        assert_eq!(p.status.updated_number_scheduled, Some(0));
        // One being replaced (missing): no budget left for the other.
        let p = plan(&d, &nodes, &pods[1..], Timestamp::now());
        assert_eq!(p.create_on, vec!["a"]);
        assert!(p.delete.is_empty());
    }
}
