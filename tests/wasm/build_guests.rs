//! Builds the example guests in this directory for `wasm32-wasip1`, once per
//! process, into `<target>/tmp/wasm-guests` (shared by every crate whose
//! tests use them, so cargo builds them once). Included with `#[path]` by
//! `kernel/wasm/tests/support` and `tests/src/guests.rs`, which sit on
//! either side of the dependency graph.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding `<name>.wasm` after the build.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // The includer may be any workspace crate: find the guests from it.
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|d| d.join("tests/wasm"))
            .find(|d| d.join("Cargo.toml").is_file())
            .expect("tests/wasm above the including crate");
        // Integration tests get a scratch dir from cargo; libraries and
        // examples live in <target>/<profile>/{deps,examples}/.
        let tmp = option_env!("CARGO_TARGET_TMPDIR").map_or_else(
            || {
                let exe = std::env::current_exe().expect("current exe");
                exe.ancestors().nth(3).expect("target dir").join("tmp")
            },
            PathBuf::from,
        );
        let target = tmp.join("wasm-guests");
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
