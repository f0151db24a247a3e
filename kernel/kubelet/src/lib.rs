//! The Skiff kubelet core: a pure, host-testable state machine.
//!
//! It owns no clock and does no I/O. The driver (the kernel, a hollow node, a
//! test) feeds it:
//! - control-plane messages ([`Kubelet::handle`]: desired pods, deltas,
//!   ConfigMap/Secret data, registration settings);
//! - time, as [`Nanos`] since boot, on every [`Kubelet::tick`];
//! - a [`Runtime`] (start/stop/kill containers, report their state) and a
//!   [`Prober`] (TCP/HTTP probes against the pod's own ports), both polled
//!   inside `tick`.
//!
//! and sends what `tick` returns ([`NodeToPlane`] messages: lease renewals,
//! node status, pod status changes, events, sync acks). [`Kubelet::next_wakeup`]
//! says when `tick` is next due if nothing else happens; the driver also
//! ticks when the runtime or prober reports something.
//!
//! ```
//! use skiff_kubelet::*;
//! use skiff_node_proto::{PlaneToNode, Resources};
//!
//! struct NoRuntime;
//! impl Runtime for NoRuntime {
//!     fn start(&mut self, _: &StartSpec<'_>) -> Result<ContainerId, StartError> { Err(StartError::Other("no runtime".into())) }
//!     fn state(&mut self, _: ContainerId) -> RuntimeState { RuntimeState::Unknown }
//!     fn stop(&mut self, _: ContainerId) {}
//!     fn kill(&mut self, _: ContainerId) {}
//!     fn remove(&mut self, _: ContainerId) {}
//! }
//! struct NoProber;
//! impl Prober for NoProber {
//!     fn start(&mut self, _: ProbeId, _: &ProbeTarget<'_>) {}
//!     fn poll(&mut self, _: ProbeId) -> Option<ProbeResult> { Some(ProbeResult::Success) }
//!     fn cancel(&mut self, _: ProbeId) {}
//! }
//!
//! let mut kubelet = Kubelet::new(Config::new("node-1", Resources::default()));
//! kubelet.handle(&PlaneToNode::DesiredPods { generation: 1, pods: vec![] });
//! let (mut rt, mut prober) = (NoRuntime, NoProber);
//! let mut now = 0;
//! for _ in 0..3 {
//!     for msg in kubelet.tick(now, &mut rt, &mut prober) {
//!         let _frame = skiff_node_proto::encode_frame(&msg, skiff_node_proto::MAX_FRAME);
//!     }
//!     // The kernel sleeps until then, or until the runtime/prober/plane wakes it.
//!     now = kubelet.next_wakeup().unwrap();
//! }
//! ```
//!
//! Invariants:
//! - desired = control-plane pods ∪ static pods from the configuration;
//!   a pod that leaves the desired set is stopped (grace period, then kill)
//!   and forgotten only after every container has stopped;
//! - a pod status is emitted only when it differs from the last one emitted;
//! - the semantics follow Kubernetes' kubelet: restart policies, CrashLoop
//!   back-off ([`backoff`]), phase and condition computation, probe
//!   thresholds, termination grace periods (see [`pod`]).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod backoff;
pub mod env;
pub mod logs;
pub mod pod;

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;

use skiff_node_proto::{
    ConditionStatus, ContainerUsage, NodeCondition, NodeConditionType, NodeStatus, NodeToPlane,
    NodeUsage, PlaneToNode, PodSpec, PodUid, PodUsage, ProbeHandler, Resources, UnixMillis,
    UsageReport,
};

pub use backoff::{Backoff, BackoffPolicy};
pub use env::{ConfigStore, VolumeContent, VolumeFile};
pub use logs::{LINE_OVERHEAD, LogBuffer, LogCursor, LogOptions, LogSource, LogStreams};
pub use pod::PodState;

/// Nanoseconds since boot (the driver's monotonic clock; virtual in tests).
pub type Nanos = u64;
pub const MILLI: Nanos = 1_000_000;
pub const SEC: Nanos = 1_000_000_000;

