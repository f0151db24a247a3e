//! The network stack: smoltcp over virtio-net, driven by one task.
//!
//! Invariants: the `Stack` lives behind one lock that only task code takes
//! (never interrupt handlers). The net task polls the interface, then sleeps
//! until the NIC interrupts, smoltcp's next deadline passes, or a socket
//! user `kick`s it after queueing data. Socket users register smoltcp's
//! async wakers, so nothing polls in a loop.

use alloc::vec;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::net::Ipv4Addr;
use core::task::Poll;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::{dhcpv4, dns, icmp, tcp, udp};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, IpEndpoint,
    IpListenEndpoint, Ipv4Cidr,
};

use crate::arch::time;
use crate::drivers::Irq;
use crate::drivers::net::NetDevice;
use crate::executor::{self, IrqWait, Notify, select};

/// DNS queries in flight at once (the node's own and its pods').
const DNS_QUERIES: usize = 16;

pub struct Stack {
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: NetDevice,
    dhcp: Option<SocketHandle>,
    dns: SocketHandle,
    dns_from_config: bool,
    irq: Irq,
    pub ip: Option<Ipv4Cidr>,
    pub gateway: Option<Ipv4Addr>,
    /// Pod addresses on the interface (each a /32 after the node's own, so
    /// the node's address stays the source of the node's connections).
    pod_ips: Vec<Ipv4Addr>,
}

struct Global(spin::Mutex<Option<Stack>>);
// SAFETY: one CPU, and the stack is only touched from task context (never
// from interrupt handlers), so its non-`Send` parts never cross threads.
unsafe impl Sync for Global {}

static STACK: Global = Global(spin::Mutex::new(None));
/// Wakes the net task to transmit what sockets queued.
static KICK: Notify = Notify::new();
/// Notified once the interface has an address.
pub static UP: Notify = Notify::new();

fn now() -> Instant {
    Instant::from_micros(time::uptime_us() as i64)
}

/// Runs `f` on the stack. Panics if the stack is not up (callers start only
/// after `init`).
pub fn with<R>(f: impl FnOnce(&mut Stack) -> R) -> R {
    let mut g = STACK.0.lock();
    f(g.as_mut().expect("network stack initialised"))
}

pub fn kick() {
    KICK.notify();
}

/// Brings up the interface on `dev` per the node configuration and spawns
/// the net task.
pub fn init(mut dev: NetDevice, irq: Irq, cfg: &skiff_node_config::NodeConfig) {
    let mac = dev.mac();
    let iface = Interface::new(
        Config::new(HardwareAddress::Ethernet(EthernetAddress(mac))),
        &mut dev,
        now(),
    );
    let mut sockets = SocketSet::new(Vec::new());
    let servers: Vec<IpAddress> = cfg.dns().iter().map(|a| IpAddress::Ipv4(*a)).collect();
    let dns = sockets.add(dns::Socket::new(
        &servers,
        (0..DNS_QUERIES).map(|_| None).collect::<Vec<_>>(),
    ));
    let mut stack = Stack {
        iface,
        sockets,
        dev,
        dhcp: None,
        dns,
        dns_from_config: !servers.is_empty(),
        irq,
        ip: None,
        gateway: None,
        pod_ips: Vec::new(),
    };
    match cfg.net {
        skiff_node_config::NetMode::Static { ip, gateway } => {
            stack.configure(Ipv4Cidr::new(ip.addr, ip.prefix_len), gateway);
        }
        skiff_node_config::NetMode::Dhcp => {
            stack.dhcp = Some(stack.sockets.add(dhcpv4::Socket::new()));
        }
        skiff_node_config::NetMode::None => {}
    }
    info!(
        "net",
        "mac={:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        mac[0],
        mac[1],
        mac[2],
        mac[3],
        mac[4],
        mac[5]
    );
    *STACK.0.lock() = Some(stack);
    executor::spawn(run(irq));
}

