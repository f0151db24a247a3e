//! PodTopologySpread: `whenUnsatisfiable: DoNotSchedule` constraints filter
//! nodes whose domain would exceed `maxSkew` over the least loaded domain;
//! `ScheduleAnyway` constraints score emptier domains higher. Eligible
//! nodes follow kube's defaults (nodeAffinityPolicy Honor, nodeTaintsPolicy
//! Ignore) unless the constraint says otherwise. Cluster-level default
//! constraints and matchLabelKeys are not implemented.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::TopologySpreadConstraint;

use super::node_affinity::required_matches;
use super::taint_toleration::tolerates;
use super::topology_value;
use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, MAX_NODE_SCORE, ScorePlugin, Unfit};
use crate::labels::selector_matches;

pub const REASON: &str = "node(s) didn't match pod topology spread constraints";
pub const MISSING_LABEL_REASON: &str =
    "node(s) didn't match pod topology spread constraints (missing required label)";

const FILTER_STATE: &str = "PodTopologySpread/filter";
const SCORE_STATE: &str = "PodTopologySpread/score";
/// Marks nodes the scorer ignores (missing a topology key).
const IGNORED: i64 = -1;

#[derive(Debug, Clone, Copy)]
pub struct PodTopologySpread;

#[derive(Debug)]
struct Counted {
    key: String,
    max_skew: i64,
    self_match: i64,
    /// Matching pods per domain value (every eligible domain present).
    counts: HashMap<String, i64>,
    min: i64,
}

fn hard(c: &TopologySpreadConstraint) -> bool {
    c.when_unsatisfiable == "DoNotSchedule"
}

fn matches(c: &TopologySpreadConstraint, namespace: &str, pod: &PodInfo) -> bool {
    pod.namespace == namespace
        && c.label_selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, &pod.labels))
}

/// Whether a node takes part in counting for `pod`'s constraints.
fn eligible(pod: &PodInfo, c: &TopologySpreadConstraint, node: &NodeInfo) -> bool {
    if c.node_affinity_policy.as_deref() != Some("Ignore") && !required_matches(pod, node) {
        return false;
    }
    if c.node_taints_policy.as_deref() == Some("Honor")
        && node.taints.iter().any(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        })
    {
        return false;
    }
    true
}

fn count(
    pod: &PodInfo,
    constraints: &[&TopologySpreadConstraint],
    nodes: &[NodeInfo],
) -> Vec<Counted> {
    constraints
        .iter()
        .map(|c| {
            let mut counts: HashMap<String, i64> = HashMap::new();
            for node in nodes {
                // kube counts only nodes carrying every constraint's key.
                if !constraints
                    .iter()
                    .all(|o| node.labels.contains_key(&o.topology_key))
                    || !eligible(pod, c, node)
                {
                    continue;
                }
                let value = &node.labels[&c.topology_key];
                let n = node
                    .pods
                    .iter()
                    .filter(|p| matches(c, &pod.namespace, p))
                    .count() as i64;
                match counts.get_mut(value.as_str()) {
                    Some(v) => *v += n,
                    None => {
                        counts.insert(value.clone(), n);
                    }
                }
            }
            let mut min = counts.values().copied().min().unwrap_or(0);
            if c.min_domains
                .is_some_and(|m| (counts.len() as i64) < i64::from(m))
            {
                min = 0;
            }
            Counted {
                key: c.topology_key.clone(),
                max_skew: i64::from(c.max_skew),
                self_match: i64::from(matches(c, &pod.namespace, pod)),
                counts,
                min,
            }
        })
        .collect()
}

impl FilterPlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        nodes: &[NodeInfo],
        state: &mut CycleState,
    ) -> Result<(), String> {
        let constraints: Vec<&TopologySpreadConstraint> =
            pod.spread.iter().filter(|c| hard(c)).collect();
        if !constraints.is_empty() {
            state.write(FILTER_STATE, count(pod, &constraints, nodes));
        }
        Ok(())
    }

    fn filter(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> Result<(), Unfit> {
        let Some(counted) = state.read::<Vec<Counted>>(FILTER_STATE) else {
            return Ok(());
        };
        for c in counted {
            let Some(value) = topology_value(&node.labels, &c.key) else {
                return Err(Unfit::new(MISSING_LABEL_REASON));
            };
            let here = c.counts.get(value).copied().unwrap_or(0);
            if here + c.self_match - c.min > c.max_skew {
                return Err(Unfit::new(REASON));
            }
        }
        Ok(())
    }
}

#[derive(Debug)]
struct ScoreState {
    counted: Vec<Counted>,
    weights: Vec<f64>,
}

