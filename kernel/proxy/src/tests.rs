use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use std::collections::BTreeSet;

use skiff_node_proto::{
    Endpoint, EndpointPort, EndpointSet, Service, ServiceKind, ServicePort, ServiceRef, TargetPort,
};

use crate::*;

const NODE: &str = "n1";
const SEC: u64 = 1_000_000_000;

fn s(v: &str) -> String {
    v.to_string()
}

fn ep(ip: &str, node: &str) -> Endpoint {
    Endpoint {
        addresses: vec![s(ip)],
        node_name: Some(s(node)),
        hostname: None,
        ready: true,
        serving: true,
        terminating: false,
        for_nodes: vec![],
    }
}

fn terminating(e: Endpoint, serving: bool) -> Endpoint {
    Endpoint {
        ready: false,
        serving,
        terminating: true,
        ..e
    }
}

/// A ClusterIP Service `ns/name` at `vip`:80 (port "http", target port
/// "web") whose one slice serves it on 8080.
fn svc(ns: &str, name: &str, vip: &str, endpoints: Vec<Endpoint>) -> Service {
    Service {
        namespace: s(ns),
        name: s(name),
        kind: ServiceKind::ClusterIP,
        cluster_ips: vec![s(vip)],
        headless: false,
        ports: vec![ServicePort {
            name: s("http"),
            protocol: Protocol::Tcp,
            port: 80,
            node_port: None,
            target_port: TargetPort::Name(s("web")),
        }],
        affinity_timeout_secs: None,
        internal_local: false,
        external_local: false,
        external_name: None,
        slices: vec![EndpointSet {
            ports: vec![EndpointPort {
                name: s("http"),
                protocol: Protocol::Tcp,
                port: 8080,
            }],
            endpoints,
        }],
    }
}

fn table(services: Vec<Service>) -> ServiceTable {
    let mut t = ServiceTable::new(NODE);
    t.apply_full(1, services, false);
    t
}

fn sa(ip: &str, port: u16) -> SocketAddrV4 {
    SocketAddrV4::new(ip.parse().unwrap(), port)
}

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 9);

fn resolve(t: &mut ServiceTable, dst: SocketAddrV4, random: u64) -> Resolution {
    t.resolve(Protocol::Tcp, dst, CLIENT, 0, random)
}

