//! `skiff-controlplane`: the control plane in one process.
//!
//! `pki init` creates the cluster's credentials; `serve` runs the
//! Kubernetes API server over its embedded store and, beside it, the node
//! gateway that nodes dial over TLS, and the scheduler and the controller
//! manager as API clients.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use skiff_apiserver::pki;
use skiff_controlplane::ServeOptions;

#[derive(Parser)]
#[command(
    name = "skiff-controlplane",
    about = "The Skiff control plane",
    version
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    log: skiff_logging::LogArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cluster credentials.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
    /// Serve the Kubernetes API and the node gateway.
    Serve(Box<ServeArgs>),
    /// The members of a replicated control plane.
    Member {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
}

#[derive(Subcommand)]
enum MemberCmd {
    /// List the members, the leader and the term.
    List {
        /// A member's PKI directory (its member certificate is used).
        #[arg(long)]
        dir: PathBuf,
        /// Any member's API URL.
        #[arg(long, default_value = "https://127.0.0.1:6443")]
        server: String,
    },
    /// Remove a member (by the id `list` shows); the last voter is kept.
    Remove {
        id: String,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "https://127.0.0.1:6443")]
        server: String,
    },
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
    /// Show when each certificate in DIR expires (like kubeadm's).
    CheckExpiration {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Re-issue a certificate from the existing CA with a fresh key, keeping
    /// its names: `apiserver`, a kubeconfig (`admin.kubeconfig`...) or `all`.
    /// A running plane serves a renewed `apiserver` certificate at the next
    /// handshake; components reading a renewed kubeconfig need a restart.
    Renew {
        /// What to renew (see `check-expiration`), or `all`.
        name: String,
        #[arg(long)]
        dir: PathBuf,
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
    #[command(flatten)]
    options: ServeOptions,
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let running = skiff_controlplane::start(args.dir, args.data, args.options)
        .await
        .map_err(|e| e.to_string())?;
    running
        .serve_until_stopped()
        .await
        .map_err(|e| e.to_string())
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
    if !out.bootstrap_tokens.is_empty() {
        println!(
            "WARNING: these are fleet tokens ({}): multi-use and bound to no node name, \
             for tests and lab fleets; for production delete that file and create \
             bootstrap-token-<id> Secrets (see docs/SECURITY.md)",
            dir.join(pki::BOOTSTRAP_TOKEN_FILE).display()
        );
    }
    Ok(())
}

fn pki_check_expiration(dir: PathBuf) -> Result<(), String> {
    let list = pki::expirations(&dir).map_err(|e| e.to_string())?;
    print!(
        "{}",
        pki::expiration_table(&list, std::time::SystemTime::now())
    );
    Ok(())
}

fn pki_renew(dir: PathBuf, name: String) -> Result<(), String> {
    for n in pki::renew(&dir, &name).map_err(|e| e.to_string())? {
        println!("{n}: renewed");
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = skiff_logging::init(&cli.log) {
        eprintln!("skiff-controlplane: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.cmd {
        Cmd::Pki {
            cmd:
                PkiCmd::Init {
                    dir,
                    san,
                    server,
                    bootstrap_tokens,
                },
        } => pki_init(dir, san, server, bootstrap_tokens),
        Cmd::Pki {
            cmd: PkiCmd::CheckExpiration { dir },
        } => pki_check_expiration(dir),
        Cmd::Pki {
            cmd: PkiCmd::Renew { name, dir },
        } => pki_renew(dir, name),
        Cmd::Serve(args) => tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(serve(*args))),
        Cmd::Member { cmd } => {
            let (dir, server, remove) = match cmd {
                MemberCmd::List { dir, server } => (dir, server, None),
                MemberCmd::Remove { id, dir, server } => (dir, server, Some(id)),
            };
            tokio::runtime::Runtime::new()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(skiff_controlplane::member_cmd(dir, server, remove))
                        .map_err(|e| e.to_string())
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
