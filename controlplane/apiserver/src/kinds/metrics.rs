//! metrics.k8s.io/v1beta1: NodeMetrics and PodMetrics, read-only views of
//! the nodes' latest usage reports (served by `crate::resource_metrics`,
//! never stored), with metrics-server's names and verbs.

use serde_json::json;

use crate::registry::{BASE, Resource};
use crate::tables::{created, s};

pub const GROUP: &str = "metrics.k8s.io";

const COLUMNS: &[(&str, &str, u8)] = &[
    ("Name", "string", 0),
    ("CPU", "string", 0),
    ("Memory", "string", 0),
    ("Window", "string", 0),
    ("Age", "string", 0),
];

pub const NODE_METRICS: Resource = Resource {
    group: GROUP,
    version: "v1beta1",
    kind: "NodeMetrics",
    plural: "nodes",
    singular: "",
    namespaced: false,
    has_spec: false,
    verbs: &["get", "list"],
    stored: false,
    columns: COLUMNS,
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(s(o.pointer("/usage/cpu"))),
            json!(s(o.pointer("/usage/memory"))),
            json!(s(o.pointer("/window"))),
            json!(created(o)),
        ]
    },
    ..BASE
};

pub const POD_METRICS: Resource = Resource {
    kind: "PodMetrics",
    plural: "pods",
    namespaced: true,
    columns: &[
        ("Name", "string", 0),
        ("Containers", "integer", 0),
        ("Window", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(
                o.get("containers")
                    .and_then(|c| c.as_array())
                    .map_or(0, Vec::len)
            ),
            json!(s(o.pointer("/window"))),
            json!(created(o)),
        ]
    },
    ..NODE_METRICS
};
