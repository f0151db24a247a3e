//! NodeUnschedulable: cordoned nodes (`spec.unschedulable`) take only pods
//! that tolerate `node.kubernetes.io/unschedulable:NoSchedule`.

use k8s_openapi::api::core::v1::Taint;

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, Unfit};

pub const REASON: &str = "node(s) were unschedulable";
pub const TAINT_KEY: &str = "node.kubernetes.io/unschedulable";

#[derive(Debug, Clone, Copy)]
pub struct NodeUnschedulable;

impl FilterPlugin for NodeUnschedulable {
    fn name(&self) -> &'static str {
        "NodeUnschedulable"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Unfit> {
        if !node.unschedulable {
            return Ok(());
        }
        let taint = Taint {
            key: TAINT_KEY.into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if pod
            .tolerations
            .iter()
            .any(|t| super::taint_toleration::tolerates(t, &taint))
        {
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
    use k8s_openapi::api::core::v1::Toleration;

    #[test]
    fn cordoned_nodes_need_the_toleration() {
        let mut n = NodeInfo::new(&node("n1", "1", "1Gi", &[]));
        let mut p = PodInfo::new(&pod("p", "", "", &[]));
        let s = CycleState::default();
        assert!(NodeUnschedulable.filter(&s, &p, &n).is_ok());
        n.unschedulable = true;
        assert_eq!(
            NodeUnschedulable.filter(&s, &p, &n),
            Err(Unfit::new(REASON))
        );
        p.tolerations.push(Toleration {
            key: Some(TAINT_KEY.into()),
            operator: Some("Exists".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        });
        assert!(NodeUnschedulable.filter(&s, &p, &n).is_ok());
    }
}
