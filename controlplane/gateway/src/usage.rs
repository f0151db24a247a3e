//! The nodes' resource usage reports (protocol v5 `Usage`), kept in memory
//! as the API server's [`UsageSource`] for metrics.k8s.io.
//!
//! Reports carry cumulative CPU time; rates are computed as metrics-server
//! computes them: the change in CPU time between a node's last two reports
//! over the time between them (the `window`). A container instance first
//! seen (no earlier point for it) is measured from its start, when its
//! counter was zero; a counter that went backwards (a restarted node) gives
//! no rate until the next report. Samples older than [`STALE_AFTER`] are
//! not served (a node that stopped reporting has no current usage).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use skiff_apiserver::{NodeSample, PodSample, Usage, UsageSource};
use skiff_node_proto::{USAGE_REPORT_SECS, UsageReport};

/// Three report intervals: one late or lost report does not blank `kubectl top`.
pub const STALE_AFTER: Duration = Duration::from_secs(3 * USAGE_REPORT_SECS);

/// Every node's latest report and the samples computed from it.
#[derive(Debug, Default)]
pub struct UsageHub {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    nodes: HashMap<String, NodeEntry>,
    /// Pod uid → the node whose report has it.
    pod_node: HashMap<String, String>,
}

#[derive(Debug)]
struct NodeEntry {
    received: Instant,
    last: UsageReport,
    node: Option<NodeSample>,
    pods: HashMap<String, PodSample>,
}

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

/// CPU time `used_ns` over `window_ms` as nanocores.
fn rate(used_ns: u64, window_ms: u64) -> u64 {
    (u128::from(used_ns) * 1_000 / u128::from(window_ms.max(1))) as u64
}

impl UsageHub {
    /// Takes `node`'s new report.
    pub fn report(&self, node: &str, report: UsageReport) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let prev = g
            .nodes
            .remove(node)
            .map(|e| e.last)
            .filter(|p| p.timestamp < report.timestamp);
        let node_sample = prev.as_ref().and_then(|p| {
            let window = report.timestamp - p.timestamp;
            let used = report.node.cpu_ns.checked_sub(p.node.cpu_ns)?;
            (report.node.cpu_ns > 0 || report.node.memory_working_set_bytes > 0).then(|| {
                NodeSample {
                    timestamp: at(report.timestamp),
                    window: Duration::from_millis(window),
                    usage: Usage {
                        cpu_nanocores: rate(used, window),
                        memory_bytes: report.node.memory_working_set_bytes,
                    },
                }
            })
        });
        let mut pods = HashMap::new();
        for pod in &report.pods {
            let before = prev
                .as_ref()
                .and_then(|p| p.pods.iter().find(|q| q.uid == pod.uid));
            let mut window_ms = 0;
            let mut containers = Vec::new();
            for c in &pod.containers {
                // The same instance in the previous report, else its start.
                let (from_ms, from_ns) = before
                    .and_then(|b| {
                        b.containers
                            .iter()
                            .find(|d| d.name == c.name && d.started_at == c.started_at)
                    })
                    .map_or((c.started_at, 0), |d| {
                        (prev.as_ref().map_or(0, |p| p.timestamp), d.cpu_ns)
                    });
                let Some(used) = c.cpu_ns.checked_sub(from_ns) else {
                    continue;
                };
                if from_ms >= report.timestamp {
                    continue;
                }
                let window = report.timestamp - from_ms;
                window_ms = window_ms.max(window);
                containers.push((
                    c.name.clone(),
                    Usage {
                        cpu_nanocores: rate(used, window),
                        memory_bytes: c.memory_working_set_bytes,
                    },
                ));
            }
            if !containers.is_empty() {
                pods.insert(
                    pod.uid.clone(),
                    PodSample {
                        timestamp: at(report.timestamp),
                        window: Duration::from_millis(window_ms),
                        containers,
                    },
                );
            }
        }
        g.pod_node.retain(|_, n| n != node);
        for uid in pods.keys() {
            g.pod_node.insert(uid.clone(), node.to_string());
        }
        g.nodes.insert(
            node.to_string(),
            NodeEntry {
                received: Instant::now(),
                last: report,
                node: node_sample,
                pods,
            },
        );
    }

    /// `node`'s session ended: its figures stop being current.
    pub fn forget(&self, node: &str) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.nodes.remove(node);
        g.pod_node.retain(|_, n| n != node);
    }

    /// Every node's latest report (for the Prometheus series), if current.
    pub fn latest(&self) -> Vec<(String, UsageReport)> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.nodes
            .iter()
            .filter(|(_, e)| e.received.elapsed() < STALE_AFTER)
            .map(|(n, e)| (n.clone(), e.last.clone()))
            .collect()
    }
}

