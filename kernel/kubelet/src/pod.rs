//! One pod's sync: the per-pod state machine.
//!
//! Kubernetes semantics implemented here (kubelet `kuberuntime` + `status`):
//! - **Init containers** run one at a time, in order; each must exit 0 before
//!   the next starts. A failed one is restarted with back-off unless the
//!   restart policy is `Never`, which fails the pod. App containers wait as
//!   `PodInitializing` meanwhile.
//! - **Restart policy** decides at each exit: `Always` restarts, `OnFailure`
//!   restarts on a non-zero exit, `Never` doesn't. Restarts go through the
//!   CrashLoopBackOff [`crate::backoff`]; while waiting the container is
//!   `Waiting{CrashLoopBackOff}` with the previous exit in `lastState`.
//! - **Phase** is Kubernetes' `getPhase`: any container never yet started →
//!   Pending; any running → Running; all stopped → Running (`Always`, or
//!   `OnFailure` with failures, since they restart), Succeeded (all exit 0),
//!   else Failed. Succeeded/Failed are latched: nothing restarts afterwards.
//! - **Probes**: a startup probe gates liveness and readiness; liveness or
//!   startup failure (`failureThreshold` consecutive) stops the container
//!   with the probe's or the pod's grace period, and the restart policy
//!   applies to the exit; readiness sets `ready`. Thresholds count
//!   consecutive results; a probe pending past its timeout fails.
//! - **Termination** (deleted, removed from the desired set, or
//!   `activeDeadlineSeconds`): every instance is asked to stop, and killed
//!   when its grace period runs out; nothing restarts. A deleted pod ends
//!   Succeeded if every container exited 0, else Failed; a removed pod is
//!   forgotten once stopped.
//! - **Conditions**: PodScheduled, Initialized (`ContainersNotInitialized`),
//!   ContainersReady and Ready (`ContainersNotReady`, or `PodCompleted` once
//!   Succeeded), each with its last transition time.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use skiff_node_proto::{
    ConditionStatus, Container, ContainerState, ContainerStatus, Event, EventType, ImagePull,
    NodeToPlane, ObjectRef, PodCondition, PodConditionType, PodPhase, PodSpec, PodStatus, Probe,
    RestartPolicy,
};

use crate::env::{self, ConfigStore, PodContext, VolumeContent};
use crate::{
    Backoff, Config, ContainerId, MILLI, Nanos, ProbeId, ProbeKind, ProbeResult, ProbeTarget,
    Prober, Runtime, RuntimeState, SEC, StartSpec, Wake,
};

/// Shared inputs of one tick.
#[derive(Debug)]
pub struct SyncCtx<'a> {
    pub now: Nanos,
    pub config: &'a Config,
    pub configs: &'a ConfigStore,
    pub next_probe_id: &'a mut u64,
}

impl SyncCtx<'_> {
    fn wall(&self, t: Nanos) -> u64 {
        self.config.boot_wall_ms + t / MILLI
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Termination {
    exit_code: i32,
    reason: String,
    message: Option<String>,
    started_at: Option<Nanos>,
    finished_at: Nanos,
}

#[derive(Debug, Clone, Copy)]
struct Stopping {
    deadline: Nanos,
    killed: bool,
}

#[derive(Debug)]
struct Instance {
    id: ContainerId,
    running_since: Option<Nanos>,
    stopping: Option<Stopping>,
}

#[derive(Debug, Default)]
struct ProbeRt {
    next_at: Nanos,
    in_flight: Option<(ProbeId, Nanos)>,
    successes: u32,
    failures: u32,
    /// The probe's current verdict (readiness starts false, liveness true).
    ok: bool,
}

#[derive(Debug)]
struct Ctr {
    name: String,
    instance: Option<Instance>,
    /// The latest termination and the one before it.
    last: Option<Termination>,
    prev: Option<Termination>,
    /// The exited instance kept for `logs --previous`.
    dead: Option<ContainerId>,
    restart_count: u32,
    backoff: Backoff,
    /// Why it isn't running, when it has no instance and isn't done.
    waiting: Option<(String, Option<String>)>,
    /// Exited and will not run again.
    done: bool,
    started: bool,
    readiness: Option<ProbeRt>,
    liveness: Option<ProbeRt>,
    startup: Option<ProbeRt>,
    /// Probe ids are only meaningful to the prober; reset per instance.
    probes_armed: bool,
}

impl Ctr {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            instance: None,
            last: None,
            prev: None,
            dead: None,
            restart_count: 0,
            backoff: Backoff::default(),
            waiting: None,
            done: false,
            started: false,
            readiness: None,
            liveness: None,
            startup: None,
            probes_armed: false,
        }
    }

    fn running(&self) -> bool {
        self.instance
            .as_ref()
            .is_some_and(|i| i.running_since.is_some())
    }

    fn succeeded(&self) -> bool {
        self.done && self.last.as_ref().is_some_and(|t| t.exit_code == 0)
    }

    fn ready(&self) -> bool {
        self.running()
            && self.started
            && self.instance.as_ref().is_some_and(|i| i.stopping.is_none())
            && self.readiness.as_ref().is_none_or(|p| p.ok)
    }

    fn cancel_probes<P: Prober>(&mut self, prober: &mut P) {
        for p in [&mut self.readiness, &mut self.liveness, &mut self.startup]
            .into_iter()
            .flatten()
        {
            if let Some((id, _)) = p.in_flight.take() {
                prober.cancel(id);
            }
        }
        self.readiness = None;
        self.liveness = None;
        self.startup = None;
        self.probes_armed = false;
        self.started = false;
    }
}

