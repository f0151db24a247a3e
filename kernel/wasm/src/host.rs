//! What a container needs from the node. These traits speak in plain Rust
//! types, not in any WASI ABI, so the preview 1 and preview 2 layers share
//! them. The node speaks IPv4 only.

use alloc::vec::Vec;
use core::fmt;
use core::net::{Ipv4Addr, SocketAddrV4};

/// A container's output stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A connection accepted on one of the container's listening ports; the
/// host chooses the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnId(pub u64);

/// A UDP socket the container bound; the host chooses the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UdpId(pub u64);

/// A name lookup in progress; the host chooses the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LookupId(pub u64);

/// Which direction(s) of a connection to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    Read,
    Write,
    Both,
}

/// Socket failures the guest can see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetError {
    /// The peer reset the connection.
    Reset,
    /// The connection is not (or no longer) open.
    NotConnected,
    /// The host has no support for this operation.
    Unsupported,
    /// Nothing listens at the remote address (the peer answered with a
    /// reset).
    Refused,
    /// The remote address did not answer in time.
    TimedOut,
    /// No route to the remote address (or it is one the node cannot reach,
    /// such as its own loopback).
    Unreachable,
    /// The container may not use this local port (not one of its ports).
    AccessDenied,
    /// The local port is taken.
    AddressInUse,
    /// A datagram larger than the node sends unfragmented.
    TooLarge,
    /// The name does not exist (NXDOMAIN or no IPv4 address).
    NameUnresolvable,
    /// The resolver did not answer, or is busy; trying again may work.
    ResolverFailed,
}

impl fmt::Display for NetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NetError::Reset => "connection reset by peer",
            NetError::NotConnected => "not connected",
            NetError::Unsupported => "not supported by this node",
            NetError::Refused => "connection refused",
            NetError::TimedOut => "timed out",
            NetError::Unreachable => "remote address unreachable",
            NetError::AccessDenied => "port not allowed for this container",
            NetError::AddressInUse => "address in use",
            NetError::TooLarge => "datagram too large",
            NetError::NameUnresolvable => "name does not resolve",
            NetError::ResolverFailed => "name resolution failed",
        })
    }
}

impl core::error::Error for NetError {}

/// The node side of one container. Socket calls never block: `Ok(None)`
/// means "not now", and the runtime suspends the guest (if its socket is in
/// blocking mode) until a later [`crate::Container::step`] finds it ready.
pub trait Host: Send {
    /// Wall-clock time, nanoseconds since the Unix epoch.
    fn realtime_ns(&mut self) -> u64;
    /// Monotonic time in nanoseconds (any origin); also the clock of
    /// [`crate::Step::Blocked`] deadlines.
    fn monotonic_ns(&mut self) -> u64;
    /// Clock resolution reported to guests.
    fn clock_resolution_ns(&self) -> u64 {
        1_000
    }
    /// Fill `buf` with cryptographically secure random bytes.
    fn random(&mut self, buf: &mut [u8]);
    /// Container output, in the order written (chunks are not lines).
    fn log(&mut self, stream: Stream, bytes: &[u8]);
    /// Whether the node can back a linear memory growing from `current` to
    /// `desired` bytes (within the container's own limit, already checked).
    /// Refusing kills the guest as out of memory, like a cgroup OOM kill, so a
    /// node whose allocator cannot fail gracefully refuses before it runs out.
    fn memory_growing(&mut self, current: usize, desired: usize) -> bool {
        let _ = (current, desired);
        true
    }

