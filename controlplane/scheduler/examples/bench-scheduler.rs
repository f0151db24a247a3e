//! `cargo xtask bench scheduler`: kube's scheduler_perf SchedulingBasic in
//! our setting. Per row: a fresh control plane in process (API server over
//! its store), N Node objects created through the API (no kubelets, as in
//! scheduler_perf), the scheduler started with its own credentials, then M
//! pending pods created concurrently; a pod watch records when each pod is
//! seen bound. Throughput is M over the time from the first create to the
//! last bind; latency is per pod, from its create returning to its bind
//! being observed.
//!
//! Options: `--sizes 1000x10000,5000x10000` (nodes x pods per row),
//! `--create-concurrency 64`, `--timeout 900` (seconds per row).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    Container, Node, NodeSpec, NodeStatus, Pod, PodSpec, ResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use skiff_scheduler::SchedulerConfig;
use skiff_scheduler::plugins::default_profile;
use skiff_test_support::api::ApiServer;
use skiff_test_support::bench::{Args, Figure, Latencies, write_report};

/// kube-scheduler's SchedulingBasic threshold in scheduler_perf's
/// performance-config.yaml (pods/s).
const PEER_THRESHOLD: f64 = 680.0;

fn quantities(kv: &[(&str, &str)]) -> BTreeMap<String, Quantity> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
        .collect()
}

/// scheduler_perf's node-default.yaml: 4 cores, 32 GiB, 110 pods.
fn node(i: usize) -> Node {
    let name = format!("node-{i}");
    let cap = quantities(&[("cpu", "4"), ("memory", "32Gi"), ("pods", "110")]);
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(
                [
                    ("kubernetes.io/hostname".to_string(), name),
                    (
                        "topology.kubernetes.io/zone".to_string(),
                        format!("zone-{}", i % 3),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            capacity: Some(cap.clone()),
            allocatable: Some(cap),
            ..Default::default()
        }),
    }
}

/// scheduler_perf's pod-default.yaml: 100m CPU, 500Mi memory.
fn pod(name: String) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some("default".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "pause".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                resources: Some(ResourceRequirements {
                    requests: Some(quantities(&[("cpu", "100m"), ("memory", "500Mi")])),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: None,
    }
}

struct Row {
    nodes: usize,
    pods: usize,
    node_create: Duration,
    create_wall: Duration,
    lat: Latencies,
    bound: usize,
    unbound_after_timeout: usize,
    stats: Arc<skiff_scheduler::Stats>,
}

async fn create_all<K, F>(
    api: Api<K>,
    n: usize,
    conc: usize,
    make: F,
) -> Vec<Result<Instant, String>>
where
    K: kube::Resource
        + Clone
        + k8s_openapi::serde::de::DeserializeOwned
        + k8s_openapi::serde::Serialize
        + std::fmt::Debug,
    F: Fn(usize) -> K,
{
    let objs: Vec<K> = (0..n).map(make).collect();
    futures::stream::iter(objs)
        .map(|o| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &o)
                    .await
                    .map(|_| Instant::now())
                    .map_err(|e| e.to_string())
            }
        })
        .buffered(conc)
        .collect()
        .await
}

