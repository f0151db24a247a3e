//! Hollow nodes against an in-process control plane, checked with kubectl.

mod common;

use skiff_node_proto::RefusalReason;
use std::time::Duration;

use common::Cluster;
use skiff_hollow_node::Stats;

fn pod_yaml(name: &str, node: &str, run_ms: u64, exit: i32) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: default
  annotations:
    hollow.skiff.dev/run-ms: \"{run_ms}\"
    hollow.skiff.dev/exit-code: \"{exit}\"
spec:
  nodeName: {node}
  restartPolicy: Never
  containers:
  - name: main
    image: registry.local/job:1
"
    )
}

#[test]
fn node_ready_pods_complete_and_a_stopped_nodes_session_ends() {
    let mut c = Cluster::start(|_| {});
    c.start_node("hn-0", 0);
    c.wait_output(&["get", "nodes"], "hn-0   Ready", 20);
    let cap = c.ok(&[
        "get",
        "node",
        "hn-0",
        "-o",
        "jsonpath={.status.capacity.cpu} {.status.capacity.memory} {.status.capacity.pods} {.status.addresses[?(@.type==\"InternalIP\")].address} {.status.nodeInfo.kernelVersion}",
    ]);
    assert_eq!(cap, "4 8Gi 110 10.64.0.1 skiff-hollow 0.1.0");
    assert!(c.ok(&["get", "nodes", "-o", "wide"]).contains("10.64.0.1"));
    assert!(
        c.ok(&[
            "get",
            "lease",
            "-n",
            "kube-node-lease",
            "hn-0",
            "-o",
            "jsonpath={.spec.holderIdentity}"
        ]) == "hn-0"
    );

    let ok = c.write("ok.yaml", &pod_yaml("job-ok", "hn-0", 1500, 0));
    let bad = c.write("bad.yaml", &pod_yaml("job-bad", "hn-0", 1500, 3));
    c.ok(&["apply", "-f", ok.to_str().unwrap()]);
    c.ok(&["apply", "-f", bad.to_str().unwrap()]);
    c.wait_output(
        &["get", "pod", "job-ok", "-o", "jsonpath={.status.phase}"],
        "Running",
        20,
    );
    c.wait_output(
        &["get", "pod", "job-ok", "-o", "jsonpath={.status.phase}"],
        "Succeeded",
        20,
    );
    c.wait_output(
        &["get", "pod", "job-bad", "-o", "jsonpath={.status.phase}"],
        "Failed",
        20,
    );
    let code = |p: &str| {
        c.ok(&[
            "get",
            "pod",
            p,
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}",
        ])
    };
    assert_eq!(code("job-ok"), "0");
    assert_eq!(code("job-bad"), "3");
    // kubectl's STATUS column reads like kube's: the container's reason.
    let table = c.ok(&["get", "pods"]);
    let status = |pod: &str| {
        table
            .lines()
            .find(|l| l.starts_with(pod))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(status("job-ok"), "Completed", "{table}");
    assert_eq!(status("job-bad"), "Error", "{table}");

    // The kubelet's Events, created by the gateway as the node.
    let ev = c.wait_output(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=job-ok",
        ],
        "Started",
        10,
    );
    assert!(ev.contains("job-ok"), "{ev}");

    // Graceful deletion: the node stops the pod, then the object goes away.
    c.ok(&["delete", "pod", "job-ok", "--wait=false"]);
    c.wait_output(&["get", "pods"], "job-bad", 5);
    c.eventually("job-ok deleted", 20, || {
        !c.ok(&["get", "pods", "-o", "name"]).contains("job-ok")
    });

    // Node health is the node lifecycle controller's (its own tests, and
    // node_join's QEMU test): the gateway sees the session end.
    c.stop_node("hn-0");
    c.eventually("hn-0's session closed", 20, || {
        c.journal()
            .iter()
            .any(|l| l.contains("node hn-0 (") && l.contains("closing"))
    });
}

