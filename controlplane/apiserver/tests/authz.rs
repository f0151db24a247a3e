//! Authentication and authorization through real kubectl: RBAC-bound users,
//! node identities, and bad or expired tokens.

mod common;

use common::{Cluster, contains_all, fails, succeeds};

const RBAC: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: team
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: cm-reader
  namespace: team
rules:
- apiGroups: [\"\"]
  resources: [\"configmaps\"]
  verbs: [\"get\", \"list\", \"watch\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: alice-reads
  namespace: team
subjects:
- kind: User
  name: alice
  apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: Role
  name: cm-reader
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: pod-viewer
aggregationRule:
  clusterRoleSelectors:
  - matchLabels:
      skiff.dev/aggregate-to-pod-viewer: \"true\"
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: pod-lister
  labels:
    skiff.dev/aggregate-to-pod-viewer: \"true\"
rules:
- apiGroups: [\"\"]
  resources: [\"pods\"]
  verbs: [\"list\"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: devs-view-pods
  namespace: team
subjects:
- kind: Group
  name: devs
  apiGroup: rbac.authorization.k8s.io
roleRef:
  kind: ClusterRole
  name: pod-viewer
  apiGroup: rbac.authorization.k8s.io
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: shared
  namespace: team
data:
  a: b
";

#[test]
fn a_role_grants_exactly_what_it_says() {
    let c = Cluster::start();
    let f = c.write("rbac.yaml", RBAC);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let alice = c.cert_kubeconfig("alice", &["devs"]);
    let run = |args: &[&str]| c.kubectl_as(&alice, args);

    let out = succeeds(run(&["get", "cm", "-n", "team"]), &["get cm"]);
    contains_all(&out, &["shared"]);
    succeeds(
        run(&["get", "cm", "shared", "-n", "team", "-o", "yaml"]),
        &["get cm shared"],
    );
    // Aggregated ClusterRole through a Group binding.
    succeeds(run(&["get", "pods", "-n", "team"]), &["get pods"]);

    let err = fails(
        run(&["create", "cm", "x", "-n", "team", "--from-literal=a=b"]),
        &["create cm"],
    );
    contains_all(
        &err,
        &[
            "forbidden",
            "User \"alice\" cannot create resource \"configmaps\"",
            "in the namespace \"team\"",
        ],
    );
    let err = fails(run(&["get", "cm", "-n", "default"]), &["get cm default"]);
    contains_all(&err, &["Forbidden", "cannot list resource \"configmaps\""]);
    let err = fails(run(&["get", "secrets", "-n", "team"]), &["get secrets"]);
    contains_all(&err, &["Forbidden"]);
    let err = fails(run(&["delete", "cm", "shared", "-n", "team"]), &["delete"]);
    contains_all(&err, &["Forbidden"]);
    let err = fails(run(&["get", "pods", "-n", "default"]), &["pods default"]);
    contains_all(&err, &["Forbidden"]);

    let can = |args: &[&str]| {
        String::from_utf8_lossy(&run(args).stdout)
            .trim()
            .to_string()
    };
    assert_eq!(
        can(&["auth", "can-i", "list", "configmaps", "-n", "team"]),
        "yes"
    );
    assert_eq!(
        can(&["auth", "can-i", "delete", "configmaps", "-n", "team"]),
        "no"
    );
    assert_eq!(can(&["auth", "can-i", "list", "pods", "-n", "team"]), "yes");
    assert_eq!(
        can(&["auth", "can-i", "list", "configmaps", "-n", "default"]),
        "no"
    );
    // kube's default roles exist and aggregate: binding "view" lets bob read
    // deployments but not change them or read secrets.
    let out = c.ok(&["get", "clusterroles"]);
    contains_all(
        &out,
        &[
            "cluster-admin",
            "admin",
            "edit",
            "view",
            "system:aggregate-to-view",
        ],
    );
    c.ok(&[
        "create",
        "rolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
        "-n",
        "team",
    ]);
    let bob = c.cert_kubeconfig("bob", &[]);
    succeeds(
        c.kubectl_as(&bob, &["get", "deploy,cm,pods", "-n", "team"]),
        &["bob view"],
    );
    contains_all(
        &fails(
            c.kubectl_as(&bob, &["get", "secrets", "-n", "team"]),
            &["bob secrets"],
        ),
        &["Forbidden"],
    );
    contains_all(
        &fails(
            c.kubectl_as(&bob, &["delete", "cm", "shared", "-n", "team"]),
            &["bob delete"],
        ),
        &["Forbidden"],
    );

    let list = String::from_utf8_lossy(&run(&["auth", "can-i", "--list", "-n", "team"]).stdout)
        .into_owned();
    contains_all(
        &list,
        &[
            "Resources",
            "configmaps",
            "[get list watch]",
            "pods",
            "[list]",
        ],
    );
    assert!(!list.contains("secrets"), "{list}");

    // Nothing changed behind the refusals.
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "shared",
            "-n",
            "team",
            "-o",
            "jsonpath={.data.a}"
        ]),
        "b"
    );
}

const NODE_PODS: &str = "apiVersion: v1
kind: Node
metadata: {name: n1}
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: v1
kind: Secret
metadata: {name: s1, namespace: default}
stringData: {k: one}
---
apiVersion: v1
kind: Secret
metadata: {name: s2, namespace: default}
stringData: {k: two}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: default}
spec:
  nodeName: n1
  containers: [{name: c, image: app:1, env: [{name: K, valueFrom: {secretKeyRef: {name: s1, key: k}}}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: default}
spec:
  nodeName: n2
  volumes: [{name: v, secret: {secretName: s2}}]
  containers: [{name: c, image: app:1}]
";

#[test]
fn a_node_sees_only_its_own_pods_and_their_secrets() {
    let c = Cluster::start();
    let f = c.write("pods.yaml", NODE_PODS);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let n1 = c.cert_kubeconfig("system:node:n1", &["system:nodes"]);
    let run = |args: &[&str]| c.kubectl_as(&n1, args);

    contains_all(
        &succeeds(run(&["get", "pod", "p1", "-o", "wide"]), &["p1"]),
        &["p1", "n1"],
    );
    assert_eq!(
        succeeds(
            run(&["get", "secret", "s1", "-o", "jsonpath={.data.k}"]),
            &["s1"]
        ),
        "b25l"
    );
    let out = succeeds(
        run(&["get", "pods", "-A", "--field-selector", "spec.nodeName=n1"]),
        &["list own"],
    );
    contains_all(&out, &["p1"]);
    assert!(!out.contains("p2"), "{out}");

    contains_all(&fails(run(&["get", "pod", "p2"]), &["p2"]), &["Forbidden"]);
    contains_all(
        &fails(run(&["get", "secret", "s2"]), &["s2"]),
        &["Forbidden"],
    );
    contains_all(
        &fails(run(&["get", "pods", "-A"]), &["all pods"]),
        &["Forbidden"],
    );
    contains_all(
        &fails(run(&["get", "secrets"]), &["list secrets"]),
        &["Forbidden"],
    );
    contains_all(
        &fails(run(&["delete", "pod", "p2"]), &["delete p2"]),
        &["Forbidden"],
    );
    contains_all(
        &fails(run(&["label", "node", "n2", "x=y"]), &["label n2"]),
        &["Forbidden"],
    );
    // Its own Node and pod status are writable; another node's, or a pod's
    // spec, are not.
    contains_all(
        &succeeds(run(&["label", "node", "n1", "ready=yes"]), &["label n1"]),
        &["node/n1 labeled"],
    );
    succeeds(
        run(&[
            "patch",
            "pod",
            "p1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ]),
        &["own pod status"],
    );
    contains_all(
        &fails(run(&["label", "pod", "p1", "x=y"]), &["pod spec"]),
        &["Forbidden"],
    );
    let other = c.write(
        "n3.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n3}\n",
    );
    contains_all(
        &fails(
            run(&["create", "-f", other.to_str().unwrap()]),
            &["create n3"],
        ),
        &["Forbidden", "not allowed to create nodes \"n3\""],
    );
    assert_eq!(
        c.ok(&["get", "pod", "p1", "-o", "jsonpath={.status.phase}"]),
        "Running"
    );
}

#[test]
fn tokens_and_anonymous_requests() {
    let c = Cluster::start_with(|pki| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(pki.join("tokens.csv"))
            .unwrap();
        use std::io::Write as _;
        writeln!(f, "viewer-token-0123456789,viewer,viewer-uid,\"viewers\"").unwrap();
        std::fs::write(
            pki.join("bootstrap-tokens.csv"),
            "abcdef,0123456789abcdef,99999999999\nexpire,0123456789abcdef,1\n",
        )
        .unwrap();
    });
    let admin_token = std::fs::read_to_string(c.pki_dir().join("tokens.csv")).unwrap();
    let admin_token = admin_token.split(',').next().unwrap().to_string();
    let good = c.token_kubeconfig("admin-token", &admin_token);
    contains_all(
        &succeeds(c.kubectl_as(&good, &["get", "ns"]), &["get ns"]),
        &["default"],
    );

    let wrong = c.token_kubeconfig("wrong", "not-a-token");
    contains_all(
        &fails(c.kubectl_as(&wrong, &["get", "ns"]), &["wrong"]),
        &["Unauthorized"],
    );
    let expired = c.token_kubeconfig("expired", "expire.0123456789abcdef");
    contains_all(
        &fails(c.kubectl_as(&expired, &["get", "ns"]), &["expired"]),
        &["Unauthorized"],
    );
    let bad_secret = c.token_kubeconfig("badsecret", "abcdef.0123456789abcdeX");
    contains_all(
        &fails(c.kubectl_as(&bad_secret, &["get", "ns"]), &["bad secret"]),
        &["Unauthorized"],
    );

    // A valid bootstrap token authenticates, and RBAC then decides.
    let boot = c.token_kubeconfig("boot", "abcdef.0123456789abcdef");
    let err = fails(
        c.kubectl_as(&boot, &["get", "secrets", "-n", "kube-system"]),
        &["boot"],
    );
    contains_all(&err, &["Forbidden", "system:bootstrap:abcdef"]);
    let viewer = c.token_kubeconfig("viewer", "viewer-token-0123456789");
    contains_all(
        &fails(c.kubectl_as(&viewer, &["get", "pods"]), &["viewer"]),
        &["Forbidden", "User \"viewer\""],
    );
    // Requests without any credentials are covered by tests/python.rs: kubectl
    // would prompt for a password instead of sending one.
}

#[test]
fn service_account_tokens() {
    let c = Cluster::start();
    let f = c.write("rbac.yaml", RBAC);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    contains_all(
        &c.ok(&["create", "sa", "robot", "-n", "team"]),
        &["serviceaccount/robot created"],
    );
    let token = c.ok(&["create", "token", "robot", "-n", "team"]);
    let token = token.trim();
    assert_eq!(token.matches('.').count(), 2, "a JWT: {token}");
    let robot = c.token_kubeconfig("robot", token);

    let err = fails(
        c.kubectl_as(&robot, &["get", "cm", "-n", "team"]),
        &["robot before"],
    );
    contains_all(&err, &["Forbidden", "system:serviceaccount:team:robot"]);
    c.ok(&[
        "create",
        "rolebinding",
        "robot-reads",
        "--role=cm-reader",
        "--serviceaccount=team:robot",
        "-n",
        "team",
    ]);
    contains_all(
        &succeeds(
            c.kubectl_as(&robot, &["get", "cm", "-n", "team"]),
            &["robot after"],
        ),
        &["shared"],
    );
    assert_eq!(
        String::from_utf8_lossy(
            &c.kubectl_as(
                &robot,
                &["auth", "can-i", "list", "configmaps", "-n", "team"]
            )
            .stdout
        )
        .trim(),
        "yes"
    );

    // A tampered token, or one whose account is gone, is refused.
    let mut tampered = token.to_string();
    tampered.insert(tampered.len() - 4, 'x');
    let bad = c.token_kubeconfig("tampered", &tampered);
    contains_all(
        &fails(
            c.kubectl_as(&bad, &["get", "cm", "-n", "team"]),
            &["tampered"],
        ),
        &["Unauthorized"],
    );
    c.ok(&["delete", "sa", "robot", "-n", "team"]);
    contains_all(
        &fails(
            c.kubectl_as(&robot, &["get", "cm", "-n", "team"]),
            &["deleted sa"],
        ),
        &["Unauthorized"],
    );
    // Re-created under the same name: a new uid, the old token stays dead.
    c.ok(&["create", "sa", "robot", "-n", "team"]);
    contains_all(
        &fails(
            c.kubectl_as(&robot, &["get", "cm", "-n", "team"]),
            &["recreated sa"],
        ),
        &["Unauthorized"],
    );
}
