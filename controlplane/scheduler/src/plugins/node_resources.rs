//! NodeResourcesFit (requests against allocatable: pods, cpu, memory) and
//! the two resource scorers: LeastAllocated (kube's default scoring
//! strategy of NodeResourcesFit) and BalancedAllocation.

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, MAX_NODE_SCORE, ScorePlugin, Unfit};

#[derive(Debug, Clone, Copy)]
pub struct NodeResourcesFit;

impl FilterPlugin for NodeResourcesFit {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Unfit> {
        let (req, alloc, used) = (&pod.requests, &node.allocatable, &node.requested);
        let mut reasons = Vec::new();
        if node.pods.len() as i64 + 1 > alloc.pods {
            reasons.push("Too many pods".into());
        }
        if req.milli_cpu > 0 && req.milli_cpu > alloc.milli_cpu - used.milli_cpu {
            reasons.push("Insufficient cpu".into());
        }
        if req.memory > 0 && req.memory > alloc.memory - used.memory {
            reasons.push("Insufficient memory".into());
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(Unfit(reasons))
        }
    }
}

/// Free share after placing the pod, averaged over cpu and memory.
#[derive(Debug, Clone, Copy)]
pub struct LeastAllocated;

fn least_allocated(capacity: i64, requested: i64) -> i64 {
    if capacity <= 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

impl ScorePlugin for LeastAllocated {
    fn name(&self) -> &'static str {
        "NodeResourcesFit"
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (a, u, p) = (
            &node.allocatable,
            &node.non_zero_requested,
            &pod.non_zero_requests,
        );
        let cpu = least_allocated(a.milli_cpu, u.milli_cpu + p.milli_cpu);
        let mem = least_allocated(a.memory, u.memory + p.memory);
        (cpu + mem) / 2
    }
}

/// Prefers nodes whose cpu and memory use stay close to each other.
#[derive(Debug, Clone, Copy)]
pub struct BalancedAllocation;

impl ScorePlugin for BalancedAllocation {
    fn name(&self) -> &'static str {
        "NodeResourcesBalancedAllocation"
    }

    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        let (a, u, p) = (
            &node.allocatable,
            &node.non_zero_requested,
            &pod.non_zero_requests,
        );
        let fraction = |cap: i64, req: i64| {
            if cap <= 0 {
                1.0
            } else {
                (req as f64 / cap as f64).min(1.0)
            }
        };
        let cpu = fraction(a.milli_cpu, u.milli_cpu + p.milli_cpu);
        let mem = fraction(a.memory, u.memory + p.memory);
        // The standard deviation of two values is half their distance.
        let std = (cpu - mem).abs() / 2.0;
        ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::*;

    #[test]
    fn fit_reports_every_insufficient_resource() {
        let mut n = NodeInfo::new(&node("n1", "2", "4Gi", &[]));
        n.add_pod(bound(pod("a", "1500m", "3Gi", &[]), "n1"));
        let s = CycleState::default();
        let fits = PodInfo::new(&pod("p", "500m", "1Gi", &[]));
        assert!(NodeResourcesFit.filter(&s, &fits, &n).is_ok());
        let big = PodInfo::new(&pod("p", "600m", "2Gi", &[]));
        assert_eq!(
            NodeResourcesFit.filter(&s, &big, &n),
            Err(Unfit(vec![
                "Insufficient cpu".into(),
                "Insufficient memory".into()
            ]))
        );
        // Requests of zero always fit, whatever is used.
        let none = PodInfo::new(&pod("p", "", "", &[]));
        assert!(NodeResourcesFit.filter(&s, &none, &n).is_ok());
    }

    #[test]
    fn pod_count_limit() {
        let mut n = NodeInfo::new(&node("n1", "100", "100Gi", &[]));
        n.allocatable.pods = 1;
        n.add_pod(bound(pod("a", "", "", &[]), "n1"));
        let s = CycleState::default();
        assert_eq!(
            NodeResourcesFit.filter(&s, &PodInfo::new(&pod("p", "", "", &[])), &n),
            Err(Unfit::new("Too many pods"))
        );
    }

    #[test]
    fn least_allocated_prefers_emptier_nodes() {
        let empty = NodeInfo::new(&node("n1", "4", "8Gi", &[]));
        let mut busy = NodeInfo::new(&node("n2", "4", "8Gi", &[]));
        busy.add_pod(bound(pod("a", "2", "4Gi", &[]), "n2"));
        let p = PodInfo::new(&pod("p", "1", "2Gi", &[]));
        let s = CycleState::default();
        assert_eq!(LeastAllocated.score(&s, &p, &empty), 75);
        assert_eq!(LeastAllocated.score(&s, &p, &busy), 25);
        // A pod without requests counts the 100m / 200Mi defaults.
        let be = PodInfo::new(&pod("p", "", "", &[]));
        assert!(LeastAllocated.score(&s, &be, &empty) < 100);
    }

    #[test]
    fn balanced_allocation_prefers_even_use() {
        let n = NodeInfo::new(&node("n1", "4", "4Gi", &[]));
        let s = CycleState::default();
        let even = PodInfo::new(&pod("p", "2", "2Gi", &[]));
        let skewed = PodInfo::new(&pod("p", "4", "1", &[]));
        assert_eq!(BalancedAllocation.score(&s, &even, &n), 100);
        assert_eq!(BalancedAllocation.score(&s, &skewed, &n), 50);
    }
}
