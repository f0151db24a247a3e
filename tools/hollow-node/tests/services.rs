//! The gateway's Service sync over the node protocol: a node session gets
//! the cluster's Services with their EndpointSlices as one full state, then
//! deltas as endpoints change and Services go.

mod common;

use std::time::{Duration, Instant};

use common::Cluster;
use skiff_gateway::wire::{read_frame, write_frame};
use skiff_node_proto::{self as proto, Capabilities, MAX_FRAME, NodeToPlane, PlaneToNode};
use tokio::io::{AsyncRead, AsyncWrite};

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      nodeName: hn-svc
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: registry.local/web:1
        ports:
        - {name: http, containerPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
---
apiVersion: v1
kind: Service
metadata:
  name: ext
  namespace: default
spec:
  type: ExternalName
  externalName: example.com
";

/// A node session by hand for `name` (bootstrap, mutual TLS, Hello,
/// Register) speaking `version`.
fn session(
    c: &Cluster,
    name: &str,
    version: u16,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let creds = c.bootstrap(name, &c.token.clone()).unwrap();
    let cfg = c.fleet_cfg.node(name, 7);
    let client =
        skiff_hollow_node::identity::node_config(&cfg.ca, creds.chain.clone(), &creds.key).unwrap();
    c.rt.block_on(async {
        let mut s = skiff_hollow_node::node::tls(&cfg, client).await.unwrap();
        let hello = NodeToPlane::Hello(proto::Hello {
            min_version: proto::MIN_PROTOCOL_VERSION,
            max_version: version,
            node_name: name.into(),
            capabilities: Capabilities::NONE,
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
    })
}

/// The next Service message within `secs` (others skipped).
async fn next_service_msg<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    secs: u64,
) -> Option<PlaneToNode> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        let m = tokio::time::timeout(left, read_frame::<PlaneToNode, _>(s, MAX_FRAME))
            .await
            .ok()?
            .unwrap();
        if matches!(
            m,
            PlaneToNode::Services { .. } | PlaneToNode::ServiceDelta { .. }
        ) {
            return Some(m);
        }
    }
}

fn web(services: &[proto::Service]) -> Option<&proto::Service> {
    services
        .iter()
        .find(|s| s.namespace == "default" && s.name == "web")
}

fn ready(s: &proto::Service) -> usize {
    s.slices
        .iter()
        .flat_map(|x| &x.endpoints)
        .filter(|e| e.ready)
        .count()
}

#[test]
fn services_reach_nodes_as_full_state_then_deltas() {
    let mut c = Cluster::start(|g| g.node_grace = Duration::from_secs(120));
    c.start_control_loops();
    c.start_node("hn-svc", 0);
    c.wait_output(&["get", "nodes"], "hn-svc   Ready", 20);
    let f = c.write("web.yaml", DEPLOYMENT);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    c.wait_output(
        &[
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={.items[*].endpoints[*].conditions.ready}",
        ],
        "true true",
        30,
    );
    let vip = c.ok(&["get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}"]);

    // A node speaking version 2 gets no Service messages.
    let mut old = session(&c, "hn-old", 2);
    assert!(
        c.rt.block_on(next_service_msg(&mut old, 2)).is_none(),
        "a version-2 node was sent Services"
    );
    drop(old);

    let mut s = session(&c, "hn-watch", proto::PROTOCOL_VERSION);
    // The full state (maybe in parts), with the Deployment's endpoints.
    let mut all = Vec::new();
    let mut at;
    loop {
        match c.rt.block_on(next_service_msg(&mut s, 20)) {
            Some(PlaneToNode::Services {
                generation,
                services,
                more,
            }) => {
                at = generation;
                all.extend(services);
                if !more {
                    break;
                }
            }
            other => panic!("expected the full Service state first, got {other:?}"),
        }
    }
    let w = web(&all).expect("default/web in the full state");
    assert_eq!(w.cluster_ips, vec![vip.clone()]);
    assert_eq!(w.ports[0].name, "http");
    assert_eq!(w.ports[0].port, 80);
    assert_eq!(
        w.ports[0].target_port,
        proto::TargetPort::Name("http".into())
    );
    assert_eq!(ready(w), 2, "{w:?}");
    let slice = &w.slices[0];
    assert_eq!(slice.ports[0].port, 8080);
    assert!(
        slice
            .endpoints
            .iter()
            .all(|e| e.node_name.as_deref() == Some("hn-svc"))
    );
    let ext = all.iter().find(|s| s.name == "ext").expect("default/ext");
    assert_eq!(ext.kind, proto::ServiceKind::ExternalName);
    assert_eq!(ext.external_name.as_deref(), Some("example.com"));

    // Scaled down: one endpoint stops being ready, as a delta.
    c.ok(&["scale", "deployment", "web", "--replicas=1"]);
    let mut seen_fewer = false;
    while !seen_fewer {
        match c.rt.block_on(next_service_msg(&mut s, 30)) {
            Some(PlaneToNode::ServiceDelta {
                from_generation,
                generation,
                upserts,
                ..
            }) => {
                assert_eq!(from_generation, at, "deltas follow on");
                at = generation;
                if let Some(w) = web(&upserts) {
                    seen_fewer = ready(w) == 1;
                }
            }
            other => panic!("expected a delta, got {other:?}"),
        }
    }

    // Deleted: removed by a delta.
    c.ok(&["delete", "service", "web"]);
    loop {
        match c.rt.block_on(next_service_msg(&mut s, 30)) {
            Some(PlaneToNode::ServiceDelta {
                from_generation,
                generation,
                removes,
                ..
            }) => {
                assert_eq!(from_generation, at, "deltas follow on");
                at = generation;
                if removes
                    .iter()
                    .any(|r| r.namespace == "default" && r.name == "web")
                {
                    break;
                }
            }
            other => panic!("expected a delta, got {other:?}"),
        }
    }

    // A node that lost track asks again and gets the full state, now
    // without the Service.
    c.rt.block_on(write_frame(
        &mut s,
        &NodeToPlane::ServiceResyncRequest { have: 0 },
        MAX_FRAME,
    ))
    .unwrap();
    let mut again = Vec::new();
    loop {
        match c.rt.block_on(next_service_msg(&mut s, 20)) {
            Some(PlaneToNode::Services {
                generation,
                services,
                more,
            }) => {
                assert!(generation >= at);
                again.extend(services);
                if !more {
                    break;
                }
            }
            // Deltas in flight before the resync are fine.
            Some(PlaneToNode::ServiceDelta { generation, .. }) => at = generation,
            other => panic!("expected the full state, got {other:?}"),
        }
    }
    assert!(web(&again).is_none());
    assert!(again.iter().any(|s| s.name == "ext"));
}
