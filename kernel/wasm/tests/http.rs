//! HTTP handler components end to end on the host: the real `http-hello`
//! guest (tests/wasm, a `wasi:http/incoming-handler` built for
//! wasm32-wasip2) served on a containerPort through the fake node's
//! in-memory TCP, one fresh instance per request.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_wasm::http_limits::{MAX_HEAD, MAX_HEADERS, MAX_HTTP_CONNECTIONS, MAX_REQUEST_BODY};
use skiff_wasm::{ConnId, Container, ContainerSpec, Error, ImageKind, Step};
use support::{FakeHost, MIB, Net, Output, artifact, runtime, spec};

const PORT: u16 = 8080;

struct Pod {
    c: Container,
    out: Output,
    net: Arc<Mutex<Net>>,
}

fn image() -> skiff_wasm::Image {
    let image = runtime()
        .load(&artifact("http-hello"))
        .expect("load handler");
    assert_eq!(image.kind(), ImageKind::HttpHandler);
    image
}

fn serve_with(memory_limit: usize) -> Pod {
    let mut s = spec(&["http-hello"], &[]);
    s.ports = vec![PORT];
    s.memory_limit = memory_limit;
    let (host, out, net) = FakeHost::new(&[PORT]);
    let c = runtime().spawn(&image(), s, host).expect("spawn");
    Pod { c, out, net }
}

fn serve() -> Pod {
    serve_with(64 * MIB)
}

/// A response as the client saw it.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The first complete response in `bytes` and its length; `closed` says the
/// server closed the connection (which ends a body without a length).
fn parse_response(bytes: &[u8], closed: bool) -> Option<(Response, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut r = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head) = r.parse(bytes).expect("a valid response head") else {
        return None;
    };
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let status = r.code.unwrap();
    let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v);
    let rest = &bytes[head..];
    let (body, used) = if let Some(len) = find("content-length") {
        let len: usize = len.parse().unwrap();
        (rest.get(..len)?.to_vec(), len)
    } else if find("transfer-encoding").is_some_and(|v| v == "chunked") {
        let mut body = Vec::new();
        let mut at = 0;
        loop {
            let httparse::Status::Complete((n, size)) =
                httparse::parse_chunk_size(&rest[at..]).expect("chunk size")
            else {
                return None;
            };
            at += n;
            let size = size as usize;
            let chunk = rest.get(at..at + size + 2)?;
            assert_eq!(&chunk[size..], b"\r\n", "chunk end");
            at += size + 2;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
        (body, at)
    } else if closed {
        (rest.to_vec(), rest.len())
    } else {
        return None;
    };
    let response = Response {
        status,
        headers,
        body,
    };
    Some((response, head + used))
}

