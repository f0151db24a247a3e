//! Kubernetes' protobuf wire format (`application/vnd.kubernetes.protobuf`)
//! for every built-in kind, both ways, driven by the upstream
//! `generated.proto` definitions (vendored in `proto/`, compiled into a
//! descriptor set at build time) rather than hand-written tables.
//!
//! A body is the `k8s\0` magic and a `runtime.Unknown` envelope naming the
//! apiVersion and kind, whose `raw` is the object's message. [`decode`] turns
//! it into the JSON kube would read, [`encode`] turns JSON back into it.
//!
//! JSON mapping (kube's, not protobuf's canonical one): field names are the
//! proto names (go-to-protobuf uses the JSON names); 64-bit integers are
//! numbers; `bytes` are base64; maps are objects; a handful of apimachinery
//! types have their own JSON form ([`special`]). Singular strings, bytes and
//! lists that are empty are left out, as kube's `omitempty` does; integers
//! and booleans are kept whenever present (see [`omitempty`] for why and for
//! the exceptions).
//!
//! Strictness: a field number the definition does not know, anywhere in the
//! message, is [`Error::UnknownField`], never dropped; so nothing is stored
//! half-decoded. Nesting is bounded by prost's recursion limit.

use std::sync::LazyLock;

use base64::Engine as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MapKey, MessageDescriptor,
    ReflectMessage as _, Value as Pb,
};
use serde_json::{Map, Value, json};

mod omitempty;

/// The media type of Kubernetes' protobuf encoding.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The four bytes that open every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\0";

static POOL: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(&include_bytes!(concat!(env!("OUT_DIR"), "/kubernetes.fds"))[..])
        .expect("the descriptor set built by build.rs decodes")
});

/// Why a body could not be decoded or an object encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("not a Kubernetes protobuf body (no k8s\\0 envelope)")]
    NoEnvelope,
    #[error("invalid protobuf body: {0}")]
    Malformed(String),
    #[error("no protobuf definition for {api_version} {kind}")]
    UnknownKind { api_version: String, kind: String },
    #[error(
        "{kind}: field number {number} of {message} at {} is not in Kubernetes v1.35's \
         definition; send the object as JSON instead (nothing was stored)",
        if path.is_empty() { "the top level" } else { path.as_str() }
    )]
    UnknownField {
        kind: String,
        message: String,
        number: u32,
        path: String,
    },
    #[error("{path}: {why}")]
    Invalid { path: String, why: String },
}

/// The message that carries `kind` of `api_version`, if the vendored
/// definitions have one. Kinds every group version registers (DeleteOptions,
/// Status, WatchEvent...) come from meta/v1.
fn descriptor(api_version: &str, kind: &str) -> Option<MessageDescriptor> {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let package = match group {
        "" => "api.core".to_string(),
        "meta.k8s.io" => "apimachinery.pkg.apis.meta".to_string(),
        "apiextensions.k8s.io" => "apiextensions_apiserver.pkg.apis.apiextensions".to_string(),
        "metrics.k8s.io" => "metrics.pkg.apis.metrics".to_string(),
        g => format!("api.{}", g.split('.').next().unwrap_or(g)),
    };
    POOL.get_message_by_name(&format!("{package}.{version}.{kind}"))
        .or_else(|| POOL.get_message_by_name(&format!("apimachinery.pkg.apis.meta.v1.{kind}")))
}

fn envelope_descriptor() -> MessageDescriptor {
    POOL.get_message_by_name("apimachinery.pkg.runtime.Unknown")
        .expect("runtime.Unknown is vendored")
}

