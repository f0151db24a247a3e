//! The resource registry: what every served resource is. Routing,
//! discovery, storage keys, admission, table printing and OpenAPI all read a
//! kind's [`Resource`]; the entries themselves live in `crate::kinds`, one
//! per kind with the code that is that kind's own (its defaults, validation,
//! columns), so adding a kind is one entry there.

use serde_json::Value;

use crate::status::ApiResult;

/// Field errors of a validation: (field path, message), as kube's
/// `field.ErrorList` reports them.
pub type Causes = Vec<(String, String)>;

/// One Table column: name, type, priority (1 shows only with `-o wide`).
pub type Column = (&'static str, &'static str, u8);

/// The `k8s-openapi` struct of a kind: admission decodes through it, OpenAPI
/// takes its schema from it.
#[derive(Clone, Copy)]
pub struct Typed {
    pub(crate) round_trip: fn(&Resource, &Value) -> ApiResult<Value>,
    pub(crate) schema: fn(&mut schemars::SchemaGenerator),
    /// Its components.schemas name (`io.k8s.api.apps.v1.Deployment`).
    pub(crate) schema_name: fn() -> std::borrow::Cow<'static, str>,
}

impl Typed {
    pub const fn of<T>() -> Typed
    where
        T: serde::Serialize + serde::de::DeserializeOwned + schemars::JsonSchema,
    {
        Typed {
            round_trip: crate::admission::round_trip_as::<T>,
            schema: crate::openapi::schema_of::<T>,
            schema_name: T::schema_name,
        }
    }
}

#[derive(Clone, Copy)]
pub struct Resource {
    /// API group; "" is the core group served under /api.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Subresources beyond the object itself ("status", "scale", ...).
    pub subresources: &'static [&'static str],
    pub categories: &'static [&'static str],
    /// Whether changes outside metadata/status bump metadata.generation.
    pub has_spec: bool,
    pub typed: Option<Typed>,
    /// Which names are valid, and kube's message when one is not.
    pub name_rule: (fn(&str) -> bool, &'static str),
    /// Admission: (updates) fields the change makes moot dropped given the
    /// stored object (kube's `PrepareForUpdate`), defaults (given the
    /// namespace), then validation of the object, then (updates) of the
    /// change from the stored object.
    pub prepare_update: fn(&Value, &mut Value),
    pub defaults: fn(&mut Value, &str),
    pub validate: fn(&Value, &mut Causes),
    pub validate_update: fn(&Value, &Value, &mut Causes),
    /// Objects the server creates at start when they are missing (kube's
    /// system PriorityClasses).
    pub builtin: fn() -> Vec<Value>,
    /// Whether an object (by name) may be deleted; why not if not.
    pub deletable: fn(&str) -> Result<(), &'static str>,
    /// `kubectl get` columns, and each object's cells in their order.
    pub columns: &'static [Column],
    pub cells: fn(&Resource, &Value) -> Vec<Value>,
    /// A custom resource's schema, printer columns and scale paths (its
    /// CustomResourceDefinition, see `crate::crd`); `None` for built-ins.
    pub custom: Option<&'static crate::crd::Custom>,
    /// The verbs served (discovery says them; others are 405).
    pub verbs: &'static [&'static str],
    /// Objects live in the store. `false`: a read-only view computed on
    /// each request (metrics.k8s.io, `crate::resource_metrics`).
    pub stored: bool,
}

impl std::fmt::Debug for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resource")
            .field("api_version", &self.api_version())
            .field("plural", &self.plural)
            .finish_non_exhaustive()
    }
}

/// A group, version and plural name one resource.
impl PartialEq for Resource {
    fn eq(&self, other: &Self) -> bool {
        (self.group, self.version, self.plural) == (other.group, other.version, other.plural)
    }
}
impl Eq for Resource {}

