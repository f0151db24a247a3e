//! Services across kernel nodes on one L2 segment: the seeds' example (a
//! Deployment of HTTP servers behind a Service, reached by DNS name from a
//! client pod on another node), `trafficDistribution: PreferSameNode`,
//! cluster DNS answers and refusals — driven with real kubectl.

use std::collections::BTreeSet;

use skiff_e2e::cluster::SegmentCluster;
use skiff_e2e::plane::Plane;
use skiff_e2e::*;

fn text(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a client pod pinned to `node` that makes `repeat` exchanges with
/// `addr` (see the tcp-connect guest) and returns its log once it ended.
fn client(plane: &Plane, host: &str, name: &str, node: &str, addr: &str, repeat: u32) -> String {
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: my-project-dev}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: client
    image: {host}/demo/tcp-connect:1.0
    env:
    - {{name: ADDR, value: "{addr}"}}
    - {{name: REPEAT, value: "{repeat}"}}
    - {{name: MESSAGE, value: "GET /{name} HTTP/1.1\r\nHost: x\r\n\r\n"}}
"#
    );
    plane.run_to_completion(&pod, "my-project-dev", name)
}

/// The pods that answered, from the echo server's `Hostname:` lines.
fn responders(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| l.split("Hostname: ").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn a_deployment_behind_a_service_answers_by_name_across_nodes() {
    let _g = shared();
    let c = SegmentCluster::boot(
        &["svc-a", "svc-b"],
        96,
        &[
            ("demo/echo:1.0", "echo-server"),
            ("demo/tcp-connect:1.0", "tcp-connect"),
        ],
    );
    let (plane, host) = (&c.plane, c.host());
    let log = || c.log();

    // The seeds' example, apart from the image.
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: my-project-dev}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: my-app, namespace: my-project-dev}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: my-app}}}}
  template:
    metadata: {{labels: {{app: my-app}}}}
    spec:
      containers:
      - name: web
        image: {host}/demo/echo:1.0
        ports: [{{containerPort: 8080}}]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: my-app-service, namespace: my-project-dev}}
spec:
  selector: {{app: my-app}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    ));
    plane.wait_output(
        &[
            "get",
            "deployment",
            "-n",
            "my-project-dev",
            "my-app",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        "3",
        240,
        log,
    );
    let placement = text(plane.kubectl(&[
        "get",
        "pods",
        "-n",
        "my-project-dev",
        "-l",
        "app=my-app",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
    ]));
    let replicas: Vec<(String, String)> = placement
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(p, n)| (p.to_string(), n.to_string()))
        .collect();
    assert_eq!(replicas.len(), 3, "{placement}");

    // From each node, by DNS name (short, namespaced and full), every
    // request is answered, by every replica over the repeated requests.
    let all: BTreeSet<String> = replicas.iter().map(|(p, _)| p.clone()).collect();
    for (i, (node, name)) in [
        ("svc-a", "my-app-service:80"),
        ("svc-b", "my-app-service.my-project-dev:80"),
        (
            "svc-b",
            "my-app-service.my-project-dev.svc.cluster.local:80",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let out = client(plane, &host, &format!("client-{i}"), node, name, 24);
        assert!(out.contains("succeeded 24 of 24"), "{node} → {name}: {out}");
        let seen: BTreeSet<String> = responders(&out).into_iter().collect();
        assert_eq!(seen, all, "{node} → {name} reached every replica: {out}");
    }

    // PreferSameNode: a client on a node with a replica stays there.
    plane.ok(&[
        "patch",
        "service",
        "-n",
        "my-project-dev",
        "my-app-service",
        "--type=merge",
        "-p",
        r#"{"spec":{"trafficDistribution":"PreferSameNode"}}"#,
    ]);
    let (_, local_node) = &replicas[0];
    let local: BTreeSet<String> = replicas
        .iter()
        .filter(|(_, n)| n == local_node)
        .map(|(p, _)| p.clone())
        .collect();
    plane.wait_output(
        &[
            "get",
            "endpointslices",
            "-n",
            "my-project-dev",
            "-o",
            "jsonpath={.items[*].endpoints[*].hints.forNodes[*].name}",
        ],
        local_node,
        60,
        log,
    );
    let out = client(
        plane,
        &host,
        "client-local",
        local_node,
        "my-app-service:80",
        16,
    );
    assert!(out.contains("succeeded 16 of 16"), "{out}");
    let seen: BTreeSet<String> = responders(&out).into_iter().collect();
    assert_eq!(
        seen, local,
        "PreferSameNode keeps {local_node}'s client on its replicas: {out}"
    );

    // A client keeps working while the Deployment is rolled and scaled:
    // every attempt ends at once (an answer, or a refusal while the
    // endpoints catch up), none hangs, and nearly all are answered.
    plane.ok(&[
        "patch",
        "service",
        "-n",
        "my-project-dev",
        "my-app-service",
        "--type=merge",
        "-p",
        r#"{"spec":{"trafficDistribution":null}}"#,
    ]);
    let remote_node = if local_node == "svc-a" {
        "svc-b"
    } else {
        "svc-a"
    };
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: client-roll, namespace: my-project-dev}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: {remote_node}}}
  containers:
  - name: client
    image: {host}/demo/tcp-connect:1.0
    env:
    - {{name: ADDR, value: "my-app-service:80"}}
    - {{name: REPEAT, value: "160"}}
    - {{name: PAUSE_MS, value: "250"}}
    - {{name: MESSAGE, value: "GET /roll HTTP/1.1\r\nHost: x\r\n\r\n"}}
