//! The scheduling queue: pending pods in priority order, exponential
//! back-off after failed attempts (1 s doubling to 10 s, kube's defaults),
//! and a holding set of unschedulable pods that cluster changes (node
//! added or changed, pod removed) move back. Time is passed in, so the
//! queue is tested without clocks.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::PodInfo;

pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Unschedulable pods are retried at least this often even without events
/// (kube's podMaxInUnschedulablePodsDuration).
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Active,
    Backoff,
    Unschedulable,
    InFlight,
}

#[derive(Debug)]
struct Entry {
    info: Arc<PodInfo>,
    place: Where,
    /// Bumped on every move, so stale heap items are skipped.
    generation: u64,
    attempts: u32,
    last_attempt: Option<Instant>,
    unschedulable_since: Option<Instant>,
    /// `moves` when the pod was popped: a cluster change during its cycle
    /// sends a failed pod to back-off instead of the holding set.
    popped_at_move: u64,
}

impl Entry {
    fn backoff_until(&self) -> Option<Instant> {
        let last = self.last_attempt?;
        if self.attempts == 0 {
            return None;
        }
        let shift = (self.attempts - 1).min(16);
        let d = INITIAL_BACKOFF
            .checked_mul(1 << shift)
            .unwrap_or(MAX_BACKOFF)
            .min(MAX_BACKOFF);
        Some(last + d)
    }
}

/// Pending pods by `namespace/name`.
#[derive(Debug, Default)]
pub struct SchedulingQueue {
    pods: HashMap<String, Entry>,
    /// (priority, earlier first, key, generation)
    active: BinaryHeap<(i32, Reverse<u64>, String, u64)>,
    backoff: BinaryHeap<Reverse<(Instant, String, u64)>>,
    seq: u64,
    moves: u64,
}

impl SchedulingQueue {
    /// A new or changed pending pod. A changed pod waiting as unschedulable
    /// gets another try (after its back-off).
    pub fn add_or_update(&mut self, info: Arc<PodInfo>, now: Instant) {
        let key = info.key.clone();
        match self.pods.get_mut(&key) {
            Some(e) => {
                e.info = info;
                if e.place == Where::Unschedulable {
                    self.requeue(&key, now);
                }
            }
            None => {
                self.pods.insert(
                    key.clone(),
                    Entry {
                        info,
                        place: Where::Active,
                        generation: 0,
                        attempts: 0,
                        last_attempt: None,
                        unschedulable_since: None,
                        popped_at_move: 0,
                    },
                );
                self.push_active(&key);
            }
        }
    }

    pub fn delete(&mut self, key: &str) {
        self.pods.remove(key);
    }

