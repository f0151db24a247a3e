//! The node's wasm runtime through the kubelet's `Runtime` trait: real guests
//! (tests/wasm, precompiled for the host by skiff-wasm's test support) with a
//! fake node host whose output lands in the runtime's log sink.

#[path = "../../wasm/tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_kubelet::{
    ContainerId, LogOptions, LogSource, MILLI, Nanos, Runtime, RuntimeState, StartError, StartSpec,
};
use skiff_node_agent::artifacts::{ArtifactStore, sha256_digest};
use skiff_node_agent::testrt::TestRuntime;
use skiff_node_agent::wasmrt::{
    EXIT_KILLED, EXIT_TERMINATED, EXIT_TRAP, HostSpec, LogSink, NodeHost, NodeRuntime, WasmRuntime,
};
use skiff_node_proto::{Container, ContainerPort, ImagePull, ImageRef, PodSpec, Protocol};
use skiff_wasm::{ConnId, Host, NetError, Shutdown, Stream};
use support::{FakeHost, Net, artifact, runtime};

/// A fake host: the test-support host for sockets and entropy, the node's
/// clock, output into the runtime's sink.
struct TestHost {
    inner: Box<FakeHost>,
    sink: LogSink,
    epoch: Instant,
}

impl Host for TestHost {
    fn realtime_ns(&mut self) -> u64 {
        self.inner.realtime_ns()
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    fn random(&mut self, buf: &mut [u8]) {
        self.inner.random(buf)
    }
    fn log(&mut self, _: Stream, bytes: &[u8]) {
        self.sink.write(bytes)
    }
    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, NetError> {
        self.inner.accept(port)
    }
    fn acceptable(&mut self, port: u16) -> bool {
        self.inner.acceptable(port)
    }
    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        self.inner.recv(conn, buf)
    }
    fn readable(&mut self, conn: ConnId) -> bool {
        self.inner.readable(conn)
    }
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, NetError> {
        self.inner.send(conn, data)
    }
    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), NetError> {
        self.inner.shutdown(conn, how)
    }
    fn close(&mut self, conn: ConnId) {
        self.inner.close(conn)
    }
}

#[derive(Clone)]
struct Node {
    epoch: Instant,
    /// The network of the last host made (for the echo test).
    nets: Arc<Mutex<Vec<Arc<Mutex<Net>>>>>,
    /// The pod address each host was made with, in order.
    pod_ips: Arc<Mutex<Vec<Option<std::net::Ipv4Addr>>>>,
    memory: usize,
}

impl NodeHost for Node {
    type Host = TestHost;
    fn host(&mut self, spec: &HostSpec<'_>, log: LogSink) -> Result<TestHost, String> {
        let (inner, _, net) = FakeHost::new(spec.ports);
        self.nets.lock().unwrap().push(net);
        self.pod_ips.lock().unwrap().push(spec.pod_ip);
        Ok(TestHost {
            inner,
            sink: log,
            epoch: self.epoch,
        })
    }
    fn now(&self) -> Nanos {
        self.epoch.elapsed().as_nanos() as u64
    }
    fn memory_available(&self) -> usize {
        self.memory
    }
}

fn node() -> Node {
    Node {
        epoch: Instant::now(),
        nets: Arc::default(),
        pod_ips: Arc::default(),
        memory: 256 << 20,
    }
}

fn wasm_rt(store: &ArtifactStore) -> WasmRuntime<Node> {
    WasmRuntime::new(
        || Ok(runtime()),
        node(),
        store.clone(),
        1_700_000_000_000,
        None,
    )
}

/// A store holding guest `name`'s artifact; returns its digest and size.
fn stored(store: &ArtifactStore, name: &str) -> ImagePull {
    let bytes = artifact(name);
    let digest = sha256_digest(&bytes);
    deliver(store, &digest, &bytes);
    ready(&digest, bytes.len())
}

/// What the agent does when the plane answers a fetch: the whole artifact in
/// one chunk.
fn deliver(store: &ArtifactStore, digest: &str, bytes: &[u8]) {
    store.want(digest, bytes.len() as u64);
    store.on_chunk(digest, 0, bytes.len() as u64, bytes, None);
}

fn ready(digest: &str, size: usize) -> ImagePull {
    ImagePull::Ready {
        artifact_digest: digest.into(),
        artifact_size: size as u64,
        image_id: format!("registry.local/x@{digest}"),
    }
}