/// Repeats of a kubelet event update one Event (its count and last time),
/// as kube's recorder does, instead of piling up objects.
#[test]
fn a_repeated_event_is_one_object_counting_up() {
    let mut c = Cluster::start(|_| {});
    c.start_node("hn-ev", 0);
    c.wait_output(&["get", "nodes"], "hn-ev   Ready", 20);
    let crasher = pod_yaml("crasher", "hn-ev", 100, 1).replace("Never", "Always");
    c.ok(&[
        "apply",
        "-f",
        c.write("crasher.yaml", &crasher).to_str().unwrap(),
    ]);
    let backoffs = || {
        c.ok(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=crasher,reason=BackOff",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.count}{\"\\n\"}{end}",
        ])
    };
    c.eventually("the back-off repeated", 60, || {
        backoffs()
            .lines()
            .any(|l| l.split_whitespace().nth(1).is_some_and(|n| n != "1"))
    });
    let seen = backoffs();
    let series: Vec<&str> = seen.lines().collect();
    assert_eq!(series.len(), 1, "one Event for the series:\n{seen}");
    assert!(series[0].starts_with("crasher."), "{seen}");
}

/// A node session driven by hand: bootstraps `name` with the cluster's
/// token, opens mutual TLS and sends Hello and Register with `caps`.
fn registered_session(
    c: &Cluster,
    name: &str,
    caps: skiff_node_proto::Capabilities,
) -> (
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    skiff_hollow_node::NodeConfig,
) {
    use skiff_gateway::wire::write_frame;
    use skiff_node_proto::{self as proto, MAX_FRAME, NodeToPlane};
    let creds = c.bootstrap(name, &c.token.clone()).unwrap();
    let cfg = c.fleet_cfg.node(name, 4);
    let client =
        skiff_hollow_node::identity::node_config(&cfg.ca, creds.chain.clone(), &creds.key).unwrap();
    let s = c.rt.block_on(async {
        let mut s = skiff_hollow_node::node::tls(&cfg, client).await.unwrap();
        let hello = NodeToPlane::Hello(proto::Hello {
            min_version: proto::MIN_PROTOCOL_VERSION,
            max_version: proto::PROTOCOL_VERSION,
            node_name: name.into(),
            capabilities: caps,
            software: "test".into(),
        });
        write_frame(&mut s, &hello, MAX_FRAME).await.unwrap();
        let info = proto::NodeInfo {
            name: name.into(),
            boot_id: [7; 16],
            addresses: vec![],
            capacity: cfg.capacity,
            allocatable: cfg.capacity,
            kernel_version: "test".into(),
            runtime_version: "test://0".into(),
            os_image: "test".into(),
            architecture: "amd64".into(),
            labels: vec![],
        };
        write_frame(&mut s, &NodeToPlane::Register(info), MAX_FRAME)
            .await
            .unwrap();
        s
    });
    (s, cfg)
}

