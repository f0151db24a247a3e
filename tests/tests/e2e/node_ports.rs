//! NodePort Services on kernel nodes: two nodes on one segment, a
//! Deployment with one echo-server replica behind a NodePort Service. The
//! host reaches the Service through every node's nodePort (the replica's
//! node splices to it in memory, the other relays over the segment);
//! `externalTrafficPolicy: Local` makes the node without a replica refuse;
//! without endpoints both refuse at once — driven with real kubectl.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::time::{Duration, Instant};

use skiff_e2e::cluster::SegmentCluster;
use skiff_e2e::plane::Plane;
use skiff_e2e::*;

/// How long a refusal may take: a reset, never a timeout. TCG nodes and
/// the router share two cores with the plane, so this is not tight.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);
/// Five GETs one after the other (each ~ms when all is well; a lost wakeup
/// costs the pod's runner its 1 s idle wait each time).
const FIVE_GETS_WITHIN: Duration = Duration::from_secs(3);

#[derive(Debug)]
enum Outcome {
    /// Some answer (possibly cut short).
    Answered(String),
    /// Refused, reset or closed without a byte, after this long.
    Refused(Duration),
    /// Nothing within the read timeout.
    Hung,
}

/// One HTTP GET through host port `port`.
fn get(port: u16) -> Outcome {
    get_paced(port, None)
}

/// One HTTP GET through host port `port`; with `pause`, the client waits
/// that long after connecting and again inside the request line, so the
/// pod accepts before any byte and then waits for the rest mid-line.
fn get_paced(port: u16, pause: Option<Duration>) -> Outcome {
    let t = Instant::now();
    let mut s = match TcpStream::connect((Ipv4Addr::LOCALHOST, port)) {
        Ok(s) => s,
        Err(_) => return Outcome::Refused(t.elapsed()),
    };
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    s.set_nodelay(true).expect("nodelay");
    let request = "GET /via-node-port HTTP/1.1\r\nHost: skiff\r\nConnection: close\r\n\r\n";
    match pause {
        None => {
            let _ = s.write_all(request.as_bytes());
        }
        Some(p) => {
            std::thread::sleep(p);
            let _ = s.write_all(&request.as_bytes()[..8]);
            std::thread::sleep(p);
            let _ = s.write_all(&request.as_bytes()[8..]);
        }
    }
    let mut out = Vec::new();
    let r = s.read_to_end(&mut out);
    let elapsed = t.elapsed();
    if !out.is_empty() {
        return Outcome::Answered(String::from_utf8_lossy(&out).into_owned());
    }
    match r {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Outcome::Hung
        }
        _ => Outcome::Refused(elapsed),
    }
}

fn answered_by(outcome: &Outcome, pod: &str) -> bool {
    matches!(outcome, Outcome::Answered(a) if a.contains("200 OK") && a.contains(&format!("Hostname: {pod}")))
}

fn answers(port: u16, pod: &str) -> bool {
    answered_by(&get(port), pod)
}

/// Refused (reset or closed) at once, not answered and not hung.
fn refuses_at_once(port: u16) -> Result<Duration, String> {
    match get(port) {
        Outcome::Refused(t) if t <= REFUSED_WITHIN => Ok(t),
        other => Err(format!("{other:?}")),
    }
}

fn eventually_refuses(plane: &Plane, what: &str, port: u16, log: impl Fn() -> String) {
    let last = std::cell::RefCell::new(String::new());
    plane.eventually(
        what,
        90,
        || format!("last attempt: {}\n{}", last.borrow(), log()),
        || match refuses_at_once(port) {
            Ok(_) => true,
            Err(e) => {
                *last.borrow_mut() = e;
                false
            }
        },
    );
}

