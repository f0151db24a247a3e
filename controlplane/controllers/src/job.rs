//! The Job controller: runs up to `parallelism` pods until `completions`
//! have succeeded (Complete) or more than `backoffLimit` have failed, or
//! `activeDeadlineSeconds` passed (Failed), counting succeeded and failed
//! pods in status.
//!
//! Counts come from the pods that still exist (kube also tracks deleted
//! ones through a finalizer), and failed pods are replaced at once
//! (kube delays each retry exponentially).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use crate::replicaset::{create_pods, delete_pods, pod_from_template, settled_pods};
use crate::util::{self, controller_of};
use crate::{Error, Shared};

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    pub delete: Vec<String>,
    pub status: JobStatus,
    /// Look again then (active deadline).
    pub requeue: Option<Duration>,
}

fn finished(st: Option<&JobStatus>) -> bool {
    st.and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
}

fn cond(t: &str, reason: &str, message: &str, now: &Time) -> JobCondition {
    JobCondition {
        type_: t.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The pure decision for `job` given the pods of its namespace.
pub fn plan(job: &Job, pods: &[Arc<Pod>], now: Timestamp) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let uid = util::uid(&job.metadata);
    let mine: Vec<&Pod> = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| controller_of(&p.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    let active: Vec<&Pod> = mine
        .iter()
        .copied()
        .filter(|p| util::pod_active(p))
        .collect();
    let succeeded = mine.iter().filter(|p| util::pod_succeeded(p)).count() as i32;
    let failed = mine.iter().filter(|p| util::pod_failed(p)).count() as i32;
    let ready = active.iter().filter(|p| util::pod_ready(p)).count() as i32;
    let prev = job.status.clone().unwrap_or_default();
    let nowt = Time(now);
    let mut out = Plan {
        status: JobStatus {
            active: Some(active.len() as i32),
            succeeded: Some(succeeded.max(prev.succeeded.unwrap_or(0))),
            failed: Some(failed.max(prev.failed.unwrap_or(0))),
            ready: Some(ready),
            start_time: prev.start_time.clone(),
            completion_time: prev.completion_time.clone(),
            conditions: prev.conditions.clone(),
            ..Default::default()
        },
        ..Default::default()
    };
    let names = |ps: &[&Pod]| -> Vec<String> {
        ps.iter()
            .map(|p| util::name(&p.metadata).to_string())
            .collect()
    };
    if finished(job.status.as_ref()) || util::deleting(&job.metadata) {
        out.delete = if util::deleting(&job.metadata) {
            Vec::new()
        } else {
            names(&active)
        };
        return out;
    }
    let suspended = spec.suspend == Some(true);
    if !suspended && out.status.start_time.is_none() {
        out.status.start_time = Some(nowt.clone());
    }
    let conds = out.status.conditions.get_or_insert_with(Vec::new);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline = spec.active_deadline_seconds.and_then(|s| {
        let start = out.status.start_time.as_ref()?.0;
        Some(start + SignedDuration::from_secs(s))
    });
    let completions = spec.completions;
    let done = match completions {
        Some(c) => succeeded >= c,
        None => succeeded >= 1 && active.is_empty(),
    };
    if failed > backoff_limit {
        conds.push(cond(
            "FailureTarget",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            &nowt,
        ));
        conds.push(cond(
            "Failed",
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
            &nowt,
        ));
        out.delete = names(&active);
    } else if deadline.is_some_and(|d| d <= now) {
        conds.push(cond(
            "FailureTarget",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
            &nowt,
        ));
        conds.push(cond(
            "Failed",
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
            &nowt,
        ));
        out.delete = names(&active);
    } else if done {
        conds.push(cond(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            &nowt,
        ));
        conds.push(cond(
            "Complete",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
            &nowt,
        ));
        out.status.completion_time = Some(nowt.clone());
        out.delete = names(&active);
    } else {
        let parallelism = if suspended {
            0
        } else {
            spec.parallelism.unwrap_or(1).max(0)
        };
        let left = completions.map_or(parallelism, |c| (c - succeeded).max(0));
        let want = parallelism.min(left) as usize;
        if active.len() < want {
            out.create = want - active.len();
        } else if active.len() > want {
            // Fewer wanted (parallelism lowered, suspended): newest go first.
            let mut a = active.clone();
            a.sort_by_key(|p| {
                std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))
            });
            out.delete = names(&a[..active.len() - want]);
        }
        if let Some(d) = deadline {
            out.requeue = Some(util::until(d, now) + Duration::from_secs(1));
        }
    }
    out.status.active =
        Some((active.len() - out.delete.len().min(active.len()) + out.create) as i32);
    out
}

