//! The CronJob controller: creates a Job (`<name>-<minutes since epoch>`)
//! at each time of the standard five-field schedule (UTC), honouring
//! `suspend`, `startingDeadlineSeconds`, `concurrencyPolicy` (Allow,
//! Forbid, Replace) and the successful/failed history limits.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::json;

use crate::util::{self, controller_of};
use crate::{Error, Shared};

pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A parsed five-field schedule: the allowed values of each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    minute: Vec<bool>,
    hour: Vec<bool>,
    dom: Vec<bool>,
    month: Vec<bool>,
    dow: Vec<bool>,
    /// Both day fields restricted: either may match (cron's rule).
    dom_or_dow: bool,
}

fn field(s: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(Vec<bool>, bool), String> {
    let mut set = vec![false; hi as usize + 1];
    let value = |v: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(v)) {
            return Ok(i as u32 + lo);
        }
        v.parse::<u32>()
            .map_err(|_| format!("{v:?} is not a number"))
            .and_then(|n| {
                if (lo..=hi).contains(&n) || (hi == 6 && n == 7) {
                    Ok(if hi == 6 && n == 7 { 0 } else { n })
                } else {
                    Err(format!("{n} is outside {lo}-{hi}"))
                }
            })
    };
    let star = s == "*" || s == "?";
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (
                r,
                st.parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| format!("bad step {st:?}"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if step > 1 { hi } else { a })
        };
        if a > b {
            return Err(format!("range {range:?} runs backwards"));
        }
        for v in (a..=b).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok((set, star))
}

impl Schedule {
    pub fn parse(spec: &str) -> Result<Schedule, String> {
        let spec = match spec.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s => s,
        };
        let f: Vec<&str> = spec.split_whitespace().collect();
        let [mi, h, dom, mo, dow] = f[..] else {
            return Err(format!("{spec:?}: expected 5 fields, found {}", f.len()));
        };
        const MONTHS: &[&str] = &[
            "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
        ];
        const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
        let (dom, dom_star) = field(dom, 1, 31, &[])?;
        let (dow, dow_star) = field(dow, 0, 6, DAYS)?;
        Ok(Schedule {
            minute: field(mi, 0, 59, &[])?.0,
            hour: field(h, 0, 23, &[])?.0,
            dom,
            month: field(mo, 1, 12, MONTHS)?.0,
            dow,
            dom_or_dow: !dom_star && !dow_star,
        })
    }

    fn matches(&self, t: Timestamp) -> bool {
        let z = t.to_zoned(TimeZone::UTC);
        let day_dom = self.dom[z.day() as usize];
        let day_dow = self.dow[z.weekday().to_sunday_zero_offset() as usize];
        let day = if self.dom_or_dow {
            day_dom || day_dow
        } else {
            day_dom && day_dow
        };
        self.minute[z.minute() as usize]
            && self.hour[z.hour() as usize]
            && self.month[z.month() as usize]
            && day
    }

    /// The first scheduled minute strictly after `t` (within ~5 years).
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let first = t.as_second().div_euclid(60) + 1;
        (first..first + 5 * 366 * 24 * 60)
            .map_while(|m| Timestamp::from_second(m * 60).ok())
            .find(|ts| self.matches(*ts))
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: Option<Job>,
    pub delete: Vec<String>,
    pub status: CronJobStatus,
    pub requeue: Option<Duration>,
}

fn finished(j: &Job) -> Option<&str> {
    j.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        .map(|c| c.type_.as_str())
}

