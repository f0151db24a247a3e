//! wasi:http for components that export `wasi:http/incoming-handler` (the
//! `wasi:http/proxy` world): the `types` interface here, the server that
//! feeds it requests in [`server`], and `outgoing-handler` for plain
//! `http://` requests out of the pod in [`outgoing`] (any component).
//!
//! Headers are copied rather than shared between parent and child
//! resources: a child's `headers` is immutable, so a copy behaves the same.

mod body;
mod outgoing;
pub(crate) mod server;

pub use body::IDLE_TIMEOUT_NS;

/// One connection's bytes through the HTTP/1.1 decoders that face the
/// network: the first byte picks the side (bit 0: responses, as the
/// outgoing handler reads them; bit 1: answers to `HEAD`), the second how
/// many bytes arrive at a time; how many messages were whole.
#[cfg(feature = "fuzz")]
pub(crate) fn fuzz_wire(data: &[u8]) -> usize {
    let [side, piece, wire @ ..] = data else {
        return 0;
    };
    let piece = usize::from(*piece).max(1);
    if side & 1 == 0 {
        server::fuzz_requests(wire, piece)
    } else {
        outgoing::fuzz_responses(wire, piece, side & 2 != 0)
    }
}

use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;

use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi_io::poll::{DynPollable, Pollable, subscribe};
use wasmtime_wasi_io::streams::{DynInputStream, DynOutputStream, Error as IoError};

use self::bindings::wasi::http::types::{self, ErrorCode, HeaderError, Method, Scheme, StatusCode};
use self::body::{BodyReader, BodyWriter, Inbound, Outbound, Wire};
use super::Ctx;

/// Generated from `wit/` (the `wasi:http/proxy` world, 0.2.12); the
/// interfaces it shares with `wasi:cli/command` are the command bindings'.
#[allow(dead_code, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "wasi:http/proxy",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi_io::bindings::wasi::io,
            "wasi:cli": crate::component::bindings::wasi::cli,
            "wasi:clocks": crate::component::bindings::wasi::clocks,
            "wasi:random": crate::component::bindings::wasi::random,
            "wasi:http/types.fields": super::Fields,
            "wasi:http/types.incoming-request": super::IncomingRequest,
            "wasi:http/types.outgoing-request": super::OutgoingRequest,
            "wasi:http/types.request-options": super::RequestOptions,
            "wasi:http/types.response-outparam": super::ResponseOutparam,
            "wasi:http/types.incoming-response": super::IncomingResponse,
            "wasi:http/types.incoming-body": super::IncomingBody,
            "wasi:http/types.future-trailers": super::FutureTrailers,
            "wasi:http/types.outgoing-response": super::OutgoingResponse,
            "wasi:http/types.outgoing-body": super::OutgoingBody,
            "wasi:http/types.future-incoming-response": super::outgoing::FutureResponse,
        },
        require_store_data_send: true,
    });
}

pub(crate) use bindings::ProxyPre;

/// The export that makes a component an HTTP handler (any `0.2.x`).
pub const HANDLER_EXPORT: &str = "wasi:http/incoming-handler";

/// Most bytes of names and values one `fields` holds (a guest-built one;
/// request headers are bounded by the server's head limit).
const MAX_FIELDS_BYTES: usize = 64 << 10;

/// What the current request's store knows of its exchange.
#[derive(Default)]
pub(crate) struct Exchange {
    /// The connection (none outside the server: a command component can
    /// build HTTP values but has no request to answer).
    pub wire: Option<Wire>,
    pub request: RequestInfo,
    /// The body of the response the guest set.
    pub response: Option<Arc<spin::Mutex<Outbound>>>,
    /// Why there is no response: the guest set an error code.
    pub error: Option<String>,
}

/// What of the request decides the response's framing.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RequestInfo {
    pub head: bool,
    pub http11: bool,
    pub keep_alive: bool,
}

/// A `fields` (also `headers` and `trailers`): lowercase names in order.
#[derive(Debug, Clone, Default)]
pub struct Fields {
    entries: Vec<(String, Vec<u8>)>,
    mutable: bool,
}

