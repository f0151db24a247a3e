//! The built-in dashboard (`/ui/`) in headless Chromium against a cluster
//! of hollow nodes with the scheduler and controllers running: sign-in and
//! its refusals, 403s for a user without rights, nodes with their usage, a
//! Deployment scaled, a log followed, a pod deleted, and sign-in by client
//! certificate (`tests/py/dashboard.py` drives the browser). Screenshots of
//! the main pages land in `<target>/tmp/dashboard/` (docs/dashboard/ holds
//! copies).

mod common;

use common::Cluster;
use skiff_apiserver::pki;

const WORKLOADS: &str = "
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
      annotations:
        hollow.skiff.dev/cpu-millis: \"250\"
        hollow.skiff.dev/memory-bytes: \"50331648\"
        hollow.skiff.dev/log: \"hello from web {pod}\"
        hollow.skiff.dev/log-every-ms: \"400\"
    spec:
      containers:
      - name: web
        image: registry.local/web:1
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
  namespace: default
spec:
  template:
    metadata:
      annotations:
        hollow.skiff.dev/run-ms: \"300\"
    spec:
      restartPolicy: Never
      containers:
      - name: migrate
        image: registry.local/migrate:1
---
apiVersion: v1
kind: Pod
metadata:
  name: crasher
  namespace: default
  annotations:
    hollow.skiff.dev/run-ms: \"100\"
    hollow.skiff.dev/exit-code: \"1\"
spec:
  containers:
  - name: crash
    image: registry.local/crash:1
";

#[test]
fn the_dashboard_signs_in_shows_the_cluster_and_acts_as_the_user() {
    let mut c = Cluster::start(|_| {});
    c.start_control_loops();
    c.start_node("hn-a", 0);
    c.start_node("hn-b", 1);
    c.wait_output(&["get", "nodes"], "hn-b   Ready", 30);
    c.apply(WORKLOADS);
    c.eventually("web is available", 60, || {
        c.jsonpath(&["get", "deployment", "web"], "{.status.availableReplicas}") == "1"
    });

    // A service account bound to cluster-admin, one bound to nothing.
    c.ok(&[
        "create",
        "serviceaccount",
        "dashboard-admin",
        "-n",
        "kube-system",
    ]);
    c.ok(&[
        "create",
        "clusterrolebinding",
        "dashboard-admin",
        "--clusterrole=cluster-admin",
        "--serviceaccount=kube-system:dashboard-admin",
    ]);
    c.ok(&["create", "serviceaccount", "nobody"]);
    let admin = c.ok(&["create", "token", "dashboard-admin", "-n", "kube-system"]);
    let nobody = c.ok(&["create", "token", "nobody"]);
    // And a client certificate a browser can hold.
    let cert = pki::Ca::load(&c.pki_dir())
        .unwrap()
        .client_cert("dashboard-admin", &["system:masters"])
        .unwrap();
    let cert_path = c.write("browser.crt", &cert.cert_pem);
    let key_path = c.write("browser.key", &cert.key_pem);
    let shots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&shots).unwrap();
    let web_pods = || {
        c.jsonpath(
            &["get", "pods", "-l", "app=web"],
            "{.items[*].metadata.name}",
        )
    };

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/dashboard.py");
    let out = c.run_python_with(
        script,
        &[
            ("SKIFF_UI_ADMIN_TOKEN", admin.trim()),
            ("SKIFF_UI_NOBODY_TOKEN", nobody.trim()),
            ("SKIFF_UI_CERT", cert_path.to_str().unwrap()),
            ("SKIFF_UI_KEY", key_path.to_str().unwrap()),
            ("SKIFF_UI_SHOTS", shots.to_str().unwrap()),
            (
                "SKIFF_CHROMIUM",
                skiff_e2e::peers::chromium().to_str().unwrap(),
            ),
        ],
        "DASHBOARD PASSED",
    );

    // What the browser did happened in the cluster, as the admin.
    assert_eq!(
        c.jsonpath(&["get", "deployment", "web"], "{.spec.replicas}"),
        "3"
    );
    let deleted = out
        .lines()
        .find_map(|l| l.strip_prefix("deleted "))
        .expect("the script names the pod it deleted");
    assert!(deleted.starts_with("web-"), "{deleted}");
    c.eventually("the deleted pod is gone and replaced", 30, || {
        let now = web_pods();
        !now.split_whitespace().any(|p| p == deleted) && now.split_whitespace().count() == 3
    });
    // The restart is kubectl's: a restartedAt stamp on the template.
    let stamp = c.jsonpath(
        &["get", "deployment", "web"],
        "{.spec.template.metadata.annotations.kubectl\\.kubernetes\\.io/restartedAt}",
    );
    assert!(stamp.starts_with("20"), "restartedAt: {stamp:?}");
    // Cordoned and uncordoned through the page: schedulable again.
    assert_eq!(
        c.jsonpath(&["get", "node", "hn-b"], "{.spec.unschedulable}"),
        ""
    );
    // The user without rights changed nothing: the scale to 5 was refused.
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "reason=ScalingReplicaSet",
    ]);
    assert!(!events.contains("to 5"), "{events}");
    for page in ["login", "overview", "nodes", "deployment", "pod"] {
        assert!(shots.join(format!("{page}.png")).is_file(), "{page}.png");
    }
}
