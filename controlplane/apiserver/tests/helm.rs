//! Helm 4 (the newest client here) drives a release through install,
//! upgrade, history, rollback and uninstall against the API server. Helm's
//! typed clients send protobuf (DeleteOptions on uninstall) and keep the
//! release in Secrets; nothing of the release may be left after uninstall.
//! Not yet covered (issue 19): `--wait` on workloads (no nodes here) and a
//! chart that ships a CRD.

use std::process::Command;

use skiff_test_support::api::{ApiServer, contains_all};

fn helm(c: &ApiServer, args: &[&str]) -> std::process::Output {
    Command::new(skiff_test_support::peers::helm())
        .args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HELM_CACHE_HOME", c.path("helm-cache"))
        .env("HELM_CONFIG_HOME", c.path("helm-config"))
        .env("HELM_DATA_HOME", c.path("helm-data"))
        .output()
        .expect("running helm")
}

fn helm_ok(c: &ApiServer, args: &[&str]) -> String {
    let out = helm(c, args);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helm {args:?} failed:\n{text}");
    text
}

const CHART: &str = "apiVersion: v2\nname: shop\nversion: 0.1.0\n";

const TEMPLATES: &str = r#"apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ .Release.Name }}-sa
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ .Release.Name }}-config
data:
  greeting: {{ .Values.greeting | quote }}
---
apiVersion: v1
kind: Secret
metadata:
  name: {{ .Release.Name }}-secret
stringData:
  password: hunter2
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: {{ .Release.Name }}-reader
rules:
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: {{ .Release.Name }}-reader
subjects:
- kind: ServiceAccount
  name: {{ .Release.Name }}-sa
  namespace: {{ .Release.Namespace }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: {{ .Release.Name }}-reader
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}-web}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}-web}
    spec:
      serviceAccountName: {{ .Release.Name }}-sa
      containers:
      - name: web
        image: registry.example/web:1
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /, port: 8080}
        volumeMounts: [{name: config, mountPath: /config}]
      volumes:
      - name: config
        configMap: {name: {{ .Release.Name }}-config}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ .Release.Name }}-web
spec:
  selector: {app: {{ .Release.Name }}-web}
  ports: [{port: 80, targetPort: 8080}]
"#;

#[test]
fn helm_installs_upgrades_rolls_back_and_uninstalls() {
    let c = ApiServer::start();
    c.write("chart/Chart.yaml", CHART);
    c.write("chart/values.yaml", "greeting: hello\nreplicas: 1\n");
    c.write("chart/templates/all.yaml", TEMPLATES);
    let chart = c.path("chart");
    let chart = chart.to_str().unwrap();

    helm_ok(&c, &["install", "shop", chart, "--namespace", "default"]);
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "shop-config",
            "-o",
            "jsonpath={.data.greeting}"
        ]),
        "hello"
    );
    // The probe and the volume arrived whole (Helm 4 sends them typed).
    let probe = c.ok(&[
        "get",
        "deploy",
        "shop-web",
        "-o",
        "jsonpath={.spec.template.spec.containers[0].readinessProbe.httpGet.port}",
    ]);
    assert_eq!(probe, "8080");

    helm_ok(
        &c,
        &[
            "upgrade",
            "shop",
            chart,
            "--set",
            "greeting=bonjour,replicas=3",
        ],
    );
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "shop-config",
            "-o",
            "jsonpath={.data.greeting}"
        ]),
        "bonjour"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "shop-web",
            "-o",
            "jsonpath={.spec.replicas}"
        ]),
        "3"
    );

    helm_ok(&c, &["rollback", "shop", "1"]);
    assert_eq!(
        c.ok(&[
            "get",
            "cm",
            "shop-config",
            "-o",
            "jsonpath={.data.greeting}"
        ]),
        "hello"
    );
    let history = helm_ok(&c, &["history", "shop"]);
    contains_all(
        &history,
        &["Install complete", "Upgrade complete", "Rollback to 1"],
    );
    assert_eq!(history.lines().count(), 4, "{history}");

    helm_ok(&c, &["uninstall", "shop"]);
    let left = c.ok(&[
        "get",
        "deploy,svc,cm,secret,sa,role,rolebinding",
        "-l",
        "app.kubernetes.io/managed-by!=nothing",
        "-o",
        "name",
    ]);
    for gone in [
        "shop-web",
        "shop-config",
        "shop-secret",
        "shop-sa",
        "shop-reader",
        "sh.helm.release",
    ] {
        assert!(!left.contains(gone), "{gone} left after uninstall:\n{left}");
    }
}
