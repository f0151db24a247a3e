//! Authorization: RBAC with Kubernetes' semantics, evaluated from the Roles
//! and bindings in the RBAC cache ([`crate::rbac_cache`], waited on until it
//! has applied the store's current revision; read from the store if it lags
//! too long), plus the node authorizer that confines a node
//! identity (`system:node:<name>` in `system:nodes`) to its own objects.

use serde_json::{Value, json};

use crate::authn::Identity;
use crate::rbac_cache::{self, Objects};
use crate::registry;
use crate::selectors::{Filter, LabelSelector};
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::storage;

/// What a request wants to do (kube's authorizer.Attributes).
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    pub resource: &'a str,
    pub subresource: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    /// The list/watch field selector, for the node authorizer.
    pub field_selector: &'a str,
}

pub async fn authorize(state: &State, id: &Identity, a: &Attributes<'_>) -> ApiResult<()> {
    if allowed(state, id, a).await? {
        return Ok(());
    }
    let res = if a.subresource.is_empty() {
        a.resource.to_string()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    let what = if a.name.is_empty() {
        res.clone()
    } else {
        format!("{res} \"{}\"", a.name)
    };
    Err(ApiError::forbidden(format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
        id.name, a.verb, a.group
    )))
}

pub async fn allowed(state: &State, id: &Identity, a: &Attributes<'_>) -> ApiResult<bool> {
    if id.in_group("system:masters") {
        return Ok(true);
    }
    if let Some(node) = id.name.strip_prefix("system:node:")
        && id.in_group("system:nodes")
    {
        // Nodes get exactly what the node authorizer grants, no RBAC on top.
        return node_allows(state, node, a).await;
    }
    rbac_allows(state, id, a).await
}

