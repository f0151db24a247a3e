//! The example wasm guests (`tests/wasm`), built once per test process by
//! `skiff-build` (into the directory every crate's tests share, so the
//! build is shared too).

pub use skiff_build::{test_guest as path, test_guests as dir};

/// Round trips per second from the tcp-bench guest's result line
/// (`connect_us=… rounds=… size=… elapsed_us=…`).
pub fn tcp_bench_round_trips(out: &str) -> Option<f64> {
    let line = out.lines().find(|l| l.starts_with("connect_us="))?;
    let field = |key: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    let us = field("elapsed_us")?;
    (us > 0.0).then(|| field("rounds").map(|n| n / (us / 1e6)))?
}
