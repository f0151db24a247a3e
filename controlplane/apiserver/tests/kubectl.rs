//! Real kubectl 1.33 against an in-process control plane; every command's
//! output is checked.

use std::process::Stdio;

use skiff_test_support::api::{ApiServer, contains_all};
use skiff_test_support::peers;

const APP: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: demo
data:
  greeting: hello
---
apiVersion: v1
kind: Secret
metadata:
  name: web-secret
  namespace: demo
stringData:
  password: s3cret
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: registry.local/web:1.0
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: demo
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
";

#[test]
fn apply_get_edit_scale_and_delete_a_manifest() {
    let c = ApiServer::start();
    let app = c.write("app.yaml", APP);
    let app = app.to_str().unwrap();

    let out = c.ok(&["apply", "-f", app]);
    contains_all(
        &out,
        &[
            "namespace/demo created",
            "configmap/web-config created",
            "secret/web-secret created",
            "deployment.apps/web created",
            "service/web created",
        ],
    );

    let out = c.ok(&["get", "deploy", "-n", "demo", "-o", "wide"]);
    contains_all(
        &out,
        &[
            "NAME",
            "READY",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
            "web",
            "0/2",
            "registry.local/web:1.0",
            "app=web",
        ],
    );
    let out = c.ok(&["get", "svc", "web", "-n", "demo"]);
    contains_all(
        &out,
        &[
            "TYPE",
            "CLUSTER-IP",
            "PORT(S)",
            "ClusterIP",
            "10.96.",
            "80/TCP",
        ],
    );
    let out = c.ok(&["get", "cm", "web-config", "-n", "demo", "-o", "yaml"]);
    contains_all(
        &out,
        &[
            "greeting: hello",
            "kind: ConfigMap",
            "resourceVersion:",
            "uid:",
            "last-applied-configuration",
        ],
    );
    let out = c.ok(&[
        "get",
        "secret",
        "web-secret",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(out, "czNjcmV0", "stringData is stored base64 in data");
    let out = c.ok(&["get", "cm", "-A"]);
    contains_all(&out, &["NAMESPACE", "demo", "web-config"]);
    let out = c.ok(&["get", "ns"]);
    contains_all(&out, &["default", "kube-system", "demo", "Active"]);

    // label / annotate, then select by label.
    contains_all(
        &c.ok(&["label", "cm", "web-config", "-n", "demo", "tier=fe"]),
        &["configmap/web-config labeled"],
    );
    contains_all(
        &c.ok(&["annotate", "cm", "web-config", "-n", "demo", "note=kept"]),
        &["configmap/web-config annotated"],
    );
    contains_all(
        &c.ok(&["get", "cm", "-n", "demo", "-l", "tier=fe", "--show-labels"]),
        &["web-config", "tier=fe"],
    );
    let none = c.kubectl(&["get", "cm", "-n", "demo", "-l", "tier=be"]);
    contains_all(
        &String::from_utf8_lossy(&none.stderr),
        &["No resources found in demo namespace."],
    );

    // scale goes through the scale subresource.
    contains_all(
        &c.ok(&["scale", "deploy/web", "-n", "demo", "--replicas=4"]),
        &["deployment.apps/web scaled"],
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "4"
    );

    // A second apply of a changed manifest patches: what kubectl label and
    // annotate added survives, unchanged objects stay unchanged.
    let changed = APP
        .replace("greeting: hello", "greeting: bonjour")
        .replace("web:1.0", "web:1.1")
        .replace("replicas: 2", "replicas: 3");
    let app2 = c.write("app2.yaml", &changed);
    let out = c.ok(&["apply", "-f", app2.to_str().unwrap()]);
    contains_all(
        &out,
        &[
            "namespace/demo unchanged",
            "configmap/web-config configured",
            "deployment.apps/web configured",
            "service/web unchanged",
        ],
    );
    let out = c.ok(&[
        "get",
        "cm",
        "web-config",
        "-n",
        "demo",
        "-o",
        "jsonpath={.data.greeting} {.metadata.labels.tier} {.metadata.annotations.note}",
    ]);
    assert_eq!(out, "bonjour fe kept");
    let out = c.ok(&["get", "deploy", "web", "-n", "demo", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.metadata.generation}"]);
    assert_eq!(
        out, "3 registry.local/web:1.1 3",
        "scale and apply each bumped the generation"
    );

    // edit through KUBE_EDITOR.
    let out = c
        .kubectl_command(&peers::kubectl(), &c.kubeconfig)
        .args(["edit", "cm", "web-config", "-n", "demo"])
        .env("KUBE_EDITOR", "sed -i s/bonjour/hola/")
        .output()
        .unwrap();
    contains_all(
        &String::from_utf8_lossy(&out.stdout),
        &["configmap/web-config edited"],
    );
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "web-config",
            "-n",
            "demo",
            "-o",
            "jsonpath={.data.greeting}"
        ]),
        "hola"
    );

    let out = c.ok(&["describe", "deploy", "web", "-n", "demo"]);
    contains_all(
        &out,
        &[
            "Name:",
            "web",
            "Namespace:",
            "demo",
            "Replicas:",
            "3 desired",
            "registry.local/web:1.1",
            "8080/TCP",
            "StrategyType:",
            "RollingUpdate",
        ],
    );
    let out = c.ok(&["describe", "svc", "web", "-n", "demo"]);
    contains_all(&out, &["Selector:", "app=web", "TargetPort:", "8080/TCP"]);

    let out = c.ok(&["explain", "deployment.spec.replicas"]);
    contains_all(
        &out,
        &["FIELD: replicas <integer>", "Number of desired pods"],
    );
    let out = c.ok(&["explain", "deployment"]);
    contains_all(&out, &["KIND:", "Deployment", "VERSION:", "v1"]);
    let out = c.ok(&["api-resources"]);
    contains_all(
        &out,
        &[
            "deployments",
            "deploy",
            "apps/v1",
            "true",
            "Deployment",
            "namespaces",
            "ns",
            "false",
            "leases",
            "coordination.k8s.io/v1",
        ],
    );
    assert_eq!(
        c.ok(&["auth", "can-i", "create", "deployments", "-n", "demo"])
            .trim(),
        "yes"
    );

    let out = c.ok(&["delete", "-f", app2.to_str().unwrap()]);
    contains_all(
        &out,
        &[
            "namespace \"demo\" deleted",
            "deployment.apps \"web\" deleted",
            "service \"web\" deleted",
        ],
    );
    c.eventually("namespace demo to disappear", 10, String::new, || {
        !c.kubectl(&["get", "ns", "demo"]).status.success()
    });
    let err = c.fails(&["get", "cm", "web-config", "-n", "demo"]);
    contains_all(&err, &["NotFound", "namespaces \"demo\" not found"]);
}

