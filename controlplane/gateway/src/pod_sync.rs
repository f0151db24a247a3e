//! API -> node: lists and watches the node's pods (field selector
//! `spec.nodeName=<node>`, as the node itself, so the node authorizer
//! applies), sends the full desired set with a generation first and deltas
//! after, and sends the ConfigMaps and Secrets those pods reference.
//!
//! ConfigMap and Secret changes are picked up when a pod changes or the
//! watch is re-established (the node authorizer lets a node `get` them, not
//! watch them); a per-object poll is future work.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use http_body_util::BodyExt as _;
use hyper::Method;
use serde_json::Value;
use skiff_apiserver::Identity;
use skiff_node_proto::{self as proto, ConfigKind, PlaneToNode};
use tokio::sync::{Notify, mpsc};

use crate::images::NodeImages;
use crate::local_api::LocalApi;
use crate::network_policy::Covered;
use crate::pod_spec::{config_refs, pod_spec};
use crate::session::PodMap;

/// What the node was sent.
#[derive(Debug, Default)]
pub struct SyncState {
    pub generation: u64,
    /// Highest generation the node acknowledged.
    pub acked: u64,
    pub pods: PodMap,
    /// ConfigMaps/Secrets sent: (kind, namespace, name) -> resourceVersion.
    configs: BTreeMap<(ConfigKind, String, String), String>,
}

fn lock(s: &Mutex<SyncState>) -> std::sync::MutexGuard<'_, SyncState> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn enc(s: &str) -> String {
    s.replace('%', "%25")
        .replace('=', "%3D")
        .replace(',', "%2C")
        .replace('&', "%26")
}

