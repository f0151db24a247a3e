//! The scheduler against the real API server: Node objects created through
//! the API, pods bound through `pods/binding`, failures visible to the real
//! kubectl as PodScheduled=False and FailedScheduling events.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Api;
use skiff_scheduler::SchedulerConfig;
use skiff_scheduler::leader::LeaderElection;
use skiff_scheduler::plugins::default_profile;

fn select(app: &str) -> Option<LabelSelector> {
    Some(LabelSelector {
        match_labels: Some([("app".to_string(), app.to_string())].into()),
        match_expressions: None,
    })
}

fn anti_affine(name: &str) -> k8s_openapi::api::core::v1::Pod {
    let mut p = pod(name, "", "", &[("app", "web")]);
    p.spec.as_mut().unwrap().affinity = Some(Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                label_selector: select("web"),
                topology_key: HOST.into(),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    });
    p
}

#[test]
fn placement_rules_and_failures_as_kubectl_sees_them() {
    let c = Cluster::start();
    for (name, zone, extra) in [
        ("n1", "a", None),
        ("n2", "a", None),
        ("n3", "b", Some(("disk", "ssd"))),
    ] {
        let mut labels = vec![(ZONE, zone)];
        labels.extend(extra);
        c.create_node(&node(name, "2", "4Gi", &labels, &[]));
    }
    c.create_node(&node(
        "n4",
        "2",
        "4Gi",
        &[(ZONE, "b")],
        &[("dedicated", "gpu")],
    ));
    let _sched = c.spawn_scheduler(SchedulerConfig::default());

    // Required anti-affinity on the hostname: one web pod per node, and
    // never on the tainted node.
    for i in 1..=3 {
        c.create_pod(&anti_affine(&format!("web-{i}")));
    }
    let mut hosts: Vec<String> = (1..=3)
        .map(|i| c.wait_bound(&format!("web-{i}"), 30))
        .collect();
    hosts.sort();
    assert_eq!(hosts, ["n1", "n2", "n3"]);

    // nodeSelector.
    let mut ssd = pod("ssd", "100m", "", &[]);
    ssd.spec.as_mut().unwrap().node_selector =
        Some([("disk".to_string(), "ssd".to_string())].into());
    c.create_pod(&ssd);
    assert_eq!(c.wait_bound("ssd", 30), "n3");

    // A toleration opens the tainted node; a selector pins it there.
    let mut gpu = pod("gpu", "", "", &[]);
    gpu.spec.as_mut().unwrap().node_selector = Some([(HOST.to_string(), "n4".to_string())].into());
    gpu.spec.as_mut().unwrap().tolerations = Some(vec![Toleration {
        key: Some("dedicated".into()),
        operator: Some("Equal".into()),
        value: Some("gpu".into()),
        effect: Some("NoSchedule".into()),
        ..Default::default()
    }]);
    c.create_pod(&gpu);
    assert_eq!(c.wait_bound("gpu", 30), "n4");

    // Too big for every node: Pending with kube's message, and an event.
    c.create_pod(&pod("huge", "", "64Gi", &[]));
    let msg = c.wait_unschedulable("huge", 30);
    assert_eq!(
        msg,
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 3 Insufficient memory."
    );
    let describe = c.kubectl(&["describe", "pod", "huge"]);
    for want in [
        "FailedScheduling",
        "default-scheduler",
        "3 Insufficient memory",
        "PodScheduled",
        "False",
    ] {
        assert!(describe.contains(want), "{want:?} missing in:\n{describe}");
    }
    let events = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=FailedScheduling",
        "-o",
        "wide",
    ]);
    assert!(
        events.contains("pod/huge") && events.contains("Warning"),
        "{events}"
    );
    let scheduled = c.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "reason=Scheduled,involvedObject.name=ssd",
        "-o",
        "jsonpath={.items[*].message}",
    ]);
    assert_eq!(scheduled, "Successfully assigned default/ssd to n3");

    // A fourth web pod has no node left; a new node lets it in.
    c.create_pod(&anti_affine("web-4"));
    assert_eq!(
        c.wait_unschedulable("web-4", 30),
        "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 3 node(s) didn't match pod anti-affinity rules."
    );
    c.create_node(&node("n5", "2", "4Gi", &[(ZONE, "c")], &[]));
    assert_eq!(c.wait_bound("web-4", 30), "n5");
    let wide = c.kubectl(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("huge") && wide.contains("Pending"), "{wide}");
}