/// Every backend `resolve` picks for `dst` over many random values.
fn picks(t: &mut ServiceTable, dst: SocketAddrV4) -> BTreeSet<SocketAddrV4> {
    (0..64)
        .map(|r| match resolve(t, dst, r) {
            Resolution::Backend(b) => b,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn set(v: &[SocketAddrV4]) -> BTreeSet<SocketAddrV4> {
    v.iter().copied().collect()
}

#[test]
fn cluster_ip_resolves_to_ready_endpoints_on_their_target_port() {
    let mut t = table(vec![svc(
        "default",
        "web",
        "10.96.0.10",
        vec![ep("10.244.1.5", "n1"), ep("10.244.2.5", "n2")],
    )]);
    let vip = sa("10.96.0.10", 80);
    assert_eq!(
        picks(&mut t, vip),
        set(&[sa("10.244.1.5", 8080), sa("10.244.2.5", 8080)])
    );
    // Other ports, protocols and addresses are not the Service.
    assert_eq!(
        resolve(&mut t, sa("10.96.0.10", 81), 0),
        Resolution::NotAService
    );
    assert_eq!(
        resolve(&mut t, sa("10.96.0.11", 80), 0),
        Resolution::NotAService
    );
    assert_eq!(
        t.resolve(Protocol::Udp, vip, CLIENT, 0, 0),
        Resolution::NotAService
    );
}

#[test]
fn named_target_ports_follow_each_slice() {
    // Pods of one Service with different containerPorts for "web": kube
    // puts them in two slices, each with its resolved port.
    let mut v = svc("default", "web", "10.96.0.10", vec![ep("10.244.1.5", "n1")]);
    v.slices.push(EndpointSet {
        ports: vec![EndpointPort {
            name: s("http"),
            protocol: Protocol::Tcp,
            port: 9090,
        }],
        endpoints: vec![ep("10.244.2.5", "n2")],
    });
    // A slice for another port name serves nothing here.
    v.slices.push(EndpointSet {
        ports: vec![EndpointPort {
            name: s("metrics"),
            protocol: Protocol::Tcp,
            port: 9100,
        }],
        endpoints: vec![ep("10.244.3.5", "n3")],
    });
    let mut t = table(vec![v]);
    assert_eq!(
        picks(&mut t, sa("10.96.0.10", 80)),
        set(&[sa("10.244.1.5", 8080), sa("10.244.2.5", 9090)])
    );
}

#[test]
fn numeric_target_port_serves_a_slice_without_ports() {
    let mut v = svc("default", "web", "10.96.0.10", vec![ep("10.244.1.5", "n1")]);
    v.ports[0].target_port = TargetPort::Number(7000);
    v.slices[0].ports.clear();
    let mut t = table(vec![v.clone()]);
    assert_eq!(
        resolve(&mut t, sa("10.96.0.10", 80), 0),
        Resolution::Backend(sa("10.244.1.5", 7000))
    );
    // A named target port cannot be guessed.
    v.ports[0].target_port = TargetPort::Name(s("web"));
    let mut t = table(vec![v]);
    assert_eq!(
        resolve(&mut t, sa("10.96.0.10", 80), 0),
        Resolution::NoEndpoints
    );
}

#[test]
fn no_ready_endpoint_refuses_and_terminating_serving_ones_take_over() {
    let vip = sa("10.96.0.10", 80);
    // None at all (kube's placeholder slice): refuse.
    let mut t = table(vec![svc("default", "web", "10.96.0.10", vec![])]);
    assert_eq!(resolve(&mut t, vip, 0), Resolution::NoEndpoints);
    // Not ready and not serving: refuse.
    let mut t = table(vec![svc(
        "default",
        "web",
        "10.96.0.10",
        vec![Endpoint {
            ready: false,
            serving: false,
            ..ep("10.244.1.5", "n1")
        }],
    )]);
    assert_eq!(resolve(&mut t, vip, 0), Resolution::NoEndpoints);
    // Ready ones win over serving-terminating ones...
    let mut t = table(vec![svc(
        "default",
        "web",
        "10.96.0.10",
        vec![
            ep("10.244.1.5", "n1"),
            terminating(ep("10.244.2.5", "n2"), true),
            terminating(ep("10.244.3.5", "n3"), false),
        ],
    )]);
    assert_eq!(picks(&mut t, vip), set(&[sa("10.244.1.5", 8080)]));
    // ... and serving-terminating ones are used when none is ready.
    let mut t = table(vec![svc(
        "default",
        "web",
        "10.96.0.10",
        vec![
            terminating(ep("10.244.2.5", "n2"), true),
            terminating(ep("10.244.3.5", "n3"), false),
        ],
    )]);
    assert_eq!(picks(&mut t, vip), set(&[sa("10.244.2.5", 8080)]));
}

#[test]
fn internal_traffic_policy_local_uses_this_nodes_endpoints_only() {
    let vip = sa("10.96.0.10", 80);
    let mut v = svc(
        "default",
        "web",
        "10.96.0.10",
        vec![ep("10.244.1.5", "n1"), ep("10.244.2.5", "n2")],
    );
    v.internal_local = true;
    let mut t = table(vec![v.clone()]);
    assert_eq!(picks(&mut t, vip), set(&[sa("10.244.1.5", 8080)]));
    // Local, terminating but serving: still used rather than a remote one.
    v.slices[0].endpoints = vec![
        terminating(ep("10.244.1.5", "n1"), true),
        ep("10.244.2.5", "n2"),
    ];
    let mut t = table(vec![v.clone()]);
    assert_eq!(picks(&mut t, vip), set(&[sa("10.244.1.5", 8080)]));
    // None on this node: refused, never sent elsewhere.
    v.slices[0].endpoints = vec![ep("10.244.2.5", "n2")];
    let mut t = table(vec![v]);
    assert_eq!(resolve(&mut t, vip, 0), Resolution::NoEndpoints);
}

#[test]
fn prefer_same_node_hints_are_used_only_when_complete_and_naming_this_node() {
    let vip = sa("10.96.0.10", 80);
    let hinted = |ip: &str, node: &str| Endpoint {
        for_nodes: vec![s(node)],
        ..ep(ip, node)
    };
    let mut t = table(vec![svc(
        "default",
        "web",
        "10.96.0.10",
        vec![hinted("10.244.1.5", "n1"), hinted("10.244.2.5", "n2")],
    )]);
    assert_eq!(picks(&mut t, vip), set(&[sa("10.244.1.5", 8080)]));
    // One ready endpoint without hints: hints are ignored.
    let mut t = table(vec![svc(
        "default",
        "web",
        "10.96.0.10",
        vec![hinted("10.244.1.5", "n1"), ep("10.244.2.5", "n2")],
    )]);
    assert_eq!(
        picks(&mut t, vip),
        set(&[sa("10.244.1.5", 8080), sa("10.244.2.5", 8080)])
    );
    // Hints for other nodes only: all ready endpoints.
    let mut t = table(vec![svc(
        "default",
        "web",
        "10.96.0.10",
        vec![hinted("10.244.2.5", "n2"), hinted("10.244.3.5", "n3")],
    )]);
    assert_eq!(
        picks(&mut t, vip),
        set(&[sa("10.244.2.5", 8080), sa("10.244.3.5", 8080)])
    );
}

#[test]
fn client_ip_affinity_sticks_until_the_timeout_on_the_nodes_clock() {
    let vip = sa("10.96.0.10", 80);
    let mut v = svc(
        "default",
        "web",
        "10.96.0.10",
        (1..=8)
            .map(|i| ep(&alloc::format!("10.244.{i}.5"), "n2"))
            .collect(),
    );
    v.affinity_timeout_secs = Some(10);
    let mut t = table(vec![v]);
    let first = t.resolve(Protocol::Tcp, vip, CLIENT, 0, 3);
    // Whatever the random value, the same client gets the same backend,
    // and each use restarts the timeout (kube's `recent` match).
    for (i, r) in (0..20u64).enumerate() {
        let now = i as u64 * 5 * SEC;
        assert_eq!(t.resolve(Protocol::Tcp, vip, CLIENT, now, r * 7 + 1), first);
    }
    // Another client is balanced on its own.
    let other = Ipv4Addr::new(10, 244, 7, 7);
    let theirs: BTreeSet<_> = (0..8u64)
        .map(|r| {
            let mut t2 = table(vec![t.service("default", "web").unwrap().clone()]);
            t2.resolve(Protocol::Tcp, vip, other, 0, r)
        })
        .collect();
    assert!(theirs.len() > 1);
    // Idle for longer than the timeout: chosen afresh.
    let idle = 19 * 5 * SEC + 11 * SEC;
    let Resolution::Backend(b) = first else {
        panic!()
    };
    let again: BTreeSet<_> = (0..16u64)
        .map(|r| {
            let mut t2 = table(vec![t.service("default", "web").unwrap().clone()]);
            t2.resolve(Protocol::Tcp, vip, CLIENT, 0, 0);
            t2.resolve(Protocol::Tcp, vip, CLIENT, idle, r)
        })
        .collect();
    assert!(again.len() > 1, "{again:?}");
    // The pinned backend turning unready moves the client.
    let mut v = t.service("default", "web").unwrap().clone();
    for e in &mut v.slices[0].endpoints {
        if e.addresses[0] == b.ip().to_string() {
            e.ready = false;
            e.serving = false;
        }
    }
    t.apply_delta(1, 2, vec![v], &[]).unwrap();
    assert_ne!(t.resolve(Protocol::Tcp, vip, CLIENT, 0, 3), first);
}

#[test]
fn affinity_defaults_and_is_bounded() {
    assert_eq!(DEFAULT_AFFINITY_TIMEOUT_SECS, 10800);
    let vip = sa("10.96.0.10", 80);
    let mut v = svc("default", "web", "10.96.0.10", vec![ep("10.244.1.5", "n1")]);
    v.affinity_timeout_secs = Some(1);
    let mut t = table(vec![v]);
    for i in 0..(MAX_AFFINITY_ENTRIES as u32 + 10) {
        let client = Ipv4Addr::from(0x0a00_0000 + i);
        t.resolve(Protocol::Tcp, vip, client, u64::from(i), 0);
    }
    assert!(t.affinity_len() <= MAX_AFFINITY_ENTRIES);
}

#[test]
fn node_ports_resolve_with_the_external_traffic_policy() {
    let mut v = svc(
        "default",
        "web",
        "10.96.0.10",
        vec![ep("10.244.1.5", "n1"), ep("10.244.2.5", "n2")],
    );
    v.kind = ServiceKind::NodePort;
    v.ports[0].node_port = Some(30080);
    v.internal_local = true; // not what node ports use
    let mut t = table(vec![v.clone()]);
    let all: BTreeSet<_> = (0..64)
        .map(|r| t.node_port(Protocol::Tcp, 30080, CLIENT, 0, r))
        .collect();
    assert_eq!(
        all,
        [
            Resolution::Backend(sa("10.244.1.5", 8080)),
            Resolution::Backend(sa("10.244.2.5", 8080))
        ]
        .into_iter()
        .collect()
    );
    assert_eq!(
        t.node_port(Protocol::Tcp, 30081, CLIENT, 0, 0),
        Resolution::NotAService
    );
    assert_eq!(
        t.node_port(Protocol::Udp, 30080, CLIENT, 0, 0),
        Resolution::NotAService
    );
    v.external_local = true;
    v.internal_local = false;
    let mut t = table(vec![v.clone()]);
    for r in 0..16 {
        assert_eq!(
            t.node_port(Protocol::Tcp, 30080, CLIENT, 0, r),
            Resolution::Backend(sa("10.244.1.5", 8080))
        );
    }
    v.slices[0].endpoints.remove(0);
    let mut t = table(vec![v]);
    assert_eq!(
        t.node_port(Protocol::Tcp, 30080, CLIENT, 0, 0),
        Resolution::NoEndpoints
    );
}

#[test]
fn node_ports_are_listed_per_protocol_and_follow_deltas() {
    let mut web = svc("default", "web", "10.96.0.10", vec![]);
    web.kind = ServiceKind::NodePort;
    web.ports[0].node_port = Some(30080);
    let mut dns = svc("default", "dns", "10.96.0.11", vec![]);
    dns.kind = ServiceKind::NodePort;
    dns.ports[0].node_port = Some(30053);
    dns.ports.push(ServicePort {
        protocol: Protocol::Udp,
        ..dns.ports[0].clone()
    });
    let plain = svc("default", "plain", "10.96.0.12", vec![]);
    let mut t = table(vec![web, dns, plain]);
    let tcp: Vec<u16> = t.node_ports(Protocol::Tcp).collect();
    assert_eq!(tcp, [30053, 30080]);
    let udp: Vec<u16> = t.node_ports(Protocol::Udp).collect();
    assert_eq!(udp, [30053]);
    t.apply_delta(
        1,
        2,
        vec![],
        &[ServiceRef {
            namespace: s("default"),
            name: s("web"),
        }],
    )
    .unwrap();
    let tcp: Vec<u16> = t.node_ports(Protocol::Tcp).collect();
    assert_eq!(tcp, [30053]);
}

#[test]
fn full_state_in_parts_then_deltas_with_generations() {
    let mut t = ServiceTable::new(NODE);
    let a = svc("default", "a", "10.96.0.1", vec![ep("10.244.1.1", "n1")]);
    let b = svc("default", "b", "10.96.0.2", vec![ep("10.244.1.2", "n1")]);
    let c = svc("default", "c", "10.96.0.3", vec![ep("10.244.1.3", "n1")]);
    // Parts: nothing changes until the last one.
    t.apply_full(5, vec![a.clone()], true);
    assert_eq!(t.generation(), 0);
    assert!(t.is_empty());
    // A delta while a full state is incomplete does not apply.
    assert_eq!(
        t.apply_delta(0, 1, vec![c.clone()], &[]),
        Err(ApplyError::Generation {
            have: 0,
            from_generation: 0
        })
    );
    t.apply_full(5, vec![b.clone()], false);
    assert_eq!(t.generation(), 5);
    assert_eq!(t.len(), 2);
    assert_eq!(
        resolve(&mut t, sa("10.96.0.2", 80), 0),
        Resolution::Backend(sa("10.244.1.2", 8080))
    );
    // A delta from another generation is refused and changes nothing.
    assert_eq!(
        t.apply_delta(4, 6, vec![c.clone()], &[]),
        Err(ApplyError::Generation {
            have: 5,
            from_generation: 4
        })
    );
    assert_eq!(t.len(), 2);
    // In order: upsert c, remove a, change b's address.
    let gone = ServiceRef {
        namespace: s("default"),
        name: s("a"),
    };
    let mut b2 = b.clone();
    b2.cluster_ips = vec![s("10.96.0.22")];
    t.apply_delta(5, 6, vec![c, b2], &[gone]).unwrap();
    assert_eq!(t.generation(), 6);
    assert_eq!(
        resolve(&mut t, sa("10.96.0.1", 80), 0),
        Resolution::NotAService
    );
    assert_eq!(
        resolve(&mut t, sa("10.96.0.2", 80), 0),
        Resolution::NotAService
    );
    assert_eq!(
        resolve(&mut t, sa("10.96.0.22", 80), 0),
        Resolution::Backend(sa("10.244.1.2", 8080))
    );
    assert_eq!(
        resolve(&mut t, sa("10.96.0.3", 80), 0),
        Resolution::Backend(sa("10.244.1.3", 8080))
    );
    // A new full state replaces everything, whatever the generation.
    t.apply_full(2, vec![a], false);
    assert_eq!(t.generation(), 2);
    assert_eq!(t.len(), 1);
    assert_eq!(
        resolve(&mut t, sa("10.96.0.3", 80), 0),
        Resolution::NotAService
    );
    // Parts of an abandoned full state are dropped by the next one.
    t.apply_full(3, vec![b], true);
    t.apply_full(4, vec![], false);
    assert!(t.is_empty());
    assert_eq!(t.generation(), 4);
}

fn dns_table() -> ServiceTable {
    let mut headless = svc(
        "db",
        "pg",
        "",
        vec![
            Endpoint {
                hostname: Some(s("pg-0")),
                ..ep("10.244.1.7", "n1")
            },
            ep("10.244.2.7", "n2"),
            Endpoint {
                ready: false,
                hostname: Some(s("pg-2")),
                ..ep("10.244.3.7", "n3")
            },
        ],
    );
    headless.cluster_ips.clear();
    headless.headless = true;
    let mut ext = svc("default", "search", "", vec![]);
    ext.kind = ServiceKind::ExternalName;
    ext.cluster_ips.clear();
    ext.external_name = Some(s("www.example.com"));
    let mut t = ServiceTable::new(NODE);
    t.apply_full(
        1,
        vec![
            svc("default", "web", "10.96.0.10", vec![ep("10.244.1.5", "n1")]),
            svc("db", "web", "10.96.0.20", vec![]),
            headless,
            ext,
        ],
        false,
    );
    t
}

fn addrs(v: &[&str]) -> Lookup {
    Lookup::Addresses(v.iter().map(|a| a.parse().unwrap()).collect())
}

#[test]
fn dns_answers_service_names_through_the_search_path() {
    let t = dns_table();
    let web = addrs(&["10.96.0.10"]);
    for name in [
        "web.default.svc.cluster.local",
        "web.default.svc.cluster.local.",
        "WEB.Default.SVC.cluster.LOCAL.",
        "web",
        "web.default",
        "web.default.svc",
    ] {
        assert_eq!(t.lookup(name, "default"), web, "{name}");
    }
    // The pod's namespace comes first in the search path.
    assert_eq!(t.lookup("web", "db"), addrs(&["10.96.0.20"]));
    assert_eq!(t.lookup("web.db", "default"), addrs(&["10.96.0.20"]));
    // An absolute name is not searched.
    assert_eq!(t.lookup("web.", "default"), Lookup::Upstream);
    assert_eq!(t.lookup("web.default.", "default"), Lookup::Upstream);
}

#[test]
fn dns_unknown_cluster_names_are_nxdomain_and_others_go_upstream() {
    let t = dns_table();
    for name in [
        "nope.default.svc.cluster.local",
        "web.nope.svc.cluster.local",
        "nope.default.svc",
        "cluster.local",
        "x.y.cluster.local.",
        "web.default.svc.cluster.local.extra.svc.cluster.local",
    ] {
        assert_eq!(t.lookup(name, "default"), Lookup::NxDomain, "{name}");
    }
    for name in ["example.com", "www.example.com.", "nope", "a.b.c.d.e.f"] {
        assert_eq!(t.lookup(name, "default"), Lookup::Upstream, "{name}");
    }
    assert_eq!(t.lookup("", "default"), Lookup::NxDomain);
    assert_eq!(t.lookup(".", "default"), Lookup::NxDomain);
}

#[test]
fn dns_headless_services_answer_ready_endpoints_and_hostnames() {
    let t = dns_table();
    assert_eq!(
        t.lookup("pg.db.svc.cluster.local", "default"),
        addrs(&["10.244.1.7", "10.244.2.7"])
    );
    assert_eq!(t.lookup("pg", "db"), addrs(&["10.244.1.7", "10.244.2.7"]));
    assert_eq!(
        t.lookup("pg-0.pg.db.svc.cluster.local", "default"),
        addrs(&["10.244.1.7"])
    );
    assert_eq!(t.lookup("pg-0.pg", "db"), addrs(&["10.244.1.7"]));
    // An endpoint without a hostname by its dashed address.
    assert_eq!(
        t.lookup("10-244-2-7.pg.db.svc.cluster.local", "db"),
        addrs(&["10.244.2.7"])
    );
    // Not ready: not published.
    assert_eq!(
        t.lookup("pg-2.pg.db.svc.cluster.local", "db"),
        Lookup::NxDomain
    );
    // Endpoint names only under headless Services.
    assert_eq!(
        t.lookup("pg-0.web.db.svc.cluster.local", "db"),
        Lookup::NxDomain
    );
    assert_eq!(
        t.lookup("10-244-1-5.web.default.svc.cluster.local", "db"),
        Lookup::NxDomain
    );
}

#[test]
fn dns_pod_names_and_external_names() {
    let t = dns_table();
    assert_eq!(
        t.lookup("10-244-1-5.default.pod.cluster.local", "x"),
        addrs(&["10.244.1.5"])
    );
    for bad in [
        "10-244-1.default.pod.cluster.local",
        "10-244-1-500.default.pod.cluster.local",
        "10-244-1-5-6.default.pod.cluster.local",
        "a-b-c-d.default.pod.cluster.local",
    ] {
        assert_eq!(t.lookup(bad, "x"), Lookup::NxDomain, "{bad}");
    }
    assert_eq!(
        t.lookup("search", "default"),
        Lookup::Alias(s("www.example.com"))
    );
    assert_eq!(
        t.lookup("search.default.svc.cluster.local.", "db"),
        Lookup::Alias(s("www.example.com"))
    );
    // ExternalName Services have no address to connect to.
    let mut t = t;
    assert_eq!(
        resolve(&mut t, sa("10.96.0.30", 80), 0),
        Resolution::NotAService
    );
}

#[test]
fn dns_cluster_domain_is_a_parameter() {
    let mut t = ServiceTable::with_domain(NODE, "Corp.Example.");
    t.apply_full(1, vec![svc("default", "web", "10.96.0.10", vec![])], false);
    assert_eq!(t.cluster_domain(), "corp.example");
    assert_eq!(t.lookup("web", "default"), addrs(&["10.96.0.10"]));
    assert_eq!(
        t.lookup("web.default.svc.corp.example", "x"),
        addrs(&["10.96.0.10"])
    );
    assert_eq!(
        t.lookup("web.default.svc.cluster.local", "x"),
        Lookup::Upstream
    );
    assert_eq!(
        t.lookup("nope.default.svc.corp.example", "x"),
        Lookup::NxDomain
    );
}

#[test]
fn dns_names_with_many_dots_are_tried_as_written_first() {
    // Five dots or more: as written first (ndots:5), so an absolute cluster
    // name with search-like suffixes still answers.
    let mut t = dns_table();
    let mut v = svc("default", "web", "10.96.0.10", vec![]);
    v.name = s("a");
    v.namespace = s("b");
    t.apply_delta(1, 2, vec![v], &[]).unwrap();
    let names: Vec<&str> = vec!["a.b.svc.cluster.local", "a.b.svc.cluster.local."];
    for n in names {
        assert_eq!(t.lookup(n, "default"), addrs(&["10.96.0.10"]), "{n}");
    }
    // 5 dots, outside the cluster: upstream at once.
    assert_eq!(t.lookup("a.b.c.d.e.example", "default"), Lookup::Upstream);
}
