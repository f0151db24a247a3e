//! Wasm pods end to end: images built from `tests/wasm`, pushed to a real
//! registry (Debian's `docker-registry`) with a real client (oras), pulled
//! and compiled by the control plane, fetched by a kernel node in QEMU and
//! run in its wasm runtime — driven with real kubectl.

use std::time::Duration;

use skiff_e2e::plane::Plane;
use skiff_e2e::registry::Registry;
use skiff_e2e::*;

fn describe(plane: &Plane, what: &str) -> String {
    let out = plane.kubectl(&["describe", what]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn wasm_images_from_a_registry_run_as_pods_on_a_kernel_node() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes(&reg);
    let echo_digest = reg.push_wasm("demo/echo:1.0", &guests::path("echo-server"));
    reg.push_wasm("demo/hello:1.0", &guests::path("hello"));
    reg.push_wasm_old_layer_type("demo/burner:1.0", &guests::path("cpu-burner"));
    reg.push_wasm("demo/trap:1.0", &guests::path("trap"));
    reg.push_wasm("demo/oom:1.0", &guests::path("oom"));
    reg.push_wasm("demo/hello-p2:1.0", &guests::path("hello-p2"));

    let (spec, http_port) = plane
        .node_spec("wasm-1", &plane.token)
        .memory_mib(64)
        .user_net_forwarding(8080)
        .expect("forward a port");
    let b = boot(spec);
    let log = || b.node.log_text();
    plane.wait_wasm_node("wasm-1", log);

    // A Deployment of the echo server, reached through the node's port.
    plane.apply(&format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: default}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      containers:
      - name: echo
        image: {host}/demo/echo:1.0
        ports: [{{containerPort: 8080}}]
        env:
        - name: POD_NAME
          valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
"#
    ));
    plane.wait_output(
        &[
            "get",
            "pods",
            "-l",
            "app=echo",
            "-o",
            "jsonpath={.items[0].status.phase}",
        ],
        "Running",
        120,
        || format!("{}\n{}", describe(&plane, "pods"), log()),
    );
    plane.wait_output(
        &[
            "get",
            "deployment",
            "echo",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ],
        "1",
        60,
        || format!("{}\n{}", describe(&plane, "pods"), log()),
    );
    let pod = plane.jsonpath(
        &["get", "pods", "-l", "app=echo"],
        "{.items[0].metadata.name}",
    );
    let image_id = plane.jsonpath(
        &["get", "pod", &pod],
        "{.status.containerStatuses[0].imageID}",
    );
    assert_eq!(image_id, format!("{host}/demo/echo@{echo_digest}"));
    let mut answer = String::new();
    plane.eventually("the echo server to answer", 30, log, || {
        answer = http_get(http_port, "/hello?x=1").unwrap_or_default();
        answer.contains("200 OK")
    });
    assert!(answer.contains(&format!("Hostname: {pod}")), "{answer}");
    assert!(answer.contains("request_uri=/hello?x=1"), "{answer}");
    plane.wait_output(&["logs", &pod], "served GET /hello?x=1", 10, log);

    // A Job runs to completion; a failing pod ends with its exit code.
    plane.apply(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: hello, namespace: default}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: hello
        image: {host}/demo/hello:1.0
