//! The node gateway's connection limits, with real hollow nodes beside an
//! attacker: idle connections are closed, one source address cannot hold
//! more than its share of unauthenticated connections, node sessions are
//! capped, and nodes keep connecting throughout.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Cluster;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

/// A TCP connection from `source` (any 127.0.0.0/8 address is ours).
async fn connect_from(source: &str, to: SocketAddr) -> TcpStream {
    let s = tokio::net::TcpSocket::new_v4().unwrap();
    s.bind(format!("{source}:0").parse().unwrap()).unwrap();
    s.connect(to).await.unwrap()
}

/// Whether the peer closed it within `wait` (EOF or an error).
async fn closed(s: &mut (impl tokio::io::AsyncRead + Unpin), wait: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(wait, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[test]
fn idle_and_excess_connections_are_closed_and_nodes_still_connect() {
    let mut c = Cluster::start(|g| {
        g.handshake_timeout = Duration::from_secs(3);
        g.max_unauthenticated_per_source = 4;
        g.max_connections = 2;
    });
    let gw = c.gateway_addr;
    // An attacker at 127.0.0.2 opens ten connections and sends nothing.
    let mut idle: Vec<TcpStream> = c.rt.block_on(async { futures_all(gw, 10).await });
    // Six are closed at once: four is the share of one address. (All
    // looked at together, well within the handshake timeout.)
    let (back, open): (Vec<TcpStream>, Vec<bool>) = c.rt.block_on(async {
        let tasks: Vec<_> = idle
            .drain(..)
            .map(|mut s| {
                tokio::spawn(async move {
                    let gone = closed(&mut s, Duration::from_millis(500)).await;
                    (s, !gone)
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out.into_iter().unzip()
    });
    idle = back;
    assert_eq!(open.iter().filter(|o| **o).count(), 4, "{open:?}");
    // Nodes (from 127.0.0.1) bootstrap and connect meanwhile.
    c.start_node("hn-0", 0);
    c.start_node("hn-1", 1);
    c.wait_output(&["get", "nodes"], "hn-1   Ready", 20);
    assert!(c.ok(&["get", "nodes"]).contains("hn-0   Ready"));
    // The idle ones are gone after the handshake timeout.
    c.rt.block_on(async {
        for (i, s) in idle.iter_mut().enumerate() {
            assert!(
                closed(s, Duration::from_secs(4)).await,
                "idle connection {i} still open"
            );
        }
    });
    // A TLS connection that never says Hello is closed too.
    let cfg = c.fleet_cfg.node("silent", 9);
    c.rt.block_on(async {
        let tls = skiff_hollow_node::identity::bootstrap_config(&cfg.ca).unwrap();
        let mut s = skiff_hollow_node::node::tls(&cfg, tls).await.unwrap();
        assert!(
            closed(&mut s, Duration::from_secs(4)).await,
            "silent TLS connection still open"
        );
    });
    // Node sessions are capped at two: a third node is turned away, the
    // first two keep their sessions.
    c.start_node("hn-2", 2);
    c.eventually("the session limit to refuse hn-2", 20, || {
        c.journal()
            .iter()
            .any(|l| l.contains("node session limit (2) reached"))
    });
    let j = c.journal().join("\n");
    assert!(
        j.contains("too many unauthenticated connections from this address"),
        "{j}"
    );
    let stats = c.stats();
    let beats = skiff_hollow_node::Stats::get(&stats.heartbeats);
    c.eventually("more heartbeats", 10, || {
        skiff_hollow_node::Stats::get(&stats.heartbeats) > beats + 3
    });
    let nodes = c.ok(&["get", "nodes"]);
    assert!(
        nodes.contains("hn-0   Ready") && nodes.contains("hn-1   Ready"),
        "{nodes}"
    );
    assert!(!nodes.contains("hn-2"), "{nodes}");
}

async fn futures_all(gw: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(connect_from("127.0.0.2", gw).await);
    }
    v
}
