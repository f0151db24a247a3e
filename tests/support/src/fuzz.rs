//! The one driver of the bounded fuzz tests each crate runs in `cargo test`
//! next to its coverage-guided target in `tests/fuzz`: a time budget
//! (`SKIFF_FUZZ_SECS`), a seeded random source (`SKIFF_FUZZ_SEED`, so a
//! failure reproduces) and byte mutations of seed inputs.

use std::time::{Duration, Instant};

/// A bounded run: call [`Bounded::running`] in the loop.
#[derive(Debug)]
pub struct Bounded {
    deadline: Instant,
    state: u64,
    /// The seed this run started from (print it when a check fails).
    pub seed: u64,
    runs: u64,
}

impl Bounded {
    /// `default_secs` and `default_seed` unless the environment overrides
    /// them.
    pub fn from_env(default_secs: f64, default_seed: u64) -> Bounded {
        let var = |k: &str| std::env::var(k).ok();
        let secs = var("SKIFF_FUZZ_SECS")
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(default_secs);
        let seed = var("SKIFF_FUZZ_SEED")
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_seed);
        Bounded {
            deadline: Instant::now() + Duration::from_secs_f64(secs.max(0.0)),
            state: seed,
            seed,
            runs: 0,
        }
    }

    /// Whether the budget allows another run (counts the runs).
    pub fn running(&mut self) -> bool {
        self.runs += 1;
        Instant::now() < self.deadline
    }

    /// Runs so far.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// splitmix64.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// One to four byte edits: a random byte, a bit flip, a cut, an
    /// insertion or a duplicated run.
    pub fn mutate(&mut self, input: &mut Vec<u8>) {
        for _ in 0..1 + self.below(4) {
            if input.is_empty() {
                input.push(self.next_u64() as u8);
                continue;
            }
            let i = self.below(input.len());
            match self.below(5) {
                0 => input[i] = self.next_u64() as u8,
                1 => input[i] ^= 1 << self.below(8),
                2 => input.truncate(i),
                3 => input.insert(i, self.next_u64() as u8),
                _ => {
                    let end = (i + 1 + self.below(16)).min(input.len());
                    let run = input[i..end].to_vec();
                    input.splice(i..i, run);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_runs_repeat_and_budgets_end() {
        let (mut a, mut b) = (Bounded::from_env(0.0, 7), Bounded::from_env(0.0, 7));
        let mut x = b"seed input".to_vec();
        let mut y = x.clone();
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
            a.mutate(&mut x);
            b.mutate(&mut y);
        }
        assert_eq!(x, y);
        assert!(!a.running(), "a zero budget ends at once");
    }
}