---
apiVersion: v1
kind: Pod
metadata: {{name: exit3, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: {host}/demo/hello:1.0
    args: ["3"]
"#
    ));
    plane.ok(&[
        "wait",
        "--for=condition=complete",
        "job/hello",
        "--timeout=120s",
    ]);
    let logs = plane.ok(&["logs", "job/hello"]);
    assert!(logs.contains("hello from a Skiff pod"), "{logs}");
    assert!(logs.contains("this line goes to stderr"), "{logs}");

    // A WASI preview 2 component (wasm32-wasip2, plain Rust std) runs as a
    // Job too: args, env, stdio, clocks and random through the node.
    plane.apply(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata: {{name: hello-p2, namespace: default}}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: hello-p2
        image: {host}/demo/hello-p2:1.0
        env: [{{name: GREETING, value: from a component}}]
"#
    ));
    plane.ok(&[
        "wait",
        "--for=condition=complete",
        "job/hello-p2",
        "--timeout=120s",
    ]);
    let logs = plane.ok(&["logs", "job/hello-p2"]);
    for line in [
        "arg[0]=hello-p2",
        "GREETING=from a component",
        "this line goes to stderr",
        "wall clock after 2020: true",
        "hash map works: true",
        "slept 20 ms: true",
        "exiting with 0",
    ] {
        assert!(logs.contains(line), "{line:?} missing from:\n{logs}");
    }
    plane.wait_output(
        &[
            "get",
            "pod",
            "exit3",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].state.terminated.exitCode}",
        ],
        "Failed 3",
        60,
        log,
    );

    // A busy loop is throttled, not starving: the echo server still answers
    // and the node keeps renewing its lease. A trapping module and one that
    // runs out of memory end with the right reason and restart.
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: burner, namespace: default}}
spec:
  containers:
  - name: main
    image: {host}/demo/burner:1.0
    resources: {{limits: {{cpu: 500m}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: trap, namespace: default}}
spec:
  containers:
  - name: main
    image: {host}/demo/trap:1.0
---
apiVersion: v1
kind: Pod
metadata: {{name: oom, namespace: default}}
spec:
  containers:
  - name: main
    image: {host}/demo/oom:1.0
    resources: {{limits: {{memory: 8Mi}}}}
"#
    ));
    plane.wait_output(
        &["get", "pod", "burner", "-o", "jsonpath={.status.phase}"],
        "Running",
        60,
        log,
    );
    for _ in 0..3 {
        let a = http_get(http_port, "/hello?x=1")
            .unwrap_or_else(|e| panic!("echo while burning: {e}\n{}", log()));
        assert!(a.contains(&format!("Hostname: {pod}")), "{a}");
    }
    // metrics.k8s.io from the node's usage reports: the burner at its 500m
    // limit, over a full report window (two reports of the same instance).
    let mut sample = serde_json::Value::Null;
    plane.eventually("a 10 s usage window for the burner", 40, log, || {
        let out = plane.kubectl(&[
            "get",
            "--raw",
            "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner",
        ]);
        sample = serde_json::from_slice(&out.stdout).unwrap_or_default();
        sample["window"]
            .as_str()
            .is_some_and(|w| w.starts_with("9.") || w.starts_with("10") || w.starts_with("11"))
    });
    let nanocores: u64 = sample["containers"][0]["usage"]["cpu"]
        .as_str()
        .and_then(|c| c.strip_suffix('n')?.parse().ok())
        .unwrap_or_else(|| panic!("{sample}"));
    let top = plane.ok(&["top", "pod", "burner", "--containers"]);
    let node_top = plane.ok(&["top", "node", "wasm-1"]);
    eprintln!(
        "burner at limits.cpu 500m: {nanocores} nanocores over {}\n{top}\n{node_top}",
        sample["window"]
    );
    assert!(
        (400_000_000..=600_000_000).contains(&nanocores),
        "the 500m burner reads {nanocores}n\n{top}"
    );
    assert!(node_top.contains("wasm-1"), "{node_top}");
    plane.wait_output(
        &[
            "get",
            "pod",
            "trap",
            "-o",
            "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}",
        ],
        "134",
        60,
        log,
    );
    let prev = plane.wait_output(&["logs", "trap"], "wasm trap", 20, log);
    assert!(prev.contains("about to trap"), "{prev}");
    assert!(
        prev.contains("unreachable"),
        "the trap is explained: {prev}"
    );
    plane.wait_output(
        &[
            "get",
            "pod",
            "oom",
            "-o",
            "jsonpath={.status.containerStatuses[0].lastState.terminated.reason}",
        ],
        "OOMKilled",
        60,
        log,
    );
    let ready = plane.jsonpath(
        &["get", "node", "wasm-1"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    assert_eq!(ready, "True", "the node stays Ready\n{}", log());
    let a = http_get(http_port, "/hello?x=1")
        .unwrap_or_else(|e| panic!("echo after the bad pods: {e}"));
    assert!(a.contains("200 OK"), "{a}");
    // The plane's /metrics: the image service's work, and the kernel
    // node's own usage reports per container.
    let scrape = plane.scrape();
    let count = |sample: &str, labels: &[(&str, &str)]| {
        scrape
            .total(sample, labels)
            .unwrap_or_else(|| panic!("no {sample} {labels:?} in {scrape:?}"))
    };
    let compiles = count("skiff_image_compiles_total", &[]);
    assert!(compiles >= 1.0, "{compiles} compiles");
    assert!(count("skiff_image_downloads_total", &[]) >= compiles);
    assert!(count("skiff_image_resolves_total", &[]) >= 1.0);
    count("skiff_image_cache_hits_total", &[]); // served, even at 0
    let burner = [
        ("pod", "burner"),
        ("node", "wasm-1"),
        ("simulated", "false"),
    ];
    assert!(count("container_cpu_usage_seconds_total", &burner) > 0.0);
    b.shutdown();
}

#[test]
fn bad_images_show_clear_pull_errors() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes(&reg);
    // Not wasm at all, under the wasm media type.
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "this is not a wasm module\n").unwrap();
    reg.push_wasm("demo/text:1.0", &text);
    // A layer whose stored bytes no longer match its digest.
    reg.push_wasm("demo/corrupt:1.0", &guests::path("hello"));
    reg.corrupt_blob(&registry::file_digest(&guests::path("hello")));
    // A component importing an interface no node serves.
    let unserved = dir.path().join("keyvalue.wasm");
    std::fs::write(&unserved, unserved_component()).unwrap();
    reg.push_wasm("demo/keyvalue:1.0", &unserved);

    let b = boot(plane.node_spec("wasm-2", &plane.token));
    let log = || b.node.log_text();
    plane.wait_wasm_node("wasm-2", log);
    for (name, image) in [
        ("unknown", format!("{host}/demo/nope:1.0")),
        ("text", format!("{host}/demo/text:1.0")),
        ("corrupt", format!("{host}/demo/corrupt:1.0")),
        ("keyvalue", format!("{host}/demo/keyvalue:1.0")),
    ] {
        plane.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: default}}
