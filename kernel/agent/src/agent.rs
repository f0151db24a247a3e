//! The connection manager: one state machine from "no certificate" to a
//! registered, heartbeating node, and back to reconnecting when the link
//! drops. No I/O: the driver connects TCP when [`Agent::connect_at`] says,
//! moves bytes and calls [`Agent::on_timer`] at [`Agent::next_wakeup`].
//!
//! ```text
//!  Idle ──connect──> [no cert] BootstrapHello ─Welcome─> BootstrapCert ─Certificate─┐
//!   ^                 [cert]   Hello ─Welcome─> Registering ─Registered─> Running   │
//!   └──── closed / error / rotated (back-off with jitter; immediate after a ────────┘
//!         new certificate)
//! ```
//!
//! Invariants:
//! - the kubelet (and so every pod) outlives connections: after a reconnect
//!   the node re-registers and the kubelet resends its full state;
//! - a connection that has not reached `Running` within
//!   [`HANDSHAKE_TIMEOUT`] is abandoned;
//! - the certificate is renewed over the live session at 80 % of its
//!   lifetime; the node then reconnects with it.

use alloc::string::{String, ToString as _};
use alloc::sync::Arc;
use alloc::vec::Vec;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use skiff_kubelet::{Kubelet, LogSource, LogStreams, MILLI, Nanos, Prober, Runtime, SEC};
use skiff_node_proto::{
    self as proto, Capabilities, FrameDecoder, FrameError, MAX_BOOTSTRAP_FRAME, MAX_FRAME,
    NodeInfo, NodeToPlane, PlaneToNode, RefusalReason, encode_frame,
};
use skiff_proxy::ServiceTable;

use crate::artifacts::ArtifactStore;
use crate::identity::{IdentityError, NodeKey};
use crate::network_policy::NetworkPolicies;
use crate::saved::{self, SavedError};
use crate::tls::{self, Clock, TlsClient, TlsError};
use crate::tunnels::{PodDialer, Tunnels};

/// A connection must be registered within this time.
pub const HANDSHAKE_TIMEOUT: Nanos = 10 * SEC;
/// Reconnect back-off: first delay, cap, and cap after a refusal that
/// retrying will not fix by itself (a wrong token).
pub const BACKOFF_INITIAL: Nanos = 200 * MILLI;
pub const BACKOFF_MAX: Nanos = 30 * SEC;
pub const BACKOFF_REFUSED: Nanos = 60 * SEC;

/// What a node is told at boot.
#[derive(Clone)]
pub struct AgentConfig {
    /// Registration data (name, boot id, addresses, capacity, versions).
    pub node: NodeInfo,
    /// The gateway's name as its certificate says (its IP address here).
    pub gateway: ServerName<'static>,
    /// The cluster CA: the only trust anchor.
    pub ca: Vec<CertificateDer<'static>>,
    /// `id.secret` bootstrap token.
    pub token: String,
    /// e.g. `"skiff-kernel 0.1.0 build=…"`.
    pub software: String,
}

// By hand: the bootstrap token's secret must not reach a log.
impl core::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let id = self.token.split_once('.').map_or("", |(id, _)| id);
        f.debug_struct("AgentConfig")
            .field("node", &self.node)
            .field("gateway", &self.gateway)
            .field("token", &format_args!("{id}.<redacted>"))
            .field("software", &self.software)
            .finish_non_exhaustive()
    }
}

/// Bytes of compiled wasm artifacts a node keeps (artifacts in use are kept
/// beyond it).
pub const ARTIFACT_CACHE_BYTES: usize = 16 << 20;

/// What this agent implements: pod deltas, certificate rotation, followed
/// logs. A node whose runtime runs wasm adds [`Capabilities::WASM`]
/// ([`Agent::advertise`]).
pub const CAPABILITIES: Capabilities = Capabilities::POD_DELTA
    .union(Capabilities::CERT_ROTATION)
    .union(Capabilities::LOG_FOLLOW);

/// The node's Service table, shared between the agent (which keeps it
/// current from the plane's `Services`/`ServiceDelta` messages) and the
/// kernel's socket calls and name lookups (which resolve through it).
pub type Services = Arc<spin::Mutex<ServiceTable>>;

/// Something worth a log line on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub level: Level,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// Why [`Agent::on_connected`] could not start on a connection: a local
/// fault. The driver closes it and calls [`Agent::on_closed`].
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectError {
    /// No TLS client: the cluster CA, the node's certificate or key is
    /// unusable, or rustls refused to start.
    Tls(TlsError),
    /// The node's key does not encode.
    Identity(IdentityError),
    /// The hello could not be encoded or queued.
    Hello(LinkError),
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectError::Tls(e) => e.fmt(f),
            ConnectError::Identity(e) => e.fmt(f),
            ConnectError::Hello(e) => write!(f, "sending hello: {e}"),
        }
    }
}

impl core::error::Error for ConnectError {}

