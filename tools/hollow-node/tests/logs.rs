//! `kubectl logs` end to end: the real API server's `pods/log`, the node
//! gateway's log streams, hollow nodes' kubelet core and fake runtime, read
//! by kubectl 1.33 and the Python client.

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Cluster, kubectl_path};
use skiff_hollow_node::Stats;

fn pod(
    name: &str,
    node: Option<&str>,
    policy: &str,
    annotations: &[(&str, &str)],
    containers: &[&str],
) -> String {
    let mut y = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\n  annotations:\n"
    );
    for (k, v) in annotations {
        y += &format!("    hollow.skiff.dev/{k}: {v:?}\n");
    }
    y += &format!("spec:\n  restartPolicy: {policy}\n");
    if let Some(n) = node {
        y += &format!("  nodeName: {n}\n");
    }
    y += "  containers:\n";
    for c in containers {
        y += &format!("  - name: {c}\n    image: registry.local/app:1\n");
    }
    y
}

/// kubectl's combined output and success.
fn run(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = c.kubectl_as(&c.kubeconfig, args);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `kubectl logs -f …`, its stdout lines arriving on a channel.
fn follow(c: &Cluster, args: &[&str]) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(kubectl_path())
        .args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

fn wait_exit(child: &mut std::process::Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(Instant::now() < deadline, "kubectl logs -f did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kubectl_and_python_read_pod_logs() {
    let mut c = Cluster::start(|_| {});
    // hn-1's certificate for the pods/log check below, taken before its
    // node runs (a live node cannot be bootstrapped again).
    let creds = c.bootstrap("hn-1", &c.token).expect("bootstrap");
    c.start_node("hn-0", 0);
    c.start_node("hn-1", 1);
    c.wait_output(&["get", "nodes"], "hn-0   Ready", 20);
    c.wait_output(&["get", "nodes"], "hn-1   Ready", 20);
    let pods = [
        pod(
            "talk",
            Some("hn-0"),
            "Always",
            &[(
                "log",
                "hello from {container} attempt {attempt}\nsecond line of {container}",
            )],
            &["a", "b"],
        ),
        // Crashes after 6 s and restarts at once (the first back-off is 0).
        pod(
            "crash",
            Some("hn-0"),
            "Always",
            &[
                ("log", "run {attempt}"),
                ("run-ms", "6000"),
                ("exit-code", "1"),
            ],
            &["main"],
        ),
        pod(
            "forever",
            Some("hn-1"),
            "Always",
            &[("log-every-ms", "200")],
            &["main"],
        ),
        pod("unscheduled", None, "Always", &[], &["main"]),
    ];
    for (i, p) in pods.iter().enumerate() {
        let f = c.write(&format!("pod{i}.yaml"), p);
        c.ok(&["apply", "-f", f.to_str().unwrap()]);
    }
    let phase = |p: &str| ["get", "pod", p, "-o", "jsonpath={.status.phase}"].map(String::from);
    let args = phase("talk");
    c.wait_output(&args.each_ref().map(String::as_str), "Running", 20);

    // Plain reads, --tail, -c, and kubectl's default container (the first).
    assert_eq!(
        c.ok(&["logs", "talk", "-c", "a"]),
        "hello from a attempt 0\nsecond line of a\n"
    );
    assert_eq!(
        c.ok(&["logs", "talk", "-c", "b", "--tail=1"]),
        "second line of b\n"
    );
    let (ok, out, err) = run(&c, &["logs", "talk"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from a attempt 0\nsecond line of a\n");
    assert!(
        err.contains("Defaulted container \"a\" out of: a, b"),
        "{err}"
    );
    let stamped = c.ok(&["logs", "talk", "-c", "b", "--timestamps", "--tail=1"]);
    let (ts, line) = stamped.split_once(' ').unwrap();
    assert_eq!(line, "second line of b\n");
    assert!(
        ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
        "{stamped}"
    );
    assert_eq!(
        c.ok(&["logs", "talk", "-c", "a", "--limit-bytes=5"]),
        "hello"
    );
    // kube's errors, from the API server and from the node.
    let (ok, _, err) = run(&c, &["logs", "talk", "-c", "nope"]);
    assert!(
        !ok && err.contains("container nope is not valid for pod talk"),
        "{err}"
    );
    let (ok, _, err) = run(&c, &["logs", "talk", "-c", "a", "--previous"]);
    assert!(
        !ok && err.contains("previous terminated container \"a\" in pod \"talk\" not found"),
        "{err}"
    );
    let (ok, _, err) = run(&c, &["logs", "unscheduled"]);
    assert!(
        !ok && err.contains("container \"main\" in pod \"unscheduled\" is waiting to start"),
        "{err}"
    );

    // --previous after a restart: the instance before the running one.
    c.wait_output(
        &[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        "1",
        20,
    );
    assert_eq!(c.ok(&["logs", "crash", "--previous"]), "run 0\n");
    assert_eq!(c.ok(&["logs", "crash"]), "run 1\n");

    // -f: lines that appear later arrive, and kubectl exits when the
    // container does.
    let ticker = pod(
        "ticker",
        Some("hn-0"),
        "Never",
        &[("run-ms", "5200"), ("log-every-ms", "500")],
        &["main"],
    );
    let f = c.write("ticker.yaml", &ticker);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let args = phase("ticker");
    c.wait_output(&args.each_ref().map(String::as_str), "Running", 20);
    let (mut child, lines) = follow(&c, &["logs", "-f", "ticker"]);
    let first = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("first line");
    assert_eq!(first, "hollow container main started (attempt 0)");
    let snapshot = c.ok(&["logs", "ticker"]);
    assert!(
        !snapshot.contains("tick 10"),
        "too late to test follow: {snapshot}"
    );
    let st = wait_exit(&mut child, 20);
    assert!(st.success(), "kubectl logs -f failed: {st}");
    let rest: Vec<String> = lines.try_iter().collect();
    let want: Vec<String> = (1..=10)
        .map(|i| format!("hollow container main tick {i}"))
        .collect();
    assert_eq!(rest, want);

    // A follower that goes away cancels its stream on the node, whether
    // output is flowing or the container is quiet.
    let stats = c.stats();
    assert_eq!(Stats::get(&stats.log_cancels), 0);
    let (mut child, lines) = follow(&c, &["logs", "-f", "forever", "--tail=1"]);
    let l = lines.recv_timeout(Duration::from_secs(10)).expect("a line");
    assert!(l.starts_with("hollow container main"), "{l}");
    let l = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a later line");
    assert!(l.contains(" tick "), "{l}");
    let (mut quiet, quiet_lines) = follow(&c, &["logs", "-f", "talk", "-c", "b"]);
    let l = quiet_lines
        .recv_timeout(Duration::from_secs(10))
        .expect("a line");
    assert_eq!(l, "hello from b attempt 0");
    assert_eq!(c.with_gateway(|g| g.open_log_streams()), 2);
    for (i, ch) in [&mut child, &mut quiet].into_iter().enumerate() {
        ch.kill().unwrap();
        ch.wait().unwrap();
        c.eventually("the stream closed on the gateway", 10, || {
            c.with_gateway(|g| g.open_log_streams()) == 1 - i
        });
        c.eventually("the node cancelled the stream", 10, || {
            Stats::get(&stats.log_cancels) == 1 + i as u64
        });
    }

    // The Python client.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/logs.py");
    c.run_python(script, "python logs: all checks passed");

    // RBAC: reading the pod is not reading its log (`get pods/log`).
    let ca = skiff_apiserver::pki::Ca::load(&c.pki_dir()).unwrap();
    let dev = ca.client_cert("dev", &[]).unwrap();
    let ca_pem = std::fs::read_to_string(c.pki_dir().join(skiff_apiserver::pki::CA_CERT)).unwrap();
    let dev_kc = c.write(
        "dev.kubeconfig",
        &skiff_apiserver::pki::kubeconfig(&c.url, &ca_pem, "dev", &dev),
    );
    c.ok(&[
        "create",
        "role",
        "pod-reader",
        "--verb=get",
        "--resource=pods",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "dev",
        "--role=pod-reader",
        "--user=dev",
    ]);
    let out = c.kubectl_as(&dev_kc, &["logs", "talk", "-c", "a"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("User \"dev\" cannot get resource \"pods/log\""),
        "{err}"
    );
    c.ok(&[
        "create",
        "role",
        "log-reader",
        "--verb=get",
        "--resource=pods/log",
    ]);
    c.ok(&[
        "create",
        "rolebinding",
        "dev-logs",
        "--role=log-reader",
        "--user=dev",
    ]);
    c.eventually("RBAC to allow dev's pods/log", 10, || {
        c.kubectl_as(&dev_kc, &["logs", "talk", "-c", "a", "--tail=1"])
            .stdout
            == b"second line of a\n"
    });

    // A node may not read pod logs (kube's node authorizer grants no
    // pods/log), least of all another node's pods.
    let kc = c.node_kubeconfig("hn-1", &creds);
    // (kubectl logs would stop at reading the pod; ask pods/log directly.)
    let out = c.kubectl_as(
        &kc,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/talk/log?container=a",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a node read another node's pod logs");
    assert!(
        err.contains("User \"system:node:hn-1\" cannot get resource \"pods/log\""),
        "{err}"
    );

    // The pod's node is gone: a clear error, not a hang.
    c.stop_node("hn-1");
    c.eventually("hn-1's session to end", 10, || {
        let (ok, _, err) = run(&c, &["logs", "forever"]);
        !ok && err.contains("node \"hn-1\" is not connected")
    });
}