/// The gateway does not own node health: a session silent for the grace
/// period is closed and the Node left as it is, for the lifecycle
/// controller to mark (its tests); the node's next session registers it
/// afresh.
#[test]
fn a_silent_session_ends_and_the_node_is_left_to_its_controller() {
    use skiff_gateway::wire::write_frame;
    use skiff_node_proto::{
        self as proto, Capabilities, ConditionStatus, MAX_FRAME, NodeCondition, NodeConditionType,
        NodeToPlane,
    };
    let c = Cluster::start(|_| {});
    let (s, cfg) = registered_session(&c, "hn-quiet", Capabilities::NONE);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let _s = c.rt.block_on(async {
        let mut s = s;
        let status = NodeToPlane::NodeStatus(proto::NodeStatus {
            conditions: vec![NodeCondition {
                kind: NodeConditionType::Ready,
                status: ConditionStatus::True,
                reason: "KubeletReady".into(),
                message: "kubelet is posting ready status".into(),
                last_heartbeat: now_ms,
                last_transition: now_ms,
            }],
            capacity: cfg.capacity,
            allocatable: cfg.capacity,
        });
        write_frame(&mut s, &status, MAX_FRAME).await.unwrap();
        s
    });
    c.eventually("the silent session closed", 20, || {
        c.journal()
            .iter()
            .any(|l| l.contains("node hn-quiet (") && l.contains("closing: node silent"))
    });
    let ready = c.ok(&[
        "get",
        "node",
        "hn-quiet",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "True", "the gateway marks no node NotReady");
}

#[test]
fn bad_token_and_foreign_certificates_are_refused() {
    let c = Cluster::start(|_| {});
    let (id, _) = c.token.split_once('.').unwrap();
    let e = c
        .bootstrap("hn-x", &format!("{id}.0000000000000000"))
        .err()
        .expect("wrong token refused");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::BadToken, _))),
        "{e}"
    );
    let e = c
        .bootstrap("hn-x", "abcdef.0123456789abcdef")
        .err()
        .unwrap();
    assert!(
        matches!(e.refusal(), Some((RefusalReason::BadToken, _))),
        "{e}"
    );
    assert!(
        c.journal()
            .iter()
            .any(|l| l.contains("BadToken") && l.contains("hn-x")),
        "{:?}",
        c.journal()
    );

    // A node certificate from another CA fails the TLS handshake.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:evil");
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:nodes");
    let cert = p.self_signed(&key).unwrap();
    let creds = skiff_hollow_node::node::Creds {
        key,
        chain: vec![cert.der().to_vec()],
        not_after: u64::MAX,
    };
    let cfg = c.fleet_cfg.node("evil", 7);
    let client =
        skiff_hollow_node::identity::node_config(&cfg.ca, creds.chain, &creds.key).unwrap();
    let r = c.rt.block_on(async {
        use tokio::io::AsyncReadExt as _;
        let mut s = skiff_hollow_node::node::tls(&cfg, client).await?;
        // TLS 1.3: the client learns of the refusal on its first read.
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            Ok(0) => Err("closed".to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    });
    assert!(r.is_err());
    c.eventually("a logged TLS refusal", 5, || {
        c.journal()
            .iter()
            .any(|l| l.contains("TLS handshake refused"))
    });
}

#[test]
fn a_node_cannot_read_another_nodes_pods_or_secrets() {
    let mut c = Cluster::start(|_| {});
    // Real node certificates from TLS bootstrap; hn-a's before its node
    // runs (a live node cannot be bootstrapped again).
    let a = c.bootstrap("hn-a", &c.token.clone()).unwrap();
    let b = c.bootstrap("hn-b", &c.token.clone()).unwrap();
    c.start_node("hn-a", 1);
    c.wait_output(&["get", "nodes"], "hn-a   Ready", 20);
    c.ok(&["create", "secret", "generic", "sa", "--from-literal=k=v"]);
    let pod = "apiVersion: v1
kind: Pod
metadata: {name: pa, namespace: default}
spec:
  nodeName: hn-a
  containers:
  - name: main
    image: registry.local/app:1
    env:
    - name: K
      valueFrom: {secretKeyRef: {name: sa, key: k}}
";
    let f = c.write("pa.yaml", pod);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    c.wait_output(
        &["get", "pod", "pa", "-o", "jsonpath={.status.phase}"],
        "Running",
        20,
    );

    let ka = c.node_kubeconfig("hn-a", &a);
    let kb = c.node_kubeconfig("hn-b", &b);
    let run = |k: &std::path::Path, args: &[&str]| {
        let o = c.kubectl_as(k, args);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    };
    let (ok, out) = run(&ka, &["get", "secret", "sa", "-o", "jsonpath={.data.k}"]);
    assert!(ok, "{out}");
    let (ok, out) = run(&ka, &["get", "pod", "pa"]);
    assert!(ok, "{out}");
    for args in [
        &["get", "secret", "sa"][..],
        &["get", "pod", "pa"][..],
        &["get", "pods", "--field-selector", "spec.nodeName=hn-a"][..],
    ] {
        let (ok, out) = run(&kb, args);
        assert!(!ok && out.contains("Forbidden"), "{args:?}: {out}");
    }
}

