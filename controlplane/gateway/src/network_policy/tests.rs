//! `resolve` against kube's NetworkPolicy semantics, on JSON objects as the
//! API serves them (`policyTypes` defaulted).

use serde_json::json;

use super::*;

fn pod(ns: &str, name: &str, labels: Value, ip: &str, node: &str) -> Value {
    json!({
        "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "dns", "containerPort": 5353, "protocol": "UDP"}
        ]}]},
        "status": {"phase": "Running", "podIP": ip, "hostIP": "10.0.2.15"}
    })
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"metadata": {"name": name, "labels": labels}})
}

fn policy(ns: &str, name: &str, spec: Value) -> Value {
    json!({"metadata": {"namespace": ns, "name": name}, "spec": spec})
}

/// A small cluster: web (two nodes), db, a client in another namespace,
/// and a pod sharing its node's address.
fn world(policies: &[Value]) -> World {
    let mut w = World::default();
    for ns in [
        namespace("prod", json!({"team": "a"})),
        namespace("tools", json!({"team": "b"})),
    ] {
        w.apply(Source::Namespace, false, &ns);
    }
    for p in [
        pod("prod", "web-1", json!({"app": "web"}), "10.244.1.2", "n1"),
        pod("prod", "web-2", json!({"app": "web"}), "10.244.2.2", "n2"),
        pod("prod", "db", json!({"app": "db"}), "10.244.1.3", "n1"),
        pod(
            "tools",
            "client",
            json!({"app": "client"}),
            "10.244.2.3",
            "n2",
        ),
        pod("prod", "legacy", json!({"app": "web"}), "10.0.2.15", "n1"),
    ] {
        w.apply(Source::Pod, false, &p);
    }
    for p in policies {
        w.apply(Source::Policy, false, p);
    }
    w
}

fn ip(s: &str) -> [u8; 4] {
    s.parse::<Ipv4Addr>().unwrap().octets()
}

fn hosts(rule: &PolicyRule) -> Vec<String> {
    let mut v: Vec<String> = rule
        .peers
        .iter()
        .flatten()
        .map(|b| format!("{}/{}", Ipv4Addr::from(b.cidr.addr), b.cidr.prefix))
        .collect();
    v.sort();
    v
}

fn on<'a>(all: &'a BTreeMap<String, Vec<PodPolicy>>, node: &str, pod: &str) -> &'a PodPolicy {
    all[node]
        .iter()
        .find(|p| p.pod_uid == format!("uid-{pod}"))
        .unwrap_or_else(|| panic!("{pod} on {node} has no entry: {all:?}"))
}

#[test]
fn without_policies_every_pod_has_an_entry_and_none_is_isolated() {
    let all = resolve(&world(&[]));
    assert_eq!(all["n1"].len(), 3, "web-1, db, legacy");
    assert_eq!(all["n2"].len(), 2, "web-2, client");
    for p in all.values().flatten() {
        assert_eq!((&p.ingress, &p.egress), (&None, &None), "{p:?}");
    }
}

#[test]
fn a_pod_without_an_address_yet_is_covered_but_no_peer() {
    let mut w = world(&[policy(
        "prod",
        "db",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    )]);
    let mut fresh = pod("prod", "web-3", json!({"app": "web"}), "", "n2");
    fresh["status"] = json!({"phase": "Pending"});
    assert!(w.apply(Source::Pod, false, &fresh));
    let all = resolve(&w);
    assert_eq!(
        on(&all, "n2", "web-3").ingress,
        None,
        "covered, not isolated"
    );
    let rule = &on(&all, "n1", "db").ingress.as_ref().unwrap()[0];
    assert_eq!(
        hosts(rule),
        ["10.244.1.2/32", "10.244.2.2/32"],
        "no address, no peer"
    );
    // Unbound pods are nobody's.
    let mut unbound = pod("prod", "web-4", json!({"app": "web"}), "", "n2");
    unbound["spec"]["nodeName"] = Value::Null;
    w.apply(Source::Pod, false, &unbound);
    assert!(
        !resolve(&w)
            .values()
            .flatten()
            .any(|p| p.pod_uid == "uid-web-4")
    );
}

#[test]
fn default_deny_isolates_every_selected_pod_on_every_node() {
    let deny = policy(
        "prod",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress"]}),
    );
    let all = resolve(&world(&[deny]));
    for (node, pod) in [
        ("n1", "web-1"),
        ("n2", "web-2"),
        ("n1", "db"),
        ("n1", "legacy"),
    ] {
        let p = on(&all, node, pod);
        assert_eq!(p.ingress, Some(vec![]), "{pod}: deny all ingress");
        assert_eq!(p.egress, None, "{pod}: egress not isolated");
    }
    assert_eq!(
        on(&all, "n2", "client").ingress,
        None,
        "another namespace's pod is not selected"
    );
}