/// Decodes a protobuf body into the JSON object kube would read, with its
/// `apiVersion` and `kind`.
pub fn decode(body: &[u8]) -> Result<Value, Error> {
    let rest = body.strip_prefix(MAGIC).ok_or(Error::NoEnvelope)?;
    let unknown = DynamicMessage::decode(envelope_descriptor(), rest)
        .map_err(|e| Error::Malformed(e.to_string()))?;
    let text = |m: &DynamicMessage, name: &str| {
        m.get_field_by_name(name)
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    };
    let type_meta = unknown
        .get_field_by_name("typeMeta")
        .and_then(|v| v.as_message().cloned())
        .ok_or_else(|| Error::Malformed("the envelope has no typeMeta".into()))?;
    let (api_version, kind) = (text(&type_meta, "apiVersion"), text(&type_meta, "kind"));
    let encoding = text(&unknown, "contentEncoding");
    if !encoding.is_empty() {
        return Err(Error::Malformed(format!(
            "content encoding {encoding:?} is not supported"
        )));
    }
    let raw = unknown
        .get_field_by_name("raw")
        .and_then(|v| v.as_bytes().cloned())
        .unwrap_or_default();
    let desc = descriptor(&api_version, &kind).ok_or_else(|| Error::UnknownKind {
        api_version: api_version.clone(),
        kind: kind.clone(),
    })?;
    let msg = DynamicMessage::decode(desc, raw).map_err(|e| Error::Malformed(e.to_string()))?;
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let walk = Walk { kind: &kind };
    if let Some(Value::Object(m)) = walk.message(&msg, "")? {
        obj.extend(m);
    }
    Ok(Value::Object(obj))
}

/// Encodes a JSON object with `apiVersion` and `kind` as a protobuf body.
pub fn encode(obj: &Value) -> Result<Vec<u8>, Error> {
    let field = |name: &str| obj.get(name).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let desc = descriptor(api_version, kind).ok_or_else(|| Error::UnknownKind {
        api_version: api_version.into(),
        kind: kind.into(),
    })?;
    let mut body = obj.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
    }
    let msg = from_json(desc, &body, "")?;
    let envelope = envelope_descriptor();
    let mut unknown = DynamicMessage::new(envelope.clone());
    let type_meta_desc = POOL
        .get_message_by_name("apimachinery.pkg.runtime.TypeMeta")
        .expect("runtime.TypeMeta is vendored");
    let mut type_meta = DynamicMessage::new(type_meta_desc);
    type_meta.set_field_by_name("apiVersion", Pb::String(api_version.into()));
    type_meta.set_field_by_name("kind", Pb::String(kind.into()));
    unknown.set_field_by_name("typeMeta", Pb::Message(type_meta));
    unknown.set_field_by_name("raw", Pb::Bytes(prost::Message::encode_to_vec(&msg).into()));
    unknown.set_field_by_name("contentEncoding", Pb::String(String::new()));
    unknown.set_field_by_name("contentType", Pb::String(String::new()));
    let mut out = MAGIC.to_vec();
    out.extend(prost::Message::encode_to_vec(&unknown));
    Ok(out)
}

/// apimachinery types whose JSON is not an object of their fields.
mod special {
    pub const INT_OR_STRING: &str = "apimachinery.pkg.util.intstr.IntOrString";
    pub const QUANTITY: &str = "apimachinery.pkg.api.resource.Quantity";
    pub const TIME: &str = "apimachinery.pkg.apis.meta.v1.Time";
    pub const MICRO_TIME: &str = "apimachinery.pkg.apis.meta.v1.MicroTime";
    pub const DURATION: &str = "apimachinery.pkg.apis.meta.v1.Duration";
    pub const FIELDS_V1: &str = "apimachinery.pkg.apis.meta.v1.FieldsV1";
    pub const VERBS: &str = "apimachinery.pkg.apis.meta.v1.Verbs";
    pub const RAW_EXTENSION: &str = "apimachinery.pkg.runtime.RawExtension";
    const APIEXT: &str = "apiextensions_apiserver.pkg.apis.apiextensions.v1.";
    pub fn apiext(name: &str) -> Option<&str> {
        name.strip_prefix(APIEXT)
    }
    /// `ExtraValue` (authentication, authorization, certificates): a list
    /// of strings in JSON.
    pub fn is_string_list(name: &str) -> bool {
        name == VERBS || name.ends_with(".ExtraValue")
    }
}