/// Why the pod is being torn down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Teardown {
    /// Left the desired set: forget once stopped.
    Removed,
    /// `deletionTimestamp` set: report the final status.
    Deleted,
    /// `activeDeadlineSeconds` passed: Failed/DeadlineExceeded.
    Deadline,
}

/// One pod on this node.
#[derive(Debug)]
pub struct PodState {
    spec: PodSpec,
    is_static: bool,
    removed: bool,
    teardown: Option<Teardown>,
    start_time: Option<Nanos>,
    init: Vec<Ctr>,
    containers: Vec<Ctr>,
    init_done: bool,
    terminal: Option<PodPhase>,
    /// (status, reason, last transition) per [`COND_ORDER`] entry.
    conditions: [Option<(ConditionStatus, Option<String>, Nanos)>; 4],
    pod_ip: Option<String>,
    last_sent: Option<PodStatus>,
    finished: bool,
}

const COND_ORDER: [PodConditionType; 4] = [
    PodConditionType::PodScheduled,
    PodConditionType::Initialized,
    PodConditionType::ContainersReady,
    PodConditionType::Ready,
];

fn names(list: &[Container]) -> Vec<&str> {
    list.iter().map(|c| c.name.as_str()).collect()
}

impl PodState {
    pub fn new(spec: PodSpec, is_static: bool) -> Self {
        let init = spec
            .init_containers
            .iter()
            .map(|c| Ctr::new(&c.name))
            .collect();
        let containers = spec.containers.iter().map(|c| Ctr::new(&c.name)).collect();
        Self {
            init_done: spec.init_containers.is_empty(),
            spec,
            is_static,
            removed: false,
            teardown: None,
            start_time: None,
            init,
            containers,
            terminal: None,
            conditions: Default::default(),
            pod_ip: None,
            last_sent: None,
            finished: false,
        }
    }

    pub fn spec(&self) -> &PodSpec {
        &self.spec
    }
    pub fn is_static(&self) -> bool {
        self.is_static
    }
    /// Removed and fully stopped: the kubelet forgets it.
    pub fn is_finished(&self) -> bool {
        self.finished
    }
    /// The last status emitted.
    pub fn status(&self) -> Option<&PodStatus> {
        self.last_sent.as_ref()
    }

    /// A new version of the spec. Kubernetes pod specs are immutable apart
    /// from deletion fields and images; an update that changes the container
    /// lists is ignored except for its deletion fields. A new image is used
    /// from the container's next start.
    pub fn update_spec(&mut self, spec: PodSpec) {
        if names(&spec.containers) == names(&self.spec.containers)
            && names(&spec.init_containers) == names(&self.spec.init_containers)
        {
            self.spec = spec;
        } else {
            self.spec.deletion_grace_period_secs = spec.deletion_grace_period_secs;
        }
    }

    /// The instance `kubectl logs` reads: the current one (or the last
    /// exited one if none runs); with `previous`, the exited one before the
    /// current instance. One exited instance is kept per container, so
    /// `previous` of a container that isn't running has nothing.
    pub fn log_instance(&self, container: &str, previous: bool) -> Option<ContainerId> {
        let c = self
            .init
            .iter()
            .chain(&self.containers)
            .find(|c| c.name == container)?;
        match (&c.instance, previous) {
            (Some(i), false) => Some(i.id),
            (None, false) | (Some(_), true) => c.dead,
            (None, true) => None,
        }
    }

    /// The running instances: container name, runtime id, running since.
    pub fn running_instances(&self) -> impl Iterator<Item = (&str, ContainerId, Nanos)> {
        self.init.iter().chain(&self.containers).filter_map(|c| {
            let i = c.instance.as_ref()?;
            Some((c.name.as_str(), i.id, i.running_since?))
        })
    }

    pub fn mark_removed(&mut self) {
        self.removed = true;
    }

    pub fn is_removed(&self) -> bool {
        self.removed
    }

    /// Frees kept instances when the pod is forgotten.
    pub fn release<R: Runtime>(self, rt: &mut R) {
        for c in self.init.iter().chain(&self.containers) {
            if let Some(id) = c.dead {
                rt.remove(id);
            }
        }
    }

    fn pod_ref(&self, container: Option<&str>, init: bool) -> ObjectRef {
        ObjectRef::Pod {
            namespace: self.spec.namespace.clone(),
            name: self.spec.name.clone(),
            uid: self.spec.uid.clone(),
            field_path: container.map(|c| {
                let list = if init { "initContainers" } else { "containers" };
                format!("spec.{list}{{{c}}}")
            }),
        }
    }

    fn event(
        &self,
        ctx: &SyncCtx<'_>,
        out: &mut Vec<NodeToPlane>,
        c: Option<(&str, bool)>,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        let t = ctx.wall(ctx.now);
        out.push(NodeToPlane::Event(Event {
            object: self.pod_ref(c.map(|c| c.0), c.is_some_and(|c| c.1)),
            kind,
            reason: reason.to_string(),
            message,
            count: 1,
            first_timestamp: t,
            last_timestamp: t,
        }));
    }

