//! What a container needs from the node. These traits speak in plain Rust
//! types, not in any WASI ABI, so the preview 1 layer here and a later
//! preview 2 (wasi:clocks, wasi:random, wasi:sockets) layer can share them.

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
    /// The host has no TCP support for this container.
    Unsupported,
}

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
}
