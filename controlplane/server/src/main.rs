//! `skiff-controlplane`: the control plane in one process.
//!
//! `pki init` creates the cluster's credentials; `serve` runs the
//! Kubernetes API server over its embedded store and, beside it, the node
//! gateway that nodes dial over TLS. Scheduler and controllers join this
//! process as they land.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use skiff_apiserver::{pki, server};
use skiff_gateway::GatewayConfig;

#[derive(Parser)]
#[command(
    name = "skiff-controlplane",
    about = "The Skiff control plane",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cluster credentials.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
    /// Serve the Kubernetes API and the node gateway.
    Serve(ServeArgs),
}

#[derive(Subcommand)]
enum PkiCmd {
    /// Create the CA, serving certificate, admin kubeconfig and tokens in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
        /// Extra subject alternative names for the serving certificate.
        #[arg(long)]
        san: Vec<String>,
        /// API server URL written into the admin kubeconfig.
        #[arg(long)]
        server: Option<String>,
        /// How many node bootstrap tokens to create.
        #[arg(long)]
        bootstrap_tokens: Option<usize>,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// PKI directory written by `pki init`.
    #[arg(long)]
    dir: PathBuf,
    /// Data directory of the embedded store.
    #[arg(long)]
    data: PathBuf,
    /// Kubernetes API (HTTPS) listen address.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Node gateway (TLS, node protocol) listen address.
    #[arg(long, default_value = "127.0.0.1:6444")]
    node_listen: SocketAddr,
    /// Seconds without a lease renewal before a node is NotReady
    /// (kube's node-monitor-grace-period).
    #[arg(long, default_value_t = 40)]
    node_grace: u64,
}

fn pki_init(
    dir: PathBuf,
    san: Vec<String>,
    server: Option<String>,
    tokens: Option<usize>,
) -> Result<(), String> {
    let mut opts = pki::InitOptions {
        sans: san,
        ..Default::default()
    };
    if let Some(s) = server {
        opts.server_url = s;
    }
    if let Some(n) = tokens {
        opts.bootstrap_tokens = n;
    }
    let out = pki::init(&dir, &opts).map_err(|e| e.to_string())?;
    println!("wrote the cluster PKI to {}", dir.display());
    println!("admin kubeconfig: {}", out.admin_kubeconfig.display());
    for t in &out.bootstrap_tokens {
        println!("node bootstrap token: {t}");
    }
    Ok(())
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let cfg = server::ServeConfig::new(args.dir.clone(), args.data, args.listen);
    let api = server::start(&cfg).await?;
    println!("serving the Kubernetes API on https://{}", api.addr);
    let mut gw_cfg = GatewayConfig::new(args.dir, args.node_listen);
    gw_cfg.node_grace = Duration::from_secs(args.node_grace);
    let gateway = skiff_gateway::start(gw_cfg, api.state.clone()).await?;
    println!("serving the node gateway on {}", gateway.addr);

    shutdown_signal().await?;
    // Stop taking nodes and requests, then let the store finish queued writes
    // and release its file.
    drop(gateway);
    api.abort();
    let store = api.state.store.clone();
    drop(api);
    store.close().await.map_err(|e| e.to_string())
}

/// Ctrl-C or SIGTERM (how service managers and tests stop us).
async fn shutdown_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.map_err(|e| e.to_string()),
        _ = term.recv() => Ok(()),
    }
}

fn main() -> ExitCode {
    let result = match Cli::parse().cmd {
        Cmd::Pki {
            cmd:
                PkiCmd::Init {
                    dir,
                    san,
                    server,
                    bootstrap_tokens,
                },
        } => pki_init(dir, san, server, bootstrap_tokens),
        Cmd::Serve(args) => tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(serve(args))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-controlplane: {e}");
            ExitCode::FAILURE
        }
    }
}