/// JSON names that are not the proto names (apiextensions' JSONSchemaProps).
fn json_name(message: &str, proto: &str) -> String {
    if special::apiext(message) != Some("JSONSchemaProps") {
        return proto.to_string();
    }
    match proto {
        "ref" => "$ref".into(),
        "schema" => "$schema".into(),
        p => match p.strip_prefix("xKubernetes") {
            Some(rest) => {
                let mut out = String::from("x-kubernetes");
                for c in rest.chars() {
                    if c.is_ascii_uppercase() {
                        out.push('-');
                        out.push(c.to_ascii_lowercase());
                    } else {
                        out.push(c);
                    }
                }
                out
            }
            None => p.to_string(),
        },
    }
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

fn b64(b: &[u8]) -> Value {
    json!(base64::engine::general_purpose::STANDARD.encode(b))
}

fn raw_json(raw: &[u8], path: &str) -> Result<Value, Error> {
    if raw.starts_with(MAGIC) {
        return decode(raw);
    }
    serde_json::from_slice(raw).map_err(|e| Error::Invalid {
        path: path.to_string(),
        why: format!("raw value is not JSON: {e}"),
    })
}

struct Walk<'a> {
    /// The top-level kind, for errors.
    kind: &'a str,
}

impl Walk<'_> {
    /// A message as JSON; `None` when kube would leave it out (a zero time
    /// or int-or-string, an empty raw value).
    fn message(&self, msg: &DynamicMessage, path: &str) -> Result<Option<Value>, Error> {
        let desc = msg.descriptor();
        let name = desc.full_name();
        if let Some(f) = msg.unknown_fields().next() {
            return Err(Error::UnknownField {
                kind: self.kind.to_string(),
                message: name.to_string(),
                number: f.number(),
                path: path.to_string(),
            });
        }
        let get = |field: &str| msg.get_field_by_name(field);
        let bytes = |field: &str| {
            msg.has_field_by_name(field)
                .then(|| get(field).and_then(|v| v.as_bytes().cloned()))
                .flatten()
                .unwrap_or_default()
        };
        let int = |field: &str| match get(field).as_deref() {
            Some(Pb::I64(v)) => *v,
            Some(Pb::I32(v)) => i64::from(*v),
            _ => 0,
        };
        match name {
            special::INT_OR_STRING => {
                return Ok(match (int("type"), int("intVal")) {
                    (0, 0) => None,
                    (0, n) => Some(json!(n)),
                    _ => Some(json!(
                        get("strVal").and_then(|v| v.as_str().map(str::to_string))
                    )),
                });
            }
            special::QUANTITY => {
                let s = get("string").and_then(|v| v.as_str().map(str::to_string));
                return Ok(s.filter(|s| !s.is_empty()).map(Value::from));
            }
            special::TIME | special::MICRO_TIME => {
                let (secs, nanos) = (int("seconds"), int("nanos"));
                if secs == 0 && nanos == 0 {
                    return Ok(None);
                }
                let micro = name == special::MICRO_TIME;
                return format_time(secs, nanos, micro)
                    .map(|s| Some(json!(s)))
                    .ok_or_else(|| Error::Invalid {
                        path: path.to_string(),
                        why: format!("time {secs}s is out of range"),
                    });
            }
            special::DURATION => return Ok(Some(json!(go_duration(int("duration"))))),
            special::FIELDS_V1 => {
                let raw = bytes("Raw");
                return Ok(Some(if raw.is_empty() {
                    json!({})
                } else {
                    raw_json(&raw, path)?
                }));
            }
            special::RAW_EXTENSION => {
                let raw = bytes("raw");
                return if raw.is_empty() {
                    Ok(None)
                } else {
                    raw_json(&raw, path).map(Some)
                };
            }
            n if special::is_string_list(n) => {
                let items = get("items").map(|v| v.into_owned());
                let items = match items {
                    Some(Pb::List(l)) => l
                        .iter()
                        .filter_map(|v| v.as_str().map(Value::from))
                        .collect(),
                    _ => Vec::new(),
                };
                return Ok(Some(Value::Array(items)));
            }
            n => match special::apiext(n) {
                Some("JSON") => {
                    let raw = bytes("raw");
                    return if raw.is_empty() {
                        Ok(None)
                    } else {
                        raw_json(&raw, path).map(Some)
                    };
                }
                Some("JSONSchemaPropsOrArray") => {
                    return match get("jSONSchemas").as_deref() {
                        Some(Pb::List(l)) if !l.is_empty() => {
                            let items = l
                                .iter()
                                .map(|v| self.value(v, path))
                                .collect::<Result<Vec<_>, _>>()?;
                            Ok(Some(Value::Array(items.into_iter().flatten().collect())))
                        }
                        _ => self.field_value(msg, "schema", path),
                    };
                }
                Some("JSONSchemaPropsOrBool") => {
                    if msg.has_field_by_name("schema") {
                        return self.field_value(msg, "schema", path);
                    }
                    return Ok(Some(json!(get("allows").and_then(|v| v.as_bool()))));
                }
                Some("JSONSchemaPropsOrStringArray") => {
                    if msg.has_field_by_name("schema") {
                        return self.field_value(msg, "schema", path);
                    }
                    return Ok(Some(
                        self.field_value(msg, "property", path)?
                            .unwrap_or_else(|| json!([])),
                    ));
                }
                _ => {}
            },
        }
        let mut out = Map::new();
        for (field, value) in msg.fields() {
            let zero = matches!(value, Pb::Bool(false) | Pb::I32(0) | Pb::I64(0));
            if zero && omitempty::omitted_when_zero(name, field.name()) {
                continue;
            }
            if omitempty::inline(name, field.name()) {
                if let Some(Value::Object(m)) = self.field(&field, value, path)? {
                    out.extend(m);
                }
                continue;
            }
            let key = json_name(name, field.name());
            let here = join(path, &key);
            if let Some(v) = self.field(&field, value, &here)? {
                out.insert(key, v);
            }
        }
        Ok(Some(Value::Object(out)))
    }

    fn field_value(
        &self,
        msg: &DynamicMessage,
        name: &str,
        path: &str,
    ) -> Result<Option<Value>, Error> {
        match msg.descriptor().get_field_by_name(name) {
            Some(f) if msg.has_field(&f) => self.field(&f, &msg.get_field(&f), path),
            _ => Ok(None),
        }
    }

    /// A singular field: empty strings, bytes, lists and maps are left out.
    fn field(&self, f: &FieldDescriptor, v: &Pb, path: &str) -> Result<Option<Value>, Error> {
        Ok(match v {
            Pb::String(s) if s.is_empty() => None,
            Pb::Bytes(b) if b.is_empty() => None,
            Pb::List(l) if l.is_empty() => None,
            Pb::Map(m) if m.is_empty() => None,
            Pb::List(l) => {
                let mut items = Vec::with_capacity(l.len());
                for (i, item) in l.iter().enumerate() {
                    let here = format!("{path}[{i}]");
                    // A list item kube would leave out is still an item.
                    items.push(self.value(item, &here)?.unwrap_or(Value::Null));
                }
                Some(Value::Array(items))
            }
            Pb::Map(m) => {
                let mut out = Map::new();
                let mut keys: Vec<_> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let MapKey::String(key) = k else {
                        return Err(Error::Invalid {
                            path: path.to_string(),
                            why: format!("map key {k:?} is not a string"),
                        });
                    };
                    let here = format!("{path}[{key}]");
                    out.insert(key.clone(), self.value(&m[k], &here)?.unwrap_or(json!("")));
                }
                Some(Value::Object(out))
            }
            _ if f.is_list() || f.is_map() => None,
            v => self.value(v, path)?,
        })
    }

    /// One value, as an element or map value: empty strings are kept.
    fn value(&self, v: &Pb, path: &str) -> Result<Option<Value>, Error> {
        Ok(Some(match v {
            Pb::Bool(b) => json!(b),
            Pb::I32(n) => json!(n),
            Pb::I64(n) => json!(n),
            Pb::U32(n) => json!(n),
            Pb::U64(n) => json!(n),
            Pb::F32(n) => number(f64::from(*n), path)?,
            Pb::F64(n) => number(*n, path)?,
            Pb::String(s) => json!(s),
            Pb::Bytes(b) => b64(b),
            Pb::Message(m) => return self.message(m, path),
            Pb::EnumNumber(_) | Pb::List(_) | Pb::Map(_) => {
                return Err(Error::Invalid {
                    path: path.to_string(),
                    why: "unexpected nested list, map or enum".into(),
                });
            }
        }))
    }
}

