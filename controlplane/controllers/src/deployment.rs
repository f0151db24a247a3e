//! The Deployment controller: one ReplicaSet per pod template (named by its
//! `pod-template-hash`), rolled with RollingUpdate (maxSurge /
//! maxUnavailable) or Recreate, revisions in the
//! `deployment.kubernetes.io/revision` annotation (what `kubectl rollout
//! history` and `undo` read), old ReplicaSets kept up to
//! `revisionHistoryLimit`, and the status and conditions `kubectl rollout
//! status` waits on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentSpec, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::util::{self, controller_of, selector_matches};
use crate::{Error, Shared};

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const HASH_LABEL: &str = "pod-template-hash";

/// Deployment annotations not copied to its ReplicaSets (kube's list).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// One write the controller makes.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Take over (controller reference) an orphan ReplicaSet.
    Adopt(String),
    /// Drop the controller reference of a ReplicaSet that stopped matching.
    Release(String),
    Create(Box<ReplicaSet>),
    /// Set replicas and the desired/max annotations.
    Scale {
        rs: String,
        replicas: i32,
    },
    /// Set these annotations (revision, copied ones) on a ReplicaSet.
    Annotate {
        rs: String,
        annotations: BTreeMap<String, String>,
    },
    Delete(String),
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub steps: Vec<Step>,
    /// The Deployment's revision annotation when it changes.
    pub revision: Option<String>,
    pub status: DeploymentStatus,
    /// Look again after this long (progress deadline).
    pub requeue: Option<Duration>,
}

fn revision_of(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status
        .as_ref()
        .map(|s| {
            (
                s.replicas,
                s.ready_replicas.unwrap_or(0),
                s.available_replicas.unwrap_or(0),
            )
        })
        .unwrap_or_default()
}

/// The template without its pod-template-hash label.
fn without_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
        if l.is_empty() {
            t.metadata.as_mut().expect("has metadata").labels = None;
        }
    }
    t
}

pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let (a, b) = (without_hash(a), without_hash(b));
    serde_json::to_value(&a).ok() == serde_json::to_value(&b).ok()
}

/// The pod-template-hash: FNV-32a of the template (and the collision count)
/// encoded with kube's safe alphabet.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut data = serde_json::to_vec(&without_hash(t)).unwrap_or_default();
    if let Some(c) = collision_count {
        data.extend_from_slice(c.to_string().as_bytes());
    }
    util::safe_encode(&util::fnv32a(&data).to_string())
}

/// An int or a percentage of `total`, rounded up or down.
fn resolve(v: Option<&IntOrString>, total: i32, default: &str, round_up: bool) -> i32 {
    let v = v.cloned().unwrap_or(IntOrString::String(default.into()));
    match v {
        IntOrString::Int(i) => i,
        IntOrString::String(s) => {
            let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            let x = pct * i64::from(total);
            (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
        }
    }
}

/// (maxSurge, maxUnavailable) as kube resolves them: never both zero.
pub fn surge_and_unavailable(d: &Deployment) -> (i32, i32) {
    let spec = d.spec.as_ref();
    let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
    let strategy = spec.and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, 0);
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), replicas, "25%", true);
    let unavail = resolve(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        replicas,
        "25%",
        false,
    );
    if surge == 0 && unavail == 0 {
        (0, 1)
    } else {
        (surge, unavail)
    }
}

fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.metadata
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !NOT_COPIED.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn condition<'a>(st: Option<&'a DeploymentStatus>, t: &str) -> Option<&'a DeploymentCondition> {
    st?.conditions.as_ref()?.iter().find(|c| c.type_ == t)
}

/// Sets condition `t`; the transition time moves only when the status does.
fn set_condition(
    conds: &mut Vec<DeploymentCondition>,
    prev: Option<&DeploymentCondition>,
    t: &str,
    status: &str,
    reason: &str,
    message: String,
    now: &Time,
) {
    let same_status = prev.is_some_and(|p| p.status == status);
    let same = same_status && prev.is_some_and(|p| p.reason.as_deref() == Some(reason));
    conds.retain(|c| c.type_ != t);
    conds.push(DeploymentCondition {
        type_: t.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: if same_status {
            prev.and_then(|p| p.last_transition_time.clone())
        } else {
            Some(now.clone())
        },
        last_update_time: if same {
            prev.and_then(|p| p.last_update_time.clone())
        } else {
            Some(now.clone())
        },
    });
}

