//! The demo's control plane: the real `skiff-controlplane` binary (API server,
//! embedded store, node gateway), the real kubectl 1.33 against it, and
//! hollow nodes joining through the gateway with a bootstrap token.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::setup::Tools;

/// A running control plane; killed (with its hollow nodes) on drop.
pub struct ControlPlane {
    pub kubeconfig: PathBuf,
    pub api: String,
    pub gateway: String,
    /// A node bootstrap token.
    pub token: String,
    /// The cluster CA certificate, base64 DER (what `skiff.ca=` takes).
    pub ca_base64: String,
    kubectl: PathBuf,
    home: PathBuf,
    children: Vec<Child>,
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn bin_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("debug")
}

impl ControlPlane {
    /// Builds the binaries, creates a fresh PKI and store under
    /// `target/demo`, starts `skiff-controlplane serve` and waits for
    /// `/readyz` through kubectl. `sans` are extra names for the serving
    /// certificate (the addresses QEMU guests reach the host at).
    /// `insecure_registries` are reached over plain HTTP (`--insecure-registry`).
    pub fn start(
        root: &Path,
        tools: &Tools,
        sans: &[String],
        insecure_registries: &[String],
    ) -> Result<ControlPlane> {
        crate::sh(crate::cargo().args([
            "build",
            "--package",
            "skiff-controlplane",
            "--package",
            "skiff-hollow-node",
        ]))?;
        let bin = bin_dir(root).join("skiff-controlplane");
        let dir = root.join("target").join("demo");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let pki = dir.join("pki");
        let (api_port, node_port) = (free_port()?, free_port()?);
        let api = format!("127.0.0.1:{api_port}");
        let gateway = format!("127.0.0.1:{node_port}");

        let out = Command::new(&bin)
            .args(["pki", "init", "--dir"])
            .arg(&pki)
            .args(["--server", &format!("https://{api}")])
            .args(sans.iter().flat_map(|s| ["--san", s.as_str()]))
            .output()
            .context("running skiff-controlplane pki init")?;
        if !out.status.success() {
            bail!("pki init failed: {}", text(&out));
        }
        let printed = text(&out);
        let token = printed
            .lines()
            .find_map(|l| l.strip_prefix("node bootstrap token: "))
            .context("pki init printed no bootstrap token")?
            .trim()
            .to_string();
        println!("demo: cluster PKI in {}", pki.display());

        let log = std::fs::File::create(dir.join("controlplane.log"))?;
        let server = Command::new(&bin)
            .args(["serve", "--dir"])
            .arg(&pki)
            .arg("--data")
            .arg(dir.join("data"))
            .args(["--listen", &api, "--node-listen", &gateway])
            .args(
                insecure_registries
                    .iter()
                    .flat_map(|r| ["--insecure-registry", r.as_str()]),
            )
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting skiff-controlplane serve")?;
        let ca_pem = std::fs::read_to_string(pki.join("ca.crt"))?;
        let ca_base64: String = ca_pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let cp = ControlPlane {
            kubeconfig: pki.join("admin.kubeconfig"),
            api,
            gateway,
            token,
            ca_base64,
            kubectl: tools.kubectl.clone(),
            home: dir.clone(),
            children: vec![server],
        };
        cp.wait_until(20, "the API server to be ready", |cp| {
            let out = cp.kubectl_output(&["get", "--raw", "/readyz"])?;
            Ok(out.status.success() && out.stdout == b"ok")
        })?;
        println!(
            "demo: control plane up: API https://{}, node gateway {} (log: {})",
            cp.api,
            cp.gateway,
            dir.join("controlplane.log").display()
        );
        Ok(cp)
    }

    pub fn kubectl_output(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.kubectl)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", &self.home)
            .output()
            .context("running kubectl")
    }

    /// Runs kubectl, echoing the command and its output; fails if it fails.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        println!("\n$ kubectl {}", args.join(" "));
        let out = self.kubectl_output(args)?;
        let t = text(&out);
        print!("{t}");
        if !out.status.success() {
            bail!("kubectl {} failed", args.join(" "));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `n` hollow nodes named `<prefix>-<i>` that bootstrap with the
    /// cluster's token.
    pub fn hollow_nodes(&mut self, root: &Path, prefix: &str, n: usize) -> Result<()> {
        let child = Command::new(bin_dir(root).join("skiff-hollow-node"))
            .args(["--gateway", &self.gateway, "--ca"])
            .arg(self.kubeconfig.with_file_name("ca.crt"))
            .args(["--token", &self.token, "--nodes", &n.to_string()])
            .args(["--prefix", prefix])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting skiff-hollow-node")?;
        self.children.push(child);
        Ok(())
    }

    /// Polls `check` until it holds or `secs` pass.
    pub fn wait_until(
        &self,
        secs: u64,
        what: &str,
        mut check: impl FnMut(&ControlPlane) -> Result<bool>,
    ) -> Result<()> {
        let progress = skiff_logging::Progress::start(format!("waiting for {what}"));
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if check(self)? {
                progress.finish("done");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        bail!("timed out after {secs} s waiting for {what}")
    }

    /// `kubectl get` quietly, for polling.
    pub fn get(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        let out = self.kubectl_output(&all)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}