impl ScorePlugin for PodTopologySpread {
    fn name(&self) -> &'static str {
        "PodTopologySpread"
    }

    fn pre_score(
        &self,
        pod: &PodInfo,
        nodes: &[NodeInfo],
        _feasible: &[&NodeInfo],
        state: &mut CycleState,
    ) {
        let constraints: Vec<&TopologySpreadConstraint> =
            pod.spread.iter().filter(|c| !hard(c)).collect();
        if constraints.is_empty() {
            return;
        }
        let counted = count(pod, &constraints, nodes);
        // More domains weigh more (kube: log(domains + 2)).
        let weights = counted
            .iter()
            .map(|c| ((c.counts.len() + 2) as f64).ln())
            .collect();
        state.write(SCORE_STATE, ScoreState { counted, weights });
    }

    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<ScoreState>(SCORE_STATE) else {
            return 0;
        };
        let mut total = 0.0;
        for (c, w) in s.counted.iter().zip(&s.weights) {
            let Some(value) = topology_value(&node.labels, &c.key) else {
                return IGNORED;
            };
            let n = c.counts.get(value).copied().unwrap_or(0);
            total += n as f64 * w + (c.max_skew - 1) as f64;
        }
        total.round() as i64
    }

    /// Fewer matching pods is better; ignored nodes get 0.
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        let valid = || scores.iter().copied().filter(|&s| s != IGNORED);
        let max = valid().max().unwrap_or(0);
        let min = valid().min().unwrap_or(0);
        for s in scores.iter_mut() {
            *s = if *s == IGNORED {
                0
            } else if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE * (max + min - *s) / max
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::*;
    use crate::framework::Framework;
    use crate::plugins::default_profile;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    const ZONE: &str = "topology.kubernetes.io/zone";

    fn constraint(key: &str, skew: i32, when: &str) -> TopologySpreadConstraint {
        TopologySpreadConstraint {
            max_skew: skew,
            topology_key: key.into(),
            when_unsatisfiable: when.into(),
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                match_expressions: None,
            }),
            ..Default::default()
        }
    }

    fn zones() -> Vec<k8s_openapi::api::core::v1::Node> {
        vec![
            node("a1", "4", "4Gi", &[(ZONE, "a")]),
            node("a2", "4", "4Gi", &[(ZONE, "a")]),
            node("b1", "4", "4Gi", &[(ZONE, "b")]),
        ]
    }

    #[test]
    fn do_not_schedule_bounds_skew() {
        let c = cache(
            &zones(),
            &[
                bound(pod("w1", "", "", &[("app", "web")]), "a1"),
                bound(pod("other", "", "", &[("app", "db")]), "b1"),
            ],
        );
        let mut p = PodInfo::new(&pod("w2", "", "", &[("app", "web")]));
        p.spread = vec![constraint(ZONE, 1, "DoNotSchedule")];
        let mut s = CycleState::default();
        PodTopologySpread.pre_filter(&p, c.nodes(), &mut s).unwrap();
        let r: Vec<_> = c
            .nodes()
            .iter()
            .map(|n| PodTopologySpread.filter(&s, &p, n))
            .collect();
        // Zone a has 1, b has 0: another in a makes skew 2.
        assert_eq!(r[0], Err(Unfit::new(REASON)));
        assert_eq!(r[1], Err(Unfit::new(REASON)));
        assert!(r[2].is_ok());

        // A node without the key.
        let bare = NodeInfo::new(&node("x", "4", "4Gi", &[]));
        assert_eq!(
            PodTopologySpread.filter(&s, &p, &bare),
            Err(Unfit::new(MISSING_LABEL_REASON))
        );
    }

    #[test]
    fn schedule_anyway_prefers_emptier_domains() {
        let c = cache(
            &zones(),
            &[bound(pod("w1", "", "", &[("app", "web")]), "a1")],
        );
        let mut p = PodInfo::new(&pod("w2", "", "", &[("app", "web")]));
        p.spread = vec![constraint(ZONE, 1, "ScheduleAnyway")];
        let nodes = c.nodes();
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let mut s = CycleState::default();
        PodTopologySpread.pre_score(&p, nodes, &feasible, &mut s);
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| PodTopologySpread.score(&s, &p, n))
            .collect();
        PodTopologySpread.normalize(&s, &mut scores);
        assert!(scores[2] > scores[0], "{scores:?}");
        assert_eq!(scores[0], scores[1]);
    }

    #[test]
    fn spreads_a_group_across_zones() {
        let mut c = cache(&zones(), &[]);
        let mut fw = Framework::new(default_profile());
        let mut per_zone: HashMap<String, i64> = HashMap::new();
        for i in 0..6 {
            let mut p = PodInfo::new(&pod(&format!("w{i}"), "", "", &[("app", "web")]));
            p.spread = vec![constraint(ZONE, 1, "DoNotSchedule")];
            let idx = fw.schedule(&p, c.nodes()).unwrap();
            let node = c.nodes()[idx].clone();
            *per_zone.entry(node.labels[ZONE].clone()).or_default() += 1;
            c.assume(std::sync::Arc::new(p), &node.name);
        }
        assert_eq!(per_zone["a"], 3);
        assert_eq!(per_zone["b"], 3);
    }
}
