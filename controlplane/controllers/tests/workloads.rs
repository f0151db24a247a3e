//! The controller manager against the real API server with hollow nodes,
//! driven by the real kubectl 1.33: Deployments (scale, self-healing,
//! rolling update, `rollout status` / `history` / `undo`), node failure
//! (NotReady, taints, eviction, pods recreated elsewhere), garbage
//! collection, Jobs, endpoints, service accounts and leader election.

mod common;

use std::time::Duration;

use common::Cluster;

const DEPLOYMENT: &str = "
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations:
    kubernetes.io/change-cause: first
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.example/web:1
";

fn images(rows: &[common::PodRow]) -> Vec<&str> {
    rows.iter().map(|p| p.image.as_str()).collect()
}

#[test]
fn deployment_scales_heals_rolls_out_and_rolls_back() {
    let c = Cluster::start(3, Duration::from_secs(40));
    c.apply(DEPLOYMENT);
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    c.wait_ready_pods("app=web", 3, 30, |_| true);
    let rs = c.get(&["rs", "-l", "app=web", "--no-headers"]);
    assert_eq!(rs.lines().count(), 1, "{rs}");
    assert!(
        rs.split_whitespace().skip(1).take(3).all(|n| n == "3"),
        "{rs}"
    );

    // Scale up and down.
    c.ok(&["scale", "deployment/web", "--replicas=5"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.wait_ready_pods("app=web", 5, 30, |_| true);
    c.ok(&["scale", "deployment/web", "--replicas=2"]);
    c.wait_ready_pods("app=web", 2, 30, |_| true);

    // A deleted pod comes back under a new name.
    let before = c.ready_pods("app=web");
    c.ok(&["delete", "pod", &before[0].name, "--wait=false"]);
    c.wait_ready_pods("app=web", 2, 30, |rows| {
        rows.iter().all(|r| r.name != before[0].name)
    });

    // Rolling update to image 2.
    // (The change cause is copied to the newest ReplicaSet, so it is set
    // after the change, as kubectl's documentation shows.)
    c.ok(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.example/web:2",
    ]);
    c.ok(&[
        "annotate",
        "deployment/web",
        "kubernetes.io/change-cause=second",
        "--overwrite",
    ]);
    let out = c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let rows = c.wait_ready_pods("app=web", 2, 30, |r| {
        images(r).iter().all(|i| i.ends_with(":2"))
    });
    assert_eq!(rows.len(), 2);
    let rs = c.get(&["rs", "-l", "app=web", "--no-headers"]);
    assert_eq!(rs.lines().count(), 2, "{rs}");
    let hist = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        hist.contains("1         first") && hist.contains("2         second"),
        "{hist}"
    );
    let d = c.ok(&["get", "deployment/web", "-o", "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision} {.status.updatedReplicas} {.status.conditions[?(@.type==\"Progressing\")].reason}"]);
    assert_eq!(d, "2 2 NewReplicaSetAvailable");

    // Undo: back to image 1 as revision 3.
    let out = c.ok(&["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.wait_ready_pods("app=web", 2, 30, |r| {
        images(r).iter().all(|i| i.ends_with(":1"))
    });
    let hist = c.ok(&["rollout", "history", "deployment/web"]);
    assert!(
        hist.contains("\n2 ") && hist.contains("\n3 ") && !hist.contains("\n1 "),
        "{hist}"
    );
    let rev = c.ok(&[
        "get",
        "deployment/web",
        "-o",
        "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
    ]);
    assert_eq!(rev, "3");

    // What kubectl describe shows.
    let d = c.ok(&["describe", "deployment/web"]);
    assert!(
        d.contains("ScalingReplicaSet") && d.contains("Scaled up replica set web-"),
        "{d}"
    );
    assert!(d.contains("NewReplicaSetAvailable"), "{d}");

    // Recreate: all old pods go before new ones come.
    c.ok(&[
        "patch",
        "deployment/web",
        "--type=merge",
        "-p",
        r#"{"spec":{"strategy":{"type":"Recreate","rollingUpdate":null}}}"#,
    ]);
    c.ok(&[
        "set",
        "image",
        "deployment/web",
        "web=registry.example/web:3",
    ]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.wait_ready_pods("app=web", 2, 30, |r| {
        images(r).iter().all(|i| i.ends_with(":3"))
    });
}

#[test]
fn a_lost_node_is_tainted_and_its_pods_recreated_elsewhere() {
    // Hollow nodes renew every 500 ms here: 6 s leaves room for a loaded
    // machine.
    let grace = Duration::from_secs(6);
    let c = Cluster::start(3, grace);
    c.apply(&DEPLOYMENT.replace("replicas: 3", "replicas: 6"));
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    let rows = c.wait_ready_pods("app=web", 6, 30, |_| true);
    let victim = rows[0].node.clone();
    let on_victim: Vec<String> = rows
        .iter()
        .filter(|r| r.node == victim)
        .map(|r| r.name.clone())
        .collect();
    assert!(!on_victim.is_empty());

    let stopped = std::time::Instant::now();
    assert!(c.fleet.lock().unwrap().stop(&victim));
    // NotReady and tainted after the grace period...
    c.wait("the lost node NotReady and tainted", 20, || {
        let out = c.get(&["node", &victim, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} {.spec.taints[*].key} {.spec.taints[*].effect}"]);
        (out.starts_with("Unknown ")
            && out.contains("node.kubernetes.io/unreachable")
            && out.contains("NoSchedule")
            && out.contains("NoExecute"))
        .then_some(())
        .ok_or(out)
    });
    // The last renewal came up to one renew interval (500 ms) before the stop.
    assert!(
        stopped.elapsed() >= grace - Duration::from_millis(500),
        "tainted before the grace period"
    );
    // ...its pods evicted and six ready again on the other nodes.
    let rows = c.wait_ready_pods("app=web", 6, 30, |r| r.iter().all(|p| p.node != victim));
    assert!(rows.iter().all(|r| !on_victim.contains(&r.name)));
    assert!(stopped.elapsed() < grace + Duration::from_secs(25));
    let reasons = c.ok(&["get", "events", "-A", "-o", "jsonpath={.items[*].reason}"]);
    assert!(
        reasons.contains("TaintManagerEviction") && reasons.contains("NodeNotReady"),
        "{reasons}"
    );
    let evicted = c.pods("app=web");
    assert!(
        on_victim
            .iter()
            .all(|n| evicted.iter().any(|p| &p.name == n && p.deleting)),
        "{evicted:#?}"
    );
    // The others were left alone.
    for node in c
        .ok(&[
            "get",
            "nodes",
            "--no-headers",
            "-o",
            "custom-columns=N:.metadata.name,T:.spec.taints",
        ])
        .lines()
    {
        if !node.starts_with(&victim) {
            assert!(!node.contains("node.kubernetes.io"), "{node}");
        }
    }
}

#[test]
fn garbage_collection_jobs_endpoints_and_service_accounts() {
    let c = Cluster::start(2, Duration::from_secs(40));

    // Orphan and foreground deletion of a Deployment's ReplicaSet and pods
    // (background is the Job's below).
    c.apply(&DEPLOYMENT.replace("replicas: 3", "replicas: 2"));
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);

    // Endpoints and EndpointSlice of a Service.
    c.ok(&[
        "expose",
        "deployment/web",
        "--port=80",
        "--target-port=8080",
    ]);
    c.wait("endpoints of web", 30, || {
        let out = c.get(&[
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ]);
        (out.split_whitespace().count() == 2)
            .then_some(())
            .ok_or(out)
    });
    let slice = c.get(&[
        "endpointslices",
        "-l",
        "kubernetes.io/service-name=web",
        "-o",
        "jsonpath={.items[0].endpoints[*].conditions.ready} {.items[0].ports[0].port}",
    ]);
    assert_eq!(slice, "true true 8080");

    // Orphan: the ReplicaSet goes, its pods stay; the Deployment makes a
    // new ReplicaSet of the same template (same name, new uid), which
    // adopts them instead of creating pods.
    let rs = c.ok(&[
        "get",
        "rs",
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[0].metadata.name}",
    ]);
    let uid_of_rs = || c.get(&["rs", &rs, "-o", "jsonpath={.metadata.uid}"]);
    let old_uid = uid_of_rs();
    let pods_before: Vec<String> = c
        .ready_pods("app=web")
        .into_iter()
        .map(|p| p.name)
        .collect();
    c.ok(&["delete", "rs", &rs, "--cascade=orphan"]);
    c.wait("orphans adopted by the new ReplicaSet", 30, || {
        let new_uid = uid_of_rs();
        let owners = c.get(&[
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences[*].uid}",
        ]);
        (new_uid != old_uid
            && !new_uid.contains("NotFound")
            && owners.split_whitespace().count() == 2
            && owners.split_whitespace().all(|o| o == new_uid))
        .then_some(())
        .ok_or(format!("{new_uid} {owners}"))
    });
    let pods_after: Vec<String> = c
        .ready_pods("app=web")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(pods_before.len(), 2);
    assert!(
        pods_before.iter().all(|p| pods_after.contains(p)),
        "{pods_before:?} {pods_after:?}"
    );

    // Foreground: the Deployment stays (deleting) until its dependents are gone.
    c.ok(&[
        "delete",
        "deployment/web",
        "--cascade=foreground",
        "--wait=false",
    ]);
    let fin = c.get(&["deployment/web", "-o", "jsonpath={.metadata.finalizers}"]);
    assert!(
        fin.contains("foregroundDeletion") || fin.contains("NotFound"),
        "{fin}"
    );
    c.wait("ReplicaSet and pods collected", 40, || {
        let rs = c.get(&["rs", "-l", "app=web", "--no-headers"]);
        let pods = c.pods("app=web");
        let d = c.get(&["deployment/web", "--no-headers"]);
        (rs.contains("No resources found") && pods.is_empty() && d.contains("NotFound"))
            .then_some(())
            .ok_or(format!("{rs}\n{pods:#?}\n{d}"))
    });
    c.wait("endpoints emptied", 30, || {
        let out = c.get(&["endpoints", "web", "-o", "jsonpath={.subsets}"]);
        out.trim().is_empty().then_some(()).ok_or(out)
    });
    c.ok(&["delete", "service/web"]);
    c.wait("endpoints collected with their Service", 30, || {
        let ep = c.get(&["endpoints,endpointslices", "-l", "app=web", "--no-headers"]);
        ep.contains("No resources found").then_some(()).ok_or(ep)
    });

    // A Job runs 3 completions two at a time.
    c.apply(
        "
apiVersion: batch/v1
kind: Job
metadata: {name: batch}
spec:
  completions: 3
  parallelism: 2
  template:
    metadata:
      annotations: {hollow.skiff.dev/run-ms: \"300\"}
    spec:
      restartPolicy: Never
      containers: [{name: work, image: registry.example/work:1}]
",
    );
    let out = c.ok(&[
        "wait",
        "--for=condition=complete",
        "job/batch",
        "--timeout=60s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let st = c.ok(&[
        "get",
        "job/batch",
        "-o",
        "jsonpath={.status.succeeded} {.status.active}",
    ]);
    assert_eq!(st, "3 0");
    let pods = c.pods("job-name=batch");
    assert_eq!(pods.len(), 3, "{pods:#?}");
    let d = c.ok(&["describe", "job/batch"]);
    assert!(
        d.contains("Completed") && d.contains("SuccessfulCreate"),
        "{d}"
    );
    assert!(pods.iter().all(|p| p.phase == "Succeeded"));

    // A failing Job stops after its backoff limit.
    c.apply(
        "
apiVersion: batch/v1
kind: Job
metadata: {name: failing}
spec:
  backoffLimit: 1
  template:
    metadata:
      annotations: {hollow.skiff.dev/run-ms: \"100\", hollow.skiff.dev/exit-code: \"3\"}
    spec:
      restartPolicy: Never
      containers: [{name: work, image: registry.example/work:1}]
",
    );
    c.ok(&[
        "wait",
        "--for=condition=failed",
        "job/failing",
        "--timeout=60s",
    ]);
    let st = c.ok(&[
        "get",
        "job/failing",
        "-o",
        "jsonpath={.status.failed} {.status.conditions[?(@.type==\"Failed\")].reason}",
    ]);
    assert_eq!(st, "2 BackoffLimitExceeded");

    // Jobs cascade too.
    c.ok(&["delete", "job/batch", "--wait=false"]);
    c.wait("job pods collected", 30, || {
        let pods = c.pods("job-name=batch");
        pods.is_empty().then_some(()).ok_or(format!("{pods:#?}"))
    });

    // Every namespace gets its default ServiceAccount.
    c.ok(&["create", "namespace", "team"]);
    c.wait("default ServiceAccount", 20, || {
        let out = c.get(&["serviceaccount", "default", "-n", "team", "--no-headers"]);
        out.starts_with("default").then_some(()).ok_or(out)
    });

    // A DaemonSet runs one pod per node and rolls a new image node by node.
    c.apply(
        "
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: agent}
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers: [{name: agent, image: registry.example/agent:1}]
",
    );
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    let on_nodes = |rows: &[common::PodRow]| {
        let mut n: Vec<&str> = rows.iter().map(|r| r.node.as_str()).collect();
        n.sort();
        n == ["node-0", "node-1"]
    };
    c.wait_ready_pods("app=agent", 2, 30, on_nodes);
    c.ok(&["set", "image", "ds/agent", "agent=registry.example/agent:2"]);
    c.ok(&["rollout", "status", "ds/agent", "--timeout=60s"]);
    c.wait_ready_pods("app=agent", 2, 30, |r| {
        on_nodes(r) && images(r).iter().all(|i| i.ends_with(":2"))
    });

    // One leader: the Lease names the manager.
    let holder = c.ok(&[
        "get",
        "lease",
        "kube-controller-manager",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, "test-manager");
}

#[test]
fn a_standby_manager_takes_over_when_the_leader_stops() {
    let mut c = Cluster::start(1, Duration::from_secs(40));
    let standby = c.spawn_manager("standby");
    std::thread::sleep(Duration::from_secs(2));
    let lease = [
        "get",
        "lease",
        "kube-controller-manager",
        "-n",
        "kube-system",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ];
    assert_eq!(c.ok(&lease), "test-manager");
    c.stop_manager();
    c.wait("the standby holding the lease", 20, || {
        let h = c.ok(&lease);
        (h == "standby").then_some(()).ok_or(h)
    });
    // And it runs the controllers.
    c.apply(&DEPLOYMENT.replace("replicas: 3", "replicas: 2"));
    c.ok(&["rollout", "status", "deployment/web", "--timeout=60s"]);
    c.wait_ready_pods("app=web", 2, 30, |_| true);
    standby.abort();
}

#[test]
fn a_cronjob_runs_its_job_on_schedule() {
    let c = Cluster::start(1, Duration::from_secs(40));
    c.apply(
        "
apiVersion: batch/v1
kind: CronJob
metadata: {name: tick}
spec:
  schedule: '* * * * *'
  jobTemplate:
    spec:
      template:
        metadata:
          annotations: {hollow.skiff.dev/run-ms: \"100\"}
        spec:
          restartPolicy: Never
          containers: [{name: work, image: registry.example/work:1}]
",
    );
    // The first minute boundary comes within 60 s.
    c.wait("a scheduled Job completed", 75, || {
        let out = c.get(&[
            "jobs",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences[0].name} {.items[*].status.succeeded}",
        ]);
        (out.starts_with("tick ") && out.ends_with(" 1"))
            .then_some(())
            .ok_or(out)
    });
    let last = c.ok(&[
        "get",
        "cronjob/tick",
        "-o",
        "jsonpath={.status.lastScheduleTime}",
    ]);
    assert!(last.ends_with(":00Z"), "{last}");
    c.wait("lastSuccessfulTime", 20, || {
        let t = c.get(&[
            "cronjob/tick",
            "-o",
            "jsonpath={.status.lastSuccessfulTime}",
        ]);
        (!t.trim().is_empty()).then_some(()).ok_or(t)
    });
}

#[test]
fn nodes_get_distinct_pod_cidrs_and_a_deleted_nodes_subnet_is_given_again() {
    let c = Cluster::start(2, Duration::from_secs(40));
    let cidr = |node: &str| {
        c.get(&[
            "node",
            node,
            "-o",
            "jsonpath={.spec.podCIDR} {.spec.podCIDRs}",
        ])
    };
    let assigned = |node: &str| {
        let out = cidr(node);
        let (one, all) = out.split_once(' ').unwrap_or_default();
        (one.starts_with("10.244.") && all == format!("[\"{one}\"]"))
            .then(|| one.to_string())
            .ok_or(out)
    };
    let mut seen = std::collections::BTreeSet::new();
    for node in ["node-0", "node-1"] {
        c.wait("a hollow node's pod CIDR", 30, || assigned(node).map(drop));
        seen.insert(assigned(node).unwrap());
    }
    // Two more Nodes (as an admin would register them) use up the /22...
    for n in ["extra-a", "extra-b"] {
        c.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {n}}}\n"
        ));
        c.wait("the extra node's pod CIDR", 30, || assigned(n).map(drop));
        seen.insert(assigned(n).unwrap());
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        [
            "10.244.0.0/24",
            "10.244.1.0/24",
            "10.244.2.0/24",
            "10.244.3.0/24"
        ]
    );
    // ...so the next one gets none and says so.
    c.apply("apiVersion: v1\nkind: Node\nmetadata: {name: extra-c}\n");
    c.wait("CIDRNotAvailable", 30, || {
        let reasons = c.get(&["events", "-A", "-o", "jsonpath={.items[*].reason}"]);
        reasons
            .contains("CIDRNotAvailable")
            .then_some(())
            .ok_or(reasons)
    });
    assert_eq!(cidr("extra-c").trim(), "");
    // A pod CIDR is set once.
    let changed = c.kubectl(&[
        "patch",
        "node",
        "extra-a",
        "--type=merge",
        "-p",
        r#"{"spec":{"podCIDR":"10.244.3.0/24","podCIDRs":["10.244.3.0/24"]}}"#,
    ]);
    let err = String::from_utf8_lossy(&changed.stderr);
    assert!(
        !changed.status.success() && err.contains("may not change podCIDR"),
        "{err}"
    );
    let bad = c.kubectl(&[
        "patch",
        "node",
        "extra-c",
        "--type=merge",
        "-p",
        r#"{"spec":{"podCIDR":"10.244.300.0/24"}}"#,
    ]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && err.contains("must be a valid CIDR"),
        "{err}"
    );
    // Deleting a Node frees its subnet for the one waiting.
    let freed = assigned("extra-a").unwrap();
    c.ok(&["delete", "node", "extra-a"]);
    c.wait("the freed subnet given to extra-c", 30, || {
        let got = assigned("extra-c")?;
        (got == freed).then_some(()).ok_or(got)
    });
}

