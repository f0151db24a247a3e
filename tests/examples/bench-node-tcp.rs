//! `cargo xtask bench node-tcp`: TCP throughput between the host and a node
//! (virtio-net + smoltcp), host→node (`sink`) and node→host (`source N`),
//! over QEMU user networking and over a tap device in a network namespace.
//! The peer is the same transfer, same client code, to a tiny sink/source
//! server in this process over Linux loopback.
//!
//! Options: `--out PATH`, `--mib N` per transfer (default 32), `--runs N` (3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use skiff_e2e::bench::{Args, Figure, write_report};
use skiff_e2e::netns::NetNs;
use skiff_e2e::*;

const CHUNK: usize = 64 * 1024;

/// The diag protocol's `sink` / `source N`, served by a Linux process.
fn loopback_server() -> SocketAddr {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut r = BufReader::with_capacity(CHUNK, conn.try_clone().unwrap());
                let mut w = conn;
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                let t = Instant::now();
                if line.trim() == "sink" {
                    let mut buf = vec![0u8; CHUNK];
                    let mut n = 0u64;
                    while let Ok(k) = r.read(&mut buf) {
                        if k == 0 {
                            break;
                        }
                        n += k as u64;
                    }
                    let us = t.elapsed().as_micros();
                    let _ = writeln!(w, "received bytes={n} us={us}");
                } else if let Some(n) = line.trim().strip_prefix("source ") {
                    let mut left: u64 = n.parse().unwrap_or(0);
                    let buf = vec![0xa5u8; CHUNK];
                    while left > 0 {
                        let k = left.min(CHUNK as u64) as usize;
                        if w.write_all(&buf[..k]).is_err() {
                            break;
                        }
                        left -= k as u64;
                    }
                }
            });
        }
    });
    addr
}

/// (host→target MiB/s, target→host MiB/s), medians over `runs`.
fn measure(diag: &DiagClient, bytes: u64, runs: usize) -> Result<(f64, f64), String> {
    let mib = bytes as f64 / (1024.0 * 1024.0);
    let (mut up, mut down) = (vec![], vec![]);
    for _ in 0..runs {
        let t = Instant::now();
        let (got, _) = diag.sink(bytes, CHUNK).map_err(|e| format!("sink: {e}"))?;
        if got != bytes {
            return Err(format!("sink received {got} of {bytes} bytes"));
        }
        up.push(mib / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let got = diag.source(bytes).map_err(|e| format!("source: {e}"))?;
        if got != bytes {
            return Err(format!("source sent {got} of {bytes} bytes"));
        }
        down.push(mib / t.elapsed().as_secs_f64());
    }
    Ok((median(&up), median(&down)))
}

fn main() {
    let args = Args::parse("target/bench/node-tcp.json");
    let bytes: u64 = args.get::<u64>("mib", 32) << 20;
    let runs: usize = args.get("runs", 3);
    require_qemu();
    let accel = accel();

    let peer_addr = loopback_server();
    let peer = DiagClient::new(peer_addr).with_timeout(Duration::from_secs(60));
    let (peer_up, peer_down) = measure(&peer, bytes, runs).expect("loopback peer");
    eprintln!("loopback: host→peer {peer_up:.1} MiB/s, peer→host {peer_down:.1} MiB/s");
    let peer_name = "Linux process over host loopback (same client)";

    let mut figures = Vec::new();
    let mut notes = vec![format!(
        "{} MiB per transfer, median of {runs}; microvm, {accel:?}, 1 vCPU; host-side wall time from connect to close; peer: {peer_name}",
        bytes >> 20
    )];

    // QEMU user networking (slirp) with hostfwd.
    let b = boot(user_net(Machine::Microvm));
    let diag = b.diag.clone().with_timeout(Duration::from_secs(120));
    match measure(&diag, bytes, runs) {
        Ok((up, down)) => {
            eprintln!("user-net: host→node {up:.1} MiB/s, node→host {down:.1} MiB/s");
            figures.push(
                Figure::new("user_net_host_to_node", "MiB/s", up, "higher")
                    .peer(peer_name, peer_up),
            );
            figures.push(
                Figure::new("user_net_node_to_host", "MiB/s", down, "higher")
                    .peer(peer_name, peer_down),
            );
        }
        Err(e) => b.fail(&format!("user networking transfer: {e}")),
    }
    b.shutdown();

    // Tap in a network namespace (needs root and iproute2).
    match tap_run(bytes, runs) {
        Ok((up, down)) => {
            eprintln!("tap: host→node {up:.1} MiB/s, node→host {down:.1} MiB/s");
            figures.push(
                Figure::new("tap_host_to_node", "MiB/s", up, "higher").peer(peer_name, peer_up),
            );
            figures.push(
                Figure::new("tap_node_to_host", "MiB/s", down, "higher").peer(peer_name, peer_down),
            );
        }
        Err(e) => {
            eprintln!("tap: {e}");
            notes.push(format!(
                "tap figures missing: {}",
                e.lines().next().unwrap_or("")
            ));
        }
    }
    write_report(&args.out, "node-tcp", &figures, &notes);
}

fn tap_run(bytes: u64, runs: usize) -> Result<(f64, f64), String> {
    let ns = NetNs::with_tap("192.168.79.1/24").map_err(|e| e.to_string())?;
    let guest = Ipv4Addr::new(192, 168, 79, 2);
    let token = new_diag_token().map_err(|e| e.to_string())?;
    let mut node = spec(Machine::Microvm)
        .net(Net::Tap {
            ifname: ns.tap.clone(),
        })
        .netns(ns.name.clone())
        .args([
            "skiff.net=static skiff.ip=192.168.79.2/24 skiff.gw=192.168.79.1",
            &format!("skiff.diag={DIAG_PORT}"),
            &format!("skiff.diag_token={token}"),
        ])
        .launch()
        .map_err(|e| e.to_string())?;
    node.wait_for_stage("diag-ready", Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    let r = ns
        .run(move || {
            let diag = DiagClient::connect((guest, DIAG_PORT).into(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?
                .with_timeout(Duration::from_secs(120))
                .with_token(Some(token));
            let r = measure(&diag, bytes, runs);
            let _ = diag.shutdown();
            r
        })
        .map_err(|e| e.to_string())?;
    let _ = node.wait(Duration::from_secs(10));
    r.map_err(|e| format!("{e}\nlog:\n{}", node.log_text()))
}
