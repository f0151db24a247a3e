//! NodePort Services: kube-proxy's NodePort as an in-kernel TCP proxy.
//!
//! One task keeps [`LISTENERS`] listening sockets on the node's address for
//! every TCP nodePort in the node's Service table (smoltcp has no backlog:
//! each accepted socket is replaced by a fresh listener at once). A
//! connection is resolved when it is accepted (`ServiceTable::node_port`,
//! so `externalTrafficPolicy: Local` and affinity apply); without a usable
//! endpoint it is reset at once, never left to time out. Otherwise its own
//! task relays it to the backend: spliced in memory to a pod of this node
//! (smoltcp cannot reach its own addresses; the pod sees the client's
//! address, as with Cilium's local backends), or a connection from the
//! node's address to a pod elsewhere (the backend answers the node, as
//! with kube-proxy's SNAT). Bytes flow both ways through bounded buffers
//! with TCP's half-close; a reset on either side resets the other.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::poll_fn;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::{Context, Poll};

use skiff_node_agent::Services;
use skiff_node_agent::splice::Splice;
use skiff_proxy::{Protocol, Resolution};

use crate::executor::{self, select};
use crate::net::{self, Reset, TcpSocket};
use crate::pods::{self, Shared};

/// Listening sockets per node port: connections completing their handshake
/// at once beyond this are refused by smoltcp until the task re-arms.
const LISTENERS: usize = 3;
/// Node ports listened on at most (each costs `LISTENERS` sockets).
const MAX_PORTS: usize = 64;
/// Relays at once; a connection beyond them is reset.
const MAX_RELAYS: usize = 32;
/// Receive and send buffer of each socket (the listeners' too: an
/// accepted connection keeps its listener's buffers).
const SOCKET_BUF: usize = 8 << 10;
/// Bytes in flight inside the relay, per direction.
const RELAY_BUF: usize = 4 << 10;
/// How often the task looks for a new Service table.
const RECHECK_US: u64 = 250_000;
/// A backend that does not answer within this fails the connection.
const CONNECT_TIMEOUT_US: u64 = 15_000_000;
/// A relay with no bytes moving either way for this long is reset.
const IDLE_TIMEOUT_US: u64 = 300_000_000;
/// A peer leaving our data unacknowledged this long is gone.
const ACK_TIMEOUT_US: u64 = 60_000_000;
/// How long a finished connection may take to complete its FIN exchange.
const LINGER_US: u64 = 10_000_000;
/// How long an RST may wait for the network task.
const RST_WAIT_US: u64 = 1_000_000;

static RELAYS: AtomicUsize = AtomicUsize::new(0);

/// One relay's slot under [`MAX_RELAYS`], given back on drop.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        RELAYS
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_RELAYS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        RELAYS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The listeners of one node port.
struct Port {
    port: u16,
    /// The node's address they listen on.
    ip: Ipv4Addr,
    listeners: Vec<TcpSocket>,
}

/// Serves the TCP node ports of `services` on the node's address, for as
/// long as the node runs.
pub async fn run(shared: Arc<spin::Mutex<Shared>>, services: Services) {
    let mut ports: Vec<Port> = Vec::new();
    let mut unserved: Vec<u16> = Vec::new();
    // What the listeners were made for: (table generation, node address);
    // `None` forces a re-check (some port could not be served last time).
    let mut made_for = None;
    loop {
        let now_for = (services.lock().generation(), net::address());
        if made_for != Some(now_for) {
            let before = core::mem::take(&mut unserved);
            reconcile(&shared, &services, &mut ports, &mut unserved);
            if unserved != before && !unserved.is_empty() {
                warn!(
                    "node-ports",
                    "not serving node ports {unserved:?} (held by a pod sharing the node's address or the node, or over {MAX_PORTS})"
                );
            }
            made_for = unserved.is_empty().then_some(now_for);
        }
        let accepted = poll_fn(|cx| {
            let waiting = ports
                .iter()
                .flat_map(|p| &p.listeners)
                .all(|l| l.accepted(Some(cx.waker())) == Some(false));
            if waiting {
                Poll::Pending
            } else {
                Poll::Ready(())
            }
        });
        let _ = select(accepted, executor::sleep_us(RECHECK_US)).await;
        for p in &mut ports {
            for slot in p.listeners.iter_mut() {
                let Some(done) = slot.accepted(None) else {
                    // Closed before we took it: listen again.
                    if let Ok(fresh) = TcpSocket::listen_on(p.ip, p.port, SOCKET_BUF) {
                        *slot = fresh;
                    }
                    continue;
                };
                if !done {
                    continue;
                }
                // Re-armed first, so the port keeps its listeners.
                let Ok(fresh) = TcpSocket::listen_on(p.ip, p.port, SOCKET_BUF) else {
                    continue;
                };
                let conn = core::mem::replace(slot, fresh);
                accept(&shared, &services, p.port, conn);
            }
        }
    }
}

