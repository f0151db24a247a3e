//! A `wasi:http/incoming-handler` component (built for `wasm32-wasip2`; the
//! node instantiates it once per request):
//! - `GET /hello?name=x` answers `hello x` with the method, path and the
//!   `x-test` header, with a `content-length`;
//! - `POST /echo` streams the request body back (no length: chunked);
//! - `/trap` panics, `/forget` returns without a response;
//! - `/alloc?mib=n` allocates `n` MiB and reads the request body (so a
//!   client holds the memory until it sends it) before answering;
//! - `/log` writes a line to stdout;
//! - `/spin?n=k` runs `k` rounds of xorshift before answering.
use std::io::{Read as _, Write as _};

use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

wasip2::http::proxy::export!(Hello);

struct Hello;

impl wasip2::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let (route, query) = path.split_once('?').unwrap_or((&path, ""));
        let param = |key: &str| {
            query
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        };
        match route {
            "/hello" => {
                let header = request.headers().get("x-test");
                let header = header
                    .first()
                    .map(|v| String::from_utf8_lossy(v).into_owned());
                let body = format!(
                    "hello {}\nmethod={}\npath={path}\nauthority={}\nx-test={}\n",
                    param("name").unwrap_or_else(|| "world".into()),
                    method(&request.method()),
                    request.authority().unwrap_or_default(),
                    header.unwrap_or_default(),
                );
                respond(out, 200, body.as_bytes(), true);
            }
            "/echo" => {
                let incoming = request.consume().expect("request body");
                let mut body = Vec::new();
                incoming
                    .stream()
                    .expect("body stream")
                    .read_to_end(&mut body)
                    .expect("reading the body");
                respond(out, 200, &body, false);
            }
            "/trap" => panic!("asked to trap"),
            "/forget" => drop(out),
            "/alloc" => {
                let mib: usize = param("mib").and_then(|m| m.parse().ok()).unwrap_or(1);
                let block = vec![1u8; mib << 20];
                let incoming = request.consume().expect("request body");
                let mut rest = Vec::new();
                incoming
                    .stream()
                    .expect("body stream")
                    .read_to_end(&mut rest)
                    .expect("reading the body");
                let body = format!("allocated {} MiB\n", block.len() >> 20);
                respond(out, 200, body.as_bytes(), true);
            }
            "/spin" => {
                // Work, not time: requests sharing the CPU take longer.
                let n: u64 = param("n").and_then(|m| m.parse().ok()).unwrap_or(1);
                let mut x = std::hint::black_box(1u64);
                for _ in 0..n {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                }
                let body = format!("spun {n} ({})\n", std::hint::black_box(x) & 1);
                respond(out, 200, body.as_bytes(), true);
            }
            "/log" => {
                println!("handling {path}");
                respond(out, 200, b"logged\n", true);
            }
            _ => respond(out, 404, b"not found\n", true),
        }
    }
}

fn method(m: &Method) -> String {
    match m {
        Method::Get => "GET".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Head => "HEAD".into(),
        Method::Other(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Sends `body` with `status`, with a `content-length` header if `length`.
fn respond(out: ResponseOutparam, status: u16, body: &[u8], length: bool) {
    let mut headers = vec![("content-type".to_string(), b"text/plain".to_vec())];
    if length {
        headers.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&headers).expect("valid headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status");
    let outgoing = response.body().expect("response body");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = outgoing.write().expect("body stream");
    // Several writes, so a long body arrives in more than one chunk.
    for chunk in body.chunks(4096) {
        stream.write_all(chunk).expect("writing the body");
    }
    stream.flush().expect("flushing the body");
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("finishing the body");
}

fn main() {}
