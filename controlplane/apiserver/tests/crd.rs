//! CustomResourceDefinitions with the real kubectl 1.33 and the Python
//! client: a CRD applied from YAML serves its resource (discovery, short
//! names, printer columns), objects are checked against the structural
//! schema, pruned and defaulted, status and scale are subresources, RBAC
//! applies, and deleting the CRD deletes its objects.

use std::process::Stdio;

use skiff_test_support::api::{ApiServer, contains_all, fails, succeeds};
use skiff_test_support::peers;

const CRONTAB_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            x-kubernetes-validations:
            - rule: "!has(self.mode) || self.mode != 'slow' || !has(self.replicas) || self.replicas <= 5"
              message: slow crontabs run at most 5 replicas
            properties:
              cronSpec:
                type: string
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
                default: busybox
              replicas:
                type: integer
                minimum: 1
                maximum: 10
              mode:
                type: string
                enum: [fast, slow]
          status:
            type: object
            properties:
              replicas:
                type: integer
              labelSelector:
                type: string
              conditions:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [type]
                items:
                  type: object
                  properties:
                    type: {type: string}
                    status: {type: string}
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.labelSelector
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Ready
      type: string
      jsonPath: .status.conditions[?(@.type=="Ready")].status
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
"#;

const CRONTAB: &str = "apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: nightly
  labels: {tier: batch}
spec:
  cronSpec: '0 3 * * *'
  replicas: 2
";