fn number(n: f64, path: &str) -> Result<Value, Error> {
    serde_json::Number::from_f64(n)
        .map(Value::Number)
        .ok_or_else(|| Error::Invalid {
            path: path.to_string(),
            why: format!("{n} is not a JSON number"),
        })
}

/// metav1.Time's JSON (RFC 3339, seconds) or MicroTime's (microseconds).
fn format_time(secs: i64, nanos: i64, micro: bool) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(secs).ok()?;
    let (y, m, d) = (t.year(), u8::from(t.month()), t.day());
    let (hh, mm, ss) = (t.hour(), t.minute(), t.second());
    Some(if micro {
        format!(
            "{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:06}Z",
            nanos / 1000
        )
    } else {
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
    })
}

fn parse_time(s: &str, path: &str) -> Result<(i64, i32), Error> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| Error::Invalid {
            path: path.to_string(),
            why: format!("{s:?} is not an RFC 3339 time: {e}"),
        })?;
    Ok((t.unix_timestamp(), t.nanosecond() as i32))
}

/// Go's `time.Duration.String()` for whole and fractional seconds.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let ns = ns.unsigned_abs();
    if ns < 1_000_000_000 {
        let (unit, div) = match ns {
            n if n < 1_000 => ("ns", 1),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{sign}{}{unit}", trim_fraction(ns, div));
    }
    let (h, rest) = (ns / 3_600_000_000_000, ns % 3_600_000_000_000);
    let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
    let s = trim_fraction(rest, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{sign}{s}s"),
        (0, m) => format!("{sign}{m}m{s}s"),
        (h, m) => format!("{sign}{h}h{m}m{s}s"),
    }
}

