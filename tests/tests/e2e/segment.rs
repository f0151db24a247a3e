//! A shared L2 segment (`skiff_qemu::Segment`): two nodes get addresses by
//! DHCP from the segment's router, the host reaches both through live
//! forwards, they reach each other directly, and losing one node leaves the
//! other reachable.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use skiff_e2e::*;

/// `ping` from `from` to `to`, a few tries: the first echo request after a
/// cold ARP cache is dropped while smoltcp resolves the neighbour.
fn ping(from: &Booted, to: Ipv4Addr) -> u64 {
    let mut last = String::new();
    for _ in 0..3 {
        match from.diag.ping(to) {
            Ok(Some(rtt_us)) => return rtt_us,
            Ok(None) => last = "timed out".into(),
            Err(e) => last = e.to_string(),
        }
    }
    from.fail(&format!("diag `ping {to}`: {last}"))
}

#[test]
fn two_nodes_share_a_segment() {
    let _g = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let segment = Segment::start(dir.path()).expect("starting the segment");
    let a = boot_on(&segment, spec(Machine::Microvm));
    let b = boot_on(&segment, spec(Machine::Microvm));
    assert_eq!(segment.ports(), 3, "router and two nodes on the hub");

    // DHCP from the router: distinct addresses in the /8, slirp's gateway.
    let (ip_a, ip_b) = (a.ip().expect("a has an ip"), b.ip().expect("b has an ip"));
    assert_ne!(ip_a, ip_b);
    for n in [&a, &b] {
        let st = n.status.fields();
        let cidr = st.ip.expect("ip");
        assert_eq!(cidr.prefix_len, 8, "{}", n.status.text());
        assert_eq!(st.gateway, Some(skiff_qemu::SEGMENT_GATEWAY));
    }
    eprintln!("node a {ip_a}, node b {ip_b}");

    // Node to node over the hub, both ways, and each node to the gateway.
    let rtt = ping(&a, ip_b);
    eprintln!("a -> b: {rtt} us");
    let rtt = ping(&b, ip_a);
    eprintln!("b -> a: {rtt} us");
    ping(&a, skiff_qemu::SEGMENT_GATEWAY);

    // A second forward to a node works alongside the first.
    let port = segment
        .forward(SocketAddrV4::new(ip_b, DIAG_PORT))
        .expect("second forward to b");
    let b2 =
        DiagClient::new((Ipv4Addr::LOCALHOST, port).into()).with_token(b.node.spec().diag_token());
    b2.wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| b.fail(&format!("second forward to b: {e}")));

    // Dropping a kills its QEMU (no clean shutdown): b and the router carry on.
    drop(a);
    let t = std::time::Instant::now();
    while segment.ports() != 2 {
        assert!(t.elapsed() < Duration::from_secs(5), "hub kept a's port");
        std::thread::sleep(Duration::from_millis(10));
    }
    b.diag
        .status()
        .unwrap_or_else(|e| b.fail(&format!("b after a was killed: {e}")));
    ping(&b, skiff_qemu::SEGMENT_GATEWAY);
    match b.diag.ping(ip_a) {
        Ok(None) => {}
        other => b.fail(&format!("ping to the killed node answered: {other:?}")),
    }
    b.shutdown();
}

#[test]
fn router_forwards_live_and_stops_with_the_segment() {
    let _g = shared();
    let dir = tempfile::tempdir().expect("temp dir");
    let segment = Segment::start(dir.path()).expect("starting the segment");
    assert_eq!(segment.ports(), 1, "the router is on the hub");
    // A pod address nobody answers yet: the forward listens all the same.
    let pod = SocketAddrV4::new(Ipv4Addr::new(10, 244, 1, 5), 8080);
    let ports: Vec<u16> = (0..2)
        .map(|_| segment.forward(pod).expect("hostfwd_add"))
        .collect();
    assert_ne!(ports[0], ports[1]);
    let rules = segment.monitor("info usernet").expect("info usernet");
    for p in &ports {
        assert!(rules.contains(&p.to_string()), "{rules}");
        std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, *p))
            .unwrap_or_else(|e| panic!("forward {p} does not listen: {e}"));
    }
    let hub = segment.hub_path().to_owned();
    drop(segment);
    assert!(!hub.exists(), "hub socket removed");
    for p in &ports {
        assert!(
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, *p)).is_err(),
            "forward {p} outlived the router"
        );
    }
}