fn subject_matches(s: &Value, id: &Identity, binding_ns: &str) -> bool {
    let name = s.get("name").and_then(Value::as_str).unwrap_or("");
    match s.get("kind").and_then(Value::as_str) {
        Some("User") => name == id.name,
        Some("Group") => id.in_group(name),
        Some("ServiceAccount") => {
            let ns = s
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or(binding_ns);
            id.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

fn has(list: Option<&Value>, want: &str) -> bool {
    list.and_then(Value::as_array).is_some_and(|l| {
        l.iter()
            .any(|x| x.as_str().is_some_and(|x| x == "*" || x == want))
    })
}

/// One PolicyRule against the attributes (resource requests only).
pub fn rule_allows(rule: &Value, a: &Attributes<'_>) -> bool {
    if !has(rule.get("verbs"), a.verb) || !has(rule.get("apiGroups"), a.group) {
        return false;
    }
    let resources = rule.get("resources").and_then(Value::as_array);
    let res_ok = resources.is_some_and(|l| {
        l.iter().filter_map(Value::as_str).any(|r| {
            if a.subresource.is_empty() {
                r == "*" || r == a.resource
            } else {
                r == "*"
                    || r == format!("{}/{}", a.resource, a.subresource)
                    || r == format!("*/{}", a.subresource)
            }
        })
    });
    if !res_ok {
        return false;
    }
    match rule.get("resourceNames").and_then(Value::as_array) {
        Some(names) if !names.is_empty() => {
            names.iter().any(|n| n.as_str() == Some(a.name)) && !a.name.is_empty()
        }
        _ => true,
    }
}

/// An aggregationRule's clusterRoleSelector (matchLabels) as a selector.
fn aggregation_selector(sel: &Value) -> ApiResult<LabelSelector> {
    let expr = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    LabelSelector::parse(&expr)
}

fn rules_of(v: &Value) -> impl Iterator<Item = &Value> {
    v.get("rules")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

/// A ClusterRole's rules, including those aggregated into it by label, from
/// the cache: calls `f` on each until it returns true (then returns true).
fn cached_cluster_role_rules(
    o: &Objects,
    name: &str,
    f: &mut dyn FnMut(&Value) -> bool,
) -> ApiResult<bool> {
    let Some(role) = o.cluster_roles.get(name) else {
        return Ok(false);
    };
    if rules_of(role).any(&mut *f) {
        return Ok(true);
    }
    for sel in role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ls = aggregation_selector(sel)?;
        for (other_name, other) in &o.cluster_roles {
            if other_name != name
                && ls.matches(other.pointer("/metadata/labels").and_then(Value::as_object))
                && rules_of(other).any(&mut *f)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// [`rbac_rules`] over the cache, visiting rules until `f` returns true.
fn cached_rbac_rules(
    o: &Objects,
    id: &Identity,
    namespace: &str,
    f: &mut dyn FnMut(&Value) -> bool,
) -> ApiResult<bool> {
    let subjects_match = |b: &Value, ns: &str| {
        b.get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| subject_matches(s, id, ns)))
    };
    let role_name = |b: &Value| -> String {
        b.pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for b in o.cluster_role_bindings.values() {
        if subjects_match(b, "") && cached_cluster_role_rules(o, &role_name(b), f)? {
            return Ok(true);
        }
    }
    if namespace.is_empty() {
        return Ok(false);
    }
    for b in o
        .role_bindings
        .get(namespace)
        .into_iter()
        .flat_map(|m| m.values())
    {
        if !subjects_match(b, namespace) {
            continue;
        }
        let found = match b.pointer("/roleRef/kind").and_then(Value::as_str) {
            Some("ClusterRole") => cached_cluster_role_rules(o, &role_name(b), f)?,
            _ => o
                .roles
                .get(namespace)
                .and_then(|m| m.get(&role_name(b)))
                .is_some_and(|r| rules_of(r).any(&mut *f)),
        };
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether the RBAC cache reflects every write committed before now (waits
/// briefly for it); false means: read the store.
async fn cache_current(state: &State) -> bool {
    state
        .rbac
        .wait_applied(state.store.current_revision(), rbac_cache::WAIT)
        .await
}

/// A ClusterRole's rules, including those aggregated into it by label.
async fn cluster_role_rules(state: &State, name: &str) -> ApiResult<Vec<Value>> {
    let r = registry::find("rbac.authorization.k8s.io", "v1", "clusterroles").expect("registered");
    let role = match storage::get(&state.store, r, "", name).await {
        Ok(v) => v,
        Err(e) if e.code == 404 => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut rules = role
        .get("rules")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let selectors = role
        .pointer("/aggregationRule/clusterRoleSelectors")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if !selectors.is_empty() {
        let all = storage::list(&state.store, r, "", &Filter::default(), 0, None).await?;
        for sel in &selectors {
            let ls = aggregation_selector(sel)?;
            for other in &all.items {
                if storage::meta_str(other, "name") != Some(name)
                    && ls.matches(other.pointer("/metadata/labels").and_then(Value::as_object))
                {
                    rules.extend(
                        other
                            .get("rules")
                            .and_then(Value::as_array)
                            .cloned()
                            .unwrap_or_default(),
                    );
                }
            }
        }
    }
    Ok(rules)
}

async fn rbac_allows(state: &State, id: &Identity, a: &Attributes<'_>) -> ApiResult<bool> {
    if cache_current(state).await {
        return cached_rbac_rules(&state.rbac.read(), id, a.namespace, &mut |r| {
            rule_allows(r, a)
        });
    }
    Ok(store_rbac_rules(state, id, a.namespace)
        .await?
        .iter()
        .any(|r| rule_allows(r, a)))
}

/// Every PolicyRule granted to `id` cluster-wide and, when `namespace` is
/// set, in that namespace.
pub async fn rbac_rules(state: &State, id: &Identity, namespace: &str) -> ApiResult<Vec<Value>> {
    if cache_current(state).await {
        let mut rules = Vec::new();
        cached_rbac_rules(&state.rbac.read(), id, namespace, &mut |r| {
            rules.push(r.clone());
            false
        })?;
        return Ok(rules);
    }
    store_rbac_rules(state, id, namespace).await
}

/// [`rbac_rules`] read from the store (when the cache lags).
async fn store_rbac_rules(state: &State, id: &Identity, namespace: &str) -> ApiResult<Vec<Value>> {
    let g = "rbac.authorization.k8s.io";
    let mut rules = Vec::new();
    let subjects_match = |b: &Value, ns: &str| {
        b.get("subjects")
            .and_then(Value::as_array)
            .is_some_and(|s| s.iter().any(|s| subject_matches(s, id, ns)))
    };
    let role_name = |b: &Value| {
        b.pointer("/roleRef/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let crb = registry::find(g, "v1", "clusterrolebindings").expect("registered");
    for b in storage::list(&state.store, crb, "", &Filter::default(), 0, None)
        .await?
        .items
    {
        if subjects_match(&b, "") {
            rules.extend(cluster_role_rules(state, &role_name(&b)).await?);
        }
    }
    if namespace.is_empty() {
        return Ok(rules);
    }
    let rb = registry::find(g, "v1", "rolebindings").expect("registered");
    let roles = registry::find(g, "v1", "roles").expect("registered");
    for b in storage::list(&state.store, rb, namespace, &Filter::default(), 0, None)
        .await?
        .items
    {
        if !subjects_match(&b, namespace) {
            continue;
        }
        match b.pointer("/roleRef/kind").and_then(Value::as_str) {
            Some("ClusterRole") => rules.extend(cluster_role_rules(state, &role_name(&b)).await?),
            _ => match storage::get(&state.store, roles, namespace, &role_name(&b)).await {
                Ok(role) => rules.extend(
                    role.get("rules")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                ),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            },
        }
    }
    Ok(rules)
}

/// Names of secrets/configmaps a pod references (volumes, env, envFrom,
/// image pull secrets).
fn pod_refs(pod: &Value, kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let spec = pod.get("spec").cloned().unwrap_or(json!({}));
    let push = |v: Option<&Value>, out: &mut Vec<String>| {
        if let Some(s) = v.and_then(Value::as_str) {
            out.push(s.to_string());
        }
    };
    for vol in spec
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match kind {
            "secrets" => push(vol.pointer("/secret/secretName"), &mut out),
            _ => push(vol.pointer("/configMap/name"), &mut out),
        }
        for src in vol
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            match kind {
                "secrets" => push(src.pointer("/secret/name"), &mut out),
                _ => push(src.pointer("/configMap/name"), &mut out),
            }
        }
    }
    for list in ["containers", "initContainers"] {
        for c in spec
            .get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for e in c.get("env").and_then(Value::as_array).into_iter().flatten() {
                match kind {
                    "secrets" => push(e.pointer("/valueFrom/secretKeyRef/name"), &mut out),
                    _ => push(e.pointer("/valueFrom/configMapKeyRef/name"), &mut out),
                }
            }
            for e in c
                .get("envFrom")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match kind {
                    "secrets" => push(e.pointer("/secretRef/name"), &mut out),
                    _ => push(e.pointer("/configMapRef/name"), &mut out),
                }
            }
        }
    }
    if kind == "secrets" {
        for s in spec
            .get("imagePullSecrets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            push(s.get("name"), &mut out);
        }
    }
    out
}

async fn pods_on_node(state: &State, ns: &str, node: &str) -> ApiResult<Vec<Value>> {
    let pods = registry::find("", "v1", "pods").expect("registered");
    let filter = Filter {
        fields: crate::selectors::FieldSelector::parse(&format!("spec.nodeName={node}"))?,
        ..Default::default()
    };
    Ok(storage::list(&state.store, pods, ns, &filter, 0, None)
        .await?
        .items)
}

/// NodeRestriction: a node may create only its own Node and Lease. Runs
/// once the body is known (authorization sees no name on create).
pub fn node_may_create(id: &Identity, resource: &str, name: &str) -> ApiResult<()> {
    let Some(node) = id
        .name
        .strip_prefix("system:node:")
        .filter(|_| id.in_group("system:nodes"))
    else {
        return Ok(());
    };
    if matches!(resource, "nodes" | "leases") && name != node {
        return Err(ApiError::forbidden(format!(
            "node \"{node}\" is not allowed to create {resource} \"{name}\""
        )));
    }
    Ok(())
}

/// kube's node authorizer, reduced to what Skiff nodes do.
async fn node_allows(state: &State, node: &str, a: &Attributes<'_>) -> ApiResult<bool> {
    let read = matches!(a.verb, "get" | "list" | "watch");
    let own_selector = a
        .field_selector
        .split(',')
        .any(|t| t.trim() == format!("spec.nodeName={node}"));
    Ok(match (a.group, a.resource, a.subresource) {
        ("", "nodes", "") if read => true,
        ("", "nodes", "" | "status") if matches!(a.verb, "create" | "update" | "patch" | "get") => {
            a.name == node || (a.verb == "create" && a.name.is_empty())
        }
        ("coordination.k8s.io", "leases", "") if a.namespace == "kube-node-lease" => {
            a.name == node || (a.verb == "create" && a.name.is_empty())
        }
        ("", "pods", "") if matches!(a.verb, "list" | "watch") => own_selector,
        // Read and delete its pods; write only their status.
        ("", "pods", sub)
            if (sub.is_empty() && matches!(a.verb, "get" | "delete"))
                || (sub == "status" && matches!(a.verb, "get" | "update" | "patch")) =>
        {
            let pods = registry::find("", "v1", "pods").expect("registered");
            match storage::get(&state.store, pods, a.namespace, a.name).await {
                Ok(p) => p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node),
                Err(e) if e.code == 404 => false,
                Err(e) => return Err(e),
            }
        }
        ("", "secrets" | "configmaps", "") if a.verb == "get" => {
            pods_on_node(state, a.namespace, node)
                .await?
                .iter()
                .any(|p| pod_refs(p, a.resource).iter().any(|n| n == a.name))
        }
        ("", "services" | "endpoints", "") | ("discovery.k8s.io", "endpointslices", "") if read => {
            true
        }
        ("", "events", "") | ("events.k8s.io", "events", "")
            if matches!(a.verb, "create" | "patch" | "update") =>
        {
            true
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs<'a>(verb: &'a str, resource: &'a str, sub: &'a str, name: &'a str) -> Attributes<'a> {
        Attributes {
            verb,
            group: "",
            resource,
            subresource: sub,
            namespace: "default",
            name,
            field_selector: "",
        }
    }

    #[test]
    fn rules_match_verbs_resources_and_names() {
        let rule =
            json!({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list"]});
        assert!(rule_allows(&rule, &attrs("get", "pods", "", "p")));
        assert!(rule_allows(&rule, &attrs("get", "pods", "log", "p")));
        assert!(!rule_allows(&rule, &attrs("get", "pods", "status", "p")));
        assert!(!rule_allows(&rule, &attrs("delete", "pods", "", "p")));
        let named = json!({"apiGroups": ["*"], "resources": ["configmaps"], "verbs": ["*"], "resourceNames": ["only"]});
        assert!(rule_allows(
            &named,
            &attrs("update", "configmaps", "", "only")
        ));
        assert!(!rule_allows(
            &named,
            &attrs("update", "configmaps", "", "other")
        ));
        assert!(!rule_allows(&named, &attrs("list", "configmaps", "", "")));
    }

    #[test]
    fn subjects() {
        let id = Identity {
            name: "system:serviceaccount:ns:sa".into(),
            uid: String::new(),
            groups: vec!["g".into()],
            service_account: None,
        };
        assert!(subject_matches(
            &json!({"kind": "ServiceAccount", "name": "sa"}),
            &id,
            "ns"
        ));
        assert!(!subject_matches(
            &json!({"kind": "ServiceAccount", "name": "sa"}),
            &id,
            "other"
        ));
        assert!(subject_matches(
            &json!({"kind": "Group", "name": "g"}),
            &id,
            ""
        ));
        assert!(!subject_matches(
            &json!({"kind": "User", "name": "g"}),
            &id,
            ""
        ));
    }

    #[test]
    fn pod_references() {
        let pod = json!({"spec": {"volumes": [{"secret": {"secretName": "s1"}}, {"configMap": {"name": "c1"}}],
            "containers": [{"env": [{"valueFrom": {"secretKeyRef": {"name": "s2"}}}], "envFrom": [{"configMapRef": {"name": "c2"}}]}],
            "imagePullSecrets": [{"name": "s3"}]}});
        assert_eq!(pod_refs(&pod, "secrets"), vec!["s1", "s2", "s3"]);
        assert_eq!(pod_refs(&pod, "configmaps"), vec!["c1", "c2"]);
    }
}