impl UsageSource for UsageHub {
    fn node(&self, name: &str) -> Option<NodeSample> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let e = g.nodes.get(name)?;
        (e.received.elapsed() < STALE_AFTER)
            .then(|| e.node.clone())
            .flatten()
    }

    fn pod(&self, uid: &str) -> Option<PodSample> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let e = g.nodes.get(g.pod_node.get(uid)?)?;
        (e.received.elapsed() < STALE_AFTER)
            .then(|| e.pods.get(uid).cloned())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_node_proto::{ContainerUsage, NodeUsage, PodUsage};

    fn report(ts: u64, node_cpu: u64, containers: &[(&str, u64, u64)]) -> UsageReport {
        UsageReport {
            timestamp: ts,
            node: NodeUsage {
                cpu_ns: node_cpu,
                memory_working_set_bytes: 50 << 20,
                ..NodeUsage::default()
            },
            pods: vec![PodUsage {
                uid: "u1".into(),
                namespace: "default".into(),
                name: "burner".into(),
                containers: containers
                    .iter()
                    .map(|&(name, started_at, cpu_ns)| ContainerUsage {
                        name: name.into(),
                        started_at,
                        cpu_ns,
                        memory_working_set_bytes: 2 << 20,
                        log_bytes: 0,
                    })
                    .collect(),
            }],
            simulated: false,
        }
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn rates_are_cpu_time_over_the_window_between_reports() {
        let hub = UsageHub::default();
        // First report: no node rate yet; the container is measured from its start.
        hub.report("n1", report(100_000, 50 * S, &[("app", 96_000, 2 * S)]));
        assert_eq!(hub.node("n1"), None);
        let p = hub.pod("u1").unwrap();
        assert_eq!(p.window, Duration::from_secs(4));
        assert_eq!(p.containers[0].1.cpu_nanocores, 500_000_000);
        // Ten seconds later: half a CPU for the container, 0.8 for the node.
        hub.report("n1", report(110_000, 58 * S, &[("app", 96_000, 7 * S)]));
        let n = hub.node("n1").unwrap();
        assert_eq!(n.window, Duration::from_secs(10));
        assert_eq!(n.usage.cpu_nanocores, 800_000_000);
        assert_eq!(n.usage.memory_bytes, 50 << 20);
        assert_eq!(n.timestamp, UNIX_EPOCH + Duration::from_secs(110));
        let p = hub.pod("u1").unwrap();
        assert_eq!(p.window, Duration::from_secs(10));
        assert_eq!(
            p.containers,
            [(
                "app".to_string(),
                Usage {
                    cpu_nanocores: 500_000_000,
                    memory_bytes: 2 << 20
                }
            )]
        );
        // A restarted container (new start time) is measured from its start.
        hub.report("n1", report(120_000, 60 * S, &[("app", 118_000, S / 2)]));
        let p = hub.pod("u1").unwrap();
        assert_eq!(p.window, Duration::from_secs(2));
        assert_eq!(p.containers[0].1.cpu_nanocores, 250_000_000);
        // A node whose counter went backwards (it rebooted): no node rate.
        hub.report("n1", report(130_000, S, &[]));
        assert_eq!(hub.node("n1"), None);
        assert_eq!(hub.pod("u1"), None, "the pod is gone from the report");
        hub.forget("n1");
        assert!(hub.latest().is_empty());
    }
}
