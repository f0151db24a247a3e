//! `skiff-controlplane`: `pki init` creates the cluster's credentials,
//! `serve` runs the API server with its embedded store.

use std::path::PathBuf;
use std::process::ExitCode;

use skiff_apiserver::{pki, server};

const USAGE: &str = "usage:
  skiff-controlplane pki init --dir DIR [--san NAME_OR_IP]... [--server URL] [--bootstrap-tokens N]
  skiff-controlplane serve --dir DIR --data DIR [--listen ADDR]";

/// Collects `--flag value` pairs; repeated flags keep every value.
fn flags(args: &[String]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(f) = it.next() {
        let Some(name) = f.strip_prefix("--") else {
            return Err(format!("unexpected argument {f:?}"));
        };
        let (name, value) = match name.split_once('=') {
            Some((n, v)) => (n.to_string(), v.to_string()),
            None => (
                name.to_string(),
                it.next().ok_or(format!("--{name} needs a value"))?.clone(),
            ),
        };
        out.push((name, value));
    }
    Ok(out)
}

fn one(f: &[(String, String)], name: &str) -> Option<String> {
    f.iter()
        .rev()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

fn check_known(f: &[(String, String)], known: &[&str]) -> Result<(), String> {
    match f.iter().find(|(n, _)| !known.contains(&n.as_str())) {
        Some((n, _)) => Err(format!("unknown flag --{n}")),
        None => Ok(()),
    }
}

fn pki_init(args: &[String]) -> Result<(), String> {
    let f = flags(args)?;
    check_known(&f, &["dir", "san", "server", "bootstrap-tokens"])?;
    let dir = PathBuf::from(one(&f, "dir").ok_or("--dir is required")?);
    let mut opts = pki::InitOptions {
        sans: f
            .iter()
            .filter(|(n, _)| n == "san")
            .map(|(_, v)| v.clone())
            .collect(),
        ..Default::default()
    };
    if let Some(s) = one(&f, "server") {
        opts.server_url = s;
    }
    if let Some(n) = one(&f, "bootstrap-tokens") {
        opts.bootstrap_tokens = n
            .parse()
            .map_err(|_| format!("bad --bootstrap-tokens {n:?}"))?;
    }
    let out = pki::init(&dir, &opts).map_err(|e| e.to_string())?;
    println!("wrote the cluster PKI to {}", dir.display());
    println!("admin kubeconfig: {}", out.admin_kubeconfig.display());
    for t in &out.bootstrap_tokens {
        println!("node bootstrap token: {t}");
    }
    Ok(())
}

async fn serve(args: &[String]) -> Result<(), String> {
    let f = flags(args)?;
    check_known(&f, &["dir", "data", "listen"])?;
    let listen = one(&f, "listen")
        .unwrap_or_else(|| "127.0.0.1:6443".into())
        .parse()
        .map_err(|e| format!("--listen: {e}"))?;
    let cfg = server::ServeConfig::new(
        PathBuf::from(one(&f, "dir").ok_or("--dir is required")?),
        PathBuf::from(one(&f, "data").ok_or("--data is required")?),
        listen,
    );
    let running = server::start(&cfg).await?;
    println!("serving the Kubernetes API on https://{}", running.addr);
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    // Stop serving, then let the store finish queued writes and release its file.
    running.abort();
    let store = running.state.store.clone();
    drop(running);
    store.close().await.map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("pki") if args.get(1).map(String::as_str) == Some("init") => pki_init(&args[2..]),
        Some("serve") => tokio::runtime::Runtime::new()
            .map_err(|e| e.to_string())
            .and_then(|rt| rt.block_on(serve(&args[1..]))),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("skiff-controlplane: {e}");
            ExitCode::FAILURE
        }
    }
}
