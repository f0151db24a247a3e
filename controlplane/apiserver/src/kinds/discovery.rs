//! discovery.k8s.io/v1: EndpointSlices.

use serde_json::Value;

use super::core::one_of;
use crate::admission::is_dns1123_label;
use crate::registry::{BASE, Causes, Resource, Typed};

pub const ENDPOINT_SLICES: Resource = Resource {
    group: "discovery.k8s.io",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    has_spec: false,
    typed: Some(Typed::of::<k8s_openapi::api::discovery::v1::EndpointSlice>()),
    validate: validate_slice,
    validate_update: |old, new, causes| {
        crate::admission::immutable(&["/addressType"], old, new, causes)
    },
    ..BASE
};

/// kube's limits: endpoints and ports per slice, addresses per endpoint.
const MAX_ENDPOINTS: usize = 1000;
const MAX_PORTS: usize = 20_000;
const MAX_ADDRESSES: usize = 100;

/// What a node's proxy reads from a slice must be what it claims: the
/// address type, addresses of that type, ports in range with unique names.
fn validate_slice(obj: &Value, causes: &mut Causes) {
    // (Typed decoding turns a missing addressType into "".)
    let ty = obj.get("addressType").filter(|v| !v.is_null() && *v != "");
    if ty.is_none() {
        causes.push(("addressType".into(), "Required value".into()));
    }
    one_of(causes, "addressType", ty, &["FQDN", "IPv4", "IPv6"]);
    let ty = ty.and_then(Value::as_str).unwrap_or_default();
    let endpoints = obj.get("endpoints").and_then(Value::as_array);
    let endpoints = endpoints.map(Vec::as_slice).unwrap_or_default();
    if endpoints.len() > MAX_ENDPOINTS {
        causes.push((
            "endpoints".into(),
            format!(
                "Too many: {}: must have at most {MAX_ENDPOINTS} items",
                endpoints.len()
            ),
        ));
    }
    for (i, e) in endpoints.iter().enumerate() {
        let addrs = e.get("addresses").and_then(Value::as_array);
        let addrs = addrs.map(Vec::as_slice).unwrap_or_default();
        if addrs.is_empty() || addrs.len() > MAX_ADDRESSES {
            causes.push((
                format!("endpoints[{i}].addresses"),
                format!(
                    "Invalid value: {} addresses: must have between 1 and {MAX_ADDRESSES}",
                    addrs.len()
                ),
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or_default();
            let ok = match ty {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => crate::admission::is_dns1123_subdomain(a),
            };
            if !ok {
                causes.push((
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!("Invalid value: \"{a}\": must be a valid {ty} address"),
                ));
            }
        }
    }
    let ports = obj.get("ports").and_then(Value::as_array);
    let ports = ports.map(Vec::as_slice).unwrap_or_default();
    if ports.len() > MAX_PORTS {
        causes.push((
            "ports".into(),
            format!(
                "Too many: {}: must have at most {MAX_PORTS} items",
                ports.len()
            ),
        ));
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, p) in ports.iter().enumerate() {
        if let Some(n) = p.get("port").filter(|v| !v.is_null())
            && !n.as_i64().is_some_and(|n| (1..=65535).contains(&n))
        {
            causes.push((
                format!("ports[{i}].port"),
                format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
            ));
        }
        one_of(
            causes,
            &format!("ports[{i}].protocol"),
            p.get("protocol"),
            &["SCTP", "TCP", "UDP"],
        );
        let name = p.get("name").and_then(Value::as_str).unwrap_or_default();
        if !(name.is_empty() || is_dns1123_label(name)) {
            causes.push((
                format!("ports[{i}].name"),
                format!("Invalid value: \"{name}\": must be a lowercase RFC 1123 label"),
            ));
        }
        if !names.insert(name) {
            causes.push((
                format!("ports[{i}].name"),
                format!("Duplicate value: \"{name}\""),
            ));
        }
    }
}
