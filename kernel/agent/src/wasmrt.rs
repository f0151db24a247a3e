//! The node's wasm runtime: the kubelet's [`Runtime`] over [`skiff_wasm`].
//!
//! A container instance goes `Creating` (its artifact is still being
//! fetched) → `Running` (spawned; stepped by [`WasmRuntime::run`]) →
//! `Exited`. The node supplies one [`NodeHost`]: it makes each container's
//! [`skiff_wasm::Host`] (clocks, entropy, sockets for its containerPorts) and
//! says how much memory it can still give. Output the host receives goes to
//! a [`LogSink`]; `run` moves it into the instance's [`LogBuffer`] after
//! every step, which is what `kubectl logs` reads.
//!
//! Exit codes, as a Linux runtime would report them:
//! - `proc_exit(n)` or `_start` returning: `n` (0);
//! - over the memory limit (or the node refused to grow memory): 137, OOMKilled;
//! - a trap: **134** (SIGABRT's 128 + 6: the guest aborted), with the trap
//!   written to the container's log so `kubectl logs` shows why;
//! - `stop`: 143 at once (a wasm guest has no signal handler to run, so a
//!   SIGTERM ends it immediately); `kill`: 137.
//!
//! Scheduling ([`WasmRuntime::run`]): runnable containers are stepped round
//! robin, `SLICE_MS` epoch ticks each, so a busy loop cannot keep the CPU.
//! `resources.limits.cpu` is enforced like the CFS bandwidth controller: per
//! [`CPU_PERIOD`] a container may use `limit × period` of CPU time (a 200m
//! container 20 ms per 100 ms); once used it waits for the next period.
//! Blocked containers are stepped again at their deadline or after
//! [`WasmRuntime::wake_io`] (the node calls it on network activity).

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use skiff_kubelet::{
    ContainerId, InstanceUsage, LogBuffer, LogSource, MILLI, Nanos, Runtime, RuntimeState,
    StartError, StartSpec, VolumeContent,
};
use skiff_node_proto::{ImagePull, NodeUsage, Protocol};
use skiff_wasm::{Container, ContainerSpec, Image, Step, Volume};
use spin::Mutex;

use crate::artifacts::{ArtifactState, ArtifactStore};
use crate::pod_addresses::{Ipv4Net, PodAddresses};
use crate::testrt::{self, TestRuntime};

/// `containerRuntimeVersion` of a node running wasm.
pub const RUNTIME_VERSION: &str = concat!(
    "skiff-wasm://",
    env!("CARGO_PKG_VERSION"),
    " (wasmtime 48.0.8)"
);
/// Memory limit of a container without `resources.limits.memory`.
pub const DEFAULT_MEMORY_LIMIT: usize = 64 << 20;
/// Smallest memory a container is started with.
pub const MIN_MEMORY: usize = 1 << 20;
/// emptyDir capacity when the volume sets no `sizeLimit` (and the most any
/// emptyDir gets: it lives in the node's heap).
pub const MAX_EMPTY_DIR: usize = 16 << 20;
/// The CPU-limit accounting period (CFS' default `cpu.cfs_period_us`).
pub const CPU_PERIOD: Nanos = 100 * MILLI;
/// Epoch ticks (≈ ms on the node) per step.
pub const SLICE_MS: u64 = 2;
/// Exit code of a trapped guest (128 + SIGABRT).
pub const EXIT_TRAP: i32 = 134;
pub const EXIT_KILLED: i32 = 137;
pub const EXIT_TERMINATED: i32 = 143;
/// Log kept per container instance.
const LOG_BYTES: usize = 256 << 10;
/// Output queued between two drains; more is dropped (and said so).
const SINK_BYTES: usize = 256 << 10;

/// Where a container's host writes its output; drained into the instance's
/// [`LogBuffer`] after each step.
#[derive(Debug, Clone, Default)]
pub struct LogSink(Arc<Mutex<SinkInner>>);

#[derive(Debug, Default)]
struct SinkInner {
    bytes: Vec<u8>,
    dropped: usize,
}

