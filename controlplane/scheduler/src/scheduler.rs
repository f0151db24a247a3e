//! The scheduler as an API client: pod and node watches feed the cache and
//! the queue; one loop pops pods, runs the framework, assumes the chosen
//! node and sends the binding concurrently; failures set PodScheduled=False
//! and record a FailedScheduling event.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Binding, Node, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::cache::{Cache, PodInfo};
use crate::framework::{Framework, Profile};
use crate::queue::SchedulingQueue;
use skiff_client::leader::{self, LeaderElection};

/// How to run.
pub struct SchedulerConfig {
    pub profile: Profile,
    /// `None`: schedule right away (a single replica).
    pub leader_election: Option<LeaderElection>,
    /// Bindings in flight at once (kube binds asynchronously too).
    pub bind_concurrency: usize,
    /// Events that may wait to be written; beyond that they are dropped
    /// (counted in `Stats`), as kube's event broadcaster drops under load.
    pub event_queue: usize,
    pub stats: Arc<Stats>,
}

impl SchedulerConfig {
    pub fn new(profile: Profile) -> SchedulerConfig {
        SchedulerConfig {
            profile,
            leader_election: None,
            bind_concurrency: 64,
            event_queue: 20_000,
            stats: Arc::default(),
        }
    }
}

impl Default for SchedulerConfig {
    /// kube's default profile, elected through `kube-system/kube-scheduler`.
    fn default() -> SchedulerConfig {
        let mut c = SchedulerConfig::new(crate::plugins::default_profile());
        c.leader_election = Some(LeaderElection::kube_defaults(
            "scheduler",
            "kube-scheduler",
            leader::default_identity(),
        ));
        c
    }
}

impl std::fmt::Debug for SchedulerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerConfig")
            .field("profile", &self.profile)
            .field("leader_election", &self.leader_election)
            .field("bind_concurrency", &self.bind_concurrency)
            .finish()
    }
}

/// Counters for tests, benchmarks, logs and `/metrics`.
#[derive(Debug)]
pub struct Stats {
    pub attempts: AtomicU64,
    pub bound: AtomicU64,
    pub unschedulable: AtomicU64,
    pub bind_errors: AtomicU64,
    pub events_dropped: AtomicU64,
    /// Terms as leader (1 after the first election).
    pub leader_terms: AtomicU64,
    /// How long choosing a node took per attempt, filters and scores
    /// (kube's `scheduler_scheduling_algorithm_duration_seconds`, its
    /// buckets).
    pub algorithm_durations: Histogram,
    /// Pods waiting in each queue, as of the last look (at most a second
    /// old): active, back-off, unschedulable (kube's
    /// `scheduler_pending_pods{queue}`).
    pub pending: [AtomicU64; 3],
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            attempts: AtomicU64::new(0),
            bound: AtomicU64::new(0),
            unschedulable: AtomicU64::new(0),
            bind_errors: AtomicU64::new(0),
            events_dropped: AtomicU64::new(0),
            leader_terms: AtomicU64::new(0),
            algorithm_durations: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            pending: Default::default(),
        }
    }
}

/// The queues [`Stats::pending`] counts, by kube's label values.
pub const PENDING_QUEUES: [&str; 3] = ["active", "backoff", "unschedulable"];

/// Why [`run`] stopped: a watch stream ended (the watcher retries errors
/// with back-off, so only the end of the stream is fatal).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    #[error("the pod watch ended")]
    PodWatchEnded,
    #[error("the node watch ended")]
    NodeWatchEnded,
}

/// Runs the scheduler until its watches end for good. With leader election
/// it schedules only while it holds the lease and waits to win it again
/// after losing it.
pub async fn run(client: Client, config: SchedulerConfig) -> Result<(), RunError> {
    let SchedulerConfig {
        profile,
        leader_election,
        bind_concurrency,
        event_queue,
        stats,
    } = config;
    let mut fw = Framework::new(profile);
    let opts = LoopOptions {
        bind_concurrency: bind_concurrency.max(1),
        event_queue,
        stats: stats.clone(),
        identity: leader_election
            .as_ref()
            .map(|l| l.identity.clone())
            .unwrap_or_else(leader::default_identity),
    };
    let Some(le) = leader_election else {
        stats.leader_terms.fetch_add(1, Ordering::Relaxed);
        return schedule_loop(client, &mut fw, &opts).await;
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &le.namespace);
    loop {
        leader::acquire(&leases, &le).await;
        stats.leader_terms.fetch_add(1, Ordering::Relaxed);
        tracing::info!(identity = %le.identity, "scheduler is the leader");
        tokio::select! {
            r = schedule_loop(client.clone(), &mut fw, &opts) => return r,
            () = leader::hold(&leases, &le) => {
                tracing::warn!(identity = %le.identity, "scheduler lost the lease; standing by");
            }
        }
    }
}

