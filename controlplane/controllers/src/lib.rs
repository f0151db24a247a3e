//! The Skiff controller manager: kube's core controllers as clients of our
//! API server, built on kube-runtime (one work queue per controller,
//! per-object retries with exponential back-off).
//!
//! Each controller's decision is a pure function of cached state
//! (`plan`/`decide` in its module, unit-tested without a server); the
//! `reconcile` around it reads the shared caches ([`informer`]) and writes
//! through the API. [`leader`] makes only one replica act at a time.

mod cronjob;
mod daemonset;
mod deployment;
mod endpoints;
mod events;
mod expectations;
mod gc;
mod hpa;
mod informer;
mod job;
use skiff_client::leader;
mod metrics;
mod node_ipam;
mod node_lifecycle;
mod replicaset;
mod serviceaccount;
mod util;

pub use metrics::Stats;
pub use node_ipam::{PodNetwork, PodNetworkError};
pub use skiff_client::{ClientError, client_from_kubeconfig};
pub use util::pod_ready;

#[cfg(test)]
mod testing;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Endpoints, Namespace, Node, Pod, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};

use crate::informer::Informer;

/// The controller manager's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Without a lease renewal for this long a node is unreachable
    /// (kube's `--node-monitor-grace-period`, 40 s there).
    pub node_monitor_grace_period: Duration,
    /// How often node health is checked (kube's `--node-monitor-period`).
    pub node_monitor_period: Duration,
    /// Our identity in the leader election Lease.
    pub identity: String,
    /// The leader election Lease's duration.
    pub lease_duration: Duration,
    /// Where Nodes get their `spec.podCIDR` from (kube's `--cluster-cidr`
    /// with `--allocate-node-cidrs`); `None`: not allocated here.
    pub pod_network: Option<PodNetwork>,
    /// Where the controllers count their reconciles.
    pub stats: Arc<Stats>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            node_monitor_grace_period: Duration::from_secs(40),
            node_monitor_period: Duration::from_secs(5),
            identity: format!("skiff-controller-manager-{}", util::random_suffix(8)),
            lease_duration: Duration::from_secs(15),
            pod_network: Some(PodNetwork::default()),
            stats: Arc::default(),
        }
    }
}

/// A controller's failure: logged, and the object is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused a request or could not be reached.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// The object's own spec cannot be acted on (a CronJob's schedule that
    /// does not parse): retried in case it is fixed, and logged.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
}

/// The caches every controller reads, one watch per kind.
pub(crate) struct Informers {
    pub pods: Informer<Pod>,
    pub replicasets: Informer<ReplicaSet>,
    pub deployments: Informer<Deployment>,
    pub daemonsets: Informer<DaemonSet>,
    pub nodes: Informer<Node>,
    pub node_leases: Informer<Lease>,
    pub services: Informer<Service>,
    pub endpoints: Informer<Endpoints>,
    pub endpointslices: Informer<EndpointSlice>,
    pub jobs: Informer<Job>,
    pub cronjobs: Informer<CronJob>,
    pub hpas: Informer<HorizontalPodAutoscaler>,
    pub namespaces: Informer<Namespace>,
    pub serviceaccounts: Informer<ServiceAccount>,
}

impl Informers {
    pub fn start(client: &Client) -> Informers {
        Informers {
            pods: Informer::start(Api::all(client.clone())),
            replicasets: Informer::start(Api::all(client.clone())),
            deployments: Informer::start(Api::all(client.clone())),
            daemonsets: Informer::start(Api::all(client.clone())),
            nodes: Informer::start(Api::all(client.clone())),
            node_leases: Informer::start(Api::namespaced(client.clone(), "kube-node-lease")),
            services: Informer::start(Api::all(client.clone())),
            endpoints: Informer::start(Api::all(client.clone())),
            endpointslices: Informer::start(Api::all(client.clone())),
            jobs: Informer::start(Api::all(client.clone())),
            cronjobs: Informer::start(Api::all(client.clone())),
            hpas: Informer::start(Api::all(client.clone())),
            namespaces: Informer::start(Api::all(client.clone())),
            serviceaccounts: Informer::start(Api::all(client.clone())),
        }
    }
}

