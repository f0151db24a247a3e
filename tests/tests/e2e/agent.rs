//! The node agent (`skiff-node-agent`, the code the kernel runs) against the
//! real API server and node gateway, on the host: TLS bootstrap with a
//! token, mutual-TLS registration, heartbeats, a pod through the built-in
//! test runtime, certificate rotation, and refusals. A plain blocking
//! driver stands in for the kernel's socket glue.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use skiff_e2e::plane::Plane;
use skiff_kubelet::{Kubelet, ProbeId, ProbeResult, ProbeTarget, Prober};
use skiff_node_agent::agent::Stats;
use skiff_node_agent::testrt::{self, TestRuntime};
use skiff_node_agent::{Agent, AgentConfig};
use skiff_node_proto::{AddressKind, NodeAddress, NodeInfo, Resources};

#[derive(Debug)]
struct SystemClock;

impl rustls::time_provider::TimeProvider for SystemClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::now())
    }
}

struct FailingProber;

impl Prober for FailingProber {
    fn start(&mut self, _: ProbeId, _: &ProbeTarget<'_>) {}
    fn poll(&mut self, _: ProbeId) -> Option<ProbeResult> {
        Some(ProbeResult::Failure("no prober on the host driver".into()))
    }
    fn cancel(&mut self, _: ProbeId) {}
}

/// A node agent on a thread, with what the test inspects.
struct HostNode {
    stop: Arc<AtomicBool>,
    notes: Arc<Mutex<Vec<String>>>,
    stats: Arc<Mutex<Stats>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

impl HostNode {
    fn start(plane: &Plane, name: &str, token: &str) -> HostNode {
        let capacity = Resources {
            cpu_millis: 1000,
            memory_bytes: 64 << 20,
            pods: 110,
            ephemeral_storage_bytes: 0,
        };
        let node = NodeInfo {
            name: name.into(),
            boot_id: [7; 16],
            addresses: vec![NodeAddress {
                kind: AddressKind::InternalIP,
                address: "127.0.0.1".into(),
            }],
            capacity,
            allocatable: capacity,
            kernel_version: "host-driver".into(),
            runtime_version: testrt::RUNTIME_VERSION.into(),
            os_image: "Skiff agent on the host".into(),
            architecture: "amd64".into(),
            labels: vec![],
        };
        let cfg = AgentConfig {
            node,
            gateway: ServerName::try_from("127.0.0.1").unwrap().to_owned(),
            ca: vec![CertificateDer::from(plane.ca_der.clone())],
            token: token.into(),
            software: "agent host test".into(),
        };
        let boot = Instant::now();
        let boot_wall = wall_ms();
        let mut kcfg = skiff_kubelet::Config::new(name, capacity);
        kcfg.boot_wall_ms = boot_wall;
        kcfg.host_ip = Some("127.0.0.1".into());
        let mut agent = Agent::new(cfg, Arc::new(SystemClock), Kubelet::new(kcfg));
        let mut rt = TestRuntime::new(boot_wall, Some("127.0.0.1".into()));
        let (stop, notes, stats) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(Mutex::new(Stats::default())),
        );
        let addr = plane.gateway_addr;
        let (s, n, st) = (stop.clone(), notes.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            let now = || boot.elapsed().as_nanos() as u64;
            while !s.load(Ordering::Relaxed) {
                if let Some(at) = agent.connect_at() {
                    let t = now();
                    if at > t {
                        std::thread::sleep(Duration::from_nanos((at - t).min(100_000_000)));
                        continue;
                    }
                }
                let reason = session(&mut agent, &mut rt, addr, &s, &now, &|a: &mut Agent| {
                    n.lock()
                        .unwrap()
                        .extend(a.take_notes().into_iter().map(|n| n.message));
                    *st.lock().unwrap() = a.stats;
                });
                agent.on_closed(now(), &reason);
                n.lock()
                    .unwrap()
                    .extend(agent.take_notes().into_iter().map(|n| n.message));
                *st.lock().unwrap() = agent.stats;
            }
        });
        HostNode {
            stop,
            notes,
            stats,
            thread: Some(thread),
        }
    }

    fn notes(&self) -> String {
        self.notes.lock().unwrap().join("\n")
    }
}

impl Drop for HostNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One connection, driven with 10 ms read timeouts; returns why it ended.
fn session(
    agent: &mut Agent,
    rt: &mut TestRuntime,
    addr: SocketAddr,
    stop: &AtomicBool,
    now: &dyn Fn() -> u64,
    report: &dyn Fn(&mut Agent),
) -> String {
    let mut tcp = match TcpStream::connect(addr) {
        Ok(t) => t,
        Err(e) => return format!("connect: {e}"),
    };
    tcp.set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    if let Err(e) = agent.on_connected(now()) {
        return e.to_string();
    }
    let mut buf = vec![0u8; 16 << 10];
    let mut prober = FailingProber;
    loop {
        let out = agent.take_outgoing();
        if !out.is_empty()
            && let Err(e) = tcp.write_all(&out)
        {
            return format!("write: {e}");
        }
        report(agent);
        if agent.should_close() {
            return String::new();
        }
        if stop.load(Ordering::Relaxed) {
            return "stopped".into();
        }
        rt.now = now();
        let result = match tcp.read(&mut buf) {
            Ok(0) => return "gateway closed the connection".into(),
            Ok(n) => agent.on_data(now(), &buf[..n], rt, &mut prober),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let due = [agent.next_wakeup(), rt.next_change()]
                    .into_iter()
                    .flatten()
                    .min();
                if due.is_some_and(|d| d <= now()) {
                    agent.on_timer(now(), rt, &mut prober)
                } else {
                    Ok(())
                }
            }
            Err(e) => return format!("read: {e}"),
        };
        if let Err(e) = result {
            return e.to_string();
        }
    }
}

