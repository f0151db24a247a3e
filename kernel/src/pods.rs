//! The node side of wasm containers: each container's `skiff_wasm::Host`
//! (clocks, the kernel CSPRNG, its log sink, smoltcp sockets for its
//! containerPorts), the `NodeHost` that makes them, and the task that steps
//! the containers between the other tasks' turns.
//!
//! Addresses: once the plane gave the node a pod CIDR each pod has its own
//! address (put on the interface while the pod has a container, see
//! `HostSpec::pod_ip`), and a containerPort listens on the pod's address
//! only, so two pods may both serve 8080; a pod's connections and UDP
//! sockets use its address as their source, so it can neither bind nor
//! spoof another's. Without a pod CIDR pods share the node's address and a
//! port (TCP or UDP) is held by one container at a time on the node.
//! Ports the node serves itself (the diagnostic port) are no pod's.
//!
//! Each TCP port keeps [`BACKLOG`] listening sockets; `accept` takes an
//! established one and arms a fresh listener in its place. Outbound TCP,
//! UDP from ephemeral ports and name lookups (the node's stub resolver,
//! forwarding to its upstream server) need no port.
//!
//! Same-node TCP never reaches smoltcp, which cannot send to its own
//! addresses: a connect to a pod of this node (or to the node's address
//! while pods share it) is spliced in memory to the listening container
//! ([`Splice`]), queued for its `accept` next to the smoltcp backlog, and
//! refused at once when nobody listens there. Datagrams to the node's own
//! addresses are refused as unreachable (no in-memory UDP yet).

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::future::poll_fn;
use core::task::Poll;

use core::net::{Ipv4Addr, SocketAddrV4};
use skiff_kubelet::Nanos;
use skiff_node_agent::network_policy::Direction;
use skiff_node_agent::pod_addresses::Ipv4Net;
use skiff_node_agent::splice::{Splice, SpliceError};
use skiff_node_agent::wasmrt::{HostSpec, LogSink, NodeHost, NodeRuntime};
use skiff_node_agent::{NetworkPolicies, Services};
use skiff_proxy::{Lookup as ProxyLookup, Protocol, Resolution};

use skiff_wasm::{ConnId, Host, LookupId, NetError, Shutdown, Stream, UdpId};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::dns::QueryHandle;
use smoltcp::socket::tcp::State;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::arch::time;
use crate::executor::{self, Notify, select};
use crate::{mem, net, wasm};

/// Listening sockets kept armed per containerPort.
const BACKLOG: usize = 4;
/// Receive and send buffer of each pod socket.
const SOCKET_BUF: usize = 16 << 10;
/// How long an outbound connect waits for an answer (and an established
/// connection for an acknowledgement) before it fails as timed out.
const CONNECT_TIMEOUT_US: u64 = 30_000_000;
/// Datagrams each pod UDP socket queues each way.
const UDP_PACKETS: usize = 16;
/// Largest datagram a pod sends or receives: an Ethernet frame's worth (the
/// node does not fragment).
const UDP_PAYLOAD: usize = 1472;
/// Guest CPU time per runner turn before other tasks get the CPU.
const RUN_BUDGET: Nanos = 5_000_000;
/// Same-node connections waiting for a container's `accept`, per port.
const SPLICE_BACKLOG: usize = 16;
/// Addresses of gone pods kept on the interface (see `Shared::tombstones`).
const TOMBSTONES: usize = 16;
/// How long an aborted socket may wait for smoltcp to send its RST.
const RST_WAIT_NS: Nanos = 1_000_000_000;
/// How long a gone container's connection may take to finish its close.
const LINGER_NS: Nanos = 10_000_000_000;

/// Connections of gone containers finishing their FIN exchange (or RST),
/// with when they were left; freed by [`reap_lingering`].
static LINGERING: spin::Mutex<Vec<(SocketHandle, Nanos)>> = spin::Mutex::new(Vec::new());

/// Frees the lingering sockets that are done (closed, in TIME-WAIT, or out
/// of time).
fn reap_lingering() {
    let t = now();
    let done: Vec<SocketHandle> = {
        let mut lingering = LINGERING.lock();
        let (done, left): (Vec<_>, Vec<_>) = core::mem::take(&mut *lingering)
            .into_iter()
            .partition(|&(h, since)| {
                t - since >= LINGER_NS
                    || net::with_tcp(h, |s| match s.state() {
                        State::TimeWait => true,
                        State::Closed => s.remote_endpoint().is_none(),
                        _ => false,
                    })
            });
        *lingering = left;
        done.into_iter().map(|(h, _)| h).collect()
    };
    for h in done {
        net::remove_tcp(h);
    }
}

pub type PodRuntime = NodeRuntime<KernelNode>;

/// Wakes the kubelet's session: a container changed state.
pub static POD_EVENT: Notify = Notify::new();
/// Wakes the runner: the kubelet started or stopped something, or an
/// artifact arrived.
pub static RUNNER: Notify = Notify::new();
/// Wakes the runner: a container moved bytes or state on a same-node
/// connection (which no smoltcp socket waker sees).
static SPLICED: Notify = Notify::new();

pub fn now() -> Nanos {
    time::uptime_us() * 1000
}

/// A pod socket or lookup, for I/O wakeups.
#[derive(Clone, Copy)]
enum Waiting {
    Tcp(SocketHandle),
    Udp(SocketHandle),
    /// A lookup, by its node-wide number (smoltcp's handles do not compare).
    Query(u64, QueryHandle),
}

