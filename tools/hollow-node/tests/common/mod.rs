//! Test harness: the API server and the node gateway in process (fresh PKI
//! and data directory), hollow nodes on the same runtime, and the real
//! kubectl as the client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use skiff_apiserver::{ServeConfig, pki};
use skiff_gateway::{Gateway, GatewayConfig};
use skiff_hollow_node::{Fleet, FleetConfig};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub token: String,
    pub gateway: Option<Gateway>,
    pub fleet: Option<Fleet>,
    pub fleet_cfg: FleetConfig,
    api: Option<skiff_apiserver::Running>,
    // Dropped last: everything above runs on it.
    pub rt: tokio::runtime::Runtime,
}

#[allow(unused_imports)] // not every test binary runs kubectl
pub use skiff_e2e::peers::kubectl as kubectl_path;

/// Short timings so health and rotation are observable in a test.
pub fn fast(cfg: &mut GatewayConfig) {
    cfg.renew_interval = Duration::from_millis(200);
    cfg.node_grace = Duration::from_millis(1500);
}

impl Cluster {
    pub fn start(tune: impl FnOnce(&mut GatewayConfig)) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        let out = pki::init(&pki_dir, &pki::InitOptions::default()).expect("pki init");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let cfg = ServeConfig::new(
            pki_dir.clone(),
            dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
        );
        let api = rt
            .block_on(skiff_apiserver::start(&cfg))
            .expect("api server");
        let mut gcfg = GatewayConfig::new(pki_dir.clone(), "127.0.0.1:0".parse().unwrap());
        fast(&mut gcfg);
        tune(&mut gcfg);
        let gateway = rt
            .block_on(skiff_gateway::start(gcfg, api.state.clone()))
            .expect("gateway");
        let url = format!("https://{}", api.addr);
        let kubeconfig = pki_dir.join(pki::ADMIN_KUBECONFIG);
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        std::fs::write(&kubeconfig, text.replace("https://127.0.0.1:6443", &url)).unwrap();
        let token = out.bootstrap_tokens[0].clone();
        let fleet_cfg =
            FleetConfig::new(gateway.addr, &pki_dir.join(pki::CA_CERT), &token).expect("fleet");
        Cluster {
            dir,
            url,
            kubeconfig,
            token,
            gateway: Some(gateway),
            fleet: Some(Fleet::new()),
            fleet_cfg,
            api: Some(api),
            rt,
        }
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn gateway(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }

    /// Starts hollow node `name` (number `i` picks its address).
    pub fn start_node(&mut self, name: &str, i: u32) {
        let cfg = self.fleet_cfg.node(name, i);
        let fleet = self.fleet.as_mut().unwrap();
        let _g = self.rt.enter();
        fleet.start(cfg);
    }

    pub fn stop_node(&mut self, name: &str) {
        assert!(self.fleet.as_mut().unwrap().stop(name));
    }

    pub fn stats(&self) -> Arc<skiff_hollow_node::Stats> {
        self.fleet.as_ref().unwrap().stats.clone()
    }

    pub fn journal(&self) -> Vec<String> {
        self.gateway().journal()
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// A kubeconfig holding a node's own certificate and key (from TLS
    /// bootstrap), as that node's kubelet would have.
    pub fn node_kubeconfig(&self, name: &str, creds: &skiff_hollow_node::node::Creds) -> PathBuf {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = b64.encode(&creds.chain[0]);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let cert_pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        let issued = pki::Issued {
            cert_pem,
            key_pem: creds.key.serialize_pem(),
        };
        let ca = std::fs::read_to_string(self.pki_dir().join(pki::CA_CERT)).unwrap();
        let text = pki::kubeconfig(&self.url, &ca, name, &issued);
        self.write(&format!("{name}.kubeconfig"), &text)
    }

    /// Runs the real TLS bootstrap for `name` and returns its credentials.
    pub fn bootstrap(
        &self,
        name: &str,
        token: &str,
    ) -> Result<skiff_hollow_node::node::Creds, skiff_hollow_node::node::BootstrapError> {
        let mut cfg = self.fleet_cfg.node(name, 999);
        cfg.token = token.to_string();
        self.rt.block_on(skiff_hollow_node::node::bootstrap(&cfg))
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    /// kubectl as admin, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl_as(&self.kubeconfig, args);
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "kubectl {args:?} failed:\n{so}\n{se}");
        so.into_owned()
    }

    /// Waits up to `secs` for `f`.
    pub fn eventually(&self, what: &str, secs: u64, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; gateway log:\n{}",
                self.journal().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until kubectl's output for `args` contains `needle`.
    pub fn wait_output(&self, args: &[&str], needle: &str, secs: u64) -> String {
        let mut last = String::new();
        self.eventually(&format!("{needle:?} in kubectl {args:?}"), secs, || {
            let out = self.kubectl_as(&self.kubeconfig, args);
            last = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            last.contains(needle)
        });
        last
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Stop nodes, then the gateway, then the API server, on the runtime.
        let _g = self.rt.enter();
        self.fleet.take();
        self.gateway.take();
        if let Some(a) = self.api.take() {
            a.abort();
        }
    }
}
