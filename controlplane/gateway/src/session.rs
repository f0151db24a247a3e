//! An authenticated node session (mutual TLS, `system:node:<name>`):
//! hello, registration, then the node's messages applied to the API as the
//! node itself, while [`crate::pod_sync`] pushes it its pods. Frames are
//! handled one at a time, in order, so a `Ping` answered after a
//! `LeaseRenew` proves the renewal was stored.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hyper::Method;
use serde_json::{Value, json};
use skiff_apiserver::Identity;
use skiff_node_proto::{
    self as proto, Capabilities, FrameError, Hello, MAX_FRAME, NodeToPlane, PlaneToNode,
    RefusalReason, Welcome,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use crate::Shared;
use crate::bootstrap::{not_after, send_refusal};
use crate::images::{self, NodeImages};
use crate::local_api::{Answer, LocalApi, node_identity};
use crate::logs::NodeLogs;
use crate::metrics::Metrics;
use crate::node_objects as objects;
use crate::pod_network;
use crate::pod_sync::{self, SyncState};
use crate::timefmt::now_millis;
use crate::tunnels::NodeTunnels;
use crate::wire::{Counted, ReadError, read_frame, write_frame};

/// What this gateway offers.
pub const CAPABILITIES: Capabilities = Capabilities::POD_DELTA
    .union(Capabilities::CERT_ROTATION)
    .union(Capabilities::LOG_FOLLOW)
    .union(Capabilities::WASM)
    .union(Capabilities::TUNNEL);

/// Queue of frames to one node; a node that stops reading is cut off rather
/// than growing it without bound.
const OUT_QUEUE: usize = 1024;

/// Refuses a connection with a logged reason and closes it.
pub async fn refuse<S: AsyncWrite + Unpin>(
    shared: &Shared,
    mut s: S,
    peer: SocketAddr,
    reason: RefusalReason,
    message: String,
) {
    let message = if message.contains(&peer.to_string()) {
        message
    } else {
        format!("{peer}: {message}")
    };
    send_refusal(shared, &mut s, reason, message).await;
}

/// Reads and answers the hello; `None` when the connection was closed.
pub async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
    shared: &Shared,
    s: &mut S,
    who: &str,
    max: usize,
) -> Option<Hello> {
    let first = tokio::time::timeout(
        shared.cfg.handshake_timeout,
        read_frame::<NodeToPlane, _>(s, max),
    )
    .await;
    let hello = match first {
        Ok(Ok(NodeToPlane::Hello(h))) => h,
        Ok(Ok(_)) => {
            send_refusal(
                shared,
                s,
                RefusalReason::ProtocolError,
                format!("{who}: the first frame must be Hello"),
            )
            .await;
            return None;
        }
        Ok(Err(e)) => {
            shared.journal.log(format!("{who}: closing: {e}"));
            return None;
        }
        Err(_) => {
            shared
                .journal
                .log(format!("{who}: closing: no hello in time"));
            return None;
        }
    };
    let Some(version) = proto::negotiate(hello.min_version, hello.max_version) else {
        send_refusal(
            shared,
            s,
            RefusalReason::UnsupportedVersion {
                min: proto::MIN_PROTOCOL_VERSION,
                max: proto::PROTOCOL_VERSION,
            },
            format!(
                "{who}: node speaks versions {}..={}",
                hello.min_version, hello.max_version
            ),
        )
        .await;
        return None;
    };
    let welcome = PlaneToNode::Welcome(Welcome {
        version,
        capabilities: CAPABILITIES.intersect(hello.capabilities),
        server_time: now_millis(),
    });
    if let Err(e) = write_frame(s, &welcome, max).await {
        shared.journal.log(format!("{who}: closing: {e}"));
        return None;
    }
    Some(hello)
}

/// Per-session state shared with the pod sync task.
struct Session {
    shared: Arc<Shared>,
    node: String,
    who: String,
    id: Identity,
    node_uid: String,
    tx: mpsc::Sender<PlaneToNode>,
    sync: Arc<Mutex<SyncState>>,
    resync: Arc<tokio::sync::Notify>,
    /// The node asked for the full Service state again.
    service_resync: Arc<tokio::sync::Notify>,
    logs: Arc<NodeLogs>,
    /// Tunnels to the node's pods.
    tunnels: Arc<NodeTunnels>,
    /// Image pulls for a node that runs wasm.
    images: Option<Arc<NodeImages>>,
}

