//! Patch types: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch as `kubectl apply`/`edit` send it, with the merge
//! keys of the built-in types and the `$patch`, `$setElementOrder`,
//! `$retainKeys` and `$deleteFromPrimitiveList` directives.
//!
//! A patch is the one request whose result can be much larger than its
//! body: JSON patch `copy` duplicates what is already in the object, and
//! nested copies grow it exponentially. Applying one is therefore bounded
//! as kube bounds it (at most [`MAX_JSON_PATCH_OPS`] operations, at most
//! [`MAX_JSON_PATCH_COPY_BYTES`] copied in total) and by nesting
//! ([`MAX_DEPTH`]), checked before each operation runs; the merged lists
//! of strategic merge are matched through hash indexes, so no patch costs
//! more than about linear time in the object and the patch. What is stored
//! is bounded again by the object size limit in [`crate::storage`].

use std::collections::{HashMap, HashSet, VecDeque};

use json_patch::PatchOperation;
use serde_json::{Map, Value};

use crate::status::{ApiError, ApiResult};

/// kube's `maxJSONPatchOperations`.
pub const MAX_JSON_PATCH_OPS: usize = 10_000;
/// kube's `JSONPatchMaxCopyBytes`: what the `copy` operations of one JSON
/// patch may duplicate in total (as encoded JSON).
pub const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 1024 * 1024;
/// The deepest nesting of arrays and objects a patched object may have:
/// serde_json refuses to parse anything deeper, so a deeper object could be
/// stored but never read back (and deep values are dropped and cloned
/// recursively).
pub const MAX_DEPTH: usize = 127;

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
    apply_with(kind, doc, body, Lists::Builtin)
}

/// How lists merge: by kube's patch strategies of the built-in types (by
/// field name), or by a custom resource's schema (`x-kubernetes-list-type`
/// `map` with one key merges by it; other lists are atomic, kube's default
/// for custom resources).
#[derive(Debug, Clone, Copy)]
pub enum Lists<'a> {
    Builtin,
    /// The schema of the value at hand, if the schema describes it.
    Schema(Option<&'a Value>),
}

impl<'a> Lists<'a> {
    pub fn of(r: &'a crate::registry::Resource) -> Lists<'a> {
        match r.custom {
            Some(c) => Lists::Schema(Some(c.schema())),
            None => Lists::Builtin,
        }
    }

    /// The lists of the value's field `k`.
    pub fn field(self, k: &str) -> Lists<'a> {
        match self {
            Lists::Builtin => Lists::Builtin,
            Lists::Schema(s) => Lists::Schema(s.and_then(|s| {
                s.get("properties")
                    .and_then(|p| p.get(k))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
            })),
        }
    }

    /// The lists of the elements of a list.
    pub fn items(self) -> Lists<'a> {
        match self {
            Lists::Builtin => Lists::Builtin,
            Lists::Schema(s) => Lists::Schema(s.and_then(|s| s.get("items"))),
        }
    }

    /// The merge key of the list (the value at hand) named `field`.
    pub fn key(self, field: &str, elems: &[Value]) -> Option<&'a str> {
        match self {
            Lists::Builtin => merge_key(field, elems),
            Lists::Schema(s) => {
                let s = s?;
                if s.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
                    return None;
                }
                match s.get("x-kubernetes-list-map-keys")?.as_array()?.as_slice() {
                    [k] => k.as_str(),
                    // Several keys: merged as a whole (atomic).
                    _ => None,
                }
            }
        }
    }

    fn merges_primitives(self, field: &str) -> bool {
        matches!(self, Lists::Builtin) && merges_primitives(field)
    }
}

