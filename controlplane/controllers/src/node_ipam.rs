//! Node IPAM (kube's range allocator, `--allocate-node-cidrs`): every Node
//! gets `spec.podCIDR(s)`, a subnet of `--cluster-cidr` of
//! `--node-cidr-mask-size` bits that no other Node holds; the node gives
//! its pods addresses from it. A deleted Node's subnet is free again.
//!
//! The allocator keeps no state of its own beyond allocations not yet seen
//! in the cache: what is taken is read from the Nodes each time, so a
//! restart (or a new leader) cannot hand out a subnet twice.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use serde_json::json;

use crate::{Error, Shared, events, util};

/// The cluster's pod network and how it is cut per node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodNetwork {
    /// `--cluster-cidr`.
    pub cluster: Ipv4Net,
    /// `--node-cidr-mask-size`: each node's subnet prefix length.
    pub node_prefix: u8,
}

/// Why a pod network setting is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PodNetworkError {
    #[error("cluster CIDR {0:?} is not an IPv4 CIDR (a.b.c.d/n)")]
    Cidr(String),
    #[error("node CIDR mask size {node} must be between the cluster CIDR's /{cluster} and /30")]
    NodePrefix { node: u8, cluster: u8 },
    #[error("cluster CIDR /{cluster} cut into /{node} subnets gives more than 2^16 node subnets")]
    TooMany { node: u8, cluster: u8 },
}

impl PodNetwork {
    /// Checks `cluster` (`a.b.c.d/n`, host bits zero or not) and
    /// `node_prefix` (room for at least two pod addresses per node).
    pub fn new(cluster: &str, node_prefix: u8) -> Result<PodNetwork, PodNetworkError> {
        let net: Ipv4Net = cluster
            .parse()
            .map_err(|_| PodNetworkError::Cidr(cluster.into()))?;
        let cluster_prefix = net.prefix_len();
        if node_prefix < cluster_prefix || node_prefix > 30 {
            return Err(PodNetworkError::NodePrefix {
                node: node_prefix,
                cluster: cluster_prefix,
            });
        }
        if node_prefix - cluster_prefix > 16 {
            return Err(PodNetworkError::TooMany {
                node: node_prefix,
                cluster: cluster_prefix,
            });
        }
        Ok(PodNetwork {
            cluster: net.trunc(),
            node_prefix,
        })
    }

    /// The lowest node subnet not in `taken`, if any is left.
    pub fn first_free(&self, taken: &BTreeSet<Ipv4Net>) -> Option<Ipv4Net> {
        // `new` bounds this to 2^16 subnets.
        self.cluster
            .subnets(self.node_prefix)
            .ok()?
            .find(|s| !taken.contains(s))
    }

    /// A node's `spec.podCIDR` as a subnet of this network, if it is one
    /// (CIDRs set by hand or under another `--cluster-cidr` are left alone).
    fn subnet_of(&self, cidr: &str) -> Option<Ipv4Net> {
        let net: Ipv4Net = cidr.parse().ok()?;
        (net.prefix_len() == self.node_prefix && self.cluster.contains(&net)).then(|| net.trunc())
    }
}

impl Default for PodNetwork {
    /// 10.244.0.0/16 in /24s (flannel's and kubeadm's usual choice): 256
    /// nodes of 254 pods.
    fn default() -> PodNetwork {
        PodNetwork {
            cluster: Ipv4Net::new(Ipv4Addr::new(10, 244, 0, 0), 16).expect("valid prefix"),
            node_prefix: 24,
        }
    }
}

/// A node's pod CIDR, if it has one.
fn pod_cidr(node: &Node) -> Option<&str> {
    node.spec.as_ref()?.pod_cidr.as_deref()
}

/// The pure decision for a node without a pod CIDR: the subnet to give it,
/// given every Node (the cache) and allocations made but not yet cached.
pub fn plan(
    network: &PodNetwork,
    nodes: &[Arc<Node>],
    pending: &HashMap<String, Ipv4Net>,
) -> Option<Ipv4Net> {
    let mut taken: BTreeSet<Ipv4Net> = nodes
        .iter()
        .filter_map(|n| network.subnet_of(pod_cidr(n)?))
        .collect();
    // A pending allocation holds its subnet while its Node exists.
    let live: BTreeSet<&str> = nodes.iter().map(|n| util::name(&n.metadata)).collect();
    taken.extend(
        pending
            .iter()
            .filter(|(name, _)| live.contains(name.as_str()))
            .map(|(_, net)| *net),
    );
    network.first_free(&taken)
}