fn pod(uid: &str, containers: Vec<Container>) -> PodSpec {
    let mut p = skiff_node_proto::sample::pod(uid, uid);
    p.containers = containers;
    p.volumes.clear();
    p
}

fn container(name: &str, pull: ImagePull, args: &[&str]) -> Container {
    let mut c = skiff_node_proto::sample::pod("x", "x").containers.remove(0);
    c.name = name.into();
    c.image = ImageRef {
        reference: format!("registry.local/{name}:1"),
        pull,
    };
    c.command = vec![];
    c.args = args.iter().map(|s| s.to_string()).collect();
    c.env.clear();
    c.env_from.clear();
    c.ports.clear();
    c.volume_mounts.clear();
    c.resources = Default::default();
    c
}

fn start<R: Runtime>(
    rt: &mut R,
    pod: &PodSpec,
    env: &[(&str, &str)],
) -> Result<ContainerId, StartError> {
    rt.start(&StartSpec {
        pod,
        container: &pod.containers[0],
        init: false,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        attempt: 0,
        volumes: vec![],
    })
}

fn log_text<S: LogSource>(rt: &S, id: ContainerId) -> String {
    let buf = rt.log_buffer(id).expect("log buffer");
    let mut cur = buf.reader(&LogOptions::default());
    let (bytes, _) = buf.read(&mut cur, 1 << 20);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Runs until `id` exits (or `limit` passes).
fn run_until_exit(rt: &mut WasmRuntime<Node>, id: ContainerId, limit: Duration) -> RuntimeState {
    let deadline = Instant::now() + limit;
    loop {
        let r = rt.run(10 * MILLI);
        let st = rt.state(id);
        if let RuntimeState::Exited { .. } = st {
            return st;
        }
        assert!(Instant::now() < deadline, "still {st:?} after {limit:?}");
        if !r.runnable {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn hello_runs_and_its_output_lands_in_the_log() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = wasm_rt(&store);
    let p = pod(
        "p1",
        vec![container("hello", stored(&store, "hello"), &["5"])],
    );
    let id = start(&mut rt, &p, &[]).unwrap();
    assert_eq!(rt.state(id), RuntimeState::Running);
    let st = run_until_exit(&mut rt, id, Duration::from_secs(20));
    assert_eq!(
        st,
        RuntimeState::Exited {
            exit_code: 5,
            oom_killed: false
        }
    );
    let log = log_text(&rt, id);
    assert!(log.contains("hello from a Skiff pod\n"), "{log}");
    // argv = [container name] + args.
    assert!(log.contains("args: 2\n"), "{log}");
    assert!(log.contains("this line goes to stderr\n"), "{log}");
    assert!(log.contains("exiting with 5\n"), "{log}");
    assert!(rt.log_buffer(id).unwrap().is_closed());
    // Env comes from the StartSpec.
    let p = pod("p2", vec![container("hello", stored(&store, "hello"), &[])]);
    let id = start(&mut rt, &p, &[("EXIT_CODE", "3")]).unwrap();
    let st = run_until_exit(&mut rt, id, Duration::from_secs(20));
    assert!(
        matches!(st, RuntimeState::Exited { exit_code: 3, .. }),
        "{st:?}"
    );
    rt.remove(id);
    assert_eq!(rt.state(id), RuntimeState::Unknown);
}

#[test]
fn pods_get_their_own_address_once_the_node_has_a_pod_cidr() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = WasmRuntime::new(
        || Ok(runtime()),
        node(),
        store.clone(),
        1_700_000_000_000,
        Some("10.0.2.15".into()),
    );
    let hello = stored(&store, "hello");
    let p = |uid: &str| pod(uid, vec![container("hello", hello.clone(), &[])]);
    // No pod CIDR yet: pods share the node's address.
    assert_eq!(rt.pod_ip("a").as_deref(), Some("10.0.2.15"));
    let a0 = start(&mut rt, &p("a"), &[]).unwrap();
    rt.update_pod_cidrs(&["10.244.7.0/24".into()]);
    assert_eq!(rt.pod_ip("b").as_deref(), Some("10.244.7.2"));
    let b0 = start(&mut rt, &p("b"), &[]).unwrap();
    // A restart of b keeps its address; c gets the next one.
    let b1 = start(&mut rt, &p("b"), &[]).unwrap();
    let c0 = start(&mut rt, &p("c"), &[]).unwrap();
    let made = rt.node().pod_ips.lock().unwrap().clone();
    let ip = |s: &str| Some(s.parse().unwrap());
    assert_eq!(
        made,
        [None, ip("10.244.7.2"), ip("10.244.7.2"), ip("10.244.7.3")]
    );
    assert_eq!(rt.pod_ip("c").as_deref(), Some("10.244.7.3"));
    // b is gone: its address is free again, after the others were tried.
    for id in [a0, b0, b1, c0] {
        rt.kill(id);
        rt.remove(id);
    }
    rt.release_pod("b");
    assert_eq!(rt.pod_ip("d").as_deref(), Some("10.244.7.4"));
    assert_eq!(
        rt.pod_ip("c").as_deref(),
        Some("10.244.7.3"),
        "c keeps its own"
    );
}

#[test]
fn a_trap_exits_134_and_says_why_in_the_log() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = wasm_rt(&store);
    let p = pod("t", vec![container("trap", stored(&store, "trap"), &[])]);
    let id = start(&mut rt, &p, &[]).unwrap();
    let st = run_until_exit(&mut rt, id, Duration::from_secs(20));
    assert_eq!(
        st,
        RuntimeState::Exited {
            exit_code: EXIT_TRAP,
            oom_killed: false
        }
    );
    let log = log_text(&rt, id);
    assert!(log.contains("about to trap"), "{log}");
    assert!(log.contains("wasm trap:"), "{log}");
    assert!(log.contains("unreachable"), "{log}");
}

#[test]
fn memory_over_the_limit_is_oom_killed() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = wasm_rt(&store);
    let mut c = container("oom", stored(&store, "oom"), &[]);
    c.resources.limits.memory_bytes = Some(8 << 20);
    let p = pod("o", vec![c]);
    let id = start(&mut rt, &p, &[]).unwrap();
    let st = run_until_exit(&mut rt, id, Duration::from_secs(30));
    assert_eq!(
        st,
        RuntimeState::Exited {
            exit_code: EXIT_KILLED,
            oom_killed: true
        }
    );
    let log = log_text(&rt, id);
    assert!(log.contains("allocated 5 MiB"), "{log}");
    assert!(!log.contains("allocated 9 MiB"), "{log}");

    // The node's own cap applies when the pod asks for more than it has.
    let mut small = wasm_rt(&store);
    small.node_mut().memory = 4 << 20;
    let mut c = container("oom", stored(&store, "oom"), &[]);
    c.resources.limits.memory_bytes = Some(1 << 30);
    let p = pod("o2", vec![c]);
    let id = start(&mut small, &p, &[]).unwrap();
    let st = run_until_exit(&mut small, id, Duration::from_secs(30));
    assert!(matches!(
        st,
        RuntimeState::Exited {
            oom_killed: true,
            ..
        }
    ));
    assert!(!log_text(&small, id).contains("allocated 4 MiB"));
}

