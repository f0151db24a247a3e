//! The node lifecycle controller: a node whose Lease in `kube-node-lease`
//! (and status heartbeat) is older than the grace period gets its
//! conditions set to Unknown; a node that is not Ready carries the
//! `node.kubernetes.io/unreachable` or `not-ready` taints with NoSchedule
//! and NoExecute; and pods on a NoExecute-tainted node are deleted once
//! their tolerations run out, so their controllers recreate them elsewhere.
//!
//! When every node is down at once (more than one node), evictions stop:
//! the likely cause is the control plane's own network or a restart after
//! downtime, and evicting everything would only hurt (kube's "full
//! disruption" mode does the same per zone).
//!
//! Our API server has no DefaultTolerationSeconds admission, so a pod
//! without a toleration for these taints is evicted at once (kube's
//! behaviour for such a pod; with that admission kube would give it 300 s).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::util;
use crate::{Error, Shared};

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";

/// kube's `--node-startup-grace-period`: how long a node that never
/// reported may take to do so.
pub const STARTUP_GRACE: Duration = Duration::from_secs(60);

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// New conditions (all Unknown) when the node went silent.
    pub conditions: Option<Vec<NodeCondition>>,
    /// The new taint list when it changes.
    pub taints: Option<Vec<Taint>>,
    /// Pods (namespace, name) to delete now.
    pub evict: Vec<(String, String)>,
    /// When to look again (a toleration runs out, the grace period ends).
    pub requeue: Option<Duration>,
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect_ok = t
        .effect
        .as_deref()
        .is_none_or(|e| e.is_empty() || e == taint.effect);
    let key = t.key.as_deref().unwrap_or_default();
    let key_ok = key.is_empty() || key == taint.key;
    let value_ok = match t.operator.as_deref() {
        Some("Exists") => true,
        _ => {
            !key.is_empty()
                && t.value.as_deref().unwrap_or_default()
                    == taint.value.as_deref().unwrap_or_default()
        }
    };
    effect_ok && key_ok && value_ok
}

/// When the pod must go for this NoExecute taint: `None` never, else the
/// instant (taint time + the shortest matching tolerationSeconds).
fn eviction_time(pod: &Pod, taint: &Taint, added: Timestamp) -> Option<Timestamp> {
    let tols: Vec<&Toleration> = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| tolerates(t, taint))
        .collect();
    if tols.is_empty() {
        return Some(added);
    }
    tols.iter()
        .filter_map(|t| t.toleration_seconds)
        .min()
        .map(|s| added + SignedDuration::from_secs(s.max(0)))
}

/// The pure decision for one node at `now`.
/// `evictions_allowed` is false while every node is down.
pub fn plan(
    node: &Node,
    lease: Option<&Lease>,
    pods: &[Arc<Pod>],
    now: Timestamp,
    grace: Duration,
    evictions_allowed: bool,
) -> Plan {
    let mut out = Plan::default();
    let conds: Vec<NodeCondition> = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let ready = conds.iter().find(|c| c.type_ == "Ready");
    let heard = [
        lease
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
            .map(|t| t.0),
        ready
            .and_then(|c| c.last_heartbeat_time.as_ref())
            .map(|t| t.0),
        node.metadata.creation_timestamp.as_ref().map(|t| t.0),
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(now);
    // A node that never reported gets kube's startup grace period.
    let never_heard =
        lease.is_none() && ready.and_then(|c| c.last_heartbeat_time.as_ref()).is_none();
    let grace = if never_heard {
        grace.max(STARTUP_GRACE)
    } else {
        grace
    };
    let grace_s = SignedDuration::try_from(grace).unwrap_or(SignedDuration::from_secs(40));
    let silent = heard + grace_s <= now;
    let mut ready_status = ready
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "Unknown".into());
    if silent && (ready.is_none() || ready_status != "Unknown") {
        let t = Time(now);
        let mut all = conds.clone();
        if !all.iter().any(|c| c.type_ == "Ready") {
            all.push(NodeCondition {
                type_: "Ready".into(),
                ..Default::default()
            });
        }
        for c in &mut all {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c.last_transition_time = Some(t.clone());
        }
        out.conditions = Some(all);
        ready_status = "Unknown".into();
    } else if !silent {
        out.requeue = Some(util::until(heard + grace_s, now) + Duration::from_millis(100));
    }

    // Taints follow the Ready condition.
    let want_key = match ready_status.as_str() {
        "True" => None,
        "False" => Some(NOT_READY),
        _ => Some(UNREACHABLE),
    };
    let old: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut taints: Vec<Taint> = old
        .iter()
        .filter(|t| {
            (t.key != UNREACHABLE && t.key != NOT_READY) || Some(t.key.as_str()) == want_key
        })
        .cloned()
        .collect();
    if let Some(key) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !taints.iter().any(|t| t.key == key && t.effect == effect) {
                taints.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    time_added: (effect == "NoExecute").then_some(Time(now)),
                    value: None,
                });
            }
        }
    }
    // A node that has not reported a Ready condition yet (still within its
    // grace) keeps its taints until it does.
    let reported = ready.is_some() || out.conditions.is_some();
    if !reported {
        taints = old.clone();
    }
    if taints != old {
        out.taints = Some(taints.clone());
    }

    // Taint-based eviction.
    let mut next: Option<Timestamp> = None;
    let pods = if evictions_allowed { pods } else { &[] };
    for pod in pods.iter().filter(|p| !util::deleting(&p.metadata)) {
        let when = taints
            .iter()
            .filter(|t| t.effect == "NoExecute")
            .filter_map(|t| {
                eviction_time(pod, t, t.time_added.as_ref().map(|a| a.0).unwrap_or(now))
            })
            .min();
        match when {
            Some(w) if w <= now => out.evict.push((
                util::namespace(&pod.metadata).to_string(),
                util::name(&pod.metadata).to_string(),
            )),
            Some(w) => next = Some(next.map_or(w, |n| n.min(w))),
            None => {}
        }
    }
    if let Some(n) = next {
        let d = util::until(n, now) + Duration::from_millis(100);
        out.requeue = Some(out.requeue.map_or(d, |r| r.min(d)));
    }
    out
}

