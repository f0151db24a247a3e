//! The two builds outside the host workspace's own targets, spelled once:
//!
//! - the node kernel, `skiff-kernel` for `x86_64-unknown-none` with the
//!   `kernel` profile ([`build_kernel`], [`kernel_elf`]), for `cargo xtask`
//!   and the end-to-end harness;
//! - the example wasm guests in `tests/wasm` (their own workspace) for
//!   `wasm32-wasip1`, and the few in [`P2_GUESTS`] also for `wasm32-wasip2`
//!   as components ([`build_guests`]; [`test_guests`] builds them once per
//!   process into one directory every test binary shares, so cargo builds
//!   them once).
//!
//! Both run the `cargo` that runs us (`$CARGO`), and honour
//! `CARGO_TARGET_DIR` as cargo does.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;

pub const KERNEL_TARGET: &str = "x86_64-unknown-none";
pub const KERNEL_PROFILE: &str = "kernel";
pub const GUEST_TARGET: &str = "wasm32-wasip1";
/// The target of the WASI preview 2 guests (components).
pub const GUEST_P2_TARGET: &str = "wasm32-wasip2";
/// The guests [`test_guest`] returns built for [`GUEST_P2_TARGET`].
pub const P2_GUESTS: &[&str] = &[
    "hello-p2",
    "tcp-connect",
    "tcp-echo",
    "udp-echo",
    "name-lookup",
    "socket-hog",
    "file-writer",
    "http-hello",
    "http-get",
    "tcp-bench",
];

/// Why a build did not produce its output.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("starting `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("`{command}` failed: {status}")]
    Failed { command: String, status: ExitStatus },
    #[error("{what} not found at {} after the build", path.display())]
    Missing { what: &'static str, path: PathBuf },
}

/// The repository root (this crate is `tools/build`).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tools/build is two levels below the root")
}

/// The host workspace's target directory: `$CARGO_TARGET_DIR`, else
/// `<root>/target`.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where the kernel ELF is in a target directory.
pub fn kernel_elf_in(target_dir: &Path) -> PathBuf {
    target_dir
        .join(KERNEL_TARGET)
        .join(KERNEL_PROFILE)
        .join("skiff-kernel")
}

/// Where [`build_kernel`] puts the kernel.
pub fn kernel_elf() -> PathBuf {
    kernel_elf_in(&target_dir())
}

/// Builds the kernel ELF (cargo makes this a no-op when it is current);
/// its path.
pub fn build_kernel() -> Result<PathBuf, BuildError> {
    run(cargo().current_dir(workspace_root()).args([
        "build",
        "--package",
        "skiff-kernel",
        "--target",
        KERNEL_TARGET,
        "--profile",
        KERNEL_PROFILE,
    ]))?;
    existing("the kernel ELF", kernel_elf())
}

/// Builds the example guests into `target_dir` (their own target
/// directory), and [`P2_GUESTS`] as components too (in
/// `<target_dir>/wasm32-wasip2/release`); the directory holding the
/// preview 1 `<name>.wasm`.
pub fn build_guests(target_dir: &Path) -> Result<PathBuf, BuildError> {
    let guests = |target: &str| {
        let mut cmd = cargo();
        cmd.args(["build", "--release", "--quiet", "--locked", "--target"])
            .arg(target)
            .arg("--target-dir")
            .arg(target_dir)
            .current_dir(workspace_root().join("tests/wasm"))
            // Not the host build's flags, target or target directory.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET");
        cmd
    };
    run(&mut guests(GUEST_TARGET))?;
    let mut p2 = guests(GUEST_P2_TARGET);
    for name in P2_GUESTS {
        p2.args(["--bin", name]);
    }
    run(&mut p2)?;
    existing(
        "the guests' directory",
        target_dir.join(GUEST_TARGET).join("release"),
    )
}

/// The guests' own target directory, shared by the tests and the demo:
/// `<target>/tmp/wasm-guests`.
pub fn guests_target_dir() -> PathBuf {
    target_dir().join("tmp/wasm-guests")
}

/// The guests for tests: built once per process into
/// [`guests_target_dir`]; panics if the build fails.
pub fn test_guests() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        build_guests(&guests_target_dir()).unwrap_or_else(|e| panic!("building tests/wasm: {e}"))
    })
}

/// Path of a guest built by [`test_guests`], e.g. `test_guest("hello")`;
/// the component for one of [`P2_GUESTS`].
pub fn test_guest(name: &str) -> PathBuf {
    let dir = if P2_GUESTS.contains(&name) {
        test_guests();
        guests_target_dir().join(GUEST_P2_TARGET).join("release")
    } else {
        test_guests().to_path_buf()
    };
    let p = dir.join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} missing after the guest build", p.display());
    p
}

/// The `cargo` that runs us (`$CARGO`), else the one on `PATH`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<(), BuildError> {
    let command = command_line(cmd);
    let status = cmd.status().map_err(|source| BuildError::Spawn {
        command: command.clone(),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BuildError::Failed { command, status })
    }
}

fn existing(what: &'static str, path: PathBuf) -> Result<PathBuf, BuildError> {
    if path.exists() {
        Ok(path)
    } else {
        Err(BuildError::Missing { what, path })
    }
}

/// `cmd` as a shell line, to echo or quote in an error.
pub fn command_line(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_cargo() {
        assert!(workspace_root().join("tests/wasm/Cargo.toml").is_file());
        assert!(workspace_root().join("kernel/Cargo.toml").is_file());
        assert_eq!(
            kernel_elf_in(Path::new("/t")),
            Path::new("/t/x86_64-unknown-none/kernel/skiff-kernel")
        );
    }

    #[test]
    fn a_failed_build_says_what_ran() {
        let e = run(Command::new("false").arg("x")).unwrap_err();
        assert!(matches!(e, BuildError::Failed { .. }));
        assert!(e.to_string().starts_with("`false x` failed"), "{e}");
        let e = run(&mut Command::new("/nonexistent/cargo")).unwrap_err();
        assert!(matches!(e, BuildError::Spawn { .. }), "{e}");
    }
}
