//! `cargo xtask bench net`: pod networking on kernel nodes, two microvm
//! nodes on one L2 segment (`skiff_qemu::Segment`), peers measured in the
//! same run:
//!
//! 1. Pod-to-pod TCP: the tcp-bench guest (round trips over one
//!    connection, timed by the guest's clock) against a tcp-echo pod on
//!    node A, from a client pod on node A (same node: spliced in memory)
//!    and on node B (across the segment): round trips/s with `--small`
//!    bytes (1024) each way and MiB/s with `--large` bytes (16384).
//! 2. Through a ClusterIP Service against the echo pod's own address, in
//!    the same places: the Service path's cost (the issue's target: under
//!    5 %, i.e. a ratio of at least 0.95).
//!
//! 3. Connections per second from the host through a NodePort (`hey`, one
//!    request per connection) against the same pod through a direct host
//!    forward to its address: the node's NodePort relay's cost.
//! 4. How fast an endpoint that turns unready stops getting new
//!    connections: the host keeps connecting through a NodePort of a
//!    Service with two replicas, one of them is made to fail its
//!    readiness probe; from the moment its Ready condition turns False in
//!    the API (polled) to the last new connection it got.
//!
//! Options: `--out PATH`, `--rounds N` (500 small round trips; a tenth of
//! that for large ones), `--runs N` (3, the median is reported),
//! `--requests N` (2000 per `hey` run), `--concurrency N` (4).

use skiff_e2e::bench::{Args, Figure, write_report};
use skiff_e2e::cluster::SegmentCluster;
use skiff_e2e::plane::Plane;
use skiff_e2e::*;

const ECHO_PORT: u16 = 7070;

fn main() {
    let args = Args::parse("target/bench/net.json");
    if let Err(e) = run(&args) {
        eprintln!("bench-net: {e}");
        std::process::exit(1);
    }
}

