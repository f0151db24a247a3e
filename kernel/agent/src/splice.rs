//! In-memory connections between pods on one node.
//!
//! smoltcp cannot send to its own addresses (it would ARP for itself), and
//! traffic between two pods of one node has no reason to touch the wire
//! anyway: the node joins the connecting pod's socket to the listening
//! pod's directly. A [`Splice`] is the pair of byte queues between the two
//! ends, with TCP's half-close: each end may shut its sending side (the
//! peer then reads end-of-stream once the queue is drained), and dropping
//! an end without shutting it down resets the peer's sends.
//!
//! Each direction holds at most `capacity` bytes, so a pod that does not
//! read holds up its peer's writes, as TCP's window does; both ends'
//! bytes are charged to the pods by their owners.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::net::SocketAddrV4;

/// Why a splice operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpliceError {
    /// The peer is gone without shutting down (a reset).
    Reset,
    /// This end already shut its sending side.
    Shutdown,
}

#[derive(Debug, Default)]
struct Direction {
    bytes: VecDeque<u8>,
    /// The sender shut down (FIN): end-of-stream after the bytes.
    finished: bool,
    /// The sender dropped its end without shutting down.
    reset: bool,
    /// The receiver dropped its end: sends fail.
    receiver_gone: bool,
}

#[derive(Debug)]
struct Shared {
    capacity: usize,
    /// `dirs[0]`: client → server; `dirs[1]`: server → client.
    dirs: [Direction; 2],
}

/// One end of an in-memory connection.
#[derive(Debug)]
pub struct Splice {
    shared: Arc<spin::Mutex<Shared>>,
    /// 0: the connecting end; 1: the accepting end.
    side: usize,
    local: SocketAddrV4,
    remote: SocketAddrV4,
}

impl Splice {
    /// A connection from `client` to `server`: (the client's end, the
    /// server's end).
    pub fn pair(client: SocketAddrV4, server: SocketAddrV4, capacity: usize) -> (Splice, Splice) {
        let shared = Arc::new(spin::Mutex::new(Shared {
            capacity,
            dirs: Default::default(),
        }));
        (
            Splice {
                shared: shared.clone(),
                side: 0,
                local: client,
                remote: server,
            },
            Splice {
                shared,
                side: 1,
                local: server,
                remote: client,
            },
        )
    }

    /// (local, remote) addresses.
    pub fn addresses(&self) -> (SocketAddrV4, SocketAddrV4) {
        (self.local, self.remote)
    }

    /// Reads what the peer sent: `Some(0)` is end-of-stream, `None` means
    /// nothing yet.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, SpliceError> {
        let mut s = self.shared.lock();
        let d = &mut s.dirs[1 - self.side];
        if !d.bytes.is_empty() {
            let n = buf.len().min(d.bytes.len());
            for (slot, b) in buf.iter_mut().zip(d.bytes.drain(..n)) {
                *slot = b;
            }
            return Ok(Some(n));
        }
        if d.reset {
            return Err(SpliceError::Reset);
        }
        Ok(d.finished.then_some(0))
    }

    pub fn readable(&self) -> bool {
        let s = self.shared.lock();
        let d = &s.dirs[1 - self.side];
        !d.bytes.is_empty() || d.finished || d.reset
    }

    /// Queues bytes for the peer: how many were taken (`None`: the queue is
    /// full).
    pub fn send(&self, data: &[u8]) -> Result<Option<usize>, SpliceError> {
        let mut s = self.shared.lock();
        let capacity = s.capacity;
        let peer_reset = s.dirs[1 - self.side].reset;
        let d = &mut s.dirs[self.side];
        if d.finished {
            return Err(SpliceError::Shutdown);
        }
        if d.receiver_gone || peer_reset {
            return Err(SpliceError::Reset);
        }
        let n = data.len().min(capacity - d.bytes.len());
        if n == 0 && !data.is_empty() {
            return Ok(None);
        }
        d.bytes.extend(&data[..n]);
        Ok(Some(n))
    }

    /// Whether a send would take bytes now (or fail at once).
    pub fn writable(&self) -> bool {
        let s = self.shared.lock();
        let d = &s.dirs[self.side];
        d.bytes.len() < s.capacity || d.finished || d.receiver_gone || s.dirs[1 - self.side].reset
    }

    /// Shuts the sending side: the peer reads end-of-stream after the
    /// queued bytes.
    pub fn shutdown(&self) {
        self.shared.lock().dirs[self.side].finished = true;
    }

    /// Bytes queued in both directions (for accounting).
    pub fn queued(&self) -> usize {
        let s = self.shared.lock();
        s.dirs[0].bytes.len() + s.dirs[1].bytes.len()
    }
}

