//! `Table` responses (meta.k8s.io/v1), so `kubectl get` prints the same
//! columns as against kube-apiserver. Each kind's columns and cells are in
//! its `registry::Resource` entry (`crate::kinds`); here are the Table and
//! the cell helpers they share. Priority-1 columns show with `-o wide`.

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

pub(crate) fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

pub(crate) fn n(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn or_none(x: String) -> String {
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

pub(crate) fn age(ts: Option<&Value>) -> String {
    let Some(t) = ts.and_then(Value::as_str) else {
        return "<unknown>".into();
    };
    match t.parse::<k8s_openapi::jiff::Timestamp>() {
        Ok(t) => human_duration(crate::storage::unix_now() - t.as_second()),
        Err(_) => "<unknown>".into(),
    }
}

/// `Kind/name` of the reference at `path` (a roleRef, a scaleTargetRef).
pub(crate) fn reference(o: &Value, path: &str) -> String {
    format!(
        "{}/{}",
        s(o.pointer(&format!("{path}/kind"))),
        s(o.pointer(&format!("{path}/name")))
    )
}

pub(crate) fn created(o: &Value) -> String {
    age(o.pointer("/metadata/creationTimestamp"))
}

pub(crate) fn label_selector(sel: Option<&Value>) -> String {
    let Some(m) = sel.and_then(Value::as_object) else {
        return "<none>".into();
    };
    let parts: Vec<String> = m
        .iter()
        .map(|(k, v)| format!("{k}={}", s(Some(v))))
        .collect();
    or_none(parts.join(","))
}

pub(crate) fn containers(o: &Value, path: &str) -> (String, String) {
    let cs = o
        .pointer(path)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(c.get("name"))).collect();
    let images: Vec<String> = cs.iter().map(|c| s(c.get("image"))).collect();
    (names.join(","), images.join(","))
}

/// The NAME and AGE cells, the columns of a kind without its own.
pub(crate) fn name_and_age(o: &Value) -> Vec<Value> {
    vec![json!(s(o.pointer("/metadata/name"))), json!(created(o))]
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
    let defs: Vec<Value> = r
        .columns
        .iter()
        .map(|(name, ty, prio)| {
            let format = if *name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": "", "priority": prio})
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": (r.cells)(r, o)});
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
