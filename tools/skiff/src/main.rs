//! `skiff`: the Skiff command line. `skiff server` runs a control plane,
//! `skiff token create` makes a node's join token, `skiff node boot` boots
//! a node that joins with it, `skiff kubeconfig` prints the admin's
//! kubeconfig for kubectl.

mod node;
mod server;
mod token;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "skiff",
    about = "The Skiff command line",
    version,
    after_help = "Getting started:\n  \
        skiff server                  # a control plane; prints these steps with its addresses\n  \
        export KUBECONFIG=skiff-server/pki/admin.kubeconfig\n  \
        skiff token create            # a node's join token\n  \
        skiff node boot --server 127.0.0.1:6444 --ca skiff-server/pki/ca.crt --token <token>\n  \
        kubectl get nodes"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    log: skiff_logging::LogArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a control plane: the Kubernetes API, the node gateway, the
    /// scheduler and the controllers over an embedded store. The first start
    /// creates the cluster's PKI in DIR/pki; it prints how to reach it.
    Server(server::ServerArgs),
    /// Node bootstrap tokens: create, list, revoke.
    Token(token::TokenArgs),
    /// Print the admin kubeconfig of a `skiff server` (for kubectl).
    Kubeconfig(server::KubeconfigArgs),
    /// Work with nodes.
    #[command(subcommand)]
    Node(node::NodeCmd),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    skiff_logging::init(&cli.log)?;
    match cli.cmd {
        Cmd::Server(args) => server::run(args),
        Cmd::Token(args) => token::run(args),
        Cmd::Kubeconfig(args) => server::kubeconfig(args),
        Cmd::Node(cmd) => {
            let code = node::run(cmd)?;
            std::process::exit(code)
        }
    }
}
