//! Harness: the real API server in process
//! ([`skiff_test_support::api::ApiServer`]), the scheduler on the same runtime with its own
//! `system:kube-scheduler` credentials, Node objects created through the
//! API (as kube's scheduler_perf does) and kube clients to drive them.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use skiff_apiserver::pki;
use skiff_test_support::api::ApiServer;

pub const ZONE: &str = "topology.kubernetes.io/zone";
pub const HOST: &str = "kubernetes.io/hostname";

pub struct Cluster {
    pub api: ApiServer,
    pub admin: Client,
}

impl Cluster {
    pub fn start() -> Cluster {
        let api = ApiServer::start();
        let admin = api
            .block_on(skiff_scheduler::client_from_kubeconfig(
                &api.kubeconfig,
                None,
            ))
            .expect("admin client");
        Cluster { api, admin }
    }

    /// A client with the scheduler's own credentials.
    pub fn scheduler_client(&self) -> Client {
        let path = self.api.pki_dir().join(pki::SCHEDULER_KUBECONFIG);
        self.api
            .rt
            .block_on(skiff_scheduler::client_from_kubeconfig(
                &path,
                Some(&self.api.url),
            ))
            .expect("scheduler client")
    }

    pub fn spawn_scheduler(
        &self,
        config: skiff_scheduler::SchedulerConfig,
    ) -> tokio::task::JoinHandle<Result<(), skiff_scheduler::RunError>> {
        let client = self.scheduler_client();
        self.api.rt.spawn(skiff_scheduler::run(client, config))
    }

    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.api.rt.block_on(f)
    }

    pub fn create_node(&self, node: &Node) {
        let api: Api<Node> = Api::all(self.admin.clone());
        self.block_on(api.create(&PostParams::default(), node))
            .expect("create node");
    }

    pub fn create_pod(&self, pod: &Pod) {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), "default");
        self.block_on(api.create(&PostParams::default(), pod))
            .expect("create pod");
    }

    /// Deletes at once (no kubelet here to finish a graceful deletion).
    pub fn delete_pod(&self, name: &str) {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), "default");
        self.block_on(api.delete(name, &kube::api::DeleteParams::default().grace_period(0)))
            .expect("delete pod");
    }

    pub fn get_pod(&self, name: &str) -> Pod {
        let api: Api<Pod> = Api::namespaced(self.admin.clone(), "default");
        self.block_on(api.get(name)).expect("get pod")
    }

    /// The node a pod is bound to, once bound within `secs`.
    pub fn wait_bound(&self, name: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(n) = node_of(&self.get_pod(name)) {
                return n;
            }
            assert!(
                Instant::now() < deadline,
                "pod {name} was not bound in {secs}s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The PodScheduled=False message once set within `secs`.
    pub fn wait_unschedulable(&self, name: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let pod = self.get_pod(name);
            assert_eq!(node_of(&pod), None, "pod {name} was bound");
            let cond = pod
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False");
            if let Some(c) = cond {
                assert_eq!(c.reason.as_deref(), Some("Unschedulable"));
                return c.message.unwrap_or_default();
            }
            assert!(
                Instant::now() < deadline,
                "pod {name} got no PodScheduled=False in {secs}s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// kubectl as admin, asserting success.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.api.ok(args)
    }
}

pub fn node_of(pod: &Pod) -> Option<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .filter(|n| !n.is_empty())
}

pub fn node(
    name: &str,
    cpu: &str,
    mem: &str,
    labels: &[(&str, &str)],
    taints: &[(&str, &str)],
) -> Node {
    let mut alloc = BTreeMap::new();
    alloc.insert("cpu".to_string(), Quantity(cpu.into()));
    alloc.insert("memory".to_string(), Quantity(mem.into()));
    alloc.insert("pods".to_string(), Quantity("110".into()));
    let mut l: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.insert(HOST.into(), name.into());
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(l),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!taints.is_empty()).then(|| {
                taints
                    .iter()
                    .map(|(k, v)| Taint {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                        effect: "NoSchedule".into(),
                        time_added: None,
                    })
                    .collect()
            }),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(alloc.clone()),
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
                name: "app".into(),
                image: Some("registry.example/app:1".into()),
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