pub async fn run<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    shared: Arc<Shared>,
    mut s: S,
    node: String,
    peer: SocketAddr,
    cert_der: Vec<u8>,
) {
    let who = format!("node {node} ({peer})");
    let Some(hello) = hello(&shared, &mut s, &who, MAX_FRAME).await else {
        return;
    };
    if hello.node_name != node {
        return refuse(
            &shared,
            s,
            peer,
            RefusalReason::NodeNameMismatch,
            format!(
                "{who}: hello names {:?} but the certificate is for {node:?}",
                hello.node_name
            ),
        )
        .await;
    }
    let info = match tokio::time::timeout(
        shared.cfg.handshake_timeout,
        read_frame::<NodeToPlane, _>(&mut s, MAX_FRAME),
    )
    .await
    {
        Ok(Ok(NodeToPlane::Register(info))) if info.name == node => info,
        Ok(Ok(NodeToPlane::Register(info))) => {
            return refuse(
                &shared,
                s,
                peer,
                RefusalReason::NodeNameMismatch,
                format!("{who}: registration for {:?}", info.name),
            )
            .await;
        }
        Ok(Ok(_)) => {
            return refuse(
                &shared,
                s,
                peer,
                RefusalReason::ProtocolError,
                format!("{who}: expected Register after Hello"),
            )
            .await;
        }
        Ok(Err(e)) => return shared.journal.log(format!("{who}: closing: {e}")),
        Err(_) => {
            return shared
                .journal
                .log(format!("{who}: closing: no registration in time"));
        }
    };
    let id = node_identity(&node);
    let fresh = shared.take_issued(&node, &cert_der);
    let (node_uid, pod_cidrs) = match register(&shared, &id, &info, fresh).await {
        Ok(registered) => registered,
        Err(e) => {
            return refuse(
                &shared,
                s,
                peer,
                RefusalReason::Forbidden,
                format!("{who}: registration failed: {e}"),
            )
            .await;
        }
    };
    let registered = PlaneToNode::Registered(proto::Registered {
        node_uid: node_uid.clone(),
        lease_duration_secs: shared.cfg.lease_duration_secs,
        renew_interval_ms: shared.cfg.renew_interval.as_millis() as u32,
        node_status_report_ms: shared.cfg.node_status_report.as_millis() as u32,
        pod_cidrs: pod_cidrs.clone(),
    });
    if let Err(e) = write_frame(&mut s, &registered, MAX_FRAME).await {
        return shared.journal.log(format!("{who}: closing: {e}"));
    }
    Metrics::inc(&shared.metrics.sessions);
    let _live = shared.live_guard(&node);
    shared.journal.log(format!("{who}: registered"));

    let (rd, mut wr) = tokio::io::split(s);
    let (tx, mut rx) = mpsc::channel::<PlaneToNode>(OUT_QUEUE);
    let writer_who = who.clone();
    let writer_shared = shared.clone();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            Metrics::inc(&writer_shared.metrics.frames_out);
            match write_frame(&mut wr, &m, MAX_FRAME).await {
                Ok(n) => Metrics::add(&writer_shared.metrics.bytes_out, n),
                Err(e) => {
                    writer_shared
                        .journal
                        .log(format!("{writer_who}: write failed: {e}"));
                    break;
                }
            }
            if matches!(m, PlaneToNode::Goodbye { .. } | PlaneToNode::Refused(_)) {
                break;
            }
        }
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut wr).await;
    });
    let caps = CAPABILITIES.intersect(hello.capabilities);
    let version = proto::negotiate(hello.min_version, hello.max_version).unwrap_or(0);
    let tunnels = shared.tunnels.attach(
        &node,
        tx.clone(),
        version >= 5 && caps.contains(Capabilities::TUNNEL),
    );
    let logs = shared
        .logs
        .attach(&node, tx.clone(), caps.contains(Capabilities::LOG_FOLLOW));
    let (images, image_changes) = match (&shared.cfg.images, caps.contains(Capabilities::WASM)) {
        (Some(svc), true) => {
            let (i, rx) = NodeImages::new(shared.clone(), svc.0.clone(), node.clone(), id.clone());
            (Some(i), Some(rx))
        }
        _ => (None, None),
    };
    let sess = Arc::new(Session {
        shared: shared.clone(),
        node: node.clone(),
        who: who.clone(),
        id,
        node_uid,
        tx: tx.clone(),
        sync: Arc::new(Mutex::new(SyncState::default())),
        resync: Arc::new(tokio::sync::Notify::new()),
        service_resync: Arc::new(tokio::sync::Notify::new()),
        logs,
        tunnels,
        images: images.clone(),
    });
    // Services for the node's proxy: only a node speaking version 3 knows
    // the messages; NetworkPolicy needs version 4.
    let (covering, covered) = crate::network_policy::coverage();
    let sync_task = tokio::spawn(pod_sync::run(
        shared.clone(),
        node.clone(),
        sess.id.clone(),
        tx.clone(),
        sess.sync.clone(),
        sess.resync.clone(),
        caps.contains(Capabilities::POD_DELTA),
        images.zip(image_changes),
        (version >= 4).then_some(covered),
    ));
    let services_task = (version >= 3).then(|| {
        tokio::spawn(crate::services::serve_node(
            shared.services.clone(),
            tx.clone(),
            sess.service_resync.clone(),
        ))
    });
    let network_task = (version >= 3 && pod_cidrs.is_empty()).then(|| {
        tokio::spawn(pod_network::send_when_assigned(
            shared.clone(),
            node.clone(),
            sess.id.clone(),
            tx.clone(),
        ))
    });
    let policy_task = (version >= 4).then(|| {
        tokio::spawn(crate::network_policy::serve_node(
            shared.network_policies.clone(),
            node.clone(),
            tx.clone(),
            covering,
        ))
    });
    let reason = tokio::select! {
        r = serve(&sess, Counted { inner: rd, bytes: &shared.metrics.bytes_in }) => r,
        r = revoked(&sess) => r,
    };
    sync_task.abort();
    for t in [services_task, network_task, policy_task]
        .into_iter()
        .flatten()
    {
        t.abort();
    }
    shared
        .logs
        .detach(&sess.logs, &format!("disconnected: {reason}"));
    shared.tunnels.detach(&sess.tunnels);
    shared.journal.log(format!("{who}: closing: {reason}"));
    if reason.node_is_listening() {
        let _ = tx.try_send(PlaneToNode::Goodbye {
            reason: reason.to_string(),
        });
    }
    drop(sess);
    drop(tx);
    let _ = writer.await;
    drop(_live);
    if !shared.is_live(&node) {
        shared.usage.forget(&node);
    }
}

