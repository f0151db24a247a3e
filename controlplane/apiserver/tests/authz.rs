//! Authentication and authorization through real kubectl: RBAC-bound users,
//! node identities, and bad or expired tokens.

use std::path::Path;

use skiff_test_support::api::{ApiServer, contains_all, fails, succeeds};
use skiff_test_support::peers;

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
    let c = ApiServer::start();
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
    let c = ApiServer::start();
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
        &["Forbidden", "is not allowed to modify node \"n3\""],
    );
    assert_eq!(
        c.ok(&["get", "pod", "p1", "-o", "jsonpath={.status.phase}"]),
        "Running"
    );
}

#[test]
fn tokens_and_anonymous_requests() {
    let c = ApiServer::start_with(|pki| {
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
    let c = ApiServer::start();
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

    // `kubectl auth whoami` (SelfSubjectReview), 1.33 and 1.35: the
    // token's account, with its groups, even with no rights at all.
    for bin in [peers::kubectl(), peers::kubectl_latest()] {
        let me = succeeds(
            c.kubectl_bin_as(&bin, &robot, &["auth", "whoami", "-o", "json"]),
            &["whoami"],
        );
        let me: serde_json::Value = serde_json::from_str(&me).unwrap();
        let user = &me["status"]["userInfo"];
        assert_eq!(user["username"], "system:serviceaccount:team:robot", "{me}");
        let groups = user["groups"].to_string();
        contains_all(
            &groups,
            &["system:serviceaccounts:team", "system:authenticated"],
        );
    }
    contains_all(
        &c.ok(&["auth", "whoami"]),
        &["ATTRIBUTE", "Username", "Groups", "system:masters"],
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

/// A browser attaches its client certificate to requests any page makes:
/// the ones another site's page makes are refused before they do anything,
/// while the dashboard's own (same origin) and kubectl's (no Origin) pass.
#[test]
fn browser_requests_from_other_sites_are_refused() {
    let c = ApiServer::start();
    let cm = |name: &str| {
        format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#)
            .into_bytes()
    };
    let path = "/api/v1/namespaces/default/configmaps";
    for (name, headers) in [
        ("evil-origin", &[("origin", "https://evil.example")][..]),
        ("null-origin", &[("origin", "null")]),
        ("plain-http", &[("origin", "http://127.0.0.1")]),
        ("cross-site", &[("sec-fetch-site", "cross-site")]),
        (
            "same-site-other-port",
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://127.0.0.1:1"),
            ],
        ),
    ] {
        // No Content-Type: what a page may send another site unasked.
        let (code, _, body) = c.request_with_headers("POST", path, headers, cm(name));
        let body = String::from_utf8_lossy(&body);
        assert_eq!(code, 403, "{name}: {body}");
        assert!(body.contains("from another site"), "{name}: {body}");
        c.fails(&["get", "configmap", name]);
    }
    // Same origin (the dashboard's fetches) and user navigation pass.
    for (name, headers) in [
        (
            "same-origin",
            &[
                ("origin", "https://127.0.0.1"),
                ("sec-fetch-site", "same-origin"),
            ][..],
        ),
        ("navigation", &[("sec-fetch-site", "none")]),
        ("no-browser", &[]),
    ] {
        let (code, _, body) = c.request_with_headers("POST", path, headers, cm(name));
        assert_eq!(code, 201, "{name}: {}", String::from_utf8_lossy(&body));
    }
    // The dashboard's sign-in page loads from a link on any site.
    let (code, ct, _) = c.request_with_headers(
        "GET",
        "/ui/",
        &[("sec-fetch-site", "cross-site")],
        Vec::new(),
    );
    assert_eq!((code, ct.as_str()), (200, "text/html; charset=utf-8"));
}

/// kube's RBAC escalation rules (`pkg/registry/rbac/validation`,
/// `test/integration/auth/rbac_test.go`) through real kubectl, 1.33 and
/// 1.35, as a namespace admin with a client certificate: it cannot bind
/// cluster-admin, write a `*/*` Role (create, every patch type, apply),
/// or widen `view` through an aggregation label or rule; with `bind` and
/// `escalate` granted it can.
#[test]
fn rbac_escalation_needs_bind_or_escalate() {
    let c = ApiServer::start();
    for (bin, v) in [(peers::kubectl(), "133"), (peers::kubectl_latest(), "135")] {
        escalation_scenario(&c, &bin, v);
    }
}

fn escalation_scenario(c: &ApiServer, bin: &Path, v: &str) {
    let ns = format!("team{v}");
    let user = format!("alice{v}");
    c.ok(&["create", "namespace", &ns]);
    c.ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        &format!("--user={user}"),
        "-n",
        &ns,
    ]);
    let alice = c.cert_kubeconfig(&user, &["devs"]);
    let run = |args: &[&str]| c.kubectl_bin_as(bin, &alice, args);
    let refused = |args: &[&str]| {
        let err = fails(run(args), args);
        contains_all(&err, &["forbidden"]);
        err
    };
    let held = "is attempting to grant RBAC permissions not currently held";

    // A binding to what the admin holds in its namespace is fine; to
    // cluster-admin it is not.
    succeeds(
        run(&[
            "create",
            "rolebinding",
            "bob-view",
            "--clusterrole=view",
            "--user=bob",
            "-n",
            &ns,
        ]),
        &["bind view"],
    );
    let err = refused(&[
        "create",
        "rolebinding",
        "boss",
        "--clusterrole=cluster-admin",
        &format!("--user={user}"),
        "-n",
        &ns,
    ]);
    contains_all(
        &err,
        &[
            held,
            &format!("user \"{user}\""),
            r#"{APIGroups:["*"], Resources:["*"], Verbs:["*"]}"#,
        ],
    );
    let all_role = c.write(
        &format!("all{v}.yaml"),
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: all, namespace: {ns}}}\n\
             rules:\n- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['*']\n"
        ),
    );
    let all = all_role.to_str().unwrap();
    contains_all(&refused(&["create", "-f", all]), &[held]);
    contains_all(&refused(&["apply", "--server-side", "-f", all]), &[held]);
    // A Role it may write, then widened by every patch type and apply.
    succeeds(
        run(&[
            "create",
            "role",
            "pod-reader",
            "--verb=get",
            "--resource=pods",
            "-n",
            &ns,
        ]),
        &["create role"],
    );
    let wide = r#"{"apiGroups":["*"],"resources":["*"],"verbs":["*"]}"#;
    contains_all(
        &refused(&[
            "patch",
            "role",
            "pod-reader",
            "-n",
            &ns,
            "--type=json",
            "-p",
            &format!(r#"[{{"op":"add","path":"/rules/-","value":{wide}}}]"#),
        ]),
        &[held],
    );
    contains_all(
        &refused(&[
            "patch",
            "role",
            "pod-reader",
            "-n",
            &ns,
            "--type=merge",
            "-p",
            &format!(r#"{{"rules":[{wide}]}}"#),
        ]),
        &[held],
    );
    contains_all(
        &refused(&[
            "patch",
            "role",
            "pod-reader",
            "-n",
            &ns,
            "--type=strategic",
            "-p",
            &format!(r#"{{"rules":[{wide}]}}"#),
        ]),
        &[held],
    );
    let widened = c.write(
        &format!("widened{v}.yaml"),
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: pod-reader, namespace: {ns}}}\n\
             rules:\n- apiGroups: ['*']\n  resources: ['*']\n  verbs: ['*']\n"
        ),
    );
    let widened = widened.to_str().unwrap();
    contains_all(
        &refused(&["apply", "--server-side", "--force-conflicts", "-f", widened]),
        &[held],
    );
    contains_all(&refused(&["replace", "-f", widened]), &[held]);
    assert_eq!(
        c.ok(&[
            "get",
            "role",
            "pod-reader",
            "-n",
            &ns,
            "-o",
            "jsonpath={.rules[*].resources}"
        ]),
        r#"["pods"]"#
    );
    // A rolebinding's roleRef cannot be swapped afterwards.
    contains_all(
        &fails(
            run(&[
                "patch",
                "rolebinding",
                "bob-view",
                "-n",
                &ns,
                "--type=merge",
                "-p",
                r#"{"roleRef":{"name":"cluster-admin"}}"#,
            ]),
            &["swap roleRef"],
        ),
        &["cannot change roleRef"],
    );

    // Aggregation: a user who may write ClusterRoles still cannot widen
    // `view` through a label or an aggregation rule.
    let writer = format!("clusterrole-writer-{v}");
    c.ok(&[
        "create",
        "clusterrole",
        &writer,
        "--verb=get,list,create,update,patch",
        "--resource=clusterroles",
    ]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        &writer,
        &format!("--clusterrole={writer}"),
        &format!("--user={user}"),
    ]);
    let agg = "rbac.authorization.k8s.io/aggregate-to-view=true";
    contains_all(
        &refused(&["label", "clusterrole", "system:aggregate-to-edit", agg]),
        &[held, "secrets"],
    );
    let sneaky = c.write(
        &format!("sneaky{v}.yaml"),
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: sneaky{v}\n  labels: {{rbac.authorization.k8s.io/aggregate-to-view: 'true'}}\n\
             rules:\n- apiGroups: ['']\n  resources: ['secrets']\n  verbs: ['get', 'list']\n"
        ),
    );
    contains_all(
        &refused(&["create", "-f", sneaky.to_str().unwrap()]),
        &[held],
    );
    contains_all(
        &refused(&[
            "patch",
            "clusterrole",
            "view",
            "--type=merge",
            "-p",
            r#"{"aggregationRule":{"clusterRoleSelectors":[{"matchExpressions":[{"key":"kubernetes.io/bootstrapping","operator":"Exists"}]}]}}"#,
        ]),
        &["must have cluster-admin privileges to use the aggregationRule"],
    );
    let bob = c.cert_kubeconfig("bob", &[]);
    contains_all(
        &fails(
            c.kubectl_bin_as(bin, &bob, &["get", "secrets", "-n", &ns]),
            &["bob secrets"],
        ),
        &["Forbidden"],
    );

    // With `bind` on cluster-admin and `escalate` on roles in its namespace
    // (and on ClusterRoles cluster-wide) the same requests pass.
    let grant = c.write(
        &format!("grant{v}.yaml"),
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: binder{v}}}\n\
             rules:\n- apiGroups: [rbac.authorization.k8s.io]\n  resources: [clusterroles]\n  verbs: [bind]\n  resourceNames: [cluster-admin]\n\
             - apiGroups: [rbac.authorization.k8s.io]\n  resources: [roles, clusterroles]\n  verbs: [escalate]\n"
        ),
    );
    c.ok(&["apply", "-f", grant.to_str().unwrap()]);
    c.ok(&[
        "create",
        "rolebinding",
        "alice-binder",
        &format!("--clusterrole=binder{v}"),
        &format!("--user={user}"),
        "-n",
        &ns,
    ]);
    succeeds(
        run(&[
            "create",
            "rolebinding",
            "boss",
            "--clusterrole=cluster-admin",
            &format!("--user={user}"),
            "-n",
            &ns,
        ]),
        &["bind with bind"],
    );
    // (now an admin of everything in its namespace through cluster-admin)
    succeeds(run(&["create", "-f", all]), &["*/* role with escalate"]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        &format!("alice-escalate-{v}"),
        &format!("--clusterrole=binder{v}"),
        &format!("--user={user}"),
    ]);
    succeeds(
        run(&["create", "-f", sneaky.to_str().unwrap()]),
        &["aggregate with escalate"],
    );
    c.ok(&["delete", "clusterrole", &format!("sneaky{v}")]);
}

