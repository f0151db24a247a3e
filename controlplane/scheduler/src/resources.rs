//! Resource quantities as the scheduler counts them: CPU in millicores,
//! memory in bytes, and a pod count; a pod's effective requests computed
//! the way kube does (containers summed, init containers as a maximum,
//! plus overhead).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// What a container without a CPU request counts as when scoring (kube's
/// `DefaultMilliCPURequest`), so best-effort pods still spread.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// The memory counterpart (kube's `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts of the resources the scheduler fits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.pods += o.pods;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.pods -= o.pods;
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
    }

    /// A node's `status.allocatable` (falling back to `capacity`).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        let Some(list) = list else { return r };
        if let Some(q) = list.get("cpu") {
            r.milli_cpu = skiff_quantity::milli_value(&q.0).unwrap_or(0);
        }
        if let Some(q) = list.get("memory") {
            r.memory = skiff_quantity::value(&q.0).unwrap_or(0);
        }
        if let Some(q) = list.get("pods") {
            r.pods = skiff_quantity::value(&q.0).unwrap_or(0);
        }
        r
    }
}

/// A pod's requests: `(actual, non_zero)` where `non_zero` substitutes the
/// scoring defaults for containers that request nothing. Both count one pod.
pub fn pod_requests(spec: &PodSpec) -> (Resources, Resources) {
    let mut actual = Resources::default();
    let mut non_zero = Resources::default();
    for c in &spec.containers {
        let (a, n) = container_requests(c);
        actual.add(&a);
        non_zero.add(&n);
    }
    // Init containers run one at a time before the app containers, so a pod
    // needs the largest of them (sidecars with restartPolicy Always keep
    // running, which this simplification ignores).
    for c in spec.init_containers.iter().flatten() {
        let (a, n) = container_requests(c);
        actual.max(&a);
        non_zero.max(&n);
    }
    if let Some(overhead) = &spec.overhead {
        let o = Resources::from_list(Some(overhead));
        actual.add(&o);
        non_zero.add(&o);
    }
    actual.pods = 1;
    non_zero.pods = 1;
    (actual, non_zero)
}

fn container_requests(c: &Container) -> (Resources, Resources) {
    let res = c.resources.as_ref();
    // Limits without requests default the requests (API defaulting does
    // this too; doing it here keeps unsynced objects right).
    let get = |name: &str| {
        res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(name)))
            .or_else(|| res.and_then(|r| r.limits.as_ref().and_then(|m| m.get(name))))
    };
    let cpu = get("cpu").and_then(|q| skiff_quantity::milli_value(&q.0));
    let mem = get("memory").and_then(|q| skiff_quantity::value(&q.0));
    let actual = Resources {
        milli_cpu: cpu.unwrap_or(0),
        memory: mem.unwrap_or(0),
        pods: 0,
    };
    let non_zero = Resources {
        milli_cpu: cpu.unwrap_or(DEFAULT_MILLI_CPU),
        memory: mem.unwrap_or(DEFAULT_MEMORY),
        pods: 0,
    };
    (actual, non_zero)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn container(cpu: Option<&str>, mem: Option<&str>) -> Container {
        let mut req = BTreeMap::new();
        if let Some(c) = cpu {
            req.insert("cpu".to_string(), Quantity(c.into()));
        }
        if let Some(m) = mem {
            req.insert("memory".to_string(), Quantity(m.into()));
        }
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(req),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_sum_containers_max_init() {
        let spec = PodSpec {
            containers: vec![container(Some("100m"), Some("1Gi")), container(None, None)],
            init_containers: Some(vec![container(Some("2"), None)]),
            ..Default::default()
        };
        let (a, n) = pod_requests(&spec);
        assert_eq!(
            a,
            Resources {
                milli_cpu: 2000,
                memory: 1 << 30,
                pods: 1
            }
        );
        assert_eq!(n.milli_cpu, 2000);
        assert_eq!(n.memory, (1 << 30) + DEFAULT_MEMORY);
    }
}
