//! `skiff-hollow-node --gateway ADDR --ca ca.crt --token ID.SECRET [--nodes N] [--prefix NAME]`:
//! runs N hollow nodes against a node gateway and prints heartbeat figures
//! every 10 s.

use std::time::Duration;

use skiff_hollow_node::{Fleet, FleetConfig, Stats, stats::quantile};

fn usage() -> ! {
    eprintln!(
        "usage: skiff-hollow-node --gateway HOST:PORT --ca CA.crt --token ID.SECRET [--nodes N] [--prefix NAME]"
    );
    std::process::exit(2)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut gateway, mut ca, mut token) = (None, None, None);
    let (mut nodes, mut prefix) = (1u32, "hollow".to_string());
    while let Some(a) = args.next() {
        let mut v = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--gateway" => gateway = Some(v()),
            "--ca" => ca = Some(v()),
            "--token" => token = Some(v()),
            "--nodes" => nodes = v().parse().unwrap_or_else(|_| usage()),
            "--prefix" => prefix = v(),
            _ => usage(),
        }
    }
    let (Some(gateway), Some(ca), Some(token)) = (gateway, ca, token) else {
        usage()
    };
    let gateway = gateway.parse().unwrap_or_else(|_| usage());
    let cfg = FleetConfig::new(gateway, std::path::Path::new(&ca), &token).unwrap_or_else(|e| {
        eprintln!("skiff-hollow-node: {e}");
        std::process::exit(1)
    });
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    rt.block_on(async move {
        let mut fleet = Fleet::new();
        fleet.start_many(&cfg, &prefix, nodes);
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let s = &fleet.stats;
            let mut hb = s.take_heartbeats();
            println!(
                "sessions={} heartbeats={} p50={}us p99={}us errors={} last_error={:?}",
                Stats::get(&s.sessions),
                hb.len(),
                quantile(&mut hb, 0.5),
                quantile(&mut hb, 0.99),
                Stats::get(&s.errors),
                s.last_error()
            );
        }
    });
}
