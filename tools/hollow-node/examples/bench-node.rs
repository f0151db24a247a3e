//! `cargo xtask bench node`: N hollow nodes heartbeating against one control
//! plane (API server + node gateway, in a child process so its CPU and memory
//! are measured alone from /proc).
//!
//! Usage: bench-node --out FILE [--nodes 1000,5000] [--window SECS] [--renew-ms MS]
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
    nodes: Vec<u32>,
    window: u64,
    renew_ms: u64,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("target/bench/node.json"),
        nodes: vec![1000, 5000],
        window: 30,
        renew_ms: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut v = || it.next().expect("value");
        match x.as_str() {
            "--out" => a.out = v().into(),
            "--nodes" => a.nodes = v().split(',').map(|n| n.parse().expect("count")).collect(),
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
        let m = &gw.shared.metrics;
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
    for &n in &a.nodes {
        eprintln!("bench-node: {n} nodes…");
        figures.extend(run_one(n, &a, &mut notes));
    }
    write_report(&a.out, "node", &figures, &notes);
}