/// Hop-by-hop headers: the server frames the connection itself.
const FORBIDDEN: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn valid_value(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

impl Fields {
    pub(crate) fn immutable(entries: Vec<(String, Vec<u8>)>) -> Self {
        Self {
            entries,
            mutable: false,
        }
    }

    fn get(&self, name: &str) -> impl Iterator<Item = &Vec<u8>> {
        self.entries
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// Checks values the guest adds under `name` (replacing those it has if
    /// `replace`); the name comes back lowercase.
    fn check(&self, name: &str, values: &[Vec<u8>], replace: bool) -> Result<String, HeaderError> {
        if !self.mutable {
            return Err(HeaderError::Immutable);
        }
        if !valid_name(name) || !values.iter().all(|v| valid_value(v)) {
            return Err(HeaderError::InvalidSyntax);
        }
        let name = name.to_ascii_lowercase();
        let kept: usize = self
            .entries
            .iter()
            .filter(|(n, _)| !(replace && *n == name))
            .map(|(n, v)| n.len() + v.len())
            .sum();
        let added: usize = values.iter().map(|v| name.len() + v.len()).sum();
        if FORBIDDEN.contains(&name.as_str()) || kept + added > MAX_FIELDS_BYTES {
            return Err(HeaderError::Forbidden);
        }
        Ok(name)
    }

    fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }
}

pub struct IncomingRequest {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) authority: Option<String>,
    pub(crate) headers: Fields,
    pub(crate) body: Option<Arc<spin::Mutex<Inbound>>>,
}

pub struct IncomingBody(Option<Arc<spin::Mutex<Inbound>>>);

pub struct FutureTrailers {
    taken: bool,
}

pub struct ResponseOutparam;

pub struct OutgoingResponse {
    status: StatusCode,
    headers: Fields,
    body: Option<Arc<spin::Mutex<Outbound>>>,
}

pub struct OutgoingBody {
    out: Arc<spin::Mutex<Outbound>>,
    stream_taken: bool,
}

/// Sent by `outgoing-handler.handle`.
pub struct OutgoingRequest {
    method: Method,
    path: Option<String>,
    scheme: Option<Scheme>,
    authority: Option<String>,
    headers: Fields,
    /// Queued until the connection is up, then framed onto it.
    body: Option<Arc<spin::Mutex<Outbound>>>,
}

/// The answer to an outgoing request.
pub struct IncomingResponse {
    status: StatusCode,
    headers: Fields,
    body: Option<Arc<spin::Mutex<Inbound>>>,
}

#[derive(Default)]
pub struct RequestOptions {
    connect: Option<u64>,
    first_byte: Option<u64>,
    between_bytes: Option<u64>,
}

/// Adds `wasi:http/types` and `wasi:http/outgoing-handler` to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    types::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, &types::LinkOptions::default(), super::get)?;
    bindings::wasi::http::outgoing_handler::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, super::get)
}

/// Always ready (trailers are never delivered).
struct Ready;

#[wasmtime_wasi_io::async_trait]
impl Pollable for Ready {
    async fn ready(&mut self) {}
}

impl types::Host for Ctx {
    fn http_error_code(&mut self, _err: Resource<IoError>) -> wasmtime::Result<Option<ErrorCode>> {
        Ok(None)
    }
}

impl types::HostFields for Ctx {
    fn new(&mut self) -> wasmtime::Result<Resource<Fields>> {
        Ok(self.table.push(Fields {
            entries: Vec::new(),
            mutable: true,
        })?)
    }

    fn from_list(
        &mut self,
        entries: Vec<(String, Vec<u8>)>,
    ) -> wasmtime::Result<Result<Resource<Fields>, HeaderError>> {
        let mut fields = Fields {
            entries: Vec::new(),
            mutable: true,
        };
        for (name, value) in entries {
            match fields.check(&name, core::slice::from_ref(&value), false) {
                Ok(name) => fields.entries.push((name, value)),
                Err(e) => return Ok(Err(e)),
            }
        }
        Ok(Ok(self.table.push(fields)?))
    }

    fn get(&mut self, this: Resource<Fields>, name: String) -> wasmtime::Result<Vec<Vec<u8>>> {
        Ok(self.table.get(&this)?.get(&name).cloned().collect())
    }

    fn has(&mut self, this: Resource<Fields>, name: String) -> wasmtime::Result<bool> {
        Ok(self.table.get(&this)?.get(&name).next().is_some())
    }

    fn set(
        &mut self,
        this: Resource<Fields>,
        name: String,
        values: Vec<Vec<u8>>,
    ) -> wasmtime::Result<Result<(), HeaderError>> {
        let fields = self.table.get_mut(&this)?;
        Ok(fields.check(&name, &values, true).map(|name| {
            fields.remove(&name);
            fields
                .entries
                .extend(values.into_iter().map(|v| (name.clone(), v)));
        }))
    }