#[test]
fn cpu_limits_share_the_cpu_and_nobody_starves() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = wasm_rt(&store);
    let burner = stored(&store, "cpu-burner");
    let mut slow = container("slow", burner.clone(), &[]);
    slow.resources.limits.cpu_millis = Some(100);
    let mut fast = container("fast", burner, &[]);
    fast.resources.limits.cpu_millis = Some(1000);
    let (ps, pf) = (pod("slow", vec![slow]), pod("fast", vec![fast]));
    let slow = start(&mut rt, &ps, &[]).unwrap();
    let fast = start(&mut rt, &pf, &[]).unwrap();
    // A sleeper that must wake on time despite two busy loops.
    let ph = pod(
        "sleeper",
        vec![container("hello", stored(&store, "hello"), &[])],
    );
    let sleeper = start(&mut rt, &ph, &[("SLEEP_MS", "300")]).unwrap();
    let t0 = Instant::now();
    let mut sleeper_done = None;
    while t0.elapsed() < Duration::from_millis(1500) {
        rt.run(10 * MILLI);
        if sleeper_done.is_none()
            && let RuntimeState::Exited { exit_code, .. } = rt.state(sleeper)
        {
            assert_eq!(exit_code, 0);
            sleeper_done = Some(t0.elapsed());
        }
    }
    let woke = sleeper_done.expect("the sleeper finished");
    assert!(woke < Duration::from_millis(800), "sleeper took {woke:?}");
    let (s, f) = (rt.cpu_time(slow).unwrap(), rt.cpu_time(fast).unwrap());
    let total = (s + f) as f64;
    let share = s as f64 / total;
    eprintln!(
        "slow {} ms, fast {} ms, share {share:.3}",
        s / MILLI,
        f / MILLI
    );
    assert!(share <= 0.15, "100m container got {share:.3} of the CPU");
    assert!(share >= 0.03, "100m container starved: {share:.3}");
    assert!(f > 5 * s, "1000m container got {f} ns vs {s} ns");
    // Usage reports read the same CPU time, and the memory charged to the
    // limit (the guest's linear memory: at least one 64 KiB page).
    let u = rt.usage(slow).expect("a running instance is measured");
    assert_eq!(u.cpu_ns, s);
    assert!(u.memory_bytes >= 64 << 10, "{u:?}");
    assert!(u.memory_bytes <= 64 << 20, "{u:?}");
    rt.stop(slow);
    assert_eq!(
        rt.usage(slow).unwrap().memory_bytes,
        0,
        "an ended instance holds nothing"
    );
    rt.kill(fast);
    assert_eq!(
        rt.state(slow),
        RuntimeState::Exited {
            exit_code: EXIT_TERMINATED,
            oom_killed: false
        }
    );
    assert_eq!(
        rt.state(fast),
        RuntimeState::Exited {
            exit_code: EXIT_KILLED,
            oom_killed: false
        }
    );
    assert!(!rt.run(10 * MILLI).runnable);
}