async fn run_row(
    plane: &ApiServer,
    nodes: usize,
    pods: usize,
    conc: usize,
    timeout: Duration,
) -> Result<Row, String> {
    let admin = skiff_scheduler::client_from_kubeconfig(&plane.kubeconfig, None)
        .await
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    let made = create_all(Api::<Node>::all(admin.clone()), nodes, conc, node).await;
    if let Some(Err(e)) = made.into_iter().find(Result::is_err) {
        return Err(format!("creating nodes: {e}"));
    }
    let node_create = t.elapsed();
    eprintln!(
        "  {nodes} nodes created in {:.1}s",
        node_create.as_secs_f64()
    );

    let sched_kc = plane
        .dir
        .path()
        .join("pki")
        .join(skiff_apiserver::pki::SCHEDULER_KUBECONFIG);
    let sched_client = skiff_scheduler::client_from_kubeconfig(&sched_kc, Some(&plane.url))
        .await
        .map_err(|e| e.to_string())?;
    let cfg = SchedulerConfig::new(default_profile());
    let stats = cfg.stats.clone();
    let sched = tokio::spawn(skiff_scheduler::run(sched_client, cfg));

    // Bind times, observed through a watch of our own.
    let bound_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watch = {
        let bound_at = bound_at.clone();
        let api: Api<Pod> = Api::namespaced(admin.clone(), "default");
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default()).boxed();
            while let Ok(Some(ev)) = s.try_next().await {
                if let watcher::Event::Apply(p) | watcher::Event::InitApply(p) = ev
                    && p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                {
                    let now = Instant::now();
                    bound_at
                        .lock()
                        .unwrap()
                        .entry(p.metadata.name.unwrap_or_default())
                        .or_insert(now);
                }
            }
        })
    };
    // Warm up: the scheduler and the watch are synced once this is bound.
    let pods_api: Api<Pod> = Api::namespaced(admin.clone(), "default");
    pods_api
        .create(&PostParams::default(), &pod("warmup".into()))
        .await
        .map_err(|e| format!("warm-up pod: {e}"))?;
    let warm = Instant::now();
    while !bound_at.lock().unwrap().contains_key("warmup") {
        if warm.elapsed() > Duration::from_secs(60) {
            return Err("the warm-up pod was not bound in 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let start = Instant::now();
    let created = create_all(pods_api, pods, conc, |i| pod(format!("pod-{i}"))).await;
    let create_wall = start.elapsed();
    eprintln!(
        "  {pods} pods created in {:.1}s ({:.0}/s)",
        create_wall.as_secs_f64(),
        pods as f64 / create_wall.as_secs_f64()
    );
    let deadline = start + timeout;
    loop {
        let n = bound_at.lock().unwrap().len() - 1;
        if n >= pods || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sched.abort();
    watch.abort();
    let bound_at = bound_at.lock().unwrap();
    let mut lat = Latencies::default();
    let mut last = start;
    let mut unbound = 0;
    for (i, c) in created.iter().enumerate() {
        let Ok(c) = c else {
            unbound += 1;
            continue;
        };
        match bound_at.get(&format!("pod-{i}")) {
            Some(b) => {
                lat.lat.push(b.saturating_duration_since(*c));
                last = last.max(*b);
            }
            None => unbound += 1,
        }
    }
    lat.wall = last.duration_since(start);
    Ok(Row {
        nodes,
        pods,
        node_create,
        create_wall,
        bound: lat.lat.len(),
        lat,
        unbound_after_timeout: unbound,
        stats,
    })
}

fn main() {
    let a = Args::parse("target/bench/scheduler.json");
    let sizes: String = a.get("sizes", "1000x10000,5000x10000".to_string());
    let conc: usize = a.get("create-concurrency", 64);
    let timeout = Duration::from_secs(a.get("timeout", 900));
    let mut figures = Vec::new();
    let mut notes = Vec::new();
    for size in sizes.split(',') {
        let (n, m) = size
            .split_once('x')
            .and_then(|(n, m)| Some((n.trim().parse().ok()?, m.trim().parse().ok()?)))
            .unwrap_or_else(|| panic!("bad --sizes entry {size:?}; want NODESxPODS"));
        eprintln!("row: {n} nodes, {m} pods");
        let plane = ApiServer::start();
        let row = plane.rt.block_on(run_row(&plane, n, m, conc, timeout));
        drop(plane);
        let row = match row {
            Ok(r) => r,
            Err(e) => {
                notes.push(format!("{n} nodes x {m} pods: broke: {e}"));
                continue;
            }
        };
        let label = format!("{} nodes, {} pods", row.nodes, row.pods);
        figures.push(
            Figure::new(
                format!("scheduling throughput ({label})"),
                "pods/s",
                row.lat.ops(),
                "higher",
            )
            .peer(
                "kube-scheduler (scheduler_perf SchedulingBasic threshold)",
                PEER_THRESHOLD,
            ),
        );
        figures.push(Figure::new(
            format!("p50 create-to-bound latency ({label})"),
            "ms",
            row.lat.pct(0.5),
            "lower",
        ));
        figures.push(Figure::new(
            format!("p99 create-to-bound latency ({label})"),
            "ms",
            row.lat.pct(0.99),
            "lower",
        ));
        figures.push(Figure::new(
            format!("pod creation rate ({label})"),
            "pods/s",
            row.pods as f64 / row.create_wall.as_secs_f64(),
            "higher",
        ));
        use std::sync::atomic::Ordering::Relaxed;
        notes.push(format!(
            "{label}: {} bound in {:.1}s (pods created in {:.1}s, so the last bind came {:.2}s after the last create: when this is small the scheduler kept pace and throughput is the creation rate; nodes created in {:.1}s); scheduler: {} attempts, {} unschedulable, {} bind errors, {} events dropped{}",
            row.bound,
            row.lat.wall.as_secs_f64(),
            row.create_wall.as_secs_f64(),
            row.lat.wall.as_secs_f64() - row.create_wall.as_secs_f64(),
            row.node_create.as_secs_f64(),
            row.stats.attempts.load(Relaxed),
            row.stats.unschedulable.load(Relaxed),
            row.stats.bind_errors.load(Relaxed),
            row.stats.events_dropped.load(Relaxed),
            if row.unbound_after_timeout > 0 {
                format!("; BROKE: {} pods not bound within {}s", row.unbound_after_timeout, timeout.as_secs())
            } else {
                String::new()
            },
        ));
    }
    notes.push(format!(
        "peer: {PEER_THRESHOLD} pods/s is the threshold kube's scheduler_perf sets for SchedulingBasic (5000 nodes, 10000 pods) in performance-config.yaml, met on CI machines much bigger than this one; it is not a measurement on this machine"
    ));
    notes.push(format!(
        "setup: API server, store, scheduler, pod creator ({conc} concurrent creates over HTTPS/1.1) and the measuring watch share one process and a 2-worker tokio runtime; the scheduler binds through pods/binding (64 in flight) and writes a Scheduled event per pod, as kube-scheduler does"
    ));
    notes.push("machine: 2 vCPUs shared with other builds and tests: figures are noisy".into());
    write_report(&a.out, "scheduler", &figures, &notes);
}