impl LogSink {
    /// Queues output (stdout and stderr alike: the log is one stream).
    pub fn write(&self, bytes: &[u8]) {
        let mut g = self.0.lock();
        let room = SINK_BYTES.saturating_sub(g.bytes.len());
        let n = bytes.len().min(room);
        g.bytes.extend_from_slice(&bytes[..n]);
        g.dropped += bytes.len() - n;
    }

    fn take(&self) -> (Vec<u8>, usize) {
        let mut g = self.0.lock();
        (
            core::mem::take(&mut g.bytes),
            core::mem::take(&mut g.dropped),
        )
    }
}

/// Who a container host is for.
#[derive(Debug, Clone, Copy)]
pub struct HostSpec<'a> {
    pub pod_uid: &'a str,
    pub namespace: &'a str,
    pub pod_name: &'a str,
    pub container: &'a str,
    /// TCP containerPorts: the host listens on each.
    pub ports: &'a [u16],
    /// UDP containerPorts: the container may bind each.
    pub udp_ports: &'a [u16],
    /// The pod's own address, from the node's pod CIDR; `None` when the
    /// plane gave the node no pod CIDR: the pod then shares the node's
    /// address (and a port is one container's per node).
    pub pod_ip: Option<Ipv4Addr>,
}

/// What the node provides to the runtime.
pub trait NodeHost {
    type Host: skiff_wasm::Host + 'static;
    /// Makes the host of one container instance (binding its ports). Its
    /// `log` must go to `log`, and its `monotonic_ns` must be [`NodeHost::now`].
    fn host(&mut self, spec: &HostSpec<'_>, log: LogSink) -> Result<Self::Host, String>;
    /// The monotonic clock (nanoseconds) of blocked deadlines and CPU accounting.
    fn now(&self) -> Nanos;
    /// The most memory a new container may be given now.
    fn memory_available(&self) -> usize;
    /// Whether, since the last call, the node could not give a page of
    /// memory to the container that just stepped: that container must end
    /// OOMKilled before any other runs (it ran on a scratch page).
    fn memory_starved(&mut self) -> bool {
        false
    }
    /// The node's pod network: an address in it that no pod of this node
    /// holds is unreachable (nothing lives there).
    fn pod_network(&mut self, _net: Ipv4Net) {}
    /// The node's CPU, memory and network figures for usage reports (the
    /// runtime adds the log buffers); `None`: not measured.
    fn usage(&self) -> Option<NodeUsage> {
        None
    }
}

/// What a `run` call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RunResult {
    /// Some container can run now: call `run` again soon.
    pub runnable: bool,
    /// Otherwise, the earliest time one wakes by itself (a sleep ends, a
    /// throttled container's next period).
    pub next_deadline: Option<Nanos>,
    /// Some instance changed state (ended, or spawned): tick the kubelet.
    pub changed: bool,
}

enum Phase {
    /// Waiting for the artifact `digest` of `size` bytes.
    Fetching {
        digest: String,
        size: u64,
        spec: ContainerSpec,
        host: Box<dyn skiff_wasm::Host>,
    },
    Running(Container),
    Ended {
        exit_code: i32,
        oom_killed: bool,
    },
}

struct Instance {
    pod_uid: String,
    digest: String,
    phase: Phase,
    log: LogBuffer,
    sink: LogSink,
    /// Blocked: runnable again at this time, or on I/O if `io_wait`.
    wake_at: Option<Nanos>,
    /// Blocked until socket I/O ([`WasmRuntime::wake_io`]) or `wake_at`.
    io_wait: bool,
    /// `resources.limits.cpu`, in millicores (None or ≥ 1000: no cap).
    cpu_millis: Option<u64>,
    period_start: Nanos,
    period_used: Nanos,
    cpu_total: Nanos,
}

