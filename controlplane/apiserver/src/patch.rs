//! Patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch as `kubectl apply`/`edit` send it, with the merge
//! keys of the built-in types and the `$patch`, `$setElementOrder`,
//! `$retainKeys` and `$deleteFromPrimitiveList` directives.

use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    /// Server-side apply (see [`crate::ssa`]).
    Apply,
}

impl PatchType {
    pub fn from_media_type(mt: &str) -> ApiResult<PatchType> {
        match mt {
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchType::Apply),
            other => Err(ApiError::unsupported_media(other)),
        }
    }
}

pub fn apply(kind: PatchType, doc: &Value, body: &[u8]) -> ApiResult<Value> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = doc.clone();
    match kind {
        PatchType::Merge => json_patch::merge(&mut out, &patch),
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            json_patch::patch(&mut out, &p).map_err(|e| {
                ApiError::new(
                    422,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
        }
        PatchType::Apply => {
            return Err(ApiError::unsupported_media("application/apply-patch+yaml"));
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            strategic(&mut out, &patch, "");
        }
    }
    Ok(out)
}

/// The merge key of a list field, by field name (and, for `ports`, by what
/// the elements hold: container ports merge on containerPort, service ports
/// on port). `None` = the list is replaced.
pub(crate) fn merge_key(field: &str, elems: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims"
        | "secrets" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "conditions" | "addresses" => "type",
        "ownerReferences" => "uid",
        "taints" => "key",
        "topologySpreadConstraints" => "topologyKey",
        "ports" => {
            if elems.iter().any(|e| e.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    })
}

/// Primitive lists whose patch strategy is merge (union).
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

fn strategic(doc: &mut Value, patch: &Value, _field: &str) {
    let Some(pm) = patch.as_object() else {
        *doc = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        *doc = strip_directives(patch);
        return;
    }
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    let mut orders: Vec<(String, Vec<Value>)> = Vec::new();
    for (k, v) in pm {
        if let Some(f) = k.strip_prefix("$setElementOrder/") {
            orders.push((f.to_string(), v.as_array().cloned().unwrap_or_default()));
            continue;
        }
        if let Some(f) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let Some(Value::Array(list)) = doc.get_mut(f) {
                let remove = v.as_array().cloned().unwrap_or_default();
                list.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let d = doc.as_object_mut().expect("made an object above");
        match v {
            Value::Null => {
                d.remove(k);
            }
            Value::Object(inner) => {
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") {
                    d.remove(k);
                } else {
                    let slot = d.entry(k.clone()).or_insert(Value::Null);
                    if slot.is_object() {
                        strategic(slot, v, k);
                    } else {
                        *slot = strip_directives(v);
                    }
                }
            }
            Value::Array(items) => {
                let slot = d.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, k);
            }
            other => {
                d.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = doc.get_mut(&field) {
            reorder(list, &order, &field);
        }
    }
    if let Some(Value::Array(keep)) = pm.get("$retainKeys")
        && let Some(d) = doc.as_object_mut()
    {
        d.retain(|k, _| keep.iter().any(|x| x.as_str() == Some(k)));
    }
}

fn merge_list(slot: &mut Value, items: &[Value], field: &str) {
    let objects = items.iter().all(Value::is_object) && !items.is_empty();
    let key = if objects {
        merge_key(field, items)
    } else {
        None
    };
    if let (Some(key), Some(existing)) = (key, slot.as_array_mut()) {
        // `{"$patch": "replace"}` as an element replaces the whole list.
        if items
            .iter()
            .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
        {
            *slot = Value::Array(
                items
                    .iter()
                    .filter(|i| i.get("$patch").is_none())
                    .map(strip_directives)
                    .collect(),
            );
            return;
        }
        for item in items {
            let id = item.get(key);
            let pos = existing
                .iter()
                .position(|e| e.get(key) == id && id.is_some());
            let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
            match (pos, delete) {
                (Some(p), true) => {
                    existing.remove(p);
                }
                (None, true) => {}
                (Some(p), false) => strategic(&mut existing[p], item, field),
                (None, false) => existing.push(strip_directives(item)),
            }
        }
        return;
    }
    if merges_primitives(field)
        && let Some(existing) = slot.as_array_mut()
    {
        for i in items {
            if !existing.contains(i) {
                existing.push(i.clone());
            }
        }
        return;
    }
    *slot = strip_directives(&Value::Array(items.to_vec()));
}

/// Orders a merged list as `$setElementOrder` says; elements it does not
/// name keep their relative order after the named ones.
fn reorder(list: &mut Vec<Value>, order: &[Value], field: &str) {
    let key = merge_key(field, order);
    let ident = |v: &Value| -> Value {
        match key {
            Some(k) if v.is_object() => v.get(k).cloned().unwrap_or(Value::Null),
            _ => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&ident).collect();
    let mut named: Vec<Value> = Vec::new();
    for w in &wanted {
        if let Some(p) = list.iter().position(|e| ident(e) == *w) {
            named.push(list.remove(p));
        }
    }
    named.append(list);
    *list = named;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(doc: Value, patch: Value) -> Value {
        apply(PatchType::Strategic, &doc, patch.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn strategic_merges_containers_by_name() {
        let doc = json!({"spec": {"containers": [{"name": "a", "image": "x:1", "env": [{"name": "E", "value": "1"}]}, {"name": "b", "image": "y:1"}]}});
        let out = smp(
            doc,
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}], "containers": [{"name": "a", "image": "x:2"}]}}),
        );
        assert_eq!(out["spec"]["containers"][0]["name"], "b");
        assert_eq!(out["spec"]["containers"][1]["image"], "x:2");
        assert_eq!(out["spec"]["containers"][1]["env"][0]["value"], "1");
    }

    #[test]
    fn strategic_directives() {
        let doc = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]}, "spec": {"ports": [{"port": 80}, {"port": 81}], "list": [1, 2]}});
        let out = smp(
            doc,
            json!({"metadata": {"labels": {"a": null}, "finalizers": ["y"]}, "spec": {"ports": [{"port": 81, "$patch": "delete"}], "list": [3]}}),
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(out["spec"]["ports"], json!([{"port": 80}]));
        assert_eq!(out["spec"]["list"], json!([3]));
        let out = smp(
            out,
            json!({"spec": {"$retainKeys": ["ports"], "ports": [{"port": 80, "name": "http"}]}}),
        );
        assert_eq!(
            out["spec"],
            json!({"ports": [{"port": 80, "name": "http"}]})
        );
    }

    #[test]
    fn merge_and_json_patch() {
        let doc = json!({"a": {"b": 1, "c": 2}});
        let m = apply(PatchType::Merge, &doc, br#"{"a": {"b": null, "d": 3}}"#).unwrap();
        assert_eq!(m, json!({"a": {"c": 2, "d": 3}}));
        let j = apply(
            PatchType::Json,
            &doc,
            br#"[{"op": "replace", "path": "/a/b", "value": 5}]"#,
        )
        .unwrap();
        assert_eq!(j["a"]["b"], 5);
        let e = apply(
            PatchType::Json,
            &doc,
            br#"[{"op": "remove", "path": "/zz"}]"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(apply(PatchType::Merge, &doc, b"{").unwrap_err().code, 400);
    }
}
