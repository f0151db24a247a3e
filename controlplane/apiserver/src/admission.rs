//! Admission: a typed round trip through the `k8s-openapi` type of the kind,
//! which rejects ill-typed fields (400) and drops unknown ones, as kube's
//! decoder does; then the kind's defaults and validation with Kubernetes'
//! rules (its `registry::Resource` entry in `crate::kinds`, with the shared
//! pieces here: names, labels, pod specs); and kube's NodeRestriction.

use serde_json::{Map, Value, json};

use crate::registry::{Causes, Resource};
use crate::status::{ApiError, ApiResult};
use crate::storage::target;

pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

pub(crate) fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// A label value or the name part of a qualified name.
pub(crate) fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

pub fn is_qualified_name(s: &str) -> bool {
    let (prefix, name) = match s.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    prefix.is_none_or(is_dns1123_subdomain) && !name.is_empty() && is_label_value(name)
}

/// kube's default name rule (most kinds).
pub(crate) const DNS1123_SUBDOMAIN: (fn(&str) -> bool, &str) = (
    is_dns1123_subdomain,
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
);

fn validate_meta(r: &Resource, obj: &Value, causes: &mut Causes) {
    let meta = obj.get("metadata").and_then(Value::as_object);
    let name = meta
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let (ok, why) = r.name_rule;
    if name.is_empty() {
        causes.push((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        ));
    } else if !ok(name) {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: {why}"),
        ));
    }
    if let Some(labels) = meta
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
    {
        for (k, v) in labels {
            if !is_qualified_name(k) {
                causes.push(("metadata.labels".into(), format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
            if !v.as_str().is_some_and(is_label_value) {
                causes.push(("metadata.labels".into(), format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
            }
        }
    }
    if let Some(ann) = meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        let total: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
            .sum();
        if total > 256 * 1024 {
            causes.push((
                "metadata.annotations".into(),
                "Too long: must have at most 262144 bytes".into(),
            ));
        }
        for k in ann.keys().filter(|k| !is_qualified_name(k)) {
            causes.push(("metadata.annotations".into(), format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.'")));
        }
    }
}

pub(crate) fn obj_mut<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !v.get(key).is_some_and(Value::is_object) {
        v[key] = json!({});
    }
    v[key].as_object_mut().expect("just made an object")
}

pub(crate) fn default(m: &mut Map<String, Value>, k: &str, v: Value) {
    m.entry(k.to_string()).or_insert(v);
}

/// The port objects of a container's or a service's `ports`.
pub(crate) fn ports_mut(
    m: &mut Map<String, Value>,
) -> impl Iterator<Item = &mut Map<String, Value>> {
    m.get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object_mut)
}

pub(crate) fn default_pod_spec(spec: &mut Value) {
    let Some(s) = spec.as_object_mut() else {
        return;
    };
    default(s, "restartPolicy", json!("Always"));
    default(s, "dnsPolicy", json!("ClusterFirst"));
    default(s, "schedulerName", json!("default-scheduler"));
    default(s, "terminationGracePeriodSeconds", json!(30));
    default(s, "securityContext", json!({}));
    for list in ["containers", "initContainers"] {
        for c in s
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            let Some(c) = c.as_object_mut() else { continue };
            let image = c.get("image").and_then(Value::as_str).unwrap_or("");
            let tag_latest = !image.contains('@')
                && image
                    .rsplit('/')
                    .next()
                    .is_none_or(|last| !last.contains(':') || last.ends_with(":latest"));
            default(
                c,
                "imagePullPolicy",
                json!(if tag_latest { "Always" } else { "IfNotPresent" }),
            );
            default(c, "terminationMessagePath", json!("/dev/termination-log"));
            default(c, "terminationMessagePolicy", json!("File"));
            default(c, "resources", json!({}));
            for p in ports_mut(c) {
                default(p, "protocol", json!("TCP"));
            }
        }
    }
}

pub(crate) fn validate_pod_spec(spec: Option<&Value>, path: &str, causes: &mut Causes) {
    for list in ["containers", "initContainers"] {
        let cs = spec.and_then(|s| s.get(list)).and_then(Value::as_array);
        for (i, c) in cs.into_iter().flatten().enumerate() {
            validate_resources(c, &format!("{path}.{list}[{i}]"), causes);
        }
    }
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    match containers {
        None => causes.push((format!("{path}.containers"), "Required value".into())),
        Some(cs) if cs.is_empty() => {
            causes.push((format!("{path}.containers"), "Required value".into()))
        }
        Some(cs) => {
            let mut seen = Vec::new();
            for (i, c) in cs.iter().enumerate() {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                if name.is_empty() {
                    causes.push((
                        format!("{path}.containers[{i}].name"),
                        "Required value".into(),
                    ));
                } else if !is_dns1123_label(name) {
                    causes.push((format!("{path}.containers[{i}].name"), format!("Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'")));
                } else if seen.contains(&name) {
                    causes.push((
                        format!("{path}.containers[{i}].name"),
                        format!("Duplicate value: {name:?}"),
                    ));
                }
                seen.push(name);
                if c.get("image")
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    causes.push((
                        format!("{path}.containers[{i}].image"),
                        "Required value".into(),
                    ));
                }
            }
        }
    }
}

/// A container's `resources`: every quantity one kube accepts, none
/// negative, and no request above its limit (kube's
/// `ValidateResourceRequirements`). A quantity the node could not read
/// would otherwise be no limit at all.
fn validate_resources(c: &Value, path: &str, causes: &mut Causes) {
    let list = |kind: &str| -> Vec<(String, String)> {
        c.pointer(&format!("/resources/{kind}"))
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(name, q)| {
                let text = match q {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (name.clone(), text)
            })
            .collect()
    };
    let (requests, limits) = (list("requests"), list("limits"));
    for (kind, quantities) in [("requests", &requests), ("limits", &limits)] {
        for (name, q) in quantities {
            let field = format!("{path}.resources.{kind}[{name}]");
            match skiff_quantity::value(q) {
                None => causes.push((
                    field,
                    format!("Invalid value: {q:?}: quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"),
                )),
                Some(v) if v < 0 => causes.push((
                    field,
                    format!("Invalid value: {q:?}: must be greater than or equal to 0"),
                )),
                Some(_) => {}
            }
        }
    }
    // Compared in thousandths where that fits, else in whole units.
    let amount = |q: &str| {
        skiff_quantity::milli_value(q)
            .map(i128::from)
            .or_else(|| skiff_quantity::value(q).map(|v| i128::from(v) * 1000))
    };
    for (name, request) in &requests {
        let Some((_, limit)) = limits.iter().find(|(n, _)| n == name) else {
            continue;
        };
        if let (Some(r), Some(l)) = (amount(request), amount(limit))
            && r > l
        {
            causes.push((
                format!("{path}.resources.requests[{name}]"),
                format!("Invalid value: {request:?}: must be less than or equal to {name} limit of {limit}"),
            ));
        }
    }
}

/// Job pods must not restart forever.
pub(crate) fn validate_job_template(spec: Option<&Value>, path: &str, causes: &mut Causes) {
    validate_pod_spec(spec, path, causes);
    let policy = spec
        .and_then(|s| s.get("restartPolicy"))
        .and_then(Value::as_str);
    if !matches!(policy, Some("OnFailure" | "Never")) {
        causes.push((
            format!("{path}.restartPolicy"),
            format!(
                "Unsupported value: {:?}: supported values: \"OnFailure\", \"Never\"",
                policy.unwrap_or("Always")
            ),
        ));
    }
}

/// The hash-derived ClusterIP for a service (10.96.0.0/16). Collisions are
/// possible; a real allocator is future work.
pub fn cluster_ip(ns: &str, name: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, format!("{ns}/{name}").as_bytes());
    let b = d.as_ref();
    format!("10.96.{}.{}", b[0], b[1].clamp(1, 254))
}