#[test]
fn a_crd_from_yaml_serves_its_resource_like_a_built_in() {
    let c = ApiServer::start();
    contains_all(
        &c.apply(CRONTAB_CRD),
        &["customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com created"],
    );
    let status = c.ok(&[
        "get",
        "crd",
        "crontabs.stable.example.com",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status} {.status.conditions[?(@.type==\"NamesAccepted\")].status} {.status.acceptedNames.kind}",
    ]);
    assert_eq!(status, "True True CronTab");
    contains_all(
        &c.ok(&["api-resources", "--api-group=stable.example.com"]),
        &["crontabs", "ct", "stable.example.com/v1", "true", "CronTab"],
    );

    // Unknown fields: refused under kubectl's strict field validation,
    // pruned otherwise; defaults applied.
    let f = c.write(
        "crontab.yaml",
        &format!("{CRONTAB}  unknownField: dropped\n"),
    );
    let f = f.to_str().unwrap();
    contains_all(
        &c.fails(&["apply", "-f", f]),
        &[
            r#"CronTab in version "v1" cannot be handled as a CronTab: strict decoding error: unknown field "spec.unknownField""#,
        ],
    );
    contains_all(
        &c.ok(&["apply", "--validate=false", "-f", f]),
        &["crontab.stable.example.com/nightly created"],
    );
    assert_eq!(
        c.ok(&["get", "crontab", "nightly", "-o", "jsonpath={.spec}"]),
        r#"{"cronSpec":"0 3 * * *","image":"busybox","replicas":2}"#
    );

    // Client-side apply again: kubectl sends a JSON merge patch.
    contains_all(
        &c.apply(&CRONTAB.replace("replicas: 2", "replicas: 3")),
        &["crontab.stable.example.com/nightly configured"],
    );
    c.apply(CRONTAB);

    // Short name, kind and plural.group all resolve; printer columns show.
    let table = c.ok(&["get", "ct"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SPEC", "REPLICAS", "READY", "AGE"],
        "{table}"
    );
    contains_all(&table, &["nightly", "0 3 * * *", "2"]);
    contains_all(&c.ok(&["get", "CronTab"]), &["nightly"]);
    contains_all(&c.ok(&["get", "crontabs.stable.example.com"]), &["nightly"]);
    contains_all(
        &c.ok(&["get", "all"]),
        &["crontab.stable.example.com/nightly"],
    );

    // Changing the CRD (a column, a short name) changes what is served.
    let changed = CRONTAB_CRD
        .replace("shortNames: [ct]", "shortNames: [ct, cts]")
        .replace(
            "    - name: Age\n",
            "    - name: Image\n      type: string\n      jsonPath: .spec.image\n      priority: 1\n    - name: Age\n",
        );
    contains_all(
        &c.apply(&changed),
        &["customresourcedefinition.apiextensions.k8s.io/crontabs.stable.example.com configured"],
    );
    let wide = c.ok(&["get", "cts", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "SPEC", "REPLICAS", "READY", "IMAGE", "AGE"],
        "{wide}"
    );
    contains_all(&wide, &["busybox"]);

    contains_all(
        &c.ok(&["describe", "ct", "nightly"]),
        &[
            "Name:",
            "nightly",
            "API Version:  stable.example.com/v1",
            "Cron Spec:",
        ],
    );

    // Schema violations are refused with kube's field paths.
    let bad = c.write(
        "bad.yaml",
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {cronSpec: 'nope', replicas: 0, mode: medium}\n",
    );
    let err = c.fails(&["apply", "-f", bad.to_str().unwrap()]);
    contains_all(
        &err,
        &[
            "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1",
            r#"spec.cronSpec: Invalid value: "nope": spec.cronSpec in body should match"#,
            r#"spec.mode: Unsupported value: "medium": supported values: "fast", "slow""#,
        ],
    );
    let missing = c.write(
        "missing.yaml",
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {replicas: 1}\n",
    );
    contains_all(
        &c.fails(&["create", "-f", missing.to_str().unwrap()]),
        &["spec.cronSpec: Required value"],
    );
    c.fails(&["get", "ct", "bad"]);

    // Merge patch, JSON patch; strategic merge patch is refused (415).
    c.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"spec":{"mode":"fast"}}"#,
    ]);
    c.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/spec/image","value":"alpine"}]"#,
    ]);
    contains_all(
        &c.fails(&[
            "patch",
            "ct",
            "nightly",
            "-p",
            r#"{"spec":{"mode":"slow"}}"#,
        ]),
        &["the body of the request was in an unknown format"],
    );
    assert_eq!(
        c.ok(&[
            "get",
            "ct",
            "nightly",
            "-o",
            "jsonpath={.spec.mode} {.spec.image}"
        ]),
        "fast alpine"
    );
    contains_all(
        &c.fails(&[
            "patch",
            "ct",
            "nightly",
            "--type=merge",
            "-p",
            r#"{"spec":{"replicas":11}}"#,
        ]),
        &["spec.replicas in body should be less than or equal to 10"],
    );

    // Server-side apply takes the object over field by field.
    let ssa = c.write(
        "ssa.yaml",
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: nightly}\nspec: {cronSpec: '*/5 * * * *'}\n",
    );
    contains_all(
        &c.ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            ssa.to_str().unwrap(),
        ]),
        &["crontab.stable.example.com/nightly serverside-applied"],
    );
    assert_eq!(
        c.ok(&["get", "ct", "nightly", "-o", "jsonpath={.spec.cronSpec}"]),
        "*/5 * * * *"
    );

    // Selectors: labels and metadata.name / metadata.namespace.
    c.apply(
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: hourly, labels: {tier: web}}\nspec: {cronSpec: '0 * * * *'}\n",
    );
    let names = |args: &[&str]| {
        let mut a = vec!["get", "ct", "-o", "name"];
        a.extend_from_slice(args);
        c.ok(&a).trim().to_string()
    };
    assert_eq!(
        names(&["-l", "tier=batch"]),
        "crontab.stable.example.com/nightly"
    );
    assert_eq!(
        names(&["--field-selector", "metadata.name=hourly"]),
        "crontab.stable.example.com/hourly"
    );
    assert_eq!(
        names(&[
            "-A",
            "--field-selector",
            "metadata.namespace=default,metadata.name=nightly"
        ]),
        "crontab.stable.example.com/nightly"
    );
    contains_all(
        &c.fails(&["get", "ct", "--field-selector", "spec.cronSpec=x"]),
        &["field label not supported: spec.cronSpec"],
    );

    // Status: the main resource ignores it, /status only takes it.
    c.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ]);
    assert_eq!(
        c.ok(&["get", "ct", "nightly", "-o", "jsonpath={.status.replicas}"]),
        ""
    );
    c.ok(&[
        "patch",
        "ct",
        "nightly",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":2,"labelSelector":"tier=batch","conditions":[{"type":"Synced","status":"False"},{"type":"Ready","status":"True"}]},"spec":{"mode":"slow"}}"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "ct",
            "nightly",
            "-o",
            "jsonpath={.status.replicas} {.spec.mode}"
        ]),
        "2 fast"
    );
    let row = c.ok(&["get", "ct", "nightly", "--no-headers"]);
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..8],
        ["nightly", "*/5", "*", "*", "*", "*", "2", "True"],
        "{row}"
    );

    // Scale: kubectl scale sets the spec path; /scale reads both paths.
    contains_all(
        &c.ok(&["scale", "ct", "nightly", "--replicas=4"]),
        &["crontab.stable.example.com/nightly scaled"],
    );
    assert_eq!(
        c.ok(&["get", "ct", "nightly", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    // The CRD's CEL rules (x-kubernetes-validations) hold on every path.
    c.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"spec":{"mode":"slow"}}"#,
    ]);
    contains_all(
        &c.fails(&["scale", "ct", "nightly", "--replicas=6"]),
        &[r#"spec: Invalid value: "object": slow crontabs run at most 5 replicas"#],
    );
    c.ok(&[
        "patch",
        "ct",
        "nightly",
        "--type=merge",
        "-p",
        r#"{"spec":{"mode":"fast"}}"#,
    ]);
    let scale = c.ok(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs/nightly/scale",
    ]);
    contains_all(
        &scale,
        &[
            r#""kind":"Scale""#,
            r#""spec":{"replicas":4}"#,
            r#""replicas":2"#,
            r#""selector":"tier=batch""#,
        ],
    );

    // Deleting the CRD deletes its objects; the resource is no longer served.
    c.ok(&["delete", "ct", "hourly"]);
    // Foreground: the garbage collector's finalizer keeps the CRD a while
    // (there is none in this test), its objects go at once.
    c.kubectl(&[
        "delete",
        "crd",
        "crontabs.stable.example.com",
        "--cascade=foreground",
        "--wait=false",
    ]);
    // (kubectl may still map "ct" from its discovery cache: then the list
    // itself is not found.)
    let gone = c.fails(&["get", "ct"]);
    assert!(
        gone.contains("the server doesn't have a resource type \"ct\"")
            || gone.contains("the server could not find the requested resource"),
        "{gone}"
    );
    c.ok(&[
        "patch",
        "crd",
        "crontabs.stable.example.com",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    c.eventually("the CRD to go", 10, String::new, || {
        !c.kubectl(&["get", "crd", "crontabs.stable.example.com"])
            .status
            .success()
    });
    c.apply(CRONTAB_CRD);
    let left = c.kubectl(&["get", "ct", "-A"]);
    let left = succeeds(left, &["get ct after re-create"]);
    assert!(left.trim().is_empty(), "objects outlived their CRD: {left}");
}

const BACKENDS_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: backends.infra.example.org}
spec:
  group: infra.example.org
  scope: Cluster
  names: {plural: backends, kind: Backend, shortNames: [be]}
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
            properties:
              port: {x-kubernetes-int-or-string: true}