#[test]
fn create_with_typed_clients_and_watch() {
    let c = ApiServer::start();
    // A sentinel row tells when the watch is running.
    c.ok(&["create", "cm", "w0", "-n", "default"]);
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]))
            .unwrap();
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = c
        .kubectl_command(&peers::kubectl(), &c.kubeconfig)
        .args(["get", "cm", "-n", "default", "--watch", "-o", "wide"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = lines.clone();
        let stdout = watch.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let rows = |prefix: &str| {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    };
    c.eventually("the watch to list w0", 10, String::new, || rows("w0 ") >= 1);
    // `kubectl create` uses client-go's protobuf encoding.
    contains_all(
        &c.ok(&["create", "cm", "w1", "-n", "default", "--from-literal=a=b"]),
        &["configmap/w1 created"],
    );
    contains_all(
        &c.ok(&["create", "ns", "other"]),
        &["namespace/other created"],
    );
    contains_all(
        &c.ok(&["create", "secret", "generic", "s1", "--from-literal=k=v"]),
        &["secret/s1 created"],
    );
    contains_all(&c.ok(&["label", "cm", "w1", "x=y"]), &["labeled"]);
    contains_all(
        &c.ok(&["delete", "cm", "w1"]),
        &["configmap \"w1\" deleted"],
    );
    // Added, modified, deleted.
    c.eventually("three w1 rows", 10, String::new, || rows("w1 ") >= 3);
    watch.kill().unwrap();
    let _ = watch.wait();
    reader.join().unwrap();
    let out = lines.lock().unwrap().join("\n");
    assert!(out.starts_with("NAME"), "watch output: {out}");
    assert_eq!(
        c.ok(&["get", "secret", "s1", "-o", "jsonpath={.data.k}"]),
        "dg=="
    );

    // Watch from a resourceVersion replays what happened after it.
    let out = c.ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"
        ),
    ]);
    let types: Vec<&str> = out
        .lines()
        .map(|l| {
            if l.contains("\"ADDED\"") {
                "ADDED"
            } else if l.contains("\"MODIFIED\"") {
                "MODIFIED"
            } else if l.contains("\"DELETED\"") {
                "DELETED"
            } else {
                "?"
            }
        })
        .collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "DELETED"], "{out}");
}

#[test]
fn bad_input_gets_the_right_status_and_changes_nothing() {
    let c = ApiServer::start();
    let before = c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]);
    let bad = c.write(
        "bad.json",
        "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", ",
    );
    let err = c.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        bad.to_str().unwrap(),
    ]);
    contains_all(&err, &["BadRequest"]);

    let yaml = c.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n",
    );
    let err = c.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        yaml.to_str().unwrap(),
    ]);
    contains_all(&err, &["BadRequest"]);

    let invalid = c.write(
        "invalid.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n  namespace: default\n",
    );
    let err = c.fails(&["apply", "-f", invalid.to_str().unwrap()]);
    contains_all(
        &err,
        &[
            "ConfigMap \"Bad_Name\" is invalid",
            "metadata.name: Invalid value",
        ],
    );

    let unknown = c.write(
        "unknown.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
    );
    let err = c.fails(&["apply", "-f", unknown.to_str().unwrap()]);
    contains_all(&err, &["no matches for kind \"Widget\""]);
    let err = c.fails(&["get", "--raw", "/apis/example.com/v1/widgets"]);
    contains_all(&err, &["NotFound"]);

    let strict = c.write("strict.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: s\n  namespace: default\ndatta:\n  a: b\n");
    let err = c.fails(&["apply", "-f", strict.to_str().unwrap()]);
    contains_all(&err, &["unknown field \"datta\""]);

    let big = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"big\"}},\"data\":{{\"x\":\"{}\"}}}}",
        "a".repeat(4 * 1024 * 1024)
    );
    let big = c.write("big.json", &big);
    let err = c.fails(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/configmaps",
        "-f",
        big.to_str().unwrap(),
    ]);
    contains_all(&err, &["RequestEntityTooLarge"]);

    // Conflicting update: replace with a stale resourceVersion.
    c.ok(&["create", "cm", "c1", "--from-literal=a=1"]);
    let stale = c.ok(&["get", "cm", "c1", "-o", "json"]);
    c.ok(&["label", "cm", "c1", "bump=1"]);
    let stale = c.write("stale.json", &stale.replace("\"a\": \"1\"", "\"a\": \"2\""));
    let err = c.fails(&["replace", "-f", stale.to_str().unwrap()]);
    contains_all(&err, &["Conflict", "the object has been modified"]);
    assert_eq!(c.ok(&["get", "cm", "c1", "-o", "jsonpath={.data.a}"]), "1");
    c.ok(&["delete", "cm", "c1"]);

    let err = c.fails(&["create", "cm", "c2", "-n", "nope", "--from-literal=a=1"]);
    contains_all(&err, &["namespaces \"nope\" not found"]);

    let after = c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]);
    let items = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["items"].clone();
    assert_eq!(items(&before), items(&after), "the store is unchanged");
}