/// Why the agent ends a connection: the driver flushes
/// [`Agent::take_outgoing`], closes it and calls [`Agent::on_closed`].
#[derive(Debug, Clone, PartialEq)]
pub enum LinkError {
    /// Data or a message without a connection.
    NotConnected,
    Tls(TlsError),
    /// The gateway sent a frame that does not decode.
    BadFrame(FrameError),
    /// A message of ours does not fit a frame.
    Encode(FrameError),
    /// The gateway refused us (a bad token backs off hard; a certificate
    /// it no longer accepts is dropped so the next connection bootstraps).
    Refused {
        reason: RefusalReason,
        message: String,
    },
    /// The gateway ended the session.
    Goodbye(String),
    /// The handshake did not reach `Running` in time.
    HandshakeTimeout(Phase),
    /// The gateway broke the protocol: a message out of place, a
    /// certificate we did not ask for, an empty chain.
    Protocol(String),
    /// The node's key or CSR could not be made (no randomness).
    Identity(IdentityError),
}

impl core::fmt::Display for LinkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LinkError::NotConnected => f.write_str("not connected"),
            LinkError::Tls(e) => e.fmt(f),
            LinkError::BadFrame(e) => write!(f, "bad frame from the gateway: {e}"),
            LinkError::Encode(e) => write!(f, "encoding a message: {e}"),
            LinkError::Refused { reason, message } => {
                write!(f, "refused by the gateway ({reason:?}): {message}")
            }
            LinkError::Goodbye(reason) => write!(f, "gateway said goodbye: {reason}"),
            LinkError::HandshakeTimeout(phase) => {
                write!(f, "handshake timed out in phase {phase:?}")
            }
            LinkError::Protocol(m) => f.write_str(m),
            LinkError::Identity(e) => e.fmt(f),
        }
    }
}

impl core::error::Error for LinkError {}

impl From<TlsError> for LinkError {
    fn from(e: TlsError) -> LinkError {
        LinkError::Tls(e)
    }
}

/// Where the link stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle,
    BootstrapHello,
    BootstrapCert,
    Hello,
    Registering,
    Running,
}

/// The node's certificate chain (leaf first) and key, as the gateway last
/// issued them ([`Agent::credentials`]).
#[derive(Debug)]
pub struct Credentials {
    pub chain: Vec<CertificateDer<'static>>,
    /// PKCS#8.
    pub key: PrivateKeyDer<'static>,
    /// Unix ms.
    pub not_after_ms: u64,
}

struct Creds {
    key: NodeKey,
    chain: Vec<CertificateDer<'static>>,
    issued_ms: u64,
    not_after_ms: u64,
}

impl Creds {
    fn rotate_at_ms(&self) -> u64 {
        self.issued_ms + self.not_after_ms.saturating_sub(self.issued_ms) * 8 / 10
    }
}

struct Conn {
    tls: TlsClient,
    dec: FrameDecoder<PlaneToNode>,
    opened: Nanos,
    /// Set when we are done with this connection (rotation, bootstrap).
    closing: bool,
}

/// The node agent. See the module docs.
pub struct Agent {
    cfg: AgentConfig,
    clock: Clock,
    kubelet: Kubelet,
    /// `kubectl logs` streams of the current connection.
    logs: LogStreams,
    /// Compiled wasm artifacts, shared with the runtime.
    artifacts: ArtifactStore,
    /// The cluster's Services, shared with the kernel's sockets and DNS.
    services: Services,
    /// What NetworkPolicy allows the node's pods, shared with the kernel's
    /// sockets.
    network_policies: NetworkPolicies,
    /// Port-forward and proxy tunnels to the node's pods.
    tunnels: Tunnels,
    capabilities: Capabilities,
    phase: Phase,
    conn: Option<Conn>,
    creds: Option<Creds>,
    /// `creds` changed since the driver last took them to keep on disk.
    creds_unsaved: bool,
    /// A key whose renewal CSR is in flight.
    renewing: Option<NodeKey>,
    backoff: Nanos,
    reconnect_at: Nanos,
    /// The connection is closing on purpose: reconnect at once.
    planned: bool,
    /// The heartbeat in flight: the `Ping` nonce sent after a `LeaseRenew`
    /// (its lease `seq`) and when.
    heartbeat: Option<(u64, Nanos)>,
    notes: Vec<Note>,
    /// Counters for the status report.
    pub stats: Stats,
}

/// Link counters, for the driver's reports (the hollow node's fleet
/// figures).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub connects: u32,
    pub bootstraps: u32,
    pub sessions: u32,
    pub rotations: u32,
    /// Connections the gateway refused (`Refused`).
    pub refusals: u32,
    pub frames_in: u64,
    pub frames_out: u64,
    /// Heartbeats answered: a `LeaseRenew` followed by a `Ping`, whose
    /// `Pong` means the renewal is stored (the gateway handles a node's
    /// frames in order).
    pub heartbeats: u64,
    /// The last heartbeat's round trip.
    pub heartbeat_rtt: Nanos,
    /// `kubectl logs` requests served, and cancels received.
    pub log_requests: u64,
    pub log_cancels: u64,
}

