//! `wasi:http/outgoing-handler`: plain `http://` requests out of the pod
//! over the node's name lookup and TCP, one HTTP/1.1 exchange per
//! connection (`connection: close`). The exchange runs as the guest polls
//! its `future-incoming-response` (waits suspend the guest like any other
//! I/O); the request body is queued until the connection is up and framed
//! onto it, the response body is decoded as the server's request bodies
//! are ([`Inbound`]). Each request holds a socket slot until its
//! connection is closed, when the last of its bodies and streams is gone.
//! `https` is refused (the node does no TLS); `request-options` timeouts
//! are not applied (the node bounds connecting, [`IDLE_TIMEOUT_NS`] the
//! waits for the response).
//!
//! [`IDLE_TIMEOUT_NS`]: super::body::IDLE_TIMEOUT_NS

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::{Future, poll_fn};
use core::net::{Ipv4Addr, SocketAddrV4};
use core::pin::Pin;
use core::task::{Context, Poll, Waker};

use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{DynPollable, Pollable, subscribe};

use super::bindings::wasi::http::outgoing_handler;
use super::bindings::wasi::http::types::{self, DnsErrorPayload, ErrorCode, Method, Scheme};
use super::body::{Drive, Framing, Inbound, OutFraming, Outbound, Owner, Wire};
use super::server::{
    MAX_HEADERS, content_length, framing, lowercase, method_name, read_head, write_fields,
};
use super::{Fields, IncomingResponse, OutgoingRequest, RequestOptions};
use crate::component::bindings::wasi::sockets::network::ErrorCode as SocketsErrorCode;
use crate::component::sockets::{Slot, host_name};
use crate::component::{Ctx, SharedHost};
use crate::host::{LookupId, NetError};
use crate::wasi::Shared;

type Exchange = Pin<Box<dyn Future<Output = Result<IncomingResponse, ErrorCode>> + Send>>;

/// `future-incoming-response`: the exchange, moved on when the guest
/// polls or asks, or waits to write more of the request body.
pub struct FutureResponse(Arc<spin::Mutex<State>>);

struct State {
    task: Option<Exchange>,
    done: Option<Result<IncomingResponse, ErrorCode>>,
}

impl Drive for spin::Mutex<State> {
    fn drive(&self) {
        self.lock().poll_now();
    }
}

impl State {
    /// Moves the exchange on: ready once it is over.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let Some(task) = &mut self.task {
            self.done = Some(core::task::ready!(task.as_mut().poll(cx)));
            self.task = None;
        }
        Poll::Ready(())
    }

    /// Moves the exchange on without waiting: whether it is over.
    fn poll_now(&mut self) -> bool {
        self.poll(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for FutureResponse {
    async fn ready(&mut self) {
        poll_fn(|cx| self.0.lock().poll(cx)).await
    }
}

/// What the guest sees of a node socket failure.
fn error_code(e: NetError) -> ErrorCode {
    match e {
        NetError::Refused => ErrorCode::ConnectionRefused,
        NetError::TimedOut => ErrorCode::ConnectionTimeout,
        NetError::Reset | NetError::NotConnected => ErrorCode::ConnectionTerminated,
        NetError::Unreachable => ErrorCode::DestinationUnavailable,
        NetError::AccessDenied => ErrorCode::DestinationIpProhibited,
        NetError::NameUnresolvable => dns_error("NXDOMAIN"),
        NetError::ResolverFailed => dns_error("SERVFAIL"),
        other => ErrorCode::InternalError(Some(other.to_string())),
    }
}

fn dns_error(rcode: &str) -> ErrorCode {
    ErrorCode::DnsError(DnsErrorPayload {
        rcode: Some(rcode.into()),
        info_code: None,
    })
}

/// The host and port of an `http` request's authority (port 80 if none).
fn target(request: &OutgoingRequest) -> Result<(String, u16), ErrorCode> {
    match &request.scheme {
        None | Some(Scheme::Http) => {}
        // No TLS on the node: what wasmtime-wasi-http answers too.
        Some(_) => return Err(ErrorCode::HttpProtocolError),
    }
    let authority = request
        .authority
        .as_deref()
        .ok_or(ErrorCode::HttpRequestUriInvalid)?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse().map_err(|_| ErrorCode::HttpRequestUriInvalid)?,
        ),
        None => (authority, 80),
    };
    if host.parse::<Ipv4Addr>().is_err() && !host_name(host) {
        return Err(ErrorCode::HttpRequestUriInvalid);
    }
    Ok((host.into(), port))
}

