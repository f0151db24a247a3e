//! `cargo xtask bench logs`: `kubectl logs` through the whole path — the API
//! server's `pods/log`, the node gateway's log streams, a hollow node's
//! kubelet core and fake runtime — all in this process on 127.0.0.1.
//!
//! Usage: bench-logs --out FILE [--requests 500] [--lines 200] [--every-ms 50]
//!
//! Figures: the latency of a snapshot read (`tailLines=100` of a 1000-line
//! log, ~40 KiB, one keep-alive HTTPS connection, sequential) p50/p99; and
//! for a follower, the delivery latency of each new line: its arrival at the
//! client minus the node's write time (the `timestamps=true` prefix, ms
//! resolution, same clock), p50/p99.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::json;
use skiff_apiserver::{ServeConfig, pki};
use skiff_e2e::bench::{Args, Figure, Latencies, write_report};
use skiff_hollow_node::{Fleet, FleetConfig};

type Conn = SendRequest<Full<Bytes>>;

async fn connect(addr: std::net::SocketAddr, pki_dir: &std::path::Path) -> Conn {
    let tls = skiff_e2e::api::tls_client(pki_dir, "bench-admin", &["system:masters"]);
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let tls = tls
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("TLS");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP handshake");
    tokio::spawn(conn);
    send
}

fn request(method: Method, path: &str, body: Option<serde_json::Value>) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            body.map(|b| b.to_string()).unwrap_or_default(),
        )))
        .expect("request")
}

async fn call(
    c: &mut Conn,
    method: Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, Bytes) {
    c.ready().await.expect("connection");
    let resp = c
        .send_request(request(method, path, body))
        .await
        .expect("response");
    let code = resp.status().as_u16();
    (
        code,
        resp.into_body().collect().await.expect("body").to_bytes(),
    )
}

fn pod(name: &str, annotations: serde_json::Value) -> serde_json::Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {"nodeName": "hn-0", "containers": [{"name": "main", "image": "registry.local/app:1"}]}
    })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Unix ms of an RFC 3339 `…T15:04:05.000000000Z` prefix.
fn stamp_ms(ts: &str) -> u64 {
    let t: k8s_time::Time = serde_json::from_value(json!(ts)).expect("timestamp");
    t.0.as_millisecond() as u64
}

mod k8s_time {
    pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
}

fn main() {
    let a = Args::parse("target/bench/logs.json");
    let requests: usize = a.get("requests", 500);
    let lines: usize = a.get("lines", 200);
    let every_ms: u64 = a.get("every-ms", 50);
    let dir = tempfile::tempdir().expect("tempdir");
    let pki_dir = dir.path().join("pki");
    let out = pki::init(&pki_dir, &pki::InitOptions::default()).expect("pki");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (figures, notes) = rt.block_on(async {
        let cfg = ServeConfig::new(pki_dir.clone(), dir.path().join("data"), "127.0.0.1:0".parse().unwrap());
        let api = skiff_apiserver::start(&cfg).await.expect("api server");
        let mut g = skiff_gateway::GatewayConfig::new(pki_dir.clone(), "127.0.0.1:0".parse().unwrap());
        g.quiet = true;
        let gw = skiff_gateway::start(g, api.state.clone()).await.expect("gateway");
        let fleet_cfg = FleetConfig::new(gw.addr, &pki_dir.join(pki::CA_CERT), &out.bootstrap_tokens[0])
            .expect("fleet");
        let mut fleet = Fleet::new();
        fleet.start(fleet_cfg.node("hn-0", 0));
        let mut c = connect(api.addr, &pki_dir).await;
        let banner: String = (0..1000).map(|i| format!("line {i:04} of a forty byte log line....\n")).collect();
        let pods = "/api/v1/namespaces/default/pods";
        let every = every_ms.to_string();
        for p in [
            pod("snap", json!({"hollow.skiff.dev/log": banner})),
            pod("ticker", json!({"hollow.skiff.dev/log-every-ms": every})),
        ] {
            let (code, body) = call(&mut c, Method::POST, pods, Some(p)).await;
            assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
        }
        // Until the node runs both pods.
        let deadline = Instant::now() + Duration::from_secs(60);
        for name in ["snap", "ticker"] {
            loop {
                let (code, _) = call(&mut c, Method::GET, &format!("{pods}/{name}/log?tailLines=1"), None).await;
                if code == 200 {
                    break;
                }
                assert!(Instant::now() < deadline, "pod {name} never ran");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        let mut snap = Latencies::default();
        let t0 = Instant::now();
        for _ in 0..requests {
            let t = Instant::now();
            let (code, body) = call(&mut c, Method::GET, &format!("{pods}/snap/log?tailLines=100"), None).await;
            snap.lat.push(t.elapsed());
            assert_eq!((code, body.iter().filter(|b| **b == b'\n').count()), (200, 100));
        }
        snap.wall = t0.elapsed();

        let mut follow = Latencies::default();
        c.ready().await.expect("connection");
        let resp = c
            .send_request(request(Method::GET, &format!("{pods}/ticker/log?follow=true&tailLines=0&timestamps=true"), None))
            .await
            .expect("follow");
        assert_eq!(resp.status(), 200);
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let t0 = Instant::now();
        while follow.lat.len() < lines {
            let frame = body.frame().await.expect("stream open").expect("frame");
            let arrived = now_ms();
            let Ok(data) = frame.into_data() else { continue };
            buf.extend_from_slice(&data);
            while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=i).collect();
                let text = String::from_utf8_lossy(&line);
                let ts = text.split(' ').next().unwrap_or("");
                let lag = arrived.saturating_sub(stamp_ms(ts));
                follow.lat.push(Duration::from_millis(lag));
            }
        }
        follow.wall = t0.elapsed();
        drop(body);
        drop(fleet);
        drop(gw);
        drop(api);
        let figures = vec![
            Figure::new("snapshot read (tailLines=100, ~4 KiB) p50", "ms", snap.pct(0.5), "lower"),
            Figure::new("snapshot read (tailLines=100, ~4 KiB) p99", "ms", snap.pct(0.99), "lower"),
            Figure::new("snapshot reads per second (1 connection)", "ops/s", snap.ops(), "higher"),
            Figure::new("follow: new line delivered p50", "ms", follow.pct(0.5), "lower"),
            Figure::new("follow: new line delivered p99", "ms", follow.pct(0.99), "lower"),
        ];
        let notes = vec![format!(
            "one process: API server, node gateway and one hollow node on 127.0.0.1 (TLS everywhere); {requests} sequential snapshot reads over one keep-alive HTTPS connection with an admin client certificate; follow: {lines} lines written every {every_ms} ms, latency = client arrival - node write time (ms resolution, one clock; includes the hollow node's wake-up)"
        )];
        (figures, notes)
    });
    write_report(&a.out, "logs", &figures, &notes);
}
