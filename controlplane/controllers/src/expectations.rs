//! Expectations, as kube's controllers keep them: after creating or deleting
//! pods a controller waits until its pod cache shows those changes before it
//! counts again, so a stale cache never makes it create or delete twice.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a controller waits for its cache before counting anyway (a
/// lost watch event must not stall it for good).
const EXPECTATION_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Pending {
    creates: Vec<String>,
    deletes: Vec<String>,
    since: Instant,
}

#[derive(Debug, Default)]
pub struct Expectations {
    m: Mutex<HashMap<String, Pending>>,
}

/// What the cache says about one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    Absent,
    Present,
    Deleting,
}

impl Expectations {
    /// Records the names the owner `key` just created and deleted.
    pub fn expect(&self, key: &str, creates: Vec<String>, deletes: Vec<String>) {
        if creates.is_empty() && deletes.is_empty() {
            return;
        }
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        m.insert(
            key.to_string(),
            Pending {
                creates,
                deletes,
                since: Instant::now(),
            },
        );
    }

    /// True when the cache (`seen`) shows every expected change, or they
    /// are too old to wait for; forgets them then.
    pub fn satisfied(&self, key: &str, seen: impl Fn(&str) -> Seen) -> bool {
        let mut m = self.m.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = m.get(key) else { return true };
        let done = p.since.elapsed() > EXPECTATION_TIMEOUT
            || (p.creates.iter().all(|n| seen(n) != Seen::Absent)
                && p.deletes.iter().all(|n| seen(n) != Seen::Present));
        if done {
            m.remove(key);
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_the_cache() {
        let e = Expectations::default();
        assert!(e.satisfied("a", |_| Seen::Absent));
        e.expect("a", vec!["p1".into()], vec!["p2".into()]);
        assert!(!e.satisfied("a", |_| Seen::Absent));
        assert!(!e.satisfied("a", |_| Seen::Present));
        assert!(e.satisfied("a", |n| if n == "p1" {
            Seen::Present
        } else {
            Seen::Deleting
        }));
        // Forgotten once satisfied.
        assert!(e.satisfied("a", |_| Seen::Absent));
    }
}
