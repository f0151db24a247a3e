//! W^X and guard pages on a real node (issue 14 item 12): the kernel reads
//! its page tables back at boot and after publishing guest code (no page
//! writable and executable, kernel text R+X, read-only data R, every guard
//! page unmapped), and a guest recursing without bound fails alone while a
//! neighbour pod keeps answering and the node stays Ready. The hardware
//! side (a write to text, a jump into the heap and a kernel stack overflow
//! all fault) is in `fault.rs`.

use skiff_e2e::plane::Plane;
use skiff_e2e::registry::Registry;
use skiff_e2e::*;

/// The fields of every `paging:` line whose message starts with `prefix`.
fn wx_checks(node: &Node, prefix: &str) -> Vec<(String, u64, u64)> {
    node.lines()
        .iter()
        .filter_map(|l| {
            let r = l.record()?;
            (r.target == "paging" && r.message.starts_with(prefix)).then(|| {
                let num = |k: &str| r.field(k).and_then(|v| v.parse().ok()).unwrap_or(0);
                (r.message.to_owned(), num("code_pages"), num("guards"))
            })
        })
        .collect()
}

#[test]
fn boot_self_test_checks_wx_and_guards() {
    let _g = shared();
    let b = boot(user_net(Machine::Microvm));
    let checks = wx_checks(&b.node, "wx-check ok");
    let [(msg, code_pages, guards)] = checks.as_slice() else {
        b.fail("expected one `paging: wx-check ok` line at boot");
    };
    assert!(msg.contains("nx=true"), "NX enabled: {msg}");
    assert_eq!(*code_pages, 0, "no guest code at boot: {msg}");
    // The boot stack, three IST stacks and the main kernel stack.
    assert!(*guards >= 5, "every kernel stack has a guard page: {msg}");
    b.shutdown();
}

#[test]
fn a_recursing_guest_traps_alone_with_code_mapped_rx() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes(&reg);
    reg.push_wasm("demo/echo:1.0", &guests::path("echo-server"));
    reg.push_wasm("demo/recurse:1.0", &guests::path("recurse"));
    let (spec, http_port) = plane
        .node_spec("wx-1", &plane.token)
        .memory_mib(64)
        .arg("skiff.log=debug")
        .user_net_forwarding(8080)
        .expect("forward a port");
    let b = boot(spec);
    let log = || b.node.log_text();
    plane.wait_wasm_node("wx-1", log);
    plane.run_echo_pod(&host, http_port, log);

    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: recurse, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {host}/demo/recurse:1.0
"#
    ));
    plane.wait_output(
        &[
            "get",
            "pod",
            "recurse",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}",
        ],
        "Failed 134 Error",
        90,
        log,
    );
    let logs = plane.wait_output(&["logs", "recurse"], "wasm trap", 20, log);
    assert!(logs.contains("recursing without bound"), "{logs}");
    assert!(
        logs.contains("call stack exhausted"),
        "wasmtime's stack limit, not the guard page, stopped it: {logs}"
    );

    // The node lives on: no fault, Ready, the neighbour answers.
    for _ in 0..3 {
        let a = http_get(http_port, "/").unwrap_or_else(|e| b.fail(&format!("echo after: {e}")));
        assert!(a.contains("200 OK"), "{a}");
    }
    let ready = plane.ok(&[
        "get",
        "node",
        "wx-1",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "True", "the node stays Ready\n{}", log());
    assert!(
        !b.node
            .lines()
            .iter()
            .any(|l| l.record().is_some_and(|r| r.target == "fault")),
        "no fault report\n{}",
        log()
    );

    // Both guests' code was published R+X and checked: two (or more)
    // checks, each seeing executable heap pages, and every fiber stack's
    // guard counted (the kernel stacks' five plus at least one).
    let published = wx_checks(&b.node, "published guest code");
    assert!(published.len() >= 2, "{published:?}\n{}", log());
    for (msg, code_pages, guards) in &published {
        assert!(*code_pages > 0, "guest code is executable: {msg}");
        assert!(msg.contains("wx-check ok"), "{msg}");
        assert!(*guards >= 5, "{msg}");
    }
    assert!(
        published.iter().any(|(_, _, g)| *g >= 6),
        "a fiber stack's guard page is registered and unmapped: {published:?}"
    );
    b.shutdown();
}
