//! Prometheus `/metrics`, encoded by `prometheus-client` in the Prometheus
//! text format: the API server's requests (by verb, group, resource,
//! subresource and code, with kube's latency histogram), requests in flight
//! and long-running ones (watches), the store's revision, compaction,
//! watchers and database size, and the series other components add as
//! [`Collector`]s (the node gateway: connected nodes, frames, images, and
//! the nodes' usage reports). Names are upstream's where the meaning
//! matches. Reading it is authorized like kube's: `get` on the
//! non-resource URL `/metrics` (the `system:monitoring` role).

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The labels of a finished request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
    code: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    verb: String,
    group: String,
    resource: String,
    subresource: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    request_kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    verb: String,
    group: String,
    resource: String,
}

/// What a request was, once routed (kube's verbs in upper case on the
/// wire, as `apiserver_request_total` has them).
#[derive(Debug, Clone, Default)]
pub struct RequestInfo {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
}

/// kube's `apiserver_request_duration_seconds` buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// The API server's series and the registry every `/metrics` scrape encodes.
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    inflight: Family<KindLabels, Gauge>,
    watches: Family<WatchLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out for each verb, group, resource, subresource and HTTP response code.",
            requests.clone(),
        );
        let latency = Family::<LatencyLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb, group, resource and subresource (watches excluded).",
            latency.clone(),
        );
        let inflight = Family::<KindLabels, Gauge>::default();
        registry.register(
            "apiserver_current_inflight_requests",
            "Maximal number of currently used inflight request limit of this apiserver per request kind.",
            inflight.clone(),
        );
        let watches = Family::<WatchLabels, Gauge>::default();
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group and resource.",
            watches.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            requests,
            latency,
            inflight,
            watches,
        }
    }
}

/// Counts one request as in flight until dropped.
#[derive(Debug)]
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// A request of `mutating` kind starts.
    pub fn start(&self, mutating: bool) -> InFlight {
        let kind = if mutating { "mutating" } else { "readOnly" };
        let g = self
            .inflight
            .get_or_create(&KindLabels {
                request_kind: kind.into(),
            })
            .clone();
        g.inc();
        InFlight(g)
    }

    /// A request was answered with `code` after `took`.
    pub fn observe(&self, info: &RequestInfo, code: u16, took: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: info.verb.clone(),
                group: info.group.clone(),
                resource: info.resource.clone(),
                subresource: info.subresource.clone(),
                code: code.to_string(),
            })
            .inc();
        if info.verb != "WATCH" && info.verb != "CONNECT" {
            self.latency
                .get_or_create(&LatencyLabels {
                    verb: info.verb.clone(),
                    group: info.group.clone(),
                    resource: info.resource.clone(),
                    subresource: info.subresource.clone(),
                })
                .observe(took.as_secs_f64());
        }
    }

    /// `resp`, counted as a long-running request until its body ends.
    pub fn long_running(&self, info: &RequestInfo, resp: Response<Body>) -> Response<Body> {
        let g = self
            .watches
            .get_or_create(&WatchLabels {
                verb: info.verb.clone(),
                group: info.group.clone(),
                resource: info.resource.clone(),
            })
            .clone();
        g.inc();
        crate::http::keep_until_sent(resp, InFlight(g))
    }

    /// Adds series a component computes at each scrape.
    pub fn register_collector(&self, c: Box<dyn Collector>) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register_collector(c);
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        prometheus_client::encoding::text::encode(&mut out, &reg)?;
        Ok(out)
    }
}

/// The store's figures, read at each scrape (etcd's names).
#[derive(Debug)]
pub struct StoreCollector {
    pub store: skiff_store::Store,
    pub db_file: std::path::PathBuf,
}

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let size = std::fs::metadata(&self.db_file).map_or(0, |m| m.len() as i64);
        let gauges: [(&str, &str, i64); 4] = [
            (
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
                size,
            ),
            (
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
                self.store.current_revision() as i64,
            ),
            (
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
                self.store.compacted_revision() as i64,
            ),
            (
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
                self.store.watcher_count() as i64,
            ),
        ];
        for (name, help, v) in gauges {
            let g = ConstGauge::new(v);
            let m = encoder.encode_descriptor(name, help, None, g.metric_type())?;
            g.encode(m)?;
        }
        let commits = self.store.commit_durations();
        let m = encoder.encode_descriptor(
            "etcd_disk_backend_commit_duration_seconds",
            "The latency distributions of commit called by backend.",
            None,
            commits.metric_type(),
        )?;
        commits.encode(m)
    }
}