/// Decodes through the kind's typed struct, normalizing the JSON (a custom
/// resource: pruned and defaulted by its schema); kinds without one pass
/// as they are.
pub fn round_trip(r: &Resource, obj: &Value) -> ApiResult<Value> {
    if let Some(c) = r.custom {
        return c.normalize(obj);
    }
    match r.typed {
        Some(t) => (t.round_trip)(r, obj),
        None => Ok(obj.clone()),
    }
}

/// [`round_trip`] through `T` (see `registry::Typed`).
pub(crate) fn round_trip_as<T>(r: &Resource, obj: &Value) -> ApiResult<Value>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let t: T = serde_json::from_value(obj.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: {e}",
            r.kind, r.version, r.kind
        ))
    })?;
    serde_json::to_value(&t).map_err(ApiError::internal)
}

/// Fields (JSON pointers) that may not change after creation.
pub(crate) fn immutable(fields: &[&str], old: &Value, new: &Value, causes: &mut Causes) {
    for f in fields {
        if old.pointer(f) != new.pointer(f) {
            causes.push((
                f.trim_start_matches('/').replace('/', "."),
                "Invalid value: field is immutable".into(),
            ));
        }
    }
}

/// Checks apiVersion/kind of a body against the endpoint, filling them
/// when absent.
pub fn check_type(r: &Resource, obj: &mut Value) -> ApiResult<()> {
    let Some(o) = obj.as_object_mut() else {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    };
    let av = r.api_version();
    match o.get("apiVersion").and_then(Value::as_str) {
        None => {
            o.insert("apiVersion".into(), json!(av));
        }
        Some(v) if v == av => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({av})"
            )));
        }
    }
    match o.get("kind").and_then(Value::as_str) {
        None => {
            o.insert("kind".into(), json!(r.kind));
        }
        Some(k) if k == r.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({})",
                r.kind
            )));
        }
    }
    if !o.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    if o.get("metadata").is_none() {
        o.insert("metadata".into(), json!({}));
    }
    Ok(())
}

