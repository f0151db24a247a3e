//! Structural OpenAPI v3 schemas of custom resources, with kube-apiserver's
//! semantics (`apiextensions-apiserver/pkg/apiserver/schema`): the
//! structural check a CRD's schema must pass, pruning of unknown fields,
//! `default:` values, and validation with kube's messages and field paths,
//! `x-kubernetes-validations` CEL rules included (kube-rs' `kube-cel`, with
//! Kubernetes' CEL libraries).

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::registry::Causes;

/// A custom resource version's schema, with its patterns and CEL rules
/// compiled once.
pub struct Schema {
    root: Value,
    patterns: Patterns,
    /// The compiled `x-kubernetes-validations`, when the schema has any.
    rules: Option<kube_cel::CompiledSchema>,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

thread_local! {
    /// The CEL environment with Kubernetes' libraries (not `Sync`: one per
    /// thread).
    static CEL: kube_cel::Validator = kube_cel::Validator::new();
}

fn has_rules(s: &Value) -> bool {
    match s {
        Value::Object(o) => {
            o.contains_key("x-kubernetes-validations")
                || o.iter().any(|(k, v)| {
                    !matches!(k.as_str(), "default" | "enum" | "example") && has_rules(v)
                })
        }
        Value::Array(a) => a.iter().any(has_rules),
        _ => false,
    }
}

impl Schema {
    pub fn new(root: Value) -> Schema {
        let patterns = Patterns::of(&root);
        let rules = has_rules(&root).then(|| kube_cel::compile_schema(&root));
        Schema {
            root,
            patterns,
            rules,
        }
    }

    pub fn root(&self) -> &Value {
        &self.root
    }

    pub fn prune_and_default(&self, v: &mut Value) {
        prune_and_default(&self.root, v, true);
    }

