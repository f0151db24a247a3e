//! networking.k8s.io/v1: NetworkPolicies (enforced by the nodes: the
//! gateway resolves them to addresses, each node checks its pods' connects,
//! accepts and datagrams).

use serde_json::{Value, json};

use super::core::{is_port_name, one_of};
use crate::registry::{BASE, Causes, Resource, Typed};
use crate::selectors::LabelSelector;
use crate::tables::{created, s};

pub const NETWORK_POLICIES: Resource = Resource {
    group: "networking.k8s.io",
    kind: "NetworkPolicy",
    plural: "networkpolicies",
    singular: "networkpolicy",
    short_names: &["netpol"],
    typed: Some(Typed::of::<k8s_openapi::api::networking::v1::NetworkPolicy>()),
    defaults: default_policy,
    validate: validate_policy,
    columns: &[
        ("Name", "string", 0),
        ("Pod-Selector", "string", 0),
        ("Age", "string", 0),
    ],
    cells: |_, o| {
        vec![
            json!(s(o.pointer("/metadata/name"))),
            json!(pod_selector_text(o.pointer("/spec/podSelector"))),
            json!(created(o)),
        ]
    },
    ..BASE
};

/// kube's defaults: `policyTypes` from the rules present (Ingress always,
/// Egress when egress rules are written), ports' protocol TCP.
fn default_policy(obj: &mut Value, _ns: &str) {
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec
        .get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        let mut types = vec![json!("Ingress")];
        if spec.get("egress").is_some_and(|e| !e.is_null()) {
            types.push(json!("Egress"));
        }
        spec.insert("policyTypes".into(), Value::Array(types));
    }
    for dir in ["ingress", "egress"] {
        let rules = spec.get_mut(dir).and_then(Value::as_array_mut);
        for rule in rules.into_iter().flatten() {
            let ports = rule.get_mut("ports").and_then(Value::as_array_mut);
            for p in ports.into_iter().flatten() {
                if let Some(p) = p.as_object_mut() {
                    p.entry("protocol").or_insert_with(|| json!("TCP"));
                }
            }
        }
    }
}

fn validate_policy(obj: &Value, causes: &mut Causes) {
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    selector(causes, "spec.podSelector", spec.get("podSelector"));
    let types = spec.get("policyTypes").and_then(Value::as_array);
    for (i, t) in types.into_iter().flatten().enumerate() {
        one_of(
            causes,
            &format!("spec.policyTypes[{i}]"),
            Some(t),
            &["Ingress", "Egress"],
        );
    }
    for (dir, peers) in [("ingress", "from"), ("egress", "to")] {
        let rules = spec.get(dir).and_then(Value::as_array);
        for (i, rule) in rules.into_iter().flatten().enumerate() {
            let at = format!("spec.{dir}[{i}]");
            let ports = rule.get("ports").and_then(Value::as_array);
            for (j, p) in ports.into_iter().flatten().enumerate() {
                validate_port(causes, &format!("{at}.ports[{j}]"), p);
            }
            let list = rule.get(peers).and_then(Value::as_array);
            for (j, peer) in list.into_iter().flatten().enumerate() {
                validate_peer(causes, &format!("{at}.{peers}[{j}]"), peer);
            }
        }
    }
}

fn selector(causes: &mut Causes, field: &str, sel: Option<&Value>) {
    if let Some(sel) = sel.filter(|v| !v.is_null())
        && let Err(e) = LabelSelector::from_object(sel)
    {
        causes.push((field.into(), format!("Invalid value: {e}")));
    }
}

fn validate_port(causes: &mut Causes, at: &str, p: &Value) {
    one_of(
        causes,
        &format!("{at}.protocol"),
        p.get("protocol"),
        &["TCP", "UDP", "SCTP"],
    );
    let end = p.get("endPort").filter(|v| !v.is_null());
    match p.get("port").filter(|v| !v.is_null()) {
        None if end.is_some() => causes.push((
            format!("{at}.endPort"),
            "Required value: may not be specified when `port` is not specified".into(),
        )),
        None => {}
        Some(Value::String(name)) => {
            if !is_port_name(name) {
                causes.push((
                    format!("{at}.port"),
                    format!("Invalid value: \"{name}\": must be a valid port name"),
                ));
            }
            if end.is_some() {
                causes.push((
                    format!("{at}.endPort"),
                    "Invalid value: may not be specified when `port` is non-numeric".into(),
                ));
            }
        }
        Some(port) => {
            let n = port.as_i64().unwrap_or(0);
            if !(1..=65535).contains(&n) {
                causes.push((
                    format!("{at}.port"),
                    format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
                ));
            }
            if let Some(e) = end {
                let e = e.as_i64().unwrap_or(0);
                if !(1..=65535).contains(&e) || e < n {
                    causes.push((
                        format!("{at}.endPort"),
                        format!(
                            "Invalid value: {e}: must be greater than or equal to `port` and at most 65535"
                        ),
                    ));
                }
            }
        }
    }
}