#[test]
fn an_echo_server_blocks_on_accept_and_wakes_on_io() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = wasm_rt(&store);
    let mut c = container("echo", stored(&store, "echo-server"), &[]);
    c.ports = vec![ContainerPort {
        name: None,
        container_port: 8080,
        protocol: Protocol::Tcp,
    }];
    let p = pod("e", vec![c]);
    let id = start(
        &mut rt,
        &p,
        &[("POD_NAME", "echo-pod"), ("MAX_REQUESTS", "1")],
    )
    .unwrap();
    // Runs until it blocks in accept: nothing runnable, no deadline.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = rt.run(10 * MILLI);
        if !r.runnable && r.next_deadline.is_none() {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    assert!(log_text(&rt, id).contains("listening on fd 3"));
    let net = rt.node().nets.lock().unwrap().last().unwrap().clone();
    let conn = net
        .lock()
        .unwrap()
        .connect(8080, b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    rt.wake_io();
    let st = run_until_exit(&mut rt, id, Duration::from_secs(20));
    assert!(
        matches!(st, RuntimeState::Exited { exit_code: 0, .. }),
        "{st:?}"
    );
    let out = String::from_utf8_lossy(&net.lock().unwrap().conns[&conn].outbound).into_owned();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("echo-pod"), "{out}");
}