/// Listeners for exactly the node ports the table has now; those it
/// cannot serve go to `unserved` (tried again later).
fn reconcile(
    shared: &spin::Mutex<Shared>,
    services: &Services,
    ports: &mut Vec<Port>,
    unserved: &mut Vec<u16>,
) {
    let wanted: Vec<u16> = services.lock().node_ports(Protocol::Tcp).collect();
    let Some(ip) = net::address() else {
        ports.clear();
        *unserved = wanted;
        return;
    };
    let free = pods::reserve_node_ports(shared, &wanted);
    unserved.extend(wanted.iter().filter(|p| !free.contains(p)));
    // Dropping a listener sends nothing; its half-open connections get
    // smoltcp's reset when they retransmit.
    ports.retain(|p| p.ip == ip && free.contains(&p.port));
    for &port in &free {
        if ports.iter().any(|p| p.port == port) {
            continue;
        }
        if ports.len() >= MAX_PORTS {
            unserved.push(port);
            continue;
        }
        let listeners: Result<Vec<TcpSocket>, _> = (0..LISTENERS)
            .map(|_| TcpSocket::listen_on(ip, port, SOCKET_BUF))
            .collect();
        match listeners {
            Ok(listeners) => ports.push(Port {
                port,
                ip,
                listeners,
            }),
            Err(_) => unserved.push(port),
        }
    }
}

/// Resolves an accepted connection to `port` and hands it to a relay, or
/// resets it (no usable endpoint, too many relays).
fn accept(shared: &Arc<spin::Mutex<Shared>>, services: &Services, port: u16, conn: TcpSocket) {
    let Some(client) = conn.remote() else {
        executor::spawn(conn.abort(RST_WAIT_US));
        return;
    };
    let mut random = [0u8; 8];
    crate::entropy::fill(&mut random);
    let resolution = services.lock().node_port(
        Protocol::Tcp,
        port,
        *client.ip(),
        pods::now(),
        u64::from_le_bytes(random),
    );
    let backend = match resolution {
        Resolution::Backend(b) => b,
        Resolution::NoEndpoints | Resolution::NotAService => {
            executor::spawn(conn.abort(RST_WAIT_US));
            return;
        }
    };
    let Some(slot) = Slot::take() else {
        warn!(
            "node-ports",
            "{MAX_RELAYS} relays busy; resetting {client} to :{port}"
        );
        executor::spawn(conn.abort(RST_WAIT_US));
        return;
    };
    conn.set_timeout(ACK_TIMEOUT_US);
    executor::spawn(relay(slot, shared.clone(), conn, client, backend));
}

async fn relay(
    _slot: Slot,
    shared: Arc<spin::Mutex<Shared>>,
    client: TcpSocket,
    from: SocketAddrV4,
    backend: SocketAddrV4,
) {
    let Some(server) = connect(&shared, *from.ip(), backend).await else {
        client.abort(RST_WAIT_US).await;
        return;
    };
    let mut ends = [End::Tcp(client), server];
    let mut pipes = [Pipe::new(), Pipe::new()];
    let outcome = loop {
        let step = poll_fn(|cx| {
            let [client, server] = &mut ends;
            let [up, down] = &mut pipes;
            let moved = match (up.poll(cx, client, server), down.poll(cx, server, client)) {
                (Err(Reset), _) | (_, Err(Reset)) => return Poll::Ready(Err(Reset)),
                (Ok(a), Ok(b)) => a || b,
            };
            if up.done && down.done {
                Poll::Ready(Ok(true))
            } else if moved {
                Poll::Ready(Ok(false))
            } else {
                Poll::Pending
            }
        });
        match select(step, executor::sleep_us(IDLE_TIMEOUT_US)).await {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) => break Ok(()),
            Ok(Err(Reset)) | Err(()) => break Err(Reset),
        }
    };
    let [a, b] = ends;
    match outcome {
        Ok(()) => {
            a.finish().await;
            b.finish().await;
        }
        Err(Reset) => {
            a.abort().await;
            b.abort().await;
        }
    }
}