/// The new ReplicaSet for `d`'s template.
fn new_replicaset(d: &Deployment, hash: &str, replicas: i32, revision: i64) -> ReplicaSet {
    let spec = d.spec.clone().unwrap_or_default();
    let mut template = spec.template.clone();
    let tm = template.metadata.get_or_insert_with(Default::default);
    tm.labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let mut selector: LabelSelector = spec.selector.clone();
    selector
        .match_labels
        .get_or_insert_with(Default::default)
        .insert(HASH_LABEL.into(), hash.into());
    let (surge, _) = surge_and_unavailable(d);
    let want = spec.replicas.unwrap_or(1);
    let mut annotations = copied_annotations(d);
    annotations.insert(REVISION.into(), revision.to_string());
    annotations.insert(DESIRED_REPLICAS.into(), want.to_string());
    annotations.insert(MAX_REPLICAS.into(), (want + surge).to_string());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", util::name(&d.metadata))),
            namespace: d.metadata.namespace.clone(),
            labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
            annotations: Some(annotations),
            owner_references: Some(vec![util::controller_ref(
                "apps/v1",
                "Deployment",
                &d.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    }
}

/// What one sync of a Deployment works from once ownership is settled.
struct Rollout<'a> {
    d: &'a Deployment,
    spec: DeploymentSpec,
    want: i32,
    deleting: bool,
    paused: bool,
    recreate: bool,
    surge: i32,
    max_unavailable: i32,
    /// The ReplicaSets it owns, oldest first.
    rss: Vec<&'a ReplicaSet>,
    /// The one whose template is the Deployment's, if any.
    new_rs: Option<&'a ReplicaSet>,
    olds: Vec<&'a ReplicaSet>,
    old_spec: i32,
    old_running: i32,
}

/// The new ReplicaSet after [`Rollout::sync_new`].
struct NewReplicaSet {
    name: Option<String>,
    spec_replicas: i32,
    /// Why progress was made (a created ReplicaSet).
    progress: Option<(&'static str, String)>,
    collision_count: Option<i32>,
}

/// The pure decision for `d` given every ReplicaSet of its namespace.
pub fn plan(d: &Deployment, all: &[Arc<ReplicaSet>], now: Timestamp) -> Plan {
    let mut out = Plan::default();
    let r = Rollout::new(d, owned_replicasets(d, all, &mut out.steps));
    let mut new = r.sync_new(all, &mut out);
    let mut scaled = false;
    if !r.paused
        && !r.deleting
        && let (Some(name), Some(new_rs)) = (&new.name, r.new_rs)
    {
        let before = out.steps.len();
        let new_target = if r.recreate {
            r.scale_recreate(name, new_rs, &mut out.steps)
        } else {
            r.scale_rolling(name, new_rs, &mut out.steps)
        };
        new.spec_replicas = new_target.unwrap_or(new.spec_replicas);
        scaled = out.steps.len() > before;
    }
    out.status = r.status(&new, scaled, now, &mut out.requeue);
    if r.complete(&out.status, new.spec_replicas) {
        r.prune_history(&mut out.steps);
    }
    out
}

/// Ownership: ours that match, adopted orphans that match (oldest first);
/// ours that stopped matching are released.
fn owned_replicasets<'a>(
    d: &Deployment,
    all: &'a [Arc<ReplicaSet>],
    steps: &mut Vec<Step>,
) -> Vec<&'a ReplicaSet> {
    let spec = d.spec.clone().unwrap_or_default();
    let uid = util::uid(&d.metadata);
    let mut rss: Vec<&ReplicaSet> = Vec::new();
    for rs in all {
        let matches = selector_matches(Some(&spec.selector), rs.metadata.labels.as_ref());
        match controller_of(&rs.metadata) {
            Some(o) if o.uid == uid => {
                if matches {
                    rss.push(rs);
                } else {
                    steps.push(Step::Release(util::name(&rs.metadata).to_string()));
                }
            }
            None if matches && !util::deleting(&d.metadata) && !util::deleting(&rs.metadata) => {
                steps.push(Step::Adopt(util::name(&rs.metadata).to_string()));
                rss.push(rs);
            }
            _ => {}
        }
    }
    rss.sort_by_key(|rs| {
        (
            rs.metadata.creation_timestamp.as_ref().map(|t| t.0),
            util::name(&rs.metadata).to_string(),
        )
    });
    rss
}