/// The request head, and how its body goes on the wire: the guest's
/// `content-length`, else chunked if it took a body.
fn request_head(
    request: &OutgoingRequest,
    authority: &str,
) -> Result<(Vec<u8>, OutFraming), ErrorCode> {
    let path = request.path.as_deref().unwrap_or("/");
    // A space or control byte would end the request line early.
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(ErrorCode::HttpRequestUriInvalid);
    }
    let length = content_length(&request.headers)
        .map_err(|why| ErrorCode::InternalError(Some(why.into())))?;
    let framing = match (length, &request.body) {
        (Some(n), _) => OutFraming::Length(n),
        (None, Some(_)) => OutFraming::Chunked,
        (None, None) => OutFraming::Length(0),
    };
    let mut head = format!("{} {path} HTTP/1.1\r\n", method_name(&request.method)).into_bytes();
    if request.headers.get("host").next().is_none() {
        head.extend_from_slice(format!("host: {authority}\r\n").as_bytes());
    }
    write_fields(&mut head, &request.headers);
    if framing == OutFraming::Chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    Ok((head, framing))
}

/// A parsed response head.
struct Head {
    status: u16,
    headers: Vec<(String, Vec<u8>)>,
    framing: Framing,
}

/// One response head from the front of `buf`, and its length; `None` if it
/// is not complete yet. No body after `HEAD`, 1xx, 204 and 304; neither
/// length nor chunked means until the close.
fn parse_response(buf: &[u8], head_request: bool) -> Result<Option<(Head, usize)>, u16> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let len = match res.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(431),
        Err(_) => return Err(502),
    };
    let status = res.code.ok_or(502u16)?;
    let headers = lowercase(res.headers);
    let framing = if head_request || status < 200 || status == 204 || status == 304 {
        Framing::Length(0)
    } else {
        framing(&headers)?.unwrap_or(Framing::Close)
    };
    let head = Head {
        status,
        headers,
        framing,
    };
    Ok(Some((head, len)))
}

/// Responses through the outgoing handler's decoders (`crate::fuzz`).
#[cfg(feature = "fuzz")]
pub(super) fn fuzz_responses(wire: &[u8], piece: usize, head_request: bool) -> usize {
    let parse = |buf: &[u8]| parse_response(buf, head_request);
    super::body::decode_messages(wire, piece, parse, |h: &Head| h.framing)
}

/// A lookup in progress, cancelled if the guest gives up on it.
struct Lookup<'a> {
    host: &'a SharedHost,
    id: Option<LookupId>,
}

impl Drop for Lookup<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id {
            self.host.lock().lookup_cancel(id);
        }
    }
}

/// The first IPv4 address of `name` (a literal answers itself).
async fn resolve(host: &SharedHost, shared: &Shared, name: &str) -> Result<Ipv4Addr, ErrorCode> {
    if let Ok(ip) = name.parse() {
        return Ok(ip);
    }
    let id = host.lock().lookup(name).map_err(error_code)?;
    let mut lookup = Lookup { host, id: Some(id) };
    let answer = poll_fn(|_| match host.lock().lookup_result(id) {
        Some(answer) => Poll::Ready(answer),
        None => {
            shared.block(None);
            Poll::Pending
        }
    })
    .await;
    lookup.id = None;
    let addrs = answer.map_err(error_code)?;
    addrs.first().copied().ok_or_else(|| dns_error("NXDOMAIN"))
}

/// What an exchange needs from the store that starts it.
struct Request {
    host: SharedHost,
    shared: Arc<Shared>,
    slot: Slot,
    name: String,
    port: u16,
    head: Vec<u8>,
    framing: OutFraming,
    body: Arc<spin::Mutex<Outbound>>,
    head_request: bool,
}