impl Stack {
    fn configure(&mut self, cidr: Ipv4Cidr, gateway: Option<Ipv4Addr>) {
        let pods = &self.pod_ips;
        self.iface.update_ip_addrs(|addrs| {
            addrs.clear();
            let _ = addrs.push(IpCidr::Ipv4(cidr));
            for &ip in pods {
                let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(ip, 32)));
            }
        });
        self.iface.routes_mut().remove_default_ipv4_route();
        if let Some(gw) = gateway {
            let _ = self.iface.routes_mut().add_default_ipv4_route(gw);
        }
        let first = self.ip.is_none();
        self.ip = Some(cidr);
        self.gateway = gateway;
        if first {
            crate::log::stage(
                "net-up",
                format_args!(" ip={}/{}", cidr.address(), cidr.prefix_len()),
            );
        } else {
            info!("net", "address changed ip={cidr}");
        }
        UP.notify();
    }

    /// One round of smoltcp processing; returns how long until the next.
    /// `irq`: the NIC interrupted, so acknowledge it first (two MMIO
    /// accesses, each a costly VM exit: skipped on kicks and timeouts).
    fn poll(&mut self, irq: bool) -> Option<Duration> {
        if irq {
            self.dev.ack_interrupt();
            if let Some(pin) = self.irq.pin() {
                crate::arch::apic::ioapic_unmask(pin);
            }
        }
        let t = now();
        self.iface.poll(t, &mut self.dev, &mut self.sockets);
        if let Some(h) = self.dhcp {
            match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
                Some(dhcpv4::Event::Configured(c)) => {
                    let (addr, router) = (c.address, c.router);
                    let servers: Vec<IpAddress> =
                        c.dns_servers.iter().map(|a| IpAddress::Ipv4(*a)).collect();
                    if !self.dns_from_config {
                        self.sockets
                            .get_mut::<dns::Socket>(self.dns)
                            .update_servers(&servers);
                    }
                    self.configure(addr, router);
                    return Some(Duration::ZERO);
                }
                // Also reported once at start, before any lease.
                Some(dhcpv4::Event::Deconfigured) if self.ip.is_some() => {
                    warn!("net", "dhcp lease lost");
                    self.iface.update_ip_addrs(|a| a.clear());
                    self.ip = None;
                }
                _ => {}
            }
        }
        self.iface.poll_delay(now(), &self.sockets)
    }
}

async fn run(irq: Irq) {
    // The first round acknowledges whatever fired before we started.
    let mut irq_fired = true;
    loop {
        let delay = with(|s| s.poll(core::mem::take(&mut irq_fired) || irq.pin().is_none()));
        let us = delay.map_or(1_000_000, |d| d.total_micros()).min(1_000_000);
        if us == 0 {
            continue;
        }
        let kick = poll_fn(|cx| KICK.poll_notified(cx));
        match irq.pin() {
            Some(p) => {
                if let Ok(Ok(())) =
                    select(select(IrqWait(p as usize), executor::sleep_us(us)), kick).await
                {
                    irq_fired = true;
                }
            }
            // No interrupt line: fall back to a 1 ms poll.
            None => {
                let _ = select(executor::sleep_us(us.min(1000)), kick).await;
            }
        }
    }
}

/// A TCP socket in the stack's socket set; removed when dropped.
pub struct TcpSocket(SocketHandle);

/// Why `TcpSocket::connect` failed (the node's link to the control-plane
/// gateway, `node.rs`, dials with it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectError {
    /// No address yet, or the address/port is unusable.
    Unaddressable,
    /// The peer answered with a reset (nothing listening).
    Refused,
    TimedOut,
}

/// Next local port for outgoing connections and UDP sockets (IANA dynamic
/// range), starting at a random point so reboots do not reuse 4-tuples.
static NEXT_EPHEMERAL: spin::Mutex<u16> = spin::Mutex::new(0);

