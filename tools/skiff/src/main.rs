//! `skiff`: the Skiff command line.

mod node;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "skiff", about = "The Skiff command line", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    #[command(flatten)]
    log: skiff_logging::LogArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// Work with nodes.
    #[command(subcommand)]
    Node(node::NodeCmd),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    skiff_logging::init(&cli.log)?;
    match cli.cmd {
        Cmd::Node(cmd) => {
            let code = node::run(cmd)?;
            std::process::exit(code)
        }
    }
}
