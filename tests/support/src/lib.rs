//! Light test support every crate's tests may use without building the
//! control plane or the node: the benchmark report ([`bench`]), the real
//! third-party clients ([`peers`]), the bounded fuzz driver ([`fuzz`]) and
//! sample statistics. With the feature `api`, [`api::ApiServer`]: the API
//! server in process with kubectl and raw-request helpers, which the API
//! server's tests use and `skiff-e2e`'s plane builds on. The heavy
//! harnesses (the plane with gateway and images, QEMU nodes, a registry)
//! are in `skiff-e2e`.

#[cfg(feature = "api")]
pub mod api;
pub mod bench;
pub mod fuzz;

pub use skiff_build::workspace_root;

/// Polls `f` every 100 ms for up to `secs`; the failure message carries
/// `context()` (e.g. a node's serial log). The one polling helper: the API
/// harness's [`api::ApiServer::eventually`] adds its diagnostics to it.
#[track_caller]
pub fn eventually(
    what: &str,
    secs: u64,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !f() {
        if std::time::Instant::now() >= deadline {
            panic!("timed out after {secs} s waiting for {what}\n{}", context());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A `/metrics` scrape parsed by the Prometheus project's own parser (the
/// Python client's OpenMetrics parser, which also checks the format).
#[derive(Debug)]
pub struct Scrape(Vec<(String, std::collections::BTreeMap<String, String>, f64)>);

impl Scrape {
    /// Parses `text` (a `/metrics` body); panics with the parser's
    /// complaint when it is not valid OpenMetrics.
    #[track_caller]
    pub fn parse(text: &str) -> Scrape {
        use std::io::Write as _;
        // The samples as one JSON list of `[name, labels, value]`.
        const PY: &str = "import json, sys\n\
            from prometheus_client.openmetrics.parser import text_string_to_metric_families\n\
            print(json.dumps([[s.name, s.labels, s.value] \
            for f in text_string_to_metric_families(sys.stdin.read()) for s in f.samples]))\n";
        let mut child = std::process::Command::new(peers::python())
            .args(["-c", PY])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run python");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .expect("feeding the parser");
        let out = child.wait_with_output().expect("python");
        assert!(
            out.status.success(),
            "the Prometheus parser refused the scrape: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        Scrape(serde_json::from_slice(&out.stdout).expect("the parser's JSON"))
    }

    /// The sum of the samples named `sample` (`..._total`, `..._count`)
    /// that carry all of `labels`; `None` when no sample matches.
    pub fn total(&self, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = None;
        for (name, l, v) in &self.0 {
            if name == sample
                && labels
                    .iter()
                    .all(|(k, want)| l.get(*k).is_some_and(|v| v == want))
            {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }
}

/// Median of samples (sorted copy).
pub fn median(samples: &[f64]) -> f64 {
    percentile(samples, 50.0)
}

/// Nearest-rank percentile, `p` in 0..=100.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    assert!(!samples.is_empty(), "no samples");
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = [5.0, 1.0, 4.0, 2.0, 3.0];
        assert_eq!(median(&s), 3.0);
        assert_eq!(percentile(&s, 90.0), 5.0);
        assert_eq!(percentile(&s, 0.0), 1.0);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&ten, 90.0), 9.0);
    }
}

/// The real third-party clients the tests drive, installed by
/// `cargo xtask setup` into `.cache/` and handed over as `SKIFF_KUBECTL`,
/// `SKIFF_KUBECTL_LATEST`, `SKIFF_HELM` and `SKIFF_PYTHON`. A missing tool
/// fails the test (never skips it).
pub mod peers {
    use std::path::PathBuf;

    fn find(var: &str, cached: &str, what: &str) -> PathBuf {
        let p = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| super::workspace_root().join(".cache").join(cached));
        assert!(
            p.exists(),
            "{what} not found at {} (set {var} or run `cargo xtask setup`)",
            p.display()
        );
        p
    }

    /// kubectl 1.33.
    pub fn kubectl() -> PathBuf {
        find(
            "SKIFF_KUBECTL",
            "tools/kubectl-v1.33/kubectl",
            "kubectl 1.33",
        )
    }

    /// The newest kubectl available (1.35, client-go's streaming lists).
    pub fn kubectl_latest() -> PathBuf {
        find(
            "SKIFF_KUBECTL_LATEST",
            "tools/kubectl-v1.35/kubectl",
            "kubectl 1.35",
        )
    }

    /// Helm 4.
    pub fn helm() -> PathBuf {
        find("SKIFF_HELM", "tools/kubectl-v1.35/helm", "Helm 4")
    }

    /// A Python with the official `kubernetes` client, `oras` and
    /// Playwright.
    pub fn python() -> PathBuf {
        find(
            "SKIFF_PYTHON",
            "venv/bin/python",
            "python with the kubernetes client",
        )
    }

    /// Debian's Chromium, which Playwright drives.
    pub fn chromium() -> PathBuf {
        let p = std::env::var_os("SKIFF_CHROMIUM")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
        assert!(
            p.exists(),
            "Chromium not found at {} (set SKIFF_CHROMIUM or run `cargo xtask setup`)",
            p.display()
        );
        p
    }
}
