//! Bodies on the wire: the connection as the server and the guest's
//! streams see it ([`Wire`]), a request body decoded from it as it arrives
//! ([`Inbound`]: `content-length` or chunked), and a response head and body
//! framed onto it ([`Outbound`]). Every buffer here is bounded.

use alloc::boxed::Box;
use alloc::format;
use alloc::sync::{Arc, Weak};
use alloc::vec::Vec;
use core::task::Poll;

use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, OutputStream, StreamError, StreamResult};

use crate::component::SharedHost;
use crate::host::{ConnId, NetError};
use crate::wasi::Shared;

/// Most bytes one `recv` asks the node for.
const READ_CHUNK: usize = 16 << 10;
/// Received request-body bytes not yet decoded (a chunk-size line or a
/// trailer line must fit).
const MAX_RAW: usize = 16 << 10;
/// Decoded request-body bytes held for the guest, and response bytes
/// waiting for the node to take them: the write permit a guest gets.
pub(crate) const MAX_PENDING: usize = 64 << 10;
/// How long a client may send nothing while a request head or body is
/// awaited, or take nothing of a response, before the server gives up on
/// it: a connection slot (and a request's instance) is not held forever.
pub const IDLE_TIMEOUT_NS: u64 = 30_000_000_000;
/// Most request-body bytes the server reads past what the guest read to
/// keep the connection open; beyond it the connection closes instead.
const MAX_SKIP: usize = 1 << 20;

/// One connection of an HTTP container: accepted (the server closes it)
/// or made by the outgoing handler (closed with its last `Wire`).
#[derive(Clone)]
pub(crate) struct Wire {
    pub host: SharedHost,
    pub conn: ConnId,
    pub shared: Arc<Shared>,
    pub _owner: Option<Arc<Owner>>,
}

/// Closes an outgoing connection and frees its socket slot once nothing
/// uses it.
pub(crate) struct Owner {
    pub host: SharedHost,
    pub conn: ConnId,
    pub _slot: crate::component::sockets::Slot,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.host.lock().close(self.conn);
    }
}

impl Wire {
    pub fn now(&self) -> u64 {
        self.host.lock().monotonic_ns()
    }

    /// The idle deadline for a wait starting now.
    pub fn idle_deadline(&self) -> u64 {
        self.now().saturating_add(IDLE_TIMEOUT_NS)
    }

    /// After "not now": whether `deadline` has passed; if not, the wait
    /// ends there at the latest.
    pub fn expired(&self, deadline: u64) -> bool {
        if self.now() >= deadline {
            return true;
        }
        self.shared.block(Some(deadline));
        false
    }

    /// Appends what the node has received to `buf`, keeping it within
    /// `max` bytes: `Some(0)` at the end of the stream, `None` for "not
    /// now" (the wait is recorded, so returning `Pending` suspends us).
    pub fn recv_into(&self, buf: &mut Vec<u8>, max: usize) -> Result<Option<usize>, NetError> {
        let room = max.saturating_sub(buf.len()).min(READ_CHUNK);
        if room == 0 {
            return Ok(Some(0));
        }
        let start = buf.len();
        buf.resize(start + room, 0);
        let got = self.host.lock().recv(self.conn, &mut buf[start..]);
        let n = match got {
            Ok(Some(n)) => n.min(room),
            Ok(None) => {
                self.shared.block(None);
                0
            }
            Err(_) => 0,
        };
        buf.truncate(start + n);
        got.map(|g| g.map(|_| n))
    }

    /// Hands the node as much of `pending` as it takes: `Ready(true)` once
    /// all of it went, `Ready(false)` if the peer is gone or took nothing
    /// until `deadline` (which progress pushes back; see
    /// [`IDLE_TIMEOUT_NS`]).
    pub fn send_until(&self, pending: &mut Vec<u8>, deadline: &mut u64) -> Poll<bool> {
        let before = pending.len();
        match self.send_some(pending) {
            Ok(true) => Poll::Ready(true),
            Ok(false) if pending.len() < before => {
                *deadline = self.idle_deadline();
                Poll::Pending
            }
            Ok(false) if !self.expired(*deadline) => Poll::Pending,
            Ok(false) | Err(_) => Poll::Ready(false),
        }
    }