#[test]
fn resources_spread_and_requeue_on_delete() {
    let c = Cluster::start();
    for (name, zone) in [("a1", "a"), ("a2", "a"), ("b1", "b")] {
        c.create_node(&node(name, "2", "8Gi", &[(ZONE, zone)], &[]));
    }
    let cfg = SchedulerConfig::new(default_profile());
    let stats = cfg.stats.clone();
    let _sched = c.spawn_scheduler(cfg);

    // Topology spread over zones with maxSkew 1 (hard): 2 and 2 would skew
    // to 3/1 without the constraint's bound on zone a's two nodes.
    for i in 0..4 {
        let mut p = pod(&format!("spread-{i}"), "", "", &[("app", "spread")]);
        p.spec.as_mut().unwrap().topology_spread_constraints =
            Some(vec![TopologySpreadConstraint {
                max_skew: 1,
                topology_key: ZONE.into(),
                when_unsatisfiable: "DoNotSchedule".into(),
                label_selector: select("spread"),
                ..Default::default()
            }]);
        c.create_pod(&p);
    }
    let mut per_zone: HashMap<String, usize> = HashMap::new();
    for i in 0..4 {
        let n = c.wait_bound(&format!("spread-{i}"), 30);
        *per_zone
            .entry(if n.starts_with('a') { "a" } else { "b" }.into())
            .or_default() += 1;
    }
    assert_eq!(per_zone["a"], 2, "{per_zone:?}");
    assert_eq!(per_zone["b"], 2, "{per_zone:?}");

    // 6 cores in all: six 1-core pods fit (two per node), the seventh not.
    for i in 0..7 {
        c.create_pod(&pod(&format!("cpu-{i}"), "1", "1Gi", &[]));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let (bound, pending) = loop {
        let placed: Vec<(String, Option<String>)> = (0..7)
            .map(|i| {
                let name = format!("cpu-{i}");
                let n = node_of(&c.get_pod(&name));
                (name, n)
            })
            .collect();
        let bound: Vec<_> = placed.iter().filter(|p| p.1.is_some()).cloned().collect();
        if bound.len() == 6 || Instant::now() > deadline {
            let pending = placed.into_iter().find(|p| p.1.is_none()).map(|p| p.0);
            break (bound, pending);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(bound.len(), 6, "{bound:?}");
    let mut per_node: HashMap<String, usize> = HashMap::new();
    for (_, n) in &bound {
        *per_node.entry(n.clone().unwrap()).or_default() += 1;
    }
    assert!(per_node.values().all(|&n| n == 2), "{per_node:?}");
    let pending = pending.expect("one pod pending");
    assert_eq!(
        c.wait_unschedulable(&pending, 30),
        "0/3 nodes are available: 3 Insufficient cpu."
    );

    // Deleting a bound pod frees a core: the pending pod gets it.
    let (victim, victim_node) = bound[0].clone();
    c.delete_pod(&victim);
    assert_eq!(c.wait_bound(&pending, 30), victim_node.unwrap());
    assert!(stats.bound.load(Ordering::Relaxed) >= 11);
}

#[test]
fn only_the_leader_schedules_and_a_standby_takes_over() {
    let c = Cluster::start();
    c.create_node(&node("n1", "4", "8Gi", &[], &[]));
    let election = |id: &str| {
        let mut cfg = SchedulerConfig::new(default_profile());
        let mut le = LeaderElection::kube_defaults("scheduler", "kube-scheduler", id);
        // Room for a loaded machine (the whole suite runs beside it): a
        // leader that misses a 2 s renew deadline hands over mid-test.
        le.lease_duration = Duration::from_secs(8);
        le.renew_deadline = Duration::from_secs(6);
        le.retry_period = Duration::from_millis(300);
        cfg.leader_election = Some(le);
        cfg
    };
    let first = election("replica-1");
    let first_stats: Arc<_> = first.stats.clone();
    let first_task = c.spawn_scheduler(first);
    let leases: Api<Lease> = Api::namespaced(c.admin.clone(), "kube-system");
    let holder = || {
        c.block_on(leases.get_opt("kube-scheduler"))
            .unwrap()
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while holder().as_deref() != Some("replica-1") {
        assert!(Instant::now() < deadline, "replica-1 never led");
        std::thread::sleep(Duration::from_millis(100));
    }
    let second = election("replica-2");
    let second_stats = second.stats.clone();
    let _second_task = c.spawn_scheduler(second);

    c.create_pod(&pod("p1", "100m", "", &[]));
    c.wait_bound("p1", 30);
    // The pod shows bound before the binder's call returns to count it.
    settles_at(&first_stats.bound, 1, "the leader's bound count");
    assert_eq!(
        second_stats.attempts.load(Ordering::Relaxed),
        0,
        "the standby stays idle"
    );
    assert_eq!(second_stats.leader_terms.load(Ordering::Relaxed), 0);

    // The leader dies without releasing; the lease expires and the standby
    // takes over.
    first_task.abort();
    let deadline = Instant::now() + Duration::from_secs(30);
    while holder().as_deref() != Some("replica-2") {
        assert!(Instant::now() < deadline, "replica-2 never took over");
        std::thread::sleep(Duration::from_millis(100));
    }
    c.create_pod(&pod("p2", "100m", "", &[]));
    c.wait_bound("p2", 30);
    settles_at(&second_stats.bound, 1, "the new leader's bound count");
    let lease = c
        .block_on(leases.get("kube-scheduler"))
        .unwrap()
        .spec
        .unwrap();
    assert_eq!(lease.lease_transitions, Some(1));
}

/// Waits (briefly) for a counter the scheduler bumps after its API call
/// returns to read `want`.
fn settles_at(counter: &std::sync::atomic::AtomicU64, want: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while counter.load(Ordering::Relaxed) != want {
        assert!(
            Instant::now() < deadline,
            "{what}: {}, want {want}",
            counter.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// kube's PrioritySort: pending pods are taken highest priority first (the
/// Priority admission step resolved their PriorityClass), whatever their
/// creation order; room for two of four goes to the two with a class.
#[test]
fn higher_priority_pods_are_scheduled_first() {
    let c = Cluster::start();
    c.create_node(&node("n1", "2", "8Gi", &[], &[]));
    c.kubectl(&["create", "priorityclass", "mid", "--value=500"]);
    c.kubectl(&["create", "priorityclass", "vip", "--value=1000"]);
    for (name, class) in [("low-0", ""), ("mid", "mid"), ("low-1", ""), ("vip", "vip")] {
        let mut p = pod(name, "1", "1Gi", &[]);
        if !class.is_empty() {
            p.spec.as_mut().unwrap().priority_class_name = Some(class.into());
        }
        c.create_pod(&p);
    }
    assert_eq!(c.get_pod("vip").spec.unwrap().priority, Some(1000));
    assert_eq!(c.get_pod("low-0").spec.unwrap().priority, Some(0));
    // Every pod is queued before the first is taken (the scheduler waits
    // for its initial list), so the order is the queue's alone.
    let _sched = c.spawn_scheduler(SchedulerConfig::new(default_profile()));
    assert_eq!(c.wait_bound("vip", 30), "n1");
    assert_eq!(c.wait_bound("mid", 30), "n1");
    for low in ["low-0", "low-1"] {
        assert_eq!(
            c.wait_unschedulable(low, 30),
            "0/1 nodes are available: 1 Insufficient cpu."
        );
    }
}
