//! The garbage collector: dependents follow their owners through
//! `metadata.ownerReferences`.
//!
//! - Background: an object all of whose owners are gone is deleted; an
//!   object with some owners gone loses those references.
//! - Foreground: an owner being deleted with the `foregroundDeletion`
//!   finalizer has its dependents deleted; the finalizer goes once no
//!   dependent with `blockOwnerDeletion` is left.
//! - Orphan: an owner being deleted with the `orphan` finalizer has its
//!   reference removed from every dependent, then the finalizer goes.
//!
//! Unlike kube's graph builder this sweeps the watched caches as a whole
//! (debounced after changes, and periodically): the graph is rebuilt each
//! time, which is simple and cheap at this cluster's sizes. Owners of kinds
//! it does not watch are taken as present, and an owner missing from the
//! cache is confirmed missing with a live GET before anything is deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy,
};
use serde_json::json;

use crate::Shared;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

/// One cached object, whatever its kind.
#[derive(Debug, Clone)]
pub struct Obj {
    pub api_version: String,
    pub kind: String,
    pub meta: ObjectMeta,
}

impl Obj {
    fn uid(&self) -> &str {
        self.meta.uid.as_deref().unwrap_or_default()
    }
    fn has_finalizer(&self, f: &str) -> bool {
        self.meta.finalizers.iter().flatten().any(|x| x == f)
    }
    fn ns(&self) -> &str {
        self.meta.namespace.as_deref().unwrap_or_default()
    }
    fn name(&self) -> &str {
        self.meta.name.as_deref().unwrap_or_default()
    }
}

/// What the collector does to one object.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Delete it (uid as precondition), propagating like this.
    Delete { target: Target, foreground: bool },
    /// Keep only these owner references.
    SetOwners {
        target: Target,
        owners: Vec<OwnerReference>,
    },
    RemoveFinalizer {
        target: Target,
        finalizer: &'static str,
        remaining: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

fn target(o: &Obj) -> Target {
    Target {
        api_version: o.api_version.clone(),
        kind: o.kind.clone(),
        namespace: o.ns().to_string(),
        name: o.name().to_string(),
        uid: o.uid().to_string(),
    }
}

/// The pure decision over all cached objects. `watched` are the
/// (apiVersion, kind) pairs the caches hold: an owner of another kind is
/// taken as present. Returns actions and the owners (as targets) whose
/// absence must be confirmed live before a Delete/SetOwners depending on
/// them is carried out.
pub fn sweep(objects: &[Obj], watched: &HashSet<(String, String)>) -> Vec<(Action, Vec<Target>)> {
    let by_uid: HashMap<&str, &Obj> = objects.iter().map(|o| (o.uid(), o)).collect();
    let mut dependents: HashMap<&str, Vec<&Obj>> = HashMap::new();
    for o in objects {
        for r in o.meta.owner_references.iter().flatten() {
            dependents.entry(r.uid.as_str()).or_default().push(o);
        }
    }
    let mut out = Vec::new();
    for o in objects {
        let refs: Vec<&OwnerReference> = o.meta.owner_references.iter().flatten().collect();
        let deleting = o.meta.deletion_timestamp.is_some();
        // Dependents of an owner being deleted.
        if deleting && o.has_finalizer(ORPHAN) {
            let deps = dependents.get(o.uid()).cloned().unwrap_or_default();
            for d in &deps {
                let owners = d
                    .meta
                    .owner_references
                    .iter()
                    .flatten()
                    .filter(|r| r.uid != o.uid())
                    .cloned()
                    .collect();
                out.push((
                    Action::SetOwners {
                        target: target(d),
                        owners,
                    },
                    vec![],
                ));
            }
            if deps.is_empty() {
                out.push((remove_finalizer(o, ORPHAN), vec![]));
            }
            continue;
        }
        if deleting && o.has_finalizer(FOREGROUND) {
            let deps = dependents.get(o.uid()).cloned().unwrap_or_default();
            for d in deps.iter().filter(|d| d.meta.deletion_timestamp.is_none()) {
                out.push((
                    Action::Delete {
                        target: target(d),
                        foreground: true,
                    },
                    vec![],
                ));
            }
            let blocking = deps.iter().any(|d| {
                d.meta
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.uid == o.uid() && r.block_owner_deletion == Some(true))
            });
            if !blocking {
                out.push((remove_finalizer(o, FOREGROUND), vec![]));
            }
        }
        if refs.is_empty() || deleting {
            continue;
        }
        // This object as a dependent.
        let absent = |r: &&OwnerReference| {
            watched.contains(&(r.api_version.clone(), r.kind.clone()))
                && !by_uid.contains_key(r.uid.as_str())
        };
        let gone: Vec<&OwnerReference> = refs.iter().copied().filter(absent).collect();
        let owner_targets: Vec<Target> = gone
            .iter()
            .map(|r| Target {
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                namespace: o.ns().to_string(),
                name: r.name.clone(),
                uid: r.uid.clone(),
            })
            .collect();
        let foreground_owner = refs.iter().any(|r| {
            by_uid.get(r.uid.as_str()).is_some_and(|ow| {
                ow.meta.deletion_timestamp.is_some() && ow.has_finalizer(FOREGROUND)
            })
        });
        if foreground_owner {
            // Handled from the owner's side above.
            continue;
        }
        if gone.len() == refs.len() {
            out.push((
                Action::Delete {
                    target: target(o),
                    foreground: false,
                },
                owner_targets,
            ));
        } else if !gone.is_empty() {
            let owners = refs
                .iter()
                .filter(|r| !gone.iter().any(|g| g.uid == r.uid))
                .map(|r| (*r).clone())
                .collect();
            out.push((
                Action::SetOwners {
                    target: target(o),
                    owners,
                },
                owner_targets,
            ));
        }
    }
    out
}

