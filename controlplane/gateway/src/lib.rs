//! skiff-gateway: the control plane's node gateway.
//!
//! Nodes dial out to it over TLS and speak the postcard node protocol
//! (`skiff-node-proto`). A node without a certificate may only bootstrap
//! ([`bootstrap`]): token check and CSR signing ([`signer`]). A node with a
//! certificate (`CN=system:node:<name>`, `O=system:nodes`) gets a session
//! ([`session`]): its messages become API objects ([`node_objects`]) and its
//! pods are pushed to it ([`pod_sync`], [`pod_spec`]). Every API call is made
//! in process as the node's own identity ([`local_api`]), so the API server's
//! node authorizer decides what a node may touch. Node health is the node
//! lifecycle controller's (`skiff-controllers`): the gateway only reports
//! what nodes send, and ends a session silent for the grace period (the
//! node's next session registers it afresh). [`logs`] routes `kubectl logs` streams to the nodes
//! (the API server's log provider). [`images`] gets nodes their pods'
//! images pulled and compiled, and serves the artifacts. [`services`] watches
//! the cluster's Services and EndpointSlices once for all sessions and sends
//! every node the compact state for its proxy (full state, then deltas).
//! [`usage`] keeps the nodes' usage reports for metrics.k8s.io. [`tls`] is the listener's rustls setup, [`wire`] the
//! async framing, [`journal`] and [`metrics`] what it reports.

mod bootstrap;
mod images;
mod journal;
mod local_api;
mod logs;
mod metrics;
mod network_policy;
mod node_objects;
mod pod_network;
mod pod_spec;
mod pod_sync;
mod prometheus;
mod services;
mod session;
mod signer;
mod timefmt;
mod tls;
mod tokens;
mod tunnels;
mod usage;
/// The node protocol's framing over async streams (also for tests that
/// drive a node session by hand).
pub mod wire;

pub use images::Images;
pub use metrics::Metrics;
/// The bootstrap token Secret's type and Skiff's keys in it, for the tools
/// that create tokens (`skiff token create`).
pub use tokens::{
    NODE_NAME_KEY, SECRET_TYPE as BOOTSTRAP_TOKEN_TYPE, SINGLE_USE_KEY, is_token_id,
    split as split_bootstrap_token,
};

/// The CSR signer's fuzzing entry points (`tests/fuzz`'s `csr` target).
#[doc(hidden)]
pub use signer::fuzz as csr_fuzz;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::journal::Journal;
use crate::local_api::LocalApi;
use crate::signer::NodeSigner;

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The API server's PKI directory (CA, serving certificate).
    pub pki_dir: PathBuf,
    pub listen: SocketAddr,
    /// Lifetime of issued node certificates (nodes rotate at ~80 %; kept
    /// short so that a deleted Node's certificate, refused renewal, soon
    /// expires).
    pub cert_validity: Duration,
    /// Node Lease duration (kube default 40 s).
    pub lease_duration_secs: u32,
    /// How often nodes renew (kube default 10 s).
    pub renew_interval: Duration,
    /// How often nodes resend an unchanged NodeStatus (kube default 5 min).
    pub node_status_report: Duration,
    /// No renewal for this long makes a node NotReady (kube's
    /// node-monitor-grace-period, 40 s by default).
    pub node_grace: Duration,
    /// TLS handshake plus the first frame must arrive within this (and
    /// each further frame of a bootstrap).
    pub handshake_timeout: Duration,
    /// Node sessions (mutual TLS) at once; more are refused.
    pub max_connections: usize,
    /// Connections not yet known to be a node's (TLS handshake, bootstrap)
    /// at once: their own pool, so strangers cannot take the sessions'.
    pub max_unauthenticated: usize,
    /// Of those, from one source address.
    pub max_unauthenticated_per_source: usize,
    /// Keep the log off stderr (benchmarks).
    pub quiet: bool,
    /// The image service that pulls and compiles wasm images for nodes
    /// that run them (`None`: such pods wait with `ErrImagePull`).
    pub images: Option<Images>,
    /// First image pull retry delay (kube: 10 s, doubling to 5 min).
    pub image_backoff: Duration,
}

impl GatewayConfig {
    pub fn new(pki_dir: PathBuf, listen: SocketAddr) -> GatewayConfig {
        GatewayConfig {
            pki_dir,
            listen,
            cert_validity: Duration::from_secs(7 * 24 * 3600),
            lease_duration_secs: 40,
            renew_interval: Duration::from_secs(10),
            node_status_report: Duration::from_secs(300),
            node_grace: Duration::from_secs(40),
            handshake_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_unauthenticated: 1024,
            max_unauthenticated_per_source: 32,
            quiet: false,
            images: None,
            image_backoff: Duration::from_secs(10),
        }
    }
}

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub cfg: GatewayConfig,
    pub api: LocalApi,
    pub signer: NodeSigner,
    pub journal: Journal,
    pub metrics: Metrics,
    pub logs: Arc<logs::LogRouter>,
    /// Port-forward and proxy connections to the nodes' pods.
    pub tunnels: Arc<tunnels::TunnelRouter>,
    /// The Service state every node session sends its node.
    pub services: Arc<services::ServiceHub>,
    /// What NetworkPolicy allows each node's pods.
    pub network_policies: Arc<network_policy::PolicyHub>,
    /// The nodes' latest usage reports (metrics.k8s.io's source).
    pub usage: Arc<usage::UsageHub>,
    slots: Slots,
    /// One bootstrap at a time: a token's check and its consumption
    /// (single use, binding) must not interleave with another's.
    bootstrap: tokio::sync::Mutex<()>,
    /// Registered node sessions by node name.
    live: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// Certificates issued by bootstrap and not yet used to register, by
    /// node name: only these may create a Node (a Node deleted by an
    /// operator is not brought back by its old certificate).
    fresh: std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>,
}

