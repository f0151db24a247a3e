use sha2::Digest as _;

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("tests/kubectl-1.33/{name}")).unwrap()
}

/// A length-delimited field.
fn ld(n: u64, b: &[u8]) -> Vec<u8> {
    let mut out = varint((n << 3) | 2);
    out.extend(varint(b.len() as u64));
    out.extend(b);
    out
}

fn varint_field(n: u64, v: u64) -> Vec<u8> {
    let mut out = varint(n << 3);
    out.extend(varint(v));
    out
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// The `k8s\0` + runtime.Unknown envelope around `raw`.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let type_meta = [ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())].concat();
    [MAGIC.to_vec(), ld(1, &type_meta), ld(2, raw)].concat()
}

#[test]
fn vendored_definitions_are_unmodified() {
    let sums = std::fs::read_to_string("proto/SHA256SUMS").unwrap();
    let mut listed = Vec::new();
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        let data = std::fs::read(std::path::Path::new("proto").join(path)).unwrap();
        assert_eq!(hex::encode(sha2::Sha256::digest(&data)), sum, "{path}");
        listed.push(path.trim_start_matches("./").to_string());
    }
    fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|e| e == "proto") {
                out.push(p.strip_prefix("proto").unwrap().display().to_string());
            }
        }
    }
    let mut present = Vec::new();
    walk(std::path::Path::new("proto"), &mut present);
    present.sort();
    listed.sort();
    assert_eq!(present, listed, "every vendored file is in SHA256SUMS");
}

/// kubectl's `--dry-run=client -o json` of the same command, without what
/// the protobuf form cannot say (`creationTimestamp: null`) and the status
/// the server resets.
fn dry_run(name: &str) -> Value {
    fn strip(v: &mut Value) {
        if let Value::Object(m) = v {
            if m.get("creationTimestamp") == Some(&Value::Null) {
                m.remove("creationTimestamp");
            }
            m.values_mut().for_each(strip);
        }
    }
    let mut v: Value = serde_json::from_slice(&fixture(&format!("{name}.json"))).unwrap();
    v.as_object_mut().unwrap().remove("status");
    strip(&mut v);
    v
}

fn captured(name: &str) -> Value {
    decode(&fixture(&format!("{name}.bin"))).unwrap()
}

/// Bodies captured from kubectl 1.33 (`-v=9`) decode to the JSON kubectl
/// prints for the same object.
#[test]
fn real_kubectl_bodies_match_its_json() {
    for name in [
        "deployment_web",
        "job_j1",
        "cronjob_cj",
        "service_clusterip",
        "service_nodeport",
    ] {
        let mut got = captured(name);
        got.as_object_mut().unwrap().remove("status");
        assert_eq!(got, dry_run(name), "{name}");
    }
    assert_eq!(
        captured("service_clusterip")["spec"]["ports"][0]["targetPort"],
        8080
    );
    assert_eq!(
        captured("service_nodeport")["spec"]["ports"][0]["targetPort"],
        "http"
    );
    assert_eq!(
        captured("role_r1"),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": "r1"},
               "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]})
    );
    assert_eq!(
        captured("clusterrole_cr1")["rules"],
        json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]}])
    );
}

/// Objects with every special JSON form go to protobuf and back unchanged.
#[test]
fn objects_round_trip() {
    let objects = [
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "d", "namespace": "ns", "labels": {"empty": ""},
                            "creationTimestamp": "2026-12-05T10:00:00Z",
                            "managedFields": [{"manager": "kubectl", "operation": "Apply",
                                               "time": "2026-12-05T10:00:00Z",
                                               "fieldsType": "FieldsV1",
                                               "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
               "spec": {"replicas": 0, "revisionHistoryLimit": 0,
                        "selector": {"matchExpressions": [{"key": "a", "operator": "In", "values": ["x", ""]}]},
                        "strategy": {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}},
                        "template": {"metadata": {"labels": {"a": "x"}},
                                     "spec": {"terminationGracePeriodSeconds": 0,
                                              "automountServiceAccountToken": false,
                                              "containers": [{"name": "c", "image": "i",
                                                  "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}},
                                                  "readinessProbe": {"httpGet": {"path": "/", "port": "http"},
                                                                     "periodSeconds": 5},
                                                  "volumeMounts": [{"name": "v", "mountPath": "/v", "readOnly": true}]}],
                                              "volumes": [{"name": "v", "emptyDir": {"sizeLimit": "1Mi"}},
                                                          {"name": "s", "secret": {"secretName": "s", "defaultMode": 0, "optional": false}}],
                                              "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                                  {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}}}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
               "data": {"k": "AAEC/w=="}, "type": "Opaque"}),
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "n", "namespace": "kube-node-lease"},
               "spec": {"holderIdentity": "n", "leaseDurationSeconds": 40,
                        "renewTime": "2026-12-05T10:00:00.123456Z"}}),
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"},
               "data": {"spec": {"template": {"x": 1}}}, "revision": 3}),
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "widgets.example.com"},
               "spec": {"group": "example.com", "scope": "Namespaced",
                        "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"]},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                            "schema": {"openAPIV3Schema": {"type": "object",
                                "properties": {"spec": {"type": "object",
                                    "x-kubernetes-preserve-unknown-fields": true,
                                    "additionalProperties": false,
                                    "properties": {"size": {"type": "integer", "minimum": 1.5, "default": 3,
                                                            "enum": [1, 2, 3]},
                                                   "tags": {"type": "array", "items": {"type": "string"},
                                                            "x-kubernetes-list-type": "set"}}}}}}}]}}),
        json!({"apiVersion": "apps/v1", "kind": "DeploymentList",
               "metadata": {"resourceVersion": "7"}, "items": []}),
        json!({"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure",
               "message": "nope", "reason": "NotFound", "code": 404}),
    ];
    for obj in objects {
        let bytes = encode(&obj).unwrap_or_else(|e| panic!("{e}: {obj}"));
        let mut want = obj.clone();
        if want["kind"] == "DeploymentList" {
            want.as_object_mut().unwrap().remove("items"); // empty: omitted
        }
        assert_eq!(decode(&bytes).unwrap(), want);
    }
    for name in ["deployment_web", "job_j1", "service_nodeport", "role_r1"] {
        let v = captured(name);
        assert_eq!(decode(&encode(&v).unwrap()).unwrap(), v, "{name}");
    }
}

