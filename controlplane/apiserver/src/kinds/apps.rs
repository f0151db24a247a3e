//! apps/v1: the workload controllers' objects.

use k8s_openapi::api::apps::v1 as api;
use serde_json::{Value, json};

use crate::admission::{default, default_pod_spec, immutable, obj_mut, validate_pod_spec};
use crate::registry::{BASE, Causes, Resource, Typed};
use crate::tables::{containers, created, label_selector, n, s};

const APPS: Resource = Resource {
    group: "apps",
    subresources: &["status", "scale"],
    categories: &["all"],
    validate: validate_workload,
    validate_update: |old, new, causes| immutable(&["/spec/selector"], old, new, causes),
    ..BASE
};

pub const DEPLOYMENTS: Resource = Resource {
    kind: "Deployment",
    plural: "deployments",
    singular: "deployment",
    short_names: &["deploy"],
    typed: Some(Typed::of::<api::Deployment>()),
    defaults: |obj, _| {
        let spec = obj_mut(obj, "spec");
        default(spec, "replicas", json!(1));
        default(spec, "revisionHistoryLimit", json!(10));
        default(spec, "progressDeadlineSeconds", json!(600));
        default(
            spec,
            "strategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
        );
        default_template(obj);
    },
    columns: &[
        ("Name", "string", 0),
        ("Ready", "string", 0),
        ("Up-to-date", "integer", 0),
        ("Available", "integer", 0),
        ("Age", "string", 0),
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ],
    cells: |_, o| {
        let mut cells = vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(format!(
                "{}/{}",
                n(o.pointer("/status/readyReplicas")),
                n(o.pointer("/spec/replicas"))
            )),
            json!(n(o.pointer("/status/updatedReplicas"))),
            json!(n(o.pointer("/status/availableReplicas"))),
        ];
        cells.extend(age_and_template(o));
        cells
    },
    ..APPS
};

pub const REPLICA_SETS: Resource = Resource {
    kind: "ReplicaSet",
    plural: "replicasets",
    singular: "replicaset",
    short_names: &["rs"],
    typed: Some(Typed::of::<api::ReplicaSet>()),
    defaults: |obj, _| {
        default(obj_mut(obj, "spec"), "replicas", json!(1));
        default_template(obj);
    },
    columns: &[
        ("Name", "string", 0),
        ("Desired", "integer", 0),
        ("Current", "integer", 0),
        ("Ready", "integer", 0),
        ("Age", "string", 0),
        ("Containers", "string", 1),
        ("Images", "string", 1),
        ("Selector", "string", 1),
    ],
    cells: |_, o| {
        let mut cells = vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(n(o.pointer("/spec/replicas"))),
            json!(n(o.pointer("/status/replicas"))),
            json!(n(o.pointer("/status/readyReplicas"))),
        ];
        cells.extend(age_and_template(o));
        cells
    },
    ..APPS
};

pub const DAEMON_SETS: Resource = Resource {
    kind: "DaemonSet",
    plural: "daemonsets",
    singular: "daemonset",
    short_names: &["ds"],
    subresources: &["status"],
    typed: Some(Typed::of::<api::DaemonSet>()),
    defaults: |obj, _| {
        default(obj_mut(obj, "spec"), "revisionHistoryLimit", json!(10));
        default(
            obj_mut(obj, "spec"),
            "updateStrategy",
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
        );
        default_template(obj);
    },
    columns: &[
        ("Name", "string", 0),
        ("Desired", "integer", 0),
        ("Current", "integer", 0),
        ("Ready", "integer", 0),
        ("Up-to-date", "integer", 0),
        ("Available", "integer", 0),
        ("Node Selector", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(n(o.pointer("/status/desiredNumberScheduled"))),
            json!(n(o.pointer("/status/currentNumberScheduled"))),
            json!(n(o.pointer("/status/numberReady"))),
            json!(n(o.pointer("/status/updatedNumberScheduled"))),
            json!(n(o.pointer("/status/numberAvailable"))),
            json!(label_selector(
                o.pointer("/spec/template/spec/nodeSelector")
            )),
            json!(created(o)),
        ]
    },
    ..APPS
};

/// AGE, then the `-o wide` CONTAINERS, IMAGES and SELECTOR of a
/// Deployment or ReplicaSet.
fn age_and_template(o: &Value) -> [Value; 4] {
    let (c, i) = containers(o, "/spec/template/spec/containers");
    [
        json!(created(o)),
        json!(c),
        json!(i),
        json!(label_selector(o.pointer("/spec/selector/matchLabels"))),
    ]
}

fn default_template(obj: &mut Value) {
    if let Some(ps) = obj.pointer_mut("/spec/template/spec") {
        default_pod_spec(ps);
    }
}

/// A workload selects the pods of its template.
fn validate_workload(obj: &Value, causes: &mut Causes) {
    let sel = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object);
    let has_exprs = obj.pointer("/spec/selector/matchExpressions").is_some();
    if sel.is_none() && !has_exprs {
        causes.push(("spec.selector".into(), "Required value".into()));
    }
    let labels = obj
        .pointer("/spec/template/metadata/labels")
        .and_then(Value::as_object);
    if let Some(sel) = sel
        && !sel
            .iter()
            .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
    {
        causes.push((
            "spec.template.metadata.labels".into(),
            "Invalid value: `selector` does not match template `labels`".into(),
        ));
    }
    if obj
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .is_some_and(|n| n < 0)
    {
        causes.push((
            "spec.replicas".into(),
            "Invalid value: must be greater than or equal to 0".into(),
        ));
    }
    validate_pod_spec(
        obj.pointer("/spec/template/spec"),
        "spec.template.spec",
        causes,
    );
}