/// Why a session ended.
#[derive(Debug)]
enum SessionEnd {
    /// The node said goodbye.
    NodeLeft(String),
    /// The node closed the connection.
    Closed,
    /// The connection broke or carried a malformed frame.
    Broken(ReadError),
    /// No frame for the grace period.
    Silent(std::time::Duration),
    /// The session's Node is gone.
    Revoked(String),
    /// A message could not be applied.
    Failed(String),
}

impl SessionEnd {
    /// Whether a Goodbye still reaches the node (not after it left).
    fn node_is_listening(&self) -> bool {
        !matches!(self, SessionEnd::NodeLeft(_) | SessionEnd::Closed)
    }
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::NodeLeft(why) => write!(f, "node said goodbye: {why}"),
            SessionEnd::Closed => f.write_str("connection closed"),
            SessionEnd::Broken(e) => write!(f, "{e}"),
            SessionEnd::Silent(grace) => write!(f, "node silent for {grace:?}"),
            SessionEnd::Revoked(why) => write!(f, "revoked: {why}"),
            SessionEnd::Failed(why) => f.write_str(why),
        }
    }
}

/// Reads frames until the connection ends; returns why. A node renews its
/// lease every `renew_interval`, so one silent for `node_grace` is gone (a
/// crash leaves no FIN): its session ends, and the node may bootstrap
/// again (a live session blocks that).
async fn serve<R: AsyncRead + Unpin>(sess: &Session, mut rd: R) -> SessionEnd {
    let grace = sess.shared.cfg.node_grace;
    loop {
        let read = tokio::time::timeout(grace, read_frame::<NodeToPlane, _>(&mut rd, MAX_FRAME));
        let Ok(read) = read.await else {
            return SessionEnd::Silent(grace);
        };
        let msg = match read {
            Ok(m) => m,
            Err(ReadError::Frame(FrameError::UnknownMessage { variant })) => {
                // A newer node's message: the stream is still in sync.
                sess.shared
                    .journal
                    .log(format!("{}: skipping unknown message {variant}", sess.who));
                continue;
            }
            Err(ReadError::Closed) => return SessionEnd::Closed,
            Err(e) => return SessionEnd::Broken(e),
        };
        Metrics::inc(&sess.shared.metrics.frames_in);
        if let Err(e) = handle(sess, msg).await {
            return e;
        }
    }
}

