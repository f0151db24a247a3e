//! A minimal decoder for Kubernetes' protobuf request bodies. client-go's
//! generated clients for built-in kinds always send protobuf, so commands
//! such as `kubectl create namespace|configmap|secret` and `kubectl auth
//! can-i` need it. Only the kinds listed in [`decode`] are understood; the
//! rest are answered 415. Field numbers are those of k8s.io/api's
//! generated.proto files.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::status::ApiError;

pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

#[derive(Debug)]
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Other,
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// The (field number, value) pairs of one message.
fn fields(b: &[u8]) -> Option<Vec<(u64, Field<'_>)>> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < b.len() {
        let key = varint(b, &mut pos)?;
        let f = match key & 7 {
            0 => Field::Varint(varint(b, &mut pos)?),
            1 => {
                pos += 8;
                Field::Other
            }
            2 => {
                let len = usize::try_from(varint(b, &mut pos)?).ok()?;
                let s = b.get(pos..pos.checked_add(len)?)?;
                pos += len;
                Field::Bytes(s)
            }
            5 => {
                pos += 4;
                Field::Other
            }
            _ => return None,
        };
        out.push((key >> 3, f));
    }
    (pos == b.len()).then_some(out)
}

fn bad() -> ApiError {
    ApiError::bad_request("invalid protobuf request body")
}

fn string(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad())
}

/// A map entry message: key = 1, value = 2.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ApiError> {
    let (mut k, mut v) = (String::new(), Value::String(String::new()));
    for (n, f) in fields(b).ok_or_else(bad)? {
        if let Field::Bytes(x) = f {
            match n {
                1 => k = string(x)?,
                2 if bytes_value => v = json!(base64::engine::general_purpose::STANDARD.encode(x)),
                2 => v = json!(string(x)?),
                _ => {}
            }
        }
    }
    Ok((k, v))
}

fn insert_entry(
    m: &mut Map<String, Value>,
    field: &str,
    b: &[u8],
    bytes_value: bool,
) -> Result<(), ApiError> {
    let (k, v) = map_entry(b, bytes_value)?;
    m.entry(field.to_string())
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("map field is an object")
        .insert(k, v);
    Ok(())
}

