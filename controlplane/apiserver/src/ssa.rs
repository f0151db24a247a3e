//! Server-side apply, reduced: each applier's fields are recorded in
//! `metadata.managedFields` (FieldsV1, kube's format); a re-apply removes the
//! fields that manager stopped applying, and setting a field another *apply*
//! manager owns to a different value is a 409 unless `force=true`. Fields
//! written by non-apply requests (update/patch) are not tracked.

use serde_json::{Map, Value, json};

use crate::patch::merge_key;
use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Field(String),
    /// A list element identified by its merge key (`k:{"name":"c"}`).
    Key(String, Value),
}

fn seg_name(s: &Seg) -> String {
    match s {
        Seg::Field(f) => format!("f:{f}"),
        Seg::Key(k, v) => format!("k:{}", json!({ k: v })),
    }
}

/// The FieldsV1 set of an applied configuration.
pub fn field_set(v: &Value) -> Value {
    fn walk(v: &Value, field: &str) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    out.insert(format!("f:{k}"), walk(x, k));
                }
                Value::Object(out)
            }
            Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                match merge_key(field, items) {
                    Some(key) => {
                        let mut out = Map::new();
                        for it in items {
                            if let Some(id) = it.get(key) {
                                out.insert(format!("k:{}", json!({ key: id })), walk(it, ""));
                            }
                        }
                        Value::Object(out)
                    }
                    None => json!({}),
                }
            }
            _ => json!({}),
        }
    }
    let mut set = walk(v, "");
    if let Some(m) = set.as_object_mut() {
        // Identity fields are not owned.
        m.remove("f:apiVersion");
        m.remove("f:kind");
        if let Some(meta) = m.get_mut("f:metadata").and_then(Value::as_object_mut) {
            meta.remove("f:name");
            meta.remove("f:namespace");
        }
    }
    set
}

fn parse_seg(s: &str) -> Option<Seg> {
    if let Some(f) = s.strip_prefix("f:") {
        return Some(Seg::Field(f.to_string()));
    }
    let k: Map<String, Value> = serde_json::from_str(s.strip_prefix("k:")?).ok()?;
    let (key, v) = k.into_iter().next()?;
    Some(Seg::Key(key, v))
}

/// Leaf paths of a field set.
fn leaves(set: &Value) -> Vec<Vec<Seg>> {
    let mut out = Vec::new();
    fn go(set: &Value, prefix: &mut Vec<Seg>, out: &mut Vec<Vec<Seg>>) {
        match set.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, sub) in m {
                    if let Some(seg) = parse_seg(k) {
                        prefix.push(seg);
                        go(sub, prefix, out);
                        prefix.pop();
                    }
                }
            }
            _ => out.push(prefix.clone()),
        }
    }
    go(set, &mut Vec::new(), &mut out);
    out
}

fn get_at<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    let mut cur = v;
    for s in path {
        cur = match s {
            Seg::Field(f) => cur.get(f)?,
            Seg::Key(k, id) => cur.as_array()?.iter().find(|e| e.get(k) == Some(id))?,
        };
    }
    Some(cur)
}

