//! The core group (`v1`, served under /api).

use k8s_openapi::api::core::v1 as api;
use serde_json::{Value, json};

use crate::admission::{
    cluster_ip, default, default_pod_spec, immutable, is_dns1035_label, is_dns1123_label, obj_mut,
    ports_mut, validate_pod_spec,
};
use crate::registry::{BASE, Causes, Resource, Typed};
use crate::tables::{age, created, label_selector, n, or_none, s};

pub const NAMESPACES: Resource = Resource {
    kind: "Namespace",
    plural: "namespaces",
    singular: "namespace",
    short_names: &["ns"],
    namespaced: false,
    subresources: &["status", "finalize"],
    typed: Some(Typed::of::<api::Namespace>()),
    name_rule: (
        is_dns1123_label,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
    ),
    defaults: |obj, _| {
        let name = s(obj.pointer("/metadata/name"));
        default(obj_mut(obj, "spec"), "finalizers", json!(["kubernetes"]));
        default(obj_mut(obj, "status"), "phase", json!("Active"));
        obj_mut(obj, "metadata");
        let labels = obj_mut(&mut obj["metadata"], "labels");
        labels.insert("kubernetes.io/metadata.name".into(), json!(name));
    },
    columns: &[
        ("Name", "string", 0),
        ("Status", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(s(o.pointer("/status/phase"))),
            json!(created(o)),
        ]
    },
    ..BASE
};

pub const NODES: Resource = Resource {
    kind: "Node",
    plural: "nodes",
    singular: "node",
    short_names: &["no"],
    namespaced: false,
    subresources: &["status"],
    typed: Some(Typed::of::<api::Node>()),
    columns: &[
        ("Name", "string", 0),
        ("Status", "string", 0),
        ("Roles", "string", 0),
        ("Age", "string", 0),
        ("Version", "string", 0),
        ("Internal-IP", "string", 1),
    ],
    cells: node_cells,
    validate: validate_node,
    validate_update: node_update,
    ..BASE
};

/// `spec.podCIDR(s)`: valid CIDRs, at most one per IP family, the first
/// equal to `podCIDR`.
fn validate_node(obj: &Value, causes: &mut Causes) {
    let cidr = obj.pointer("/spec/podCIDR").and_then(Value::as_str);
    let cidrs: Vec<&str> = obj
        .pointer("/spec/podCIDRs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|v| v.as_str().unwrap_or_default())
        .collect();
    if let Some(c) = cidr.filter(|c| !c.is_empty() && !is_cidr(c)) {
        causes.push((
            "spec.podCIDR".into(),
            format!("Invalid value: \"{c}\": must be a valid CIDR"),
        ));
    }
    for (i, c) in cidrs.iter().enumerate() {
        if !is_cidr(c) {
            causes.push((
                format!("spec.podCIDRs[{i}]"),
                format!("Invalid value: \"{c}\": must be a valid CIDR"),
            ));
        }
    }
    if cidrs.len() > 2 {
        causes.push((
            "spec.podCIDRs".into(),
            "Too many: may contain at most one value per IP family".into(),
        ));
    }
    if let (Some(c), Some(first)) = (cidr.filter(|c| !c.is_empty()), cidrs.first())
        && c != *first
    {
        causes.push((
            "spec.podCIDRs[0]".into(),
            format!("Invalid value: \"{first}\": must match spec.podCIDR \"{c}\""),
        ));
    }
}

/// A node's pod CIDRs are set once: pods hold addresses from them.
fn node_update(old: &Value, new: &Value, causes: &mut Causes) {
    for f in ["/spec/podCIDR", "/spec/podCIDRs"] {
        let was = old.pointer(f).filter(|v| {
            !(v.is_null() || v.as_str() == Some("") || v.as_array().is_some_and(|a| a.is_empty()))
        });
        if was.is_some() && was != new.pointer(f) {
            causes.push((
                "spec.podCIDRs".into(),
                "Forbidden: node updates may not change podCIDR except from \"\" to valid".into(),
            ));
            return;
        }
    }
}

/// `a.b.c.d/n` or an IPv6 CIDR.
fn is_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    let max = match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => 32,
        Ok(std::net::IpAddr::V6(_)) => 128,
        Err(_) => return false,
    };
    !len.starts_with('+') && len.parse::<u8>().is_ok_and(|n| n <= max)
}