// The session's handles, passed as they are (the session owns them).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    shared: Arc<crate::Shared>,
    node: String,
    id: Identity,
    tx: mpsc::Sender<PlaneToNode>,
    state: Arc<Mutex<SyncState>>,
    resync: Arc<Notify>,
    deltas: bool,
    mut images: Option<(Arc<NodeImages>, mpsc::UnboundedReceiver<String>)>,
    covered: Option<Covered>,
) {
    let api = shared.api.clone();
    let selector = enc(&format!("spec.nodeName={node}"));
    loop {
        let imgs = images.as_ref().map(|(i, _)| i.clone());
        let sync = full_sync(
            &api,
            &id,
            &selector,
            &tx,
            &state,
            imgs.as_ref(),
            covered.as_ref(),
        );
        let rv = match sync.await {
            Ok(rv) => rv,
            Err(e) => {
                shared
                    .journal
                    .log(format!("node {node}: pod list failed: {e}"));
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let ctx = WatchCtx {
            api: &api,
            id: &id,
            tx: &tx,
            state: &state,
            resync: &resync,
            deltas,
            covered: covered.as_ref(),
        };
        if let Err(e) = watch(&ctx, &selector, rv, images.as_mut()).await {
            shared
                .journal
                .log(format!("node {node}: pod watch ended: {e}"));
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Lists the node's pods and sends them whole; returns the list revision.
async fn full_sync(
    api: &LocalApi,
    id: &Identity,
    selector: &str,
    tx: &mpsc::Sender<PlaneToNode>,
    state: &Mutex<SyncState>,
    images: Option<&Arc<NodeImages>>,
    covered: Option<&Covered>,
) -> Result<String, String> {
    let a = api
        .get(id, &format!("/api/v1/pods?fieldSelector={selector}"))
        .await?;
    if !a.ok() {
        return Err(a.message());
    }
    let rv = a
        .body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("0")
        .to_string();
    let pods: PodMap = a
        .body
        .get("items")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .map(|v| {
                    let mut p = pod_spec(v);
                    if let Some(i) = images {
                        i.apply(&mut p, v);
                    }
                    (p.uid.clone(), p)
                })
                .collect()
        })
        .unwrap_or_default();
    send_configs(api, id, tx, state, pods.values()).await?;
    policed(covered, pods.keys().map(String::as_str)).await;
    let msg = {
        let mut s = lock(state);
        s.generation += 1;
        s.pods = pods;
        let mut list: Vec<proto::PodSpec> = s.pods.values().cloned().collect();
        list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        PlaneToNode::DesiredPods {
            generation: s.generation,
            pods: list,
        }
    };
    tx.send(msg)
        .await
        .map_err(|_| "session closed".to_string())?;
    Ok(rv)
}

/// Sends the ConfigMaps/Secrets these pods reference that the node does
/// not have at their current version.
async fn send_configs<'a>(
    api: &LocalApi,
    id: &Identity,
    tx: &mpsc::Sender<PlaneToNode>,
    state: &Mutex<SyncState>,
    pods: impl Iterator<Item = &'a proto::PodSpec>,
) -> Result<(), String> {
    let mut wanted = BTreeSet::new();
    for p in pods {
        for (kind, name) in config_refs(p) {
            wanted.insert((kind, p.namespace.clone(), name));
        }
    }
    for (kind, ns, name) in wanted {
        let plural = match kind {
            ConfigKind::ConfigMap => "configmaps",
            ConfigKind::Secret => "secrets",
        };
        let a = api
            .get(id, &format!("/api/v1/namespaces/{ns}/{plural}/{name}"))
            .await?;
        if !a.ok() {
            // Missing or not allowed: the node reports the container's
            // CreateContainerConfigError (or skips an optional reference).
            continue;
        }
        let rv = a
            .body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let key = (kind, ns.clone(), name.clone());
        if lock(state).configs.get(&key) == Some(&rv) {
            continue;
        }
        let obj = config_object(kind, &ns, &name, &rv, &a.body);
        tx.send(PlaneToNode::ConfigData(obj))
            .await
            .map_err(|_| "session closed".to_string())?;
        lock(state).configs.insert(key, rv);
    }
    Ok(())
}

fn config_object(
    kind: ConfigKind,
    ns: &str,
    name: &str,
    rv: &str,
    obj: &Value,
) -> proto::ConfigObject {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data: Vec<(String, Vec<u8>)> = Vec::new();
    let field = |k: &str| {
        obj.get(k)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    match kind {
        ConfigKind::ConfigMap => {
            for (k, v) in field("data") {
                data.push((k, v.as_str().unwrap_or("").as_bytes().to_vec()));
            }
            for (k, v) in field("binaryData") {
                data.push((k, b64.decode(v.as_str().unwrap_or("")).unwrap_or_default()));
            }
        }
        ConfigKind::Secret => {
            for (k, v) in field("data") {
                data.push((k, b64.decode(v.as_str().unwrap_or("")).unwrap_or_default()));
            }
        }
    }
    data.sort();
    proto::ConfigObject {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
        resource_version: rv.to_string(),
        data,
    }
}

struct WatchCtx<'a> {
    api: &'a LocalApi,
    id: &'a Identity,
    tx: &'a mpsc::Sender<PlaneToNode>,
    state: &'a Mutex<SyncState>,
    resync: &'a Notify,
    deltas: bool,
    covered: Option<&'a Covered>,
}

/// Holds pods back until the NetworkPolicy sets the session sent cover
/// them (no wait on a session without NetworkPolicy).
async fn policed<'a>(covered: Option<&Covered>, uids: impl IntoIterator<Item = &'a str>) {
    if let Some(c) = covered {
        crate::network_policy::wait_covered(&mut c.clone(), uids).await;
    }
}

/// Follows the watch until it ends (timeout, compaction, error). Also
/// resends pods whose image pull state changed.
async fn watch(
    ctx: &WatchCtx<'_>,
    selector: &str,
    rv: String,
    mut images: Option<&mut (Arc<NodeImages>, mpsc::UnboundedReceiver<String>)>,
) -> Result<(), String> {
    let WatchCtx {
        api,
        id,
        tx,
        state,
        resync,
        deltas,
        covered,
    } = *ctx;
    let path = format!(
        "/api/v1/pods?watch=1&fieldSelector={selector}&resourceVersion={rv}&allowWatchBookmarks=true"
    );
    let resp = api
        .request(id, Method::GET, &path, "application/json", Vec::new())
        .await?;
    if !resp.status().is_success() {
        return Err(format!("watch answered {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            Some(uid) = async {
                match images.as_mut() {
                    Some((_, rx)) => rx.recv().await,
                    None => std::future::pending().await,
                }
            } => {
                let Some((imgs, _)) = images.as_ref() else { continue };
                let updated = lock(state).pods.get(&uid).cloned().and_then(|mut p| {
                    imgs.refresh(&mut p).then_some(p)
                });
                if let Some(p) = updated {
                    let msg = change(state, Some(p), None, deltas);
                    tx.send(msg).await.map_err(|_| "session closed".to_string())?;
                }
                continue;
            }
            _ = resync.notified() => {
                let msg = {
                    let s = lock(state);
                    let mut list: Vec<proto::PodSpec> = s.pods.values().cloned().collect();
                    list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
                    PlaneToNode::DesiredPods { generation: s.generation, pods: list }
                };
                tx.send(msg).await.map_err(|_| "session closed".to_string())?;
                continue;
            }
        };
        let Some(frame) = frame else {
            return Ok(());
        };
        let frame = frame.map_err(|e| e.to_string())?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(ev) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            match ev.get("type").and_then(Value::as_str) {
                Some("ADDED" | "MODIFIED") => {
                    remove_if_terminal(api, id, &ev["object"]).await;
                    let mut p = pod_spec(&ev["object"]);
                    if let Some((imgs, _)) = images.as_ref() {
                        imgs.apply(&mut p, &ev["object"]);
                    }
                    if lock(state).pods.get(&p.uid) == Some(&p) {
                        continue;
                    }
                    send_configs(api, id, tx, state, std::iter::once(&p)).await?;
                    policed(covered, [p.uid.as_str()]).await;
                    let msg = change(state, Some(p), None, deltas);
                    tx.send(msg)
                        .await
                        .map_err(|_| "session closed".to_string())?;
                }
                Some("DELETED") => {
                    let uid = ev
                        .pointer("/object/metadata/uid")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    if let Some((imgs, _)) = images.as_ref() {
                        imgs.forget(&uid);
                    }
                    if !lock(state).pods.contains_key(&uid) {
                        continue;
                    }
                    let msg = change(state, None, Some(uid), deltas);
                    tx.send(msg)
                        .await
                        .map_err(|_| "session closed".to_string())?;
                }
                Some("ERROR") => return Err(format!("watch error: {}", ev["object"]["message"])),
                _ => {}
            }
        }
    }
}

