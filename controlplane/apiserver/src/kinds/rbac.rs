//! rbac.authorization.k8s.io/v1: Roles, ClusterRoles and their bindings.

use k8s_openapi::api::rbac::v1 as api;
use serde_json::{Value, json};

use crate::registry::{BASE, Causes, Resource, Typed};
use crate::tables::{created, reference, s};

const RBAC: Resource = Resource {
    group: "rbac.authorization.k8s.io",
    has_spec: false,
    // RBAC names are path segments: anything but '/' and '%'.
    name_rule: (
        |s: &str| !s.is_empty() && !s.contains(['/', '%']) && s != "." && s != "..",
        "may not contain '/' or '%'",
    ),
    columns: &[("Name", "string", 0), ("Created At", "date", 0)],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(s(o.pointer("/metadata/creationTimestamp"))),
        ]
    },
    ..BASE
};

/// A binding's role may not change.
const BINDING: Resource = Resource {
    validate_update: |old, new, causes| {
        if old.get("roleRef") != new.get("roleRef") {
            causes.push((
                "roleRef".into(),
                "Invalid value: cannot change roleRef".into(),
            ));
        }
    },
    columns: &[
        ("Name", "string", 0),
        ("Role", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(reference(o, "/roleRef")),
            json!(created(o)),
        ]
    },
    ..RBAC
};

pub const ROLES: Resource = Resource {
    kind: "Role",
    plural: "roles",
    singular: "role",
    typed: Some(Typed::of::<api::Role>()),
    ..RBAC
};

pub const ROLE_BINDINGS: Resource = Resource {
    kind: "RoleBinding",
    plural: "rolebindings",
    singular: "rolebinding",
    typed: Some(Typed::of::<api::RoleBinding>()),
    ..BINDING
};

pub const CLUSTER_ROLES: Resource = Resource {
    kind: "ClusterRole",
    plural: "clusterroles",
    singular: "clusterrole",
    namespaced: false,
    typed: Some(Typed::of::<api::ClusterRole>()),
    validate: validate_cluster_role,
    ..RBAC
};

pub const CLUSTER_ROLE_BINDINGS: Resource = Resource {
    kind: "ClusterRoleBinding",
    plural: "clusterrolebindings",
    singular: "clusterrolebinding",
    namespaced: false,
    typed: Some(Typed::of::<api::ClusterRoleBinding>()),
    ..BINDING
};

/// A selector that does not parse must not reach the authorizer (which
/// would aggregate nothing from it).
fn validate_cluster_role(obj: &Value, causes: &mut Causes) {
    for (i, sel) in obj
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Err(e) = crate::selectors::LabelSelector::from_object(sel) {
            causes.push((
                format!("aggregationRule.clusterRoleSelectors[{i}]"),
                format!("Invalid value: {e}"),
            ));
        }
    }
}