/// Gives the wasm engine, made the first time it is asked for: creating it
/// is the slowest step of a node's boot, and nothing needs it before the
/// first wasm container (the kernel warms it once the node has registered).
pub type EngineSource = fn() -> Result<&'static skiff_wasm::Runtime, skiff_wasm::Error>;

/// See the module docs.
pub struct WasmRuntime<N: NodeHost> {
    engine: EngineSource,
    node: N,
    artifacts: ArtifactStore,
    /// Unix ms at `now == 0`, for log timestamps.
    pub boot_wall_ms: u64,
    /// The node's address: every pod's while the node has no pod CIDR.
    pub node_ip: Option<String>,
    /// Pod addresses from the node's pod CIDR.
    addresses: PodAddresses,
    images: BTreeMap<String, Image>,
    /// emptyDirs by (pod uid, volume name): shared by a pod's containers and
    /// kept across restarts, dropped with the pod's last instance.
    empty_dirs: BTreeMap<(String, String), Volume>,
    instances: BTreeMap<ContainerId, Instance>,
    next_id: u64,
    /// Round-robin position: the id stepped last.
    cursor: ContainerId,
    changed: bool,
}

impl<N: NodeHost> WasmRuntime<N> {
    pub fn new(
        engine: EngineSource,
        node: N,
        artifacts: ArtifactStore,
        boot_wall_ms: u64,
        node_ip: Option<String>,
    ) -> Self {
        Self {
            engine,
            node,
            artifacts,
            boot_wall_ms,
            node_ip,
            addresses: PodAddresses::default(),
            images: BTreeMap::new(),
            empty_dirs: BTreeMap::new(),
            instances: BTreeMap::new(),
            next_id: 0,
            cursor: ContainerId(0),
            changed: false,
        }
    }

    pub fn node(&self) -> &N {
        &self.node
    }

    pub fn node_mut(&mut self) -> &mut N {
        &mut self.node
    }

    /// Instances held (running, waiting or ended but not removed).
    pub fn len(&self) -> usize {
        self.instances.len()
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }

    /// CPU time an instance has used so far.
    pub fn cpu_time(&self, id: ContainerId) -> Option<Nanos> {
        self.instances.get(&id).map(|i| i.cpu_total)
    }

    fn wall_ms(&self, now: Nanos) -> u64 {
        self.boot_wall_ms + now / MILLI
    }

    /// Containers waiting for socket I/O are stepped again on the next `run`,
    /// also those whose wait has a deadline (an HTTP pod's kept-alive
    /// connection waits for the next request and its idle timeout); a step
    /// of a guest still blocked returns at once.
    pub fn wake_io(&mut self) {
        for i in self.instances.values_mut() {
            if i.io_wait {
                i.io_wait = false;
                i.wake_at = None;
            }
        }
    }