fn trim_fraction(n: u64, div: u64) -> String {
    let (whole, frac) = (n / div, n % div);
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let frac = format!("{frac:0width$}");
    format!("{whole}.{}", frac.trim_end_matches('0'))
}

fn parse_go_duration(s: &str, path: &str) -> Result<i64, Error> {
    let bad = || Error::Invalid {
        path: path.to_string(),
        why: format!("{s:?} is not a duration"),
    };
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..num_end].parse().map_err(|_| bad())?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    let ns = total.round() as i64;
    Ok(if neg { -ns } else { ns })
}

fn invalid(path: &str, why: impl Into<String>) -> Error {
    Error::Invalid {
        path: path.to_string(),
        why: why.into(),
    }
}

/// JSON into a message of `desc` (the inverse of [`Walk::message`]).
fn from_json(desc: MessageDescriptor, v: &Value, path: &str) -> Result<DynamicMessage, Error> {
    let name = desc.full_name().to_string();
    let mut msg = DynamicMessage::new(desc.clone());
    let mut set = |field: &str, value: Pb| msg.set_field_by_name(field, value);
    match name.as_str() {
        special::INT_OR_STRING => {
            match v {
                Value::Number(n) => {
                    let n = n.as_i64().and_then(|n| i32::try_from(n).ok());
                    set("type", Pb::I64(0));
                    set(
                        "intVal",
                        Pb::I32(n.ok_or_else(|| invalid(path, "not an int32"))?),
                    );
                }
                Value::String(s) => {
                    set("type", Pb::I64(1));
                    set("strVal", Pb::String(s.clone()));
                }
                _ => return Err(invalid(path, "want a number or a string")),
            }
            return Ok(msg);
        }
        special::QUANTITY => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(invalid(path, "a quantity is a string")),
            };
            set("string", Pb::String(s));
            return Ok(msg);
        }
        special::TIME | special::MICRO_TIME => {
            let s = v
                .as_str()
                .ok_or_else(|| invalid(path, "a time is a string"))?;
            let (secs, nanos) = parse_time(s, path)?;
            set("seconds", Pb::I64(secs));
            if name == special::MICRO_TIME {
                set("nanos", Pb::I32(nanos));
            }
            return Ok(msg);
        }
        special::DURATION => {
            let s = v
                .as_str()
                .ok_or_else(|| invalid(path, "a duration is a string"))?;
            set("duration", Pb::I64(parse_go_duration(s, path)?));
            return Ok(msg);
        }
        special::FIELDS_V1 => {
            set("Raw", Pb::Bytes(v.to_string().into_bytes().into()));
            return Ok(msg);
        }
        special::RAW_EXTENSION => {
            set("raw", Pb::Bytes(v.to_string().into_bytes().into()));
            return Ok(msg);
        }
        n if special::is_string_list(n) => {
            let items = v.as_array().ok_or_else(|| invalid(path, "want a list"))?;
            let items = items
                .iter()
                .map(|s| s.as_str().map(|s| Pb::String(s.into())))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| invalid(path, "want a list of strings"))?;
            set("items", Pb::List(items));
            return Ok(msg);
        }
        n => match special::apiext(n) {
            Some("JSON") => {
                set("raw", Pb::Bytes(v.to_string().into_bytes().into()));
                return Ok(msg);
            }
            Some("JSONSchemaPropsOrArray") => {
                let schema = |v: &Value| -> Result<Pb, Error> {
                    let d = desc_of("JSONSchemaProps")?;
                    Ok(Pb::Message(from_json(d, v, path)?))
                };
                match v {
                    Value::Array(items) => {
                        let l = items.iter().map(schema).collect::<Result<Vec<_>, _>>()?;
                        set("jSONSchemas", Pb::List(l));
                    }
                    v => set("schema", schema(v)?),
                }
                return Ok(msg);
            }
            Some(which @ ("JSONSchemaPropsOrBool" | "JSONSchemaPropsOrStringArray")) => {
                match v {
                    Value::Bool(b) if which == "JSONSchemaPropsOrBool" => {
                        set("allows", Pb::Bool(*b));
                    }
                    Value::Array(items) if which == "JSONSchemaPropsOrStringArray" => {
                        let l = items
                            .iter()
                            .map(|s| s.as_str().map(|s| Pb::String(s.into())))
                            .collect::<Option<Vec<_>>>()
                            .ok_or_else(|| invalid(path, "want a list of strings"))?;
                        set("property", Pb::List(l));
                    }
                    v => {
                        if which == "JSONSchemaPropsOrBool" {
                            set("allows", Pb::Bool(true));
                        }
                        let d = desc_of("JSONSchemaProps")?;
                        set("schema", Pb::Message(from_json(d, v, path)?));
                    }
                }
                return Ok(msg);
            }
            _ => {}
        },
    }
    let obj = v
        .as_object()
        .ok_or_else(|| invalid(path, "want an object"))?;
    // Keys of embedded structs, gathered per embedded field.
    let mut embedded: Vec<(FieldDescriptor, Map<String, Value>)> = desc
        .fields()
        .filter(|f| omitempty::inline(&name, f.name()))
        .map(|f| (f, Map::new()))
        .collect();
    for (key, value) in obj {
        if value.is_null() {
            continue;
        }
        let here = join(path, key);
        if let Some(field) = desc.fields().find(|f| json_name(&name, f.name()) == *key) {
            let pb = field_from_json(&field, value, &here)?;
            msg.set_field(&field, pb);
            continue;
        }
        // A list's items may carry their type (kube's JSON leaves it out;
        // protobuf has no place for it).
        if matches!(key.as_str(), "apiVersion" | "kind") {
            continue;
        }
        let owner = embedded.iter_mut().find(
            |(f, _)| matches!(f.kind(), Kind::Message(m) if m.fields().any(|g| g.name() == key)),
        );
        let (_, keys) =
            owner.ok_or_else(|| invalid(&here, format!("{name} has no field {key:?}")))?;
        keys.insert(key.clone(), value.clone());
    }
    for (field, keys) in embedded {
        if !keys.is_empty() {
            let pb = field_from_json(&field, &Value::Object(keys), path)?;
            msg.set_field(&field, pb);
        }
    }
    Ok(msg)
}

