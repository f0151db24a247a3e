//! `cargo xtask bench wasi`: Skiff's WASI preview 2 layer (kernel/wasm)
//! against wasmtime's own (`wasmtime-wasi`, `wasmtime-wasi-http` through
//! `skiff-wasi-reference`), same wasmtime version, peers measured in the
//! same run:
//!
//! 1. Instantiate+run: the hello-p2 component (`SLEEP_MS=0`), compiled
//!    once, instantiated and run to its exit `--runs` times (200) on this
//!    host by `skiff_wasm::Runtime` and by `wasmtime-wasi`; the median.
//! 2. wasi:http: the http-hello pod on one QEMU kernel node, reached through
//!    the node's forwarded port, against the same component served on this
//!    host by `wasmtime-wasi-http` as `wasmtime serve` does. The same
//!    in-process keep-alive HTTP/1.1 client for both: `--conns` connections
//!    (4) for `--secs` seconds (10) after a warm-up; requests/s and p50.
//! 3. Outbound TCP: the tcp-bench guest as a pod on that node, `--rounds`
//!    (1000) round trips of 1 KiB to an echo server in this process (the
//!    node reaches it at 10.0.2.2), against the same guest under
//!    `wasmtime-wasi` on this host over loopback; median of `--tcp-runs` (3).
//!
//! Options: `--out PATH` and the ones above. Any failure ends the program
//! with a message and a non-zero exit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_e2e::bench::{Args, Figure, Latencies, write_report};
use skiff_e2e::plane::Plane;
use skiff_e2e::registry::Registry;
use skiff_e2e::*;

/// Every client connect, read and write gives up after this.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
const HTTP_PORT: u16 = 8080;
const WASMTIME: &str = "wasmtime 48.0.8";

