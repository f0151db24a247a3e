//! `cargo xtask bench api`: latency of the Kubernetes REST API over HTTPS,
//! as a client sees it. Writes the JSON format of `tools/xtask/src/bench.rs`.
//!
//! Usage: bench-api --out FILE [--scale N] [--watchers N] [--writes N]
//!
//! The server is the library the `skiff-controlplane` binary runs
//! (`skiff_apiserver::start`, as the integration tests start it), on its own
//! tokio runtime with as many workers as the binary's (one per core), over a
//! fresh PKI and a store file next to FILE (same disk, fsync on commit). The
//! load generator runs on a second runtime in the same process and talks
//! real HTTPS to 127.0.0.1: rustls with the admin client certificate
//! (CN=kubernetes-admin, O=system:masters), one keep-alive HTTP/1.1
//! connection per client (hyper), JSON bodies.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use skiff_apiserver::{ServeConfig, pki};
use skiff_test_support::api::tls_client;
use skiff_test_support::bench::{Figure, Latencies, write_report};

/// Objects a list returns.
const LIST_SIZE: usize = 1000;
/// Unrelated RoleBindings and ClusterRoleBindings created beside the
/// bench user's (RBAC evaluates every binding of the namespace and cluster).
const RBAC_NOISE: usize = 50;

/// No row runs longer than this; a row cut short says so in the notes.
const ROW_LIMIT: Duration = Duration::from_secs(12);

struct Args {
    out: PathBuf,
    scale: usize,
    watchers: usize,
    writes: usize,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("target/bench/api.json"),
        scale: 1,
        watchers: 1000,
        writes: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut num = |what: &str| -> usize {
            it.next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match x.as_str() {
            "--scale" => a.scale = num("--scale").max(1),
            "--watchers" => a.watchers = num("--watchers").max(1),
            "--writes" => a.writes = num("--writes").max(1),
            "--out" => a.out = it.next().expect("--out FILE").into(),
            other => panic!("unknown argument {other:?}"),
        }
    }
    a
}

type Conn = SendRequest<Full<Bytes>>;

/// Where the server is and how to reach it.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    /// A non-admin client certificate (CN=bench-user, no groups): its
    /// requests go through RBAC (a RoleBinding in namespace bench).
    user_tls: tokio_rustls::TlsConnector,
}

impl Target {
    /// A new keep-alive connection: TCP, TLS with the client certificate,
    /// HTTP/1.1.
    async fn connect(&self) -> Conn {
        self.connect_with(&self.tls).await
    }

    async fn connect_with(&self, tls: &tokio_rustls::TlsConnector) -> Conn {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .expect("connect");
        tcp.set_nodelay(true).expect("nodelay");
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let tls = tls.connect(name, tcp).await.expect("TLS handshake");
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        send
    }
}

/// One request; the whole answer is read before it returns.
async fn call(
    c: &mut Conn,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (StatusCode, Bytes) {
    c.ready().await.expect("connection usable");
    let body = body
        .map(|b| Bytes::from(serde_json::to_vec(b).expect("JSON")))
        .unwrap_or_default();
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("request");
    let resp = c.send_request(req).await.expect("response");
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    (status, body)
}

#[track_caller]
fn expect(what: &str, (status, body): &(StatusCode, Bytes), want: u16) {
    assert_eq!(
        status.as_u16(),
        want,
        "{what}: {}",
        String::from_utf8_lossy(body)
    );
}

fn rv_of(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("JSON answer");
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .expect("resourceVersion")
        .to_string()
}

/// A ConfigMap of about 300 bytes as stored (two data keys and a label).
fn config_map(ns: &str, name: &str, seq: usize, rv: Option<&str>) -> Value {
    let mut cm = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "bench"}},
        "data": {"seq": seq.to_string(), "payload": "x".repeat(128)},
    });
    if let Some(rv) = rv {
        cm["metadata"]["resourceVersion"] = json!(rv);
    }
    cm
}

fn cm_path(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/configmaps")
}

/// Latencies of one measured row, and whether the time limit cut it short.
#[derive(Default)]
struct Stats {
    t: Latencies,
    cut_short: bool,
}

#[derive(Clone, Copy, Debug)]
enum Verb {
    Create,
    Get,
    List,
    Update,
}

impl Verb {
    fn name(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Get => "get",
            Verb::List => "list_1000",
            Verb::Update => "update",
        }
    }
}

/// The non-admin user of the `get_rbac` rows.
const USER: &str = "bench-user";