    /// Accept a connection on the listener for container port `port`.
    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, NetError> {
        let _ = port;
        Err(NetError::Unsupported)
    }
    /// Whether `accept(port)` would return a connection now.
    fn acceptable(&mut self, port: u16) -> bool {
        let _ = port;
        false
    }
    /// Receive into `buf`; `Some(0)` is end of stream.
    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        let _ = (conn, buf);
        Err(NetError::Unsupported)
    }
    /// Whether `recv(conn)` would not block (data, end of stream or error).
    fn readable(&mut self, conn: ConnId) -> bool {
        let _ = conn;
        false
    }
    /// Send from `data`, returning how much was queued.
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, NetError> {
        let _ = (conn, data);
        Err(NetError::Unsupported)
    }
    /// Whether `send(conn)` would queue at least one byte now.
    fn writable(&mut self, conn: ConnId) -> bool {
        let _ = conn;
        true
    }
    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), NetError> {
        let _ = (conn, how);
        Err(NetError::Unsupported)
    }
    /// The guest closed the connection (or the container ended).
    fn close(&mut self, conn: ConnId) {
        let _ = conn;
    }

    /// The node's own address (what a container's listener is bound to,
    /// until pods have addresses of their own).
    fn local_ip(&mut self) -> Ipv4Addr {
        Ipv4Addr::UNSPECIFIED
    }
    /// Starts a TCP connection to `to` from an ephemeral port; follow it with
    /// [`Host::connect_status`]. Until it is established the connection is
    /// neither readable nor writable.
    fn connect(&mut self, to: SocketAddrV4) -> Result<ConnId, NetError> {
        let _ = to;
        Err(NetError::Unsupported)
    }
    /// `Ok(true)` once a [`Host::connect`] is established, `Ok(false)` while it
    /// is in progress, the reason once it failed.
    fn connect_status(&mut self, conn: ConnId) -> Result<bool, NetError> {
        let _ = conn;
        Err(NetError::NotConnected)
    }
    /// A connection's (local, remote) addresses.
    fn addresses(&mut self, conn: ConnId) -> Result<(SocketAddrV4, SocketAddrV4), NetError> {
        let _ = conn;
        Err(NetError::NotConnected)
    }

    /// Binds a UDP socket to `port` (0: an ephemeral port), returning it and
    /// the port it got. A fixed port must be one of the container's UDP
    /// ports ([`NetError::AccessDenied`] otherwise).
    fn udp_bind(&mut self, port: u16) -> Result<(UdpId, u16), NetError> {
        let _ = port;
        Err(NetError::Unsupported)
    }
    /// Queues one datagram; `Ok(false)` when there is no room now.
    fn udp_send(&mut self, sock: UdpId, to: SocketAddrV4, data: &[u8]) -> Result<bool, NetError> {
        let _ = (sock, to, data);
        Err(NetError::Unsupported)
    }
    /// Takes the next datagram (truncated to `buf`): its length and sender.
    fn udp_recv(
        &mut self,
        sock: UdpId,
        buf: &mut [u8],
    ) -> Result<Option<(usize, SocketAddrV4)>, NetError> {
        let _ = (sock, buf);
        Err(NetError::Unsupported)
    }
    /// Whether `udp_recv` would return a datagram now.
    fn udp_readable(&mut self, sock: UdpId) -> bool {
        let _ = sock;
        false
    }
    /// Whether `udp_send` would queue a datagram now.
    fn udp_writable(&mut self, sock: UdpId) -> bool {
        let _ = sock;
        true
    }
    fn udp_close(&mut self, sock: UdpId) {
        let _ = sock;
    }

    /// Starts resolving a host name to IPv4 addresses (the node answers:
    /// cluster names, then its upstream resolver).
    fn lookup(&mut self, name: &str) -> Result<LookupId, NetError> {
        let _ = name;
        Err(NetError::Unsupported)
    }
    /// The answer once there is one (then the lookup is over), `None` while
    /// it is in progress.
    fn lookup_result(&mut self, id: LookupId) -> Option<Result<Vec<Ipv4Addr>, NetError>> {
        let _ = id;
        Some(Err(NetError::Unsupported))
    }
    /// The guest gave up on a lookup still in progress.
    fn lookup_cancel(&mut self, id: LookupId) {
        let _ = id;
    }
}