#[test]
fn node_ports_serve_from_every_node_and_refuse_without_endpoints() {
    let _g = shared();
    let names = ["np-a", "np-b"];
    let c = SegmentCluster::boot(&names, 64, &[("demo/echo:1.0", "echo-server")]);
    let (plane, host) = (&c.plane, c.host());
    let log = || c.log();

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
        env: [{{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  type: NodePort
  selector: {{app: echo}}
  ports: [{{port: 80, targetPort: 8080}}]
"#
    ));
    let mut pod = String::new();
    plane.eventually("the echo pod to be created", 60, log, || {
        pod = plane.jsonpath(
            &["get", "pods", "-l", "app=echo"],
            "{.items[0].metadata.name}",
        );
        !pod.is_empty()
    });
    plane.wait_output(&["logs", &pod], "listening", 150, log);
    let on = plane.jsonpath(&["get", "pod", &pod], "{.spec.nodeName}");
    let with = names
        .iter()
        .position(|n| *n == on)
        .unwrap_or_else(|| panic!("{pod} runs on {on:?}, not one of {names:?}"));
    let without = 1 - with;
    let node_port: u16 = plane
        .jsonpath(&["get", "svc", "echo"], "{.spec.ports[0].nodePort}")
        .parse()
        .expect("the Service's nodePort");
    let forwards: Vec<u16> = c
        .nodes
        .iter()
        .map(|(_, n)| {
            let ip = n.ip().expect("node address");
            c.segment
                .forward(SocketAddrV4::new(ip, node_port))
                .expect("forward to the node port")
        })
        .collect();
    eprintln!(
        "{pod} on {on}; nodePort {node_port}; {} -> host port {}, {} -> host port {}",
        names[0], forwards[0], names[1], forwards[1]
    );

    // Both nodes serve the nodePort: the replica's node in memory, the
    // other over the segment to the pod's address. The pod serves one
    // connection at a time, so any GET left hanging would stall the rest.
    for i in [with, without] {
        plane.eventually(
            &format!("{}:{node_port} to answer with {pod}", names[i]),
            120,
            log,
            || answers(forwards[i], &pod),
        );
        let t = Instant::now();
        for _ in 0..5 {
            let got = get(forwards[i]);
            assert!(
                answered_by(&got, &pod),
                "{} stopped answering: {got:?}\n{}",
                names[i],
                log()
            );
        }
        let took = t.elapsed();
        eprintln!("{}: 5 GETs in {took:?}", names[i]);
        // Each GET is a few round trips on the segment: a wakeup lost on
        // the way (a relay, the pod's runner) costs a timer tick or more.
        assert!(
            took < FIVE_GETS_WITHIN,
            "{}: 5 GETs took {took:?}\n{}",
            names[i],
            log()
        );
        // A client slow to send: the pod accepts first and then waits for
        // the request's bytes (which only the relay's activity brings).
        let got = get_paced(forwards[i], Some(Duration::from_millis(300)));
        assert!(
            answered_by(&got, &pod),
            "{}: a slow client got {got:?}\n{}",
            names[i],
            log()
        );
        assert!(
            answers(forwards[i], &pod),
            "{} answers after a slow client",
            names[i]
        );
    }
    let served = String::from_utf8_lossy(&plane.kubectl(&["logs", &pod]).stdout).into_owned();
    assert!(served.contains("GET /via-node-port"), "{served}");

    // externalTrafficPolicy: Local: only the replica's node serves.
    plane.ok(&[
        "patch",
        "svc",
        "echo",
        "-p",
        r#"{"spec":{"externalTrafficPolicy":"Local"}}"#,
    ]);
    eventually_refuses(
        plane,
        &format!(
            "{} to refuse with externalTrafficPolicy: Local",
            names[without]
        ),
        forwards[without],
        log,
    );
    let t = refuses_at_once(forwards[without])
        .unwrap_or_else(|e| panic!("{} refuses again: {e}", names[without]));
    eprintln!("{} refused (Local) in {t:?}", names[without]);
    assert!(
        answers(forwards[with], &pod),
        "the replica's node still serves"
    );

    // No endpoints at all: every node refuses at once.
    plane.ok(&["scale", "deployment", "echo", "--replicas=0"]);
    for i in [with, without] {
        eventually_refuses(
            plane,
            &format!("{} to refuse without endpoints", names[i]),
            forwards[i],
            log,
        );
        let t = refuses_at_once(forwards[i])
            .unwrap_or_else(|e| panic!("{} refuses again: {e}", names[i]));
        eprintln!("{} refused (no endpoints) in {t:?}", names[i]);
    }
    c.shutdown();
}