/// A pod being deleted that the node already reported terminal
/// (Succeeded/Failed: no container will run again) has nothing left to
/// stop; remove it now, as the kubelet does, instead of waiting for a
/// status that will not change.
async fn remove_if_terminal(api: &LocalApi, id: &Identity, pod: &Value) {
    let terminal = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !terminal || pod.pointer("/metadata/deletionTimestamp").is_none() {
        return;
    }
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let _ = api
        .call(
            id,
            Method::DELETE,
            &format!("/api/v1/namespaces/{ns}/pods/{name}"),
            "application/json",
            Some(&serde_json::json!({"gracePeriodSeconds": 0})),
        )
        .await;
}

/// Applies one change to the sent state and returns the frame for it.
fn change(
    state: &Mutex<SyncState>,
    upsert: Option<proto::PodSpec>,
    remove: Option<String>,
    deltas: bool,
) -> PlaneToNode {
    let mut s = lock(state);
    let from = s.generation;
    s.generation += 1;
    if let Some(p) = &upsert {
        s.pods.insert(p.uid.clone(), p.clone());
    }
    if let Some(uid) = &remove {
        s.pods.remove(uid);
    }
    if deltas {
        PlaneToNode::PodDelta {
            from_generation: from,
            generation: s.generation,
            upserts: upsert.into_iter().collect(),
            removes: remove.into_iter().collect(),
        }
    } else {
        let mut list: Vec<proto::PodSpec> = s.pods.values().cloned().collect();
        list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        PlaneToNode::DesiredPods {
            generation: s.generation,
            pods: list,
        }
    }
}
