//! The HTTP/1.1 server of an HTTP handler container: its whole life is this
//! one future. It accepts connections on the container's port (at most
//! [`MAX_HTTP_CONNECTIONS`] at once, polled side by side so a slow client
//! holds only its own), parses each request head with `httparse`, and runs
//! every request in a fresh store and instance from the pre-instantiated
//! component (Spin's and wasmCloud's model): nothing a request leaves
//! behind reaches the next. The pod's one memory limit covers all the
//! requests in flight (their stores share [`Limits`]): a request whose
//! growth would pass it is killed as out of memory (500), the others go
//! on. The epoch slices apply per request. A guest that traps or answers nothing gets its client
//! a 500 and the pod keeps serving.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::{Future, poll_fn};
use core::pin::Pin;
use core::task::Poll;

use wasmtime::Engine;

use super::body::{Chunk, Framing, Inbound, OutFraming, Outbound, Wire};
use super::{Fields, IncomingRequest, Method, ProxyPre, RequestInfo, ResponseOutparam};
use crate::component::{Ctx, SharedHost};
use crate::container::{Step, new_store, outcome};
use crate::host::{ConnId, Stream};
use crate::wasi::{Limits, Shared};

/// Connections served at once; more wait in the node's backlog.
pub const MAX_HTTP_CONNECTIONS: usize = 16;
/// Largest request head (request line and headers): 431 beyond it.
pub const MAX_HEAD: usize = 16 << 10;
/// Most request headers: 431 beyond it.
pub const MAX_HEADERS: usize = 64;
/// Largest declared request body: 413 beyond it. The guest reads the body
/// as a stream, so this bounds how long a request may hold its slot rather
/// than memory.
pub const MAX_REQUEST_BODY: u64 = 1 << 30;

/// Everything the connections share.
pub(crate) struct Server {
    pub engine: Engine,
    pub pre: ProxyPre<Ctx>,
    pub port: u16,
    pub host: SharedHost,
    pub shared: Arc<Shared>,
    /// The pod's one memory limit, shared by the requests in flight.
    pub limits: Limits,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
}

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A parsed request head.
struct Head {
    method: Method,
    path: String,
    authority: Option<String>,
    headers: Vec<(String, Vec<u8>)>,
    framing: Framing,
    info: RequestInfo,
    expect_continue: bool,
}

/// Closes the connection however its task ends (also when the container
/// is dropped).
struct Close(Wire);

impl Drop for Close {
    fn drop(&mut self) {
        self.0.host.lock().close(self.0.conn);
    }
}

impl Server {
    /// Serves until accepting fails (the node cannot listen): never returns
    /// otherwise.
    pub async fn run(self) -> Step {
        let server = Arc::new(self);
        let mut conns: Vec<Task> = Vec::new();
        poll_fn(|cx| {
            while conns.len() < MAX_HTTP_CONNECTIONS {
                let accepted = server.host.lock().accept(server.port);
                match accepted {
                    Ok(Some(id)) => conns.push(Box::pin(server.clone().connection(id))),
                    Ok(None) => break,
                    Err(e) => {
                        return Poll::Ready(Step::Trapped(format!(
                            "accepting on port {}: {e:?}",
                            server.port
                        )));
                    }
                }
            }
            // Each connection records its own wait; the container is
            // runnable if any connection is, else it waits for the
            // earliest deadline (or I/O).
            let (mut runnable, mut until) = (false, u64::MAX);
            conns.retain_mut(|task| {
                server.shared.runnable();
                if task.as_mut().poll(cx).is_ready() {
                    // A free slot: accept again next step.
                    runnable = true;
                    return false;
                }
                match server.shared.waiting() {
                    None => runnable = true,
                    Some(at) => until = until.min(at),
                }
                true
            });
            server.shared.runnable();
            if !runnable {
                server.shared.block((until != u64::MAX).then_some(until));
            }
            Poll::Pending
        })
        .await
    }

    fn log(&self, line: &str) {
        self.host
            .lock()
            .log(Stream::Stderr, format!("http: {line}\n").as_bytes());
    }

    /// Serves one connection's requests in turn (keep-alive).
    async fn connection(self: Arc<Self>, conn: ConnId) {
        let wire = Wire {
            host: self.host.clone(),
            conn,
            shared: self.shared.clone(),
            _owner: None,
        };
        let _close = Close(wire.clone());
        let mut buf = Vec::new();
        loop {
            let head = match read_head(&wire, &mut buf, parse_head, || {}).await {
                Ok(Some(head)) => head,
                Ok(None) => return,
                Err(status) => {
                    wire.send_all(error_response(status, false)).await;
                    return;
                }
            };
            match self.exchange(&wire, head, buf).await {
                Some(rest) => buf = rest,
                None => return,
            }
        }
    }

