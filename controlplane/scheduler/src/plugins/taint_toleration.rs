//! TaintToleration: NoSchedule/NoExecute taints the pod does not tolerate
//! rule a node out; PreferNoSchedule taints lower its score.

use k8s_openapi::api::core::v1::{Taint, Toleration};

use crate::cache::{NodeInfo, PodInfo};
use crate::framework::{CycleState, FilterPlugin, ScorePlugin, Unfit, default_normalize};

#[derive(Debug, Clone, Copy)]
pub struct TaintToleration;

/// kube's `Toleration.ToleratesTaint`.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref().filter(|e| !e.is_empty())
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        // An empty key with Exists tolerates everything.
        "Exists" => true,
        "Equal" | "" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        _ => false,
    }
}

impl FilterPlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    fn filter(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Result<(), Unfit> {
        let untolerated = node.taints.iter().find(|taint| {
            (taint.effect == "NoSchedule" || taint.effect == "NoExecute")
                && !pod.tolerations.iter().any(|t| tolerates(t, taint))
        });
        match untolerated {
            None => Ok(()),
            Some(t) => Err(Unfit::new(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ))),
        }
    }
}

impl ScorePlugin for TaintToleration {
    fn name(&self) -> &'static str {
        "TaintToleration"
    }

    /// The number of PreferNoSchedule taints not tolerated (fewer is better).
    fn score(&self, _: &CycleState, pod: &PodInfo, node: &NodeInfo) -> i64 {
        node.taints
            .iter()
            .filter(|taint| {
                taint.effect == "PreferNoSchedule"
                    && !pod.tolerations.iter().any(|t| {
                        matches!(
                            t.effect.as_deref(),
                            None | Some("") | Some("PreferNoSchedule")
                        ) && tolerates(t, taint)
                    })
            })
            .count() as i64
    }

    fn normalize(&self, _: &CycleState, scores: &mut [i64]) {
        default_normalize(scores, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::*;

    fn taint(key: &str, value: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn toleration(key: &str, op: &str, value: &str, effect: &str) -> Toleration {
        Toleration {
            key: Some(key.into()),
            operator: Some(op.into()),
            value: Some(value.into()),
            effect: Some(effect.into()),
            toleration_seconds: None,
        }
    }

    #[test]
    fn toleration_matching() {
        let t = taint("dedicated", "gpu", "NoSchedule");
        assert!(tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoSchedule"),
            &t
        ));
        assert!(tolerates(&toleration("dedicated", "Equal", "gpu", ""), &t));
        assert!(tolerates(&toleration("dedicated", "Exists", "", ""), &t));
        assert!(tolerates(&toleration("", "Exists", "", ""), &t));
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "cpu", "NoSchedule"),
            &t
        ));
        assert!(!tolerates(
            &toleration("dedicated", "Equal", "gpu", "NoExecute"),
            &t
        ));
        assert!(!tolerates(&toleration("other", "Exists", "", ""), &t));
    }

    #[test]
    fn filter_reports_the_taint() {
        let mut n = NodeInfo::new(&node("n1", "1", "1Gi", &[]));
        n.taints = vec![
            taint("soft", "x", "PreferNoSchedule"),
            taint("key", "value", "NoSchedule"),
        ];
        let mut p = PodInfo::new(&pod("p", "", "", &[]));
        let s = CycleState::default();
        assert_eq!(
            TaintToleration.filter(&s, &p, &n),
            Err(Unfit::new("node(s) had untolerated taint {key: value}"))
        );
        p.tolerations
            .push(toleration("key", "Equal", "value", "NoSchedule"));
        assert!(TaintToleration.filter(&s, &p, &n).is_ok());
        n.taints.push(taint("evict", "", "NoExecute"));
        assert_eq!(
            TaintToleration.filter(&s, &p, &n),
            Err(Unfit::new("node(s) had untolerated taint {evict: }"))
        );
    }

    #[test]
    fn prefer_no_schedule_scores_lower() {
        let clean = NodeInfo::new(&node("n1", "1", "1Gi", &[]));
        let mut soft = NodeInfo::new(&node("n2", "1", "1Gi", &[]));
        soft.taints = vec![taint("soft", "x", "PreferNoSchedule")];
        let p = PodInfo::new(&pod("p", "", "", &[]));
        let s = CycleState::default();
        let mut scores = [
            TaintToleration.score(&s, &p, &clean),
            TaintToleration.score(&s, &p, &soft),
        ];
        TaintToleration.normalize(&s, &mut scores);
        assert_eq!(scores, [100, 0]);
    }
}
