//! Counters and the heartbeat latency histogram (for the node benchmark).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: AtomicU64,
    pub sessions: AtomicU64,
    pub lease_renewals: AtomicU64,
    pub refused: AtomicU64,
    /// Frames from and to registered nodes.
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    /// Bytes (TLS plaintext) from and to registered nodes.
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub usage_reports: AtomicU64,
    /// Time to apply one LeaseRenew to the API (microseconds), sampled.
    lease_us: Mutex<Vec<u32>>,
}

/// Keep at most this many samples; later ones overwrite at random-ish slots
/// so memory stays bounded in long runs.
const MAX_SAMPLES: usize = 1 << 20;

impl Metrics {
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(c: &AtomicU64, n: usize) {
        c.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn observe_lease(&self, d: Duration) {
        let us = d.as_micros().min(u32::MAX as u128) as u32;
        let n = self.lease_renewals.fetch_add(1, Ordering::Relaxed) as usize;
        let mut v = self.lease_us.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() < MAX_SAMPLES {
            v.push(us);
        } else {
            v[n % MAX_SAMPLES] = us;
        }
    }

    /// Takes the lease latency samples gathered so far.
    pub fn take_lease_samples(&self) -> Vec<u32> {
        std::mem::take(&mut *self.lease_us.lock().unwrap_or_else(|e| e.into_inner()))
    }
}
