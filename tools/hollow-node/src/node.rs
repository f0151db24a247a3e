//! One hollow node: bootstrap with the token when it has no certificate,
//! then a mutual-TLS session (hello, register, heartbeats, pods), rotating
//! its certificate at 80 % of its lifetime and reconnecting on failure.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, ServerName};
use skiff_node_proto::{
    self as proto, Capabilities, FrameDecoder, MAX_BOOTSTRAP_FRAME, MAX_FRAME, NodeToPlane,
    PlaneToNode, encode_frame,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::fake_runtime::{FakeRuntime, PassingProber};
use crate::identity;
use crate::stats::Stats;
use skiff_kubelet::{Kubelet, LogStreams, Nanos, SEC};

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

/// A node certificate and its key.
pub struct Creds {
    pub key: KeyPair,
    /// Leaf first (DER).
    pub chain: Vec<Vec<u8>>,
    pub issued: u64,
    pub not_after: u64,
}

impl Creds {
    fn rotate_at(&self) -> u64 {
        self.issued + (self.not_after.saturating_sub(self.issued)) * 8 / 10
    }
}

pub const CAPABILITIES: Capabilities = Capabilities::POD_DELTA
    .union(Capabilities::CERT_ROTATION)
    .union(Capabilities::LOG_FOLLOW);

fn hello(name: &str) -> NodeToPlane {
    NodeToPlane::Hello(proto::Hello {
        min_version: proto::MIN_PROTOCOL_VERSION,
        max_version: proto::PROTOCOL_VERSION,
        node_name: name.to_string(),
        capabilities: CAPABILITIES,
        software: concat!("skiff-hollow-node ", env!("CARGO_PKG_VERSION")).into(),
    })
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, m: &NodeToPlane, max: usize) -> Result<(), String> {
    let b = encode_frame(m, max).map_err(|e| e.to_string())?;
    w.write_all(&b).await.map_err(|e| format!("write: {e}"))?;
    w.flush().await.map_err(|e| format!("write: {e}"))
}

/// Reads one frame (bootstrap: the connection carries just a few).
async fn recv<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut FrameDecoder<PlaneToNode>,
) -> Result<PlaneToNode, String> {
    let mut buf = [0u8; 4096];
    loop {
        let n = r.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed".into());
        }
        let mut input = &buf[..n];
        if let Some(m) = dec.push(&mut input) {
            // The plane never pipelines during the handshake.
            return m.map_err(|e| e.to_string());
        }
    }
}

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

fn refused(m: PlaneToNode) -> String {
    match m {
        PlaneToNode::Refused(r) => format!("refused ({:?}): {}", r.reason, r.message),
        PlaneToNode::Goodbye { reason } => format!("goodbye: {reason}"),
        other => format!("unexpected {other:?}"),
    }
}

/// Gets a node certificate with the bootstrap token.
pub async fn bootstrap(cfg: &NodeConfig) -> Result<Creds, String> {
    let (key, csr) = identity::key_and_csr(&cfg.name)?;
    let mut s = tls(cfg, identity::bootstrap_config(&cfg.ca)?).await?;
    let mut dec = FrameDecoder::new(MAX_BOOTSTRAP_FRAME);
    send(&mut s, &hello(&cfg.name), MAX_BOOTSTRAP_FRAME).await?;
    match recv(&mut s, &mut dec).await? {
        PlaneToNode::Welcome(_) => {}
        m => return Err(refused(m)),
    }
    let req = NodeToPlane::Bootstrap {
        node_name: cfg.name.clone(),
        token: cfg.token.clone(),
        csr_der: csr,
    };
    send(&mut s, &req, MAX_BOOTSTRAP_FRAME).await?;
    match recv(&mut s, &mut dec).await? {
        PlaneToNode::Certificate {
            chain_der,
            not_after,
        } => Ok(Creds {
            key,
            chain: chain_der,
            issued: now_ms(),
            not_after,
        }),
        m => Err(refused(m)),
    }
}