spec:
  containers:
  - name: main
    image: {image}
"#
        ));
    }
    let waiting = |name: &str, needle: &str| {
        plane.wait_output(
            &[
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}",
            ],
            needle,
            60,
            log,
        )
    };
    let w = waiting("unknown", "Err");
    assert!(
        w.contains("ErrImagePull") || w.contains("ImagePullBackOff"),
        "{w}"
    );
    let w = waiting("unknown", "ImagePullBackOff");
    assert!(w.contains("Back-off pulling image"), "{w}");
    let w = waiting("text", "ErrImagePull");
    assert!(
        w.to_lowercase().contains("wasm"),
        "says it is not wasm: {w}"
    );
    let w = waiting("corrupt", "ErrImagePull");
    assert!(w.contains("digest"), "names the digest mismatch: {w}");
    let w = waiting("keyvalue", "ErrImagePull");
    assert!(
        w.contains("wasi:keyvalue/store@0.2.0-draft"),
        "names the unserved interface: {w}"
    );
    let events = plane.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=unknown",
    ]);
    assert!(events.contains("Failed to pull image"), "{events}");
    // Nothing ran, and the node is fine.
    assert_eq!(
        plane.jsonpath(&["get", "pod", "unknown"], "{.status.phase}"),
        "Pending"
    );
    assert_eq!(
        plane.jsonpath(
            &["get", "node", "wasm-2"],
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "True"
    );
    b.shutdown();
}

/// A command component that imports `wasi:keyvalue/store`, which no node
/// serves.
fn unserved_component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (import "wasi:keyvalue/store@0.2.0-draft" (instance))
            (core module $m (func (export "run") (result i32) (i32.const 0)))
            (core instance $i (instantiate $m))
            (func $run (result (result)) (canon lift (core func $i "run")))
            (instance $run_inst (export "run" (func $run)))
            (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#,
    )
    .expect("component text")
}

