//! NodeAffinity: `spec.nodeSelector` and required node affinity filter
//! (kube folds both into this plugin, with one reason); preferred terms
//! score by the sum of their weights.

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, ScorePlugin, Unfit, default_normalize};
use crate::labels::node_selector_term_matches;

pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

#[derive(Debug, Clone, Copy)]
pub struct NodeAffinity;

/// Whether the node satisfies the pod's nodeSelector and required node
/// affinity (also used by PodTopologySpread to pick eligible nodes).
pub fn required_matches(pod: &PodInfo, node: &NodeInfo) -> bool {
    if !pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return false;
    }
    let required = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        None => true,
        Some(sel) => sel
            .node_selector_terms
            .iter()
            .any(|t| node_selector_term_matches(t, &node.name, &node.labels)),
    }
}

impl FilterPlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Unfit> {
        if required_matches(pod, node) {
            Ok(())
        } else {
            Err(Unfit::new(REASON))
        }
    }
}

impl ScorePlugin for NodeAffinity {
    fn name(&self) -> &'static str {
        "NodeAffinity"
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        pod.affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|prefs| {
                prefs
                    .iter()
                    .filter(|p| node_selector_term_matches(&p.preference, &node.name, &node.labels))
                    .map(|p| i64::from(p.weight))
                    .sum()
            })
            .unwrap_or(0)
    }

    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        default_normalize(scores, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::*;
    use k8s_openapi::api::core::v1::{
        Affinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, PreferredSchedulingTerm,
    };

    fn term(key: &str, values: &[&str]) -> NodeSelectorTerm {
        NodeSelectorTerm {
            match_expressions: Some(vec![NodeSelectorRequirement {
                key: key.into(),
                operator: "In".into(),
                values: Some(values.iter().map(|s| s.to_string()).collect()),
            }]),
            match_fields: None,
        }
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let ssd = NodeInfo::new(&node("n1", "1", "1Gi", &[("disk", "ssd"), ("zone", "a")]));
        let hdd = NodeInfo::new(&node("n2", "1", "1Gi", &[("disk", "hdd"), ("zone", "b")]));
        let s = CycleState::default();
        let mut p = PodInfo::new(&pod("p", "", "", &[]));
        p.node_selector.insert("disk".into(), "ssd".into());
        assert!(NodeAffinity.filter(&s, &p, &ssd).is_ok());
        assert_eq!(NodeAffinity.filter(&s, &p, &hdd), Err(Unfit::new(REASON)));

        let mut p = PodInfo::new(&pod("p", "", "", &[]));
        p.affinity = Some(Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                    node_selector_terms: vec![term("zone", &["b", "c"])],
                }),
                preferred_during_scheduling_ignored_during_execution: None,
            }),
            ..Default::default()
        });
        assert!(NodeAffinity.filter(&s, &p, &ssd).is_err());
        assert!(NodeAffinity.filter(&s, &p, &hdd).is_ok());
    }

    #[test]
    fn preferred_affinity_scores() {
        let a = NodeInfo::new(&node("n1", "1", "1Gi", &[("zone", "a")]));
        let b = NodeInfo::new(&node("n2", "1", "1Gi", &[("zone", "b")]));
        let mut p = PodInfo::new(&pod("p", "", "", &[]));
        p.affinity = Some(Affinity {
            node_affinity: Some(k8s_openapi::api::core::v1::NodeAffinity {
                required_during_scheduling_ignored_during_execution: None,
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    PreferredSchedulingTerm {
                        weight: 10,
                        preference: term("zone", &["b"]),
                    },
                ]),
            }),
            ..Default::default()
        });
        let s = CycleState::default();
        let mut scores = [
            NodeAffinity.score(&s, &p, &a),
            NodeAffinity.score(&s, &p, &b),
        ];
        NodeAffinity.normalize(&s, &mut scores);
        assert_eq!(scores, [0, 100]);
    }
}
