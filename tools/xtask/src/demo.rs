//! `cargo xtask demo`: bring up the demo cluster and show it working.

use std::path::Path;

use anyhow::Result;

use crate::{kernel, setup};

#[derive(clap::Args)]
pub struct Args {
    /// Number of QEMU nodes to boot.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let _tools = setup::run(root)?;
    let elf = kernel::build(root)?;
    eprintln!(
        "demo: kernel {} ({} nodes requested)",
        elf.display(),
        args.nodes
    );
    anyhow::bail!("demo: booting nodes is not implemented yet")
}
