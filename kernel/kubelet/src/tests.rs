//! The kubelet state machine over a scripted runtime and prober, with a
//! virtual clock.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use skiff_node_proto::*;

use crate::*;

// ---------------------------------------------------------------------------
// Scripted runtime
// ---------------------------------------------------------------------------

/// How one container instance behaves.
#[derive(Debug, Clone, Copy)]
struct Behave {
    /// `Creating` for this long after start.
    create: Nanos,
    /// Exits with `code` after running this long (`None`: runs until stopped).
    run_for: Option<Nanos>,
    code: i32,
    oom: bool,
    /// Exits this long after `stop` with 143 (`None`: ignores it; only `kill` works).
    on_term: Option<Nanos>,
    /// `start` itself fails.
    fail_start: bool,
}

const FOREVER: Behave = Behave {
    create: 0,
    run_for: None,
    code: 0,
    oom: false,
    on_term: Some(0),
    fail_start: false,
};

fn exits(after_secs: u64, code: i32) -> Behave {
    Behave {
        run_for: Some(after_secs * SEC),
        code,
        ..FOREVER
    }
}

#[derive(Debug)]
struct Inst {
    name: String,
    b: Behave,
    created: Nanos,
    stopped: Option<Nanos>,
    killed: Option<Nanos>,
    removed: bool,
}

#[derive(Debug, Default)]
struct FakeRt {
    now: Nanos,
    next: u64,
    /// Per container name: behaviours for successive starts (the last repeats).
    scripts: BTreeMap<String, VecDeque<Behave>>,
    insts: BTreeMap<u64, Inst>,
    /// (time, "start main#attempt" | "stop main" | "kill main")
    log: Vec<(Nanos, String)>,
    envs: BTreeMap<String, Vec<(String, String)>>,
    volumes: BTreeMap<String, Vec<(String, VolumeContent)>>,
    /// Every start fails with this, when set.
    refuse: Option<StartError>,
    /// Pod CIDRs handed over, in order.
    cidrs: Vec<Vec<String>>,
    /// Pods whose sandbox was released, in order, with the number of
    /// instances (of any pod) not yet removed at that moment.
    released: Vec<String>,
}

impl FakeRt {
    fn script(&mut self, name: &str, bs: &[Behave]) {
        self.scripts
            .insert(name.into(), bs.iter().copied().collect());
    }
    fn starts(&self, name: &str) -> Vec<Nanos> {
        let p = alloc::format!("start {name}#");
        self.log
            .iter()
            .filter(|(_, s)| s.starts_with(&p))
            .map(|(t, _)| *t)
            .collect()
    }
    fn times(&self, what: &str) -> Vec<Nanos> {
        self.log
            .iter()
            .filter(|(_, s)| s == what)
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Runtime for FakeRt {
    fn start(&mut self, spec: &StartSpec<'_>) -> Result<ContainerId, StartError> {
        let name = spec.container.name.clone();
        let q = self.scripts.entry(name.clone()).or_default();
        let b = if q.len() > 1 {
            q.pop_front().unwrap()
        } else {
            q.front().copied().unwrap_or(FOREVER)
        };
        self.log
            .push((self.now, alloc::format!("start {name}#{}", spec.attempt)));
        self.envs.insert(name.clone(), spec.env.clone());
        self.volumes.insert(name.clone(), spec.volumes.clone());
        if let Some(e) = &self.refuse {
            return Err(e.clone());
        }
        if b.fail_start {
            return Err(StartError::Other("module failed to instantiate".into()));
        }
        self.next += 1;
        self.insts.insert(
            self.next,
            Inst {
                name,
                b,
                created: self.now,
                stopped: None,
                killed: None,
                removed: false,
            },
        );
        Ok(ContainerId(self.next))
    }
    fn state(&mut self, id: ContainerId) -> RuntimeState {
        let i = &self.insts[&id.0];
        let now = self.now;
        if i.killed.is_some() {
            return RuntimeState::Exited {
                exit_code: 137,
                oom_killed: false,
            };
        }
        if let (Some(s), Some(d)) = (i.stopped, i.b.on_term)
            && now >= s + d
        {
            return RuntimeState::Exited {
                exit_code: 143,
                oom_killed: false,
            };
        }
        let run_start = i.created + i.b.create;
        if now < run_start {
            return RuntimeState::Creating;
        }
        match i.b.run_for {
            Some(d) if now >= run_start + d => RuntimeState::Exited {
                exit_code: i.b.code,
                oom_killed: i.b.oom,
            },
            _ => RuntimeState::Running,
        }
    }
    fn stop(&mut self, id: ContainerId) {
        let i = self.insts.get_mut(&id.0).unwrap();
        i.stopped = Some(self.now);
        let name = i.name.clone();
        self.log.push((self.now, alloc::format!("stop {name}")));
    }
    fn kill(&mut self, id: ContainerId) {
        let i = self.insts.get_mut(&id.0).unwrap();
        i.killed = Some(self.now);
        let name = i.name.clone();
        self.log.push((self.now, alloc::format!("kill {name}")));
    }
    fn remove(&mut self, id: ContainerId) {
        self.insts.get_mut(&id.0).unwrap().removed = true;
    }
    fn pod_ip(&mut self, _uid: &str) -> Option<String> {
        Some("10.244.0.5".into())
    }
    fn update_pod_cidrs(&mut self, cidrs: &[String]) {
        self.cidrs.push(cidrs.to_vec());
    }
    fn release_pod(&mut self, uid: &str) {
        let live = self.insts.values().filter(|i| !i.removed).count();
        self.released.push(alloc::format!("{uid} live={live}"));
    }
    /// Half a CPU since created; memory by container name's length (MiB).
    fn usage(&mut self, id: ContainerId) -> Option<InstanceUsage> {
        let i = &self.insts[&id.0];
        Some(InstanceUsage {
            cpu_ns: (self.now - i.created) / 2,
            memory_bytes: (i.name.len() as u64) << 20,
            log_bytes: 7,
        })
    }
    fn node_usage(&mut self) -> Option<NodeUsage> {
        Some(NodeUsage {
            cpu_ns: self.now,
            memory_working_set_bytes: 64 << 20,
            ..NodeUsage::default()
        })
    }
}

// ---------------------------------------------------------------------------
// Scripted prober
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Outcome {
    Ok,
    Fail,
    Hang,
}

#[derive(Debug, Default)]
struct FakeProber {
    now: Nanos,
    /// (container, kind) → [(from_time, outcome)], latest applicable wins.
    plans: BTreeMap<(String, u8), Vec<(Nanos, Outcome)>>,
    live: BTreeMap<u64, (String, u8)>,
    started: Vec<(Nanos, String, ProbeKind)>,
    cancelled: usize,
}

fn kind_key(k: ProbeKind) -> u8 {
    k as u8
}

impl FakeProber {
    fn plan(&mut self, c: &str, k: ProbeKind, p: &[(u64, Outcome)]) {
        self.plans.insert(
            (c.into(), kind_key(k)),
            p.iter().map(|&(t, o)| (t * SEC, o)).collect(),
        );
    }
    fn outcome(&self, key: &(String, u8)) -> Outcome {
        let plan = self.plans.get(key).map(Vec::as_slice).unwrap_or(&[]);
        plan.iter()
            .rev()
            .find(|(t, _)| *t <= self.now)
            .map_or(Outcome::Ok, |p| p.1)
    }
}

impl Prober for FakeProber {
    fn start(&mut self, id: ProbeId, t: &ProbeTarget<'_>) {
        assert_eq!(t.pod_ip, Some("10.244.0.5"));
        self.started.push((self.now, t.container.into(), t.kind));
        self.live
            .insert(id.0, (t.container.into(), kind_key(t.kind)));
    }
    fn poll(&mut self, id: ProbeId) -> Option<ProbeResult> {
        let key = self.live.get(&id.0)?.clone();
        match self.outcome(&key) {
            Outcome::Ok => Some(ProbeResult::Success),
            Outcome::Fail => Some(ProbeResult::Failure(
                "HTTP probe failed with statuscode: 500".into(),
            )),
            Outcome::Hang => None,
        }
    }
    fn cancel(&mut self, id: ProbeId) {
        self.live.remove(&id.0);
        self.cancelled += 1;
    }
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

struct H {
    k: Kubelet,
    rt: FakeRt,
    pr: FakeProber,
    now: Nanos,
    out: Vec<(Nanos, NodeToPlane)>,
    step: Nanos,
    ticks: usize,
}

/// The driver's poll step between wake-ups (runtime exits aren't announced).
const STEP: Nanos = 100 * MILLI;

impl H {
    fn new(config: Config) -> Self {
        Self {
            k: Kubelet::new(config),
            rt: FakeRt::default(),
            pr: FakeProber::default(),
            now: 0,
            out: Vec::new(),
            step: STEP,
            ticks: 0,
        }
    }
    fn with_pods(pods: Vec<PodSpec>) -> Self {
        let mut h = Self::new(config());
        h.send(PlaneToNode::DesiredPods {
            generation: 1,
            pods,
        });
        h
    }
    fn send(&mut self, m: PlaneToNode) {
        if let Some(r) = self.k.handle(&m) {
            self.out.push((self.now, r));
        }
    }
    fn tick(&mut self) {
        self.rt.now = self.now;
        self.pr.now = self.now;
        self.ticks += 1;
        for m in self.k.tick(self.now, &mut self.rt, &mut self.pr) {
            self.out.push((self.now, m));
        }
    }
    /// Ticks at every wake-up and every STEP up to `secs` (inclusive).
    fn run_to(&mut self, secs: f64) {
        let end = (secs * SEC as f64) as Nanos;
        self.tick();
        while self.now < end {
            let next = (self.now + self.step)
                .min(self.k.next_wakeup().unwrap_or(Nanos::MAX))
                .min(end);
            self.now = next.max(self.now + 1);
            self.tick();
        }
    }
    fn status(&self, uid: &str) -> PodStatus {
        self.k
            .pod(uid)
            .expect("pod")
            .status()
            .expect("status")
            .clone()
    }
    fn main(&self, uid: &str) -> ContainerStatus {
        self.status(uid).container_statuses[0].clone()
    }
    fn events(&self, reason: &str) -> Vec<(Nanos, String)> {
        self.out
            .iter()
            .filter_map(|(t, m)| match m {
                NodeToPlane::Event(e) if e.reason == reason => Some((*t, e.message.clone())),
                _ => None,
            })
            .collect()
    }
    fn condition(&self, uid: &str, kind: PodConditionType) -> PodCondition {
        self.status(uid)
            .conditions
            .into_iter()
            .find(|c| c.kind == kind)
            .unwrap()
    }
}

fn config() -> Config {
    let mut c = Config::new(
        "node-1",
        Resources {
            cpu_millis: 2000,
            memory_bytes: 1 << 30,
            pods: 110,
            ephemeral_storage_bytes: 0,
        },
    );
    c.host_ip = Some("10.0.2.15".into());
    c.boot_wall_ms = 1_700_000_000_000;
    c
}

fn container(name: &str) -> Container {
    Container {
        name: name.into(),
        image: ImageRef {
            reference: "r/hello:1".into(),
            pull: ImagePull::Ready {
                artifact_digest: "sha256:aa".into(),
                artifact_size: 10,
                image_id: "r/hello@sha256:bb".into(),
            },
        },
        command: vec![],
        args: vec![],
        working_dir: None,
        env: vec![],
        env_from: vec![],
        ports: vec![],
        resources: ResourceRequirements::default(),
        volume_mounts: vec![],
        readiness_probe: None,
        liveness_probe: None,
        startup_probe: None,
    }
}

fn pod(uid: &str, policy: RestartPolicy, containers: Vec<Container>) -> PodSpec {
    PodSpec {
        uid: uid.into(),
        namespace: "default".into(),
        name: alloc::format!("pod-{uid}"),
        labels: vec![("app".into(), "web".into())],
        annotations: vec![],
        service_account_name: "default".into(),
        init_containers: vec![],
        containers,
        restart_policy: policy,
        termination_grace_period_secs: 30,
        active_deadline_secs: None,
        volumes: vec![],
        deletion_grace_period_secs: None,
    }
}

fn probe(kind_port: u16, period: u32, failure: u32) -> Probe {
    Probe {
        handler: ProbeHandler::HttpGet {
            port: kind_port,
            path: "/healthz".into(),
            scheme: HttpScheme::Http,
            headers: vec![],
        },
        initial_delay_secs: 0,
        period_secs: period,
        timeout_secs: 1,
        success_threshold: 1,
        failure_threshold: failure,
        termination_grace_period_secs: None,
    }
}

fn secs(v: &[Nanos]) -> Vec<f64> {
    // Millisecond resolution: a retry "at once" is the next tick (+1 ns).
    v.iter().map(|&t| (t / MILLI) as f64 / 1000.0).collect()
}

fn terminated(s: &ContainerState) -> (i32, &str) {
    match s {
        ContainerState::Terminated {
            exit_code, reason, ..
        } => (*exit_code, reason.as_str()),
        other => panic!("not terminated: {other:?}"),
    }
}

fn waiting(s: &ContainerState) -> &str {
    match s {
        ContainerState::Waiting { reason, .. } => reason.as_str(),
        other => panic!("not waiting: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn pod_cidrs_reach_the_runtime_and_finished_pods_release_their_address() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Never,
        vec![container("main")],
    )]);
    h.rt.script("main", &[exits(2, 0)]);
    // Registered without CIDRs (IPAM has not run yet): nothing to hand over.
    h.send(PlaneToNode::Registered(Registered {
        node_uid: "n".into(),
        lease_duration_secs: 40,
        renew_interval_ms: 10_000,
        node_status_report_ms: 300_000,
        pod_cidrs: vec![],
    }));
    h.run_to(1.0);
    assert!(h.rt.cidrs.is_empty());
    h.send(PlaneToNode::PodNetwork {
        pod_cidrs: vec!["10.244.3.0/24".into()],
    });
    h.run_to(1.5);
    assert_eq!(h.rt.cidrs, [vec![String::from("10.244.3.0/24")]]);
    // Handed over once, not on every tick.
    h.run_to(2.5);
    assert_eq!(h.rt.cidrs.len(), 1);
    // The pod stays (Succeeded) while the plane still wants it; removing
    // it releases the sandbox once.
    assert!(h.rt.released.is_empty());
    h.send(PlaneToNode::DesiredPods {
        generation: 2,
        pods: vec![],
    });
    h.run_to(5.0);
    assert_eq!(h.rt.released, ["u1 live=0"]);
    // A re-registration carrying CIDRs hands them over again (same value:
    // the runtime keeps its addresses).
    h.send(PlaneToNode::Registered(Registered {
        node_uid: "n".into(),
        lease_duration_secs: 40,
        renew_interval_ms: 10_000,
        node_status_report_ms: 300_000,
        pod_cidrs: vec!["10.244.3.0/24".into()],
    }));
    h.run_to(6.0);
    assert_eq!(h.rt.cidrs.len(), 2);
}

#[test]
fn backoff_policy_matches_kubernetes() {
    let p = BackoffPolicy {
        initial: 10 * SEC,
        max: 300 * SEC,
    };
    let mut b = Backoff::default();
    let mut t = 0;
    let mut waits = Vec::new();
    for _ in 0..9 {
        let ready = b.ready_at(&p, t);
        waits.push((ready - t) / SEC);
        b.next(&p, t);
        t = ready + SEC; // runs 1 s, crashes
    }
    assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300, 300]);
    // More than 2 × max after the last restart: back to the start.
    assert_eq!(b.ready_at(&p, t + 601 * SEC), t + 601 * SEC);
    b.next(&p, t + 601 * SEC);
    assert_eq!(b.delay(), Some(10 * SEC));
}