    fn delete(
        &mut self,
        this: Resource<Fields>,
        name: String,
    ) -> wasmtime::Result<Result<(), HeaderError>> {
        let fields = self.table.get_mut(&this)?;
        if !fields.mutable {
            return Ok(Err(HeaderError::Immutable));
        }
        fields.remove(&name);
        Ok(Ok(()))
    }

    fn append(
        &mut self,
        this: Resource<Fields>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), HeaderError>> {
        let fields = self.table.get_mut(&this)?;
        Ok(fields
            .check(&name, core::slice::from_ref(&value), false)
            .map(|name| fields.entries.push((name, value))))
    }

    fn entries(&mut self, this: Resource<Fields>) -> wasmtime::Result<Vec<(String, Vec<u8>)>> {
        Ok(self.table.get(&this)?.entries.clone())
    }

    fn clone(&mut self, this: Resource<Fields>) -> wasmtime::Result<Resource<Fields>> {
        let mut copy = self.table.get(&this)?.clone();
        copy.mutable = true;
        Ok(self.table.push(copy)?)
    }

    fn drop(&mut self, rep: Resource<Fields>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostIncomingRequest for Ctx {
    fn method(&mut self, this: Resource<IncomingRequest>) -> wasmtime::Result<Method> {
        Ok(self.table.get(&this)?.method.clone())
    }

    fn path_with_query(
        &mut self,
        this: Resource<IncomingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(Some(self.table.get(&this)?.path.clone()))
    }

    fn scheme(&mut self, _this: Resource<IncomingRequest>) -> wasmtime::Result<Option<Scheme>> {
        Ok(Some(Scheme::Http))
    }

    fn authority(&mut self, this: Resource<IncomingRequest>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.authority.clone())
    }

    fn headers(&mut self, this: Resource<IncomingRequest>) -> wasmtime::Result<Resource<Fields>> {
        let headers = self.table.get(&this)?.headers.clone();
        Ok(self.table.push(headers)?)
    }

    fn consume(
        &mut self,
        this: Resource<IncomingRequest>,
    ) -> wasmtime::Result<Result<Resource<IncomingBody>, ()>> {
        let Some(body) = self.table.get_mut(&this)?.body.take() else {
            return Ok(Err(()));
        };
        Ok(Ok(self.table.push(IncomingBody(Some(body)))?))
    }

    fn drop(&mut self, rep: Resource<IncomingRequest>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostIncomingBody for Ctx {
    fn stream(
        &mut self,
        this: Resource<IncomingBody>,
    ) -> wasmtime::Result<Result<Resource<DynInputStream>, ()>> {
        let Some(body) = self.table.get_mut(&this)?.0.take() else {
            return Ok(Err(()));
        };
        let stream: DynInputStream = Box::new(BodyReader(body));
        Ok(Ok(self.table.push(stream)?))
    }

    fn finish(
        &mut self,
        this: Resource<IncomingBody>,
    ) -> wasmtime::Result<Resource<FutureTrailers>> {
        self.table.delete(this)?;
        Ok(self.table.push(FutureTrailers { taken: false })?)
    }

    fn drop(&mut self, rep: Resource<IncomingBody>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostFutureTrailers for Ctx {
    fn subscribe(
        &mut self,
        _this: Resource<FutureTrailers>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let ready = self.table.push(Ready)?;
        subscribe(&mut self.table, ready)
    }

    /// Trailers are skipped when the body is decoded: there are none.
    #[allow(clippy::type_complexity)]
    fn get(
        &mut self,
        this: Resource<FutureTrailers>,
    ) -> wasmtime::Result<Option<Result<Result<Option<Resource<Fields>>, ErrorCode>, ()>>> {
        let trailers = self.table.get_mut(&this)?;
        let first = !core::mem::replace(&mut trailers.taken, true);
        Ok(Some(if first { Ok(Ok(None)) } else { Err(()) }))
    }

    fn drop(&mut self, rep: Resource<FutureTrailers>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostOutgoingResponse for Ctx {
    fn new(&mut self, headers: Resource<Fields>) -> wasmtime::Result<Resource<OutgoingResponse>> {
        let mut headers = self.table.delete(headers)?;
        headers.mutable = false;
        Ok(self.table.push(OutgoingResponse {
            status: 200,
            headers,
            body: None,
        })?)
    }

    fn status_code(&mut self, this: Resource<OutgoingResponse>) -> wasmtime::Result<StatusCode> {
        Ok(self.table.get(&this)?.status)
    }

    fn set_status_code(
        &mut self,
        this: Resource<OutgoingResponse>,
        status: StatusCode,
    ) -> wasmtime::Result<Result<(), ()>> {
        if !(100..=999).contains(&status) {
            return Ok(Err(()));
        }
        self.table.get_mut(&this)?.status = status;
        Ok(Ok(()))
    }

    fn headers(&mut self, this: Resource<OutgoingResponse>) -> wasmtime::Result<Resource<Fields>> {
        let headers = self.table.get(&this)?.headers.clone();
        Ok(self.table.push(headers)?)
    }

    fn body(
        &mut self,
        this: Resource<OutgoingResponse>,
    ) -> wasmtime::Result<Result<Resource<OutgoingBody>, ()>> {
        let shared = self.shared.clone();
        let response = self.table.get_mut(&this)?;
        if response.body.is_some() {
            return Ok(Err(()));
        }
        let out = Arc::new(spin::Mutex::new(Outbound::new(shared)));
        response.body = Some(out.clone());
        Ok(Ok(self.table.push(OutgoingBody {
            out,
            stream_taken: false,
        })?))
    }

    fn drop(&mut self, rep: Resource<OutgoingResponse>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostOutgoingBody for Ctx {
    fn write(
        &mut self,
        this: Resource<OutgoingBody>,
    ) -> wasmtime::Result<Result<Resource<DynOutputStream>, ()>> {
        let body = self.table.get_mut(&this)?;
        if core::mem::replace(&mut body.stream_taken, true) {
            return Ok(Err(()));
        }
        let stream: DynOutputStream = Box::new(BodyWriter(body.out.clone()));
        Ok(Ok(self.table.push(stream)?))
    }

    fn finish(
        &mut self,
        this: Resource<OutgoingBody>,
        trailers: Option<Resource<Fields>>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let body = self.table.delete(this)?;
        if let Some(trailers) = trailers {
            // HTTP/1.1 trailers are rarely honoured; they are dropped.
            self.table.delete(trailers)?;
        }
        Ok(body
            .out
            .lock()
            .finish()
            .map_err(|why| ErrorCode::InternalError(Some(why.to_string()))))
    }

    /// Dropped without `finish`: the body is incomplete, which the server
    /// sees (the response never completes) and closes the connection.
    fn drop(&mut self, rep: Resource<OutgoingBody>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostResponseOutparam for Ctx {
    fn set(
        &mut self,
        param: Resource<ResponseOutparam>,
        response: Result<Resource<OutgoingResponse>, ErrorCode>,
    ) -> wasmtime::Result<()> {
        self.table.delete(param)?;
        let response = match response {
            Ok(response) => self.table.delete(response)?,
            Err(code) => {
                self.http.error = Some(alloc::format!("{code:?}"));
                return Ok(());
            }
        };
        let Some(wire) = self.http.wire.clone() else {
            wasmtime::bail!("no request to answer");
        };
        // No `body` call: the body is empty.
        let empty = response.body.is_none();
        let out = response
            .body
            .unwrap_or_else(|| Arc::new(spin::Mutex::new(Outbound::new(self.shared.clone()))));
        match server::response_head(response.status, &response.headers, self.http.request) {
            Ok((head, framing)) => {
                let mut body = out.lock();
                body.start(wire, head, framing);
                if empty {
                    // A wrong content-length breaks it off; the server sees.
                    body.finish().ok();
                }
            }
            Err(why) => {
                self.http.error = Some(why.into());
                return Ok(());
            }
        }
        self.http.response = Some(out);
        Ok(())
    }

    fn send_informational(
        &mut self,
        _this: Resource<ResponseOutparam>,
        _status: u16,
        _headers: Resource<Fields>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(Err(ErrorCode::InternalError(Some(
            "informational responses are not supported".into(),
        ))))
    }

    fn drop(&mut self, rep: Resource<ResponseOutparam>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostOutgoingRequest for Ctx {
    fn new(&mut self, headers: Resource<Fields>) -> wasmtime::Result<Resource<OutgoingRequest>> {
        let mut headers = self.table.delete(headers)?;
        headers.mutable = false;
        Ok(self.table.push(OutgoingRequest {
            method: Method::Get,
            path: None,
            scheme: None,
            authority: None,
            headers,
            body: None,
        })?)
    }

    fn body(
        &mut self,
        this: Resource<OutgoingRequest>,
    ) -> wasmtime::Result<Result<Resource<OutgoingBody>, ()>> {
        let shared = self.shared.clone();
        let request = self.table.get_mut(&this)?;
        if request.body.is_some() {
            return Ok(Err(()));
        }
        let out = Arc::new(spin::Mutex::new(Outbound::new(shared)));
        request.body = Some(out.clone());
        Ok(Ok(self.table.push(OutgoingBody {
            out,
            stream_taken: false,
        })?))
    }

    fn method(&mut self, this: Resource<OutgoingRequest>) -> wasmtime::Result<Method> {
        Ok(self.table.get(&this)?.method.clone())
    }

    fn set_method(
        &mut self,
        this: Resource<OutgoingRequest>,
        method: Method,
    ) -> wasmtime::Result<Result<(), ()>> {
        if let Method::Other(m) = &method
            && !valid_name(m)
        {
            return Ok(Err(()));
        }
        self.table.get_mut(&this)?.method = method;
        Ok(Ok(()))
    }

    fn path_with_query(
        &mut self,
        this: Resource<OutgoingRequest>,
    ) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.path.clone())
    }

    fn set_path_with_query(
        &mut self,
        this: Resource<OutgoingRequest>,
        path: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&this)?.path = path;
        Ok(Ok(()))
    }

    fn scheme(&mut self, this: Resource<OutgoingRequest>) -> wasmtime::Result<Option<Scheme>> {
        Ok(self.table.get(&this)?.scheme.clone())
    }

    fn set_scheme(
        &mut self,
        this: Resource<OutgoingRequest>,
        scheme: Option<Scheme>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&this)?.scheme = scheme;
        Ok(Ok(()))
    }

    fn authority(&mut self, this: Resource<OutgoingRequest>) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&this)?.authority.clone())
    }

    fn set_authority(
        &mut self,
        this: Resource<OutgoingRequest>,
        authority: Option<String>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&this)?.authority = authority;
        Ok(Ok(()))
    }

    fn headers(&mut self, this: Resource<OutgoingRequest>) -> wasmtime::Result<Resource<Fields>> {
        let headers = self.table.get(&this)?.headers.clone();
        Ok(self.table.push(headers)?)
    }

    fn drop(&mut self, rep: Resource<OutgoingRequest>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostRequestOptions for Ctx {
    fn new(&mut self) -> wasmtime::Result<Resource<RequestOptions>> {
        Ok(self.table.push(RequestOptions::default())?)
    }

    fn connect_timeout(&mut self, this: Resource<RequestOptions>) -> wasmtime::Result<Option<u64>> {
        Ok(self.table.get(&this)?.connect)
    }

    fn set_connect_timeout(
        &mut self,
        this: Resource<RequestOptions>,
        duration: Option<u64>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&this)?.connect = duration;
        Ok(Ok(()))
    }

    fn first_byte_timeout(
        &mut self,
        this: Resource<RequestOptions>,
    ) -> wasmtime::Result<Option<u64>> {
        Ok(self.table.get(&this)?.first_byte)
    }

    fn set_first_byte_timeout(
        &mut self,
        this: Resource<RequestOptions>,
        duration: Option<u64>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&this)?.first_byte = duration;
        Ok(Ok(()))
    }

    fn between_bytes_timeout(
        &mut self,
        this: Resource<RequestOptions>,
    ) -> wasmtime::Result<Option<u64>> {
        Ok(self.table.get(&this)?.between_bytes)
    }

    fn set_between_bytes_timeout(
        &mut self,
        this: Resource<RequestOptions>,
        duration: Option<u64>,
    ) -> wasmtime::Result<Result<(), ()>> {
        self.table.get_mut(&this)?.between_bytes = duration;
        Ok(Ok(()))
    }

    fn drop(&mut self, rep: Resource<RequestOptions>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl types::HostIncomingResponse for Ctx {
    fn status(&mut self, this: Resource<IncomingResponse>) -> wasmtime::Result<StatusCode> {
        Ok(self.table.get(&this)?.status)
    }

    fn headers(&mut self, this: Resource<IncomingResponse>) -> wasmtime::Result<Resource<Fields>> {
        let headers = self.table.get(&this)?.headers.clone();
        Ok(self.table.push(headers)?)
    }

    fn consume(
        &mut self,
        this: Resource<IncomingResponse>,
    ) -> wasmtime::Result<Result<Resource<IncomingBody>, ()>> {
        let Some(body) = self.table.get_mut(&this)?.body.take() else {
            return Ok(Err(()));
        };
        Ok(Ok(self.table.push(IncomingBody(Some(body)))?))
    }

    fn drop(&mut self, rep: Resource<IncomingResponse>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}