#[test]
fn watch_bookmarks_and_gone_after_compaction() {
    let c = ApiServer::start();
    c.ok(&["create", "cm", "a", "--from-literal=k=1"]);
    let rv = c.ok(&[
        "get",
        "cm",
        "a",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    c.ok(&["label", "cm", "a", "x=y"]);
    let path = format!(
        "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1"
    );
    let out = c.ok(&["get", "--raw", &path]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events[0]["type"], "MODIFIED", "{out}");
    let bookmark = events
        .iter()
        .find(|e| e["type"] == "BOOKMARK")
        .unwrap_or_else(|| panic!("no bookmark in {out}"));
    let brv: u64 = bookmark["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(brv > rv.parse::<u64>().unwrap(), "{out}");

    // A list at an exact past revision sees the past.
    let path = format!(
        "/api/v1/namespaces/default/configmaps?resourceVersion={rv}&resourceVersionMatch=Exact"
    );
    let past: serde_json::Value = serde_json::from_str(&c.ok(&["get", "--raw", &path])).unwrap();
    assert!(
        past["items"][0]["metadata"].get("labels").is_none(),
        "{past}"
    );
    assert_eq!(past["metadata"]["resourceVersion"], rv.as_str());
    let err = c.fails(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?resourceVersion=999999",
    ]);
    contains_all(&err, &["Too large resource version"]);

    // History before the compaction point is gone: 410 in an ERROR event.
    c.ok(&["label", "cm", "a", "z=w"]);
    c.compact();
    let out = c.ok(&[
        "get",
        "--raw",
        &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"),
    ]);
    let ev: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR", "{out}");
    assert_eq!(ev["object"]["code"], 410, "{out}");
    assert_eq!(ev["object"]["reason"], "Expired", "{out}");
    let err = c.fails(&["get", "--raw", &path]);
    contains_all(&err, &["Expired", "too old resource version"]);
}

#[test]
fn pod_binding_status_and_graceful_deletion() {
    let c = ApiServer::start();
    contains_all(
        &c.ok(&["run", "loose", "--image=app:1"]),
        &["pod/loose created"],
    );
    let pod = c.write(
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p2, namespace: default, labels: {app: x}}\nspec:\n  containers: [{name: c, image: app:1}]\n",
    );
    c.ok(&["apply", "-f", pod.to_str().unwrap()]);
    let binding = c.write(
        "binding.json",
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p2"},"target":{"kind":"Node","name":"n1"}}"#,
    );
    let path = "/api/v1/namespaces/default/pods/p2/binding";
    contains_all(
        &c.ok(&["create", "--raw", path, "-f", binding.to_str().unwrap()]),
        &["\"Success\""],
    );
    contains_all(
        &c.fails(&["create", "--raw", path, "-f", binding.to_str().unwrap()]),
        &["Conflict", "already assigned"],
    );
    let out = c.ok(&["get", "pods", "-o", "wide"]);
    contains_all(&out, &["NODE", "loose", "p2", "n1", "Pending", "0/1"]);

    // Status goes through the status subresource only.
    c.ok(&[
        "patch",
        "pod",
        "p2",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running","podIP":"10.1.0.7"}}"#,
    ]);
    c.ok(&[
        "patch",
        "pod",
        "p2",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Failed"}}"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "p2",
            "-o",
            "jsonpath={.status.phase} {.status.podIP}"
        ]),
        "Running 10.1.0.7"
    );
    // Logs come from the node through the node gateway, which this
    // API-server-only test does not run: a clear 503, not a hang.
    contains_all(
        &c.fails(&["logs", "p2"]),
        &["ServiceUnavailable", "no node gateway is running"],
    );

    // An unscheduled pod goes at once; a bound one terminates gracefully.
    contains_all(
        &c.ok(&["delete", "pod", "loose"]),
        &["pod \"loose\" deleted"],
    );
    contains_all(
        &c.ok(&["delete", "pod", "p2", "--wait=false"]),
        &["pod \"p2\" deleted"],
    );
    let out = c.ok(&["get", "pods"]);
    contains_all(&out, &["p2", "Terminating"]);
    assert!(!out.contains("loose"), "{out}");
    let out = c.ok(&["describe", "pod", "p2"]);
    contains_all(
        &out,
        &[
            "Node:",
            "n1",
            "Status:",
            "Terminating",
            "Termination Grace Period:  30s",
        ],
    );
    contains_all(
        &c.ok(&["delete", "pod", "p2", "--grace-period=0", "--force"]),
        &["pod \"p2\" force deleted"],
    );
    let none = c.kubectl(&["get", "pods"]);
    contains_all(
        &String::from_utf8_lossy(&none.stderr),
        &["No resources found in default namespace."],
    );
}

