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
//!
//! An end can also be awaited, as smoltcp's sockets can: [`Splice::poll_recv`]
//! and [`Splice::poll_send`] (or `register_*_waker`) leave a waker that the
//! peer's send, shutdown or drop (for the reader) and its receive or drop
//! (for a writer held up by a full queue) wake. The polling methods work
//! as before for owners that re-check on their own schedule.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::net::SocketAddrV4;
use core::task::{Context, Poll, Waker};

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
    /// The receiving end waits for bytes, end-of-stream or a reset.
    reader: Option<Waker>,
    /// The sending end waits for room (or for the receiver to go).
    writer: Option<Waker>,
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
        self.recv_or_wait(buf, None)
    }

    /// [`Splice::recv`] for a task: `Pending` (woken by the peer's next
    /// send, shutdown or drop) instead of `Ok(None)`.
    pub fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, SpliceError>> {
        match self.recv_or_wait(buf, Some(cx.waker())) {
            Ok(Some(n)) => Poll::Ready(Ok(n)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Receives under the lock, leaving `waker` when there is nothing yet
    /// (so no wakeup falls between the check and the registration).
    fn recv_or_wait(
        &self,
        buf: &mut [u8],
        waker: Option<&Waker>,
    ) -> Result<Option<usize>, SpliceError> {
        let mut s = self.shared.lock();
        let d = &mut s.dirs[1 - self.side];
        if !d.bytes.is_empty() {
            let n = buf.len().min(d.bytes.len());
            for (slot, b) in buf.iter_mut().zip(d.bytes.drain(..n)) {
                *slot = b;
            }
            // Room for a sender held up by a full queue.
            let writer = if n > 0 { d.writer.take() } else { None };
            drop(s);
            wake(writer);
            return Ok(Some(n));
        }
        if d.reset {
            return Err(SpliceError::Reset);
        }
        if d.finished {
            return Ok(Some(0));
        }
        if let Some(w) = waker {
            register(&mut d.reader, w);
        }
        Ok(None)
    }

    /// Wakes `waker` when there is something to receive (bytes,
    /// end-of-stream or a reset), as smoltcp's `register_recv_waker`.
    pub fn register_recv_waker(&self, waker: &Waker) {
        let mut s = self.shared.lock();
        let d = &mut s.dirs[1 - self.side];
        if !d.bytes.is_empty() || d.finished || d.reset {
            drop(s);
            waker.wake_by_ref();
        } else {
            register(&mut d.reader, waker);
        }
    }

    pub fn readable(&self) -> bool {
        let s = self.shared.lock();
        let d = &s.dirs[1 - self.side];
        !d.bytes.is_empty() || d.finished || d.reset
    }

    /// Queues bytes for the peer: how many were taken (`None`: the queue is
    /// full).
    pub fn send(&self, data: &[u8]) -> Result<Option<usize>, SpliceError> {
        self.send_or_wait(data, None)
    }

    /// [`Splice::send`] for a task: `Pending` (woken when the peer reads or
    /// goes away) instead of `Ok(None)`.
    pub fn poll_send(&self, cx: &mut Context<'_>, data: &[u8]) -> Poll<Result<usize, SpliceError>> {
        match self.send_or_wait(data, Some(cx.waker())) {
            Ok(Some(n)) => Poll::Ready(Ok(n)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn send_or_wait(
        &self,
        data: &[u8],
        waker: Option<&Waker>,
    ) -> Result<Option<usize>, SpliceError> {
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
            if let Some(w) = waker {
                register(&mut d.writer, w);
            }
            return Ok(None);
        }
        d.bytes.extend(&data[..n]);
        let reader = if n > 0 { d.reader.take() } else { None };
        drop(s);
        wake(reader);
        Ok(Some(n))
    }

    /// Wakes `waker` when a send would take bytes (or fail), as smoltcp's
    /// `register_send_waker`.
    pub fn register_send_waker(&self, waker: &Waker) {
        if self.writable() {
            waker.wake_by_ref();
        } else {
            register(&mut self.shared.lock().dirs[self.side].writer, waker);
        }
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
        let mut s = self.shared.lock();
        let d = &mut s.dirs[self.side];
        d.finished = true;
        let reader = d.reader.take();
        drop(s);
        wake(reader);
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
        // Our own wakers go with us; the peer's learn of the reset (its
        // reads) or that nobody reads any more (its sends).
        out.writer = None;
        let reader = out.reader.take();
        let incoming = &mut s.dirs[1 - self.side];
        incoming.receiver_gone = true;
        incoming.bytes.clear();
        incoming.reader = None;
        let writer = incoming.writer.take();
        drop(s);
        wake(reader);
        wake(writer);
    }
}

/// Keeps `waker` in `slot`, cloning only if it is another task's.
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(w) if w.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

/// Wakes outside the lock: a waker may run code that takes it.
fn wake(waker: Option<Waker>) {
    if let Some(w) = waker {
        w.wake();
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

    /// A waker counting its wakeups.
    struct Count(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(Default::default()));
        (c.clone(), Waker::from(c))
    }

    fn woken(c: &Count) -> usize {
        c.0.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[test]
    fn a_waiting_reader_is_woken_by_the_peers_send_shutdown_and_drop() {
        let mut buf = [0u8; 8];
        let (c, s) = pair(16);
        let (n, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert_eq!(s.poll_recv(&mut cx, &mut buf), Poll::Pending);
        assert_eq!(woken(&n), 0);
        assert_eq!(c.send(b"hi"), Ok(Some(2)));
        assert_eq!(woken(&n), 1, "a send wakes the reader");
        assert_eq!(c.send(b"!"), Ok(Some(1)));
        assert_eq!(woken(&n), 1, "a waker is woken once per registration");
        assert_eq!(s.poll_recv(&mut cx, &mut buf), Poll::Ready(Ok(3)));
        assert_eq!(s.poll_recv(&mut cx, &mut buf), Poll::Pending);
        c.shutdown();
        assert_eq!(woken(&n), 2, "a shutdown wakes the reader");
        assert_eq!(s.poll_recv(&mut cx, &mut buf), Poll::Ready(Ok(0)));

        let (c, s) = pair(16);
        assert_eq!(s.poll_recv(&mut cx, &mut buf), Poll::Pending);
        drop(c);
        assert_eq!(woken(&n), 3, "a drop wakes the reader");
        assert_eq!(
            s.poll_recv(&mut cx, &mut buf),
            Poll::Ready(Err(SpliceError::Reset))
        );

        // `register_recv_waker` wakes at once when there is something.
        let (c, s) = pair(16);
        let (n, w) = waker();
        s.register_recv_waker(&w);
        assert_eq!(woken(&n), 0);
        c.send(b"x").unwrap();
        assert_eq!(woken(&n), 1);
        s.register_recv_waker(&w);
        assert_eq!(woken(&n), 2, "bytes are already there");
    }

    #[test]
    fn a_blocked_writer_is_woken_by_the_peers_recv_and_drop() {
        let mut buf = [0u8; 8];
        let (c, s) = pair(4);
        let (n, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert_eq!(c.poll_send(&mut cx, b"abcdef"), Poll::Ready(Ok(4)));
        assert_eq!(c.poll_send(&mut cx, b"ef"), Poll::Pending);
        assert_eq!(woken(&n), 0);
        assert_eq!(s.recv(&mut buf[..1]), Ok(Some(1)));
        assert_eq!(woken(&n), 1, "a receive makes room");
        assert_eq!(c.poll_send(&mut cx, b"ef"), Poll::Ready(Ok(1)));
        assert_eq!(c.poll_send(&mut cx, b"f"), Poll::Pending);
        drop(s);
        assert_eq!(woken(&n), 2, "nobody reads any more");
        assert_eq!(
            c.poll_send(&mut cx, b"f"),
            Poll::Ready(Err(SpliceError::Reset))
        );

        let (c, s) = pair(1);
        let (n, w) = waker();
        c.register_send_waker(&w);
        assert_eq!(woken(&n), 1, "room now");
        c.send(b"x").unwrap();
        c.register_send_waker(&w);
        assert_eq!(woken(&n), 1);
        s.recv(&mut buf).unwrap();
        assert_eq!(woken(&n), 2);
    }

    #[test]
    fn a_dropped_end_forgets_its_wakers() {
        let mut buf = [0u8; 8];
        let (c, s) = pair(1);
        let (n, w) = waker();
        let mut cx = Context::from_waker(&w);
        assert_eq!(s.poll_recv(&mut cx, &mut buf), Poll::Pending);
        c.send(b"x").unwrap();
        assert_eq!(c.poll_send(&mut cx, b"y"), Poll::Pending);
        let before = woken(&n);
        drop(c);
        // The reader learns of the reset; the dropped writer's waker is
        // gone (not woken by the receive that makes room).
        assert_eq!(woken(&n), before);
        assert_eq!(s.poll_recv(&mut cx, &mut buf), Poll::Ready(Ok(1)));
        assert_eq!(woken(&n), before);
        assert_eq!(Arc::strong_count(&n), 2, "only `n` and `w`: none stored");
    }

    #[test]
    fn a_dropped_receiver_frees_what_was_queued_for_it() {
        let (c, s) = pair(16);
        c.send(b"unread").unwrap();
        drop(s);
        assert_eq!(c.queued(), 0);
    }
}