    /// Sends what the node takes now: `true` once all of it went (else
    /// the wait is recorded).
    fn send_some(&self, pending: &mut Vec<u8>) -> Result<bool, NetError> {
        while !pending.is_empty() {
            let sent = self.host.lock().send(self.conn, pending)?;
            match sent {
                Some(n) if n > 0 => drop(pending.drain(..n.min(pending.len()))),
                _ => {
                    self.shared.block(None);
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Sends all of `data` (a response the server makes itself): whether
    /// it all went (see [`Wire::send_until`]).
    pub async fn send_all(&self, mut data: Vec<u8>) -> bool {
        let mut deadline = self.idle_deadline();
        core::future::poll_fn(|_| self.send_until(&mut data, &mut deadline)).await
    }
}

/// How a request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `content-length`: this many bytes are still to come.
    Length(u64),
    /// `transfer-encoding: chunked`, in this part of a chunk.
    Chunked(Chunk),
    /// Until the peer closes (a response with neither).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes to come.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines (skipped) up to an empty line.
    Trailers,
}

/// The state of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BodyState {
    Open,
    /// All of it arrived (what follows in `raw` is the next request).
    Done,
    Failed(&'static str),
}

/// A message body's framing undone over the bytes received so far: no
/// I/O, so it is fuzzed alone (`crate::fuzz::http_wire`). Holds at most
/// [`MAX_RAW`] undecoded bytes beyond what one receive adds.
pub(crate) struct Decoder {
    framing: Framing,
    state: BodyState,
    /// Received, not yet decoded; after the end, what followed the body.
    raw: Vec<u8>,
}

/// A request body as it arrives, shared by the guest's input stream and
/// the server (which takes what follows it for the next request).
pub(crate) struct Inbound {
    wire: Wire,
    decoder: Decoder,
    /// Decoded, not yet read by the guest.
    ready: Vec<u8>,
    /// When waiting for more of the body stops (see [`IDLE_TIMEOUT_NS`]).
    idle_until: u64,
}

impl Decoder {
    pub fn new(framing: Framing, raw: Vec<u8>) -> Self {
        let state = match framing {
            Framing::Length(0) => BodyState::Done,
            _ => BodyState::Open,
        };
        Self {
            framing,
            state,
            raw,
        }
    }

    /// Whether the whole body has been decoded.
    pub fn done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Decodes up to `max` body bytes from `raw`.
    pub fn decode(&mut self, max: usize) -> Result<Vec<u8>, &'static str> {
        let mut out = Vec::new();
        while self.state == BodyState::Open && out.len() < max {
            match self.framing {
                Framing::Close => {
                    let n = self.raw.len().min(max - out.len());
                    if n == 0 {
                        break;
                    }
                    out.extend(self.raw.drain(..n));
                }
                Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                    let n = (left.min(self.raw.len() as u64) as usize).min(max - out.len());
                    if n == 0 {
                        break;
                    }
                    out.extend(self.raw.drain(..n));
                    let left = left - n as u64;
                    self.framing = match self.framing {
                        Framing::Length(_) if left == 0 => {
                            self.state = BodyState::Done;
                            Framing::Length(0)
                        }
                        Framing::Length(_) => Framing::Length(left),
                        _ if left == 0 => Framing::Chunked(Chunk::DataEnd),
                        _ => Framing::Chunked(Chunk::Data(left)),
                    };
                }
                Framing::Chunked(Chunk::Size) => match httparse::parse_chunk_size(&self.raw) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        self.raw.drain(..used);
                        self.framing = Framing::Chunked(if size == 0 {
                            Chunk::Trailers
                        } else {
                            Chunk::Data(size)
                        });
                    }
                    Ok(httparse::Status::Partial) if self.raw.len() < MAX_RAW => break,
                    _ => return Err("bad chunk size line"),
                },
                Framing::Chunked(Chunk::DataEnd) => {
                    if self.raw.len() < 2 {
                        break;
                    }
                    if !self.raw.starts_with(b"\r\n") {
                        return Err("chunk data not followed by CRLF");
                    }
                    self.raw.drain(..2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    match self.raw.windows(2).position(|w| w == b"\r\n") {
                        Some(0) => {
                            self.raw.drain(..2);
                            self.state = BodyState::Done;
                        }
                        Some(end) => drop(self.raw.drain(..end + 2)),
                        None if self.raw.len() < MAX_RAW => break,
                        None => return Err("trailer line too long"),
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Decodes `wire` as one connection's messages (heads by `parse`, bodies
/// by [`Decoder`]), received `piece` bytes at a time, up to its end or the
/// first refused message; how many were whole. Panics if a body decodes to
/// other than its `content-length` or to more bytes than were received.
#[cfg(feature = "fuzz")]
pub(crate) fn decode_messages<H>(
    mut wire: &[u8],
    piece: usize,
    parse: impl Fn(&[u8]) -> Result<Option<(H, usize)>, u16>,
    framing_of: impl Fn(&H) -> Framing,
) -> usize {
    let mut receive = |buf: &mut Vec<u8>| {
        let n = piece.min(wire.len());
        buf.extend_from_slice(&wire[..n]);
        wire = &wire[n..];
        n > 0
    };
    let mut buf = Vec::new();
    let mut whole = 0;
    loop {
        let head = loop {
            if !buf.is_empty() {
                match parse(&buf) {
                    Ok(Some((head, len))) => {
                        buf.drain(..len);
                        break head;
                    }
                    Ok(None) if buf.len() < super::server::MAX_HEAD => {}
                    _ => return whole,
                }
            }
            if !receive(&mut buf) {
                return whole;
            }
        };
        let framing = framing_of(&head);
        let (mut body, mut received) = (0u64, buf.len() as u64);
        let mut d = Decoder::new(framing, core::mem::take(&mut buf));
        while !d.done() {
            match d.decode(MAX_PENDING) {
                Ok(out) => body += out.len() as u64,
                Err(_) => return whole,
            }
            assert!(body <= received, "{body} body bytes from {received}");
            if d.done() {
                break;
            }
            let before = d.raw.len();
            if d.raw.len() >= MAX_RAW + piece {
                return whole;
            }
            if !receive(&mut d.raw) {
                if framing == Framing::Close {
                    d.state = BodyState::Done;
                    break;
                }
                return whole;
            }
            received += (d.raw.len() - before) as u64;
        }
        if let Framing::Length(n) = framing {
            assert_eq!(body, n, "content-length {n}, decoded {body}");
        }
        whole += 1;
        buf = core::mem::take(&mut d.raw);
    }
}

/// The outcome of one read of an [`Inbound`].
enum Read {
    Data(Vec<u8>),
    /// Nothing now; the wait is recorded.
    Wait,
    End,
    Failed(&'static str),
}

impl Inbound {
    /// A body starting with `raw` (bytes received after the head).
    pub fn new(wire: Wire, framing: Framing, raw: Vec<u8>) -> Self {
        Self {
            idle_until: wire.idle_deadline(),
            wire,
            decoder: Decoder::new(framing, raw),
            ready: Vec::new(),
        }
    }

    /// Once the guest is done with the body: reads and drops what it left
    /// (at most [`MAX_SKIP`] bytes), and hands back what the connection
    /// received after the body (the next request, pipelined); `None` if
    /// the body did not end well, so the connection cannot go on.
    pub async fn rest(this: &spin::Mutex<Self>) -> Option<Vec<u8>> {
        let mut left = MAX_SKIP;
        core::future::poll_fn(|_| {
            let mut body = this.lock();
            loop {
                match body.read(MAX_PENDING) {
                    Read::Data(skipped) if skipped.len() <= left => left -= skipped.len(),
                    Read::Wait => return Poll::Pending,
                    Read::End => {
                        return Poll::Ready(Some(core::mem::take(&mut body.decoder.raw)));
                    }
                    Read::Data(_) | Read::Failed(_) => return Poll::Ready(None),
                }
            }
        })
        .await
    }

    /// Up to `max` decoded bytes, receiving more when nothing is decoded.
    fn read(&mut self, max: usize) -> Read {
        if max == 0 {
            return Read::Data(Vec::new());
        }
        if !self.ready.is_empty() {
            let n = max.min(self.ready.len());
            return Read::Data(self.ready.drain(..n).collect());
        }
        let d = &mut self.decoder;
        loop {
            if let BodyState::Failed(why) = d.state {
                return Read::Failed(why);
            }
            match d.decode(max) {
                Ok(data) if !data.is_empty() => return Read::Data(data),
                Ok(_) if d.done() => return Read::End,
                Ok(_) => {}
                Err(why) => {
                    d.state = BodyState::Failed(why);
                    continue;
                }
            }
            match self.wire.recv_into(&mut d.raw, MAX_RAW) {
                Ok(Some(0)) if d.framing == Framing::Close => d.state = BodyState::Done,
                Ok(Some(0)) => d.state = BodyState::Failed("connection closed in the body"),
                Ok(Some(_)) => self.idle_until = self.wire.idle_deadline(),
                Ok(None) if self.wire.expired(self.idle_until) => {
                    d.state = BodyState::Failed("the client stopped sending the body")
                }
                Ok(None) => return Read::Wait,
                Err(_) => d.state = BodyState::Failed("connection lost in the body"),
            }
        }
    }
}

/// The guest's `input-stream` over a request body.
pub(crate) struct BodyReader(pub Arc<spin::Mutex<Inbound>>);

#[wasmtime_wasi_io::async_trait]
impl Pollable for BodyReader {
    async fn ready(&mut self) {
        core::future::poll_fn(|_| {
            let mut body = self.0.lock();
            if !body.ready.is_empty() {
                return Poll::Ready(());
            }
            match body.read(MAX_PENDING) {
                Read::Data(data) => {
                    body.ready = data;
                    Poll::Ready(())
                }
                Read::Wait => Poll::Pending,
                Read::End | Read::Failed(_) => Poll::Ready(()),
            }
        })
        .await
    }
}

impl InputStream for BodyReader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        match self.0.lock().read(size.min(MAX_PENDING)) {
            Read::Data(data) => Ok(Bytes::from(data)),
            Read::Wait => Ok(Bytes::new()),
            Read::End => Err(StreamError::Closed),
            Read::Failed(why) => Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "{why}"
            ))),
        }
    }
}

/// How a response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutFraming {
    /// The guest's `content-length`: this many bytes still to write.
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, no length).
    Close,
    /// No body on the wire (`HEAD`, 1xx, 204, 304): writes are dropped.
    Discard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    Writing,
    Finished,
    /// The guest broke off the body (a wrong length) or the peer went:
    /// the connection must close after what is queued.
    Broken,
}