/// [`apply`] with the list semantics `lists` (server-side apply of a
/// custom resource).
pub fn apply_with(kind: PatchType, doc: &Value, body: &[u8], lists: Lists<'_>) -> ApiResult<Value> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut out = doc.clone();
    match kind {
        PatchType::Merge => json_patch::merge(&mut out, &patch),
        PatchType::Json => {
            let p: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding JSON patch: {e}")))?;
            json(&mut out, &p)?;
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
            strategic(&mut out, &patch, "", lists);
        }
    }
    Ok(out)
}

fn invalid(msg: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        format!("the server rejected our request due to an error in our request: {msg}"),
    )
}

/// Applies a JSON patch one operation at a time, refusing before an
/// operation that would break a bound. `doc` is a scratch copy: on error
/// the caller drops it (so no undo log is kept either).
fn json(doc: &mut Value, ops: &[PatchOperation]) -> ApiResult<()> {
    if ops.len() > MAX_JSON_PATCH_OPS {
        return Err(ApiError::too_large_msg(format!(
            "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {}",
            ops.len()
        )));
    }
    // An upper bound of the document's nesting, kept without rescanning it.
    let mut depth = measure(doc, usize::MAX).depth;
    let mut copied = 0usize;
    for (i, op) in ops.iter().enumerate() {
        let placed = match op {
            PatchOperation::Add(o) => o.path.count() + measure(&o.value, usize::MAX).depth,
            PatchOperation::Replace(o) => o.path.count() + measure(&o.value, usize::MAX).depth,
            PatchOperation::Copy(o) => {
                // A missing source fails the operation below.
                let from = doc.pointer(o.from.as_str());
                let m = from.map_or(Measure::default(), |v| {
                    measure(v, MAX_JSON_PATCH_COPY_BYTES - copied)
                });
                copied = copied.saturating_add(m.bytes);
                if copied > MAX_JSON_PATCH_COPY_BYTES {
                    return Err(ApiError::too_large_msg(format!(
                        "the copy operations of a JSON patch may duplicate at most \
                         {MAX_JSON_PATCH_COPY_BYTES} bytes; operation {i} goes past that"
                    )));
                }
                o.path.count() + m.depth
            }
            // What moves is at most as deep as the document below `from`.
            PatchOperation::Move(o) => (o.path.count() + depth).saturating_sub(o.from.count()),
            PatchOperation::Remove(_) | PatchOperation::Test(_) => 0,
        };
        depth = depth.max(placed);
        if depth > MAX_DEPTH {
            return Err(invalid(format!(
                "operation {i} would nest the object more than {MAX_DEPTH} levels deep"
            )));
        }
        json_patch::patch_unsafe(doc, std::slice::from_ref(op)).map_err(invalid)?;
    }
    Ok(())
}

/// Nesting depth (arrays and objects; 0 for a scalar) and encoded size of
/// a value, found without recursion.
#[derive(Debug, Default, Clone, Copy)]
pub struct Measure {
    pub depth: usize,
    /// The length of its compact JSON, or a number past the `limit` given
    /// to [`measure`] once the walk went beyond it.
    pub bytes: usize,
}

/// [`Measure`]s `v`, stopping early once `bytes` passes `limit`.
pub fn measure(v: &Value, limit: usize) -> Measure {
    let mut m = Measure::default();
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        if m.bytes > limit {
            break;
        }
        m.bytes += match v {
            Value::Null => 4,
            Value::Bool(b) => 4 + usize::from(!b),
            Value::Number(n) => n.to_string().len(),
            // Quotes; escapes make it longer, which the stored-size check sees.
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                m.depth = m.depth.max(d + 1);
                stack.extend(a.iter().map(|x| (x, d + 1)));
                2 + a.len().saturating_sub(1)
            }
            Value::Object(o) => {
                m.depth = m.depth.max(d + 1);
                stack.extend(o.values().map(|x| (x, d + 1)));
                2 + o.len().saturating_sub(1) + o.keys().map(|k| k.len() + 3).sum::<usize>()
            }
        };
    }
    m
}