    fn pod_desc(&self) -> String {
        format!(
            "{}_{}({})",
            self.spec.name, self.spec.namespace, self.spec.uid
        )
    }

    /// One sync of this pod at `ctx.now`.
    pub fn sync<R: Runtime, P: Prober>(
        &mut self,
        ctx: &mut SyncCtx<'_>,
        rt: &mut R,
        prober: &mut P,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) {
        let now = ctx.now;
        if self.finished {
            return;
        }
        let start = *self.start_time.get_or_insert(now);
        if self.pod_ip.is_none() {
            self.pod_ip = rt.pod_ip(&self.spec.uid);
        }

        // Why to tear down, most specific first.
        if self.teardown.is_none() {
            let deadline = self
                .spec
                .active_deadline_secs
                .map(|d| start.saturating_add(d.saturating_mul(SEC)));
            let reason = if self.removed {
                Some(Teardown::Removed)
            } else if self.spec.deletion_grace_period_secs.is_some() {
                Some(Teardown::Deleted)
            } else if deadline.is_some_and(|d| now >= d) && self.terminal.is_none() {
                Some(Teardown::Deadline)
            } else {
                if self.terminal.is_none() {
                    wake.at(deadline);
                }
                None
            };
            if let Some(reason) = reason {
                self.begin_teardown(reason, ctx, rt, prober, out);
            }
        } else if self.removed && self.teardown != Some(Teardown::Removed) {
            self.teardown = Some(Teardown::Removed);
        }

        self.poll_instances(ctx, rt, prober, out);

        if self.teardown.is_some() {
            self.drive_stops(now, rt, wake);
            let any_live = self
                .init
                .iter()
                .chain(&self.containers)
                .any(|c| c.instance.is_some());
            if !any_live {
                match self.teardown {
                    Some(Teardown::Removed) => {
                        self.finished = true;
                        return;
                    }
                    Some(Teardown::Deleted) if self.terminal.is_none() => {
                        // Terminal phase on deletion (KEP-3329 behaviour):
                        // Succeeded only if every container exited 0.
                        let all_ok = self.init_done
                            && self
                                .containers
                                .iter()
                                .all(|c| c.last.as_ref().is_some_and(|t| t.exit_code == 0));
                        self.terminal = Some(if all_ok {
                            PodPhase::Succeeded
                        } else {
                            PodPhase::Failed
                        });
                    }
                    Some(Teardown::Deadline) => self.terminal = Some(PodPhase::Failed),
                    _ => {}
                }
            }
        } else if self.terminal.is_none() {
            if !self.init_done {
                self.sync_init(ctx, rt, out, wake);
            }
            if self.init_done {
                for i in 0..self.containers.len() {
                    self.sync_container(i, ctx, rt, prober, out, wake);
                }
            }
            self.drive_stops(now, rt, wake);
            let phase = self.compute_phase();
            if matches!(phase, PodPhase::Succeeded | PodPhase::Failed) {
                self.terminal = Some(phase);
                for c in self.containers.iter_mut().chain(&mut self.init) {
                    c.cancel_probes(prober);
                    if c.instance.is_none() {
                        c.done = true;
                        c.waiting = None;
                    }
                }
            }
        }

        let status = self.build_status(ctx);
        if self.last_sent.as_ref() != Some(&status) {
            out.push(NodeToPlane::PodStatus(status.clone()));
            self.last_sent = Some(status);
        }
    }

    fn begin_teardown<R: Runtime, P: Prober>(
        &mut self,
        why: Teardown,
        ctx: &SyncCtx<'_>,
        rt: &mut R,
        prober: &mut P,
        out: &mut Vec<NodeToPlane>,
    ) {
        self.teardown = Some(why);
        let grace = match why {
            Teardown::Deleted => self
                .spec
                .deletion_grace_period_secs
                .unwrap_or(self.spec.termination_grace_period_secs),
            _ => self.spec.termination_grace_period_secs,
        }
        .saturating_mul(SEC); // wire values are untrusted: never overflow
        if why == Teardown::Deadline {
            self.event(
                ctx,
                out,
                None,
                EventType::Normal,
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline".into(),
            );
        }
        let mut stopping = Vec::new();
        for (init, c) in self.all_ctrs_mut() {
            c.cancel_probes(prober);
            c.waiting = None;
            if let Some(inst) = c.instance.as_mut() {
                if inst.stopping.is_none() {
                    inst.stopping = Some(Stopping {
                        deadline: ctx.now.saturating_add(grace),
                        killed: false,
                    });
                    rt.stop(inst.id);
                    stopping.push((c.name.clone(), init));
                }
            } else {
                c.done = true;
            }
        }
        for (name, init) in stopping {
            self.event(
                ctx,
                out,
                Some((&name, init)),
                EventType::Normal,
                "Killing",
                format!("Stopping container {name}"),
            );
        }
    }