fn remove_finalizer(o: &Obj, f: &'static str) -> Action {
    Action::RemoveFinalizer {
        target: target(o),
        finalizer: f,
        remaining: o
            .meta
            .finalizers
            .iter()
            .flatten()
            .filter(|x| *x != f)
            .cloned()
            .collect(),
    }
}

/// The kinds the collector watches: (apiVersion, kind, plural, namespaced).
const KINDS: &[(&str, &str, &str, bool)] = &[
    ("v1", "Pod", "pods", true),
    ("apps/v1", "ReplicaSet", "replicasets", true),
    ("apps/v1", "Deployment", "deployments", true),
    ("apps/v1", "DaemonSet", "daemonsets", true),
    ("batch/v1", "Job", "jobs", true),
    ("batch/v1", "CronJob", "cronjobs", true),
    ("v1", "Node", "nodes", false),
    ("coordination.k8s.io/v1", "Lease", "leases", true),
    ("v1", "Service", "services", true),
    ("v1", "Endpoints", "endpoints", true),
    (
        "discovery.k8s.io/v1",
        "EndpointSlice",
        "endpointslices",
        true,
    ),
];

fn api_for(shared: &Shared, api_version: &str, kind: &str, ns: &str) -> Option<Api<DynamicObject>> {
    let (_, _, plural, namespaced) = KINDS.iter().find(|k| k.0 == api_version && k.1 == kind)?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: (*plural).into(),
    };
    Some(if *namespaced {
        Api::namespaced_with(shared.client.clone(), ns, &ar)
    } else {
        Api::all_with(shared.client.clone(), &ar)
    })
}

/// Whether the owner is really gone (not merely missing from a cache that
/// lags).
async fn confirmed_absent(shared: &Shared, t: &Target) -> Result<bool, kube::Error> {
    let Some(api) = api_for(shared, &t.api_version, &t.kind, &t.namespace) else {
        return Ok(false);
    };
    Ok(match api.get_opt(&t.name).await? {
        None => true,
        Some(o) => o.metadata.uid.as_deref() != Some(&t.uid),
    })
}

