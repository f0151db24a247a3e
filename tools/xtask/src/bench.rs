//! `cargo xtask bench NAME`: each benchmark is an example program of the crate
//! that owns the measured code. It writes `target/bench/NAME.json`:
//!
//! ```json
//! { "bench": "store",
//!   "figures": [ { "name": "put_1_client", "unit": "ops/s", "value": 1234.5,
//!                  "peer": "etcd 3.4.30", "peer_value": 800.1,
//!                  "ratio": 1.54, "better": "higher" } ],
//!   "notes": ["what exactly was compared"] }
//! ```
//! `peer`, `peer_value` and `ratio` (ours / peer's) appear where the issue
//! names a peer; `better` is "higher" or "lower".

use std::path::Path;

use anyhow::{Result, bail};

use crate::{cargo, setup, sh};

#[derive(clap::Args)]
pub struct Args {
    /// Benchmark name (see `cargo xtask bench list`).
    name: String,
    /// Extra arguments passed to the benchmark program.
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

/// (name, package, example, needs the node kernel)
const BENCHES: &[(&str, &str, &str, bool)] = &[
    ("api", "skiff-apiserver", "bench-api", false),
    ("boot", "skiff-e2e", "bench-boot", true),
    ("deploy", "skiff-controllers", "bench-deploy", false),
    ("logs", "skiff-hollow-node", "bench-logs", false),
    ("net", "skiff-e2e", "bench-net", true),
    ("node", "skiff-hollow-node", "bench-node", true),
    ("node-tcp", "skiff-e2e", "bench-node-tcp", true),
    ("pods", "skiff-e2e", "bench-pods", true),
    ("scheduler", "skiff-scheduler", "bench-scheduler", false),
    ("store", "skiff-store", "bench-store", false),
    ("wasi", "skiff-e2e", "bench-wasi", true),
];

pub fn run(root: &Path, args: Args) -> Result<()> {
    if args.name == "list" {
        for (name, pkg, _, _) in BENCHES {
            println!("{name:10} ({pkg})");
        }
        return Ok(());
    }
    let Some(&(name, pkg, example, needs_kernel)) = BENCHES.iter().find(|(n, ..)| *n == args.name)
    else {
        let names: Vec<&str> = BENCHES.iter().map(|b| b.0).collect();
        bail!(
            "unknown benchmark {:?}; known: {}",
            args.name,
            names.join(", ")
        );
    };
    let tools = setup::run(root)?;
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    let out = out_dir.join(format!("{name}.json"));

    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--package",
        pkg,
        "--example",
        example,
        "--",
    ]);
    cmd.arg("--out").arg(&out).args(&args.rest);
    if needs_kernel {
        cmd.env("SKIFF_KERNEL", skiff_build::build_kernel()?);
    }
    for (k, v) in tools.env() {
        cmd.env(k, v);
    }
    sh(&mut cmd)?;
    println!("{}", std::fs::read_to_string(&out)?);
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}
