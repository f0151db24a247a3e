//! The gateway's Prometheus series, computed at each scrape of the API
//! server's `/metrics`: connected nodes and frames, and the nodes' latest
//! usage reports as the kubelet's resource metrics name them
//! (`node_cpu_usage_seconds_total`, `container_cpu_usage_seconds_total`,
//! `container_memory_working_set_bytes`, ...), and the image service's
//! resolves, downloads, compiles and cache hits. Series of simulated nodes
//! (hollow nodes) carry `simulated="true"`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use skiff_apiserver::prometheus_client::collector::Collector;
use skiff_apiserver::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use skiff_apiserver::prometheus_client::metrics::MetricType;
use skiff_apiserver::prometheus_client::metrics::counter::ConstCounter;
use skiff_apiserver::prometheus_client::metrics::gauge::ConstGauge;

use crate::Shared;

/// Registered with the API server's registry by [`crate::start`].
pub(crate) struct GatewayCollector(pub Arc<Shared>);

impl std::fmt::Debug for GatewayCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCollector").finish_non_exhaustive()
    }
}

type Labels = Vec<(&'static str, String)>;

/// One family of counters or gauges.
fn family(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    counter: bool,
    series: &[(Labels, f64)],
) -> Result<(), std::fmt::Error> {
    let kind = if counter {
        MetricType::Counter
    } else {
        MetricType::Gauge
    };
    let mut f = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, v) in series {
        let m = f.encode_family(labels)?;
        if counter {
            ConstCounter::new(*v).encode(m)?;
        } else {
            ConstGauge::new(*v).encode(m)?;
        }
    }
    Ok(())
}

impl Collector for GatewayCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let m = &self.0.metrics;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        family(
            &mut encoder,
            "skiff_gateway_connected_nodes",
            "Nodes with a registered session now.",
            false,
            &[(vec![], self.0.live_nodes() as f64)],
        )?;
        family(
            &mut encoder,
            "skiff_gateway_connections",
            "Connections accepted by the node gateway.",
            true,
            &[(vec![], n(&m.connections))],
        )?;
        family(
            &mut encoder,
            "skiff_gateway_frames_received",
            "Node protocol frames received from registered nodes.",
            true,
            &[(vec![], n(&m.frames_in))],
        )?;
        family(
            &mut encoder,
            "skiff_gateway_frames_sent",
            "Node protocol frames sent to registered nodes.",
            true,
            &[(vec![], n(&m.frames_out))],
        )?;
        family(
            &mut encoder,
            "skiff_gateway_received_bytes",
            "Node protocol bytes received from registered nodes (TLS plaintext).",
            true,
            &[(vec![], n(&m.bytes_in))],
        )?;
        family(
            &mut encoder,
            "skiff_gateway_sent_bytes",
            "Node protocol bytes sent to registered nodes (TLS plaintext).",
            true,
            &[(vec![], n(&m.bytes_out))],
        )?;
        family(
            &mut encoder,
            "skiff_gateway_usage_reports",
            "Resource usage reports received from nodes.",
            true,
            &[(vec![], n(&m.usage_reports))],
        )?;

        let reports = self.0.usage.latest();
        let node = |name: &str, simulated: bool| -> Labels {
            vec![
                ("node", name.to_string()),
                ("simulated", simulated.to_string()),
            ]
        };
        let mut cpu = Vec::new();
        let mut mem = Vec::new();
        let mut rx = Vec::new();
        let mut tx = Vec::new();
        let mut logs = Vec::new();
        let mut ccpu = Vec::new();
        let mut cmem = Vec::new();
        for (name, r) in &reports {
            let l = node(name, r.simulated);
            cpu.push((l.clone(), r.node.cpu_ns as f64 / 1e9));
            mem.push((l.clone(), r.node.memory_working_set_bytes as f64));
            rx.push((l.clone(), r.node.net_rx_bytes as f64));
            tx.push((l.clone(), r.node.net_tx_bytes as f64));
            logs.push((l, r.node.log_bytes as f64));
            for p in &r.pods {
                for c in &p.containers {
                    let l: Labels = vec![
                        ("container", c.name.clone()),
                        ("namespace", p.namespace.clone()),
                        ("node", name.clone()),
                        ("pod", p.name.clone()),
                        ("simulated", r.simulated.to_string()),
                    ];
                    ccpu.push((l.clone(), c.cpu_ns as f64 / 1e9));
                    cmem.push((l, c.memory_working_set_bytes as f64));
                }
            }
        }
        family(
            &mut encoder,
            "node_cpu_usage_seconds",
            "Cumulative cpu time consumed by the node in core-seconds.",
            true,
            &cpu,
        )?;
        family(
            &mut encoder,
            "node_memory_working_set_bytes",
            "Current working set of the node in bytes.",
            false,
            &mem,
        )?;
        family(
            &mut encoder,
            "node_network_receive_bytes",
            "Cumulative bytes received by the node's interface.",
            true,
            &rx,
        )?;
        family(
            &mut encoder,
            "node_network_transmit_bytes",
            "Cumulative bytes sent by the node's interface.",
            true,
            &tx,
        )?;
        family(
            &mut encoder,
            "skiff_node_log_buffer_bytes",
            "Bytes held in the node's container log buffers.",
            false,
            &logs,
        )?;
        family(
            &mut encoder,
            "container_cpu_usage_seconds",
            "Cumulative cpu time consumed by the container in core-seconds.",
            true,
            &ccpu,
        )?;
        family(
            &mut encoder,
            "container_memory_working_set_bytes",
            "Current working set of the container in bytes.",
            false,
            &cmem,
        )?;
        let Some(images) = &self.0.cfg.images else {
            return Ok(());
        };
        let stats = images.0.stats();
        for (name, help, v) in [
            (
                "skiff_image_resolves",
                "Image references resolved against their registry (manifest round trips).",
                stats.resolves,
            ),
            (
                "skiff_image_downloads",
                "Wasm module blobs downloaded from registries.",
                stats.downloads,
            ),
            (
                "skiff_image_compiles",
                "Wasm modules compiled ahead of time for the nodes.",
                stats.compiles,
            ),
            (
                "skiff_image_cache_hits",
                "Pulls whose module was already compiled (memory or disk cache).",
                stats.cache_hits,
            ),
        ] {
            family(&mut encoder, name, help, true, &[(vec![], v as f64)])?;
        }
        Ok(())
    }
}