#[test]
fn server_side_apply_tracks_managers() {
    let c = ApiServer::start();
    let v1 = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\n  namespace: default\n  labels: {app: ssa, extra: \"1\"}\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: ssa}\n  template:\n    metadata:\n      labels: {app: ssa}\n    spec:\n      containers:\n      - {name: c, image: img:1}\n";
    let f1 = c.write("ssa1.yaml", v1);
    contains_all(
        &c.ok(&["apply", "--server-side", "-f", f1.to_str().unwrap()]),
        &["deployment.apps/ssa serverside-applied"],
    );
    let out = c.ok(&[
        "get",
        "deploy",
        "ssa",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    contains_all(
        &out,
        &[
            "managedFields:",
            "manager: kubectl",
            "operation: Apply",
            "f:replicas: {}",
        ],
    );

    // Re-applying without a label this manager set removes it.
    let f2 = c.write("ssa2.yaml", &v1.replace(", extra: \"1\"", ""));
    c.ok(&["apply", "--server-side", "-f", f2.to_str().unwrap()]);
    assert_eq!(
        c.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.metadata.labels}"]),
        r#"{"app":"ssa"}"#
    );

    // Another manager changing an owned field conflicts unless forced.
    let other = c.write(
        "other.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: ssa\n  namespace: default\nspec:\n  replicas: 5\n",
    );
    let err = c.fails(&[
        "apply",
        "--server-side",
        "--field-manager=scaler",
        "-f",
        other.to_str().unwrap(),
    ]);
    contains_all(&err, &["conflict", "kubectl", ".spec.replicas"]);
    assert_eq!(
        c.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
    c.ok(&[
        "apply",
        "--server-side",
        "--field-manager=scaler",
        "--force-conflicts",
        "-f",
        other.to_str().unwrap(),
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "ssa",
            "-o",
            "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}"
        ]),
        "5 img:1"
    );
}

#[test]
fn events_print_like_kube() {
    let c = ApiServer::start();
    let ev = c.write(
        "ev.yaml",
        "apiVersion: v1\nkind: Event\nmetadata: {name: e1, namespace: default}\ninvolvedObject: {kind: Pod, name: web-1, namespace: default}\nreason: Scheduled\nmessage: assigned to n1\ntype: Normal\n",
    );
    c.ok(&["create", "-f", ev.to_str().unwrap()]);
    c.ok(&["label", "event", "e1", "seen=yes"]);
    // Events expire with their store lease (kube's event TTL), kept across
    // updates; revoking it plays the hour forward.
    let lease = c.with_state(|state| async move {
        let kv = state
            .store
            .get("/registry/core/events/default/e1")
            .await
            .unwrap()
            .unwrap();
        kv.lease
    });
    assert_ne!(lease, 0, "events carry a lease");
    let out = c.ok(&["get", "events"]);
    contains_all(
        &out,
        &[
            "LAST SEEN",
            "TYPE",
            "REASON",
            "OBJECT",
            "MESSAGE",
            "Normal",
            "Scheduled",
            "pod/web-1",
            "assigned to n1",
        ],
    );
    c.with_state(move |state| async move { state.store.lease_revoke(lease).await.unwrap() });
    let none = c.kubectl(&["get", "events"]);
    contains_all(
        &String::from_utf8_lossy(&none.stderr),
        &["No resources found"],
    );
}

#[test]
fn finalizers_hold_deletion_until_removed() {
    let c = ApiServer::start();
    let cm = c.write(
        "fin.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  namespace: default\n  finalizers: [skiff.dev/hold]\ndata: {a: b}\n",
    );
    c.ok(&["apply", "-f", cm.to_str().unwrap()]);
    contains_all(
        &c.ok(&["delete", "cm", "held", "--wait=false"]),
        &["configmap \"held\" deleted"],
    );
    let ts = c.ok(&[
        "get",
        "cm",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(ts.ends_with('Z'), "marked for deletion: {ts:?}");
    // Still there; a second delete changes nothing.
    c.ok(&["delete", "cm", "held", "--wait=false"]);
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "held",
            "-o",
            "jsonpath={.metadata.deletionTimestamp}"
        ]),
        ts
    );
    c.ok(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let err = c.fails(&["get", "cm", "held"]);
    contains_all(&err, &["NotFound"]);
}

#[test]
fn service_cluster_ips_are_unique() {
    let c = ApiServer::start();
    let docs: Vec<String> = (0..12)
        .map(|i| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\nspec:\n  ports: [{{port: 80}}]\n"))
        .collect();
    let f = c.write("svcs.yaml", &docs.join("---\n"));
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    let mut ips = std::collections::HashSet::new();
    for i in 0..12 {
        let ip = c.ok(&[
            "get",
            "svc",
            &format!("s{i}"),
            "-o",
            "jsonpath={.spec.clusterIP}",
        ]);
        assert!(ip.starts_with("10.96."), "{ip}");
        assert!(ips.insert(ip.clone()), "duplicate {ip}");
    }
    // Occupy the address "b" would hash to: "b" moves to a free one.
    let squat = skiff_apiserver::cluster_ip("default", "b");
    let f = c.write(
        "squat.yaml",
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: a, namespace: default}}\nspec:\n  clusterIP: {squat}\n  ports: [{{port: 80}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: b, namespace: default}}\nspec:\n  ports: [{{port: 80}}]\n"),
    );
    c.ok(&["apply", "-f", f.to_str().unwrap()]);
    assert_eq!(
        c.ok(&["get", "svc", "a", "-o", "jsonpath={.spec.clusterIP}"]),
        squat
    );
    let b = c.ok(&[
        "get",
        "svc",
        "b",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.clusterIPs[0]}",
    ]);
    let (b_ip, b_ips) = b.split_once(' ').unwrap();
    assert!(
        b_ip != squat && b_ip.starts_with("10.96.") && b_ip == b_ips,
        "{b}"
    );
    let taken = ips.iter().next().unwrap().clone();
    let svc = c.write(
        "taken.yaml",
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: taken, namespace: default}}\nspec:\n  clusterIP: {taken}\n  ports: [{{port: 80}}]\n"),
    );
    let err = c.fails(&["create", "-f", svc.to_str().unwrap()]);
    contains_all(&err, &["provided IP is already allocated"]);
    // Server-side apply creates go through the same allocation.
    let err = c.fails(&["apply", "--server-side", "-f", svc.to_str().unwrap()]);
    contains_all(&err, &["provided IP is already allocated"]);
    let squat_c = skiff_apiserver::cluster_ip("default", "c");
    let f = c.write(
        "ssa.yaml",
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: squat-c, namespace: default}}\nspec:\n  clusterIP: {squat_c}\n  ports: [{{port: 80}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: c, namespace: default}}\nspec:\n  type: NodePort\n  ports: [{{port: 80}}]\n"),
    );
    c.ok(&["apply", "--server-side", "-f", f.to_str().unwrap()]);
    let got = c.ok(&[
        "get",
        "svc",
        "c",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].nodePort}",
    ]);
    let (ip, node_port) = got.split_once(' ').unwrap();
    assert!(ip != squat_c && ip.starts_with("10.96."), "{got}");
    assert!(node_port.parse::<u16>().is_ok_and(|n| n >= 30000), "{got}");
}

