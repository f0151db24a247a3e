//! apiextensions.k8s.io/v1: CustomResourceDefinitions. Their rules and the
//! resources they define are `crate::crd`'s.

use serde_json::json;

use crate::registry::{BASE, Resource, Typed};
use crate::tables::s;

pub const CUSTOM_RESOURCE_DEFINITIONS: Resource = Resource {
    group: crate::crd::GROUP,
    kind: "CustomResourceDefinition",
    plural: "customresourcedefinitions",
    singular: "customresourcedefinition",
    short_names: &["crd", "crds"],
    namespaced: false,
    subresources: &["status"],
    categories: &["api-extensions"],
    typed: Some(Typed::of::<
        k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    >()),
    defaults: crate::crd::defaults,
    validate: crate::crd::validate,
    validate_update: crate::crd::validate_update,
    columns: &[("Name", "string", 0), ("Created At", "date", 0)],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(s(o.pointer("/metadata/creationTimestamp"))),
        ]
    },
    ..BASE
};
