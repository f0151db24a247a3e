//! Service ClusterIP allocation.

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
pub(crate) async fn allocate_cluster_ip(
    state: &State,
    r: &'static Resource,
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
    let all = storage::list(&state.store, r, "", &Filter::default(), 0, None).await?;
    let used: std::collections::HashSet<String> = all
        .items
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