/// A resource quantity kube would refuse is refused naming the field, in
/// pods and in workload templates alike; kube's other spellings pass.
#[test]
fn resource_quantities_are_checked_as_kube_checks_them() {
    let c = ApiServer::start();
    let pod = |name: &str, resources: &str| {
        c.write(
            &format!("{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  containers:\n  - name: c\n    image: registry.local/app:1\n    resources: {resources}\n"
            ),
        )
    };
    for (name, resources, want) in [
        (
            "p1",
            "{limits: {memory: lots}}",
            "spec.containers[0].resources.limits[memory]: Invalid value: \"lots\": quantities must match the regular expression",
        ),
        (
            "p2",
            "{requests: {cpu: \"-1\"}}",
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"-1\": must be greater than or equal to 0",
        ),
        (
            "p3",
            "{requests: {cpu: \"2\"}, limits: {cpu: 1500m}}",
            "spec.containers[0].resources.requests[cpu]: Invalid value: \"2\": must be less than or equal to cpu limit of 1500m",
        ),
    ] {
        let err = c.fails(&["apply", "-f", pod(name, resources).to_str().unwrap()]);
        assert!(err.contains(want), "{name}: {err}");
        c.fails(&["get", "pod", name]);
    }
    // Every suffix and form kube takes.
    let ok = pod(
        "fine",
        "{requests: {cpu: 500000u, memory: 64e6}, limits: {cpu: \"1\", memory: 1Gi, ephemeral-storage: 1.5Ti}}",
    );
    c.ok(&["apply", "-f", ok.to_str().unwrap()]);
    // A Deployment's template is the same pod spec.
    let deploy = c.write(
        "bad-deploy.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: default}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}}\n    spec:\n      containers:\n      - {name: c, image: registry.local/app:1, resources: {limits: {memory: 12X}}}\n",
    );
    let err = c.fails(&["apply", "-f", deploy.to_str().unwrap()]);
    assert!(
        err.contains(
            "spec.template.spec.containers[0].resources.limits[memory]: Invalid value: \"12X\""
        ),
        "{err}"
    );
}

#[test]
fn malformed_services_and_endpoint_slices_are_refused_naming_the_field() {
    let c = ApiServer::start();
    let svc = |name: &str, spec: &str| {
        let f = c.write(
            &format!("{name}.yaml"),
            &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}"),
        );
        c.fails(&["apply", "-f", f.to_str().unwrap()])
    };
    let cases = [
        (
            "s1",
            "  type: Magic\n  ports: [{port: 80}]\n",
            "spec.type: Unsupported value: \"Magic\"",
        ),
        (
            "s2",
            "  ports: [{port: 80, protocol: ICMP}]\n",
            "spec.ports[0].protocol: Unsupported value",
        ),
        (
            "s3",
            "  ports: [{port: 80}, {port: 81}]\n",
            "spec.ports[0].name: Required value",
        ),
        (
            "s4",
            "  ports: [{name: a, port: 80}, {name: a, port: 81}]\n",
            "spec.ports[1].name: Duplicate value",
        ),
        (
            "s5",
            "  ports: [{name: a, port: 80}, {name: b, port: 80}]\n",
            "spec.ports[1].port: Duplicate value",
        ),
        (
            "s6",
            "  ports: [{port: 80, targetPort: Not_A_Name}]\n",
            "spec.ports[0].targetPort: Invalid value",
        ),
        (
            "s7",
            "  ports: [{port: 80, targetPort: 70000}]\n",
            "spec.ports[0].targetPort: Invalid value",
        ),
        (
            "s8",
            "  ports: [{port: 80, nodePort: 30080}]\n",
            "spec.ports[0].nodePort: Forbidden",
        ),
        (
            "s9",
            "  type: NodePort\n  ports: [{port: 80, nodePort: 80}]\n",
            "range of valid ports is 30000-32767",
        ),
        (
            "s10",
            "  sessionAffinity: Sticky\n  ports: [{port: 80}]\n",
            "spec.sessionAffinity: Unsupported value",
        ),
        (
            "s11",
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports: [{port: 80}]\n",
            "timeoutSeconds: Invalid value",
        ),
        (
            "s12",
            "  internalTrafficPolicy: Nearby\n  ports: [{port: 80}]\n",
            "spec.internalTrafficPolicy: Unsupported value",
        ),
        (
            "s13",
            "  trafficDistribution: Anywhere\n  ports: [{port: 80}]\n",
            "spec.trafficDistribution: Unsupported value",
        ),
        (
            "s14",
            "  clusterIP: 10.96.0.300\n  ports: [{port: 80}]\n",
            "spec.clusterIP: Invalid value",
        ),
        (
            "s15",
            "  type: ExternalName\n",
            "spec.externalName: Required value",
        ),
    ];
    for (name, spec, want) in cases {
        let err = svc(name, spec);
        contains_all(&err, &[&format!("Service \"{name}\" is invalid"), want]);
    }
    // Well-formed ones pass, named target ports and the new fields included.
    let ok = c.write(
        "ok.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: fine, namespace: default}\nspec:\n  \
         trafficDistribution: PreferSameNode\n  sessionAffinity: ClientIP\n  internalTrafficPolicy: Local\n  \
         ports: [{name: http, port: 80, targetPort: http}, {name: dns, port: 53, protocol: UDP}]\n",
    );
    c.ok(&["apply", "-f", ok.to_str().unwrap()]);

    let slice = |name: &str, body: &str| {
        let f = c.write(
            &format!("{name}.yaml"),
            &format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}, namespace: default}}\n{body}"),
        );
        c.fails(&["apply", "-f", f.to_str().unwrap()])
    };
    let cases = [
        ("e1", "endpoints: []\n", "addressType: Required value"),
        (
            "e2",
            "addressType: IPv5\nendpoints: []\n",
            "addressType: Unsupported value",
        ),
        (
            "e3",
            "addressType: IPv4\nendpoints: [{addresses: [\"fd00::1\"]}]\n",
            "endpoints[0].addresses[0]: Invalid value",
        ),
        (
            "e4",
            "addressType: IPv4\nendpoints: [{addresses: []}]\n",
            "endpoints[0].addresses: Invalid value",
        ),
        (
            "e5",
            "addressType: IPv4\nendpoints: []\nports: [{port: 0}]\n",
            "ports[0].port: Invalid value",
        ),
        (
            "e6",
            "addressType: IPv4\nendpoints: []\nports: [{name: a, port: 1}, {name: a, port: 2}]\n",
            "ports[1].name: Duplicate value",
        ),
    ];
    for (name, body, want) in cases {
        let err = slice(name, body);
        contains_all(
            &err,
            &[&format!("EndpointSlice \"{name}\" is invalid"), want],
        );
    }
    let ok = c.write(
        "slice.yaml",
        "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {name: fine, namespace: default}\n\
         addressType: IPv4\nendpoints: [{addresses: [10.244.1.5]}]\nports: [{name: http, port: 8080, protocol: TCP}]\n",
    );
    c.ok(&["apply", "-f", ok.to_str().unwrap()]);
    let err = c.fails(&[
        "patch",
        "endpointslice",
        "fine",
        "--type=merge",
        "-p",
        r#"{"addressType":"IPv6"}"#,
    ]);
    contains_all(&err, &["addressType: Invalid value: field is immutable"]);
}