async fn reconcile(node: Arc<Node>, shared: Arc<Shared>) -> Result<Action, Error> {
    let name = util::name(&node.metadata).to_string();
    let lease = shared
        .node_leases
        .get(&ObjectRef::new(&name).within("kube-node-lease"));
    let pods: Vec<Arc<Pod>> = shared
        .pods
        .state()
        .into_iter()
        .filter(|p| util::pod_node(p) == name)
        .collect();
    let nodes = shared.nodes.state();
    let ready = |n: &Node| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    };
    let all_down = nodes.len() > 1 && !nodes.iter().any(|n| ready(n));
    // Say so once when every node goes down.
    static ALL_DOWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if ALL_DOWN.swap(all_down, std::sync::atomic::Ordering::Relaxed) != all_down && all_down {
        tracing::warn!("every node is down: holding evictions");
    }
    let now = Timestamp::now();
    let grace = shared.cfg.node_monitor_grace_period;
    let plan = plan(&node, lease.as_deref(), &pods, now, grace, !all_down);
    let api: Api<Node> = Api::all(shared.client.clone());
    let pp = PatchParams::default();
    if let Some(c) = &plan.conditions {
        tracing::warn!(node = %name, "no heartbeat for the grace period: conditions Unknown");
        api.patch_status(
            &name,
            &pp,
            &Patch::Merge(json!({"status": {"conditions": c}})),
        )
        .await?;
        crate::events::record(
            &shared.client,
            node.as_ref(),
            "node-controller",
            false,
            "NodeNotReady",
            format!("Node {name} status is now: NodeNotReady"),
        );
    }
    if let Some(t) = &plan.taints {
        api.patch(&name, &pp, &Patch::Merge(json!({"spec": {"taints": t}})))
            .await?;
    }
    for (ns, pod) in &plan.evict {
        tracing::info!(node = %name, pod = %format_args!("{ns}/{pod}"), "evicting pod (NoExecute taint)");
        match Api::<Pod>::namespaced(shared.client.clone(), ns)
            .delete(pod, &DeleteParams::default())
            .await
        {
            Ok(_) => {
                let p = pods
                    .iter()
                    .find(|p| util::name(&p.metadata) == pod && util::namespace(&p.metadata) == ns);
                if let Some(p) = p {
                    crate::events::record(
                        &shared.client,
                        p.as_ref(),
                        "taint-eviction-controller",
                        false,
                        "TaintManagerEviction",
                        format!("Marking for deletion Pod {ns}/{pod}"),
                    );
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    shared.retry_reset(&format!("nodes//{name}"));
    Ok(match plan.requeue {
        Some(t) => Action::requeue(t),
        None => Action::requeue(shared.cfg.node_monitor_period),
    })
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let lease_events = informers
        .node_leases
        .subscribe()
        .map(|l| ObjectRef::<Node>::new(util::name(&l.metadata)));
    let period = shared.cfg.node_monitor_period;
    let ticks = crate::ticks(period);
    Controller::for_shared_stream(informers.nodes.subscribe(), informers.nodes.store())
        .reconcile_on(lease_events)
        .reconcile_all_on(ticks)
        .run(
            crate::metrics::metered("node_lifecycle", &shared.cfg.stats, reconcile),
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

    fn node(ready: &str, heartbeat: Timestamp, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"taints": taints},
            "status": {"conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": Time(heartbeat)},
                {"type": "MemoryPressure", "status": "False", "lastHeartbeatTime": Time(heartbeat)}]}
        }))
        .unwrap()
    }

    fn lease(renew: Timestamp) -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": "n1", "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(renew)}}))
        .unwrap()
    }

    const GRACE: Duration = Duration::from_secs(40);

    #[test]
    fn a_node_that_never_reported_gets_the_startup_grace() {
        let created = Timestamp::now() - SignedDuration::from_secs(45);
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1", "creationTimestamp": Time(created)}}))
        .unwrap();
        let now = Timestamp::now();
        let p = plan(&n, None, &[], now, GRACE, true);
        assert!(p.conditions.is_none() && p.taints.is_none());
        let p = plan(
            &n,
            None,
            &[],
            now + SignedDuration::from_secs(20),
            GRACE,
            true,
        );
        assert!(p.conditions.is_some());
    }

    #[test]
    fn a_renewing_node_stays_untouched() {
        let now = Timestamp::now();
        let old = now - SignedDuration::from_secs(100);
        // The status heartbeat is old but the lease is fresh.
        let p = plan(
            &node("True", old, json!([])),
            Some(&lease(now)),
            &[],
            now,
            GRACE,
            true,
        );
        assert!(p.conditions.is_none() && p.taints.is_none() && p.evict.is_empty());
        assert!(p.requeue.unwrap() <= GRACE + Duration::from_secs(1));
    }

    #[test]
    fn a_silent_node_goes_unknown_tainted_and_its_pods_are_evicted() {
        let now = Timestamp::now();
        let old = now - SignedDuration::from_secs(100);
        let pods = vec![pod("plain", &[], None, "Running", true, "n1"), {
            let mut p = (*pod("tolerant", &[], None, "Running", true, "n1")).clone();
            p.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
                key: Some(UNREACHABLE.into()),
                operator: Some("Exists".into()),
                effect: Some("NoExecute".into()),
                toleration_seconds: Some(300),
                value: None,
            }]);
            Arc::new(p)
        }];
        let p = plan(
            &node("True", old, json!([])),
            Some(&lease(old)),
            &pods,
            now,
            GRACE,
            true,
        );
        let conds = p.conditions.unwrap();
        assert!(conds.iter().all(|c| c.status == "Unknown"));
        assert_eq!(conds.len(), 2);
        let taints = p.taints.unwrap();
        assert_eq!(taints.len(), 2);
        assert!(taints.iter().all(|t| t.key == UNREACHABLE));
        assert_eq!(p.evict, vec![("default".to_string(), "plain".to_string())]);
        let r = p.requeue.unwrap();
        assert!(
            r > Duration::from_secs(290) && r <= Duration::from_secs(301),
            "{r:?}"
        );
        // 300 s after the taint the tolerant pod goes too.
        let tainted = node("Unknown", old, serde_json::to_value(&taints).unwrap());
        let later = now + SignedDuration::from_secs(301);
        let p = plan(&tainted, Some(&lease(old)), &pods, later, GRACE, true);
        assert!(p.conditions.is_none() && p.taints.is_none());
        assert_eq!(p.evict.len(), 2);
        // Not while every node is down.
        let p = plan(&tainted, Some(&lease(old)), &pods, later, GRACE, false);
        assert!(p.evict.is_empty());
    }

    #[test]
    fn a_node_back_to_ready_loses_its_taints_and_keeps_others() {
        let now = Timestamp::now();
        let taints = json!([{"key": UNREACHABLE, "effect": "NoSchedule"},
                            {"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": Time(now)},
                            {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]);
        let p = plan(
            &node("True", now, taints),
            Some(&lease(now)),
            &[],
            now,
            GRACE,
            true,
        );
        let t = p.taints.unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].key, "dedicated");
        // NotReady reported by the node itself: the not-ready taints.
        let p = plan(
            &node("False", now, json!([])),
            Some(&lease(now)),
            &[],
            now,
            GRACE,
            true,
        );
        assert!(p.taints.unwrap().iter().all(|t| t.key == NOT_READY));
    }
}
