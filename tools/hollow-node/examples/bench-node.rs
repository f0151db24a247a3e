//! `cargo xtask bench node`: kernel nodes joining a control plane, and N
//! hollow nodes heartbeating against one (API server + node gateway, in a
//! child process so its CPU and memory are measured alone from /proc).
//!
//! Usage: bench-node --out FILE [--boots 10] [--nodes 1000,5000] [--window SECS]
//!                   [--renew-ms MS]   (`--boots 0` / `--nodes ""` skip a part)
//!
//! Kernel part (QEMU microvm, TCG unless SKIFF_KVM=1): boot -> Node Ready seen
//! through a real `kubectl get nodes --watch`, from QEMU's spawn, median of
//! `--boots`, with the stage breakdown from the serial log (first byte, the
//! kernel's net-up, its certificate, its registration); then the smallest guest
//! RAM that boots, registers and runs 10 idle pods, and the heap each idle pod
//! costs (diag `status` before and after).
//!
//! Per node count: a fresh control plane; all nodes bootstrap (token + CSR),
//! connect with mutual TLS and register; then over a steady window with
//! kube's default 10 s lease renewal the control plane's CPU (user+sys over
//! wall time, 100 % = one core), its peak RSS, and the heartbeat round trip
//! (LeaseRenew + Ping -> Pong: the gateway answers a node's frames in order,
//! so the Pong means the Lease write is stored) p50/p99 are reported.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use skiff_e2e::bench::{Figure, write_report};
use skiff_hollow_node::stats::quantile;
use skiff_hollow_node::{Fleet, FleetConfig, Stats};

struct Args {
    out: PathBuf,
    boots: u32,
    nodes: Vec<u32>,
    window: u64,
    renew_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("target/bench/node.json"),
        boots: 10,
        nodes: vec![1000, 5000],
        window: 30,
        renew_ms: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut v = || it.next().expect("value");
        match x.as_str() {
            "--out" => a.out = v().into(),
            "--boots" => a.boots = v().parse().expect("count"),
            "--nodes" => {
                a.nodes = v()
                    .split(',')
                    .filter(|n| !n.is_empty())
                    .map(|n| n.parse().expect("count"))
                    .collect()
            }
            "--window" => a.window = v().parse().expect("secs"),
            "--renew-ms" => a.renew_ms = v().parse().expect("ms"),
            "--serve" => {
                serve(
                    Path::new(&v()),
                    it.next().expect("renew ms").parse().expect("ms"),
                );
                std::process::exit(0);
            }
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Child: the control plane. Prints `READY <gateway> <token>`, serves until
/// stdin closes.
fn serve(dir: &Path, renew_ms: u64) {
    let pki_dir = dir.join("pki");
    let out = skiff_apiserver::pki::init(&pki_dir, &Default::default()).expect("pki");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let cfg = skiff_apiserver::ServeConfig::new(
            pki_dir.clone(),
            dir.join("data"),
            "127.0.0.1:0".parse().unwrap(),
        );
        let api = skiff_apiserver::start(&cfg).await.expect("api server");
        let mut g = skiff_gateway::GatewayConfig::new(pki_dir, "127.0.0.1:0".parse().unwrap());
        g.quiet = true;
        g.renew_interval = Duration::from_millis(renew_ms);
        g.handshake_timeout = Duration::from_secs(60);
        // Thousands of simulated nodes share one source address and
        // bootstrap at once: lift the per-address and session limits.
        g.max_unauthenticated = usize::MAX >> 4;
        g.max_unauthenticated_per_source = usize::MAX;
        g.max_connections = usize::MAX >> 4;
        let gw = skiff_gateway::start(g, api.state.clone())
            .await
            .expect("gateway");
        println!("READY {} {}", gw.addr, out.bootstrap_tokens[0]);
        std::io::stdout().flush().unwrap();
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin()
                .read_line(&mut s)
                .map(|n| n > 0)
                .unwrap_or(false)
            {}
        })
        .await
        .unwrap();
        let m = gw.metrics();
        let mut lease = m.take_lease_samples();
        eprintln!(
            "control plane: sessions={} refused={} lease writes p50={}us p99={}us",
            m.sessions.load(std::sync::atomic::Ordering::Relaxed),
            m.refused.load(std::sync::atomic::Ordering::Relaxed),
            quantile(&mut lease, 0.5),
            quantile(&mut lease, 0.99)
        );
        drop(gw);
        drop(api);
    });
}

/// (user+system CPU seconds, RSS peak bytes) of a process.
fn proc_usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    // CLK_TCK is 100 on Linux x86_64.
    (ticks / 100.0, hwm)
}

