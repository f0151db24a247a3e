//! metrics.k8s.io from the nodes' usage reports: `kubectl top` (1.33 and
//! 1.35) against hollow nodes, whose simulated runtime reports the usage a
//! pod's annotations ask for; RBAC as metrics-server's reader role gives it.

mod common;

use common::Cluster;
use skiff_e2e::Scrape;
use skiff_e2e::peers;

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: burner
  namespace: default
  labels:
    app: burner
  annotations:
    hollow.skiff.dev/cpu-millis: \"500\"
    hollow.skiff.dev/memory-bytes: \"33554432\"
spec:
  nodeName: hn-top
  containers:
  - name: burn
    image: registry.local/burner:1
  - name: side
    image: registry.local/side:1
";

/// The CPU column (millicores) of `name`'s row in `kubectl top` output.
fn millicores(out: &str, name: &str) -> Option<u64> {
    let row = out
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == name))?;
    row.split_whitespace()
        .find_map(|w| w.strip_suffix('m')?.parse().ok())
}

#[test]
fn kubectl_top_shows_the_nodes_reports() {
    let mut c = Cluster::start(|_| {});
    c.start_node("hn-top", 0);
    c.wait_output(&["get", "nodes"], "hn-top   Ready", 20);
    c.ok(&["apply", "-f", c.write("burner.yaml", POD).to_str().unwrap()]);

    // The group is discovered (legacy and aggregated discovery alike).
    let groups = c.ok(&["api-versions"]);
    assert!(groups.contains("metrics.k8s.io/v1beta1"), "{groups}");
    let res = c.ok(&["api-resources", "--api-group=metrics.k8s.io", "-o", "wide"]);
    assert!(
        res.contains("PodMetrics") && res.contains("NodeMetrics"),
        "{res}"
    );
    assert!(
        res.contains("get,list") || res.contains("[get list]"),
        "{res}"
    );

    // A pod's figures come with the first report (measured from the
    // containers' start, as the kubelet saw them start); a node's with the
    // second, 10 s later. Check the figures over a full window.
    c.eventually("kubectl top pod shows the burner", 30, || {
        let out = c.kubectl(&["top", "pod", "burner", "--containers"]);
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("side")
    });
    c.eventually("a 10 s window", 30, || {
        let raw = c.ok(&[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner",
        ]);
        raw.contains("\"window\":\"10")
    });
    let top = c.ok(&["top", "pod", "burner", "--containers"]);
    eprintln!("{top}");
    // kubectl rounds nanocores up to millicores; report times are whole ms.
    let burn = millicores(&top, "burn").expect("burn row");
    assert!((500..=501).contains(&burn), "the simulated 500m: {top}");
    assert!(
        top.lines()
            .any(|l| l.contains(" burn ") && l.contains("32Mi")),
        "{top}"
    );
    // The annotations are the pod's: every container reports them.
    let side = millicores(&top, "side").expect("side row");
    assert!((500..=501).contains(&side), "{top}");
    assert!(
        top.lines()
            .any(|l| l.contains(" side ") && l.contains("32Mi")),
        "{top}"
    );
    // Pod totals, with a label selector, in 1.33 and 1.35.
    for bin in [peers::kubectl(), peers::kubectl_latest()] {
        let out = c.kubectl_bin_as(&bin, &c.kubeconfig, &["top", "pod", "-l", "app=burner"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{bin:?}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let cpu = millicores(&text, "burner").expect("a CPU figure");
        assert!((1000..=1002).contains(&cpu), "{bin:?}: {text}");
    }
    let none = c.ok(&[
        "get",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods?labelSelector=app%3Dother",
    ]);
    assert!(none.contains("\"items\":[]"), "{none}");

    let mut top = String::new();
    c.eventually("kubectl top node shows hn-top", 30, || {
        let out = c.kubectl(&["top", "node", "hn-top"]);
        top = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success() && top.contains("hn-top")
    });
    eprintln!("{top}");
    // The node: its own 5m plus its containers' 1000m.
    let cpu = millicores(&top, "hn-top").expect("a CPU figure");
    assert!((1000..=1010).contains(&cpu), "{top}");
    let raw = c.ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/hn-top"]);
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["kind"], "NodeMetrics");
    assert!(
        v["window"].as_str().is_some_and(|w| w.starts_with("10")),
        "{raw}"
    );
    let out = c.kubectl_bin_as(&peers::kubectl_latest(), &c.kubeconfig, &["top", "node"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("hn-top"));

    // Read-only, and RBAC as metrics-server's: view reads pod metrics in
    // its namespace; a user without a role reads nothing.
    c.fails(&[
        "delete",
        "--raw",
        "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner",
    ]);
    let nobody = c.cert_kubeconfig("nobody", &[]);
    let out = c.kubectl_as(&nobody, &["top", "pod", "burner"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    c.ok(&[
        "create",
        "rolebinding",
        "viewer",
        "--clusterrole=view",
        "--user=viewer",
        "-n",
        "default",
    ]);
    let viewer = c.cert_kubeconfig("viewer", &[]);
    c.eventually("view reads pod metrics", 10, || {
        c.kubectl_as(&viewer, &["top", "pod", "burner"])
            .status
            .success()
    });
    assert!(
        !c.kubectl_as(&viewer, &["top", "node"]).status.success(),
        "nodes are cluster-scoped"
    );
}

#[test]
fn metrics_are_scraped_with_a_prometheus_parser_and_move() {
    let mut c = Cluster::start(|_| {});
    c.start_node("hn-prom", 0);
    c.wait_output(&["get", "nodes"], "hn-prom   Ready", 20);
    let pod = POD.replace("hn-top", "hn-prom");
    c.ok(&[
        "apply",
        "-f",
        c.write("burner.yaml", &pod).to_str().unwrap(),
    ]);
    let burn = [("pod", "burner"), ("container", "burn")];
    let mut first = None;
    c.eventually("the burner's series", 30, || {
        let s = c.scrape();
        let burning = s
            .total("container_cpu_usage_seconds_total", &burn)
            .is_some_and(|v| v > 0.0);
        first = Some(s);
        burning
    });
    let first = first.unwrap();
    // The cluster works: lists, writes, a usage report later.
    c.ok(&["get", "pods"]);
    c.ok(&["create", "configmap", "touch", "--from-literal=a=b"]);
    std::thread::sleep(std::time::Duration::from_secs(11));
    let second = c.scrape();
    eprintln!("{first:?}\n{second:?}");
    let f = |s: &Scrape, sample: &str, labels: &[(&str, &str)]| {
        s.total(sample, labels)
            .unwrap_or_else(|| panic!("no {sample} {labels:?} in the scrape"))
    };
    let lists = [("verb", "LIST"), ("resource", "pods"), ("code", "200")];
    assert!(
        f(&second, "apiserver_request_total", &lists)
            > f(&first, "apiserver_request_total", &lists),
        "pods LISTs counted"
    );
    assert!(
        f(
            &second,
            "apiserver_request_duration_seconds_count",
            &[("verb", "LIST"), ("resource", "pods")]
        ) >= f(&second, "apiserver_request_total", &lists) - 1.0
    );
    let revision = "etcd_debugging_mvcc_current_revision";
    assert!(
        f(&second, revision, &[]) > f(&first, revision, &[]),
        "the store's revision"
    );
    assert!(f(&second, "etcd_mvcc_db_total_size_in_bytes", &[]) > 0.0);
    // Every write commits: the commit latency histogram counts them all,
    // and its +Inf bucket is its count.
    let commits = "etcd_disk_backend_commit_duration_seconds_count";
    assert!(f(&second, commits, &[]) > f(&first, commits, &[]));
    assert_eq!(
        f(
            &second,
            "etcd_disk_backend_commit_duration_seconds_bucket",
            &[("le", "+Inf")]
        ),
        f(&second, commits, &[])
    );
    assert!(
        f(
            &second,
            "etcd_disk_backend_commit_duration_seconds_sum",
            &[]
        ) > 0.0
    );
    assert!(
        f(
            &second,
            "apiserver_longrunning_requests",
            &[("verb", "WATCH")]
        ) >= 1.0,
        "the gateway's watches are long-running requests"
    );
    assert_eq!(f(&second, "skiff_gateway_connected_nodes", &[]), 1.0);
    let frames = "skiff_gateway_frames_received_total";
    assert!(f(&second, frames, &[]) > f(&first, frames, &[]));
    // Bytes move with frames: at least a 4-byte header per frame each way.
    for (bytes, frames) in [
        ("skiff_gateway_received_bytes_total", frames),
        (
            "skiff_gateway_sent_bytes_total",
            "skiff_gateway_frames_sent_total",
        ),
    ] {
        assert!(f(&second, bytes, &[]) > f(&first, bytes, &[]), "{bytes}");
        assert!(
            f(&second, bytes, &[]) >= 4.0 * f(&second, frames, &[]),
            "{bytes}"
        );
    }
    // 500m simulated: 5 more CPU-seconds per 10 s report (one or two
    // reports came in between the scrapes).
    let cpu = "container_cpu_usage_seconds_total";
    let simulated = [burn[0], burn[1], ("simulated", "true")];
    let burned = f(&second, cpu, &simulated) - f(&first, cpu, &simulated);
    assert!(
        (4.9..=5.1).contains(&burned) || (9.9..=10.1).contains(&burned),
        "burned {burned} s"
    );
    assert_eq!(
        f(&second, "container_memory_working_set_bytes", &burn),
        33554432.0
    );
    let node_cpu = "node_cpu_usage_seconds_total";
    assert!(
        f(&second, node_cpu, &[("node", "hn-prom")]) > f(&first, node_cpu, &[("node", "hn-prom")])
    );

    // Authorized by RBAC: system:monitoring may scrape, others get 403.
    let monitor = c.cert_kubeconfig("prometheus", &["system:monitoring"]);
    assert!(
        c.kubectl_as(&monitor, &["get", "--raw", "/metrics"])
            .status
            .success()
    );
    let nobody = c.cert_kubeconfig("nobody", &[]);
    let out = c.kubectl_as(&nobody, &["get", "--raw", "/metrics"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Forbidden") || err.contains("forbidden"),
        "{err}"
    );
    let (code, _) = c.request_raw("GET", "/metrics", "", Vec::new());
    assert_eq!(code, 200, "the admin (system:masters) scrapes");
}

const AUTOSCALED: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: burn, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: burn}}
  template:
    metadata:
      labels: {app: burn}
      annotations: {hollow.skiff.dev/cpu-millis: \"500\"}
    spec:
      containers:
      - name: burn
        image: registry.local/burner:1
        resources: {requests: {cpu: 250m}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: burn, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burn}
  minReplicas: 1
  maxReplicas: 4
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior: {scaleDown: {stabilizationWindowSeconds: 0}}
";

#[test]
fn an_hpa_scales_a_deployment_of_the_burner_up_and_back_down() {
    let mut c = Cluster::start(|_| {});
    c.start_control_loops();
    c.start_node("hn-hpa", 0);
    c.wait_output(&["get", "nodes"], "hn-hpa   Ready", 20);
    // Bad specs are refused with the field at fault.
    let bad = AUTOSCALED.replace("maxReplicas: 4", "maxReplicas: 0");
    let err = c.fails(&["apply", "-f", c.write("bad.yaml", &bad).to_str().unwrap()]);
    assert!(err.contains("spec.maxReplicas"), "{err}");
    c.ok(&[
        "apply",
        "-f",
        c.write("autoscaled.yaml", AUTOSCALED).to_str().unwrap(),
    ]);
    let replicas = || c.jsonpath(&["get", "deployment", "burn"], "{.spec.replicas}");
    // One pod at 500m of 250m requested is 200 % of the 50 % target: 4.
    c.eventually("the HPA scales the burner up to 4", 120, || {
        replicas() == "4"
    });
    let hpa = c.ok(&["get", "hpa", "burn"]);
    assert!(
        hpa.contains("Deployment/burn") && hpa.contains("/50%"),
        "{hpa}"
    );
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=SuccessfulRescale",
    ]);
    assert!(events.contains("New size: 4"), "{events}");
    // Idle pods (a new template): back down to the floor.
    c.ok(&[
        "patch",
        "deployment",
        "burn",
        "-p",
        r#"{"spec":{"template":{"metadata":{"annotations":{"hollow.skiff.dev/cpu-millis":"0"}}}}}"#,
    ]);
    c.eventually("the HPA scales the idle deployment down to 1", 150, || {
        replicas() == "1"
    });
    let status = c.jsonpath(
        &["get", "hpa", "burn"],
        "{.status.conditions[?(@.type==\"ScalingActive\")].status} {.status.currentMetrics[0].resource.current.averageUtilization}",
    );
    assert!(status.starts_with("True "), "{status}");

    // `kubectl autoscale` makes the same kind of HPA (autoscaling/v2) that
    // the controller acts on; the deleted one's recommendations are gone.
    c.ok(&["delete", "hpa", "burn"]);
    c.ok(&[
        "autoscale",
        "deployment",
        "burn",
        "--cpu-percent=50",
        "--min=1",
        "--max=3",
    ]);
    let spec = c.jsonpath(
        &["get", "hpa", "burn"],
        "{.apiVersion} {.spec.maxReplicas} {.spec.metrics[0].resource.target.averageUtilization}",
    );
    assert_eq!(spec, "autoscaling/v2 3 50");
    c.eventually("the new HPA computes a count", 60, || {
        c.jsonpath(
            &["get", "hpa", "burn"],
            "{.status.conditions[?(@.type==\"ScalingActive\")].status} {.status.desiredReplicas}",
        ) == "True 1"
    });
}
