//! wasi:sockets on the host: the example guests (plain Rust std built for
//! `wasm32-wasip2`) run under Skiff's WASI over real loopback sockets
//! ([`RealHost`]) and under the reference runtime (wasmtime-wasi at the
//! node's wasmtime version), against the same peers; their output must be
//! identical.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream, UdpSocket};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skiff_wasm::{MAX_SOCKETS, Step};
use support::real_net::{PortMap, RealHost};
use support::{MIB, Output, artifact, runtime, spec, wasm};

const LIMIT: Duration = Duration::from_secs(30);

/// Spawns guest `name` (argv\[0\] = its name) on a [`RealHost`] and runs it
/// to its end on a thread of its own.
fn start(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
    tcp_ports: &[u16],
    udp_ports: &[u16],
    memory: usize,
) -> (JoinHandle<Step>, Output, PortMap) {
    let argv: Vec<&str> = std::iter::once(name).chain(args.iter().copied()).collect();
    let mut s = spec(&argv, env);
    s.ports = tcp_ports.to_vec();
    s.memory_limit = memory;
    let (host, out, map) = RealHost::new(tcp_ports, udp_ports);
    let image = runtime().load(&artifact(name)).expect("load");
    let mut c = runtime().spawn(&image, s, host).expect("spawn");
    let run = std::thread::spawn(move || support::run_to_end(&mut c, LIMIT));
    (run, out, map)
}

/// Runs guest `name` under Skiff to its end: outcome and output.
fn skiff(name: &str, args: &[&str], env: &[(&str, &str)]) -> (Step, Output) {
    let (run, out, _) = start(name, args, env, &[], &[], 64 * MIB);
    (run.join().expect("guest thread"), out)
}

/// Runs guest `name` under the reference runtime on a thread of its own.
fn reference(
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> JoinHandle<skiff_wasi_reference::Output> {
    let argv: Vec<String> = std::iter::once(name)
        .chain(args.iter().copied())
        .map(String::from)
        .collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let wasm = wasm(name);
    std::thread::spawn(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        skiff_wasi_reference::run(&wasm, &argv, &env).expect("reference run")
    })
}

/// Asserts Skiff's run matches the reference's: same stdout, stderr and
/// exit code.
fn assert_same(step: &Step, out: &Output, reference: &skiff_wasi_reference::Output) {
    assert_eq!(out.stdout(), reference.stdout, "stdout differs");
    assert_eq!(out.stderr(), reference.stderr, "stderr differs");
    match reference.code {
        Some(code) => assert_eq!(step, &Step::Exited(code), "exit differs"),
        None => assert!(
            matches!(step, Step::Trapped(_)),
            "{step:?} but the reference trapped"
        ),
    }
}

/// A TCP server on loopback answering each of `clients` connections with
/// `echo:` and what the client sent before closing its side.
fn tcp_peer(clients: usize) -> (u16, JoinHandle<()>) {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let serve = std::thread::spawn(move || {
        for _ in 0..clients {
            let (mut c, _) = l.accept().unwrap();
            let mut got = Vec::new();
            c.read_to_end(&mut got).unwrap();
            c.write_all(b"echo:").unwrap();
            c.write_all(&got).unwrap();
        }
    });
    (port, serve)
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn a_client_connects_out_and_reads_the_reply_like_the_reference() {
    let (port, peer) = tcp_peer(2);
    let addr = format!("127.0.0.1:{port}");
    let env = [("ADDR", addr.as_str()), ("MESSAGE", "over the wire")];
    let (step, out) = skiff("tcp-connect", &[], &env);
    let reference = reference("tcp-connect", &[], &env).join().unwrap();
    peer.join().unwrap();
    assert_eq!(
        out.stdout(),
        "connected\nsent 13 bytes\nreceived: echo:over the wire\n"
    );
    assert_same(&step, &out, &reference);
}

#[test]
fn a_connect_to_a_closed_port_is_refused_promptly_like_the_reference() {
    let addr = format!("127.0.0.1:{}", free_port());
    let env = [("ADDR", addr.as_str())];
    let started = Instant::now();
    let (step, out) = skiff("tcp-connect", &[], &env);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        out.stderr().contains("Connection refused"),
        "{}",
        out.stderr()
    );
    let reference = reference("tcp-connect", &[], &env).join().unwrap();
    assert_same(&step, &out, &reference);
}

/// Connects to `port` (retrying while the server starts), sends `message`,
/// closes the sending side and returns the reply.
fn echo_through(port: u16, message: &str) -> String {
    let deadline = Instant::now() + LIMIT;
    let mut c = loop {
        match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("connect to {port}: {e}"),
        }
    };
    c.write_all(message.as_bytes()).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    c.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn a_server_accepts_on_its_container_port_like_the_reference() {
    // The same port number for both: the guest prints it.
    let port = free_port();
    let port_text = port.to_string();
    let env = [("PORT", port_text.as_str()), ("COUNT", "2")];
    let (run, out, map) = start("tcp-echo", &[], &env, &[port], &[], 64 * MIB);
    let real = map.get(port).expect("container port mapped");
    assert_eq!(echo_through(real, "first"), "first");
    assert_eq!(
        echo_through(real, &"x".repeat(100_000)),
        "x".repeat(100_000)
    );
    let step = run.join().unwrap();

    let reference_run = reference("tcp-echo", &[], &env);
    assert_eq!(echo_through(port, "first"), "first");
    assert_eq!(
        echo_through(port, &"x".repeat(100_000)),
        "x".repeat(100_000)
    );
    let reference = reference_run.join().unwrap();
    assert_eq!(
        out.stdout(),
        format!("listening on {port}\nclient 1: echoed 5 bytes\nclient 2: echoed 100000 bytes\n")
    );
    assert_same(&step, &out, &reference);
}