/// Objects `get` reads (created before the rows run).
const GET_POOL: usize = 200;

/// `clients` tasks, each on its own connection, each doing `per_client`
/// requests back to back (or until [`ROW_LIMIT`]).
async fn row(conns: &mut Vec<Conn>, clients: usize, per_client: usize, verb: Verb) -> Stats {
    let mut tasks = Vec::new();
    let start = Instant::now();
    let deadline = start + ROW_LIMIT;
    for c in 0..clients {
        let mut conn = conns.pop().expect("enough connections");
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_client);
            // Each updater owns one object and follows its resourceVersion,
            // as a controller does.
            let own = format!("upd-{clients}-{c}");
            let mut rv = String::new();
            if let Verb::Update = verb {
                let r = call(
                    &mut conn,
                    Method::POST,
                    &cm_path("bench"),
                    Some(&config_map("bench", &own, 0, None)),
                )
                .await;
                expect("create the updated object", &r, 201);
                rv = rv_of(&r.1);
            }
            let mut cut = false;
            for i in 0..per_client {
                if Instant::now() > deadline {
                    cut = true;
                    break;
                }
                let t = Instant::now();
                match verb {
                    Verb::Create => {
                        let name = format!("new-{clients}-{c}-{i}");
                        let r = call(
                            &mut conn,
                            Method::POST,
                            &cm_path("bench"),
                            Some(&config_map("bench", &name, i, None)),
                        )
                        .await;
                        expect("create", &r, 201);
                    }
                    Verb::Get => {
                        let path = format!("{}/pool-{}", cm_path("bench"), (c * 7 + i) % GET_POOL);
                        let r = call(&mut conn, Method::GET, &path, None).await;
                        expect("get", &r, 200);
                    }
                    Verb::List => {
                        let r = call(&mut conn, Method::GET, &cm_path("list"), None).await;
                        expect("list", &r, 200);
                        debug_assert!(r.1.len() > LIST_SIZE * 100);
                    }
                    Verb::Update => {
                        let path = format!("{}/{own}", cm_path("bench"));
                        let body = config_map("bench", &own, i + 1, Some(&rv));
                        let r = call(&mut conn, Method::PUT, &path, Some(&body)).await;
                        expect("update", &r, 200);
                        rv = rv_of(&r.1);
                    }
                }
                lat.push(t.elapsed());
            }
            (conn, lat, cut)
        }));
    }
    let mut s = Stats::default();
    for t in tasks {
        let (conn, lat, cut) = t.await.expect("client task");
        conns.push(conn);
        s.t.lat.extend(lat);
        s.cut_short |= cut;
    }
    s.t.wall = start.elapsed();
    s
}

/// Creates `names` ConfigMaps in `ns` from all connections (not measured).
async fn fill(conns: &mut Vec<Conn>, ns: &str, names: Vec<String>) {
    let per = names.len().div_ceil(conns.len()).max(1);
    let mut tasks = Vec::new();
    for chunk in names.chunks(per) {
        let chunk = chunk.to_vec();
        let ns = ns.to_string();
        let mut conn = conns.pop().expect("enough connections");
        tasks.push(tokio::spawn(async move {
            for (i, n) in chunk.iter().enumerate() {
                let r = call(
                    &mut conn,
                    Method::POST,
                    &cm_path(&ns),
                    Some(&config_map(&ns, n, i, None)),
                )
                .await;
                expect("fill", &r, 201);
            }
            conn
        }));
    }
    for t in tasks {
        conns.push(t.await.expect("fill task"));
    }
}

/// What the watchers have seen of each write.
struct FanOut {
    /// Per write: how many watchers have it.
    seen: Vec<AtomicUsize>,
    /// Per write: the latest arrival, in ns since `t0`.
    last: Vec<AtomicU64>,
    watchers: usize,
    t0: Instant,
    done: tokio::sync::Notify,
}

impl FanOut {
    fn arrived(&self, seq: usize) {
        if seq >= self.seen.len() {
            return;
        }
        let now = self.t0.elapsed().as_nanos() as u64;
        self.last[seq].fetch_max(now, Ordering::SeqCst);
        if self.seen[seq].fetch_add(1, Ordering::SeqCst) + 1 == self.watchers {
            self.done.notify_one();
        }
    }
}

