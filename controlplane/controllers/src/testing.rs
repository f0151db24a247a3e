//! Fake cluster state for the controllers' pure decisions.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

/// A pod with these labels, controller (kind, uid), phase, readiness and node.
pub fn pod(
    name: &str,
    labels: &[(&str, &str)],
    owner: Option<(&str, &str)>,
    phase: &str,
    ready: bool,
    node: &str,
) -> Arc<Pod> {
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let owners: Vec<_> = owner
        .map(|(kind, uid)| {
            json!({"apiVersion": "apps/v1", "kind": kind, "name": "owner", "uid": uid, "controller": true})
        })
        .into_iter()
        .collect();
    let mut p = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"),
                     "labels": labels, "ownerReferences": owners,
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
        "status": {"phase": phase, "podIP": "10.1.0.1",
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" },
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
    });
    if !node.is_empty() {
        p["spec"]["nodeName"] = json!(node);
    }
    Arc::new(serde_json::from_value(p).unwrap())
}

pub trait Deleting {
    fn deleting(self) -> Self;
}

impl Deleting for Arc<Pod> {
    fn deleting(self) -> Arc<Pod> {
        let mut p = (*self).clone();
        p.metadata.deletion_timestamp = Some(crate::util::now());
        Arc::new(p)
    }
}