/// A loopback TCP server answering each connection with `echo:` and what
/// the client sent before closing its side, until the test ends.
fn host_echo_server() -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let mut got = Vec::new();
            let _ = c.read_to_end(&mut got);
            let _ = c.write_all(b"echo:");
            let _ = c.write_all(&got);
        }
    });
    port
}

/// A loopback UDP server answering each datagram with `echo:` and the
/// datagram, until the test ends.
fn host_udp_echo_server() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            let _ = s.send_to(&reply, from);
        }
    });
    port
}

/// Runs guest `name` (argv\[0\] = its name) under the reference runtime.
fn reference(name: &str, args: &[&str], env: &[(&str, &str)]) -> skiff_wasi_reference::Output {
    let argv: Vec<&str> = std::iter::once(name).chain(args.iter().copied()).collect();
    let wasm = std::fs::read(guests::path(name)).unwrap();
    skiff_wasi_reference::run(&wasm, &argv, env).expect("reference run")
}

/// WASI 0.2 sockets through a kernel node (QEMU user networking: the host
/// is 10.0.2.2): a client pod connects out to a host server and, through
/// the node's forwarded port, to a server pod; a refused connect fails the
/// pod at once; UDP goes out and back; a name resolves through the node's
/// resolver. Each client's log is what the reference runtime prints for
/// the same guest against the same peers.
#[test]
fn wasi_p2_pods_use_sockets_through_the_node() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes(&reg);
    for guest in ["tcp-connect", "tcp-echo", "udp-echo", "name-lookup"] {
        reg.push_wasm(&format!("demo/{guest}:1.0"), &guests::path(guest));
    }
    let echo_port = host_echo_server();
    let udp_port = host_udp_echo_server();
    let closed_port = skiff_qemu::free_port().unwrap();
    for guest in ["http-hello", "file-writer"] {
        reg.push_wasm(&format!("demo/{guest}:1.0"), &guests::path(guest));
    }
    let server_port = skiff_qemu::free_port().unwrap();
    let http_port = skiff_qemu::free_port().unwrap();
    let spec = plane
        .node_spec("wasm-p2", &plane.token)
        .memory_mib(64)
        .net(Net::User {
            hostfwd: vec![
                HostFwd::new(server_port, 7070),
                HostFwd::new(http_port, 8080),
            ],
            subnet: None,
        });
    let b = boot(spec);
    let log = || b.node.log_text();
    plane.wait_wasm_node("wasm-p2", log);

    // A TCP echo server pod on containerPort 7070 (the node's diagnostic
    // port in tests is 7000), reached from the host.
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: tcp-echo, namespace: default}}
spec:
  containers:
  - name: tcp-echo
    image: {host}/demo/tcp-echo:1.0
    ports: [{{containerPort: 7070}}]
    env: [{{name: PORT, value: "7070"}}]
"#
    ));
    plane.wait_output(&["logs", "tcp-echo"], "listening on 7070", 120, log);
    let mut answer = String::new();
    plane.eventually("the server pod to echo", 30, log, || {
        answer = tcp_exchange(server_port, "from the host").unwrap_or_default();
        !answer.is_empty()
    });
    assert_eq!(answer, "from the host");

    // Client Jobs: to the host, to the server pod (through the node's
    // forwarded port: pods have no addresses of their own yet, and a node
    // cannot reach its own address), to a closed port; UDP; a lookup.
    let name = std::env::var("SKIFF_TEST_DNS_NAME").unwrap_or_else(|_| "pypi.org".into());
    let jobs = [
        (
            "to-host",
            "tcp-connect",
            format!("10.0.2.2:{echo_port}"),
            "MESSAGE",
            "hello host",
        ),
        (
            "to-pod",
            "tcp-connect",
            format!("10.0.2.2:{server_port}"),
            "MESSAGE",
            "hello pod",
        ),
        (
            "refused",
            "tcp-connect",
            format!("10.0.2.2:{closed_port}"),
            "MESSAGE",
            "nobody",
        ),
        (
            "udp",
            "udp-echo",
            format!("10.0.2.2:{udp_port}"),
            "MESSAGE",
            "datagram",
        ),
    ];
    for (job, guest, addr, key, value) in &jobs {
        plane.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {job}, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: {guest}
    image: {host}/demo/{guest}:1.0
    env: [{{name: ADDR, value: "{addr}"}}, {{name: {key}, value: "{value}"}}]
"#
        ));
    }
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: lookup, namespace: default}}
spec:
  restartPolicy: Never
  containers:
  - name: name-lookup
    image: {host}/demo/name-lookup:1.0
    args: ["{name}", "10.1.2.3"]