struct LoopOptions {
    bind_concurrency: usize,
    event_queue: usize,
    stats: Arc<Stats>,
    identity: String,
}

/// Objects seen since a watch (re)started its initial list.
#[derive(Default)]
struct Relist {
    active: bool,
    seen: HashSet<String>,
}

struct State {
    cache: Cache,
    queue: SchedulingQueue,
    /// Last failure message per pod, so a pod failing the same way again
    /// does not repeat its status write and event.
    last_failure: HashMap<String, String>,
    pods_relist: Relist,
    nodes_relist: Relist,
    pods_synced: bool,
    nodes_synced: bool,
}

fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default()
    )
}

impl State {
    fn apply_pod(&mut self, pod: &Pod, scheduler_name: &str, now: Instant) {
        let key = pod_key(pod);
        if self.pods_relist.active {
            self.pods_relist.seen.insert(key.clone());
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            self.delete_pod(&key, now);
            return;
        }
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
        if node.is_some_and(|n| !n.is_empty()) {
            self.queue.done(&key);
            self.last_failure.remove(&key);
            self.cache
                .add_or_update_bound_pod(Arc::new(PodInfo::new(pod)));
            return;
        }
        let ours = pod
            .spec
            .as_ref()
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or(crate::DEFAULT_SCHEDULER)
            == scheduler_name;
        if !ours || pod.metadata.deletion_timestamp.is_some() {
            self.queue.delete(&key);
            return;
        }
        // A bind in flight: the pod's own updates (status) change nothing.
        if self.cache.is_assumed(&key) {
            return;
        }
        self.queue.add_or_update(Arc::new(PodInfo::new(pod)), now);
    }

    fn delete_pod(&mut self, key: &str, now: Instant) {
        self.queue.delete(key);
        self.last_failure.remove(key);
        if self.cache.contains_pod(key) {
            self.cache.remove_pod(key);
            // Freed room and broken (anti-)affinity may let others fit.
            self.queue.move_all(now);
        }
    }

    fn apply_node(&mut self, node: &Node, now: Instant) {
        if self.nodes_relist.active {
            self.nodes_relist
                .seen
                .insert(node.metadata.name.clone().unwrap_or_default());
        }
        if self.cache.add_or_update_node(node) {
            self.queue.move_all(now);
        }
    }

    fn pods_relisted(&mut self, now: Instant) {
        let seen = std::mem::take(&mut self.pods_relist.seen);
        self.pods_relist.active = false;
        let gone: Vec<String> = self
            .cache
            .bound_pod_keys()
            .filter(|k| !seen.contains(*k))
            .map(str::to_string)
            .collect();
        for k in gone {
            self.delete_pod(&k, now);
        }
        self.queue.retain(|k| seen.contains(k));
        self.pods_synced = true;
    }

    fn nodes_relisted(&mut self) {
        let seen = std::mem::take(&mut self.nodes_relist.seen);
        self.nodes_relist.active = false;
        let gone: Vec<String> = self
            .cache
            .node_names()
            .filter(|n| !seen.contains(*n))
            .map(str::to_string)
            .collect();
        for n in gone {
            self.cache.remove_node(&n);
        }
        self.nodes_synced = true;
    }
}

/// What a finished binding reports back to the loop.
struct BindOutcome {
    pod: Arc<PodInfo>,
    node: String,
    result: Result<(), kube::Error>,
}

