//! The example wasm guests (`tests/wasm`), built once per test process for
//! `wasm32-wasip1` by `tests/wasm/build_guests.rs` (shared with
//! `kernel/wasm`'s tests, so the build is too).

use std::path::PathBuf;

#[path = "../wasm/build_guests.rs"]
mod build;

pub use build::dir;

/// Path of a built guest, e.g. `path("hello")`.
pub fn path(name: &str) -> PathBuf {
    let p = dir().join(format!("{name}.wasm"));
    assert!(p.is_file(), "{} missing after the guest build", p.display());
    p
}
