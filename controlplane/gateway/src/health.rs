//! Node health: marks a node NotReady (Ready=Unknown, as kube's node
//! lifecycle controller does) when its lease has not been renewed through
//! this gateway for the grace period, and Ready again when renewals resume.
//!
//! This lives in the gateway only until the node lifecycle controller exists;
//! that controller will own it, watching Leases instead of this in-memory
//! table (which forgets nodes across gateway restarts).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::Shared;
use crate::local_api::gateway_identity;
use crate::timefmt::{now_millis, time};

#[derive(Debug)]
struct Entry {
    last_renew: Instant,
    not_ready: bool,
}

#[derive(Debug, Default)]
pub struct Health {
    nodes: Mutex<HashMap<String, Entry>>,
}

impl Health {
    /// Records a renewal; true when the node had been marked NotReady.
    pub fn renewed(&self, node: &str) -> bool {
        let mut m = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(node.to_string()).or_insert(Entry {
            last_renew: Instant::now(),
            not_ready: false,
        });
        e.last_renew = Instant::now();
        std::mem::replace(&mut e.not_ready, false)
    }

    /// Nodes silent for longer than `grace`, marked as NotReady now.
    fn expire(&self, grace: Duration) -> Vec<String> {
        let mut m = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        m.iter_mut()
            .filter(|(_, e)| !e.not_ready && e.last_renew.elapsed() > grace)
            .map(|(n, e)| {
                e.not_ready = true;
                n.clone()
            })
            .collect()
    }
}

/// Sets the node's Ready condition, keeping the others.
pub async fn set_ready(shared: &Shared, node: &str, ready: bool) -> Result<(), String> {
    let id = gateway_identity();
    let path = format!("/api/v1/nodes/{node}");
    let cur = shared.api.get(&id, &path).await?;
    if !cur.ok() {
        return Err(cur.message());
    }
    let now = time(now_millis());
    let mut conds: Vec<Value> = cur
        .body
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    conds.retain(|c| c["type"] != "Ready");
    conds.push(if ready {
        json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
               "message": "kubelet is posting ready status",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    } else {
        json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
               "message": "Kubelet stopped posting node status.",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    });
    let a = shared
        .api
        .merge_patch(
            &id,
            &format!("{path}/status"),
            &json!({"status": {"conditions": conds}}),
        )
        .await?;
    if a.ok() { Ok(()) } else { Err(a.message()) }
}

/// Runs until the gateway stops.
pub async fn run(shared: Arc<Shared>) {
    let grace = shared.cfg.node_grace;
    let mut tick = tokio::time::interval((grace / 4).max(Duration::from_millis(50)));
    loop {
        tick.tick().await;
        for node in shared.health.expire(grace) {
            match set_ready(&shared, &node, false).await {
                Ok(()) => shared.journal.log(format!(
                    "node {node}: NotReady: no lease renewal for {grace:?}"
                )),
                Err(e) => shared
                    .journal
                    .log(format!("node {node}: marking NotReady failed: {e}")),
            }
        }
    }
}