#[test]
fn crash_loop_backs_off_exponentially() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    h.rt.script("main", &[exits(1, 1)]);
    h.run_to(700.0);
    let starts = secs(&h.rt.starts("main"));
    // Start, crash after 1 s, restart at once, then 10, 20, 40, 80, 160, 300 s.
    let gaps: Vec<f64> = starts
        .windows(2)
        .map(|w| ((w[1] - w[0] - 1.0) * 10.0).round() / 10.0)
        .collect();
    assert_eq!(
        gaps[..7],
        [0.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0][..gaps.len().min(7)]
    );
    assert!(gaps.len() >= 6, "{starts:?}");
    // During back-off: Waiting{CrashLoopBackOff}, last state Error/1, Running phase.
    let s = h.status("u1");
    let c = &s.container_statuses[0];
    assert_eq!(waiting(&c.state), "CrashLoopBackOff");
    assert_eq!(terminated(c.last_state.as_ref().unwrap()), (1, "Error"));
    assert_eq!(c.restart_count as usize, starts.len() - 1);
    assert!(!c.ready);
    assert_eq!(s.phase, PodPhase::Running);
    let ready = h.condition("u1", PodConditionType::Ready);
    assert_eq!(
        (ready.status, ready.reason.as_deref()),
        (ConditionStatus::False, Some("ContainersNotReady"))
    );
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [main]")
    );
    let backoffs = h.events("BackOff");
    assert!(!backoffs.is_empty());
    assert_eq!(
        backoffs[0].1,
        "Back-off restarting failed container main in pod pod-u1_default(u1)"
    );
    if let ContainerState::Waiting { message, .. } = &c.state {
        assert!(
            message
                .as_deref()
                .unwrap()
                .starts_with("back-off 300s restarting failed container=main"),
            "{message:?}"
        );
    }
}

#[test]
fn backoff_resets_after_ten_minutes_of_running() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    // Crash at 1 s, 2 s(+0), then after 10 s back-off; then run 11 minutes.
    h.rt.script(
        "main",
        &[
            exits(1, 1),
            exits(1, 1),
            exits(1, 1),
            exits(660, 1),
            exits(1, 1),
            exits(1, 1),
        ],
    );
    h.run_to(720.0);
    let s = secs(&h.rt.starts("main"));
    assert_eq!(s.len(), 6, "{s:?}");
    // 0, 1 (immediate), 12 (10 s), 33 (20 s), 693+0 (reset: immediate), 694+10.
    let r = |x: f64| (x * 10.0).round() / 10.0;
    assert_eq!(
        s.iter().map(|&x| r(x)).collect::<Vec<_>>(),
        [0.0, 1.0, 12.0, 33.0, 693.0, 704.0]
    );
}

