//! The control plane in process for node tests: the real API server and
//! node gateway on loopback (fresh PKI and data directory), with the real
//! kubectl as the client. QEMU guests on user networking reach the host's
//! loopback at [`SLIRP_HOST`], which the serving certificate names.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_apiserver::pki;
use skiff_gateway::{Gateway, GatewayConfig};
use skiff_test_support::api::ApiServer;

use crate::registry::Registry;

/// The host as seen from a QEMU user-network guest.
pub const SLIRP_HOST: &str = "10.0.2.2";

/// The API server ([`ApiServer`], which a plane derefs to for the URL,
/// kubeconfig, runtime and the kubectl and polling helpers), plus the node
/// gateway with its image service and, when started, the control loops.
pub struct Plane {
    /// A valid bootstrap token.
    pub token: String,
    /// The cluster CA certificate (DER).
    pub ca_der: Vec<u8>,
    pub gateway_addr: SocketAddr,
    /// Shared with the API server's wait diagnostics (its journal).
    gateway: Arc<Mutex<Option<Gateway>>>,
    /// Scheduler and controller manager, when started.
    loops: Vec<tokio::task::JoinHandle<()>>,
    // Dropped last: its runtime carries everything above.
    api: ApiServer,
}

impl std::ops::Deref for Plane {
    type Target = ApiServer;
    fn deref(&self) -> &ApiServer {
        &self.api
    }
}

impl Plane {
    /// Starts the plane; `tune` adjusts the gateway (tests shorten the
    /// renew interval and the node grace period).
    pub fn start(tune: impl FnOnce(&mut GatewayConfig)) -> Plane {
        Plane::start_with_registries(&[], tune)
    }

    /// The plane the wasm node tests use: images from `registry`, node
    /// leases renewed every 500 ms, and the scheduler and controllers
    /// running with a 40 s node grace period (TCG nodes are slow; a
    /// shorter grace would mark a busy node NotReady).
    pub fn for_wasm_nodes(registry: &Registry) -> Plane {
        Plane::wasm_plane(registry, None)
    }

    /// [`Plane::for_wasm_nodes`] whose controller manager gives each Node a
    /// pod CIDR from 10.244.0.0/16 (`serve --allocate-node-cidrs`), so pods
    /// get addresses of their own.
    pub fn for_wasm_nodes_with_pod_network(registry: &Registry) -> Plane {
        Plane::wasm_plane(registry, Some(skiff_controllers::PodNetwork::default()))
    }

    fn wasm_plane(
        registry: &Registry,
        pod_network: Option<skiff_controllers::PodNetwork>,
    ) -> Plane {
        let mut plane = Plane::start_with_registries(&[registry.host()], |cfg| {
            cfg.renew_interval = Duration::from_millis(500);
        });
        plane.start_control_loops(Duration::from_secs(40), pod_network);
        plane
    }

    /// [`Plane::start`] whose image service reaches `registries`
    /// (`host:port`, the tests' local docker-registry) over plain HTTP, as
    /// `serve --insecure-registry` does; any other only over HTTPS.
    pub fn start_with_registries(
        registries: &[String],
        tune: impl FnOnce(&mut GatewayConfig),
    ) -> Plane {
        let init = pki::InitOptions {
            sans: vec![SLIRP_HOST.into()],
            ..pki::InitOptions::default()
        };
        let mut api = ApiServer::start_full(&init, |_| {}, |_| {});
        let mut gcfg = GatewayConfig::new(api.pki_dir(), "127.0.0.1:0".parse().unwrap());
        // Wasm nodes get their images pulled and compiled, as in `serve`.
        let mut icfg = skiff_images::Config::new(api.path("images"));
        icfg.insecure_registries = registries.to_vec();
        let images = skiff_images::ImageService::new(icfg).expect("image service");
        gcfg.images = Some(skiff_gateway::Images(images));
        gcfg.image_backoff = Duration::from_secs(2);
        tune(&mut gcfg);
        let gateway = api
            .block_on(skiff_gateway::start(gcfg, api.state()))
            .expect("gateway");
        let gateway_addr = gateway.addr;
        let gateway = Arc::new(Mutex::new(Some(gateway)));
        let g = gateway.clone();
        api.set_diagnostics(move || format!("gateway journal:\n{}", journal(&g).join("\n")));
        Plane {
            token: api.pki.bootstrap_tokens[0].clone(),
            ca_der: pem_to_der(&api.ca_pem()),
            gateway_addr,
            gateway,
            loops: Vec::new(),
            api,
        }
    }

