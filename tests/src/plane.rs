//! The control plane in process for node tests: the real API server and
//! node gateway on loopback (fresh PKI and data directory), with the real
//! kubectl as the client. QEMU guests on user networking reach the host's
//! loopback at [`SLIRP_HOST`], which the serving certificate names.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_apiserver::{ServeConfig, pki};
use skiff_gateway::{Gateway, GatewayConfig};

/// The host as seen from a QEMU user-network guest.
pub const SLIRP_HOST: &str = "10.0.2.2";

pub struct Plane {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    /// A valid bootstrap token.
    pub token: String,
    /// The cluster CA certificate (DER).
    pub ca_der: Vec<u8>,
    pub gateway_addr: SocketAddr,
    gateway: Option<Gateway>,
    /// Scheduler and controller manager, when started.
    loops: Vec<tokio::task::JoinHandle<()>>,
    api: Option<skiff_apiserver::Running>,
    // Dropped last: everything above runs on it.
    pub rt: tokio::runtime::Runtime,
}

impl Plane {
    /// Starts the plane; `tune` adjusts the gateway (tests shorten the
    /// renew interval and the node grace period).
    pub fn start(tune: impl FnOnce(&mut GatewayConfig)) -> Plane {
        Plane::start_with_registries(&[], tune)
    }

    /// [`Plane::start`] whose image service reaches `registries`
    /// (`host:port`, the tests' local docker-registry) over plain HTTP, as
    /// `serve --insecure-registry` does; any other only over HTTPS.
    pub fn start_with_registries(
        registries: &[String],
        tune: impl FnOnce(&mut GatewayConfig),
    ) -> Plane {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        let opts = pki::InitOptions {
            sans: vec![SLIRP_HOST.into()],
            ..pki::InitOptions::default()
        };
        let out = pki::init(&pki_dir, &opts).expect("pki init");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let cfg = ServeConfig::new(
            pki_dir.clone(),
            dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
        );
        let api = rt
            .block_on(skiff_apiserver::start(&cfg))
            .expect("API server");
        let mut gcfg = GatewayConfig::new(pki_dir.clone(), "127.0.0.1:0".parse().unwrap());
        // Wasm nodes get their images pulled and compiled, as in `serve`.
        let mut icfg = skiff_images::Config::new(dir.path().join("images"));
        icfg.insecure_registries = registries.to_vec();
        let images = skiff_images::ImageService::new(icfg).expect("image service");
        gcfg.images = Some(skiff_gateway::Images(images));
        gcfg.image_backoff = Duration::from_secs(2);
        tune(&mut gcfg);
        let gateway = rt
            .block_on(skiff_gateway::start(gcfg, api.state.clone()))
            .expect("gateway");
        let url = format!("https://{}", api.addr);
        let kubeconfig = pki_dir.join(pki::ADMIN_KUBECONFIG);
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        std::fs::write(&kubeconfig, text.replace("https://127.0.0.1:6443", &url)).unwrap();
        let ca_pem = std::fs::read_to_string(pki_dir.join(pki::CA_CERT)).unwrap();
        Plane {
            url,
            kubeconfig,
            token: out.bootstrap_tokens[0].clone(),
            ca_der: pem_to_der(&ca_pem),
            gateway_addr: gateway.addr,
            gateway: Some(gateway),
            loops: Vec::new(),
            api: Some(api),
            rt,
            dir,
        }
    }