/// Numbers lookups node-wide.
static NEXT_LOOKUP: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// Where a container listens: its pod's address, or
/// `Ipv4Addr::UNSPECIFIED` for the node's address (no pod CIDR).
type Bound = (Ipv4Addr, u16);

/// Sockets and ports shared by all container hosts.
#[derive(Default)]
pub struct Shared {
    /// Ports the node serves itself, on every address.
    reserved: Vec<u16>,
    /// The node's Service node ports (`node_ports.rs`), on the node's
    /// address: no container sharing that address may take them.
    node_ports: Vec<u16>,
    /// TCP ports held by containers.
    ports: Vec<Bound>,
    /// UDP ports held by containers.
    udp_ports: Vec<Bound>,
    /// Pod addresses on the interface, with the number of hosts using each.
    addresses: BTreeMap<Ipv4Addr, usize>,
    /// Whose each pod address is (NetworkPolicy is kept by pod UID).
    address_owners: BTreeMap<Ipv4Addr, String>,
    /// Addresses of pods that are gone, oldest first, kept on the
    /// interface a while (at most [`TOMBSTONES`]): a peer that still
    /// connects to one (its Service table not yet updated) is refused at
    /// once by a reset instead of waiting for an ARP answer that never
    /// comes.
    tombstones: VecDeque<Ipv4Addr>,
    /// Same-node connections waiting for `accept`.
    spliced: BTreeMap<Bound, Vec<Splice>>,
    /// Every pod socket and lookup, for I/O wakeups.
    waiting: Vec<Waiting>,
    /// HTTP probes waiting for a pod's answer: a pod's same-node sends then
    /// wake the kubelet too.
    pub probes: usize,
    /// This node's pod CIDR, once known.
    pod_network: Option<Ipv4Net>,
    /// What NetworkPolicy allows the pods (kept by the agent).
    policies: NetworkPolicies,
}

impl Shared {
    /// Whether NetworkPolicy lets `peer` reach the pod at address `pod`
    /// on TCP or UDP `port`. The node itself (probes, node-port relays to
    /// other nodes) always may, as kube lets the kubelet probe; so may
    /// anything reach a container sharing the node's address (no address of
    /// its own to tell it apart).
    fn ingress_allowed(
        &self,
        pod: Ipv4Addr,
        peer: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    ) -> bool {
        let Some(uid) = self.address_owners.get(&pod) else {
            return true;
        };
        Some(peer) == net::address()
            || self
                .policies
                .lock()
                .allows(uid, Direction::Ingress, peer, protocol, port)
    }
}

/// The node's [`NodeHost`].
pub struct KernelNode {
    boot_wall_ns: u64,
    shared: Arc<spin::Mutex<Shared>>,
    /// The node's Service table (kept by the agent).
    services: Services,
}

impl KernelNode {
    /// `reserved`: ports the node itself serves (the diagnostic port).
    /// `services` and `policies`: the agent's, kept current by it.
    pub fn new(
        boot_wall_ms: u64,
        reserved: &[u16],
        services: Services,
        policies: NetworkPolicies,
    ) -> Self {
        Self {
            boot_wall_ns: boot_wall_ms * 1_000_000,
            services,
            shared: Arc::new(spin::Mutex::new(Shared {
                reserved: reserved.to_vec(),
                policies,
                ..Shared::default()
            })),
        }
    }
}

impl KernelNode {
    /// The state every container host shares (for the prober).
    pub fn shared(&self) -> Arc<spin::Mutex<Shared>> {
        self.shared.clone()
    }
}

/// Wakes the runner, and the kubelet if a probe waits: bytes or state
/// moved on a same-node connection.
pub fn spliced_activity() {
    SPLICED.notify();
}

/// A connection from `from` (a pod's address or the node's) to a container
/// of this node listening at `to`; `None` if `to` is no address of this
/// node, [`NetError::Refused`] if nobody listens there.
pub fn connect_local(
    shared: &spin::Mutex<Shared>,
    from: Ipv4Addr,
    to: SocketAddrV4,
) -> Result<Splice, NetError> {
    let target = local_target(shared, to)?.ok_or(NetError::Unreachable)?;
    splice(shared, from, target, to)
}

/// Reserves `wanted` (the node's TCP node ports) against containers
/// sharing the node's address; returns those the node may listen on: not
/// the node's own ports, nor ports such a container took first.
pub fn reserve_node_ports(shared: &spin::Mutex<Shared>, wanted: &[u16]) -> Vec<u16> {
    let mut sh = shared.lock();
    sh.node_ports = wanted.to_vec();
    wanted
        .iter()
        .copied()
        .filter(|p| !sh.reserved.contains(p) && !sh.ports.contains(&(Ipv4Addr::UNSPECIFIED, *p)))
        .collect()
}

/// Completes on the next activity on any pod socket (or spuriously).
fn io_activity(shared: &spin::Mutex<Shared>) -> impl core::future::Future<Output = ()> + '_ {
    let mut armed = false;
    poll_fn(move |cx| {
        if armed {
            return Poll::Ready(());
        }
        armed = true;
        if SPLICED.poll_notified(cx).is_ready() {
            return Poll::Ready(());
        }
        let waiting = shared.lock().waiting.clone();
        for w in waiting {
            match w {
                Waiting::Tcp(h) => net::with_tcp(h, |s| {
                    s.register_recv_waker(cx.waker());
                    s.register_send_waker(cx.waker());
                }),
                Waiting::Udp(h) => net::with_udp(h, |s| {
                    s.register_recv_waker(cx.waker());
                    s.register_send_waker(cx.waker());
                }),
                Waiting::Query(_, q) => {
                    let _ = net::dns_result(q, Some(cx.waker()));
                }
            }
        }
        Poll::Pending
    })
}