/// The node's lasting state: the kubelet core and its runtime survive
/// reconnects, as on a real node.
struct Local {
    kubelet: Kubelet,
    rt: FakeRuntime,
    boot: Instant,
}

impl Local {
    fn now(&self) -> Nanos {
        self.boot.elapsed().as_nanos() as Nanos
    }
}

/// Runs the node until its task is aborted. Bootstrap refusals end it
/// (a wrong token does not get better by retrying).
pub async fn run(cfg: Arc<NodeConfig>, stats: Arc<Stats>) {
    let mut kcfg = skiff_kubelet::Config::new(cfg.name.clone(), cfg.capacity);
    kcfg.host_ip = Some(cfg.ip.clone());
    kcfg.boot_wall_ms = now_ms();
    let mut rt = FakeRuntime::new(Some(cfg.ip.clone()));
    rt.boot_wall_ms = kcfg.boot_wall_ms;
    let mut local = Local {
        kubelet: Kubelet::new(kcfg),
        rt,
        boot: Instant::now(),
    };
    let mut creds: Option<Creds> = None;
    let mut backoff = Duration::from_millis(200);
    loop {
        let c = match creds.take() {
            Some(c) if now_ms() < c.not_after => c,
            _ => match bootstrap(&cfg).await {
                Ok(c) => {
                    Stats::inc(&stats.bootstraps);
                    c
                }
                Err(e) if e.starts_with("refused") => {
                    Stats::inc(&stats.refusals);
                    stats.error(format!("{}: bootstrap {e}", cfg.name));
                    return;
                }
                Err(e) => {
                    stats.error(format!("{}: bootstrap: {e}", cfg.name));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
        };
        match session(&cfg, &stats, c, &mut local).await {
            Ok(next) => {
                backoff = Duration::from_millis(200);
                creds = Some(next);
            }
            Err((e, kept)) => {
                stats.error(format!("{}: {e}", cfg.name));
                creds = kept;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
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

/// One mutual-TLS session. `Ok` carries the credentials to reconnect with
/// (rotated); `Err` the reason and the credentials if still good.
async fn session(
    cfg: &NodeConfig,
    stats: &Stats,
    creds: Creds,
    local: &mut Local,
) -> Result<Creds, (String, Option<Creds>)> {
    let client = match identity::node_config(&cfg.ca, creds.chain.clone(), &creds.key) {
        Ok(c) => c,
        Err(e) => return Err((e, None)),
    };
    let s = match tls(cfg, client).await {
        Ok(s) => s,
        Err(e) => return Err((e, Some(creds))),
    };
    let (mut rd, mut wr) = tokio::io::split(s);
    let mut dec = FrameDecoder::new(MAX_FRAME);
    let handshake = async {
        send(&mut wr, &hello(&cfg.name), MAX_FRAME).await?;
        match recv(&mut rd, &mut dec).await? {
            PlaneToNode::Welcome(_) => {}
            m => return Err(refused(m)),
        }
        send(&mut wr, &NodeToPlane::Register(node_info(cfg)), MAX_FRAME).await?;
        match recv(&mut rd, &mut dec).await? {
            m @ PlaneToNode::Registered(_) => Ok(m),
            m => Err(refused(m)),
        }
    };
    let registered = match handshake.await {
        Ok(r) => r,
        Err(e) => return Err((e, Some(creds))),
    };
    local.kubelet.handle(&registered);
    Stats::inc(&stats.sessions);

    // A reader task: frame reads must not be cancelled half way.
    let (in_tx, mut inbox) = mpsc::channel::<Result<PlaneToNode, String>>(64);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 << 10];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) => {
                    let _ = in_tx.send(Err("connection closed".into())).await;
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    let _ = in_tx.send(Err(format!("read: {e}"))).await;
                    return;
                }
            };
            let mut input = &buf[..n];
            while let Some(m) = dec.push(&mut input) {
                let fatal = m.is_err();
                if in_tx.send(m.map_err(|e| e.to_string())).await.is_err() || fatal {
                    return;
                }
            }
        }
    });
    let result = run_session(cfg, stats, creds, local, &mut wr, &mut inbox).await;
    reader.abort();
    result
}