/// Records a node's event as kube's recorder does: the first of a series is
/// created, a repeat updates that Event's count and last time. A repeat
/// whose Event is gone (expired, deleted) creates it again with its count;
/// a first event sent again (after a reconnect) finds it there (409).
pub(crate) async fn record_event(
    api: &LocalApi,
    id: &Identity,
    node: &str,
    e: &proto::Event,
) -> Result<Answer, String> {
    let (ns, name, ev) = objects::event_object(node, e);
    let events = format!("/api/v1/namespaces/{ns}/events");
    if e.count > 1 {
        let a = api
            .merge_patch(id, &format!("{events}/{name}"), &objects::event_repeat(e))
            .await?;
        if a.code != 404 {
            return Ok(a);
        }
    }
    api.create(id, &events, &ev).await
}

fn send(sess: &Session, m: PlaneToNode) -> Result<(), SessionEnd> {
    sess.tx
        .try_send(m)
        .map_err(|_| SessionEnd::Failed("node is not reading its frames".into()))
}

/// Applies one message. `Err` closes the session with that reason; API
/// refusals are logged and the session goes on.
async fn handle(sess: &Session, msg: NodeToPlane) -> Result<(), SessionEnd> {
    let shared = &sess.shared;
    let api = &shared.api;
    let node = &sess.node;
    let result: Result<Answer, String> = match msg {
        NodeToPlane::LeaseRenew { renew_time, .. } => {
            let t = Instant::now();
            let a = renew_lease(sess, renew_time).await;
            shared.metrics.observe_lease(t.elapsed());
            a
        }
        NodeToPlane::NodeStatus(st) => {
            api.merge_patch(
                &sess.id,
                &format!("/api/v1/nodes/{node}/status"),
                &objects::node_status_update(&st),
            )
            .await
        }
        NodeToPlane::PodStatus(st) => pod_status(sess, st).await,
        NodeToPlane::Event(e) => record_event(api, &sess.id, node, &e).await,
        NodeToPlane::SyncAck { generation } => {
            sess.sync.lock().unwrap_or_else(|e| e.into_inner()).acked = generation;
            return Ok(());
        }
        NodeToPlane::ResyncRequest { .. } => {
            sess.resync.notify_one();
            return Ok(());
        }
        NodeToPlane::ServiceResyncRequest { .. } => {
            sess.service_resync.notify_one();
            return Ok(());
        }
        NodeToPlane::RenewCertificate { csr_der } => {
            // A Node deleted (or re-created by someone else) since this
            // session registered gets no new certificate.
            // Fails closed: when the API cannot say, the session ends and
            // the node, whose certificate is still valid, retries on its
            // next connection.
            match node_standing(sess).await {
                Standing::Stands => {}
                Standing::Gone(why) | Standing::Unknown(why) => {
                    return Err(SessionEnd::Failed(format!(
                        "certificate renewal refused: {why}"
                    )));
                }
            }
            return match shared.signer.sign(node, &csr_der) {
                Ok(der) => {
                    shared
                        .journal
                        .log(format!("{}: rotated its certificate", sess.who));
                    send(
                        sess,
                        PlaneToNode::Certificate {
                            chain_der: vec![der],
                            not_after: not_after(shared),
                        },
                    )
                }
                Err(e) => Err(SessionEnd::Failed(format!(
                    "certificate renewal refused: {e}"
                ))),
            };
        }
        NodeToPlane::Ping { nonce } => return send(sess, PlaneToNode::Pong { nonce }),
        NodeToPlane::LogChunk {
            stream,
            data,
            eof,
            error,
        } => {
            if let Some(cancel) = sess.logs.chunk(stream, data, eof, error) {
                // Best effort: the node also stops when the stream's
                // container ends or the session closes.
                let _ = sess.tx.try_send(cancel);
            }
            return Ok(());
        }
        NodeToPlane::Pong { .. } => return Ok(()),
        NodeToPlane::Tunnel { tunnel, frame } => {
            return match sess.tunnels.on_frame(tunnel, frame) {
                Some(reply) => send(sess, reply),
                None => Ok(()),
            };
        }
        NodeToPlane::FetchArtifact {
            digest,
            offset,
            len,
        } => {
            return send(
                sess,
                images::fetch(sess.images.as_deref(), &digest, offset, len),
            );
        }
        NodeToPlane::Usage(report) => {
            Metrics::inc(&shared.metrics.usage_reports);
            shared.usage.report(node, report);
            return Ok(());
        }
        NodeToPlane::Goodbye { reason } => return Err(SessionEnd::NodeLeft(reason)),
        NodeToPlane::Hello(_) | NodeToPlane::Bootstrap { .. } | NodeToPlane::Register(_) => {
            return Err(SessionEnd::Failed(
                "protocol error: handshake message in an established session".into(),
            ));
        }
    };
    match result {
        Ok(a) if a.ok() => {}
        Ok(a) => shared
            .journal
            .log(format!("{}: API refused: {}", sess.who, a.message())),
        Err(e) => shared
            .journal
            .log(format!("{}: API call failed: {e}", sess.who)),
    }
    Ok(())
}