    /// Kills instances whose grace period ran out.
    fn drive_stops<R: Runtime>(&mut self, now: Nanos, rt: &mut R, wake: &mut Wake) {
        for c in self.init.iter_mut().chain(&mut self.containers) {
            if let Some(inst) = c.instance.as_mut()
                && let Some(s) = inst.stopping.as_mut()
                && !s.killed
            {
                if now >= s.deadline {
                    rt.kill(inst.id);
                    s.killed = true;
                } else {
                    wake.at(Some(s.deadline));
                }
            }
        }
    }

    /// Reads every live instance's state from the runtime; records exits.
    fn poll_instances<R: Runtime, P: Prober>(
        &mut self,
        ctx: &SyncCtx<'_>,
        rt: &mut R,
        prober: &mut P,
        out: &mut Vec<NodeToPlane>,
    ) {
        let now = ctx.now;
        let policy = self.spec.restart_policy;
        let tearing_down = self.teardown.is_some();
        let mut events = Vec::new();
        for (init, c) in self.all_ctrs_mut() {
            let Some(inst) = c.instance.as_mut() else {
                continue;
            };
            match rt.state(inst.id) {
                RuntimeState::Creating => {}
                RuntimeState::Running => {
                    if inst.running_since.is_none() {
                        inst.running_since = Some(now);
                        events.push((
                            c.name.clone(),
                            init,
                            EventType::Normal,
                            "Started",
                            format!("Started container {}", c.name),
                        ));
                    }
                }
                st @ (RuntimeState::Exited { .. } | RuntimeState::Unknown) => {
                    let (exit_code, reason) = match st {
                        RuntimeState::Exited {
                            exit_code,
                            oom_killed: true,
                        } => (exit_code, "OOMKilled"),
                        RuntimeState::Exited { exit_code: 0, .. } => (0, "Completed"),
                        RuntimeState::Exited { exit_code, .. } => (exit_code, "Error"),
                        _ => (137, "ContainerStatusUnknown"),
                    };
                    let inst = c.instance.take().expect("checked above");
                    if let Some(old) = c.dead.replace(inst.id) {
                        rt.remove(old);
                    }
                    c.cancel_probes(prober);
                    let t = Termination {
                        exit_code,
                        reason: reason.to_string(),
                        message: None,
                        started_at: inst.running_since,
                        finished_at: now,
                    };
                    c.prev = c.last.replace(t);
                    // The restart decision, made once at exit.
                    c.done = tearing_down
                        || if init {
                            exit_code == 0 || policy == RestartPolicy::Never
                        } else {
                            match policy {
                                RestartPolicy::Always => false,
                                RestartPolicy::OnFailure => exit_code == 0,
                                RestartPolicy::Never => true,
                            }
                        };
                }
            }
        }
        for (name, init, kind, reason, msg) in events {
            self.event(ctx, out, Some((&name, init)), kind, reason, msg);
        }
    }

    fn sync_init<R: Runtime>(
        &mut self,
        ctx: &mut SyncCtx<'_>,
        rt: &mut R,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) {
        let Some(i) = self.init.iter().position(|c| !c.succeeded()) else {
            self.init_done = true;
            return;
        };
        let c = &self.init[i];
        // Running, or failed for good (Never: the phase says Failed).
        if c.instance.is_none() && !c.done {
            self.try_start(true, i, ctx, rt, out, wake);
        }
    }

    fn sync_container<R: Runtime, P: Prober>(
        &mut self,
        i: usize,
        ctx: &mut SyncCtx<'_>,
        rt: &mut R,
        prober: &mut P,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) {
        let c = &self.containers[i];
        if c.done {
            return;
        }
        if c.instance.is_none() {
            self.try_start(false, i, ctx, rt, out, wake);
        }
        if self.containers[i].running() {
            self.run_probes(i, ctx, prober, rt, out, wake);
        }
    }

    fn ctr(&mut self, init: bool, i: usize) -> &mut Ctr {
        if init {
            &mut self.init[i]
        } else {
            &mut self.containers[i]
        }
    }

    /// Every container, init containers first, with whether it is one.
    fn all_ctrs_mut(&mut self) -> impl Iterator<Item = (bool, &mut Ctr)> {
        let init = self.init.iter_mut().map(|c| (true, c));
        init.chain(self.containers.iter_mut().map(|c| (false, c)))
    }

    /// Holds a container waiting with `reason`; a Warning `Failed` event
    /// when the reason or detail is new, not on every retry.
    fn hold_waiting(
        &mut self,
        init: bool,
        i: usize,
        reason: &str,
        detail: String,
        ctx: &SyncCtx<'_>,
        out: &mut Vec<NodeToPlane>,
    ) {
        let c = self.ctr(init, i);
        let name = c.name.clone();
        let new = c
            .waiting
            .as_ref()
            .is_none_or(|w| w.0 != reason || w.1.as_ref() != Some(&detail));
        let message = format!("Error: {detail}");
        c.waiting = Some((reason.into(), Some(detail)));
        if new {
            let c = Some((name.as_str(), init));
            self.event(ctx, out, c, EventType::Warning, "Failed", message);
        }
    }

    fn container_spec(&self, init: bool, i: usize) -> &Container {
        if init {
            &self.spec.init_containers[i]
        } else {
            &self.spec.containers[i]
        }
    }