#[test]
fn node_ports_are_allocated_unique_kept_on_update_and_released() {
    let c = ApiServer::start();
    c.ok(&["create", "service", "nodeport", "web", "--tcp=80:8080"]);
    let node_port = |svc: &str| {
        c.ok(&[
            "get",
            "svc",
            svc,
            "-o",
            "jsonpath={.spec.ports[*].nodePort}",
        ])
    };
    let port = node_port("web");
    let n: u16 = port.parse().expect("one node port");
    assert!((30000..=32767).contains(&n), "{port}");
    // Taken: refused for another Service.
    let taken = c.write(
        "taken.yaml",
        &format!("apiVersion: v1\nkind: Service\nmetadata: {{name: other, namespace: default}}\nspec:\n  type: NodePort\n  ports: [{{port: 81, nodePort: {n}}}]\n"),
    );
    let err = c.fails(&["apply", "-f", taken.to_str().unwrap()]);
    contains_all(
        &err,
        &[
            "spec.ports[0].nodePort",
            "provided port is already allocated",
        ],
    );
    // An update that leaves the node port out keeps it.
    c.ok(&[
        "patch",
        "svc",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"ports":[{"name":"80-8080","port":80,"targetPort":9090}]}}"#,
    ]);
    assert_eq!(node_port("web"), port);
    // Two ports get two node ports.
    c.ok(&[
        "create",
        "service",
        "loadbalancer",
        "lb",
        "--tcp=80:8080",
        "--tcp=443:8443",
    ]);
    let two = node_port("lb");
    let two: Vec<&str> = two.split_whitespace().collect();
    assert!(
        two.len() == 2 && two[0] != two[1] && !two.contains(&port.as_str()),
        "{two:?}"
    );
    // Back to ClusterIP: the node port is released and can be taken.
    c.ok(&[
        "patch",
        "svc",
        "web",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ]);
    assert_eq!(node_port("web"), "");
    c.ok(&["apply", "-f", taken.to_str().unwrap()]);
    assert_eq!(node_port("other"), port);
    // Setting one on a ClusterIP Service is refused.
    let err = c.fails(&[
        "patch",
        "svc",
        "web",
        "--type=merge",
        "-p",
        &format!(
            r#"{{"spec":{{"ports":[{{"name":"80-8080","port":80,"nodePort":{}}}]}}}}"#,
            n + 1
        ),
    ]);
    contains_all(&err, &["spec.ports[0].nodePort: Forbidden"]);
}

fn get_json(c: &ApiServer, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "json"]);
    serde_json::from_str(&c.ok(&a)).unwrap()
}

