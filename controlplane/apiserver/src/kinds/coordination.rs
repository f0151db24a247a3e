//! coordination.k8s.io/v1: Leases (node heartbeats, leader election).

use serde_json::json;

use crate::registry::{BASE, Resource, Typed};
use crate::tables::{created, s};

pub const LEASES: Resource = Resource {
    group: "coordination.k8s.io",
    kind: "Lease",
    plural: "leases",
    singular: "lease",
    typed: Some(Typed::of::<k8s_openapi::api::coordination::v1::Lease>()),
    columns: &[
        ("Name", "string", 0),
        ("Holder", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(s(o.pointer("/spec/holderIdentity"))),
            json!(created(o)),
        ]
    },
    ..BASE
};