"#
    ));
    let phase = |pod: &str, want: &str| {
        plane.wait_output(
            &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
            want,
            120,
            || {
                format!(
                    "{}
{}",
                    describe(&plane, &format!("pod/{pod}")),
                    log()
                )
            },
        );
    };
    for (pod, want) in [
        ("to-host", "Succeeded"),
        ("to-pod", "Succeeded"),
        ("udp", "Succeeded"),
        ("lookup", "Succeeded"),
        ("refused", "Failed"),
    ] {
        phase(pod, want);
    }
    let logs = |pod: &str| plane.ok(&["logs", pod]);
    assert_eq!(
        logs("to-host"),
        "connected
sent 10 bytes
received: echo:hello host
"
    );
    assert_eq!(
        logs("to-pod"),
        "connected
sent 9 bytes
received: hello pod
"
    );
    assert_eq!(
        logs("udp"),
        "reply: echo:datagram
"
    );
    assert!(
        logs("refused").contains("connect: Connection refused"),
        "{}",
        logs("refused")
    );
    assert!(
        logs("lookup").contains("10.1.2.3: 10.1.2.3"),
        "{}",
        logs("lookup")
    );

    // The reference runtime, against the same peers from the host's side.
    let loopback = |port: u16| format!("127.0.0.1:{port}");
    for (pod, guest, addr, key, value) in [
        (
            "to-host",
            "tcp-connect",
            loopback(echo_port),
            "MESSAGE",
            "hello host",
        ),
        (
            "to-pod",
            "tcp-connect",
            loopback(server_port),
            "MESSAGE",
            "hello pod",
        ),
        (
            "refused",
            "tcp-connect",
            loopback(closed_port),
            "MESSAGE",
            "nobody",
        ),
        ("udp", "udp-echo", loopback(udp_port), "MESSAGE", "datagram"),
    ] {
        let r = reference(guest, &[], &[("ADDR", &addr), (key, value)]);
        // kubectl logs interleaves stdout and stderr; each guest writes to
        // only one of them.
        assert_eq!(logs(pod), format!("{}{}", r.stdout, r.stderr), "{pod}");
    }
    // A wasi:http handler answers through the node's forwarded port, a
    // fresh instance per request.
    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: http-hello, namespace: default}}
spec:
  containers:
  - name: http-hello
    image: {host}/demo/http-hello:1.0
    ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: files, namespace: default}}
data: {{greeting: hi from a ConfigMap}}
---
apiVersion: v1
kind: Pod
metadata: {{name: file-writer, namespace: default}}
spec:
  restartPolicy: Never
  volumes:
  - {{name: data, emptyDir: {{sizeLimit: 1Mi}}}}
  - {{name: config, configMap: {{name: files}}}}
  containers:
  - name: file-writer
    image: {host}/demo/file-writer:1.0
    volumeMounts:
    - {{name: data, mountPath: /data}}
    - {{name: config, mountPath: /config}}