/// `kubectl create <kind>` sends protobuf for built-in kinds; what lands in
/// the store is what kubectl meant.
#[test]
fn typed_client_creates_of_workloads_services_and_roles() {
    use serde_json::json;
    let c = ApiServer::start();

    contains_all(
        &c.ok(&[
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
            "--port=8080",
        ]),
        &["deployment.apps/web created"],
    );
    let d = get_json(&c, &["deployment", "web"]);
    assert_eq!(d["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(d["spec"]["replicas"], 2);
    assert_eq!(
        d["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"],
        json!({"app": "web"})
    );
    let ct = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(ct["name"], "nginx");
    assert_eq!(ct["image"], "nginx");
    assert_eq!(ct["ports"][0]["containerPort"], 8080);
    assert!(d["metadata"]["uid"].is_string());

    contains_all(
        &c.ok(&["create", "job", "j1", "--image=busybox", "--", "echo", "hi"]),
        &["job.batch/j1 created"],
    );
    let j = get_json(&c, &["job", "j1"]);
    let pod = &j["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["containers"][0]["name"], "j1");
    assert_eq!(pod["containers"][0]["image"], "busybox");
    assert_eq!(pod["containers"][0]["command"], json!(["echo", "hi"]));

    contains_all(
        &c.ok(&[
            "create",
            "cronjob",
            "cj",
            "--image=busybox",
            "--schedule=*/5 * * * *",
            "--",
            "date",
        ]),
        &["cronjob.batch/cj created"],
    );
    let cj = get_json(&c, &["cronjob", "cj"]);
    assert_eq!(cj["spec"]["schedule"], "*/5 * * * *");
    assert_eq!(cj["spec"]["jobTemplate"]["metadata"]["name"], "cj");
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "OnFailure");
    assert_eq!(pod["containers"][0]["command"], json!(["date"]));
    // A job from the cronjob carries an owner reference and the server's
    // defaults read back from the cronjob.
    contains_all(
        &c.ok(&["create", "job", "manual", "--from=cronjob/cj"]),
        &["job.batch/manual created"],
    );
    let j = get_json(&c, &["job", "manual"]);
    assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert_eq!(j["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(
        j["metadata"]["ownerReferences"][0]["uid"],
        cj["metadata"]["uid"]
    );
    assert_eq!(
        j["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
        "manual"
    );

    contains_all(
        &c.ok(&["create", "service", "clusterip", "svc1", "--tcp=80:8080"]),
        &["service/svc1 created"],
    );
    let s = get_json(&c, &["service", "svc1"]);
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["selector"], json!({"app": "svc1"}));
    assert_eq!(
        s["spec"]["ports"],
        json!([{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080}])
    );
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .starts_with("10.96."),
        "{s}"
    );
    contains_all(
        &c.ok(&["create", "service", "nodeport", "svc2", "--tcp=80:http"]),
        &["service/svc2 created"],
    );
    let s = get_json(&c, &["service", "svc2"]);
    assert_eq!(s["spec"]["type"], "NodePort");
    assert_eq!(s["spec"]["ports"][0]["targetPort"], "http");

    contains_all(
        &c.ok(&[
            "expose",
            "deployment",
            "web",
            "--name=web-svc",
            "--port=80",
            "--target-port=8080",
        ]),
        &["service/web-svc exposed"],
    );
    let s = get_json(&c, &["service", "web-svc"]);
    assert_eq!(s["spec"]["selector"], json!({"app": "web"}));
    assert_eq!(s["spec"]["ports"][0]["port"], 80);
    assert_eq!(s["spec"]["ports"][0]["targetPort"], 8080);

    contains_all(
        &c.ok(&["create", "role", "r1", "--verb=get", "--resource=pods"]),
        &["role.rbac.authorization.k8s.io/r1 created"],
    );
    let r = get_json(&c, &["role", "r1"]);
    assert_eq!(
        r["rules"],
        json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}])
    );
    contains_all(
        &c.ok(&[
            "create",
            "clusterrole",
            "cr1",
            "--verb=get,list",
            "--resource=deployments.apps",
            "--resource-name=web",
        ]),
        &["clusterrole.rbac.authorization.k8s.io/cr1 created"],
    );
    let r = get_json(&c, &["clusterrole", "cr1"]);
    assert_eq!(
        r["rules"],
        json!([{"verbs": ["get", "list"], "apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["web"]}])
    );
}

fn ld(field: u64, b: &[u8]) -> Vec<u8> {
    assert!(b.len() < 128);
    let mut out = vec![((field << 3) | 2) as u8, b.len() as u8];
    out.extend_from_slice(b);
    out
}

/// A protobuf body with a field kube's definitions do not have is refused
/// with 415 naming it, and nothing is stored; Deployments with volumes (every
/// field of the definitions) and the bytes kubectl sent are accepted, and a
/// protobuf DeleteOptions (typed clients, `helm uninstall`) deletes.
#[test]
fn protobuf_bodies_unknown_fields_volumes_and_delete_options() {
    let c = ApiServer::start();
    let envelope = |kind: &[u8], raw: &[u8]| {
        let tm = [ld(1, b"apps/v1"), ld(2, kind)].concat();
        [b"k8s\0".to_vec(), ld(1, &tm), ld(2, raw)].concat()
    };
    let deployment = |name: &[u8], pod_extra: &[u8]| {
        let container = [ld(1, b"c"), ld(2, b"nginx")].concat();
        // PodSpec field 1: volumes ({name: data, emptyDir: {}}).
        let volume = [ld(1, b"data"), ld(2, &ld(2, &[]))].concat();
        let pod = [ld(1, &volume), ld(2, &container), pod_extra.to_vec()].concat();
        let spec = [
            ld(2, &ld(1, &[ld(1, b"app"), ld(2, b"v")].concat())),
            ld(
                3,
                &[
                    ld(1, &ld(11, &[ld(1, b"app"), ld(2, b"v")].concat())),
                    ld(2, &pod),
                ]
                .concat(),
            ),
        ]
        .concat();
        [ld(1, &ld(1, name)), ld(2, &spec)].concat()
    };
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let ct = "application/vnd.kubernetes.protobuf";
    // PodSpec field 999 (varint 1) is in no version of the definitions.
    let unknown = [0xb8, 0x3e, 0x01];
    let (code, body) = c.post_raw(
        path,
        ct,
        envelope(b"Deployment", &deployment(b"bad", &unknown)),
    );
    assert_eq!(code, 415, "{}", String::from_utf8_lossy(&body));
    let st: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(st["kind"], "Status");
    assert_eq!(st["reason"], "UnsupportedMediaType");
    let msg = st["message"].as_str().unwrap();
    contains_all(
        msg,
        &[
            "Deployment",
            "field number 999 of api.core.v1.PodSpec",
            "spec.template.spec",
            "JSON",
        ],
    );
    let err = c.fails(&["get", "deployment", "bad"]);
    contains_all(&err, &["NotFound"]);

    let (code, body) = c.post_raw(path, ct, envelope(b"Deployment", &deployment(b"vol", &[])));
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let volumes =
        get_json(&c, &["deployment", "vol"])["spec"]["template"]["spec"]["volumes"].clone();
    assert_eq!(
        volumes,
        serde_json::json!([{"name": "data", "emptyDir": {}}])
    );

    // DeleteOptions{propagationPolicy: Background} in the apps/v1 envelope.
    let opts = envelope(b"DeleteOptions", &ld(4, b"Background"));
    let (code, body) = c.request_raw("DELETE", &format!("{path}/vol"), ct, opts);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let err = c.fails(&["get", "deployment", "vol"]);
    contains_all(&err, &["NotFound"]);

    // The real bytes of `kubectl create deployment web --image=nginx
    // --replicas=2 --port=8080` (kubectl 1.33, -v=9).
    let real = std::fs::read("../kube-protobuf/tests/kubectl-1.33/deployment_web.bin").unwrap();
    let (code, body) = c.post_raw(path, ct, real);
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        c.ok(&[
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "2"
    );
}

/// A client that asks for protobuf first (client-go's typed clients) gets
/// objects, lists and errors as protobuf that decode to what JSON clients
/// get; a watch stays JSON.
#[test]
fn protobuf_answers_for_clients_that_ask() {
    let c = ApiServer::start();
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ]);
    c.ok(&["create", "configmap", "cfg", "--from-literal=a="]);
    let pb = "application/vnd.kubernetes.protobuf, application/json";
    for path in [
        "/apis/apps/v1/namespaces/default/deployments/web",
        "/apis/apps/v1/namespaces/default/deployments",
        "/api/v1/namespaces/default/configmaps/cfg",
        "/api/v1/namespaces/default/configmaps/missing",
    ] {
        let (code, ct, body) = c.request("GET", path, "", pb, vec![]);
        assert_eq!(ct, "application/vnd.kubernetes.protobuf", "{path}");
        let got = skiff_kube_protobuf::decode(&body).unwrap();
        let (json_code, _, json_body) = c.request("GET", path, "", "application/json", vec![]);
        assert_eq!(code, json_code, "{path}");
        let want: serde_json::Value = serde_json::from_slice(&json_body).unwrap();
        let mut want = want;
        if let Some(items) = want.get_mut("items").and_then(|i| i.as_array_mut()) {
            // Items of a JSON list carry no apiVersion/kind; nor do protobuf ones.
            for i in items {
                i.as_object_mut().unwrap().remove("apiVersion");
                i.as_object_mut().unwrap().remove("kind");
            }
        }
        if want.pointer("/details/group") == Some(&serde_json::json!("")) {
            // Status details' group is omitempty in kube's JSON.
            want["details"].as_object_mut().unwrap().remove("group");
        }
        assert_eq!(got, want, "{path}");
    }
    let (code, ct, _) = c.request(
        "GET",
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1",
        "",
        pb,
        vec![],
    );
    assert_eq!((code, ct.as_str()), (200, "application/json"));
    // kubectl's typed create path reads protobuf answers.
    contains_all(
        &c.ok(&["create", "service", "clusterip", "svc", "--tcp=80:8080"]),
        &["service/svc created"],
    );
}

/// PriorityClass as kube serves it: the two system classes from the start
/// and undeletable, `kubectl create priorityclass` (a protobuf body) and
/// `kubectl get pc` columns, one global default, an immutable value, and
/// the Priority admission step giving pods their class's priority.
#[test]
fn priority_classes_and_pod_priority() {
    let c = ApiServer::start();
    contains_all(
        &c.ok(&[
            "create",
            "priorityclass",
            "high",
            "--value=1000",
            "--description=important",
            "--preemption-policy=Never",
        ]),
        &["priorityclass.scheduling.k8s.io/high created"],
    );
    let out = c.ok(&["get", "pc"]);
    let header: Vec<&str> = out.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "VALUE", "GLOBAL-DEFAULT", "AGE", "PREEMPTIONPOLICY"]
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let row = |name: &str| {
        let r = rows.iter().find(|r| r[0] == name).expect(name);
        (r[1], r[2], r[4])
    };
    assert_eq!(row("high"), ("1000", "false", "Never"));
    assert_eq!(
        row("system-cluster-critical"),
        ("2000000000", "false", "PreemptLowerPriority")
    );
    assert_eq!(
        row("system-node-critical"),
        ("2000001000", "false", "PreemptLowerPriority")
    );
    contains_all(
        &c.ok(&["api-resources", "--api-group=scheduling.k8s.io"]),
        &[
            "priorityclasses",
            "pc",
            "scheduling.k8s.io/v1",
            "false",
            "PriorityClass",
        ],
    );

    let refused = |args: &[&str], want: &str| {
        let out = c.kubectl(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        contains_all(&String::from_utf8_lossy(&out.stderr), &[want]);
    };
    refused(
        &["delete", "pc", "system-node-critical"],
        "priorityclasses.scheduling.k8s.io \"system-node-critical\" is forbidden: this is a system priority class and cannot be deleted",
    );
    refused(
        &["create", "priorityclass", "system-mine", "--value=5"],
        "priority class names with 'system-' prefix are reserved for system use only",
    );
    refused(
        &[
            "patch",
            "pc",
            "high",
            "--type=merge",
            "-p",
            r#"{"value":5}"#,
        ],
        "value: Forbidden: may not be changed in an update.",
    );
    c.ok(&[
        "create",
        "priorityclass",
        "base",
        "--value=10",
        "--global-default=true",
    ]);
    refused(
        &[
            "create",
            "priorityclass",
            "other",
            "--value=20",
            "--global-default=true",
        ],
        "PriorityClass base is already marked as default. Only one default can exist",
    );

    let pod = |name: &str, class: &str| {
        let class = if class.is_empty() {
            String::new()
        } else {
            format!("  priorityClassName: {class}\n")
        };
        c.write(
            &format!("{name}.yaml"),
            &format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{class}  containers: [{{name: c, image: nginx}}]\n"),
        )
    };
    let p = pod("urgent", "high");
    c.ok(&["create", "-f", p.to_str().unwrap()]);
    let got = get_json(&c, &["pod", "urgent"]);
    assert_eq!(got["spec"]["priority"], 1000);
    assert_eq!(got["spec"]["preemptionPolicy"], "Never");
    // Without a class, the global default's.
    let p = pod("plain", "");
    c.ok(&["create", "-f", p.to_str().unwrap()]);
    let got = get_json(&c, &["pod", "plain"]);
    assert_eq!(got["spec"]["priorityClassName"], "base");
    assert_eq!(got["spec"]["priority"], 10);
    // A replace that leaves them out keeps them.
    let p = pod("urgent", "high");
    c.ok(&["replace", "-f", p.to_str().unwrap()]);
    assert_eq!(get_json(&c, &["pod", "urgent"])["spec"]["priority"], 1000);
    let p = pod("lost", "gold");
    refused(
        &["create", "-f", p.to_str().unwrap()],
        "pods \"lost\" is forbidden: no PriorityClass with name gold was found",
    );

    // Protobuf out, as client-go's typed clients ask.
    let path = "/apis/scheduling.k8s.io/v1/priorityclasses/high";
    let (code, _, body) = c.request(
        "GET",
        path,
        "",
        "application/vnd.kubernetes.protobuf",
        vec![],
    );
    assert_eq!(code, 200);
    let (_, _, json_body) = c.request("GET", path, "", "application/json", vec![]);
    let want: serde_json::Value = serde_json::from_slice(&json_body).unwrap();
    assert_eq!(skiff_kube_protobuf::decode(&body).unwrap(), want);
    assert_eq!(want["description"], "important");

    contains_all(
        &c.ok(&["delete", "pc", "high"]),
        &["priorityclass.scheduling.k8s.io \"high\" deleted"],
    );
}