    fn engine(&self) -> Result<&'static skiff_wasm::Runtime, StartError> {
        (self.engine)().map_err(|e| StartError::Other(format!("the node has no wasm runtime: {e}")))
    }

    fn image(&mut self, digest: &str, artifact: &[u8]) -> Result<Image, StartError> {
        if let Some(img) = self.images.get(digest) {
            return Ok(img.clone());
        }
        let img = self
            .engine()?
            .load(artifact)
            .map_err(|e| StartError::BadArtifact(format!("cannot load artifact {digest}: {e}")))?;
        self.images.insert(digest.into(), img.clone());
        Ok(img)
    }

    /// Drops images and emptyDirs nothing refers to any more.
    fn collect(&mut self) {
        let insts = &self.instances;
        self.images
            .retain(|d, _| insts.values().any(|i| i.digest == *d));
        self.empty_dirs
            .retain(|(pod, _), _| insts.values().any(|i| i.pod_uid == *pod));
    }

    fn volumes(&mut self, spec: &StartSpec<'_>) -> Result<Vec<Volume>, StartError> {
        let mut out = Vec::new();
        for m in &spec.container.volume_mounts {
            if m.sub_path.is_some() {
                return Err(StartError::Unsupported(format!(
                    "volume mount {:?}: subPath is not supported by the wasm runtime",
                    m.name
                )));
            }
            let Some((_, content)) = spec.volumes.iter().find(|(n, _)| *n == m.name) else {
                return Err(StartError::Unsupported(format!(
                    "volume mount {:?}: no such pod volume",
                    m.name
                )));
            };
            let bad = |e: skiff_wasm::Error| StartError::Other(format!("volume {:?}: {e}", m.name));
            let vol = match content {
                VolumeContent::Files(files) => {
                    // ConfigMap, Secret and downward API volumes are read-only
                    // in Kubernetes whatever the mount says.
                    Volume::read_only(
                        &m.mount_path,
                        files.iter().map(|f| (f.path.as_str(), f.data.clone())),
                    )
                    .map_err(bad)?
                }
                VolumeContent::EmptyDir {
                    size_limit_bytes, ..
                } => {
                    let key = (spec.pod.uid.clone(), m.name.clone());
                    let shared = match self.empty_dirs.get(&key) {
                        Some(v) => v.clone(),
                        None => {
                            let cap = size_limit_bytes
                                .map_or(MAX_EMPTY_DIR, |b| (b as usize).min(MAX_EMPTY_DIR));
                            let v = Volume::empty_dir(&m.mount_path, cap).map_err(bad)?;
                            self.empty_dirs.insert(key, v.clone());
                            v
                        }
                    };
                    shared.mounted_at(&m.mount_path, m.read_only).map_err(bad)?
                }
            };
            out.push(vol);
        }
        Ok(out)
    }

    fn container_spec(&mut self, spec: &StartSpec<'_>) -> Result<ContainerSpec, StartError> {
        let c = spec.container;
        let mut args = Vec::with_capacity(1 + c.command.len() + c.args.len());
        match c.command.split_first() {
            Some((argv0, rest)) => {
                args.push(argv0.clone());
                args.extend(rest.iter().cloned());
            }
            None => args.push(c.name.clone()),
        }
        args.extend(c.args.iter().cloned());
        let mut ports = Vec::new();
        for p in &c.ports {
            match p.protocol {
                Protocol::Tcp => ports.push(p.container_port),
                // Bound by the container itself (wasi:sockets): see `udp_ports`.
                Protocol::Udp => {}
                Protocol::Sctp => {
                    return Err(StartError::Unsupported(format!(
                        "containerPort {} is SCTP: the wasm runtime serves TCP and UDP ports only",
                        p.container_port
                    )));
                }
            }
        }
        let want = c
            .resources
            .limits
            .memory_bytes
            .map_or(DEFAULT_MEMORY_LIMIT, |b| {
                usize::try_from(b).unwrap_or(usize::MAX)
            });
        let memory_limit = want.min(self.node.memory_available());
        if memory_limit < MIN_MEMORY {
            return Err(StartError::OutOfMemory(format!(
                "the node has no memory left for another container ({memory_limit} bytes available)"
            )));
        }
        Ok(ContainerSpec {
            args,
            env: spec.env.clone(),
            memory_limit,
            volumes: self.volumes(spec)?,
            ports,
        })
    }

    fn spawn(
        &self,
        image: &Image,
        spec: ContainerSpec,
        host: Box<dyn skiff_wasm::Host>,
    ) -> Result<Container, StartError> {
        use skiff_wasm::Error as E;
        self.engine()?.spawn(image, spec, host).map_err(|e| {
            let detail = format!("cannot create the container: {e}");
            match e {
                E::Spec(_) | E::Unsupported(_) => StartError::Unsupported(detail),
                E::NotWasm
                | E::Invalid(_)
                | E::UnsupportedFeature(_)
                | E::UnsupportedImports(_)
                | E::NotACommand
                | E::Artifact(_)
                | E::Link(_) => StartError::BadArtifact(detail),
                E::Engine(_) => StartError::Other(detail),
            }
        })
    }

    /// Spawns instances whose artifact arrived; ends those whose fetch failed.
    fn advance_fetching(&mut self, now: Nanos) {
        let waiting: Vec<ContainerId> = self
            .instances
            .iter()
            .filter(|(_, i)| matches!(i.phase, Phase::Fetching { .. }))
            .map(|(id, _)| *id)
            .collect();
        for id in waiting {
            let (digest, size) = match &self.instances[&id].phase {
                Phase::Fetching { digest, size, .. } => (digest.clone(), *size),
                _ => continue,
            };
            let result = match self.artifacts.want(&digest, size) {
                ArtifactState::Fetching => continue,
                ArtifactState::Failed(msg) => Err(StartError::BadArtifact(msg)),
                ArtifactState::Ready(bytes) => self.image(&digest, &bytes),
            };
            let inst = self.instances.get_mut(&id).expect("listed above");
            let Phase::Fetching { spec, host, .. } = core::mem::replace(
                &mut inst.phase,
                Phase::Ended {
                    exit_code: 128,
                    oom_killed: false,
                },
            ) else {
                continue;
            };
            let spawned = result.and_then(|image| self.spawn(&image, spec, host));
            let wall = self.wall_ms(now);
            let inst = self.instances.get_mut(&id).expect("listed above");
            match spawned {
                Ok(c) => {
                    inst.phase = Phase::Running(c);
                    inst.period_start = now;
                }
                Err(e) => {
                    // Already reported Creating: end it like a failed start
                    // (exit 128, the kubelet's StartError code) and say why.
                    inst.log.append(wall, format!("{e}\n").as_bytes());
                    inst.log.close();
                }
            }
            self.changed = true;
        }
    }

    fn end(&mut self, id: ContainerId, exit_code: i32, oom_killed: bool) {
        if let Some(i) = self.instances.get_mut(&id)
            && !matches!(i.phase, Phase::Ended { .. })
        {
            // Dropping the container frees its memory and closes its sockets.
            i.phase = Phase::Ended {
                exit_code,
                oom_killed,
            };
            i.log.close();
            self.changed = true;
        }
    }

    /// Steps runnable containers round robin until about `budget` of CPU
    /// time has gone (at least one step if any can run).
    pub fn run(&mut self, budget: Nanos) -> RunResult {
        let start = self.node.now();
        self.advance_fetching(start);
        let mut stepped_any = true;
        while stepped_any && self.node.now().saturating_sub(start) < budget {
            stepped_any = false;
            let ids: Vec<ContainerId> = self
                .instances
                .range(ContainerId(self.cursor.0 + 1)..)
                .chain(self.instances.range(..=self.cursor))
                .map(|(id, _)| *id)
                .collect();
            for id in ids {
                if self.node.now().saturating_sub(start) >= budget && stepped_any {
                    break;
                }
                if self.step_one(id) {
                    stepped_any = true;
                    self.cursor = id;
                }
            }
        }
        let now = self.node.now();
        let mut result = RunResult {
            changed: core::mem::take(&mut self.changed),
            ..RunResult::default()
        };
        for i in self.instances.values() {
            if !matches!(i.phase, Phase::Running(_)) {
                continue;
            }
            let wake = i.runnable_at(now);
            match wake {
                Some(t) if t <= now => result.runnable = true,
                Some(t) => {
                    result.next_deadline = Some(result.next_deadline.map_or(t, |d| d.min(t)));
                }
                None => {}
            }
        }
        result
    }

    /// Steps one instance if it can run now; whether it did.
    fn step_one(&mut self, id: ContainerId) -> bool {
        let now = self.node.now();
        let Some(inst) = self.instances.get_mut(&id) else {
            return false;
        };
        if !matches!(inst.phase, Phase::Running(_)) || inst.runnable_at(now).is_none_or(|t| t > now)
        {
            return false;
        }
        inst.roll_period(now);
        let budget = match inst.quota() {
            Some(q) => SLICE_MS.min(q.saturating_sub(inst.period_used).div_ceil(MILLI).max(1)),
            None => SLICE_MS,
        };
        let Phase::Running(c) = &mut inst.phase else {
            return false;
        };
        let mut step = c.step(budget);
        if self.node.memory_starved() {
            step = Step::OutOfMemory;
        }
        let after = self.node.now();
        let used = after.saturating_sub(now);
        inst.period_used += used;
        inst.cpu_total += used;
        inst.wake_at = None;
        inst.io_wait = false;
        let (bytes, dropped) = inst.sink.take();
        let wall = self.boot_wall_ms + after / MILLI;
        inst.log.append(wall, &bytes);
        if dropped > 0 {
            inst.log.append(
                wall,
                format!("\n[skiff: {dropped} bytes of output dropped]\n").as_bytes(),
            );
        }
        match step {
            Step::Running => {}
            Step::Blocked { until } => {
                // Either may end the wait: an HTTP server between keep-alive
                // requests waits for bytes *and* for its idle deadline.
                inst.wake_at = until;
                inst.io_wait = true;
            }
            Step::Exited(code) => self.end(id, code, false),
            Step::OutOfMemory => self.end(id, EXIT_KILLED, true),
            Step::Trapped(reason) => {
                inst.log
                    .append(wall, format!("\nwasm trap: {reason}\n").as_bytes());
                self.end(id, EXIT_TRAP, false);
            }
        }
        true
    }
}