impl Pod {
    /// Steps the pod until `ready` holds for the network or 20 s pass.
    fn step_until(&mut self, what: &str, ready: impl Fn(&Net) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if ready(&self.net.lock().unwrap()) {
                return;
            }
            let step = self.c.step(2);
            assert!(!step.is_finished(), "the pod ended: {step:?}");
            assert!(
                Instant::now() < deadline,
                "{what}: still waiting; stderr: {}",
                self.out.stderr()
            );
            if let Step::Blocked { .. } = step {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    /// Steps until `n` responses arrived on `id`; takes them.
    fn responses(&mut self, id: ConnId, n: usize) -> Vec<Response> {
        let complete = |net: &Net| {
            let conn = &net.conns[&id];
            let mut bytes = &conn.outbound[..];
            for _ in 0..n {
                match parse_response(bytes, conn.closed) {
                    Some((_, used)) => bytes = &bytes[used..],
                    None => return false,
                }
            }
            true
        };
        self.step_until("responses", complete);
        let mut net = self.net.lock().unwrap();
        let conn = net.conns.get_mut(&id).unwrap();
        let closed = conn.closed;
        let mut out = Vec::new();
        for _ in 0..n {
            let (response, used) = parse_response(&conn.outbound, closed).unwrap();
            conn.outbound.drain(..used);
            out.push(response);
        }
        out
    }

    /// Sends one request on a new connection (the client is done sending)
    /// and returns the response.
    fn request(&mut self, request: &[u8]) -> Response {
        let id = self.net.lock().unwrap().connect(PORT, request);
        self.responses(id, 1).pop().unwrap()
    }

    fn closed(&mut self, id: ConnId) {
        self.step_until("connection closed", |net| net.conns[&id].closed);
    }
}

#[test]
fn get_with_query_and_headers_reaches_the_guest() {
    let mut pod = serve();
    let r = pod.request(
        b"GET /hello?name=skiff HTTP/1.1\r\nHost: pod.local:8080\r\nX-Test: yes\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        "hello skiff\nmethod=GET\npath=/hello?name=skiff\nauthority=pod.local:8080\nx-test=yes\n"
    );
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn post_echo_with_content_length() {
    let mut pod = serve();
    let r = pod.request(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "hello world");
    // No length from the guest: chunked.
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
}

#[test]
fn post_echo_with_a_chunked_body_larger_than_the_buffers() {
    let mut pod = serve();
    // 300 KiB in uneven chunks, with an extension and a trailer: more than
    // every host buffer (and the fake node takes 1 KiB per send).
    let body: Vec<u8> = (0..300 * 1024).map(|i| (i % 251) as u8).collect();
    let mut request =
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for (i, chunk) in body.chunks(7000).enumerate() {
        let ext = if i == 1 { ";name=value" } else { "" };
        request.extend_from_slice(format!("{:x}{ext}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\nx-trailer: 1\r\n\r\n");
    let r = pod.request(&request);
    assert_eq!(r.status, 200);
    assert!(r.body == body, "echoed {} bytes", r.body.len());
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let mut pod = serve();
    let id = pod.net.lock().unwrap().open(PORT);
    pod.net
        .lock()
        .unwrap()
        .send(id, b"GET /hello?name=one HTTP/1.1\r\nHost: x\r\n\r\n");
    let first = pod.responses(id, 1).pop().unwrap();
    assert!(first.text().starts_with("hello one\n"), "{}", first.text());
    assert_eq!(first.header("connection"), None);
    assert!(!pod.net.lock().unwrap().conns[&id].closed);
    // The second one pipelined behind a body.
    pod.net.lock().unwrap().send(
        id,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /hello?name=three HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let rest = pod.responses(id, 2);
    assert_eq!(rest[0].text(), "abc");
    assert!(rest[1].text().starts_with("hello three\n"));
    assert!(!pod.net.lock().unwrap().conns[&id].closed);
}

#[test]
fn a_body_the_guest_ignores_is_skipped_and_the_connection_goes_on() {
    let mut pod = serve();
    let id = pod.net.lock().unwrap().open(PORT);
    pod.net.lock().unwrap().send(
        id,
        b"POST /hello?name=a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n0\r\n\r\nGET /hello?name=b HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let rs = pod.responses(id, 2);
    assert!(rs[0].text().starts_with("hello a\nmethod=POST\n"));
    assert!(rs[1].text().starts_with("hello b\n"));
    assert!(!pod.net.lock().unwrap().conns[&id].closed);
}

#[test]
fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let mut pod = serve();
    let id = pod.net.lock().unwrap().open(PORT);
    pod.net.lock().unwrap().send(
        id,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    pod.step_until("100 Continue", |net| {
        net.conns[&id].outbound.starts_with(interim)
    });
    {
        let mut net = pod.net.lock().unwrap();
        net.conns
            .get_mut(&id)
            .unwrap()
            .outbound
            .drain(..interim.len());
        net.send(id, b"ping");
    }
    assert_eq!(pod.responses(id, 1)[0].text(), "ping");
}

#[test]
fn a_head_request_gets_the_head_only() {
    let mut pod = serve();
    let id = pod.net.lock().unwrap().open(PORT);
    pod.net.lock().unwrap().send(
        id,
        b"HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nGET /hello?name=after HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let split = |out: &[u8]| {
        let end = out.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
        let (_, used) = parse_response(&out[end..], false)?;
        Some((end, end + used))
    };
    pod.step_until("both responses", |net| {
        split(&net.conns[&id].outbound).is_some()
    });
    let net = pod.net.lock().unwrap();
    let out = &net.conns[&id].outbound;
    let (head_end, end) = split(out).unwrap();
    let head = String::from_utf8_lossy(&out[..head_end]);
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    // The length of the GET body, but no body.
    assert!(head.contains("content-length: "), "{head}");
    let (get, _) = parse_response(&out[head_end..], false).unwrap();
    assert!(get.text().starts_with("hello after\nmethod=GET\n"));
    assert_eq!(end, out.len());
}

#[test]
fn malformed_requests_get_400_and_the_pod_keeps_serving() {
    let mut pod = serve();
    for bad in [
        &b"NOT A REQUEST\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
    ] {
        let id = pod.net.lock().unwrap().connect(PORT, bad);
        let r = pod.responses(id, 1).pop().unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
        pod.closed(id);
    }
    let r = pod.request(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 200);
}

#[test]
fn oversized_heads_get_431_and_long_bodies_413() {
    let mut pod = serve();
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("h{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(pod.request(&many).status, 431);
    let long = format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert_eq!(pod.request(long.as_bytes()).status, 431);
    let huge = format!(
        "POST /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_REQUEST_BODY + 1
    );
    assert_eq!(pod.request(huge.as_bytes()).status, 413);
}

#[test]
fn a_trapping_or_silent_guest_gets_500_and_the_next_request_works() {
    let mut pod = serve();
    let r = pod.request(b"GET /trap HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 500);
    let r = pod.request(b"GET /forget HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 500);
    let stderr = pod.out.stderr();
    assert!(stderr.contains("http: GET /trap: "), "{stderr}");
    assert!(
        stderr.contains("http: GET /forget: the handler returned without a response; answered 500"),
        "{stderr}"
    );
    // The same connection goes on after a 500.
    let id = pod.net.lock().unwrap().open(PORT);
    pod.net.lock().unwrap().send(
        id,
        b"GET /trap HTTP/1.1\r\nHost: x\r\n\r\nGET /hello?name=again HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    let rs = pod.responses(id, 2);
    assert_eq!(rs[0].status, 500);
    assert!(rs[1].text().starts_with("hello again\n"));
}

#[test]
fn one_memory_limit_covers_all_requests_in_flight() {
    let mut pod = serve_with(16 * MIB);
    // Over the limit: killed as out of memory, answered 500.
    let r = pod.request(b"GET /alloc?mib=32 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(r.status, 500);
    assert!(
        pod.out.stderr().contains("out of memory"),
        "{}",
        pod.out.stderr()
    );
    // Four requests each holding 6 MiB until their body comes: three would
    // take 18 MiB, so at least two are killed while the others wait.
    let head =
        b"POST /alloc?mib=6 HTTP/1.1\r\nHost: x\r\ncontent-length: 1\r\nconnection: close\r\n\r\n";
    let ids: Vec<ConnId> = (0..4)
        .map(|_| {
            let mut net = pod.net.lock().unwrap();
            let id = net.open(PORT);
            net.send(id, head);
            id
        })
        .collect();
    let answered = |net: &Net, id: &ConnId| !net.conns[id].outbound.is_empty();
    pod.step_until("two requests killed", |net| {
        ids.iter().filter(|id| answered(net, id)).count() >= 2
    });
    for _ in 0..50 {
        pod.c.step(2);
    }
    let waiting: Vec<ConnId> = {
        let net = pod.net.lock().unwrap();
        ids.iter()
            .copied()
            .filter(|id| !answered(&net, id))
            .collect()
    };
    for &id in &waiting {
        pod.net.lock().unwrap().send(id, b"x");
    }
    let statuses: Vec<u16> = ids
        .iter()
        .map(|&id| pod.responses(id, 1)[0].status)
        .collect();
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    assert!((1..=2).contains(&ok), "{statuses:?}");
    assert_eq!(ok, waiting.len(), "{statuses:?}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 500),
        "{statuses:?}"
    );
    // What they held was given back: 6 MiB three times in turn fits.
    for _ in 0..3 {
        let r = pod.request(b"GET /alloc?mib=6 HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(r.status, 200, "{}", pod.out.stderr());
        assert_eq!(r.text(), "allocated 6 MiB\n");
    }
}

impl Pod {
    /// Sends `n` requests for `/spin` (CPU work for some 100 ms) at once;
    /// the busy steps (at 2 ticks each) until all are answered.
    fn spin(&mut self, n: usize) -> usize {
        let request = b"GET /spin?n=100000000 HTTP/1.1\r\nHost: x\r\n\r\n";
        let ids: Vec<ConnId> = (0..n)
            .map(|_| self.net.lock().unwrap().connect(PORT, request))
            .collect();
        let done = |net: &Net| {
            ids.iter()
                .all(|id| parse_response(&net.conns[id].outbound, net.conns[id].closed).is_some())
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut running = 0;
        while !done(&self.net.lock().unwrap()) {
            assert!(Instant::now() < deadline, "{}", self.out.stderr());
            match self.c.step(2) {
                Step::Running => running += 1,
                Step::Blocked { .. } => std::thread::sleep(Duration::from_millis(1)),
                other => panic!("the pod ended: {other:?}"),
            }
        }
        for id in ids {
            assert!(
                self.responses(id, 1)[0]
                    .text()
                    .starts_with("spun 100000000 ")
            );
        }
        running
    }
}

#[test]
fn one_cpu_budget_per_step_covers_all_requests_in_flight() {
    let mut pod = serve();
    // Four busy requests at once share each step's budget, so they take
    // more than twice the steps one takes (not four times: each store's
    // first tick in a step is not counted); with a budget per store they
    // would take as many.
    let one = pod.spin(1);
    let four = pod.spin(4);
    eprintln!("busy steps: one request {one}, four {four}");
    assert!(
        2 * four >= 3 * one,
        "one request: {one} busy steps; four: {four}"
    );
}

#[test]
fn a_slow_client_does_not_hold_up_others() {
    let mut pod = serve();
    // Half a head, then nothing.
    let slow = pod.net.lock().unwrap().open(PORT);
    pod.net
        .lock()
        .unwrap()
        .send(slow, b"GET /hello HTTP/1.1\r\nHo");
    // And a body that never arrives.
    let stalled = pod.net.lock().unwrap().open(PORT);
    pod.net.lock().unwrap().send(
        stalled,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc",
    );
    let r = pod.request(b"GET /hello?name=fast HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.text().starts_with("hello fast\n"));
    // The stalled one finishes once its body does.
    pod.net.lock().unwrap().send(stalled, &[b'x'; 97]);
    let r = pod.responses(stalled, 1).pop().unwrap();
    assert_eq!(r.body.len(), 100);
    // With nothing to do the pod blocks instead of spinning, until the
    // slow client's head is due at the latest.
    let step = (0..100)
        .map(|_| pod.c.step(2))
        .find(|s| *s != Step::Running);
    assert!(
        matches!(step, Some(Step::Blocked { until: Some(_) })),
        "{step:?}"
    );
}

#[test]
fn connections_past_the_limit_wait_in_the_backlog() {
    let mut pod = serve();
    let slow: Vec<ConnId> = (0..MAX_HTTP_CONNECTIONS)
        .map(|_| {
            let mut net = pod.net.lock().unwrap();
            let id = net.open(PORT);
            net.send(id, b"GET /hello?name=slow HTTP/1.1\r\nHost: x\r\n");
            id
        })
        .collect();
    let waiting = pod
        .net
        .lock()
        .unwrap()
        .connect(PORT, b"GET /hello?name=next HTTP/1.1\r\nHost: x\r\n\r\n");
    pod.step_until("all slots taken", |net| net.backlog == [waiting]);
    let step = (0..100)
        .map(|_| pod.c.step(2))
        .find(|s| *s != Step::Running);
    assert!(matches!(step, Some(Step::Blocked { .. })), "{step:?}");
    assert_eq!(pod.net.lock().unwrap().backlog, [waiting]);
    // One slow client finishes (and closes): its slot goes to the next.
    pod.net
        .lock()
        .unwrap()
        .send(slow[0], b"Connection: close\r\n\r\n");
    assert!(
        pod.responses(slow[0], 1)[0]
            .text()
            .starts_with("hello slow\n")
    );
    assert!(
        pod.responses(waiting, 1)[0]
            .text()
            .starts_with("hello next\n")
    );
}

#[test]
fn the_guest_logs_through_the_host_and_http_1_0_gets_a_closed_connection() {
    let mut pod = serve();
    let id = pod
        .net
        .lock()
        .unwrap()
        .connect(PORT, b"GET /log HTTP/1.0\r\n\r\n");
    let r = pod.responses(id, 1).pop().unwrap();
    assert_eq!(r.text(), "logged\n");
    pod.closed(id);
    assert_eq!(pod.out.stdout(), "handling /log\n");
}

#[test]
fn many_requests_each_in_a_fresh_instance() {
    let mut pod = serve_with(8 * MIB);
    let id = pod.net.lock().unwrap().open(PORT);
    let n = 200;
    // Pipelined, so the pod never waits for the client: the time is the
    // server's and the instances'.
    for i in 0..n {
        let request = format!("GET /hello?name={i} HTTP/1.1\r\nHost: x\r\n\r\n");
        pod.net.lock().unwrap().send(id, request.as_bytes());
    }
    let start = Instant::now();
    let responses = pod.responses(id, n);
    let per_request = start.elapsed() / n as u32;
    for (i, r) in responses.iter().enumerate() {
        assert!(r.text().starts_with(&format!("hello {i}\n")));
    }
    eprintln!("{n} pipelined requests on one connection: {per_request:?} per request");
}

#[test]
fn a_component_importing_an_unserved_interface_is_refused_naming_it() {
    // outgoing-handler is served (tests/http_out.rs); a 0.3 one is not.
    let text = r#"(component
        (import "wasi:http/outgoing-handler@0.2.12" (instance))
        (import "wasi:http/handler@0.3.0" (instance))
        (import "wasi:http/types@0.2.12" (instance)))"#;
    let component = wat::parse_str(text).unwrap();
    assert_eq!(
        skiff_wasm::precompile_for(skiff_wasm::Target::Host, &component),
        Err(Error::UnsupportedImports(vec![
            "wasi:http/handler@0.3.0".into()
        ]))
    );
    // With nothing to run or serve: named both exports.
    let message = Error::NotACommand.to_string();
    assert!(
        message.contains("wasi:cli/run") && message.contains("wasi:http/incoming-handler"),
        "{message}"
    );
}

#[test]
fn a_handler_serves_exactly_one_port() {
    let image = image();
    for ports in [vec![], vec![80, 81]] {
        let s = ContainerSpec {
            ports,
            ..spec(&["h"], &[])
        };
        let (host, _, _) = FakeHost::new(&[80, 81]);
        assert!(matches!(
            runtime().spawn(&image, s, host),
            Err(Error::Spec(_))
        ));
    }
}

/// The same requests to `http-hello` served by Skiff and by the reference
/// (wasmtime-wasi-http behind hyper, as `wasmtime serve` serves it): same
/// status, content type and body for each. (Framing headers and `date` are
/// each server's own; a trapping guest is left out: Skiff answers 500, the
/// reference drops the connection.)
#[test]
fn responses_match_the_reference_server() {
    use std::io::{Read as _, Write as _};
    let requests: [&[u8]; 5] = [
        b"GET /hello?name=ref HTTP/1.1\r\nHost: pod\r\nx-test: 7\r\nConnection: close\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: pod\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello there",
        b"PUT /echo HTTP/1.1\r\nHost: pod\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n there\r\n0\r\n\r\n",
        b"GET /nowhere HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n",
        b"DELETE /hello HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n",
    ];
    let reference =
        skiff_wasi_reference::serve(&support::wasm("http-hello"), "127.0.0.1:0".parse().unwrap())
            .expect("reference server");
    let mut pod = serve();
    for request in requests {
        let ours = pod.request(request);
        let mut c = std::net::TcpStream::connect(reference.addr()).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request).unwrap();
        let mut bytes = Vec::new();
        c.read_to_end(&mut bytes).unwrap();
        let (theirs, _) = parse_response(&bytes, true).unwrap_or_else(|| {
            panic!(
                "{:?} for {:?}",
                String::from_utf8_lossy(&bytes),
                String::from_utf8_lossy(request)
            )
        });
        let what = String::from_utf8_lossy(request).into_owned();
        assert_eq!(ours.status, theirs.status, "{what}");
        assert_eq!(
            ours.header("content-type"),
            theirs.header("content-type"),
            "{what}"
        );
        assert_eq!(ours.text(), theirs.text(), "{what}");
    }
}