"#
    ));
    let mut answer = String::new();
    plane.eventually("the HTTP handler to answer", 60, log, || {
        answer = http_get(http_port, "/hello?name=skiff").unwrap_or_default();
        answer.contains("200 OK")
    });
    assert!(answer.contains("skiff"), "{answer}");
    for _ in 0..3 {
        let again = http_get(http_port, "/hello?name=again").expect("second request");
        assert!(
            again.contains("200 OK") && again.contains("again"),
            "{again}"
        );
    }
    // curl keeps the connection alive for its second URL: each request is
    // answered at once (`num_connects` 0 = the connection was reused).
    let url = |name: &str| format!("http://127.0.0.1:{http_port}/hello?name={name}");
    let started = std::time::Instant::now();
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-w",
            " connects=%{num_connects}\n",
        ])
        .args([url("first"), url("second")])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let connects: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(" connects="))
        .collect();
    assert_eq!(connects, ["1", "0"], "{text}");
    assert!(
        text.contains("hello first") && text.contains("hello second"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "keep-alive took {:?}",
        started.elapsed()
    );
    phase("file-writer", "Succeeded");
    let files = logs("file-writer");
    for line in [
        "read /data/notes.txt: hello world",
        "read /config/greeting: hi from a ConfigMap",
        "write /config/greeting: error ReadOnlyFilesystem",
    ] {
        assert!(files.contains(line), "{line:?} missing from:\n{files}");
    }

    let r = reference("name-lookup", &[&name, "10.1.2.3"], &[]);
    assert_eq!(logs("lookup"), r.stdout, "lookup");
    assert_eq!(
        plane.jsonpath(
            &["get", "pod", "refused"],
            "{.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "1"
    );
    b.shutdown();
}

/// Sends `message` to `127.0.0.1:port`, closes the sending side and returns
/// the reply.
fn tcp_exchange(port: u16, message: &str) -> Result<String, std::io::Error> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port))?;
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    c.write_all(message.as_bytes())?;
    c.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    c.read_to_string(&mut reply)?;
    Ok(reply)
}

/// Kube's KEP-2535 on a kernel node: an image a pod pulled with its pull
/// secret is cached by the plane, but a pod of another namespace without
/// that secret gets `ErrImagePull` (the registry is asked and refuses), or
/// `ErrImageNeverPull` under `Never`; with the secret it runs.
#[test]
fn a_cached_private_image_needs_the_pods_own_pull_secret() {
    let _g = shared();
    let reg = Registry::start_with_htpasswd("alice", "wonderland");
    let host = reg.host();
    let plane = Plane::start_with_registries(std::slice::from_ref(&host), |cfg| {
        cfg.renew_interval = Duration::from_millis(500);
    });
    reg.push_wasm("private/hello:1.0", &guests::path("hello"));
    let image = format!("{host}/private/hello:1.0");
    let b = boot(plane.node_spec("wasm-3", &plane.token));
    let log = || b.node.log_text();
    plane.wait_wasm_node("wasm-3", log);
    let pull_secret = |ns: &str| {
        plane.ok(&[
            "-n",
            ns,
            "create",
            "secret",
            "docker-registry",
            "regcred",
            &format!("--docker-server={host}"),
            "--docker-username=alice",
            "--docker-password=wonderland",
        ]);
    };
    // Bound by hand: the test runs no scheduler.
    let pod = |ns: &str, name: &str, secret: bool, policy: &str| {
        let secrets = if secret {
            "imagePullSecrets: [{name: regcred}]"
        } else {
            "imagePullSecrets: []"
        };
        plane.apply(&format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  nodeName: wasm-3
  restartPolicy: Never
  {secrets}
  containers:
  - name: main
    image: {image}
    imagePullPolicy: {policy}
"#
        ));
    };
    let status = |ns: &str, name: &str, needle: &str| {
        plane.wait_output(
            &[
                "-n",
                ns,
                "get",
                "pod",
                name,
                "-o",
                "jsonpath={.status.phase} {.status.containerStatuses[0].state.waiting.reason}: {.status.containerStatuses[0].state.waiting.message}",
            ],
            needle,
            120,
            || {
                let pods = plane.kubectl(&["describe", "pods", "-A"]).stdout;
                format!("{}\n{}", String::from_utf8_lossy(&pods), log())
            },
        )
    };

    plane.ok(&["create", "namespace", "team-a"]);
    pull_secret("team-a");
    pod("team-a", "a", true, "IfNotPresent");
    status("team-a", "a", "Succeeded");
    let logs = plane.ok(&["-n", "team-a", "logs", "a"]);
    assert!(logs.contains("hello from a Skiff pod"), "{logs}");

    // Cached on the plane now, yet pods of team-b have no secret.
    plane.ok(&["create", "namespace", "team-b"]);
    pod("team-b", "b", false, "IfNotPresent");
    pod("team-b", "never", false, "Never");
    let w = status("team-b", "b", "Err");
    assert!(w.starts_with("Pending ErrImagePull"), "{w}");
    assert!(w.contains("unauthorized"), "{w}");
    status("team-b", "b", "ImagePullBackOff");
    let w = status("team-b", "never", "ErrImageNeverPull");
    assert!(w.contains("does not have the proper auth"), "{w}");
    // The node never got the artifact for them.
    assert_eq!(
        plane.jsonpath(&["-n", "team-b", "get", "pod", "b"], "{.status.phase}"),
        "Pending"
    );

    // With the secret, team-b's pod runs.
    pull_secret("team-b");
    pod("team-b", "b2", true, "IfNotPresent");
    status("team-b", "b2", "Succeeded");
    b.shutdown();
}

