//! The scheduler's view of the cluster: nodes with precomputed facts
//! (allocatable, requested, taints, labels) and the pods on them, bound or
//! assumed. A pod is assumed on its node as soon as its binding is sent, so
//! the next decision already counts it; the watch later confirms it, or a
//! failed bind forgets it.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Affinity, Node, Pod, PodAffinityTerm, Taint, Toleration, TopologySpreadConstraint,
};

use crate::labels::Labels;
use crate::resources::{Resources, pod_requests};

/// What the plugins need of a pod, computed once per pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `namespace/name`.
    pub key: String,
    pub labels: Labels,
    pub priority: i32,
    pub requests: Resources,
    pub non_zero_requests: Resources,
    /// `spec.nodeName` as submitted (the NodeName plugin).
    pub node_name: String,
    pub scheduler_name: String,
    pub node_selector: Labels,
    pub affinity: Option<Affinity>,
    pub tolerations: Vec<Toleration>,
    pub spread: Vec<TopologySpreadConstraint>,
    pub resource_version: String,
}

impl PodInfo {
    pub fn new(pod: &Pod) -> PodInfo {
        let meta = &pod.metadata;
        let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
        let name = meta.name.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let (requests, non_zero_requests) = pod_requests(&spec);
        PodInfo {
            key: format!("{namespace}/{name}"),
            namespace,
            name,
            uid: meta.uid.clone().unwrap_or_default(),
            labels: meta.labels.clone().unwrap_or_default(),
            priority: spec.priority.unwrap_or(0),
            requests,
            non_zero_requests,
            node_name: spec.node_name.unwrap_or_default(),
            scheduler_name: spec
                .scheduler_name
                .unwrap_or_else(|| crate::DEFAULT_SCHEDULER.into()),
            node_selector: spec.node_selector.unwrap_or_default(),
            affinity: spec.affinity,
            tolerations: spec.tolerations.unwrap_or_default(),
            spread: spec.topology_spread_constraints.unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
        }
    }

    pub fn required_affinity(&self) -> &[PodAffinityTerm] {
        self.affinity
            .as_ref()
            .and_then(|a| a.pod_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default()
    }

    pub fn required_anti_affinity(&self) -> &[PodAffinityTerm] {
        self.affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .as_deref()
            })
            .unwrap_or_default()
    }
}

/// A node and what is on it.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: Labels,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
    pub allocatable: Resources,
    /// Sum of the actual requests of the pods on the node.
    pub requested: Resources,
    /// Sum with scoring defaults for pods that request nothing.
    pub non_zero_requested: Resources,
    pub pods: Vec<Arc<PodInfo>>,
    /// How many of `pods` carry required anti-affinity terms (lets the
    /// InterPodAffinity plugin skip nodes quickly).
    pub pods_with_required_anti_affinity: usize,
}

impl NodeInfo {
    pub fn new(node: &Node) -> NodeInfo {
        let mut n = NodeInfo::default();
        n.set_node(node);
        n
    }

    /// Refreshes the node's own facts, keeping its pods.
    pub fn set_node(&mut self, node: &Node) {
        self.name = node.metadata.name.clone().unwrap_or_default();
        self.labels = node.metadata.labels.clone().unwrap_or_default();
        let spec = node.spec.as_ref();
        self.taints = spec.and_then(|s| s.taints.clone()).unwrap_or_default();
        self.unschedulable = spec.and_then(|s| s.unschedulable).unwrap_or(false);
        let status = node.status.as_ref();
        self.allocatable = Resources::from_list(
            status
                .and_then(|s| s.allocatable.as_ref())
                .or_else(|| status.and_then(|s| s.capacity.as_ref())),
        );
    }

    pub fn add_pod(&mut self, pod: Arc<PodInfo>) {
        self.requested.add(&pod.requests);
        self.non_zero_requested.add(&pod.non_zero_requests);
        if !pod.required_anti_affinity().is_empty() {
            self.pods_with_required_anti_affinity += 1;
        }
        self.pods.push(pod);
    }

    pub fn remove_pod(&mut self, key: &str) {
        if let Some(i) = self.pods.iter().position(|p| p.key == key) {
            let pod = self.pods.swap_remove(i);
            self.requested.sub(&pod.requests);
            self.non_zero_requested.sub(&pod.non_zero_requests);
            if !pod.required_anti_affinity().is_empty() {
                self.pods_with_required_anti_affinity -= 1;
            }
        }
    }
}

#[derive(Debug)]
struct PlacedPod {
    node: String,
    assumed: bool,
}

/// Nodes (in a stable order for round-robin search) and placed pods.
#[derive(Debug, Default)]
pub struct Cache {
    nodes: Vec<NodeInfo>,
    index: HashMap<String, usize>,
    pods: HashMap<String, PlacedPod>,
    /// Pods bound to nodes the cache does not know yet.
    orphans: HashMap<String, Vec<Arc<PodInfo>>>,
}

