//! `cargo xtask bench pods`: wasm pods on kernel nodes (QEMU) against the
//! control plane in this process, images from a real registry
//! (`docker-registry`, pushed with oras).
//!
//! 1. Startup: `--pods` bare pods of the hello image (long `SLEEP_MS`, so
//!    they stay Running, 4 MiB memory limit), created `--batch` at a time by
//!    an in-process kube client; each pod's latency runs from just before its
//!    create request to the watch event that shows it Running, with the
//!    create reply and the watch event that shows it scheduled as the
//!    breakdown. The artifact is cached on the node first (one warm-up pod).
//! 2. Compute: cpu-burner in a pod (its own `elapsed_ns`, guest monotonic
//!    clock) against the same module under wasmtime on this host, on a TCG
//!    node and (unless `--skip-kvm`) a KVM node.
//! 3. Density: idle echo-server pods, each with its own containerPort, on one
//!    64 MiB node, then one 128 MiB node, until one does not start (or the
//!    node's 110-pod cap); memory per pod (heap and region pool) and memory
//!    still free at the end from diag `status`.
//!
//! Options: `--out PATH`, `--pods N` (100), `--batch N` (10), `--node-mib N`
//! (1024, the startup/compute node), `--iterations N` (200000000),
//! `--runs N` (2, node compute runs; host runs are 3), `--max-density N`
//! (110), `--skip-startup`, `--skip-compute`, `--skip-kvm`, `--skip-density`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use skiff_e2e::bench::{Figure, Latencies, write_report};
use skiff_e2e::plane::Plane;
use skiff_e2e::registry::Registry;
use skiff_e2e::*;

struct Opts {
    out: PathBuf,
    pods: usize,
    batch: usize,
    node_mib: u32,
    iterations: u64,
    runs: usize,
    max_density: usize,
    startup: bool,
    compute: bool,
    kvm: bool,
    density: bool,
}

fn opts() -> Opts {
    let mut o = Opts {
        out: PathBuf::from("target/bench/pods.json"),
        pods: 100,
        batch: 10,
        node_mib: 1024,
        iterations: 200_000_000,
        runs: 2,
        max_density: 110,
        startup: true,
        compute: true,
        kvm: true,
        density: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |what: &str| {
            it.next()
                .unwrap_or_else(|| panic!("{a} needs a value ({what})"))
        };
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> T {
            v.parse()
                .unwrap_or_else(|_| panic!("{flag}: {v:?} is not a number"))
        }
        match a.as_str() {
            "--out" => o.out = val("path").into(),
            "--pods" => o.pods = num(&a, val("count")),
            "--batch" => o.batch = num(&a, val("count")),
            "--node-mib" => o.node_mib = num(&a, val("MiB")),
            "--iterations" => o.iterations = num(&a, val("count")),
            "--runs" => o.runs = num(&a, val("count")),
            "--max-density" => o.max_density = num(&a, val("count")),
            "--skip-startup" => o.startup = false,
            "--skip-compute" => o.compute = false,
            "--skip-kvm" => o.kvm = false,
            "--skip-density" => o.density = false,
            other => {
                panic!("unknown argument {other:?} (see the top of tests/examples/bench-pods.rs)")
            }
        }
    }
    assert!(
        o.batch > 0 && o.runs > 0,
        "--batch and --runs must be positive"
    );
    o
}

/// What the watch saw of one pod: when it first had a node and when it was
/// first Running, or how it failed to start.
#[derive(Debug, Default, Clone)]
struct Seen {
    scheduled: Option<Instant>,
    running: Option<Instant>,
    phase: String,
    /// A waiting reason other than ContainerCreating, or a termination.
    problem: Option<String>,
}

type Board = Arc<Mutex<HashMap<String, Seen>>>;