    /// The schema's checks, then (when those pass, as the values then have
    /// their types) its CEL rules; `old` is the stored object of an update,
    /// for transition rules.
    pub fn validate(&self, v: &Value, old: Option<&Value>, causes: &mut Causes) {
        let before = causes.len();
        validate(&self.root, v, "", &self.patterns, causes);
        if causes.len() > before {
            return;
        }
        let Some(rules) = &self.rules else { return };
        let failed = CEL.with(|cel| cel.validate_compiled(rules, v, old));
        for e in failed
            .err()
            .map(kube_cel::ValidationErrors::into_vec)
            .unwrap_or_default()
        {
            causes.push(cel_cause(v, &e));
        }
    }
}

/// A failed CEL rule as kube reports it: the field, then (for a plain
/// failure) the type of the value there and the rule's message.
fn cel_cause(obj: &Value, e: &kube_cel::ValidationError) -> (String, String) {
    let at = e
        .field_path
        .split('.')
        .filter(|s| !s.is_empty())
        .try_fold(obj, |v, k| v.get(k));
    let field = if e.field_path.is_empty() {
        "<root>".to_string()
    } else {
        e.field_path.clone()
    };
    let message = match e.reason.as_deref() {
        Some("FieldValueForbidden") => format!("Forbidden: {}", e.message),
        Some("FieldValueRequired") => format!("Required value: {}", e.message),
        Some("FieldValueDuplicate") => format!("Duplicate value: {}", e.message),
        _ => format!(
            "Invalid value: {:?}: {}",
            at.map_or("object", type_name),
            e.message
        ),
    };
    (field, message)
}

/// The compiled `pattern`s of a schema, by their text.
#[derive(Debug, Default)]
struct Patterns(HashMap<String, regex::Regex>);

impl Patterns {
    fn of(s: &Value) -> Patterns {
        fn walk(s: &Value, out: &mut HashMap<String, regex::Regex>) {
            match s {
                Value::Object(o) => {
                    if let Some(p) = o.get("pattern").and_then(Value::as_str)
                        && let Ok(re) = regex::Regex::new(p)
                    {
                        out.insert(p.to_string(), re);
                    }
                    // Only schema positions hold patterns; these hold values.
                    for (k, v) in o {
                        if !matches!(k.as_str(), "default" | "enum" | "example") {
                            walk(v, out);
                        }
                    }
                }
                Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        let mut out = HashMap::new();
        walk(s, &mut out);
        Patterns(out)
    }
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn flag(s: &Value, name: &str) -> bool {
    s.get(name) == Some(&Value::Bool(true))
}

fn ty(s: &Value) -> &str {
    s.get("type").and_then(Value::as_str).unwrap_or("")
}

fn properties(s: &Value) -> Option<&Map<String, Value>> {
    s.get("properties").and_then(Value::as_object)
}

/// The schema of additional properties, if any (`additionalProperties:
/// true` without a schema preserves them as they are).
fn additional(s: &Value) -> Option<&Value> {
    s.get("additionalProperties").filter(|a| a.is_object())
}

/// kube's structural schema rules, the ones that decide pruning: every
/// specified field has a type, the root is an object, arrays say what
/// their items are, properties and additionalProperties exclude each other.
pub fn structural(s: &Value, path: &str, root: bool, causes: &mut Causes) {
    let Some(o) = s.as_object() else {
        causes.push((path.into(), "Invalid value: must be a schema object".into()));
        return;
    };
    let t = ty(s);
    let escape =
        flag(s, "x-kubernetes-int-or-string") || flag(s, "x-kubernetes-preserve-unknown-fields");
    if t.is_empty() && !escape {
        let why = if root {
            "must not be empty at the root"
        } else {
            "must not be empty for specified object fields"
        };
        causes.push((format!("{path}.type"), format!("Required value: {why}")));
    }
    if root && !t.is_empty() && t != "object" {
        causes.push((
            format!("{path}.type"),
            format!("Invalid value: {t:?}: must be object at the root"),
        ));
    }
    if !t.is_empty() && !["object", "array", "string", "integer", "number", "boolean"].contains(&t)
    {
        causes.push((
            format!("{path}.type"),
            format!("Unsupported value: {t:?}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\""),
        ));
    }
    if o.contains_key("properties") && o.contains_key("additionalProperties") {
        causes.push((
            format!("{path}.additionalProperties"),
            "Forbidden: additionalProperties and properties are mutual exclusive".into(),
        ));
    }
    if t == "array" && !o.get("items").is_some_and(Value::is_object) {
        causes.push((
            format!("{path}.items"),
            "Required value: must be specified".into(),
        ));
    }
    if let Some(p) = o.get("pattern").and_then(Value::as_str)
        && let Err(e) = regex::Regex::new(p)
    {
        causes.push((
            format!("{path}.pattern"),
            format!("Invalid value: {p:?}: must be a valid regular expression, but isn't: {e}"),
        ));
    }
    if root && let Some(meta) = properties(s).and_then(|p| p.get("metadata")) {
        // Metadata is ObjectMeta's; a schema may only constrain the names.
        let names_only = meta.as_object().is_some_and(|m| {
            m.iter().all(|(k, v)| match k.as_str() {
                "type" | "description" => true,
                "properties" => v
                    .as_object()
                    .is_some_and(|p| p.keys().all(|k| k == "name" || k == "generateName")),
                _ => false,
            })
        });
        if !names_only {
            causes.push((
                format!("{path}.properties[metadata]"),
                "Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified".into(),
            ));
        }
    }
    if let Some(rules) = o.get("x-kubernetes-validations") {
        // This node's rules alone (its children are checked on their own).
        let node = serde_json::json!({"type": t, "x-kubernetes-validations": rules});
        let compiled = kube_cel::compile_schema(&node);
        for (j, r) in compiled.validations.iter().enumerate() {
            if let Err(e) = r {
                let rule = rules
                    .get(j)
                    .and_then(|r| r.get("rule"))
                    .cloned()
                    .unwrap_or(Value::Null);
                causes.push((
                    format!("{path}.x-kubernetes-validations[{j}].rule"),
                    format!("Invalid value: {rule}: compilation failed: {e}"),
                ));
            }
        }
    }
    if o.contains_key("$ref") {
        causes.push((
            format!("{path}.$ref"),
            "Forbidden: $ref is not supported".into(),
        ));
    }
    if let Some(d) = o.get("default") {
        // kube: a default must itself be valid, and survive pruning.
        let mut pruned = d.clone();
        prune_and_default(s, &mut pruned, false);
        if pruned != *d {
            causes.push((
                format!("{path}.default"),
                "Invalid value: must not have unknown fields".into(),
            ));
        }
        validate(s, d, &format!("{path}.default"), &Patterns::of(s), causes);
    }
    for (k, v) in properties(s).into_iter().flatten() {
        structural(v, &format!("{path}.properties[{k}]"), false, causes);
    }
    if let Some(items) = o.get("items").filter(|i| i.is_object()) {
        structural(items, &format!("{path}.items"), false, causes);
    }
    if let Some(a) = additional(s) {
        structural(a, &format!("{path}.additionalProperties"), false, causes);
    }
}

/// Applies `default:` values to missing (or null, when not nullable)
/// fields, then drops the fields the schema does not specify; at the root
/// and in embedded resources apiVersion, kind and metadata stay.
fn prune_and_default(s: &Value, v: &mut Value, root: bool) {
    match v {
        Value::Object(obj) => {
            if let Some(props) = properties(s) {
                // kube: a null where the schema does not allow one is
                // pruned, then defaulted like a missing field.
                obj.retain(|k, v| {
                    !(v.is_null() && props.get(k).is_some_and(|ps| !flag(ps, "nullable")))
                });
                for (k, ps) in props {
                    if !obj.contains_key(k)
                        && let Some(d) = ps.get("default")
                    {
                        obj.insert(k.clone(), d.clone());
                    }
                }
            }
            let keep_meta = root || flag(s, "x-kubernetes-embedded-resource");
            let preserve = flag(s, "x-kubernetes-preserve-unknown-fields");
            let extra = s.get("additionalProperties");
            obj.retain(|k, _| {
                properties(s).is_some_and(|p| p.contains_key(k))
                    || (keep_meta && matches!(k.as_str(), "apiVersion" | "kind" | "metadata"))
                    || preserve
                    || extra.is_some_and(|a| a.is_object() || *a == Value::Bool(true))
            });
            for (k, child) in obj.iter_mut() {
                if keep_meta && k == "metadata" {
                    // ObjectMeta's own fields, whatever the schema names.
                    continue;
                }
                let sub = properties(s)
                    .and_then(|p| p.get(k))
                    .or_else(|| additional(s));
                if let Some(sub) = sub {
                    prune_and_default(sub, child, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items").filter(|i| i.is_object()) {
                for i in items {
                    prune_and_default(is, i, false);
                }
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_ok(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        _ => true,
    }
}

/// How kube's field errors show a value.
fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn num(n: &Value) -> String {
    match n.as_f64() {
        Some(f) => f.to_string(),
        None => n.to_string(),
    }
}

/// Checks `v` against the schema `s`; `path` is the field path ("" at the
/// root).
fn validate(s: &Value, v: &Value, path: &str, re: &Patterns, causes: &mut Causes) {
    let before = causes.len();
    let t = ty(s);
    if v.is_null() {
        if !flag(s, "nullable") && !t.is_empty() {
            causes.push((
                path.into(),
                format!("Invalid value: \"null\": {path} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    if flag(s, "x-kubernetes-int-or-string") {
        if !(v.is_string() || v.is_i64() || v.is_u64()) {
            causes.push((
                path.into(),
                format!(
                    "Invalid value: {:?}: {path} in body must be of type integer or string: {:?}",
                    type_name(v),
                    type_name(v)
                ),
            ));
            return;
        }
    } else if !t.is_empty() && !type_ok(t, v) {
        causes.push((
            path.into(),
            format!(
                "Invalid value: {:?}: {path} in body must be of type {t}: {:?}",
                type_name(v),
                type_name(v)
            ),
        ));
        return;
    }
    if let Some(allowed) = s.get("enum").and_then(Value::as_array)
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(shown).collect();
        causes.push((
            path.into(),
            format!(
                "Unsupported value: {}: supported values: {}",
                shown(v),
                list.join(", ")
            ),
        ));
    }
    if let Some(x) = v.as_f64() {
        let exclusive = |k: &str| flag(s, k);
        if let Some(min) = s.get("minimum").filter(|m| m.is_number()) {
            let m = min.as_f64().unwrap_or(f64::MIN);
            if exclusive("exclusiveMinimum") && x <= m {
                causes.push((
                    path.into(),
                    format!(
                        "Invalid value: {v}: {path} in body should be greater than {}",
                        num(min)
                    ),
                ));
            } else if x < m {
                causes.push((
                    path.into(),
                    format!(
                        "Invalid value: {v}: {path} in body should be greater than or equal to {}",
                        num(min)
                    ),
                ));
            }
        }
        if let Some(max) = s.get("maximum").filter(|m| m.is_number()) {
            let m = max.as_f64().unwrap_or(f64::MAX);
            if exclusive("exclusiveMaximum") && x >= m {
                causes.push((
                    path.into(),
                    format!(
                        "Invalid value: {v}: {path} in body should be less than {}",
                        num(max)
                    ),
                ));
            } else if x > m {
                causes.push((
                    path.into(),
                    format!(
                        "Invalid value: {v}: {path} in body should be less than or equal to {}",
                        num(max)
                    ),
                ));
            }
        }
        if let Some(m) = s.get("multipleOf").and_then(Value::as_f64)
            && m > 0.0
            && (x / m).fract() != 0.0
        {
            causes.push((
                path.into(),
                format!("Invalid value: {v}: {path} in body should be a multiple of {m}"),
            ));
        }
    }
    if let Some(text) = v.as_str() {
        let chars = text.chars().count() as u64;
        if let Some(min) = s.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            causes.push((
                path.into(),
                format!(
                    "Invalid value: {text:?}: {path} in body should be at least {min} chars long"
                ),
            ));
        }
        if let Some(max) = s.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            causes.push((
                path.into(),
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
        if let Some(f) = s.get("format").and_then(Value::as_str)
            && !format_ok(f, text)
        {
            causes.push((
                path.into(),
                format!("Invalid value: {text:?}: {path} in body must be of type {f}: {text:?}"),
            ));
        }
        if let Some(p) = s.get("pattern").and_then(Value::as_str) {
            // Patterns that do not compile are refused at CRD write.
            if re.0.get(p).is_some_and(|re| !re.is_match(text)) {
                causes.push((
                    path.into(),
                    format!("Invalid value: {text:?}: {path} in body should match '{p}'"),
                ));
            }
        }
    }
    if let Some(items) = v.as_array() {
        let n = items.len() as u64;
        if let Some(max) = s.get("maxItems").and_then(Value::as_u64)
            && n > max
        {
            causes.push((
                path.into(),
                format!("Too many: {n}: must have at most {max} items"),
            ));
        }
        if let Some(min) = s.get("minItems").and_then(Value::as_u64)
            && n < min
        {
            causes.push((
                path.into(),
                format!("Invalid value: {n}: {path} in body should have at least {min} items"),
            ));
        }
        if let Some(is) = s.get("items").filter(|i| i.is_object()) {
            for (i, item) in items.iter().enumerate() {
                validate(is, item, &format!("{path}[{i}]"), re, causes);
            }
        }
        list_type(s, items, path, causes);
    }
    if let Some(obj) = v.as_object() {
        let n = obj.len() as u64;
        if let Some(max) = s.get("maxProperties").and_then(Value::as_u64)
            && n > max
        {
            causes.push((
                path.into(),
                format!("Too many: {n}: must have at most {max} items"),
            ));
        }
        if let Some(min) = s.get("minProperties").and_then(Value::as_u64)
            && n < min
        {
            causes.push((
                path.into(),
                format!("Invalid value: {n}: {path} in body should have at least {min} properties"),
            ));
        }
        if flag(s, "x-kubernetes-embedded-resource") {
            for k in ["apiVersion", "kind"] {
                if obj.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                    causes.push((child(path, k), "Required value: must not be empty".into()));
                }
            }
        }
        for req in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(k) = req.as_str()
                && !obj.contains_key(k)
            {
                causes.push((child(path, k), "Required value".into()));
            }
        }
        for (k, child_v) in obj {
            let sub = properties(s)
                .and_then(|p| p.get(k))
                .or_else(|| additional(s));
            if let Some(sub) = sub {
                validate(sub, child_v, &child(path, k), re, causes);
            }
        }
    }
    // A root-level failure is reported at the object itself.
    for c in &mut causes[before..] {
        if c.0.is_empty() {
            c.0 = "<root>".into();
        }
    }
}

/// The string formats kube checks; others (and number formats) pass.
fn format_ok(format: &str, s: &str) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    match format {
        "date-time" | "datetime" => s.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "date" => s.parse::<k8s_openapi::jiff::civil::Date>().is_ok() && s.len() == 10,
        "uuid" => {
            let parts: Vec<&str> = s.split('-').collect();
            parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
                && parts
                    .iter()
                    .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        }
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            let max = match ip.parse::<IpAddr>() {
                Ok(IpAddr::V4(_)) => 32,
                Ok(IpAddr::V6(_)) => 128,
                Err(_) => return false,
            };
            bits.parse::<u8>().is_ok_and(|b| b <= max)
        }),
        "hostname" => crate::admission::is_dns1123_subdomain(s),
        "email" => s
            .split_once('@')
            .is_some_and(|(user, host)| !user.is_empty() && host.contains('.')),
        "byte" => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.decode(s).is_ok()
        }
        _ => true,
    }
}

/// `x-kubernetes-list-type`: a `set` holds each value once, a `map` each
/// combination of its `x-kubernetes-list-map-keys` once.
fn list_type(s: &Value, items: &[Value], path: &str, causes: &mut Causes) {
    let map = match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => false,
        Some("map") => true,
        _ => return,
    };
    let keys: Vec<&str> = s
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut seen: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let id = if map {
            Value::Object(
                keys.iter()
                    .filter_map(|k| Some((k.to_string(), item.get(*k)?.clone())))
                    .collect(),
            )
        } else {
            item.clone()
        };
        if seen.contains(&id) {
            causes.push((
                format!("{path}[{i}]"),
                format!("Duplicate value: {}", shown(&id)),
            ));
        } else {
            seen.push(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "spec": {"type": "object", "required": ["image"], "properties": {
                "replicas": {"type": "integer", "minimum": 1, "maximum": 10, "default": 1},
                "image": {"type": "string", "pattern": "^[a-z]+$", "minLength": 2, "maxLength": 8},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "ports": {"type": "array", "maxItems": 2, "items": {"type": "integer"}},
                "port": {"x-kubernetes-int-or-string": true},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            }},
            "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
        }})
    }

    fn causes_of(v: Value) -> Vec<String> {
        let mut c = Causes::new();
        Schema::new(schema()).validate(&v, None, &mut c);
        c.into_iter().map(|(f, m)| format!("{f}: {m}")).collect()
    }

    #[test]
    fn messages_are_kubes() {
        assert_eq!(
            causes_of(json!({"spec": {"image": "abc", "replicas": 0}})),
            [
                "spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"
            ]
        );
        assert_eq!(
            causes_of(json!({"spec": {"image": "abc", "replicas": "x"}})),
            [
                "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
            ]
        );
        assert_eq!(
            causes_of(json!({"spec": {}})),
            ["spec.image: Required value"]
        );
        assert_eq!(
            causes_of(
                json!({"spec": {"image": "A1", "mode": "c", "ports": [1, 2, 3], "port": 1.5, "labels": {"x": 1}}})
            ),
            [
                "spec.image: Invalid value: \"A1\": spec.image in body should match '^[a-z]+$'",
                "spec.labels.x: Invalid value: \"integer\": spec.labels.x in body must be of type string: \"integer\"",
                "spec.mode: Unsupported value: \"c\": supported values: \"a\", \"b\"",
                "spec.port: Invalid value: \"number\": spec.port in body must be of type integer or string: \"number\"",
                "spec.ports: Too many: 3: must have at most 2 items",
            ]
        );
        assert!(
            causes_of(json!({"spec": {"image": "abc", "port": "http", "free": {"a": [1]}}}))
                .is_empty()
        );
    }

    #[test]
    fn pruning_keeps_what_the_schema_knows_and_defaults_fill_in() {
        let mut v = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"}, "junk": 1,
            "spec": {"image": "abc", "extra": true, "replicas": null, "mode": null, "free": {"a": {"b": 1}}, "labels": {"k": "v"}}});
        Schema::new(schema()).prune_and_default(&mut v);
        assert_eq!(
            v,
            json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "a"},
            "spec": {"image": "abc", "replicas": 1, "free": {"a": {"b": 1}}, "labels": {"k": "v"}}})
        );
    }

    #[test]
    fn embedded_resources_need_their_type() {
        let s = json!({"type": "object", "properties": {"template": {"type": "object",
            "x-kubernetes-embedded-resource": true, "x-kubernetes-preserve-unknown-fields": true}}});
        let mut c = Causes::new();
        let s = Schema::new(s);
        s.validate(&json!({"template": {"kind": "Pod"}}), None, &mut c);
        assert_eq!(
            c,
            [(
                "template.apiVersion".to_string(),
                "Required value: must not be empty".to_string()
            )]
        );
        let mut v = json!({"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}});
        let before = v.clone();
        s.prune_and_default(&mut v);
        assert_eq!(v, before);
    }

    #[test]
    fn formats_are_checked() {
        let s = json!({"type": "object", "properties": {
            "at": {"type": "string", "format": "date-time"},
            "ip": {"type": "string", "format": "ipv4"},
            "net": {"type": "string", "format": "cidr"},
            "id": {"type": "string", "format": "uuid"},
            "n": {"type": "integer", "format": "int32"},
        }});
        let s = Schema::new(s);
        let mut c = Causes::new();
        s.validate(
            &json!({"at": "2026-12-07T10:00:00Z", "ip": "10.0.0.1", "net": "10.0.0.0/8",
                "id": "a4e3b9d2-e5d1-4931-bfd9-6abba5144a12", "n": 7}),
            None,
            &mut c,
        );
        assert!(c.is_empty(), "{c:?}");
        s.validate(
            &json!({"at": "yesterday", "ip": "10.0.0", "net": "10.0.0.0/33", "id": "x"}),
            None,
            &mut c,
        );
        let fields: Vec<&str> = c.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["at", "id", "ip", "net"]);
        assert_eq!(
            c[0].1,
            "Invalid value: \"yesterday\": at in body must be of type date-time: \"yesterday\""
        );
    }

    #[test]
    fn cel_rules_are_enforced_and_checked_at_crd_write() {
        let s = json!({"type": "object", "properties": {"spec": {"type": "object",
        "x-kubernetes-validations": [
            {"rule": "self.replicas <= self.maxReplicas", "message": "replicas must be at most maxReplicas"},
            {"rule": "self.name == oldSelf.name", "message": "name is immutable"},
        ],
        "properties": {
            "replicas": {"type": "integer"}, "maxReplicas": {"type": "integer"},
            "name": {"type": "string"},
        }}}});
        let mut c = Causes::new();
        structural(&s, "s", true, &mut c);
        assert!(c.is_empty(), "{c:?}");
        let s = Schema::new(s);
        let obj = |r: i64, n: &str| json!({"spec": {"replicas": r, "maxReplicas": 3, "name": n}});
        s.validate(&obj(2, "a"), None, &mut c);
        assert!(c.is_empty(), "{c:?}");
        s.validate(&obj(4, "a"), Some(&obj(2, "b")), &mut c);
        assert_eq!(
            c,
            [
                (
                    "spec".to_string(),
                    "Invalid value: \"object\": replicas must be at most maxReplicas".to_string()
                ),
                (
                    "spec".to_string(),
                    "Invalid value: \"object\": name is immutable".to_string()
                ),
            ]
        );
        let mut c = Causes::new();
        structural(
            &json!({"type": "object", "x-kubernetes-validations": [{"rule": "self.a >"}]}),
            "s",
            true,
            &mut c,
        );
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].0, "s.x-kubernetes-validations[0].rule");
        assert!(c[0].1.contains("compilation failed"), "{c:?}");
    }

    #[test]
    fn list_types_refuse_duplicates() {
        let s = json!({"type": "object", "properties": {
            "tags": {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                "items": {"type": "object", "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}}},
            "labels": {"type": "object", "maxProperties": 1, "additionalProperties": {"type": "string"}},
        }});
        let mut c = Causes::new();
        let v = json!({"tags": ["a", "b", "a"], "ports": [{"name": "x", "port": 1}, {"name": "x", "port": 2}],
            "labels": {"a": "1", "b": "2"}});
        Schema::new(s).validate(&v, None, &mut c);
        let got: Vec<String> = c.into_iter().map(|(f, m)| format!("{f}: {m}")).collect();
        assert_eq!(
            got,
            [
                "labels: Too many: 2: must have at most 1 items",
                "ports[1]: Duplicate value: {\"name\":\"x\"}",
                "tags[2]: Duplicate value: \"a\"",
            ]
        );
    }

    #[test]
    fn invalid_defaults_are_refused() {
        let mut c = Causes::new();
        structural(
            &json!({"type": "object", "properties": {"n": {"type": "integer", "minimum": 1, "default": 0}}}),
            "s",
            true,
            &mut c,
        );
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].0, "s.properties[n].default");
        assert!(
            c[0].1.contains("should be greater than or equal to 1"),
            "{c:?}"
        );
    }

    #[test]
    fn non_structural_schemas_are_named() {
        let mut c = Causes::new();
        structural(
            &json!({"type": "object", "properties": {"spec": {"properties": {"a": {"type": "array"}}}}}),
            "s",
            true,
            &mut c,
        );
        let fields: Vec<&str> = c.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "s.properties[spec].type",
                "s.properties[spec].properties[a].items"
            ]
        );
    }

    #[test]
    fn root_metadata_may_only_constrain_names() {
        let meta = |m: Value| json!({"type": "object", "properties": {"metadata": m}});
        let mut c = Causes::new();
        structural(
            &meta(
                json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 10}}}),
            ),
            "s",
            true,
            &mut c,
        );
        assert!(c.is_empty(), "{c:?}");
        structural(
            &meta(json!({"type": "object", "properties": {"labels": {"type": "object"}}})),
            "s",
            true,
            &mut c,
        );
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!(c[0].0, "s.properties[metadata]");
        let mut v = json!({"metadata": {"name": "a", "labels": {"x": "y"}}});
        let before = v.clone();
        Schema::new(meta(
            json!({"type": "object", "properties": {"name": {"type": "string"}}}),
        ))
        .prune_and_default(&mut v);
        assert_eq!(v, before);
    }
}
