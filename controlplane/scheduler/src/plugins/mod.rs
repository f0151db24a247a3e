//! The in-tree plugins and the default profile (kube's plugin order and
//! score weights).

mod inter_pod_affinity;
mod node_affinity;
mod node_name;
mod node_resources;
mod node_unschedulable;
mod taint_toleration;
mod topology_spread;

pub use inter_pod_affinity::InterPodAffinity;
pub use node_affinity::NodeAffinity;
pub use node_name::NodeName;
pub use node_resources::{BalancedAllocation, LeastAllocated, NodeResourcesFit};
pub use node_unschedulable::NodeUnschedulable;
pub use taint_toleration::{TaintToleration, tolerates};
pub use topology_spread::PodTopologySpread;

use crate::framework::Profile;

/// kube's default profile, restricted to the plugins implemented here.
pub fn default_profile() -> Profile {
    Profile {
        scheduler_name: crate::DEFAULT_SCHEDULER.to_string(),
        filters: vec![
            Box::new(NodeUnschedulable),
            Box::new(NodeName),
            Box::new(TaintToleration),
            Box::new(NodeAffinity),
            Box::new(NodeResourcesFit),
            Box::new(PodTopologySpread),
            Box::new(InterPodAffinity),
        ],
        scorers: vec![
            (Box::new(TaintToleration), 3),
            (Box::new(NodeAffinity), 2),
            (Box::new(PodTopologySpread), 2),
            (Box::new(InterPodAffinity), 2),
            (Box::new(LeastAllocated), 1),
            (Box::new(BalancedAllocation), 1),
        ],
        percentage_of_nodes_to_score: None,
    }
}

/// The value of `key` on a node, if the node has it.
pub(crate) fn topology_value<'a>(labels: &'a crate::labels::Labels, key: &str) -> Option<&'a str> {
    labels.get(key).map(String::as_str)
}