impl Instance {
    /// CPU time allowed per period, if capped below one CPU.
    fn quota(&self) -> Option<Nanos> {
        self.cpu_millis
            .filter(|&m| m < 1000)
            .map(|m| (CPU_PERIOD * m.max(1)) / 1000)
    }

    /// Starts the current period; a step that overran its quota (slices
    /// end at epoch ticks, not exactly at the quota) is paid back from the
    /// following periods, so the long-run share is the limit.
    fn roll_period(&mut self, now: Nanos) {
        if now < self.period_start + CPU_PERIOD {
            return;
        }
        let periods = (now - self.period_start) / CPU_PERIOD;
        self.period_start += periods * CPU_PERIOD;
        let paid = self.quota().map_or(u64::MAX, |q| q.saturating_mul(periods));
        self.period_used = self.period_used.saturating_sub(paid);
    }

    /// When this running instance may be stepped (None: only after I/O).
    fn runnable_at(&self, now: Nanos) -> Option<Nanos> {
        if self.io_wait && self.wake_at.is_none() {
            return None;
        }
        let mut at = self.wake_at.unwrap_or(now).max(now);
        if let Some(q) = self.quota()
            && self.period_used >= q
        {
            // Runs again once the periods ahead have paid for what it used.
            let periods = self.period_used / q;
            at = at.max(self.period_start + periods * CPU_PERIOD);
        }
        Some(at)
    }
}