impl core::fmt::Debug for Agent {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Agent")
            .field("phase", &self.phase)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl Agent {
    pub fn new(cfg: AgentConfig, clock: Clock, kubelet: Kubelet) -> Agent {
        let services = Arc::new(spin::Mutex::new(ServiceTable::new(&cfg.node.name)));
        Agent {
            cfg,
            clock,
            kubelet,
            logs: LogStreams::new(),
            artifacts: ArtifactStore::new(ARTIFACT_CACHE_BYTES),
            services,
            network_policies: NetworkPolicies::default(),
            tunnels: Tunnels::default(),
            capabilities: CAPABILITIES,
            phase: Phase::Idle,
            conn: None,
            creds: None,
            creds_unsaved: false,
            renewing: None,
            backoff: BACKOFF_INITIAL,
            reconnect_at: 0,
            planned: false,
            heartbeat: None,
            notes: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn kubelet(&self) -> &Kubelet {
        &self.kubelet
    }

    pub fn kubelet_mut(&mut self) -> &mut Kubelet {
        &mut self.kubelet
    }

    /// The node's artifact cache: the runtime asks it for artifacts, the
    /// agent fetches them from the plane.
    pub fn artifacts(&self) -> ArtifactStore {
        self.artifacts.clone()
    }

    /// The node's Service table (a shared handle; kept across reconnects,
    /// replaced by the full state each new session sends): the kernel
    /// resolves pods' connects, node ports and cluster names through it.
    pub fn services(&self) -> Services {
        self.services.clone()
    }

    /// The NetworkPolicy verdicts for the node's pods (a shared handle;
    /// kept across reconnects, so a pod isolated before a reconnect stays
    /// isolated; replaced whole by each plane message).
    pub fn network_policies(&self) -> NetworkPolicies {
        self.network_policies.clone()
    }

    /// Adds what the node's runtime can do (e.g. [`Capabilities::WASM`]) to
    /// the next hello.
    pub fn advertise(&mut self, caps: Capabilities) {
        self.capabilities = self.capabilities.union(caps);
    }

    /// Lets the plane open tunnels to this node's pods (`kubectl
    /// port-forward`, `pods/proxy`) through `dialer`; advertises it.
    pub fn set_pod_dialer(&mut self, dialer: alloc::boxed::Box<dyn PodDialer>) {
        self.tunnels.set_dialer(dialer);
        self.advertise(Capabilities::TUNNEL);
    }

    /// Ready when a tunnel has bytes to move (the driver should then call
    /// [`Agent::on_timer`]); else `waker` is woken when one has.
    pub fn poll_tunnels(&self, waker: &core::task::Waker) -> core::task::Poll<()> {
        self.tunnels.poll_ready(waker)
    }

    /// Tunnels open now, and opened since boot.
    pub fn tunnel_counts(&self) -> (usize, u64) {
        (self.tunnels.len(), self.tunnels.opened)
    }

    /// The certificate and key this node holds, if any: for a driver that
    /// shows or hands them on (the hollow node's tests use them to speak
    /// the protocol by hand).
    pub fn credentials(&self) -> Result<Option<Credentials>, IdentityError> {
        let Some(c) = &self.creds else {
            return Ok(None);
        };
        Ok(Some(Credentials {
            chain: c.chain.clone(),
            key: c.key.private_key_der()?,
            not_after_ms: c.not_after_ms,
        }))
    }

    /// The credentials to keep on the node's disk, once each time they
    /// change (a bootstrap, a rotation): a record for
    /// [`Agent::restore_credentials`] at the next boot. The record holds
    /// the node's private key: the disk must be the node's alone.
    pub fn take_credentials_to_save(&mut self) -> Option<Vec<u8>> {
        if !core::mem::take(&mut self.creds_unsaved) {
            return None;
        }
        let c = self.creds.as_ref()?;
        let key = c.key.private_key_der().ok()?;
        Some(
            saved::Record {
                node: self.cfg.node.name.clone(),
                ca_sha256: saved::ca_fingerprint(self.cfg.ca.first()?.as_ref()),
                issued_ms: c.issued_ms,
                not_after_ms: c.not_after_ms,
                key_pkcs8: key.secret_der().to_vec(),
                chain: c.chain.iter().map(|d| d.to_vec()).collect(),
            }
            .encode(),
        )
    }

    /// Takes credentials kept from an earlier boot, so the next connection
    /// uses them instead of bootstrapping: refused (and the node bootstraps
    /// as usual) unless the record is intact and is this node's, for this
    /// cluster's CA, not yet expired. A certificate the plane no longer
    /// accepts (a deleted node) is dropped when refused, as any other.
    pub fn restore_credentials(&mut self, record: &[u8], now: Nanos) -> Result<(), SavedError> {
        let r = saved::Record::decode(record)?;
        if r.node != self.cfg.node.name {
            return Err(SavedError::OtherNode(r.node));
        }
        let ca = self
            .cfg
            .ca
            .first()
            .map(|c| saved::ca_fingerprint(c.as_ref()));
        if ca != Some(r.ca_sha256) {
            return Err(SavedError::OtherCluster);
        }
        // Without a wall clock (no RTC) the plane's TLS check decides.
        let clock_known = self.kubelet.config().boot_wall_ms != 0;
        if clock_known && self.wall_ms(now) >= r.not_after_ms {
            return Err(SavedError::Expired(r.not_after_ms));
        }
        let key = NodeKey::from_pkcs8(&r.key_pkcs8).ok_or(SavedError::BadKey)?;
        self.creds = Some(Creds {
            key,
            chain: r.chain.into_iter().map(CertificateDer::from).collect(),
            issued_ms: r.issued_ms,
            not_after_ms: r.not_after_ms,
        });
        self.note(
            Level::Info,
            alloc::format!(
                "credentials restored for system:node:{} (valid until unix_ms={})",
                self.cfg.node.name,
                r.not_after_ms
            ),
        );
        Ok(())
    }

    /// When to open the next TCP connection (`None` while connected).
    pub fn connect_at(&self) -> Option<Nanos> {
        (self.phase == Phase::Idle).then_some(self.reconnect_at)
    }

    /// Log lines since the last call.
    pub fn take_notes(&mut self) -> Vec<Note> {
        core::mem::take(&mut self.notes)
    }

    fn note(&mut self, level: Level, message: String) {
        self.notes.push(Note { level, message });
    }

    fn wall_ms(&self, now: Nanos) -> u64 {
        self.kubelet.config().boot_wall_ms + now / MILLI
    }

    /// The TCP connection is up: start TLS (server-only when we have no
    /// certificate yet) and say hello.
    pub fn on_connected(&mut self, now: Nanos) -> Result<(), ConnectError> {
        self.stats.connects += 1;
        let bootstrap = self
            .creds
            .as_ref()
            .is_none_or(|c| self.wall_ms(now) >= c.not_after_ms);
        let local = |e: String| ConnectError::Tls(TlsError::Local(e));
        let config = match &self.creds {
            Some(c) if !bootstrap => tls::node_config(
                &self.cfg.ca,
                c.chain.clone(),
                c.key.private_key_der().map_err(ConnectError::Identity)?,
                &self.clock,
            )
            .map_err(local)?,
            _ => tls::bootstrap_config(&self.cfg.ca, &self.clock).map_err(local)?,
        };
        let max = if bootstrap {
            MAX_BOOTSTRAP_FRAME
        } else {
            MAX_FRAME
        };
        self.conn = Some(Conn {
            tls: TlsClient::new(config, self.cfg.gateway.clone()).map_err(ConnectError::Tls)?,
            dec: FrameDecoder::new(max),
            opened: now,
            closing: false,
        });
        self.phase = if bootstrap {
            Phase::BootstrapHello
        } else {
            Phase::Hello
        };
        let hello = NodeToPlane::Hello(proto::Hello {
            min_version: proto::MIN_PROTOCOL_VERSION,
            max_version: proto::PROTOCOL_VERSION,
            node_name: self.cfg.node.name.clone(),
            capabilities: self.capabilities,
            software: self.cfg.software.clone(),
        });
        self.send(&hello).map_err(ConnectError::Hello)
    }

    fn send(&mut self, m: &NodeToPlane) -> Result<(), LinkError> {
        let conn = self.conn.as_mut().ok_or(LinkError::NotConnected)?;
        let max = conn.dec.max();
        let frame = encode_frame(m, max).map_err(LinkError::Encode)?;
        self.stats.frames_out += 1;
        Ok(conn.tls.send(&frame)?)
    }

    /// Ciphertext for the socket.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        self.conn
            .as_mut()
            .map(|c| c.tls.take_outgoing())
            .unwrap_or_default()
    }

    /// True when the driver should close the connection (after sending
    /// what [`Agent::take_outgoing`] returns) and call [`Agent::on_closed`].
    pub fn should_close(&self) -> bool {
        self.conn
            .as_ref()
            .is_some_and(|c| c.closing || c.tls.peer_closed())
    }

    /// Ciphertext from the socket. An `Err` means: close the connection and
    /// call [`Agent::on_closed`] with it.
    pub fn on_data<R: Runtime + LogSource, P: Prober>(
        &mut self,
        now: Nanos,
        data: &[u8],
        rt: &mut R,
        prober: &mut P,
    ) -> Result<(), LinkError> {
        let conn = self.conn.as_mut().ok_or(LinkError::NotConnected)?;
        conn.tls.receive(data)?;
        let plain = conn.tls.take_plaintext();
        let mut input = plain.as_slice();
        let mut msgs = Vec::new();
        while let Some(m) = conn.dec.push(&mut input) {
            msgs.push(m.map_err(LinkError::BadFrame)?);
        }
        for m in msgs {
            self.stats.frames_in += 1;
            self.handle(now, m, rt)?;
        }
        if self.phase == Phase::Running {
            self.on_timer(now, rt, prober)?;
        }
        Ok(())
    }

    fn handle<S: LogSource>(
        &mut self,
        now: Nanos,
        m: PlaneToNode,
        logs: &S,
    ) -> Result<(), LinkError> {
        match (self.phase, m) {
            (_, PlaneToNode::Refused(r)) => {
                self.stats.refusals += 1;
                Err(self.refused(r))
            }
            (_, PlaneToNode::Goodbye { reason }) => Err(LinkError::Goodbye(reason)),
            (Phase::BootstrapHello | Phase::Hello, PlaneToNode::Welcome(w)) => {
                if self.kubelet.config().boot_wall_ms == 0 {
                    // No RTC: take the plane's clock.
                    self.kubelet
                        .set_boot_wall_ms(w.server_time.saturating_sub(now / MILLI));
                }
                if self.phase == Phase::BootstrapHello {
                    let key = NodeKey::generate().map_err(LinkError::Identity)?;
                    let csr = key.csr(&self.cfg.node.name).map_err(LinkError::Identity)?;
                    self.renewing = Some(key);
                    self.phase = Phase::BootstrapCert;
                    self.send(&NodeToPlane::Bootstrap {
                        node_name: self.cfg.node.name.clone(),
                        token: self.cfg.token.clone(),
                        csr_der: csr,
                    })
                } else {
                    self.phase = Phase::Registering;
                    // Usage reports are protocol 5: an older plane gets none.
                    self.kubelet.set_usage_reports(
                        (w.version >= 5).then_some(proto::USAGE_REPORT_SECS * SEC),
                    );
                    self.send(&NodeToPlane::Register(self.cfg.node.clone()))
                }
            }
            (
                Phase::BootstrapCert,
                PlaneToNode::Certificate {
                    chain_der,
                    not_after,
                },
            ) => {
                self.stats.bootstraps += 1;
                self.install(now, chain_der, not_after)?;
                self.note(
                    Level::Info,
                    alloc::format!(
                        "bootstrap: certificate issued for system:node:{} (valid until unix_ms={not_after})",
                        self.cfg.node.name
                    ),
                );
                Ok(())
            }
            (Phase::Registering, m @ PlaneToNode::Registered(_)) => {
                self.kubelet.handle(&m);
                self.phase = Phase::Running;
                self.backoff = BACKOFF_INITIAL;
                self.stats.sessions += 1;
                let PlaneToNode::Registered(r) = &m else {
                    unreachable!()
                };
                self.note(
                    Level::Info,
                    alloc::format!(
                        "registered node={} uid={} lease_s={} renew_ms={}",
                        self.cfg.node.name,
                        r.node_uid,
                        r.lease_duration_secs,
                        r.renew_interval_ms
                    ),
                );
                Ok(())
            }
            (Phase::Running, PlaneToNode::Ping { nonce }) => {
                self.send(&NodeToPlane::Pong { nonce })
            }
            (Phase::Running, PlaneToNode::Pong { nonce }) => {
                if let Some((_, sent)) = self.heartbeat.take_if(|(n, _)| *n == nonce) {
                    self.stats.heartbeats += 1;
                    self.stats.heartbeat_rtt = now.saturating_sub(sent);
                }
                Ok(())
            }
            (
                Phase::Running,
                PlaneToNode::ArtifactChunk {
                    digest,
                    offset,
                    total,
                    data,
                    error,
                },
            ) => {
                self.artifacts
                    .on_chunk(&digest, offset, total, &data, error.as_deref());
                Ok(())
            }
            (
                Phase::Running,
                PlaneToNode::Certificate {
                    chain_der,
                    not_after,
                },
            ) => {
                if self.renewing.is_none() {
                    return Err(LinkError::Protocol(
                        "gateway sent a certificate we did not ask for".into(),
                    ));
                }
                self.stats.rotations += 1;
                self.install(now, chain_der, not_after)?;
                self.note(
                    Level::Info,
                    "certificate rotated; reconnecting with it".into(),
                );
                self.send(&NodeToPlane::Goodbye {
                    reason: "certificate rotated".into(),
                })
            }
            (
                Phase::Running,
                m @ (PlaneToNode::Services { .. } | PlaneToNode::ServiceDelta { .. }),
            ) => match self.on_services(m) {
                Some(reply) => self.send(&reply),
                None => Ok(()),
            },
            (Phase::Running, PlaneToNode::NetworkPolicies { pods }) => {
                self.network_policies.lock().replace(pods);
                Ok(())
            }
            (Phase::Running, PlaneToNode::Tunnel { tunnel, frame }) => self
                .tunnels
                .handle(tunnel, frame)
                .iter()
                .try_for_each(|r| self.send(r)),
            (Phase::Running, m) => {
                match m {
                    PlaneToNode::LogRequest(_) => self.stats.log_requests += 1,
                    PlaneToNode::LogCancel { .. } => self.stats.log_cancels += 1,
                    _ => {}
                }
                if let Some(replies) = self.logs.handle(&m, &self.kubelet, logs) {
                    return replies.iter().try_for_each(|r| self.send(r));
                }
                match self.kubelet.handle(&m) {
                    Some(reply) => self.send(&reply),
                    None => Ok(()),
                }
            }
            (phase, m) => Err(LinkError::Protocol(alloc::format!(
                "unexpected {} from the gateway in phase {phase:?}",
                kind(&m)
            ))),
        }
    }

    /// Applies a Service message to the table; a delta that does not apply
    /// is answered with a request for the full state.
    fn on_services(&mut self, m: PlaneToNode) -> Option<NodeToPlane> {
        let mut table = self.services.lock();
        match m {
            PlaneToNode::Services {
                generation,
                services,
                more,
            } => {
                table.apply_full(generation, services, more);
                None
            }
            PlaneToNode::ServiceDelta {
                from_generation,
                generation,
                upserts,
                removes,
            } => match table.apply_delta(from_generation, generation, upserts, &removes) {
                Ok(()) => None,
                Err(skiff_proxy::ApplyError::Generation { have, .. }) => {
                    Some(NodeToPlane::ServiceResyncRequest { have })
                }
            },
            _ => None,
        }
    }

    /// Takes the certificate for the key in `renewing`, then closes this
    /// connection so the next one uses it.
    fn install(
        &mut self,
        now: Nanos,
        chain_der: Vec<Vec<u8>>,
        not_after: u64,
    ) -> Result<(), LinkError> {
        let key = self.renewing.take().ok_or_else(|| {
            LinkError::Protocol("gateway sent a certificate without a pending key".into())
        })?;
        if chain_der.is_empty() {
            return Err(LinkError::Protocol(
                "gateway sent an empty certificate chain".into(),
            ));
        }
        self.creds = Some(Creds {
            key,
            chain: chain_der.into_iter().map(CertificateDer::from).collect(),
            issued_ms: self.wall_ms(now),
            not_after_ms: not_after,
        });
        self.creds_unsaved = true;
        self.planned = true;
        if let Some(c) = self.conn.as_mut() {
            c.closing = true;
        }
        Ok(())
    }

    fn refused(&mut self, r: proto::Refusal) -> LinkError {
        if matches!(r.reason, RefusalReason::BadToken | RefusalReason::BadCsr) {
            // Retrying soon will not fix the token: back off hard.
            self.backoff = BACKOFF_REFUSED;
        }
        if matches!(
            r.reason,
            RefusalReason::Forbidden | RefusalReason::NodeNameMismatch
        ) {
            // The certificate is no good any more: bootstrap again.
            self.creds = None;
        }
        LinkError::Refused {
            reason: r.reason,
            message: r.message,
        }
    }

    /// Time passed: heartbeats, pod sync, handshake timeout, rotation.
    pub fn on_timer<R: Runtime + LogSource, P: Prober>(
        &mut self,
        now: Nanos,
        rt: &mut R,
        prober: &mut P,
    ) -> Result<(), LinkError> {
        let Some(conn) = &self.conn else {
            return Ok(());
        };
        if self.phase != Phase::Running {
            if now >= conn.opened + HANDSHAKE_TIMEOUT {
                return Err(LinkError::HandshakeTimeout(self.phase));
            }
            return Ok(());
        }
        if conn.closing {
            return Ok(());
        }
        for m in self.kubelet.tick(now, rt, prober) {
            self.send(&m)?;
            if let NodeToPlane::LeaseRenew { seq, .. } = m {
                // Measures the heartbeat: the Pong comes once the renewal is stored.
                self.send(&NodeToPlane::Ping { nonce: seq })?;
                self.heartbeat = Some((seq, now));
            }
        }
        // Artifacts the runtime asked for while starting containers.
        for m in self.artifacts.next_fetches() {
            self.send(&m)?;
        }
        // Followed logs: whatever the containers wrote since.
        for m in self.logs.poll(rt) {
            self.send(&m)?;
        }
        for m in self.tunnels.pump() {
            self.send(&m)?;
        }
        let due = self
            .creds
            .as_ref()
            .is_some_and(|c| self.wall_ms(now) >= c.rotate_at_ms());
        if due && self.renewing.is_none() {
            let key = NodeKey::generate().map_err(LinkError::Identity)?;
            let csr = key.csr(&self.cfg.node.name).map_err(LinkError::Identity)?;
            self.renewing = Some(key);
            self.note(
                Level::Info,
                "certificate at 80% of its lifetime: renewing".into(),
            );
            self.send(&NodeToPlane::RenewCertificate { csr_der: csr })?;
        }
        Ok(())
    }

    /// When [`Agent::on_timer`] is next due while connected.
    pub fn next_wakeup(&self) -> Option<Nanos> {
        let conn = self.conn.as_ref()?;
        if self.phase != Phase::Running {
            return Some(conn.opened + HANDSHAKE_TIMEOUT);
        }
        let rotate = self.creds.as_ref().and_then(|c| {
            let boot = self.kubelet.config().boot_wall_ms;
            (c.rotate_at_ms() >= boot).then(|| (c.rotate_at_ms() - boot) * MILLI)
        });
        [self.kubelet.next_wakeup(), rotate]
            .into_iter()
            .flatten()
            .min()
    }

    /// The connection ended (`reason` for the log): schedule the next one.
    pub fn on_closed(&mut self, now: Nanos, reason: &str) {
        let had_conn = self.conn.take().is_some();
        self.heartbeat = None;
        self.logs.clear(); // the plane's streams died with the connection
        self.tunnels.reset_all();
        self.artifacts.on_disconnect();
        if core::mem::take(&mut self.planned) {
            self.reconnect_at = now;
        } else {
            let jitter = self.backoff / 5 * u64::from(rand_u8()) / 255;
            self.reconnect_at = now + self.backoff - self.backoff / 10 + jitter;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX).max(self.backoff);
            let level = if had_conn { Level::Warn } else { Level::Info };
            self.note(
                level,
                alloc::format!(
                    "link down ({reason}); reconnecting in {} ms",
                    (self.reconnect_at - now) / MILLI
                ),
            );
        }
        if self.renewing.is_some() && self.phase != Phase::BootstrapCert {
            // A renewal lost with its connection starts over next session.
            self.renewing = None;
        }
        self.phase = Phase::Idle;
    }
}

/// Jitter only: no randomness is no reason to fail.
fn rand_u8() -> u8 {
    let mut b = [0u8; 1];
    let _ = rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut b);
    b[0]
}