impl NodeHost for KernelNode {
    type Host = KernelHost;

    fn host(&mut self, spec: &HostSpec<'_>, log: LogSink) -> Result<KernelHost, String> {
        let mut host = KernelHost {
            boot_wall_ns: self.boot_wall_ns,
            log,
            shared: self.shared.clone(),
            services: self.services.clone(),
            namespace: spec.namespace.into(),
            pod_uid: spec.pod_uid.into(),
            service_peers: BTreeMap::new(),
            ip: None,
            ports: Vec::new(),
            udp_ports: Vec::new(),
            listeners: BTreeMap::new(),
            conns: BTreeMap::new(),
            closing: Vec::new(),
            rejected: Vec::new(),
            udp: BTreeMap::new(),
            lookups: BTreeMap::new(),
            next_id: 0,
        };
        // `host` releases what it took when it drops on an error below.
        if let Some(ip) = spec.pod_ip {
            let mut sh = self.shared.lock();
            sh.tombstones.retain(|&t| t != ip);
            let fresh = !sh.addresses.contains_key(&ip);
            if fresh && !net::add_address(ip) {
                // Make room: the oldest tombstone goes first.
                let added = sh.tombstones.pop_front().is_some_and(|old| {
                    net::remove_address(old);
                    net::add_address(ip)
                });
                if !added {
                    return Err(format!(
                        "no room for pod address {ip} on the node's interface"
                    ));
                }
            }
            *sh.addresses.entry(ip).or_insert(0) += 1;
            sh.address_owners.insert(ip, spec.pod_uid.into());
            host.ip = Some(ip);
        }
        let at = host.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let own_ip = host.ip.is_some();
        let in_use = |port: u16, proto: &str| {
            if own_ip {
                format!("{proto} port {port} is already in use on this pod's address")
            } else {
                format!(
                    "{proto} port {port} is already in use on this node (the node has no pod CIDR: pods share its address)"
                )
            }
        };
        for &port in spec.udp_ports {
            let mut sh = self.shared.lock();
            if sh.udp_ports.contains(&(at, port)) {
                return Err(in_use(port, "UDP"));
            }
            sh.udp_ports.push((at, port));
            host.udp_ports.push(port);
        }
        for &port in spec.ports {
            {
                let mut sh = self.shared.lock();
                if sh.reserved.contains(&port) {
                    return Err(format!(
                        "port {port} is reserved for the node's own service"
                    ));
                }
                if !own_ip && sh.node_ports.contains(&port) {
                    return Err(format!(
                        "port {port} is a Service's nodePort on this node (the node has no pod CIDR: pods share its address)"
                    ));
                }
                if sh.ports.contains(&(at, port)) {
                    return Err(in_use(port, "TCP"));
                }
                sh.ports.push((at, port));
            }
            host.ports.push(port);
            let mut backlog = Vec::with_capacity(BACKLOG);
            for _ in 0..BACKLOG {
                backlog.push(host.listen(port)?);
            }
            host.listeners.insert(port, backlog);
        }
        Ok(host)
    }

    fn now(&self) -> Nanos {
        now()
    }

    fn pod_network(&mut self, net: Ipv4Net) {
        self.shared.lock().pod_network = Some(net);
    }

    /// Limits may add up to more than the node has (as in kube): only
    /// touched pages take frames.
    fn memory_available(&self) -> usize {
        mem::available_to_pods() as usize
    }

    fn memory_starved(&mut self) -> bool {
        let starved = crate::regions::take_starved();
        if starved {
            warn!(
                "mem",
                "out of memory: a page the running container touched had no frame; it is killed"
            );
        }
        starved
    }

    /// Busy CPU (uptime minus halted time), the heap in use, the NIC's counters.
    fn usage(&self) -> Option<skiff_node_proto::NodeUsage> {
        use core::sync::atomic::Ordering::Relaxed;
        let c = &crate::drivers::net::COUNTERS;
        let busy_us = time::uptime_us().saturating_sub(executor::idle_us());
        Some(skiff_node_proto::NodeUsage {
            cpu_ns: busy_us * 1000,
            memory_working_set_bytes: mem::heap_used() as u64 + crate::regions::used_bytes(),
            net_rx_bytes: c.rx_bytes.load(Relaxed),
            net_tx_bytes: c.tx_bytes.load(Relaxed),
            net_rx_packets: c.rx_packets.load(Relaxed),
            net_tx_packets: c.tx_packets.load(Relaxed),
            log_bytes: 0,
        })
    }
}