impl<N: NodeHost> Runtime for WasmRuntime<N> {
    fn start(&mut self, spec: &StartSpec<'_>) -> Result<ContainerId, StartError> {
        let c = spec.container;
        let ImagePull::Ready {
            artifact_digest,
            artifact_size,
            ..
        } = &c.image.pull
        else {
            return Err(StartError::ImageNotFound(format!(
                "image {:?} was not resolved by the control plane",
                c.image.reference
            )));
        };
        // Fail fast when the artifact is known bad; otherwise start fetching.
        let artifact = match self.artifacts.want(artifact_digest, *artifact_size) {
            ArtifactState::Failed(msg) => return Err(StartError::BadArtifact(msg)),
            ArtifactState::Ready(bytes) => Some(bytes),
            ArtifactState::Fetching => None,
        };
        let image = match &artifact {
            Some(bytes) => Some(self.image(artifact_digest, bytes)?),
            None => None,
        };
        let cspec = self.container_spec(spec)?;
        let pod_ip = match self.addresses.network() {
            None => None,
            Some(net) => Some(self.addresses.assign(&spec.pod.uid).ok_or_else(|| {
                StartError::Other(format!(
                    "no free pod address in {}/{}",
                    net.network, net.prefix
                ))
            })?),
        };
        let sink = LogSink::default();
        let host = self
            .node
            .host(
                &HostSpec {
                    pod_uid: &spec.pod.uid,
                    namespace: &spec.pod.namespace,
                    pod_name: &spec.pod.name,
                    container: &c.name,
                    ports: &cspec.ports,
                    udp_ports: &udp_ports(c),
                    pod_ip,
                },
                sink.clone(),
            )
            .map_err(StartError::Other)?;
        let host: Box<dyn skiff_wasm::Host> = Box::new(host);
        let now = self.node.now();
        let phase = match image {
            Some(image) => Phase::Running(self.spawn(&image, cspec, host)?),
            None => Phase::Fetching {
                digest: artifact_digest.clone(),
                size: *artifact_size,
                spec: cspec,
                host,
            },
        };
        self.next_id += 1;
        let id = ContainerId(self.next_id);
        self.instances.insert(
            id,
            Instance {
                pod_uid: spec.pod.uid.clone(),
                digest: artifact_digest.clone(),
                phase,
                log: LogBuffer::new(LOG_BYTES),
                sink,
                wake_at: None,
                io_wait: false,
                cpu_millis: c.resources.limits.cpu_millis,
                period_start: now,
                period_used: 0,
                cpu_total: 0,
            },
        );
        Ok(id)
    }

