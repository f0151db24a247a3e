//! One hollow node: the kernel's own node agent ([`skiff_node_agent::Agent`]:
//! token bootstrap, mutual-TLS sessions, heartbeats, pods, certificate
//! rotation, reconnects with back-off) over a tokio TCP socket, with the
//! [`FakeRuntime`] under its kubelet. This module only moves bytes, feeds
//! the agent the clock and copies its counters into the fleet's [`Stats`],
//! as the kernel's `node.rs` does with smoltcp.
//!
//! [`bootstrap`], [`tls`] and [`Creds`] are for tests that speak the
//! protocol by hand: a node certificate from the agent's bootstrap, and a
//! TLS connection to the gateway.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, ServerName};
use skiff_kubelet::{Kubelet, Nanos, SEC};
use skiff_node_agent::{Agent, AgentConfig, ConnectError, LinkError};
use skiff_node_proto as proto;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::fake_runtime::{FakeRuntime, PassingProber};
use crate::stats::Stats;

/// How one hollow node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub name: String,
    pub gateway: SocketAddr,
    pub ca: Vec<CertificateDer<'static>>,
    pub token: String,
    /// The node's InternalIP (fake).
    pub ip: String,
    pub capacity: proto::Resources,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn node_info(cfg: &NodeConfig) -> proto::NodeInfo {
    let mut boot_id = [0u8; 16];
    for (i, b) in cfg.name.bytes().chain(now_ms().to_le_bytes()).enumerate() {
        boot_id[i % 16] ^= b.wrapping_add(i as u8);
    }
    proto::NodeInfo {
        name: cfg.name.clone(),
        boot_id,
        addresses: vec![
            proto::NodeAddress {
                kind: proto::AddressKind::InternalIP,
                address: cfg.ip.clone(),
            },
            proto::NodeAddress {
                kind: proto::AddressKind::Hostname,
                address: cfg.name.clone(),
            },
        ],
        capacity: cfg.capacity,
        allocatable: cfg.capacity,
        kernel_version: "skiff-hollow 0.1.0".into(),
        runtime_version: "hollow://0.1.0".into(),
        os_image: "Skiff hollow node".into(),
        architecture: "amd64".into(),
        labels: vec![("skiff.dev/hollow".into(), "true".into())],
    }
}

/// The node's lasting state, as on a kernel node: the agent (with its
/// kubelet and credentials) and the runtime survive reconnects.
struct Local {
    agent: Agent,
    rt: FakeRuntime,
    boot: Instant,
    /// The agent's counters already copied into the fleet's.
    seen: skiff_node_agent::agent::Stats,
}

impl Local {
    fn new(cfg: &NodeConfig) -> Local {
        let mut kcfg = skiff_kubelet::Config::new(cfg.name.clone(), cfg.capacity);
        kcfg.host_ip = Some(cfg.ip.clone());
        kcfg.boot_wall_ms = now_ms();
        let mut rt = FakeRuntime::new(Some(cfg.ip.clone()));
        rt.boot_wall_ms = kcfg.boot_wall_ms;
        let agent_cfg = AgentConfig {
            node: node_info(cfg),
            gateway: ServerName::IpAddress(cfg.gateway.ip().into()),
            ca: cfg.ca.clone(),
            token: cfg.token.clone(),
            software: concat!("skiff-hollow-node ", env!("CARGO_PKG_VERSION")).into(),
        };
        let clock = Arc::new(rustls::time_provider::DefaultTimeProvider);
        Local {
            agent: Agent::new(agent_cfg, clock, Kubelet::new(kcfg)),
            rt,
            boot: Instant::now(),
            seen: Default::default(),
        }
    }

    fn now(&self) -> Nanos {
        self.boot.elapsed().as_nanos() as Nanos
    }

    fn at(&self, t: Nanos) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.boot) + Duration::from_nanos(t)
    }

    /// Copies what the agent counted since the last call into `stats`.
    fn report(&mut self, stats: &Stats) {
        let (s, seen) = (self.agent.stats, self.seen);
        let add = |c: &std::sync::atomic::AtomicU64, now: u64, before: u64| {
            c.fetch_add(now - before, std::sync::atomic::Ordering::Relaxed);
        };
        add(
            &stats.bootstraps,
            s.bootstraps.into(),
            seen.bootstraps.into(),
        );
        add(&stats.sessions, s.sessions.into(), seen.sessions.into());
        add(&stats.rotations, s.rotations.into(), seen.rotations.into());
        add(&stats.refusals, s.refusals.into(), seen.refusals.into());
        add(&stats.log_requests, s.log_requests, seen.log_requests);
        add(&stats.log_cancels, s.log_cancels, seen.log_cancels);
        // One node's heartbeats are a renewal interval apart, so a read
        // carries at most one Pong: the last round trip is the new one.
        for _ in seen.heartbeats..s.heartbeats {
            stats.heartbeat(Duration::from_nanos(s.heartbeat_rtt));
        }
        self.seen = s;
    }
}

/// Why one connection ended.
#[derive(Debug)]
pub enum Ended {
    /// On purpose: to connect again with a new certificate.
    Planned,
    /// The gateway closed the connection.
    Closed,
    /// Connecting, reading or writing failed.
    Io(std::io::Error),
    /// TLS could not start or the hello could not be sent.
    Connect(ConnectError),
    /// The agent ended the session (a refusal, a goodbye, a broken frame).
    Link(LinkError),
}

