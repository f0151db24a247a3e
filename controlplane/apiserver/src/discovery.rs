//! Discovery and server metadata: /version, /api, /apis, per-group-version
//! resource lists. Legacy (unaggregated) discovery: clients that ask for the
//! aggregated form fall back to it when the answer's Content-Type says so.

use serde_json::{Value, json};

use crate::registry::{Resource, Served};

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "gitVersion": "v1.33.0-skiff",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

pub fn api_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]
    })
}

/// A group with its versions, the preferred one first.
fn group_json(name: &str, versions: &[&str]) -> Value {
    let gvs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "preferredVersion": gvs.first().cloned().unwrap_or(Value::Null), "versions": gvs})
}

/// The named groups, the reviews' groups last.
fn all_groups(served: &Served) -> Vec<(&'static str, Vec<&'static str>)> {
    let mut all = served.groups();
    for group in [AUTHZ_GROUP, AUTHN_GROUP] {
        all.push((group, vec!["v1"]));
    }
    all
}

pub fn api_groups(served: &Served) -> Value {
    let groups: Vec<Value> = all_groups(served)
        .iter()
        .map(|(g, vs)| group_json(g, vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// Served by the authorizer, not stored: SelfSubjectAccessReview.
pub const AUTHZ_GROUP: &str = "authorization.k8s.io";
/// Served by the authenticator, not stored: SelfSubjectReview. (The group's
/// TokenRequest is a subresource of service accounts.)
pub const AUTHN_GROUP: &str = "authentication.k8s.io";

/// A review: asked with `create` and answered, never stored; all are
/// cluster-scoped `v1`.
pub struct Review {
    pub group: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub kind: &'static str,
}

pub const REVIEWS: &[Review] = &[
    Review {
        group: AUTHZ_GROUP,
        plural: "selfsubjectaccessreviews",
        singular: "selfsubjectaccessreview",
        kind: "SelfSubjectAccessReview",
    },
    Review {
        group: AUTHZ_GROUP,
        plural: "selfsubjectrulesreviews",
        singular: "selfsubjectrulesreview",
        kind: "SelfSubjectRulesReview",
    },
    Review {
        group: AUTHN_GROUP,
        plural: "selfsubjectreviews",
        singular: "selfsubjectreview",
        kind: "SelfSubjectReview",
    },
];

fn reviews_of(group: &str, version: &str) -> impl Iterator<Item = &'static Review> {
    REVIEWS
        .iter()
        .filter(move |r| r.group == group && version == "v1")
}

pub fn api_group(served: &Served, group: &str) -> Option<Value> {
    let (g, vs) = all_groups(served).into_iter().find(|(g, _)| *g == group)?;
    let mut j = group_json(g, &vs);
    j["kind"] = json!("APIGroup");
    j["apiVersion"] = json!("v1");
    Some(j)
}

fn sub_entry(r: &Resource, sub: &str) -> Value {
    let (kind, group, version, verbs): (&str, Option<&str>, Option<&str>, &[&str]) = match sub {
        "scale" => (
            "Scale",
            Some("autoscaling"),
            Some("v1"),
            &["get", "patch", "update"],
        ),
        "binding" => ("Binding", None, None, &["create"]),
        "token" => (
            "TokenRequest",
            Some("authentication.k8s.io"),
            Some("v1"),
            &["create"],
        ),
        "log" => ("Pod", None, None, &["get"]),
        "portforward" => ("PodPortForwardOptions", None, None, &["create", "get"]),
        "proxy" if r.plural == "pods" => (
            "PodProxyOptions",
            None,
            None,
            &["create", "delete", "get", "patch", "update"],
        ),
        "proxy" => (
            "ServiceProxyOptions",
            None,
            None,
            &["create", "delete", "get", "patch", "update"],
        ),
        "finalize" => (r.kind, None, None, &["update"]),
        _ => (r.kind, None, None, &["get", "patch", "update"]),
    };
    let mut e = json!({
        "name": format!("{}/{sub}", r.plural),
        "singularName": "",
        "namespaced": r.namespaced,
        "kind": kind,
        "verbs": verbs,
    });
    if let (Some(g), Some(v)) = (group, version) {
        e["group"] = json!(g);
        e["version"] = json!(v);
    }
    e
}

pub fn resource_list(served: &Served, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for r in reviews_of(group, version) {
        resources.push(json!({"name": r.plural, "singularName": r.singular, "namespaced": false, "kind": r.kind, "verbs": ["create"]}));
    }
    for r in served.in_group_version(group, version) {
        let mut e = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        for sub in r.subresources {
            resources.push(sub_entry(r, sub));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources,
    }))
}

/// The aggregated-discovery version a client asked for in Accept
/// (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`),
/// in its order of preference; `None` = legacy discovery.
pub fn aggregated_version(accept: Option<&str>) -> Option<&'static str> {
    for part in accept?.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        if !params.contains(&"as=APIGroupDiscoveryList")
            || !params.contains(&"g=apidiscovery.k8s.io")
        {
            continue;
        }
        if params.contains(&"v=v2") {
            return Some("v2");
        }
        if params.contains(&"v=v2beta1") {
            return Some("v2beta1");
        }
    }
    None
}