/// A keep-alive connection of an HTTP pod waits for its next request with
/// an idle deadline: I/O must wake it before that deadline.
#[test]
fn a_keep_alive_http_handler_wakes_on_io_before_its_idle_deadline() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = wasm_rt(&store);
    let mut c = container("http", stored(&store, "http-hello"), &[]);
    c.ports = vec![ContainerPort {
        name: None,
        container_port: 8080,
        protocol: Protocol::Tcp,
    }];
    let p = pod("h", vec![c]);
    start(&mut rt, &p, &[]).unwrap();
    let net = rt.node().nets.lock().unwrap().last().unwrap().clone();
    let conn = net.lock().unwrap().open(8080);
    let request = b"GET /hello?name=a HTTP/1.1\r\nHost: a\r\n\r\n";
    // Each request on the one connection is answered promptly: the server
    // waits for bytes and for its 30 s idle deadline at once, and bytes
    // must end the wait.
    for round in 1..=2 {
        net.lock().unwrap().send(conn, request);
        rt.wake_io();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            rt.run(10 * MILLI);
            let out = net.lock().unwrap().conns[&conn].outbound.clone();
            let answers = String::from_utf8_lossy(&out)
                .matches("HTTP/1.1 200")
                .count();
            if answers == round {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "request {round} unanswered: {}",
                String::from_utf8_lossy(&out)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

#[test]
fn fetching_then_running_and_bad_artifacts_fail_the_start() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = wasm_rt(&store);
    let bytes = artifact("hello");
    let digest = sha256_digest(&bytes);
    let p = pod(
        "f",
        vec![container("hello", ready(&digest, bytes.len()), &[])],
    );
    let id = start(&mut rt, &p, &[]).unwrap();
    assert_eq!(rt.state(id), RuntimeState::Creating);
    assert!(!rt.run(10 * MILLI).runnable);
    assert_eq!(rt.state(id), RuntimeState::Creating);
    // The agent completes the download.
    deliver(&store, &digest, &bytes);
    assert_eq!(rt.state(id), RuntimeState::Running);
    let st = run_until_exit(&mut rt, id, Duration::from_secs(20));
    assert!(matches!(st, RuntimeState::Exited { exit_code: 0, .. }));

    // A malformed digest is refused at once: the kubelet's StartError.
    let p = pod("b", vec![container("hello", ready("sha256:zz", 10), &[])]);
    let err = start(&mut rt, &p, &[]).unwrap_err();
    assert!(matches!(err, StartError::BadArtifact(_)), "{err:?}");
    assert!(err.detail().contains("sha256"), "{err}");
    // Bytes that are no artifact fail at load.
    let junk = b"not an artifact".to_vec();
    let jd = sha256_digest(&junk);
    deliver(&store, &jd, &junk);
    let p = pod("j", vec![container("junk", ready(&jd, junk.len()), &[])]);
    let err = start(&mut rt, &p, &[]).unwrap_err();
    assert!(matches!(err, StartError::BadArtifact(_)), "{err:?}");
    assert!(err.detail().contains("cannot load artifact"), "{err}");
    // A download whose bytes do not match the digest ends the waiting
    // instance as a failed start, saying why.
    let other = artifact("trap");
    let p = pod(
        "m",
        vec![container(
            "hello",
            ready(&digest_of_hello_v2(), other.len()),
            &[],
        )],
    );
    let id = start(&mut rt, &p, &[]).unwrap();
    assert_eq!(rt.state(id), RuntimeState::Creating);
    store.on_chunk(&digest_of_hello_v2(), 0, other.len() as u64, &other, None);
    assert_eq!(
        rt.state(id),
        RuntimeState::Exited {
            exit_code: 128,
            oom_killed: false
        }
    );
    assert!(log_text(&rt, id).contains("digest mismatch"));
    // Unresolved non-test images are the plane's job.
    let p = pod("u", vec![container("u", ImagePull::Unresolved, &[])]);
    let err = start(&mut rt, &p, &[]).unwrap_err();
    assert!(matches!(err, StartError::ImageNotFound(_)), "{err:?}");
}

#[test]
fn the_node_runtime_dispatches_testrt_and_wasm() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = NodeRuntime::new(wasm_rt(&store), TestRuntime::new(0, None));
    let mut t = container("t", ImagePull::Unresolved, &["echo from testrt", "exit 4"]);
    t.image.reference = "skiff.dev/testrt:latest".into();
    let pt = pod("t", vec![t]);
    let tid = start(&mut rt, &pt, &[]).unwrap();
    let pw = pod(
        "w",
        vec![container("hello", stored(&store, "hello"), &["6"])],
    );
    let wid = start(&mut rt, &pw, &[]).unwrap();
    assert_ne!(tid, wid);
    assert_eq!(
        rt.state(tid),
        RuntimeState::Exited {
            exit_code: 4,
            oom_killed: false
        }
    );
    assert!(log_text(&rt, tid).contains("from testrt"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !matches!(rt.state(wid), RuntimeState::Exited { .. }) {
        rt.wasm.run(10 * MILLI);
        assert!(Instant::now() < deadline);
    }
    assert!(matches!(
        rt.state(wid),
        RuntimeState::Exited { exit_code: 6, .. }
    ));
    assert!(log_text(&rt, wid).contains("hello from a Skiff pod"));
    rt.remove(tid);
    rt.remove(wid);
    assert_eq!(rt.state(tid), RuntimeState::Unknown);
}

/// A well-formed digest no artifact here has.
fn digest_of_hello_v2() -> String {
    format!("sha256:{}", "ab".repeat(32))
}

#[test]
fn a_node_without_a_wasm_engine_says_so_when_a_container_starts() {
    let store = ArtifactStore::new(64 << 20);
    let mut rt = WasmRuntime::new(
        || Err(skiff_wasm::Error::Engine("no engine here".into())),
        node(),
        store.clone(),
        1_700_000_000_000,
        None,
    );
    let bytes = artifact("hello");
    let digest = sha256_digest(&bytes);
    deliver(&store, &digest, &bytes);
    let p = pod(
        "e",
        vec![container("hello", ready(&digest, bytes.len()), &[])],
    );
    let err = start(&mut rt, &p, &[]).unwrap_err();
    assert!(matches!(err, StartError::Other(_)), "{err:?}");
    assert!(
        err.detail().contains("the node has no wasm runtime: ")
            && err.detail().contains("no engine here"),
        "{err}"
    );
}
