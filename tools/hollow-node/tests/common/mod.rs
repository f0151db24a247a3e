//! Test harness: the in-process plane of the node tests
//! ([`skiff_e2e::plane::Plane`]: API server, gateway, real kubectl) with
//! hollow nodes on its runtime.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use skiff_apiserver::pki;
use skiff_e2e::plane::Plane;
use skiff_gateway::GatewayConfig;
use skiff_hollow_node::{Fleet, FleetConfig};

#[allow(unused_imports)] // not every test binary runs kubectl
pub use skiff_e2e::peers::kubectl as kubectl_path;

/// A [`Plane`] (which this derefs to) and a fleet of hollow nodes.
pub struct Cluster {
    pub fleet: Option<Fleet>,
    /// What [`Cluster::start_node`] joins with (gateway, CA, token).
    pub fleet_cfg: FleetConfig,
    // Dropped last: the fleet runs on its runtime.
    plane: Plane,
}

impl std::ops::Deref for Cluster {
    type Target = Plane;
    fn deref(&self) -> &Plane {
        &self.plane
    }
}

/// Short timings so health and rotation are observable in a test.
pub fn fast(cfg: &mut GatewayConfig) {
    cfg.renew_interval = Duration::from_millis(200);
    cfg.node_grace = Duration::from_millis(1500);
}

impl Cluster {
    /// A plane with [`fast`] gateway timings, then `tune`.
    pub fn start(tune: impl FnOnce(&mut GatewayConfig)) -> Cluster {
        let plane = Plane::start(|cfg| {
            fast(cfg);
            tune(cfg);
        });
        let ca = plane.pki_dir().join(pki::CA_CERT);
        let fleet_cfg = FleetConfig::new(plane.gateway_addr, &ca, &plane.token).expect("fleet");
        Cluster {
            fleet: Some(Fleet::new()),
            fleet_cfg,
            plane,
        }
    }

    /// Starts hollow node `name` (number `i` picks its address).
    pub fn start_node(&mut self, name: &str, i: u32) {
        let cfg = self.fleet_cfg.node(name, i);
        let _g = self.plane.rt.enter();
        self.fleet.as_mut().unwrap().start(cfg);
    }

    /// The scheduler and the controllers (Deployments, EndpointSlices...).
    pub fn start_control_loops(&mut self) {
        self.plane
            .start_control_loops(Duration::from_secs(40), None);
    }

    pub fn stop_node(&mut self, name: &str) {
        assert!(self.fleet.as_mut().unwrap().stop(name));
    }

    pub fn stats(&self) -> Arc<skiff_hollow_node::Stats> {
        self.fleet.as_ref().unwrap().stats.clone()
    }

    /// A kubeconfig holding a node's own certificate and key (from TLS
    /// bootstrap), as that node's kubelet would have.
    pub fn node_kubeconfig(&self, name: &str, creds: &skiff_hollow_node::node::Creds) -> PathBuf {
        let issued = pki::Issued {
            cert_pem: skiff_e2e::plane::der_to_pem(&creds.chain[0]),
            key_pem: creds.key.serialize_pem(),
        };
        self.issued_kubeconfig(name, &issued)
    }

    /// Runs the real TLS bootstrap for `name` and returns its credentials.
    pub fn bootstrap(
        &self,
        name: &str,
        token: &str,
    ) -> Result<skiff_hollow_node::node::Creds, skiff_hollow_node::node::BootstrapError> {
        let mut cfg = self.fleet_cfg.node(name, 999);
        cfg.token = token.to_string();
        self.block_on(skiff_hollow_node::node::bootstrap(&cfg))
    }

    /// [`Plane::eventually`] with the gateway journal as the only context.
    #[track_caller]
    pub fn eventually(&self, what: &str, secs: u64, f: impl FnMut() -> bool) {
        self.plane.eventually(what, secs, String::new, f);
    }

    /// [`Plane::wait_output`] with the gateway journal as the only context.
    #[track_caller]
    pub fn wait_output(&self, args: &[&str], needle: &str, secs: u64) -> String {
        self.plane.wait_output(args, needle, secs, String::new)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The fleet's tasks stop on the plane's runtime, before the plane.
        let _g = self.plane.rt.enter();
        self.fleet.take();
    }
}