    /// Runs one request through a fresh instance and sends its response;
    /// what the connection received after the request if it stays open.
    async fn exchange(&self, wire: &Wire, head: Head, rest: Vec<u8>) -> Option<Vec<u8>> {
        if head.expect_continue
            && head.framing != Framing::Length(0)
            && !wire
                .send_all(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec())
                .await
        {
            return None;
        }
        let what = format!("{} {}", method_name(&head.method), head.path);
        let info = head.info;
        let inbound = Arc::new(spin::Mutex::new(Inbound::new(
            wire.clone(),
            head.framing,
            rest,
        )));
        let limits = self.limits.sharing();
        // The proxy world imports neither sockets nor filesystem.
        let mut ctx = Ctx::with_host(
            self.host.clone(),
            self.args.clone(),
            self.env.clone(),
            Vec::new(),
            Vec::new(),
            limits,
            self.shared.clone(),
        );
        ctx.http.wire = Some(wire.clone());
        ctx.http.request = info;
        let mut store = new_store(&self.engine, ctx);
        let request = IncomingRequest {
            method: head.method,
            path: head.path,
            authority: head.authority,
            headers: Fields::immutable(head.headers),
            body: Some(inbound.clone()),
        };
        let result = async {
            let request = store.data_mut().table.push(request)?;
            let out = store.data_mut().table.push(ResponseOutparam)?;
            let proxy = self.pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        }
        .await;
        let failure = result
            .err()
            .map(|e| match outcome(Err(e), store.data().limits.oom) {
                Step::Trapped(why) => why,
                Step::OutOfMemory => "out of memory".to_string(),
                Step::Exited(code) => format!("exited with {code}"),
                other => format!("{other:?}"),
            });
        let exchange = core::mem::take(&mut store.data_mut().http);
        // The instance's memory goes before we wait on the client.
        drop(store);
        // The connection goes on only if the request body ended well
        // (whatever the guest left of it is skipped).
        let rest = async {
            if info.keep_alive {
                Inbound::rest(&inbound).await
            } else {
                None
            }
        };
        let Some(out) = exchange.response else {
            let why = failure
                .or(exchange
                    .error
                    .map(|code| format!("the handler answered {code}")))
                .unwrap_or_else(|| "the handler returned without a response".into());
            self.log(&format!("{what}: {why}; answered 500"));
            let rest = rest.await;
            let sent = wire.send_all(error_response(500, rest.is_some())).await;
            return rest.filter(|_| sent);
        };
        Outbound::drain(&out).await;
        let reusable = {
            let out = out.lock();
            if let Some(why) = &failure {
                self.log(&format!("{what}: {why} after the response started"));
            } else if !out.complete() {
                self.log(&format!("{what}: the response body did not end well"));
            }
            failure.is_none() && out.reusable()
        };
        if !reusable {
            return None;
        }
        rest.await
    }
}

/// Reads and parses the next head (a request's, or a response's for the
/// outgoing handler) from the connection (`buf` holds what was received
/// but not used yet): `None` at the end of the connection (or when the
/// peer sent no complete head within
/// [`IDLE_TIMEOUT_NS`](super::body::IDLE_TIMEOUT_NS)), `Err(status)` for a
/// head to refuse. `pump` runs at every wake-up (to send a request body
/// while its response is awaited).
pub(super) async fn read_head<T>(
    wire: &Wire,
    buf: &mut Vec<u8>,
    parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, u16>,
    mut pump: impl FnMut(),
) -> Result<Option<T>, u16> {
    // For the whole head, so sending it a byte at a time gains nothing.
    let deadline = wire.idle_deadline();
    loop {
        if !buf.is_empty() {
            if let Some((head, len)) = parse(buf)? {
                buf.drain(..len);
                return Ok(Some(head));
            }
            if buf.len() >= MAX_HEAD {
                return Err(431);
            }
        }
        let got = poll_fn(|_| {
            pump();
            match wire.recv_into(buf, MAX_HEAD) {
                Ok(None) if wire.expired(deadline) => Poll::Ready(Ok(Some(0))),
                Ok(None) => Poll::Pending,
                other => Poll::Ready(other),
            }
        })
        .await;
        if !matches!(got, Ok(Some(n)) if n > 0) {
            return Ok(None);
        }
    }
}

