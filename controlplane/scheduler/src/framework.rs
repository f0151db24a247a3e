//! The scheduling framework: filter and score plugins run over the cache
//! for one pod at a time, kube's `percentageOfNodesToScore` bounding the
//! search on large clusters, and kube's "0/N nodes are available" message
//! when nothing fits.

use std::any::Any;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use crate::cache::{NodeInfo, PodInfo};

/// Highest score a plugin gives a node (kube's `MaxNodeScore`).
pub const MAX_NODE_SCORE: i64 = 100;
/// Below this many nodes every node is checked (kube's `minFeasibleNodesToFind`).
pub const MIN_FEASIBLE_NODES_TO_FIND: usize = 100;
/// The adaptive percentage never drops below this.
pub const MIN_FEASIBLE_NODES_PERCENTAGE: usize = 5;

/// Why a node does not fit: one or more reasons in kube's wording
/// ("Insufficient cpu", "node(s) had untolerated taint {k: v}").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfit(pub Vec<Cow<'static, str>>);

impl Unfit {
    pub fn new(reason: impl Into<Cow<'static, str>>) -> Unfit {
        Unfit(vec![reason.into()])
    }
}

/// Per-pod data the plugins compute once per scheduling cycle.
#[derive(Default)]
pub struct CycleState {
    data: Vec<(&'static str, Box<dyn Any + Send>)>,
}

impl CycleState {
    pub fn write<T: Any + Send>(&mut self, key: &'static str, value: T) {
        self.data.retain(|(k, _)| *k != key);
        self.data.push((key, Box::new(value)));
    }

    pub fn read<T: Any>(&self, key: &'static str) -> Option<&T> {
        self.data
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.downcast_ref())
    }
}

/// A filter: can the pod run on the node?
pub trait FilterPlugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Once per cycle, before any node is filtered, with all nodes. An error
    /// means the pod fits nowhere; its text joins the FitError message.
    fn pre_filter(
        &self,
        _pod: &PodInfo,
        _nodes: &[NodeInfo],
        _state: &mut CycleState,
    ) -> Result<(), String> {
        Ok(())
    }

    fn filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Unfit>;
}

/// A scorer: how good is a feasible node, 0..=MAX_NODE_SCORE after
/// normalizing.
pub trait ScorePlugin: Send + Sync {
    fn name(&self) -> &'static str;

    /// Once per cycle over all nodes and the feasible ones.
    fn pre_score(
        &self,
        _pod: &PodInfo,
        _nodes: &[NodeInfo],
        _feasible: &[&NodeInfo],
        _state: &mut CycleState,
    ) {
    }

    fn score(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64;

    /// Maps raw scores (one per feasible node, in order) onto 0..=100.
    fn normalize(&self, _state: &CycleState, _scores: &mut [i64]) {}
}

/// A named set of plugins, like a kube scheduler profile.
pub struct Profile {
    pub scheduler_name: String,
    pub filters: Vec<Box<dyn FilterPlugin>>,
    /// Each scorer with its weight.
    pub scorers: Vec<(Box<dyn ScorePlugin>, i64)>,
    /// `None`: kube's adaptive default.
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("scheduler_name", &self.scheduler_name)
            .field(
                "filters",
                &self.filters.iter().map(|p| p.name()).collect::<Vec<_>>(),
            )
            .field(
                "scorers",
                &self
                    .scorers
                    .iter()
                    .map(|(p, w)| (p.name(), *w))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// kube's `numFeasibleNodesToFind`: how many feasible nodes are enough.
pub fn num_feasible_nodes_to_find(percentage: Option<u32>, all: usize) -> usize {
    if all < MIN_FEASIBLE_NODES_TO_FIND {
        return all;
    }
    let pct = match percentage {
        Some(p) if p > 0 => (p as usize).min(100),
        _ => 50usize
            .saturating_sub(all / 125)
            .max(MIN_FEASIBLE_NODES_PERCENTAGE),
    };
    (all * pct / 100).max(MIN_FEASIBLE_NODES_TO_FIND)
}

/// The pod fits nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FitError {
    pub num_all_nodes: usize,
    /// A pre-filter's reason (then no per-node reasons are counted).
    pub pre_filter_msg: Option<String>,
    /// How many nodes failed for each reason.
    pub reasons: BTreeMap<String, usize>,
}

impl fmt::Display for FitError {
    /// kube's `FitError.Error()`: "0/N nodes are available: 3 Insufficient
    /// cpu, 2 node(s) ...." with the "<count> <reason>" parts sorted as
    /// strings. Without preemption there is no "preemption: ..." part, as in
    /// kube with the DefaultPreemption plugin disabled.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num_all_nodes == 0 {
            return f.write_str("no nodes available to schedule pods");
        }
        write!(f, "0/{} nodes are available:", self.num_all_nodes)?;
        if let Some(m) = &self.pre_filter_msg {
            return write!(f, " {m}.");
        }
        let mut parts: Vec<String> = self
            .reasons
            .iter()
            .map(|(r, n)| format!("{n} {r}"))
            .collect();
        parts.sort();
        if !parts.is_empty() {
            write!(f, " {}.", parts.join(", "))?;
        }
        Ok(())
    }
}