/// The pure decision for `cj` given its namespace's Jobs.
pub fn plan(cj: &CronJob, jobs: &[Arc<Job>], now: Timestamp) -> Result<Plan, String> {
    let spec = cj.spec.clone().unwrap_or_default();
    if let Some(tz) = spec
        .time_zone
        .as_deref()
        .filter(|z| !matches!(*z, "UTC" | "Etc/UTC"))
    {
        return Err(format!("timeZone {tz:?} is not supported (only UTC)"));
    }
    let sched = Schedule::parse(&spec.schedule)?;
    let uid = util::uid(&cj.metadata);
    let mut mine: Vec<&Job> = jobs
        .iter()
        .map(|j| j.as_ref())
        .filter(|j| controller_of(&j.metadata).is_some_and(|o| o.uid == uid))
        .collect();
    mine.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let active: Vec<&Job> = mine
        .iter()
        .copied()
        .filter(|j| finished(j).is_none())
        .collect();
    let mut out = Plan::default();
    let prev = cj.status.clone().unwrap_or_default();
    out.status.last_schedule_time = prev.last_schedule_time.clone();
    out.status.last_successful_time = mine
        .iter()
        .filter(|j| finished(j) == Some("Complete"))
        .filter_map(|j| j.status.as_ref()?.completion_time.clone())
        .max_by_key(|t| t.0)
        .or(prev.last_successful_time);

    // History limits.
    for (kind, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&&Job> = mine.iter().filter(|j| finished(j) == Some(kind)).collect();
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        out.delete.extend(
            done[..extra]
                .iter()
                .map(|j| util::name(&j.metadata).to_string()),
        );
    }

    // The most recent missed time since the last one.
    let since = prev
        .last_schedule_time
        .as_ref()
        .or(cj.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let mut due = None;
    let mut t = since;
    for _ in 0..10_000 {
        match sched.next_after(t) {
            Some(n) if n <= now => {
                due = Some(n);
                t = n;
            }
            _ => break,
        }
    }
    let too_late = |d: Timestamp| {
        spec.starting_deadline_seconds
            .is_some_and(|s| d + SignedDuration::from_secs(s) < now)
    };
    let mut active_refs: Vec<&Job> = active.clone();
    if let Some(d) = due
        && spec.suspend != Some(true)
        && !util::deleting(&cj.metadata)
        && !too_late(d)
    {
        let name = format!("{}-{}", util::name(&cj.metadata), d.as_second() / 60);
        let exists = mine.iter().any(|j| util::name(&j.metadata) == name);
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        if !exists && (policy != "Forbid" || active.is_empty()) {
            if policy == "Replace" {
                out.delete
                    .extend(active.iter().map(|j| util::name(&j.metadata).to_string()));
                active_refs.clear();
            }
            let jt = spec.job_template.clone();
            let mut ann = jt
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone())
                .unwrap_or_default();
            ann.insert(SCHEDULED_ANNOTATION.into(), Time(d).0.to_string());
            out.create = Some(Job {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: cj.metadata.namespace.clone(),
                    labels: jt.metadata.as_ref().and_then(|m| m.labels.clone()),
                    annotations: Some(ann),
                    owner_references: Some(vec![util::controller_ref(
                        "batch/v1",
                        "CronJob",
                        &cj.metadata,
                    )]),
                    ..Default::default()
                },
                spec: jt.spec,
                status: None,
            });
            out.status.last_schedule_time = Some(Time(d));
        } else if exists {
            out.status.last_schedule_time = Some(Time(d));
        }
    }
    let mut refs: Vec<ObjectReference> = active_refs
        .iter()
        .map(|j| ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: j.metadata.name.clone(),
            namespace: j.metadata.namespace.clone(),
            uid: j.metadata.uid.clone(),
            resource_version: j.metadata.resource_version.clone(),
            field_path: None,
        })
        .collect();
    if let Some(j) = &out.create {
        refs.push(ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: j.metadata.name.clone(),
            namespace: j.metadata.namespace.clone(),
            ..Default::default()
        });
    }
    out.status.active = Some(refs).filter(|r| !r.is_empty());
    out.requeue = sched
        .next_after(now)
        .map(|n| util::until(n, now) + Duration::from_millis(200));
    Ok(out)
}