impl Shared {
    /// Nodes with a registered session now.
    pub fn live_nodes(&self) -> usize {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether `node` has a registered session now.
    pub fn is_live(&self, node: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(node)
    }

    /// Marks `node` live until the guard drops.
    pub(crate) fn live_guard(&self, node: &str) -> LiveGuard {
        *self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.to_string())
            .or_default() += 1;
        LiveGuard {
            live: self.live.clone(),
            node: node.to_string(),
        }
    }

    /// Remembers the certificate bootstrap issued to `node`. Bounded: token
    /// holders choose the names; a node crowded out re-bootstraps.
    pub(crate) fn issued(&self, node: &str, der: &[u8]) {
        const MAX_FRESH: usize = 4096;
        let mut m = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_FRESH
            && !m.contains_key(node)
            && let Some(k) = m.keys().next().cloned()
        {
            m.remove(&k);
        }
        m.insert(node.to_string(), der.to_vec());
    }

    /// Whether `der` is the certificate bootstrap last issued to `node`;
    /// it stops being so (one registration per bootstrap).
    pub(crate) fn take_issued(&self, node: &str, der: &[u8]) -> bool {
        let mut m = self.fresh.lock().unwrap_or_else(|e| e.into_inner());
        if m.get(node).is_some_and(|d| d == der) {
            m.remove(node);
            true
        } else {
            false
        }
    }
}

/// A registered session's mark in [`Shared`]'s live set.
#[derive(Debug)]
pub(crate) struct LiveGuard {
    live: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    node: String,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut m = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.node) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.node);
            }
        }
    }
}

/// The connection limits of [`GatewayConfig`]: a pool for node sessions
/// and one for connections still unauthenticated, capped per source
/// address, so that one address cannot hold the gateway's sockets and
/// strangers cannot crowd out nodes.
#[derive(Debug)]
struct Slots {
    sessions: Arc<tokio::sync::Semaphore>,
    pending: Arc<tokio::sync::Semaphore>,
    per_source: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
    max_per_source: usize,
}

/// An unauthenticated connection's place; given back when dropped.
#[derive(Debug)]
struct Pending {
    _permit: tokio::sync::OwnedSemaphorePermit,
    source: std::net::IpAddr,
    per_source: Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut m = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.source);
            }
        }
    }
}

impl Slots {
    fn new(cfg: &GatewayConfig) -> Slots {
        Slots {
            sessions: Arc::new(tokio::sync::Semaphore::new(cfg.max_connections)),
            pending: Arc::new(tokio::sync::Semaphore::new(cfg.max_unauthenticated)),
            per_source: Arc::default(),
            max_per_source: cfg.max_unauthenticated_per_source,
        }
    }

    fn pending(&self, source: std::net::IpAddr) -> Result<Pending, &'static str> {
        let mut m = self.per_source.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(source).or_default();
        if *n >= self.max_per_source {
            return Err("too many unauthenticated connections from this address");
        }
        let permit = self
            .pending
            .clone()
            .try_acquire_owned()
            .map_err(|_| "too many unauthenticated connections")?;
        *n += 1;
        Ok(Pending {
            _permit: permit,
            source,
            per_source: self.per_source.clone(),
        })
    }

    fn session(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.sessions.clone().try_acquire_owned().ok()
    }
}

/// A running gateway; dropping it stops the listener (sessions end when
/// their connections do).
#[derive(Debug)]
pub struct Gateway {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// The journal's lines so far (what nodes did, in order).
    pub fn journal(&self) -> Vec<String> {
        self.shared.journal.lines()
    }

    /// `kubectl logs` streams being served from nodes now.
    pub fn open_log_streams(&self) -> usize {
        self.shared.logs.open_streams()
    }