async fn schedule_loop(
    client: Client,
    fw: &mut Framework,
    opts: &LoopOptions,
) -> Result<(), RunError> {
    let scheduler_name = fw.profile.scheduler_name.clone();
    let mut pods = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .boxed();
    let (events_tx, events_rx) = mpsc::channel::<Value>(opts.event_queue.max(1));
    let mut tasks: JoinSet<()> = JoinSet::new();
    tasks.spawn(write_events(client.clone(), events_rx));
    let recorder = Recorder {
        tx: events_tx,
        stats: opts.stats.clone(),
        identity: opts.identity.clone(),
    };
    let mut binds: JoinSet<BindOutcome> = JoinSet::new();
    let mut st = State {
        cache: Cache::default(),
        queue: SchedulingQueue::default(),
        last_failure: HashMap::new(),
        pods_relist: Relist::default(),
        nodes_relist: Relist::default(),
        pods_synced: false,
        nodes_synced: false,
    };
    let mut flush = tokio::time::interval(Duration::from_secs(30));
    let mut counted_at = None;
    loop {
        let now = Instant::now();
        // Counting walks every pending pod: at most once a second.
        if counted_at.is_none_or(|at: Instant| now.duration_since(at) >= Duration::from_secs(1)) {
            let (active, backoff, unschedulable, _) = st.queue.counts();
            for (gauge, n) in opts
                .stats
                .pending
                .iter()
                .zip([active, backoff, unschedulable])
            {
                gauge.store(n as u64, Ordering::Relaxed);
            }
            counted_at = Some(now);
        }
        // First, so ended back-offs move to the active queue and the timer
        // below only waits for future ones.
        let active = st.queue.has_active(now);
        let can_schedule =
            active && st.pods_synced && st.nodes_synced && binds.len() < opts.bind_concurrency;
        let wake = st
            .queue
            .next_backoff_end()
            .map(tokio::time::Instant::from_std)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            ev = pods.next() => match ev {
                None => return Err(RunError::PodWatchEnded),
                Some(Err(e)) => tracing::warn!(error = %e, "pod watch"),
                Some(Ok(ev)) => {
                    let now = Instant::now();
                    match ev {
                        watcher::Event::Init => st.pods_relist = Relist { active: true, seen: HashSet::new() },
                        watcher::Event::InitApply(p) | watcher::Event::Apply(p) => st.apply_pod(&p, &scheduler_name, now),
                        watcher::Event::Delete(p) => st.delete_pod(&pod_key(&p), now),
                        watcher::Event::InitDone => st.pods_relisted(now),
                    }
                }
            },
            ev = nodes.next() => match ev {
                None => return Err(RunError::NodeWatchEnded),
                Some(Err(e)) => tracing::warn!(error = %e, "node watch"),
                Some(Ok(ev)) => {
                    let now = Instant::now();
                    match ev {
                        watcher::Event::Init => st.nodes_relist = Relist { active: true, seen: HashSet::new() },
                        watcher::Event::InitApply(n) | watcher::Event::Apply(n) => st.apply_node(&n, now),
                        watcher::Event::Delete(n) => st.cache.remove_node(n.metadata.name.as_deref().unwrap_or_default()),
                        watcher::Event::InitDone => st.nodes_relisted(),
                    }
                }
            },
            Some(done) = binds.join_next() => {
                if let Ok(outcome) = done {
                    finish_bind(&mut st, outcome, &recorder, &opts.stats);
                }
            }
            _ = std::future::ready(()), if can_schedule => {
                // A small batch per turn keeps up with busy watches.
                for _ in 0..16 {
                    if binds.len() >= opts.bind_concurrency {
                        break;
                    }
                    let now = Instant::now();
                    let Some(pod) = st.queue.pop(now) else { break };
                    schedule_one(&mut st, fw, pod, &client, &mut binds, &recorder, &mut tasks, &opts.stats, now);
                }
            }
            _ = tokio::time::sleep_until(wake) => {}
            _ = flush.tick() => st.queue.flush_unschedulable(Instant::now()),
            Some(_) = tasks.join_next(), if tasks.len() > 1 => {}
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn schedule_one(
    st: &mut State,
    fw: &mut Framework,
    pod: Arc<PodInfo>,
    client: &Client,
    binds: &mut JoinSet<BindOutcome>,
    recorder: &Recorder,
    tasks: &mut JoinSet<()>,
    stats: &Stats,
    now: Instant,
) {
    stats.attempts.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let chosen = fw.schedule(&pod, st.cache.nodes());
    stats
        .algorithm_durations
        .observe(started.elapsed().as_secs_f64());
    match chosen {
        Ok(i) => {
            let node = st.cache.nodes()[i].name.clone();
            st.cache.assume(pod.clone(), &node);
            let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
            binds.spawn(async move {
                let result = bind(&api, &pod, &node).await;
                BindOutcome { pod, node, result }
            });
        }
        Err(fit) => {
            stats.unschedulable.fetch_add(1, Ordering::Relaxed);
            st.queue.unschedulable(&pod.key, now);
            let msg = fit.to_string();
            if st.last_failure.get(&pod.key) == Some(&msg) {
                return;
            }
            st.last_failure.insert(pod.key.clone(), msg.clone());
            recorder.record(&pod, "Warning", "FailedScheduling", "Scheduling", &msg);
            let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace);
            let name = pod.name.clone();
            tasks.spawn(async move {
                if let Err(e) = set_unschedulable(&api, &name, &msg).await {
                    tracing::warn!(pod = %name, error = %e, "updating the pod status");
                }
            });
        }
    }
}

fn finish_bind(st: &mut State, o: BindOutcome, recorder: &Recorder, stats: &Stats) {
    match o.result {
        Ok(()) => {
            stats.bound.fetch_add(1, Ordering::Relaxed);
            st.queue.done(&o.pod.key);
            st.last_failure.remove(&o.pod.key);
            let msg = format!("Successfully assigned {} to {}", o.pod.key, o.node);
            recorder.record(&o.pod, "Normal", "Scheduled", "Binding", &msg);
        }
        Err(e) => {
            stats.bind_errors.fetch_add(1, Ordering::Relaxed);
            st.cache.forget(&o.pod.key);
            match &e {
                // Deleted meanwhile; the watch removes it.
                kube::Error::Api(s) if s.is_not_found() => st.queue.delete(&o.pod.key),
                _ => {
                    tracing::warn!(pod = %o.pod.key, node = %o.node, error = %e, "binding failed; retrying");
                    st.queue.retry(&o.pod.key);
                }
            }
        }
    }
}

/// POST pods/NAME/binding with a v1 Binding.
async fn bind(api: &Api<Pod>, pod: &PodInfo, node: &str) -> Result<(), kube::Error> {
    let binding = Binding {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            uid: (!pod.uid.is_empty()).then(|| pod.uid.clone()),
            ..Default::default()
        },
        target: ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("Node".into()),
            name: Some(node.into()),
            ..Default::default()
        },
    };
    api.create_subresource::<_, Value>("binding", &pod.name, &PostParams::default(), &binding)
        .await
        .map(|_| ())
}