/// A hashable identity of a value: equal values (serde_json maps are
/// ordered, so their encoding is canonical) get equal strings.
pub(crate) fn ident(v: &Value) -> String {
    match v {
        Value::String(s) => format!("s{s}"),
        other => other.to_string(),
    }
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

fn strategic(doc: &mut Value, patch: &Value, _field: &str, lists: Lists<'_>) {
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
                let remove: HashSet<String> =
                    v.as_array().into_iter().flatten().map(ident).collect();
                list.retain(|x| !remove.contains(&ident(x)));
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
                        strategic(slot, v, k, lists.field(k));
                    } else {
                        *slot = strip_directives(v);
                    }
                }
            }
            Value::Array(items) => {
                let slot = d.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                merge_list(slot, items, k, lists.field(k));
            }
            other => {
                d.insert(k.clone(), other.clone());
            }
        }
    }
    for (field, order) in orders {
        if let Some(Value::Array(list)) = doc.get_mut(&field) {
            reorder(list, &order, &field, lists.field(&field));
        }
    }
    if let Some(Value::Array(keep)) = pm.get("$retainKeys")
        && let Some(d) = doc.as_object_mut()
    {
        let keep: HashSet<&str> = keep.iter().filter_map(Value::as_str).collect();
        d.retain(|k, _| keep.contains(k.as_str()));
    }
}

fn merge_list(slot: &mut Value, items: &[Value], field: &str, lists: Lists<'_>) {
    let objects = items.iter().all(Value::is_object) && !items.is_empty();
    let key = if objects {
        lists.key(field, items)
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
        // Elements by the identity of their merge key; a later patch item
        // with the same key finds what an earlier one added.
        let mut slots: Vec<Option<Value>> =
            std::mem::take(existing).into_iter().map(Some).collect();
        let mut at: HashMap<String, VecDeque<usize>> = HashMap::new();
        for (i, e) in slots.iter().enumerate() {
            if let Some(id) = e.as_ref().and_then(|e| e.get(key)) {
                at.entry(ident(id)).or_default().push_back(i);
            }
        }
        for item in items {
            let id = item.get(key).map(ident);
            let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
            let positions = id.as_ref().and_then(|id| at.get_mut(id));
            match (positions, delete) {
                (Some(ps), true) => {
                    if let Some(p) = ps.pop_front() {
                        slots[p] = None;
                    }
                }
                (None, true) => {}
                (Some(ps), false) if !ps.is_empty() => {
                    if let Some(e) = slots[ps[0]].as_mut() {
                        strategic(e, item, field, lists.items());
                    }
                }
                (_, false) => {
                    if let Some(id) = id {
                        at.entry(id).or_default().push_back(slots.len());
                    }
                    slots.push(Some(strip_directives(item)));
                }
            }
        }
        *existing = slots.into_iter().flatten().collect();
        return;
    }
    if lists.merges_primitives(field)
        && let Some(existing) = slot.as_array_mut()
    {
        let mut seen: HashSet<String> = existing.iter().map(ident).collect();
        for i in items {
            if seen.insert(ident(i)) {
                existing.push(i.clone());
            }
        }
        return;
    }
    *slot = strip_directives(&Value::Array(items.to_vec()));
}

/// Orders a merged list as `$setElementOrder` says; elements it does not
/// name keep their relative order after the named ones.
fn reorder(list: &mut Vec<Value>, order: &[Value], field: &str, lists: Lists<'_>) {
    let key = lists.key(field, order);
    let id_of = |v: &Value| -> String {
        match key {
            Some(k) if v.is_object() => ident(v.get(k).unwrap_or(&Value::Null)),
            _ => ident(v),
        }
    };
    let mut at: HashMap<String, VecDeque<usize>> = HashMap::new();
    for (i, e) in list.iter().enumerate() {
        at.entry(id_of(e)).or_default().push_back(i);
    }
    let mut slots: Vec<Option<Value>> = std::mem::take(list).into_iter().map(Some).collect();
    let mut named: Vec<Value> = Vec::with_capacity(slots.len());
    for w in order {
        if let Some(p) = at.get_mut(&id_of(w)).and_then(VecDeque::pop_front) {
            named.extend(slots[p].take());
        }
    }
    named.extend(slots.into_iter().flatten());
    *list = named;
}