fn text(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(args: &Args) -> Result<(), String> {
    let rounds: usize = args.get("rounds", 500);
    let runs: usize = args.get("runs", 3);
    let small: usize = args.get("small", 1024);
    let large: usize = args.get("large", 16384);
    if rounds < 10 || runs == 0 || small == 0 || large == 0 {
        return Err("--rounds must be at least 10; --runs, --small, --large positive".into());
    }
    require_qemu();
    let c = SegmentCluster::start(
        &["net-a", "net-b"],
        128,
        &[
            ("bench/tcp-echo:1.0", "tcp-echo"),
            ("bench/tcp-bench:1.0", "tcp-bench"),
            ("bench/echo:1.0", "echo-server"),
        ],
    )?;
    let (plane, host) = (&c.plane, c.host());
    let log = || c.log();
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: echo, namespace: default, labels: {{app: echo}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: net-a}}
  containers:
  - name: echo
    image: {host}/bench/tcp-echo:1.0
    ports: [{{containerPort: {ECHO_PORT}}}]
    env: [{{name: PORT, value: "{ECHO_PORT}"}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  selector: {{app: echo}}
  ports: [{{port: {ECHO_PORT}}}]
"#
    ));
    plane.wait_output(&["logs", "echo"], "listening", 180, log);
    let pod_ip = text(plane.kubectl(&["get", "pod", "echo", "-o", "jsonpath={.status.podIP}"]));
    let cluster_ip =
        text(plane.kubectl(&["get", "service", "echo", "-o", "jsonpath={.spec.clusterIP}"]));
    plane.wait_output(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=echo",
            "-o",
            "jsonpath={.items[*].endpoints[*].addresses[*]}",
        ],
        &pod_ip,
        60,
        log,
    );

    let accel = accel();
    let mut figures = Vec::new();
    let mut seq = 0;
    let mut measure = |node: &str, addr: &str, size: usize, rounds: usize| -> Result<f64, String> {
        let mut rates = Vec::new();
        for _ in 0..runs {
            seq += 1;
            let pod = format!("bench-{seq}");
            let logs = client(plane, &host, &pod, node, addr, size, rounds, &log)?;
            let rate = guests::tcp_bench_round_trips(&logs)
                .ok_or_else(|| format!("no result from {pod}:\n{logs}"))?;
            eprintln!("{node} → {addr} size {size}: {rate:.1} round trips/s");
            rates.push(rate);
            plane.ok(&["delete", "pod", &pod, "--wait=false"]);
        }
        Ok(median(&rates))
    };
    let direct = format!("{pod_ip}:{ECHO_PORT}");
    let service = format!("{cluster_ip}:{ECHO_PORT}");
    let mib = |rate: f64, size: usize| rate * 2.0 * size as f64 / (1 << 20) as f64;
    for (place, node) in [("same_node", "net-a"), ("cross_node", "net-b")] {
        let d_small = measure(node, &direct, small, rounds)?;
        let s_small = measure(node, &service, small, rounds)?;
        let d_large = measure(node, &direct, large, rounds / 10)?;
        let s_large = measure(node, &service, large, rounds / 10)?;
        figures.push(Figure::new(
            format!("{place}_pod_round_trips_per_s"),
            "round trips/s",
            d_small,
            "higher",
        ));
        figures.push(Figure::new(
            format!("{place}_pod_mib_per_s"),
            "MiB/s",
            mib(d_large, large),
            "higher",
        ));
        figures.push(
            Figure::new(
                format!("{place}_clusterip_round_trips_per_s"),
                "round trips/s",
                s_small,
                "higher",
            )
            .peer("the same pod by its own address", d_small),
        );
        figures.push(
            Figure::new(
                format!("{place}_clusterip_mib_per_s"),
                "MiB/s",
                mib(s_large, large),
                "higher",
            )
            .peer("the same pod by its own address", mib(d_large, large)),
        );
    }
    let requests: usize = args.get("requests", 2000);
    let concurrency: usize = args.get("concurrency", 4);
    let (np_figures, mut np_notes) = node_port(&c, runs, requests, concurrency)?;
    figures.extend(np_figures);
    let mut notes = vec![
        format!(
            "two microvm kernel nodes ({accel:?}, 1 vCPU, 128 MiB each) on one skiff-qemu Segment (userspace L2 hub over -netdev stream); \
             a tcp-echo pod on net-a; tcp-bench client pods (wasi:sockets over one std TcpStream, timed by the guest's monotonic clock, connect excluded) \
             on net-a (same node: the connection is spliced in memory by the node) and on net-b (across the segment: both nodes' smoltcp + virtio-net + the hub); \
             median of {runs} runs each"
        ),
        format!(
            "*_round_trips_per_s: {rounds} round trips of {small} B each way; *_mib_per_s: {} round trips of {large} B each way, counting both directions",
            rounds / 10
        ),
        "clusterip_*: the same client to the Service's ClusterIP, translated to the pod's address by the node's Service table at connect time (no NAT on the data path), \
         against the pod's own address in the same run (ratio = Service / direct; 1.0 means the Service path costs nothing after connect)"
            .into(),
    ];
    notes.append(&mut np_notes);
    c.shutdown();
    write_report(&args.out, "net", &figures, &notes);
    Ok(())
}

/// Runs tcp-bench as pod `pod` on `node` against `addr`; its log.
#[allow(clippy::too_many_arguments)]
fn client(
    plane: &Plane,
    host: &str,
    pod: &str,
    node: &str,
    addr: &str,
    size: usize,
    rounds: usize,
    log: &dyn Fn() -> String,
) -> Result<String, String> {
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: default}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: tcp-bench
    image: {host}/bench/tcp-bench:1.0
    env:
    - {{name: ADDR, value: "{addr}"}}
    - {{name: ROUNDS, value: "{rounds}"}}
    - {{name: SIZE, value: "{size}"}}
"#
    ));
    let mut phase = String::new();
    plane.eventually(&format!("pod {pod} to finish"), 300, log, || {
        phase = text(plane.kubectl(&["get", "pod", pod, "-o", "jsonpath={.status.phase}"]));
        phase == "Succeeded" || phase == "Failed"
    });
    let logs = text(plane.kubectl(&["logs", pod]));
    if phase != "Succeeded" {
        return Err(format!("pod {pod} {phase}:\n{logs}\nthe nodes:\n{}", log()));
    }
    Ok(logs)
}

/// One `GET path` over a fresh connection to `port` on the host: the
/// answering pod (the echo server's `Hostname:`), `None` on failure.
fn get_host(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let host = out.lines().find_map(|l| l.strip_prefix("Hostname: "))?;
    Some(host.trim().to_string())
}