/// One container's view of the node.
pub struct KernelHost {
    boot_wall_ns: u64,
    log: LogSink,
    shared: Arc<spin::Mutex<Shared>>,
    services: Services,
    /// The pod's namespace (the first DNS search domain).
    namespace: String,
    /// The pod's UID (NetworkPolicy is kept by it).
    pod_uid: String,
    /// Connections made to a Service address: the address the guest asked
    /// for, reported as the peer (the backend is an implementation detail).
    service_peers: BTreeMap<u64, SocketAddrV4>,
    /// The pod's own address; `None`: the node's.
    ip: Option<Ipv4Addr>,
    ports: Vec<u16>,
    udp_ports: Vec<u16>,
    /// Listening sockets per port.
    listeners: BTreeMap<u16, Vec<SocketHandle>>,
    conns: BTreeMap<u64, Conn>,
    /// Closed by the guest, finishing their FIN exchange.
    closing: Vec<SocketHandle>,
    /// Accepted connections NetworkPolicy denied, aborted, with when: kept
    /// until smoltcp has sent their RST (it forgets the peer then).
    rejected: Vec<(SocketHandle, Nanos)>,
    udp: BTreeMap<u64, SocketHandle>,
    /// Lookups: in flight upstream (the query and its node-wide number),
    /// or answered by the node.
    lookups: BTreeMap<u64, Lookup>,
    /// Numbers connections, UDP sockets and lookups.
    next_id: u64,
}

enum Conn {
    Tcp {
        socket: SocketHandle,
        /// When an outbound connect started (to tell a timeout from a
        /// refusal).
        connecting_since: Option<Nanos>,
    },
    /// To or from a container on this node.
    Spliced(Splice),
}

enum Lookup {
    Upstream(QueryHandle, u64),
    /// A cluster name the Service table answered.
    Answered(Result<Vec<Ipv4Addr>, NetError>),
}

fn v4(endpoint: Option<IpEndpoint>) -> Option<SocketAddrV4> {
    let e = endpoint?;
    #[allow(irrefutable_let_patterns)]
    let IpAddress::Ipv4(ip) = e.addr else {
        return None;
    };
    Some(SocketAddrV4::new(ip, e.port))
}

fn connected(state: State) -> bool {
    !matches!(state, State::Listen | State::SynReceived | State::Closed)
}

fn splice_error(e: SpliceError) -> NetError {
    match e {
        SpliceError::Reset => NetError::Reset,
        SpliceError::Shutdown => NetError::NotConnected,
    }
}

impl KernelHost {
    /// Where this container's ports are bound (see [`Bound`]).
    fn bound(&self, port: u16) -> Bound {
        (self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED), port)
    }

    fn listen(&mut self, port: u16) -> Result<SocketHandle, String> {
        let h = net::tcp_listen(self.ip, port, SOCKET_BUF)
            .map_err(|e| format!("cannot listen on port {port}: {e:?}"))?;
        self.shared.lock().waiting.push(Waiting::Tcp(h));
        Ok(h)
    }

    fn forget(&self, h: SocketHandle) {
        self.shared
            .lock()
            .waiting
            .retain(|w| !matches!(w, Waiting::Tcp(t) if *t == h));
        net::remove_tcp(h);
    }

    fn forget_udp(&self, h: SocketHandle) {
        self.shared
            .lock()
            .waiting
            .retain(|w| !matches!(w, Waiting::Udp(u) if *u == h));
        net::remove_udp(h);
    }

    fn forget_lookup(&self, key: u64) {
        self.shared
            .lock()
            .waiting
            .retain(|w| !matches!(w, Waiting::Query(k, _) if *k == key));
    }

    fn conn(&self, conn: ConnId) -> Result<&Conn, NetError> {
        self.conns.get(&conn.0).ok_or(NetError::NotConnected)
    }

    fn udp(&self, sock: UdpId) -> Result<SocketHandle, NetError> {
        self.udp.get(&sock.0).copied().ok_or(NetError::NotConnected)
    }

    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Connects to `to`: spliced to a container of this node, or through
    /// smoltcp from the pod's address.
    fn connect_to(&mut self, to: SocketAddrV4) -> Result<ConnId, NetError> {
        if let Some(target) = local_target(&self.shared, to)? {
            let from = self.local_ip();
            let client = splice(&self.shared, from, target, to)?;
            return Ok(self.insert(Conn::Spliced(client)));
        }
        if to.ip().is_loopback() {
            return Err(NetError::Unreachable);
        }
        let h = net::tcp_connect(self.ip, to, SOCKET_BUF, CONNECT_TIMEOUT_US)
            .map_err(|_| NetError::Unreachable)?;
        self.shared.lock().waiting.push(Waiting::Tcp(h));
        Ok(self.insert(Conn::Tcp {
            socket: h,
            connecting_since: Some(now()),
        }))
    }

    /// Whether NetworkPolicy lets this pod send to or connect to `to`
    /// (always, to its own node).
    fn egress_allowed(&self, to: SocketAddrV4, protocol: Protocol) -> bool {
        Some(*to.ip()) == net::address()
            || self.shared.lock().policies.lock().allows(
                &self.pod_uid,
                Direction::Egress,
                *to.ip(),
                protocol,
                to.port(),
            )
    }

    /// Whether NetworkPolicy lets `peer` reach this pod's `port`.
    fn ingress_allowed(&self, peer: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
        let Some(pod) = self.ip else {
            return true;
        };
        self.shared
            .lock()
            .ingress_allowed(pod, peer, protocol, port)
    }

    fn spliced_activity(&self) {
        SPLICED.notify();
        if self.shared.lock().probes > 0 {
            POD_EVENT.notify();
        }
    }

    fn insert(&mut self, conn: Conn) -> ConnId {
        let id = self.next_id();
        self.conns.insert(id, conn);
        ConnId(id)
    }

    /// Frees closed sockets whose FIN exchange is over.
    fn reap(&mut self) {
        let done: Vec<SocketHandle> = self
            .closing
            .iter()
            .copied()
            .filter(|&h| net::with_tcp(h, |s| matches!(s.state(), State::Closed | State::TimeWait)))
            .collect();
        for h in done {
            self.closing.retain(|&c| c != h);
            self.forget(h);
        }
        let t = now();
        let (sent, waiting): (Vec<_>, Vec<_>) = core::mem::take(&mut self.rejected)
            .into_iter()
            .partition(|&(h, since)| {
                t - since >= RST_WAIT_NS || net::with_tcp(h, |s| s.remote_endpoint().is_none())
            });
        self.rejected = waiting;
        for (h, _) in sent {
            self.forget(h);
        }
    }
}