#[test]
fn restart_policy_table() {
    use RestartPolicy::*;
    // (policy, exit code) → (restarted?, phase once it settles, terminated reason)
    let table = [
        (Always, 0, true, PodPhase::Running, "Completed"),
        (Always, 1, true, PodPhase::Running, "Error"),
        (OnFailure, 0, false, PodPhase::Succeeded, "Completed"),
        (OnFailure, 2, true, PodPhase::Running, "Error"),
        (Never, 0, false, PodPhase::Succeeded, "Completed"),
        (Never, 3, false, PodPhase::Failed, "Error"),
    ];
    for (policy, code, restarts, phase, reason) in table {
        let mut h = H::with_pods(vec![pod("u1", policy, vec![container("main")])]);
        h.rt.script("main", &[exits(2, code)]);
        h.run_to(5.0);
        let s = h.status("u1");
        assert_eq!(h.rt.starts("main").len() > 1, restarts, "{policy:?}/{code}");
        assert_eq!(s.phase, phase, "{policy:?}/{code}");
        let c = &s.container_statuses[0];
        let t = if restarts {
            c.last_state.as_ref().unwrap()
        } else {
            &c.state
        };
        assert_eq!(terminated(t), (code, reason), "{policy:?}/{code}");
        if phase == PodPhase::Succeeded {
            let r = h.condition("u1", PodConditionType::Ready);
            assert_eq!(r.reason.as_deref(), Some("PodCompleted"));
            assert_eq!(
                h.condition("u1", PodConditionType::Initialized).status,
                ConditionStatus::True
            );
        }
    }
}

#[test]
fn phase_with_several_containers() {
    use RestartPolicy::*;
    let cases = [
        // (policy, a, b, phase at 5 s)
        (Never, exits(1, 0), FOREVER, PodPhase::Running),
        (Never, exits(1, 0), exits(2, 1), PodPhase::Failed),
        (OnFailure, exits(1, 0), exits(2, 0), PodPhase::Succeeded),
        (
            Always,
            FOREVER,
            Behave {
                create: 60 * SEC,
                ..FOREVER
            },
            PodPhase::Pending,
        ),
    ];
    for (policy, a, b, phase) in cases {
        let mut h = H::with_pods(vec![pod(
            "u1",
            policy,
            vec![container("a"), container("b")],
        )]);
        h.rt.script("a", &[a]);
        h.rt.script("b", &[b]);
        h.run_to(5.0);
        assert_eq!(h.status("u1").phase, phase, "{policy:?}");
    }
}

#[test]
fn container_creating_then_running() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    h.rt.script(
        "main",
        &[Behave {
            create: 3 * SEC,
            ..FOREVER
        }],
    );
    h.run_to(1.0);
    let s = h.status("u1");
    assert_eq!(s.phase, PodPhase::Pending);
    assert_eq!(waiting(&s.container_statuses[0].state), "ContainerCreating");
    assert_eq!(
        h.condition("u1", PodConditionType::PodScheduled).status,
        ConditionStatus::True
    );
    h.run_to(4.0);
    let s = h.status("u1");
    assert_eq!(s.phase, PodPhase::Running);
    assert!(
        matches!(s.container_statuses[0].state, ContainerState::Running { started_at } if started_at == 1_700_000_003_000)
    );
    assert!(s.container_statuses[0].ready && s.container_statuses[0].started);
    let ready = h.condition("u1", PodConditionType::Ready);
    assert_eq!(ready.status, ConditionStatus::True);
    assert_eq!(ready.last_transition, 1_700_000_003_000);
    assert_eq!(s.pod_ip.as_deref(), Some("10.244.0.5"));
    assert_eq!(s.host_ip.as_deref(), Some("10.0.2.15"));
    assert_eq!(h.events("Started").len(), 1);
    // Status is only re-sent on change.
    let n = h
        .out
        .iter()
        .filter(|(_, m)| matches!(m, NodeToPlane::PodStatus(_)))
        .count();
    h.run_to(8.0);
    assert_eq!(
        h.out
            .iter()
            .filter(|(_, m)| matches!(m, NodeToPlane::PodStatus(_)))
            .count(),
        n
    );
}

#[test]
fn oom_and_start_errors() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Never,
        vec![container("main")],
    )]);
    h.rt.script(
        "main",
        &[Behave {
            oom: true,
            code: 137,
            ..exits(1, 137)
        }],
    );
    h.run_to(2.0);
    assert_eq!(terminated(&h.main("u1").state), (137, "OOMKilled"));
    assert_eq!(h.status("u1").phase, PodPhase::Failed);

    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    h.rt.script(
        "main",
        &[Behave {
            fail_start: true,
            ..FOREVER
        }],
    );
    h.run_to(15.0);
    let c = h.main("u1");
    assert_eq!(waiting(&c.state), "CrashLoopBackOff");
    assert_eq!(
        terminated(c.last_state.as_ref().unwrap()),
        (128, "StartError")
    );
    // 0, 0 (immediate retry), 10: start failures back off too.
    assert_eq!(secs(&h.rt.starts("main")), [0.0, 0.0, 10.0]);
    assert!(
        h.events("Failed")[0]
            .1
            .contains("module failed to instantiate")
    );
}

/// A missing image or a spec the runtime cannot run leaves the container
/// waiting with kube's reason (retried, no restart counted, one event);
/// other start failures are StartError terminations (above).
#[test]
fn start_errors_map_to_kube_waiting_reasons_by_kind() {
    for (e, reason) in [
        (
            StartError::ImageNotFound("no such image".into()),
            "ErrImagePull",
        ),
        (
            StartError::Unsupported("UDP port".into()),
            "CreateContainerError",
        ),
    ] {
        let mut h = H::with_pods(vec![pod(
            "u1",
            RestartPolicy::Always,
            vec![container("main")],
        )]);
        h.rt.refuse = Some(e.clone());
        h.run_to(5.0);
        let c = h.main("u1");
        assert_eq!(waiting(&c.state), reason, "{e:?}");
        assert_eq!(c.restart_count, 0);
        assert!(c.last_state.is_none());
        assert!(h.rt.starts("main").len() > 1, "retried");
        let failed = h.events("Failed");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].1.contains(e.detail()));

        // Once the runtime can start it, it runs.
        h.rt.refuse = None;
        h.run_to(7.0);
        assert!(matches!(h.main("u1").state, ContainerState::Running { .. }));
    }
}

#[test]
fn removal_stops_with_grace_then_kills() {
    // (grace, SIGTERM behaviour) → (kill time or none, pod forgotten by)
    let cases = [
        (5, None, Some(10.0)),
        (5, Some(2 * SEC), None),
        (0, None, Some(5.0)),
    ];
    for (grace, on_term, kill_at) in cases {
        let mut spec = pod("u1", RestartPolicy::Always, vec![container("main")]);
        spec.termination_grace_period_secs = grace;
        let mut h = H::with_pods(vec![spec]);
        h.rt.script("main", &[Behave { on_term, ..FOREVER }]);
        h.run_to(5.0);
        h.send(PlaneToNode::PodDelta {
            from_generation: 1,
            generation: 2,
            upserts: vec![],
            removes: vec!["u1".into()],
        });
        h.run_to(20.0);
        assert_eq!(secs(&h.rt.times("stop main")), [5.0], "grace {grace}");
        assert_eq!(
            secs(&h.rt.times("kill main")),
            kill_at.into_iter().collect::<Vec<_>>(),
            "grace {grace} {on_term:?}"
        );
        assert!(h.k.pod("u1").is_none(), "forgotten once stopped");
        assert!(h.rt.insts.values().all(|i| i.removed), "instances freed");
        assert_eq!(h.rt.starts("main").len(), 1, "no restart while terminating");
        assert_eq!(h.events("Killing")[0].1, "Stopping container main");
    }
}

#[test]
fn deletion_uses_its_grace_and_reports_a_terminal_phase() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    h.rt.script(
        "main",
        &[Behave {
            on_term: None,
            ..FOREVER
        }],
    );
    h.run_to(2.0);
    let mut deleting = pod("u1", RestartPolicy::Always, vec![container("main")]);
    deleting.deletion_grace_period_secs = Some(3);
    h.send(PlaneToNode::PodDelta {
        from_generation: 1,
        generation: 2,
        upserts: vec![deleting],
        removes: vec![],
    });
    h.run_to(2.0 + 1.0);
    assert_eq!(h.status("u1").phase, PodPhase::Running, "still stopping");
    h.run_to(10.0);
    assert_eq!(secs(&h.rt.times("kill main")), [5.0]);
    let s = h.status("u1");
    assert_eq!(s.phase, PodPhase::Failed, "killed with 137");
    assert_eq!(terminated(&s.container_statuses[0].state), (137, "Error"));
    // The plane then removes it.
    h.send(PlaneToNode::DesiredPods {
        generation: 3,
        pods: vec![],
    });
    h.run_to(11.0);
    assert!(h.k.pod("u1").is_none());
}

#[test]
fn liveness_failures_restart_the_container() {
    let mut c = container("main");
    c.liveness_probe = Some(probe(8080, 10, 3));
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.rt.script(
        "main",
        &[Behave {
            on_term: Some(SEC),
            ..FOREVER
        }],
    );
    h.pr.plan(
        "main",
        ProbeKind::Liveness,
        &[(0, Outcome::Ok), (15, Outcome::Fail), (41, Outcome::Ok)],
    );
    h.run_to(60.0);
    // Probes at 0, 10 (ok), 20, 30, 40 fail → stop at 40, exits 143 at 41, restarts at once.
    assert_eq!(secs(&h.rt.times("stop main")), [40.0]);
    assert_eq!(secs(&h.rt.starts("main")), [0.0, 41.0]);
    assert_eq!(h.events("Unhealthy").len(), 3);
    assert_eq!(
        h.events("Unhealthy")[0].1,
        "Liveness probe failed: HTTP probe failed with statuscode: 500"
    );
    assert_eq!(
        h.events("Killing")[0].1,
        "Container main failed liveness probe, will be restarted"
    );
    let c = h.main("u1");
    assert_eq!(c.restart_count, 1);
    assert!(matches!(c.state, ContainerState::Running { .. }));
    assert_eq!(terminated(c.last_state.as_ref().unwrap()), (143, "Error"));
}