fn object_meta(b: &[u8]) -> Result<Value, ApiError> {
    let mut m = Map::new();
    for (n, f) in fields(b).ok_or_else(bad)? {
        // proto2 optional strings arrive even when empty; JSON omits them.
        let Field::Bytes(x) = f else { continue };
        if x.is_empty() {
            continue;
        }
        match n {
            1 => {
                m.insert("name".into(), json!(string(x)?));
            }
            2 => {
                m.insert("generateName".into(), json!(string(x)?));
            }
            3 => {
                m.insert("namespace".into(), json!(string(x)?));
            }
            6 => {
                m.insert("resourceVersion".into(), json!(string(x)?));
            }
            11 => insert_entry(&mut m, "labels", x, false)?,
            12 => insert_entry(&mut m, "annotations", x, false)?,
            14 => m
                .entry("finalizers")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("array")
                .push(json!(string(x)?)),
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

fn strings_message(b: &[u8], names: &[(u64, &str)]) -> Result<Value, ApiError> {
    let mut m = Map::new();
    for (n, f) in fields(b).ok_or_else(bad)? {
        if let (Field::Bytes(x), Some((_, name))) = (f, names.iter().find(|(k, _)| *k == n))
            && !x.is_empty()
        {
            m.insert(name.to_string(), json!(string(x)?));
        }
    }
    Ok(Value::Object(m))
}

/// Decodes a protobuf body (the `k8s\0` + runtime.Unknown envelope) of one
/// of the supported kinds into its JSON form.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let rest = body.strip_prefix(MAGIC).ok_or_else(bad)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, f) in fields(rest).ok_or_else(bad)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (n, f) in fields(tm).ok_or_else(bad)? {
                    match (n, f) {
                        (1, Field::Bytes(x)) => api_version = string(x)?,
                        (2, Field::Bytes(x)) => kind = string(x)?,
                        _ => {}
                    }
                }
            }
            (2, Field::Bytes(x)) => raw = x,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let msg = fields(raw).ok_or_else(bad)?;
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount") => {
            for (n, f) in msg {
                match (kind.as_str(), n, f) {
                    (_, 1, Field::Bytes(x)) => {
                        obj.insert("metadata".into(), object_meta(x)?);
                    }
                    ("Namespace", 2, Field::Bytes(x)) => {
                        let mut fin = Vec::new();
                        for (n, f) in fields(x).ok_or_else(bad)? {
                            if let (1, Field::Bytes(s)) = (n, f) {
                                fin.push(json!(string(s)?));
                            }
                        }
                        obj.insert("spec".into(), json!({"finalizers": fin}));
                    }
                    ("ConfigMap", 2, Field::Bytes(x)) => insert_entry(&mut obj, "data", x, false)?,
                    ("ConfigMap", 3, Field::Bytes(x)) => {
                        insert_entry(&mut obj, "binaryData", x, true)?
                    }
                    ("ConfigMap", 4, Field::Varint(v)) | ("Secret", 5, Field::Varint(v)) => {
                        obj.insert("immutable".into(), json!(v != 0));
                    }
                    ("Secret", 2, Field::Bytes(x)) => insert_entry(&mut obj, "data", x, true)?,
                    ("Secret", 3, Field::Bytes(x)) => {
                        obj.insert("type".into(), json!(string(x)?));
                    }
                    ("Secret", 4, Field::Bytes(x)) => {
                        insert_entry(&mut obj, "stringData", x, false)?
                    }
                    _ => {}
                }
            }
        }
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => {
            let mut subjects = Vec::new();
            for (n, f) in msg {
                match (n, f) {
                    (1, Field::Bytes(x)) => {
                        obj.insert("metadata".into(), object_meta(x)?);
                    }
                    (2, Field::Bytes(x)) => subjects.push(strings_message(
                        x,
                        &[(1, "kind"), (2, "apiGroup"), (3, "name"), (4, "namespace")],
                    )?),
                    (3, Field::Bytes(x)) => {
                        obj.insert(
                            "roleRef".into(),
                            strings_message(x, &[(1, "apiGroup"), (2, "kind"), (3, "name")])?,
                        );
                    }
                    _ => {}
                }
            }
            obj.insert("subjects".into(), json!(subjects));
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            let mut spec = Map::new();
            for (n, f) in msg {
                let (2, Field::Bytes(x)) = (n, f) else {
                    continue;
                };
                for (n, f) in fields(x).ok_or_else(bad)? {
                    match (n, f) {
                        (1, Field::Bytes(a)) => spec
                            .entry("audiences")
                            .or_insert_with(|| json!([]))
                            .as_array_mut()
                            .expect("array")
                            .push(json!(string(a)?)),
                        (4, Field::Varint(v)) => {
                            spec.insert("expirationSeconds".into(), json!(v));
                        }
                        _ => {}
                    }
                }
            }
            obj.insert("metadata".into(), json!({}));
            obj.insert("spec".into(), Value::Object(spec));
        }
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            let mut spec = Value::Object(Map::new());
            for (n, f) in msg {
                if let (2, Field::Bytes(x)) = (n, f) {
                    spec = strings_message(x, &[(1, "namespace")])?;
                }
            }
            obj.insert("metadata".into(), json!({}));
            obj.insert("spec".into(), spec);
        }
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            let mut spec = Map::new();
            for (n, f) in msg {
                let (2, Field::Bytes(x)) = (n, f) else {
                    continue;
                };
                for (n, f) in fields(x).ok_or_else(bad)? {
                    match (n, f) {
                        (1, Field::Bytes(ra)) => {
                            spec.insert(
                                "resourceAttributes".into(),
                                strings_message(
                                    ra,
                                    &[
                                        (1, "namespace"),
                                        (2, "verb"),
                                        (3, "group"),
                                        (4, "version"),
                                        (5, "resource"),
                                        (6, "subresource"),
                                        (7, "name"),
                                    ],
                                )?,
                            );
                        }
                        (2, Field::Bytes(nr)) => {
                            spec.insert(
                                "nonResourceAttributes".into(),
                                strings_message(nr, &[(1, "path"), (2, "verb")])?,
                            );
                        }
                        _ => {}
                    }
                }
            }
            obj.insert("metadata".into(), json!({}));
            obj.insert("spec".into(), Value::Object(spec));
        }
        _ => {
            return Err(ApiError::unsupported_media(&format!(
                "{MEDIA_TYPE} (for {api_version} {kind}; send JSON or YAML)"
            )));
        }
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ld(field: u64, b: &[u8]) -> Vec<u8> {
        let mut out = vec![((field << 3) | 2) as u8, b.len() as u8];
        out.extend_from_slice(b);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let tm = [ld(1, api_version.as_bytes()), ld(2, kind.as_bytes())].concat();
        [MAGIC.to_vec(), ld(1, &tm), ld(2, raw)].concat()
    }

    #[test]
    fn configmap_with_labels_and_data() {
        let meta = [
            ld(1, b"cm1"),
            ld(11, &[ld(1, b"app"), ld(2, b"web")].concat()),
        ]
        .concat();
        let raw = [ld(1, &meta), ld(2, &[ld(1, b"k"), ld(2, b"v")].concat())].concat();
        let v = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1", "labels": {"app": "web"}}, "data": {"k": "v"}})
        );
    }

    #[test]
    fn self_subject_access_review() {
        let ra = [ld(1, b"default"), ld(2, b"list"), ld(5, b"pods")].concat();
        let raw = ld(2, &ld(1, &ra));
        let v = decode(&envelope(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            &raw,
        ))
        .unwrap();
        assert_eq!(
            v["spec"]["resourceAttributes"],
            json!({"namespace": "default", "verb": "list", "resource": "pods"})
        );
    }

    #[test]
    fn unknown_kinds_and_garbage() {
        assert_eq!(
            decode(&envelope("apps/v1", "Deployment", &[]))
                .unwrap_err()
                .code,
            415
        );
        assert_eq!(decode(b"k8s\0\xff").unwrap_err().code, 400);
        assert_eq!(decode(b"nope").unwrap_err().code, 400);
    }
}