/// Where a connect to `to` stays on this node: the listener's [`Bound`] for
/// one of this node's pod addresses, or for the node's own address (which
/// pods without a pod CIDR share); `Err(Unreachable)` for an address of
/// this node's pod CIDR that no pod holds; `Ok(None)`: not this node's.
pub fn local_target(
    shared: &spin::Mutex<Shared>,
    to: SocketAddrV4,
) -> Result<Option<Bound>, NetError> {
    let ip = *to.ip();
    let sh = shared.lock();
    if sh.addresses.contains_key(&ip) {
        Ok(Some((ip, to.port())))
    } else if net::is_own(ip) {
        Ok(Some((Ipv4Addr::UNSPECIFIED, to.port())))
    } else if sh.pod_network.is_some_and(|n| n.contains(ip)) {
        Err(NetError::Unreachable)
    } else {
        Ok(None)
    }
}

/// Joins a connect from `from` to the container listening at `target` on
/// this node: the connecting end, the other queued for its `accept`.
fn splice(
    shared: &spin::Mutex<Shared>,
    from: Ipv4Addr,
    target: Bound,
    to: SocketAddrV4,
) -> Result<Splice, NetError> {
    let mut sh = shared.lock();
    // Denied as a pod on another node would deny it: reset.
    if !sh.ports.contains(&target) || !sh.ingress_allowed(target.0, from, Protocol::Tcp, to.port())
    {
        return Err(NetError::Refused);
    }
    let from = SocketAddrV4::new(from, net::ephemeral_port());
    let queue = sh.spliced.entry(target).or_default();
    if queue.len() >= SPLICE_BACKLOG {
        return Err(NetError::Refused);
    }
    let (client, server) = Splice::pair(from, to, SOCKET_BUF);
    queue.push(server);
    drop(sh);
    SPLICED.notify();
    Ok(client)
}

impl Host for KernelHost {
    fn realtime_ns(&mut self) -> u64 {
        self.boot_wall_ns + now()
    }

    fn monotonic_ns(&mut self) -> u64 {
        now()
    }

    fn random(&mut self, buf: &mut [u8]) {
        // The node joins only with a working entropy source (node.rs), so
        // this cannot fail short of a hardware fault; never hand out zeros.
        assert!(crate::entropy::fill(buf), "entropy source failed");
    }

    fn log(&mut self, _stream: Stream, bytes: &[u8]) {
        self.log.write(bytes);
    }

    /// Growth maps nothing (pages map on first touch), but a growth the
    /// pool could not hold even now is refused: the guest ends OOMKilled
    /// at once rather than when it touches the pages.
    fn memory_growing(&mut self, current: usize, desired: usize) -> bool {
        let extra = desired.saturating_sub(current) as u64;
        crate::regions::free_bytes() >= extra
    }

    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, NetError> {
        self.reap();
        if !self.listeners.contains_key(&port) {
            return Err(NetError::NotConnected);
        }
        let bound = self.bound(port);
        let spliced = self
            .shared
            .lock()
            .spliced
            .get_mut(&bound)
            .and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
        if let Some(server) = spliced {
            return Ok(Some(self.insert(Conn::Spliced(server))));
        }
        loop {
            let backlog = &self.listeners[&port];
            let mut found = None;
            let mut dead = Vec::new();
            for (i, &h) in backlog.iter().enumerate() {
                match net::with_tcp(h, |s| s.state()) {
                    State::Closed => dead.push(i),
                    s if connected(s) && found.is_none() => found = Some(i),
                    _ => {}
                }
            }
            // Reset before we took it: re-arm as a listener.
            let endpoint = net::listen_endpoint(self.ip, port);
            for &i in &dead {
                let h = self.listeners[&port][i];
                let _ = net::with_tcp(h, |s| s.listen(endpoint));
            }
            let Some(i) = found else {
                return Ok(None);
            };
            let h = self
                .listeners
                .get_mut(&port)
                .expect("checked above")
                .remove(i);
            match self.listen(port) {
                Ok(fresh) => self.listeners.get_mut(&port).expect("checked").push(fresh),
                Err(e) => self.log.write(format!("[skiff: {e}]\n").as_bytes()),
            }
            // smoltcp completes the handshake before anyone sees the peer:
            // one NetworkPolicy denies is reset here, unseen by the guest.
            let peer = net::with_tcp(h, |s| v4(s.remote_endpoint()));
            if let Some(peer) = peer.filter(|p| !self.ingress_allowed(*p.ip(), Protocol::Tcp, port))
            {
                info!(
                    "policy",
                    "NetworkPolicy: reset {peer} -> {}:{port} (pod {})",
                    self.local_ip(),
                    self.pod_uid
                );
                net::with_tcp(h, |s| s.abort());
                net::kick();
                self.rejected.push((h, now()));
                continue;
            }
            return Ok(Some(self.insert(Conn::Tcp {
                socket: h,
                connecting_since: None,
            })));
        }
    }

