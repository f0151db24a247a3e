//! Building the node kernel for `x86_64-unknown-none`.

use std::path::{Path, PathBuf};

use anyhow::Result;

pub const TARGET: &str = "x86_64-unknown-none";
pub const PROFILE: &str = "kernel";

/// Build the kernel ELF and return its path.
pub fn build(root: &Path) -> Result<PathBuf> {
    crate::sh(crate::cargo().args([
        "build",
        "--package",
        "skiff-kernel",
        "--target",
        TARGET,
        "--profile",
        PROFILE,
    ]))?;
    Ok(elf_path(root))
}

/// Where cargo puts the kernel: it honours `CARGO_TARGET_DIR`, so do we.
pub fn elf_path(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join(TARGET)
        .join(PROFILE)
        .join("skiff-kernel")
}