/// Connects, sends the request (its body as the guest writes it) and reads
/// the response head.
async fn exchange(r: Request) -> Result<IncomingResponse, ErrorCode> {
    let ip = resolve(&r.host, &r.shared, &r.name).await?;
    let conn = r
        .host
        .lock()
        .connect(SocketAddrV4::new(ip, r.port))
        .map_err(error_code)?;
    let owner = Arc::new(Owner {
        host: r.host.clone(),
        conn,
        _slot: r.slot,
    });
    poll_fn(|_| match r.host.lock().connect_status(conn) {
        Ok(true) => Poll::Ready(Ok(())),
        Ok(false) => {
            r.shared.block(None);
            Poll::Pending
        }
        Err(e) => Poll::Ready(Err(error_code(e))),
    })
    .await?;
    let wire = Wire {
        host: r.host,
        conn,
        shared: r.shared,
        _owner: Some(owner),
    };
    r.body.lock().start(wire.clone(), r.head, r.framing);
    let mut buf = Vec::new();
    loop {
        let head = read_head(
            &wire,
            &mut buf,
            |b| parse_response(b, r.head_request),
            // Whatever of the body is queued goes while we wait.
            || {
                let _ = r.body.lock().flush();
            },
        )
        .await;
        let head = match head {
            Ok(Some(head)) => head,
            Ok(None) => return Err(ErrorCode::HttpResponseIncomplete),
            Err(431) => return Err(ErrorCode::HttpResponseHeaderSectionSize(None)),
            Err(_) => return Err(ErrorCode::HttpProtocolError),
        };
        // Interim responses (100 Continue) come before the real one.
        if head.status < 200 {
            continue;
        }
        let body = Inbound::new(wire, head.framing, buf);
        return Ok(IncomingResponse {
            status: head.status,
            headers: Fields::immutable(head.headers),
            body: Some(Arc::new(spin::Mutex::new(body))),
        });
    }
}

impl Ctx {
    /// Checks `request` and takes a socket slot for it.
    fn outgoing(&mut self, request: OutgoingRequest) -> Result<Request, ErrorCode> {
        let (name, port) = target(&request)?;
        let authority = request.authority.as_deref().unwrap_or_default();
        let (head, framing) = request_head(&request, authority)?;
        let slot = self.slot().map_err(|e| match e {
            SocketsErrorCode::NewSocketLimit => ErrorCode::ConnectionLimitReached,
            _ => ErrorCode::InternalError(Some("out of memory".into())),
        })?;
        let body = request.body.unwrap_or_else(|| {
            // No body: an empty one, already finished.
            let mut empty = Outbound::new(self.shared.clone());
            empty.finish().ok();
            Arc::new(spin::Mutex::new(empty))
        });
        Ok(Request {
            host: self.host.clone(),
            shared: self.shared.clone(),
            slot,
            name,
            port,
            head,
            framing,
            body,
            head_request: matches!(request.method, Method::Head),
        })
    }
}

impl outgoing_handler::Host for Ctx {
    fn handle(
        &mut self,
        request: Resource<OutgoingRequest>,
        options: Option<Resource<RequestOptions>>,
    ) -> wasmtime::Result<Result<Resource<FutureResponse>, ErrorCode>> {
        let request = self.table.delete(request)?;
        if let Some(options) = options {
            self.table.delete(options)?;
        }
        let request = match self.outgoing(request) {
            Ok(request) => request,
            Err(e) => return Ok(Err(e)),
        };
        let body = request.body.clone();
        let state = Arc::new(spin::Mutex::new(State {
            task: Some(Box::pin(exchange(request))),
            done: None,
        }));
        let driver: Arc<dyn Drive> = state.clone();
        body.lock().driver = Some(Arc::downgrade(&driver));
        Ok(Ok(self.table.push(FutureResponse(state))?))
    }
}

impl types::HostFutureIncomingResponse for Ctx {
    fn subscribe(
        &mut self,
        this: Resource<FutureResponse>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(&mut self.table, this)
    }

    #[allow(clippy::type_complexity)]
    fn get(
        &mut self,
        this: Resource<FutureResponse>,
    ) -> wasmtime::Result<Option<Result<Result<Resource<IncomingResponse>, ErrorCode>, ()>>> {
        let mut state = self.table.get(&this)?.0.lock();
        if !state.poll_now() {
            return Ok(None);
        }
        // Once only: `None` in `done` after the task ended means taken.
        let done = state.done.take();
        drop(state);
        let Some(done) = done else {
            return Ok(Some(Err(())));
        };
        Ok(Some(Ok(match done {
            Ok(response) => Ok(self.table.push(response)?),
            Err(e) => Err(e),
        })))
    }

    fn drop(&mut self, rep: Resource<FutureResponse>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}
