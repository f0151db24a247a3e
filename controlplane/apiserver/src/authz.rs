//! Authorization: RBAC with Kubernetes' semantics, evaluated from the Roles
//! and bindings in the RBAC cache ([`crate::rbac_cache`], waited on until it
//! has applied the store's current revision; read from the store if it lags
//! too long), plus the node authorizer that confines a node
//! identity (`system:node:<name>` in `system:nodes`) to its own objects.

use serde_json::{Value, json};

use crate::authn::Identity;
use crate::rbac_cache::{self, Objects};
use crate::registry;
use crate::registry::Resource;
use crate::selectors::{Filter, LabelSelector};
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::storage;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

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
    // kube names the group-qualified resource (`GroupResource.String()`).
    let qualified = if a.group.is_empty() {
        res.clone()
    } else {
        format!("{res}.{}", a.group)
    };
    let what = if a.name.is_empty() {
        qualified
    } else {
        format!("{qualified} \"{}\"", a.name)
    };
    Err(ApiError::forbidden(format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
        id.name, a.verb, a.group
    )))
}

/// Authorizes `verb` on a non-resource URL (`/metrics`): RBAC rules with
/// `nonResourceURLs`, which only cluster roles carry. Nodes get none.
pub async fn authorize_url(state: &State, id: &Identity, verb: &str, path: &str) -> ApiResult<()> {
    if id.in_group("system:masters") {
        return Ok(());
    }
    let node = id.name.starts_with("system:node:") && id.in_group("system:nodes");
    let allowed = !node
        && rbac_rules(state, id, "").await?.iter().any(|r| {
            has(r.get("verbs"), verb)
                && strs(r.get("nonResourceURLs"))
                    .iter()
                    .any(|u| url_covers(u, path))
        });
    if allowed {
        return Ok(());
    }
    Err(ApiError::forbidden(format!(
        "forbidden: User \"{}\" cannot {verb} path \"{path}\"",
        id.name
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

/// An aggregationRule's clusterRoleSelector (matchLabels and
/// matchExpressions). Admission refuses malformed selectors; one already
/// stored aggregates nothing rather than everything.
fn aggregation_selector(sel: &Value) -> Option<LabelSelector> {
    LabelSelector::from_object(sel).ok()
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
        let Some(ls) = aggregation_selector(sel) else {
            continue;
        };
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

/// A ClusterRole's rules, including those aggregated into it by label
/// (none when it does not exist).
async fn cluster_role_rules(state: &State, name: &str) -> ApiResult<Vec<Value>> {
    Ok(find_cluster_role_rules(state, name)
        .await?
        .unwrap_or_default())
}

/// [`cluster_role_rules`], `None` when the ClusterRole does not exist.
async fn find_cluster_role_rules(state: &State, name: &str) -> ApiResult<Option<Vec<Value>>> {
    let r = registry::find(RBAC_GROUP, "v1", "clusterroles").expect("registered");
    let role = match storage::get(&state.store, r, "", name).await {
        Ok(v) => v,
        Err(e) if e.code == 404 => return Ok(None),
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
            let Some(ls) = aggregation_selector(sel) else {
                continue;
            };
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
    Ok(Some(rules))
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

// ---- RBAC escalation prevention (kube's pkg/registry/rbac/validation) ----

/// Non-resource URLs every authenticated user may get (what the rules
/// review reports; kube grants them through system:discovery).
pub const DISCOVERY_URLS: &[&str] = &[
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/openapi",
    "/openapi/*",
];

fn strs(v: Option<&Value>) -> Vec<&str> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn has_str(set: &[&str], x: &str) -> bool {
    set.contains(&x)
}

fn has_all(set: &[&str], want: &[&str]) -> bool {
    want.iter().all(|w| set.contains(w))
}

/// kube's `BreakdownRule`: one rule per (group, resource, verb, name) and
/// per (URL, verb).
fn breakdown(rule: &Value) -> Vec<Value> {
    let (groups, resources, verbs, names, urls) = (
        strs(rule.get("apiGroups")),
        strs(rule.get("resources")),
        strs(rule.get("verbs")),
        strs(rule.get("resourceNames")),
        strs(rule.get("nonResourceURLs")),
    );
    let mut out = Vec::new();
    for g in &groups {
        for r in &resources {
            for v in &verbs {
                if names.is_empty() {
                    out.push(json!({"apiGroups": [g], "resources": [r], "verbs": [v]}));
                } else {
                    for n in &names {
                        out.push(json!({"apiGroups": [g], "resources": [r], "verbs": [v], "resourceNames": [n]}));
                    }
                }
            }
        }
    }
    for u in &urls {
        for v in &verbs {
            out.push(json!({"nonResourceURLs": [u], "verbs": [v]}));
        }
    }
    out
}

fn resource_covers_all(owner: &[&str], want: &[&str]) -> bool {
    if has_str(owner, "*") || has_all(owner, want) {
        return true;
    }
    want.iter().all(|path| {
        has_str(owner, path)
            || path
                .split_once('/')
                .is_some_and(|(_, sub)| has_str(owner, &format!("*/{sub}")))
    })
}

fn url_covers(owner: &str, sub: &str) -> bool {
    owner == sub
        || owner
            .strip_suffix('*')
            .is_some_and(|prefix| sub.starts_with(prefix.trim_end_matches('*')))
}

/// kube's `ruleCovers`: whether one of the requester's rules covers one
/// broken-down rule.
fn rule_covers(owner: &Value, sub: &Value) -> bool {
    let (ov, sv) = (strs(owner.get("verbs")), strs(sub.get("verbs")));
    let (og, sg) = (strs(owner.get("apiGroups")), strs(sub.get("apiGroups")));
    let (on, sn) = (
        strs(owner.get("resourceNames")),
        strs(sub.get("resourceNames")),
    );
    let ou = strs(owner.get("nonResourceURLs"));
    let names_ok = if sn.is_empty() {
        on.is_empty()
    } else {
        on.is_empty() || has_all(&on, &sn)
    };
    (has_str(&ov, "*") || has_all(&ov, &sv))
        && (has_str(&og, "*") || has_all(&og, &sg))
        && resource_covers_all(&strs(owner.get("resources")), &strs(sub.get("resources")))
        && names_ok
        && strs(sub.get("nonResourceURLs"))
            .iter()
            .all(|u| ou.iter().any(|o| url_covers(o, u)))
}

/// kube's `Covers`: the broken-down rules of `rules` that no rule of
/// `owner` covers (empty: the owner holds all of them).
pub fn uncovered(owner: &[Value], rules: &[Value]) -> Vec<Value> {
    rules
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect()
}

/// kube's `CompactString` of rules, merged per (group, resource, name,
/// URL) as `CompactRules` does, sorted and deduplicated.
fn describe(rules: &[Value]) -> String {
    use std::collections::BTreeMap;
    let q = |v: &[&str]| {
        let inner: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("[{}]", inner.join(" "))
    };
    // (apiGroups, resources, nonResourceURLs, resourceNames) -> verbs
    type Key<'a> = (Vec<&'a str>, Vec<&'a str>, Vec<&'a str>, Vec<&'a str>);
    let mut merged: BTreeMap<Key<'_>, Vec<&str>> = BTreeMap::new();
    for r in rules {
        let verbs = merged
            .entry((
                strs(r.get("apiGroups")),
                strs(r.get("resources")),
                strs(r.get("nonResourceURLs")),
                strs(r.get("resourceNames")),
            ))
            .or_default();
        for v in strs(r.get("verbs")) {
            if !verbs.contains(&v) {
                verbs.push(v);
            }
        }
    }
    merged
        .iter()
        .map(|((g, r, u, n), verbs)| {
            let mut parts = Vec::new();
            if !g.is_empty() {
                parts.push(format!("APIGroups:{}", q(g)));
            }
            if !r.is_empty() {
                parts.push(format!("Resources:{}", q(r)));
            }
            if !u.is_empty() {
                parts.push(format!("NonResourceURLs:{}", q(u)));
            }
            if !n.is_empty() {
                parts.push(format!("ResourceNames:{}", q(n)));
            }
            parts.push(format!("Verbs:{}", q(verbs)));
            format!("{{{}}}", parts.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// What an RBAC object grants, the part of it escalation checks look at:
/// a write that leaves this unchanged (finalizers, annotations, owner
/// references) grants nothing new.
pub fn grants(v: &Value) -> Value {
    json!({
        "rules": v.get("rules"),
        "aggregationRule": v.get("aggregationRule"),
        "roleRef": v.get("roleRef"),
        "subjects": v.get("subjects"),
        "labels": v.pointer("/metadata/labels"),
    })
}

/// Whether writes of this resource go through [`check_escalation`].
pub fn guards_escalation(r: &Resource) -> bool {
    r.group == RBAC_GROUP
}

fn has_aggregation(v: &Value) -> bool {
    v.get("aggregationRule").is_some_and(|a| !a.is_null())
}

/// The requester's rules, plus the discovery URLs everyone may get.
async fn owner_rules(state: &State, id: &Identity, namespace: &str) -> ApiResult<Vec<Value>> {
    let mut rules = rbac_rules(state, id, namespace).await?;
    rules.push(json!({"nonResourceURLs": DISCOVERY_URLS, "verbs": ["get"]}));
    Ok(rules)
}

fn escalation_error(r: &Resource, name: &str, id: &Identity, msg: &str) -> ApiError {
    let groups: Vec<String> = id.groups.iter().map(|g| format!("{g:?}")).collect();
    ApiError::forbidden(format!(
        "{}.{} \"{name}\" is forbidden: user \"{}\" (groups=[{}]) {msg}",
        r.plural,
        r.group,
        id.name,
        groups.join(" ")
    ))
}

/// Kubernetes' RBAC escalation rules for a create (`old` is `None`) or an
/// update of a Role, ClusterRole, RoleBinding or ClusterRoleBinding, on
/// the object as it will be stored (after patches, apply and defaults):
/// a role only with permissions the requester holds in that scope, or with
/// the `escalate` verb on it; an aggregationRule (it can gather anything)
/// only with full authority; a binding only to a role whose permissions
/// the requester holds, or with the `bind` verb on that role.
pub async fn check_escalation(
    state: &State,
    id: &Identity,
    r: &Resource,
    ns: &str,
    url_name: &str,
    old: Option<&Value>,
    new: &Value,
) -> ApiResult<()> {
    if !guards_escalation(r) || id.in_group("system:masters") {
        return Ok(());
    }
    if old.is_some_and(|o| grants(o) == grants(new)) {
        return Ok(());
    }
    let name = storage::meta_str(new, "name").unwrap_or(url_name);
    let owner = owner_rules(state, id, ns).await?;
    let allows = |verb: &str, resource: &str, name: &str| {
        let a = Attributes {
            verb,
            group: RBAC_GROUP,
            resource,
            subresource: "",
            namespace: ns,
            name,
            field_selector: "",
        };
        owner.iter().any(|rule| rule_allows(rule, &a))
    };
    let not_held = |missing: &[Value]| {
        escalation_error(
            r,
            name,
            id,
            &format!(
                "is attempting to grant RBAC permissions not currently held:\n{}",
                describe(missing)
            ),
        )
    };
    match r.kind {
        "Role" | "ClusterRole" => {
            // kube's RoleEscalationAuthorized: the request's own name (none
            // on create).
            if allows("escalate", r.plural, url_name) {
                return Ok(());
            }
            let rules: Vec<Value> = rules_of(new).cloned().collect();
            let missing = uncovered(&owner, &rules);
            if !missing.is_empty() {
                return Err(not_held(&missing));
            }
            if r.kind == "ClusterRole" && (has_aggregation(new) || old.is_some_and(has_aggregation))
            {
                let full = [
                    json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}),
                    json!({"nonResourceURLs": ["*"], "verbs": ["*"]}),
                ];
                if !uncovered(&owner, &full).is_empty() {
                    return Err(escalation_error(
                        r,
                        name,
                        id,
                        "must have cluster-admin privileges to use the aggregationRule",
                    ));
                }
            }
            Ok(())
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let kind = new.pointer("/roleRef/kind").and_then(Value::as_str);
            let role = new
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let resource = if kind == Some("Role") {
                "roles"
            } else {
                "clusterroles"
            };
            if allows("bind", resource, role) {
                return Ok(());
            }
            let rules = match kind {
                Some("Role") if r.kind == "RoleBinding" => {
                    let roles = registry::find(RBAC_GROUP, "v1", "roles").expect("registered");
                    match storage::get(&state.store, roles, ns, role).await {
                        Ok(v) => Some(rules_of(&v).cloned().collect()),
                        Err(e) if e.code == 404 => None,
                        Err(e) => return Err(e),
                    }
                }
                Some("ClusterRole") => find_cluster_role_rules(state, role).await?,
                _ => {
                    return Err(escalation_error(
                        r,
                        name,
                        id,
                        "may only bind a Role (in its namespace) or a ClusterRole",
                    ));
                }
            };
            let Some(rules) = rules else {
                // kube: the referenced role must exist to be checked.
                return Err(ApiError::not_found(storage::target(
                    registry::find(RBAC_GROUP, "v1", resource).expect("registered"),
                    role,
                )));
            };
            let missing = uncovered(&owner, &rules);
            if missing.is_empty() {
                Ok(())
            } else {
                Err(not_held(&missing))
            }
        }
        _ => Ok(()),
    }
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

    /// kube's policy comparator table (pkg/registry/rbac/validation):
    /// what the owner holds, what the servant role asks for, and what is
    /// left uncovered.
    #[test]
    fn covers_like_kubes_policy_comparator() {
        let rule = |g: &[&str], r: &[&str], v: &[&str]| json!({"apiGroups": g, "resources": r, "verbs": v});
        let named = |g: &[&str], r: &[&str], v: &[&str], n: &[&str]| json!({"apiGroups": g, "resources": r, "verbs": v, "resourceNames": n});
        let url = |u: &[&str], v: &[&str]| json!({"nonResourceURLs": u, "verbs": v});
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, Vec<Value>, Vec<Value>, &str)> = vec![
            (
                "exact match",
                vec![rule(&["g"], &["builds"], &["get"])],
                vec![rule(&["g"], &["builds"], &["get"])],
                "",
            ),
            (
                "sub-set of verbs",
                vec![rule(&["g"], &["builds"], &["get", "list"])],
                vec![rule(&["g"], &["builds"], &["get"])],
                "",
            ),
            (
                "over-set of verbs",
                vec![rule(&["g"], &["builds"], &["get"])],
                vec![rule(&["g"], &["builds"], &["get", "list"])],
                r#"{APIGroups:["g"], Resources:["builds"], Verbs:["list"]}"#,
            ),
            (
                "covered by two owner rules",
                vec![
                    rule(&["g"], &["builds"], &["get"]),
                    rule(&["g"], &["builds"], &["list"]),
                ],
                vec![rule(&["g"], &["builds"], &["get", "list"])],
                "",
            ),
            (
                "star verb",
                vec![rule(&["g"], &["builds"], &["*"])],
                vec![rule(&["g"], &["builds"], &["get", "escalate"])],
                "",
            ),
            (
                "star group and resource",
                vec![rule(&["*"], &["*"], &["*"])],
                vec![rule(&["", "apps"], &["pods", "deployments/scale"], &["*"])],
                "",
            ),
            (
                "the star verb is only held as a star",
                vec![rule(&["g"], &["builds"], &["get", "list", "create"])],
                vec![rule(&["g"], &["builds"], &["*"])],
                r#"{APIGroups:["g"], Resources:["builds"], Verbs:["*"]}"#,
            ),
            (
                "star resource is not held by listing some",
                vec![rule(&["*"], &["pods", "secrets"], &["*"])],
                vec![rule(&[""], &["*"], &["get"])],
                r#"{APIGroups:[""], Resources:["*"], Verbs:["get"]}"#,
            ),
            (
                "wrong group",
                vec![rule(&["apps"], &["deployments"], &["get"])],
                vec![rule(&["extensions"], &["deployments"], &["get"])],
                r#"{APIGroups:["extensions"], Resources:["deployments"], Verbs:["get"]}"#,
            ),
            (
                "subresource through */sub",
                vec![rule(&["apps"], &["*/scale"], &["update"])],
                vec![rule(&["apps"], &["deployments/scale"], &["update"])],
                "",
            ),
            (
                "*/sub is not another subresource",
                vec![rule(&["apps"], &["*/scale"], &["update"])],
                vec![rule(&["apps"], &["deployments/status"], &["update"])],
                r#"{APIGroups:["apps"], Resources:["deployments/status"], Verbs:["update"]}"#,
            ),
            (
                "*/sub is not the resource",
                vec![rule(&["apps"], &["*/scale"], &["update"])],
                vec![rule(&["apps"], &["deployments"], &["update"])],
                r#"{APIGroups:["apps"], Resources:["deployments"], Verbs:["update"]}"#,
            ),
            (
                "resource names held",
                vec![named(&["g"], &["builds"], &["get"], &["foo", "bar"])],
                vec![named(&["g"], &["builds"], &["get"], &["foo"])],
                "",
            ),
            (
                "resource names not held",
                vec![named(&["g"], &["builds"], &["get"], &["foo"])],
                vec![named(&["g"], &["builds"], &["get"], &["foo", "bar"])],
                r#"{APIGroups:["g"], Resources:["builds"], ResourceNames:["bar"], Verbs:["get"]}"#,
            ),
            (
                "names held do not cover all names",
                vec![named(&["g"], &["builds"], &["get"], &["foo"])],
                vec![rule(&["g"], &["builds"], &["get"])],
                r#"{APIGroups:["g"], Resources:["builds"], Verbs:["get"]}"#,
            ),
            (
                "unrestricted covers names",
                vec![rule(&["g"], &["builds"], &["get"])],
                vec![named(&["g"], &["builds"], &["get"], &["foo"])],
                "",
            ),
            (
                "non-resource exact",
                vec![url(&["/foo"], &["get"])],
                vec![url(&["/foo"], &["get"])],
                "",
            ),
            (
                "non-resource prefix star",
                vec![url(&["/foo/*"], &["get"])],
                vec![url(&["/foo/bar", "/foo/"], &["get"])],
                "",
            ),
            (
                "non-resource prefix is not the parent",
                vec![url(&["/foo/*"], &["get"])],
                vec![url(&["/foo"], &["get"])],
                r#"{NonResourceURLs:["/foo"], Verbs:["get"]}"#,
            ),
            (
                "non-resource over-set of verbs",
                vec![url(&["*"], &["get"])],
                vec![url(&["/healthz"], &["get", "post"])],
                r#"{NonResourceURLs:["/healthz"], Verbs:["post"]}"#,
            ),
            (
                "resource rules do not cover URLs",
                vec![rule(&["*"], &["*"], &["*"])],
                vec![url(&["/metrics"], &["get"])],
                r#"{NonResourceURLs:["/metrics"], Verbs:["get"]}"#,
            ),
            (
                "nothing held",
                vec![],
                vec![rule(&["*"], &["*"], &["*"])],
                r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#,
            ),
            ("nothing asked", vec![], vec![], ""),
        ];
        for (name, owner, servant, want) in table {
            assert_eq!(describe(&uncovered(&owner, &servant)), want, "{name}");
        }
    }

    #[test]
    fn what_an_rbac_object_grants() {
        let role = json!({"metadata": {"name": "r", "labels": {"a": "b"}, "annotations": {"x": "y"}, "finalizers": ["f"]},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]});
        let mut gc_only = role.clone();
        gc_only["metadata"]["finalizers"] = json!([]);
        gc_only["metadata"]["annotations"] = json!({});
        gc_only["metadata"]["ownerReferences"] = json!([{"name": "o"}]);
        assert_eq!(grants(&role), grants(&gc_only));
        // A label can aggregate the role into another: it grants.
        let mut labelled = role.clone();
        labelled["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] =
            json!("true");
        assert_ne!(grants(&role), grants(&labelled));
        let binding = json!({"roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [{"kind": "User", "name": "a"}]});
        let mut more = binding.clone();
        more["subjects"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kind": "User", "name": "b"}));
        assert_ne!(grants(&binding), grants(&more));
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
