//! The ReplicaSet controller: keeps `spec.replicas` active pods that match
//! the selector, adopting matching orphans and releasing owned pods that no
//! longer match, and reports the counts in status.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::expectations::Seen;
use crate::util::{self, controller_of, selector_matches};
use crate::{Error, Shared};

/// What one sync of a ReplicaSet does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Orphans matching the selector: take them over.
    pub adopt: Vec<String>,
    /// Owned pods that no longer match: let go.
    pub release: Vec<String>,
    /// Pods to create from the template.
    pub create: usize,
    /// Pods to delete, in kube's preference order.
    pub delete: Vec<String>,
    pub status: ReplicaSetStatus,
}

/// Which pod to delete first: unscheduled before scheduled, pending before
/// running, not ready before ready, recently ready before long ready, more
/// restarts first, newer before older (kube's ActivePods ordering).
fn deletion_rank(p: &Pod) -> impl Ord {
    let scheduled = !util::pod_node(p).is_empty();
    let phase_rank = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Pending") | None => 0,
        Some("Running") => 2,
        _ => 1,
    };
    let ready = util::pod_ready(p);
    let ready_since = p
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| std::cmp::Reverse(t.0));
    let restarts: i32 = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0);
    let created = std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0));
    (
        scheduled,
        phase_rank,
        ready,
        ready_since,
        std::cmp::Reverse(restarts),
        created,
    )
}

/// The pure decision: `pods` are the pods of the ReplicaSet's namespace.
pub fn plan(rs: &ReplicaSet, pods: &[Arc<Pod>], now: Timestamp) -> Plan {
    let spec = rs.spec.as_ref();
    let uid = util::uid(&rs.metadata);
    let selector = spec.map(|s| &s.selector);
    let want = spec.and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let min_ready = spec.and_then(|s| s.min_ready_seconds).unwrap_or(0);
    let rs_deleting = util::deleting(&rs.metadata);
    let mut out = Plan::default();
    let mut mine: Vec<&Pod> = Vec::new();
    for p in pods {
        let matches = selector_matches(selector, p.metadata.labels.as_ref());
        match controller_of(&p.metadata) {
            Some(o) if o.uid == uid => {
                if matches || rs_deleting {
                    mine.push(p);
                } else {
                    out.release.push(util::name(&p.metadata).to_string());
                }
            }
            Some(_) => {}
            None => {
                if matches && !rs_deleting && util::pod_active(p) {
                    out.adopt.push(util::name(&p.metadata).to_string());
                    mine.push(p);
                }
            }
        }
    }
    let mut active: Vec<&Pod> = mine
        .iter()
        .copied()
        .filter(|p| util::pod_active(p))
        .collect();
    if !rs_deleting {
        if active.len() < want {
            out.create = want - active.len();
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            out.delete = active[..active.len() - want]
                .iter()
                .map(|p| util::name(&p.metadata).to_string())
                .collect();
        }
    }
    let template_labels = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let count = |f: &dyn Fn(&Pod) -> bool| active.iter().filter(|p| f(p)).count() as i32;
    out.status = ReplicaSetStatus {
        replicas: active.len() as i32,
        fully_labeled_replicas: Some(count(&|p| {
            let l = p.metadata.labels.clone().unwrap_or_default();
            template_labels.iter().all(|(k, v)| l.get(k) == Some(v))
        })),
        ready_replicas: Some(count(&|p| util::pod_ready(p))),
        available_replicas: Some(count(&|p| util::pod_available(p, min_ready, now))),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
        terminating_replicas: None,
    };
    out
}

/// A pod of this template owned by `owner` (also used by the Job controller).
pub fn pod_from_template(
    template: Option<&k8s_openapi::api::core::v1::PodTemplateSpec>,
    name: &str,
    ns: &str,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Pod {
    let tm = template
        .and_then(|t| t.metadata.clone())
        .unwrap_or_default();
    Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(ns.to_string()),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: template.and_then(|t| t.spec.clone()),
        status: None,
    }
}

/// Creates pods in doubling batches (kube's slow start): a failing batch
/// stops the rest. Returns the names created and the first error.
pub async fn create_pods(api: &Api<Pod>, pods: Vec<Pod>) -> (Vec<String>, Option<kube::Error>) {
    let mut created = Vec::new();
    let mut batch = 1;
    let mut rest = pods.into_iter().peekable();
    while rest.peek().is_some() {
        let chunk: Vec<Pod> = rest.by_ref().take(batch).collect();
        let results: Vec<_> = futures::stream::iter(chunk)
            .map(|p| async move {
                let name = util::name(&p.metadata).to_string();
                api.create(&PostParams::default(), &p).await.map(|_| name)
            })
            .buffer_unordered(32)
            .collect()
            .await;
        let mut err = None;
        for r in results {
            match r {
                Ok(n) => created.push(n),
                Err(e) => err = Some(e),
            }
        }
        if err.is_some() {
            return (created, err);
        }
        batch *= 2;
    }
    (created, None)
}