";

#[test]
fn crd_names_schemas_scopes_and_versions() {
    let c = ApiServer::start();
    // kube's checks of a CRD, with the field in the message.
    let wrong_name = CRONTAB_CRD.replace(
        "name: crontabs.stable.example.com",
        "name: crontab.stable.example.com",
    );
    let f = c.write("wrong-name.yaml", &wrong_name);
    contains_all(
        &c.fails(&["apply", "-f", f.to_str().unwrap()]),
        &[
            r#"metadata.name: Invalid value: "crontab.stable.example.com": must be spec.names.plural+"."+spec.group"#,
        ],
    );
    let non_structural = CRONTAB_CRD.replace(
        "          spec:\n            type: object\n            required",
        "          spec:\n            required",
    );
    let f = c.write("non-structural.yaml", &non_structural);
    contains_all(
        &c.fails(&["apply", "-f", f.to_str().unwrap()]),
        &[
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value: must not be empty for specified object fields",
        ],
    );
    let broken_rule = CRONTAB_CRD.replace("self.replicas <= 5\"", "self.replicas <=\"");
    let f = c.write("broken-rule.yaml", &broken_rule);
    contains_all(
        &c.fails(&["apply", "-f", f.to_str().unwrap()]),
        &[
            "spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value:",
            "compilation failed",
        ],
    );
    c.fails(&["get", "crd", "crontabs.stable.example.com"]);

    // Cluster scope, two versions (storage v1): objects written through
    // either version are one object; only apiVersion differs.
    // Server-side apply of the CRD itself (how large CRDs are installed).
    let f = c.write("backends.yaml", BACKENDS_CRD);
    contains_all(
        &c.ok(&["apply", "--server-side", "-f", f.to_str().unwrap()]),
        &[
            "customresourcedefinition.apiextensions.k8s.io/backends.infra.example.org serverside-applied",
        ],
    );
    c.apply(
        "apiVersion: infra.example.org/v1beta1\nkind: Backend\nmetadata: {name: db}\nspec: {port: http, weight: 3}\n",
    );
    assert_eq!(
        c.ok(&[
            "get",
            "backends.v1.infra.example.org",
            "db",
            "-o",
            "jsonpath={.apiVersion} {.spec.port} {.spec.weight}"
        ]),
        "infra.example.org/v1 http 3"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "backends.v1beta1.infra.example.org",
            "db",
            "-o",
            "jsonpath={.apiVersion}"
        ]),
        "infra.example.org/v1beta1"
    );
    let group = c.ok(&["get", "--raw", "/apis/infra.example.org"]);
    contains_all(
        &group,
        &[
            r#""preferredVersion":{"groupVersion":"infra.example.org/v1","version":"v1"}"#,
            "infra.example.org/v1beta1",
        ],
    );
    contains_all(&c.ok(&["get", "be"]), &["NAME", "AGE", "db"]);
    // A new storage version: objects stored at the old one still read at
    // every served version; storedVersions records both.
    c.apply(
        &BACKENDS_CRD
            .replace("storage: false", "storage: was-false")
            .replace("storage: true", "storage: false")
            .replace("storage: was-false", "storage: true"),
    );
    c.apply("apiVersion: infra.example.org/v1\nkind: Backend\nmetadata: {name: cache}\nspec: {port: 6379}\n");
    assert_eq!(
        c.ok(&[
            "get",
            "backends.v1beta1.infra.example.org",
            "-o",
            "jsonpath={.items[*].apiVersion}"
        ]),
        "infra.example.org/v1beta1 infra.example.org/v1beta1"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "backends.v1.infra.example.org",
            "-o",
            "jsonpath={.items[*].apiVersion}"
        ]),
        "infra.example.org/v1 infra.example.org/v1"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "crd",
            "backends.infra.example.org",
            "-o",
            "jsonpath={.status.storedVersions}"
        ]),
        r#"["v1","v1beta1"]"#
    );
    // Cluster-scoped: no namespace in the path.
    c.ok(&["get", "--raw", "/apis/infra.example.org/v1/backends/db"]);
    contains_all(
        &c.fails(&[
            "get",
            "--raw",
            "/apis/infra.example.org/v1/namespaces/default/backends/db",
        ]),
        &["NotFound"],
    );
    contains_all(
        &c.fails(&[
            "patch",
            "be",
            "db",
            "--type=merge",
            "-p",
            r#"{"spec":{"port":1.5}}"#,
        ]),
        &["spec.port in body must be of type integer or string"],
    );
    contains_all(
        &c.ok(&["explain", "crd.spec.versions.schema"]),
        &["CustomResourceDefinition", "openAPIV3Schema"],
    );
    // kubectl explain reads the published OpenAPI v3 schema.
    contains_all(
        &c.ok(&["explain", "backends.spec"]),
        &["KIND:", "Backend", "port"],
    );
}

