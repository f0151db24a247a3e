//! The real `skiff-controlplane` binary: `pki init`, then `serve` with the API
//! server and the node gateway, driven by the real kubectl 1.33 and by
//! hollow nodes that bootstrap with the printed token.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_e2e::peers::kubectl as kubectl_path;
use skiff_hollow_node::{Fleet, FleetConfig};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn contains_all(hay: &str, needles: &[&str]) {
    for n in needles {
        assert!(hay.contains(n), "expected {n:?} in:\n{hay}");
    }
}

/// Retries `check` until it passes or `secs` run out.
fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn pki_init_serve_and_nodes_join() {
    let bin = env!("CARGO_BIN_EXE_skiff-controlplane");
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (api_port, node_port) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{api_port}");

    let out = Command::new(bin)
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .args(["--san", "cp.example", "--server", &url])
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    contains_all(&printed, &["admin kubeconfig:", "node bootstrap token:"]);
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("node bootstrap token: "))
        .unwrap()
        .trim()
        .to_string();
    // A second init refuses to replace the CA.
    let again = Command::new(bin)
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(!again.status.success());
    contains_all(&text(&again), &["refusing to overwrite"]);

    let _server = Child(
        Command::new(bin)
            .args(["serve", "--dir"])
            .arg(&pki)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .args(["--node-listen", &format!("127.0.0.1:{node_port}")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let kubeconfig = pki.join("admin.kubeconfig");
    let home = dir.path().to_path_buf();
    let kubectl = |args: &[&str]| {
        Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &home)
            .output()
            .unwrap()
    };
    eventually(20, "API server ready", || {
        let out = kubectl(&["get", "--raw", "/readyz"]);
        (out.status.success() && out.stdout == b"ok")
            .then_some(())
            .ok_or_else(|| text(&out))
    });
    contains_all(
        &text(&kubectl(&["version", "-o", "json"])),
        &["\"serverVersion\"", "v1.33.0-skiff"],
    );
    contains_all(
        &text(&kubectl(&["get", "ns"])),
        &["default", "kube-system", "kube-public", "kube-node-lease"],
    );

    // Two hollow nodes bootstrap with the printed token through the
    // binary's gateway and become Ready nodes.
    let gateway = format!("127.0.0.1:{node_port}").parse().unwrap();
    let cfg = FleetConfig::new(gateway, &Path::new(&pki).join("ca.crt"), &token).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _fleet = rt.block_on(async {
        let mut fleet = Fleet::new();
        fleet.start_many(&cfg, "joiner", 2);
        fleet
    });
    eventually(30, "hollow nodes Ready", || {
        let out = text(&kubectl(&["get", "nodes", "--no-headers"]));
        let ready = out
            .lines()
            .filter(|l| l.starts_with("joiner") && l.split_whitespace().nth(1) == Some("Ready"))
            .count();
        (ready == 2).then_some(()).ok_or(out)
    });
}