/// The invariants the `patch` fuzz target (`tests/fuzz`) and the bounded
/// test below check over arbitrary patch bodies.
#[doc(hidden)]
pub mod fuzz {
    use serde_json::{Value, json};

    use super::{MAX_DEPTH, MAX_JSON_PATCH_COPY_BYTES, PatchType, apply, measure};

    /// The object every patch is applied to: lists with and without merge
    /// keys, primitive lists, nesting, and a server-side applier.
    pub fn object() -> Value {
        let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}}});
        let mut obj = crate::ssa::apply(
            None,
            &applied,
            "kubectl",
            false,
            "2026-01-01T00:00:00Z",
            super::Lists::Builtin,
        )
        .expect("applies");
        obj["metadata"]["finalizers"] = json!(["a", "b"]);
        obj["spec"]["template"]["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}}]);
        obj["spec"]["strategy"] =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}});
        obj["status"] = json!({"conditions": [{"type": "Available", "status": "True"}]});
        obj
    }

    /// Applies `data` (first byte: which kind of patch) to [`object`];
    /// panics if an accepted result breaks a bound: nesting past
    /// [`MAX_DEPTH`], JSON that does not read back as itself, or a size
    /// out of proportion to the object and the patch.
    pub fn one(doc: &Value, data: &[u8]) {
        let Some((&ctl, body)) = data.split_first() else {
            return;
        };
        let result = match ctl % 5 {
            0 => apply(PatchType::Merge, doc, body),
            1 => apply(PatchType::Json, doc, body),
            2 => apply(PatchType::Strategic, doc, body),
            3 => crate::http::yaml_to_json(body).and_then(|applied| {
                crate::ssa::apply(
                    Some(doc),
                    &applied,
                    "fuzz",
                    ctl & 8 != 0,
                    "2026-01-01T00:00:00Z",
                    super::Lists::Builtin,
                )
            }),
            _ => crate::http::yaml_to_json(body),
        };
        let Ok(out) = result else { return };
        let m = measure(&out, usize::MAX);
        assert!(m.depth <= MAX_DEPTH, "nested {} deep", m.depth);
        let bytes = serde_json::to_vec(&out).expect("encodes");
        let back: Value = serde_json::from_slice(&bytes).expect("reads back");
        assert_eq!(back, out);
        let doc_len = serde_json::to_vec(doc).expect("encodes").len();
        let bound = 3 * (doc_len + body.len()) + MAX_JSON_PATCH_COPY_BYTES + 4096;
        assert!(
            bytes.len() <= bound,
            "{} bytes from a {}-byte patch",
            bytes.len(),
            body.len()
        );
    }
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

    fn json_ops(ops: &[Value]) -> Vec<u8> {
        serde_json::to_vec(ops).unwrap()
    }

    #[test]
    fn json_patch_operation_count_is_bounded() {
        let doc = json!({"data": {}});
        let ok: Vec<Value> = (0..MAX_JSON_PATCH_OPS)
            .map(|i| json!({"op": "add", "path": format!("/data/k{}", i % 10), "value": "v"}))
            .collect();
        assert!(apply(PatchType::Json, &doc, &json_ops(&ok)).is_ok());
        let mut too_many = ok;
        too_many.push(json!({"op": "test", "path": "/data", "value": {}}));
        let e = apply(PatchType::Json, &doc, &json_ops(&too_many)).unwrap_err();
        assert_eq!((e.code, e.reason), (413, "RequestEntityTooLarge"));
        assert!(e.message.contains("maximum operations"), "{}", e.message);
    }

    /// Each copy doubles the object: 40 of them would need a terabyte.
    #[test]
    fn json_patch_copies_are_bounded() {
        let doc = json!({"data": {"a": "x".repeat(1000)}});
        let ops: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "/data", "path": format!("/data/c{i}")}))
            .collect();
        let start = std::time::Instant::now();
        let e = apply(PatchType::Json, &doc, &json_ops(&ops)).unwrap_err();
        assert_eq!(e.code, 413, "{}", e.message);
        assert!(e.message.contains("copy"), "{}", e.message);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        // A few copies are fine.
        let ok = apply(PatchType::Json, &doc, &json_ops(&ops[..3])).unwrap();
        assert_eq!(ok["data"]["c2"]["c1"]["c0"]["a"], doc["data"]["a"]);
    }

    fn depth_of(v: &Value) -> usize {
        measure(v, usize::MAX).depth
    }

    /// A value nested [`MAX_DEPTH`] deep still parses; one more does not.
    #[test]
    fn max_depth_is_what_serde_json_reads_back() {
        let nest = |n: usize| "[".repeat(n) + &"]".repeat(n);
        let v: Value = serde_json::from_str(&nest(MAX_DEPTH)).unwrap();
        assert_eq!(depth_of(&v), MAX_DEPTH);
        assert!(serde_json::from_str::<Value>(&nest(MAX_DEPTH + 1)).is_err());
    }

    /// Copying a subtree into its own deepest leaf doubles the depth.
    #[test]
    fn json_patch_cannot_nest_past_the_depth_limit() {
        let mut inner = json!({});
        for _ in 0..100 {
            inner = json!({ "a": inner });
        }
        let doc = json!({ "a": inner });
        let leaf = "/a".repeat(101);
        let ops = [json!({"op": "copy", "from": "/a", "path": format!("{leaf}/b")})];
        let e = apply(PatchType::Json, &doc, &json_ops(&ops)).unwrap_err();
        assert_eq!(e.code, 422, "{}", e.message);
        assert!(e.message.contains("levels deep"), "{}", e.message);
        let ops = [json!({"op": "add", "path": format!("{leaf}/b"), "value": doc.clone()})];
        assert_eq!(
            apply(PatchType::Json, &doc, &json_ops(&ops))
                .unwrap_err()
                .code,
            422
        );
        let ops = [
            json!({"op": "add", "path": "/b", "value": {}}),
            json!({"op": "move", "from": "/a", "path": "/b/c/d"}),
        ];
        let e = apply(PatchType::Json, &doc, &json_ops(&ops)).unwrap_err();
        assert_eq!(e.code, 422, "{}", e.message);
        // Within the limit, moves and copies work.
        let ops = [json!({"op": "move", "from": "/a/a", "path": "/b"})];
        let out = apply(PatchType::Json, &doc, &json_ops(&ops)).unwrap();
        assert_eq!(depth_of(&out), 101);
    }

    /// Lists are matched through indexes: a patch against long lists costs
    /// linear time (matching them pairwise would take minutes here).
    #[test]
    fn strategic_merge_of_long_lists_is_linear() {
        let n = 50_000;
        let names: Vec<Value> = (0..n).map(|i| json!({"name": format!("c{i}")})).collect();
        let fins: Vec<Value> = (0..n).map(|i| json!(format!("f{i}"))).collect();
        let doc = json!({"metadata": {"finalizers": fins}, "spec": {"containers": names}});
        let rev_names: Vec<Value> = names.iter().rev().cloned().collect();
        let patch = json!({
            "metadata": {"$deleteFromPrimitiveList/finalizers": fins[..n / 2], "finalizers": fins},
            "spec": {"$setElementOrder/containers": rev_names,
                     "containers": names.iter().map(|c| json!({"name": c["name"], "image": "i"})).collect::<Vec<_>>()},
        });
        let start = std::time::Instant::now();
        let out = smp(doc, patch);
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        let cs = out["spec"]["containers"].as_array().unwrap();
        assert_eq!(cs.len(), n);
        assert_eq!(cs[0], json!({"name": format!("c{}", n - 1), "image": "i"}));
        assert_eq!(out["metadata"]["finalizers"].as_array().unwrap().len(), n);
    }

    #[test]
    fn strategic_keyed_merge_deletes_and_adds_in_order() {
        let doc = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}, {"name": "a", "dup": true}]}});
        let out = smp(
            doc,
            json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}, {"name": "c"}, {"name": "c", "x": 1}, {"name": "a", "y": 2}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a", "dup": true, "y": 2}, {"name": "c", "x": 1}])
        );
    }

    /// Bounded fuzzing on stable, over the invariants of [`fuzz::one`]:
    /// seeded mutations of patches of every kind for a couple of seconds
    /// (`SKIFF_FUZZ_SECS`, `SKIFF_FUZZ_SEED` override).
    #[test]
    fn fuzz_patches_bounded() {
        let mut rng = skiff_test_support::fuzz::Bounded::from_env(2.0, 0x5eed);
        let seeds: Vec<Vec<u8>> = [
            (0u8, r#"{"metadata":{"labels":{"app":null,"x":"y"}},"spec":{"replicas":3}}"#),
            (1, r#"[{"op":"copy","from":"/spec","path":"/spec/template/x"},{"op":"move","from":"/status","path":"/spec/s"},{"op":"add","path":"/metadata/finalizers/-","value":"c"},{"op":"test","path":"/spec/replicas","value":2}]"#),
            (2, r#"{"metadata":{"$deleteFromPrimitiveList/finalizers":["a"],"finalizers":["z"]},"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"side"},{"name":"web"}],"containers":[{"name":"side","image":"s:1"},{"name":"web","env":[{"name":"A","$patch":"delete"}],"ports":[{"containerPort":81}]}],"volumes":[{"$patch":"replace"}]}},"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}"#),
            (3, "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 5\n  template:\n    spec:\n      containers:\n      - name: web\n        image: web:2\n"),
            (4, "a: &x [1, 2, {b: c}]\nb: [*x, *x]\n"),
        ]
        .iter()
        .map(|(k, p)| [&[*k][..], p.as_bytes()].concat())
        .collect();
        let doc = fuzz::object();
        while rng.running() {
            let mut input = seeds[rng.below(seeds.len())].clone();
            for _ in 0..rng.below(6) {
                let len = input.len();
                match rng.below(6) {
                    0 if len > 1 => input[1 + rng.below(len - 1)] = rng.next_u64() as u8,
                    1 => {
                        let b = b"{}[]\",:/-0$*&"[rng.below(13)];
                        input.insert(1 + rng.below(len), b);
                    }
                    2 if len > 1 => {
                        input.remove(1 + rng.below(len - 1));
                    }
                    3 if len > 1 => {
                        // Repeat a slice: long lists, deep nesting.
                        let a = 1 + rng.below(len - 1);
                        let b = (a + rng.below(16)).min(len);
                        let piece = input[a..b].to_vec();
                        for _ in 0..rng.below(64) {
                            input.splice(a..a, piece.iter().copied());
                        }
                    }
                    4 => input[0] = rng.next_u64() as u8,
                    _ => {}
                }
            }
            fuzz::one(&doc, &input);
        }
        eprintln!("fuzz: {} patches, seed {:#x}", rng.runs(), rng.seed);
        assert!(rng.runs() > 100);
    }

    /// Found by the fuzz target: without serde_json's `float_roundtrip`
    /// a float read back from its JSON could be one ULP off.
    #[test]
    fn floats_read_back_exactly() {
        fuzz::one(
            &fuzz::object(),
            b"77777777777777777000000000000000000001716964822",
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