    fn acceptable(&mut self, port: u16) -> bool {
        let bound = self.bound(port);
        if self
            .shared
            .lock()
            .spliced
            .get(&bound)
            .is_some_and(|q| !q.is_empty())
        {
            return true;
        }
        self.listeners.get(&port).is_some_and(|b| {
            b.iter()
                .any(|&h| net::with_tcp(h, |s| connected(s.state())))
        })
    }

    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        let h = match self.conn(conn)? {
            Conn::Tcp { socket, .. } => *socket,
            Conn::Spliced(s) => {
                let r = s.recv(buf).map_err(splice_error);
                // Room for the peer's sends, only if bytes left: a guest
                // retries a blocked receive at every step, and a wakeup
                // each time would spin the runner.
                if matches!(r, Ok(Some(n)) if n > 0) {
                    SPLICED.notify();
                }
                return r;
            }
        };
        let r = net::with_tcp(h, |s| match s.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => Ok(None),
            Ok(n) => Ok(Some(n)),
            // The peer's FIN, after the last byte.
            Err(smoltcp::socket::tcp::RecvError::Finished) => Ok(Some(0)),
            // Closed without a FIN: the peer reset it (or it timed out).
            Err(smoltcp::socket::tcp::RecvError::InvalidState) => Err(NetError::Reset),
        });
        net::kick(); // window update
        r
    }

    fn readable(&mut self, conn: ConnId) -> bool {
        match self.conn(conn) {
            Err(_) => true,
            Ok(Conn::Spliced(s)) => s.readable(),
            Ok(&Conn::Tcp { socket, .. }) => {
                net::with_tcp(socket, |s| s.can_recv() || !s.may_recv())
            }
        }
    }

    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, NetError> {
        let h = match self.conn(conn)? {
            Conn::Tcp { socket, .. } => *socket,
            Conn::Spliced(s) => {
                let r = s.send(data).map_err(splice_error);
                // Only bytes queued are news to the peer (as for `recv`).
                if matches!(r, Ok(Some(n)) if n > 0) {
                    self.spliced_activity();
                }
                return r;
            }
        };
        let r = net::with_tcp(h, |s| {
            if !s.may_send() {
                Err(if s.state() == State::Closed {
                    NetError::Reset
                } else {
                    NetError::NotConnected
                })
            } else if s.can_send() {
                Ok(Some(s.send_slice(data).unwrap_or(0)))
            } else {
                Ok(None)
            }
        });
        net::kick();
        r
    }

    fn writable(&mut self, conn: ConnId) -> bool {
        match self.conn(conn) {
            Err(_) => true,
            Ok(Conn::Spliced(s)) => s.writable(),
            Ok(&Conn::Tcp { socket, .. }) => {
                net::with_tcp(socket, |s| s.can_send() || !s.may_send())
            }
        }
    }

    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), NetError> {
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            match self.conn(conn)? {
                Conn::Spliced(s) => {
                    s.shutdown();
                    self.spliced_activity();
                }
                &Conn::Tcp { socket, .. } => {
                    net::with_tcp(socket, |s| s.close());
                    net::kick();
                }
            }
        }
        Ok(())
    }

    fn close(&mut self, conn: ConnId) {
        self.service_peers.remove(&conn.0);
        match self.conns.remove(&conn.0) {
            Some(Conn::Tcp { socket, .. }) => {
                net::with_tcp(socket, |s| s.close());
                net::kick();
                self.closing.push(socket);
            }
            Some(Conn::Spliced(s)) => {
                // An orderly close: the peer reads end-of-stream.
                s.shutdown();
                drop(s);
                self.spliced_activity();
            }
            None => {}
        }
    }

    fn local_ip(&mut self) -> Ipv4Addr {
        self.ip
            .or_else(net::address)
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    fn connect(&mut self, asked: SocketAddrV4) -> Result<ConnId, NetError> {
        self.reap();
        // A Service address is translated to a backend now (no packet to
        // the ClusterIP ever exists); the guest keeps seeing the address
        // it asked for.
        let mut random = [0u8; 8];
        crate::entropy::fill(&mut random);
        let client = self.local_ip();
        let resolution = self.services.lock().resolve(
            Protocol::Tcp,
            asked,
            client,
            now(),
            u64::from_le_bytes(random),
        );
        let to = match resolution {
            Resolution::NotAService => asked,
            Resolution::Backend(backend) => backend,
            Resolution::NoEndpoints => return Err(NetError::Refused),
        };
        // NetworkPolicy applies to the backend, as after kube-proxy's DNAT.
        if !self.egress_allowed(to, Protocol::Tcp) {
            return Err(NetError::AccessDenied);
        }
        let id = self.connect_to(to)?;
        if to != asked {
            self.service_peers.insert(id.0, asked);
        }
        Ok(id)
    }

    fn connect_status(&mut self, conn: ConnId) -> Result<bool, NetError> {
        let (socket, since) = match self.conn(conn)? {
            Conn::Spliced(_) => return Ok(true),
            &Conn::Tcp {
                socket,
                connecting_since,
            } => (socket, connecting_since),
        };
        match net::with_tcp(socket, |s| s.state()) {
            State::SynSent | State::SynReceived => Ok(false),
            // A reset in SYN-SENT closes the socket; so does smoltcp's
            // timeout, which only the clock tells apart.
            State::Closed => Err(match since {
                Some(t) if now() - t >= CONNECT_TIMEOUT_US * 1000 => NetError::TimedOut,
                _ => NetError::Refused,
            }),
            _ => Ok(true),
        }
    }

    fn addresses(&mut self, conn: ConnId) -> Result<(SocketAddrV4, SocketAddrV4), NetError> {
        let (local, remote) = match self.conn(conn)? {
            Conn::Spliced(s) => s.addresses(),
            &Conn::Tcp { socket, .. } => {
                let (local, remote) =
                    net::with_tcp(socket, |s| (s.local_endpoint(), s.remote_endpoint()));
                v4(local).zip(v4(remote)).ok_or(NetError::NotConnected)?
            }
        };
        Ok((
            local,
            self.service_peers.get(&conn.0).copied().unwrap_or(remote),
        ))
    }

    fn udp_bind(&mut self, port: u16) -> Result<(UdpId, u16), NetError> {
        if port != 0 && !self.udp_ports.contains(&port) {
            return Err(NetError::AccessDenied);
        }
        let h = net::udp_bind(self.ip, port, UDP_PACKETS, UDP_PAYLOAD)
            .map_err(|_| NetError::AddressInUse)?;
        self.shared.lock().waiting.push(Waiting::Udp(h));
        let bound = net::with_udp(h, |s| s.endpoint().port);
        let id = self.next_id();
        self.udp.insert(id, h);
        Ok((UdpId(id), bound))
    }

    fn udp_send(&mut self, sock: UdpId, to: SocketAddrV4, data: &[u8]) -> Result<bool, NetError> {
        let h = self.udp(sock)?;
        if data.len() > UDP_PAYLOAD {
            return Err(NetError::TooLarge);
        }
        if net::is_own(*to.ip()) || net::is_pod_address(*to.ip()) {
            return Err(NetError::Unreachable);
        }
        if !self.egress_allowed(to, Protocol::Udp) {
            return Err(NetError::AccessDenied);
        }
        let to = IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
        let r = net::with_udp(h, |s| match s.send_slice(data, to) {
            Ok(()) => Ok(true),
            Err(smoltcp::socket::udp::SendError::BufferFull) => Ok(false),
            Err(smoltcp::socket::udp::SendError::Unaddressable) => Err(NetError::Unreachable),
        });
        net::kick();
        r
    }

    fn udp_recv(
        &mut self,
        sock: UdpId,
        buf: &mut [u8],
    ) -> Result<Option<(usize, SocketAddrV4)>, NetError> {
        let h = self.udp(sock)?;
        let local_port = net::with_udp(h, |s| s.endpoint().port);
        loop {
            let got = net::with_udp(h, |s| {
                let (data, meta) = s.recv().ok()?;
                let from = v4(Some(meta.endpoint));
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                Some((n, from))
            });
            match got {
                None => return Ok(None),
                // A datagram NetworkPolicy denies is dropped unseen.
                Some((n, Some(from)))
                    if self.ingress_allowed(*from.ip(), Protocol::Udp, local_port) =>
                {
                    return Ok(Some((n, from)));
                }
                Some(_) => {}
            }
        }
    }

    fn udp_readable(&mut self, sock: UdpId) -> bool {
        self.udp(sock)
            .is_ok_and(|h| net::with_udp(h, |s| s.can_recv()))
    }

    fn udp_writable(&mut self, sock: UdpId) -> bool {
        self.udp(sock)
            .is_ok_and(|h| net::with_udp(h, |s| s.can_send()))
    }

    fn udp_close(&mut self, sock: UdpId) {
        if let Some(h) = self.udp.remove(&sock.0) {
            self.forget_udp(h);
        }
    }

    fn lookup(&mut self, name: &str) -> Result<LookupId, NetError> {
        // Cluster names are the node's to answer (kube's DNS, without a
        // DNS pod); others go to the upstream server.
        let answer = self.services.lock().lookup(name, &self.namespace);
        let lookup = match answer {
            ProxyLookup::Addresses(addrs) => Lookup::Answered(Ok(addrs)),
            ProxyLookup::NxDomain => Lookup::Answered(Err(NetError::NameUnresolvable)),
            ProxyLookup::Alias(_) | ProxyLookup::Upstream => {
                let name = match &answer {
                    ProxyLookup::Alias(external) => external.as_str(),
                    _ => name,
                };
                let q = net::dns_start(name).map_err(|e| match e {
                    net::ResolveError::Busy | net::ResolveError::Failed => NetError::ResolverFailed,
                    net::ResolveError::BadName | net::ResolveError::NoAddress => {
                        NetError::NameUnresolvable
                    }
                })?;
                let key = NEXT_LOOKUP.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
                self.shared.lock().waiting.push(Waiting::Query(key, q));
                Lookup::Upstream(q, key)
            }
        };
        let id = self.next_id();
        self.lookups.insert(id, lookup);
        Ok(LookupId(id))
    }

    fn lookup_result(&mut self, id: LookupId) -> Option<Result<Vec<Ipv4Addr>, NetError>> {
        let (q, key) = match self.lookups.get(&id.0) {
            None => return Some(Err(NetError::NotConnected)),
            Some(Lookup::Answered(_)) => {
                let Some(Lookup::Answered(answer)) = self.lookups.remove(&id.0) else {
                    unreachable!("matched above")
                };
                return Some(answer);
            }
            Some(&Lookup::Upstream(q, key)) => (q, key),
        };
        let Poll::Ready(answer) = net::dns_result(q, None) else {
            return None;
        };
        self.lookups.remove(&id.0);
        self.forget_lookup(key);
        // smoltcp reports NXDOMAIN and an unanswered query alike.
        Some(answer.map_err(|_| NetError::NameUnresolvable))
    }

    fn lookup_cancel(&mut self, id: LookupId) {
        if let Some(Lookup::Upstream(q, key)) = self.lookups.remove(&id.0) {
            net::dns_cancel(q);
            self.forget_lookup(key);
        }
    }
}

