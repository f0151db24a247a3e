//! skiff-hollow-node: simulated Skiff nodes for scale tests, like
//! Kubernetes' kubemark. Each hollow node runs the kernel's node agent
//! (`skiff-node-agent`: token bootstrap, mutual TLS, registration, lease
//! heartbeats, pod sync, certificate rotation, back-off) over its own tokio
//! TCP connection; containers "run" on a fake runtime for a scripted time
//! ([`fake_runtime`]) under the agent's `skiff-kubelet` core, printing
//! scripted output that `kubectl logs` reads through the core's log
//! streams. Many nodes share one process and one tokio runtime ([`Fleet`]).
//!
//! Modules: [`node`] (the driver that moves one node's bytes, and a
//! bootstrap for hand-driven tests), [`identity`] (TLS client configs for
//! those tests), [`fake_runtime`], [`stats`].

pub mod fake_runtime;
pub mod identity;
pub mod node;
pub mod stats;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use skiff_node_proto::Resources;

pub use node::NodeConfig;
pub use stats::Stats;

/// What every node of a fleet shares.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    pub gateway: SocketAddr,
    pub ca: Vec<CertificateDer<'static>>,
    pub token: String,
    pub capacity: Resources,
}

/// Why [`FleetConfig::new`] failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetConfigError {
    /// The cluster CA file could not be read or is not PEM certificates.
    #[error("cluster CA {}: {source}", path.display())]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
}

impl FleetConfig {
    /// Reads the cluster CA from a PEM file.
    pub fn new(
        gateway: SocketAddr,
        ca_pem: &Path,
        token: &str,
    ) -> Result<FleetConfig, FleetConfigError> {
        let ca_err = |source| FleetConfigError::Ca {
            path: ca_pem.to_owned(),
            source,
        };
        let ca = CertificateDer::pem_file_iter(ca_pem)
            .map_err(ca_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(ca_err)?;
        Ok(FleetConfig {
            gateway,
            ca,
            token: token.to_string(),
            capacity: Resources {
                cpu_millis: 4000,
                memory_bytes: 8 << 30,
                pods: 110,
                ephemeral_storage_bytes: 20 << 30,
            },
        })
    }

    /// The config of node number `i` named `name`: a fake InternalIP in
    /// 10.64.0.0/10 derived from `i`.
    pub fn node(&self, name: &str, i: u32) -> NodeConfig {
        let ip = 0x0a40_0000u32 + 1 + i;
        NodeConfig {
            name: name.to_string(),
            gateway: self.gateway,
            ca: self.ca.clone(),
            token: self.token.clone(),
            ip: std::net::Ipv4Addr::from(ip).to_string(),
            capacity: self.capacity,
        }
    }
}

/// Hollow nodes running on the current tokio runtime.
#[derive(Debug, Default)]
pub struct Fleet {
    nodes: HashMap<String, tokio::task::JoinHandle<()>>,
    pub stats: Arc<Stats>,
}

impl Fleet {
    pub fn new() -> Fleet {
        Fleet::default()
    }

    /// Starts one node.
    pub fn start(&mut self, cfg: NodeConfig) {
        let name = cfg.name.clone();
        let task = tokio::spawn(node::run(Arc::new(cfg), self.stats.clone()));
        if let Some(old) = self.nodes.insert(name, task) {
            old.abort();
        }
    }

    /// Starts `count` nodes named `<prefix>-<i>`.
    pub fn start_many(&mut self, cfg: &FleetConfig, prefix: &str, count: u32) {
        for i in 0..count {
            self.start(cfg.node(&format!("{prefix}-{i}"), i));
        }
    }

    /// Stops a node as if it lost power: its connection just drops.
    pub fn stop(&mut self, name: &str) -> bool {
        self.nodes.remove(name).map(|t| t.abort()).is_some()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for t in self.nodes.values() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_ca_file_is_the_ca_variant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        let err = FleetConfig::new("127.0.0.1:1".parse().unwrap(), &path, "t").unwrap_err();
        assert!(
            matches!(err, FleetConfigError::Ca { path: ref p, .. } if *p == path),
            "{err}"
        );
    }
}
