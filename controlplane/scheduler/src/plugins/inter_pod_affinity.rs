//! InterPodAffinity, required terms: the pod's own affinity (some matching
//! pod in the node's topology domain) and anti-affinity (none), and the
//! anti-affinity of pods already placed (the new pod may not join their
//! domain). Scoring: the pod's preferred affinity terms add their weight
//! for each matching pod in a node's domain, preferred anti-affinity terms
//! subtract it (existing pods' preferred terms are not counted).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::PodAffinityTerm;

use super::topology_value;
use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, MAX_NODE_SCORE, ScorePlugin, Unfit};
use crate::labels::selector_matches;

pub const AFFINITY_REASON: &str = "node(s) didn't match pod affinity rules";
pub const ANTI_AFFINITY_REASON: &str = "node(s) didn't match pod anti-affinity rules";
pub const EXISTING_ANTI_AFFINITY_REASON: &str =
    "node(s) didn't satisfy existing pods anti-affinity rules";

const STATE: &str = "InterPodAffinity";
const SCORE_STATE: &str = "InterPodAffinity/score";

#[derive(Debug, Clone, Copy)]
pub struct InterPodAffinity;

/// Counts per topology domain, `(key, value)`.
type DomainCounts = HashMap<(String, String), i64>;

#[derive(Debug, Default)]
struct PreFilterState {
    /// Domains where an existing pod's anti-affinity forbids this pod.
    existing_anti: DomainCounts,
    /// Per affinity term of the pod: matching pods per domain.
    affinity: Vec<DomainCounts>,
    /// Per anti-affinity term of the pod: matching pods per domain.
    anti: Vec<DomainCounts>,
    /// No pod matches any affinity term anywhere, and the pod matches all of
    /// its own terms: the first pod of a group may go anywhere (kube).
    first_of_group: bool,
}

/// Whether `pod` is selected by `term`, written by a pod in `owner_ns`.
/// Namespaces: the listed ones, else the owner's; an empty
/// namespaceSelector means all namespaces (a non-empty one is not
/// supported and adds none).
pub fn term_matches(term: &PodAffinityTerm, owner_ns: &str, pod: &PodInfo) -> bool {
    let listed = term.namespaces.as_deref().unwrap_or_default();
    let all_ns = term.namespace_selector.as_ref().is_some_and(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    });
    let ns_ok = all_ns
        || if listed.is_empty() && term.namespace_selector.is_none() {
            pod.namespace == owner_ns
        } else {
            listed.contains(&pod.namespace)
        };
    // A missing label selector matches no pods.
    ns_ok
        && term
            .label_selector
            .as_ref()
            .is_some_and(|s| selector_matches(s, &pod.labels))
}