const EXPR_AGGREGATION: &str = "apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: by-expression}
aggregationRule:
  clusterRoleSelectors:
  - matchExpressions:
    - {key: skiff.dev/part, operator: In, values: ['yes']}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: part-yes
  labels: {skiff.dev/part: 'yes'}
rules:
- apiGroups: ['']
  resources: [configmaps]
  verbs: [get, list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: part-no
  labels: {skiff.dev/part: 'no'}
rules:
- apiGroups: ['']
  resources: [secrets]
  verbs: [get, list]
";

/// Aggregation selectors honour matchExpressions (they used to match every
/// ClusterRole, cluster-admin included), and a malformed one is refused.
#[test]
fn aggregation_selects_by_expression() {
    let c = ApiServer::start();
    let f = c.write("agg.yaml", EXPR_AGGREGATION);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    c.ok(&[
        "create",
        "rolebinding",
        "carol",
        "--clusterrole=by-expression",
        "--user=carol",
        "-n",
        "default",
    ]);
    let carol = c.cert_kubeconfig("carol", &[]);
    succeeds(
        c.kubectl_as(&carol, &["get", "cm", "-n", "default"]),
        &["carol cm"],
    );
    for args in [
        &["get", "secrets", "-n", "default"][..],
        &["get", "pods", "-n", "default"],
        &["create", "cm", "x", "-n", "default"],
    ] {
        contains_all(
            &fails(c.kubectl_as(&carol, args), args).to_lowercase(),
            &["forbidden"],
        );
    }
    let bad = c.write(
        "bad-agg.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: bad}\n\
         aggregationRule:\n  clusterRoleSelectors:\n  - matchExpressions:\n    - {key: a, operator: Gt, values: ['1']}\n",
    );
    contains_all(
        &c.fails(&["create", "-f", bad.to_str().unwrap()]),
        &["Invalid", "aggregationRule"],
    );
}

const NODE_OBJECTS: &str = "apiVersion: v1
kind: Node
metadata: {name: n1, labels: {node-role.kubernetes.io/control-plane: ''}}
spec:
  taints: [{key: dedicated, value: infra, effect: NoSchedule}]
---
apiVersion: v1
kind: Node
metadata: {name: n2}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: n2, namespace: kube-node-lease}
spec: {holderIdentity: n2}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, namespace: default}
spec:
  nodeName: n1
  containers: [{name: c, image: app:1}]
