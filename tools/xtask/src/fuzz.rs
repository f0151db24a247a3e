//! `cargo xtask fuzz NAME|all|list [--time SECS]`: coverage-guided fuzzing
//! with libFuzzer on stable Rust. The targets live in `tests/fuzz` (its own
//! workspace); xtask builds them for the host triple with LLVM's
//! sanitizer-coverage instrumentation (the flags cargo-fuzz passes, minus the
//! nightly-only sanitizer), so build scripts and proc macros stay
//! uninstrumented. The corpus grows in `target/fuzz/corpus/NAME` (seeded
//! from `tests/fuzz/seeds/NAME` when present); a crashing input is kept in
//! `target/fuzz/artifacts/NAME/` and fails the command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, sh};

#[derive(clap::Args)]
pub struct Args {
    /// A target (see `list`), `all`, or `list`.
    name: String,
    /// How long to fuzz each target, in seconds.
    #[arg(long, default_value_t = 60)]
    time: u64,
    /// Extra libFuzzer flags (`-- -max_len=4096`).
    #[arg(trailing_var_arg = true)]
    rest: Vec<String>,
}

const HOST: &str = "x86_64-unknown-linux-gnu";

/// sanitizer-coverage as cargo-fuzz sets it up, plus debug assertions and
/// overflow checks so arithmetic slips are found too.
const RUSTFLAGS: &str = "--cfg fuzzing -Cpasses=sancov-module \
     -Cllvm-args=-sanitizer-coverage-level=4 \
     -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
     -Cllvm-args=-sanitizer-coverage-pc-table \
     -Cllvm-args=-sanitizer-coverage-trace-compares \
     -Cdebug-assertions -Coverflow-checks";

/// The target names: one file each in `tests/fuzz/fuzz_targets`.
pub fn targets(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("tests/fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "rs").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    Ok(names)
}

pub fn run(root: &Path, args: Args) -> Result<()> {
    let all = targets(root)?;
    let chosen: Vec<String> = match args.name.as_str() {
        "list" => {
            for t in &all {
                println!("{t}");
            }
            return Ok(());
        }
        "all" => all,
        one if all.iter().any(|t| t == one) => vec![one.to_string()],
        other => bail!("unknown fuzz target {other:?}; known: {}", all.join(", ")),
    };
    let bins = build(root)?;
    let mut summary = Vec::new();
    for name in &chosen {
        summary.push(fuzz(root, &bins, name, args.time, &args.rest)?);
    }
    for line in summary {
        eprintln!("fuzz: {line}");
    }
    Ok(())
}

/// Builds every target; returns the directory holding the binaries.
fn build(root: &Path) -> Result<PathBuf> {
    let target_dir = root.join("target/fuzz/build");
    sh(cargo()
        .args(["build", "--release", "--target", HOST, "--manifest-path"])
        .arg(root.join("tests/fuzz/Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .env("RUSTFLAGS", RUSTFLAGS)
        .env_remove("CARGO_ENCODED_RUSTFLAGS"))?;
    Ok(target_dir.join(HOST).join("release"))
}

/// Runs one target for `secs`; returns a one-line summary.
fn fuzz(root: &Path, bins: &Path, name: &str, secs: u64, extra: &[String]) -> Result<String> {
    let corpus = root.join("target/fuzz/corpus").join(name);
    let artifacts = root.join("target/fuzz/artifacts").join(name);
    std::fs::create_dir_all(&corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    let mut cmd = Command::new(bins.join(name));
    cmd.arg(&corpus);
    let seeds = root.join("tests/fuzz/seeds").join(name);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg(format!("-max_total_time={secs}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .args(extra);
    eprintln!("xtask: fuzzing {name} for {secs} s");
    let out = cmd.output().with_context(|| format!("running {name}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprint!("{log}");
        bail!(
            "fuzz target {name} failed ({}); the input is in {}",
            out.status,
            artifacts.display()
        );
    }
    let stat = |key: &str| {
        log.lines()
            .find_map(|l| l.strip_prefix(key).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    Ok(format!(
        "{name}: {} runs in {secs} s, {} coverage edges, corpus {} inputs",
        stat("stat::number_of_executed_units:"),
        log.lines()
            .rev()
            .find_map(|l| l.split(" cov: ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or("?"),
        std::fs::read_dir(&corpus).map_or(0, |d| d.count()),
    ))
}