/// Fields of `input` that the typed round trip dropped: unknown to the kind.
fn unknown_fields(input: &Value, typed: &Value, path: &str, out: &mut Vec<String>) {
    match (input, typed) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a.iter().filter(|(_, v)| !v.is_null()) {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(t) => unknown_fields(v, t, &p, out),
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                unknown_fields(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// A label's prefix (the part before '/'), "" when it has none.
fn label_namespace(key: &str) -> &str {
    key.split_once('/').map_or("", |(ns, _)| ns)
}

fn in_label_domain(ns: &str, domain: &str) -> bool {
    ns == domain
        || ns
            .strip_suffix(domain)
            .is_some_and(|rest| rest.ends_with('.'))
}

/// Whether a node may set this label on its own Node (kube's
/// NodeRestriction with `kubeletapis.IsKubeletLabel`): never under
/// `node-restriction.kubernetes.io/`, and under `kubernetes.io`/`k8s.io`
/// only the labels a kubelet sets itself (`node-role.kubernetes.io/` is
/// not among them).
pub fn node_may_set_label(key: &str) -> bool {
    const KUBELET_LABELS: &[&str] = &[
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
        "topology.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
    ];
    let ns = label_namespace(key);
    if in_label_domain(ns, "node-restriction.kubernetes.io") {
        return false;
    }
    let kubernetes = in_label_domain(ns, "kubernetes.io") || in_label_domain(ns, "k8s.io");
    !kubernetes
        || KUBELET_LABELS.contains(&key)
        || in_label_domain(ns, "kubelet.kubernetes.io")
        || in_label_domain(ns, "node.kubernetes.io")
}

/// Keys whose value differs between two label maps (kube's
/// getModifiedLabels), sorted.
fn modified_labels(new: &Value, old: Option<&Value>) -> Vec<String> {
    let labels = |v: Option<&Value>| {
        v.and_then(|v| v.pointer("/metadata/labels"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (a, b) = (labels(Some(new)), labels(old));
    let mut keys: Vec<String> = a
        .iter()
        .filter(|(k, v)| b.get(*k) != Some(v))
        .chain(b.iter().filter(|(k, _)| !a.contains_key(*k)))
        .map(|(k, _)| k.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn config_source(node: &Value) -> Option<&Value> {
    node.pointer("/spec/configSource").filter(|c| !c.is_null())
}

/// A Node's taints; no list and an empty one are the same (kube's
/// semantic equality).
fn taints(node: &Value) -> Option<&Value> {
    node.pointer("/spec/taints")
        .filter(|t| !t.is_null() && t.as_array().is_none_or(|a| !a.is_empty()))
}

/// kube's NodeRestriction admission (`plugin/pkg/admission/noderestriction`)
/// for a node identity, on every write path (create, update, patch, apply,
/// status, delete): the node authorizer has already limited which objects a
/// node reaches; this checks them as they are and as they will be stored.
/// `old` is the stored object (`None` on create), `new` the result (`None`
/// on delete). Other identities pass.
pub fn node_restriction(
    id: &crate::authn::Identity,
    r: &Resource,
    ns: &str,
    name: &str,
    old: Option<&Value>,
    new: Option<&Value>,
) -> ApiResult<()> {
    let Some(node) = id.node_name() else {
        return Ok(());
    };
    let no = |msg: String| Err(ApiError::forbidden(msg));
    match (r.group, r.kind) {
        ("", "Node") => {
            if name != node {
                return no(format!(
                    "node \"{node}\" is not allowed to modify node \"{name}\""
                ));
            }
            let Some(new) = new else { return Ok(()) };
            match old {
                None if config_source(new).is_some() => {
                    return no(format!(
                        "node \"{node}\" is not allowed to create pods with a non-nil configSource"
                    ));
                }
                Some(old)
                    if config_source(new).is_some() && config_source(new) != config_source(old) =>
                {
                    return no(format!(
                        "node \"{node}\" is not allowed to update configSource to a new non-nil configSource"
                    ));
                }
                Some(old) if taints(old) != taints(new) => {
                    return no(format!("node \"{node}\" is not allowed to modify taints"));
                }
                _ => {}
            }
            // Pod CIDRs come from the controller manager's IPAM: a node that
            // chose its own could take another node's pod addresses.
            let cidrs = |o: Option<&Value>| {
                o.map(|o| {
                    (
                        o.pointer("/spec/podCIDR").cloned(),
                        o.pointer("/spec/podCIDRs").cloned(),
                    )
                })
            };
            let (was, now) = (cidrs(old), cidrs(Some(new)));
            if now != was && now != Some((None, None)) {
                return no(format!(
                    "node \"{node}\" is not allowed to set its pod CIDRs"
                ));
            }
            let forbidden: Vec<String> = modified_labels(new, old)
                .into_iter()
                .filter(|k| !node_may_set_label(k))
                .collect();
            if !forbidden.is_empty() {
                return no(if old.is_none() {
                    format!(
                        "node \"{node}\" is not allowed to set the following labels: {}",
                        forbidden.join(", ")
                    )
                } else {
                    format!(
                        "node \"{node}\" is not allowed to modify labels: {}",
                        forbidden.join(", ")
                    )
                });
            }
            Ok(())
        }
        ("coordination.k8s.io", "Lease") => {
            if ns != "kube-node-lease" {
                return no(format!(
                    "node \"{node}\" can only access leases in the kube-node-lease namespace"
                ));
            }
            if name != node {
                return no(format!(
                    "node \"{node}\" can only access node lease with the same name as the requesting node"
                ));
            }
            Ok(())
        }
        ("", "Pod") => {
            let Some(old) = old else {
                // Mirror pods (static pods) are not served: a node creates
                // no pods at all.
                return no(format!("node \"{node}\" is not allowed to create pods"));
            };
            let bound =
                |p: &Value| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node);
            if !bound(old) || new.is_some_and(|n| !bound(n)) {
                return no(format!(
                    "node \"{node}\" can only modify pods bound to it; pod \"{name}\" is not"
                ));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Admits a new or updated object: type check, defaults, validation.
/// `old` is the stored object for updates.
pub fn admit(
    r: &Resource,
    ns: &str,
    mut obj: Value,
    old: Option<&Value>,
    strict: bool,
) -> ApiResult<Value> {
    check_type(r, &mut obj)?;
    let typed = round_trip(r, &obj)?;
    if strict {
        let mut unknown = Vec::new();
        unknown_fields(&obj, &typed, "", &mut unknown);
        if !unknown.is_empty() {
            let list: Vec<String> = unknown
                .iter()
                .map(|f| format!("unknown field \"{f}\""))
                .collect();
            return Err(ApiError::bad_request(format!(
                "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                r.kind,
                r.version,
                r.kind,
                list.join(", ")
            )));
        }
    }
    let mut obj = typed;
    if let Some(old) = old {
        (r.prepare_update)(old, &mut obj);
    }
    if old.is_none() {
        // A new object's uid is the server's, never the client's; chosen
        // here so defaults can refer to it (a Job's selector does).
        obj_mut(&mut obj, "metadata").insert("uid".into(), json!(crate::storage::new_uid()));
    }
    (r.defaults)(&mut obj, ns);
    let mut causes = Causes::new();
    validate_meta(r, &obj, &mut causes);
    (r.validate)(&obj, &mut causes);
    if let Some(c) = r.custom {
        c.validate(&obj, old, &mut causes);
    }
    if let Some(old) = old {
        (r.validate_update)(old, &obj, &mut causes);
    }
    if !causes.is_empty() {
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        return Err(ApiError::invalid(target(r, name), &causes));
    }
    round_trip(r, &obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    /// Like kube's noderestriction admission tests: what a node identity
    /// may do to Nodes, Leases and Pods, on create, update and delete.
    #[test]
    fn node_restriction_like_kube() {
        use crate::authn::Identity;
        let id = |name: &str, groups: &[&str]| Identity {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            service_account: None,
        };
        let n1 = id("system:node:n1", &["system:nodes"]);
        let admin = id("admin", &["system:masters"]);
        // The node-like name alone is not a node: the group is needed.
        let impostor = id("system:node:n1", &[]);
        let nodes = find("", "v1", "nodes").unwrap();
        let leases = find("coordination.k8s.io", "v1", "leases").unwrap();
        let pods = find("", "v1", "pods").unwrap();
        let node = |name: &str, labels: Value, taints: Value| json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}});
        let base = node(
            "n1",
            json!({"kubernetes.io/hostname": "n1", "node-role.kubernetes.io/control-plane": ""}),
            json!(null),
        );
        let ok = |r| -> ApiResult<()> { r };
        let deny = |r: ApiResult<()>, what: &str| {
            let e = r.expect_err(what);
            assert_eq!(e.code, 403, "{what}: {}", e.message);
            e.message
        };

        // Labels on update: only what a kubelet may set; an unchanged
        // restricted label (set by an admin) may stay.
        for (label, allowed) in [
            ("team", true),
            ("example.com/x", true),
            ("kubernetes.io/hostname", true),
            ("kubernetes.io/arch", true),
            ("topology.kubernetes.io/zone", true),
            ("node.kubernetes.io/instance-type", true),
            ("kubelet.kubernetes.io/anything", true),
            ("foo.node.kubernetes.io/anything", true),
            ("node-role.kubernetes.io/worker", false),
            ("node-restriction.kubernetes.io/trusted", false),
            ("a.node-restriction.kubernetes.io/trusted", false),
            ("other.kubernetes.io/x", false),
            ("kubernetes.io/other", false),
            ("k8s.io/x", false),
            ("foo.k8s.io/x", false),
        ] {
            let mut new = base.clone();
            new["metadata"]["labels"][label] = json!("v");
            let r = node_restriction(&n1, nodes, "", "n1", Some(&base), Some(&new));
            if allowed {
                ok(r).unwrap_or_else(|e| panic!("{label}: {}", e.message));
            } else {
                let m = deny(r, label);
                assert!(
                    m.contains("is not allowed to modify labels") && m.contains(label),
                    "{m}"
                );
            }
            // The same label at registration.
            let r = node_restriction(
                &n1,
                nodes,
                "",
                "n1",
                None,
                Some(&node("n1", json!({label: "v"}), json!(null))),
            );
            assert_eq!(r.is_ok(), allowed, "create with {label}");
            // Anyone else may.
            ok(node_restriction(
                &admin,
                nodes,
                "",
                "n1",
                Some(&base),
                Some(&new),
            ))
            .unwrap();
            assert!(node_restriction(&impostor, nodes, "", "n1", Some(&base), Some(&new)).is_ok());
        }
        let mut relabelled = base.clone();
        relabelled["metadata"]["labels"]["zone"] = json!("a");
        ok(node_restriction(
            &n1,
            nodes,
            "",
            "n1",
            Some(&base),
            Some(&relabelled),
        ))
        .unwrap();
        let mut removed = base.clone();
        removed["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .remove("node-role.kubernetes.io/control-plane");
        deny(
            node_restriction(&n1, nodes, "", "n1", Some(&base), Some(&removed)),
            "remove role label",
        );

        // Taints: set at registration, never changed by the node after.
        let tainted = node(
            "n1",
            json!({}),
            json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]),
        );
        ok(node_restriction(&n1, nodes, "", "n1", None, Some(&tainted))).unwrap();
        let untainted = node("n1", json!({}), json!([]));
        let m = deny(
            node_restriction(&n1, nodes, "", "n1", Some(&tainted), Some(&untainted)),
            "remove taint",
        );
        assert!(m.contains("is not allowed to modify taints"), "{m}");
        deny(
            node_restriction(&n1, nodes, "", "n1", Some(&untainted), Some(&tainted)),
            "add taint",
        );
        ok(node_restriction(
            &n1,
            nodes,
            "",
            "n1",
            Some(&tainted),
            Some(&tainted.clone()),
        ))
        .unwrap();
        ok(node_restriction(
            &n1,
            nodes,
            "",
            "n1",
            Some(&node("n1", json!({}), json!(null))),
            Some(&untainted),
        ))
        .unwrap();
        let mut config = node("n1", json!({}), json!(null));
        config["spec"]["configSource"] = json!({"configMap": {"name": "x"}});
        deny(
            node_restriction(&n1, nodes, "", "n1", None, Some(&config)),
            "configSource",
        );

        // Other nodes: not created, changed or deleted.
        let other = node("n2", json!({}), json!(null));
        let m = deny(
            node_restriction(&n1, nodes, "", "n2", None, Some(&other)),
            "create n2",
        );
        assert!(m.contains("is not allowed to modify node \"n2\""), "{m}");
        deny(
            node_restriction(&n1, nodes, "", "n2", Some(&other), Some(&other)),
            "update n2",
        );
        deny(
            node_restriction(&n1, nodes, "", "n2", Some(&other), None),
            "delete n2",
        );

        // Leases: its own, in kube-node-lease.
        let lease = json!({"metadata": {"name": "n1"}});
        ok(node_restriction(
            &n1,
            leases,
            "kube-node-lease",
            "n1",
            None,
            Some(&lease),
        ))
        .unwrap();
        ok(node_restriction(
            &n1,
            leases,
            "kube-node-lease",
            "n1",
            Some(&lease),
            Some(&lease),
        ))
        .unwrap();
        deny(
            node_restriction(
                &n1,
                leases,
                "kube-node-lease",
                "n2",
                Some(&lease),
                Some(&lease),
            ),
            "other lease",
        );
        deny(
            node_restriction(&n1, leases, "default", "n1", None, Some(&lease)),
            "lease elsewhere",
        );

        // Pods: none created (mirror pods are not served); only pods bound
        // to it updated (status) or deleted.
        let pod = |node: &str| json!({"metadata": {"name": "p"}, "spec": {"nodeName": node}});
        deny(
            node_restriction(&n1, pods, "default", "p", None, Some(&pod("n1"))),
            "create pod",
        );
        ok(node_restriction(
            &n1,
            pods,
            "default",
            "p",
            Some(&pod("n1")),
            Some(&pod("n1")),
        ))
        .unwrap();
        ok(node_restriction(
            &n1,
            pods,
            "default",
            "p",
            Some(&pod("n1")),
            None,
        ))
        .unwrap();
        deny(
            node_restriction(
                &n1,
                pods,
                "default",
                "p",
                Some(&pod("n2")),
                Some(&pod("n2")),
            ),
            "other pod",
        );
        deny(
            node_restriction(&n1, pods, "default", "p", Some(&pod("n2")), None),
            "delete other pod",
        );
        deny(
            node_restriction(&n1, pods, "default", "p", Some(&json!({"spec": {}})), None),
            "unbound pod",
        );
    }

    #[test]
    fn names_and_labels() {
        assert!(is_dns1123_subdomain("a.b-c"));
        assert!(!is_dns1123_subdomain("A"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(is_qualified_name("app.kubernetes.io/name"));
        assert!(!is_qualified_name("bad key"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }

    #[test]
    fn pod_defaults_and_required_fields() {
        let pods = find("", "v1", "pods").unwrap();
        let ok = admit(pods, "default", json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}), None, false).unwrap();
        assert_eq!(ok["kind"], "Pod");
        assert_eq!(ok["spec"]["restartPolicy"], "Always");
        assert_eq!(ok["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(ok["status"]["phase"], "Pending");
        let e = admit(
            pods,
            "default",
            json!({"metadata": {"name": "Bad_Name"}, "spec": {"containers": []}}),
            None,
            false,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("metadata.name") && e.message.contains("spec.containers"),
            "{}",
            e.message
        );
    }

    #[test]
    fn wrong_types_and_kinds_are_400() {
        let cms = find("", "v1", "configmaps").unwrap();
        let e = admit(
            cms,
            "default",
            json!({"metadata": {"name": "c"}, "data": {"k": 1}}),
            None,
            false,
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
        let e = admit(
            cms,
            "default",
            json!({"kind": "Secret", "metadata": {"name": "c"}}),
            None,
            false,
        )
        .unwrap_err();
        assert_eq!(e.code, 400);
    }

    #[test]
    fn strict_validation_names_unknown_fields() {
        let cms = find("", "v1", "configmaps").unwrap();
        let body =
            json!({"metadata": {"name": "c", "bogus": 1}, "data": {"k": "v"}, "extra": true});
        let e = admit(cms, "default", body.clone(), None, true).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(
            e.message.contains("metadata.bogus") && e.message.contains("extra"),
            "{}",
            e.message
        );
        let lax = admit(cms, "default", body, None, false).unwrap();
        assert!(lax.get("extra").is_none());
    }

    #[test]
    fn pod_updates_may_change_only_images_and_a_few_fields() {
        let pods = find("", "v1", "pods").unwrap();
        let old = admit(pods, "default", json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "app:1"}]}}), None, false).unwrap();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("app:2");
        new["spec"]["activeDeadlineSeconds"] = json!(60);
        new["metadata"]["labels"] = json!({"x": "y"});
        assert!(admit(pods, "default", new.clone(), Some(&old), false).is_ok());
        new["spec"]["containers"][0]["env"] = json!([{"name": "E", "value": "1"}]);
        let e = admit(pods, "default", new, Some(&old), false).unwrap_err();
        assert_eq!(e.code, 422);
        assert!(
            e.message.contains("pod updates may not change fields"),
            "{}",
            e.message
        );
        // Binding: nodeName may be set once.
        let mut bound = old.clone();
        bound["spec"]["nodeName"] = json!("n1");
        let bound = admit(pods, "default", bound, Some(&old), false).unwrap();
        let mut moved = bound.clone();
        moved["spec"]["nodeName"] = json!("n2");
        assert_eq!(
            admit(pods, "default", moved, Some(&bound), false)
                .unwrap_err()
                .code,
            422
        );
    }

    #[test]
    fn jobs_select_their_pods_by_uid() {
        let jobs = find("batch", "v1", "jobs").unwrap();
        let body = json!({"metadata": {"name": "j", "uid": "client-chosen"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
        let j = admit(jobs, "default", body, None, false).unwrap();
        let uid = j["metadata"]["uid"].as_str().unwrap();
        assert_ne!(uid, "client-chosen");
        assert_eq!(
            j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
            uid
        );
        let labels = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(labels["controller-uid"], uid);
        assert_eq!(labels["job-name"], "j");
        assert_eq!(labels["batch.kubernetes.io/job-name"], "j");
    }

    #[test]
    fn jobs_need_a_terminating_restart_policy() {
        let jobs = find("batch", "v1", "jobs").unwrap();
        let mk = |policy: Option<&str>| {
            let mut spec = json!({"containers": [{"name": "c", "image": "i:1"}]});
            if let Some(p) = policy {
                spec["restartPolicy"] = json!(p);
            }
            json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": spec}}})
        };
        let ok = admit(jobs, "default", mk(Some("Never")), None, false).unwrap();
        assert_eq!(ok["spec"]["backoffLimit"], 6);
        let e = admit(jobs, "default", mk(None), None, false).unwrap_err();
        assert!(e.message.contains("restartPolicy"), "{}", e.message);
    }

    #[test]
    fn secret_string_data_is_folded() {
        let s = find("", "v1", "secrets").unwrap();
        let v = admit(
            s,
            "default",
            json!({"metadata": {"name": "s"}, "stringData": {"a": "hi"}}),
            None,
            false,
        )
        .unwrap();
        assert_eq!(v["data"]["a"], "aGk=");
        assert!(v.get("stringData").is_none());
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn deployment_selector_must_match_and_is_immutable() {
        let d = find("apps", "v1", "deployments").unwrap();
        let mk = |sel: &str| json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": sel}}, "template": {"metadata": {"labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        let ok = admit(d, "default", mk("a"), None, false).unwrap();
        assert_eq!(ok["spec"]["replicas"], 1);
        assert_eq!(
            admit(d, "default", mk("b"), None, false).unwrap_err().code,
            422
        );
        let mut changed = ok.clone();
        changed["spec"]["selector"]["matchLabels"]["x"] = json!("y");
        changed["spec"]["template"]["metadata"]["labels"]["x"] = json!("y");
        assert_eq!(
            admit(d, "default", changed, Some(&ok), false)
                .unwrap_err()
                .code,
            422
        );
    }
}