---
apiVersion: v1
kind: Pod
metadata: {name: p2, namespace: default}
spec:
  nodeName: n2
  containers: [{name: c, image: app:1}]
";

/// kube's NodeRestriction in the API server, through kubectl with a node
/// certificate (every write path: label, taint, json/merge patch,
/// server-side apply, status, delete, create): its own Node only, without
/// restricted labels or taint changes; its own Lease; status of its own
/// pods; nothing of another node.
#[test]
fn node_restriction_in_the_api_server() {
    let c = ApiServer::start();
    let f = c.write("nodes.yaml", NODE_OBJECTS);
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let p2_status = c.ok(&["get", "pod", "p2", "-o", "jsonpath={.status}"]);
    let n1 = c.cert_kubeconfig("system:node:n1", &["system:nodes"]);
    let run = |args: &[&str]| c.kubectl_as(&n1, args);
    let refused = |args: &[&str], want: &str| {
        let err = fails(run(args), args);
        contains_all(&err, &["Forbidden", want]);
    };

    // Its own Node: ordinary labels and status yes; role and restriction
    // labels, taints, no.
    succeeds(run(&["label", "node", "n1", "rack=r1"]), &["own label"]);
    succeeds(
        run(&["label", "node", "n1", "topology.kubernetes.io/zone=z1"]),
        &["zone label"],
    );
    refused(
        &["label", "node", "n1", "node-role.kubernetes.io/worker="],
        "not allowed to modify labels: node-role.kubernetes.io/worker",
    );
    refused(
        &[
            "label",
            "node",
            "n1",
            "node-restriction.kubernetes.io/trusted=yes",
        ],
        "node-restriction.kubernetes.io/trusted",
    );
    refused(
        &[
            "label",
            "node",
            "n1",
            "node-role.kubernetes.io/control-plane-",
        ],
        "node-role.kubernetes.io/control-plane",
    );
    refused(
        &["label", "node", "n1", "example.kubernetes.io/x=y"],
        "example.kubernetes.io/x",
    );
    refused(
        &["taint", "node", "n1", "dedicated-"],
        "not allowed to modify taints",
    );
    refused(
        &["taint", "node", "n1", "gpu=yes:NoSchedule"],
        "not allowed to modify taints",
    );
    refused(
        &[
            "patch",
            "node",
            "n1",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/spec/taints"}]"#,
        ],
        "not allowed to modify taints",
    );
    refused(
        &[
            "patch",
            "node",
            "n1",
            "--type=merge",
            "-p",
            r#"{"metadata":{"labels":{"node-restriction.kubernetes.io/x":"y"}}}"#,
        ],
        "node-restriction.kubernetes.io/x",
    );
    // Pod CIDRs come from the controller manager: a node cannot pick its own.
    refused(
        &[
            "patch",
            "node",
            "n1",
            "--type=merge",
            "-p",
            r#"{"spec":{"podCIDR":"10.244.9.0/24","podCIDRs":["10.244.9.0/24"]}}"#,
        ],
        "not allowed to set its pod CIDRs",
    );
    let applied = c.write(
        "n1-apply.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: {node-role.kubernetes.io/gpu: ''}\n",
    );
    refused(
        &[
            "apply",
            "--server-side",
            "--field-manager=kubelet",
            "-f",
            applied.to_str().unwrap(),
        ],
        "node-role.kubernetes.io/gpu",
    );
    succeeds(
        run(&[
            "patch",
            "node",
            "n1",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ]),
        &["own status"],
    );
    // Another node's anything, or a new node under another name.
    refused(&["label", "node", "n2", "x=y"], "n2");
    refused(
        &[
            "patch",
            "node",
            "n2",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
        "n2",
    );
    let n3 = c.write(
        "n3.yaml",
        "apiVersion: v1\nkind: Node\nmetadata: {name: n3}\n",
    );
    refused(
        &["create", "-f", n3.to_str().unwrap()],
        "is not allowed to modify node \"n3\"",
    );

    // Leases: its own in kube-node-lease.
    let own = c.write(
        "lease-n1.yaml",
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: n1, namespace: kube-node-lease}\nspec: {holderIdentity: n1}\n",
    );
    succeeds(
        run(&["create", "-f", own.to_str().unwrap()]),
        &["own lease"],
    );
    succeeds(
        run(&[
            "patch",
            "lease",
            "n1",
            "-n",
            "kube-node-lease",
            "--type=merge",
            "-p",
            r#"{"spec":{"leaseDurationSeconds":40}}"#,
        ]),
        &["renew own lease"],
    );
    refused(
        &[
            "patch",
            "lease",
            "n2",
            "-n",
            "kube-node-lease",
            "--type=merge",
            "-p",
            r#"{"spec":{"holderIdentity":"n1"}}"#,
        ],
        "n2",
    );
    let other = c.write(
        "lease-x.yaml",
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: n9, namespace: kube-node-lease}\n",
    );
    refused(
        &["create", "-f", other.to_str().unwrap()],
        "can only access node lease with the same name",
    );

    // Pods: status of its own; nothing of another node's; none created.
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
    refused(
        &[
            "patch",
            "pod",
            "p2",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Failed"}}"#,
        ],
        "p2",
    );
    refused(&["delete", "pod", "p2"], "p2");
    let pod = c.write(
        "mirror.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: mirror, namespace: default}\nspec:\n  nodeName: n1\n  containers: [{name: c, image: app:1}]\n",
    );
    refused(&["create", "-f", pod.to_str().unwrap()], "forbidden");

    // Nothing changed behind the refusals.
    assert_eq!(
        c.ok(&[
            "get",
            "node",
            "n1",
            "-o",
            "jsonpath={.spec.taints[0].key} {.metadata.labels}"
        ]),
        r#"dedicated {"node-role.kubernetes.io/control-plane":"","rack":"r1","topology.kubernetes.io/zone":"z1"}"#
    );
    assert_eq!(
        c.ok(&["get", "pod", "p2", "-o", "jsonpath={.status}"]),
        p2_status
    );
    assert_eq!(
        c.ok(&[
            "get",
            "lease",
            "n2",
            "-n",
            "kube-node-lease",
            "-o",
            "jsonpath={.spec.holderIdentity}"
        ]),
        "n2"
    );
}

