//! The resource registry: one table describing every served resource. Routing,
//! discovery, storage keys and admission all read it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
}

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

macro_rules! res {
    ($g:expr, $v:expr, $kind:expr, $plural:expr, $singular:expr, [$($s:expr),*], $ns:expr, [$($sub:expr),*], [$($cat:expr),*]) => {
        Resource {
            group: $g, version: $v, kind: $kind, plural: $plural, singular: $singular,
            short_names: &[$($s),*], namespaced: $ns, subresources: &[$($sub),*], categories: &[$($cat),*],
        }
    };
}

pub static RESOURCES: &[Resource] = &[
    res!(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        ["ns"],
        false,
        ["status", "finalize"],
        []
    ),
    res!(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        ["no"],
        false,
        ["status"],
        []
    ),
    res!(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        ["po"],
        true,
        ["status", "binding", "log"],
        ["all"]
    ),
    res!(
        "",
        "v1",
        "Service",
        "services",
        "service",
        ["svc"],
        true,
        ["status"],
        ["all"]
    ),
    res!(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        ["ep"],
        true,
        [],
        []
    ),
    res!(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        ["cm"],
        true,
        [],
        []
    ),
    res!("", "v1", "Secret", "secrets", "secret", [], true, [], []),
    res!(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        ["sa"],
        true,
        ["token"],
        []
    ),
    res!("", "v1", "Event", "events", "event", ["ev"], true, [], []),
    res!(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        ["deploy"],
        true,
        ["status", "scale"],
        ["all"]
    ),
    res!(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        ["rs"],
        true,
        ["status", "scale"],
        ["all"]
    ),
    res!(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        ["ds"],
        true,
        ["status"],
        ["all"]
    ),
    res!(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        [],
        true,
        ["status"],
        ["all"]
    ),
    res!(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        ["cj"],
        true,
        ["status"],
        ["all"]
    ),
    res!(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        [],
        true,
        [],
        []
    ),
    res!(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        [],
        true,
        [],
        []
    ),
    res!(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        ["ev"],
        true,
        [],
        []
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        [],
        true,
        [],
        []
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        [],
        true,
        [],
        []
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        [],
        false,
        [],
        []
    ),
    res!(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        [],
        false,
        [],
        []
    ),
];

/// Groups in the order discovery lists them (core first, as kube does).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.iter().any(|(g, _)| *g == r.group) {
            out.push((r.group, r.version));
        }
    }
    out
}

pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

pub fn in_group_version(group: &str, version: &str) -> impl Iterator<Item = &'static Resource> {
    let (g, v) = (group.to_string(), version.to_string());
    RESOURCES
        .iter()
        .filter(move |r| r.group == g && r.version == v)
}

/// The registry entry for an object's apiVersion and kind.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
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
            by_kind("apps/v1", "Deployment").unwrap().plural,
            "deployments"
        );
        assert!(by_kind("v1", "Deployment").is_none());
    }
}