impl Drop for KernelHost {
    fn drop(&mut self) {
        let conns = core::mem::take(&mut self.conns);
        let listeners: Vec<SocketHandle> = self.listeners.values().flatten().copied().collect();
        for h in listeners {
            self.forget(h);
        }
        // Open connections close as a process's do when it exits (a FIN),
        // and those closing or rejected finish their FIN or RST: freeing
        // them now would send nothing, leaving the peer waiting forever.
        let finishing: Vec<SocketHandle> = conns
            .values()
            .filter_map(|c| match c {
                Conn::Tcp { socket, .. } => Some(*socket),
                Conn::Spliced(_) => None,
            })
            .inspect(|&h| net::with_tcp(h, |s| s.close()))
            .chain(self.closing.iter().copied())
            .chain(self.rejected.iter().map(|&(h, _)| h))
            .collect();
        {
            let mut sh = self.shared.lock();
            sh.waiting
                .retain(|w| !matches!(w, Waiting::Tcp(t) if finishing.contains(t)));
        }
        let t = now();
        LINGERING
            .lock()
            .extend(finishing.into_iter().map(|h| (h, t)));
        net::kick();
        // Dropping a spliced end without shutting down resets its peer.
        drop(conns);
        for h in core::mem::take(&mut self.udp).into_values() {
            self.forget_udp(h);
        }
        for lookup in core::mem::take(&mut self.lookups).into_values() {
            if let Lookup::Upstream(q, key) = lookup {
                net::dns_cancel(q);
                self.forget_lookup(key);
            }
        }
        let at = self.ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let ports = core::mem::take(&mut self.ports);
        let udp_ports = core::mem::take(&mut self.udp_ports);
        let mut sh = self.shared.lock();
        sh.ports.retain(|&(ip, p)| ip != at || !ports.contains(&p));
        sh.udp_ports
            .retain(|&(ip, p)| ip != at || !udp_ports.contains(&p));
        // Connections nobody will accept are refused (reset).
        for p in ports {
            sh.spliced.remove(&(at, p));
        }
        if let Some(ip) = self.ip
            && let Some(users) = sh.addresses.get_mut(&ip)
        {
            *users -= 1;
            if *users == 0 {
                sh.addresses.remove(&ip);
                sh.address_owners.remove(&ip);
                sh.tombstones.push_back(ip);
                if sh.tombstones.len() > TOMBSTONES
                    && let Some(old) = sh.tombstones.pop_front()
                {
                    net::remove_address(old);
                }
            }
        }
        drop(sh);
        SPLICED.notify();
    }
}

