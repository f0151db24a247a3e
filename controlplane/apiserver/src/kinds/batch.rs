//! batch/v1: Jobs and CronJobs.

use k8s_openapi::api::batch::v1 as api;
use serde_json::{Value, json};

use crate::admission::{default, default_pod_spec, immutable, obj_mut, validate_job_template};
use crate::registry::{BASE, Resource, Typed};
use crate::tables::{age, created, n, s};

pub const JOBS: Resource = Resource {
    group: "batch",
    kind: "Job",
    plural: "jobs",
    singular: "job",
    subresources: &["status"],
    categories: &["all"],
    typed: Some(Typed::of::<api::Job>()),
    defaults: job_defaults,
    validate: |obj, causes| {
        validate_job_template(
            obj.pointer("/spec/template/spec"),
            "spec.template.spec",
            causes,
        )
    },
    validate_update: |old, new, causes| {
        immutable(&["/spec/selector", "/spec/template"], old, new, causes)
    },
    columns: &[
        ("Name", "string", 0),
        ("Status", "string", 0),
        ("Completions", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        let done = n(o.pointer("/status/succeeded"));
        let want = o
            .pointer("/spec/completions")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let status = if done >= want { "Complete" } else { "Running" };
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(status),
            json!(format!("{done}/{want}")),
            json!(created(o)),
        ]
    },
    ..BASE
};

fn job_defaults(obj: &mut Value, _: &str) {
    let name = s(obj.pointer("/metadata/name"));
    let spec = obj_mut(obj, "spec");
    default(spec, "completions", json!(1));
    default(spec, "parallelism", json!(1));
    default(spec, "backoffLimit", json!(6));
    default(spec, "completionMode", json!("NonIndexed"));
    default(spec, "suspend", json!(false));
    let manual = spec.get("manualSelector") == Some(&json!(true));
    if let Some(ps) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(ps);
    }
    // As kube does: unless the selector is manual, the Job selects
    // its pods by its uid, and its pods carry these labels.
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .map(str::to_string);
    if let (false, Some(uid)) = (manual, uid)
        && obj.pointer("/spec/selector").is_none()
    {
        obj["spec"]["selector"] =
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
        let tmpl = obj_mut(&mut obj["spec"], "template");
        tmpl.entry("metadata").or_insert_with(|| json!({}));
        let labels = obj_mut(&mut obj["spec"]["template"]["metadata"], "labels");
        for (k, v) in [
            ("batch.kubernetes.io/controller-uid", uid.as_str()),
            ("controller-uid", uid.as_str()),
            ("batch.kubernetes.io/job-name", name.as_str()),
            ("job-name", name.as_str()),
        ] {
            labels.insert(k.into(), json!(v));
        }
    }
}

pub const CRON_JOBS: Resource = Resource {
    group: "batch",
    kind: "CronJob",
    plural: "cronjobs",
    singular: "cronjob",
    short_names: &["cj"],
    subresources: &["status"],
    categories: &["all"],
    typed: Some(Typed::of::<api::CronJob>()),
    defaults: |obj, _| {
        let spec = obj_mut(obj, "spec");
        default(spec, "concurrencyPolicy", json!("Allow"));
        default(spec, "suspend", json!(false));
        default(spec, "successfulJobsHistoryLimit", json!(3));
        default(spec, "failedJobsHistoryLimit", json!(1));
        if let Some(ps) = obj.pointer_mut("/spec/jobTemplate/spec/template/spec") {
            default_pod_spec(ps);
        }
    },
    validate: |obj, causes| {
        if obj
            .pointer("/spec/schedule")
            .and_then(Value::as_str)
            .is_none_or(|s| s.split_whitespace().count() != 5 && !s.starts_with('@'))
        {
            causes.push((
                "spec.schedule".into(),
                "Invalid value: must be a standard cron schedule".into(),
            ));
        }
        validate_job_template(
            obj.pointer("/spec/jobTemplate/spec/template/spec"),
            "spec.jobTemplate.spec.template.spec",
            causes,
        );
    },
    columns: &[
        ("Name", "string", 0),
        ("Schedule", "string", 0),
        ("Suspend", "boolean", 0),
        ("Active", "integer", 0),
        ("Last Schedule", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(s(o.pointer("/spec/schedule"))),
            json!(
                o.pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            json!(
                o.pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(
                o.pointer("/status/lastScheduleTime")
                    .map_or("<none>".to_string(), |t| age(Some(t)))
            ),
            json!(created(o)),
        ]
    },
    ..BASE
};
