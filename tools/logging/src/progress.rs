//! Long steps a person waits for (building an image, booting and joining a
//! node, waiting for nodes or pods): a spinner with the step's latest news
//! on a terminal, and on anything else (CI logs, pipes) one line when the
//! step starts and one when it ends, so logs stay readable.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// One step in progress. Dropping it unfinished clears the spinner without
/// a verdict (the caller reports the error).
#[derive(Debug)]
pub struct Progress {
    what: String,
    started: Instant,
    spinner: Option<ProgressBar>,
}

impl Progress {
    /// Starts showing `what` ("booting n1 and joining 127.0.0.1:6444").
    pub fn start(what: impl Into<String>) -> Progress {
        let what = what.into();
        let spinner = std::io::stderr().is_terminal().then(|| {
            let s = ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {prefix} [{elapsed}] {wide_msg}")
                    .expect("a valid template"),
            );
            s.set_prefix(what.clone());
            s.enable_steady_tick(Duration::from_millis(120));
            s
        });
        if spinner.is_none() {
            eprintln!("{what}…");
        }
        Progress {
            what,
            started: Instant::now(),
            spinner,
        }
    }

    /// The step's latest news ("stage: network-up"); shown on a terminal
    /// only.
    pub fn update(&self, news: impl Into<String>) {
        if let Some(s) = &self.spinner {
            s.set_message(news.into());
        }
    }

    /// Something that prints lines to stdout while the step runs (a node's
    /// serial log) without tearing the spinner; it may outlive the step.
    pub fn printer(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let spinner = self.spinner.clone();
        move |line| match &spinner {
            Some(s) => s.suspend(|| println!("{line}")),
            None => println!("{line}"),
        }
    }

    /// Ends the step with what it achieved, and how long it took.
    pub fn finish(self, outcome: impl std::fmt::Display) {
        let line = format!(
            "{}: {outcome} ({:.1} s)",
            self.what,
            self.started.elapsed().as_secs_f64()
        );
        if let Some(s) = &self.spinner {
            s.finish_and_clear();
        }
        eprintln!("{line}");
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(s) = &self.spinner
            && !s.is_finished()
        {
            s.finish_and_clear();
        }
    }
}
