//! The pod-networking tests' and benchmarks' setup, written once: kernel
//! nodes on one shared [`Segment`] with a registry and the whole control
//! plane (gateway with pod CIDRs, scheduler, controllers).

use crate::plane::Plane;
use crate::registry::Registry;
use crate::{Booted, Segment, try_boot_on};

/// A cluster of kernel nodes on one segment. Fields drop in order: the
/// nodes before the network they are on.
pub struct SegmentCluster {
    /// The booted nodes, by name.
    pub nodes: Vec<(String, Booted)>,
    pub plane: Plane,
    pub registry: Registry,
    pub segment: Segment,
    _dir: tempfile::TempDir,
}

impl SegmentCluster {
    /// Boots `names` (each with `memory_mib`) once `images` (repository,
    /// example guest) are in the registry, and waits until every node is
    /// a Ready wasm node with its pod CIDR.
    pub fn start(names: &[&str], memory_mib: u32, images: &[(&str, &str)]) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let segment = Segment::start(dir.path()).map_err(|e| format!("segment: {e}"))?;
        let registry = Registry::start();
        let plane = Plane::for_wasm_nodes_with_pod_network(&registry);
        for (repo, guest) in images {
            registry.push_wasm(repo, &crate::guests::path(guest));
        }
        let mut nodes = Vec::new();
        for n in names {
            let spec = plane.node_spec(n, &plane.token).memory_mib(memory_mib);
            nodes.push((n.to_string(), try_boot_on(&segment, spec)?));
        }
        let cluster = SegmentCluster {
            nodes,
            plane,
            registry,
            segment,
            _dir: dir,
        };
        let log = || cluster.log();
        for n in names {
            cluster.plane.wait_wasm_node(n, log);
            cluster.plane.wait_output(
                &["get", "node", n, "-o", "jsonpath={.spec.podCIDR}"],
                "10.244.",
                60,
                log,
            );
        }
        Ok(cluster)
    }

    /// [`SegmentCluster::start`] for tests: a failure panics.
    pub fn boot(names: &[&str], memory_mib: u32, images: &[(&str, &str)]) -> Self {
        Self::start(names, memory_mib, images).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The registry's `host:port`, for image references.
    pub fn host(&self) -> String {
        self.registry.host()
    }

    /// Every node's serial log, each under its name.
    pub fn log(&self) -> String {
        self.nodes
            .iter()
            .map(|(n, b)| format!("--- {n}:\n{}", b.node.log_text()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A booted node by name.
    pub fn node(&self, name: &str) -> &Booted {
        &self
            .nodes
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no node {name}"))
            .1
    }
}

impl SegmentCluster {
    /// Stops every node in order (each must exit cleanly).
    pub fn shutdown(self) {
        for (_, b) in self.nodes {
            b.shutdown();
        }
    }
}
