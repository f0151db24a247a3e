//! `cargo xtask test`: the whole suite, as CI runs it.

use std::path::Path;

use anyhow::Result;

use crate::{cargo, setup, sh};

#[derive(clap::Args)]
pub struct Args {
    /// Only run tests whose name contains this (passed to `cargo test`).
    filter: Option<String>,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let started = std::time::Instant::now();
    let tools = setup::run(root)?;

    sh(cargo().args(["fmt", "--all", "--", "--check"]))?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    sh(cargo().args([
        "clippy",
        "--package",
        "skiff-kernel",
        "--target",
        skiff_build::KERNEL_TARGET,
        "--",
        "-D",
        "warnings",
    ]))?;

    let elf = skiff_build::build_kernel()?;

    let mut test = cargo();
    test.args(["test", "--workspace"]);
    test.env("SKIFF_KERNEL", &elf);
    for (k, v) in tools.env() {
        test.env(k, v);
    }
    if let Some(filter) = &args.filter {
        test.arg(filter);
    }
    sh(&mut test)?;

    // The README's other command, end to end: it shares no harness with the
    // tests above, so only running it proves it still works.
    if args.filter.is_none() {
        crate::demo::run(root, crate::demo::Args::default())?;
    }

    eprintln!("xtask: suite passed in {:.0?}", started.elapsed());
    Ok(())
}