/// Client certificates the TLS layer must refuse: expired, from another
/// CA, and a serving certificate (server auth only) used as a client one.
/// Each carries the admin identity, so any acceptance would show.
#[test]
fn bad_client_certificates_are_refused() {
    use skiff_apiserver::pki;
    let c = ApiServer::start();
    let ca = pki::Ca::load(&c.pki_dir()).unwrap();
    let good = ca
        .client_cert("kubernetes-admin", &["system:masters"])
        .unwrap();
    let good = c.issued_kubeconfig("good", &good);
    succeeds(
        c.kubectl_as(&good, &["get", "--raw", "/version"]),
        &["good cert"],
    );

    let three_years_ago =
        std::time::SystemTime::now() - std::time::Duration::from_secs(3 * 366 * 86400);
    let expired = pki::Ca::load(&c.pki_dir())
        .unwrap()
        .at(three_years_ago)
        .client_cert("kubernetes-admin", &["system:masters"])
        .unwrap();
    let (foreign_ca, _) = pki::Ca::generate(std::time::SystemTime::now()).unwrap();
    let foreign = foreign_ca
        .client_cert("kubernetes-admin", &["system:masters"])
        .unwrap();
    let server_only = ca.serving_cert(&[]).unwrap();
    for (name, cert) in [
        ("expired", expired),
        ("foreign", foreign),
        ("server-only", server_only),
    ] {
        let kc = c.issued_kubeconfig(name, &cert);
        for args in [&["get", "--raw", "/version"][..], &["get", "ns"]] {
            let err = fails(c.kubectl_as(&kc, args), &[name]);
            assert!(
                !err.contains("Forbidden"),
                "{name}: authenticated, then refused: {err}"
            );
        }
    }
}

