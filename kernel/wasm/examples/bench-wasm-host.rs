//! Host figures for the pod runtime (the node figures need the kernel and
//! come later with `cargo xtask bench pods`):
//! - deserialize: `Runtime::load` of a precompiled guest (µs, median);
//! - spawn+run: instantiate and run an empty `_start` to exit (µs, median);
//! - cpu-burner speed under the node configuration (explicit bounds checks,
//!   epoch checks, x86-64-v2 baseline, stepped in 2 ms slices) against
//!   wasmtime's default configuration (guard pages and signals, native CPU
//!   features, no epoch checks) running the same guest to completion.
//!
//! Usage: cargo run --release -p skiff-wasm --example bench-wasm-host [-- ITERATIONS]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use skiff_wasm::{ContainerSpec, Runtime, Step, Target};
use support::FakeHost;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spec(args: &[&str]) -> ContainerSpec {
    ContainerSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        memory_limit: 64 << 20,
        ..ContainerSpec::default()
    }
}

/// Runs cpu-burner for `iterations` and returns iterations per second.
fn burn(rt: &Runtime, artifact: &[u8], iterations: u64, budget: u64) -> f64 {
    let image = rt.load(artifact).expect("load");
    let n = iterations.to_string();
    let (host, out, _) = FakeHost::new(&[]);
    let mut c = rt
        .spawn(&image, spec(&["cpu-burner", &n]), host)
        .expect("spawn");
    let t = Instant::now();
    loop {
        match c.step(budget) {
            Step::Running => {}
            Step::Exited(0) => break,
            other => panic!("cpu-burner ended with {other:?}: {}", out.stderr()),
        }
    }
    iterations as f64 / t.elapsed().as_secs_f64()
}

fn main() {
    let iterations: u64 = std::env::args()
        .nth(1)
        .map_or(300_000_000, |a| a.parse().expect("ITERATIONS"));
    let rt = support::runtime();
    let burner = support::artifact("cpu-burner");

    let deser: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            rt.load(&burner).expect("load");
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();

    let empty = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start")))"#)
        .unwrap();
    let image = rt
        .load(&skiff_wasm::precompile_for(Target::Host, &empty).unwrap())
        .unwrap();
    let spawn: Vec<f64> = (0..2000)
        .map(|_| {
            let (host, _, _) = FakeHost::new(&[]);
            let t = Instant::now();
            let mut c = rt.spawn(&image, spec(&["x"]), host).unwrap();
            assert_eq!(c.step(u64::MAX), Step::Exited(0));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();

    let plain_config = wasmtime::Config::default();
    let plain_rt = Runtime::new(&plain_config).expect("default runtime");
    let plain_artifact = wasmtime::Engine::new(&plain_config)
        .unwrap()
        .precompile_module(&support::wasm("cpu-burner"))
        .unwrap();
    // Alternate the two and keep each one's best run: the machine is shared.
    let (mut ours, mut plain) = (0f64, 0f64);
    for _ in 0..3 {
        ours = ours.max(burn(rt, &burner, iterations, 2));
        plain = plain.max(burn(&plain_rt, &plain_artifact, iterations, u64::MAX));
    }

    println!(
        "deserialize (cpu-burner, {} KiB): {:.1} µs median",
        burner.len() / 1024,
        median(deser)
    );
    println!("spawn + run empty _start: {:.1} µs median", median(spawn));
    println!(
        "cpu-burner, node config (2 ms slices): {:.1} M iterations/s",
        ours / 1e6
    );
    println!(
        "cpu-burner, wasmtime default config:   {:.1} M iterations/s",
        plain / 1e6
    );
    println!("ratio node/default: {:.2} (best of 3 each)", ours / plain);
}