impl Cache {
    pub fn nodes(&self) -> &[NodeInfo] {
        &self.nodes
    }

    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.index.get(name).map(|&i| &self.nodes[i])
    }

    /// Returns whether anything the plugins look at changed (a new node,
    /// labels, taints, cordon, allocatable), which may let held pods fit.
    pub fn add_or_update_node(&mut self, node: &Node) -> bool {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        match self.index.get(name) {
            Some(&i) => {
                let n = &mut self.nodes[i];
                let before = (
                    std::mem::take(&mut n.labels),
                    std::mem::take(&mut n.taints),
                    n.unschedulable,
                    n.allocatable,
                );
                n.set_node(node);
                before.0 != n.labels
                    || before.1 != n.taints
                    || before.2 != n.unschedulable
                    || before.3 != n.allocatable
            }
            None => {
                let mut info = NodeInfo::new(node);
                for p in self.orphans.remove(name).unwrap_or_default() {
                    info.add_pod(p);
                }
                self.index.insert(info.name.clone(), self.nodes.len());
                self.nodes.push(info);
                true
            }
        }
    }

    pub fn node_names(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.name.as_str())
    }

    /// Keys of pods the API reported bound (not merely assumed).
    pub fn bound_pod_keys(&self) -> impl Iterator<Item = &str> {
        self.pods
            .iter()
            .filter(|(_, p)| !p.assumed)
            .map(|(k, _)| k.as_str())
    }

    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.index.remove(name) else {
            return;
        };
        let info = self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            self.index.insert(self.nodes[i].name.clone(), i);
        }
        // Pods stay bound to a vanished node until they are deleted; keep
        // them so they count again if the node comes back.
        if !info.pods.is_empty() {
            self.orphans.insert(info.name, info.pods);
        }
    }

    /// A pod the scheduler just decided on, counted before the API confirms.
    pub fn assume(&mut self, pod: Arc<PodInfo>, node: &str) {
        self.place(pod, node, true);
    }

    /// A bind that failed: the pod is no longer on the node.
    pub fn forget(&mut self, key: &str) {
        if self.pods.get(key).is_some_and(|p| p.assumed) {
            self.remove_pod(key);
        }
    }

    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    pub fn contains_pod(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// A pod the API says is bound (confirms an assumed one).
    pub fn add_or_update_bound_pod(&mut self, pod: Arc<PodInfo>) {
        let node = pod.node_name.clone();
        self.place(pod, &node, false);
    }

    fn place(&mut self, pod: Arc<PodInfo>, node: &str, assumed: bool) {
        self.remove_pod(&pod.key);
        self.pods.insert(
            pod.key.clone(),
            PlacedPod {
                node: node.to_string(),
                assumed,
            },
        );
        match self.index.get(node) {
            Some(&i) => self.nodes[i].add_pod(pod),
            None => self.orphans.entry(node.to_string()).or_default().push(pod),
        }
    }

    pub fn remove_pod(&mut self, key: &str) {
        let Some(placed) = self.pods.remove(key) else {
            return;
        };
        match self.index.get(&placed.node) {
            Some(&i) => self.nodes[i].remove_pod(key),
            None => {
                if let Some(v) = self.orphans.get_mut(&placed.node) {
                    v.retain(|p| p.key != key);
                }
            }
        }
    }

    pub fn pod_count(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Builders for plugin tests.
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, NodeSpec, NodeStatus, PodSpec, ResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    pub fn node(name: &str, cpu: &str, mem: &str, labels: &[(&str, &str)]) -> Node {
        let mut alloc = BTreeMap::new();
        alloc.insert("cpu".to_string(), Quantity(cpu.into()));
        alloc.insert("memory".to_string(), Quantity(mem.into()));
        alloc.insert("pods".to_string(), Quantity("110".into()));
        let mut l: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.insert("kubernetes.io/hostname".into(), name.into());
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(l),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                allocatable: Some(alloc),
                ..Default::default()
            }),
        }
    }

    pub fn pod(name: &str, cpu: &str, mem: &str, labels: &[(&str, &str)]) -> Pod {
        let mut req = BTreeMap::new();
        if !cpu.is_empty() {
            req.insert("cpu".to_string(), Quantity(cpu.into()));
        }
        if !mem.is_empty() {
            req.insert("memory".to_string(), Quantity(mem.into()));
        }
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    resources: Some(ResourceRequirements {
                        requests: Some(req),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        }
    }

    /// A pod already bound to `node`.
    pub fn bound(mut p: Pod, node: &str) -> Arc<PodInfo> {
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        Arc::new(PodInfo::new(&p))
    }

    pub fn cache(nodes: &[Node], pods: &[Arc<PodInfo>]) -> Cache {
        let mut c = Cache::default();
        for n in nodes {
            c.add_or_update_node(n);
        }
        for p in pods {
            c.add_or_update_bound_pod(p.clone());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn assume_confirm_forget() {
        let mut c = cache(&[node("n1", "4", "8Gi", &[])], &[]);
        let p = Arc::new(PodInfo::new(&pod("a", "1", "1Gi", &[])));
        c.assume(p.clone(), "n1");
        assert!(c.is_assumed("default/a"));
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
        c.forget("default/a");
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 0);
        assert_eq!(c.node("n1").unwrap().pods.len(), 0);

        c.assume(p, "n1");
        c.add_or_update_bound_pod(bound(pod("a", "1", "1Gi", &[]), "n1"));
        assert!(!c.is_assumed("default/a"), "the watch confirmed it");
        c.forget("default/a");
        assert_eq!(
            c.node("n1").unwrap().requested.milli_cpu,
            1000,
            "confirmed pods stay"
        );
        c.remove_pod("default/a");
        assert_eq!(c.node("n1").unwrap().requested, Resources::default());
    }

    #[test]
    fn node_removal_keeps_pods_for_return() {
        let n = node("n1", "4", "8Gi", &[]);
        let mut c = cache(
            &[n.clone(), node("n2", "4", "8Gi", &[])],
            &[bound(pod("a", "1", "", &[]), "n1")],
        );
        c.remove_node("n1");
        assert_eq!(c.nodes().len(), 1);
        assert_eq!(c.node("n2").unwrap().name, "n2");
        c.add_or_update_node(&n);
        assert_eq!(c.node("n1").unwrap().requested.milli_cpu, 1000);
    }
}