fn main() {
    let args = Args::parse("target/bench/wasi.json");
    // Errors return here, so the node, plane and registry are dropped
    // (QEMU killed) before the exit.
    if let Err(e) = run(&args) {
        eprintln!("bench-wasi: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), String> {
    let runs: usize = args.get("runs", 200);
    let conns: usize = args.get("conns", 4);
    let secs: f64 = args.get("secs", 10.0);
    let rounds: usize = args.get("rounds", 1000);
    let tcp_runs: usize = args.get("tcp-runs", 3);
    if runs == 0 || conns == 0 || rounds == 0 || tcp_runs == 0 || secs <= 0.0 {
        return Err("--runs, --conns, --secs, --rounds and --tcp-runs must be positive".into());
    }
    require_qemu();
    let mut figures = Vec::new();
    let mut notes = Vec::new();

    figures.push(instantiate(runs)?);
    notes.push(format!(
        "instantiate_run_us: hello-p2 (SLEEP_MS=0: prints 8 lines, reads both clocks and random, exits 0), median of {runs} (ours and the peer alternating) after 10 warm-ups each; \
         ours: skiff_wasm::Runtime on this host (the node's engine config for the host target, precompiled artifact, Image loaded once), timing spawn (store) + instantiate + wasi:cli/run to exit; \
         peer: wasmtime-wasi through skiff-wasi-reference's Prepared (default wasmtime Config, Component and CommandPre made once), timing WasiCtx + store + instantiate + run"
    ));

    let reg = Registry::start();
    let plane = Plane::for_wasm_nodes(&reg);
    reg.push_wasm("bench/http-hello:1.0", &guests::path("http-hello"));
    reg.push_wasm("bench/tcp-bench:1.0", &guests::path("tcp-bench"));
    let (spec, http_port) = plane
        .node_spec("wasi-bench", &plane.token)
        .memory_mib(256)
        .user_net_forwarding(HTTP_PORT)
        .map_err(|e| format!("forwarding a port: {e}"))?;
    let b = try_boot(spec)?;
    let log = || b.node.log_text();
    plane.wait_wasm_node("wasi-bench", log);
    let accel = accel();

    let duration = Duration::from_secs_f64(secs);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    figures.extend(http(&plane, &reg.host(), http_port, conns, duration, &log)?);
    notes.push(format!(
        "http_*: GET /hello?name=bench on http-hello (wasi:http/incoming-handler, a fresh instance per request on both sides), {conns} keep-alive HTTP/1.1 connections for {secs} s after a 1 s warm-up, \
         latency from the request's write to the body's last byte, requests/s over the run's wall time; \
         ours: the pod on one microvm kernel node ({accel:?}, 1 vCPU, 256 MiB) through QEMU user networking's host forward; \
         peer: the same component served on this host's loopback by wasmtime-wasi-http with hyper (as `wasmtime serve`: ProxyPre, a store per request, a multi-threaded tokio runtime using all {cpus} host CPUs)"
    ));
    if accel == Accel::Tcg {
        notes.push(
            "the node figures (http_*, tcp_round_trips_per_s) run under TCG, which emulates the guest CPU in software: their ratios measure the whole emulated node path against native host code, not the WASI layers alone".into(),
        );
    }

    let echo = echo_server().map_err(|e| format!("echo server: {e}"))?;
    figures.push(tcp(&plane, &reg.host(), echo, rounds, tcp_runs, &log)?);
    notes.push(format!(
        "tcp_round_trips_per_s: tcp-bench ({rounds} round trips of 1 KiB request + 1 KiB echo over one std::net::TcpStream, timed by the guest's own monotonic clock, connect excluded), median of {tcp_runs} runs; \
         ours: a pod on the kernel node ({accel:?}) to an echo server in this process at the slirp gateway 10.0.2.2, i.e. through the guest's smoltcp + virtio-net + QEMU user networking + host loopback; \
         peer: the same guest under wasmtime-wasi on this host to the same server over loopback (Linux sockets directly). \
         The closest fair peer runnable here: there is no Linux guest image to run wasmtime inside the same QEMU, so the peer has no VM or slirp on its path"
    ));

    b.shutdown();
    write_report(&args.out, "wasi", &figures, &notes);
    Ok(())
}

/// The host side of a container in this process: clocks, entropy, output.
struct BenchHost {
    epoch: Instant,
    seed: u64,
    out: Arc<Mutex<Vec<u8>>>,
}

impl skiff_wasm::Host for BenchHost {
    fn realtime_ns(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    // A cheap generator, not a syscall per call: wasmtime-wasi draws from a
    // seeded user-space generator too. Not for secrets; nothing here is.
    fn random(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            *b = self.seed as u8;
        }
    }
    fn log(&mut self, _stream: skiff_wasm::Stream, bytes: &[u8]) {
        self.out.lock().unwrap().extend_from_slice(bytes);
    }
}

/// Median instantiate+run time of hello-p2 under skiff-wasm and under
/// wasmtime-wasi, both compiled once.
fn instantiate(runs: usize) -> Result<Figure, String> {
    let wasm = std::fs::read(guests::path("hello-p2")).map_err(|e| format!("hello-p2: {e}"))?;
    let args = ["hello-p2"];
    let env = [("SLEEP_MS", "0"), ("GREETING", "bench")];

    let artifact = skiff_wasm::precompile_for(skiff_wasm::Target::Host, &wasm)
        .map_err(|e| format!("precompiling hello-p2: {e}"))?;
    let rt = skiff_wasm::Runtime::new(&skiff_wasm::engine_config(skiff_wasm::Target::Host))
        .map_err(|e| format!("runtime: {e}"))?;
    let image = rt.load(&artifact).map_err(|e| format!("load: {e}"))?;
    let ours_once = || -> Result<Duration, String> {
        let out = Arc::new(Mutex::new(Vec::new()));
        let host = BenchHost {
            epoch: Instant::now(),
            seed: 0x9e37_79b9_7f4a_7c15,
            out: out.clone(),
        };
        let spec = skiff_wasm::ContainerSpec {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            memory_limit: 64 << 20,
            ..Default::default()
        };
        let t = Instant::now();
        let mut c = rt
            .spawn(&image, spec, Box::new(host))
            .map_err(|e| format!("spawn: {e}"))?;
        // No epoch ticker: a step runs until the guest ends or blocks (the
        // zero sleep may report Blocked once; it is due at once).
        let step = loop {
            let step = c.step(u64::MAX);
            if step.is_finished() {
                break step;
            }
        };
        let took = t.elapsed();
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        if step != skiff_wasm::Step::Exited(0) || !text.contains("exiting with 0") {
            return Err(format!("hello-p2 under skiff-wasm: {step:?}\n{text}"));
        }
        Ok(took)
    };

    let prepared = skiff_wasi_reference::Prepared::new(&wasm)
        .map_err(|e| format!("hello-p2 under wasmtime-wasi: {e}"))?;
    let peer_once = || -> Result<Duration, String> {
        let t = Instant::now();
        let out = prepared
            .run(&args, &env)
            .map_err(|e| format!("hello-p2 under wasmtime-wasi: {e}"))?;
        let took = t.elapsed();
        if out.code != Some(0) || !out.stdout.contains("exiting with 0") {
            return Err(format!("hello-p2 under wasmtime-wasi: {out:?}"));
        }
        Ok(took)
    };

    // Alternating, so a change in the machine's load hits both sides alike.
    for _ in 0..10 {
        ours_once()?;
        peer_once()?;
    }
    let (mut ours, mut peer) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        ours.push(ours_once()?.as_secs_f64() * 1e6);
        peer.push(peer_once()?.as_secs_f64() * 1e6);
    }
    let (ours, peer) = (median(&ours), median(&peer));
    eprintln!("instantiate+run: skiff-wasm {ours:.1} µs, wasmtime-wasi {peer:.1} µs");
    Ok(Figure::new("instantiate_run_us", "µs", ours, "lower")
        .peer(format!("{WASMTIME} + wasmtime-wasi on the host"), peer))
}

/// The http-hello pod against the component under wasmtime-wasi-http.
fn http(
    plane: &Plane,
    registry: &str,
    http_port: u16,
    conns: usize,
    duration: Duration,
    log: &dyn Fn() -> String,
) -> Result<Vec<Figure>, String> {
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: http-hello, namespace: default}}
spec:
  containers:
  - name: http-hello
    image: {registry}/bench/http-hello:1.0
    ports: [{{containerPort: {HTTP_PORT}}}]
