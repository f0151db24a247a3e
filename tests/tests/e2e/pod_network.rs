//! Pod networking on a kernel node: pod addresses from the node's pod CIDR
//! (set by the controller manager's node IPAM), containerPorts on the
//! pod's own address, and pod-to-pod connections on one node spliced in
//! memory — driven with real kubectl.

use std::net::Ipv4Addr;

use skiff_e2e::plane::Plane;
use skiff_e2e::registry::Registry;
use skiff_e2e::*;

/// `a.b.c.d/len` contains `ip`.
fn contains(cidr: &str, ip: Ipv4Addr) -> bool {
    let (net, len) = cidr.split_once('/').expect("a CIDR");
    let net: Ipv4Addr = net.parse().expect("a CIDR's address");
    let len: u32 = len.parse().expect("a CIDR's length");
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net)
}

#[test]
fn pods_get_their_own_addresses_and_reach_each_other_on_one_node() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes_with_pod_network(&reg);
    reg.push_wasm("demo/echo:1.0", &guests::path("echo-server"));
    reg.push_wasm("demo/tcp-connect:1.0", &guests::path("tcp-connect"));
    let b = boot(plane.node_spec("net-1", &plane.token).memory_mib(64));
    let log = || b.node.log_text();
    plane.wait_wasm_node("net-1", log);
    plane.wait_output(
        &["get", "node", "net-1", "-o", "jsonpath={.spec.podCIDR}"],
        "10.244.",
        30,
        log,
    );
    let cidr = plane.jsonpath(&["get", "node", "net-1"], "{.spec.podCIDR}");

    // Two servers on the same containerPort: each has its own address. The
    // node probes them there: echo-a's readiness over HTTP, echo-b's
    // liveness over TCP; "doomed" has a liveness probe on a port nobody
    // serves.
    let probes = [
        (
            "echo-a",
            "readinessProbe: {httpGet: {path: /ready, port: 8080}, periodSeconds: 1}",
        ),
        (
            "echo-b",
            "livenessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}",
        ),
        (
            "doomed",
            "livenessProbe: {tcpSocket: {port: 9999}, periodSeconds: 1, failureThreshold: 1}",
        ),
    ];
    for (name, probe) in probes {
        plane.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  containers:
  - name: echo
    image: {host}/demo/echo:1.0
    ports: [{{containerPort: 8080}}]
    env: [{{name: POD_NAME, value: {name}}}]
    {probe}
"#
        ));
    }
    let mut ips = Vec::new();
    for name in ["echo-a", "echo-b"] {
        plane.wait_output(&["logs", name], "listening", 120, log);
        let ip: Ipv4Addr = plane
            .jsonpath(&["get", "pod", name], "{.status.podIP}")
            .parse()
            .unwrap_or_else(|e| panic!("{name}'s podIP: {e}"));
        assert!(contains(&cidr, ip), "{name} has {ip}, outside {cidr}");
        let ips_field = plane.jsonpath(&["get", "pod", name], "{.status.podIPs[*].ip}");
        assert_eq!(ips_field, ip.to_string());
        ips.push(ip);
    }
    assert_ne!(ips[0], ips[1], "each pod has its own address");

    // Probes reach the pods on their addresses.
    for name in ["echo-a", "echo-b"] {
        plane.wait_output(
            &[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='Ready')].status}",
            ],
            "True",
            60,
            log,
        );
    }
    let served = String::from_utf8_lossy(&plane.kubectl(&["logs", "echo-a"]).stdout).into_owned();
    assert!(
        served.contains("GET /ready"),
        "the readiness probe's request: {served}"
    );
    plane.wait_output(
        &[
            "get",
            "pod",
            "doomed",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        "1",
        90,
        log,
    );
    plane.wait_output(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=doomed",
        ],
        "Liveness probe failed: dial tcp",
        30,
        log,
    );
    let restarts = plane.jsonpath(
        &["get", "pod", "echo-b"],
        "{.status.containerStatuses[0].restartCount}",
    );
    assert_eq!(restarts, "0", "a passing liveness probe restarts nothing");

    // Clients on the same node reach each server by its address (the
    // connection never leaves the node); a port nobody serves is refused.
    let clients = [
        ("to-a", format!("{}:8080", ips[0])),
        ("to-b", format!("{}:8080", ips[1])),
        ("to-closed", format!("{}:9999", ips[0])),
    ];
    for (name, addr) in &clients {
        plane.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: {host}/demo/tcp-connect:1.0
    env:
    - {{name: ADDR, value: "{addr}"}}
    - {{name: MESSAGE, value: "GET /from-{name} HTTP/1.1\r\nHost: x\r\n\r\n"}}
"#
        ));
    }
    for (name, server) in [("to-a", "echo-a"), ("to-b", "echo-b")] {
        plane.wait_output(
            &["get", "pod", name, "-o", "jsonpath={.status.phase}"],
            "Succeeded",
            120,
            log,
        );
        let out = String::from_utf8_lossy(&plane.kubectl(&["logs", name]).stdout).into_owned();
        assert!(out.contains("HTTP/1.1 200 OK"), "{name}: {out}");
        assert!(out.contains(server), "{name} reached {server}: {out}");
        assert!(out.contains(&format!("request_uri=/from-{name}")), "{out}");
        let served = String::from_utf8_lossy(&plane.kubectl(&["logs", server]).stdout).into_owned();
        assert!(
            served.contains(&format!("/from-{name}")),
            "{server}: {served}"
        );
    }
    plane.wait_output(
        &["get", "pod", "to-closed", "-o", "jsonpath={.status.phase}"],
        "Failed",
        120,
        log,
    );
    let out = String::from_utf8_lossy(&plane.kubectl(&["logs", "to-closed"]).stdout).into_owned();
    assert!(out.to_lowercase().contains("refused"), "{out}");

    // A deleted server's address is unreachable at once: nothing lives
    // there any more, and the node knows its pod CIDR.
    plane.ok(&["delete", "pod", "echo-a", "--wait=true"]);
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: to-gone, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: client
    image: {host}/demo/tcp-connect:1.0
    env: [{{name: ADDR, value: "{}:8080"}}]
"#,
        ips[0]
    ));
    plane.wait_output(
        &["get", "pod", "to-gone", "-o", "jsonpath={.status.phase}"],
        "Failed",
        120,
        log,
    );
    let out = String::from_utf8_lossy(&plane.kubectl(&["logs", "to-gone"]).stdout).into_owned();
    assert!(
        out.contains("connect:") && !out.contains("connected"),
        "{out}"
    );
    b.shutdown();
}