    /// Starts (or restarts, after back-off) container `i`. Each step may
    /// leave it waiting instead, saying why (and asking to be woken).
    fn try_start<R: Runtime>(
        &mut self,
        init: bool,
        i: usize,
        ctx: &mut SyncCtx<'_>,
        rt: &mut R,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) {
        if self.backing_off(init, i, ctx, out, wake) || !self.image_ready(init, i, ctx, out) {
            return;
        }
        let Some(env) = self.resolve_env(init, i, ctx, out, wake) else {
            return;
        };
        let Some(volumes) = self.project_volumes(init, i, ctx, out, wake) else {
            return;
        };
        self.start_instance(init, i, env, volumes, ctx, rt, out, wake);
    }

    /// After a termination: whether the CrashLoop back-off still holds the
    /// container (it then waits in `CrashLoopBackOff`).
    fn backing_off(
        &mut self,
        init: bool,
        i: usize,
        ctx: &mut SyncCtx<'_>,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) -> bool {
        let now = ctx.now;
        let policy = ctx.config.backoff;
        let desc = self.pod_desc();
        let c = self.ctr(init, i);
        let Some(last) = &c.last else {
            return false;
        };
        let ready_at = c.backoff.ready_at(&policy, last.finished_at);
        if now >= ready_at {
            return false;
        }
        let delay = c.backoff.delay().unwrap_or(0) / SEC;
        let msg = format!(
            "back-off {delay}s restarting failed container={} pod={desc}",
            c.name
        );
        if c.waiting.as_ref().is_none_or(|w| w.0 != "CrashLoopBackOff") {
            let ev = format!(
                "Back-off restarting failed container {} in pod {desc}",
                c.name
            );
            let name = c.name.clone();
            c.waiting = Some(("CrashLoopBackOff".into(), Some(msg)));
            self.event(
                ctx,
                out,
                Some((&name, init)),
                EventType::Warning,
                "BackOff",
                ev,
            );
        } else {
            c.waiting = Some(("CrashLoopBackOff".into(), Some(msg)));
        }
        wake.at(Some(ready_at));
        true
    }

    /// Whether the plane has the container's image; otherwise it waits
    /// (the plane sends the pod again when the pull state changes).
    fn image_ready(
        &mut self,
        init: bool,
        i: usize,
        ctx: &mut SyncCtx<'_>,
        out: &mut Vec<NodeToPlane>,
    ) -> bool {
        let image = self.container_spec(init, i).image.clone();
        let c = self.ctr(init, i);
        match &image.pull {
            ImagePull::Pulling => {
                c.waiting = Some(("ContainerCreating".into(), None));
                false
            }
            ImagePull::Failed { reason, message } => {
                let first = c.waiting.as_ref().is_none_or(|w| w.0 != *reason);
                c.waiting = Some((reason.clone(), Some(message.clone())));
                if first {
                    let name = c.name.clone();
                    let reference = &image.reference;
                    let (ev_reason, ev) = if reason == "ImagePullBackOff" {
                        ("BackOff", format!("Back-off pulling image \"{reference}\""))
                    } else {
                        (
                            "Failed",
                            format!("Failed to pull image \"{reference}\": {message}"),
                        )
                    };
                    self.event(
                        ctx,
                        out,
                        Some((&name, init)),
                        EventType::Warning,
                        ev_reason,
                        ev,
                    );
                }
                false
            }
            ImagePull::Unresolved | ImagePull::Ready { .. } => true,
        }
    }