    fn state(&mut self, id: ContainerId) -> RuntimeState {
        let now = self.node.now();
        self.advance_fetching(now);
        match self.instances.get(&id).map(|i| &i.phase) {
            None => RuntimeState::Unknown,
            Some(Phase::Fetching { .. }) => RuntimeState::Creating,
            Some(Phase::Running(_)) => RuntimeState::Running,
            Some(Phase::Ended {
                exit_code,
                oom_killed,
            }) => RuntimeState::Exited {
                exit_code: *exit_code,
                oom_killed: *oom_killed,
            },
        }
    }

    fn stop(&mut self, id: ContainerId) {
        self.end(id, EXIT_TERMINATED, false);
    }

    fn kill(&mut self, id: ContainerId) {
        self.end(id, EXIT_KILLED, false);
    }

    fn remove(&mut self, id: ContainerId) {
        self.instances.remove(&id);
        self.collect();
    }

    fn pod_ip(&mut self, pod_uid: &str) -> Option<String> {
        if self.addresses.network().is_none() {
            return self.node_ip.clone();
        }
        self.addresses.assign(pod_uid).map(|ip| ip.to_string())
    }

    fn update_pod_cidrs(&mut self, cidrs: &[String]) {
        // The plane validated `spec.podCIDRs`; one the node cannot use
        // leaves pods on the node's address.
        if self.addresses.set_cidrs(cidrs).is_ok()
            && let Some(net) = self.addresses.network()
        {
            self.node.pod_network(net);
        }
    }

    fn release_pod(&mut self, pod_uid: &str) {
        self.addresses.release(pod_uid);
    }

    fn usage(&mut self, id: ContainerId) -> Option<InstanceUsage> {
        let i = self.instances.get(&id)?;
        let memory = match &i.phase {
            Phase::Running(c) => c.memory_used(),
            Phase::Fetching { .. } | Phase::Ended { .. } => 0,
        };
        Some(InstanceUsage {
            cpu_ns: i.cpu_total,
            memory_bytes: memory as u64,
            log_bytes: i.log.held_bytes() as u64,
        })
    }

    fn node_usage(&mut self) -> Option<NodeUsage> {
        let mut u = self.node.usage()?;
        u.log_bytes = self
            .instances
            .values()
            .map(|i| i.log.held_bytes() as u64)
            .sum();
        Some(u)
    }
}

impl<N: NodeHost> LogSource for WasmRuntime<N> {
    fn log_buffer(&self, id: ContainerId) -> Option<&LogBuffer> {
        self.instances.get(&id).map(|i| &i.log)
    }
}