/// `kubectl get <shortname> --watch`: the watch's Table rows carry the
/// printer columns as objects change.
#[test]
fn kubectl_watches_custom_objects_with_their_columns() {
    let c = ApiServer::start();
    c.apply(CRONTAB_CRD);
    let mut watch = c
        .kubectl_command(&peers::kubectl(), &c.kubeconfig)
        .args(["get", "ct", "--watch", "--no-headers"])
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
    let seen = |cells: &[&str]| {
        lines.lock().unwrap().iter().any(|l| {
            let got: Vec<&str> = l.split_whitespace().collect();
            got.len() > cells.len() && cells.iter().zip(&got).all(|(a, b)| a == b)
        })
    };
    // Seen in the initial list or as an event; the scale after it can only
    // arrive as an event.
    c.apply(CRONTAB);
    c.eventually("the watch to show nightly", 10, String::new, || {
        seen(&["nightly", "0", "3", "*", "*", "*", "2"])
    });
    c.ok(&["scale", "ct", "nightly", "--replicas=5"]);
    c.eventually(
        "the watch to show the new replicas",
        10,
        String::new,
        || seen(&["nightly", "0", "3", "*", "*", "*", "5"]),
    );
    watch.kill().unwrap();
    watch.wait().unwrap();
    reader.join().unwrap();
}