pub fn ephemeral_port() -> u16 {
    const FIRST: u16 = 49152;
    let mut p = NEXT_EPHEMERAL.lock();
    if *p < FIRST {
        *p = FIRST + crate::entropy::weak_u16() % (u16::MAX - FIRST);
    }
    let port = *p;
    *p = if port == u16::MAX { FIRST } else { port + 1 };
    port
}

impl TcpSocket {
    /// A socket with `buf` bytes of receive and of send buffer. Above
    /// 64 KiB smoltcp negotiates window scaling (RFC 7323) from the
    /// receive buffer's size, so large buffers give large windows.
    fn new_socket(buf: usize) -> tcp::Socket<'static> {
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; buf]),
            tcp::SocketBuffer::new(vec![0; buf]),
        );
        // Disable smoltcp's 10 ms delayed ACK: our reader drains the buffer
        // promptly, and a late ACK stalls a bulk sender's window.
        s.set_ack_delay(None);
        s
    }

    pub fn listen(port: u16, buf: usize) -> Result<TcpSocket, tcp::ListenError> {
        let mut s = Self::new_socket(buf);
        s.listen(port)?;
        Ok(TcpSocket(with(|st| st.sockets.add(s))))
    }

    /// Opens a connection to `addr:port`, giving up after `timeout_us`.
    pub async fn connect(
        addr: Ipv4Addr,
        port: u16,
        buf: usize,
        timeout_us: u64,
    ) -> Result<TcpSocket, ConnectError> {
        let sock = with(|st| {
            let mut s = Self::new_socket(buf);
            let remote = IpEndpoint::new(IpAddress::Ipv4(addr), port);
            s.connect(st.iface.context(), remote, ephemeral_port())
                .map_err(|_| ConnectError::Unaddressable)?;
            Ok(TcpSocket(st.sockets.add(s)))
        })?;
        kick();
        let established = poll_fn(|cx| {
            with(|st| {
                let s = st.sockets.get_mut::<tcp::Socket>(sock.0);
                match s.state() {
                    tcp::State::SynSent | tcp::State::SynReceived => {
                        s.register_send_waker(cx.waker());
                        s.register_recv_waker(cx.waker());
                        Poll::Pending
                    }
                    // A reset in SYN-SENT closes the socket.
                    tcp::State::Closed => Poll::Ready(Err(ConnectError::Refused)),
                    _ => Poll::Ready(Ok(())),
                }
            })
        });
        match select(established, executor::sleep_us(timeout_us)).await {
            Ok(Ok(())) => Ok(sock),
            Ok(Err(e)) => Err(e),
            Err(()) => Err(ConnectError::TimedOut),
        }
    }

    /// Waits until a peer connected.
    pub async fn accept(&self) {
        poll_fn(|cx| {
            with(|st| {
                let s = st.sockets.get_mut::<tcp::Socket>(self.0);
                if s.state() != tcp::State::Listen && s.state() != tcp::State::SynReceived {
                    Poll::Ready(())
                } else {
                    s.register_recv_waker(cx.waker());
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await
    }

    /// Reads some bytes; 0 means the peer closed its side.
    pub async fn read(&self, buf: &mut [u8]) -> usize {
        let n = poll_fn(|cx| {
            with(|st| {
                let s = st.sockets.get_mut::<tcp::Socket>(self.0);
                if s.can_recv() {
                    Poll::Ready(s.recv_slice(buf).unwrap_or(0))
                } else if !s.may_recv() {
                    Poll::Ready(0)
                } else {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
            })
        })
        .await;
        kick(); // window update
        n
    }

    /// Writes all of `data`; `false` if the connection closed first.
    pub async fn write_all(&self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = poll_fn(|cx| {
                with(|st| {
                    let s = st.sockets.get_mut::<tcp::Socket>(self.0);
                    if !s.may_send() {
                        Poll::Ready(None)
                    } else if s.can_send() {
                        Poll::Ready(s.send_slice(data).ok())
                    } else {
                        s.register_send_waker(cx.waker());
                        Poll::Pending
                    }
                })
            })
            .await;
            let Some(n) = n else { return false };
            data = &data[n..];
            kick();
        }
        true
    }

    /// Closes our side and waits (at most 2 s) until the data is out.
    pub async fn close(&self) {
        with(|st| st.sockets.get_mut::<tcp::Socket>(self.0).close());
        kick();
        let done = poll_fn(|cx| {
            with(|st| {
                let s = st.sockets.get_mut::<tcp::Socket>(self.0);
                match s.state() {
                    tcp::State::Closed | tcp::State::TimeWait => Poll::Ready(()),
                    _ => {
                        s.register_send_waker(cx.waker());
                        s.register_recv_waker(cx.waker());
                        Poll::Pending
                    }
                }
            })
        });
        let _ = select(done, executor::sleep_us(2_000_000)).await;
    }
}

/// A relayed connection was reset (or timed out): its bytes are lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reset;

/// Owned sockets driven by a task's own `poll` (the node-port relays in
/// `node_ports.rs`), with smoltcp's wakers.
impl TcpSocket {
    /// A listener on `addr:port` only.
    pub fn listen_on(addr: Ipv4Addr, port: u16, buf: usize) -> Result<TcpSocket, tcp::ListenError> {
        tcp_listen(Some(addr), port, buf).map(TcpSocket)
    }

    /// Starts a connection from `from` to `to` (see [`tcp_connect`]); await
    /// [`TcpSocket::poll_connected`].
    pub fn start_connect(
        from: Ipv4Addr,
        to: core::net::SocketAddrV4,
        buf: usize,
        timeout_us: u64,
    ) -> Result<TcpSocket, ConnectError> {
        tcp_connect(Some(from), to, buf, timeout_us).map(TcpSocket)
    }

    pub fn poll_connected(
        &self,
        cx: &mut core::task::Context<'_>,
    ) -> Poll<Result<(), ConnectError>> {
        with_tcp(self.0, |s| match s.state() {
            tcp::State::SynSent | tcp::State::SynReceived => {
                s.register_send_waker(cx.waker());
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            // A reset in SYN-SENT closes the socket (as does the timeout).
            tcp::State::Closed => Poll::Ready(Err(ConnectError::Refused)),
            _ => Poll::Ready(Ok(())),
        })
    }

    /// For a listener: a peer completed the handshake (`Some(true)`), it
    /// still listens (`Some(false)`; `waker`, if any, is woken on a
    /// change), or it was closed before we took it (`None`).
    pub fn accepted(&self, waker: Option<&core::task::Waker>) -> Option<bool> {
        with_tcp(self.0, |s| match s.state() {
            tcp::State::Listen | tcp::State::SynReceived => {
                if let Some(w) = waker {
                    s.register_recv_waker(w);
                }
                Some(false)
            }
            tcp::State::Closed => None,
            _ => Some(true),
        })
    }

    /// The peer's address once connected.
    pub fn remote(&self) -> Option<core::net::SocketAddrV4> {
        with_tcp(self.0, |s| {
            let e = s.remote_endpoint()?;
            #[allow(irrefutable_let_patterns)]
            let IpAddress::Ipv4(ip) = e.addr else {
                return None;
            };
            Some(core::net::SocketAddrV4::new(ip, e.port))
        })
    }

    /// Aborts the connection if the peer leaves data unacknowledged for
    /// `us` (a peer that vanished).
    pub fn set_timeout(&self, us: u64) {
        with_tcp(self.0, |s| s.set_timeout(Some(Duration::from_micros(us))));
    }

    /// Reads some bytes: `Ok(0)` is the peer's FIN, [`Reset`] a reset.
    pub fn poll_recv(
        &self,
        cx: &mut core::task::Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, Reset>> {
        let r = with_tcp(self.0, |s| match s.recv_slice(buf) {
            Ok(0) if !buf.is_empty() => {
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => Poll::Ready(Ok(n)),
            Err(tcp::RecvError::Finished) => Poll::Ready(Ok(0)),
            // Closed without the peer's FIN: reset or timed out.
            Err(tcp::RecvError::InvalidState) => Poll::Ready(Err(Reset)),
        });
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            kick(); // window update
        }
        r
    }

    /// Queues bytes to send: how many were taken; [`Reset`] once the
    /// connection is gone (or our side was shut).
    pub fn poll_send(
        &self,
        cx: &mut core::task::Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, Reset>> {
        let r = with_tcp(self.0, |s| {
            if !s.may_send() {
                Poll::Ready(Err(Reset))
            } else if s.can_send() {
                Poll::Ready(Ok(s.send_slice(data).unwrap_or(0)))
            } else {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
        });
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            kick();
        }
        r
    }

    /// Sends our FIN after what is queued (TCP's half-close).
    pub fn shutdown(&self) {
        with_tcp(self.0, |s| s.close());
        kick();
    }

    /// Ready once the FIN exchange is over (or the connection is gone), so
    /// dropping the socket loses nothing.
    pub fn poll_finished(&self, cx: &mut core::task::Context<'_>) -> Poll<()> {
        with_tcp(self.0, |s| match s.state() {
            tcp::State::Closed | tcp::State::TimeWait => Poll::Ready(()),
            _ => {
                s.register_send_waker(cx.waker());
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
        })
    }

    /// Resets the connection: smoltcp sends the RST on its next poll, so
    /// the socket stays in the set until it did (at most `wait_us`).
    pub async fn abort(self, wait_us: u64) {
        with_tcp(self.0, |s| s.abort());
        kick();
        // The RST is out once smoltcp forgot the peer.
        let sent = poll_fn(|cx| {
            with_tcp(self.0, |s| {
                if s.remote_endpoint().is_none() {
                    Poll::Ready(())
                } else {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
            })
        });
        let _ = select(sent, executor::sleep_us(wait_us)).await;
    }
}

impl Drop for TcpSocket {
    fn drop(&mut self) {
        with(|st| {
            st.sockets.get_mut::<tcp::Socket>(self.0).abort();
            st.sockets.remove(self.0);
        });
        kick();
    }
}

/// A bare listening TCP socket for owners that manage sockets themselves
/// (the pod hosts in `pods.rs`), on `addr` only or on every address (`None`);
/// see [`with_tcp`] and [`remove_tcp`].
pub fn tcp_listen(
    addr: Option<Ipv4Addr>,
    port: u16,
    buf: usize,
) -> Result<SocketHandle, tcp::ListenError> {
    let mut s = TcpSocket::new_socket(buf);
    s.listen(listen_endpoint(addr, port))?;
    Ok(with(|st| st.sockets.add(s)))
}

pub fn listen_endpoint(addr: Option<Ipv4Addr>, port: u16) -> IpListenEndpoint {
    IpListenEndpoint {
        addr: addr.map(IpAddress::Ipv4),
        port,
    }
}

/// Puts a pod's address on the interface; false if the interface holds
/// no more addresses (`SMOLTCP_IFACE_MAX_ADDR_COUNT`).
pub fn add_address(ip: Ipv4Addr) -> bool {
    with(|st| {
        if st.pod_ips.contains(&ip) {
            return true;
        }
        let mut added = false;
        st.iface.update_ip_addrs(|addrs| {
            added = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(ip, 32))).is_ok();
        });
        if added {
            st.pod_ips.push(ip);
        }
        added
    })
}

/// Takes a pod's address off the interface.
pub fn remove_address(ip: Ipv4Addr) {
    with(|st| {
        st.pod_ips.retain(|&p| p != ip);
        let target = IpCidr::Ipv4(Ipv4Cidr::new(ip, 32));
        st.iface
            .update_ip_addrs(|addrs| addrs.retain(|a| *a != target));
    });
}

/// Runs `f` on a socket from [`tcp_listen`].
pub fn with_tcp<R>(h: SocketHandle, f: impl FnOnce(&mut tcp::Socket<'static>) -> R) -> R {
    with(|st| f(st.sockets.get_mut::<tcp::Socket>(h)))
}

/// Aborts (RST if connected) and frees a socket from [`tcp_listen`].
pub fn remove_tcp(h: SocketHandle) {
    with(|st| {
        st.sockets.get_mut::<tcp::Socket>(h).abort();
        st.sockets.remove(h);
    });
    kick();
}

/// Opens a bare TCP connection to `to` for owners that manage sockets
/// themselves (the pod hosts in `pods.rs`); it aborts if the peer does not
/// answer within `timeout_us` (and later, if it stops acknowledging data for
/// that long).
pub fn tcp_connect(
    from: Option<Ipv4Addr>,
    to: core::net::SocketAddrV4,
    buf: usize,
    timeout_us: u64,
) -> Result<SocketHandle, ConnectError> {
    let h = with(|st| {
        let mut s = TcpSocket::new_socket(buf);
        s.set_timeout(Some(Duration::from_micros(timeout_us)));
        let remote = IpEndpoint::new(IpAddress::Ipv4(*to.ip()), to.port());
        s.connect(
            st.iface.context(),
            remote,
            listen_endpoint(from, ephemeral_port()),
        )
        .map_err(|_| ConnectError::Unaddressable)?;
        Ok(st.sockets.add(s))
    })?;
    kick();
    Ok(h)
}

/// Whether `ip` is one of this node's own addresses (which smoltcp cannot
/// send to: it would ARP for itself).
pub fn is_own(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || with(|st| st.ip.is_some_and(|c| c.address() == ip))
}

/// Whether `ip` is a pod address on this node's interface.
pub fn is_pod_address(ip: Ipv4Addr) -> bool {
    with(|st| st.pod_ips.contains(&ip))
}

/// The node's address, if it has one.
pub fn address() -> Option<Ipv4Addr> {
    with(|st| st.ip.map(|c| c.address()))
}

/// A bare UDP socket bound to `addr:port` (`None`: every address; port 0:
/// an ephemeral one) with room for `packets` datagrams of up to `payload`
/// bytes each way; see [`with_udp`] and [`remove_udp`].
pub fn udp_bind(
    addr: Option<Ipv4Addr>,
    port: u16,
    packets: usize,
    payload: usize,
) -> Result<SocketHandle, udp::BindError> {
    let buf = || {
        udp::PacketBuffer::new(
            vec![udp::PacketMetadata::EMPTY; packets],
            vec![0; packets * payload],
        )
    };
    let mut s = udp::Socket::new(buf(), buf());
    s.bind(listen_endpoint(
        addr,
        if port == 0 { ephemeral_port() } else { port },
    ))?;
    Ok(with(|st| st.sockets.add(s)))
}

/// Runs `f` on a socket from [`udp_bind`].
pub fn with_udp<R>(h: SocketHandle, f: impl FnOnce(&mut udp::Socket<'static>) -> R) -> R {
    with(|st| f(st.sockets.get_mut::<udp::Socket>(h)))
}

/// Frees a socket from [`udp_bind`].
pub fn remove_udp(h: SocketHandle) {
    with(|st| st.sockets.remove(h));
}

/// Sends one ICMP echo request; the round trip in microseconds, or `None`
/// after `timeout_us`.
pub async fn ping(dst: Ipv4Addr, ident: u16, timeout_us: u64) -> Option<u64> {
    let mut s = icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]),
    );
    s.bind(icmp::Endpoint::Ident(ident)).ok()?;
    let h = with(|st| st.sockets.add(s));
    let payload = b"skiff-ping";
    let sent = time::uptime_us();
    let ok = with(|st| {
        let caps = st.dev_caps();
        let s = st.sockets.get_mut::<icmp::Socket>(h);
        let repr = Icmpv4Repr::EchoRequest {
            ident,
            seq_no: 1,
            data: payload,
        };
        match s.send(repr.buffer_len(), IpAddress::Ipv4(dst)) {
            Ok(buf) => {
                repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &caps.checksum);
                true
            }
            Err(_) => false,
        }
    });
    kick();
    let reply = poll_fn(|cx| {
        with(|st| {
            let s = st.sockets.get_mut::<icmp::Socket>(h);
            while s.can_recv() {
                let Ok((data, from)) = s.recv() else { break };
                if from != IpAddress::Ipv4(dst) {
                    continue;
                }
                let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                    continue;
                };
                if let Ok(Icmpv4Repr::EchoReply {
                    ident: i,
                    seq_no: 1,
                    ..
                }) = Icmpv4Repr::parse(&pkt, &Default::default())
                    && i == ident
                {
                    return Poll::Ready(time::uptime_us() - sent);
                }
            }
            s.register_recv_waker(cx.waker());
            Poll::Pending
        })
    });
    let r = if ok {
        select(reply, executor::sleep_us(timeout_us)).await.ok()
    } else {
        None
    };
    with(|st| st.sockets.remove(h));
    r
}

/// Why [`resolve`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResolveError {
    /// Not a name the resolver accepts.
    BadName,
    /// An answer without an IPv4 address.
    NoAddress,
    /// No answer, or the server is unreachable.
    Failed,
    /// Every query slot is in use.
    Busy,
}

/// Starts resolving `name` to IPv4 addresses with the stub resolver (a
/// few queries at a time: [`ResolveError::Busy`] past them).
pub fn dns_start(name: &str) -> Result<dns::QueryHandle, ResolveError> {
    let q = with(|st| {
        let cx = st.iface.context();
        st.sockets.get_mut::<dns::Socket>(st.dns).start_query(
            cx,
            name,
            smoltcp::wire::DnsQueryType::A,
        )
    })
    .map_err(|e| match e {
        dns::StartQueryError::NoFreeSlot => ResolveError::Busy,
        _ => ResolveError::BadName,
    })?;
    kick();
    Ok(q)
}

/// The answer to a [`dns_start`] query once there is one (the query is
/// then over); registers `waker` while there is not.
pub fn dns_result(
    q: dns::QueryHandle,
    waker: Option<&core::task::Waker>,
) -> Poll<Result<Vec<Ipv4Addr>, ResolveError>> {
    with(|st| {
        let s = st.sockets.get_mut::<dns::Socket>(st.dns);
        match s.get_query_result(q) {
            Ok(addrs) => {
                let v4: Vec<Ipv4Addr> = addrs
                    .iter()
                    .filter_map(|a| match a {
                        IpAddress::Ipv4(v4) => Some(*v4),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    })
                    .collect();
                Poll::Ready(if v4.is_empty() {
                    Err(ResolveError::NoAddress)
                } else {
                    Ok(v4)
                })
            }
            Err(dns::GetQueryResultError::Pending) => {
                if let Some(w) = waker {
                    s.register_query_waker(q, w);
                }
                Poll::Pending
            }
            Err(dns::GetQueryResultError::Failed) => Poll::Ready(Err(ResolveError::Failed)),
        }
    })
}

/// Gives up a [`dns_start`] query still in progress.
pub fn dns_cancel(q: dns::QueryHandle) {
    with(|st| st.sockets.get_mut::<dns::Socket>(st.dns).cancel_query(q));
}

/// Resolves `name` to an IPv4 address with the stub resolver.
pub async fn resolve(name: &str) -> Result<Ipv4Addr, ResolveError> {
    let q = dns_start(name)?;
    poll_fn(|cx| dns_result(q, Some(cx.waker())))
        .await
        .map(|addrs| addrs[0])
}

impl Stack {
    fn dev_caps(&self) -> smoltcp::phy::DeviceCapabilities {
        use smoltcp::phy::Device;
        self.dev.capabilities()
    }
}