#[test]
fn listening_on_a_port_that_is_not_a_container_port_is_denied() {
    let (run, out, _) = start("tcp-echo", &[], &[("PORT", "7000")], &[7001], &[], 64 * MIB);
    assert_eq!(run.join().unwrap(), Step::Exited(1));
    assert!(
        out.stderr().contains("listen on 7000: Permission denied"),
        "{}",
        out.stderr()
    );
}

#[test]
fn udp_goes_both_ways_like_the_reference() {
    // A client talking to a host echo server.
    let peer = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = format!("127.0.0.1:{}", peer.local_addr().unwrap().port());
    // Answers until the test process ends.
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = peer.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = peer.send_to(&reply, from);
        }
    });
    let env = [("ADDR", addr.as_str()), ("MESSAGE", "datagram")];
    let (step, out) = skiff("udp-echo", &[], &env);
    let reference = reference("udp-echo", &[], &env).join().unwrap();
    assert_eq!(
        out.stdout(),
        "reply: echo:datagram\n",
        "{step:?} {}",
        out.stderr()
    );
    assert_same(&step, &out, &reference);

    // A server on its UDP container port.
    let env = [("PORT", "7001"), ("COUNT", "1")];
    let (run, out, map) = start("udp-echo", &[], &env, &[], &[7001], 64 * MIB);
    let deadline = Instant::now() + LIMIT;
    let real = loop {
        if let Some(p) = map.get(7001) {
            break p;
        }
        assert!(Instant::now() < deadline, "the guest never bound its port");
        std::thread::sleep(Duration::from_millis(10));
    };
    let client = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    client
        .send_to(b"hello udp", (Ipv4Addr::LOCALHOST, real))
        .unwrap();
    let mut buf = [0u8; 64];
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello udp");
    assert_eq!(run.join().unwrap(), Step::Exited(0));
    assert_eq!(out.stdout(), "udp echo on 7001\nechoed 9 bytes\n");
}

#[test]
fn name_lookup_answers_like_the_reference() {
    let names = ["localhost", "10.1.2.3", "no-such-host.invalid"];
    let (step, out) = skiff("name-lookup", &names, &[]);
    let reference = reference("name-lookup", &names, &[]).join().unwrap();
    assert!(
        out.stdout()
            .starts_with("localhost: 127.0.0.1\n10.1.2.3: 10.1.2.3\nno-such-host.invalid: error:"),
        "{}",
        out.stdout()
    );
    assert_same(&step, &out, &reference);
}

#[test]
fn a_pod_opening_sockets_without_bound_hits_its_cap() {
    let (run, out, _) = start("socket-hog", &[], &[], &[], &[], 64 * MIB);
    assert_eq!(run.join().unwrap(), Step::Exited(0));
    assert!(
        out.stdout()
            .starts_with(&format!("opened {MAX_SOCKETS} sockets, then: ")),
        "{}",
        out.stdout()
    );
    // With little memory, the sockets' node-side buffers count first.
    let (run, out, _) = start("socket-hog", &[], &[], &[], &[], 3 * MIB);
    assert_eq!(run.join().unwrap(), Step::Exited(0));
    let text = out.stdout();
    let opened: usize = text
        .strip_prefix("opened ")
        .and_then(|t| t.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!(opened < MAX_SOCKETS, "{text}");
    assert!(text.contains("memory"), "{text}");
}

#[test]
fn a_bad_socket_handle_traps_only_its_guest() {
    // `is-listening` on handle 42, which the guest never got: the canonical
    // ABI's handle check traps the guest (there is no error code to give a
    // borrow that does not exist); the runtime carries on.
    let text = r#"(component
        (import "wasi:sockets/tcp@0.2.12" (instance $tcp
            (export "tcp-socket" (type (sub resource)))
            (export "[method]tcp-socket.is-listening"
                (func (param "self" (borrow 0)) (result bool)))))
        (core func $is_listening (canon lower (func $tcp "[method]tcp-socket.is-listening")))
        (core module $m
            (import "tcp" "is-listening" (func $is_listening (param i32) (result i32)))
            (func (export "run") (result i32)
                (drop (call $is_listening (i32.const 42)))
                (i32.const 0)))
        (core instance $tcp_inst (export "is-listening" (func $is_listening)))
        (core instance $i (instantiate $m (with "tcp" (instance $tcp_inst))))
        (func $run (result (result)) (canon lift (core func $i "run")))
        (instance $run_inst (export "run" (func $run)))
        (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#;
    let component = wat::parse_str(text).expect("component text");
    let artifact =
        skiff_wasm::precompile_for(skiff_wasm::Target::Host, &component).expect("compile");
    let image = runtime().load(&artifact).expect("load");
    let (host, _, _) = RealHost::new(&[], &[]);
    let mut c = runtime()
        .spawn(&image, spec(&["bad-handle"], &[]), host)
        .expect("spawn");
    let end = support::run_to_end(&mut c, LIMIT);
    let Step::Trapped(why) = end else {
        panic!("expected a trap, got {end:?}");
    };
    assert!(why.contains("handle") || why.contains("index"), "{why}");
    // The node's runtime is fine: the next guest runs.
    let (step, out) = skiff("name-lookup", &["10.0.0.1"], &[]);
    assert_eq!(step, Step::Exited(0));
    assert_eq!(out.stdout(), "10.0.0.1: 10.0.0.1\n");
}