fn fast(cfg: &mut skiff_gateway::GatewayConfig) {
    cfg.renew_interval = Duration::from_millis(300);
    cfg.node_grace = Duration::from_secs(3);
}

#[test]
fn agent_bootstraps_registers_and_runs_a_test_runtime_pod() {
    let plane = Plane::start(fast);
    let node = HostNode::start(&plane, "agent-1", &plane.token);
    let ctx = || node.notes();
    plane.wait_output(
        &["get", "node", "agent-1", "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.status.capacity.memory} {.status.nodeInfo.containerRuntimeVersion}"],
        "True 64Mi skiff-testrt://",
        30,
        ctx,
    );
    let stats = *node.stats.lock().unwrap();
    assert_eq!(stats.bootstraps, 1, "one token bootstrap: {stats:?}");
    assert!(stats.sessions >= 1, "{stats:?}");

    plane.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: scripted, namespace: default}
spec:
  nodeName: agent-1
  restartPolicy: Never
  containers:
  - name: main
    image: skiff.dev/testrt:1
    args: ["echo hello from the test runtime", "env GREETING", "sleep 1500", "exit 3"]
    env: [{name: GREETING, value: hi}]
"#,
    );
    plane.wait_output(
        &["get", "pod", "scripted", "-o", "jsonpath={.status.phase}"],
        "Running",
        20,
        ctx,
    );
    let done = plane.wait_output(
        &["get", "pod", "scripted", "-o", "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}"],
        "Failed 3 Error",
        20,
        ctx,
    );
    assert!(done.starts_with("Failed 3"), "{done}");
    let logs = plane.ok(&["logs", "scripted"]);
    assert_eq!(logs, "hello from the test runtime\nGREETING=hi\n");
    assert_eq!(plane.ok(&["logs", "scripted", "--tail=1"]), "GREETING=hi\n");

    // `kubectl logs -f` sees a line written after it started and exits when
    // the container does.
    plane.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: ticker, namespace: default}
spec:
  nodeName: agent-1
  restartPolicy: Never
  containers:
  - name: main
    image: skiff.dev/testrt
    args: ["echo one", "sleep 2000", "echo two", "exit 0"]
"#,
    );
    plane.wait_output(
        &["get", "pod", "ticker", "-o", "jsonpath={.status.phase}"],
        "Running",
        20,
        ctx,
    );
    let followed = plane.ok(&["logs", "-f", "ticker"]);
    assert_eq!(followed, "one\ntwo\n");

    // An image the test runtime cannot run waits as kube's ErrImagePull
    // (StartError::ImageNotFound), with a message saying why.
    plane.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: wasm-needed, namespace: default}
spec:
  nodeName: agent-1
  restartPolicy: Never
  containers: [{name: main, image: registry.local/hello:1}]
"#,
    );
    plane.wait_output(
        &[
            "get",
            "pod",
            "wasm-needed",
            "-o",
            "jsonpath={.status.containerStatuses[0].state}",
        ],
        "built-in test runtime runs only the image skiff.dev/testrt",
        20,
        ctx,
    );
    let state = plane.ok(&[
        "get",
        "pod",
        "wasm-needed",
        "-o",
        "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
    ]);
    assert_eq!(state, "ErrImagePull");
}

#[test]
fn a_wrong_token_is_refused_and_logged_on_both_sides() {
    let plane = Plane::start(fast);
    let node = HostNode::start(&plane, "intruder", "abcdef.0123456789abcdef");
    plane.eventually(
        "the node to log the refusal",
        20,
        || node.notes(),
        || node.notes().contains("BadToken"),
    );
    assert!(
        plane
            .journal()
            .iter()
            .any(|l| l.to_lowercase().contains("token")),
        "gateway journal names the token problem: {:?}",
        plane.journal()
    );
    let out = plane.kubectl(&["get", "node", "intruder"]);
    assert!(!out.status.success(), "no Node object for a refused node");
    assert_eq!(node.stats.lock().unwrap().bootstraps, 0);
}

#[test]
fn the_node_certificate_rotates_before_expiry_and_the_node_stays_ready() {
    let plane = Plane::start(|cfg| {
        fast(cfg);
        // Renewal at 80 %: every ~4 s.
        cfg.cert_validity = Duration::from_secs(5);
    });
    let node = HostNode::start(&plane, "rotating", &plane.token);
    plane.eventually(
        "two certificate rotations",
        40,
        || node.notes(),
        || node.stats.lock().unwrap().rotations >= 2,
    );
    let stats = *node.stats.lock().unwrap();
    assert_eq!(stats.bootstraps, 1, "rotation, not re-bootstrap: {stats:?}");
    plane.wait_output(
        &[
            "get",
            "node",
            "rotating",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
        10,
        || node.notes(),
    );
}
