//! The `skiff-controlplane` binary: `pki init` then `serve`, driven by kubectl.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{contains_all, kubectl_path};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn pki_init_and_serve() {
    let bin = env!("CARGO_BIN_EXE_skiff-controlplane");
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    // A free port: bind, read it, release it for the server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    let out = Command::new(bin)
        .args([
            "pki",
            "init",
            "--dir",
            pki.to_str().unwrap(),
            "--san",
            "cp.example",
            "--server",
            &url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    contains_all(&text, &["admin kubeconfig:", "node bootstrap token:"]);
    // A second init refuses to replace the CA.
    let again = Command::new(bin)
        .args(["pki", "init", "--dir", pki.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!again.status.success());
    contains_all(
        &String::from_utf8_lossy(&again.stderr),
        &["refusing to overwrite"],
    );

    let _server = Child(
        Command::new(bin)
            .args(["serve", "--dir", pki.to_str().unwrap(), "--data"])
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let kubeconfig = pki.join("admin.kubeconfig");
    let kubectl = |args: &[&str]| {
        Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = kubectl(&["get", "--raw", "/readyz"]);
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ok");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server never became ready: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = kubectl(&["version", "-o", "json"]);
    contains_all(
        &String::from_utf8_lossy(&out.stdout),
        &["\"serverVersion\"", "v1.33.0-skiff"],
    );
    let out = kubectl(&["get", "ns"]);
    contains_all(
        &String::from_utf8_lossy(&out.stdout),
        &["default", "kube-system", "kube-public", "kube-node-lease"],
    );
}