/// Drives the kubelet: tick when it or the fake runtime is due, or when a
/// frame arrives; send what it returns, and the log streams' output.
async fn run_session<W: AsyncWrite + Unpin>(
    cfg: &NodeConfig,
    stats: &Stats,
    creds: Creds,
    local: &mut Local,
    wr: &mut W,
    inbox: &mut mpsc::Receiver<Result<PlaneToNode, String>>,
) -> Result<Creds, (String, Option<Creds>)> {
    let mut pings: HashMap<u64, Instant> = HashMap::new();
    let mut renewing: Option<KeyPair> = None;
    // Log streams belong to this connection: the plane forgets them when it ends.
    let mut logs = LogStreams::new();
    macro_rules! out {
        ($m:expr) => {
            if let Err(e) = send(wr, &$m, MAX_FRAME).await {
                return Err((e, Some(creds)));
            }
        };
    }
    loop {
        let now = local.now();
        local.rt.advance(now);
        for m in local.kubelet.tick(now, &mut local.rt, &mut PassingProber) {
            out!(m);
            if let NodeToPlane::LeaseRenew { seq, .. } = m {
                // Measures the heartbeat: the Pong comes after the renewal is stored.
                out!(NodeToPlane::Ping { nonce: seq });
                pings.insert(seq, Instant::now());
            }
        }
        for m in logs.poll(&local.rt) {
            out!(m);
        }
        if renewing.is_none() && now_ms() >= creds.rotate_at() {
            let (key, csr) = match identity::key_and_csr(&cfg.name) {
                Ok(k) => k,
                Err(e) => return Err((e, Some(creds))),
            };
            renewing = Some(key);
            out!(NodeToPlane::RenewCertificate { csr_der: csr });
        }
        let due = [local.kubelet.next_wakeup(), local.rt.next_change()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + SEC)
            .min(now + SEC);
        let deadline = tokio::time::Instant::from_std(local.boot) + Duration::from_nanos(due);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {}
            m = inbox.recv() => {
                let m = match m {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => return Err((e, Some(creds))),
                    None => return Err(("reader stopped".into(), Some(creds))),
                };
                match m {
                    PlaneToNode::Pong { nonce } => {
                        if let Some(t) = pings.remove(&nonce) {
                            stats.heartbeat(t.elapsed());
                        }
                    }
                    PlaneToNode::Ping { nonce } => out!(NodeToPlane::Pong { nonce }),
                    PlaneToNode::Certificate { chain_der, not_after } => {
                        if let Some(key) = renewing.take() {
                            Stats::inc(&stats.rotations);
                            // Reconnect with the new certificate.
                            let bye = NodeToPlane::Goodbye { reason: "certificate rotated".into() };
                            let _ = send(wr, &bye, MAX_FRAME).await;
                            return Ok(Creds { key, chain: chain_der, issued: now_ms(), not_after });
                        }
                    }
                    m @ (PlaneToNode::Goodbye { .. } | PlaneToNode::Refused(_)) => {
                        return Err((refused(m), Some(creds)));
                    }
                    m @ (PlaneToNode::LogRequest(_) | PlaneToNode::LogCancel { .. }) => {
                        Stats::inc(if matches!(m, PlaneToNode::LogCancel { .. }) {
                            &stats.log_cancels
                        } else {
                            &stats.log_requests
                        });
                        // Serve the output up to this moment.
                        local.rt.advance(local.now());
                        for reply in logs.handle(&m, &local.kubelet, &local.rt).unwrap_or_default() {
                            out!(reply);
                        }
                    }
                    m => {
                        if let Some(reply) = local.kubelet.handle(&m) {
                            out!(reply);
                        }
                    }
                }
            }
        }
    }
}
