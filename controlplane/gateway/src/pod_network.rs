//! The node's pod CIDRs: in `Registered` when the Node already has them,
//! else pushed as [`PlaneToNode::PodNetwork`] once the controller manager's
//! node IPAM sets `spec.podCIDRs` (a moment after a new Node is created).
//! They are immutable once set, so one message is all a session needs.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::Method;
use serde_json::Value;
use skiff_apiserver::Identity;
use skiff_node_proto::PlaneToNode;
use tokio::sync::mpsc;

use crate::Shared;

/// `spec.podCIDRs` of a Node object.
pub fn pod_cidrs(node: &Value) -> Vec<String> {
    node.pointer("/spec/podCIDRs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str().map(String::from))
        .collect()
}

/// Watches the session's Node until it has pod CIDRs, then sends them.
/// Ends with the session (the caller aborts it) or once sent.
pub async fn send_when_assigned(
    shared: Arc<Shared>,
    node: String,
    id: Identity,
    tx: mpsc::Sender<PlaneToNode>,
) {
    loop {
        match watch_until_assigned(&shared, &node, &id).await {
            Ok(Some(pod_cidrs)) => {
                let _ = tx.send(PlaneToNode::PodNetwork { pod_cidrs }).await;
                return;
            }
            Ok(None) => {}
            Err(e) => shared
                .journal
                .log(format!("node {node}: pod CIDR watch: {e}")),
        }
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// One list-then-watch of the Node; `None` when the watch ended first.
async fn watch_until_assigned(
    shared: &Shared,
    node: &str,
    id: &Identity,
) -> Result<Option<Vec<String>>, String> {
    let api = &shared.api;
    let a = api.get(id, &format!("/api/v1/nodes/{node}")).await?;
    if !a.ok() {
        return Err(a.message());
    }
    let cidrs = pod_cidrs(&a.body);
    if !cidrs.is_empty() {
        return Ok(Some(cidrs));
    }
    let rv = a
        .body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0");
    let path =
        format!("/api/v1/nodes?watch=1&fieldSelector=metadata.name%3D{node}&resourceVersion={rv}");
    let resp = api
        .request(id, Method::GET, &path, "application/json", Vec::new())
        .await?;
    if !resp.status().is_success() {
        return Err(format!("watch answered {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let cidrs = pod_cidrs(&ev["object"]);
            if !cidrs.is_empty() {
                return Ok(Some(cidrs));
            }
        }
    }
    Ok(None)
}
