//! Bootstrap tokens and node credentials (issue 14 items 4 and 10): token
//! Secrets created with kubectl, hollow nodes and bare bootstraps against
//! an in-process control plane.

mod common;

use skiff_node_proto::RefusalReason;
use std::time::Duration;

use common::Cluster;

/// Creates `bootstrap-token-<id>` in kube-system with kubectl; `extra` are
/// further `key=value` data.
fn token_secret(c: &Cluster, id: &str, secret: &str, expiration: &str, extra: &[&str]) -> String {
    let mut args = vec![
        "-n".to_string(),
        "kube-system".into(),
        "create".into(),
        "secret".into(),
        "generic".into(),
        format!("bootstrap-token-{id}"),
        "--type=bootstrap.kubernetes.io/token".into(),
        format!("--from-literal=token-id={id}"),
        format!("--from-literal=token-secret={secret}"),
        "--from-literal=usage-bootstrap-authentication=true".into(),
        format!("--from-literal=expiration={expiration}"),
    ];
    args.extend(extra.iter().map(|kv| format!("--from-literal={kv}")));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.ok(&args);
    format!("{id}.{secret}")
}

fn secret_field(c: &Cluster, id: &str, key: &str) -> String {
    c.ok(&[
        "-n",
        "kube-system",
        "get",
        "secret",
        &format!("bootstrap-token-{id}"),
        "-o",
        &format!("jsonpath={{.data.{key}}}"),
    ])
}

const FUTURE: &str = "2100-01-01T00:00:00Z";

/// No token secret in the gateway's journal.
fn assert_not_logged(c: &Cluster, secrets: &[&str]) {
    for line in c.journal() {
        for s in secrets {
            assert!(!line.contains(s), "token secret logged: {line}");
        }
    }
}

#[test]
fn token_secrets_bind_their_node_expire_and_are_used_once() {
    let c = Cluster::start(|_| {});
    // Unbound: the first certificate binds it to that node.
    let t1 = token_secret(&c, "aaaaaa", "0123456789aaaaaa", FUTURE, &[]);
    c.bootstrap("hn-a", &t1).expect("first use");
    // base64("hn-a")
    assert_eq!(secret_field(&c, "aaaaaa", "skiff-node-name"), "aG4tYQ==");
    let e = c.bootstrap("hn-b", &t1).err().expect("bound to hn-a");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::Forbidden, m)) if m.contains("bound")),
        "{e}"
    );
    c.bootstrap("hn-a", &t1)
        .expect("its own node may bootstrap again");

    // Named by the Secret.
    let t2 = token_secret(
        &c,
        "bbbbbb",
        "0123456789bbbbbb",
        FUTURE,
        &["skiff-node-name=hn-d"],
    );
    let e = c.bootstrap("hn-e", &t2).err().expect("named for hn-d");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::Forbidden, _))),
        "{e}"
    );
    c.bootstrap("hn-d", &t2).expect("named node");

    // Single use: the Secret goes with its certificate.
    let t3 = token_secret(
        &c,
        "cccccc",
        "0123456789cccccc",
        FUTURE,
        &["skiff-single-use=true"],
    );
    c.bootstrap("hn-s", &t3).expect("single use, first");
    let e = c.bootstrap("hn-s", &t3).err().expect("used up");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::BadToken, _))),
        "{e}"
    );
    let gone = c.kubectl_as(
        &c.kubeconfig,
        &[
            "-n",
            "kube-system",
            "get",
            "secret",
            "bootstrap-token-cccccc",
        ],
    );
    assert!(!gone.status.success(), "single-use Secret still there");

    // Expired, wrong secret, not for authentication, deleted.
    let t4 = token_secret(
        &c,
        "dddddd",
        "0123456789dddddd",
        "2001-01-01T00:00:00Z",
        &[],
    );
    let e = c.bootstrap("hn-x", &t4).err().expect("expired");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::BadToken, _))),
        "{e}"
    );
    let e = c
        .bootstrap("hn-a", "aaaaaa.0123456789aaaaab")
        .err()
        .expect("wrong secret");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::BadToken, _))),
        "{e}"
    );
    c.ok(&[
        "-n",
        "kube-system",
        "delete",
        "secret",
        "bootstrap-token-aaaaaa",
    ]);
    let e = c.bootstrap("hn-a", &t1).err().expect("deleted");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::BadToken, _))),
        "{e}"
    );

    assert!(
        c.journal()
            .iter()
            .any(|l| l.contains("\"aaaaaa\"") && l.contains("bound to node \"hn-a\"")),
        "{:?}",
        c.journal()
    );
    let (_, fleet_secret) = c.token.split_once('.').unwrap();
    assert_not_logged(
        &c,
        &[
            "0123456789aaaaa",
            "0123456789bbbbb",
            "0123456789ccccc",
            "0123456789ddddd",
            fleet_secret,
        ],
    );
}

