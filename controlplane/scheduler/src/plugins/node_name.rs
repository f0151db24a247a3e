//! NodeName: a pod naming a node runs only there.

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, Unfit};

pub const REASON: &str = "node(s) didn't match the requested node name";

#[derive(Debug, Clone, Copy)]
pub struct NodeName;

impl FilterPlugin for NodeName {
    fn name(&self) -> &'static str {
        "NodeName"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Unfit> {
        if pod.node_name.is_empty() || pod.node_name == node.name {
            Ok(())
        } else {
            Err(Unfit::new(REASON))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::*;

    #[test]
    fn only_the_named_node() {
        let n1 = NodeInfo::new(&node("n1", "1", "1Gi", &[]));
        let n2 = NodeInfo::new(&node("n2", "1", "1Gi", &[]));
        let mut p = PodInfo::new(&pod("p", "", "", &[]));
        let s = CycleState::default();
        assert!(NodeName.filter(&s, &p, &n1).is_ok());
        p.node_name = "n2".into();
        assert_eq!(NodeName.filter(&s, &p, &n1), Err(Unfit::new(REASON)));
        assert!(NodeName.filter(&s, &p, &n2).is_ok());
    }
}