impl<'a> Rollout<'a> {
    fn new(d: &'a Deployment, rss: Vec<&'a ReplicaSet>) -> Rollout<'a> {
        let spec = d.spec.clone().unwrap_or_default();
        let new_rs = rss.iter().copied().find(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| equal_ignore_hash(t, &spec.template))
        });
        let olds: Vec<&ReplicaSet> = rss
            .iter()
            .copied()
            .filter(|rs| new_rs.is_none_or(|n| n.metadata.name != rs.metadata.name))
            .collect();
        let (surge, max_unavailable) = surge_and_unavailable(d);
        Rollout {
            d,
            want: spec.replicas.unwrap_or(1).max(0),
            deleting: util::deleting(&d.metadata),
            paused: spec.paused == Some(true),
            recreate: spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate"),
            surge,
            max_unavailable,
            old_spec: olds.iter().map(|rs| spec_replicas(rs)).sum(),
            old_running: olds.iter().map(|rs| status_of(rs).0).sum(),
            spec,
            rss,
            new_rs,
            olds,
        }
    }

    /// Brings the new ReplicaSet's revision and annotations up to date, or
    /// creates it (unless paused or being deleted).
    fn sync_new(&self, all: &[Arc<ReplicaSet>], out: &mut Plan) -> NewReplicaSet {
        let d = self.d;
        let max_old_revision = self
            .olds
            .iter()
            .map(|rs| revision_of(rs))
            .max()
            .unwrap_or(0);
        let mut new = NewReplicaSet {
            name: None,
            spec_replicas: 0,
            progress: None,
            collision_count: d.status.as_ref().and_then(|s| s.collision_count),
        };
        if let Some(n) = self.new_rs {
            let name = util::name(&n.metadata).to_string();
            let mut ann = n.metadata.annotations.clone().unwrap_or_default();
            let before = ann.clone();
            let rev = revision_of(n);
            let mut revision = rev;
            if rev <= max_old_revision {
                revision = max_old_revision + 1;
                if rev > 0 {
                    let mut hist: Vec<String> = ann
                        .get(REVISION_HISTORY)
                        .map(|h| h.split(',').map(str::to_string).collect())
                        .unwrap_or_default();
                    hist.push(rev.to_string());
                    ann.insert(REVISION_HISTORY.into(), hist.join(","));
                }
                ann.insert(REVISION.into(), revision.to_string());
            }
            for (k, v) in copied_annotations(d) {
                ann.insert(k, v);
            }
            if ann != before {
                out.steps.push(Step::Annotate {
                    rs: name.clone(),
                    annotations: ann,
                });
            }
            out.revision = Some(revision.to_string());
            new.spec_replicas = spec_replicas(n);
            new.name = Some(name);
        } else if !self.paused && !self.deleting {
            let hash = template_hash(&self.spec.template, new.collision_count);
            let name = format!("{}-{hash}", util::name(&d.metadata));
            if all.iter().any(|rs| util::name(&rs.metadata) == name) {
                // Same hash, other template: hash again with a bumped count.
                new.collision_count = Some(new.collision_count.unwrap_or(0) + 1);
            } else {
                let replicas = if self.recreate {
                    if self.old_spec > 0 || self.old_running > 0 {
                        0
                    } else {
                        self.want
                    }
                } else {
                    (self.want + self.surge - self.old_spec).clamp(0, self.want)
                };
                let revision = max_old_revision + 1;
                out.steps.push(Step::Create(Box::new(new_replicaset(
                    d, &hash, replicas, revision,
                ))));
                out.revision = Some(revision.to_string());
                new.progress = Some((
                    "NewReplicaSetCreated",
                    format!("Created new replica set \"{name}\""),
                ));
                new.spec_replicas = replicas;
                new.name = Some(name);
            }
        }
        new
    }

    /// Recreate: scale every old ReplicaSet to zero, then, once their pods
    /// are gone, the new one up. Returns the new one's target when it moves.
    fn scale_recreate(
        &self,
        name: &str,
        new_rs: &ReplicaSet,
        steps: &mut Vec<Step>,
    ) -> Option<i32> {
        let olds_up: Vec<&&ReplicaSet> = self
            .olds
            .iter()
            .filter(|rs| spec_replicas(rs) > 0)
            .collect();
        if !olds_up.is_empty() {
            for rs in olds_up {
                steps.push(Step::Scale {
                    rs: util::name(&rs.metadata).to_string(),
                    replicas: 0,
                });
            }
        } else if self.old_running == 0 && spec_replicas(new_rs) != self.want {
            steps.push(Step::Scale {
                rs: name.to_string(),
                replicas: self.want,
            });
            return Some(self.want);
        }
        None
    }

    /// RollingUpdate, one kind of step per sync like kube: scale the new
    /// ReplicaSet up within maxSurge (kube's reconcileNewReplicaSet), else
    /// the old ones down within maxUnavailable (reconcileOldReplicaSets).
    /// Returns the new one's target when it moves.
    fn scale_rolling(&self, name: &str, new_rs: &ReplicaSet, steps: &mut Vec<Step>) -> Option<i32> {
        let new_cur = spec_replicas(new_rs);
        let all_spec = self.old_spec + new_cur;
        let max_total = self.want + self.surge;
        let target = if new_cur > self.want {
            self.want
        } else if all_spec >= max_total {
            new_cur
        } else {
            new_cur + (max_total - all_spec).min(self.want - new_cur)
        };
        if target != new_cur {
            steps.push(Step::Scale {
                rs: name.to_string(),
                replicas: target,
            });
            return Some(target);
        }
        if self.old_spec > 0 {
            for (rs, replicas) in self.scale_down_olds(new_rs) {
                steps.push(Step::Scale { rs, replicas });
            }
        }
        None
    }

    /// The old ReplicaSets' targets: first their pods that are unavailable
    /// anyway, then available ones down to minAvailable.
    fn scale_down_olds(&self, new_rs: &ReplicaSet) -> BTreeMap<String, i32> {
        let new_cur = spec_replicas(new_rs);
        let min_available = self.want - self.max_unavailable;
        let new_unavailable = new_cur - status_of(new_rs).2;
        let mut budget = self.old_spec + new_cur - min_available - new_unavailable;
        let mut targets: BTreeMap<String, i32> = BTreeMap::new();
        for rs in &self.olds {
            if budget <= 0 {
                break;
            }
            let cur = spec_replicas(rs);
            let unhealthy = (cur - status_of(rs).2).max(0).min(budget);
            if unhealthy > 0 {
                targets.insert(util::name(&rs.metadata).to_string(), cur - unhealthy);
                budget -= unhealthy;
            }
        }
        let available: i32 = self.rss.iter().map(|rs| status_of(rs).2).sum();
        let mut down = (available - min_available).max(0);
        for rs in &self.olds {
            if down <= 0 {
                break;
            }
            let name = util::name(&rs.metadata).to_string();
            let cur = *targets.get(&name).unwrap_or(&spec_replicas(rs));
            let by = cur.min(down);
            if by > 0 {
                targets.insert(name, cur - by);
                down -= by;
            }
        }
        targets
    }

    /// Rolled out: the new ReplicaSet alone holds every wanted replica,
    /// available.
    fn complete(&self, status: &DeploymentStatus, new_spec_replicas: i32) -> bool {
        let want = Some(self.want);
        self.new_rs.is_some()
            && status.updated_replicas == want
            && status.replicas == want
            && status.available_replicas.unwrap_or(0) >= self.want
            && new_spec_replicas == self.want
            && self.old_spec == 0
            && self.old_running == 0
    }

    /// The status from what the ReplicaSets report, with the Available and
    /// Progressing conditions (and when to look again for the progress
    /// deadline).
    fn status(
        &self,
        new: &NewReplicaSet,
        scaled: bool,
        now: Timestamp,
        requeue: &mut Option<Duration>,
    ) -> DeploymentStatus {
        let sum = |f: fn(&ReplicaSet) -> i32| self.rss.iter().map(|rs| f(rs)).sum::<i32>();
        let replicas = sum(|rs| status_of(rs).0);
        let ready = sum(|rs| status_of(rs).1);
        let available = sum(|rs| status_of(rs).2);
        let updated = self.new_rs.map(|n| status_of(n).0).unwrap_or(0);
        let mut status = DeploymentStatus {
            observed_generation: self.d.metadata.generation,
            replicas: Some(replicas),
            updated_replicas: Some(updated),
            ready_replicas: Some(ready),
            available_replicas: Some(available),
            unavailable_replicas: Some((self.want - available).max(0)),
            collision_count: new.collision_count,
            conditions: None,
            terminating_replicas: None,
        };
        let prev = self.d.status.as_ref();
        let nowt = Time(now);
        let mut conds: Vec<DeploymentCondition> =
            prev.and_then(|s| s.conditions.clone()).unwrap_or_default();
        let available_cond = if available >= self.want - self.max_unavailable {
            (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        set_condition(
            &mut conds,
            condition(prev, "Available"),
            "Available",
            available_cond.0,
            available_cond.1,
            available_cond.2.into(),
            &nowt,
        );
        let rs_name = new.name.clone().unwrap_or_default();
        let complete = self.complete(&status, new.spec_replicas);
        let prev_progress = condition(prev, "Progressing");
        let progressed = prev.is_some_and(|p| {
            updated > p.updated_replicas.unwrap_or(0)
                || ready > p.ready_replicas.unwrap_or(0)
                || available > p.available_replicas.unwrap_or(0)
                || replicas < p.replicas.unwrap_or(0)
        }) || scaled;
        let deadline = self
            .spec
            .progress_deadline_seconds
            .filter(|s| *s < i32::MAX);
        let mut progressing = |status: &str, reason: &str, msg: String| {
            set_condition(
                &mut conds,
                prev_progress,
                "Progressing",
                status,
                reason,
                msg,
                &nowt,
            )
        };
        if self.paused {
            progressing("Unknown", "DeploymentPaused", "Deployment is paused".into());
        } else if let Some((reason, msg)) = &new.progress {
            progressing("True", reason, msg.clone());
        } else if complete {
            progressing(
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            );
        } else if progressed || prev_progress.is_none() {
            if prev_progress.is_none() {
                progressing(
                    "True",
                    "FoundNewReplicaSet",
                    format!("Found new replica set \"{rs_name}\""),
                );
            } else {
                progressing(
                    "True",
                    "ReplicaSetUpdated",
                    format!("ReplicaSet \"{rs_name}\" is progressing."),
                );
            }
            // An update counts as progress: restart the clock.
            if let Some(c) = conds.iter_mut().find(|c| c.type_ == "Progressing") {
                c.last_update_time = Some(nowt.clone());
            }
        } else if let (Some(secs), Some(p)) = (deadline, prev_progress)
            && p.reason.as_deref() != Some("ProgressDeadlineExceeded")
        {
            let since = p.last_update_time.as_ref().map(|t| t.0).unwrap_or(now);
            let due = since + SignedDuration::from_secs(i64::from(secs));
            if due <= now {
                progressing(
                    "False",
                    "ProgressDeadlineExceeded",
                    format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
                );
            } else {
                *requeue = Some(util::until(due, now).max(Duration::from_secs(1)));
            }
        }
        conds.sort_by_key(|c| if c.type_ == "Available" { 0 } else { 1 });
        status.conditions = Some(conds);
        status
    }

    /// Once rolled out, deletes the oldest scaled-down ReplicaSets beyond
    /// revisionHistoryLimit.
    fn prune_history(&self, steps: &mut Vec<Step>) {
        let limit = self.spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let mut idle: Vec<&&ReplicaSet> = self
            .olds
            .iter()
            .filter(|rs| {
                spec_replicas(rs) == 0 && status_of(rs).0 == 0 && !util::deleting(&rs.metadata)
            })
            .collect();
        idle.sort_by_key(|rs| revision_of(rs));
        let extra = idle.len().saturating_sub(limit);
        for rs in &idle[..extra] {
            steps.push(Step::Delete(util::name(&rs.metadata).to_string()));
        }
    }
}

/// Two statuses equal but for condition timestamps that moved only because
/// a sync ran.
fn same_status(a: Option<&DeploymentStatus>, b: &DeploymentStatus) -> bool {
    a == Some(b)
}

async fn apply(shared: &Shared, d: &Deployment, step: &Step) -> Result<(), kube::Error> {
    let ns = util::namespace(&d.metadata);
    let api: Api<ReplicaSet> = Api::namespaced(shared.client.clone(), ns);
    let pp = PatchParams::default();
    let owner = util::controller_ref("apps/v1", "Deployment", &d.metadata);
    let r = match step {
        Step::Adopt(rs) => api
            .patch(
                rs,
                &pp,
                &Patch::Merge(json!({"metadata": {"ownerReferences": [owner]}})),
            )
            .await
            .map(drop),
        Step::Release(rs) => api
            .patch(
                rs,
                &pp,
                &Patch::Merge(json!({"metadata": {"ownerReferences": []}})),
            )
            .await
            .map(drop),
        Step::Create(rs) => match api.create(&PostParams::default(), rs).await {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            r => r.map(drop),
        },
        Step::Scale { rs, replicas } => {
            let (surge, _) = surge_and_unavailable(d);
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            api.patch(
                rs,
                &pp,
                &Patch::Merge(json!({
                    "metadata": {"annotations": {
                        DESIRED_REPLICAS: want.to_string(),
                        MAX_REPLICAS: (want + surge).to_string()}},
                    "spec": {"replicas": replicas}})),
            )
            .await
            .map(drop)
        }
        Step::Annotate { rs, annotations } => api
            .patch(
                rs,
                &pp,
                &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
            )
            .await
            .map(drop),
        Step::Delete(rs) => api.delete(rs, &DeleteParams::background()).await.map(drop),
    };
    match r {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        r => r,
    }
}

async fn reconcile(d: Arc<Deployment>, shared: Arc<Shared>) -> Result<Action, Error> {
    let ns = util::namespace(&d.metadata).to_string();
    let name = util::name(&d.metadata).to_string();
    let key = format!("deployments/{ns}/{name}");
    let rss: Vec<Arc<ReplicaSet>> = shared
        .replicasets
        .state()
        .into_iter()
        .filter(|rs| util::namespace(&rs.metadata) == ns)
        .collect();
    let plan = plan(&d, &rss, Timestamp::now());
    for step in &plan.steps {
        apply(&shared, &d, step).await?;
        // kube's ScalingReplicaSet events.
        let scaled = match step {
            Step::Create(rs) => Some((util::name(&rs.metadata).to_string(), 0, spec_replicas(rs))),
            Step::Scale { rs, replicas } => rss
                .iter()
                .find(|x| util::name(&x.metadata) == rs)
                .map(|x| (rs.clone(), spec_replicas(x), *replicas)),
            _ => None,
        };
        if let Some((rs, from, to)) = scaled
            && from != to
        {
            let dir = if to > from { "up" } else { "down" };
            crate::events::record(
                &shared.client,
                d.as_ref(),
                "deployment-controller",
                false,
                "ScalingReplicaSet",
                format!("Scaled {dir} replica set {rs} from {from} to {to}"),
            );
        }
    }
    let api: Api<Deployment> = Api::namespaced(shared.client.clone(), &ns);
    let cur_rev = d
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION));
    if let Some(rev) = &plan.revision
        && cur_rev != Some(rev)
    {
        api.patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {REVISION: rev}}})),
        )
        .await?;
    }
    if !same_status(d.status.as_ref(), &plan.status) {
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": plan.status})),
        )
        .await?;
    }
    shared.retry_reset(&key);
    Ok(match plan.requeue {
        Some(t) => Action::requeue(t),
        None => Action::await_change(),
    })
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let deployments = informers.deployments.store();
    // A ReplicaSet change concerns its controller, or for an orphan every
    // Deployment whose selector matches it.
    let rs_events = informers.replicasets.subscribe().flat_map(move |rs| {
        let ns = util::namespace(&rs.metadata).to_string();
        let refs: Vec<ObjectRef<Deployment>> = match controller_of(&rs.metadata) {
            Some(o) if o.kind == "Deployment" => vec![ObjectRef::new(&o.name).within(&ns)],
            Some(_) => Vec::new(),
            None => deployments
                .state()
                .iter()
                .filter(|d| {
                    util::namespace(&d.metadata) == ns
                        && selector_matches(
                            d.spec.as_ref().map(|s| &s.selector),
                            rs.metadata.labels.as_ref(),
                        )
                })
                .map(|d| ObjectRef::from_obj(d.as_ref()))
                .collect(),
        };
        futures::stream::iter(refs)
    });
    Controller::for_shared_stream(
        informers.deployments.subscribe(),
        informers.deployments.store(),
    )
    .reconcile_on(rs_events)
    .reconcile_all_on(crate::ticks(crate::RESYNC))
    .run(
        crate::metrics::metered("deployment", &shared.cfg.stats, reconcile),
        crate::error_policy,
        shared,
    )
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 2,
                         "annotations": {"kubernetes.io/change-cause": "v"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "strategy": strategy, "revisionHistoryLimit": 1, "progressDeadlineSeconds": 600,
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn rolling() -> serde_json::Value {
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
    }

    /// The ReplicaSet the controller would create, at these counts.
    fn rs_of(d: &Deployment, spec: i32, running: i32, available: i32, rev: i64) -> Arc<ReplicaSet> {
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        let mut rs = new_replicaset(d, &hash, spec, rev);
        rs.metadata.uid = Some(format!("uid-{hash}"));
        rs.metadata.creation_timestamp = Some(Time(Timestamp::from_second(rev * 100).unwrap()));
        rs.status = Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
            replicas: running,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            ..Default::default()
        });
        Arc::new(rs)
    }

    fn reason(p: &Plan, t: &str) -> String {
        p.status
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
            .reason
            .clone()
            .unwrap()
    }

    #[test]
    fn first_sync_creates_revision_one() {
        let d = deployment(3, "v1", rolling());
        let p = plan(&d, &[], Timestamp::now());
        let [Step::Create(rs)] = &p.steps[..] else {
            panic!("{:?}", p.steps)
        };
        let hash = template_hash(&d.spec.as_ref().unwrap().template, None);
        assert_eq!(
            rs.metadata.name.as_deref(),
            Some(format!("web-{hash}").as_str())
        );
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
        let ann = rs.metadata.annotations.as_ref().unwrap();
        assert_eq!(ann[REVISION], "1");
        assert_eq!(ann["kubernetes.io/change-cause"], "v");
        assert_eq!(ann[MAX_REPLICAS], "4");
        let sel = rs
            .spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(sel[HASH_LABEL], hash);
        assert_eq!(p.revision.as_deref(), Some("1"));
        assert_eq!(reason(&p, "Progressing"), "NewReplicaSetCreated");
        assert_eq!(reason(&p, "Available"), "MinimumReplicasUnavailable");
    }

    #[test]
    fn rolling_update_surges_then_scales_old_down() {
        let v1 = deployment(3, "v1", rolling());
        let old = rs_of(&v1, 3, 3, 3, 1);
        let v2 = deployment(3, "v2", rolling());
        // Creates the new ReplicaSet with the one surge pod.
        let p = plan(&v2, std::slice::from_ref(&old), Timestamp::now());
        let Some(Step::Create(new)) = p.steps.first() else {
            panic!("{:?}", p.steps)
        };
        assert_eq!(new.spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(p.revision.as_deref(), Some("2"));
        // Not available yet: maxUnavailable 0 keeps the old ones.
        let new = rs_of(&v2, 1, 1, 0, 2);
        let p = plan(&v2, &[old.clone(), new], Timestamp::now());
        assert!(p.steps.is_empty(), "{:?}", p.steps);
        assert_eq!(p.status.updated_replicas, Some(1));
        // Available: one old goes.
        let new = rs_of(&v2, 1, 1, 1, 2);
        let p = plan(&v2, &[old.clone(), new], Timestamp::now());
        assert_eq!(
            p.steps,
            vec![Step::Scale {
                rs: util::name(&old.metadata).into(),
                replicas: 2
            }]
        );
        // Then the new one grows again.
        let old2 = rs_of(&v1, 2, 2, 2, 1);
        let new = rs_of(&v2, 1, 1, 1, 2);
        let p = plan(&v2, &[old2, new.clone()], Timestamp::now());
        assert_eq!(
            p.steps,
            vec![Step::Scale {
                rs: util::name(&new.metadata).into(),
                replicas: 2
            }]
        );
    }

    #[test]
    fn complete_rollout_prunes_history_and_reports_available() {
        let v1 = deployment(2, "v1", rolling());
        let v2 = deployment(2, "v2", rolling());
        let v3 = deployment(2, "v3", rolling());
        let rs1 = rs_of(&v1, 0, 0, 0, 1);
        let rs2 = rs_of(&v2, 0, 0, 0, 2);
        let rs3 = rs_of(&v3, 2, 2, 2, 3);
        let p = plan(&v3, &[rs1.clone(), rs2, rs3], Timestamp::now());
        // revisionHistoryLimit 1: the oldest idle one goes.
        assert_eq!(
            p.steps,
            vec![Step::Delete(util::name(&rs1.metadata).into())]
        );
        assert_eq!(reason(&p, "Progressing"), "NewReplicaSetAvailable");
        assert_eq!(reason(&p, "Available"), "MinimumReplicasAvailable");
        assert_eq!(p.status.updated_replicas, Some(2));
        assert_eq!(p.status.available_replicas, Some(2));
        assert_eq!(p.status.observed_generation, Some(2));
    }

    #[test]
    fn rollback_reuses_the_old_replicaset_with_a_new_revision() {
        let v1 = deployment(2, "v1", rolling());
        let v2 = deployment(2, "v2", rolling());
        let rs1 = rs_of(&v1, 0, 0, 0, 1);
        let rs2 = rs_of(&v2, 2, 2, 2, 2);
        // Template back at v1 (what `kubectl rollout undo` patches).
        let p = plan(&v1, &[rs1.clone(), rs2], Timestamp::now());
        let Some(Step::Annotate { rs, annotations }) = p.steps.first() else {
            panic!("{:?}", p.steps)
        };
        assert_eq!(rs, util::name(&rs1.metadata));
        assert_eq!(annotations[REVISION], "3");
        assert_eq!(annotations[REVISION_HISTORY], "1");
        assert_eq!(p.revision.as_deref(), Some("3"));
        assert!(p.steps.contains(&Step::Scale {
            rs: util::name(&rs1.metadata).into(),
            replicas: 1
        }));
    }

    #[test]
    fn recreate_scales_old_to_zero_first() {
        let strategy = json!({"type": "Recreate"});
        let v1 = deployment(2, "v1", strategy.clone());
        let v2 = deployment(2, "v2", strategy);
        let old = rs_of(&v1, 2, 2, 2, 1);
        let p = plan(&v2, std::slice::from_ref(&old), Timestamp::now());
        let Some(Step::Create(new)) = p.steps.first() else {
            panic!()
        };
        assert_eq!(new.spec.as_ref().unwrap().replicas, Some(0));
        let new = rs_of(&v2, 0, 0, 0, 2);
        let p = plan(&v2, &[old, new.clone()], Timestamp::now());
        assert!(
            p.steps
                .iter()
                .any(|s| matches!(s, Step::Scale { replicas: 0, .. }))
        );
        // Old pods still terminating: wait.
        let old = rs_of(&v1, 0, 1, 0, 1);
        assert!(
            plan(&v2, &[old, new.clone()], Timestamp::now())
                .steps
                .is_empty()
        );
        let old = rs_of(&v1, 0, 0, 0, 1);
        let p = plan(&v2, &[old, new.clone()], Timestamp::now());
        assert_eq!(
            p.steps,
            vec![Step::Scale {
                rs: util::name(&new.metadata).into(),
                replicas: 2
            }]
        );
    }

    #[test]
    fn scaling_and_percentages() {
        let d = deployment(
            10,
            "v1",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        );
        assert_eq!(surge_and_unavailable(&d), (3, 2));
        let d = deployment(5, "v1", rolling());
        let rs = rs_of(&d, 2, 2, 2, 1);
        let p = plan(&d, std::slice::from_ref(&rs), Timestamp::now());
        assert_eq!(
            p.steps,
            vec![Step::Scale {
                rs: util::name(&rs.metadata).into(),
                replicas: 5
            }]
        );
        let d = deployment(1, "v1", rolling());
        let p = plan(&d, std::slice::from_ref(&rs), Timestamp::now());
        assert_eq!(
            p.steps,
            vec![Step::Scale {
                rs: util::name(&rs.metadata).into(),
                replicas: 1
            }]
        );
    }

    #[test]
    fn progress_deadline() {
        let d = deployment(2, "v1", rolling());
        let rs = rs_of(&d, 2, 2, 0, 1);
        let mut d2 = d.clone();
        let long_ago = Time(Timestamp::now() - SignedDuration::from_secs(700));
        d2.status = Some(DeploymentStatus {
            replicas: Some(2),
            updated_replicas: Some(2),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".into(),
                status: "True".into(),
                reason: Some("ReplicaSetUpdated".into()),
                last_update_time: Some(long_ago.clone()),
                last_transition_time: Some(long_ago),
                message: None,
            }]),
            ..Default::default()
        });
        let p = plan(&d2, &[rs], Timestamp::now());
        assert_eq!(reason(&p, "Progressing"), "ProgressDeadlineExceeded");
    }
}
