//! The node's link to the control plane: kernel glue around
//! `skiff-node-agent` (which holds the TLS bootstrap, the session protocol
//! and the kubelet core, all host-tested). This task only moves bytes
//! between the agent and a TCP socket, feeds it the clock and logs its notes.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::string::{String, ToString as _};
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::poll_fn;

use base64::Engine as _;
use core::net::SocketAddrV4;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use skiff_diag::SECTOR;
use skiff_kubelet::{Kubelet, Nanos};
use skiff_node_agent::splice::Splice;
use skiff_node_agent::tunnels::PodDialer;
use skiff_node_agent::{Agent, AgentConfig, Level};
use skiff_node_agent::{saved, wasmrt};
use skiff_node_config::NodeConfig;
use skiff_node_proto::{AddressKind, Capabilities, NodeAddress, NodeInfo, Resources, TunnelError};
use skiff_wasm::NetError;
use smoltcp::wire::Ipv4Address as Ipv4Addr;

use crate::arch::time;
use crate::executor::{self, select};
use crate::net::{self, TcpSocket};
use crate::pods::{self, POD_EVENT, PodRuntime, RUNNER};
use crate::probes::KernelProber;

/// Socket buffers for the control-plane link (a full pod set is < 1 MiB and
/// arrives in pieces; 64 KiB keeps the window open without hogging memory).
const SOCKET_BUF: usize = 64 << 10;
const CONNECT_TIMEOUT_US: u64 = 5_000_000;
/// Pods per node: Kubernetes' default `maxPods`.
const MAX_PODS: u32 = 110;

fn now() -> Nanos {
    time::uptime_us() * 1000
}

/// The wall clock for certificate validity (RTC/kvmclock anchored).
#[derive(Debug)]
struct KernelClock;

impl rustls::time_provider::TimeProvider for KernelClock {
    fn current_time(&self) -> Option<UnixTime> {
        match time::wall_unix() {
            0 => None,
            s => Some(UnixTime::since_unix_epoch(core::time::Duration::from_secs(
                s,
            ))),
        }
    }
}

/// Starts the agent if the command line names a control plane. Called once
/// the network is up.
pub fn start(cfg: &'static NodeConfig<'static>, usable_memory: u64) {
    let (Some((gw_ip, gw_port)), Some(token), Some(ca_b64)) =
        (cfg.gateway, cfg.token, cfg.ca_base64)
    else {
        return;
    };
    let ca = match base64::engine::general_purpose::STANDARD.decode(ca_b64) {
        Ok(der) => der,
        Err(e) => {
            error!("node", "skiff.ca is not valid base64: {e}");
            return;
        }
    };
    let Some(ip) = net::with(|s| s.ip) else {
        error!("node", "no address; cannot join the control plane");
        return;
    };
    let ip = ip.address().to_string();
    let mut boot_id = [0u8; 16];
    if !crate::entropy::fill(&mut boot_id) {
        // Fail closed: without entropy the node cannot make its key.
        error!(
            "node",
            "no entropy source (needs RDRAND or a virtio-rng device): cannot create the node key; not joining"
        );
        return;
    }
    let capacity = Resources {
        cpu_millis: 1000, // one vCPU: the kernel runs on the boot CPU only
        memory_bytes: usable_memory,
        pods: MAX_PODS,
        ephemeral_storage_bytes: 0,
    };
    let allocatable = Resources {
        memory_bytes: crate::mem::available_to_pods(),
        ..capacity
    };
    let node = NodeInfo {
        name: cfg.hostname.to_string(),
        boot_id,
        addresses: vec![
            NodeAddress {
                kind: AddressKind::InternalIP,
                address: ip.clone(),
            },
            NodeAddress {
                kind: AddressKind::Hostname,
                address: cfg.hostname.to_string(),
            },
        ],
        capacity,
        allocatable,
        kernel_version: alloc::format!("skiff-kernel {}", crate::VERSION),
        runtime_version: wasmrt::RUNTIME_VERSION.into(),
        os_image: "Skiff unikernel".into(),
        architecture: "amd64".into(),
        labels: vec![("skiff.dev/runtime".into(), "wasm".into())],
    };
    let agent_cfg = AgentConfig {
        node,
        gateway: ServerName::IpAddress(rustls::pki_types::IpAddr::V4(gw_ip.octets().into())),
        ca: vec![CertificateDer::from(ca)],
        token: token.secret_str().to_string(),
        software: alloc::format!("skiff-kernel {} build={}", crate::VERSION, crate::BUILD_ID),
    };
    let boot_wall_ms = (time::wall_unix() * 1000).saturating_sub(time::uptime_us() / 1000);
    let mut kcfg = skiff_kubelet::Config::new(cfg.hostname, capacity);
    kcfg.allocatable = allocatable;
    kcfg.host_ip = Some(ip.clone());
    kcfg.boot_wall_ms = boot_wall_ms;
    let mut agent = Agent::new(agent_cfg, Arc::new(KernelClock), Kubelet::new(kcfg));
    agent.advertise(Capabilities::WASM);

    let reserved: Vec<u16> = cfg.diag_port.into_iter().collect();
    let rt = pods::new_runtime(
        crate::wasm::runtime,
        agent.artifacts(),
        boot_wall_ms,
        Some(ip),
        &reserved,
        agent.services(),
        agent.network_policies(),
    );
    agent.set_pod_dialer(Box::new(TunnelDialer(rt.borrow().wasm.node().shared())));
    info!(
        "node",
        "joining control plane gateway={gw_ip}:{gw_port} node={} runtime={}",
        cfg.hostname,
        wasmrt::RUNTIME_VERSION
    );
    executor::spawn(pods::runner(rt.clone()));
    executor::spawn(crate::node_ports::run(
        rt.borrow().wasm.node().shared(),
        agent.services(),
    ));
    executor::spawn(run(
        Box::new(agent),
        rt,
        gw_ip,
        gw_port,
        cfg.keep_credentials,
    ));
}