/// The node's runtime: wasm containers, plus the built-in test runtime for
/// unresolved `skiff.dev/testrt` images (still labelled as a test runtime).
pub struct NodeRuntime<N: NodeHost> {
    pub wasm: WasmRuntime<N>,
    pub test: TestRuntime,
    /// Our ids → (is wasm, the inner runtime's id).
    ids: BTreeMap<ContainerId, (bool, ContainerId)>,
    next_id: u64,
}

impl<N: NodeHost> NodeRuntime<N> {
    pub fn new(wasm: WasmRuntime<N>, test: TestRuntime) -> Self {
        Self {
            wasm,
            test,
            ids: BTreeMap::new(),
            next_id: 0,
        }
    }

    /// Sets the test runtime's clock (the wasm side reads the node's).
    pub fn set_now(&mut self, now: Nanos) {
        self.test.now = now;
    }

    /// When the test runtime next changes by itself.
    pub fn next_change(&self) -> Option<Nanos> {
        self.test.next_change()
    }

    fn inner(&self, id: ContainerId) -> Option<(bool, ContainerId)> {
        self.ids.get(&id).copied()
    }
}

fn is_testrt(image: &str) -> bool {
    image.split([':', '@']).next() == Some(testrt::IMAGE)
}

impl<N: NodeHost> Runtime for NodeRuntime<N> {
    fn start(&mut self, spec: &StartSpec<'_>) -> Result<ContainerId, StartError> {
        let image = &spec.container.image;
        let wasm = !(image.pull == ImagePull::Unresolved && is_testrt(&image.reference));
        let inner = if wasm {
            self.wasm.start(spec)?
        } else {
            self.test.start(spec)?
        };
        self.next_id += 1;
        let id = ContainerId(self.next_id);
        self.ids.insert(id, (wasm, inner));
        Ok(id)
    }

    fn state(&mut self, id: ContainerId) -> RuntimeState {
        match self.inner(id) {
            Some((true, i)) => self.wasm.state(i),
            Some((false, i)) => self.test.state(i),
            None => RuntimeState::Unknown,
        }
    }

    fn stop(&mut self, id: ContainerId) {
        match self.inner(id) {
            Some((true, i)) => self.wasm.stop(i),
            Some((false, i)) => self.test.stop(i),
            None => {}
        }
    }

    fn kill(&mut self, id: ContainerId) {
        match self.inner(id) {
            Some((true, i)) => self.wasm.kill(i),
            Some((false, i)) => self.test.kill(i),
            None => {}
        }
    }

    fn remove(&mut self, id: ContainerId) {
        match self.ids.remove(&id) {
            Some((true, i)) => self.wasm.remove(i),
            Some((false, i)) => self.test.remove(i),
            None => {}
        }
    }

    fn pod_ip(&mut self, pod_uid: &str) -> Option<String> {
        self.wasm.pod_ip(pod_uid)
    }

    fn update_pod_cidrs(&mut self, cidrs: &[String]) {
        self.wasm.update_pod_cidrs(cidrs);
    }

    fn release_pod(&mut self, pod_uid: &str) {
        self.wasm.release_pod(pod_uid);
    }

    /// Wasm instances are measured; the test runtime's are not.
    fn usage(&mut self, id: ContainerId) -> Option<InstanceUsage> {
        match self.inner(id)? {
            (true, i) => self.wasm.usage(i),
            (false, _) => None,
        }
    }

    fn node_usage(&mut self) -> Option<NodeUsage> {
        self.wasm.node_usage()
    }
}

impl<N: NodeHost> LogSource for NodeRuntime<N> {
    fn log_buffer(&self, id: ContainerId) -> Option<&LogBuffer> {
        match self.inner(id)? {
            (true, i) => self.wasm.log_buffer(i),
            (false, i) => self.test.log_buffer(i),
        }
    }
}

/// A container's UDP containerPorts.
fn udp_ports(c: &skiff_node_proto::Container) -> Vec<u16> {
    c.ports
        .iter()
        .filter(|p| p.protocol == Protocol::Udp)
        .map(|p| p.container_port)
        .collect()
}
