//! `cargo xtask bench deploy`: how long a Deployment of many replicas takes
//! to be all Running on hollow nodes.
//!
//! Usage: bench-deploy --out FILE [--replicas 1000] [--nodes 20]
//!
//! In this process: the real API server and node gateway
//! ([`skiff_e2e::plane::Plane`]), the controller manager and the scheduler
//! as API clients with their own kubeconfigs, and `--nodes` hollow nodes.
//! Once the nodes are Ready one Deployment of `--replicas` pods is created;
//! the clock stops when every pod is Running and Ready (polled every
//! 100 ms) and again when the Deployment reports them all available.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use skiff_e2e::bench::{Args, Figure, Latencies, write_report};
use skiff_e2e::plane::Plane;
use skiff_hollow_node::{Fleet, FleetConfig};

fn main() {
    let args = Args::parse("target/bench/deploy.json");
    let replicas: usize = args.get("replicas", 1000);
    let nodes: u32 = args.get("nodes", 20);
    let plane = Plane::start(|g| g.quiet = true);
    let pki = plane.dir.path().join("pki");
    let rt = &plane.rt;
    let client = |file: &str| {
        rt.block_on(skiff_controllers::client_from_kubeconfig(
            &pki.join(file),
            Some(&plane.url),
        ))
        .expect("client")
    };
    let admin = client("admin.kubeconfig");
    let fleet_cfg =
        FleetConfig::new(plane.gateway_addr, &pki.join("ca.crt"), &plane.token).expect("fleet");
    let mut fleet = Fleet::new();
    {
        let _g = rt.enter();
        fleet.start_many(&fleet_cfg, "bench", nodes);
    }
    let node_api: Api<Node> = Api::all(admin.clone());
    poll(rt, Duration::from_secs(120), "nodes Ready", || async {
        let l = node_api.list(&ListParams::default()).await.ok()?;
        (l.items.iter().filter(|n| ready_node(n)).count() == nodes as usize).then_some(())
    });
    let cm = rt.spawn(skiff_controllers::run(
        client("controller-manager.kubeconfig"),
        Default::default(),
    ));
    let sched_client = client("scheduler.kubeconfig");
    let sched = rt.spawn(async move {
        if let Err(e) = skiff_scheduler::run(sched_client, Default::default()).await {
            eprintln!("scheduler: {e}");
        }
    });

    let d: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bench"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "bench"}},
                 "template": {"metadata": {"labels": {"app": "bench"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.example/bench:1",
                                   "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}
    }))
    .expect("deployment");
    let d_api: Api<Deployment> = Api::namespaced(admin.clone(), "default");
    let pod_api: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let t0 = Instant::now();
    rt.block_on(d_api.create(&PostParams::default(), &d))
        .expect("create deployment");
    // Per pod: when the poll first saw it, and saw it Running and Ready.
    let mut seen: HashMap<String, (Duration, Option<Duration>)> = HashMap::new();
    let lp = ListParams::default().labels("app=bench");
    let mut all_running = None;
    let deadline = Duration::from_secs(600);
    while all_running.is_none() {
        assert!(
            t0.elapsed() < deadline,
            "not all Running after {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
        let Ok(list) = rt.block_on(pod_api.list(&lp)) else {
            continue;
        };
        let now = t0.elapsed();
        let mut running = 0;
        for p in &list.items {
            let name = p.metadata.name.clone().unwrap_or_default();
            let e = seen.entry(name).or_insert((now, None));
            let running_phase =
                p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let up = running_phase && skiff_controllers::pod_ready(p);
            if up {
                running += 1;
                e.1.get_or_insert(now);
            }
        }
        if running >= replicas {
            all_running = Some(now);
        }
    }
    let all_running = all_running.expect("set");
    poll(
        rt,
        Duration::from_secs(120),
        "Deployment available",
        || async {
            let d = d_api.get("bench").await.ok()?;
            (d.status?.available_replicas? as usize == replicas).then_some(())
        },
    );
    let available = t0.elapsed();
    let startup = Latencies {
        lat: seen
            .values()
            .filter_map(|(first, up)| Some(up.as_ref()?.saturating_sub(*first)))
            .collect(),
        wall: all_running,
    };
    cm.abort();
    sched.abort();
    drop(fleet);

    let figures = vec![
        Figure::new(
            format!("deploy_{replicas}_all_running"),
            "s",
            all_running.as_secs_f64(),
            "lower",
        ),
        Figure::new(
            format!("deploy_{replicas}_available"),
            "s",
            available.as_secs_f64(),
            "lower",
        ),
        Figure::new(
            "pods_running_per_s",
            "pods/s",
            replicas as f64 / all_running.as_secs_f64(),
            "higher",
        ),
        Figure::new("pod_seen_to_running_p50", "ms", startup.pct(0.5), "lower"),
        Figure::new("pod_seen_to_running_p99", "ms", startup.pct(0.99), "lower"),
    ];
    let notes = vec![
        format!(
            "{replicas}-replica Deployment on {nodes} hollow nodes (fake runtime: containers start at once); \
             controller manager, scheduler, API server and node gateway in this process on the plane's \
             2-thread runtime"
        ),
        "all_running: create -> every pod Running and Ready (100 ms polling); available: -> \
         Deployment status.availableReplicas == replicas"
            .into(),
        format!(
            "{} pods seen in total (pods replaced during the run count too)",
            seen.len()
        ),
    ];
    write_report(&args.out, "deploy", &figures, &notes);
}

fn ready_node(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// Polls `f` every 200 ms until it yields or `limit` passes (then panics).
fn poll<F, Fut>(rt: &tokio::runtime::Runtime, limit: Duration, what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<()>>,
{
    let t = Instant::now();
    while rt.block_on(f()).is_none() {
        assert!(t.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
