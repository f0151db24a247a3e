//! The HTTP server of handler pods under mutated requests (bounded; set
//! `SKIFF_FUZZ_SECS`/`SKIFF_FUZZ_SEED` for longer runs): the real
//! `http-hello` guest behind the fake node's in-memory TCP gets well-formed
//! requests with one to four random edits, sent in one piece by a client
//! that then closes its side. Whatever the bytes, the pod never ends, every
//! connection is answered with HTTP responses only (or nothing) and then
//! closed, and a clean request still gets 200 afterwards.

mod support;

use std::time::{Duration, Instant};

use skiff_test_support::fuzz::Bounded;
use skiff_wasm::Step;
use support::{FakeHost, MIB, artifact, runtime, spec};

const PORT: u16 = 8080;

/// Requests to mutate: each framing the server knows.
const SEEDS: &[&[u8]] = &[
    b"GET /hello?name=fuzz HTTP/1.1\r\nHost: pod\r\nx-test: 1\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: pod\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: pod\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET /hello HTTP/1.1\r\nHost: pod\r\n\r\nGET /hello HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: pod\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\nabc",
    b"HEAD /hello HTTP/1.0\r\n\r\n",
];

#[test]
fn mutated_requests_get_http_answers_and_never_end_the_pod() {
    let mut s = spec(&["http-hello"], &[]);
    s.ports = vec![PORT];
    s.memory_limit = 32 * MIB;
    let (host, out, net) = FakeHost::new(&[PORT]);
    let image = runtime().load(&artifact("http-hello")).expect("load");
    let mut pod = runtime().spawn(&image, s, host).expect("spawn");
    let mut fuzz = Bounded::from_env(8.0, 0x5eed_4779);
    let step_until_closed = |pod: &mut skiff_wasm::Container, id, input: &[u8]| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if net.lock().unwrap().conns[&id].closed {
                return;
            }
            let step = pod.step(2);
            assert!(
                !step.is_finished(),
                "the pod ended ({step:?}) on {:?}; stderr: {}",
                String::from_utf8_lossy(input),
                out.stderr()
            );
            assert!(
                Instant::now() < deadline,
                "connection never closed on {:?}",
                String::from_utf8_lossy(input)
            );
            if let Step::Blocked { .. } = step {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    };
    while fuzz.running() {
        let mut input = SEEDS[fuzz.below(SEEDS.len())].to_vec();
        fuzz.mutate(&mut input);
        let id = net.lock().unwrap().connect(PORT, &input);
        step_until_closed(&mut pod, id, &input);
        let answer = std::mem::take(&mut net.lock().unwrap().conns.get_mut(&id).unwrap().outbound);
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 "),
            "seed {}: {:?} answered {:?}",
            fuzz.seed,
            String::from_utf8_lossy(&input),
            String::from_utf8_lossy(&answer)
        );
    }
    let id = net.lock().unwrap().connect(
        PORT,
        b"GET /hello?name=after HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n",
    );
    step_until_closed(&mut pod, id, b"clean request");
    let answer = String::from_utf8_lossy(&net.lock().unwrap().conns[&id].outbound).into_owned();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(fuzz.runs() > 10, "only {} runs", fuzz.runs());
}