    /// Starts the scheduler and the controller manager as API clients
    /// with their own credentials, as `skiff-controlplane serve` does;
    /// `grace` is the node-monitor grace period; `pod_network` the node
    /// IPAM's (`None`: no pod CIDRs, as `serve` without
    /// `--allocate-node-cidrs`, so pods share their node's address).
    pub fn start_control_loops(
        &mut self,
        grace: Duration,
        pod_network: Option<skiff_controllers::PodNetwork>,
    ) {
        let pki_dir = self.pki_dir();
        let url = self.url.clone();
        let (sched, ctrl) = self.api.rt.block_on(async {
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
        self.loops.push(self.api.rt.spawn(async move {
            if let Err(e) = skiff_scheduler::run(sched, Default::default()).await {
                eprintln!("scheduler: {e}");
            }
        }));
        let cfg = skiff_controllers::Config {
            node_monitor_grace_period: grace,
            pod_network,
            ..Default::default()
        };
        self.loops
            .push(self.api.rt.spawn(skiff_controllers::run(ctrl, cfg)));
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
        journal(&self.gateway)
    }

    /// Runs `f` on the running gateway (e.g. to read its metrics).
    pub fn with_gateway<T>(&self, f: impl FnOnce(&Gateway) -> T) -> T {
        f(self
            .gateway
            .lock()
            .unwrap()
            .as_ref()
            .expect("gateway running"))
    }

    /// Runs Pod `echo` (the echo-server guest, which the test pushed to
    /// `registry_host` as `demo/echo:1.0`, on guest port 8080) and waits up
    /// to 150 s until it answers on `http_port`, the host port forwarded to
    /// its node: the neighbour the isolation tests keep asking.
    pub fn run_echo_pod(&self, registry_host: &str, http_port: u16, context: impl Fn() -> String) {
        self.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: echo, namespace: default}}
spec:
  containers:
  - name: echo
    image: {registry_host}/demo/echo:1.0
    ports: [{{containerPort: 8080}}]
"#
        ));
        self.eventually("the echo server to answer", 150, context, || {
            crate::http_get(http_port, "/").is_ok_and(|a| a.contains("200 OK"))
        });
    }

    /// Applies `yaml`, a Pod `ns/name` that runs to completion
    /// (`restartPolicy: Never`), waits up to 180 s until it Succeeded or
    /// Failed and returns its log.
    pub fn run_to_completion(&self, yaml: &str, ns: &str, name: &str) -> String {
        self.apply(yaml);
        let phase = [
            "get",
            "pod",
            "-n",
            ns,
            name,
            "-o",
            "jsonpath={.status.phase}",
        ];
        self.wait_output(&phase, "ed", 180, String::new);
        String::from_utf8_lossy(&self.kubectl(&["logs", "-n", ns, name]).stdout).into_owned()
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
        let _g = self.api.rt.enter();
        for t in self.loops.drain(..) {
            t.abort();
        }
        self.gateway.lock().unwrap().take();
    }
}

fn journal(gateway: &Mutex<Option<Gateway>>) -> Vec<String> {
    gateway
        .lock()
        .unwrap()
        .as_ref()
        .map(|g| g.journal())
        .unwrap_or_default()
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

/// A DER certificate as PEM (64-column base64).
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}
