//! Bounds that keep one request or one client from taking the API server
//! down, driven with the real kubectl: patches that would amplify an object,
//! objects over the size limit, YAML alias bombs.

use skiff_test_support::api::{ApiServer, contains_all};

/// kube's (etcd's) object size limit, 1.5 MiB.
const MAX_OBJECT: usize = 3 * 512 * 1024;

fn configmap(c: &ApiServer, name: &str, value_len: usize) {
    let path = c.write(
        &format!("{name}.yaml"),
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  a: \"{}\"\n",
            "x".repeat(value_len)
        ),
    );
    c.ok(&["create", "-f", path.to_str().unwrap()]);
}

/// resourceVersion and the size of `data`, to see that nothing changed.
fn state(c: &ApiServer, name: &str) -> (String, usize) {
    let out = c.ok(&["get", "cm", name, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    (
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_string(),
        v["data"].to_string().len(),
    )
}

/// Doubling copies: each `copy` of `/data` into `/data/cN` doubles the
/// object. Twelve of a 1 KB value are 4 MB, past kube's 3 MiB bound on
/// what a JSON patch may copy (forty would be a terabyte: the issue's
/// reproduction, which made the process abort).
fn doubling_patch(copies: usize) -> String {
    let ops: Vec<String> = (0..copies)
        .map(|i| format!(r#"{{"op":"copy","from":"/data","path":"/data/c{i}"}}"#))
        .collect();
    format!("[{}]", ops.join(","))
}

#[test]
fn json_patch_amplification_is_refused_and_the_server_stays_up() {
    let c = ApiServer::start();
    configmap(&c, "amp", 1000);
    let before = state(&c, "amp");
    for copies in [12, 40] {
        let p = doubling_patch(copies);
        let err = c.fails(&["patch", "cm", "amp", "--type=json", "-p", &p]);
        contains_all(
            &err,
            &["RequestEntityTooLarge", "Request entity too large", "copy"],
        );
    }
    // More operations than kube allows in one JSON patch.
    let ops = vec![r#"{"op":"test","path":"/data/a","value":"x"}"#; 10_001].join(",");
    let file = c.write("ops.json", &format!("[{ops}]"));
    let err = c.fails(&[
        "patch",
        "cm",
        "amp",
        "--type=json",
        "--patch-file",
        file.to_str().unwrap(),
    ]);
    contains_all(&err, &["Request entity too large", "maximum operations"]);
    // Nothing changed, and the server still answers.
    assert_eq!(state(&c, "amp"), before);
    c.ok(&["get", "ns", "default"]);
    // Copies within the bounds are an ordinary patch.
    let p = r#"[{"op":"copy","from":"/data/a","path":"/data/b"},{"op":"copy","from":"/data/b","path":"/data/c"}]"#;
    c.ok(&["patch", "cm", "amp", "--type=json", "-p", p]);
    assert!(state(&c, "amp").1 > 3 * 1000);
}

#[test]
fn patches_and_applies_cannot_grow_an_object_past_the_limit() {
    let c = ApiServer::start();
    // 1 MB now: the next megabyte would make it 2 MB.
    configmap(&c, "grow", 1 << 20);
    let before = state(&c, "grow");
    let big = "y".repeat(1 << 20);
    let merge = format!(r#"{{"data":{{"b":"{big}"}}}}"#);
    let file = c.write("grow.json", &merge);
    let file = file.to_str().unwrap();
    for kind in ["merge", "strategic"] {
        let err = c.fails(&[
            "patch",
            "cm",
            "grow",
            &format!("--type={kind}"),
            "--patch-file",
            file,
        ]);
        contains_all(
            &err,
            &[
                "RequestEntityTooLarge",
                "ConfigMap \"grow\" would be",
                &format!("more than the limit of {MAX_OBJECT}"),
            ],
        );
    }
    let add = format!(r#"[{{"op":"add","path":"/data/b","value":"{big}"}}]"#);
    let file = c.write("add.json", &add);
    let err = c.fails(&[
        "patch",
        "cm",
        "grow",
        "--type=json",
        "--patch-file",
        file.to_str().unwrap(),
    ]);
    contains_all(&err, &["Request entity too large", "ConfigMap \"grow\""]);
    // Server-side apply of the same growth, by a second manager.
    let manifest = c.write(
        "apply.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: grow\ndata:\n  b: \"{big}\"\n"
        ),
    );
    let err = c.fails(&[
        "apply",
        "--server-side",
        "--field-manager=grower",
        "-f",
        manifest.to_str().unwrap(),
    ]);
    contains_all(&err, &["Request entity too large", "ConfigMap \"grow\""]);
    // Nothing stored half-done: same version, same content.
    assert_eq!(state(&c, "grow"), before);

    // A new object over the limit is refused as a create and as an apply,
    // and is not there afterwards.
    let huge = c.write(
        "huge.yaml",
        &format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: huge\ndata:\n  a: \"{}\"\n",
            "z".repeat(2 << 20)
        ),
    );
    let huge = huge.to_str().unwrap();
    let err = c.fails(&["create", "-f", huge]);
    contains_all(&err, &["Request entity too large", "ConfigMap \"huge\""]);
    let err = c.fails(&["apply", "--server-side", "-f", huge]);
    contains_all(&err, &["Request entity too large", "ConfigMap \"huge\""]);
    let err = c.fails(&["get", "cm", "huge"]);
    assert!(err.contains("NotFound"), "{err}");
    // Shrinking and deleting still work.
    c.ok(&[
        "patch",
        "cm",
        "grow",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/a"}]"#,
    ]);
    c.ok(&["delete", "cm", "grow"]);
}

/// YAML bodies go to the server as YAML only from raw clients (kubectl
/// converts to JSON first): send one directly.
#[test]
fn yaml_alias_bombs_are_refused() {
    let c = ApiServer::start();
    let pad = vec!["0"; 200_000].join(",");
    let mut doc = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lol\npad: [{pad}]\nbinaryData: {{}}\nlol0: &a0 \"{}\"\n",
        "x".repeat(1000)
    );
    for i in 1..8 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        doc.push_str(&format!("lol{i}: &a{i} [{refs}]\n"));
    }
    let (code, body) = c.post_raw(
        "/api/v1/namespaces/default/configmaps",
        "application/yaml",
        doc.into_bytes(),
    );
    let body = String::from_utf8_lossy(&body);
    assert_eq!(code, 413, "{body}");
    assert!(body.contains("aliases"), "{body}");
    c.ok(&["get", "ns", "default"]);
}

#[test]
fn a_namespace_holds_at_most_its_object_limit() {
    let c = ApiServer::start_tuned(|_| {}, |cfg| cfg.limits.max_objects_per_namespace = 10);
    c.ok(&["create", "ns", "full"]);
    for i in 0..10 {
        c.ok(&["create", "cm", &format!("c{i}"), "-n", "full"]);
    }
    let err = c.fails(&["create", "cm", "c10", "-n", "full"]);
    contains_all(
        &err,
        &[
            "configmaps \"c10\" is forbidden: exceeded quota: objects per namespace",
            "used: 10, limited: 10",
        ],
    );
    // Any kind counts; other namespaces are not affected.
    let err = c.fails(&["create", "secret", "generic", "s", "-n", "full"]);
    assert!(err.contains("exceeded quota"), "{err}");
    c.ok(&["create", "cm", "c10", "-n", "default"]);
    // Updates and deletes still work; a delete makes room.
    c.ok(&["label", "cm", "c0", "x=y", "-n", "full"]);
    c.ok(&["delete", "cm", "c0", "-n", "full"]);
    c.ok(&["create", "cm", "c10", "-n", "full"]);
}

/// etcd's NOSPACE through the API: past the store quota writes get a clear
/// error; reads and deletes work; compaction frees the space.
#[test]
fn the_store_quota_refuses_writes_and_allows_deletes() {
    let c = ApiServer::start_tuned(|_| {}, |cfg| cfg.store.quota_bytes = 2 << 20);
    let value = "q".repeat(200_000);
    let file = c.write("value.txt", &value);
    let file = format!("--from-file=a={}", file.to_str().unwrap());
    let file = file.as_str();
    let mut created = 0;
    let err = loop {
        let out = c.kubectl(&["create", "cm", &format!("q{created}"), file]);
        if !out.status.success() {
            break String::from_utf8_lossy(&out.stderr).into_owned();
        }
        created += 1;
        let stored = c.with_state(|s| async move { s.store.stored_bytes() });
        assert!(
            created < 20,
            "the quota never refused a write ({stored} bytes stored)"
        );
    };
    contains_all(&err, &["database space exceeded", "quota 2097152"]);
    assert!(created >= 5, "{created}");
    // Reads work; so do deletes, even of everything.
    let out = c.ok(&["get", "cm", "-o", "name"]);
    assert_eq!(out.lines().filter(|l| l.contains("/q")).count(), created);
    c.ok(&["delete", "cm", "--all"]);
    // History still holds the values until compaction frees them.
    let err = c.fails(&["create", "cm", "again", file]);
    assert!(err.contains("database space exceeded"), "{err}");
    c.compact();
    c.ok(&["create", "cm", "again", file]);
}