/// PodScheduled=False, reason Unschedulable (a strategic merge patch:
/// conditions merge by type).
async fn set_unschedulable(api: &Api<Pod>, name: &str, msg: &str) -> Result<(), kube::Error> {
    let patch = json!({"status": {"conditions": [{
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": msg,
        "lastTransitionTime": Timestamp::now().round(k8s_openapi::jiff::Unit::Second).unwrap_or(Timestamp::now()).to_string(),
    }]}});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .map(|_| ())
}

/// Queues core/v1 Events about pods for the writer task.
struct Recorder {
    tx: mpsc::Sender<Value>,
    stats: Arc<Stats>,
    identity: String,
}

impl Recorder {
    fn record(&self, pod: &PodInfo, kind: &str, reason: &str, action: &str, msg: &str) {
        let now = Timestamp::now();
        let secs = now
            .round(k8s_openapi::jiff::Unit::Second)
            .unwrap_or(now)
            .to_string();
        let ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            // kube's recorder names events <object>.<hex nanoseconds>.
            "metadata": {"name": format!("{}.{:x}", pod.name, now.as_nanosecond()), "namespace": pod.namespace},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": pod.namespace,
                "name": pod.name, "uid": pod.uid, "resourceVersion": pod.resource_version},
            "reason": reason,
            "message": msg,
            "type": kind,
            "action": action,
            "source": {"component": crate::DEFAULT_SCHEDULER},
            "reportingComponent": crate::DEFAULT_SCHEDULER,
            "reportingInstance": self.identity,
            "firstTimestamp": secs,
            "lastTimestamp": secs,
            "count": 1,
        });
        if self.tx.try_send(ev).is_err() {
            self.stats.events_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes queued events, a few at a time.
async fn write_events(client: Client, rx: mpsc::Receiver<Value>) {
    let stream = tokio_stream_from(rx);
    stream
        .map(|ev| {
            let client = client.clone();
            async move {
                let ns = ev["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string();
                let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client, &ns);
                let result = match serde_json::from_value::<k8s_openapi::api::core::v1::Event>(ev) {
                    Ok(ev) => api
                        .create(&PostParams::default(), &ev)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "writing an event");
                }
            }
        })
        .buffer_unordered(8)
        .for_each(|()| async {})
        .await;
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