/// Whether this session's Node still stands, as the API says.
enum Standing {
    Stands,
    /// Deleted, being deleted, or re-created with another uid.
    Gone(String),
    /// The API could not say (error or unexpected reply).
    Unknown(String),
}

async fn node_standing(sess: &Session) -> Standing {
    let path = format!("/api/v1/nodes/{}", sess.node);
    let a = match sess
        .shared
        .api
        .get(&crate::local_api::gateway_identity(), &path)
        .await
    {
        Ok(a) => a,
        Err(e) => return Standing::Unknown(format!("reading Node {}: {e}", sess.node)),
    };
    if a.code == 404 {
        return Standing::Gone(format!("Node {} was deleted", sess.node));
    }
    if !a.ok() {
        return Standing::Unknown(format!("reading Node {}: HTTP {}", sess.node, a.code));
    }
    if a.body.pointer("/metadata/deletionTimestamp").is_some() {
        return Standing::Gone(format!("Node {} is being deleted", sess.node));
    }
    let uid = a.body.pointer("/metadata/uid").and_then(Value::as_str);
    if uid != Some(sess.node_uid.as_str()) {
        return Standing::Gone(format!("Node {} was deleted and re-created", sess.node));
    }
    Standing::Stands
}

/// Ends when the session's Node is gone (checked every `node_grace`): a
/// deleted Node's session is closed, and its certificate alone does not
/// bring it back (see [`register`]).
async fn revoked(sess: &Session) -> SessionEnd {
    loop {
        tokio::time::sleep(sess.shared.cfg.node_grace).await;
        if let Standing::Gone(why) = node_standing(sess).await {
            return SessionEnd::Revoked(why);
        }
    }
}