impl Drop for Splice {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        let out = &mut s.dirs[self.side];
        if !out.finished {
            out.reset = true;
        }
        let incoming = &mut s.dirs[1 - self.side];
        incoming.receiver_gone = true;
        incoming.bytes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(cap: usize) -> (Splice, Splice) {
        Splice::pair(
            "10.244.0.2:40000".parse().unwrap(),
            "10.244.0.3:8080".parse().unwrap(),
            cap,
        )
    }

    #[test]
    fn bytes_flow_both_ways_and_addresses_mirror() {
        let (c, s) = pair(16);
        assert_eq!(c.addresses().1, s.addresses().0);
        assert_eq!(c.addresses().0, s.addresses().1);
        let mut buf = [0u8; 8];
        assert_eq!(s.recv(&mut buf), Ok(None));
        assert!(!s.readable());
        assert_eq!(c.send(b"ping"), Ok(Some(4)));
        assert!(s.readable());
        assert_eq!(s.recv(&mut buf), Ok(Some(4)));
        assert_eq!(&buf[..4], b"ping");
        assert_eq!(s.send(b"pong!"), Ok(Some(5)));
        assert_eq!(c.recv(&mut buf[..2]), Ok(Some(2)));
        assert_eq!(c.recv(&mut buf), Ok(Some(3)));
        assert_eq!(&buf[..3], b"ng!");
    }

    #[test]
    fn a_full_queue_holds_the_sender_until_the_peer_reads() {
        let (c, s) = pair(4);
        assert_eq!(c.send(b"abcdef"), Ok(Some(4)));
        assert_eq!(c.queued(), 4);
        assert!(!c.writable());
        assert_eq!(c.send(b"x"), Ok(None));
        let mut buf = [0u8; 3];
        assert_eq!(s.recv(&mut buf), Ok(Some(3)));
        assert!(c.writable());
        assert_eq!(c.send(b"xyz"), Ok(Some(3)));
        assert_eq!(c.send(b""), Ok(Some(0)));
    }

    #[test]
    fn shutdown_is_a_half_close_and_drop_without_it_resets() {
        let (c, s) = pair(16);
        c.send(b"last").unwrap();
        c.shutdown();
        assert_eq!(c.send(b"more"), Err(SpliceError::Shutdown));
        let mut buf = [0u8; 8];
        assert_eq!(s.recv(&mut buf), Ok(Some(4)));
        assert_eq!(
            s.recv(&mut buf),
            Ok(Some(0)),
            "end-of-stream after the bytes"
        );
        // The other direction still works.
        assert_eq!(s.send(b"reply"), Ok(Some(5)));
        assert_eq!(c.recv(&mut buf), Ok(Some(5)));
        // The server goes away without shutting down: the client is reset.
        drop(s);
        assert_eq!(c.recv(&mut buf), Err(SpliceError::Reset));
        assert!(c.readable() && c.writable());

        let (c, s) = pair(16);
        s.shutdown();
        drop(s);
        assert_eq!(
            c.recv(&mut buf),
            Ok(Some(0)),
            "an orderly close reads as EOF"
        );
        assert_eq!(
            c.send(b"x"),
            Err(SpliceError::Reset),
            "nobody reads any more"
        );
    }

    #[test]
    fn a_dropped_receiver_frees_what_was_queued_for_it() {
        let (c, s) = pair(16);
        c.send(b"unread").unwrap();
        drop(s);
        assert_eq!(c.queued(), 0);
    }
}
