//! Container restart back-off, as Kubernetes' kubelet does it
//! (`k8s.io/client-go/util/flowcontrol.Backoff`, keyed per container):
//!
//! - when a container that should restart has finished at time `f`, it may
//!   restart now unless it is "in back-off since `f`": `now - f < delay`;
//! - each restart calls `next(f)`: the first one (or the first after the
//!   entry expired) sets `delay = initial` (10 s), later ones double it up to
//!   `max` (300 s);
//! - an entry expires when `f - last_update > 2 * max` (10 min with the
//!   defaults): a container that ran ~10 minutes starts over at 10 s.
//!
//! So a crash-looping container restarts at once, then after 10 s, 20 s,
//! 40 s, … 300 s, 300 s.

use crate::Nanos;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackoffPolicy {
    pub initial: Nanos,
    pub max: Nanos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Backoff {
    /// `(delay, last_update)` once the container has been restarted.
    entry: Option<(Nanos, Nanos)>,
}

impl Backoff {
    fn live_entry(&self, policy: &BackoffPolicy, finished_at: Nanos) -> Option<(Nanos, Nanos)> {
        self.entry
            .filter(|&(_, last)| finished_at.saturating_sub(last) <= 2 * policy.max)
    }

    /// When a container that finished at `finished_at` may start again.
    pub fn ready_at(&self, policy: &BackoffPolicy, finished_at: Nanos) -> Nanos {
        match self.live_entry(policy, finished_at) {
            Some((delay, _)) => finished_at.saturating_add(delay),
            None => finished_at,
        }
    }

    /// Records a restart of a container that finished at `finished_at`.
    pub fn next(&mut self, policy: &BackoffPolicy, finished_at: Nanos) {
        let delay = match self.live_entry(policy, finished_at) {
            Some((d, _)) => d.saturating_mul(2).min(policy.max),
            None => policy.initial,
        };
        self.entry = Some((delay, finished_at));
    }

    /// The current delay, if any (for messages).
    pub fn delay(&self) -> Option<Nanos> {
        self.entry.map(|(d, _)| d)
    }
}