/// Deletes pods by name; NotFound counts as done.
pub async fn delete_pods(api: &Api<Pod>, names: &[String]) -> (Vec<String>, Option<kube::Error>) {
    let results: Vec<_> = futures::stream::iter(names.iter().cloned())
        .map(|n| async move {
            match api.delete(&n, &DeleteParams::default()).await {
                Ok(_) => Ok(n),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(n),
                Err(e) => Err(e),
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let mut done = Vec::new();
    let mut err = None;
    for r in results {
        match r {
            Ok(n) => done.push(n),
            Err(e) => err = Some(e),
        }
    }
    (done, err)
}

/// Sets (or with `None` removes) the controller reference of `pod`, keeping
/// its other owner references.
pub async fn set_owner(
    api: &Api<Pod>,
    pod: &Pod,
    owner: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Result<(), kube::Error> {
    let mut refs: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller != Some(true))
        .cloned()
        .collect();
    refs.extend(owner.cloned());
    // The uid precondition: never touch a same-named successor.
    let patch = json!({"metadata": {"ownerReferences": refs, "uid": pod.metadata.uid}});
    match api
        .patch(
            util::name(&pod.metadata),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

/// kube's per-pod SuccessfulCreate/SuccessfulDelete events (a summary
/// beyond a few, so scaling to hundreds does not write hundreds).
pub fn pod_events<K: kube::Resource<DynamicType = ()>>(
    shared: &Shared,
    owner: &K,
    component: &str,
    created: &[String],
    deleted: &[String],
) {
    for (names, reason, verb) in [
        (created, "SuccessfulCreate", "Created"),
        (deleted, "SuccessfulDelete", "Deleted"),
    ] {
        if names.len() <= 3 {
            for n in names {
                crate::events::record(
                    &shared.client,
                    owner,
                    component,
                    false,
                    reason,
                    format!("{verb} pod: {n}"),
                );
            }
        } else {
            crate::events::record(
                &shared.client,
                owner,
                component,
                false,
                reason,
                format!(
                    "{verb} {} pods: {}, ...",
                    names.len(),
                    names[..3].join(", ")
                ),
            );
        }
    }
}

/// What the cache says about pod `ns/name`.
fn seen(shared: &Shared, ns: &str, name: &str) -> Seen {
    match shared.pods.get(&ObjectRef::new(name).within(ns)) {
        None => Seen::Absent,
        Some(p) if util::deleting(&p.metadata) => Seen::Deleting,
        Some(_) => Seen::Present,
    }
}

/// The pods of namespace `ns` once the cache shows every create and delete
/// the controller of `key` made (kube's expectations); `None` until then,
/// when acting again would double them.
pub fn settled_pods(shared: &Shared, key: &str, ns: &str) -> Option<Vec<Arc<Pod>>> {
    shared
        .expectations
        .satisfied(key, |n| seen(shared, ns, n))
        .then(|| pods_in(shared, ns))
}

pub fn pods_in(shared: &Shared, ns: &str) -> Vec<Arc<Pod>> {
    shared
        .pods
        .state()
        .into_iter()
        .filter(|p| util::namespace(&p.metadata) == ns)
        .collect()
}

async fn reconcile(rs: Arc<ReplicaSet>, shared: Arc<Shared>) -> Result<Action, Error> {
    let ns = util::namespace(&rs.metadata).to_string();
    let name = util::name(&rs.metadata).to_string();
    let key = format!("replicasets/{ns}/{name}");
    let Some(pods) = settled_pods(&shared, &key, &ns) else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let plan = plan(&rs, &pods, Timestamp::now());
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let owner = util::controller_ref("apps/v1", "ReplicaSet", &rs.metadata);
    let by_name = |n: &String| pods.iter().find(|p| util::name(&p.metadata) == n);
    for p in plan.adopt.iter().filter_map(by_name) {
        set_owner(&api, p, Some(&owner)).await?;
    }
    for p in plan.release.iter().filter_map(by_name) {
        set_owner(&api, p, None).await?;
    }
    let template = rs.spec.as_ref().and_then(|s| s.template.as_ref());
    let new_pods: Vec<Pod> = (0..plan.create)
        .map(|_| pod_from_template(template, &util::generate_name(&name), &ns, owner.clone()))
        .collect();
    let (created, create_err) = create_pods(&api, new_pods).await;
    let (deleted, delete_err) = delete_pods(&api, &plan.delete).await;
    pod_events(
        &shared,
        rs.as_ref(),
        "replicaset-controller",
        &created,
        &deleted,
    );
    if let Some(e) = &create_err {
        crate::events::record(
            &shared.client,
            rs.as_ref(),
            "replicaset-controller",
            true,
            "FailedCreate",
            format!("Error creating: {e}"),
        );
    }
    shared.expectations.expect(&key, created, deleted);
    if rs.status.as_ref() != Some(&plan.status) {
        let rsapi: Api<ReplicaSet> = Api::namespaced(shared.client.clone(), &ns);
        match rsapi
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": plan.status})),
            )
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(e) = create_err.or(delete_err) {
        return Err(e.into());
    }
    shared.retry_reset(&key);
    // minReadySeconds: look again when pods may have become available.
    let min_ready = rs
        .spec
        .as_ref()
        .and_then(|s| s.min_ready_seconds)
        .unwrap_or(0);
    Ok(
        if min_ready > 0 && plan.status.available_replicas != plan.status.ready_replicas {
            Action::requeue(Duration::from_secs(min_ready as u64))
        } else {
            Action::await_change()
        },
    )
}

/// The ReplicaSets a pod change concerns: its controller, or for an orphan
/// every ReplicaSet of its namespace whose selector matches it.
fn owners_of(
    pod: &Pod,
    rss: &kube::runtime::reflector::Store<ReplicaSet>,
) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = util::namespace(&pod.metadata);
    match controller_of(&pod.metadata) {
        Some(o) if o.kind == "ReplicaSet" => vec![ObjectRef::new(&o.name).within(ns)],
        Some(_) => Vec::new(),
        None => rss
            .state()
            .iter()
            .filter(|rs| {
                util::namespace(&rs.metadata) == ns
                    && selector_matches(
                        rs.spec.as_ref().map(|s| &s.selector),
                        pod.metadata.labels.as_ref(),
                    )
            })
            .map(|rs| ObjectRef::from_obj(rs.as_ref()))
            .collect(),
    }
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let rss = informers.replicasets.store();
    let pod_events = informers
        .pods
        .subscribe()
        .flat_map(move |p| futures::stream::iter(owners_of(&p, &rss)));
    Controller::for_shared_stream(
        informers.replicasets.subscribe(),
        informers.replicasets.store(),
    )
    .reconcile_on(pod_events)
    .reconcile_all_on(crate::ticks(crate::RESYNC))
    .run(
        crate::metrics::metered("replicaset", &shared.cfg.stats, reconcile),
        crate::error_policy,
        shared,
    )
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "rs-uid", "generation": 3},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    }

    #[test]
    fn creates_the_missing_and_adopts_orphans() {
        let pods = vec![
            pod(
                "a",
                &[("app", "web")],
                Some(("ReplicaSet", "rs-uid")),
                "Running",
                true,
                "n1",
            ),
            pod("orphan", &[("app", "web")], None, "Running", false, "n1"),
            pod("other", &[("app", "db")], None, "Running", true, "n1"),
            pod(
                "done",
                &[("app", "web")],
                Some(("ReplicaSet", "rs-uid")),
                "Succeeded",
                false,
                "n1",
            ),
        ];
        let p = plan(&rs(4), &pods, Timestamp::now());
        assert_eq!(p.adopt, vec!["orphan"]);
        assert_eq!(p.create, 2);
        assert!(p.delete.is_empty());
        assert_eq!(p.status.replicas, 2);
        assert_eq!(p.status.ready_replicas, Some(1));
        assert_eq!(p.status.available_replicas, Some(1));
        assert_eq!(p.status.fully_labeled_replicas, Some(2));
        assert_eq!(p.status.observed_generation, Some(3));
    }

    #[test]
    fn deletes_unscheduled_then_not_ready_then_ready() {
        let o = Some(("ReplicaSet", "rs-uid"));
        let pods = vec![
            pod("ready", &[("app", "web")], o, "Running", true, "n1"),
            pod("notready", &[("app", "web")], o, "Running", false, "n1"),
            pod("unscheduled", &[("app", "web")], o, "Pending", false, ""),
            pod("terminating", &[("app", "web")], o, "Running", true, "n1").deleting(),
        ];
        assert_eq!(
            plan(&rs(2), &pods, Timestamp::now()).delete,
            vec!["unscheduled"]
        );
        assert_eq!(
            plan(&rs(1), &pods, Timestamp::now()).delete,
            vec!["unscheduled", "notready"]
        );
        let p = plan(&rs(0), &pods, Timestamp::now());
        assert_eq!(p.delete, vec!["unscheduled", "notready", "ready"]);
        // The terminating pod is not counted: scaling to 3 creates one.
        assert_eq!(plan(&rs(4), &pods, Timestamp::now()).create, 1);
    }

    #[test]
    fn releases_pods_that_stop_matching_and_leaves_others_alone() {
        let pods = vec![
            pod(
                "relabeled",
                &[("app", "x")],
                Some(("ReplicaSet", "rs-uid")),
                "Running",
                true,
                "n1",
            ),
            pod(
                "theirs",
                &[("app", "web")],
                Some(("ReplicaSet", "other")),
                "Running",
                true,
                "n1",
            ),
        ];
        let p = plan(&rs(1), &pods, Timestamp::now());
        assert_eq!(p.release, vec!["relabeled"]);
        assert!(p.adopt.is_empty());
        assert_eq!(p.create, 1);
    }
}
