//! A cluster in process for the controllers' tests: the real API server and
//! node gateway ([`skiff_e2e::plane::Plane`]), the controller manager as a
//! client with `controller-manager.kubeconfig`, hollow nodes, and the real
//! kubectl.
//! The real scheduler (`skiff-scheduler`, with `scheduler.kubeconfig`)
//! places the pods, as in `skiff-controlplane serve`.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use skiff_e2e::plane::Plane;
use skiff_hollow_node::{Fleet, FleetConfig};

pub struct Cluster {
    pub cfg: skiff_controllers::Config,
    pub fleet: Arc<Mutex<Fleet>>,
    pub client: kube::Client,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    // Dropped last: the rest runs on its runtime.
    pub plane: Plane,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Cluster {
    /// A cluster with `nodes` hollow nodes named `node-<i>`, Ready, and the
    /// controller manager running with this node grace period.
    pub fn start(nodes: u32, grace: Duration) -> Cluster {
        let plane = Plane::start(|g| {
            g.quiet = true;
            g.node_grace = grace;
            g.renew_interval = Duration::from_millis(500);
        });
        let pki = plane.dir.path().join("pki");
        let client = plane
            .rt
            .block_on(skiff_controllers::client_from_kubeconfig(
                &pki.join("controller-manager.kubeconfig"),
                Some(&plane.url),
            ))
            .expect("controller-manager client");
        let scheduler = plane
            .rt
            .block_on(skiff_scheduler::client_from_kubeconfig(
                &pki.join("scheduler.kubeconfig"),
                Some(&plane.url),
            ))
            .expect("scheduler client");
        let cfg = skiff_controllers::Config {
            node_monitor_grace_period: grace,
            node_monitor_period: Duration::from_millis(500),
            identity: "test-manager".into(),
            lease_duration: Duration::from_secs(3),
            // Four node subnets: small enough for a test to use them up.
            pod_network: Some(skiff_controllers::PodNetwork::new("10.244.0.0/22", 24).unwrap()),
            stats: Default::default(),
        };
        let tasks = vec![
            plane
                .rt
                .spawn(skiff_controllers::run(client.clone(), cfg.clone())),
            plane.rt.spawn(async move {
                if let Err(e) = skiff_scheduler::run(scheduler, Default::default()).await {
                    eprintln!("scheduler: {e}");
                }
            }),
        ];
        let fleet_cfg = FleetConfig::new(plane.gateway_addr, &pki.join("ca.crt"), &plane.token)
            .expect("fleet config");
        let fleet = Arc::new(Mutex::new(Fleet::new()));
        {
            let _g = plane.rt.enter();
            fleet.lock().unwrap().start_many(&fleet_cfg, "node", nodes);
        }
        let c = Cluster {
            cfg,
            fleet,
            client,
            tasks,
            plane,
        };
        c.wait("all nodes Ready", 60, || {
            let out = c.get(&["nodes", "--no-headers"]);
            let ready = out
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
                .count();
            (ready == nodes as usize).then_some(()).ok_or(out)
        });
        c
    }

    /// Starts another controller manager (a standby replica) with this
    /// identity.
    pub fn spawn_manager(&self, identity: &str) -> tokio::task::JoinHandle<()> {
        let cfg = skiff_controllers::Config {
            identity: identity.into(),
            ..self.cfg.clone()
        };
        self.plane
            .rt
            .spawn(skiff_controllers::run(self.client.clone(), cfg))
    }

    /// Stops the first controller manager as if its process died.
    pub fn stop_manager(&mut self) {
        self.tasks[0].abort();
    }

    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.plane.kubectl(args)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.plane.ok(args)
    }

    pub fn apply(&self, yaml: &str) -> String {
        self.plane.apply(yaml)
    }

    /// `kubectl get ARGS` stdout, failures included as text.
    pub fn get(&self, args: &[&str]) -> String {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        let out = self.kubectl(&all);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }

    /// Retries `check` every 200 ms until it passes or `secs` run out.
    pub fn wait(&self, what: &str, secs: u64, mut check: impl FnMut() -> Result<(), String>) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            match check() {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => {
                    panic!("timed out after {secs} s waiting for {what}; last:\n{e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The pods of `selector` (name, phase, node, ready, deleting).
    pub fn pods(&self, selector: &str) -> Vec<PodRow> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), "default");
        let list = self
            .plane
            .rt
            .block_on(api.list(&ListParams::default().labels(selector)))
            .expect("list pods");
        list.items
            .into_iter()
            .map(|p| PodRow {
                name: p.metadata.name.clone().unwrap_or_default(),
                phase: p
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.clone())
                    .unwrap_or_default(),
                node: p
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                ready: skiff_controllers::pod_ready(&p),
                deleting: p.metadata.deletion_timestamp.is_some(),
                image: p
                    .spec
                    .as_ref()
                    .map(|s| s.containers[0].image.clone().unwrap_or_default())
                    .unwrap_or_default(),
            })
            .collect()
    }

    /// Live pods of `selector` that are Running and Ready.
    pub fn ready_pods(&self, selector: &str) -> Vec<PodRow> {
        self.pods(selector)
            .into_iter()
            .filter(|p| !p.deleting && p.phase == "Running" && p.ready)
            .collect()
    }

    /// Waits until exactly `n` live pods of `selector` exist, all Running
    /// and Ready, and `check` holds for them.
    pub fn wait_ready_pods(
        &self,
        selector: &str,
        n: usize,
        secs: u64,
        check: impl Fn(&[PodRow]) -> bool,
    ) -> Vec<PodRow> {
        let mut rows = Vec::new();
        self.wait(&format!("{n} ready pods {selector}"), secs, || {
            let live: Vec<PodRow> = self
                .pods(selector)
                .into_iter()
                .filter(|p| !p.deleting)
                .collect();
            rows = live.clone();
            (live.len() == n
                && live.iter().all(|p| p.phase == "Running" && p.ready)
                && check(&live))
            .then_some(())
            .ok_or(format!("{live:#?}"))
        });
        rows
    }
}

#[derive(Debug, Clone)]
pub struct PodRow {
    pub name: String,
    pub phase: String,
    pub node: String,
    pub ready: bool,
    pub deleting: bool,
    pub image: String,
}