/// A token forged or signed for something else: each 401.
#[test]
fn forged_and_foreign_service_account_tokens() {
    use base64::Engine as _;
    use skiff_apiserver::{API_AUDIENCE, TOKEN_ISSUER, TokenClaims, TokenKeys};
    let c = ApiServer::start();
    c.ok(&["create", "sa", "robot"]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=default:robot",
    ]);
    let key = std::fs::read_to_string(c.pki_dir().join(skiff_apiserver::pki::SA_KEY)).unwrap();
    let keys = TokenKeys::from_pem(&key).unwrap();
    let good = c.ok(&["create", "token", "robot"]);
    let works = |token: &str| {
        let kc = c.token_kubeconfig("t", token);
        c.kubectl_as(&kc, &["get", "cm", "-n", "default"])
    };
    succeeds(works(good.trim()), &["good token"]);

    let uid = c.ok(&["get", "sa", "robot", "-o", "jsonpath={.metadata.uid}"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let b64 = |v: &serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let claims = serde_json::json!({"iss": TOKEN_ISSUER, "aud": [API_AUDIENCE],
        "sub": "system:serviceaccount:default:robot", "exp": now + 3600, "nbf": now, "iat": now,
        "kubernetes.io": {"namespace": "default", "serviceaccount": {"name": "robot", "uid": uid}}});
    let none = format!(
        "{}.{}.",
        b64(&serde_json::json!({"alg": "none"})),
        b64(&claims)
    );
    let input = format!(
        "{}.{}",
        b64(&serde_json::json!({"alg": "HS256", "typ": "JWT"})),
        b64(&claims)
    );
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, keys.public_key()),
        input.as_bytes(),
    );
    let hs256 = format!(
        "{input}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.as_ref())
    );
    let foreign = c.ok(&[
        "create",
        "token",
        "robot",
        "--audience=https://vault.example",
    ]);
    let sa = TokenClaims {
        namespace: "default".into(),
        name: "robot".into(),
        uid: uid.clone(),
        bound: None,
    };
    let expired = keys.issue(&sa, &[], now - 7200, 3600).unwrap();
    for (what, token) in [
        ("alg=none", none.as_str()),
        ("HS256 keyed with the public key", hs256.as_str()),
        ("another audience", foreign.trim()),
        ("expired", expired.as_str()),
    ] {
        contains_all(&fails(works(token), &[what]), &["Unauthorized"]);
    }
    // The same claims properly signed do work: the refusals were the forgery.
    let fresh = keys.issue(&sa, &[], now, 3600).unwrap();
    succeeds(works(&fresh), &["re-signed"]);
}

