//! Self-healing with kernel nodes: a Deployment on two QEMU kernel nodes,
//! placed by the scheduler; killing one VM makes the node lifecycle
//! controller taint it and evict its pods, and the ReplicaSet brings the
//! Deployment back to its replicas on the surviving node.

use std::time::Duration;

use skiff_e2e::plane::Plane;
use skiff_e2e::*;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      # Fail over fast (kube's default is 300 s).
      tolerations:
      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 1}
      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 1}
      topologySpreadConstraints:
      - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app: web}}}
      containers:
      - name: main
        image: skiff.dev/testrt
        args: ["echo serving", "forever"]
"#;

#[test]
fn a_deployment_heals_onto_the_surviving_kernel_node() {
    let _g = shared();
    let grace = Duration::from_secs(3);
    let mut plane = Plane::start(|cfg| {
        cfg.renew_interval = Duration::from_millis(500);
        cfg.node_grace = grace;
    });
    plane.start_control_loops(grace, None);
    let mut a = boot(plane.node_spec("heal-a", &plane.token));
    let b = boot(plane.node_spec("heal-b", &plane.token));
    let logs = || {
        format!(
            "heal-a:\n{}\nheal-b:\n{}",
            a.node.log_text(),
            b.node.log_text()
        )
    };
    for n in ["heal-a", "heal-b"] {
        plane.wait_output(
            &[
                "get",
                "node",
                n,
                "-o",
                "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
            ],
            "True",
            60,
            logs,
        );
    }
    plane.apply(DEPLOYMENT);
    let ready = "jsonpath={.status.readyReplicas}/{.status.replicas}";
    plane.wait_output(&["get", "deployment", "web", "-o", ready], "2/2", 60, logs);
    let placed = plane.ok(&[
        "get",
        "pods",
        "-l",
        "app=web",
        "-o",
        "jsonpath={range .items[*]}{.spec.nodeName}{\"\\n\"}{end}",
    ]);
    assert!(
        placed.lines().any(|n| n == "heal-a"),
        "spread over both nodes:\n{placed}"
    );

    eprintln!("placed:\n{placed}");
    // heal-a dies: within grace + eviction + restart, both replicas run on heal-b.
    a.node.kill();
    // Pods on the dead node stay Terminating (no kubelet confirms), as in
    // kube: count the live ones.
    plane.eventually(
        "two live replicas Running on heal-b",
        60,
        || plane.ok(&["get", "pods", "-o", "wide"]),
        || {
            let out = plane.kubectl(&[
                "get", "pods", "-l", "app=web", "-o",
                "jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{\"\\n\"}{end}",
            ]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let live: Vec<String> = text
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|l| l.split(' ').count() == 2)
                .collect();
            live == ["heal-b Running", "heal-b Running"]
        },
    );
    let taints = plane.ok(&[
        "get",
        "node",
        "heal-a",
        "-o",
        "jsonpath={.spec.taints[*].key}",
    ]);
    assert!(
        taints.contains("node.kubernetes.io/unreachable"),
        "taints: {taints}"
    );
    plane.wait_output(
        &["get", "deployment", "web", "-o", ready],
        "2/2",
        30,
        String::new,
    );
    b.shutdown();
}
