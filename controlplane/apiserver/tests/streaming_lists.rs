//! Streaming lists (KEP-3157) as client-go 1.35 uses them: the initial
//! events, then the initial-events-end bookmark. Without that bookmark
//! kubectl 1.35's `wait`, `rollout status` and `get -w` hang until their
//! timeout.

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_test_support::api::{ApiServer, contains_all};

/// kubectl 1.35 (client-go's streaming lists) as admin.
fn latest(c: &ApiServer, args: &[&str]) -> Command {
    let mut cmd = c.kubectl_command(&skiff_test_support::peers::kubectl_latest(), &c.kubeconfig);
    cmd.args(args);
    cmd
}

fn succeeded(out: Output, what: &str, started: Instant) -> String {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "kubectl 1.35 {what} failed after {:?}:\nstdout: {so}\nstderr: {se}",
        started.elapsed()
    );
    so.into_owned()
}

#[test]
fn initial_events_end_with_a_bookmark_at_the_list_revision() {
    let c = ApiServer::start();
    c.ok(&["create", "cm", "a", "--from-literal=k=1"]);
    c.ok(&["create", "cm", "b", "--from-literal=k=1"]);
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps"]))
            .unwrap();
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true\
         &resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1",
    ]);
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = events[..2]
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "ADDED", "{out}");
            e["object"]["metadata"]["name"].as_str().unwrap()
        })
        .collect();
    assert!(names.contains(&"a") && names.contains(&"b"), "{out}");
    let end = &events[2];
    assert_eq!(end["type"], "BOOKMARK", "{out}");
    let meta = &end["object"]["metadata"];
    assert_eq!(
        meta["annotations"]["k8s.io/initial-events-end"], "true",
        "{out}"
    );
    assert_eq!(meta["resourceVersion"], list_rv.as_str(), "{out}");

    // sendInitialEvents=false: only what changes after the given revision.
    c.ok(&["label", "cm", "a", "x=y"]);
    let out = c.ok(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=false\
             &resourceVersionMatch=NotOlderThan&resourceVersion={list_rv}&timeoutSeconds=1"
        ),
    ]);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "MODIFIED", "{out}");
    assert_eq!(out.lines().count(), 1, "{out}");

    // kube's validation of the combination, 422 naming the field.
    for (query, field) in [
        (
            "sendInitialEvents=true&allowWatchBookmarks=true",
            "resourceVersionMatch",
        ),
        (
            "sendInitialEvents=true&resourceVersionMatch=NotOlderThan",
            "allowWatchBookmarks",
        ),
        ("resourceVersionMatch=NotOlderThan", "resourceVersionMatch"),
    ] {
        let err = c.fails(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/default/configmaps?watch=1&{query}"),
        ]);
        contains_all(&err, &[field, "Forbidden"]);
    }
    // A revision the store has not reached yet.
    let out = c.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?watch=1&sendInitialEvents=true\
         &resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&resourceVersion=999999",
    ]);
    contains_all(&out, &["ERROR", "Too large resource version"]);
}

#[test]
fn kubectl_1_35_wait_rollout_status_and_get_watch_finish() {
    let c = ApiServer::start();
    c.ok(&["create", "cm", "a", "--from-literal=k=1"]);

    // `wait --for=jsonpath` sees a later change.
    let started = Instant::now();
    let waiter = latest(
        &c,
        &[
            "wait",
            "cm/a",
            "--for=jsonpath={.data.k}=2",
            "--timeout=30s",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    c.ok(&["patch", "cm", "a", "-p", r#"{"data":{"k":"2"}}"#]);
    let out = succeeded(waiter.wait_with_output().unwrap(), "wait", started);
    contains_all(&out, &["configmap/a condition met"]);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );

    // `wait` on a condition already true returns at once.
    let started = Instant::now();
    let out = latest(
        &c,
        &[
            "wait",
            "cm/a",
            "--for=jsonpath={.data.k}=2",
            "--timeout=30s",
        ],
    )
    .output()
    .unwrap();
    succeeded(out, "wait (already met)", started);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // `rollout status` of a Deployment whose status says it is rolled out
    // (this in-process plane runs no controllers: the status is written as
    // the deployment controller would).
    c.ok(&[
        "create",
        "deployment",
        "web",
        "--image=registry.local/web:1.0",
        "--replicas=2",
    ]);
    let generation = c.ok(&[
        "get",
        "deploy",
        "web",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    let status = format!(
        r#"{{"status":{{"observedGeneration":{generation},"replicas":2,"updatedReplicas":2,"readyReplicas":2,"availableReplicas":2}}}}"#
    );
    c.ok(&[
        "patch",
        "deploy",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        &status,
    ]);
    let started = Instant::now();
    let out = latest(&c, &["rollout", "status", "deploy/web", "--timeout=30s"])
        .output()
        .unwrap();
    let out = succeeded(out, "rollout status", started);
    contains_all(&out, &["successfully rolled out"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // `get -w` prints what exists, then a change.
    let mut watcher = latest(&c, &["get", "cm", "-w", "--no-headers"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.starts_with("a "), "{first}");
    c.ok(&["create", "cm", "later"]);
    let seen = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.starts_with("later "));
    watcher.kill().unwrap();
    let _ = watcher.wait();
    assert!(seen.is_some(), "get -w did not print the new ConfigMap");
}

/// The Rust `kube` client's watcher with the StreamingList strategy: every
/// object, then `InitDone` (it ends the initial list only on the
/// initial-events-end bookmark), then live events.
#[test]
fn kube_rs_watcher_streams_the_initial_list() {
    use futures::StreamExt as _;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};
    use kube::runtime::watcher::{self, Event};

    let c = ApiServer::start();
    for n in ["a", "b", "c"] {
        c.ok(&["create", "cm", n, "--from-literal=k=1"]);
    }
    let url = format!("https://{}", c.addr());
    let kubeconfig = c.kubeconfig.clone();
    c.block_on(async move {
        let client = skiff_client::client_from_kubeconfig(&kubeconfig, Some(&url))
            .await
            .expect("kube client");
        let api: Api<ConfigMap> = Api::namespaced(client, "default");
        let cfg = watcher::Config::default().streaming_lists();
        let mut events = watcher::watcher(api.clone(), cfg).boxed();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("an event within 10 s (the bookmark ends the initial list)")
                .expect("the stream goes on")
                .expect("no watch error")
        };
        let mut names = Vec::new();
        loop {
            match next().await {
                Event::Init => {}
                Event::InitApply(cm) => names.push(cm.metadata.name.unwrap_or_default()),
                Event::InitDone => break,
                e => panic!("before InitDone: {e:?}"),
            }
        }
        names.sort();
        names.retain(|n| n.len() == 1);
        assert_eq!(names, ["a", "b", "c"]);
        let mut d = ConfigMap::default();
        d.metadata.name = Some("d".into());
        api.create(&PostParams::default(), &d)
            .await
            .expect("create d");
        match next().await {
            Event::Apply(cm) => assert_eq!(cm.metadata.name.as_deref(), Some("d")),
            e => panic!("after InitDone: {e:?}"),
        }
    });
}
