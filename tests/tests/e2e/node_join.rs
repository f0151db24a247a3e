//! A kernel node in QEMU joins the real control plane: token bootstrap,
//! its own certificate, registration with its real capacity and address,
//! a pod through the built-in test runtime to a failed exit with its code,
//! and NotReady after the grace period once QEMU is killed.

use std::time::Duration;

use skiff_e2e::plane::Plane;
use skiff_e2e::*;

#[test]
fn a_kernel_node_joins_runs_a_pod_and_goes_not_ready_when_killed() {
    let _g = shared();
    let grace = Duration::from_secs(3);
    let mut plane = Plane::start(|cfg| {
        cfg.renew_interval = Duration::from_millis(500);
        cfg.node_grace = grace;
    });
    // The node lifecycle controller owns node health (NotReady below).
    plane.start_control_loops(grace, None);
    let mut b = boot(plane.node_spec("kernel-1", &plane.token));
    let log = || b.node.log_text();
    let jsonpath = "jsonpath={.status.conditions[?(@.type==\"Ready\")].status} \
                    {.status.addresses[?(@.type==\"InternalIP\")].address} \
                    {.status.capacity.cpu} {.status.nodeInfo.containerRuntimeVersion}";
    let got = plane.wait_output(
        &["get", "node", "kernel-1", "-o", jsonpath],
        "True 10.0.2.15 1 skiff-wasm://",
        60,
        log,
    );
    assert!(got.contains("skiff-wasm"), "{got}");
    // Real capacity: the guest's usable RAM (32 MiB guest, a bit less usable).
    let mem = plane.ok(&[
        "get",
        "node",
        "kernel-1",
        "-o",
        "jsonpath={.status.capacity.memory}",
    ]);
    let kib: u64 = mem.trim_end_matches("Ki").parse().unwrap_or_else(|_| {
        // kube renders whole MiB as "Mi".
        mem.trim_end_matches("Mi")
            .parse::<u64>()
            .expect("memory quantity")
            * 1024
    });
    assert!(
        (20 << 10..=32 << 10).contains(&kib),
        "capacity.memory {mem}"
    );
    let text = b.node.log_text();
    assert!(
        text.contains("bootstrap: certificate issued for system:node:kernel-1"),
        "{text}"
    );
    assert!(text.contains("stage: node-registered"), "{text}");

    plane.apply(
        r#"
apiVersion: v1
kind: Pod
metadata: {name: on-kernel, namespace: default}
spec:
  nodeName: kernel-1
  restartPolicy: Never
  containers:
  - name: main
    image: skiff.dev/testrt
    args: ["echo hello from a Skiff kernel", "sleep 1000", "exit 7"]
"#,
    );
    plane.wait_output(
        &["get", "pod", "on-kernel", "-o", "jsonpath={.status.phase}"],
        "Running",
        30,
        || b.node.log_text(),
    );
    plane.wait_output(
        &[
            "get",
            "pod",
            "on-kernel",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode}",
        ],
        "Failed 7",
        30,
        || b.node.log_text(),
    );

    let logs = plane.ok(&["logs", "on-kernel"]);
    assert_eq!(
        logs, "hello from a Skiff kernel\n",
        "kubectl logs of a pod on the kernel"
    );

    // Kill the VM: the lease stops, and after the grace period the node
    // lifecycle controller marks the node's conditions Unknown.
    b.node.kill();
    plane.wait_output(
        &[
            "get",
            "node",
            "kernel-1",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "Unknown",
        20,
        String::new,
    );
}

#[test]
fn a_kernel_node_with_a_wrong_token_is_refused_and_says_why() {
    let _g = shared();
    let plane = Plane::start(|_| {});
    let mut b = boot(plane.node_spec("kernel-bad", "abcdef.0123456789abcdef"));
    if let Err(e) = b
        .node
        .wait_for_line(|l| l.contains("BadToken"), Duration::from_secs(30))
    {
        b.fail(&format!("no refusal logged: {e}"));
    }
    assert!(
        !plane
            .kubectl(&["get", "node", "kernel-bad"])
            .status
            .success()
    );
    b.shutdown();
}

#[test]
fn a_kernel_nodes_token_secret_is_in_no_log() {
    let _g = shared();
    let plane = Plane::start(|_| {});
    let (id, secret) = plane.token.split_once('.').unwrap();
    // Debug level: the kernel logs its whole command line then.
    let mut b = boot(
        plane
            .node_spec("kernel-quiet", &plane.token)
            .arg("skiff.log=debug"),
    );
    if let Err(e) = b.node.wait_for_line(
        |l| l.contains("stage: node-registered"),
        Duration::from_secs(60),
    ) {
        b.fail(&format!("node did not register: {e}"));
    }
    // The serial log itself (log_text() adds the QEMU command for errors).
    let text: String = b
        .node
        .lines()
        .iter()
        .map(|l| format!("{}\n", l.text))
        .collect();
    assert!(
        text.contains(&format!("skiff.token={id}.<redacted>")),
        "the command line was not logged (redacted): {text}"
    );
    assert!(
        !text.contains(secret),
        "token secret in the serial log: {text}"
    );
    let journal = plane.journal();
    assert!(
        journal
            .iter()
            .any(|l| l.contains("issued a node certificate")),
        "{journal:?}"
    );
    assert!(
        journal.iter().all(|l| !l.contains(secret)),
        "token secret in the gateway log: {journal:?}"
    );
    b.shutdown();
}