fn validate_peer(causes: &mut Causes, at: &str, peer: &Value) {
    let set = |f: &str| peer.get(f).filter(|v| !v.is_null());
    let block = set("ipBlock");
    if block.is_some() && (set("podSelector").is_some() || set("namespaceSelector").is_some()) {
        causes.push((
            at.into(),
            "Forbidden: may not specify more than 1 peer type".into(),
        ));
    }
    if block.is_none() && set("podSelector").is_none() && set("namespaceSelector").is_none() {
        causes.push((at.into(), "Required value: must specify a peer".into()));
    }
    selector(causes, &format!("{at}.podSelector"), set("podSelector"));
    selector(
        causes,
        &format!("{at}.namespaceSelector"),
        set("namespaceSelector"),
    );
    let Some(block) = block else {
        return;
    };
    let cidr = block.get("cidr").and_then(Value::as_str).unwrap_or("");
    let Some(outer) = parse_cidr(cidr) else {
        causes.push((
            format!("{at}.ipBlock.cidr"),
            format!("Invalid value: \"{cidr}\": must be a valid CIDR value, (e.g. 10.9.8.0/24)"),
        ));
        return;
    };
    let excepts = block.get("except").and_then(Value::as_array);
    for (k, e) in excepts.into_iter().flatten().enumerate() {
        let text = e.as_str().unwrap_or("");
        let field = format!("{at}.ipBlock.except[{k}]");
        match parse_cidr(text) {
            None => causes.push((
                field,
                format!("Invalid value: \"{text}\": must be a valid CIDR value"),
            )),
            Some(inner) if !within(inner, outer) => causes.push((
                field,
                format!("Invalid value: \"{text}\": must be a strict subset of `cidr`"),
            )),
            Some(_) => {}
        }
    }
}

/// An IPv4 or IPv6 prefix: (is IPv6, address bits, prefix length).
type Prefix = (bool, u128, u8);

/// Parses `a.b.c.d/n` or an IPv6 prefix (kube's `ParseCIDRSloppy`).
pub(crate) fn parse_cidr(s: &str) -> Option<Prefix> {
    let (addr, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    match addr.parse::<std::net::IpAddr>().ok()? {
        std::net::IpAddr::V4(a) if len <= 32 => Some((false, u32::from(a).into(), len)),
        std::net::IpAddr::V6(a) if len <= 128 => Some((true, a.into(), len)),
        _ => None,
    }
}

/// Whether `inner` is a strict subset of `outer` (same family).
fn within(inner: Prefix, outer: Prefix) -> bool {
    let bits = if outer.0 { 128 } else { 32 };
    let mask = |len: u8| {
        let ones = u128::MAX.checked_shl(u32::from(bits - len)).unwrap_or(0);
        if bits == 32 { ones & 0xffff_ffff } else { ones }
    };
    inner.0 == outer.0 && inner.2 > outer.2 && inner.1 & mask(outer.2) == outer.1 & mask(outer.2)
}

/// `kubectl get`'s POD-SELECTOR cell: the labels, or `<none>` for all.
fn pod_selector_text(sel: Option<&Value>) -> String {
    let labels = sel.and_then(|s| s.get("matchLabels"));
    let exprs = sel
        .and_then(|s| s.get("matchExpressions"))
        .and_then(Value::as_array);
    let mut parts: Vec<String> = labels
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", s(Some(v))))
        .collect();
    for e in exprs.into_iter().flatten() {
        let key = s(e.get("key"));
        let values: Vec<String> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|v| s(Some(v)))
            .collect();
        parts.push(match s(e.get("operator")).as_str() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key,
            _ => format!("!{key}"),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excepts_must_lie_strictly_inside_the_block() {
        let p = |s| parse_cidr(s).unwrap();
        assert!(within(p("10.0.1.0/24"), p("10.0.0.0/16")));
        assert!(!within(p("10.0.0.0/16"), p("10.0.0.0/16")));
        assert!(!within(p("10.1.0.0/24"), p("10.0.0.0/16")));
        assert!(within(p("0.0.0.0/1"), p("0.0.0.0/0")));
        assert!(!within(p("fd00::/64"), p("10.0.0.0/8")));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("10.0.0.0").is_none());
    }

    #[test]
    fn policy_types_default_from_the_rules_written() {
        let mut o = json!({"spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}});
        default_policy(&mut o, "default");
        assert_eq!(o["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(o["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");
        let mut o = json!({"spec": {"podSelector": {}}});
        default_policy(&mut o, "default");
        assert_eq!(o["spec"]["policyTypes"], json!(["Ingress"]));
    }
}