async fn execute(shared: &Shared, a: &Action) -> Result<(), kube::Error> {
    let t = match a {
        Action::Delete { target, .. }
        | Action::SetOwners { target, .. }
        | Action::RemoveFinalizer { target, .. } => target,
    };
    let Some(api) = api_for(shared, &t.api_version, &t.kind, &t.namespace) else {
        return Ok(());
    };
    let pp = PatchParams::default();
    let r = match a {
        Action::Delete { foreground, .. } => {
            let mut dp = DeleteParams {
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(t.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            dp.propagation_policy = Some(if *foreground {
                PropagationPolicy::Foreground
            } else {
                PropagationPolicy::Background
            });
            api.delete(&t.name, &dp).await.map(drop)
        }
        Action::SetOwners { owners, .. } => api
            .patch(
                &t.name,
                &pp,
                &Patch::Merge(json!({"metadata": {"ownerReferences": owners}})),
            )
            .await
            .map(drop),
        Action::RemoveFinalizer { remaining, .. } => api
            .patch(
                &t.name,
                &pp,
                &Patch::Merge(json!({"metadata": {"finalizers": remaining}})),
            )
            .await
            .map(drop),
    };
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        r => r,
    }
}

fn objs<K: Resource<DynamicType = ()> + Clone>(
    store: &kube::runtime::reflector::Store<K>,
) -> Vec<Obj> {
    store
        .state()
        .iter()
        .map(|o| Obj {
            api_version: K::api_version(&()).into(),
            kind: K::kind(&()).into(),
            meta: o.meta().clone(),
        })
        .collect()
}

/// Sweeps after changes (debounced) and every few seconds.
pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let i = informers;
    let changes = futures::stream::select_all([
        i.pods.subscribe().map(drop).boxed(),
        i.replicasets.subscribe().map(drop).boxed(),
        i.deployments.subscribe().map(drop).boxed(),
        i.daemonsets.subscribe().map(drop).boxed(),
        i.cronjobs.subscribe().map(drop).boxed(),
        i.jobs.subscribe().map(drop).boxed(),
        i.nodes.subscribe().map(drop).boxed(),
        i.node_leases.subscribe().map(drop).boxed(),
        i.services.subscribe().map(drop).boxed(),
        i.endpoints.subscribe().map(drop).boxed(),
        i.endpointslices.subscribe().map(drop).boxed(),
    ]);
    let mut changes = std::pin::pin!(changes);
    let stores = (
        i.pods.store(),
        i.replicasets.store(),
        i.deployments.store(),
        i.jobs.store(),
        i.nodes.store(),
        i.node_leases.store(),
        i.services.store(),
        i.endpoints.store(),
        i.endpointslices.store(),
        i.daemonsets.store(),
        i.cronjobs.store(),
    );
    i.pods.ready().await;
    i.replicasets.ready().await;
    i.deployments.ready().await;
    let watched: HashSet<(String, String)> = KINDS
        .iter()
        .map(|k| (k.0.to_string(), k.1.to_string()))
        .collect();
    loop {
        let mut all = objs(&stores.0);
        all.extend(objs(&stores.1));
        all.extend(objs(&stores.2));
        all.extend(objs(&stores.3));
        all.extend(objs(&stores.4));
        all.extend(objs(&stores.5));
        all.extend(objs(&stores.6));
        all.extend(objs(&stores.7));
        all.extend(objs(&stores.8));
        all.extend(objs(&stores.9));
        all.extend(objs(&stores.10));
        for (action, owners) in sweep(&all, &watched) {
            let mut go = true;
            for o in &owners {
                match confirmed_absent(&shared, o).await {
                    Ok(true) => {}
                    Ok(false) => go = false,
                    Err(e) => {
                        tracing::warn!(kind = %o.kind, name = %o.name, error = %e, "gc: looking up an owner");
                        go = false;
                    }
                }
            }
            if go && let Err(e) = execute(&shared, &action).await {
                tracing::warn!(action = ?action, error = %e, "gc action failed");
            }
        }
        // Wait for a change (then let a burst settle) or the periodic sweep.
        let _ = tokio::time::timeout(Duration::from_secs(5), changes.next()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        while let Ok(Some(())) = tokio::time::timeout(Duration::ZERO, changes.next()).await {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(
        kind: &str,
        name: &str,
        owners: &[(&str, &str, bool)],
        deleting: bool,
        finalizers: &[&str],
    ) -> Obj {
        let meta: ObjectMeta = serde_json::from_value(json!({
            "name": name, "namespace": "default", "uid": name,
            "ownerReferences": owners.iter().map(|(k, uid, block)| json!({
                "apiVersion": "apps/v1", "kind": k, "name": uid, "uid": uid, "controller": true,
                "blockOwnerDeletion": block})).collect::<Vec<_>>(),
            "finalizers": finalizers,
        }))
        .unwrap();
        let mut meta = meta;
        if deleting {
            meta.deletion_timestamp = Some(crate::util::now());
        }
        Obj {
            api_version: if kind == "Pod" { "v1" } else { "apps/v1" }.into(),
            kind: kind.into(),
            meta,
        }
    }

    fn watched() -> HashSet<(String, String)> {
        KINDS
            .iter()
            .map(|k| (k.0.to_string(), k.1.to_string()))
            .collect()
    }

    #[test]
    fn background_deletes_dependents_of_missing_owners() {
        let objs = vec![
            obj(
                "Pod",
                "orphaned",
                &[("ReplicaSet", "gone", true)],
                false,
                &[],
            ),
            obj("Pod", "kept", &[("ReplicaSet", "rs", true)], false, &[]),
            obj("ReplicaSet", "rs", &[], false, &[]),
            obj("Pod", "unknown-owner", &[("Widget", "w", true)], false, &[]),
        ];
        let out = sweep(&objs, &watched());
        assert_eq!(out.len(), 1, "{out:?}");
        let (
            Action::Delete {
                target,
                foreground: false,
            },
            owners,
        ) = &out[0]
        else {
            panic!()
        };
        assert_eq!(target.name, "orphaned");
        assert_eq!(owners[0].name, "gone");
    }

    #[test]
    fn dangling_references_are_dropped() {
        let mut o = obj("Pod", "p", &[("ReplicaSet", "gone", true)], false, &[]);
        o.meta
            .owner_references
            .as_mut()
            .unwrap()
            .push(OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: "d".into(),
                uid: "d".into(),
                ..Default::default()
            });
        let out = sweep(&[o, obj("Deployment", "d", &[], false, &[])], &watched());
        let (Action::SetOwners { owners, .. }, _) = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].uid, "d");
    }

    #[test]
    fn foreground_waits_for_blocking_dependents() {
        let owner = obj("ReplicaSet", "rs", &[], true, &[FOREGROUND]);
        let dep = obj("Pod", "p", &[("ReplicaSet", "rs", true)], false, &[]);
        let out = sweep(&[owner.clone(), dep.clone()], &watched());
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0].0, Action::Delete { target, foreground: true } if target.name == "p")
        );
        // Dependent terminating: still blocks.
        let dep_going = obj("Pod", "p", &[("ReplicaSet", "rs", true)], true, &[]);
        assert!(sweep(&[owner.clone(), dep_going], &watched()).is_empty());
        // Gone: the finalizer goes.
        let out = sweep(&[owner], &watched());
        assert!(
            matches!(&out[0].0, Action::RemoveFinalizer { finalizer: FOREGROUND, remaining, .. } if remaining.is_empty())
        );
    }

    #[test]
    fn orphan_releases_dependents_then_the_owner() {
        let owner = obj("ReplicaSet", "rs", &[], true, &[ORPHAN, "other"]);
        let dep = obj("Pod", "p", &[("ReplicaSet", "rs", true)], false, &[]);
        let out = sweep(&[owner.clone(), dep], &watched());
        assert_eq!(out.len(), 1);
        assert!(
            matches!(&out[0].0, Action::SetOwners { target, owners } if target.name == "p" && owners.is_empty())
        );
        let out = sweep(&[owner], &watched());
        assert!(
            matches!(&out[0].0, Action::RemoveFinalizer { finalizer: ORPHAN, remaining, .. } if remaining == &vec!["other".to_string()])
        );
    }
}