#[test]
fn liveness_kill_honours_probe_grace_and_never_policy() {
    let mut c = container("main");
    c.liveness_probe = Some(Probe {
        termination_grace_period_secs: Some(2),
        ..probe(8080, 5, 1)
    });
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Never, vec![c])]);
    h.rt.script(
        "main",
        &[Behave {
            on_term: None,
            ..FOREVER
        }],
    );
    h.pr.plan("main", ProbeKind::Liveness, &[(0, Outcome::Fail)]);
    h.run_to(10.0);
    assert_eq!(secs(&h.rt.times("stop main")), [0.0]);
    assert_eq!(secs(&h.rt.times("kill main")), [2.0]);
    assert_eq!(h.rt.starts("main").len(), 1);
    assert_eq!(h.status("u1").phase, PodPhase::Failed);
}

#[test]
fn readiness_gates_ready_condition() {
    let mut c = container("main");
    c.readiness_probe = Some(Probe {
        initial_delay_secs: 5,
        ..probe(8080, 10, 3)
    });
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.pr.plan(
        "main",
        ProbeKind::Readiness,
        &[(0, Outcome::Ok), (20, Outcome::Fail)],
    );
    h.run_to(4.0);
    assert!(!h.main("u1").ready, "not ready before the first success");
    assert_eq!(
        h.condition("u1", PodConditionType::ContainersReady)
            .reason
            .as_deref(),
        Some("ContainersNotReady")
    );
    h.run_to(6.0);
    assert!(h.main("u1").ready);
    let r = h.condition("u1", PodConditionType::Ready);
    assert_eq!(
        (r.status, r.last_transition),
        (ConditionStatus::True, 1_700_000_005_000)
    );
    // Fails at 25, 35, 45: not ready after the third (threshold 3), never restarted.
    h.run_to(44.0);
    assert!(h.main("u1").ready);
    h.run_to(46.0);
    assert!(!h.main("u1").ready);
    assert_eq!(h.status("u1").phase, PodPhase::Running);
    assert_eq!(h.rt.starts("main").len(), 1);
    assert_eq!(
        secs(&h.pr.started.iter().map(|p| p.0).collect::<Vec<_>>()),
        [5.0, 15.0, 25.0, 35.0, 45.0]
    );
}

#[test]
fn startup_probe_gates_liveness_and_kills_on_failure() {
    let mut c = container("main");
    c.startup_probe = Some(probe(8080, 2, 5));
    c.liveness_probe = Some(probe(8080, 10, 1));
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c.clone()])]);
    h.pr.plan(
        "main",
        ProbeKind::Startup,
        &[(0, Outcome::Fail), (5, Outcome::Ok)],
    );
    h.pr.plan(
        "main",
        ProbeKind::Liveness,
        &[(0, Outcome::Fail), (5, Outcome::Ok)],
    );
    h.run_to(5.0);
    assert!(!h.main("u1").started);
    assert!(
        h.pr.started.iter().all(|p| p.2 == ProbeKind::Startup),
        "no liveness before startup passes"
    );
    h.run_to(7.0);
    assert!(h.main("u1").started && h.main("u1").ready);
    assert!(h.pr.started.iter().any(|p| p.2 == ProbeKind::Liveness));
    assert_eq!(h.rt.starts("main").len(), 1);

    // A startup probe that never passes kills after failureThreshold × period.
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.pr.plan("main", ProbeKind::Startup, &[(0, Outcome::Fail)]);
    h.run_to(9.0);
    assert_eq!(secs(&h.rt.times("stop main")), [8.0]);
    assert_eq!(
        h.events("Killing")[0].1,
        "Container main failed startup probe, will be restarted"
    );
}

#[test]
fn probe_timeouts_count_as_failures() {
    let mut c = container("main");
    c.readiness_probe = Some(Probe {
        timeout_secs: 2,
        ..probe(8080, 10, 1)
    });
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.pr.plan(
        "main",
        ProbeKind::Readiness,
        &[(0, Outcome::Ok), (5, Outcome::Hang)],
    );
    h.run_to(9.0);
    assert!(h.main("u1").ready);
    h.run_to(11.0);
    assert!(h.main("u1").ready, "pending, not yet timed out");
    h.run_to(12.5);
    assert!(!h.main("u1").ready);
    assert_eq!(h.pr.cancelled, 1);
    assert!(
        h.events("Unhealthy")[0]
            .1
            .starts_with("Readiness probe failed: timeout")
    );
}

#[test]
fn init_containers_run_in_order() {
    let mut spec = pod("u1", RestartPolicy::Always, vec![container("main")]);
    spec.init_containers = vec![container("init-a"), container("init-b")];
    let mut h = H::with_pods(vec![spec]);
    h.rt.script("init-a", &[exits(2, 0)]);
    h.rt.script("init-b", &[exits(1, 1), exits(1, 0)]);
    h.run_to(1.0);
    let s = h.status("u1");
    assert_eq!(s.phase, PodPhase::Pending);
    assert_eq!(waiting(&s.container_statuses[0].state), "PodInitializing");
    assert_eq!(
        waiting(&s.init_container_statuses[1].state),
        "PodInitializing"
    );
    let init = h.condition("u1", PodConditionType::Initialized);
    assert_eq!(
        (init.status, init.reason.as_deref()),
        (ConditionStatus::False, Some("ContainersNotInitialized"))
    );
    assert_eq!(
        init.message.as_deref(),
        Some("containers with incomplete status: [init-a init-b]")
    );
    h.run_to(10.0);
    // init-b fails at 3, restarts at once, succeeds at 4; main starts at 4.
    assert_eq!(secs(&h.rt.starts("init-a")), [0.0]);
    assert_eq!(secs(&h.rt.starts("init-b")), [2.0, 3.0]);
    assert_eq!(secs(&h.rt.starts("main")), [4.0]);
    let s = h.status("u1");
    assert_eq!(s.phase, PodPhase::Running);
    assert_eq!(
        terminated(&s.init_container_statuses[0].state),
        (0, "Completed")
    );
    assert_eq!(s.init_container_statuses[1].restart_count, 1);
    assert_eq!(
        h.condition("u1", PodConditionType::Initialized).status,
        ConditionStatus::True
    );

    // With Never, a failed init container fails the pod and nothing else runs.
    let mut spec = pod("u2", RestartPolicy::Never, vec![container("main")]);
    spec.init_containers = vec![container("init-a")];
    let mut h = H::with_pods(vec![spec]);
    h.rt.script("init-a", &[exits(1, 1)]);
    h.run_to(5.0);
    assert_eq!(h.status("u2").phase, PodPhase::Failed);
    assert!(h.rt.starts("main").is_empty());
}