/// Kubelet settings, with Kubernetes' defaults from [`Config::new`].
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The node's own address (downward API `status.hostIP`).
    pub host_ip: Option<String>,
    pub capacity: Resources,
    pub allocatable: Resources,
    /// Lease renewal period (`nodeLeaseDurationSeconds` 40 / 4 = 10 s).
    pub lease_renew_interval: Nanos,
    /// Node status report when nothing changed (`nodeStatusReportFrequency` 5 min).
    pub node_status_report_interval: Nanos,
    /// Resource usage reports ([`NodeToPlane::Usage`]); `None`: none sent
    /// (the agent turns them on when the plane speaks protocol 5).
    pub usage_report_interval: Option<Nanos>,
    /// CrashLoopBackOff: 10 s doubling to 300 s.
    pub backoff: BackoffPolicy,
    /// Static pods from the node configuration: always desired.
    pub static_pods: Vec<PodSpec>,
    /// Wall clock (Unix ms) at boot, for timestamps on the wire.
    pub boot_wall_ms: UnixMillis,
}

impl Config {
    pub fn new(node_name: impl Into<String>, capacity: Resources) -> Self {
        Self {
            node_name: node_name.into(),
            host_ip: None,
            capacity,
            allocatable: capacity,
            lease_renew_interval: 10 * SEC,
            node_status_report_interval: 300 * SEC,
            usage_report_interval: None,
            backoff: BackoffPolicy {
                initial: 10 * SEC,
                max: 300 * SEC,
            },
            static_pods: Vec::new(),
            boot_wall_ms: 0,
        }
    }
}

/// A runtime's handle for one container instance (one attempt).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(pub u64);

/// What the runtime is asked to start.
#[derive(Debug)]
pub struct StartSpec<'a> {
    pub pod: &'a PodSpec,
    pub container: &'a skiff_node_proto::Container,
    pub init: bool,
    /// Resolved environment (envFrom, env, downward API).
    pub env: Vec<(String, String)>,
    /// 0 for the first instance, then the restart count.
    pub attempt: u32,
    /// The pod's volumes by name, projected at this start (the container's
    /// `volume_mounts` say where they go).
    pub volumes: Vec<(String, env::VolumeContent)>,
}

/// A container instance's state as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeState {
    /// Being set up (module load, instantiation): `ContainerCreating`.
    Creating,
    Running,
    Exited {
        exit_code: i32,
        oom_killed: bool,
    },
    /// The runtime lost it (reported as `ContainerStatusUnknown`, exit 137).
    Unknown,
}

/// Why a runtime could not start a container instance. The kubelet reports
/// each kind as Kubernetes does ([`StartError::waiting_reason`]); the
/// detail goes into the container status message and the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// The runtime has no such image: the plane did not resolve it for this
    /// runtime. Waiting `ErrImagePull`, retried.
    ImageNotFound(String),
    /// The image's artifact is unusable (digest mismatch, cannot be loaded).
    BadArtifact(String),
    /// The node has no memory for another container.
    OutOfMemory(String),
    /// The container asks for what this runtime does not do (a UDP port, a
    /// subPath mount, a volume the pod lacks). Waiting
    /// `CreateContainerError`, retried.
    Unsupported(String),
    /// Anything else: the runtime failed to set the instance up.
    Other(String),
}

impl StartError {
    pub fn detail(&self) -> &str {
        match self {
            StartError::ImageNotFound(d)
            | StartError::BadArtifact(d)
            | StartError::OutOfMemory(d)
            | StartError::Unsupported(d)
            | StartError::Other(d) => d,
        }
    }

    /// The waiting reason for failures no instance ran for; `None`: the
    /// attempt is a `StartError` termination (exit code 128, containerd's
    /// convention), subject to CrashLoop back-off.
    pub fn waiting_reason(&self) -> Option<&'static str> {
        match self {
            StartError::ImageNotFound(_) => Some("ErrImagePull"),
            StartError::Unsupported(_) => Some("CreateContainerError"),
            StartError::BadArtifact(_) | StartError::OutOfMemory(_) | StartError::Other(_) => None,
        }
    }
}