    fn pod_context<'a>(&'a self, ctx: &'a SyncCtx<'_>) -> PodContext<'a> {
        PodContext {
            node_name: &ctx.config.node_name,
            host_ip: ctx.config.host_ip.as_deref(),
            pod_ip: self.pod_ip.as_deref(),
            allocatable: &ctx.config.allocatable,
        }
    }

    /// The container's environment; `None` while a referenced ConfigMap or
    /// Secret key is missing (waiting `CreateContainerConfigError`).
    fn resolve_env(
        &mut self,
        init: bool,
        i: usize,
        ctx: &mut SyncCtx<'_>,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) -> Option<Vec<(String, String)>> {
        let resolved = env::resolve(
            &self.spec,
            self.container_spec(init, i),
            ctx.configs,
            &self.pod_context(ctx),
        );
        let msg = match resolved {
            Ok(env) => return Some(env),
            Err(msg) => msg,
        };
        self.hold_waiting(init, i, "CreateContainerConfigError", msg, ctx, out);
        // Retried when config data arrives (the driver ticks) or soon.
        wake.at(Some(ctx.now + SEC));
        None
    }

    /// The pod's volumes with their content; `None` while a source is
    /// missing (Kubernetes keeps the container ContainerCreating and
    /// reports FailedMount until it appears).
    fn project_volumes(
        &mut self,
        init: bool,
        i: usize,
        ctx: &mut SyncCtx<'_>,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) -> Option<Vec<(String, VolumeContent)>> {
        let mut volumes = Vec::new();
        let mut failed = None;
        {
            let pctx = self.pod_context(ctx);
            for v in &self.spec.volumes {
                match env::project_volume(&self.spec, v, ctx.configs, &pctx) {
                    Ok(content) => volumes.push((v.name.clone(), content)),
                    Err(msg) => {
                        failed = Some((v.name.clone(), msg));
                        break;
                    }
                }
            }
        }
        let Some((volume, msg)) = failed else {
            return Some(volumes);
        };
        let c = self.ctr(init, i);
        let first = c
            .waiting
            .as_ref()
            .is_none_or(|w| w.1.as_deref() != Some(msg.as_str()));
        c.waiting = Some(("ContainerCreating".into(), Some(msg.clone())));
        if first {
            let m = format!("MountVolume.SetUp failed for volume \"{volume}\" : {msg}");
            self.event(ctx, out, None, EventType::Warning, "FailedMount", m);
        }
        wake.at(Some(ctx.now + SEC));
        None
    }

    /// Asks the runtime for an instance and records what came of it: a
    /// running (or creating) instance, a wait ([`crate::StartError::waiting_reason`])
    /// or a StartError termination.
    #[allow(clippy::too_many_arguments)]
    fn start_instance<R: Runtime>(
        &mut self,
        init: bool,
        i: usize,
        env: Vec<(String, String)>,
        volumes: Vec<(String, VolumeContent)>,
        ctx: &mut SyncCtx<'_>,
        rt: &mut R,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) {
        let now = ctx.now;
        let policy = ctx.config.backoff;
        let c = self.ctr(init, i);
        // A restart counts once the runtime takes the attempt (an instance
        // or a StartError), not while it waits for an image or a spec fix.
        let restart = c.last.as_ref().map(|last| last.finished_at);
        let attempt = c.restart_count + u32::from(restart.is_some());
        let name = c.name.clone();
        let started = rt.start(&StartSpec {
            pod: &self.spec,
            container: self.container_spec(init, i),
            init,
            env,
            attempt,
            volumes,
        });
        if let Err(e) = &started
            && let Some(reason) = e.waiting_reason()
        {
            self.hold_waiting(init, i, reason, e.detail().into(), ctx, out);
            // Retried soon: the plane resends the pod when its image changes.
            wake.at(Some(now + SEC));
            return;
        }
        let c = self.ctr(init, i);
        if let Some(finished_at) = restart {
            c.backoff.next(&policy, finished_at);
            c.restart_count += 1;
        }
        match started {
            Ok(id) => {
                // A runtime that starts synchronously is Running at once:
                // note it now so probes and timestamps don't lag a tick.
                let running = rt.state(id) == RuntimeState::Running;
                let c = self.ctr(init, i);
                c.instance = Some(Instance {
                    id,
                    running_since: running.then_some(now),
                    stopping: None,
                });
                c.waiting = None;
                if running {
                    self.event(
                        ctx,
                        out,
                        Some((&name, init)),
                        EventType::Normal,
                        "Started",
                        format!("Started container {name}"),
                    );
                }
            }
            Err(e) => {
                // containerd's convention: a start failure is a termination
                // with exit code 128 and reason StartError.
                let never = self.spec.restart_policy == RestartPolicy::Never;
                let c = self.ctr(init, i);
                let t = Termination {
                    exit_code: 128,
                    reason: "StartError".into(),
                    message: Some(e.detail().into()),
                    started_at: None,
                    finished_at: now,
                };
                c.prev = c.last.replace(t);
                c.waiting = None;
                // 128 is a failure: only `Never` stops here (init or not).
                c.done = never;
                self.event(
                    ctx,
                    out,
                    Some((&name, init)),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {e}"),
                );
                wake.at(Some(now));
            }
        }
    }

    fn run_probes<R: Runtime, P: Prober>(
        &mut self,
        i: usize,
        ctx: &mut SyncCtx<'_>,
        prober: &mut P,
        rt: &mut R,
        out: &mut Vec<NodeToPlane>,
        wake: &mut Wake,
    ) {
        let now = ctx.now;
        let spec = &self.spec.containers[i];
        let c = &mut self.containers[i];
        let Some(inst) = c.instance.as_ref() else {
            return;
        };
        if inst.stopping.is_some() {
            return;
        }
        let since = inst.running_since.unwrap_or(now);
        let arm = |p: &Option<Probe>, ok: bool| {
            p.as_ref().map(|p| ProbeRt {
                next_at: since + u64::from(p.initial_delay_secs) * SEC,
                ok,
                ..Default::default()
            })
        };
        if !c.probes_armed {
            c.startup = arm(&spec.startup_probe, false);
            c.liveness = arm(&spec.liveness_probe, true);
            c.readiness = arm(&spec.readiness_probe, false);
            c.started = c.startup.is_none();
            c.probes_armed = true;
        }
        let mut kill: Option<(ProbeKind, Option<u64>)> = None;
        let mut events: Vec<(&'static str, String)> = Vec::new();
        let pod_ip = self.pod_ip.as_deref();
        let kinds: [(ProbeKind, &Option<Probe>); 3] = [
            (ProbeKind::Startup, &spec.startup_probe),
            (ProbeKind::Liveness, &spec.liveness_probe),
            (ProbeKind::Readiness, &spec.readiness_probe),
        ];
        for (kind, probe) in kinds {
            let Some(probe) = probe else { continue };
            if kind != ProbeKind::Startup && !c.started {
                continue;
            }
            if kind == ProbeKind::Startup && c.started {
                continue;
            }
            let rt_slot = match kind {
                ProbeKind::Startup => &mut c.startup,
                ProbeKind::Liveness => &mut c.liveness,
                ProbeKind::Readiness => &mut c.readiness,
            };
            let Some(pr) = rt_slot.as_mut() else { continue };
            if kind != ProbeKind::Startup && pr.next_at < since {
                pr.next_at = since;
            }
            let timeout = u64::from(probe.timeout_secs.max(1)) * SEC;
            if pr.in_flight.is_none() && now >= pr.next_at {
                let id = ProbeId(*ctx.next_probe_id);
                *ctx.next_probe_id += 1;
                let target = ProbeTarget {
                    pod_uid: &self.spec.uid,
                    pod_ip,
                    container: &c.name,
                    kind,
                    handler: &probe.handler,
                    timeout,
                };
                prober.start(id, &target);
                pr.in_flight = Some((id, now));
                pr.next_at = now + u64::from(probe.period_secs.max(1)) * SEC;
            }
            let mut result = None;
            if let Some((id, t0)) = pr.in_flight {
                if let Some(r) = prober.poll(id) {
                    result = Some(r);
                } else if now >= t0 + timeout {
                    prober.cancel(id);
                    result = Some(ProbeResult::Failure(format!(
                        "timeout: probe did not answer within {}s",
                        timeout / SEC
                    )));
                } else {
                    wake.at(Some(t0 + timeout));
                }
                if result.is_some() {
                    pr.in_flight = None;
                }
            }
            wake.at(Some(pr.next_at));
            let Some(result) = result else { continue };
            let label = match kind {
                ProbeKind::Startup => "Startup",
                ProbeKind::Liveness => "Liveness",
                ProbeKind::Readiness => "Readiness",
            };
            match result {
                ProbeResult::Success => {
                    pr.failures = 0;
                    pr.successes += 1;
                    if pr.successes >= probe.success_threshold.max(1) {
                        pr.ok = true;
                    }
                }
                ProbeResult::Failure(msg) => {
                    pr.successes = 0;
                    pr.failures += 1;
                    events.push(("Unhealthy", format!("{label} probe failed: {msg}")));
                    if pr.failures >= probe.failure_threshold.max(1) {
                        pr.ok = false;
                    }
                }
            }
            match kind {
                ProbeKind::Startup if pr.ok => {
                    c.started = true;
                    // Liveness/readiness start now, not before: keep their
                    // initial delays relative to the container start.
                    for p in [&mut c.liveness, &mut c.readiness].into_iter().flatten() {
                        p.next_at = p.next_at.max(now);
                    }
                }
                ProbeKind::Startup | ProbeKind::Liveness
                    if !pr.ok && pr.failures >= probe.failure_threshold.max(1) =>
                {
                    kill = Some((kind, probe.termination_grace_period_secs));
                    break;
                }
                _ => {}
            }
        }
        let name = c.name.clone();
        for (reason, msg) in events {
            self.event(
                ctx,
                out,
                Some((&name, false)),
                EventType::Warning,
                reason,
                msg,
            );
        }
        if let Some((kind, probe_grace)) = kill {
            let grace = probe_grace
                .unwrap_or(self.spec.termination_grace_period_secs)
                .saturating_mul(SEC);
            let c = &mut self.containers[i];
            c.cancel_probes(prober);
            if let Some(inst) = c.instance.as_mut() {
                inst.stopping = Some(Stopping {
                    deadline: now.saturating_add(grace),
                    killed: false,
                });
                rt.stop(inst.id);
            }
            let what = if kind == ProbeKind::Startup {
                "startup"
            } else {
                "liveness"
            };
            self.event(
                ctx,
                out,
                Some((&name, false)),
                EventType::Normal,
                "Killing",
                format!("Container {name} failed {what} probe, will be restarted"),
            );
        }
    }

    /// Kubernetes' `getPhase` (see the module docs).
    fn compute_phase(&self) -> PodPhase {
        if let Some(p) = self.terminal {
            return p;
        }
        if !self.init_done {
            let failed = self.init.iter().any(|c| c.done && !c.succeeded());
            return if failed {
                PodPhase::Failed
            } else {
                PodPhase::Pending
            };
        }
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in &self.containers {
            if c.running() {
                running += 1;
            } else if let Some(t) = &c.last {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            } else {
                waiting += 1;
            }
        }
        match self.spec.restart_policy {
            _ if waiting > 0 => PodPhase::Pending,
            _ if running > 0 => PodPhase::Running,
            _ if stopped == 0 => PodPhase::Pending,
            RestartPolicy::Always => PodPhase::Running,
            _ if stopped == succeeded => PodPhase::Succeeded,
            RestartPolicy::Never => PodPhase::Failed,
            RestartPolicy::OnFailure => PodPhase::Running,
        }
    }

    fn ctr_status(
        ctx: &SyncCtx<'_>,
        c: &Ctr,
        spec: &Container,
        init_pending: bool,
    ) -> ContainerStatus {
        let term = |t: &Termination| ContainerState::Terminated {
            exit_code: t.exit_code,
            reason: t.reason.clone(),
            message: t.message.clone(),
            started_at: t.started_at.map(|s| ctx.wall(s)),
            finished_at: ctx.wall(t.finished_at),
        };
        let (state, last_state) = match (&c.instance, &c.last) {
            (
                Some(Instance {
                    running_since: Some(s),
                    ..
                }),
                last,
            ) => (
                ContainerState::Running {
                    started_at: ctx.wall(*s),
                },
                last.as_ref().map(term),
            ),
            (Some(_), last) => (
                ContainerState::Waiting {
                    reason: "ContainerCreating".into(),
                    message: None,
                },
                last.as_ref().map(term),
            ),
            (None, Some(t)) if c.done => (term(t), c.prev.as_ref().map(term)),
            (None, last) => {
                let (reason, message) = c.waiting.clone().unwrap_or_else(|| {
                    let r = if init_pending {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    };
                    (r.into(), None)
                });
                (
                    ContainerState::Waiting { reason, message },
                    last.as_ref().map(term),
                )
            }
        };
        let id = c.instance.as_ref().map(|i| i.id).or(c.dead);
        ContainerStatus {
            name: c.name.clone(),
            state,
            last_state,
            ready: c.ready(),
            started: c.running() && c.started,
            restart_count: c.restart_count,
            image: spec.image.reference.clone(),
            image_id: match &spec.image.pull {
                ImagePull::Ready { image_id, .. } => image_id.clone(),
                _ => String::new(),
            },
            container_id: id.map(|i| format!("skiff://{}", i.0)).unwrap_or_default(),
        }
    }

    fn set_condition(
        &mut self,
        idx: usize,
        status: ConditionStatus,
        reason: Option<&str>,
        now: Nanos,
    ) {
        let changed = self.conditions[idx]
            .as_ref()
            .is_none_or(|(s, _, _)| *s != status);
        let since = if changed {
            now
        } else {
            self.conditions[idx].as_ref().map_or(now, |c| c.2)
        };
        self.conditions[idx] = Some((status, reason.map(String::from), since));
    }

    fn build_status(&mut self, ctx: &SyncCtx<'_>) -> PodStatus {
        let now = ctx.now;
        let phase = self.compute_phase();
        let completed = phase == PodPhase::Succeeded;
        use ConditionStatus::{False, True};
        self.set_condition(0, True, None, now);
        let unfinished_init: Vec<&str> = self
            .init
            .iter()
            .filter(|c| !c.succeeded())
            .map(|c| c.name.as_str())
            .collect();
        let init_msg = (!unfinished_init.is_empty()).then(|| {
            format!(
                "containers with incomplete status: [{}]",
                unfinished_init.join(" ")
            )
        });
        let unready: Vec<&str> = self
            .containers
            .iter()
            .filter(|c| !c.ready())
            .map(|c| c.name.as_str())
            .collect();
        let all_ready = unready.is_empty();
        let ready_msg = (!all_ready)
            .then(|| format!("containers with unready status: [{}]", unready.join(" ")));
        let (init_status, init_reason) = match () {
            _ if completed => (True, Some("PodCompleted")),
            _ if self.init_done => (True, None),
            _ => (False, Some("ContainersNotInitialized")),
        };
        let (ready_status, ready_reason) = match () {
            _ if completed => (False, Some("PodCompleted")),
            _ if all_ready => (True, None),
            _ => (False, Some("ContainersNotReady")),
        };
        self.set_condition(1, init_status, init_reason, now);
        self.set_condition(2, ready_status, ready_reason, now);
        self.set_condition(3, ready_status, ready_reason, now);
        let conditions = COND_ORDER
            .iter()
            .zip(&self.conditions)
            .filter_map(|(kind, c)| {
                let (status, reason, since) = c.as_ref()?;
                let message = match kind {
                    PodConditionType::Initialized if *status == False => init_msg.clone(),
                    PodConditionType::ContainersReady | PodConditionType::Ready
                        if *status == False && !completed =>
                    {
                        ready_msg.clone()
                    }
                    _ => None,
                };
                Some(PodCondition {
                    kind: *kind,
                    status: *status,
                    reason: reason.clone(),
                    message,
                    last_transition: ctx.wall(*since),
                })
            })
            .collect();
        let init_pending = !self.init_done;
        let (reason, message) = if self.teardown == Some(Teardown::Deadline) {
            (
                Some("DeadlineExceeded".into()),
                Some("Pod was active on the node longer than the specified deadline".into()),
            )
        } else {
            (None, None)
        };
        PodStatus {
            uid: self.spec.uid.clone(),
            namespace: self.spec.namespace.clone(),
            name: self.spec.name.clone(),
            phase,
            conditions,
            init_container_statuses: self
                .init
                .iter()
                .zip(&self.spec.init_containers)
                .map(|(c, s)| Self::ctr_status(ctx, c, s, true))
                .collect(),
            container_statuses: self
                .containers
                .iter()
                .zip(&self.spec.containers)
                .map(|(c, s)| Self::ctr_status(ctx, c, s, init_pending))
                .collect(),
            pod_ip: self.pod_ip.clone(),
            host_ip: ctx.config.host_ip.clone(),
            start_time: self.start_time.map(|t| ctx.wall(t)),
            reason,
            message,
        }
    }
}