/// Typed clients send DeleteOptions (and other option kinds) as protobuf,
/// named in the group version of the resource (`helm uninstall`).
#[test]
fn delete_options_in_any_group_version() {
    let raw = [varint_field(1, 0), ld(4, b"Foreground"), ld(5, b"All")].concat();
    assert_eq!(
        decode(&envelope("apps/v1", "DeleteOptions", &raw)).unwrap(),
        json!({"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
               "propagationPolicy": "Foreground", "dryRun": ["All"]})
    );
    let pre = ld(2, &ld(1, b"uid-1"));
    assert_eq!(
        decode(&envelope("v1", "DeleteOptions", &pre)).unwrap()["preconditions"],
        json!({"uid": "uid-1"})
    );
}

/// A field number the definition does not know is refused with where it
/// was, never dropped; malformed bodies are errors, not panics.
#[test]
fn unknown_fields_and_bad_bodies_are_refused() {
    // spec.template.spec, field 999 of PodSpec.
    let raw = ld(2, &ld(3, &ld(2, &varint_field(999, 1))));
    let e = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap_err();
    assert_eq!(
        e,
        Error::UnknownField {
            kind: "Deployment".into(),
            message: "api.core.v1.PodSpec".into(),
            number: 999,
            path: "spec.template.spec".into(),
        }
    );
    assert!(e.to_string().contains("nothing was stored"), "{e}");
    let e = decode(&envelope("v1", "ConfigMap", &varint_field(77, 1))).unwrap_err();
    assert!(e.to_string().contains("at the top level"), "{e}");

    assert_eq!(decode(b"{\"kind\":1}").unwrap_err(), Error::NoEnvelope);
    assert!(matches!(
        decode(&envelope("example.com/v1", "Widget", &[])).unwrap_err(),
        Error::UnknownKind { .. }
    ));
    // A known field with the wrong wire type, and a truncated message.
    let e = decode(&envelope("apps/v1", "Deployment", &varint_field(2, 1))).unwrap_err();
    assert!(matches!(e, Error::Malformed(_)), "{e:?}");
    let mut cut = fixture("deployment_web.bin");
    cut.truncate(cut.len() - 3);
    assert!(matches!(decode(&cut).unwrap_err(), Error::Malformed(_)));
    // Nesting deeper than prost's recursion limit (JSONSchemaProps nests
    // itself): an error, not a stack overflow.
    let mut schema = Vec::new();
    for _ in 0..500 {
        schema = ld(1, &schema); // JSONSchemaPropsOrArray.schema
        schema = ld(24, &schema); // JSONSchemaProps.items
    }
    let crd = ld(2, &ld(7, &ld(4, &ld(1, &schema))));
    let e = decode(&envelope(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        &crd,
    ));
    assert!(matches!(e.unwrap_err(), Error::Malformed(_)));
    // JSON that does not fit the definition.
    let e = encode(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": 1}}));
    assert!(matches!(e.unwrap_err(), Error::Invalid { path, .. } if path == "metadata.name"));
    let e = encode(&json!({"apiVersion": "v1", "kind": "ConfigMap", "bogus": 1}));
    assert!(matches!(e.unwrap_err(), Error::Invalid { .. }));
}

#[test]
fn times_and_durations_as_kube_writes_them() {
    assert_eq!(format_time(0, 0, false).unwrap(), "1970-01-01T00:00:00Z");
    assert_eq!(
        format_time(951_782_400, 0, false).unwrap(),
        "2000-02-29T00:00:00Z"
    );
    assert_eq!(
        format_time(951_782_400, 5_000, true).unwrap(),
        "2000-02-29T00:00:00.000005Z"
    );
    for (ns, s) in [
        (0, "0s"),
        (1_500_000_000, "1.5s"),
        (90 * 60 * 1_000_000_000, "1h30m0s"),
        (61_000_000_000, "1m1s"),
        (2_000_000, "2ms"),
        (-3_000_000_000, "-3s"),
    ] {
        assert_eq!(go_duration(ns), s);
        assert_eq!(parse_go_duration(s, "").unwrap(), ns, "{s}");
    }
    assert!(parse_go_duration("5 parsecs", "").is_err());
}

/// A bounded run (about a second) of the fuzz target's invariant over
/// mutations of the captured kubectl bodies (`cargo xtask fuzz kube_protobuf` runs it
/// coverage-guided).
#[test]
fn fuzz_kube_protobuf_bounded() {
    let seeds: Vec<Vec<u8>> = std::fs::read_dir("tests/kubectl-1.33")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert!(seeds.len() >= 5);
    let mut run = skiff_test_support::fuzz::Bounded::from_env(1.0, 0x9b);
    for seed in &seeds {
        fuzz::one(seed);
    }
    while run.running() {
        let mut input = seeds[run.below(seeds.len())].clone();
        run.mutate(&mut input);
        fuzz::one(&input);
    }
}