impl core::fmt::Display for StartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.detail())
    }
}

impl core::error::Error for StartError {}

/// Starts and stops containers. Implemented by the wasm runtime in the
/// kernel and by scripted fakes in tests. Calls must not block.
pub trait Runtime {
    /// Starts an instance, or says why not ([`StartError`]).
    fn start(&mut self, spec: &StartSpec<'_>) -> Result<ContainerId, StartError>;
    fn state(&mut self, id: ContainerId) -> RuntimeState;
    /// Asks the instance to stop (SIGTERM's role); the kubelet calls
    /// [`Runtime::kill`] when the grace period runs out.
    fn stop(&mut self, id: ContainerId);
    fn kill(&mut self, id: ContainerId);
    /// Frees an exited instance (the kubelet keeps one previous instance per
    /// container for `kubectl logs --previous`).
    fn remove(&mut self, id: ContainerId);
    /// The pod's IP once its network is set up.
    fn pod_ip(&mut self, _pod_uid: &str) -> Option<String> {
        None
    }
    /// The node's pod CIDRs, from the Node's `spec.podCIDRs` (CRI's
    /// `UpdateRuntimeConfig`): pods get their addresses from them.
    fn update_pod_cidrs(&mut self, _cidrs: &[String]) {}
    /// The pod is gone with all its instances (CRI's `StopPodSandbox`):
    /// its address may be given to another pod.
    fn release_pod(&mut self, _pod_uid: &str) {}
    /// What a running instance has used so far (`None`: not measured).
    fn usage(&mut self, _id: ContainerId) -> Option<InstanceUsage> {
        None
    }
    /// The whole node's use (`None`: not measured; the report then has
    /// zeros, which the plane shows as no node figures).
    fn node_usage(&mut self) -> Option<NodeUsage> {
        None
    }
    /// Whether [`Runtime::usage`] and [`Runtime::node_usage`] are made up
    /// (a simulated runtime), so the report says so.
    fn usage_simulated(&self) -> bool {
        false
    }
}

/// One container instance's use: cumulative CPU, memory now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InstanceUsage {
    pub cpu_ns: u64,
    pub memory_bytes: u64,
    pub log_bytes: u64,
}

/// Identifies one probe attempt between the kubelet and the prober.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProbeId(pub u64);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Readiness,
    Liveness,
    Startup,
}

/// One probe attempt against a pod's own address.
#[derive(Debug)]
pub struct ProbeTarget<'a> {
    pub pod_uid: &'a str,
    pub pod_ip: Option<&'a str>,
    pub container: &'a str,
    pub kind: ProbeKind,
    pub handler: &'a ProbeHandler,
    pub timeout: Nanos,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    Success,
    /// With the kubelet-style output, e.g. `"HTTP probe failed with statuscode: 500"`.
    Failure(String),
}