impl Ended {
    /// The gateway's refusal, if that is how the connection ended.
    pub fn refusal(&self) -> Option<(&proto::RefusalReason, &str)> {
        match self {
            Ended::Link(LinkError::Refused { reason, message }) => Some((reason, message)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Planned => f.write_str("closed to reconnect"),
            Ended::Closed => f.write_str("gateway closed the connection"),
            Ended::Io(e) => write!(f, "socket: {e}"),
            Ended::Connect(e) => e.fmt(f),
            Ended::Link(e) => e.fmt(f),
        }
    }
}

/// Runs the node until its task is aborted.
pub async fn run(cfg: Arc<NodeConfig>, stats: Arc<Stats>) {
    let mut local = Local::new(&cfg);
    loop {
        if let Some(at) = local.agent.connect_at() {
            tokio::time::sleep_until(local.at(at)).await;
        }
        let ended = connection(&cfg, &mut local, &stats).await;
        if !matches!(ended, Ended::Planned) {
            stats.error(format!("{}: {ended}", cfg.name));
        }
    }
}

/// One TCP connection, from connect to [`Agent::on_closed`]; returns why it
/// ended.
async fn connection(cfg: &NodeConfig, local: &mut Local, stats: &Stats) -> Ended {
    let ended = match TcpStream::connect(cfg.gateway).await {
        Ok(tcp) => {
            let _ = tcp.set_nodelay(true);
            session(local, tcp, stats).await
        }
        Err(e) => Ended::Io(e),
    };
    let now = local.now();
    let reason = match &ended {
        Ended::Planned => String::new(),
        e => e.to_string(),
    };
    local.agent.on_closed(now, &reason);
    local.report(stats);
    ended
}

/// Moves bytes until the agent or the gateway ends the connection.
async fn session(local: &mut Local, mut tcp: TcpStream, stats: &Stats) -> Ended {
    if let Err(e) = local.agent.on_connected(local.now()) {
        return Ended::Connect(e);
    }
    let mut buf = vec![0u8; 16 << 10];
    loop {
        let out = local.agent.take_outgoing();
        if !out.is_empty()
            && let Err(e) = tcp.write_all(&out).await
        {
            return Ended::Io(e);
        }
        local.report(stats);
        if local.agent.should_close() {
            return Ended::Planned;
        }
        let now = local.now();
        // The fake runtime's scripted changes (exits, log lines) tick the
        // kubelet too, as pod events do on the kernel.
        let due = [local.agent.next_wakeup(), local.rt.next_change()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + SEC)
            .min(now + SEC);
        let read = tokio::select! {
            r = tcp.read(&mut buf) => Some(r),
            _ = tokio::time::sleep_until(local.at(due)) => None,
        };
        let now = local.now();
        // The runtime's output and state up to now, before the kubelet
        // looks at it (or serves a log request).
        local.rt.advance(now);
        let Local { agent, rt, .. } = local;
        let result = match read {
            Some(Ok(0)) => return Ended::Closed,
            Some(Ok(n)) => agent.on_data(now, &buf[..n], rt, &mut PassingProber),
            Some(Err(e)) => return Ended::Io(e),
            None => agent.on_timer(now, rt, &mut PassingProber),
        };
        if let Err(e) = result {
            // Flush what the agent queued (e.g. an alert) before closing.
            let _ = tcp.write_all(&agent.take_outgoing()).await;
            return Ended::Link(e);
        }
    }
}

/// A node certificate and its key, for tests that speak the protocol by
/// hand.
pub struct Creds {
    pub key: KeyPair,
    /// Leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    pub not_after: u64,
}

/// Why [`bootstrap`] got no certificate.
#[derive(Debug)]
pub enum BootstrapError {
    /// The connection ended first (a refusal names its reason, e.g.
    /// `BadToken`).
    Ended(Ended),
    /// The node's key could not be exported (the agent's encoding, or
    /// rcgen's import of it).
    Key(Box<dyn std::error::Error + Send + Sync>),
}

impl BootstrapError {
    /// The gateway's refusal, if that is why.
    pub fn refusal(&self) -> Option<(&proto::RefusalReason, &str)> {
        match self {
            BootstrapError::Ended(e) => e.refusal(),
            BootstrapError::Key(_) => None,
        }
    }
}

impl std::fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BootstrapError::Ended(e) => write!(f, "bootstrap: {e}"),
            BootstrapError::Key(e) => write!(f, "node key: {e}"),
        }
    }
}

impl std::error::Error for BootstrapError {}

/// Gets a node certificate with the bootstrap token: the agent's own
/// bootstrap over one connection.
pub async fn bootstrap(cfg: &NodeConfig) -> Result<Creds, BootstrapError> {
    let mut local = Local::new(cfg);
    let ended = connection(cfg, &mut local, &Stats::default()).await;
    let Some(c) = local
        .agent
        .credentials()
        .map_err(|e| BootstrapError::Key(e.into()))?
    else {
        return Err(BootstrapError::Ended(ended));
    };
    let key = KeyPair::try_from(&c.key).map_err(|e| BootstrapError::Key(e.into()))?;
    Ok(Creds {
        key,
        chain: c.chain.into_iter().map(|c| c.to_vec()).collect(),
        not_after: c.not_after_ms,
    })
}

/// A TLS connection to the gateway with `client`'s settings
/// ([`crate::identity`]).
pub async fn tls(
    cfg: &NodeConfig,
    client: Arc<rustls::ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(cfg.gateway)
        .await
        .map_err(|e| format!("connect {}: {e}", cfg.gateway))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::IpAddress(cfg.gateway.ip().into());
    tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))
}