/// Connects to `backend`: in memory to a pod of this node, else through
/// smoltcp from the node's address. `None`: refused, unreachable or timed
/// out.
async fn connect(
    shared: &spin::Mutex<Shared>,
    client: Ipv4Addr,
    backend: SocketAddrV4,
) -> Option<End> {
    match pods::local_target(shared, backend) {
        Ok(Some(_)) => {
            let splice = pods::connect_local(shared, client, backend).ok()?;
            return Some(End::Spliced(splice));
        }
        Ok(None) => {}
        // An address of this node's pod CIDR that no pod holds.
        Err(_) => return None,
    }
    let sock =
        TcpSocket::start_connect(net::address()?, backend, SOCKET_BUF, ACK_TIMEOUT_US).ok()?;
    let connected = poll_fn(|cx| sock.poll_connected(cx));
    match select(connected, executor::sleep_us(CONNECT_TIMEOUT_US)).await {
        Ok(Ok(())) => Some(End::Tcp(sock)),
        Ok(Err(_)) | Err(()) => {
            sock.abort(RST_WAIT_US).await;
            None
        }
    }
}

/// One side of a relay.
enum End {
    Tcp(TcpSocket),
    /// A pod of this node: its runner learns of our sends and receives
    /// through `pods::spliced_activity`.
    Spliced(Splice),
}

impl End {
    fn poll_recv(&mut self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<Result<usize, Reset>> {
        match self {
            End::Tcp(s) => s.poll_recv(cx, buf),
            End::Spliced(s) => {
                let r = s.poll_recv(cx, buf).map_err(|_| Reset);
                if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                    pods::spliced_activity(); // room for the pod's sends
                }
                r
            }
        }
    }

    fn poll_send(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<Result<usize, Reset>> {
        match self {
            End::Tcp(s) => s.poll_send(cx, data),
            End::Spliced(s) => {
                let r = s.poll_send(cx, data).map_err(|_| Reset);
                if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
                    pods::spliced_activity(); // bytes for the pod
                }
                r
            }
        }
    }

    fn shutdown(&mut self) {
        match self {
            End::Tcp(s) => s.shutdown(),
            End::Spliced(s) => {
                s.shutdown();
                pods::spliced_activity();
            }
        }
    }

    /// Both directions are done: lets the FIN exchange complete.
    async fn finish(self) {
        match self {
            End::Tcp(s) => {
                let _ = select(
                    poll_fn(|cx| s.poll_finished(cx)),
                    executor::sleep_us(LINGER_US),
                )
                .await;
            }
            // Shut already: dropping it is an orderly close.
            End::Spliced(s) => {
                drop(s);
                pods::spliced_activity();
            }
        }
    }

    async fn abort(self) {
        match self {
            End::Tcp(s) => s.abort(RST_WAIT_US).await,
            // Dropped without a shutdown: the pod sees a reset.
            End::Spliced(s) => {
                drop(s);
                pods::spliced_activity();
            }
        }
    }
}

/// One direction of a relay: bytes read from one end, not yet written to
/// the other, then the reader's FIN passed on.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// The source sent its FIN.
    eof: bool,
    /// ... and it was passed on: this direction is over.
    done: bool,
}

impl Pipe {
    fn new() -> Pipe {
        Pipe {
            buf: alloc::vec![0; RELAY_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            eof: false,
            done: false,
        }
    }

    /// Moves what it can from `from` to `to`; whether anything moved.
    /// Where it has to wait, a waker is registered.
    fn poll(&mut self, cx: &mut Context<'_>, from: &mut End, to: &mut End) -> Result<bool, Reset> {
        let mut moved = false;
        loop {
            while self.start < self.end {
                match to.poll_send(cx, &self.buf[self.start..self.end])? {
                    Poll::Ready(0) | Poll::Pending => return Ok(moved),
                    Poll::Ready(n) => {
                        self.start += n;
                        moved = true;
                    }
                }
            }
            (self.start, self.end) = (0, 0);
            if self.eof {
                if !self.done {
                    to.shutdown();
                    self.done = true;
                    moved = true;
                }
                return Ok(moved);
            }
            match from.poll_recv(cx, &mut self.buf)? {
                Poll::Pending => return Ok(moved),
                Poll::Ready(0) => self.eof = true,
                Poll::Ready(n) => self.end = n,
            }
            moved = true;
        }
    }
}