/// TokenRequest: the lifetime is capped (shortened, with kube's warning),
/// and a token bound to a pod dies with the pod, even if a pod of the
/// same name comes back.
#[test]
fn token_lifetime_cap_and_bound_pods() {
    let c = ApiServer::start_tuned(
        |_| {},
        |cfg| {
            cfg.limits.service_account_max_token_expiration = std::time::Duration::from_secs(7200)
        },
    );
    c.ok(&["create", "sa", "robot"]);
    c.ok(&["create", "sa", "other"]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=default:robot",
    ]);
    let out = c.kubectl(&["create", "token", "robot", "--duration=1000h", "-o", "json"]);
    let body = succeeds(out.clone(), &["long token"]);
    let tr: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tr["spec"]["expirationSeconds"], 7200, "{tr}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    contains_all(&stderr, &["shortened to 7200 seconds"]);
    contains_all(
        &c.fails(&["create", "token", "robot", "--duration=5m"]),
        &["may not specify a duration less than 10 minutes"],
    );

    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: worker, namespace: default}\n\
               spec:\n  serviceAccountName: robot\n  containers: [{name: c, image: app:1}]\n";
    let f = c.write("worker.yaml", pod);
    c.ok(&["create", "-f", f.to_str().unwrap()]);
    let token = c.ok(&[
        "create",
        "token",
        "robot",
        "--bound-object-kind=Pod",
        "--bound-object-name=worker",
    ]);
    let kc = c.token_kubeconfig("bound", token.trim());
    succeeds(c.kubectl_as(&kc, &["get", "cm"]), &["bound token"]);
    // Bound to a pod of another account, or a pod that is not there.
    contains_all(
        &c.fails(&[
            "create",
            "token",
            "other",
            "--bound-object-kind=Pod",
            "--bound-object-name=worker",
        ]),
        &["different serviceaccount"],
    );
    contains_all(
        &c.fails(&[
            "create",
            "token",
            "robot",
            "--bound-object-kind=Pod",
            "--bound-object-name=nope",
        ]),
        &["pods \"nope\" not found"],
    );
    c.ok(&["delete", "pod", "worker", "--grace-period=0", "--force"]);
    contains_all(
        &fails(c.kubectl_as(&kc, &["get", "cm"]), &["pod gone"]),
        &["Unauthorized"],
    );
    c.ok(&["create", "-f", f.to_str().unwrap()]);
    contains_all(
        &fails(c.kubectl_as(&kc, &["get", "cm"]), &["pod recreated"]),
        &["Unauthorized"],
    );
}

