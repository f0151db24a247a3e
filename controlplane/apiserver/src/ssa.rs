//! Server-side apply, reduced: each applier's fields are recorded in
//! `metadata.managedFields` (FieldsV1, kube's format); a re-apply removes the
//! fields that manager stopped applying, and setting a field another *apply*
//! manager owns to a different value is a 409 unless `force=true`. Fields
//! written by non-apply requests (update/patch) are not tracked.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Map, Value, json};

use crate::patch::{Lists, ident};
use crate::status::{ApiError, ApiResult};

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Field(String),
    /// A list element identified by its merge key (`k:{"name":"c"}`).
    Key(String, Value),
}

/// The FieldsV1 set of an applied configuration.
pub fn field_set(v: &Value, lists: Lists<'_>) -> Value {
    fn walk(v: &Value, field: &str, lists: Lists<'_>) -> Value {
        match v {
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    out.insert(format!("f:{k}"), walk(x, k, lists.field(k)));
                }
                Value::Object(out)
            }
            Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
                match lists.key(field, items) {
                    Some(key) => {
                        let mut out = Map::new();
                        for it in items {
                            if let Some(id) = it.get(key) {
                                out.insert(
                                    format!("k:{}", json!({ key: id })),
                                    walk(it, "", lists.items()),
                                );
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
    let mut set = walk(v, "", lists);
    if let Some(m) = set.as_object_mut() {
        // Identity fields are not owned.
        m.remove("f:apiVersion");
        m.remove("f:kind");
        if let Some(meta) = m.get_mut("f:metadata").and_then(Value::as_object_mut) {
            meta.remove("f:name");
            meta.remove("f:namespace");
            if meta.is_empty() {
                // Left empty it would read as owning all of the metadata.
                m.remove("f:metadata");
            }
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

fn path_string(p: &[Seg]) -> String {
    p.iter()
        .map(|s| match s {
            Seg::Field(f) => format!(".{f}"),
            Seg::Key(k, v) => format!("[{k}={}]", v.as_str().map_or(v.to_string(), str::to_string)),
        })
        .collect()
}

/// Field sets as trees, so that comparing and pruning them is one walk over
/// each (a set can hold as many fields as an object, and comparing leaf
/// lists pairwise would make one apply cost quadratic time).
#[derive(Debug, Default)]
struct Tree {
    /// Owned as a whole here (an empty object in FieldsV1), by these
    /// managers (indexes into managedFields).
    leaf: bool,
    owners: Vec<usize>,
    children: BTreeMap<String, (Seg, Tree)>,
}

impl Tree {
    fn of(set: &Value, owner: usize) -> Tree {
        let mut t = Tree::default();
        t.add(set, owner);
        t
    }

    /// Adds a FieldsV1 set; false if it held no field (malformed keys are
    /// skipped, as if absent).
    fn add(&mut self, set: &Value, owner: usize) -> bool {
        match set.as_object() {
            Some(m) if !m.is_empty() => {
                let mut any = false;
                for (k, sub) in m {
                    let Some(seg) = parse_seg(k) else { continue };
                    let (_, child) = self
                        .children
                        .entry(k.clone())
                        .or_insert_with(|| (seg, Tree::default()));
                    if child.add(sub, owner) {
                        any = true;
                    } else if !child.leaf && child.children.is_empty() {
                        self.children.remove(k);
                    }
                }
                any
            }
            _ => {
                self.leaf = true;
                self.owners.push(owner);
                true
            }
        }
    }
}

/// Where a path stands against a tree: `Some(node)` while the tree has the
/// path, and whether one of the path's prefixes is a leaf of it.
#[derive(Clone, Copy)]
struct Rel<'a> {
    node: Option<&'a Tree>,
    under_leaf: bool,
}

impl<'a> Rel<'a> {
    fn root(t: &'a Tree) -> Self {
        Rel {
            node: Some(t),
            under_leaf: false,
        }
    }
    fn child(self, k: &str) -> Self {
        let under_leaf = self.under_leaf || self.node.is_some_and(|n| n.leaf);
        Rel {
            node: self.node.and_then(|n| n.children.get(k).map(|(_, t)| t)),
            under_leaf,
        }
    }
    /// The path is a prefix of a leaf of the tree, or has one as a prefix.
    fn related(self) -> bool {
        self.under_leaf || self.node.is_some()
    }
}

/// Finds the child of a value that a segment names; keyed list elements
/// through an index of the list, built once.
struct Lookup<'v> {
    v: Option<&'v Value>,
    index: HashMap<(&'v str, String), &'v Value>,
}

impl<'v> Lookup<'v> {
    fn new(v: Option<&'v Value>, t: &'v Tree) -> Self {
        let mut index = HashMap::new();
        if let Some(items) = v.and_then(Value::as_array) {
            let keys: BTreeSet<&str> = t
                .children
                .values()
                .filter_map(|(s, _)| match s {
                    Seg::Key(k, _) => Some(k.as_str()),
                    Seg::Field(_) => None,
                })
                .collect();
            for e in items {
                for k in &keys {
                    if let Some(id) = e.get(*k) {
                        index.entry((*k, ident(id))).or_insert(e);
                    }
                }
            }
        }
        Lookup { v, index }
    }

    fn get(&self, seg: &Seg) -> Option<&'v Value> {
        match seg {
            Seg::Field(f) => self.v.and_then(|v| v.get(f)),
            Seg::Key(k, id) => self.index.get(&(k.as_str(), ident(id))).copied(),
        }
    }
}

/// Leaves both `new` and `others` own where `result` and `applied` differ:
/// (owner, path).
fn conflicts(
    new: &Tree,
    others: &Tree,
    result: Option<&Value>,
    applied: Option<&Value>,
    path: &mut Vec<Seg>,
    out: &mut Vec<(usize, String)>,
) {
    if new.leaf && others.leaf && result != applied {
        out.extend(others.owners.iter().map(|o| (*o, path_string(path))));
    }
    let (r_at, a_at) = (Lookup::new(result, new), Lookup::new(applied, new));
    for (name, (seg, sub)) in &new.children {
        let Some((_, osub)) = others.children.get(name) else {
            continue;
        };
        path.push(seg.clone());
        conflicts(sub, osub, r_at.get(seg), a_at.get(seg), path, out);
        path.pop();
    }
}

/// The leaves of `prev` (this manager's last apply) related to neither
/// `new` nor `others`: fields it stopped applying that nobody else owns.
fn dropped(prev: &Tree, new: Rel<'_>, others: Rel<'_>, path: &mut Vec<String>, out: &mut Tree) {
    if prev.leaf && !new.related() && !others.related() {
        let mut at = &mut *out;
        for k in path.iter() {
            let seg = parse_seg(k).expect("parsed when the tree was built");
            at = &mut at
                .children
                .entry(k.clone())
                .or_insert_with(|| (seg, Tree::default()))
                .1;
        }
        at.leaf = true;
    }
    for (k, (_, sub)) in &prev.children {
        path.push(k.clone());
        dropped(sub, new.child(k), others.child(k), path, out);
        path.pop();
    }
}

/// Removes every leaf of `gone` from `v`: a field, or every list element
/// with that key.
fn remove(v: &mut Value, gone: &Tree) {
    match v {
        Value::Object(m) => {
            for (seg, sub) in gone.children.values() {
                if let Seg::Field(f) = seg {
                    if sub.leaf {
                        m.remove(f);
                    } else if let Some(x) = m.get_mut(f) {
                        remove(x, sub);
                    }
                }
            }
        }
        Value::Array(items) => {
            let mut by_key: HashMap<(&str, String), &Tree> = HashMap::new();
            for (seg, sub) in gone.children.values() {
                if let Seg::Key(k, id) = seg {
                    by_key.insert((k.as_str(), ident(id)), sub);
                }
            }
            let keys: BTreeSet<&str> = by_key.keys().map(|(k, _)| *k).collect();
            items.retain_mut(|e| {
                for k in &keys {
                    let Some(id) = e.get(*k).map(ident) else {
                        continue;
                    };
                    match by_key.get(&(*k, id)) {
                        Some(sub) if sub.leaf => return false,
                        Some(sub) => remove(e, sub),
                        None => {}
                    }
                }
                true
            });
        }
        _ => {}
    }
}

/// Takes what `new` owns out of another manager's set (a forced apply):
/// each of `new`'s leaves, that manager's leaves on the way to one, and
/// the parents that leaves empty. Returns whether `set` is now empty.
fn prune(set: &mut Value, new: &Tree) -> bool {
    let Some(m) = set.as_object_mut() else {
        return false;
    };
    m.retain(|k, sub| match new.children.get(k) {
        None => true,
        Some((_, n)) if n.leaf => false,
        Some((_, n)) => !prune(sub, n),
    });
    m.is_empty()
}

/// Applies `applied` for `manager` onto `current` (None = create).
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    now: &str,
    lists: Lists<'_>,
) -> ApiResult<Value> {
    let mut result = current.cloned().unwrap_or_else(|| json!({}));
    let managed: Vec<Value> = result
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let new_set = field_set(applied, lists);
    let new_tree = Tree::of(&new_set, usize::MAX);
    let is_mine = |e: &Value| e["manager"] == manager && e["operation"] == "Apply";
    let mut others = Tree::default();
    for (i, e) in managed.iter().enumerate() {
        if !is_mine(e) && e["operation"] == "Apply" {
            others.add(&e["fieldsV1"], i);
        }
    }
    let mut found = Vec::new();
    conflicts(
        &new_tree,
        &others,
        Some(&result),
        Some(applied),
        &mut Vec::new(),
        &mut found,
    );
    if !found.is_empty() && !force {
        found.sort();
        let list: Vec<String> = found
            .iter()
            .map(|(o, path)| {
                format!(
                    "conflict with \"{}\": {path}",
                    managed[*o]["manager"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Apply failed with {} conflict{}: {}",
                list.len(),
                if list.len() == 1 { "" } else { "s" },
                list.join(", ")
            ),
        ));
    }
    // Fields this manager applied before but no longer does, unless another
    // applier still owns them.
    if let Some(prev) = managed.iter().find(|e| is_mine(e)) {
        let mut gone = Tree::default();
        dropped(
            &Tree::of(&prev["fieldsV1"], 0),
            Rel::root(&new_tree),
            Rel::root(&others),
            &mut Vec::new(),
            &mut gone,
        );
        remove(&mut result, &gone);
    }
    let body = serde_json::to_vec(applied).map_err(ApiError::internal)?;
    let mut result =
        crate::patch::apply_with(crate::patch::PatchType::Strategic, &result, &body, lists)?;
    let mut entries: Vec<Value> = managed.into_iter().filter(|e| !is_mine(e)).collect();
    if force {
        // Forced fields change owner.
        for e in &mut entries {
            prune(&mut e["fieldsV1"], &new_tree);
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
    let meta = result
        .as_object_mut()
        .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
        .ok_or_else(|| {
            ApiError::bad_request("an applied configuration must be an object with object metadata")
        })?;
    meta.insert("managedFields".into(), json!(entries));
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
        let s = field_set(&deploy(1, false), Lists::Builtin);
        assert!(
            s.pointer("/f:spec/f:template/f:spec/f:containers/k:{\"name\":\"c\"}/f:image")
                .is_some(),
            "{s}"
        );
        assert!(s.get("f:kind").is_none());
    }

    fn with_containers(n: usize, image: &str) -> Value {
        let cs: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("c{i}"), "image": image}))
            .collect();
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": cs}})
    }

    /// Field sets are compared as trees and lists through indexes: two
    /// appliers of a long list cost linear time, not pairwise comparisons
    /// of every field (minutes here).
    #[test]
    fn applies_of_long_lists_are_linear() {
        let t = "2026-01-01T00:00:00Z";
        let n = 20_000;
        let start = std::time::Instant::now();
        let v1 = apply(
            None,
            &with_containers(n, "i:1"),
            "a",
            false,
            t,
            Lists::Builtin,
        )
        .unwrap();
        let v2 = apply(
            Some(&v1),
            &with_containers(n, "i:1"),
            "b",
            false,
            t,
            Lists::Builtin,
        )
        .unwrap();
        let e = apply(
            Some(&v2),
            &with_containers(n, "i:2"),
            "b",
            false,
            t,
            Lists::Builtin,
        )
        .unwrap_err();
        assert_eq!(e.code, 409);
        assert!(
            e.message
                .starts_with(&format!("Apply failed with {n} conflicts"))
        );
        let forced = apply(
            Some(&v2),
            &with_containers(n, "i:2"),
            "b",
            true,
            t,
            Lists::Builtin,
        )
        .unwrap();
        let a = &forced["metadata"]["managedFields"][0];
        assert_eq!(a["manager"], "a");
        // Forced fields change owner (all that "b" applies).
        assert!(a["fieldsV1"].get("f:spec").is_none(), "{a}");
        // "a" applies and then drops half the list; "b" still owns it.
        let forced = apply(
            Some(&forced),
            &with_containers(n, "i:2"),
            "a",
            false,
            t,
            Lists::Builtin,
        )
        .unwrap();
        let half = apply(
            Some(&forced),
            &with_containers(n / 2, "i:2"),
            "a",
            true,
            t,
            Lists::Builtin,
        )
        .unwrap();
        assert_eq!(half["spec"]["containers"].as_array().unwrap().len(), n);
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }

    #[test]
    fn reapply_removes_dropped_fields_and_other_appliers_conflict() {
        let t = "2026-01-01T00:00:00Z";
        let v1 = apply(None, &deploy(1, true), "a", false, t, Lists::Builtin).unwrap();
        assert_eq!(v1["metadata"]["labels"]["extra"], "1");
        let v2 = apply(Some(&v1), &deploy(1, false), "a", false, t, Lists::Builtin).unwrap();
        assert!(v2["metadata"]["labels"].get("extra").is_none(), "{v2}");
        assert_eq!(v2["metadata"]["managedFields"].as_array().unwrap().len(), 1);

        let mut other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 5}});
        let e = apply(Some(&v2), &other, "b", false, t, Lists::Builtin).unwrap_err();
        assert_eq!(e.code, 409);
        assert!(e.message.contains(".spec.replicas"), "{}", e.message);
        let forced = apply(Some(&v2), &other, "b", true, t, Lists::Builtin).unwrap();
        assert_eq!(forced["spec"]["replicas"], 5);
        // Same value: shared ownership, no conflict.
        other["spec"]["replicas"] = json!(1);
        assert!(apply(Some(&v2), &other, "b", false, t, Lists::Builtin).is_ok());
    }

    /// A custom resource's lists merge as its schema says: a `map` by its
    /// key, so two appliers keep each other's entries; others are atomic,
    /// whatever the field is called.
    #[test]
    fn custom_lists_follow_the_schema() {
        let schema = json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {
            "routes": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "to": {"type": "string"}}}},
            "containers": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
        }}}});
        let lists = Lists::Schema(Some(&schema));
        let obj = |route: &str, container: &str| {
            json!({"apiVersion": "x.io/v1", "kind": "R", "metadata": {"name": "r"},
                "spec": {"routes": [{"name": route, "to": "svc"}], "containers": [{"name": container}]}})
        };
        let t = "2026-01-01T00:00:00Z";
        let v1 = apply(None, &obj("a", "c1"), "one", false, t, lists).unwrap();
        let v2 = apply(Some(&v1), &obj("b", "c2"), "two", true, t, lists).unwrap();
        let routes: Vec<&str> = v2["spec"]["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(routes, ["a", "b"]);
        assert_eq!(v2["spec"]["containers"], json!([{"name": "c2"}]));
        let set = field_set(&obj("a", "c1"), lists);
        assert!(
            set["f:spec"]["f:routes"].get(r#"k:{"name":"a"}"#).is_some(),
            "{set}"
        );
        assert_eq!(set["f:spec"]["f:containers"], json!({}));
        // Built-in semantics would have merged containers by name.
        let builtin = field_set(&obj("a", "c1"), Lists::Builtin);
        assert!(
            builtin["f:spec"]["f:containers"]
                .get(r#"k:{"name":"c1"}"#)
                .is_some()
        );
    }
}