fn count_terms(terms: &[PodAffinityTerm], pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<DomainCounts> {
    terms
        .iter()
        .map(|term| {
            let mut counts = DomainCounts::new();
            for node in nodes {
                let Some(value) = topology_value(&node.labels, &term.topology_key) else {
                    continue;
                };
                let n = node
                    .pods
                    .iter()
                    .filter(|p| term_matches(term, &pod.namespace, p))
                    .count() as i64;
                if n > 0 {
                    *counts
                        .entry((term.topology_key.clone(), value.to_string()))
                        .or_default() += n;
                }
            }
            counts
        })
        .collect()
}

fn in_domain(counts: &DomainCounts, key: &str, node: &NodeInfo) -> i64 {
    match topology_value(&node.labels, key) {
        // Lookup without building an owned key in the common empty case.
        Some(v) if !counts.is_empty() => counts
            .get(&(key.to_string(), v.to_string()))
            .copied()
            .unwrap_or(0),
        _ => 0,
    }
}

impl FilterPlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn pre_filter(
        &self,
        pod: &PodInfo,
        nodes: &[NodeInfo],
        state: &mut CycleState,
    ) -> Result<(), String> {
        let mut s = PreFilterState::default();
        for node in nodes
            .iter()
            .filter(|n| n.pods_with_required_anti_affinity > 0)
        {
            for existing in &node.pods {
                for term in existing.required_anti_affinity() {
                    if term_matches(term, &existing.namespace, pod)
                        && let Some(v) = topology_value(&node.labels, &term.topology_key)
                    {
                        *s.existing_anti
                            .entry((term.topology_key.clone(), v.to_string()))
                            .or_default() += 1;
                    }
                }
            }
        }
        let affinity = pod.required_affinity();
        if !affinity.is_empty() {
            s.affinity = count_terms(affinity, pod, nodes);
            s.first_of_group = s.affinity.iter().all(|c| c.is_empty())
                && affinity
                    .iter()
                    .all(|t| term_matches(t, &pod.namespace, pod));
        }
        let anti = pod.required_anti_affinity();
        if !anti.is_empty() {
            s.anti = count_terms(anti, pod, nodes);
        }
        state.write(STATE, s);
        Ok(())
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Unfit> {
        let Some(s) = state.read::<PreFilterState>(STATE) else {
            return Ok(());
        };
        if !s.first_of_group {
            for (term, counts) in pod.required_affinity().iter().zip(&s.affinity) {
                if in_domain(counts, &term.topology_key, node) == 0 {
                    return Err(Unfit::new(AFFINITY_REASON));
                }
            }
        }
        for (term, counts) in pod.required_anti_affinity().iter().zip(&s.anti) {
            if in_domain(counts, &term.topology_key, node) > 0 {
                return Err(Unfit::new(ANTI_AFFINITY_REASON));
            }
        }
        // Checked last, as kube does, so the pod's own rules name the reason.
        if !s.existing_anti.is_empty()
            && s.existing_anti
                .keys()
                .any(|(k, v)| topology_value(&node.labels, k) == Some(v.as_str()))
        {
            return Err(Unfit::new(EXISTING_ANTI_AFFINITY_REASON));
        }
        Ok(())
    }
}

/// Weighted sums per domain, from the pod's preferred terms.
#[derive(Debug, Default)]
struct ScoreState {
    by_domain: DomainCounts,
}

impl ScorePlugin for InterPodAffinity {
    fn name(&self) -> &'static str {
        "InterPodAffinity"
    }

    fn pre_score(
        &self,
        pod: &PodInfo,
        nodes: &[NodeInfo],
        _feasible: &[&NodeInfo],
        state: &mut CycleState,
    ) {
        let Some(a) = pod.affinity.as_ref() else {
            return;
        };
        let preferred = a
            .pod_affinity
            .as_ref()
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default()
            .iter()
            .map(|w| (&w.pod_affinity_term, i64::from(w.weight)));
        let anti = a
            .pod_anti_affinity
            .as_ref()
            .and_then(|a| {
                a.preferred_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default()
            .iter()
            .map(|w| (&w.pod_affinity_term, -i64::from(w.weight)));
        let terms: Vec<(&PodAffinityTerm, i64)> = preferred.chain(anti).collect();
        if terms.is_empty() {
            return;
        }
        let mut s = ScoreState::default();
        for (term, weight) in terms {
            for counts in count_terms(std::slice::from_ref(term), pod, nodes) {
                for (domain, n) in counts {
                    *s.by_domain.entry(domain).or_default() += n * weight;
                }
            }
        }
        state.write(SCORE_STATE, s);
    }

    fn score(&self, state: &CycleState, _: &PodInfo, node: &NodeInfo) -> i64 {
        let Some(s) = state.read::<ScoreState>(SCORE_STATE) else {
            return 0;
        };
        s.by_domain
            .iter()
            .filter(|((k, v), _)| topology_value(&node.labels, k) == Some(v.as_str()))
            .map(|(_, n)| *n)
            .sum()
    }

    /// Scales (min..=max) onto 0..=100, as kube does.
    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        let max = scores.iter().copied().max().unwrap_or(0);
        let min = scores.iter().copied().min().unwrap_or(0);
        if max == min {
            return;
        }
        for s in scores.iter_mut() {
            *s = MAX_NODE_SCORE * (*s - min) / (max - min);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::*;
    use crate::framework::Framework;
    use crate::plugins::default_profile;
    use k8s_openapi::api::core::v1::{Affinity, PodAffinity, PodAntiAffinity};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    const HOST: &str = "kubernetes.io/hostname";
    const ZONE: &str = "topology.kubernetes.io/zone";

    fn term(app: &str, key: &str) -> PodAffinityTerm {
        PodAffinityTerm {
            label_selector: Some(LabelSelector {
                match_labels: Some([("app".to_string(), app.to_string())].into()),
                match_expressions: None,
            }),
            topology_key: key.into(),
            ..Default::default()
        }
    }

    fn with_anti(mut p: PodInfo, t: PodAffinityTerm) -> PodInfo {
        p.affinity = Some(Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![t]),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn with_affinity(mut p: PodInfo, t: PodAffinityTerm) -> PodInfo {
        p.affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![t]),
                ..Default::default()
            }),
            ..Default::default()
        });
        p
    }

    fn run(pod: &PodInfo, nodes: &[NodeInfo]) -> Vec<Result<(), Unfit>> {
        let mut s = CycleState::default();
        InterPodAffinity.pre_filter(pod, nodes, &mut s).unwrap();
        nodes
            .iter()
            .map(|n| InterPodAffinity.filter(&s, pod, n))
            .collect()
    }

    #[test]
    fn anti_affinity_on_hostname() {
        let c = cache(
            &[node("n1", "4", "4Gi", &[]), node("n2", "4", "4Gi", &[])],
            &[bound(pod("w1", "", "", &[("app", "web")]), "n1")],
        );
        let p = with_anti(
            PodInfo::new(&pod("w2", "", "", &[("app", "web")])),
            term("web", HOST),
        );
        let r = run(&p, c.nodes());
        assert_eq!(r[0], Err(Unfit::new(ANTI_AFFINITY_REASON)));
        assert!(r[1].is_ok());
    }

    #[test]
    fn existing_pods_anti_affinity_by_zone() {
        let guard = with_anti(
            PodInfo::new(&pod("g", "", "", &[("app", "db")])),
            term("web", ZONE),
        );
        let mut guard_bound = guard.clone();
        guard_bound.node_name = "n1".into();
        let c = cache(
            &[
                node("n1", "4", "4Gi", &[(ZONE, "a")]),
                node("n2", "4", "4Gi", &[(ZONE, "a")]),
                node("n3", "4", "4Gi", &[(ZONE, "b")]),
            ],
            &[std::sync::Arc::new(guard_bound)],
        );
        let p = PodInfo::new(&pod("w", "", "", &[("app", "web")]));
        let r = run(&p, c.nodes());
        assert_eq!(r[0], Err(Unfit::new(EXISTING_ANTI_AFFINITY_REASON)));
        assert_eq!(r[1], Err(Unfit::new(EXISTING_ANTI_AFFINITY_REASON)));
        assert!(r[2].is_ok());
        // A pod the guard does not select is unaffected.
        let other = PodInfo::new(&pod("o", "", "", &[("app", "other")]));
        assert!(run(&other, c.nodes()).iter().all(Result::is_ok));
    }

    #[test]
    fn affinity_follows_matching_pods_and_first_of_group_goes_anywhere() {
        let nodes = [
            node("n1", "4", "4Gi", &[(ZONE, "a")]),
            node("n2", "4", "4Gi", &[(ZONE, "b")]),
        ];
        let c = cache(&nodes, &[bound(pod("db", "", "", &[("app", "db")]), "n2")]);
        let p = with_affinity(
            PodInfo::new(&pod("w", "", "", &[("app", "web")])),
            term("db", ZONE),
        );
        let r = run(&p, c.nodes());
        assert_eq!(r[0], Err(Unfit::new(AFFINITY_REASON)));
        assert!(r[1].is_ok());

        // No "cache" pods at all, and the pod matches its own term.
        let first = with_affinity(
            PodInfo::new(&pod("c1", "", "", &[("app", "cache")])),
            term("cache", ZONE),
        );
        assert!(run(&first, c.nodes()).iter().all(Result::is_ok));
        // ...but one that does not match itself must wait.
        let lonely = with_affinity(
            PodInfo::new(&pod("x", "", "", &[("app", "x")])),
            term("cache", ZONE),
        );
        assert!(run(&lonely, c.nodes()).iter().all(Result::is_err));
    }

    #[test]
    fn preferred_terms_score() {
        use k8s_openapi::api::core::v1::WeightedPodAffinityTerm;
        let c = cache(
            &[
                node("n1", "4", "4Gi", &[(ZONE, "a")]),
                node("n2", "4", "4Gi", &[(ZONE, "b")]),
                node("n3", "4", "4Gi", &[(ZONE, "c")]),
            ],
            &[
                bound(pod("db", "", "", &[("app", "db")]), "n1"),
                bound(pod("noisy", "", "", &[("app", "noisy")]), "n3"),
            ],
        );
        let mut p = PodInfo::new(&pod("w", "", "", &[("app", "web")]));
        p.affinity = Some(Affinity {
            pod_affinity: Some(PodAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 50,
                        pod_affinity_term: term("db", ZONE),
                    },
                ]),
                ..Default::default()
            }),
            pod_anti_affinity: Some(PodAntiAffinity {
                preferred_during_scheduling_ignored_during_execution: Some(vec![
                    WeightedPodAffinityTerm {
                        weight: 50,
                        pod_affinity_term: term("noisy", ZONE),
                    },
                ]),
                ..Default::default()
            }),
            ..Default::default()
        });
        let nodes = c.nodes();
        let feasible: Vec<&NodeInfo> = nodes.iter().collect();
        let mut s = CycleState::default();
        InterPodAffinity.pre_score(&p, nodes, &feasible, &mut s);
        let mut scores: Vec<i64> = nodes
            .iter()
            .map(|n| InterPodAffinity.score(&s, &p, n))
            .collect();
        assert_eq!(scores, [50, 0, -50]);
        InterPodAffinity.normalize(&s, &mut scores);
        assert_eq!(scores, [100, 50, 0]);
    }

    #[test]
    fn message_through_the_framework() {
        let c = cache(
            &[node("n1", "4", "4Gi", &[]), node("n2", "4", "4Gi", &[])],
            &[
                bound(pod("w1", "", "", &[("app", "web")]), "n1"),
                bound(pod("w2", "", "", &[("app", "web")]), "n2"),
            ],
        );
        let p = with_anti(
            PodInfo::new(&pod("w3", "", "", &[("app", "web")])),
            term("web", HOST),
        );
        let err = Framework::new(default_profile())
            .schedule(&p, c.nodes())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "0/2 nodes are available: 2 node(s) didn't match pod anti-affinity rules."
        );
    }
}