async fn reconcile(job: Arc<Job>, shared: Arc<Shared>) -> Result<Action, Error> {
    let ns = util::namespace(&job.metadata).to_string();
    let name = util::name(&job.metadata).to_string();
    let key = format!("jobs/{ns}/{name}");
    let Some(pods) = settled_pods(&shared, &key, &ns) else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    let plan = plan(&job, &pods, Timestamp::now());
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let mut owner = util::controller_ref("batch/v1", "Job", &job.metadata);
    owner.block_owner_deletion = Some(true);
    let template = job.spec.as_ref().map(|s| &s.template);
    let uid = util::uid(&job.metadata).to_string();
    let new_pods: Vec<Pod> = (0..plan.create)
        .map(|_| {
            let mut p =
                pod_from_template(template, &util::generate_name(&name), &ns, owner.clone());
            let l = p.metadata.labels.get_or_insert_with(Default::default);
            for (k, v) in [
                ("batch.kubernetes.io/job-name", &name),
                ("job-name", &name),
                ("batch.kubernetes.io/controller-uid", &uid),
                ("controller-uid", &uid),
            ] {
                l.insert(k.into(), v.clone());
            }
            p
        })
        .collect();
    let (created, create_err) = create_pods(&api, new_pods).await;
    let (deleted, delete_err) = delete_pods(&api, &plan.delete).await;
    crate::replicaset::pod_events(&shared, job.as_ref(), "job-controller", &created, &deleted);
    let was_done = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        });
    if !was_done {
        for c in plan.status.conditions.iter().flatten() {
            match c.type_.as_str() {
                "Complete" => crate::events::record(
                    &shared.client,
                    job.as_ref(),
                    "job-controller",
                    false,
                    "Completed",
                    "Job completed".into(),
                ),
                "Failed" => crate::events::record(
                    &shared.client,
                    job.as_ref(),
                    "job-controller",
                    true,
                    c.reason.as_deref().unwrap_or("Failed"),
                    c.message.clone().unwrap_or_default(),
                ),
                _ => {}
            }
        }
    }
    shared.expectations.expect(&key, created, deleted);
    if job.status.as_ref() != Some(&plan.status) {
        Api::<Job>::namespaced(shared.client.clone(), &ns)
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
    Ok(plan.requeue.map_or(Action::await_change(), Action::requeue))
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let pod_events = informers.pods.subscribe().filter_map(|p| {
        std::future::ready(match controller_of(&p.metadata) {
            Some(o) if o.kind == "Job" => {
                Some(ObjectRef::<Job>::new(&o.name).within(util::namespace(&p.metadata)))
            }
            _ => None,
        })
    });
    Controller::for_shared_stream(informers.jobs.subscribe(), informers.jobs.store())
        .reconcile_on(pod_events)
        .reconcile_all_on(crate::ticks(crate::RESYNC))
        .run(
            crate::metrics::metered("job", &shared.cfg.stats, reconcile),
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

    fn job(completions: i32, parallelism: i32, backoff: i32) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "default", "uid": "job-uid"},
            "spec": {"completions": completions, "parallelism": parallelism, "backoffLimit": backoff,
                     "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}
        }))
        .unwrap()
    }

    fn type_of(p: &Plan) -> Vec<String> {
        p.status
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.clone())
            .collect()
    }

    #[test]
    fn runs_parallel_pods_until_completions() {
        let o = Some(("Job", "job-uid"));
        let p = plan(&job(3, 2, 6), &[], Timestamp::now());
        assert_eq!(p.create, 2);
        assert!(p.status.start_time.is_some());
        let pods = vec![
            pod("a", &[], o, "Succeeded", false, "n"),
            pod("b", &[], o, "Succeeded", false, "n"),
            pod("c", &[], o, "Running", true, "n"),
        ];
        // One left to do and it runs: nothing to create.
        let p = plan(&job(3, 2, 6), &pods, Timestamp::now());
        assert_eq!(
            (p.create, p.status.succeeded, p.status.active),
            (0, Some(2), Some(1))
        );
        let mut pods = pods;
        pods[2] = pod("c", &[], o, "Succeeded", false, "n");
        let p = plan(&job(3, 2, 6), &pods, Timestamp::now());
        assert_eq!(type_of(&p), vec!["SuccessCriteriaMet", "Complete"]);
        assert!(p.status.completion_time.is_some());
        assert_eq!(p.status.succeeded, Some(3));
    }

    #[test]
    fn fails_after_the_backoff_limit() {
        let o = Some(("Job", "job-uid"));
        let pods = vec![
            pod("a", &[], o, "Failed", false, "n"),
            pod("b", &[], o, "Failed", false, "n"),
            pod("c", &[], o, "Running", false, "n"),
        ];
        let p = plan(&job(1, 1, 1), &pods, Timestamp::now());
        assert_eq!(type_of(&p), vec!["FailureTarget", "Failed"]);
        assert_eq!(p.delete, vec!["c"]);
        assert_eq!(p.status.failed, Some(2));
        // Within the limit a failed pod is replaced.
        let p = plan(&job(1, 1, 6), &pods[..2], Timestamp::now());
        assert_eq!(p.create, 1);
    }
}
