//! `cargo xtask`: the one entry point for building, testing, running the demo
//! and benchmarking Skiff. Each verb first runs the idempotent machine setup.

mod bench;
mod cluster;
mod demo;
mod fuzz;
mod setup;
mod test;
mod wasm_demo;

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use skiff_build::{cargo, command_line};

#[derive(Parser)]
#[command(about = "Skiff build, test, demo and benchmark orchestration")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what this machine lacks (QEMU, rustup targets, test peers). Idempotent.
    Setup {
        /// Only check: name every missing file or tool, install nothing.
        #[arg(long)]
        check: bool,
    },
    /// Build the node kernel ELF for x86_64-unknown-none.
    Kernel,
    /// Bring up the demo cluster and show it working.
    Demo(demo::Args),
    /// The whole suite: fmt check, clippy -D warnings, unit and end-to-end tests.
    Test(test::Args),
    /// Run a benchmark; writes target/bench/NAME.json.
    Bench(bench::Args),
    /// Coverage-guided fuzzing of a decoder with libFuzzer (`list` names them).
    Fuzz(fuzz::Args),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = skiff_build::workspace_root().to_path_buf();
    std::env::set_current_dir(&root)?;
    match cli.cmd {
        Cmd::Setup { check: true } => setup::check(&root),
        Cmd::Setup { check: false } => setup::run(&root).map(|_| ()),
        Cmd::Kernel => skiff_build::build_kernel()
            .map(|p| println!("{}", p.display()))
            .map_err(Into::into),
        Cmd::Demo(args) => demo::run(&root, args),
        Cmd::Test(args) => test::run(&root, args),
        Cmd::Bench(args) => bench::run(&root, args),
        Cmd::Fuzz(args) => fuzz::run(&root, args),
    }
}

/// Run a command, echoing it, and fail with its exit status.
pub fn sh(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", command_line(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", command_line(cmd)))?;
    if !status.success() {
        bail!("`{}` failed: {status}", command_line(cmd));
    }
    Ok(())
}