/// Runs a profile. Keeps the round-robin start and scratch buffers between
/// pods so the hot path allocates little.
pub struct Framework {
    pub profile: Profile,
    next_start: usize,
    rng: u64,
    feasible: Vec<usize>,
    totals: Vec<i64>,
    scores: Vec<i64>,
}

impl fmt::Debug for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framework")
            .field("profile", &self.profile)
            .finish()
    }
}

impl Framework {
    pub fn new(profile: Profile) -> Framework {
        Framework {
            profile,
            next_start: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
            feasible: Vec::new(),
            totals: Vec::new(),
            scores: Vec::new(),
        }
    }

    /// Picks a node for `pod` among `nodes`: the index of the chosen one.
    pub fn schedule(&mut self, pod: &PodInfo, nodes: &[NodeInfo]) -> Result<usize, FitError> {
        let n = nodes.len();
        let fit_error = |pre: Option<String>, reasons| FitError {
            num_all_nodes: n,
            pre_filter_msg: pre,
            reasons,
        };
        if n == 0 {
            return Err(fit_error(None, BTreeMap::new()));
        }
        let mut state = CycleState::default();
        for f in &self.profile.filters {
            if let Err(msg) = f.pre_filter(pod, nodes, &mut state) {
                return Err(fit_error(Some(msg), BTreeMap::new()));
            }
        }

        let want = num_feasible_nodes_to_find(self.profile.percentage_of_nodes_to_score, n);
        self.feasible.clear();
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut processed = 0;
        while processed < n && self.feasible.len() < want {
            let i = (self.next_start + processed) % n;
            processed += 1;
            let node = &nodes[i];
            match self
                .profile
                .filters
                .iter()
                .try_for_each(|f| f.filter(&state, pod, node))
            {
                Ok(()) => self.feasible.push(i),
                Err(Unfit(rs)) => {
                    for r in rs {
                        match reasons.get_mut(r.as_ref()) {
                            Some(c) => *c += 1,
                            None => {
                                reasons.insert(r.into_owned(), 1);
                            }
                        }
                    }
                }
            }
        }
        self.next_start = (self.next_start + processed) % n;
        match self.feasible.len() {
            0 => return Err(fit_error(None, reasons)),
            1 => return Ok(self.feasible[0]),
            _ => {}
        }

        let feasible_nodes: Vec<&NodeInfo> = self.feasible.iter().map(|&i| &nodes[i]).collect();
        self.totals.clear();
        self.totals.resize(feasible_nodes.len(), 0);
        for (plugin, weight) in &self.profile.scorers {
            plugin.pre_score(pod, nodes, &feasible_nodes, &mut state);
            self.scores.clear();
            self.scores.extend(
                feasible_nodes
                    .iter()
                    .map(|node| plugin.score(&state, pod, node)),
            );
            plugin.normalize(&state, &mut self.scores);
            for (t, s) in self.totals.iter_mut().zip(&self.scores) {
                *t += s * weight;
            }
        }
        // Highest total; ties broken uniformly at random (reservoir
        // sampling, as kube's selectHost does).
        let mut best = 0;
        let mut ties = 1u64;
        for i in 1..self.totals.len() {
            if self.totals[i] > self.totals[best] {
                best = i;
                ties = 1;
            } else if self.totals[i] == self.totals[best] {
                ties += 1;
                if self.next_random().is_multiple_of(ties) {
                    best = i;
                }
            }
        }
        Ok(self.feasible[best])
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64: tie-breaking needs no quality, only spread.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }
}