#[test]
fn env_from_literals_config_secrets_and_downward_api() {
    let mut c = container("main");
    c.resources.limits.memory_bytes = Some(64 << 20);
    c.env_from = vec![EnvFromSource {
        kind: ConfigKind::ConfigMap,
        name: "cfg".into(),
        prefix: "CFG_".into(),
        optional: false,
    }];
    c.env = vec![
        EnvVar {
            name: "MODE".into(),
            value: EnvValue::Literal("prod".into()),
        },
        EnvVar {
            name: "CFG_level".into(),
            value: EnvValue::Literal("override".into()),
        },
        EnvVar {
            name: "TOKEN".into(),
            value: EnvValue::SecretKey {
                name: "sec".into(),
                key: "token".into(),
                optional: false,
            },
        },
        EnvVar {
            name: "OPT".into(),
            value: EnvValue::ConfigMapKey {
                name: "nope".into(),
                key: "x".into(),
                optional: true,
            },
        },
        EnvVar {
            name: "POD".into(),
            value: EnvValue::Field(DownwardField::Name),
        },
        EnvVar {
            name: "NS".into(),
            value: EnvValue::Field(DownwardField::Namespace),
        },
        EnvVar {
            name: "APP".into(),
            value: EnvValue::Field(DownwardField::Label("app".into())),
        },
        EnvVar {
            name: "NODE".into(),
            value: EnvValue::Field(DownwardField::NodeName),
        },
        EnvVar {
            name: "IP".into(),
            value: EnvValue::Field(DownwardField::PodIP),
        },
        EnvVar {
            name: "HOST".into(),
            value: EnvValue::Field(DownwardField::HostIP),
        },
        EnvVar {
            name: "MEM_MB".into(),
            value: EnvValue::Resource {
                container: String::new(),
                resource: ResourceField::LimitsMemory,
                divisor: 1 << 20,
            },
        },
        EnvVar {
            name: "CPU".into(),
            value: EnvValue::Resource {
                container: "main".into(),
                resource: ResourceField::LimitsCpu,
                divisor: 1000,
            },
        },
    ];
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.run_to(1.0);
    // The secret hasn't arrived: CreateContainerConfigError, retried.
    let st = h.main("u1");
    assert_eq!(waiting(&st.state), "CreateContainerConfigError");
    assert_eq!(h.status("u1").phase, PodPhase::Pending);
    assert_eq!(
        h.events("Failed")[0].1,
        "Error: configmap \"cfg\" not found"
    );
    h.send(PlaneToNode::ConfigData(ConfigObject {
        kind: ConfigKind::ConfigMap,
        namespace: "default".into(),
        name: "cfg".into(),
        resource_version: "1".into(),
        data: vec![
            ("level".into(), b"debug".to_vec()),
            ("color".into(), b"blue".to_vec()),
        ],
    }));
    h.run_to(2.0);
    assert!(waiting(&h.main("u1").state) == "CreateContainerConfigError");
    h.send(PlaneToNode::ConfigData(ConfigObject {
        kind: ConfigKind::Secret,
        namespace: "default".into(),
        name: "sec".into(),
        resource_version: "2".into(),
        data: vec![("token".into(), b"s3cret".to_vec())],
    }));
    h.run_to(3.0);
    assert!(matches!(h.main("u1").state, ContainerState::Running { .. }));
    let env: BTreeMap<String, String> = h.rt.envs["main"].iter().cloned().collect();
    let want = [
        ("CFG_level", "override"),
        ("CFG_color", "blue"),
        ("MODE", "prod"),
        ("TOKEN", "s3cret"),
        ("POD", "pod-u1"),
        ("NS", "default"),
        ("APP", "web"),
        ("NODE", "node-1"),
        ("IP", "10.244.0.5"),
        ("HOST", "10.0.2.15"),
        ("MEM_MB", "64"),
        ("CPU", "2"),
    ];
    for (k, v) in want {
        assert_eq!(env.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert!(!env.contains_key("OPT"));
    assert_eq!(env.len(), want.len());
}

#[test]
fn usage_reports_follow_the_interval_and_name_running_containers() {
    let mut c = config();
    c.usage_report_interval = Some(10 * SEC);
    let mut h = H::new(c);
    let mut slow = container("sidecar");
    slow.name = "sidecar".into();
    let mut p = pod("u1", RestartPolicy::Always, vec![container("app"), slow]);
    p.name = "web".into();
    h.rt.script(
        "sidecar",
        &[Behave {
            create: 15 * SEC,
            ..FOREVER
        }],
    );
    h.send(PlaneToNode::DesiredPods {
        generation: 1,
        pods: vec![p],
    });
    h.run_to(25.0);
    let reports: Vec<(Nanos, &UsageReport)> = h
        .out
        .iter()
        .filter_map(|(t, m)| match m {
            NodeToPlane::Usage(u) => Some((*t, u)),
            _ => None,
        })
        .collect();
    assert_eq!(
        reports.iter().map(|r| r.0 / SEC).collect::<Vec<_>>(),
        [0, 10, 20]
    );
    let (_, r) = reports[1];
    assert_eq!(r.timestamp, 1_700_000_010_000);
    assert_eq!(r.node.cpu_ns, 10 * SEC);
    assert!(!r.simulated);
    // At 10 s only `app` runs (the sidecar is still creating).
    assert_eq!(r.pods.len(), 1);
    assert_eq!(
        (r.pods[0].namespace.as_str(), r.pods[0].name.as_str()),
        ("default", "web")
    );
    let app = &r.pods[0].containers;
    assert_eq!(app.len(), 1);
    assert_eq!(app[0].name, "app");
    assert_eq!(app[0].cpu_ns, 5 * SEC);
    assert_eq!(app[0].memory_working_set_bytes, 3 << 20);
    assert_eq!(app[0].started_at, 1_700_000_000_000);
    let (_, r) = reports[2];
    let names: Vec<&str> = r.pods[0]
        .containers
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["app", "sidecar"]);
    // Off by default: a plane older than protocol 5 gets none.
    let mut h = H::new(config());
    h.run_to(25.0);
    assert!(
        !h.out
            .iter()
            .any(|(_, m)| matches!(m, NodeToPlane::Usage(_)))
    );
}

#[test]
fn lease_node_status_and_sync_acks() {
    let mut h = H::new(config());
    h.run_to(35.0);
    let leases: Vec<(Nanos, u64, u64)> = h
        .out
        .iter()
        .filter_map(|(t, m)| match m {
            NodeToPlane::LeaseRenew { seq, renew_time } => Some((*t, *seq, *renew_time)),
            _ => None,
        })
        .collect();
    assert_eq!(
        leases.iter().map(|l| l.0 / SEC).collect::<Vec<_>>(),
        [0, 10, 20, 30]
    );
    assert_eq!(leases.iter().map(|l| l.1).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(leases[1].2, 1_700_000_010_000);
    let statuses: Vec<&NodeStatus> = h
        .out
        .iter()
        .filter_map(|(_, m)| {
            if let NodeToPlane::NodeStatus(s) = m {
                Some(s)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(statuses.len(), 1);
    let ready = statuses[0]
        .conditions
        .iter()
        .find(|c| c.kind == NodeConditionType::Ready)
        .unwrap();
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::True, "KubeletReady")
    );
    assert_eq!(statuses[0].allocatable.pods, 110);

    // The plane's settings change the cadence.
    h.send(PlaneToNode::Registered(Registered {
        node_uid: "n".into(),
        lease_duration_secs: 20,
        renew_interval_ms: 5_000,
        node_status_report_ms: 60_000,
        pod_cidrs: vec![],
    }));
    h.out.clear();
    h.run_to(301.0);
    let n = h
        .out
        .iter()
        .filter(|(_, m)| matches!(m, NodeToPlane::LeaseRenew { .. }))
        .count();
    assert!((52..=54).contains(&n), "{n}");
    // At once (35 s), then every 60 s.
    assert_eq!(
        h.out
            .iter()
            .filter(|(_, m)| matches!(m, NodeToPlane::NodeStatus(_)))
            .count(),
        5
    );

    // Desired pods are acknowledged; a delta from the wrong base asks for a resync.
    h.send(PlaneToNode::DesiredPods {
        generation: 7,
        pods: vec![],
    });
    h.out.clear();
    h.run_to(302.0);
    assert!(
        h.out
            .iter()
            .any(|(_, m)| *m == NodeToPlane::SyncAck { generation: 7 })
    );
    let bad = PlaneToNode::PodDelta {
        from_generation: 5,
        generation: 8,
        upserts: vec![],
        removes: vec![],
    };
    assert_eq!(
        h.k.handle(&bad),
        Some(NodeToPlane::ResyncRequest { have: 7 })
    );
    assert_eq!(h.k.generation(), Some(7));
}

#[test]
fn static_pods_run_without_the_plane_and_survive_full_syncs() {
    let mut cfg = config();
    cfg.static_pods = vec![pod(
        "static-1",
        RestartPolicy::Always,
        vec![container("main")],
    )];
    let mut h = H::new(cfg);
    h.run_to(1.0);
    assert_eq!(h.status("static-1").phase, PodPhase::Running);
    h.send(PlaneToNode::DesiredPods {
        generation: 1,
        pods: vec![pod("u1", RestartPolicy::Always, vec![container("web")])],
    });
    h.send(PlaneToNode::DesiredPods {
        generation: 2,
        pods: vec![],
    });
    h.run_to(2.0);
    assert!(h.k.pod("static-1").is_some());
    assert!(h.rt.times("stop main").is_empty());
    // u1 was added then removed before it ever started.
    assert!(h.k.pod("u1").is_none());
    assert!(h.rt.starts("web").is_empty());
}

#[test]
fn active_deadline_fails_the_pod() {
    let mut spec = pod("u1", RestartPolicy::Always, vec![container("main")]);
    spec.active_deadline_secs = Some(30);
    spec.termination_grace_period_secs = 2;
    let mut h = H::with_pods(vec![spec]);
    h.rt.script(
        "main",
        &[Behave {
            on_term: None,
            ..FOREVER
        }],
    );
    h.run_to(40.0);
    assert_eq!(secs(&h.rt.times("stop main")), [30.0]);
    assert_eq!(secs(&h.rt.times("kill main")), [32.0]);
    let s = h.status("u1");
    assert_eq!(s.phase, PodPhase::Failed);
    assert_eq!(s.reason.as_deref(), Some("DeadlineExceeded"));
    assert_eq!(h.rt.starts("main").len(), 1);
}

#[test]
fn next_wakeup_tracks_the_nearest_deadline() {
    let mut c = container("main");
    c.readiness_probe = Some(probe(8080, 7, 3));
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.tick();
    assert_eq!(
        h.k.next_wakeup(),
        Some(7 * SEC),
        "probe period beats the 10 s lease"
    );
}

#[test]
fn wire_messages_round_trip() {
    // Everything the kubelet emits frames cleanly.
    let mut c = container("main");
    c.liveness_probe = Some(probe(80, 5, 1));
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.pr.plan("main", ProbeKind::Liveness, &[(3, Outcome::Fail)]);
    h.run_to(30.0);
    assert!(h.out.len() > 5);
    for (_, m) in &h.out {
        let f = encode_frame(m, MAX_FRAME).unwrap();
        assert_eq!(&decode_frame::<NodeToPlane>(&f, MAX_FRAME).unwrap().0, m);
    }
    let _ = "unused".to_string();
}

#[test]
fn volumes_are_projected_and_missing_sources_block_start() {
    let mut spec = pod("u1", RestartPolicy::Always, vec![container("main")]);
    spec.volumes = vec![
        Volume {
            name: "scratch".into(),
            source: VolumeSource::EmptyDir {
                memory: true,
                size_limit_bytes: None,
            },
        },
        Volume {
            name: "conf".into(),
            source: VolumeSource::ConfigMap {
                name: "cfg".into(),
                items: vec![KeyToPath {
                    key: "a".into(),
                    path: "conf/a.txt".into(),
                    mode: Some(0o400),
                }],
                optional: false,
                default_mode: 0o644,
            },
        },
        Volume {
            name: "sec".into(),
            source: VolumeSource::Secret {
                name: "nope".into(),
                items: vec![],
                optional: true,
                default_mode: 0o600,
            },
        },
        Volume {
            name: "info".into(),
            source: VolumeSource::DownwardApi {
                items: vec![DownwardApiFile {
                    path: "labels".into(),
                    field: DownwardField::Labels,
                }],
                default_mode: 0o644,
            },
        },
    ];
    let mut h = H::with_pods(vec![spec]);
    h.run_to(1.0);
    assert!(h.rt.starts("main").is_empty());
    let c = h.main("u1");
    assert_eq!(waiting(&c.state), "ContainerCreating");
    assert_eq!(h.events("FailedMount").len(), 1, "reported once");
    assert_eq!(
        h.events("FailedMount")[0].1,
        "MountVolume.SetUp failed for volume \"conf\" : configmap \"cfg\" not found"
    );
    h.send(PlaneToNode::ConfigData(ConfigObject {
        kind: ConfigKind::ConfigMap,
        namespace: "default".into(),
        name: "cfg".into(),
        resource_version: "1".into(),
        data: vec![
            ("a".into(), b"x=1".to_vec()),
            ("b".into(), b"unused".to_vec()),
        ],
    }));
    h.run_to(2.0);
    let v = &h.rt.volumes["main"];
    assert_eq!(
        v[0],
        (
            "scratch".into(),
            VolumeContent::EmptyDir {
                memory: true,
                size_limit_bytes: None
            }
        )
    );
    assert_eq!(
        v[1],
        (
            "conf".into(),
            VolumeContent::Files(vec![VolumeFile {
                path: "conf/a.txt".into(),
                data: b"x=1".to_vec(),
                mode: 0o400
            }])
        )
    );
    assert_eq!(v[2], ("sec".into(), VolumeContent::Files(vec![])));
    assert_eq!(
        v[3],
        (
            "info".into(),
            VolumeContent::Files(vec![VolumeFile {
                path: "labels".into(),
                data: b"app=\"web\"".to_vec(),
                mode: 0o644
            }])
        )
    );
}

#[test]
fn log_instance_follows_restarts() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    h.rt.script("main", &[exits(1, 1), FOREVER]);
    h.run_to(0.5);
    assert_eq!(h.k.log_instance("u1", "main", false), Some(ContainerId(1)));
    assert_eq!(h.k.log_instance("u1", "main", true), None);
    h.run_to(2.0);
    assert_eq!(h.k.log_instance("u1", "main", false), Some(ContainerId(2)));
    assert_eq!(h.k.log_instance("u1", "main", true), Some(ContainerId(1)));
    assert_eq!(h.k.log_instance("u1", "nope", false), None);
    assert_eq!(h.k.log_instance("u9", "main", false), None);
}

#[test]
fn repeated_events_form_a_series() {
    let mut c = container("main");
    c.readiness_probe = Some(probe(8080, 10, 3));
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.pr.plan("main", ProbeKind::Readiness, &[(0, Outcome::Fail)]);
    h.run_to(25.0);
    let series: Vec<(u32, u64, u64)> = h
        .out
        .iter()
        .filter_map(|(_, m)| match m {
            NodeToPlane::Event(e) if e.reason == "Unhealthy" => {
                Some((e.count, e.first_timestamp, e.last_timestamp))
            }
            _ => None,
        })
        .collect();
    let t0 = 1_700_000_000_000;
    assert_eq!(
        series,
        [(1, t0, t0), (2, t0, t0 + 10_000), (3, t0, t0 + 20_000)]
    );
}

#[test]
fn containers_wait_for_the_planes_image_pull() {
    let mut c = container("main");
    c.image.pull = ImagePull::Pulling;
    let mut spec = pod("u1", RestartPolicy::Always, vec![c]);
    let mut h = H::with_pods(vec![spec.clone()]);
    h.run_to(1.0);
    assert_eq!(waiting(&h.main("u1").state), "ContainerCreating");
    assert!(h.rt.starts("main").is_empty());

    let fail = |reason: &str| ImagePull::Failed {
        reason: reason.into(),
        message: "manifest unknown".into(),
    };
    spec.containers[0].image.pull = fail("ErrImagePull");
    h.send(PlaneToNode::DesiredPods {
        generation: 2,
        pods: vec![spec.clone()],
    });
    h.run_to(2.0);
    let st = h.main("u1");
    assert_eq!(waiting(&st.state), "ErrImagePull");
    assert_eq!(
        h.events("Failed")[0].1,
        "Failed to pull image \"r/hello:1\": manifest unknown"
    );
    spec.containers[0].image.pull = fail("ImagePullBackOff");
    h.send(PlaneToNode::DesiredPods {
        generation: 3,
        pods: vec![spec.clone()],
    });
    h.run_to(3.0);
    assert_eq!(waiting(&h.main("u1").state), "ImagePullBackOff");
    assert_eq!(
        h.events("BackOff")[0].1,
        "Back-off pulling image \"r/hello:1\""
    );
    assert_eq!(h.status("u1").phase, PodPhase::Pending);
    assert!(h.rt.starts("main").is_empty());

    spec.containers[0].image.pull = container("x").image.pull;
    h.send(PlaneToNode::DesiredPods {
        generation: 4,
        pods: vec![spec],
    });
    h.run_to(4.0);
    let st = h.main("u1");
    assert!(matches!(st.state, ContainerState::Running { .. }));
    assert_eq!(st.image_id, "r/hello@sha256:bb");
    assert_eq!(secs(&h.rt.starts("main")), [3.0]);
}

#[test]
fn a_pod_desired_again_while_stopping_restarts_afresh() {
    let spec = pod("u1", RestartPolicy::Always, vec![container("main")]);
    let mut h = H::with_pods(vec![spec.clone()]);
    h.rt.script(
        "main",
        &[Behave {
            on_term: Some(2 * SEC),
            ..FOREVER
        }],
    );
    h.run_to(1.0);
    h.send(PlaneToNode::DesiredPods {
        generation: 2,
        pods: vec![],
    });
    h.run_to(1.5);
    h.send(PlaneToNode::DesiredPods {
        generation: 3,
        pods: vec![spec],
    });
    h.run_to(5.0);
    assert_eq!(secs(&h.rt.times("stop main")), [1.0]);
    assert_eq!(secs(&h.rt.starts("main")), [0.0, 3.0]);
    assert_eq!(h.main("u1").restart_count, 0, "a new pod instance");
}

#[test]
fn idle_node_wakes_only_when_something_is_due() {
    // The kernel sleeps until next_wakeup (plus runtime notifications): no
    // deadline may sit in the past and spin the loop.
    let mut c = container("main");
    c.readiness_probe = Some(probe(8080, 10, 3));
    c.liveness_probe = Some(Probe {
        initial_delay_secs: 5,
        ..probe(8080, 10, 3)
    });
    let mut h = H::with_pods(vec![pod("u1", RestartPolicy::Always, vec![c])]);
    h.step = 10_000 * SEC;
    h.run_to(600.0);
    assert!(h.ticks <= 200, "{} ticks", h.ticks);
    assert!(h.main("u1").ready);
}

#[test]
fn log_buffer_tail_since_limit_follow() {
    let mut b = LogBuffer::new(1 << 10);
    b.append(1000, b"one\ntwo\nthr");
    let mut all = b.reader(&LogOptions::default());
    let mut follow = b.reader(&LogOptions {
        tail_lines: Some(1),
        ..Default::default()
    });
    assert_eq!(
        b.read(&mut all, 1 << 20),
        (b"one\ntwo\n".to_vec(), false),
        "partial line hidden"
    );
    b.append(2000, b"ee\nfour\n");
    assert_eq!(
        b.read(&mut follow, 1 << 20),
        (b"two\nthree\nfour\n".to_vec(), false)
    );
    assert_eq!(
        b.read(&mut all, 1 << 20),
        (b"three\nfour\n".to_vec(), false)
    );
    assert_eq!(
        b.read(&mut follow, 1 << 20),
        (vec![], false),
        "follower waits"
    );
    // since: lines written at or after 2000 (three started at 1000).
    let mut since = b.reader(&LogOptions {
        since: Some(2000),
        ..Default::default()
    });
    assert_eq!(b.read(&mut since, 1 << 20).0, b"four\n");
    // limit-bytes ends the stream.
    let mut lim = b.reader(&LogOptions {
        limit_bytes: Some(6),
        ..Default::default()
    });
    assert_eq!(b.read(&mut lim, 1 << 20), (b"one\ntw".to_vec(), true));
    // timestamps, and a small read size still makes progress line by line.
    let mut ts = b.reader(&LogOptions {
        tail_lines: Some(2),
        timestamps: true,
        ..Default::default()
    });
    assert_eq!(
        b.read(&mut ts, 1).0,
        b"1970-01-01T00:00:01.000000000Z three\n"
    );
    b.append(3000, b"last, unterminated");
    b.close();
    assert_eq!(
        b.read(&mut follow, 1 << 20),
        (b"last, unterminated".to_vec(), true),
        "EOF after close"
    );
    assert_eq!(
        &logs::rfc3339(1_700_000_000_123),
        b"2023-11-14T22:13:20.123000000Z"
    );
    assert_eq!(
        &logs::rfc3339(951_782_400_000),
        b"2000-02-29T00:00:00.000000000Z"
    );
}

#[test]
fn log_buffer_evicts_oldest_and_bounds_long_lines() {
    // Room for four 4-byte lines with their overhead.
    let cap = 4 * (4 + LINE_OVERHEAD);
    let mut b = LogBuffer::new(cap);
    let mut slow = b.reader(&LogOptions::default());
    for i in 0..10u8 {
        b.append(u64::from(i), &[b'a' + i, b'a' + i, b'a' + i, b'\n']);
    }
    let (data, _) = b.read(&mut slow, 1 << 20);
    assert_eq!(
        data, b"ggg\nhhh\niii\njjj\n",
        "a lagging reader resumes at the oldest line"
    );
    let longest = cap - LINE_OVERHEAD;
    b.append(20, &vec![b'x'; 2 * longest + 40]);
    let (data, _) = b.read(&mut slow, 1 << 20);
    assert_eq!(
        data,
        vec![b'x'; longest],
        "no line exceeds the cap (two whole lines and a partial)"
    );
    let mut all = b.reader(&LogOptions::default());
    assert!(b.read(&mut all, 1 << 20).0.len() <= longest);
}

/// Empty lines cost the node more than their text: they are charged their
/// overhead, so a flood of them holds about the cap, not 65 times it.
#[test]
fn log_buffer_charges_each_lines_overhead() {
    let cap = 64 << 10;
    let mut b = LogBuffer::new(cap);
    b.append(0, &vec![b'\n'; 1 << 20]);
    let mut all = b.reader(&LogOptions::default());
    let mut kept = 0;
    loop {
        let (d, _) = b.read(&mut all, 1 << 20);
        if d.is_empty() {
            break;
        }
        kept += d.len();
    }
    assert_eq!(kept, cap / (1 + LINE_OVERHEAD), "lines kept");
}

#[test]
fn extreme_wire_values_do_not_overflow() {
    let mut c = container("main");
    c.liveness_probe = Some(Probe {
        initial_delay_secs: u32::MAX,
        period_secs: u32::MAX,
        timeout_secs: u32::MAX,
        success_threshold: u32::MAX,
        failure_threshold: 0,
        termination_grace_period_secs: Some(u64::MAX),
        ..probe(1, 1, 1)
    });
    c.resources.limits.cpu_millis = Some(u64::MAX);
    c.env = vec![EnvVar {
        name: "CPU".into(),
        value: EnvValue::Resource {
            container: "main".into(),
            resource: ResourceField::LimitsCpu,
            divisor: 0,
        },
    }];
    let mut spec = pod("u1", RestartPolicy::Always, vec![c]);
    spec.active_deadline_secs = Some(u64::MAX);
    spec.termination_grace_period_secs = u64::MAX;
    let mut h = H::with_pods(vec![spec.clone()]);
    h.run_to(3.0);
    spec.deletion_grace_period_secs = Some(u64::MAX);
    h.send(PlaneToNode::DesiredPods {
        generation: 2,
        pods: vec![spec],
    });
    h.run_to(6.0);
    assert_eq!(h.rt.times("stop main").len(), 1);
    assert!(h.rt.times("kill main").is_empty());
}

/// SplitMix64 for the randomized test.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random pods, runtime behaviour, probe outcomes and plane changes; checks
/// invariants: no panic, terminal phases stay terminal, restart counts never
/// decrease, every message frames, and the wake-up loop doesn't spin.
#[test]
fn randomized_pods_keep_invariants() {
    let mut rng = Rng(0xC0FFEE);
    for round in 0..200 {
        let mut h = H::new(config());
        let policies = [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ];
        let mut specs = Vec::new();
        for p in 0..1 + rng.below(3) {
            let mut cs = Vec::new();
            for i in 0..1 + rng.below(3) {
                let mut c = container(&alloc::format!("c{p}-{i}"));
                if rng.below(2) == 0 {
                    c.readiness_probe =
                        Some(probe(80, 1 + rng.below(10) as u32, 1 + rng.below(3) as u32));
                }
                if rng.below(3) == 0 {
                    c.liveness_probe =
                        Some(probe(80, 1 + rng.below(10) as u32, 1 + rng.below(3) as u32));
                }
                if rng.below(4) == 0 {
                    c.startup_probe =
                        Some(probe(80, 1 + rng.below(5) as u32, 1 + rng.below(5) as u32));
                }
                let behaves: Vec<Behave> = (0..1 + rng.below(4))
                    .map(|_| Behave {
                        create: rng.below(3) * SEC,
                        run_for: (rng.below(3) != 0).then(|| rng.below(30) * SEC),
                        code: [0, 1, 137][rng.below(3) as usize],
                        oom: rng.below(8) == 0,
                        on_term: (rng.below(3) != 0).then(|| rng.below(40) * SEC),
                        fail_start: rng.below(10) == 0,
                    })
                    .collect();
                h.rt.script(&c.name, &behaves);
                for kind in [
                    ProbeKind::Readiness,
                    ProbeKind::Liveness,
                    ProbeKind::Startup,
                ] {
                    let plan: Vec<(u64, Outcome)> = (0..rng.below(4))
                        .map(|_| {
                            (
                                rng.below(200),
                                [Outcome::Ok, Outcome::Fail, Outcome::Hang][rng.below(3) as usize],
                            )
                        })
                        .collect();
                    let mut plan = plan;
                    plan.sort_by_key(|p| p.0);
                    h.pr.plan(&c.name, kind, &plan);
                }
                cs.push(c);
            }
            let mut spec = pod(&alloc::format!("u{p}"), policies[rng.below(3) as usize], cs);
            if rng.below(3) == 0 {
                spec.init_containers = vec![container(&alloc::format!("init{p}"))];
                h.rt.script(
                    &alloc::format!("init{p}"),
                    &[
                        exits(rng.below(5), [0, 1][rng.below(2) as usize]),
                        exits(1, 0),
                    ],
                );
            }
            spec.termination_grace_period_secs = rng.below(40);
            if rng.below(5) == 0 {
                spec.active_deadline_secs = Some(rng.below(200));
            }
            specs.push(spec);
        }
        h.send(PlaneToNode::DesiredPods {
            generation: 1,
            pods: specs.clone(),
        });
        let mut terminal: BTreeMap<String, PodPhase> = BTreeMap::new();
        let mut restarts: BTreeMap<(String, String), u32> = BTreeMap::new();
        let mut generation = 1;
        h.step = 10 * SEC; // mostly wake-up driven
        for t in 0..30u64 {
            h.run_to((t * 10) as f64);
            // A random plane change now and then.
            match rng.below(10) {
                0 if !specs.is_empty() => {
                    let i = rng.below(specs.len() as u64) as usize;
                    specs[i].deletion_grace_period_secs = Some(rng.below(10));
                    generation += 1;
                    h.send(PlaneToNode::DesiredPods {
                        generation,
                        pods: specs.clone(),
                    });
                }
                1 if !specs.is_empty() => {
                    let i = rng.below(specs.len() as u64) as usize;
                    let uid = specs.remove(i).uid;
                    generation += 1;
                    h.send(PlaneToNode::PodDelta {
                        from_generation: generation - 1,
                        generation,
                        upserts: vec![],
                        removes: vec![uid],
                    });
                }
                _ => {}
            }
            for p in h.k.pods() {
                let Some(s) = p.status() else { continue };
                if let Some(&ph) = terminal.get(&s.uid) {
                    assert_eq!(s.phase, ph, "round {round}: terminal phase changed");
                }
                if matches!(s.phase, PodPhase::Succeeded | PodPhase::Failed) {
                    terminal.insert(s.uid.clone(), s.phase);
                }
                for c in s
                    .container_statuses
                    .iter()
                    .chain(&s.init_container_statuses)
                {
                    let prev = restarts
                        .insert((s.uid.clone(), c.name.clone()), c.restart_count)
                        .unwrap_or(0);
                    assert!(
                        c.restart_count >= prev,
                        "round {round}: restart count went down"
                    );
                }
            }
        }
        assert!(
            h.ticks < 20_000,
            "round {round}: {} ticks (spinning?)",
            h.ticks
        );
        for (_, m) in &h.out {
            encode_frame(m, MAX_FRAME).expect("frames");
        }
    }
}

#[test]
fn long_log_lines_are_split_at_16k() {
    let mut b = LogBuffer::new(1 << 20);
    let mut r = b.reader(&LogOptions {
        timestamps: true,
        ..Default::default()
    });
    let mut line = vec![b'y'; 40 << 10];
    line.push(b'\n');
    b.append(0, &line);
    let mut sizes = Vec::new();
    loop {
        let (d, _) = b.read(&mut r, 1);
        if d.is_empty() {
            break;
        }
        assert!(d.len() <= MAX_LOG_CHUNK);
        sizes.push(d.len());
    }
    assert_eq!(
        sizes,
        [31 + (16 << 10), 31 + (16 << 10), 31 + (8 << 10) + 1]
    );
}

// ---------------------------------------------------------------------------
// Log streams
// ---------------------------------------------------------------------------

/// Per-instance log buffers, as a runtime keeps them.
#[derive(Default)]
struct Bufs(BTreeMap<ContainerId, LogBuffer>);

impl LogSource for Bufs {
    fn log_buffer(&self, id: ContainerId) -> Option<&LogBuffer> {
        self.0.get(&id)
    }
}

impl Bufs {
    fn write(&mut self, id: u64, text: &str) {
        self.0
            .entry(ContainerId(id))
            // Room for 20,000 short lines with their overhead.
            .or_insert_with(|| LogBuffer::new(4 << 20))
            .append(1_700_000_000_000, text.as_bytes());
    }
    fn close(&mut self, id: u64) {
        self.0.get_mut(&ContainerId(id)).unwrap().close();
    }
}

fn log_req(stream: u32, container: &str) -> LogRequest {
    LogRequest {
        stream,
        pod_uid: "u1".into(),
        container: container.into(),
        follow: false,
        tail_lines: None,
        since: None,
        limit_bytes: None,
        timestamps: false,
        previous: false,
    }
}

/// (concatenated data, eof, error) of the chunks of `stream` in `out`,
/// checking that nothing follows an eof.
fn chunks_of(out: &[NodeToPlane], stream: u32) -> (String, bool, Option<String>) {
    let mut text = Vec::new();
    let (mut eof, mut err) = (false, None);
    for m in out {
        if let NodeToPlane::LogChunk {
            stream: s,
            data,
            eof: e,
            error,
        } = m
            && *s == stream
        {
            assert!(!eof, "chunk after eof: {out:?}");
            assert!(data.len() <= MAX_LOG_CHUNK);
            text.extend_from_slice(data);
            eof = *e;
            err = error.clone();
        }
    }
    (String::from_utf8(text).unwrap(), eof, err)
}

fn running_pod() -> H {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main"), container("side")],
    )]);
    h.run_to(0.5);
    h
}

