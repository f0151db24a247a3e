//! NetworkPolicy enforced by kernel nodes on one segment: a "db" pod behind
//! a Service, clients on its node (spliced in memory) and on another node
//! (over the wire). Ingress from selected pods only, a namespace selector,
//! default-deny egress, and removal restoring traffic — driven with real
//! kubectl, each client a real pod connecting through the Service name.

use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use skiff_e2e::cluster::SegmentCluster;
use skiff_e2e::plane::Plane;
use skiff_e2e::*;

const NS: &str = "shop";

fn text(out: std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a one-shot client pod (`labels` as a YAML map) on `node` that
/// connects to the db Service once; its log once it ended.
fn client(plane: &Plane, host: &str, ns: &str, name: &str, labels: &str, node: &str) -> String {
    let pod = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  containers:
  - name: client
    image: {host}/demo/tcp-connect:1.0
    env:
    - {{name: ADDR, value: "db.{NS}:80"}}
    - {{name: REPEAT, value: "1"}}
    - {{name: MESSAGE, value: "GET /{name} HTTP/1.1\r\nHost: db\r\n\r\n"}}
"#
    );
    let log = plane.run_to_completion(&pod, ns, name);
    eprintln!("{ns}/{name} on {node}:\n{log}");
    log
}

fn answered(log: &str) -> bool {
    log.contains("succeeded 1 of 1") && log.contains("Hostname: db")
}

fn refused(log: &str) -> bool {
    log.contains("succeeded 0 of 1")
}

/// Gives the gateway a moment to push a policy change the host cannot
/// observe (a watch event and one frame: well under a second).
fn settle() {
    std::thread::sleep(Duration::from_secs(2));
}

/// How soon a policy change must reach new connections (the issue's bar).
const WITHIN: Duration = Duration::from_secs(1);

/// GETs through host port `port` every 20 ms until one is answered (or
/// not, as `answered` says) and returns how long that took; panics past
/// 10 s. The host reaches the pod through the segment's router.
fn time_until(port: u16, answered: bool) -> Duration {
    let t = Instant::now();
    loop {
        let ok = http_get(port, "/from-the-host").is_ok_and(|r| r.contains("200 OK"));
        if ok == answered {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "still {} after 10 s",
            if answered { "refused" } else { "answered" }
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn network_policies_gate_connections_on_and_across_nodes() {
    let _g = shared();
    let (a, b) = ("np-a", "np-b");
    let c = SegmentCluster::boot(
        &[a, b],
        96,
        &[
            ("demo/echo:1.0", "echo-server"),
            ("demo/tcp-connect:1.0", "tcp-connect"),
        ],
    );
    let (plane, host) = (&c.plane, c.host());
    let log = || c.log();
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: v1
kind: Namespace
metadata: {{name: tools, labels: {{team: ops}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: db, namespace: {NS}, labels: {{app: db}}}}
spec:
  nodeSelector: {{kubernetes.io/hostname: {a}}}
  containers:
  - name: db
    image: {host}/demo/echo:1.0
    ports: [{{name: sql, containerPort: 8080}}]
    env: [{{name: POD_NAME, value: db}}]
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {NS}}}
spec:
  selector: {{app: db}}
  ports: [{{port: 80, targetPort: sql}}]
"#
    ));
    plane.wait_output(
        &[
            "get",
            "pod",
            "-n",
            NS,
            "db",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
        240,
        log,
    );

    // No policy: anyone reaches the db, the host too (through a forward to
    // the pod's address).
    let out = client(plane, &host, NS, "open", "{app: other}", b);
    assert!(answered(&out), "{out}");
    let db_ip = text(plane.kubectl(&[
        "get",
        "pod",
        "-n",
        NS,
        "db",
        "-o",
        "jsonpath={.status.podIP}",
    ]));
    let from_host = c
        .segment
        .forward(SocketAddrV4::new(db_ip.parse().expect("db pod IP"), 8080))
        .expect("forward to the db pod");
    time_until(from_host, true); // (panics if never answered)

    // Ingress to the db only from web pods, on its named port, and from
    // the tools namespace.
    plane.apply(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: db-ingress, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{app: db}}}}
  ingress:
  - from: [{{podSelector: {{matchLabels: {{app: web}}}}}}]
    ports: [{{port: sql}}]
  - from: [{{namespaceSelector: {{matchLabels: {{team: ops}}}}}}]
"#
    ));
    // The host is none of the allowed peers: its new connections stop
    // within a second of the policy's creation.
    let took = time_until(from_host, false);
    eprintln!("denied the host {took:?} after the policy was created");
    assert!(took <= WITHIN, "the policy took {took:?} to apply");
    let listed = text(plane.kubectl(&["get", "networkpolicy", "-n", NS]));
    assert!(
        listed.contains("db-ingress") && listed.contains("app=db"),
        "{listed}"
    );
    for (name, node) in [("web-remote", b), ("web-local", a)] {
        let out = client(plane, &host, NS, name, "{app: web}", node);
        assert!(answered(&out), "an allowed pod on {node} is served: {out}");
    }
    for (name, node) in [("other-remote", b), ("other-local", a)] {
        let out = client(plane, &host, NS, name, "{app: other}", node);
        assert!(
            refused(&out),
            "a pod not allowed on {node} is refused: {out}"
        );
        assert!(!out.contains("Hostname: db"), "{out}");
    }
    let out = client(plane, &host, "tools", "ops", "{app: other}", b);
    assert!(answered(&out), "the ops namespace is allowed: {out}");
    // The node's own probes still pass: the db stays Ready.
    let ready = text(plane.kubectl(&[
        "get",
        "pod",
        "-n",
        NS,
        "db",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]));
    assert_eq!(ready, "True", "probes from the node are not policed");

    // Default-deny egress for web pods: their own connects fail at once.
    plane.apply(&format!(
        r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: web-egress, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  policyTypes: [Egress]
"#
    ));
    settle();
    let out = client(plane, &host, NS, "web-denied", "{app: web}", b);
    assert!(refused(&out) && out.contains("connect:"), "{out}");

    // Policies gone: traffic flows again, within a second.
    plane.ok(&["delete", "networkpolicy", "-n", NS, "--all"]);
    let took = time_until(from_host, true);
    eprintln!("allowed the host again {took:?} after the policies were deleted");
    assert!(took <= WITHIN, "the deletion took {took:?} to apply");
    let out = client(plane, &host, NS, "other-again", "{app: other}", a);
    assert!(answered(&out), "{out}");
    let out = client(plane, &host, NS, "web-again", "{app: web}", b);
    assert!(answered(&out), "{out}");

    // Malformed policies are refused, naming the field.
    let bad = plane.write(
        "bad-policy.yaml",
        &format!(
            r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: bad, namespace: {NS}}}
spec:
  podSelector: {{}}
  ingress:
  - from: [{{ipBlock: {{cidr: 10.0.0.0/8, except: [192.168.0.0/16]}}}}]
    ports: [{{port: 70000}}]
"#
        ),
    );
    let err = plane.fails(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(
        err.contains("spec.ingress[0].from[0].ipBlock.except[0]")
            && err.contains("spec.ingress[0].ports[0].port"),
        "{err}"
    );
    c.shutdown();
}