"#
    ));
    plane.eventually("the HTTP handler pod to answer", 120, log, || {
        http_get(http_port, "/hello?name=bench").is_ok_and(|a| a.contains("200 OK"))
    });
    let node_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, http_port));
    load(node_addr, 1, Duration::from_secs(1)).map_err(|e| format!("node warm-up: {e}"))?;
    let ours = load(node_addr, conns, duration).map_err(|e| format!("node: {e}\n{}", log()))?;

    let wasm = std::fs::read(guests::path("http-hello")).map_err(|e| format!("http-hello: {e}"))?;
    let server = skiff_wasi_reference::serve(&wasm, (Ipv4Addr::LOCALHOST, 0).into())
        .map_err(|e| format!("wasmtime-wasi-http: {e}"))?;
    load(server.addr(), 1, Duration::from_secs(1))
        .map_err(|e| format!("wasmtime-wasi-http warm-up: {e}"))?;
    let peer =
        load(server.addr(), conns, duration).map_err(|e| format!("wasmtime-wasi-http: {e}"))?;
    drop(server);

    eprintln!(
        "http: node {:.1} req/s p50 {:.2} ms ({} requests); wasmtime-wasi-http {:.1} req/s p50 {:.3} ms ({} requests)",
        ours.ops(),
        ours.pct(0.5),
        ours.lat.len(),
        peer.ops(),
        peer.pct(0.5),
        peer.lat.len()
    );
    let name = format!("{WASMTIME} + wasmtime-wasi-http (hyper) on the host");
    Ok(vec![
        Figure::new("http_requests_per_s", "requests/s", ours.ops(), "higher")
            .peer(name.clone(), peer.ops()),
        Figure::new("http_p50_ms", "ms", ours.pct(0.5), "lower").peer(name, peer.pct(0.5)),
    ])
}

/// `conns` keep-alive connections sending `GET /hello?name=bench` one after
/// another until `duration` has passed.
fn load(addr: SocketAddr, conns: usize, duration: Duration) -> Result<Latencies, String> {
    let start = Instant::now();
    let deadline = start + duration;
    let threads: Vec<_> = (0..conns)
        .map(|_| std::thread::spawn(move || client(addr, deadline)))
        .collect();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| "a client thread panicked")??);
    }
    Ok(Latencies {
        lat,
        wall: start.elapsed(),
    })
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| s.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| s.set_nodelay(true))
        .map_err(|e| format!("socket options: {e}"))?;
    Ok(s)
}

/// One connection's requests until `deadline`, reconnecting only if the
/// server closes; each request's latency.
fn client(addr: SocketAddr, deadline: Instant) -> Result<Vec<Duration>, String> {
    const REQUEST: &[u8] = b"GET /hello?name=bench HTTP/1.1\r\nHost: bench\r\n\r\n";
    let mut lat = Vec::new();
    let mut conn: Option<BufReader<TcpStream>> = None;
    while Instant::now() < deadline {
        let r = match &mut conn {
            Some(r) => r,
            None => conn.insert(BufReader::new(connect(addr)?)),
        };
        let t = Instant::now();
        r.get_mut()
            .write_all(REQUEST)
            .map_err(|e| format!("request {}: write: {e}", lat.len()))?;
        let keep = read_response(r).map_err(|e| format!("request {}: {e}", lat.len()))?;
        lat.push(t.elapsed());
        if !keep {
            conn = None;
        }
    }
    Ok(lat)
}