/// What reconcilers share: the client, the caches and bookkeeping.
pub(crate) struct Shared {
    pub client: Client,
    pub cfg: Config,
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
    pub nodes: Store<Node>,
    pub node_leases: Store<Lease>,
    pub expectations: expectations::Expectations,
    retries: Mutex<HashMap<String, u32>>,
}

impl Shared {
    pub fn new(client: Client, cfg: Config, inf: &Informers) -> Shared {
        Shared {
            client,
            cfg,
            pods: inf.pods.store(),
            replicasets: inf.replicasets.store(),
            nodes: inf.nodes.store(),
            node_leases: inf.node_leases.store(),
            expectations: Default::default(),
            retries: Default::default(),
        }
    }

    /// Forgets the failures of `key` after a successful sync.
    pub fn retry_reset(&self, key: &str) {
        self.retries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// The next retry delay of `key`: 100 ms doubling up to 30 s.
    fn retry_delay(&self, key: String) -> Duration {
        let mut m = self.retries.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(key).or_insert(0);
        *n = (*n + 1).min(16);
        (Duration::from_millis(100) * 2u32.pow(*n - 1)).min(Duration::from_secs(30))
    }
}

/// How often every object is reconciled anyway (kube's informer resync):
/// repairs anything a lost watch event left behind.
pub(crate) const RESYNC: Duration = Duration::from_secs(30);

/// A tick every `period` (the first one after a period).
pub(crate) fn ticks(period: Duration) -> impl futures::Stream<Item = ()> + Send {
    futures::stream::unfold(
        tokio::time::interval_at(tokio::time::Instant::now() + period, period),
        |mut i| async move {
            i.tick().await;
            Some(((), i))
        },
    )
}

/// Retries a failed object with per-object exponential back-off (kube's
/// rate-limited work queue).
pub(crate) fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    e: &Error,
    shared: Arc<Shared>,
) -> Action {
    let meta = obj.meta();
    let key = format!(
        "{}/{}/{}",
        K::plural(&()),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    );
    tracing::warn!(object = %key, error = %e, "reconcile failed; retrying");
    Action::requeue(shared.retry_delay(key))
}

/// Runs every controller until the future is dropped, without leader
/// election (one replica, or tests).
async fn run_controllers(client: Client, cfg: Config) {
    let inf = Informers::start(&client);
    let shared = Arc::new(Shared::new(client, cfg, &inf));
    tokio::join!(
        replicaset::run(shared.clone(), &inf),
        deployment::run(shared.clone(), &inf),
        node_lifecycle::run(shared.clone(), &inf),
        node_ipam::run(shared.clone(), &inf),
        gc::run(shared.clone(), &inf),
        endpoints::run(shared.clone(), &inf),
        serviceaccount::run(shared.clone(), &inf),
        job::run(shared.clone(), &inf),
        daemonset::run(shared.clone(), &inf),
        cronjob::run(shared.clone(), &inf),
        hpa::run(shared.clone(), &inf),
    );
}

/// The controller manager: waits to lead through the Lease
/// `kube-system/kube-controller-manager`, runs the controllers while it
/// leads, and stops them when it loses the lease.
pub async fn run(client: Client, cfg: Config) {
    let mut le = leader::LeaderElection::kube_defaults(
        "controller-manager",
        "kube-controller-manager",
        cfg.identity.clone(),
    );
    le.lease_duration = cfg.lease_duration;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), &le.namespace);
    loop {
        leader::acquire(&leases, &le).await;
        tracing::info!(identity = %cfg.identity, "controller manager is the leader");
        tokio::select! {
            () = run_controllers(client.clone(), cfg.clone()) => {}
            () = leader::hold(&leases, &le) => {
                tracing::warn!(identity = %cfg.identity, "controller manager lost the lease");
            }
        }
    }
}