/// WASI isolation on a real node (issue 14 item 6): a pod that exhausts its
/// fds, floods its log with repeated-buffer writes, spins on host calls and
/// grows its memory is refused at each step and OOM-killed, while an echo
/// pod on the same node keeps answering and the node stays Ready.
#[test]
fn an_abusive_pod_fails_alone() {
    let _g = shared();
    let reg = Registry::start();
    let host = reg.host();
    let plane = Plane::for_wasm_nodes(&reg);
    reg.push_wasm("demo/echo:1.0", &guests::path("echo-server"));
    reg.push_wasm("demo/abuser:1.0", &guests::path("abuser"));
    let (spec, http_port) = plane
        .node_spec("wasm-3", &plane.token)
        .memory_mib(64)
        .user_net_forwarding(8080)
        .expect("forward a port");
    let b = boot(spec);
    let log = || b.node.log_text();
    plane.run_echo_pod(&host, http_port, log);

    plane.apply(&format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: abuser, namespace: default}}
spec:
  containers:
  - name: main
    image: {host}/demo/abuser:1.0
    resources: {{limits: {{memory: 8Mi}}}}
    volumeMounts: [{{name: scratch, mountPath: /scratch}}]
  volumes: [{{name: scratch, emptyDir: {{}}}}]
"#
    ));
    // Until the abuser has been OOM-killed, the neighbour answers every time.
    let killed = || {
        plane.jsonpath(
            &["get", "pod", "abuser"],
            "{.status.containerStatuses[0].lastState.terminated.reason}",
        ) == "OOMKilled"
    };
    let mut answers = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !killed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the abuser was not OOM-killed in 180 s\n{}\n{}",
            describe(&plane, "pod abuser"),
            log()
        );
        let a = http_get(http_port, "/hello?x=1")
            .unwrap_or_else(|e| panic!("echo next to the abuser: {e}\n{}", log()));
        assert!(a.contains("200 OK"), "{a}");
        answers += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(answers > 3, "the echo pod was asked only {answers} times");
    let mut logs = String::new();
    plane.eventually("the abuser's refusals in its log", 60, log, || {
        let out = plane.kubectl(&["logs", "abuser"]);
        logs = String::from_utf8_lossy(&out.stdout).into_owned();
        logs.contains("allocated")
    });
    let fds = skiff_wasm::MAX_FDS - 4; // stdio and the emptyDir
    for want in [
        format!("fds: {fds} opened, then errno 33"),
        "spin: ".to_string(),
    ] {
        assert!(
            logs.contains(&want),
            "{want:?} missing from\n{}",
            tail(&logs)
        );
    }
    // The log is bounded: 16 MiB written, much less kept.
    assert!(logs.len() < 1 << 20, "{} bytes of log kept", logs.len());
    let ready = plane.jsonpath(
        &["get", "node", "wasm-3"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
    );
    assert_eq!(ready, "True", "the node stays Ready\n{}", log());
    assert_eq!(
        plane.jsonpath(&["get", "pod", "echo"], "{.status.phase}"),
        "Running"
    );
    b.shutdown();
}

fn tail(s: &str) -> &str {
    let mut i = s.len().saturating_sub(2000);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}