fn node_cells(_: &Resource, o: &Value) -> Vec<Value> {
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| {
            if c["status"] == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    let ip = o
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
        .map(|a| s(a.get("address")))
        .unwrap_or_default();
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .collect()
        })
        .unwrap_or_default();
    vec![
        json!(s(o.pointer("/metadata/name"))),
        json!(ready),
        json!(or_none(roles.join(","))),
        json!(created(o)),
        json!(s(o.pointer("/status/nodeInfo/kubeletVersion"))),
        json!(or_none(ip)),
    ]
}

pub const PODS: Resource = Resource {
    kind: "Pod",
    plural: "pods",
    singular: "pod",
    short_names: &["po"],
    subresources: &["status", "binding", "log", "portforward", "proxy"],
    categories: &["all"],
    typed: Some(Typed::of::<api::Pod>()),
    defaults: |obj, _| {
        obj_mut(obj, "spec");
        default_pod_spec(&mut obj["spec"]);
        let st = obj_mut(obj, "status");
        default(st, "phase", json!("Pending"));
        default(st, "qosClass", json!("BestEffort"));
    },
    validate: |obj, causes| validate_pod_spec(obj.get("spec"), "spec", causes),
    validate_update: pod_update,
    columns: &[
        ("Name", "string", 0),
        ("Ready", "string", 0),
        ("Status", "string", 0),
        ("Restarts", "string", 0),
        ("Age", "string", 0),
        ("IP", "string", 1),
        ("Node", "string", 1),
        ("Nominated Node", "string", 1),
        ("Readiness Gates", "string", 1),
    ],
    cells: pod_cells,
    ..BASE
};

/// A pod's spec without the fields kube lets an update change (images,
/// deadlines, tolerations, grace period; nodeName is checked on its own).
fn pod_spec_mutable_part(pod: &Value) -> Value {
    let mut s = pod.get("spec").cloned().unwrap_or_else(|| json!({}));
    if let Some(m) = s.as_object_mut() {
        for f in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "nodeName",
        ] {
            m.remove(f);
        }
        for list in ["containers", "initContainers"] {
            for c in m
                .get_mut(list)
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                if let Some(c) = c.as_object_mut() {
                    c.remove("image");
                }
            }
        }
    }
    s
}

