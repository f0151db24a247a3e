//! A node's memory: guests' linear memories and fiber stacks are
//! demand-paged regions (the kernel's `regions`), so a 64 MiB node
//! advertises most of its memory, a guest's heap grows in place under a
//! limit just above it, and limits may add up to more than the node has:
//! a guest the node cannot give a page ends OOMKilled, and the node and its
//! other pods carry on.

use skiff_e2e::plane::Plane;
use skiff_e2e::registry::Registry;
use skiff_e2e::*;

/// A quantity as kube prints node memory (`49152Ki`, `48Mi`, bytes).
fn bytes(quantity: &str) -> u64 {
    let (num, unit) = quantity.split_at(
        quantity
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(quantity.len()),
    );
    let n: u64 = num
        .parse()
        .unwrap_or_else(|_| panic!("quantity {quantity:?}"));
    n * match unit {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        _ => panic!("unit of {quantity:?}"),
    }
}

/// How a big-vec pod touches its memory: page by page, or with one memset.
#[derive(Clone, Copy)]
enum Touch {
    Pages,
    Memset,
}

/// A big-vec pod: `mib` MiB allocated, touched after `touch_after_ms`,
/// then held for `hold_ms` before it exits.
fn big_vec(
    host: &str,
    name: &str,
    mib: u32,
    (touch, touch_after_ms, hold_ms): (Touch, u32, u32),
    request: &str,
    limit: &str,
) -> String {
    let fill = u8::from(matches!(touch, Touch::Memset));
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {host}/demo/big-vec:1.0
    env:
    - {{name: MIB, value: "{mib}"}}
    - {{name: TOUCH_AFTER_MS, value: "{touch_after_ms}"}}
    - {{name: HOLD_MS, value: "{hold_ms}"}}
    - {{name: FILL, value: "{fill}"}}
    resources: {{requests: {{memory: {request}}}, limits: {{memory: {limit}}}}}
"#
    )
}

fn ended(plane: &Plane, pod: &str) -> Option<String> {
    let reason = plane.jsonpath(
        &["get", "pod", pod],
        "{.status.containerStatuses[0].state.terminated.reason}",
    );
    (!reason.is_empty()).then_some(reason)
}

/// Waits up to `secs` for the two pods `pods` to end: one completes and the
/// other is killed for a touch the node could not back (its log line).
fn one_completes_one_starves(plane: &Plane, pods: [&str; 2], secs: u64, log: impl Fn() -> String) {
    plane.eventually("both pods to end", secs, &log, || {
        pods.iter().all(|p| ended(plane, p).is_some())
    });
    let mut reasons = pods.map(|p| ended(plane, p).unwrap());
    reasons.sort();
    let logs = || {
        let of = |p| String::from_utf8_lossy(&plane.kubectl(&["logs", p]).stdout).into_owned();
        format!(
            "{}: {}\n{}: {}\n{}",
            pods[0],
            of(pods[0]),
            pods[1],
            of(pods[1]),
            log()
        )
    };
    assert_eq!(
        reasons,
        ["Completed".to_string(), "OOMKilled".to_string()],
        "one completes, the other is killed for memory\n{}",
        logs()
    );
    assert!(
        log().contains("a page the running container touched had no frame"),
        "the kill came from a touch the node could not back\n{}",
        logs()
    );
}

#[test]
fn a_64_mib_node_runs_guests_in_the_memory_it_advertises() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes(&reg);
    reg.push_wasm("demo/big-vec:1.0", &guests::path("big-vec"));
    let b = boot(plane.node_spec("mem-1", &plane.token).memory_mib(64));
    let log = || b.node.log_text();
    plane.wait_wasm_node("mem-1", log);

    let allocatable =
        bytes(&plane.jsonpath(&["get", "node", "mem-1"], "{.status.allocatable.memory}"));
    assert!(
        allocatable >= 48 << 20,
        "a 64 MiB node advertises at least 48 MiB: {allocatable} bytes\n{}",
        log()
    );

    // A 16 MiB heap under a 20Mi limit: the memory grows in place, never
    // holding an old and a new copy at once.
    plane.apply(&big_vec(
        &host,
        "big-16",
        16,
        (Touch::Pages, 0, 0),
        "20Mi",
        "20Mi",
    ));
    plane.wait_output(
        &["get", "pod", "big-16", "-o", "jsonpath={.status.phase}"],
        "Succeeded",
        120,
        log,
    );
    plane.wait_output(&["logs", "big-16"], "built 16 MiB", 20, log);

    // Limits adding up to more than the node has (requests fit): two
    // guests that each grow by 30 MiB (both growths fit the free pages,
    // which nothing has touched yet), then touch it all and hold it. The
    // node cannot hold both: the one whose touch finds no page is killed
    // (OOMKilled), and the other completes.
    let hogs = ["hog-a", "hog-b"];
    for name in hogs {
        let touch = (Touch::Pages, 4000, 3000);
        plane.apply(&big_vec(&host, name, 30, touch, "8Mi", "40Mi"));
    }
    one_completes_one_starves(&plane, hogs, 180, log);

    // The node gave the killed guest's pages back: 16 MiB runs again.
    plane.apply(&big_vec(
        &host,
        "big-again",
        16,
        (Touch::Pages, 0, 0),
        "20Mi",
        "20Mi",
    ));
    plane.wait_output(
        &["get", "pod", "big-again", "-o", "jsonpath={.status.phase}"],
        "Succeeded",
        120,
        log,
    );
}

/// A guest the node cannot back that touches a large range in one
/// instruction (a memset: `memory.fill`, which no epoch check interrupts)
/// faults on every page of it with no frame left: it ends OOMKilled and the
/// node stays up, because a fault never needs a page table of its own.
#[test]
fn one_memset_over_memory_the_node_cannot_back_kills_only_its_pod() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes(&reg);
    reg.push_wasm("demo/big-vec:1.0", &guests::path("big-vec"));
    let b = boot(plane.node_spec("mem-2", &plane.token).memory_mib(320));
    let log = || b.node.log_text();
    plane.wait_wasm_node("mem-2", log);
    // Both grow by 200 MiB while nothing is touched, then fill it with one
    // memset each: about 100 MiB of the second fill has no frame.
    let fillers = ["fill-a", "fill-b"];
    for name in fillers {
        let touch = (Touch::Memset, 4000, 3000);
        plane.apply(&big_vec(&host, name, 200, touch, "8Mi", "256Mi"));
    }
    one_completes_one_starves(&plane, fillers, 240, log);
    plane.wait_output(
        &[
            "get",
            "node",
            "mem-2",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
        30,
        log,
    );
}
