//! The hollow node's container runtime and prober for the `skiff-kubelet`
//! core: nothing runs; each container instance follows a script read from
//! its pod's annotations, in the kubelet's virtual time.
//!
//! - `hollow.skiff.dev/start-ms`: time spent `Creating` (default 0);
//! - `hollow.skiff.dev/run-ms`: the instance exits this long after it started
//!   (absent: runs until stopped);
//! - `hollow.skiff.dev/exit-code`: its exit code (default 0).
//!
//! A stop exits at once with 143 (SIGTERM), a kill with 137. Probes succeed.

use std::collections::HashMap;

use skiff_kubelet::{
    ContainerId, MILLI, Nanos, ProbeId, ProbeResult, ProbeTarget, Prober, Runtime, RuntimeState,
    StartSpec,
};

pub const START_MS: &str = "hollow.skiff.dev/start-ms";
pub const RUN_MS: &str = "hollow.skiff.dev/run-ms";
pub const EXIT_CODE: &str = "hollow.skiff.dev/exit-code";

#[derive(Debug)]
struct Instance {
    created: Nanos,
    start_after: Nanos,
    run_for: Option<Nanos>,
    exit_code: i32,
    /// Set by stop/kill: (exit code, when).
    ended: Option<(i32, Nanos)>,
}

impl Instance {
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
        self.run_for.map(|r| started + r).filter(|t| *t > now)
    }
}

#[derive(Debug, Default)]
pub struct FakeRuntime {
    /// The kubelet's clock, set by the driver before each tick.
    pub now: Nanos,
    /// Reported as every pod's IP.
    pub pod_ip: Option<String>,
    next_id: u64,
    instances: HashMap<ContainerId, Instance>,
}

fn annotation(spec: &StartSpec<'_>, key: &str) -> Option<u64> {
    spec.pod
        .annotations
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.parse().ok())
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

    pub fn is_empty(&self) -> bool {
        self.instances.is_empty()
    }
}

impl Runtime for FakeRuntime {
    fn start(&mut self, spec: &StartSpec<'_>) -> Result<ContainerId, String> {
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
            },
        );
        Ok(id)
    }

    fn state(&mut self, id: ContainerId) -> RuntimeState {
        self.instances
            .get(&id)
            .map_or(RuntimeState::Unknown, |i| i.state(self.now))
    }

    fn stop(&mut self, id: ContainerId) {
        let now = self.now;
        if let Some(i) = self.instances.get_mut(&id)
            && matches!(i.state(now), RuntimeState::Running | RuntimeState::Creating)
        {
            i.ended = Some((143, now));
        }
    }

    fn kill(&mut self, id: ContainerId) {
        let now = self.now;
        if let Some(i) = self.instances.get_mut(&id)
            && matches!(i.state(now), RuntimeState::Running | RuntimeState::Creating)
        {
            i.ended = Some((137, now));
        }
    }

    fn remove(&mut self, id: ContainerId) {
        self.instances.remove(&id);
    }

    fn pod_ip(&mut self, _pod_uid: &str) -> Option<String> {
        self.pod_ip.clone()
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

    #[test]
    fn instances_follow_their_script() {
        let i = Instance {
            created: 0,
            start_after: 100,
            run_for: Some(1000),
            exit_code: 3,
            ended: None,
        };
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
}