fn response_kind(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn aggregated_resource(r: &Resource) -> Value {
    let subresources: Vec<Value> = r
        .subresources
        .iter()
        .map(|sub| {
            let legacy = sub_entry(r, sub);
            let group = legacy.get("group").and_then(Value::as_str).unwrap_or(r.group);
            let version = legacy.get("version").and_then(Value::as_str).unwrap_or(r.version);
            json!({
                "subresource": sub,
                "responseKind": response_kind(group, version, legacy["kind"].as_str().unwrap_or("")),
                "verbs": legacy["verbs"],
            })
        })
        .collect();
    let mut e = json!({
        "resource": r.plural,
        "responseKind": response_kind(r.group, r.version, r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if !subresources.is_empty() {
        e["subresources"] = json!(subresources);
    }
    e
}

/// APIGroupDiscoveryList for /api (`core`) or /apis: every group, version
/// and resource in one answer.
pub fn aggregated(served: &Served, core: bool, version: &str) -> Value {
    let groups = if core {
        vec![("", vec!["v1"])]
    } else {
        all_groups(served)
    };
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> = vs
                .into_iter()
                .map(|v| aggregated_version_entry(served, g, v))
                .collect();
            json!({"metadata": {"name": g}, "versions": versions})
        })
        .collect();
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{version}"),
        "metadata": {},
        "items": items,
    })
}

/// One version of a group in aggregated discovery.
fn aggregated_version_entry(served: &Served, g: &str, v: &str) -> Value {
    let mut resources: Vec<Value> = served
        .in_group_version(g, v)
        .map(aggregated_resource)
        .collect();
    for r in reviews_of(g, v) {
        resources.push(json!({
            "resource": r.plural,
            "responseKind": response_kind(g, v, r.kind),
            "scope": "Cluster",
            "singularResource": r.singular,
            "verbs": ["create"],
        }));
    }
    json!({"version": v, "resources": resources, "freshness": "Current"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_pods_and_subresources() {
        let l = resource_list(&Served::default(), "", "v1").unwrap();
        let names: Vec<&str> = l["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/status"));
        assert!(names.contains(&"pods/log"));
        assert!(resource_list(&Served::default(), "nope", "v1").is_none());
        let apps = resource_list(&Served::default(), "apps", "v1").unwrap();
        let scale = apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "deployments/scale")
            .unwrap();
        assert_eq!(scale["group"], "autoscaling");
    }

    #[test]
    fn aggregated_discovery_is_negotiated() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(Some(kubectl)), Some("v2"));
        assert_eq!(aggregated_version(Some("application/json")), None);
        let apis = aggregated(&Served::default(), false, "v2");
        let apps = apis["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["metadata"]["name"] == "apps")
            .unwrap();
        let deploy = apps["versions"][0]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "deployments")
            .unwrap();
        assert_eq!(deploy["scope"], "Namespaced");
        assert_eq!(deploy["subresources"][1]["responseKind"]["kind"], "Scale");
        let core = aggregated(&Served::default(), true, "v2");
        assert_eq!(core["items"][0]["metadata"]["name"], "");
    }

    #[test]
    fn groups_list_each_group_once() {
        let g = api_groups(&Served::default());
        let names: Vec<&str> = g["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names.iter().filter(|n| **n == "apps").count(), 1);
        assert!(names.contains(&"rbac.authorization.k8s.io"));
    }
}
