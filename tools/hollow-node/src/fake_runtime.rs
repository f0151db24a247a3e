//! The hollow node's container runtime and prober for the `skiff-kubelet`
//! core: nothing runs; each container instance follows a script read from
//! its pod's annotations, in the kubelet's virtual time.
//!
//! - `hollow.skiff.dev/start-ms`: time spent `Creating` (default 0);
//! - `hollow.skiff.dev/run-ms`: the instance exits this long after it started
//!   (absent: runs until stopped);
//! - `hollow.skiff.dev/exit-code`: its exit code (default 0);
//! - `hollow.skiff.dev/log`: what it prints when it starts running, with
//!   `{container}`, `{attempt}` and `{pod}` replaced (default
//!   [`DEFAULT_LOG`]); a newline is added if missing;
//! - `hollow.skiff.dev/log-every-ms`: while running it also prints
//!   `hollow container NAME tick N` every this many ms (N from 1);
//! - `hollow.skiff.dev/cpu-millis` and `hollow.skiff.dev/memory-bytes`: the
//!   made-up usage it reports while running (defaults [`DEFAULT_CPU_MILLIS`],
//!   [`DEFAULT_MEMORY_BYTES`]); reports say they are simulated.
//!
//! Output is deterministic and timed in the kubelet's clock, so tests can
//! check `kubectl logs`. A stop exits at once with 143 (SIGTERM), a kill
//! with 137. Probes succeed.

use std::collections::HashMap;

use skiff_kubelet::{
    ContainerId, InstanceUsage, LogBuffer, LogSource, MILLI, Nanos, ProbeId, ProbeResult,
    ProbeTarget, Prober, Runtime, RuntimeState, StartError, StartSpec,
};
use skiff_node_proto::NodeUsage;

pub const START_MS: &str = "hollow.skiff.dev/start-ms";
pub const RUN_MS: &str = "hollow.skiff.dev/run-ms";
pub const EXIT_CODE: &str = "hollow.skiff.dev/exit-code";
pub const LOG: &str = "hollow.skiff.dev/log";
pub const LOG_EVERY_MS: &str = "hollow.skiff.dev/log-every-ms";
pub const CPU_MILLIS: &str = "hollow.skiff.dev/cpu-millis";
pub const MEMORY_BYTES: &str = "hollow.skiff.dev/memory-bytes";
/// A container's simulated CPU use: an idle server's.
pub const DEFAULT_CPU_MILLIS: u64 = 1;
/// A container's simulated working set: a small wasm guest's.
pub const DEFAULT_MEMORY_BYTES: u64 = 2 << 20;
/// The simulated node itself: CPU (millicores) and memory on top of its
/// containers'.
const NODE_CPU_MILLIS: u64 = 5;
const NODE_MEMORY_BYTES: u64 = 24 << 20;
/// What a container prints at start without a `hollow.skiff.dev/log`.
pub const DEFAULT_LOG: &str = "hollow container {container} started (attempt {attempt})";
/// Each instance keeps this much output (the kubelet's default
/// `containerLogMaxSize` is 10 MiB; hollow output is tiny).
const LOG_CAP: usize = 1 << 20;
/// The fastest tick line, so a silly annotation can't flood memory.
const MIN_EVERY: Nanos = 10 * MILLI;

#[derive(Debug)]
struct Instance {
    created: Nanos,
    start_after: Nanos,
    run_for: Option<Nanos>,
    exit_code: i32,
    /// Set by stop/kill: (exit code, when).
    ended: Option<(i32, Nanos)>,
    log: LogBuffer,
    /// Printed when it starts running (`None` once printed).
    banner: Option<String>,
    name: String,
    every: Option<Nanos>,
    ticks: u64,
    cpu_millis: u64,
    memory_bytes: u64,
}

impl Instance {
    /// How long it has been running by `now`.
    fn ran(&self, now: Nanos) -> Nanos {
        let started = self.created + self.start_after;
        let upto = self.end().map_or(now, |e| e.min(now));
        upto.saturating_sub(started)
    }