#[test]
fn pod_and_namespace_selectors_become_the_selected_pods_addresses() {
    let p = policy(
        "prod",
        "db-from-web",
        json!({
            "podSelector": {"matchLabels": {"app": "db"}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [{"podSelector": {"matchLabels": {"app": "web"}}}], "ports": [{"port": 5432}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "b"}}}]},
                {"from": [{"namespaceSelector": {"matchLabels": {"team": "a"}},
                           "podSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["web"]}]}}]}
            ]
        }),
    );
    let all = resolve(&world(&[p]));
    let db = on(&all, "n1", "db");
    let rules = db.ingress.as_ref().unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(hosts(&rules[0]), ["10.244.1.2/32", "10.244.2.2/32"]);
    assert_eq!(
        rules[0].ports,
        Some(vec![PortRange {
            protocol: proto::Protocol::Tcp,
            first: 5432,
            last: 5432
        }])
    );
    assert_eq!(hosts(&rules[1]), ["10.244.2.3/32"], "namespace tools");
    assert_eq!(rules[1].ports, None, "no ports: all");
    assert_eq!(hosts(&rules[2]), ["10.244.1.2/32", "10.244.2.2/32"]);
    let isolated = all.values().flatten().filter(|p| p.ingress.is_some());
    assert_eq!(isolated.count(), 1, "only db is selected: {all:?}");
}

#[test]
fn ip_blocks_ranges_and_named_ports() {
    let p = policy(
        "prod",
        "web",
        json!({
            "podSelector": {"matchLabels": {"app": "web"}},
            "policyTypes": ["Ingress", "Egress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.244.9.0/24"]}}],
                         "ports": [{"port": "http"}, {"port": 9000, "endPort": 9010}]}],
            "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "db"}}}],
                        "ports": [{"port": "dns", "protocol": "UDP"}]},
                       {"ports": [{"port": 53, "protocol": "UDP"}]}]
        }),
    );
    let all = resolve(&world(&[p]));
    let web = on(&all, "n2", "web-2");
    let ingress = web.ingress.as_ref().unwrap();
    // Numeric ports first, then the pod's own named port.
    assert_eq!(ingress.len(), 2);
    let block = &ingress[0].peers.as_ref().unwrap()[0];
    assert_eq!((block.cidr.addr, block.cidr.prefix), (ip("10.0.0.0"), 8));
    assert_eq!(block.except[0].addr, ip("10.244.9.0"));
    assert_eq!(ingress[0].ports.as_ref().unwrap()[0].last, 9010);
    assert_eq!(ingress[1].ports.as_ref().unwrap()[0].first, 8080, "http");
    let egress = web.egress.as_ref().unwrap();
    // The db pod's "dns" port, for the db pod only; then UDP 53 anywhere.
    assert_eq!(hosts(&egress[0]), ["10.244.1.3/32"]);
    assert_eq!(
        egress[0].ports,
        Some(vec![PortRange {
            protocol: proto::Protocol::Udp,
            first: 5353,
            last: 5353
        }])
    );
    assert_eq!(egress[1].peers, None);
}

#[test]
fn policies_add_up_and_follow_pod_changes() {
    let a = policy(
        "prod",
        "a",
        json!({"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"],
               "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "web"}}}]}]}),
    );
    let b = policy(
        "prod",
        "b",
        json!({"podSelector": {}, "policyTypes": ["Egress"]}),
    );
    let mut w = world(&[a, b]);
    let all = resolve(&w);
    let db = on(&all, "n1", "db");
    assert_eq!(db.ingress.as_ref().unwrap().len(), 1);
    assert_eq!(db.egress, Some(vec![]), "b isolates egress");

    // A new web replica is allowed at once; a deleted one no longer.
    assert!(w.apply(
        Source::Pod,
        false,
        &pod("prod", "web-3", json!({"app": "web"}), "10.244.1.9", "n1")
    ));
    assert!(w.apply(
        Source::Pod,
        true,
        &json!({"metadata": {"namespace": "prod", "name": "web-1"}})
    ));
    let all = resolve(&w);
    let rule = &on(&all, "n1", "db").ingress.as_ref().unwrap()[0];
    assert_eq!(hosts(rule), ["10.244.1.9/32", "10.244.2.2/32"]);

    // A status change that moves nothing that matters is no change.
    let mut same = pod("prod", "web-3", json!({"app": "web"}), "10.244.1.9", "n1");
    same["status"]["conditions"] = json!([{"type": "Ready", "status": "True"}]);
    assert!(!w.apply(Source::Pod, false, &same));
    // A finished pod is no peer.
    same["status"]["phase"] = json!("Succeeded");
    assert!(w.apply(Source::Pod, false, &same));
}

#[test]
fn an_oversized_set_fails_closed() {
    let journal = crate::journal::Journal::new(true);
    let big = PolicyRule {
        peers: Some(vec![
            host(Ipv4Addr::new(10, 1, 2, 3));
            POLICY_FRAME_BUDGET / 4
        ]),
        ports: None,
    };
    let mut pods = vec![PodPolicy {
        pod_uid: "uid-web-1".into(),
        ingress: Some(vec![big]),
        egress: None,
    }];
    fit("n1", &mut pods, &journal);
    assert_eq!(pods[0].ingress, Some(vec![]), "deny all, not allow all");
    assert_eq!(pods[0].egress, None);
}