/// Runs probes without blocking: [`Prober::start`] begins one, [`Prober::poll`]
/// returns its result once known. The kubelet enforces `timeout` itself (a
/// probe still pending then is cancelled and counts as a failure).
pub trait Prober {
    fn start(&mut self, id: ProbeId, target: &ProbeTarget<'_>);
    fn poll(&mut self, id: ProbeId) -> Option<ProbeResult>;
    fn cancel(&mut self, id: ProbeId);
}

/// The kubelet core. See the module docs.
#[derive(Debug)]
pub struct Kubelet {
    config: Config,
    pods: BTreeMap<PodUid, PodState>,
    configs: ConfigStore,
    generation: Option<u64>,
    ack_due: bool,
    lease_seq: u64,
    next_lease: Option<Nanos>,
    next_node_status: Option<Nanos>,
    next_usage: Option<Nanos>,
    node_ready_since: Option<Nanos>,
    next_probe_id: u64,
    wakeup: Option<Nanos>,
    /// Specs of pods desired again while their removal is still stopping.
    readd: BTreeMap<PodUid, PodSpec>,
    /// Pod CIDRs from the plane, handed to the runtime on the next tick.
    pod_cidrs: Option<Vec<String>>,
    /// Event series: (object, reason, message) → (count, first timestamp).
    events: BTreeMap<(String, String, String), (u32, UnixMillis)>,
    out: Vec<NodeToPlane>,
}

impl Kubelet {
    pub fn new(config: Config) -> Self {
        let mut k = Self {
            config,
            pods: BTreeMap::new(),
            configs: ConfigStore::default(),
            generation: None,
            ack_due: false,
            lease_seq: 0,
            next_lease: None,
            next_node_status: None,
            next_usage: None,
            node_ready_since: None,
            next_probe_id: 0,
            wakeup: None,
            readd: BTreeMap::new(),
            pod_cidrs: None,
            events: BTreeMap::new(),
            out: Vec::new(),
        };
        for spec in k.config.static_pods.clone() {
            k.pods.insert(spec.uid.clone(), PodState::new(spec, true));
        }
        k
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Turns resource usage reports on (every `interval`) or off.
    pub fn set_usage_reports(&mut self, interval: Option<Nanos>) {
        self.config.usage_report_interval = interval;
        self.next_usage = None;
    }

    /// Corrects the wall clock (e.g. from the plane's `Welcome.server_time`).
    pub fn set_boot_wall_ms(&mut self, ms: UnixMillis) {
        self.config.boot_wall_ms = ms;
    }

    /// The last desired-pod generation applied.
    pub fn generation(&self) -> Option<u64> {
        self.generation
    }

    pub fn pod(&self, uid: &str) -> Option<&PodState> {
        self.pods.get(uid)
    }

    pub fn pods(&self) -> impl Iterator<Item = &PodState> {
        self.pods.values()
    }

    /// The runtime instance to read for `kubectl logs` (see
    /// [`PodState::log_instance`]).
    pub fn log_instance(
        &self,
        pod_uid: &str,
        container: &str,
        previous: bool,
    ) -> Option<ContainerId> {
        self.pods.get(pod_uid)?.log_instance(container, previous)
    }

    /// Applies a control-plane message. Returns messages to send at once
    /// (a `ResyncRequest` for a delta that doesn't apply); everything else
    /// happens on the next [`Kubelet::tick`].
    pub fn handle(&mut self, msg: &PlaneToNode) -> Option<NodeToPlane> {
        match msg {
            PlaneToNode::DesiredPods { generation, pods } => {
                self.set_desired(*generation, pods);
                None
            }
            PlaneToNode::PodDelta {
                from_generation,
                generation,
                upserts,
                removes,
            } => {
                if self.generation != Some(*from_generation) {
                    return Some(NodeToPlane::ResyncRequest {
                        have: self.generation.unwrap_or(0),
                    });
                }
                for spec in upserts {
                    self.upsert(spec);
                }
                for uid in removes {
                    self.remove(uid);
                }
                self.generation = Some(*generation);
                self.ack_due = true;
                None
            }
            PlaneToNode::ConfigData(obj) => {
                self.configs.upsert(obj.clone());
                None
            }
            PlaneToNode::ConfigRemove {
                kind,
                namespace,
                name,
            } => {
                self.configs.remove(*kind, namespace, name);
                None
            }
            PlaneToNode::PodNetwork { pod_cidrs } => {
                self.pod_cidrs = Some(pod_cidrs.clone());
                None
            }
            PlaneToNode::Registered(r) => {
                if !r.pod_cidrs.is_empty() {
                    self.pod_cidrs = Some(r.pod_cidrs.clone());
                }
                if r.renew_interval_ms > 0 {
                    self.config.lease_renew_interval = u64::from(r.renew_interval_ms) * MILLI;
                }
                if r.node_status_report_ms > 0 {
                    self.config.node_status_report_interval =
                        u64::from(r.node_status_report_ms) * MILLI;
                }
                // A (re-)registered node renews and reports at once, then on
                // the new cadence.
                self.next_lease = None;
                self.next_node_status = None;
                self.next_usage = None;
                None
            }
            _ => None,
        }
    }

    /// Replaces the control plane's desired pod set (static pods stay).
    pub fn set_desired(&mut self, generation: u64, pods: &[PodSpec]) {
        for spec in pods {
            self.upsert(spec);
        }
        let keep: Vec<&str> = pods.iter().map(|p| p.uid.as_str()).collect();
        let gone: Vec<PodUid> = self
            .pods
            .values()
            .filter(|p| !p.is_static() && !keep.contains(&p.spec().uid.as_str()))
            .map(|p| p.spec().uid.clone())
            .collect();
        for uid in gone {
            self.remove(&uid);
        }
        self.generation = Some(generation);
        self.ack_due = true;
    }

    fn upsert(&mut self, spec: &PodSpec) {
        match self.pods.get_mut(&spec.uid) {
            // Removed, then desired again (a resync racing a delta): the old
            // instance finishes stopping first, then the pod starts afresh.
            Some(p) if p.is_removed() => {
                self.readd.insert(spec.uid.clone(), spec.clone());
            }
            Some(p) => p.update_spec(spec.clone()),
            None => {
                self.pods
                    .insert(spec.uid.clone(), PodState::new(spec.clone(), false));
            }
        }
    }

    fn remove(&mut self, uid: &str) {
        self.readd.remove(uid);
        if let Some(p) = self.pods.get_mut(uid).filter(|p| !p.is_static()) {
            p.mark_removed();
        }
    }

    /// Runs one sync at `now`: lease, node status, and every pod's sync
    /// against the runtime and prober. Returns the messages to send.
    pub fn tick<R: Runtime, P: Prober>(
        &mut self,
        now: Nanos,
        rt: &mut R,
        prober: &mut P,
    ) -> Vec<NodeToPlane> {
        let mut wake = Wake(None);
        if let Some(cidrs) = self.pod_cidrs.take() {
            rt.update_pod_cidrs(&cidrs);
        }
        self.heartbeat(now, &mut wake);
        self.report_usage(now, rt, &mut wake);
        if core::mem::take(&mut self.ack_due)
            && let Some(generation) = self.generation
        {
            self.out.push(NodeToPlane::SyncAck { generation });
        }
        let ctx = pod::SyncCtx {
            now,
            config: &self.config,
            configs: &self.configs,
            next_probe_id: &mut self.next_probe_id,
        };
        let mut ctx = ctx;
        let mut finished = Vec::new();
        for (uid, p) in self.pods.iter_mut() {
            p.sync(&mut ctx, rt, prober, &mut self.out, &mut wake);
            if p.is_finished() {
                finished.push(uid.clone());
            }
        }
        for uid in finished {
            if let Some(p) = self.pods.remove(&uid) {
                p.release(rt);
                rt.release_pod(&uid);
            }
            if let Some(spec) = self.readd.remove(&uid) {
                self.pods.insert(uid, PodState::new(spec, false));
                wake.at(Some(now)); // start it on the next tick, not a period later
            }
        }
        self.wakeup = wake.0;
        self.count_events();
        core::mem::take(&mut self.out)
    }

    /// Numbers repeated events as a series, like the kubelet's event
    /// recorder (`count`, `first_timestamp`), so the plane can update one
    /// Event object instead of creating many.
    fn count_events(&mut self) {
        // Bounded memory: forget old series wholesale (the recorder's LRU
        // cache is also lossy); a forgotten series just restarts at 1.
        const MAX_SERIES: usize = 4096;
        for m in &mut self.out {
            let NodeToPlane::Event(e) = m else { continue };
            if self.events.len() >= MAX_SERIES {
                self.events.clear();
            }
            let key = (
                alloc::format!("{:?}", e.object),
                e.reason.clone(),
                e.message.clone(),
            );
            let entry = self.events.entry(key).or_insert((0, e.first_timestamp));
            entry.0 += 1;
            e.count = entry.0;
            e.first_timestamp = entry.1;
        }
    }

    /// When `tick` is next due (lease, probe, back-off, grace deadline…) if
    /// nothing else happens. `None` before the first tick.
    pub fn next_wakeup(&self) -> Option<Nanos> {
        self.wakeup
    }

    fn wall(&self, now: Nanos) -> UnixMillis {
        self.config.boot_wall_ms + now / MILLI
    }

    fn heartbeat(&mut self, now: Nanos, wake: &mut Wake) {
        if self.next_lease.is_none_or(|t| now >= t) {
            self.lease_seq += 1;
            self.out.push(NodeToPlane::LeaseRenew {
                seq: self.lease_seq,
                renew_time: self.wall(now),
            });
            self.next_lease = Some(now + self.config.lease_renew_interval);
        }
        if self.next_node_status.is_none_or(|t| now >= t) {
            let status = self.node_status(now);
            self.out.push(NodeToPlane::NodeStatus(status));
            self.next_node_status = Some(now + self.config.node_status_report_interval);
        }
        wake.at(self.next_lease);
        wake.at(self.next_node_status);
    }

    /// Sends a [`UsageReport`] when one is due: the node's figures and every
    /// running container's, by pod.
    fn report_usage<R: Runtime>(&mut self, now: Nanos, rt: &mut R, wake: &mut Wake) {
        let Some(interval) = self.config.usage_report_interval else {
            return;
        };
        if self.next_usage.is_some_and(|t| now < t) {
            wake.at(self.next_usage);
            return;
        }
        let wall = |t: Nanos| self.config.boot_wall_ms + t / MILLI;
        let mut pods = Vec::new();
        for p in self.pods.values() {
            let containers: Vec<ContainerUsage> = p
                .running_instances()
                .filter_map(|(name, id, since)| {
                    let u = rt.usage(id)?;
                    Some(ContainerUsage {
                        name: name.into(),
                        started_at: wall(since),
                        cpu_ns: u.cpu_ns,
                        memory_working_set_bytes: u.memory_bytes,
                        log_bytes: u.log_bytes,
                    })
                })
                .collect();
            if !containers.is_empty() {
                let spec = p.spec();
                pods.push(PodUsage {
                    uid: spec.uid.clone(),
                    namespace: spec.namespace.clone(),
                    name: spec.name.clone(),
                    containers,
                });
            }
        }
        self.out.push(NodeToPlane::Usage(UsageReport {
            timestamp: self.wall(now),
            node: rt.node_usage().unwrap_or_default(),
            pods,
            simulated: rt.usage_simulated(),
        }));
        self.next_usage = Some(now + interval);
        wake.at(self.next_usage);
    }

    /// The node's status: the kubelet is ready once it runs; the pressure
    /// conditions are static until the kernel reports resource use.
    pub fn node_status(&mut self, now: Nanos) -> NodeStatus {
        let since = *self.node_ready_since.get_or_insert(now);
        let hb = self.wall(now);
        let tr = self.wall(since);
        let cond = |kind, status, reason: &str, message: &str| NodeCondition {
            kind,
            status,
            reason: reason.into(),
            message: message.into(),
            last_heartbeat: hb,
            last_transition: tr,
        };
        use ConditionStatus::{False, True};
        NodeStatus {
            conditions: alloc::vec![
                cond(
                    NodeConditionType::MemoryPressure,
                    False,
                    "KubeletHasSufficientMemory",
                    "kubelet has sufficient memory available"
                ),
                cond(
                    NodeConditionType::DiskPressure,
                    False,
                    "KubeletHasNoDiskPressure",
                    "kubelet has no disk pressure"
                ),
                cond(
                    NodeConditionType::PIDPressure,
                    False,
                    "KubeletHasSufficientPID",
                    "kubelet has sufficient PID available"
                ),
                cond(
                    NodeConditionType::Ready,
                    True,
                    "KubeletReady",
                    "kubelet is posting ready status"
                ),
            ],
            capacity: self.config.capacity,
            allocatable: self.config.allocatable,
        }
    }
}

/// The earliest of the deadlines seen during a tick.
#[derive(Debug, Default)]
pub struct Wake(pub Option<Nanos>);

impl Wake {
    pub fn at(&mut self, t: Option<Nanos>) {
        if let Some(t) = t {
            self.0 = Some(self.0.map_or(t, |w| w.min(t)));
        }
    }
}

#[cfg(test)]
mod tests;
