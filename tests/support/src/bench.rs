//! Shared bits of the benchmark examples: arguments and the JSON report
//! (format: `tools/xtask/src/bench.rs`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub value: f64,
    /// "higher" or "lower".
    pub better: &'static str,
    pub peer: Option<(String, f64)>,
}

impl Figure {
    pub fn new(
        name: impl Into<String>,
        unit: &'static str,
        value: f64,
        better: &'static str,
    ) -> Self {
        Self {
            name: name.into(),
            unit,
            value,
            better,
            peer: None,
        }
    }

    pub fn peer(mut self, peer: impl Into<String>, value: f64) -> Self {
        self.peer = Some((peer.into(), value));
        self
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "name": self.name,
            "unit": self.unit,
            "value": round(self.value),
            "better": self.better,
        });
        if let Some((peer, pv)) = &self.peer {
            v["peer"] = json!(peer);
            v["peer_value"] = json!(round(*pv));
            if *pv != 0.0 {
                v["ratio"] = json!(round(self.value / pv));
            }
        }
        v
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The latencies of one measured row and the wall time the row took.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    pub lat: Vec<Duration>,
    pub wall: Duration,
}

impl Latencies {
    /// The `q` quantile (0..=1) in milliseconds, by rounded rank; NaN (a
    /// `null` in the report) when nothing was measured.
    pub fn pct(&self, q: f64) -> f64 {
        let mut v = self.lat.clone();
        v.sort();
        if v.is_empty() {
            return f64::NAN;
        }
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i].as_secs_f64() * 1000.0
    }

    /// Operations per second over the row's wall time.
    pub fn ops(&self) -> f64 {
        self.lat.len() as f64 / self.wall.as_secs_f64()
    }
}

/// `--out PATH` plus `--name value` options, from `std::env::args`.
#[derive(Debug)]
pub struct Args {
    pub out: PathBuf,
    rest: Vec<(String, String)>,
}

impl Args {
    pub fn parse(default_out: &str) -> Self {
        let mut out = PathBuf::from(default_out);
        let mut rest = Vec::new();
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                panic!("unexpected argument {a:?}");
            };
            let val = it.next().unwrap_or_else(|| panic!("--{key} needs a value"));
            if key == "out" {
                out = val.into();
            } else {
                rest.push((key.to_owned(), val));
            }
        }
        Self { out, rest }
    }

    pub fn get<T: std::str::FromStr>(&self, key: &str, default: T) -> T {
        match self.rest.iter().find(|(k, _)| k == key) {
            Some((_, v)) => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value for --{key}: {v:?}")),
            None => default,
        }
    }
}

/// Writes `{ "bench": name, "figures": [...], "notes": [...] }` and prints it.
pub fn write_report(out: &std::path::Path, bench: &str, figures: &[Figure], notes: &[String]) {
    let v = json!({
        "bench": bench,
        "figures": figures.iter().map(Figure::json).collect::<Vec<_>>(),
        "notes": notes,
    });
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).expect("creating the output directory");
    }
    let text = serde_json::to_string_pretty(&v).expect("json");
    std::fs::write(out, &text).expect("writing the report");
    eprintln!("wrote {}", out.display());
}