#[test]
fn forged_and_truncated_frames_close_only_that_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut c = Cluster::start(|_| {});
    c.start_node("hn-good", 2);
    c.wait_output(&["get", "nodes"], "hn-good   Ready", 20);
    let creds = c.bootstrap("hn-evil", &c.token.clone()).unwrap();
    let cfg = c.fleet_cfg.node("hn-evil", 3);
    let attacks: [(&str, Vec<u8>); 3] = [
        // A valid length with a body that is no message.
        ("forged", [&7u32.to_be_bytes()[..], &[0xff; 7]].concat()),
        // A header promising more than arrives before the peer closes.
        (
            "truncated",
            [&100u32.to_be_bytes()[..], &[0u8; 10]].concat(),
        ),
        // Over the frame limit.
        ("oversized", u32::MAX.to_be_bytes().to_vec()),
    ];
    for (what, bytes) in attacks {
        let before = c.journal().len();
        let client =
            skiff_hollow_node::identity::node_config(&cfg.ca, creds.chain.clone(), &creds.key)
                .unwrap();
        c.rt.block_on(async {
            let mut s = skiff_hollow_node::node::tls(&cfg, client).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            if what == "truncated" {
                s.shutdown().await.unwrap();
            }
            // The gateway closes the connection.
            let mut buf = Vec::new();
            let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
            assert!(r.is_ok(), "{what}: connection not closed");
        });
        c.eventually(&format!("{what}: logged reason"), 5, || {
            c.journal()[before.min(c.journal().len())..]
                .iter()
                .any(|l| l.contains("hn-evil") && l.contains("closing"))
        });
    }
    let j = c.journal().join("\n");
    assert!(j.contains("Malformed") || j.contains("malformed"), "{j}");
    assert!(j.contains("stream ended inside a frame"), "{j}");
    assert!(j.contains("exceeds limit"), "{j}");

    // The good node kept going.
    let stats = c.stats();
    let beats = Stats::get(&stats.heartbeats);
    c.eventually("more heartbeats", 10, || {
        Stats::get(&stats.heartbeats) > beats + 3
    });
    assert!(c.ok(&["get", "nodes"]).contains("hn-good   Ready"));
}

#[test]
fn certificates_rotate_before_expiry() {
    let mut c = Cluster::start(|g| g.cert_validity = Duration::from_secs(3));
    c.start_node("hn-r", 4);
    c.wait_output(&["get", "nodes"], "hn-r   Ready", 20);
    let stats = c.stats();
    c.eventually("a rotation", 15, || Stats::get(&stats.rotations) >= 2);
    // A rotation is counted when the new certificate arrives; the session
    // it opens comes after the reconnect.
    c.eventually("sessions on the rotated certificates", 10, || {
        Stats::get(&stats.sessions) >= 3
    });
    assert_eq!(Stats::get(&stats.bootstraps), 1, "{:?}", stats.last_error());
    assert!(c.ok(&["get", "nodes"]).contains("hn-r   Ready"));
}

#[test]
fn a_node_may_fetch_only_its_own_pods_artifacts() {
    use skiff_gateway::wire::{read_frame, write_frame};
    use skiff_node_proto::{Capabilities, MAX_FRAME, NodeToPlane, PlaneToNode};
    // The plane's gateway serves artifacts from its image service.
    let c = Cluster::start(|_| {});
    let (mut s, _) = registered_session(&c, "hn-fetch", Capabilities::WASM);
    let answer = c.rt.block_on(async {
        // Any artifact not named by this node's own pods is refused, even one
        // the plane holds for other nodes.
        let digest = format!("sha256:{}", "ab".repeat(32));
        let fetch = NodeToPlane::FetchArtifact {
            digest: digest.clone(),
            offset: 0,
            len: 1024,
        };
        write_frame(&mut s, &fetch, MAX_FRAME).await.unwrap();
        loop {
            match read_frame::<PlaneToNode, _>(&mut s, MAX_FRAME)
                .await
                .unwrap()
            {
                PlaneToNode::ArtifactChunk { data, error, .. } => break (data, error),
                _ => continue,
            }
        }
    });
    assert!(answer.0.is_empty());
    let err = answer.1.expect("an error");
    assert!(
        err.contains("is not one of this node's pods' images"),
        "{err}"
    );
}