#[test]
fn log_stream_tail_limit_and_timestamps() {
    let h = running_pod();
    let main = h.k.log_instance("u1", "main", false).unwrap();
    let mut b = Bufs::default();
    b.write(main.0, "one\ntwo\nthree\n");
    let mut ls = LogStreams::new();
    let out = ls.open(&log_req(1, "main"), &h.k, &b);
    assert_eq!(chunks_of(&out, 1), ("one\ntwo\nthree\n".into(), true, None));
    let out = ls.open(
        &LogRequest {
            tail_lines: Some(1),
            ..log_req(2, "main")
        },
        &h.k,
        &b,
    );
    assert_eq!(chunks_of(&out, 2), ("three\n".into(), true, None));
    let out = ls.open(
        &LogRequest {
            limit_bytes: Some(5),
            ..log_req(3, "main")
        },
        &h.k,
        &b,
    );
    assert_eq!(chunks_of(&out, 3), ("one\nt".into(), true, None));
    let out = ls.open(
        &LogRequest {
            tail_lines: Some(1),
            timestamps: true,
            ..log_req(4, "main")
        },
        &h.k,
        &b,
    );
    assert_eq!(
        chunks_of(&out, 4).0,
        "2023-11-14T22:13:20.000000000Z three\n"
    );
    // A running container with no output yet: an empty, finished stream.
    let side = h.k.log_instance("u1", "side", false).unwrap();
    b.write(side.0, "");
    let out = ls.open(&log_req(5, "side"), &h.k, &b);
    assert_eq!(chunks_of(&out, 5), (String::new(), true, None));
    assert!(ls.is_empty(), "snapshots hold no state");
}