fn pod_update(old: &Value, new: &Value, causes: &mut Causes) {
    // Setting nodeName once (binding) is allowed.
    if old
        .pointer("/spec/nodeName")
        .is_some_and(|v| v.as_str() != Some(""))
    {
        immutable(&["/spec/nodeName"], old, new, causes);
    }
    if pod_spec_mutable_part(old) != pod_spec_mutable_part(new) {
        causes.push((
            "spec".into(),
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds`".into(),
        ));
    }
}

fn pod_cells(_: &Resource, o: &Value) -> Vec<Value> {
    let total = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let ready = statuses.iter().filter(|c| c["ready"] == true).count();
    let restarts: i64 = statuses.iter().map(|c| n(c.get("restartCount"))).sum();
    let status = pod_status(o, &statuses);
    vec![
        json!(s(o.pointer("/metadata/name"))),
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts.to_string()),
        json!(created(o)),
        json!(or_none(s(o.pointer("/status/podIP")))),
        json!(or_none(s(o.pointer("/spec/nodeName")))),
        json!("<none>"),
        json!("<none>"),
    ]
}

/// The STATUS column the way kubectl's pod printer derives it: the phase,
/// overridden by the pod's reason, then by the last container's waiting or
/// terminated reason (so a finished batch pod reads `Completed` or `Error`,
/// a crash-looping one `CrashLoopBackOff`), and `Terminating` while deleted.
fn pod_status(o: &Value, statuses: &[Value]) -> String {
    let mut reason = s(o.pointer("/status/phase"));
    if let Some(r) = o.pointer("/status/reason").and_then(Value::as_str) {
        reason = r.to_string();
    }
    let mut running = false;
    for c in statuses.iter().rev() {
        let state = &c["state"];
        if let Some(r) = state.pointer("/waiting/reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(t) = state.get("terminated") {
            reason = match t.get("reason").and_then(Value::as_str) {
                Some(r) => r.to_string(),
                None => match t.get("signal").and_then(Value::as_i64) {
                    Some(sig) if sig != 0 => format!("Signal:{sig}"),
                    _ => format!("ExitCode:{}", n(t.get("exitCode"))),
                },
            };
        } else if c["ready"] == true && state.get("running").is_some() {
            running = true;
        }
    }
    if reason == "Completed" && running {
        reason = "Running".to_string();
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".to_string();
    }
    reason
}

pub const SERVICES: Resource = Resource {
    kind: "Service",
    plural: "services",
    singular: "service",
    short_names: &["svc"],
    subresources: &["status", "proxy"],
    categories: &["all"],
    typed: Some(Typed::of::<api::Service>()),
    name_rule: (
        is_dns1035_label,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character",
    ),
    defaults: service_defaults,
    prepare_update: drop_type_dependent_fields,
    validate: validate_service,
    validate_update: |old, new, causes| immutable(&["/spec/clusterIP"], old, new, causes),
    columns: &[
        ("Name", "string", 0),
        ("Type", "string", 0),
        ("Cluster-IP", "string", 0),
        ("External-IP", "string", 0),
        ("Port(s)", "string", 0),
        ("Age", "string", 0),
        ("Selector", "string", 1),
    ],
    cells: service_cells,
    ..BASE
};

fn service_defaults(obj: &mut Value, ns: &str) {
    let name = s(obj.pointer("/metadata/name"));
    let spec = obj_mut(obj, "spec");
    default(spec, "type", json!("ClusterIP"));
    default(spec, "sessionAffinity", json!("None"));
    if spec.get("type") != Some(&json!("ExternalName")) {
        default(spec, "clusterIP", json!(cluster_ip(ns, &name)));
        let ip = spec["clusterIP"].clone();
        default(spec, "clusterIPs", json!([ip]));
        default(spec, "ipFamilies", json!(["IPv4"]));
        default(spec, "ipFamilyPolicy", json!("SingleStack"));
        default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    for p in ports_mut(spec) {
        default(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            default(p, "targetPort", port);
        }
    }
    default(obj_mut(obj, "status"), "loadBalancer", json!({}));
}

/// kube's Service validation where a wrong value would mislead the node's
/// proxy: types, ports (number, protocol, unique names, target ports, node
/// ports), affinity, traffic policies and distribution, the cluster IP.
fn validate_service(obj: &Value, causes: &mut Causes) {
    let spec = |f: &str| obj.pointer(&format!("/spec/{f}"));
    let ports = spec("ports").and_then(Value::as_array);
    let headless = spec("clusterIP") == Some(&json!("None"));
    let ty = spec("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let external = ty == "ExternalName";
    one_of(
        causes,
        "spec.type",
        spec("type"),
        &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
    );
    if ports.is_none_or(|p| p.is_empty()) && !headless && !external {
        causes.push(("spec.ports".into(), "Required value".into()));
    }
    let ports = ports.map(Vec::as_slice).unwrap_or_default();
    let mut names = std::collections::BTreeSet::new();
    let mut keys = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        if !p
            .get("port")
            .and_then(Value::as_i64)
            .is_some_and(|n| (1..=65535).contains(&n))
        {
            causes.push((
                at("port"),
                "Invalid value: must be between 1 and 65535, inclusive".into(),
            ));
        }
        one_of(
            causes,
            &at("protocol"),
            p.get("protocol"),
            &["SCTP", "TCP", "UDP"],
        );
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() && ports.len() > 1 {
            causes.push((at("name"), "Required value".into()));
        } else if !name.is_empty() && !is_dns1123_label(name) {
            causes.push((
                at("name"),
                format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
            ));
        }
        if !name.is_empty() && !names.insert(name) {
            causes.push((at("name"), format!("Duplicate value: \"{name}\"")));
        }
        let key = (
            p.get("port").map(Value::to_string).unwrap_or_default(),
            p.get("protocol").and_then(Value::as_str).unwrap_or("TCP"),
        );
        if !keys.insert(key.clone()) {
            causes.push((
                at("port"),
                format!("Duplicate value: {{port: {}, protocol: {}}}", key.0, key.1),
            ));
        }
        match p.get("targetPort") {
            None => {}
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (1..=65535).contains(&n)) => {}
            Some(Value::String(s)) if is_port_name(s) => {}
            Some(v) => causes.push((
                at("targetPort"),
                format!("Invalid value: {v}: must be a port number between 1 and 65535 or an IANA service name (at most 15 lowercase letters, digits and '-', with a letter)"),
            )),
        }
        if let Some(np) = p
            .get("nodePort")
            .filter(|v| !v.is_null() && **v != json!(0))
        {
            if !matches!(ty, "NodePort" | "LoadBalancer") {
                causes.push((
                    at("nodePort"),
                    format!("Forbidden: may not be used when `type` is '{ty}'"),
                ));
            } else if !np.as_i64().is_some_and(|n| (30000..=32767).contains(&n)) {
                causes.push((
                    at("nodePort"),
                    format!("Invalid value: {np}: provided port is not in the valid range. The range of valid ports is 30000-32767"),
                ));
            }
        }
    }
    one_of(
        causes,
        "spec.sessionAffinity",
        spec("sessionAffinity"),
        &["ClientIP", "None"],
    );
    if let Some(t) = obj.pointer("/spec/sessionAffinityConfig/clientIP/timeoutSeconds")
        && !t.as_i64().is_some_and(|t| (1..=86400).contains(&t))
    {
        causes.push((
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds".into(),
            format!("Invalid value: {t}: must be greater than 0 and less than 86400"),
        ));
    }
    one_of(
        causes,
        "spec.internalTrafficPolicy",
        spec("internalTrafficPolicy"),
        &["Cluster", "Local"],
    );
    one_of(
        causes,
        "spec.externalTrafficPolicy",
        spec("externalTrafficPolicy"),
        &["Cluster", "Local"],
    );
    one_of(
        causes,
        "spec.trafficDistribution",
        spec("trafficDistribution"),
        &["PreferClose", "PreferSameNode", "PreferSameZone"],
    );
    if let Some(ip) = spec("clusterIP").and_then(Value::as_str)
        && !matches!(ip, "" | "None")
        && ip.parse::<std::net::IpAddr>().is_err()
    {
        causes.push((
            "spec.clusterIP".into(),
            format!("Invalid value: \"{ip}\": must be empty, 'None', or a valid IP address"),
        ));
    }
    if external
        && !spec("externalName")
            .and_then(Value::as_str)
            .is_some_and(crate::admission::is_dns1123_subdomain)
    {
        causes.push((
            "spec.externalName".into(),
            "Required value: a DNS name for type ExternalName".into(),
        ));
    }
}

/// A Service leaving NodePort/LoadBalancer releases the node ports it held
/// (kube's `dropTypeDependentFields`): an apply that only changes `type`
/// still carries them.
fn drop_type_dependent_fields(old: &Value, new: &mut Value) {
    let node_ports = |v: &Value| {
        matches!(
            v.pointer("/spec/type").and_then(Value::as_str),
            Some("NodePort" | "LoadBalancer")
        )
    };
    if !node_ports(old) || node_ports(new) {
        return;
    }
    let held = |i: usize| old.pointer(&format!("/spec/ports/{i}/nodePort")).cloned();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for (i, p) in ports.iter_mut().enumerate() {
            // Only the values it held: one the client set anew is refused.
            if let Some(p) = p.as_object_mut()
                && p.get("nodePort").cloned() == held(i)
            {
                p.remove("nodePort");
            }
        }
    }
}

/// `field` (if set) is one of `allowed`, else kube's "Unsupported value".
pub(crate) fn one_of(causes: &mut Causes, field: &str, v: Option<&Value>, allowed: &[&str]) {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return;
    };
    if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
        let list: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
        causes.push((
            field.into(),
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
}

/// An IANA service name (a named port): 1–15 lowercase letters, digits and
/// '-', at least one letter, no leading, trailing or double '-'.
pub(crate) fn is_port_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

fn service_cells(_: &Resource, o: &Value) -> Vec<Value> {
    let ports: Vec<String> = o
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| match p.get("nodePort") {
            Some(np) => format!(
                "{}:{}/{}",
                n(p.get("port")),
                s(Some(np)),
                s(p.get("protocol"))
            ),
            None => format!("{}/{}", n(p.get("port")), s(p.get("protocol"))),
        })
        .collect();
    let external = o
        .pointer("/spec/externalIPs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|x| s(Some(x))).collect::<Vec<_>>().join(","))
        .unwrap_or_default();
    vec![
        json!(s(o.pointer("/metadata/name"))),
        json!(s(o.pointer("/spec/type"))),
        json!(or_none(s(o.pointer("/spec/clusterIP")))),
        json!(or_none(external)),
        json!(or_none(ports.join(","))),
        json!(created(o)),
        json!(label_selector(o.pointer("/spec/selector"))),
    ]
}

pub const ENDPOINTS: Resource = Resource {
    kind: "Endpoints",
    plural: "endpoints",
    singular: "endpoints",
    short_names: &["ep"],
    has_spec: false,
    typed: Some(Typed::of::<api::Endpoints>()),
    columns: &[
        ("Name", "string", 0),
        ("Endpoints", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        let mut eps = Vec::new();
        for sub in o
            .get("subsets")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for a in sub
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for p in sub
                    .get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    eps.push(format!("{}:{}", s(a.get("ip")), n(p.get("port"))));
                }
            }
        }
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(or_none(eps.join(","))),
            json!(created(o)),
        ]
    },
    ..BASE
};

/// ConfigMap and Secret keys.
fn validate_data_keys(obj: &Value, causes: &mut Causes) {
    for field in ["data", "binaryData"] {
        for k in obj
            .get(field)
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.keys())
        {
            if k.is_empty()
                || k.len() > 253
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            {
                causes.push((format!("{field}[{k}]"), format!("Invalid value: {k:?}: a valid config key must consist of alphanumeric characters, '-', '_' or '.'")));
            }
        }
    }
}

/// A ConfigMap's or Secret's data is frozen once `immutable` is set.
fn data_update(old: &Value, new: &Value, causes: &mut Causes) {
    if old.get("immutable") == Some(&json!(true))
        && (old.get("data") != new.get("data") || old.get("binaryData") != new.get("binaryData"))
    {
        causes.push((
            "data".into(),
            "Forbidden: field is immutable when `immutable` is set".into(),
        ));
    }
}

pub const CONFIG_MAPS: Resource = Resource {
    kind: "ConfigMap",
    plural: "configmaps",
    singular: "configmap",
    short_names: &["cm"],
    has_spec: false,
    typed: Some(Typed::of::<api::ConfigMap>()),
    validate: validate_data_keys,
    validate_update: data_update,
    columns: &[
        ("Name", "string", 0),
        ("Data", "integer", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        let count = ["data", "binaryData"]
            .iter()
            .map(|f| o.get(*f).and_then(Value::as_object).map_or(0, |m| m.len()))
            .sum::<usize>();
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(count),
            json!(created(o)),
        ]
    },
    ..BASE
};

pub const SECRETS: Resource = Resource {
    kind: "Secret",
    plural: "secrets",
    singular: "secret",
    has_spec: false,
    typed: Some(Typed::of::<api::Secret>()),
    defaults: |obj, _| {
        default(
            obj.as_object_mut().expect("object"),
            "type",
            json!("Opaque"),
        );
        // stringData is write-only: fold it into data.
        if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
            let data = obj_mut(obj, "data");
            for (k, v) in sd {
                use base64::Engine as _;
                let s = v.as_str().unwrap_or_default();
                data.insert(
                    k,
                    json!(base64::engine::general_purpose::STANDARD.encode(s)),
                );
            }
        }
    },
    validate: validate_data_keys,
    validate_update: data_update,
    columns: &[
        ("Name", "string", 0),
        ("Type", "string", 0),
        ("Data", "integer", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(s(o.get("type"))),
            json!(
                o.get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            ),
            json!(created(o)),
        ]
    },
    ..BASE
};

pub const SERVICE_ACCOUNTS: Resource = Resource {
    kind: "ServiceAccount",
    plural: "serviceaccounts",
    singular: "serviceaccount",
    short_names: &["sa"],
    subresources: &["token"],
    has_spec: false,
    typed: Some(Typed::of::<api::ServiceAccount>()),
    columns: &[
        ("Name", "string", 0),
        ("Secrets", "integer", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(
                o.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(created(o)),
        ]
    },
    ..BASE
};

pub const EVENTS: Resource = Resource {
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    has_spec: false,
    typed: Some(Typed::of::<api::Event>()),
    columns: EVENT_COLUMNS,
    cells: event_cells,
    ..BASE
};

/// Events print alike in core/v1 and events.k8s.io/v1.
pub(super) const EVENT_COLUMNS: &[crate::registry::Column] = &[
    ("Last Seen", "string", 0),
    ("Type", "string", 0),
    ("Reason", "string", 0),
    ("Object", "string", 0),
    ("Message", "string", 0),
    ("Name", "string", 1),
];

pub(super) fn event_cells(r: &Resource, o: &Value) -> Vec<Value> {
    // core/v1 and events.k8s.io/v1 name the same things differently.
    let core = r.group.is_empty();
    let regarding = o.get(if core { "involvedObject" } else { "regarding" });
    let last = [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .find_map(|p| o.pointer(p).filter(|v| v.is_string()));
    let object = format!(
        "{}/{}",
        s(regarding.and_then(|x| x.get("kind"))).to_lowercase(),
        s(regarding.and_then(|x| x.get("name")))
    );
    let message = s(o.get(if core { "message" } else { "note" }));
    vec![
        json!(age(last)),
        json!(s(o.get("type"))),
        json!(s(o.get("reason"))),
        json!(object),
        json!(message),
        json!(s(o.pointer("/metadata/name"))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_status_column_follows_kubectl() {
        let status = |st: Value| {
            let statuses = st["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            pod_status(&json!({ "status": st }), &statuses)
        };
        let term = |reason: Option<&str>, code: i64| {
            let mut t = json!({"exitCode": code});
            if let Some(r) = reason {
                t["reason"] = json!(r);
            }
            json!({"phase": "Succeeded", "containerStatuses": [{"ready": false, "state": {"terminated": t}}]})
        };
        assert_eq!(status(term(Some("Completed"), 0)), "Completed");
        assert_eq!(status(term(Some("Error"), 3)), "Error");
        assert_eq!(status(term(None, 3)), "ExitCode:3");
        assert_eq!(
            status(json!({"phase": "Running", "containerStatuses": [
                {"ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]})),
            "CrashLoopBackOff"
        );
        assert_eq!(
            status(json!({"phase": "Running", "containerStatuses": [
                {"ready": true, "state": {"running": {}}}]})),
            "Running"
        );
        assert_eq!(
            status(json!({"phase": "Failed", "reason": "Evicted"})),
            "Evicted"
        );
        let deleting =
            json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&deleting, &[]), "Terminating");
    }
}