#[test]
fn namespace_deletion_takes_custom_objects() {
    let c = ApiServer::start();
    c.apply(CRONTAB_CRD);
    c.ok(&["create", "namespace", "team"]);
    c.ok(&[
        "apply",
        "-n",
        "team",
        "-f",
        c.write("ct.yaml", CRONTAB).to_str().unwrap(),
    ]);
    contains_all(&c.ok(&["get", "ct", "-n", "team"]), &["nightly"]);
    c.ok(&["delete", "namespace", "team"]);
    assert_eq!(c.ok(&["get", "ct", "-A", "-o", "name"]).trim(), "");
}

#[test]
fn custom_objects_count_towards_the_namespace_object_limit() {
    let c = ApiServer::start_tuned(|_| {}, |cfg| cfg.limits.max_objects_per_namespace = 2);
    c.apply(CRONTAB_CRD);
    c.ok(&["create", "ns", "small"]);
    c.ok(&["create", "cm", "one", "-n", "small"]);
    c.ok(&[
        "apply",
        "-n",
        "small",
        "-f",
        c.write("ct.yaml", CRONTAB).to_str().unwrap(),
    ]);
    let hourly = CRONTAB.replace("name: nightly", "name: hourly");
    let err = c.fails(&[
        "apply",
        "-n",
        "small",
        "-f",
        c.write("h.yaml", &hourly).to_str().unwrap(),
    ]);
    contains_all(
        &err,
        &[
            "exceeded quota: objects per namespace",
            "used: 2, limited: 2",
        ],
    );
    let err = c.fails(&["create", "cm", "two", "-n", "small"]);
    contains_all(&err, &["used: 2, limited: 2"]);
}

#[test]
fn rbac_applies_to_custom_resources() {
    let c = ApiServer::start();
    c.apply(CRONTAB_CRD);
    c.apply(CRONTAB);
    let carol = c.cert_kubeconfig("carol", &[]);
    contains_all(
        &fails(
            c.kubectl_as(&carol, &["get", "crontabs.stable.example.com"]),
            &["carol get"],
        ),
        &["Forbidden", "crontabs.stable.example.com"],
    );
    c.apply(
        "apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: crontab-reader, namespace: default}
rules:
- apiGroups: [stable.example.com]
  resources: [crontabs]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: carol-crontabs, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: crontab-reader}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}
",
    );
    contains_all(
        &succeeds(c.kubectl_as(&carol, &["get", "ct"]), &["carol get ct"]),
        &["nightly"],
    );
    contains_all(
        &fails(
            c.kubectl_as(&carol, &["delete", "ct", "nightly"]),
            &["carol delete"],
        ),
        &["Forbidden"],
    );
    c.ok(&["get", "ct", "nightly"]);
}

#[test]
fn python_client_custom_objects() {
    let c = ApiServer::start();
    c.apply(CRONTAB_CRD);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/crd.py");
    c.run_python(script, "python crd: all checks passed");
}