fn run_one(n: u32, a: &Args, notes: &mut Vec<String>) -> Vec<Figure> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child: Child = Command::new(std::env::current_exe().unwrap())
        .arg("--serve")
        .arg(dir.path())
        .arg(a.renew_ms.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("control plane child");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut parts = line.split_whitespace().skip(1);
    let gateway = parts.next().expect("gateway addr").parse().unwrap();
    let token = parts.next().expect("token").to_string();
    let pid = child.id();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = FleetConfig::new(gateway, &dir.path().join("pki/ca.crt"), &token).unwrap();
    let mut fleet = Fleet::new();
    let stats = fleet.stats.clone();
    let t0 = Instant::now();
    let (cpu0, _) = proc_usage(pid);
    rt.block_on(async {
        // Ramp in batches so bootstrap handshakes don't all queue at once.
        for start in (0..n).step_by(250) {
            for i in start..(start + 250).min(n) {
                fleet.start(cfg.node(&format!("hollow-{i}"), i));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        while Stats::get(&stats.sessions) < u64::from(n) {
            assert!(
                t0.elapsed() < Duration::from_secs(300),
                "only {} of {n} nodes registered; last error {:?}",
                Stats::get(&stats.sessions),
                stats.last_error()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let startup = t0.elapsed().as_secs_f64();
    let (cpu1, _) = proc_usage(pid);
    // Steady state: drop samples from the ramp, then measure a window.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(a.renew_ms)).await });
    stats.take_heartbeats();
    let errors0 = Stats::get(&stats.errors);
    let (cpu2, _) = proc_usage(pid);
    let w0 = Instant::now();
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(a.window)).await });
    let wall = w0.elapsed().as_secs_f64();
    let (cpu3, hwm) = proc_usage(pid);
    let mut hb = stats.take_heartbeats();
    let errors = Stats::get(&stats.errors) - errors0;
    {
        let _g = rt.enter();
        drop(fleet);
    }
    drop(child.stdin.take());
    let _ = child.wait();
    drop(rt);
    let ms = |us: u32| f64::from(us) / 1000.0;
    notes.push(format!(
        "{n} nodes: registered in {startup:.1} s (control plane CPU {:.1} s during start-up); \
         steady {wall:.0} s window: {} heartbeats, {errors} node errors",
        cpu1 - cpu0,
        hb.len()
    ));
    vec![
        Figure::new(format!("nodes_{n}_startup"), "s", startup, "lower"),
        Figure::new(
            format!("nodes_{n}_heartbeats"),
            "1/s",
            hb.len() as f64 / wall,
            "higher",
        ),
        Figure::new(
            format!("nodes_{n}_heartbeat_p50"),
            "ms",
            ms(quantile(&mut hb, 0.5)),
            "lower",
        ),
        Figure::new(
            format!("nodes_{n}_heartbeat_p99"),
            "ms",
            ms(quantile(&mut hb, 0.99)),
            "lower",
        ),
        Figure::new(
            format!("nodes_{n}_controlplane_cpu"),
            "% of a core",
            100.0 * (cpu3 - cpu2) / wall,
            "lower",
        ),
        Figure::new(
            format!("nodes_{n}_controlplane_rss_peak"),
            "MiB",
            hwm as f64 / (1 << 20) as f64,
            "lower",
        ),
    ]
}

fn main() {
    let a = args();
    let mut figures = Vec::new();
    let mut notes = vec![format!(
        "lease renewal every {} ms (kube default 10 s), steady window {} s; hollow nodes run in \
         this process, the control plane (API server + gateway, one tokio runtime) in a child; \
         both share the machine's cores",
        a.renew_ms, a.window
    )];
    if a.boots > 0 {
        eprintln!("bench-node: {} kernel boots to Ready…", a.boots);
        figures.extend(kernel::boots_to_ready(a.boots, &mut notes));
        eprintln!("bench-node: kernel node memory…");
        figures.extend(kernel::memory_for_idle_pods(10, &mut notes));
    }
    for &n in &a.nodes {
        eprintln!("bench-node: {n} nodes…");
        figures.extend(run_one(n, &a, &mut notes));
    }
    write_report(&a.out, "node", &figures, &notes);
}

/// Kernel nodes in QEMU against the control plane in this process.
mod kernel {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use skiff_e2e::Node;
    use skiff_e2e::bench::Figure;
    use skiff_e2e::plane::Plane;

    /// `kubectl get nodes --watch`, each line with the time it arrived.
    fn watch_nodes(plane: &Plane) -> (std::process::Child, mpsc::Receiver<(Instant, String)>) {
        let mut child = Command::new(skiff_e2e::peers::kubectl())
            .args([
                "get",
                "nodes",
                "--watch",
                "--no-headers",
                "-o",
                "custom-columns=N:.metadata.name,R:.status.conditions[?(@.type==\"Ready\")].status",
            ])
            .env("KUBECONFIG", &plane.kubeconfig)
            .env("HOME", plane.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl watch");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    return;
                }
            }
        });
        (child, rx)
    }

    fn ready_seen(rx: &mpsc::Receiver<(Instant, String)>, name: &str) -> Option<Instant> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Ok((at, line)) =
            rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            let mut f = line.split_whitespace();
            if f.next() == Some(name) && f.next() == Some("True") {
                return Some(at);
            }
        }
        None
    }

    /// When the serial line containing `needle` arrived (the serial reader
    /// may trail the network by a moment: wait a little for it).
    fn line_at(node: &mut Node, needle: &str) -> Option<Instant> {
        node.wait_for_line(|l| l.contains(needle), Duration::from_secs(2))
            .ok()
            .map(|l| l.at)
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            f64::NAN
        } else {
            v[v.len() / 2]
        }
    }

    const STAGES: [&str; 5] = [
        "first_byte",
        "net_up",
        "certificate",
        "registered",
        "ready_watch",
    ];

    /// Boots `spec` and times its stages from QEMU's spawn (ms; NaN for a
    /// stage not seen: a kept certificate has no `certificate` stage).
    fn timed_boot(
        spec: skiff_e2e::NodeSpec,
        name: &str,
        rx: &mpsc::Receiver<(Instant, String)>,
        notes: &mut Vec<String>,
    ) -> [f64; 5] {
        let mut node = spec.launch().expect("launch QEMU");
        let t0 = node.started();
        let ready = ready_seen(rx, name);
        let ms = |t: Option<Instant>| t.map_or(f64::NAN, |t| (t - t0).as_secs_f64() * 1000.0);
        let row = [
            ms(node.first_byte()),
            ms(line_at(&mut node, "stage: net-up")),
            ms(line_at(&mut node, "bootstrap: certificate issued")),
            ms(line_at(&mut node, "stage: node-registered")),
            ms(ready),
        ];
        if ready.is_none() {
            notes.push(format!(
                "{name}: no Ready within 60 s; log:\n{}",
                node.log_text()
            ));
        }
        node.kill();
        row
    }

    fn medians(prefix: &str, samples: &mut [Vec<f64>]) -> Vec<Figure> {
        STAGES
            .iter()
            .zip(samples.iter_mut())
            .filter(|(_, v)| !v.is_empty())
            .map(|(s, v)| Figure::new(format!("{prefix}_{s}_median"), "ms", median(v), "lower"))
            .collect()
    }

    pub fn boots_to_ready(boots: u32, notes: &mut Vec<String>) -> Vec<Figure> {
        let plane = Plane::start(|g| g.quiet = true);
        let (mut watch, rx) = watch_nodes(&plane);
        std::thread::sleep(Duration::from_millis(500)); // the watch is established
        let mut first: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
        let mut kept: Vec<Vec<f64>> = vec![Vec::new(); STAGES.len()];
        let dir = tempfile::tempdir().expect("temp dir");
        for i in 0..boots {
            // First boot: token bootstrap.
            let name = format!("boot-{i}");
            let row = timed_boot(plane.node_spec(&name, &plane.token), &name, &rx, notes);
            eprintln!("boot {i}: {row:.1?} ms");
            // A node that kept its certificate on its disk: one boot to
            // save it (not timed), then the timed one.
            let name = format!("kept-{i}");
            let disk = dir.path().join(format!("{name}.raw"));
            std::fs::write(&disk, vec![0u8; 1 << 20]).expect("disk image");
            let spec = || {
                plane
                    .node_spec(&name, &plane.token)
                    .disk(&disk)
                    .arg("skiff.credentials=disk")
            };
            let mut saver = spec().launch().expect("launch QEMU");
            let saved = saver
                .wait_for_line(
                    |l| l.contains("credentials saved to disk"),
                    Duration::from_secs(60),
                )
                .is_ok();
            saver.kill();
            let _ = ready_seen(&rx, &name);
            let kept_row = if saved {
                timed_boot(spec(), &name, &rx, notes)
            } else {
                notes.push(format!(
                    "{name}: credentials never saved:\n{}",
                    saver.log_text()
                ));
                [f64::NAN; 5]
            };
            eprintln!("boot {i} (kept certificate): {kept_row:.1?} ms");
            for (samples, row) in [(&mut first, row), (&mut kept, kept_row)] {
                for (s, v) in samples.iter_mut().zip(row) {
                    if v.is_finite() {
                        s.push(v);
                    }
                }
            }
        }
        let _ = watch.kill();
        notes.push(format!(
            "boot -> Ready: {boots} boots of a 32 MiB microvm ({}), times from QEMU spawn; \
             `ready_watch` is when `kubectl get nodes --watch` printed the node Ready \
             (includes DHCP, key generation, TLS bootstrap, mutual-TLS registration); \
             `kernel_boot_kept_cert_*` are boots of nodes that kept their certificate on \
             their disk (skiff.credentials=disk) from an earlier boot: no bootstrap",
            if std::env::var_os("SKIFF_KVM").is_some() {
                "KVM"
            } else {
                "TCG"
            }
        ));
        let mut figures = medians("kernel_boot_to", &mut first);
        let first_ready = figures
            .iter()
            .find(|f| f.name == "kernel_boot_to_ready_watch_median")
            .map(|f| f.value);
        for f in medians("kernel_boot_kept_cert_to", &mut kept) {
            figures.push(match (&*f.name, first_ready) {
                ("kernel_boot_kept_cert_to_ready_watch_median", Some(peer)) => {
                    f.peer("first boot (token bootstrap), same run", peer)
                }
                _ => f,
            });
        }
        figures
    }

    /// Boots a node with `mib` MiB, runs `pods` idle pods on it; returns
    /// the heap bytes per pod when it worked.
    fn try_memory(plane: &Plane, mib: u32, pods: usize) -> Result<f64, String> {
        let name = format!("mem-{mib}");
        let mut b = skiff_e2e::try_boot(plane.node_spec(&name, &plane.token).memory_mib(mib))?;
        let ready = |plane: &Plane| {
            let out = plane.kubectl(&[
                "get",
                "node",
                &name,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            String::from_utf8_lossy(&out.stdout).contains("True")
        };
        let t = Instant::now();
        while !ready(plane) {
            if t.elapsed() > Duration::from_secs(30) || matches!(b.node.try_exit(), Ok(Some(_))) {
                return Err(format!("not Ready; log tail: {}", tail(&b.node)));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let heap =
            |b: &skiff_e2e::Booted| b.diag.status().ok().map(|s| s.fields().heap_used as f64);
        let before = heap(&b).ok_or("no status")?;
        let mut yaml = String::new();
        for p in 0..pods {
            yaml.push_str(&format!(
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: idle-{mib}-{p}, labels: {{mem: \"{mib}\"}}}}\n\
                 spec:\n  nodeName: {name}\n  containers: [{{name: c, image: skiff.dev/testrt, args: [\"forever\"]}}]\n"
            ));
        }
        plane.apply(&yaml);
        let t = Instant::now();
        loop {
            let out = plane.kubectl(&[
                "get",
                "pods",
                "-l",
                &format!("mem={mib}"),
                "-o",
                "jsonpath={range .items[*]}{.status.phase}{\"\\n\"}{end}",
            ]);
            let running = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| *l == "Running")
                .count();
            if running == pods {
                break;
            }
            if t.elapsed() > Duration::from_secs(60) || matches!(b.node.try_exit(), Ok(Some(_))) {
                return Err(format!(
                    "{running}/{pods} pods Running; log tail: {}",
                    tail(&b.node)
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        let after = heap(&b).ok_or("no status")?;
        let _ = plane.kubectl(&[
            "delete",
            "pods",
            "-l",
            &format!("mem={mib}"),
            "--wait=false",
        ]);
        b.node.kill();
        Ok((after - before) / pods as f64)
    }

    fn tail(node: &Node) -> String {
        let text = node.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }

    pub fn memory_for_idle_pods(pods: usize, notes: &mut Vec<String>) -> Vec<Figure> {
        let plane = Plane::start(|g| g.quiet = true);
        let mut out = Vec::new();
        for mib in [8, 12, 16, 24, 32, 48] {
            match try_memory(&plane, mib, pods) {
                Ok(per_pod) => {
                    notes.push(format!(
                        "node memory: {mib} MiB is the smallest guest RAM (of 8,12,16,24,32,48) that \
                         boots, registers and runs {pods} idle test-runtime pods (a k3s agent needs ~275 MB); \
                         heap per idle pod {per_pod:.0} bytes"
                    ));
                    out.push(
                        Figure::new(
                            "kernel_min_ram_10_idle_pods",
                            "MiB",
                            f64::from(mib),
                            "lower",
                        )
                        .peer("k3s agent RSS (~275 MB)", 275.0),
                    );
                    out.push(Figure::new(
                        "kernel_heap_per_idle_pod",
                        "KiB",
                        per_pod / 1024.0,
                        "lower",
                    ));
                    break;
                }
                Err(e) => eprintln!("{mib} MiB: {e}"),
            }
        }
        out
    }
}