    /// Counters and samples for the node benchmark.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The TLS identity it shares with the API server.
    #[error(transparent)]
    Tls(#[from] skiff_apiserver::StartError),
    /// The cluster CA it signs node certificates with is missing or malformed.
    #[error("{}: {source}", path.display())]
    Ca {
        path: std::path::PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Binds and serves in the background, calling the API server in process.
pub async fn start(
    cfg: GatewayConfig,
    api: Arc<skiff_apiserver::State>,
) -> Result<Gateway, StartError> {
    let tls = tls::server_config(&cfg.pki_dir)?;
    let signer = NodeSigner::load(&cfg.pki_dir, cfg.cert_validity)?;
    let listen = |source| StartError::Listen {
        addr: cfg.listen,
        source,
    };
    let listener = TcpListener::bind(cfg.listen).await.map_err(listen)?;
    let addr = listener.local_addr().map_err(listen)?;
    let router = Arc::new(logs::LogRouter::default());
    api.set_log_provider(router.clone());
    let tunnels = Arc::new(tunnels::TunnelRouter::default());
    api.set_pod_connector(tunnels.clone());
    let usage = Arc::new(usage::UsageHub::default());
    api.set_usage_source(usage.clone());
    let shared = Arc::new(Shared {
        slots: Slots::new(&cfg),
        journal: Journal::new(cfg.quiet),
        cfg,
        logs: router,
        tunnels,
        services: Arc::default(),
        network_policies: Arc::default(),
        usage,
        api: LocalApi::new(api),
        signer,
        metrics: Metrics::default(),
        bootstrap: tokio::sync::Mutex::new(()),
        live: Arc::default(),
        fresh: Default::default(),
    });
    warn_fleet_tokens(&shared);
    shared
        .api
        .state()
        .metrics
        .register_collector(Box::new(prometheus::GatewayCollector(shared.clone())));
    let tasks = vec![
        tokio::spawn(accept_loop(listener, tls, shared.clone())),
        tokio::spawn(services::run(shared.clone(), shared.services.clone())),
        tokio::spawn(network_policy::run(
            shared.clone(),
            shared.network_policies.clone(),
        )),
    ];
    Ok(Gateway {
        addr,
        shared,
        tasks,
    })
}

/// Fleet tokens (the PKI directory's `bootstrap-tokens.csv`) can join any
/// number of nodes under any new names until they expire: a path for tests
/// and lab fleets, said loudly at every start (even with a quiet journal).
fn warn_fleet_tokens(shared: &Shared) {
    let n = shared.api.state().authn.fleet_bootstrap_tokens();
    if n == 0 {
        return;
    }
    let file = shared
        .cfg
        .pki_dir
        .join(skiff_apiserver::pki::BOOTSTRAP_TOKEN_FILE);
    let line = format!(
        "WARNING: {n} fleet bootstrap token(s) in {} are multi-use and bound to no node name: \
         whoever holds one can join new nodes under any unused name until it expires. \
         Meant for tests and lab fleets; in production delete that file and create \
         bootstrap-token-<id> Secrets in kube-system (skiff-node-name, skiff-single-use, \
         expiration) instead",
        file.display()
    );
    shared.journal.warn(line);
}

async fn accept_loop(listener: TcpListener, tls: Arc<rustls::ServerConfig>, shared: Arc<Shared>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                // Until its certificate is seen, a connection takes a place
                // of the unauthenticated pool; none left: closed at once.
                let pending = match shared.slots.pending(peer.ip()) {
                    Ok(p) => p,
                    Err(why) => {
                        Metrics::inc(&shared.metrics.refused);
                        shared.journal.log(format!("{peer}: closed: {why}"));
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(connection(
                    shared.clone(),
                    acceptor.clone(),
                    tcp,
                    peer,
                    pending,
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                shared.journal.log(format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One node connection: TLS, then bootstrap or a node session depending on
/// the client certificate.
async fn connection(
    shared: Arc<Shared>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    pending: Pending,
) {
    Metrics::inc(&shared.metrics.connections);
    let stream =
        match tokio::time::timeout(shared.cfg.handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                Metrics::inc(&shared.metrics.refused);
                shared
                    .journal
                    .log(format!("{peer}: TLS handshake refused: {e}"));
                return;
            }
            Err(_) => {
                shared
                    .journal
                    .log(format!("{peer}: TLS handshake timed out"));
                return;
            }
        };
    let cert = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    match cert {
        None => bootstrap::run(&shared, stream, peer).await,
        Some(der) => match skiff_apiserver::identity_from_cert(&der) {
            Some(id) if id.in_group("system:nodes") && id.name.starts_with("system:node:") => {
                drop(pending);
                let Some(_session) = shared.slots.session() else {
                    Metrics::inc(&shared.metrics.refused);
                    shared.journal.log(format!(
                        "{peer}: closed: node session limit ({}) reached",
                        shared.cfg.max_connections
                    ));
                    return;
                };
                let node = id.name["system:node:".len()..].to_string();
                session::run(shared, stream, node, peer, der).await
            }
            other => {
                Metrics::inc(&shared.metrics.refused);
                let who = other.map(|i| i.name).unwrap_or_else(|| "no subject".into());
                session::refuse(
                    &shared,
                    stream,
                    peer,
                    skiff_node_proto::RefusalReason::Forbidden,
                    format!("certificate for {who:?} is not a node certificate"),
                )
                .await
            }
        },
    }
}