/// How the plane's tunnels (`kubectl port-forward`, `pods/proxy`) reach
/// this node's pods: a connection from the node's address spliced in
/// memory to the pod's listener, as the prober's.
struct TunnelDialer(Arc<spin::Mutex<pods::Shared>>);

impl PodDialer for TunnelDialer {
    fn dial(&mut self, to: SocketAddrV4) -> Result<Splice, (TunnelError, String)> {
        let elsewhere = || {
            (
                TunnelError::NotThisNode,
                alloc::format!("{} is no address of this node's pods", to.ip()),
            )
        };
        if !matches!(pods::local_target(&self.0, to), Ok(Some(_))) {
            return Err(elsewhere());
        }
        let from = net::address().unwrap_or(core::net::Ipv4Addr::UNSPECIFIED);
        pods::connect_local(&self.0, from, to).map_err(|e| match e {
            NetError::Refused => (
                TunnelError::Refused,
                alloc::format!("dial tcp {to}: connect: connection refused"),
            ),
            _ => elsewhere(),
        })
    }

    fn activity(&mut self) {
        pods::spliced_activity();
    }
}

fn log_notes(agent: &mut Agent) {
    for n in agent.take_notes() {
        match n.level {
            Level::Info => info!("node", "{}", n.message),
            Level::Warn => warn!("node", "{}", n.message),
            Level::Error => error!("node", "{}", n.message),
        }
    }
}

async fn sleep_until_nanos(t: Nanos) {
    let n = now();
    if t > n {
        executor::sleep_us((t - n).div_ceil(1000)).await;
    }
}

/// First sector of the credentials record on the disk
/// (`skiff.credentials=disk`); it takes at most `saved::MAX_RECORD` bytes.
const CREDENTIALS_SECTOR: u64 = 0;

/// The credentials record kept on the disk, if any can be read.
async fn read_credentials() -> Result<Vec<u8>, String> {
    let head = crate::blk::read(CREDENTIALS_SECTOR)
        .await
        .map_err(|e| alloc::format!("reading the disk: {e:?}"))?;
    let len = saved::record_len(&head).map_err(|e| e.to_string())?;
    let mut record = head.to_vec();
    let mut sector = CREDENTIALS_SECTOR + 1;
    while record.len() < len {
        let more = crate::blk::read(sector)
            .await
            .map_err(|e| alloc::format!("reading the disk: {e:?}"))?;
        record.extend_from_slice(&more);
        sector += 1;
    }
    Ok(record)
}