"#
    ));
    plane.wait_output(
        &["logs", "-n", "my-project-dev", "client-roll"],
        "attempt 3:",
        120,
        log,
    );
    let started = std::time::Instant::now();
    plane.ok(&[
        "rollout",
        "restart",
        "-n",
        "my-project-dev",
        "deployment/my-app",
    ]);
    plane.ok(&[
        "rollout",
        "status",
        "-n",
        "my-project-dev",
        "deployment/my-app",
        "--timeout=240s",
    ]);
    plane.ok(&[
        "scale",
        "-n",
        "my-project-dev",
        "deployment/my-app",
        "--replicas=1",
    ]);
    plane.wait_output(
        &[
            "get",
            "pod",
            "-n",
            "my-project-dev",
            "client-roll",
            "-o",
            "jsonpath={.status.phase}",
        ],
        "Succeeded",
        240,
        log,
    );
    let out = text(plane.kubectl(&["logs", "-n", "my-project-dev", "client-roll"]));
    let answered = out.lines().filter(|l| l.contains(": received:")).count();
    let failed: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("attempt") && !l.contains(": received:"))
        .collect();
    eprintln!(
        "rolling client: {answered} answered, {} failed, {:?} after the restart began: {failed:?}",
        failed.len(),
        started.elapsed()
    );
    assert_eq!(answered + failed.len(), 160, "{out}");
    assert!(
        failed.iter().all(|l| {
            let l = l.to_lowercase();
            // A backend that just left answers at once: refused, reset,
            // or unreachable (its pod address no longer on the node).
            l.contains("refused") || l.contains("reset") || l.contains("unreachable")
        }),
        "failures are immediate refusals, resets or unreachables, never timeouts: {failed:?}"
    );
    assert!(answered >= 128, "at least 80 % answered: {out}");

    // Unknown cluster names do not resolve; a Service without endpoints
    // refuses at once.
    plane.apply(
        r#"
apiVersion: v1
kind: Service
metadata: {name: empty, namespace: my-project-dev}
spec:
  selector: {app: nothing}
  ports: [{port: 80}]
"#,
    );
    let out = client(
        plane,
        &host,
        "client-nx",
        "svc-a",
        "nope.my-project-dev.svc.cluster.local:80",
        1,
    );
    assert!(out.contains("succeeded 0 of 1"), "{out}");
    assert!(!out.contains("received"), "{out}");
    let out = client(plane, &host, "client-empty", "svc-b", "empty:80", 1);
    assert!(out.to_lowercase().contains("refused"), "{out}");

    c.shutdown();
}