/// Creates or updates the Node; returns its uid. Only a certificate fresh
/// from bootstrap (`fresh`) may create it: a Node an operator deleted stays
/// deleted until the node bootstraps again with a token.
async fn register(
    shared: &Shared,
    id: &Identity,
    info: &proto::NodeInfo,
    fresh: bool,
) -> Result<(String, Vec<String>), String> {
    let api = &shared.api;
    let node = &info.name;
    let path = format!("/api/v1/nodes/{node}");
    let obj = objects::node_object(info);
    let uid_of = |a: &Answer| {
        a.body
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let created = if fresh {
        api.create(id, "/api/v1/nodes", &obj).await?
    } else {
        // As if it existed: the patch below tells.
        Answer {
            code: 409,
            body: Value::Null,
        }
    };
    let uid = match created.code {
        201 => uid_of(&created),
        409 => {
            let labels = json!({"metadata": {"labels": obj["metadata"]["labels"]}});
            let a = api.merge_patch(id, &path, &labels).await?;
            if a.code == 404 && !fresh {
                return Err(format!(
                    "Node {node} does not exist (deleted?); a node certificate alone does not \
                     re-create it: bootstrap again with a token"
                ));
            }
            if !a.ok() {
                return Err(a.message());
            }
            uid_of(&a)
        }
        _ => return Err(created.message()),
    };
    let a = api
        .merge_patch(
            id,
            &format!("{path}/status"),
            &objects::node_status_patch(info, &objects::initial_conditions()),
        )
        .await?;
    if !a.ok() {
        return Err(a.message());
    }
    // Known when the node registered before (IPAM gives a new Node its
    // CIDR a moment after it is created).
    let pod_cidrs = pod_network::pod_cidrs(&a.body);
    let lease = objects::lease_object(node, &uid, shared.cfg.lease_duration_secs, now_millis());
    let a = api
        .create(
            id,
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            &lease,
        )
        .await?;
    if !(a.ok() || a.code == 409) {
        return Err(a.message());
    }
    Ok((uid, pod_cidrs))
}

async fn renew_lease(sess: &Session, renew_time: u64) -> Result<Answer, String> {
    let api = &sess.shared.api;
    let d = sess.shared.cfg.lease_duration_secs;
    let path = format!(
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{}",
        sess.node
    );
    let a = api
        .merge_patch(
            &sess.id,
            &path,
            &objects::lease_renew_patch(&sess.node, d, renew_time),
        )
        .await?;
    if a.code != 404 {
        return Ok(a);
    }
    // Deleted behind our back: create it again.
    api.create(
        &sess.id,
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
        &objects::lease_object(&sess.node, &sess.node_uid, d, renew_time),
    )
    .await
}

/// Writes a pod's status, but only for a pod this session gave the node:
/// the uid must match, so a status for a deleted and re-created pod of the
/// same name is dropped. A pod being deleted whose containers have all
/// stopped is then removed for good (what the kubelet does).
async fn pod_status(sess: &Session, st: proto::PodStatus) -> Result<Answer, String> {
    let known = {
        let sync = sess.sync.lock().unwrap_or_else(|e| e.into_inner());
        sync.pods.get(&st.uid).map(|p| {
            (
                p.namespace == st.namespace && p.name == st.name,
                p.deletion_grace_period_secs.is_some(),
            )
        })
    };
    let deleting = match known {
        Some((true, deleting)) => deleting,
        Some((false, _)) => {
            return Err(format!(
                "status for pod uid {} names {}/{}, which is not that pod",
                st.uid, st.namespace, st.name
            ));
        }
        None => {
            return Err(format!(
                "status for pod {}/{} (uid {}) that is not assigned to this node",
                st.namespace, st.name, st.uid
            ));
        }
    };
    let path = format!("/api/v1/namespaces/{}/pods/{}", st.namespace, st.name);
    let a = sess
        .shared
        .api
        .merge_patch(
            &sess.id,
            &format!("{path}/status"),
            &objects::pod_status_patch(&st),
        )
        .await?;
    let stopped = st
        .container_statuses
        .iter()
        .all(|c| matches!(c.state, proto::ContainerState::Terminated { .. }));
    if a.ok() && deleting && stopped {
        return sess
            .shared
            .api
            .call(
                &sess.id,
                Method::DELETE,
                &path,
                "application/json",
                Some(&json!({"gracePeriodSeconds": 0, "preconditions": {"uid": st.uid}})),
            )
            .await;
    }
    Ok(a)
}

/// Pods this session pushed, by uid.
pub type PodMap = HashMap<String, proto::PodSpec>;