fn desc_of(apiext_name: &str) -> Result<MessageDescriptor, Error> {
    POOL.get_message_by_name(&format!(
        "apiextensions_apiserver.pkg.apis.apiextensions.v1.{apiext_name}"
    ))
    .ok_or_else(|| invalid("", format!("no {apiext_name}")))
}

fn field_from_json(f: &FieldDescriptor, v: &Value, path: &str) -> Result<Pb, Error> {
    if f.is_map() {
        let Kind::Message(entry) = f.kind() else {
            return Err(invalid(path, "map without an entry type"));
        };
        let value_field = entry.map_entry_value_field();
        let obj = v
            .as_object()
            .ok_or_else(|| invalid(path, "want an object"))?;
        let mut m = std::collections::HashMap::new();
        for (k, item) in obj {
            let here = format!("{path}[{k}]");
            m.insert(
                MapKey::String(k.clone()),
                scalar_from_json(&value_field.kind(), item, &here)?,
            );
        }
        return Ok(Pb::Map(m));
    }
    if f.is_list() {
        let items = v.as_array().ok_or_else(|| invalid(path, "want a list"))?;
        let l = items
            .iter()
            .enumerate()
            .map(|(i, item)| scalar_from_json(&f.kind(), item, &format!("{path}[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Pb::List(l));
    }
    scalar_from_json(&f.kind(), v, path)
}

fn scalar_from_json(kind: &Kind, v: &Value, path: &str) -> Result<Pb, Error> {
    let int = || {
        v.as_i64()
            .ok_or_else(|| invalid(path, format!("want an integer, got {v}")))
    };
    Ok(match kind {
        Kind::Bool => Pb::Bool(v.as_bool().ok_or_else(|| invalid(path, "want a boolean"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Pb::I32(i32::try_from(int()?).map_err(|_| invalid(path, "out of int32 range"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Pb::I64(int()?),
        Kind::Uint32 | Kind::Fixed32 => {
            Pb::U32(u32::try_from(int()?).map_err(|_| invalid(path, "out of uint32 range"))?)
        }
        Kind::Uint64 | Kind::Fixed64 => {
            Pb::U64(u64::try_from(int()?).map_err(|_| invalid(path, "negative"))?)
        }
        Kind::Float => Pb::F32(v.as_f64().ok_or_else(|| invalid(path, "want a number"))? as f32),
        Kind::Double => Pb::F64(v.as_f64().ok_or_else(|| invalid(path, "want a number"))?),
        Kind::String => Pb::String(
            v.as_str()
                .ok_or_else(|| invalid(path, format!("want a string, got {v}")))?
                .to_string(),
        ),
        Kind::Bytes => {
            let s = v.as_str().ok_or_else(|| invalid(path, "want base64"))?;
            let b = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| invalid(path, format!("not base64: {e}")))?;
            Pb::Bytes(b.into())
        }
        Kind::Message(d) => Pb::Message(from_json(d.clone(), v, path)?),
        Kind::Enum(_) => return Err(invalid(path, "enums are not used by Kubernetes")),
    })
}

/// The invariant the `kube_protobuf` fuzz target (`tests/fuzz`) and the
/// bounded test check over arbitrary bodies: decoding never panics, and what
/// decodes encodes back to a body that decodes to the same JSON.
#[doc(hidden)]
pub mod fuzz {
    pub fn one(data: &[u8]) {
        let Ok(v) = crate::decode(data) else { return };
        let bytes = crate::encode(&v).unwrap_or_else(|e| panic!("{e}: re-encoding {v}"));
        let again = crate::decode(&bytes).unwrap_or_else(|e| panic!("{e}: decoding {v}"));
        assert_eq!(again, v, "round trip");
    }
}

#[cfg(test)]
mod tests;
