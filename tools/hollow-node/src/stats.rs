//! What a fleet of hollow nodes measured: heartbeat round trips (a
//! `LeaseRenew` followed by a `Ping`; the gateway handles a node's frames in
//! order, so the `Pong` means the renewal is stored) and connection counts.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Stats {
    pub bootstraps: AtomicU64,
    pub sessions: AtomicU64,
    pub heartbeats: AtomicU64,
    pub errors: AtomicU64,
    pub refusals: AtomicU64,
    pub rotations: AtomicU64,
    /// `kubectl logs` requests served, and cancels received (a follower left).
    pub log_requests: AtomicU64,
    pub log_cancels: AtomicU64,
    heartbeat_us: Mutex<Vec<u32>>,
    last_error: Mutex<Option<String>>,
}

impl Stats {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub fn heartbeat(&self, rtt: Duration) {
        Stats::inc(&self.heartbeats);
        let us = rtt.as_micros().min(u32::MAX as u128) as u32;
        let mut v = self.heartbeat_us.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < 4 << 20 {
            v.push(us);
        }
    }

    /// Takes the heartbeat round-trip samples (microseconds) so far.
    pub fn take_heartbeats(&self) -> Vec<u32> {
        std::mem::take(&mut *self.heartbeat_us.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn error(&self, e: String) {
        Stats::inc(&self.errors);
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(e);
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The q-quantile (0..=1) of samples, sorting them.
pub fn quantile(samples: &mut [u32], q: f64) -> u32 {
    if samples.is_empty() {
        return 0;
    }
    samples.sort_unstable();
    let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
    samples[i]
}