#[test]
fn a_live_node_cannot_be_bootstrapped_again() {
    let mut c = Cluster::start(|_| {});
    c.start_node("hn-live", 1);
    c.wait_output(&["get", "nodes"], "hn-live   Ready", 20);
    let e = c
        .bootstrap("hn-live", &c.token.clone())
        .err()
        .expect("impostor refused");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::Forbidden, m)) if m.contains("live session")),
        "{e}"
    );
    assert!(
        c.journal()
            .iter()
            .any(|l| l.contains("hn-live") && l.contains("live session")),
        "{:?}",
        c.journal()
    );
    // Once the node is gone, its name may bootstrap again.
    c.stop_node("hn-live");
    c.eventually("the session to close", 10, || {
        c.bootstrap("hn-live", &c.token.clone()).is_ok()
    });
    let (_, secret) = c.token.split_once('.').unwrap();
    assert_not_logged(&c, &[secret]);
}

/// The node runs the kernel's agent, which bootstraps again when its
/// certificate is refused: a single-use token Secret (the production path)
/// keeps it out after that; a still-valid multi-use token would let it back
/// in (docs/SECURITY.md: revoking a node also deletes its token).
#[test]
fn a_deleted_node_is_cut_off_and_its_certificate_does_not_bring_it_back() {
    let mut c = Cluster::start(|_| {});
    let t = token_secret(
        &c,
        "dddddd",
        "0123456789dddddd",
        FUTURE,
        &["skiff-single-use=true"],
    );
    let ca = c.dir.path().join("pki").join(skiff_apiserver::pki::CA_CERT);
    c.fleet_cfg = skiff_hollow_node::FleetConfig::new(c.gateway_addr, &ca, &t).unwrap();
    c.start_node("hn-del", 2);
    c.wait_output(&["get", "nodes"], "hn-del   Ready", 20);
    c.ok(&["delete", "node", "hn-del"]);
    c.eventually("the session closed", 10, || {
        c.journal()
            .iter()
            .any(|l| l.contains("hn-del") && l.contains("revoked: Node hn-del was deleted"))
    });
    c.eventually("its certificate refused", 10, || {
        c.journal()
            .iter()
            .any(|l| l.contains("hn-del") && l.contains("a node certificate alone does not"))
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !c.ok(&["get", "nodes"]).contains("hn-del"),
        "hn-del is back"
    );
}

#[test]
fn renewal_is_refused_for_a_deleted_node() {
    // Rotation due within seconds; the revocation sweep slower than that.
    let mut c = Cluster::start(|g| {
        g.cert_validity = Duration::from_secs(4);
        g.node_grace = Duration::from_secs(60);
    });
    c.start_node("hn-rot", 3);
    c.wait_output(&["get", "nodes"], "hn-rot   Ready", 20);
    c.ok(&["delete", "node", "hn-rot"]);
    c.eventually("renewal refused", 15, || {
        c.journal().iter().any(|l| {
            l.contains("hn-rot")
                && l.contains("certificate renewal refused: Node hn-rot was deleted")
        })
    });
}

/// Fleet tokens (`bootstrap-tokens.csv`, multi-use, unbound) are a test and
/// lab path: every start says so loudly. Such a token joins several new
/// nodes; bound Secrets are the production path (tests above).
#[test]
fn fleet_tokens_are_announced_loudly_and_join_many_nodes() {
    let mut c = Cluster::start(|_| {});
    let warning = c
        .journal()
        .into_iter()
        .find(|l| l.starts_with("WARNING: 1 fleet bootstrap token(s)"))
        .expect("no start-up warning about fleet tokens");
    assert!(warning.contains("bootstrap-tokens.csv"), "{warning}");
    assert!(warning.contains("bound to no node name"), "{warning}");
    let (_, secret) = c.token.split_once('.').unwrap();
    assert!(!warning.contains(secret), "{warning}");
    c.start_node("hn-fleet-a", 1);
    c.start_node("hn-fleet-b", 2);
    c.wait_output(&["get", "nodes"], "hn-fleet-a   Ready", 20);
    c.wait_output(&["get", "nodes"], "hn-fleet-b   Ready", 20);
}

/// Which deletion revokes what (as in kube): deleting a node's bootstrap
/// token Secret stops new bootstraps with it but not the node it already
/// admitted, which keeps rotating its certificate; deleting the Node
/// revokes the node (see the tests above).
#[test]
fn deleting_the_token_secret_stops_bootstraps_not_the_node_it_admitted() {
    let mut c = Cluster::start(|g| g.cert_validity = Duration::from_secs(4));
    let t = token_secret(&c, "eeeeee", "0123456789eeeeee", FUTURE, &[]);
    let ca = c.dir.path().join("pki").join(skiff_apiserver::pki::CA_CERT);
    c.fleet_cfg = skiff_hollow_node::FleetConfig::new(c.gateway_addr, &ca, &t).unwrap();
    c.start_node("hn-tok", 4);
    c.wait_output(&["get", "nodes"], "hn-tok   Ready", 20);
    c.ok(&[
        "-n",
        "kube-system",
        "delete",
        "secret",
        "bootstrap-token-eeeeee",
    ]);
    let rotations = || {
        c.journal()
            .iter()
            .filter(|l| l.contains("hn-tok") && l.contains("rotated its certificate"))
            .count()
    };
    let before = rotations();
    c.eventually("a rotation after the Secret was deleted", 15, || {
        rotations() > before
    });
    assert!(c.ok(&["get", "nodes"]).contains("hn-tok   Ready"));
    let e = c.bootstrap("hn-new", &t).err().expect("token deleted");
    assert!(
        matches!(e.refusal(), Some((RefusalReason::BadToken, _))),
        "{e}"
    );
}