/// What a kind without its own rules gets: names are DNS subdomains, no
/// defaults or checks, NAME and AGE columns.
pub const BASE: Resource = Resource {
    group: "",
    version: "v1",
    kind: "",
    plural: "",
    singular: "",
    short_names: &[],
    namespaced: true,
    subresources: &[],
    categories: &[],
    has_spec: true,
    typed: None,
    name_rule: crate::admission::DNS1123_SUBDOMAIN,
    prepare_update: |_, _| {},
    defaults: |_, _| {},
    validate: |_, _| {},
    validate_update: |_, _, _| {},
    builtin: Vec::new,
    deletable: |_| Ok(()),
    columns: &[("Name", "string", 0), ("Age", "string", 0)],
    cells: |_, o| crate::tables::name_and_age(o),
    custom: None,
    verbs: VERBS,
    stored: true,
};

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    pub fn has_sub(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }
    /// Storage key prefix, etcd-style: /registry/<group>/<plural>/.
    pub fn key_prefix(&self) -> String {
        let g = if self.group.is_empty() {
            "core"
        } else {
            self.group
        };
        format!("/registry/{g}/{}/", self.plural)
    }
    /// The key of one object (namespace is ignored for cluster-scoped kinds).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{namespace}/{name}", self.key_prefix())
        } else {
            format!("{}{name}", self.key_prefix())
        }
    }
    /// Prefix of all objects in a namespace ("" = all namespaces).
    pub fn list_prefix(&self, namespace: &str) -> String {
        if self.namespaced && !namespace.is_empty() {
            format!("{}{namespace}/", self.key_prefix())
        } else {
            self.key_prefix()
        }
    }
}

pub use crate::kinds::RESOURCES;

/// A built-in resource by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// What the server serves at one moment: the built-in resources, then those
/// of the established CustomResourceDefinitions (`crate::crd`). Routing,
/// discovery and OpenAPI read a snapshot, so one request sees one set.
#[derive(Clone, Default)]
pub struct Served {
    custom: std::sync::Arc<Vec<&'static Resource>>,
}

impl Served {
    pub fn with_custom(custom: Vec<&'static Resource>) -> Served {
        Served {
            custom: std::sync::Arc::new(custom),
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &'static Resource> + '_ {
        RESOURCES.iter().chain(self.custom.iter().copied())
    }

    /// Built-ins win over a custom resource of the same name.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
        self.all()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'static Resource> + 'a {
        self.all()
            .filter(move |r| r.group == group && r.version == version)
    }

    /// Named groups with their versions, preferred version first (kube's
    /// version priority), in the order discovery lists them.
    pub fn groups(&self) -> Vec<(&'static str, Vec<&'static str>)> {
        let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
        for r in self.all().filter(|r| !r.group.is_empty()) {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) if !vs.contains(&r.version) => vs.push(r.version),
                Some(_) => {}
                None => out.push((r.group, vec![r.version])),
            }
        }
        for (_, vs) in &mut out {
            vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }
}

/// kube's version priority (`CompareKubeAwareVersionStrings`): GA above
/// beta above alpha, higher numbers first; other strings last.
pub fn version_priority(v: &str) -> (u8, u64, u64) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Ok(major) = rest[..digits].parse::<u64>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    let (level, minor) = if let Some(n) = tail.strip_prefix("beta") {
        (2, n)
    } else if let Some(n) = tail.strip_prefix("alpha") {
        (1, n)
    } else {
        return (0, 0, 0);
    };
    minor
        .parse::<u64>()
        .map_or((0, 0, 0), |m| (level, major, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_namespaces_and_groups() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(
            pods.key("default", "web"),
            "/registry/core/pods/default/web"
        );
        assert_eq!(pods.list_prefix("default"), "/registry/core/pods/default/");
        assert_eq!(pods.list_prefix(""), "/registry/core/pods/");
        let nodes = find("", "v1", "nodes").unwrap();
        assert_eq!(nodes.key("ignored", "n1"), "/registry/core/nodes/n1");
        let ev = find("events.k8s.io", "v1", "events").unwrap();
        assert_ne!(
            ev.key_prefix(),
            find("", "v1", "events").unwrap().key_prefix()
        );
    }

    #[test]
    fn every_kind_is_unique_per_group_version() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{} twice",
                    a.plural
                );
            }
        }
        assert_eq!(
            find("apps", "v1", "deployments").unwrap().kind,
            "Deployment"
        );
        assert!(find("", "v1", "deployments").is_none());
    }

    #[test]
    fn versions_sort_as_kube_does() {
        let mut vs = vec!["v1alpha1", "v2beta1", "v1", "v10", "v1beta2", "foo", "v2"];
        vs.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        assert_eq!(
            vs,
            ["v10", "v2", "v1", "v2beta1", "v1beta2", "v1alpha1", "foo"]
        );
    }
}
