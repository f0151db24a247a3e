//! `skiff-hollow-node --gateway ADDR --ca ca.crt --token ID.SECRET [--nodes N] [--prefix NAME]`:
//! runs N hollow nodes against a node gateway and logs heartbeat figures
//! every 10 s.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use skiff_hollow_node::{Fleet, FleetConfig, Stats, stats::quantile};

#[derive(Parser)]
#[command(
    name = "skiff-hollow-node",
    about = "Simulated Skiff nodes (the real kubelet core and node protocol, a fake runtime)",
    version
)]
struct Cli {
    /// The node gateway's address.
    #[arg(long)]
    gateway: SocketAddr,
    /// The cluster CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// A bootstrap token, `ID.SECRET`.
    #[arg(long)]
    token: String,
    /// How many nodes to run.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// Node names are `<prefix>-<i>`.
    #[arg(long, default_value = "hollow")]
    prefix: String,
    #[command(flatten)]
    log: skiff_logging::LogArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = skiff_logging::init(&cli.log) {
        eprintln!("skiff-hollow-node: {e}");
        return ExitCode::FAILURE;
    }
    let cfg = match FleetConfig::new(cli.gateway, &cli.ca, &cli.token) {
        Ok(cfg) => cfg,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "starting the tokio runtime");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let mut fleet = Fleet::new();
        fleet.start_many(&cfg, &cli.prefix, cli.nodes);
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let s = &fleet.stats;
            let mut hb = s.take_heartbeats();
            tracing::info!(
                sessions = Stats::get(&s.sessions),
                heartbeats = hb.len(),
                p50_us = quantile(&mut hb, 0.5),
                p99_us = quantile(&mut hb, 0.99),
                errors = Stats::get(&s.errors),
                last_error = ?s.last_error(),
                "heartbeats"
            );
        }
    })
}
