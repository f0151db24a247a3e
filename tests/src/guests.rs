//! The example wasm guests (`tests/wasm`), built once per test process for
//! `wasm32-wasip1` into `<target>/tmp/wasm-guests` (the same place
//! `kernel/wasm`'s tests build them, so the build is shared).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Builds the guests (cargo caches across runs) and returns the directory
/// holding `<name>.wasm`.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = super::workspace_root().join("tests/wasm");
        // Test executables live in <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("current exe");
        let target = exe
            .ancestors()
            .nth(3)
            .expect("target dir")
            .join("tmp/wasm-guests");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "--target",
                "wasm32-wasip1",
                "--locked",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(&src)
            // Do not inherit the host build's flags or target dir.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET")
            .status()
            .expect("run cargo for the wasm guests");
        assert!(status.success(), "building tests/wasm failed");
        target.join("wasm32-wasip1/release")
    })
}

/// Path of a built guest, e.g. `path("hello")`.
pub fn path(name: &str) -> PathBuf {
    let p = dir().join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} missing after the guest build", p.display());
    p
}