    /// When it stopped running (exit, stop or kill), if it has.
    fn end(&self) -> Option<Nanos> {
        let started = self.created + self.start_after;
        match self.ended {
            Some((_, at)) => Some(at),
            None => self.run_for.map(|r| started + r),
        }
    }

    /// Writes the output due by `now`, and closes the log once it exited.
    /// `wall` maps the kubelet's clock to Unix ms for the timestamps.
    fn advance(&mut self, now: Nanos, wall: impl Fn(Nanos) -> u64) {
        if self.log.is_closed() {
            return;
        }
        let started = self.created + self.start_after;
        let end = self.end();
        // Stopped while still creating: it never ran, so it printed nothing.
        let upto = end.map_or(now, |e| e.min(now));
        if upto >= started
            && let Some(b) = self.banner.take()
        {
            self.log.append(wall(started), b.as_bytes());
        }
        if let Some(every) = self.every.filter(|_| upto >= started) {
            // Lines strictly before the end: an instance that ends prints nothing more.
            let due = match end {
                Some(e) if e <= now => (e - started).saturating_sub(1) / every,
                _ => (upto - started) / every,
            };
            while self.ticks < due {
                self.ticks += 1;
                let at = started + self.ticks * every;
                let line = format!("hollow container {} tick {}\n", self.name, self.ticks);
                self.log.append(wall(at), line.as_bytes());
            }
        }
        if end.is_some_and(|e| e <= now) {
            self.log.close();
        }
    }

    fn state(&self, now: Nanos) -> RuntimeState {
        if let Some((exit_code, _)) = self.ended {
            return RuntimeState::Exited {
                exit_code,
                oom_killed: false,
            };
        }
        let started = self.created + self.start_after;
        if now < started {
            return RuntimeState::Creating;
        }
        match self.run_for {
            Some(r) if now >= started + r => RuntimeState::Exited {
                exit_code: self.exit_code,
                oom_killed: false,
            },
            _ => RuntimeState::Running,
        }
    }

    /// When this instance next changes state by itself.
    fn next_change(&self, now: Nanos) -> Option<Nanos> {
        if self.ended.is_some() {
            return None;
        }
        let started = self.created + self.start_after;
        if now < started {
            return Some(started);
        }
        let tick = self
            .every
            .map(|e| started + (self.ticks + 1) * e)
            .filter(|t| self.run_for.is_none_or(|r| *t < started + r));
        [self.run_for.map(|r| started + r), tick]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .min()
    }
}

#[derive(Debug, Default)]
pub struct FakeRuntime {
    /// The kubelet's clock, set by the driver before each tick.
    pub now: Nanos,
    /// Reported as every pod's IP.
    pub pod_ip: Option<String>,
    /// Unix ms at the kubelet clock's zero (log timestamps).
    pub boot_wall_ms: u64,
    next_id: u64,
    instances: HashMap<ContainerId, Instance>,
}