/// Writes to subresources that are not views of the object (`binding`,
/// `log`, `token`) are refused rather than stored as the whole object, and
/// uid preconditions hold for deletes and updates.
#[test]
fn subresource_writes_and_uid_preconditions() {
    let c = ApiServer::start();
    let f = c.write(
        "p.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: default}\nspec:\n  containers: [{name: c, image: app:1}]\n",
    );
    c.ok(&["create", "-f", f.to_str().unwrap()]);
    c.ok(&["create", "sa", "robot"]);
    let pod = c.ok(&["get", "pod", "p", "-o", "json"]);
    let mut changed: serde_json::Value = serde_json::from_str(&pod).unwrap();
    changed["metadata"]["labels"] = serde_json::json!({"hijacked": "yes"});
    changed["spec"]["nodeName"] = serde_json::json!("n9");
    let body = serde_json::to_vec(&changed).unwrap();
    for (method, path) in [
        ("PUT", "/api/v1/namespaces/default/pods/p/binding"),
        ("PATCH", "/api/v1/namespaces/default/pods/p/binding"),
        ("PUT", "/api/v1/namespaces/default/pods/p/log"),
        ("PATCH", "/api/v1/namespaces/default/pods/p/log"),
        (
            "PUT",
            "/api/v1/namespaces/default/serviceaccounts/robot/token",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/serviceaccounts/robot/token",
        ),
    ] {
        let ct = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        let (code, resp) = c.request_raw(method, path, ct, body.clone());
        assert_eq!(
            code,
            405,
            "{method} {path}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "p",
            "-o",
            "jsonpath={.metadata.labels}{.spec.nodeName}"
        ]),
        ""
    );

    // preconditions.uid: a delete meant for another incarnation is refused.
    let uid = c.ok(&["get", "pod", "p", "-o", "jsonpath={.metadata.uid}"]);
    let del = |uid: &str| {
        let opts = serde_json::json!({"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0,
            "preconditions": {"uid": uid}});
        c.request_raw(
            "DELETE",
            "/api/v1/namespaces/default/pods/p",
            "application/json",
            serde_json::to_vec(&opts).unwrap(),
        )
    };
    let (code, resp) = del("not-the-uid");
    let resp = String::from_utf8_lossy(&resp).into_owned();
    assert_eq!(code, 409, "{resp}");
    contains_all(
        &resp,
        &["Precondition failed: UID in precondition: not-the-uid"],
    );
    // An update carrying a stale uid does not land on a recreated object.
    let mut stale: serde_json::Value = serde_json::from_str(&pod).unwrap();
    stale["metadata"]["uid"] = serde_json::json!("stale-uid");
    stale["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let stale_file = c.write("stale.json", &stale.to_string());
    contains_all(
        &c.fails(&["replace", "-f", stale_file.to_str().unwrap()]),
        &["Precondition failed: UID in precondition: stale-uid"],
    );
    let (code, resp) = del(&uid);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&resp));
}
