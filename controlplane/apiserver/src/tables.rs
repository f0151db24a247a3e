//! `Table` responses (meta.k8s.io/v1), so `kubectl get` prints the same
//! columns as against kube-apiserver. Priority-1 columns show with `-o wide`.

use serde_json::{Value, json};

use crate::registry::Resource;

/// Whether the Accept header asks for a Table.
pub fn wants_table(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| {
        a.split(',')
            .next()
            .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
    })
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

fn n(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(x: String) -> String {
    if x.is_empty() { "<none>".into() } else { x }
}

/// kube's `duration.HumanDuration`.
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 365 * 2 {
        format!("{d}d")
    } else if d < 365 * 8 {
        if d % 365 == 0 {
            format!("{}y", d / 365)
        } else {
            format!("{}y{}d", d / 365, d % 365)
        }
    } else {
        format!("{}y", d / 365)
    }
}

fn age(ts: Option<&Value>) -> String {
    let Some(t) = ts.and_then(Value::as_str) else {
        return "<unknown>".into();
    };
    match t.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => human_duration(crate::storage::unix_now() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

fn created(o: &Value) -> String {
    age(o.pointer("/metadata/creationTimestamp"))
}

fn label_selector(sel: Option<&Value>) -> String {
    let Some(m) = sel.and_then(Value::as_object) else {
        return "<none>".into();
    };
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", s(Some(v))))
        .collect();
    or_none(parts.join(","))
}

fn containers(o: &Value, path: &str) -> (String, String) {
    let cs = o
        .pointer(path)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

type Col = (&'static str, &'static str, u8);

fn columns(r: &Resource) -> Vec<Col> {
    let name: Col = ("Name", "string", 0);
    let age: Col = ("Age", "string", 0);
    match (r.group, r.kind) {
        ("", "Namespace") => vec![name, ("Status", "string", 0), age],
        ("", "Node") => vec![
            name,
            ("Status", "string", 0),
            ("Roles", "string", 0),
            age,
            ("Version", "string", 0),
            ("Internal-IP", "string", 1),
        ],
        ("", "Pod") => vec![
            name,
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            age,
            ("IP", "string", 1),
            ("Node", "string", 1),
            ("Nominated Node", "string", 1),
            ("Readiness Gates", "string", 1),
        ],
        ("", "Service") => vec![
            name,
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            age,
            ("Selector", "string", 1),
        ],
        ("", "Endpoints") => vec![name, ("Endpoints", "string", 0), age],
        ("", "ConfigMap") => vec![name, ("Data", "integer", 0), age],
        ("", "Secret") => vec![name, ("Type", "string", 0), ("Data", "integer", 0), age],
        ("", "ServiceAccount") => vec![name, ("Secrets", "integer", 0), age],
        ("apps", "Deployment") => vec![
            name,
            ("Ready", "string", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "ReplicaSet") => vec![
            name,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            age,
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        ("apps", "DaemonSet") => vec![
            name,
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Up-to-date", "integer", 0),
            ("Available", "integer", 0),
            ("Node Selector", "string", 0),
            age,
        ],
        ("batch", "Job") => vec![
            name,
            ("Status", "string", 0),
            ("Completions", "string", 0),
            age,
        ],
        ("batch", "CronJob") => vec![
            name,
            ("Schedule", "string", 0),
            ("Suspend", "boolean", 0),
            ("Active", "integer", 0),
            ("Last Schedule", "string", 0),
            age,
        ],
        ("coordination.k8s.io", "Lease") => vec![name, ("Holder", "string", 0), age],
        ("" | "events.k8s.io", "Event") => vec![
            ("Last Seen", "string", 0),
            ("Type", "string", 0),
            ("Reason", "string", 0),
            ("Object", "string", 0),
            ("Message", "string", 0),
            ("Name", "string", 1),
        ],
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            vec![name, ("Role", "string", 0), age]
        }
        ("rbac.authorization.k8s.io", _) => vec![name, ("Created At", "date", 0)],
        _ => vec![name, age],
    }
}

fn cells(r: &Resource, o: &Value) -> Vec<Value> {
    let name = json!(s(o.pointer("/metadata/name")));
    let age_cell = json!(created(o));
    match (r.group, r.kind) {
        ("", "Namespace") => vec![name, json!(s(o.pointer("/status/phase"))), age_cell],
        ("", "Node") => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
                .map(|c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            let ip = o
                .pointer("/status/addresses")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|a| a["type"] == "InternalIP"))
                .map(|a| s(a.get("address")))
                .unwrap_or_default();
            let roles: Vec<&str> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .map(|l| {
                    l.keys()
                        .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                        .collect()
                })
                .unwrap_or_default();
            vec![
                name,
                json!(ready),
                json!(or_none(roles.join(","))),
                age_cell,
                json!(s(o.pointer("/status/nodeInfo/kubeletVersion"))),
                json!(or_none(ip)),
            ]
        }
        ("", "Pod") => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|c| c["ready"] == true).count();
            let restarts: i64 = statuses.iter().map(|c| n(c.get("restartCount"))).sum();
            let status = pod_status(o, &statuses);
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts.to_string()),
                age_cell,
                json!(or_none(s(o.pointer("/status/podIP")))),
                json!(or_none(s(o.pointer("/spec/nodeName")))),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        ("", "Service") => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| match p.get("nodePort") {
                    Some(np) => format!(
                        "{}:{}/{}",
                        n(p.get("port")),
                        s(Some(np)),
                        s(p.get("protocol"))
                    ),
                    None => format!("{}/{}", n(p.get("port")), s(p.get("protocol"))),
                })
                .collect();
            let external = o
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|x| s(Some(x))).collect::<Vec<_>>().join(","))
                .unwrap_or_default();
            vec![
                name,
                json!(s(o.pointer("/spec/type"))),
                json!(or_none(s(o.pointer("/spec/clusterIP")))),
                json!(or_none(external)),
                json!(or_none(ports.join(","))),
                age_cell,
                json!(label_selector(o.pointer("/spec/selector"))),
            ]
        }
        ("", "Endpoints") => {
            let mut eps = Vec::new();
            for sub in o
                .get("subsets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for a in sub
                    .get("addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    for p in sub
                        .get("ports")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        eps.push(format!("{}:{}", s(a.get("ip")), n(p.get("port"))));
                    }
                }
            }
            vec![name, json!(or_none(eps.join(","))), age_cell]
        }
        ("", "ConfigMap") => {
            let count = ["data", "binaryData"]
                .iter()
                .map(|f| o.get(*f).and_then(Value::as_object).map_or(0, |m| m.len()))
                .sum::<usize>();
            vec![name, json!(count), age_cell]
        }
        ("", "Secret") => vec![
            name,
            json!(s(o.get("type"))),
            json!(
                o.get("data")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len())
            ),
            age_cell,
        ],
        ("", "ServiceAccount") => vec![
            name,
            json!(
                o.get("secrets")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            age_cell,
        ],
        ("apps", "Deployment") => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    n(o.pointer("/status/readyReplicas")),
                    n(o.pointer("/spec/replicas"))
                )),
                json!(n(o.pointer("/status/updatedReplicas"))),
                json!(n(o.pointer("/status/availableReplicas"))),
                age_cell,
                json!(c),
                json!(i),
                json!(label_selector(o.pointer("/spec/selector/matchLabels"))),
            ]
        }
        ("apps", "ReplicaSet") => {
            let (c, i) = containers(o, "/spec/template/spec/containers");
            vec![
                name,
                json!(n(o.pointer("/spec/replicas"))),
                json!(n(o.pointer("/status/replicas"))),
                json!(n(o.pointer("/status/readyReplicas"))),
                age_cell,
                json!(c),
                json!(i),
                json!(label_selector(o.pointer("/spec/selector/matchLabels"))),
            ]
        }
        ("apps", "DaemonSet") => vec![
            name,
            json!(n(o.pointer("/status/desiredNumberScheduled"))),
            json!(n(o.pointer("/status/currentNumberScheduled"))),
            json!(n(o.pointer("/status/numberReady"))),
            json!(n(o.pointer("/status/updatedNumberScheduled"))),
            json!(n(o.pointer("/status/numberAvailable"))),
            json!(label_selector(
                o.pointer("/spec/template/spec/nodeSelector")
            )),
            age_cell,
        ],
        ("batch", "Job") => {
            let done = n(o.pointer("/status/succeeded"));
            let want = o
                .pointer("/spec/completions")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let status = if done >= want { "Complete" } else { "Running" };
            vec![
                name,
                json!(status),
                json!(format!("{done}/{want}")),
                age_cell,
            ]
        }
        ("batch", "CronJob") => vec![
            name,
            json!(s(o.pointer("/spec/schedule"))),
            json!(
                o.pointer("/spec/suspend")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            json!(
                o.pointer("/status/active")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len)
            ),
            json!(
                o.pointer("/status/lastScheduleTime")
                    .map_or("<none>".to_string(), |t| age(Some(t)))
            ),
            age_cell,
        ],
        ("" | "events.k8s.io", "Event") => {
            // core/v1 and events.k8s.io/v1 name the same things differently.
            let core = r.group.is_empty();
            let regarding = o.get(if core { "involvedObject" } else { "regarding" });
            let last = [
                "/lastTimestamp",
                "/eventTime",
                "/series/lastObservedTime",
                "/deprecatedLastTimestamp",
                "/metadata/creationTimestamp",
            ]
            .iter()
            .find_map(|p| o.pointer(p).filter(|v| v.is_string()));
            let object = format!(
                "{}/{}",
                s(regarding.and_then(|x| x.get("kind"))).to_lowercase(),
                s(regarding.and_then(|x| x.get("name")))
            );
            let message = s(o.get(if core { "message" } else { "note" }));
            vec![
                json!(age(last)),
                json!(s(o.get("type"))),
                json!(s(o.get("reason"))),
                json!(object),
                json!(message),
                name,
            ]
        }
        ("coordination.k8s.io", "Lease") => {
            vec![name, json!(s(o.pointer("/spec/holderIdentity"))), age_cell]
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => vec![
            name,
            json!(format!(
                "{}/{}",
                s(o.pointer("/roleRef/kind")),
                s(o.pointer("/roleRef/name"))
            )),
            age_cell,
        ],
        ("rbac.authorization.k8s.io", _) => {
            vec![name, json!(s(o.pointer("/metadata/creationTimestamp")))]
        }
        _ => vec![name, age_cell],
    }
}

