//! autoscaling/v2: HorizontalPodAutoscalers (the controller manager's
//! `hpa` controller acts on them).

use k8s_openapi::api::autoscaling::v2 as api;
use serde_json::{Value, json};

use crate::admission::{default, obj_mut};
use crate::registry::{BASE, Causes, Resource, Typed};
use crate::tables::{created, n, reference, s};

pub const HORIZONTAL_POD_AUTOSCALERS: Resource = Resource {
    group: "autoscaling",
    version: "v2",
    kind: "HorizontalPodAutoscaler",
    plural: "horizontalpodautoscalers",
    singular: "horizontalpodautoscaler",
    short_names: &["hpa"],
    subresources: &["status"],
    categories: &["all"],
    typed: Some(Typed::of::<api::HorizontalPodAutoscaler>()),
    defaults: |obj, _| {
        let spec = obj_mut(obj, "spec");
        default(spec, "minReplicas", json!(1));
        // kube's default target: 80 % of the pods' CPU requests.
        if spec
            .get("metrics")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty)
        {
            spec.insert(
                "metrics".into(),
                json!([{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]),
            );
        }
    },
    validate,
    columns: &[
        ("Name", "string", 0),
        ("Reference", "string", 0),
        ("Targets", "string", 0),
        ("MinPods", "string", 0),
        ("MaxPods", "integer", 0),
        ("Replicas", "integer", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(reference(o, "/spec/scaleTargetRef")),
            json!(targets(o)),
            json!(n(o.pointer("/spec/minReplicas")).to_string()),
            json!(n(o.pointer("/spec/maxReplicas"))),
            json!(n(o.pointer("/status/currentReplicas"))),
            json!(created(o)),
        ]
    },
    ..BASE
};

fn validate(obj: &Value, causes: &mut Causes) {
    let max = obj.pointer("/spec/maxReplicas").and_then(Value::as_i64);
    let min = obj
        .pointer("/spec/minReplicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    match max {
        Some(m) if m >= 1 => {
            if min > m {
                causes.push((
                    "spec.minReplicas".into(),
                    format!("Invalid value: {min}: must be less than or equal to maxReplicas"),
                ));
            }
        }
        _ => causes.push((
            "spec.maxReplicas".into(),
            "Invalid value: must be greater than or equal to 1".into(),
        )),
    }
    if min < 1 {
        causes.push((
            "spec.minReplicas".into(),
            format!("Invalid value: {min}: must be greater than or equal to 1"),
        ));
    }
    for field in ["kind", "name"] {
        if s(obj.pointer(&format!("/spec/scaleTargetRef/{field}"))).is_empty() {
            causes.push((
                format!("spec.scaleTargetRef.{field}"),
                "Required value".into(),
            ));
        }
    }
    let metrics = obj.pointer("/spec/metrics").and_then(Value::as_array);
    for (i, m) in metrics.into_iter().flatten().enumerate() {
        let utilization = m.pointer("/resource/target/averageUtilization");
        if m.get("type").and_then(Value::as_str) == Some("Resource")
            && utilization.is_some_and(|u| u.as_i64().is_none_or(|u| u < 1))
        {
            causes.push((
                format!("spec.metrics[{i}].resource.target.averageUtilization"),
                "Invalid value: must be greater than 0".into(),
            ));
        }
    }
}

/// `kubectl get hpa`'s TARGETS: `cpu: 45%/50%` per resource metric,
/// `<unknown>` until the controller has measured.
fn targets(o: &Value) -> String {
    let specs = o.pointer("/spec/metrics").and_then(Value::as_array);
    let current = o
        .pointer("/status/currentMetrics")
        .and_then(Value::as_array);
    let parts: Vec<String> = specs
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let name = m.pointer("/resource/name")?.as_str()?;
            let want = m.pointer("/resource/target/averageUtilization")?.as_i64()?;
            let now = current
                .into_iter()
                .flatten()
                .find(|c| c.pointer("/resource/name").and_then(Value::as_str) == Some(name))
                .and_then(|c| c.pointer("/resource/current/averageUtilization")?.as_i64())
                .map_or("<unknown>".to_string(), |u| format!("{u}%"));
            Some(format!("{name}: {now}/{want}%"))
        })
        .collect();
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(", ")
    }
}