/// Watches all pods in `default` (re-watching when the server ends the
/// stream) and records each pod's first scheduled and Running events.
fn start_watch(plane: &Plane, client: kube::Client) -> Board {
    let board: Board = Arc::default();
    let b = board.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    plane.rt.spawn(async move {
        let api: Api<Pod> = Api::namespaced(client, "default");
        let mut ready = Some(ready_tx);
        loop {
            // (Re)list: records what a broken watch may have missed and gives
            // the version to watch from.
            let list = match api.list(&ListParams::default()).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("list pods: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let at = Instant::now();
            for p in &list.items {
                record(&b, p, at);
            }
            let rv = list.metadata.resource_version.unwrap_or_else(|| "0".into());
            let mut stream = match api.watch(&WatchParams::default(), &rv).await {
                Ok(s) => s.boxed(),
                Err(e) => {
                    eprintln!("watch: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            if let Some(tx) = ready.take() {
                let _ = tx.send(());
            }
            while let Some(ev) = stream.next().await {
                let at = Instant::now();
                match ev {
                    Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => record(&b, &p, at),
                    Ok(WatchEvent::Error(e)) => {
                        eprintln!("watch: {e:?}");
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("watch event: {e}");
                        break;
                    }
                }
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the pod watch started");
    board
}

fn record(board: &Board, pod: &Pod, at: Instant) {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let mut m = board.lock().unwrap();
    let s = m.entry(name).or_default();
    if s.scheduled.is_none()
        && pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_some()
    {
        s.scheduled = Some(at);
    }
    let status = pod.status.as_ref();
    s.phase = status.and_then(|s| s.phase.clone()).unwrap_or_default();
    if s.running.is_none() && s.phase == "Running" {
        s.running = Some(at);
    }
    let state = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref());
    if let Some(st) = state {
        if let Some(w) = &st.waiting {
            let reason = w.reason.clone().unwrap_or_default();
            if reason != "ContainerCreating" && !reason.is_empty() {
                s.problem = Some(format!(
                    "waiting {reason}: {}",
                    w.message.clone().unwrap_or_default()
                ));
            }
        }
        if let Some(t) = &st.terminated {
            s.problem = Some(format!(
                "terminated {} exit {}: {}",
                t.reason.clone().unwrap_or_default(),
                t.exit_code,
                t.message.clone().unwrap_or_default()
            ));
        }
    }
    if s.phase == "Failed" && s.problem.is_none() {
        s.problem = Some("phase Failed".into());
    }
}

fn seen(board: &Board, name: &str) -> Seen {
    board.lock().unwrap().get(name).cloned().unwrap_or_default()
}

/// Waits for the node to register with the wasm runtime and be Ready.
fn wait_node(plane: &Plane, b: &Booted, name: &str) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let out = plane.kubectl(&[
            "get",
            "node",
            name,
            "-o",
            "jsonpath={.status.nodeInfo.containerRuntimeVersion} {.status.conditions[?(@.type==\"Ready\")].status}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        if text.starts_with("skiff-wasm://") && text.ends_with(" True") {
            return Ok(());
        }
        if t.elapsed() > Duration::from_secs(90) {
            return Err(format!(
                "node {name} not Ready with the wasm runtime after 90 s (last: {text:?})\n{}",
                tail(b, 20)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn tail(b: &Booted, n: usize) -> String {
    let text = b.node.log_text();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn pod_json(name: &str, node: Option<&str>, container: serde_json::Value) -> Pod {
    let mut spec = json!({ "containers": [container] });
    if let Some(n) = node {
        spec["nodeName"] = json!(n);
    }
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": spec,
    }))
    .expect("pod JSON")
}

/// A hello pod that sleeps (so it stays Running) in 4 MiB.
fn sleeper(name: &str, image: &str) -> Pod {
    pod_json(
        name,
        None,
        json!({
            "name": "main",
            "image": image,
            "env": [{ "name": "SLEEP_MS", "value": "3600000" }],
            "resources": { "limits": { "memory": "4Mi" } },
        }),
    )
}

/// Waits until `name` is Running (Ok) or failed to start (Err).
fn wait_running(board: &Board, b: &mut Booted, name: &str, secs: u64) -> Result<(), String> {
    let t = Instant::now();
    loop {
        let s = seen(board, name);
        if s.running.is_some() {
            return Ok(());
        }
        if let Some(p) = s.problem {
            return Err(format!("pod {name}: {p}"));
        }
        if let Ok(Some(exit)) = b.node.try_exit() {
            return Err(format!("the node exited ({exit:?})\n{}", tail(b, 20)));
        }
        if t.elapsed() > Duration::from_secs(secs) {
            return Err(format!(
                "pod {name} not Running after {secs} s (phase {:?})",
                s.phase
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Deletes pods by name and waits until they are gone.
fn delete_pods(plane: &Plane, api: &Api<Pod>, names: &[String]) {
    plane.rt.block_on(async {
        for n in names {
            let _ = api.delete(n, &DeleteParams::default()).await;
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(120) {
            let left = api
                .list(&ListParams::default())
                .await
                .map(|l| l.items.len())
                .unwrap_or(usize::MAX);
            if left == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("bench-pods: pods still present 120 s after deletion");
    });
}

struct Ctx {
    plane: Plane,
    api: Api<Pod>,
    board: Board,
    reg: Registry,
}

impl Ctx {
    fn image(&self, repo: &str) -> String {
        format!("{}/{repo}", self.reg.host())
    }

    fn create(&self, pod: &Pod) -> Result<(), String> {
        self.plane
            .rt
            .block_on(self.api.create(&PostParams::default(), pod))
            .map(|_| ())
            .map_err(|e| format!("create: {e}"))
    }

    fn boot(&self, name: &str, mib: u32, accel: Accel) -> Result<Booted, String> {
        let spec = self
            .plane
            .node_spec(name, &self.plane.token)
            .memory_mib(mib)
            .accel(accel);
        let b = try_boot(spec)?;
        wait_node(&self.plane, &b, name)?;
        Ok(b)
    }
}

fn startup(ctx: &Ctx, b: &mut Booted, o: &Opts, notes: &mut Vec<String>) -> Vec<Figure> {
    let image = ctx.image("bench/hello:1.0");
    ctx.create(&sleeper("warm", &image)).expect("warm-up pod");
    if let Err(e) = wait_running(&ctx.board, b, "warm", 180) {
        b.fail(&format!("warm-up pod: {e}"));
    }
    let (mut create, mut sched, mut run) = (
        Latencies::default(),
        Latencies::default(),
        Latencies::default(),
    );
    let mut names = vec!["warm".to_string()];
    let wall = Instant::now();
    let mut failed = Vec::new();
    for start in (0..o.pods).step_by(o.batch) {
        let batch: Vec<String> = (start..(start + o.batch).min(o.pods))
            .map(|i| format!("start-{i}"))
            .collect();
        // Concurrent creates, each timed from just before its request.
        let t0s: Vec<(String, Instant, Result<Instant, String>)> = ctx.plane.rt.block_on(async {
            let tasks: Vec<_> = batch
                .iter()
                .map(|n| {
                    let api = ctx.api.clone();
                    let pod = sleeper(n, &image);
                    let n = n.clone();
                    tokio::spawn(async move {
                        let t0 = Instant::now();
                        let r = api
                            .create(&PostParams::default(), &pod)
                            .await
                            .map(|_| Instant::now())
                            .map_err(|e| e.to_string());
                        (n, t0, r)
                    })
                })
                .collect();
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.expect("create task"));
            }
            out
        });
        for (n, t0, created) in t0s {
            names.push(n.clone());
            let created = match created {
                Ok(c) => c,
                Err(e) => {
                    failed.push(format!("{n}: create: {e}"));
                    continue;
                }
            };
            if let Err(e) = wait_running(&ctx.board, b, &n, 120) {
                failed.push(e);
                continue;
            }
            let s = seen(&ctx.board, &n);
            create.lat.push(created - t0);
            if let Some(at) = s.scheduled {
                sched.lat.push(at - t0);
            }
            run.lat.push(s.running.expect("running") - t0);
        }
    }
    let wall = wall.elapsed();
    create.wall = wall;
    sched.wall = wall;
    run.wall = wall;
    eprintln!(
        "startup: {} pods Running: p50 {:.1} ms p99 {:.1} ms (create p50 {:.1}, scheduled p50 {:.1}); {} failed",
        run.lat.len(),
        run.pct(0.5),
        run.pct(0.99),
        create.pct(0.5),
        sched.pct(0.5),
        failed.len()
    );
    if !failed.is_empty() {
        notes.push(format!(
            "startup: {} of {} pods did not start: {}",
            failed.len(),
            o.pods,
            failed
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    notes.push(format!(
        "startup: {} bare hello pods (SLEEP_MS=3600000, limits.memory 4Mi, 1 container) on one \
         {} MiB kernel node ({:?}), created {} at a time concurrently by an in-process kube client, \
         each waited Running before the next batch; the artifact was cached on the node by a \
         warm-up pod. Latency from just before the create request to the pod watch event \
         (kube watch on the API server, in this process) showing phase Running; breakdown: create \
         reply, watch event with spec.nodeName (scheduler bind), Running. Goal p99 < 50 ms. \
         {} pods Running in {:.1} s",
        o.pods,
        o.node_mib,
        accel(),
        o.batch,
        run.lat.len(),
        wall.as_secs_f64()
    ));
    delete_pods(&ctx.plane, &ctx.api, &names);
    vec![
        Figure::new("pod_startup_p50", "ms", run.pct(0.5), "lower"),
        Figure::new("pod_startup_p99", "ms", run.pct(0.99), "lower"),
        Figure::new(
            "pod_startup_create_reply_p50",
            "ms",
            create.pct(0.5),
            "lower",
        ),
        Figure::new(
            "pod_startup_create_reply_p99",
            "ms",
            create.pct(0.99),
            "lower",
        ),
        Figure::new("pod_startup_scheduled_p50", "ms", sched.pct(0.5), "lower"),
        Figure::new("pod_startup_scheduled_p99", "ms", sched.pct(0.99), "lower"),
        Figure::new("pod_startup_pods_per_s", "pods/s", run.ops(), "higher"),
    ]
}

/// The `elapsed_ns N` line of cpu-burner's output.
fn elapsed_ns(out: &str) -> Option<f64> {
    out.lines()
        .find_map(|l| l.strip_prefix("elapsed_ns "))
        .and_then(|v| v.trim().parse().ok())
}

/// cpu-burner in a pod on `node`: (iterations/s by the guest's clock,
/// host-observed seconds from create to Succeeded).
fn node_burn(
    ctx: &Ctx,
    b: &mut Booted,
    node: &str,
    run: usize,
    n: u64,
) -> Result<(f64, f64), String> {
    let name = format!("burn-{node}-{run}");
    let pod = pod_json(
        &name,
        Some(node),
        json!({
            "name": "main",
            "image": ctx.image("bench/burner:1.0"),
            "args": [n.to_string(), "0"],
        }),
    );
    let mut pod = pod;
    pod.spec.as_mut().unwrap().restart_policy = Some("Never".into());
    let t0 = Instant::now();
    ctx.create(&pod)?;
    let deadline = Duration::from_secs(1200);
    loop {
        let s = seen(&ctx.board, &name);
        if s.phase == "Succeeded" {
            break;
        }
        if s.phase == "Failed" {
            // A failed start says why in the container's log.
            let logs = ctx
                .plane
                .rt
                .block_on(ctx.api.logs(&name, &Default::default()))
                .unwrap_or_default();
            return Err(format!(
                "{name} failed: {:?}; log: {}",
                s.problem,
                logs.trim()
            ));
        }
        if let Ok(Some(exit)) = b.node.try_exit() {
            return Err(format!("the node exited ({exit:?})\n{}", tail(b, 20)));
        }
        if t0.elapsed() > deadline {
            return Err(format!(
                "{name} not done after {deadline:?} (phase {:?})",
                s.phase
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let wall = t0.elapsed().as_secs_f64();
    let logs = ctx
        .plane
        .rt
        .block_on(ctx.api.logs(&name, &Default::default()))
        .map_err(|e| format!("logs of {name}: {e}"))?;
    let ns =
        elapsed_ns(&logs).ok_or_else(|| format!("no elapsed_ns in the logs of {name}:\n{logs}"))?;
    delete_pods(&ctx.plane, &ctx.api, &[name]);
    Ok((n as f64 / (ns / 1e9), wall))
}

/// The host side of a container on this machine: clocks, entropy, output.
struct HostSide {
    epoch: Instant,
    out: Arc<Mutex<Vec<u8>>>,
}

impl skiff_wasm::Host for HostSide {
    fn realtime_ns(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
    fn random(&mut self, buf: &mut [u8]) {
        use std::io::Read as _;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(buf))
            .expect("/dev/urandom");
    }
    fn log(&mut self, _stream: skiff_wasm::Stream, bytes: &[u8]) {
        self.out.lock().unwrap().extend_from_slice(bytes);
    }
}

/// cpu-burner under wasmtime on this host with `config`, run to completion
/// in one step: iterations/s by the guest's own clock, best of 3.
fn host_burn(config: &skiff_wasm::wasmtime::Config, wasm: &[u8], n: u64) -> f64 {
    let engine = skiff_wasm::wasmtime::Engine::new(config).expect("engine");
    let artifact = engine.precompile_module(wasm).expect("precompile");
    let rt = skiff_wasm::Runtime::new(config).expect("runtime");
    let image = rt.load(&artifact).expect("load");
    let mut best = 0f64;
    for _ in 0..3 {
        let out = Arc::new(Mutex::new(Vec::new()));
        let host = HostSide {
            epoch: Instant::now(),
            out: out.clone(),
        };
        let spec = skiff_wasm::ContainerSpec {
            args: vec!["cpu-burner".into(), n.to_string(), "0".into()],
            memory_limit: 64 << 20,
            ..Default::default()
        };
        let mut c = rt.spawn(&image, spec, Box::new(host)).expect("spawn");
        // No epoch ticker: one step runs the guest to its end.
        match c.step(u64::MAX) {
            skiff_wasm::Step::Exited(0) => {}
            other => panic!("cpu-burner on the host ended with {other:?}"),
        }
        let text = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
        let ns = elapsed_ns(&text).unwrap_or_else(|| panic!("no elapsed_ns in {text:?}"));
        best = best.max(n as f64 / (ns / 1e9));
    }
    best
}

fn compute(ctx: &Ctx, tcg: &mut Booted, o: &Opts, notes: &mut Vec<String>) -> Vec<Figure> {
    let wasm = std::fs::read(guests::path("cpu-burner")).expect("cpu-burner.wasm");
    let n = o.iterations;
    let mut figures = Vec::new();
    let host_default = host_burn(&skiff_wasm::wasmtime::Config::default(), &wasm, n);
    let host_nodecfg = host_burn(
        &skiff_wasm::engine_config(skiff_wasm::Target::Host),
        &wasm,
        n,
    );
    eprintln!(
        "compute: host wasmtime default {:.1} M it/s, host with the node's config {:.1} M it/s",
        host_default / 1e6,
        host_nodecfg / 1e6
    );
    let peer = "cpu-burner under wasmtime 48 on the host, default Config";
    figures.push(
        Figure::new(
            "compute_host_node_config",
            "M iterations/s",
            host_nodecfg / 1e6,
            "higher",
        )
        .peer(peer, host_default / 1e6),
    );
    let mut nodes: Vec<(&str, Accel)> = vec![("tcg", Accel::Tcg)];
    if o.kvm {
        nodes.push(("kvm", Accel::Kvm));
    }
    for (label, a) in nodes {
        let mut kvm_node;
        let (b, node) = if a == Accel::Tcg && accel() == Accel::Tcg {
            (&mut *tcg, "pods-1")
        } else {
            match ctx.boot(&format!("burn-{label}"), 256, a) {
                Ok(b) => {
                    kvm_node = b;
                    (
                        &mut kvm_node,
                        if label == "kvm" {
                            "burn-kvm"
                        } else {
                            "burn-tcg"
                        },
                    )
                }
                Err(e) => {
                    eprintln!("compute {label}: {e}");
                    notes.push(format!(
                        "compute on a {label} node: did not boot: {}",
                        first_line(&e)
                    ));
                    continue;
                }
            }
        };
        let mut best = 0f64;
        let mut walls = Vec::new();
        for r in 0..o.runs {
            match node_burn(ctx, b, node, r, n) {
                Ok((ips, wall)) => {
                    eprintln!(
                        "compute {label} run {r}: {:.1} M it/s (pod wall {wall:.1} s)",
                        ips / 1e6
                    );
                    best = best.max(ips);
                    walls.push(wall);
                }
                Err(e) => {
                    eprintln!("compute {label} run {r}: {e}");
                    notes.push(format!(
                        "compute on the {label} node, run {r}: {}",
                        first_line(&e)
                    ));
                }
            }
        }
        if node != "pods-1" {
            b.node.kill();
        }
        if best > 0.0 {
            figures.push(
                Figure::new(
                    format!("compute_node_{label}"),
                    "M iterations/s",
                    best / 1e6,
                    "higher",
                )
                .peer(peer, host_default / 1e6),
            );
            notes.push(format!(
                "compute_node_{label}: best of {} pod runs on a {label} node ({:?}); pod wall times \
                 create→Succeeded {walls:.1?} s",
                o.runs, a
            ));
        }
    }
    notes.push(format!(
        "compute: tests/wasm cpu-burner, {n} iterations of splitmix64, rate from the guest's own \
         `elapsed_ns` (std::time::Instant = WASI monotonic clock: the node's timer on a node, the \
         host's on the host). Node: AOT-compiled by the control plane's image service for the \
         kernel (x86-64-v2 baseline, explicit bounds checks, epoch checks, 2 ms slices), no CPU \
         limit. Peer: same .wasm under wasmtime 48 on this host, default Config (native CPU \
         features), best of 3, run to completion in one step; ratio = node/host (goal ≥ 0.9). \
         compute_host_node_config is the node's Config on the host. Under TCG the node's CPU is \
         emulated; the KVM node is nested KVM (-cpu host,-arch-capabilities)."
    ));
    figures
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// Node memory in use: the heap (the kernel, pods' stores, sockets and
/// logs) and the region pool (pods' linear memories and fiber stacks, the
/// pages they touched).
fn memory_used(b: &Booted) -> Option<f64> {
    b.diag.status().ok().map(|s| {
        let f = s.fields();
        (f.heap_used + f.pool_used) as f64
    })
}

/// Node memory free: the heap's and the region pool's.
fn memory_free(b: &Booted) -> Option<f64> {
    b.diag.status().ok().map(|s| {
        let f = s.fields();
        (f.heap_total - f.heap_used + f.pool_total - f.pool_used) as f64
    })
}

fn density(ctx: &Ctx, o: &Opts, mib: u32, notes: &mut Vec<String>) -> Vec<Figure> {
    let node = format!("dense-{mib}");
    let mut b = match ctx.boot(&node, mib, accel()) {
        Ok(b) => b,
        Err(e) => {
            notes.push(format!(
                "density: the {mib} MiB node did not boot: {}",
                first_line(&e)
            ));
            return vec![];
        }
    };
    let image = ctx.image("bench/echo:1.0");
    let before = memory_used(&b);
    let mut running = 0usize;
    let mut after = before;
    let mut stop = format!("reached --max-density {}", o.max_density);
    let mut names = Vec::new();
    let label = format!("density={mib}");
    for i in 0..o.max_density {
        let name = format!("echo-{mib}-{i}");
        let port = 20000 + i as u16;
        let mut pod = pod_json(
            &name,
            Some(&node),
            json!({
                "name": "main",
                "image": image,
                "ports": [{ "containerPort": port }],
                "env": [{ "name": "POD_NAME", "value": name }],
                "resources": { "limits": { "memory": "4Mi" } },
            }),
        );
        pod.metadata.labels = Some([("density".to_string(), mib.to_string())].into());
        if let Err(e) = ctx.create(&pod) {
            stop = format!("creating {name}: {e}");
            break;
        }
        names.push(name.clone());
        match wait_running(&ctx.board, &mut b, &name, 60) {
            Ok(()) => {
                running += 1;
                after = memory_used(&b).or(after);
            }
            Err(e) => {
                stop = e;
                break;
            }
        }
    }
    // Running is reported once an instance is spawned, before its first
    // slice touches its memory and fiber stack: let every guest run, then
    // count only pods still Running that never restarted (a guest the node
    // could not give memory ends and restarts).
    std::thread::sleep(std::time::Duration::from_secs(5));
    let out = ctx.plane.kubectl(&[
        "get",
        "pods",
        "-l",
        &label,
        "-o",
        "jsonpath={range .items[*]}{.status.phase}/{.status.containerStatuses[0].restartCount} {end}",
    ]);
    let settled = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|s| *s == "Running/0")
        .count();
    let after = memory_used(&b).or(after);
    let free = memory_free(&b);
    eprintln!(
        "density: {running} echo pods reached Running on a {mib} MiB node (stopped: {}); \
         {settled} still Running without a restart 5 s later",
        first_line(&stop)
    );
    let running = settled;
    let per_pod = match (before, after) {
        (Some(a), Some(z)) if running > 0 => Some((z - a) / running as f64),
        _ => None,
    };
    notes.push(format!(
        "density: idle echo-server pods (one distinct containerPort each, 20000+i, served on the \
         node's address; limits.memory 4Mi) pinned one at a time to one {mib} MiB kernel node ({:?}), \
         each waited Running; stopped because: {}. Counted: pods still Running with no restart 5 s \
         after the last one started. Memory per pod = (diag heap_used + pool_used then − before \
         the first) / those pods{}; node memory still free then (heap and pool){}. The node \
         takes at most 110 pods (kube's default max-pods), so where that is the stop, the free \
         memory says how far from full it was",
        accel(),
        first_line(&stop),
        per_pod.map_or(String::new(), |p| format!(" = {:.0} KiB", p / 1024.0)),
        free.map_or(String::new(), |f| format!(" = {:.1} MiB", f / f64::from(1 << 20)))
    ));
    if matches!(b.node.try_exit(), Ok(None)) {
        delete_pods(&ctx.plane, &ctx.api, &names);
    }
    b.node.kill();
    let mut f = vec![Figure::new(
        format!("density_echo_pods_{mib}mib_node"),
        "pods",
        running as f64,
        "higher",
    )];
    if let Some(p) = per_pod {
        f.push(Figure::new(
            format!("density_memory_per_echo_pod_{mib}mib_node"),
            "KiB",
            p / 1024.0,
            "lower",
        ));
    }
    if let Some(free) = free {
        f.push(Figure::new(
            format!("density_memory_free_at_end_{mib}mib_node"),
            "MiB",
            free / f64::from(1 << 20),
            "higher",
        ));
    }
    f
}

fn main() {
    let o = opts();
    require_qemu();
    let reg = Registry::start();
    let mut plane = Plane::start_with_registries(&[reg.host()], |g| g.quiet = true);
    plane.start_control_loops(Duration::from_secs(40), None);
    reg.push_wasm("bench/hello:1.0", &guests::path("hello"));
    reg.push_wasm("bench/echo:1.0", &guests::path("echo-server"));
    reg.push_wasm("bench/burner:1.0", &guests::path("cpu-burner"));
    let client = plane
        .rt
        .block_on(skiff_client::client_from_kubeconfig(
            &plane.kubeconfig,
            Some(&plane.url),
        ))
        .expect("kube client");
    let board = start_watch(&plane, client.clone());
    let api: Api<Pod> = Api::namespaced(client, "default");
    let ctx = Ctx {
        plane,
        api,
        board,
        reg,
    };

    let mut figures = Vec::new();
    let mut notes = Vec::new();
    if o.startup || o.compute {
        let mut b = ctx
            .boot("pods-1", o.node_mib, accel())
            .unwrap_or_else(|e| panic!("the startup/compute node: {e}"));
        if o.startup {
            eprintln!("bench-pods: startup of {} pods…", o.pods);
            figures.extend(startup(&ctx, &mut b, &o, &mut notes));
        }
        if o.compute {
            eprintln!("bench-pods: compute…");
            figures.extend(compute(&ctx, &mut b, &o, &mut notes));
        }
        b.node.kill();
    }
    if o.density {
        for mib in [64, 128] {
            eprintln!("bench-pods: density on a {mib} MiB node…");
            figures.extend(density(&ctx, &o, mib, &mut notes));
        }
    }
    write_report(&o.out, "pods", &figures, &notes);
    println!("\nbench pods summary:");
    for f in &figures {
        match &f.peer {
            Some((p, v)) => println!(
                "  {:34} {:>10.2} {:16} (peer {v:.2}: {p}; ratio {:.2})",
                f.name,
                f.value,
                f.unit,
                f.value / v
            ),
            None => println!("  {:34} {:>10.2} {}", f.name, f.value, f.unit),
        }
    }
    for n in &notes {
        println!("  note: {n}");
    }
}