/// One request head from the front of `buf`, and its length; `None` if it
/// is not complete yet.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(400),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(400);
    };
    let headers = lowercase(req.headers);
    let values = |name: &'static str| values(&headers, name);
    let has_token = |name: &'static str, token: &str| {
        values(name).any(|v| {
            v.split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    let framing = framing(&headers)?.unwrap_or(Framing::Length(0));
    if matches!(framing, Framing::Length(n) if n > MAX_REQUEST_BODY) {
        return Err(413);
    }
    let http11 = version == 1;
    let keep_alive = http11 && !has_token("connection", "close");
    let authority = values("host")
        .next()
        .and_then(|v| core::str::from_utf8(v).ok())
        .map(String::from);
    let head = Head {
        method: method_of(method),
        path: path.into(),
        authority,
        expect_continue: http11 && has_token("expect", "100-continue"),
        headers,
        framing,
        info: RequestInfo {
            head: method == "HEAD",
            http11,
            keep_alive,
        },
    };
    Ok(Some((head, len)))
}

/// Pipelined requests through the server's decoders (`crate::fuzz`).
#[cfg(feature = "fuzz")]
pub(super) fn fuzz_requests(wire: &[u8], piece: usize) -> usize {
    super::body::decode_messages(wire, piece, parse_head, |h: &Head| h.framing)
}

/// Parsed header lines, names lowercase.
pub(super) fn lowercase(headers: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    headers
        .iter()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
        .collect()
}

fn values<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'static str,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .map(|(_, v)| v.as_slice())
}

/// How a received message's body is framed, `None` if its headers say
/// neither (no body for a request, until the close for a response);
/// `Err(400)` for framing that is ambiguous.
pub(super) fn framing(headers: &[(String, Vec<u8>)]) -> Result<Option<Framing>, u16> {
    let coding: Vec<&[u8]> = values(headers, "transfer-encoding").collect();
    let length: Vec<&[u8]> = values(headers, "content-length").collect();
    Ok(Some(match (coding.as_slice(), length.as_slice()) {
        ([], []) => return Ok(None),
        ([], [first, ..]) => {
            // Differing lengths would make the body's end ambiguous.
            if length.iter().any(|v| v != first) {
                return Err(400);
            }
            Framing::Length(parse_length(first).ok_or(400u16)?)
        }
        // Chunked only, and never with a length: anything else is how
        // requests get smuggled past a proxy.
        ([coding], []) if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") => {
            Framing::Chunked(Chunk::Size)
        }
        _ => return Err(400),
    }))
}

/// A `content-length` value: decimal digits only (`u64::from_str` would
/// also take a sign).
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(v).ok()?.parse().ok()
}

fn method_of(m: &str) -> Method {
    match m {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "CONNECT" => Method::Connect,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "PATCH" => Method::Patch,
        other => Method::Other(other.into()),
    }
}

pub(super) fn method_name(m: &Method) -> &str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// The head of the response the guest set, and how its body is framed:
/// the guest's `content-length` if it gave one, else chunked (close for an
/// HTTP/1.0 client); no body for `HEAD`, 1xx, 204 and 304.
pub(super) fn response_head(
    status: u16,
    headers: &Fields,
    req: RequestInfo,
) -> Result<(Vec<u8>, OutFraming), &'static str> {
    let length = content_length(headers)?;
    let framing = if req.head || status < 200 || status == 204 || status == 304 {
        OutFraming::Discard
    } else if let Some(n) = length {
        OutFraming::Length(n)
    } else if req.http11 {
        OutFraming::Chunked
    } else {
        OutFraming::Close
    };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    write_fields(&mut head, headers);
    if framing == OutFraming::Chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if !req.keep_alive || framing == OutFraming::Close {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    Ok((head, framing))
}

/// The `content-length` the guest set on a message it sends, if any.
pub(super) fn content_length(headers: &Fields) -> Result<Option<u64>, &'static str> {
    let mut lengths = headers.get("content-length");
    let Some(first) = lengths.next() else {
        return Ok(None);
    };
    if lengths.any(|v| v != first) {
        return Err("differing content-length headers");
    }
    Ok(Some(parse_length(first).ok_or("invalid content-length")?))
}

/// Header lines of a head the guest's `headers` make.
pub(super) fn write_fields(head: &mut Vec<u8>, headers: &Fields) {
    for (name, value) in &headers.entries {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
}

/// A response the server makes itself (a refused request, a failed guest).
fn error_response(status: u16, keep_alive: bool) -> Vec<u8> {
    let reason = reason(status);
    let close = if keep_alive {
        ""
    } else {
        "connection: close\r\n"
    };
    format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n{close}\r\n{reason}\n",
        reason.len() + 1
    )
    .into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}