/// The `"seq":"N"` of each complete event line in `buf`; keeps the rest.
fn take_seqs(buf: &mut Vec<u8>, mut f: impl FnMut(usize)) {
    const NEEDLE: &[u8] = b"\"seq\":\"";
    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
        let line = &buf[..nl];
        if let Some(at) = line.windows(NEEDLE.len()).position(|w| w == NEEDLE) {
            let digits = &line[at + NEEDLE.len()..];
            let end = digits
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(digits.len());
            if let Some(n) = std::str::from_utf8(&digits[..end])
                .ok()
                .and_then(|s| s.parse().ok())
            {
                f(n);
            }
        }
        buf.drain(..=nl);
    }
}

struct WatchResult {
    /// write acknowledged → last watcher has it
    from_ack: Latencies,
    /// write sent → last watcher has it
    from_send: Latencies,
    setup: Duration,
}

async fn watch_fan_out(
    target: &Target,
    writer: &mut Conn,
    watchers: usize,
    writes: usize,
) -> WatchResult {
    let ns = "watch";
    let r = call(
        writer,
        Method::POST,
        &cm_path(ns),
        // A seq no write uses, so write 0 changes the object.
        Some(&config_map(ns, "fan", writes + 1, None)),
    )
    .await;
    expect("create the watched object", &r, 201);
    let mut rv = rv_of(&r.1);
    let fan = Arc::new(FanOut {
        // Write 0 is the warm-up that proves every watch is live.
        seen: (0..=writes).map(|_| AtomicUsize::new(0)).collect(),
        last: (0..=writes).map(|_| AtomicU64::new(0)).collect(),
        watchers,
        t0: Instant::now(),
        done: tokio::sync::Notify::new(),
    });
    let setup_start = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(64));
    let mut opening = Vec::new();
    for _ in 0..watchers {
        let (target, fan, gate, rv) = (target.clone(), fan.clone(), gate.clone(), rv.clone());
        opening.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("semaphore");
            let mut conn = target.connect().await;
            conn.ready().await.expect("connection usable");
            let path = format!("{}?watch=1&resourceVersion={rv}", cm_path("watch"));
            let req = Request::builder()
                .uri(path)
                .header("host", "127.0.0.1")
                .header("accept", "application/json")
                .body(Full::new(Bytes::new()))
                .expect("request");
            let resp = conn.send_request(req).await.expect("watch response");
            assert_eq!(resp.status(), 200, "watch");
            drop(permit);
            let mut body = resp.into_body();
            tokio::spawn(async move {
                let _conn = conn;
                let mut buf = Vec::new();
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                        take_seqs(&mut buf, |n| fan.arrived(n));
                    }
                }
            });
        }));
    }
    for o in opening {
        o.await.expect("watch opened");
    }
    let wait_all = |what: String| {
        let fan = fan.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(30), fan.done.notified())
                .await
                .unwrap_or_else(|_| panic!("{what}: not every watcher saw it within 30 s"));
        }
    };
    let mut from_ack = Latencies::default();
    let mut from_send = Latencies::default();
    let path = format!("{}/fan", cm_path(ns));
    let t_all = Instant::now();
    let mut setup = Duration::ZERO;
    for seq in 0..=writes {
        let body = config_map(ns, "fan", seq, Some(&rv));
        let waiting = wait_all(format!("write {seq}"));
        let sent = fan.t0.elapsed();
        let r = call(writer, Method::PUT, &path, Some(&body)).await;
        let acked = fan.t0.elapsed();
        expect("watched update", &r, 200);
        rv = rv_of(&r.1);
        waiting.await;
        if seq == 0 {
            setup = setup_start.elapsed();
            continue;
        }
        let last = Duration::from_nanos(fan.last[seq].load(Ordering::SeqCst));
        from_ack.lat.push(last.saturating_sub(acked));
        from_send.lat.push(last.saturating_sub(sent));
    }
    from_ack.wall = t_all.elapsed();
    from_send.wall = from_ack.wall;
    WatchResult {
        from_ack,
        from_send,
        setup,
    }
}

fn main() {
    let a = args();
    let parent = a
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).expect("output directory");
    // The store lives next to the output: the same disk as the build.
    let dir = tempfile::Builder::new()
        .prefix("bench-api-")
        .tempdir_in(&parent)
        .expect("temp dir");
    let pki_dir = dir.path().join("pki");
    pki::init(&pki_dir, &pki::InitOptions::default()).expect("pki init");
    // The binary's runtime: `Runtime::new()`, one worker per core.
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("apiserver")
        .build()
        .expect("server runtime");
    let cfg = ServeConfig::new(
        pki_dir.clone(),
        dir.path().join("data"),
        "127.0.0.1:0".parse().expect("address"),
    );
    let running = server_rt
        .block_on(skiff_apiserver::start(&cfg))
        .expect("server starts");
    let target = Target {
        addr: running.addr,
        tls: tls_client(&pki_dir, "kubernetes-admin", &["system:masters"]),
        user_tls: tls_client(&pki_dir, USER, &[]),
    };
    eprintln!("bench-api: serving on https://{}", running.addr);
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("client")
        .build()
        .expect("client runtime");
    let (figures, notes) = client_rt.block_on(run(&target, &a));
    write_report(&a.out, "api", &figures, &notes);
    drop(client_rt);
    running.abort();
    let store = running.state.store.clone();
    drop(running);
    let _ = server_rt.block_on(store.close());
}

