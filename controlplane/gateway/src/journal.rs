//! The gateway's log: every refusal and closed connection with its reason,
//! on stderr and in a bounded in-memory ring that tests and operators can
//! read back.

use std::collections::VecDeque;
use std::sync::Mutex;

const KEEP: usize = 2048;

#[derive(Debug, Default)]
pub struct Journal {
    lines: Mutex<VecDeque<String>>,
    /// Also print to stderr (off in benchmarks with thousands of nodes).
    pub quiet: bool,
}

impl Journal {
    pub fn new(quiet: bool) -> Journal {
        Journal {
            lines: Mutex::default(),
            quiet,
        }
    }

    pub fn log(&self, line: String) {
        if !self.quiet {
            tracing::info!("{line}");
        }
        self.push(line);
    }

    /// What an operator must see: logged at WARN even when quiet.
    pub fn warn(&self, line: String) {
        tracing::warn!("{line}");
        self.push(line);
    }

    fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() == KEEP {
            l.pop_front();
        }
        l.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }
}