/// A response body, from `outgoing-response.body` on. Writes before the
/// response is set are kept raw; [`Outbound::start`] frames them behind the
/// head once the framing is known.
pub(crate) struct Outbound {
    shared: Arc<Shared>,
    wire: Option<Wire>,
    framing: OutFraming,
    state: OutState,
    /// Bytes for the wire (or raw body bytes before the start).
    pending: Vec<u8>,
    /// The guest asked for a flush: `ready` waits until `pending` is sent.
    flushing: bool,
    /// When waiting for the client to take more stops.
    idle_until: u64,
    /// What puts the body on the wire (an outgoing request's exchange,
    /// which connects): moved on when the guest waits to write more, so a
    /// body larger than the buffer does not wait on a future the guest
    /// polls only after writing it. Weak: the exchange holds the body.
    pub driver: Option<Weak<dyn Drive>>,
}

/// Moves on, without waiting, what a body waits for.
pub(crate) trait Drive: Send + Sync {
    fn drive(&self);
}

impl Outbound {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            wire: None,
            framing: OutFraming::Discard,
            state: OutState::Writing,
            pending: Vec::new(),
            flushing: false,
            idle_until: u64::MAX,
            driver: None,
        }
    }

    /// Puts the response on `wire`: `head`, then the body so far, framed.
    pub fn start(&mut self, wire: Wire, head: Vec<u8>, framing: OutFraming) {
        let raw = core::mem::replace(&mut self.pending, head);
        self.framing = framing;
        self.idle_until = wire.idle_deadline();
        self.wire = Some(wire);
        // Finished before it started: frame the body, then its end.
        let finished = self.state == OutState::Finished;
        if finished {
            self.state = OutState::Writing;
        }
        if self.write(&raw).is_err() {
            self.state = OutState::Broken;
        } else if finished {
            self.finish().ok();
        }
    }

    /// Whether the whole body was written and ended.
    pub fn complete(&self) -> bool {
        self.state == OutState::Finished
    }

    /// Whether the connection can carry another response after this one.
    pub fn reusable(&self) -> bool {
        self.complete() && self.framing != OutFraming::Close
    }

    fn permit(&self) -> usize {
        MAX_PENDING.saturating_sub(self.pending.len())
    }

    /// Appends body bytes, framed.
    fn write(&mut self, data: &[u8]) -> Result<(), &'static str> {
        // Nothing after the end: it would be read as the next response.
        match self.state {
            OutState::Writing => {}
            OutState::Finished => return Err("the body already ended"),
            OutState::Broken => return Err("the response is broken off"),
        }
        if self.wire.is_none() || data.is_empty() {
            self.pending.extend_from_slice(data);
            return Ok(());
        }
        match &mut self.framing {
            OutFraming::Length(left) => {
                if data.len() as u64 > *left {
                    return Err("body longer than its content-length");
                }
                *left -= data.len() as u64;
                self.pending.extend_from_slice(data);
            }
            OutFraming::Chunked => {
                self.pending
                    .extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
                self.pending.extend_from_slice(data);
                self.pending.extend_from_slice(b"\r\n");
            }
            OutFraming::Close => self.pending.extend_from_slice(data),
            OutFraming::Discard => {}
        }
        Ok(())
    }

    /// `outgoing-body.finish`: the body is complete.
    pub fn finish(&mut self) -> Result<(), &'static str> {
        if self.state != OutState::Writing {
            return Err("the body already ended");
        }
        if self.wire.is_some() {
            match self.framing {
                OutFraming::Length(0) | OutFraming::Close | OutFraming::Discard => {}
                OutFraming::Length(_) => {
                    self.state = OutState::Broken;
                    return Err("body shorter than its content-length");
                }
                OutFraming::Chunked => self.pending.extend_from_slice(b"0\r\n\r\n"),
            }
        }
        self.state = OutState::Finished;
        Ok(())
    }

    /// Sends what is queued: `Ready` once all of it went (or the peer is
    /// gone, which breaks the body off).
    pub fn flush(&mut self) -> Poll<()> {
        let Some(wire) = &self.wire else {
            return Poll::Pending;
        };
        match wire.send_until(&mut self.pending, &mut self.idle_until) {
            Poll::Ready(true) => Poll::Ready(()),
            Poll::Ready(false) => {
                self.pending.clear();
                self.state = OutState::Broken;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Flushes everything queued (the server, after the handler returned).
    pub async fn drain(this: &spin::Mutex<Self>) {
        core::future::poll_fn(|_| this.lock().flush()).await
    }
}

/// The guest's `output-stream` over a response body.
pub(crate) struct BodyWriter(pub Arc<spin::Mutex<Outbound>>);

#[wasmtime_wasi_io::async_trait]
impl Pollable for BodyWriter {
    async fn ready(&mut self) {
        core::future::poll_fn(|_| {
            let mut out = self.0.lock();
            if out.wire.is_none() {
                // Not on the wire yet: ready while the buffer has room.
                if out.permit() > 0 {
                    return Poll::Ready(());
                }
                let Some(driver) = out.driver.as_ref().and_then(Weak::upgrade) else {
                    out.shared.block(None);
                    return Poll::Pending;
                };
                // The exchange locks the body itself.
                drop(out);
                driver.drive();
                out = self.0.lock();
                if out.wire.is_none() {
                    out.shared.block(None);
                    return Poll::Pending;
                }
            }
            let sent = out.flush();
            if sent.is_ready() {
                out.flushing = false;
                return Poll::Ready(());
            }
            if !out.flushing && out.permit() > 0 {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }
}

impl OutputStream for BodyWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let mut out = self.0.lock();
        if bytes.len() > out.permit() {
            return Err(StreamError::trap("write exceeds the check-write permit"));
        }
        out.write(&bytes)
            .map_err(|why| StreamError::LastOperationFailed(wasmtime::format_err!("{why}")))?;
        // Start sending now; `ready` sends the rest.
        let _ = out.flush();
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        let mut out = self.0.lock();
        out.flushing = true;
        let _ = out.flush();
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let out = self.0.lock();
        match out.state {
            OutState::Writing => Ok(out.permit()),
            OutState::Finished => Err(StreamError::Closed),
            OutState::Broken => Err(StreamError::LastOperationFailed(wasmtime::format_err!(
                "the response body is broken off"
            ))),
        }
    }
}
