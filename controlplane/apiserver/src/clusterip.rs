//! Service allocations: ClusterIPs and node ports.

use serde_json::{Value, json};

use crate::registry::Resource;
use crate::selectors::Filter;
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::storage::{self, meta_str, target};

/// Makes a Service's ClusterIP unique among services: a defaulted (hashed)
/// address moves to the next free one in 10.96.0.0/16, a requested one that
/// is taken is a 422. Concurrent creates can still race (no allocator
/// object yet).
/// `services` are all stored Services.
pub(crate) fn allocate_cluster_ip(
    r: &Resource,
    services: &[Value],
    svc: &mut Value,
    requested: bool,
) -> ApiResult<()> {
    let Some(ip) = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return Ok(());
    };
    if ip == "None" {
        return Ok(());
    }
    let used: std::collections::HashSet<String> = services
        .iter()
        .filter_map(|s| {
            s.pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    if !used.contains(&ip) {
        return Ok(());
    }
    let name = meta_str(svc, "name").unwrap_or_default().to_string();
    if requested {
        return Err(ApiError::invalid(
            target(r, &name),
            &[(
                "spec.clusterIPs".into(),
                format!(
                    "Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated"
                ),
            )],
        ));
    }
    let octets: Vec<u32> = ip.split('.').map(|o| o.parse().unwrap_or(0)).collect();
    let start = octets.get(2).copied().unwrap_or(0) * 256 + octets.get(3).copied().unwrap_or(0);
    for step in 1..65536u32 {
        let n = (start + step) % 65536;
        let candidate = format!("10.96.{}.{}", n / 256, n % 256);
        if n % 256 != 0 && n % 256 != 255 && !used.contains(&candidate) {
            svc["spec"]["clusterIP"] = json!(candidate);
            svc["spec"]["clusterIPs"] = json!([candidate]);
            return Ok(());
        }
    }
    Err(ApiError::internal(
        "the service IP range 10.96.0.0/16 is full",
    ))
}

/// Every stored Service (what both allocations check against).
pub(crate) async fn services(state: &State, r: &'static Resource) -> ApiResult<Vec<Value>> {
    Ok(
        storage::list(&state.store, r, "", &Filter::default(), 0, None)
            .await?
            .items,
    )
}

/// kube's default `--service-node-port-range`.
pub(crate) const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// The node ports every Service holds, loaded before a Service write so
/// that write gets free ones ([`NodePorts::assign`]). Like ClusterIPs,
/// concurrent writes can still race (no allocator object yet).
pub(crate) struct NodePorts {
    /// (node port, protocol) → the `ns/name` of the Service holding it.
    used: std::collections::HashMap<(u16, String), String>,
}

fn node_port_type(svc: &Value) -> bool {
    matches!(
        svc.pointer("/spec/type").and_then(Value::as_str),
        Some("NodePort" | "LoadBalancer")
    )
}

fn protocol(p: &Value) -> String {
    p.get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
        .to_string()
}

impl NodePorts {
    pub async fn load(state: &State, r: &'static Resource) -> ApiResult<NodePorts> {
        Ok(Self::of(&services(state, r).await?))
    }

    /// The node ports `services` (all stored Services) hold.
    pub fn of(services: &[Value]) -> NodePorts {
        let mut used = std::collections::HashMap::new();
        for svc in services.iter().filter(|s| node_port_type(s)) {
            let owner = format!(
                "{}/{}",
                meta_str(svc, "namespace").unwrap_or_default(),
                meta_str(svc, "name").unwrap_or_default()
            );
            for p in svc
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                    used.insert((n as u16, protocol(p)), owner.clone());
                }
            }
        }
        NodePorts { used }
    }

    /// Gives each port of a NodePort or LoadBalancer Service its node port:
    /// the requested one if free (else 422), the one the Service held
    /// before for that port, or a free one in [`NODE_PORTS`]; other types
    /// hold none (changing a Service to ClusterIP releases them, as kube's
    /// `dropTypeDependentFields` does).
    pub fn assign(&self, r: &Resource, svc: &mut Value, old: Option<&Value>) -> ApiResult<()> {
        let name = meta_str(svc, "name").unwrap_or_default().to_string();
        let me = format!("{}/{name}", meta_str(svc, "namespace").unwrap_or_default());
        let wants = node_port_type(svc);
        let held: Vec<(i64, String, u64)> = old
            .filter(|o| node_port_type(o))
            .and_then(|o| o.pointer("/spec/ports").and_then(Value::as_array))
            .into_iter()
            .flatten()
            .filter_map(|p| {
                Some((
                    p.get("port")?.as_i64()?,
                    protocol(p),
                    p.get("nodePort")?.as_u64()?,
                ))
            })
            .collect();
        let Some(ports) = svc.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
            return Ok(());
        };
        let mut taken: std::collections::HashSet<(u16, String)> = Default::default();
        let free = |n: u16, proto: &str, taken: &std::collections::HashSet<(u16, String)>| {
            let key = (n, proto.to_string());
            !taken.contains(&key) && self.used.get(&key).is_none_or(|o| *o == me)
        };
        for (i, p) in ports.iter_mut().enumerate() {
            let Some(p) = p.as_object_mut() else { continue };
            if !wants {
                p.remove("nodePort");
                continue;
            }
            let proto = p
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string();
            let port = p.get("port").and_then(Value::as_i64).unwrap_or_default();
            let requested = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .filter(|n| *n != 0);
            let n = match requested {
                Some(n) => {
                    let n = n as u16;
                    if !free(n, &proto, &taken) {
                        return Err(ApiError::invalid(
                            target(r, &name),
                            &[(
                                format!("spec.ports[{i}].nodePort"),
                                format!("Invalid value: {n}: provided port is already allocated"),
                            )],
                        ));
                    }
                    n
                }
                None => {
                    let before = held
                        .iter()
                        .find(|(p, pr, _)| *p == port && *pr == proto)
                        .map(|(_, _, n)| *n as u16)
                        .filter(|n| free(*n, &proto, &taken));
                    // Spread from a hash of the Service and port, then the
                    // next free one.
                    let span = (NODE_PORTS.end() - NODE_PORTS.start() + 1) as usize;
                    let key = format!("{me}/{port}/{proto}");
                    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
                    let seed =
                        usize::from(u16::from_le_bytes([digest.as_ref()[0], digest.as_ref()[1]]));
                    let pick = || {
                        (0..span)
                            .map(|k| NODE_PORTS.start() + ((seed + k) % span) as u16)
                            .find(|n| free(*n, &proto, &taken))
                    };
                    match before.or_else(pick) {
                        Some(n) => n,
                        None => {
                            return Err(ApiError::invalid(
                                target(r, &name),
                                &[(
                                    format!("spec.ports[{i}].nodePort"),
                                    "Internal error: range for service node ports is full".into(),
                                )],
                            ));
                        }
                    }
                }
            };
            taken.insert((n, proto));
            p.insert("nodePort".into(), json!(n));
        }
        Ok(())
    }
}