fn kind(m: &PlaneToNode) -> String {
    let dbg = alloc::format!("{m:?}");
    dbg.split(['(', ' ', '{']).next().unwrap_or("?").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use core::net::{Ipv4Addr, SocketAddrV4};
    use skiff_kubelet::{ContainerId, LogBuffer};
    use skiff_node_proto::{Resources, ServiceRef, sample};
    use skiff_proxy::{Lookup, Protocol, Resolution};

    struct NoLogs;
    impl LogSource for NoLogs {
        fn log_buffer(&self, _: ContainerId) -> Option<&LogBuffer> {
            None
        }
    }

    fn running_agent() -> Agent {
        let node = NodeInfo {
            name: "n1".into(),
            boot_id: [1; 16],
            addresses: vec![],
            capacity: Resources::default(),
            allocatable: Resources::default(),
            kernel_version: "test".into(),
            runtime_version: "test://0".into(),
            os_image: "test".into(),
            architecture: "amd64".into(),
            labels: vec![],
        };
        let cfg = AgentConfig {
            node,
            gateway: ServerName::try_from("127.0.0.1").unwrap().to_owned(),
            ca: vec![],
            token: "a.b".into(),
            software: "test".into(),
        };
        let kubelet = Kubelet::new(skiff_kubelet::Config::new("n1", Resources::default()));
        let mut a = Agent::new(cfg, Arc::new(tls::FixedClock(0)), kubelet);
        a.phase = Phase::Running;
        a
    }

    /// An agent of node `name` that trusts the CA `ca` and just received
    /// its first certificate.
    fn bootstrapped(name: &str, ca: &[u8]) -> Agent {
        let mut a = running_agent();
        a.cfg.node.name = name.into();
        a.cfg.ca = vec![CertificateDer::from(ca.to_vec())];
        a.phase = Phase::BootstrapCert;
        a.renewing = Some(NodeKey::generate().unwrap());
        let cert = PlaneToNode::Certificate {
            chain_der: vec![vec![0x30, 3, 1, 2, 3]],
            not_after: 5_000,
        };
        a.handle(0, cert, &NoLogs).unwrap();
        a
    }

    #[test]
    fn kept_credentials_come_back_at_the_next_boot_for_this_node_only() {
        let mut first = bootstrapped("n1", b"ca-1");
        let record = first
            .take_credentials_to_save()
            .expect("new credentials to keep");
        assert_eq!(first.take_credentials_to_save(), None, "once per change");

        let mut next = bootstrapped("n1", b"ca-1");
        next.creds = None;
        next.restore_credentials(&record, 0).unwrap();
        let (kept, restored) = (
            first.credentials().unwrap().unwrap(),
            next.credentials().unwrap().unwrap(),
        );
        assert_eq!(kept.chain, restored.chain);
        assert_eq!(kept.key.secret_der(), restored.key.secret_der());
        assert_eq!(restored.not_after_ms, 5_000);
        assert!(
            next.take_notes()
                .iter()
                .any(|n| n.message.contains("credentials restored"))
        );

        let mut other_node = bootstrapped("n2", b"ca-1");
        assert_eq!(
            other_node.restore_credentials(&record, 0),
            Err(SavedError::OtherNode("n1".into()))
        );
        let mut other_cluster = bootstrapped("n1", b"ca-2");
        assert_eq!(
            other_cluster.restore_credentials(&record, 0),
            Err(SavedError::OtherCluster)
        );
        let mut later = bootstrapped("n1", b"ca-1");
        later.kubelet.set_boot_wall_ms(6_000);
        assert_eq!(
            later.restore_credentials(&record, 0),
            Err(SavedError::Expired(5_000))
        );
        let mut torn = record.clone();
        torn.truncate(record.len() / 2);
        assert!(matches!(
            later.restore_credentials(&torn, 0),
            Err(SavedError::Corrupt(_))
        ));
    }

    #[test]
    fn usage_reports_start_only_with_a_plane_speaking_version_5() {
        for (version, want) in [(4, None), (5, Some(proto::USAGE_REPORT_SECS * SEC))] {
            let mut a = running_agent();
            a.phase = Phase::Hello;
            let welcome = PlaneToNode::Welcome(proto::Welcome {
                version,
                capabilities: CAPABILITIES,
                server_time: 1,
            });
            // No connection to send the registration on: only the setting counts here.
            let _ = a.handle(0, welcome, &NoLogs);
            assert_eq!(a.phase, Phase::Registering);
            assert_eq!(
                a.kubelet().config().usage_report_interval,
                want,
                "v{version}"
            );
        }
    }

    #[test]
    fn service_messages_update_the_shared_table() {
        let mut a = running_agent();
        let services = a.services();
        // The kernel's view: a handle that sees every update.
        assert!(services.lock().is_empty());
        a.handle(
            0,
            PlaneToNode::Services {
                generation: 3,
                services: vec![sample::service("default", "web")],
                more: false,
            },
            &NoLogs,
        )
        .unwrap();
        let vip = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
        let client = Ipv4Addr::new(10, 244, 1, 9);
        {
            let mut t = services.lock();
            assert_eq!(t.generation(), 3);
            assert_eq!(
                t.resolve(Protocol::Tcp, vip, client, 0, 0),
                Resolution::Backend(SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 5), 8080))
            );
            assert_eq!(
                t.lookup("web", "default"),
                Lookup::Addresses(vec![Ipv4Addr::new(10, 96, 0, 10)])
            );
        }
        a.handle(
            0,
            PlaneToNode::ServiceDelta {
                from_generation: 3,
                generation: 4,
                upserts: vec![],
                removes: vec![ServiceRef {
                    namespace: "default".into(),
                    name: "web".into(),
                }],
            },
            &NoLogs,
        )
        .unwrap();
        let mut t = services.lock();
        assert_eq!(t.generation(), 4);
        assert_eq!(
            t.resolve(Protocol::Tcp, vip, client, 0, 0),
            Resolution::NotAService
        );
    }

    #[test]
    fn network_policy_messages_replace_the_shared_verdicts() {
        use crate::network_policy::Direction;
        use skiff_node_proto::PodPolicy;
        let mut a = running_agent();
        let policies = a.network_policies();
        let peer = Ipv4Addr::new(10, 244, 2, 3);
        let allowed = |p: &NetworkPolicies| {
            p.lock()
                .allows("uid-1", Direction::Ingress, peer, Protocol::Tcp, 8080)
        };
        assert!(allowed(&policies));
        let set = |ingress| PlaneToNode::NetworkPolicies {
            pods: vec![PodPolicy {
                pod_uid: "uid-1".into(),
                ingress,
                egress: None,
            }],
        };
        a.handle(0, set(Some(vec![])), &NoLogs).unwrap();
        assert!(!allowed(&policies), "the kernel's handle sees the update");
        a.handle(0, set(None), &NoLogs).unwrap();
        assert!(allowed(&policies), "a new set replaces the old one");
    }

    #[test]
    fn a_delta_that_does_not_apply_asks_for_the_full_state() {
        let mut a = running_agent();
        let delta = PlaneToNode::ServiceDelta {
            from_generation: 7,
            generation: 8,
            upserts: vec![sample::service("default", "web")],
            removes: vec![],
        };
        assert_eq!(
            a.on_services(delta.clone()),
            Some(NodeToPlane::ServiceResyncRequest { have: 0 })
        );
        assert!(a.services().lock().is_empty());
        // Through the message path, the answer is sent (no connection here).
        assert_eq!(a.handle(0, delta, &NoLogs), Err(LinkError::NotConnected));
    }
}