/// Steps wasm containers whenever any can run, yielding to the other tasks
/// (network, kubelet, diagnostics) after every [`RUN_BUDGET`] of guest time.
pub async fn runner(rt: Rc<RefCell<PodRuntime>>) {
    // Never hold a borrow of `rt` across an await: the session uses it too.
    let shared = rt.borrow().wasm.node().shared.clone();
    loop {
        let r = wasm::with_ticks(|| rt.borrow_mut().wasm.run(RUN_BUDGET));
        if r.changed {
            POD_EVENT.notify();
        }
        if r.runnable {
            executor::yield_now().await;
            // While guests are busy the runner never waits on the sockets,
            // so containers waiting for I/O re-check readiness every turn
            // (a step of a still-blocked guest returns at once).
            rt.borrow_mut().wasm.wake_io();
            continue;
        }
        let until = r.next_deadline.unwrap_or(now() + 1_000_000_000);
        let sleep = async {
            let n = now();
            if until > n {
                executor::sleep_us((until - n).div_ceil(1000)).await;
            }
        };
        let _ = select(
            poll_fn(|cx| RUNNER.poll_notified(cx)),
            select(sleep, io_activity(&shared)),
        )
        .await;
        // The wait may end at once (activity the guests made themselves,
        // pod to pod): the other tasks (network, node-port relays) still
        // get their turn before the guests go again.
        executor::yield_now().await;
        rt.borrow_mut().wasm.wake_io();
        reap_lingering();
    }
}

/// The node's runtime (wasm + the built-in test runtime), shared by the
/// kubelet's session and the [`runner`].
pub fn new_runtime(
    engine: skiff_node_agent::wasmrt::EngineSource,
    artifacts: skiff_node_agent::artifacts::ArtifactStore,
    boot_wall_ms: u64,
    node_ip: Option<String>,
    reserved_ports: &[u16],
    services: Services,
    policies: NetworkPolicies,
) -> Rc<RefCell<PodRuntime>> {
    let wasm = skiff_node_agent::wasmrt::WasmRuntime::new(
        engine,
        KernelNode::new(boot_wall_ms, reserved_ports, services, policies),
        artifacts,
        boot_wall_ms,
        node_ip.clone(),
    );
    let test = skiff_node_agent::testrt::TestRuntime::new(boot_wall_ms, node_ip);
    Rc::new(RefCell::new(NodeRuntime::new(wasm, test)))
}