#[test]
fn log_stream_follow_sends_new_output_then_eof_when_the_instance_ends() {
    let h = running_pod();
    let main = h.k.log_instance("u1", "main", false).unwrap().0;
    let mut b = Bufs::default();
    b.write(main, "early\n");
    let mut ls = LogStreams::new();
    let req = LogRequest {
        follow: true,
        ..log_req(7, "main")
    };
    let out = ls.open(&req, &h.k, &b);
    assert_eq!(chunks_of(&out, 7), ("early\n".into(), false, None));
    assert_eq!(ls.len(), 1);
    // Nothing new: nothing sent. A partial line waits for its newline.
    assert!(ls.poll(&b).is_empty());
    b.write(main, "later");
    assert!(ls.poll(&b).is_empty());
    b.write(main, " line\nmore\n");
    assert_eq!(
        chunks_of(&ls.poll(&b), 7),
        ("later line\nmore\n".into(), false, None)
    );
    b.write(main, "last words");
    b.close(main);
    assert_eq!(
        chunks_of(&ls.poll(&b), 7),
        ("last words".into(), true, None)
    );
    assert!(ls.is_empty());
    assert!(ls.poll(&b).is_empty());

    // Following with nothing written yet: an empty first chunk says it started.
    let side = h.k.log_instance("u1", "side", false).unwrap().0;
    b.write(side, "");
    let out = ls.open(
        &LogRequest {
            follow: true,
            ..log_req(8, "side")
        },
        &h.k,
        &b,
    );
    assert_eq!(
        out,
        vec![NodeToPlane::LogChunk {
            stream: 8,
            data: vec![],
            eof: false,
            error: None
        }]
    );
    // The runtime freed the instance: the stream ends.
    b.0.remove(&ContainerId(side));
    assert_eq!(chunks_of(&ls.poll(&b), 8), (String::new(), true, None));
}