struct Ctx {
    shared: Arc<Shared>,
    jobs: Store<Job>,
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let ns = util::namespace(&cj.metadata).to_string();
    let name = util::name(&cj.metadata).to_string();
    let jobs: Vec<Arc<Job>> = ctx
        .jobs
        .state()
        .into_iter()
        .filter(|j| util::namespace(&j.metadata) == ns)
        .collect();
    let plan = plan(&cj, &jobs, Timestamp::now()).map_err(Error::InvalidSpec)?;
    let api: Api<Job> = Api::namespaced(ctx.shared.client.clone(), &ns);
    for j in &plan.delete {
        match api.delete(j, &DeleteParams::background()).await {
            Ok(_) | Err(kube::Error::Api(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(j) = &plan.create {
        match api.create(&PostParams::default(), j).await {
            Ok(_) => crate::events::record(
                &ctx.shared.client,
                cj.as_ref(),
                "cronjob-controller",
                false,
                "SuccessfulCreate",
                format!("Created job {}", util::name(&j.metadata)),
            ),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let cur = cj.status.clone().unwrap_or_default();
    let same = cur.last_schedule_time == plan.status.last_schedule_time
        && cur.last_successful_time == plan.status.last_successful_time
        && cur
            .active
            .as_ref()
            .map(|a| a.iter().map(|r| &r.name).collect::<Vec<_>>())
            == plan
                .status
                .active
                .as_ref()
                .map(|a| a.iter().map(|r| &r.name).collect::<Vec<_>>());
    if !same {
        Api::<CronJob>::namespaced(ctx.shared.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "active": plan.status.active.clone().unwrap_or_default(),
                    "lastScheduleTime": plan.status.last_schedule_time,
                    "lastSuccessfulTime": plan.status.last_successful_time}})),
            )
            .await?;
    }
    ctx.shared.retry_reset(&format!("cronjobs/{ns}/{name}"));
    Ok(plan.requeue.map_or(Action::await_change(), Action::requeue))
}

fn policy(cj: Arc<CronJob>, e: &Error, ctx: Arc<Ctx>) -> Action {
    crate::error_policy(cj, e, ctx.shared.clone())
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let job_events = informers.jobs.subscribe().filter_map(|j| {
        std::future::ready(match controller_of(&j.metadata) {
            Some(o) if o.kind == "CronJob" => {
                Some(ObjectRef::<CronJob>::new(&o.name).within(util::namespace(&j.metadata)))
            }
            _ => None,
        })
    });
    let ctx = Arc::new(Ctx {
        shared,
        jobs: informers.jobs.store(),
    });
    informers.jobs.ready().await;
    Controller::for_shared_stream(informers.cronjobs.subscribe(), informers.cronjobs.store())
        .reconcile_on(job_events)
        .reconcile_all_on(crate::ticks(crate::RESYNC))
        .run(
            crate::metrics::metered("cronjob", &ctx.shared.cfg.stats, reconcile),
            policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn schedules() {
        let s = Schedule::parse("*/15 9-17 * * mon-fri").unwrap();
        // Saturday 2026-01-03: next is Monday 09:00.
        assert_eq!(
            s.next_after(ts("2026-01-03T10:00:00Z")),
            Some(ts("2026-01-05T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-01-05T09:00:00Z")),
            Some(ts("2026-01-05T09:15:00Z"))
        );
        let d = Schedule::parse("@daily").unwrap();
        assert_eq!(
            d.next_after(ts("2026-01-03T10:00:00Z")),
            Some(ts("2026-01-04T00:00:00Z"))
        );
        // Day of month or day of week when both are given.
        let e = Schedule::parse("0 0 13 * 5").unwrap();
        assert_eq!(
            e.next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-02T00:00:00Z"))
        );
        assert!(Schedule::parse("* * *").is_err());
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("*/0 * * * *").is_err());
    }

    fn cronjob(policy: &str, last: &str) -> CronJob {
        serde_json::from_value(json!({
            "metadata": {"name": "cj", "namespace": "default", "uid": "cj-uid",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"schedule": "*/5 * * * *", "concurrencyPolicy": policy, "successfulJobsHistoryLimit": 1,
                     "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "i"}]}}}}},
            "status": {"lastScheduleTime": last}
        }))
        .unwrap()
    }

    fn job(name: &str, done: Option<&str>, created: &str) -> Arc<Job> {
        let conds = done
            .map(|t| vec![json!({"type": t, "status": "True"})])
            .unwrap_or_default();
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": name, "creationTimestamp": created,
                             "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "cj",
                                                  "uid": "cj-uid", "controller": true}]},
                "status": {"conditions": conds, "completionTime": created}
            }))
            .unwrap(),
        )
    }

    #[test]
    fn creates_the_due_job_and_prunes_history() {
        let now = ts("2026-01-01T00:11:00Z");
        let jobs = vec![
            job("cj-a", Some("Complete"), "2026-01-01T00:00:00Z"),
            job("cj-b", Some("Complete"), "2026-01-01T00:05:00Z"),
        ];
        let p = plan(&cronjob("Allow", "2026-01-01T00:05:00Z"), &jobs, now).unwrap();
        let j = p.create.unwrap();
        assert_eq!(
            j.metadata.name.as_deref(),
            Some(format!("cj-{}", ts("2026-01-01T00:10:00Z").as_second() / 60).as_str())
        );
        assert_eq!(
            p.status.last_schedule_time,
            Some(Time(ts("2026-01-01T00:10:00Z")))
        );
        assert_eq!(p.delete, vec!["cj-a"]);
        assert_eq!(p.requeue.map(|d| d.as_secs()), Some(240));
        // Nothing due yet.
        let p = plan(&cronjob("Allow", "2026-01-01T00:10:00Z"), &[], now).unwrap();
        assert!(p.create.is_none());
    }

    #[test]
    fn concurrency_policies() {
        let now = ts("2026-01-01T00:11:00Z");
        let running = vec![job("cj-run", None, "2026-01-01T00:05:00Z")];
        let p = plan(&cronjob("Forbid", "2026-01-01T00:05:00Z"), &running, now).unwrap();
        assert!(p.create.is_none());
        assert_eq!(p.status.active.unwrap().len(), 1);
        let p = plan(&cronjob("Replace", "2026-01-01T00:05:00Z"), &running, now).unwrap();
        assert!(p.create.is_some());
        assert_eq!(p.delete, vec!["cj-run"]);
        let p = plan(&cronjob("Allow", "2026-01-01T00:05:00Z"), &running, now).unwrap();
        assert!(p.create.is_some() && p.delete.is_empty());
        assert_eq!(p.status.active.unwrap().len(), 2);
    }
}