fn remove_at(v: &mut Value, path: &[Seg]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for s in parents {
        let next = match s {
            Seg::Field(f) => cur.get_mut(f),
            Seg::Key(k, id) => cur
                .as_array_mut()
                .and_then(|a| a.iter_mut().find(|e| e.get(k) == Some(id))),
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    match last {
        Seg::Field(f) => {
            if let Some(m) = cur.as_object_mut() {
                m.remove(f);
            }
        }
        Seg::Key(k, id) => {
            if let Some(a) = cur.as_array_mut() {
                a.retain(|e| e.get(k) != Some(id));
            }
        }
    }
}

/// Removes one leaf from a field set, and the parents it leaves empty (an
/// empty object would otherwise read as owning the whole parent).
fn remove_pruned(set: &mut Value, keys: &[String]) -> bool {
    let Some(m) = set.as_object_mut() else {
        return false;
    };
    match keys {
        [] => false,
        [k] => {
            m.remove(k);
            m.is_empty()
        }
        [k, rest @ ..] => {
            if let Some(child) = m.get_mut(k)
                && remove_pruned(child, rest)
            {
                m.remove(k);
            }
            m.is_empty()
        }
    }
}

fn path_string(p: &[Seg]) -> String {
    p.iter()
        .map(|s| match s {
            Seg::Field(f) => format!(".{f}"),
            Seg::Key(k, v) => format!("[{k}={}]", v.as_str().map_or(v.to_string(), str::to_string)),
        })
        .collect()
}

fn is_prefix(a: &[Seg], b: &[Seg]) -> bool {
    a.len() <= b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// Applies `applied` for `manager` onto `current` (None = create).
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
) -> ApiResult<Value> {
    let mut result = current.cloned().unwrap_or_else(|| json!({}));
    let managed: Vec<Value> = result
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new_set = field_set(applied);
    let new_leaves = leaves(&new_set);
    let is_mine = |e: &Value| e["manager"] == manager && e["operation"] == "Apply";
    let mut conflicts = Vec::new();
    let mut others_leaves = Vec::new();
    for e in managed
        .iter()
        .filter(|e| !is_mine(e) && e["operation"] == "Apply")
    {
        for l in leaves(&e["fieldsV1"]) {
            if new_leaves.contains(&l) && get_at(&result, &l) != get_at(applied, &l) {
                conflicts.push(format!(
                    "conflict with \"{}\": {}",
                    e["manager"].as_str().unwrap_or(""),
                    path_string(&l)
                ));
            }
            others_leaves.push(l);
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                conflicts.len(),
                if conflicts.len() == 1 { "" } else { "s" },
                conflicts.join(", ")
            ),
        ));
    }
    // Fields this manager applied before but no longer does, unless another
    // applier still owns them.
    if let Some(prev) = managed.iter().find(|e| is_mine(e)) {
        for l in leaves(&prev["fieldsV1"]) {
            let kept = new_leaves
                .iter()
                .any(|n| is_prefix(&l, n) || is_prefix(n, &l));
            let shared = others_leaves
                .iter()
                .any(|o| is_prefix(&l, o) || is_prefix(o, &l));
            if !kept && !shared {
                remove_at(&mut result, &l);
            }
        }
    }
    let body = serde_json::to_vec(applied).map_err(ApiError::internal)?;
    let mut result = crate::patch::apply(crate::patch::PatchType::Strategic, &result, &body)?;
    let mut entries: Vec<Value> = managed.into_iter().filter(|e| !is_mine(e)).collect();
    if force {
        // Forced fields change owner.
        for e in &mut entries {
            for l in &new_leaves {
                let keys: Vec<String> = l.iter().map(seg_name).collect();
                remove_pruned(&mut e["fieldsV1"], &keys);
            }
        }
    }
    entries.push(json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": applied.get("apiVersion").cloned().unwrap_or(Value::Null),
        "time": now,
        "fieldsType": "FieldsV1",
        "fieldsV1": new_set,
    }));
    result["metadata"]["managedFields"] = json!(entries);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, extra_label: bool) -> Value {
        let mut labels = json!({"app": "web"});
        if extra_label {
            labels["extra"] = json!("1");
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "labels": labels},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}})
    }

    #[test]
    fn field_sets_use_merge_keys() {
        let s = field_set(&deploy(1, false));
        assert!(
            s.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"c\"}/f:image")
                .is_some(),
            "{s}"
        );
        assert!(s.get("f:kind").is_none());
    }

    #[test]
    fn reapply_removes_dropped_fields_and_other_appliers_conflict() {
        let t = "2026-01-01T00:00:00Z";
        let v1 = apply(None, &deploy(1, true), "a", false, t).unwrap();
        assert_eq!(v1["metadata"]["labels"]["extra"], "1");
        let v2 = apply(Some(&v1), &deploy(1, false), "a", false, t).unwrap();
        assert!(v2["metadata"]["labels"].get("extra").is_none(), "{v2}");
        assert_eq!(v2["metadata"]["managedFields"].as_array().unwrap().len(), 1);

        let mut other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 5}});
        let e = apply(Some(&v2), &other, "b", false, t).unwrap_err();
        assert_eq!(e.code, 409);
        assert!(e.message.contains(".spec.replicas"), "{}", e.message);
        let forced = apply(Some(&v2), &other, "b", true, t).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        // Same value: shared ownership, no conflict.
        other["spec"]["replicas"] = json!(1);
        assert!(apply(Some(&v2), &other, "b", false, t).is_ok());
    }
}