async fn run(target: &Target, a: &Args) -> (Vec<Figure>, Vec<String>) {
    let mut conns = Vec::new();
    for _ in 0..64 {
        conns.push(target.connect().await);
    }
    for ns in ["bench", "list", "watch"] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
        let r = call(
            &mut conns[0],
            Method::POST,
            "/api/v1/namespaces",
            Some(&body),
        )
        .await;
        expect("create namespace", &r, 201);
    }
    let names =
        |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}-{i}")).collect::<Vec<_>>();
    fill(&mut conns, "bench", names("pool", GET_POOL)).await;
    fill(&mut conns, "list", names("item", LIST_SIZE)).await;
    // Warm every connection and the server's code paths (not measured).
    row(&mut conns, 64, 5, Verb::Get).await;
    let (_, list) = call(&mut conns[0], Method::GET, &cm_path("list"), None).await;
    let list_bytes = list.len();
    let items = serde_json::from_slice::<Value>(&list).expect("list JSON")["items"]
        .as_array()
        .map_or(0, Vec::len);
    assert_eq!(items, LIST_SIZE, "the list namespace");

    // A non-admin user allowed to read ConfigMaps in bench through a Role
    // and RoleBinding, among unrelated bindings as a cluster has them.
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "cm-reader", "namespace": "bench"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}]});
    let r = call(
        &mut conns[0],
        Method::POST,
        &format!("{rbac}/namespaces/bench/roles"),
        Some(&role),
    )
    .await;
    expect("create role", &r, 201);
    for i in 0..RBAC_NOISE {
        let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("other-{i}"), "namespace": "bench"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
            "subjects": [{"kind": "User", "name": format!("someone-{i}")}]});
        let r = call(
            &mut conns[0],
            Method::POST,
            &format!("{rbac}/namespaces/bench/rolebindings"),
            Some(&rb),
        )
        .await;
        expect("create rolebinding", &r, 201);
        let crb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": format!("bench-other-{i}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": format!("someone-{i}")}]});
        let r = call(
            &mut conns[0],
            Method::POST,
            &format!("{rbac}/clusterrolebindings"),
            Some(&crb),
        )
        .await;
        expect("create clusterrolebinding", &r, 201);
    }
    let rb = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "bench-user", "namespace": "bench"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"kind": "User", "name": USER}]});
    let r = call(
        &mut conns[0],
        Method::POST,
        &format!("{rbac}/namespaces/bench/rolebindings"),
        Some(&rb),
    )
    .await;
    expect("create rolebinding", &r, 201);
    let mut user_conns = Vec::new();
    for _ in 0..64 {
        user_conns.push(target.connect_with(&target.user_tls).await);
    }
    // Warm (not measured); also checks the binding took effect at once.
    row(&mut user_conns, 64, 5, Verb::Get).await;

    let s = a.scale;
    // (verb, ops per client at 1 client, ops per client at 64 clients)
    let plan = [
        (Verb::Create, 1000 * s, 50 * s),
        (Verb::Get, 3000 * s, 150 * s),
        (Verb::Update, 1000 * s, 50 * s),
        (Verb::List, 200 * s, 5 * s),
    ];
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    let mut cut = Vec::new();
    // (verb, as the RBAC user) rows, in order.
    let plan = plan
        .into_iter()
        .flat_map(|(v, one, many)| {
            let mut rows = vec![(v, false, one, many)];
            if let Verb::Get = v {
                rows.push((v, true, one, many));
            }
            rows
        })
        .collect::<Vec<_>>();
    for (verb, as_user, one, many) in plan {
        for (clients, per) in [(1, one), (64, many)] {
            let pool = if as_user { &mut user_conns } else { &mut conns };
            let st = row(pool, clients, per, verb).await;
            let label = format!(
                "{}{}_{clients}_client{}",
                verb.name(),
                if as_user { "_rbac_user" } else { "" },
                if clients == 1 { "" } else { "s" }
            );
            eprintln!(
                "bench-api: {label}: {} ops, {:.0} ops/s, p50 {:.2} ms, p99 {:.2} ms",
                st.t.lat.len(),
                st.t.ops(),
                st.t.pct(0.5),
                st.t.pct(0.99)
            );
            if st.cut_short {
                cut.push(label.clone());
            }
            figures.push(Figure::new(
                format!("{label}_p50"),
                "ms",
                st.t.pct(0.5),
                "lower",
            ));
            figures.push(Figure::new(
                format!("{label}_p99"),
                "ms",
                st.t.pct(0.99),
                "lower",
            ));
            figures.push(Figure::new(label, "ops/s", st.t.ops(), "higher"));
        }
    }
    let w = watch_fan_out(target, &mut conns[0], a.watchers, a.writes).await;
    eprintln!(
        "bench-api: watch fan-out to {} watchers (set up in {:.1} s): write ack -> last watcher p50 {:.2} ms, p99 {:.2} ms; write sent -> last p50 {:.2} ms, p99 {:.2} ms",
        a.watchers,
        w.setup.as_secs_f64(),
        w.from_ack.pct(0.5),
        w.from_ack.pct(0.99),
        w.from_send.pct(0.5),
        w.from_send.pct(0.99),
    );
    let n = a.watchers;
    for (what, st) in [("ack", &w.from_ack), ("send", &w.from_send)] {
        for (p, q) in [("p50", 0.5), ("p99", 0.99)] {
            figures.push(Figure::new(
                format!("watch_{n}_watchers_{what}_to_last_{p}"),
                "ms",
                st.pct(q),
                "lower",
            ));
        }
    }

    notes.push(
        "server: skiff_apiserver::start (what `skiff-controlplane serve` runs) in this process on its own tokio runtime (one worker per core, as the binary), fresh PKI, store file in a temp dir beside the output (same disk; skiff-store fsyncs each commit); client: a second tokio runtime (2 workers) in the same process, so client and server share the CPUs"    .to_string());
    notes.push(format!("transport: HTTPS to 127.0.0.1 with rustls (TLS 1.3, ring) and the admin client certificate (CN=kubernetes-admin, O=system:masters: RBAC short-circuits for system:masters), HTTP/1.1 keep-alive via hyper, one connection per client, established and warmed before measuring; JSON request and response bodies; the get_rbac_user rows use a second set of 64 connections with a client certificate CN=bench-user (no groups), allowed by a Role (get/list/watch configmaps) and a RoleBinding in namespace bench, beside {RBAC_NOISE} unrelated RoleBindings in bench and {RBAC_NOISE} unrelated ClusterRoleBindings (to ClusterRole view), so every request is authorized by RBAC"));
    notes.push(format!(
        "rows: N clients each send requests back to back (a client awaits its previous answer); latency = request sent to whole response body read; ops/s = all requests of the row / its wall time. create: POST of a new ConfigMap (~300 B: a label, two data keys) to namespace bench; get: GET of one of {GET_POOL} ConfigMaps; update: PUT of the client's own ConfigMap with the resourceVersion of its previous answer (no conflicts); list_1000: GET of namespace list holding exactly {LIST_SIZE} such ConfigMaps ({list_bytes} bytes of JSON). Counts: 1 client x 1000/3000/1000/200 and 64 clients x 50/150/50/5 (create/get/update/list) times --scale {s}; each row stops after {} s",
        ROW_LIMIT.as_secs()
    ));
    notes.push(format!(
        "watch: {n} watch streams (each its own HTTPS connection, GET .../namespaces/watch/configmaps?watch=1&resourceVersion=RV) on one namespace; after a warm-up write seen by all, {} sequential PUTs of one ConfigMap, each waiting until every watcher has the event; send_to_last = start of the PUT -> the last watcher's client task received the event line (the fan-out figure); ack_to_last = PUT response received -> that last arrival, clamped at 0: the server usually delivers to all watchers before the writer's own response gets the CPU, so it is near 0 and send_to_last is the one to read",
        a.writes
    ));
    if !cut.is_empty() {
        notes.push(format!(
            "rows cut short by the time limit: {}",
            cut.join(", ")
        ));
    }
    notes.push("machine: 2 vCPUs shared with other work (other builds and tests were running): figures are noisy, and at 64 clients latency is dominated by queueing for the 2 cores (client TLS and JSON work included)".into());
    (figures, notes)
}