fn annotation_text<'a>(spec: &'a StartSpec<'_>, key: &str) -> Option<&'a str> {
    spec.pod
        .annotations
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn annotation(spec: &StartSpec<'_>, key: &str) -> Option<u64> {
    annotation_text(spec, key).and_then(|v| v.parse().ok())
}

/// The start banner of one instance, newline-terminated.
fn banner(spec: &StartSpec<'_>) -> String {
    let mut b = annotation_text(spec, LOG)
        .unwrap_or(DEFAULT_LOG)
        .replace("{container}", &spec.container.name)
        .replace("{attempt}", &spec.attempt.to_string())
        .replace("{pod}", &spec.pod.name);
    if !b.ends_with('\n') {
        b.push('\n');
    }
    b
}

impl FakeRuntime {
    pub fn new(pod_ip: Option<String>) -> FakeRuntime {
        FakeRuntime {
            pod_ip,
            ..FakeRuntime::default()
        }
    }

    /// When any instance next changes state by itself (the driver ticks then).
    pub fn next_change(&self) -> Option<Nanos> {
        self.instances
            .values()
            .filter_map(|i| i.next_change(self.now))
            .min()
    }

    pub fn len(&self) -> usize {
        self.instances.len()
    }

    /// Moves the clock to `now` and writes every instance's output due by
    /// then. The driver calls it before each kubelet tick and before
    /// serving a log request.
    pub fn advance(&mut self, now: Nanos) {
        self.now = now;
        let boot = self.boot_wall_ms;
        for i in self.instances.values_mut() {
            i.advance(now, |t| boot + t / MILLI);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

impl Runtime for FakeRuntime {
    fn start(&mut self, spec: &StartSpec<'_>) -> Result<ContainerId, StartError> {
        self.next_id += 1;
        let id = ContainerId(self.next_id);
        self.instances.insert(
            id,
            Instance {
                created: self.now,
                start_after: annotation(spec, START_MS).unwrap_or(0) * MILLI,
                run_for: annotation(spec, RUN_MS).map(|ms| ms * MILLI),
                exit_code: annotation(spec, EXIT_CODE).unwrap_or(0) as i32,
                ended: None,
                log: LogBuffer::new(LOG_CAP),
                banner: Some(banner(spec)),
                name: spec.container.name.clone(),
                every: annotation(spec, LOG_EVERY_MS).map(|ms| (ms * MILLI).max(MIN_EVERY)),
                ticks: 0,
                cpu_millis: annotation(spec, CPU_MILLIS).unwrap_or(DEFAULT_CPU_MILLIS),
                memory_bytes: annotation(spec, MEMORY_BYTES).unwrap_or(DEFAULT_MEMORY_BYTES),
            },
        );
        self.advance(self.now);
        Ok(id)
    }

    fn state(&mut self, id: ContainerId) -> RuntimeState {
        self.instances
            .get(&id)
            .map_or(RuntimeState::Unknown, |i| i.state(self.now))
    }

    fn stop(&mut self, id: ContainerId) {
        let (now, boot) = (self.now, self.boot_wall_ms);
        if let Some(i) = self.instances.get_mut(&id)
            && matches!(i.state(now), RuntimeState::Running | RuntimeState::Creating)
        {
            i.ended = Some((143, now));
            i.advance(now, |t| boot + t / MILLI);
        }
    }

    fn kill(&mut self, id: ContainerId) {
        let (now, boot) = (self.now, self.boot_wall_ms);
        if let Some(i) = self.instances.get_mut(&id)
            && matches!(i.state(now), RuntimeState::Running | RuntimeState::Creating)
        {
            i.ended = Some((137, now));
            i.advance(now, |t| boot + t / MILLI);
        }
    }

    fn remove(&mut self, id: ContainerId) {
        self.instances.remove(&id);
    }

    fn pod_ip(&mut self, _pod_uid: &str) -> Option<String> {
        self.pod_ip.clone()
    }

    /// Made up from the pod's annotations (see the module docs).
    fn usage(&mut self, id: ContainerId) -> Option<InstanceUsage> {
        let i = self.instances.get(&id)?;
        let running = i.state(self.now) == RuntimeState::Running;
        Some(InstanceUsage {
            cpu_ns: i.ran(self.now) * i.cpu_millis / 1000,
            memory_bytes: if running { i.memory_bytes } else { 0 },
            log_bytes: i.log.held_bytes() as u64,
        })
    }

    /// The containers' made-up figures plus the node's own.
    fn node_usage(&mut self) -> Option<NodeUsage> {
        let now = self.now;
        let mut u = NodeUsage {
            cpu_ns: now * NODE_CPU_MILLIS / 1000,
            memory_working_set_bytes: NODE_MEMORY_BYTES,
            ..NodeUsage::default()
        };
        for i in self.instances.values() {
            u.cpu_ns += i.ran(now) * i.cpu_millis / 1000;
            if i.state(now) == RuntimeState::Running {
                u.memory_working_set_bytes += i.memory_bytes;
            }
            u.log_bytes += i.log.held_bytes() as u64;
        }
        Some(u)
    }

    fn usage_simulated(&self) -> bool {
        true
    }
}

impl LogSource for FakeRuntime {
    fn log_buffer(&self, id: ContainerId) -> Option<&LogBuffer> {
        self.instances.get(&id).map(|i| &i.log)
    }
}

/// Every probe passes at once.
#[derive(Debug, Default)]
pub struct PassingProber;

impl Prober for PassingProber {
    fn start(&mut self, _id: ProbeId, _target: &ProbeTarget<'_>) {}
    fn poll(&mut self, _id: ProbeId) -> Option<ProbeResult> {
        Some(ProbeResult::Success)
    }
    fn cancel(&mut self, _id: ProbeId) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(start_after: Nanos, run_for: Option<Nanos>, every: Option<Nanos>) -> Instance {
        Instance {
            created: 0,
            start_after,
            run_for,
            exit_code: 3,
            ended: None,
            log: LogBuffer::new(LOG_CAP),
            banner: Some("hello\n".into()),
            name: "main".into(),
            every,
            ticks: 0,
            cpu_millis: 250,
            memory_bytes: 1 << 20,
        }
    }

    fn text(i: &Instance) -> String {
        let mut r = i.log.reader(&Default::default());
        String::from_utf8(i.log.read(&mut r, usize::MAX).0).unwrap()
    }

    #[test]
    fn instances_follow_their_script() {
        let i = inst(100, Some(1000), None);
        assert_eq!(i.state(50), RuntimeState::Creating);
        assert_eq!(i.next_change(50), Some(100));
        assert_eq!(i.state(500), RuntimeState::Running);
        assert_eq!(i.next_change(500), Some(1100));
        assert_eq!(
            i.state(1100),
            RuntimeState::Exited {
                exit_code: 3,
                oom_killed: false
            }
        );
        assert_eq!(i.next_change(1100), None);
    }

    #[test]
    fn simulated_usage_counts_running_time_only() {
        let mut rt = FakeRuntime::default();
        rt.instances
            .insert(ContainerId(1), inst(SEC_, Some(4 * SEC_), None));
        rt.now = 3 * SEC_;
        let u = rt.usage(ContainerId(1)).unwrap();
        assert_eq!(u.cpu_ns, 2 * SEC_ / 4, "250m for the 2 s it ran");
        assert_eq!(u.memory_bytes, 1 << 20);
        rt.now = 9 * SEC_;
        let u = rt.usage(ContainerId(1)).unwrap();
        assert_eq!(u.cpu_ns, SEC_, "no CPU after it exited at 5 s");
        assert_eq!(u.memory_bytes, 0);
        assert!(rt.usage_simulated());
        let n = rt.node_usage().unwrap();
        assert_eq!(n.cpu_ns, 9 * SEC_ * NODE_CPU_MILLIS / 1000 + SEC_);
    }

    const SEC_: Nanos = 1_000_000_000;

    #[test]
    fn output_is_timed_by_the_script() {
        let wall = |t: Nanos| t / MILLI;
        let mut i = inst(100, Some(3500), Some(1000));
        i.advance(50, wall);
        assert_eq!(text(&i), "");
        i.advance(100, wall);
        assert_eq!(text(&i), "hello\n");
        assert_eq!(i.next_change(100), Some(1100), "the next tick line");
        i.advance(2500, wall);
        assert_eq!(
            text(&i),
            "hello\nhollow container main tick 1\nhollow container main tick 2\n"
        );
        assert!(!i.log.is_closed());
        // It exits at 3600: tick 3 at 3100 is printed, nothing after; then EOF.
        i.advance(9000, wall);
        assert!(text(&i).ends_with("tick 2\nhollow container main tick 3\n"));
        assert!(i.log.is_closed());

        // Stopped while creating: no output, but the log ends.
        let mut i = inst(100, None, None);
        i.ended = Some((143, 50));
        i.advance(200, wall);
        assert_eq!(text(&i), "");
        assert!(i.log.is_closed());
    }
}
