//! Reaching a pod from outside without any inbound port on its node:
//! `kubectl port-forward` (kubectl 1.33 and the newest), the API server's
//! `pods/proxy` and `services/proxy`, all tunnelled over the node's own
//! connection to the control plane — on a real kernel node.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use skiff_e2e::plane::Plane;
use skiff_e2e::registry::Registry;
use skiff_e2e::*;
use skiff_test_support::peers;

/// A running `kubectl port-forward` and the local port it chose.
struct Forward {
    child: Child,
    port: u16,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Forward {
    fn start(plane: &Plane, kubectl: &std::path::Path, target: &str, ports: &str) -> Forward {
        let mut child = plane
            .kubectl_command(kubectl, &plane.kubeconfig)
            .args(["port-forward", "--address", "127.0.0.1", target, ports])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl port-forward");
        let (tx, stderr) = std::sync::mpsc::channel();
        let err = child.stderr.take().expect("piped");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        // "Forwarding from 127.0.0.1:41234 -> 8080"
        let port = loop {
            line.clear();
            if out.read_line(&mut line).unwrap_or(0) == 0 {
                let errors: Vec<String> = stderr.try_iter().collect();
                panic!("kubectl port-forward {target} ended: {errors:?}");
            }
            if let Some(rest) = line.trim().strip_prefix("Forwarding from 127.0.0.1:") {
                break rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected line {line:?}"));
            }
        };
        std::thread::spawn(move || {
            let mut sink = String::new();
            let _ = out.read_to_string(&mut sink);
        });
        Forward {
            child,
            port,
            stderr,
        }
    }

    /// One HTTP/1.1 request through the forward; the whole response.
    fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap_or_else(|e| {
            let errors: Vec<String> = self.stderr.try_iter().collect();
            panic!("connect to the forward: {e}; kubectl said: {errors:?}")
        });
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: pf\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }
}

#[test]
fn port_forward_and_the_api_server_proxy_reach_pods_through_the_nodes_connection() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes_with_pod_network(&reg);
    reg.push_wasm("demo/echo:1.0", &guests::path("echo-server"));
    let b = boot(plane.node_spec("pf-1", &plane.token).memory_mib(64));
    let log = || b.node.log_text();
    plane.wait_wasm_node("pf-1", log);
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: echo, namespace: default, labels: {{app: echo}}}}
spec:
  containers:
  - name: echo
    image: {host}/demo/echo:1.0
    ports: [{{name: http, containerPort: 8080}}]
    env: [{{name: POD_NAME, value: echo}}]
    readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: echo-svc, namespace: default}}
spec:
  selector: {{app: echo}}
  ports: [{{name: web, port: 80, targetPort: http}}]
"#
    ));
    plane.wait_output(
        &[
            "get",
            "pod",
            "echo",
            "-o",
            "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
        ],
        "True",
        120,
        log,
    );

    // Port-forward with both kubectl versions, to the pod and to the
    // Service (kubectl resolves it to a pod and its target port).
    for (kubectl, target, ports) in [
        (peers::kubectl(), "pod/echo", ":8080"),
        (peers::kubectl_latest(), "pod/echo", ":http"),
        (peers::kubectl(), "svc/echo-svc", ":80"),
    ] {
        let fwd = Forward::start(&plane, &kubectl, target, ports);
        let t = Instant::now();
        for i in 0..3 {
            let out = fwd.get(&format!("/through-{i}"));
            assert!(
                out.starts_with("HTTP/1.1 200 OK") && out.contains("echo"),
                "{} {target} request {i}: {out:?}; node log:\n{}",
                kubectl.display(),
                log()
            );
            assert!(out.contains(&format!("request_uri=/through-{i}")), "{out}");
        }
        // Two connections at once, each its own stream pair (the echo
        // server takes one at a time: the first's answer waits in the
        // tunnel while the second is served).
        let mut a = TcpStream::connect(("127.0.0.1", fwd.port)).unwrap();
        a.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(a, "GET /first HTTP/1.1\r\nHost: pf\r\n\r\n").unwrap();
        let out = fwd.get("/while-another-is-open");
        assert!(out.contains("request_uri=/while-another-is-open"), "{out}");
        let mut first = String::new();
        let _ = a.read_to_string(&mut first);
        assert!(first.contains("request_uri=/first"), "{first:?}");
        eprintln!(
            "{} port-forward {target}: 4 requests in {:?}",
            kubectl.display(),
            t.elapsed()
        );
    }
    let served = plane.ok(&["logs", "echo"]);
    assert!(
        served.contains("/through-2"),
        "the pod saw the requests: {served}"
    );

    // A port nobody serves: the connection closes and kubectl says why.
    let fwd = Forward::start(&plane, &peers::kubectl(), "pod/echo", ":9999");
    let out = fwd.get("/nobody");
    assert!(!out.contains("200 OK"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut errors = Vec::new();
    while Instant::now() < deadline {
        errors.extend(fwd.stderr.try_iter());
        if errors.iter().any(|e| e.contains("connection refused")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        errors
            .iter()
            .any(|e| e.contains("error forwarding port 9999") && e.contains("connection refused")),
        "kubectl's stderr: {errors:?}"
    );
    drop(fwd);

    // The API server's proxy: to the pod by port number and by name, and
    // to the Service by port name; the path and query reach the pod.
    for (path, expect) in [
        (
            "/api/v1/namespaces/default/pods/echo:8080/proxy/pods-proxy?x=1",
            "request_uri=/pods-proxy?x=1",
        ),
        (
            "/api/v1/namespaces/default/pods/echo:http/proxy/by-name",
            "request_uri=/by-name",
        ),
        (
            "/api/v1/namespaces/default/services/echo-svc:web/proxy/svc-proxy",
            "request_uri=/svc-proxy",
        ),
    ] {
        let out = plane.ok(&["get", "--raw", path]);
        assert!(out.contains(expect), "{path}: {out}");
    }
    // Bad targets get clear errors.
    let err = plane.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/echo:grpc/proxy/",
    ]);
    assert!(err.contains("has no port"), "{err}");
    let err = plane.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/pods/echo:9999/proxy/",
    ]);
    assert!(err.contains("connection refused"), "{err}");

    // RBAC applies: a user who may read pods but not forward to them.
    let viewer = plane.cert_kubeconfig("pf-viewer", &[]);
    plane.ok(&[
        "create",
        "clusterrolebinding",
        "pf-viewer",
        "--clusterrole=view",
        "--user=pf-viewer",
    ]);
    let out = plane.kubectl_as(&viewer, &["port-forward", "pod/echo", ":8080"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("forbidden"), "{err}");
    let out = plane.kubectl_as(
        &viewer,
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/pods/echo:8080/proxy/",
        ],
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("forbidden"));
    assert!(
        !log().contains("panicked"),
        "the node stayed up:\n{}",
        log()
    );
}