#[test]
fn log_stream_previous_reads_the_exited_instance() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    h.rt.script("main", &[exits(1, 1), FOREVER]);
    h.run_to(0.5);
    let mut b = Bufs::default();
    b.write(1, "first run\n");
    let mut ls = LogStreams::new();
    let prev = LogRequest {
        previous: true,
        ..log_req(1, "main")
    };
    let out = ls.open(&prev, &h.k, &b);
    assert_eq!(
        chunks_of(&out, 1),
        (
            String::new(),
            true,
            Some("previous terminated container \"main\" in pod \"pod-u1\" not found".into())
        )
    );
    h.run_to(2.0);
    b.close(1);
    b.write(2, "second run\n");
    let out = ls.open(&LogRequest { stream: 2, ..prev }, &h.k, &b);
    assert_eq!(chunks_of(&out, 2), ("first run\n".into(), true, None));
    let out = ls.open(&log_req(3, "main"), &h.k, &b);
    assert_eq!(chunks_of(&out, 3), ("second run\n".into(), true, None));
}

#[test]
fn log_stream_cancel_and_errors() {
    let h = running_pod();
    let main = h.k.log_instance("u1", "main", false).unwrap().0;
    let mut b = Bufs::default();
    b.write(main, "x\n");
    let mut ls = LogStreams::new();
    let follow = LogRequest {
        follow: true,
        ..log_req(1, "main")
    };
    let open = PlaneToNode::LogRequest(follow.clone());
    assert_eq!(chunks_of(&ls.handle(&open, &h.k, &b).unwrap(), 1).0, "x\n");
    // The same id twice is a plane bug, refused without touching the first.
    let again = ls.handle(&open, &h.k, &b).unwrap();
    assert_eq!(
        chunks_of(&again, 1).2.as_deref(),
        Some("log stream 1 is already open")
    );
    let cancel = PlaneToNode::LogCancel { stream: 1 };
    assert_eq!(
        ls.handle(&cancel, &h.k, &b).unwrap(),
        vec![NodeToPlane::LogChunk {
            stream: 1,
            data: vec![],
            eof: true,
            error: Some("cancelled".into())
        }]
    );
    assert!(ls.is_empty());
    b.write(main, "after cancel\n");
    assert!(ls.poll(&b).is_empty());
    assert!(ls.handle(&cancel, &h.k, &b).unwrap().is_empty());
    assert!(
        ls.handle(&PlaneToNode::Ping { nonce: 1 }, &h.k, &b)
            .is_none()
    );

    let err = |req: LogRequest, ls: &mut LogStreams| {
        let out = ls.open(&req, &h.k, &b);
        let (text, eof, e) = chunks_of(&out, req.stream);
        assert!(text.is_empty() && eof);
        e.unwrap()
    };
    assert_eq!(
        err(log_req(2, "nope"), &mut ls),
        "container nope is not valid for pod pod-u1"
    );
    assert_eq!(
        err(
            LogRequest {
                pod_uid: "u9".into(),
                ..log_req(3, "main")
            },
            &mut ls
        ),
        "pod with uid \"u9\" is not on node \"node-1\""
    );
    for i in 0..logs::MAX_STREAMS as u32 {
        ls.open(
            &LogRequest {
                stream: 100 + i,
                ..follow.clone()
            },
            &h.k,
            &b,
        );
    }
    assert_eq!(ls.len(), logs::MAX_STREAMS);
    assert!(
        err(
            LogRequest {
                stream: 9,
                ..follow
            },
            &mut ls
        )
        .contains("already serves 64")
    );
    ls.clear();
    assert!(ls.is_empty());
}

#[test]
fn log_stream_waiting_container_says_why() {
    let mut h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    h.rt.script(
        "main",
        &[Behave {
            create: 10 * SEC,
            ..FOREVER
        }],
    );
    h.run_to(0.5);
    let b = Bufs::default();
    let out = LogStreams::new().open(&log_req(1, "main"), &h.k, &b);
    // The instance exists but the runtime has no buffer for it yet.
    assert!(chunks_of(&out, 1).2.unwrap().contains("has no log"));
    let h = H::with_pods(vec![pod(
        "u1",
        RestartPolicy::Always,
        vec![container("main")],
    )]);
    let out = LogStreams::new().open(&log_req(1, "main"), &h.k, &b);
    assert_eq!(
        chunks_of(&out, 1).2.unwrap(),
        "container \"main\" in pod \"pod-u1\" is waiting to start - no logs yet"
    );
}

#[test]
fn log_stream_splits_output_into_bounded_chunks() {
    let h = running_pod();
    let main = h.k.log_instance("u1", "main", false).unwrap().0;
    let mut b = Bufs::default();
    let mut all = String::new();
    for i in 0..20_000 {
        all.push_str(&alloc::format!("line {i:05} of the log\n"));
    }
    b.write(main, &all);
    let mut ls = LogStreams::new();
    let out = ls.open(&log_req(1, "main"), &h.k, &b);
    assert!(
        out.len() > all.len() / MAX_LOG_CHUNK,
        "{} chunks",
        out.len()
    );
    assert_eq!(chunks_of(&out, 1), (all.clone(), true, None));
    for m in &out {
        encode_frame(m, MAX_FRAME).expect("every chunk fits a frame");
    }
    // Followers get a burst in bounded chunks too.
    let mut ls = LogStreams::new();
    let follow = LogRequest {
        follow: true,
        tail_lines: Some(0),
        ..log_req(2, "main")
    };
    assert_eq!(chunks_of(&ls.open(&follow, &h.k, &b), 2).0, "");
    b.write(main, &all);
    let out = ls.poll(&b);
    assert!(out.len() > 1);
    assert_eq!(chunks_of(&out, 2), (all, false, None));
}