/// Writes a credentials record to the disk, sector by sector (a torn write
/// fails its checksum at the next boot, which then bootstraps).
async fn write_credentials(record: &[u8]) -> Result<(), String> {
    for (i, chunk) in record.chunks(SECTOR).enumerate() {
        let mut data = [0u8; SECTOR];
        data[..chunk.len()].copy_from_slice(chunk);
        crate::blk::write(CREDENTIALS_SECTOR + i as u64, &data)
            .await
            .map_err(|e| alloc::format!("writing the disk: {e:?}"))?;
    }
    Ok(())
}

async fn run(
    mut agent: Box<Agent>,
    rt: Rc<RefCell<PodRuntime>>,
    gw_ip: Ipv4Addr,
    gw_port: u16,
    keep_credentials: bool,
) {
    let mut prober = KernelProber::new(&rt.borrow());
    let mut buf: Vec<u8> = vec![0; 16 << 10];
    let mut was_running = false;
    if keep_credentials {
        let restored = match read_credentials().await {
            Ok(record) => agent
                .restore_credentials(&record, now())
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        log_notes(&mut agent);
        if let Err(e) = restored {
            info!("node", "bootstrapping: {e}");
        }
    }
    loop {
        if keep_credentials && let Some(record) = agent.take_credentials_to_save() {
            match write_credentials(&record).await {
                Ok(()) => info!("node", "credentials saved to disk ({} bytes)", record.len()),
                Err(e) => warn!("node", "credentials not saved: {e}"),
            }
        }
        if let Some(at) = agent.connect_at() {
            sleep_until_nanos(at).await;
        }
        let sock = match TcpSocket::connect(gw_ip, gw_port, SOCKET_BUF, CONNECT_TIMEOUT_US).await {
            Ok(s) => s,
            Err(e) => {
                agent.on_closed(now(), &alloc::format!("connect {gw_ip}:{gw_port}: {e:?}"));
                log_notes(&mut agent);
                continue;
            }
        };
        let reason = session(
            &mut agent,
            &rt,
            &mut prober,
            &sock,
            &mut buf,
            &mut was_running,
        )
        .await;
        sock.close().await;
        agent.on_closed(now(), &reason);
        log_notes(&mut agent);
    }
}

/// One connection; returns why it ended (empty: closed on purpose).
async fn session(
    agent: &mut Agent,
    rt: &Rc<RefCell<PodRuntime>>,
    prober: &mut KernelProber,
    sock: &TcpSocket,
    buf: &mut [u8],
    was_running: &mut bool,
) -> String {
    if let Err(e) = agent.on_connected(now()) {
        return e.to_string();
    }
    loop {
        let out = agent.take_outgoing();
        if !out.is_empty() && !sock.write_all(&out).await {
            return "connection closed while sending".into();
        }
        log_notes(agent);
        let running = agent.phase() == skiff_node_agent::Phase::Running;
        if running && !*was_running {
            crate::log::stage("node-registered", format_args!(""));
            // Nothing needed it to join; the first wasm pod will.
            crate::wasm::warm();
        }
        *was_running |= running;
        if agent.should_close() {
            return String::new();
        }
        let due = [agent.next_wakeup(), rt.borrow().next_change()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now() + 1_000_000_000);
        // A container changing state (exit, artifact loaded) also ticks the
        // kubelet.
        let wake = select(
            sleep_until_nanos(due),
            select(
                poll_fn(|cx| POD_EVENT.poll_notified(cx)),
                // Bytes to move on a port-forward or proxy tunnel.
                poll_fn(|cx| agent.poll_tunnels(cx.waker())),
            ),
        );
        let read = select(sock.read(buf), wake).await;
        let result = {
            let mut rt = rt.borrow_mut();
            rt.set_now(now());
            match read {
                Ok(0) => return "gateway closed the connection".into(),
                Ok(n) => agent.on_data(now(), &buf[..n], &mut *rt, prober),
                Err(_) => agent.on_timer(now(), &mut *rt, prober),
            }
        };
        // The kubelet may have started or stopped containers, or an
        // artifact may have arrived.
        RUNNER.notify();
        if let Err(e) = result {
            // Flush what the agent queued (e.g. an alert) before closing.
            let out = agent.take_outgoing();
            let _ = sock.write_all(&out).await;
            return e.to_string();
        }
    }
}