/// kube's `DefaultNormalizeScore`: scales to 0..=100 by the maximum,
/// optionally reversed (fewer is better).
pub fn default_normalize(scores: &mut [i64], reverse: bool) {
    let max = scores.iter().copied().max().unwrap_or(0);
    if max == 0 {
        if reverse {
            scores.fill(MAX_NODE_SCORE);
        }
        return;
    }
    for s in scores {
        let v = MAX_NODE_SCORE * *s / max;
        *s = if reverse { MAX_NODE_SCORE - v } else { v };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feasible_nodes_to_find_matches_kube() {
        assert_eq!(num_feasible_nodes_to_find(None, 50), 50);
        // 100 nodes: 49% would be 49, raised to the floor of 100.
        assert_eq!(num_feasible_nodes_to_find(None, 100), 100);
        // 1000 nodes: 50 - 8 = 42%.
        assert_eq!(num_feasible_nodes_to_find(None, 1000), 420);
        // 5000 nodes: 50 - 40 = 10%.
        assert_eq!(num_feasible_nodes_to_find(None, 5000), 500);
        // 10000 nodes: floor at 5%.
        assert_eq!(num_feasible_nodes_to_find(None, 10000), 500);
        assert_eq!(num_feasible_nodes_to_find(Some(100), 5000), 5000);
        assert_eq!(num_feasible_nodes_to_find(Some(1), 5000), 100);
    }

    #[test]
    fn fit_error_message_like_kube() {
        let mut reasons = BTreeMap::new();
        reasons.insert("Insufficient memory".to_string(), 3);
        reasons.insert("node(s) had untolerated taint {key: value}".to_string(), 2);
        let e = FitError {
            num_all_nodes: 5,
            pre_filter_msg: None,
            reasons,
        };
        assert_eq!(
            e.to_string(),
            "0/5 nodes are available: 2 node(s) had untolerated taint {key: value}, 3 Insufficient memory."
        );
        let e = FitError {
            num_all_nodes: 0,
            pre_filter_msg: None,
            reasons: BTreeMap::new(),
        };
        assert_eq!(e.to_string(), "no nodes available to schedule pods");
        let e = FitError {
            num_all_nodes: 2,
            pre_filter_msg: Some("node(s) didn't match pod affinity rules".into()),
            reasons: BTreeMap::new(),
        };
        assert_eq!(
            e.to_string(),
            "0/2 nodes are available: node(s) didn't match pod affinity rules."
        );
    }

    #[test]
    fn large_clusters_search_a_rotating_window() {
        use crate::cache::testutil::{cache, node, pod};
        let nodes: Vec<_> = (0..1000)
            .map(|i| node(&format!("n{i:04}"), "4", "8Gi", &[]))
            .collect();
        let c = cache(&nodes, &[]);
        let mut profile = crate::plugins::default_profile();
        profile.scorers.clear();
        let mut fw = Framework::new(profile);
        let p = PodInfo::new(&pod("p", "100m", "", &[]));
        // 42% of 1000: each decision looks at the next 420 nodes only.
        for start in [0, 420, 840] {
            let i = fw.schedule(&p, c.nodes()).unwrap();
            // Position within the window, which wraps past the last node.
            let offset = (i + 1000 - start) % 1000;
            assert!(offset < 420, "node {i} outside the window from {start}");
        }
    }

    #[test]
    fn weighted_scores_pick_the_best_node() {
        use crate::cache::testutil::{bound, cache, node, pod};
        use k8s_openapi::api::core::v1::Taint;
        let mut soft = node("soft", "4", "8Gi", &[]);
        soft.spec.as_mut().unwrap().taints = Some(vec![Taint {
            key: "k".into(),
            effect: "PreferNoSchedule".into(),
            ..Default::default()
        }]);
        let c = cache(
            &[
                soft,
                node("busy", "4", "8Gi", &[]),
                node("free", "4", "8Gi", &[]),
            ],
            &[bound(pod("x", "3", "6Gi", &[]), "busy")],
        );
        let mut fw = Framework::new(crate::plugins::default_profile());
        let p = PodInfo::new(&pod("p", "500m", "1Gi", &[]));
        for _ in 0..10 {
            let i = fw.schedule(&p, c.nodes()).unwrap();
            assert_eq!(c.nodes()[i].name, "free");
        }
    }

    #[test]
    fn normalize() {
        let mut s = [0, 5, 10];
        default_normalize(&mut s, false);
        assert_eq!(s, [0, 50, 100]);
        let mut s = [0, 5, 10];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 50, 0]);
        let mut s = [0, 0];
        default_normalize(&mut s, true);
        assert_eq!(s, [100, 100]);
    }
}