struct Ctx {
    shared: Arc<Shared>,
    network: PodNetwork,
    /// Node → subnet patched but maybe not in the cache yet. The lock is
    /// held across the patch so two nodes never get one subnet.
    pending: tokio::sync::Mutex<HashMap<String, Ipv4Net>>,
    /// Nodes told there is no subnet left (one event each, not per retry).
    exhausted: Mutex<BTreeSet<String>>,
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = util::name(&node.metadata).to_string();
    if pod_cidr(&node).is_some() || util::deleting(&node.metadata) {
        ctx.pending.lock().await.remove(&name);
        return Ok(Action::await_change());
    }
    let mut pending = ctx.pending.lock().await;
    if pending.contains_key(&name) {
        // Patched already; the cache has not caught up.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let nodes = ctx.shared.nodes.state();
    let Some(subnet) = plan(&ctx.network, &nodes, &pending) else {
        let first = ctx
            .exhausted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.clone());
        if first {
            events::record(
                &ctx.shared.client,
                node.as_ref(),
                "node-ipam-controller",
                true,
                "CIDRNotAvailable",
                format!(
                    "Node {name} status is now: CIDRNotAvailable (no /{} left in {})",
                    ctx.network.node_prefix, ctx.network.cluster
                ),
            );
        }
        // A deleted Node's subnet is looked for again soon (the check only
        // reads the cache).
        return Ok(Action::requeue(Duration::from_secs(5)));
    };
    let cidr = subnet.to_string();
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    Api::<Node>::all(ctx.shared.client.clone())
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    pending.insert(name.clone(), subnet);
    ctx.exhausted
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&name);
    tracing::info!(node = %name, pod_cidr = %cidr, "allocated the node's pod CIDR");
    Ok(Action::await_change())
}

fn policy(node: Arc<Node>, e: &Error, ctx: Arc<Ctx>) -> Action {
    crate::error_policy(node, e, ctx.shared.clone())
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let Some(network) = shared.cfg.pod_network else {
        return;
    };
    let ctx = Arc::new(Ctx {
        shared,
        network,
        pending: Default::default(),
        exhausted: Default::default(),
    });
    // Every existing allocation must be known before the first new one.
    informers.nodes.ready().await;
    Controller::for_shared_stream(informers.nodes.subscribe(), informers.nodes.store())
        .run(
            crate::metrics::metered("nodeipam", &ctx.shared.cfg.stats, reconcile),
            policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cidr: Option<&str>) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name},
                "spec": {"podCIDR": cidr},
            }))
            .unwrap(),
        )
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn settings_are_checked() {
        let n = PodNetwork::new("10.244.7.9/16", 24).unwrap();
        assert_eq!(n.cluster, net("10.244.0.0/16"));
        assert_eq!(
            PodNetwork::default(),
            PodNetwork::new("10.244.0.0/16", 24).unwrap()
        );
        assert!(matches!(
            PodNetwork::new("10.244.0.0", 24),
            Err(PodNetworkError::Cidr(_))
        ));
        assert!(matches!(
            PodNetwork::new("fd00::/64", 80),
            Err(PodNetworkError::Cidr(_))
        ));
        assert!(matches!(
            PodNetwork::new("10.0.0.0/16", 8),
            Err(PodNetworkError::NodePrefix { .. })
        ));
        assert!(matches!(
            PodNetwork::new("10.0.0.0/16", 31),
            Err(PodNetworkError::NodePrefix { .. })
        ));
        assert!(matches!(
            PodNetwork::new("10.0.0.0/8", 30),
            Err(PodNetworkError::TooMany { .. })
        ));
    }

    #[test]
    fn the_lowest_free_subnet_is_given_and_none_twice() {
        let n = PodNetwork::new("10.244.0.0/22", 24).unwrap();
        let mut pending = HashMap::new();
        let nodes = vec![
            node("a", Some("10.244.0.0/24")),
            node("b", None),
            node("c", Some("192.168.0.0/24")), // not ours: ignored
        ];
        assert_eq!(plan(&n, &nodes, &pending), Some(net("10.244.1.0/24")));
        // Allocated to b, not yet in the cache: the next node gets another.
        pending.insert("b".to_string(), net("10.244.1.0/24"));
        assert_eq!(plan(&n, &nodes, &pending), Some(net("10.244.2.0/24")));
        // A pending allocation of a node that is gone is free again.
        pending.insert("gone".to_string(), net("10.244.2.0/24"));
        assert_eq!(plan(&n, &nodes, &pending), Some(net("10.244.2.0/24")));
        // Full: nothing.
        let full = vec![
            node("a", Some("10.244.0.0/24")),
            node("b", Some("10.244.1.0/24")),
            node("c", Some("10.244.2.0/24")),
            node("d", Some("10.244.3.0/24")),
            node("e", None),
        ];
        assert_eq!(plan(&n, &full, &HashMap::new()), None);
        // A deleted node's subnet is given again.
        assert_eq!(
            plan(&n, &full[1..], &HashMap::new()),
            Some(net("10.244.0.0/24"))
        );
    }
}