#[test]
fn endpoint_slices_per_port_set_with_same_node_hints() {
    let c = Cluster::start(2, Duration::from_secs(40));
    let pod = |name: &str, port: u16| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: api}}}}\n\
             spec:\n  containers:\n  - name: c\n    image: registry.example/api:1\n    \
             ports: [{{name: http, containerPort: {port}}}]\n"
        )
    };
    c.apply(&pod("api-a", 8080));
    c.apply(&pod("api-b", 9090));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: api}\nspec:\n  selector: {app: api}\n  \
         trafficDistribution: PreferSameNode\n  ports: [{name: http, port: 80, targetPort: http}]\n",
    );
    let slices = || {
        c.get(&[
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=api",
            "-o",
            "jsonpath={range .items[*]}{.ports[0].port}={.endpoints[*].hints.forNodes[0].name};{end}",
        ])
    };
    let node_of = |pod: &str| c.get(&["pod", pod, "-o", "jsonpath={.spec.nodeName}"]);
    c.wait(
        "a slice per resolved port, hinted to the pod's node",
        30,
        || {
            let out = slices();
            let mut got: Vec<&str> = out.split(';').filter(|s| !s.is_empty()).collect();
            got.sort();
            let want = [
                format!("8080={}", node_of("api-a")),
                format!("9090={}", node_of("api-b")),
            ];
            (got == want)
                .then_some(())
                .ok_or(format!("{out} want {want:?}"))
        },
    );
    // The 9090 pod gone: its slice goes too.
    c.ok(&["delete", "pod", "api-b", "--wait=false"]);
    c.wait("the stale slice deleted", 30, || {
        let out = slices();
        (out == format!("8080={};", node_of("api-a")))
            .then_some(())
            .ok_or(out)
    });
}