    /// Starts the scheduler and the controller manager as API clients
    /// with their own credentials, as `skiff-controlplane serve` does;
    /// `grace` is the node-monitor grace period.
    pub fn start_control_loops(&mut self, grace: Duration) {
        let pki_dir = self.dir.path().join("pki");
        let url = self.url.clone();
        let (sched, ctrl) = self.rt.block_on(async {
            let s = skiff_scheduler::client_from_kubeconfig(
                &pki_dir.join(pki::SCHEDULER_KUBECONFIG),
                Some(&url),
            )
            .await
            .expect("scheduler client");
            let c = skiff_controllers::client_from_kubeconfig(
                &pki_dir.join(pki::CONTROLLER_MANAGER_KUBECONFIG),
                Some(&url),
            )
            .await
            .expect("controller-manager client");
            (s, c)
        });
        self.loops.push(self.rt.spawn(async move {
            if let Err(e) = skiff_scheduler::run(sched, Default::default()).await {
                eprintln!("scheduler: {e}");
            }
        }));
        let cfg = skiff_controllers::Config {
            node_monitor_grace_period: grace,
            ..Default::default()
        };
        self.loops
            .push(self.rt.spawn(skiff_controllers::run(ctrl, cfg)));
    }

    /// A microvm node on user networking that joins this plane as `name`
    /// with `token` (virtio-rng: TCG's CPU has no RDRAND, and joining
    /// needs entropy).
    pub fn node_spec(&self, name: &str, token: &str) -> crate::NodeSpec {
        use base64::Engine as _;
        let ca = base64::engine::general_purpose::STANDARD.encode(&self.ca_der);
        crate::user_net(crate::Machine::Microvm)
            .rng(true)
            .arg(format!("skiff.hostname={name}"))
            .arg(format!(
                "skiff.gateway={SLIRP_HOST}:{}",
                self.gateway_addr.port()
            ))
            .arg(format!("skiff.token={token}"))
            .arg(format!("skiff.ca={ca}"))
    }

    /// The gateway's log of connections, refusals and errors.
    pub fn journal(&self) -> Vec<String> {
        self.gateway
            .as_ref()
            .map(|g| g.journal())
            .unwrap_or_default()
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl_as(&self.kubeconfig, self.dir.path(), args)
    }

    /// kubectl as admin, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "kubectl {args:?} failed:\n{so}\n{se}");
        so.into_owned()
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> String {
        let path = self.dir.path().join(format!(
            "apply-{}.yaml",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::write(&path, yaml).unwrap();
        self.ok(&["apply", "-f", path.to_str().unwrap()])
    }

    /// Polls `f` every 100 ms for up to `secs`; the failure message carries
    /// `context()` (e.g. a node's serial log) and the gateway's journal.
    pub fn eventually(
        &self,
        what: &str,
        secs: u64,
        context: impl Fn() -> String,
        mut f: impl FnMut() -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !f() {
            assert!(
                Instant::now() < deadline,
                "timed out after {secs} s waiting for {what}\n{}\ngateway journal:\n{}",
                context(),
                self.journal().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `kubectl args` prints `needle`; returns that output.
    pub fn wait_output(
        &self,
        args: &[&str],
        needle: &str,
        secs: u64,
        context: impl Fn() -> String,
    ) -> String {
        let last = std::cell::RefCell::new(String::new());
        self.eventually(
            &format!("{needle:?} in kubectl {args:?}"),
            secs,
            || format!("last output:\n{}\n{}", last.borrow(), context()),
            || {
                let out = self.kubectl(args);
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                let found = text.contains(needle);
                *last.borrow_mut() = text;
                found
            },
        );
        last.into_inner()
    }

    /// Waits until node `name` has registered with the wasm runtime (its
    /// Node shows `skiff-wasm://`), with the node's log as context.
    pub fn wait_wasm_node(&self, name: &str, context: impl Fn() -> String) {
        self.wait_output(
            &[
                "get",
                "node",
                name,
                "-o",
                "jsonpath={.status.nodeInfo.containerRuntimeVersion}",
            ],
            "skiff-wasm://",
            60,
            context,
        );
    }
}

impl Drop for Plane {
    fn drop(&mut self) {
        let _g = self.rt.enter();
        for t in self.loops.drain(..) {
            t.abort();
        }
        self.gateway.take();
        if let Some(a) = self.api.take() {
            a.abort();
        }
    }
}

pub fn kubectl_as(kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(crate::peers::kubectl())
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
}

/// The first certificate of a PEM file, as DER.
pub fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine as _;
    let body: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .expect("PEM body is base64")
}