    /// Keeps only the pods `keep` accepts (after a relist).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.pods.retain(|k, _| keep(k));
    }

    pub fn contains(&self, key: &str) -> bool {
        self.pods.contains_key(key)
    }

    /// The next pod to schedule: back-offs that ended join the active
    /// queue first, then the highest priority (oldest first) is taken.
    pub fn pop(&mut self, now: Instant) -> Option<Arc<PodInfo>> {
        self.flush_backoff(now);
        while let Some((_, _, key, generation)) = self.active.pop() {
            let Some(e) = self.pods.get_mut(&key) else {
                continue;
            };
            if e.generation != generation || e.place != Where::Active {
                continue;
            }
            e.place = Where::InFlight;
            e.attempts += 1;
            e.last_attempt = Some(now);
            e.popped_at_move = self.moves;
            return Some(e.info.clone());
        }
        None
    }

    /// Whether `pop` would return a pod now.
    pub fn has_active(&mut self, now: Instant) -> bool {
        self.flush_backoff(now);
        loop {
            let Some((_, _, key, generation)) = self.active.peek() else {
                return false;
            };
            if self
                .pods
                .get(key)
                .is_some_and(|e| e.generation == *generation && e.place == Where::Active)
            {
                return true;
            }
            self.active.pop();
        }
    }

    /// The pod fit nowhere: hold it until the cluster changes (or, if it
    /// already changed during the attempt, retry after back-off).
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let moves = self.moves;
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        if e.popped_at_move != moves {
            self.push_backoff(key);
            return;
        }
        e.generation += 1;
        e.place = Where::Unschedulable;
        e.unschedulable_since = Some(now);
    }

    /// An error not about fit (bind failed, API error): retry after back-off.
    pub fn retry(&mut self, key: &str) {
        self.push_backoff(key);
    }

    /// The pod is bound: it leaves the queue.
    pub fn done(&mut self, key: &str) {
        self.pods.remove(key);
    }

    /// A node was added or changed, or a pod went away: unschedulable pods
    /// may fit now.
    pub fn move_all(&mut self, now: Instant) {
        self.moves += 1;
        let keys: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| e.place == Where::Unschedulable)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.requeue(&k, now);
        }
    }

    /// Retries pods held as unschedulable for longer than MAX_UNSCHEDULABLE.
    pub fn flush_unschedulable(&mut self, now: Instant) {
        let keys: Vec<String> = self
            .pods
            .iter()
            .filter(|(_, e)| {
                e.place == Where::Unschedulable
                    && e.unschedulable_since
                        .is_some_and(|t| now.duration_since(t) >= MAX_UNSCHEDULABLE)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            self.requeue(&k, now);
        }
    }

    /// When the earliest back-off ends, for the caller's timer.
    pub fn next_backoff_end(&mut self) -> Option<Instant> {
        while let Some(Reverse((t, key, generation))) = self.backoff.peek() {
            if self
                .pods
                .get(key)
                .is_some_and(|e| e.generation == *generation && e.place == Where::Backoff)
            {
                return Some(*t);
            }
            self.backoff.pop();
        }
        None
    }

    /// (active, backoff, unschedulable, in flight)
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for e in self.pods.values() {
            match e.place {
                Where::Active => c.0 += 1,
                Where::Backoff => c.1 += 1,
                Where::Unschedulable => c.2 += 1,
                Where::InFlight => c.3 += 1,
            }
        }
        c
    }

    fn requeue(&mut self, key: &str, now: Instant) {
        let Some(e) = self.pods.get(key) else { return };
        if e.backoff_until().is_some_and(|t| t > now) {
            self.push_backoff(key);
        } else {
            self.push_active(key);
        }
    }

    fn push_active(&mut self, key: &str) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        self.seq += 1;
        e.generation += 1;
        e.place = Where::Active;
        e.unschedulable_since = None;
        self.active.push((
            e.info.priority,
            Reverse(self.seq),
            key.to_string(),
            e.generation,
        ));
    }

    fn push_backoff(&mut self, key: &str) {
        let Some(e) = self.pods.get_mut(key) else {
            return;
        };
        let Some(until) = e.backoff_until() else {
            self.push_active(key);
            return;
        };
        e.generation += 1;
        e.place = Where::Backoff;
        e.unschedulable_since = None;
        self.backoff
            .push(Reverse((until, key.to_string(), e.generation)));
    }

    fn flush_backoff(&mut self, now: Instant) {
        while let Some(Reverse((t, _, _))) = self.backoff.peek() {
            if *t > now {
                break;
            }
            let Reverse((_, key, generation)) = self.backoff.pop().expect("peeked");
            if self
                .pods
                .get(&key)
                .is_some_and(|e| e.generation == generation && e.place == Where::Backoff)
            {
                self.push_active(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::testutil::pod;

    fn info(name: &str, priority: i32) -> Arc<PodInfo> {
        let mut p = PodInfo::new(&pod(name, "", "", &[]));
        p.priority = priority;
        Arc::new(p)
    }

    fn key(name: &str) -> String {
        format!("default/{name}")
    }

    #[test]
    fn priority_then_fifo() {
        let now = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add_or_update(info("low", 0), now);
        q.add_or_update(info("high", 100), now);
        q.add_or_update(info("low2", 0), now);
        let order: Vec<String> =
            std::iter::from_fn(|| q.pop(now).map(|p| p.name.clone())).collect();
        assert_eq!(order, ["high", "low", "low2"]);
    }

    #[test]
    fn backoff_doubles_to_ten_seconds() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add_or_update(info("p", 0), t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..6 {
            assert!(q.pop(now).is_some());
            q.retry(&key("p"));
            assert!(q.pop(now).is_none(), "backing off");
            let end = q.next_backoff_end().unwrap();
            waits.push(end.duration_since(now).as_secs());
            assert!(q.pop(end - Duration::from_millis(1)).is_none());
            now = end;
        }
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        assert!(q.pop(now).is_some());
    }

    #[test]
    fn unschedulable_waits_for_a_cluster_change() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add_or_update(info("p", 0), t0);
        q.pop(t0).unwrap();
        q.unschedulable(&key("p"), t0);
        let later = t0 + Duration::from_secs(30);
        assert!(q.pop(later).is_none(), "held without a change");
        assert_eq!(q.counts(), (0, 0, 1, 0));
        q.move_all(later);
        assert_eq!(q.pop(later).unwrap().name, "p");

        // A change right after a failure still honours the back-off.
        q.unschedulable(&key("p"), later);
        q.move_all(later);
        assert!(q.pop(later).is_none());
        assert!(q.pop(later + Duration::from_secs(2)).is_some());
    }

    #[test]
    fn change_during_the_attempt_means_backoff_not_holding() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add_or_update(info("p", 0), t0);
        q.pop(t0).unwrap();
        q.move_all(t0);
        q.unschedulable(&key("p"), t0);
        assert_eq!(q.counts(), (0, 1, 0, 0));
        assert!(q.pop(t0 + Duration::from_secs(1)).is_some());
    }

    #[test]
    fn long_held_pods_are_flushed() {
        let t0 = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add_or_update(info("p", 0), t0);
        q.pop(t0).unwrap();
        q.unschedulable(&key("p"), t0);
        q.flush_unschedulable(t0 + Duration::from_secs(10));
        assert_eq!(q.counts().2, 1);
        q.flush_unschedulable(t0 + MAX_UNSCHEDULABLE);
        assert!(q.pop(t0 + MAX_UNSCHEDULABLE).is_some());
    }

    #[test]
    fn delete_and_update() {
        let now = Instant::now();
        let mut q = SchedulingQueue::default();
        q.add_or_update(info("a", 0), now);
        q.add_or_update(info("b", 0), now);
        q.delete(&key("a"));
        // An update keeps the pod's place and takes the new priority on its
        // next push.
        q.add_or_update(info("b", 5), now);
        assert_eq!(q.pop(now).unwrap().priority, 5);
        assert!(q.pop(now).is_none());
        assert!(!q.has_active(now));
    }
}