/// `hey`'s requests per second for `url`, and how many requests failed
/// (more than 5 % is an error).
fn hey(url: &str, requests: usize, concurrency: usize) -> Result<(f64, usize), String> {
    let out = std::process::Command::new("hey")
        .args([
            "-n",
            &requests.to_string(),
            "-c",
            &concurrency.to_string(),
            "-disable-keepalive",
            "-t",
            "10",
            url,
        ])
        .output()
        .map_err(|e| format!("hey: {e} (run `cargo xtask setup`)"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no Requests/sec from hey {url}:\n{text}"))?;
    // "  [3]\tGet ...: connection reset by peer" under "Error distribution:".
    let errors: usize = text
        .split("Error distribution:")
        .nth(1)
        .unwrap_or("")
        .lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix('[')?
                .split(']')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    if errors * 20 > requests {
        return Err(format!(
            "hey {url}: {errors} of {requests} requests failed:\n{text}"
        ));
    }
    Ok((rate, errors))
}

/// Sections 3 and 4: NodePort connection rate, and unready endpoints.
fn node_port(
    c: &SegmentCluster,
    runs: usize,
    requests: usize,
    concurrency: usize,
) -> Result<(Vec<Figure>, Vec<String>), String> {
    use std::net::SocketAddrV4;
    use std::time::{Duration, Instant};
    let (plane, host) = (&c.plane, c.host());
    let log = || c.log();
    for (pod, node) in [("web-a", "net-a"), ("web-b", "net-b")] {
        plane.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {pod}, namespace: default, labels: {{app: web}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: echo
    image: {host}/bench/echo:1.0
    ports: [{{containerPort: 8080}}]
    env: [{{name: POD_NAME, value: {pod}}}]
    readinessProbe: {{httpGet: {{path: /ready, port: 8080}}, periodSeconds: 1, failureThreshold: 1}}
"#
        ));
    }
    plane.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: web-local, namespace: default}
spec:
  type: NodePort
  externalTrafficPolicy: Local
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
"#,
    );
    let ready = |pod: &str| {
        text(plane.kubectl(&[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ])) == "True"
    };
    for pod in ["web-a", "web-b"] {
        plane.eventually(&format!("{pod} to be Ready"), 180, log, || ready(pod));
    }
    let jsonpath = |what: &[&str], path: &str| {
        text(plane.kubectl(&[what, &["-o", &format!("jsonpath={path}")]].concat()))
    };
    let node_ip = |name: &str| -> Result<std::net::Ipv4Addr, String> {
        c.node(name)
            .ip()
            .ok_or_else(|| format!("{name} has no address"))
    };
    let forward = |ip: std::net::Ipv4Addr, port: u16| {
        c.segment
            .forward(SocketAddrV4::new(ip, port))
            .map_err(|e| format!("forward to {ip}:{port}: {e}"))
    };
    let np_local: u16 = jsonpath(&["get", "svc", "web-local"], "{.spec.ports[0].nodePort}")
        .parse()
        .map_err(|e| format!("web-local's nodePort: {e}"))?;
    let np: u16 = jsonpath(&["get", "svc", "web"], "{.spec.ports[0].nodePort}")
        .parse()
        .map_err(|e| format!("web's nodePort: {e}"))?;
    let web_b_ip: std::net::Ipv4Addr = jsonpath(&["get", "pod", "web-b"], "{.status.podIP}")
        .parse()
        .map_err(|e| format!("web-b's address: {e}"))?;
    let via_node_port = forward(node_ip("net-b")?, np_local)?;
    let direct = forward(web_b_ip, 8080)?;
    let via_web = forward(node_ip("net-a")?, np)?;
    plane.eventually("the NodePort to answer", 60, log, || {
        get_host(via_node_port, "/").as_deref() == Some("web-b")
    });

    // 3. Connection rate: alternating, so drift hits both alike.
    let (mut np_rates, mut direct_rates) = (Vec::new(), Vec::new());
    let (mut np_errors, mut direct_errors) = (0, 0);
    for _ in 0..runs {
        let (d, de) = hey(
            &format!("http://127.0.0.1:{direct}/"),
            requests,
            concurrency,
        )?;
        let (n, ne) = hey(
            &format!("http://127.0.0.1:{via_node_port}/"),
            requests,
            concurrency,
        )?;
        eprintln!("hey: direct {d:.0} conn/s ({de} failed), NodePort {n:.0} conn/s ({ne} failed)");
        direct_rates.push(d);
        np_rates.push(n);
        direct_errors += de;
        np_errors += ne;
    }
    let mut figures = vec![
        Figure::new(
            "nodeport_connections_per_s",
            "connections/s",
            median(&np_rates),
            "higher",
        )
        .peer(
            "the same pod through a direct host forward",
            median(&direct_rates),
        ),
    ];

    // 4. Unready → last new connection, `runs` times.
    let mut to_last = Vec::new();
    let mut probe_to_api = Vec::new();
    for run in 0..runs {
        plane.eventually("web-b to be Ready again", 60, log, || ready("web-b"));
        // Both replicas answer through the NodePort before the flip.
        plane.eventually("both replicas to answer", 30, log, || {
            let seen: std::collections::BTreeSet<String> =
                (0..12).filter_map(|_| get_host(via_web, "/")).collect();
            seen.len() == 2
        });
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop2, t0) = (stop.clone(), Instant::now());
        let hammer = std::thread::spawn(move || {
            let mut hits = Vec::new();
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                let at = t0.elapsed();
                if let Some(h) = get_host(via_web, "/") {
                    hits.push((at, h));
                }
            }
            hits
        });
        std::thread::sleep(Duration::from_millis(500));
        let flipped = t0.elapsed();
        if get_host(direct, "/unready").is_none() {
            return Err("web-b did not take /unready".into());
        }
        let mut unready_at = None;
        let deadline = Instant::now() + Duration::from_secs(30);
        while unready_at.is_none() && Instant::now() < deadline {
            if !ready("web-b") {
                unready_at = Some(t0.elapsed());
            }
        }
        let unready_at = unready_at.ok_or("web-b never turned unready")?;
        std::thread::sleep(Duration::from_secs(4));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let hits = hammer.join().map_err(|_| "the client thread panicked")?;
        let last_b = hits
            .iter()
            .filter(|(_, h)| h == "web-b")
            .map(|(at, _)| *at)
            .max()
            .ok_or("web-b never answered")?;
        let after: usize = hits.iter().filter(|(at, _)| *at > unready_at).count();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let gap = ms(last_b) - ms(unready_at);
        eprintln!(
            "run {run}: Ready=False {:.0} ms after the flip; last new connection to web-b {gap:.0} ms after that ({after} connections since, {} in all)",
            ms(unready_at) - ms(flipped),
            hits.len()
        );
        to_last.push(gap);
        probe_to_api.push(ms(unready_at) - ms(flipped));
        get_host(direct, "/ready-again").ok_or("web-b did not take /ready-again")?;
    }
    figures.push(Figure::new(
        "unready_to_last_new_connection_ms",
        "ms",
        median(&to_last),
        "lower",
    ));
    figures.push(Figure::new(
        "readiness_failure_to_api_ms",
        "ms",
        median(&probe_to_api),
        "lower",
    ));
    let notes = vec![
        format!(
            "nodeport_connections_per_s: hey -n {requests} -c {concurrency} -disable-keepalive from the host to web-local's NodePort on net-b \
             (externalTrafficPolicy: Local, so the node relays each connection to its own replica, in memory), against the same echo-server pod \
             through a direct host forward to its address; both through the segment's router (slirp); median of {runs} alternating runs; \
             failed requests (resets: the echo server takes one connection at a time and its listener's backlog overflows): NodePort {np_errors}, direct {direct_errors} of {}",
            requests * runs
        ),
        "unready_to_last_new_connection_ms: the host opens connections back to back through the `web` NodePort on net-a (two replicas, one per node); \
         web-b is told to fail its readiness probe (periodSeconds 1, failureThreshold 1); from the first poll that sees its Ready condition False \
         (kubectl every ~100 ms, so up to that much late) to the start of the last connection web-b answered (negative: the data path stopped first); \
         readiness_failure_to_api_ms: from the flip to that poll"
            .to_string(),
    ];
    Ok((figures, notes))
}