fn partial(o: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// A Table of `objects`; `include` is the includeObject parameter
/// (None / Metadata (default) / Object).
pub fn table(r: &Resource, objects: &[Value], include: Option<&str>, list_meta: Value) -> Value {
    let defs: Vec<Value> = columns(r)
        .iter()
        .map(|(name, ty, prio)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": prio})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(r, o)});
            match include {
                Some("None") => {}
                Some("Object") => row["object"] = o.clone(),
                _ => row["object"] = partial(o),
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

/// The STATUS column the way kubectl's pod printer derives it: the phase,
/// overridden by the pod's reason, then by the last container's waiting or
/// terminated reason (so a finished batch pod reads `Completed` or `Error`,
/// a crash-looping one `CrashLoopBackOff`), and `Terminating` while deleted.
fn pod_status(o: &Value, statuses: &[Value]) -> String {
    let mut reason = s(o.pointer("/status/phase"));
    if let Some(r) = o.pointer("/status/reason").and_then(Value::as_str) {
        reason = r.to_string();
    }
    let mut running = false;
    for c in statuses.iter().rev() {
        let state = &c["state"];
        if let Some(r) = state.pointer("/waiting/reason").and_then(Value::as_str) {
            reason = r.to_string();
        } else if let Some(t) = state.get("terminated") {
            reason = match t.get("reason").and_then(Value::as_str) {
                Some(r) => r.to_string(),
                None => match t.get("signal").and_then(Value::as_i64) {
                    Some(sig) if sig != 0 => format!("Signal:{sig}"),
                    _ => format!("ExitCode:{}", n(t.get("exitCode"))),
                },
            };
        } else if c["ready"] == true && state.get("running").is_some() {
            running = true;
        }
    }
    if reason == "Completed" && running {
        reason = "Running".to_string();
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = "Terminating".to_string();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::find;

    #[test]
    fn node_rows_show_readiness_and_roles() {
        let nodes = find("", "v1", "nodes").unwrap();
        let n = json!({"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "nodeInfo": {"kubeletVersion": "v1.33.0-skiff"},
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.2"}]}});
        let t = table(nodes, &[n], None, json!({}));
        assert_eq!(
            t["rows"][0]["cells"],
            json!([
                "n1",
                "Ready",
                "worker",
                t["rows"][0]["cells"][3],
                "v1.33.0-skiff",
                "10.0.0.2"
            ])
        );
    }

    #[test]
    fn pod_status_column_follows_kubectl() {
        let status = |st: Value| {
            let statuses = st["containerStatuses"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            pod_status(&json!({ "status": st }), &statuses)
        };
        let term = |reason: Option<&str>, code: i64| {
            let mut t = json!({"exitCode": code});
            if let Some(r) = reason {
                t["reason"] = json!(r);
            }
            json!({"phase": "Succeeded", "containerStatuses": [{"ready": false, "state": {"terminated": t}}]})
        };
        assert_eq!(status(term(Some("Completed"), 0)), "Completed");
        assert_eq!(status(term(Some("Error"), 3)), "Error");
        assert_eq!(status(term(None, 3)), "ExitCode:3");
        assert_eq!(
            status(json!({"phase": "Running", "containerStatuses": [
                {"ready": false, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]})),
            "CrashLoopBackOff"
        );
        assert_eq!(
            status(json!({"phase": "Running", "containerStatuses": [
                {"ready": true, "state": {"running": {}}}]})),
            "Running"
        );
        assert_eq!(
            status(json!({"phase": "Failed", "reason": "Evicted"})),
            "Evicted"
        );
        let deleting =
            json!({"metadata": {"deletionTimestamp": "x"}, "status": {"phase": "Running"}});
        assert_eq!(pod_status(&deleting, &[]), "Terminating");
    }

    #[test]
    fn human_durations_match_kube() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(150), "2m30s");
        assert_eq!(human_duration(3600), "60m");
        assert_eq!(human_duration(4 * 3600 + 60), "4h1m");
        assert_eq!(human_duration(3 * 86400), "3d");
    }

    #[test]
    fn pod_and_service_rows() {
        let pods = find("", "v1", "pods").unwrap();
        let p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}, "status": {"phase": "Pending"}});
        let t = table(pods, &[p], None, json!({}));
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
        assert_eq!(t["rows"][0]["cells"][2], "Pending");
        assert_eq!(
            t["columnDefinitions"].as_array().unwrap().len(),
            t["rows"][0]["cells"].as_array().unwrap().len()
        );
        let svc = find("", "v1", "services").unwrap();
        let s = json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.5", "ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let t = table(svc, &[s], Some("Object"), json!({}));
        assert_eq!(t["rows"][0]["cells"][4], "80/TCP");
        assert_eq!(t["rows"][0]["cells"][6], "app=web");
        assert_eq!(t["rows"][0]["object"]["metadata"]["name"], "s");
        assert!(wants_table(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        )));
        assert!(!wants_table(Some("application/json")));
    }
}