/// Reads one `200` response with a `content-length` body; whether the
/// connection stays open.
fn read_response(r: &mut BufReader<TcpStream>) -> Result<bool, String> {
    let mut line = String::new();
    let mut status = String::new();
    let mut length = None;
    let mut keep = true;
    loop {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) => return Err("connection closed before the response head".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("reading the head: {e}")),
        }
        let l = line.trim_end();
        if status.is_empty() {
            status = l.to_string();
            continue;
        }
        if l.is_empty() {
            break;
        }
        let Some((k, v)) = l.split_once(':') else {
            return Err(format!("bad header line {l:?}"));
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(v.parse::<usize>().map_err(|_| format!("{l:?}"))?);
        } else if k.eq_ignore_ascii_case("connection") && v.eq_ignore_ascii_case("close") {
            keep = false;
        }
    }
    if !status.starts_with("HTTP/1.1 200 ") {
        return Err(format!("status {status:?}"));
    }
    let length = length.ok_or("no content-length in the response")?;
    let mut body = vec![0u8; length];
    r.read_exact(&mut body)
        .map_err(|e| format!("reading the body: {e}"))?;
    if !body.starts_with(b"hello bench") {
        return Err(format!("body {:?}", String::from_utf8_lossy(&body)));
    }
    Ok(keep)
}

/// An echo server on host loopback (the node reaches it at 10.0.2.2):
/// every connection gets back what it sends, until this process ends.
fn echo_server() -> std::io::Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = l.local_addr()?.port();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = conn;
                let _ = w.set_nodelay(true);
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = w.read(&mut buf) {
                    if n == 0 || w.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(port)
}

/// tcp-bench as pods on the node against the same guest under
/// wasmtime-wasi on the host, both to the echo server on `echo_port`.
fn tcp(
    plane: &Plane,
    registry: &str,
    echo_port: u16,
    rounds: usize,
    runs: usize,
    log: &dyn Fn() -> String,
) -> Result<Figure, String> {
    let mut ours = Vec::new();
    for i in 0..runs {
        let pod = format!("tcp-bench-{i}");
        plane.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: tcp-bench
    image: {registry}/bench/tcp-bench:1.0
    env: [{{name: ADDR, value: "{}:{echo_port}"}}, {{name: ROUNDS, value: "{rounds}"}}]
"#,
            plane::SLIRP_HOST
        ));
        let mut phase = String::new();
        plane.eventually(&format!("pod {pod} to finish"), 120, log, || {
            let out = plane.kubectl(&["get", "pod", &pod, "-o", "jsonpath={.status.phase}"]);
            phase = String::from_utf8_lossy(&out.stdout).into_owned();
            phase == "Succeeded" || phase == "Failed"
        });
        let logs = String::from_utf8_lossy(&plane.kubectl(&["logs", &pod]).stdout).into_owned();
        if phase != "Succeeded" {
            return Err(format!("pod {pod} {phase}:\n{logs}"));
        }
        let rate = guests::tcp_bench_round_trips(&logs)
            .ok_or_else(|| format!("no result in {pod}'s log:\n{logs}"))?;
        eprintln!(
            "tcp: node run {i}: {rate:.1} round trips/s ({})",
            logs.trim()
        );
        ours.push(rate);
    }

    let wasm = std::fs::read(guests::path("tcp-bench")).map_err(|e| format!("tcp-bench: {e}"))?;
    let prepared = skiff_wasi_reference::Prepared::new(&wasm)
        .map_err(|e| format!("tcp-bench under wasmtime-wasi: {e}"))?;
    let addr = format!("127.0.0.1:{echo_port}");
    let rounds = rounds.to_string();
    let mut peer = Vec::new();
    for i in 0..runs {
        let out = prepared
            .run(&["tcp-bench"], &[("ADDR", &addr), ("ROUNDS", &rounds)])
            .map_err(|e| format!("tcp-bench under wasmtime-wasi: {e}"))?;
        let rate = guests::tcp_bench_round_trips(&out.stdout)
            .filter(|_| out.code == Some(0))
            .ok_or_else(|| format!("tcp-bench under wasmtime-wasi: {out:?}"))?;
        eprintln!("tcp: wasmtime-wasi run {i}: {rate:.1} round trips/s");
        peer.push(rate);
    }
    Ok(Figure::new(
        "tcp_round_trips_per_s",
        "round trips/s",
        median(&ours),
        "higher",
    )
    .peer(
        format!("{WASMTIME} + wasmtime-wasi on the host, loopback"),
        median(&peer),
    ))
}
