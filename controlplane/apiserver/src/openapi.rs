//! OpenAPI documents for clients. kubectl reads `/openapi/v3` to learn that
//! the server validates fields itself (`fieldValidation` on PATCH/POST), and
//! `/openapi/v2`, fetched as protobuf, only has to decode: an empty body is
//! an empty Document. Strategic merge patch is deliberately not advertised
//! in the v3 request bodies: kubectl then computes apply patches from its
//! compiled-in Go types, which carry the exact merge keys.

use serde_json::{Value, json};

use crate::registry::{Resource, Served};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: one entry per group-version.
pub fn v3_root(served: &Served) -> Value {
    let mut paths = serde_json::Map::new();
    let mut gvs = vec![(String::new(), "v1".to_string())];
    for (g, vs) in served.groups() {
        gvs.extend(vs.into_iter().map(|v| (g.to_string(), v.to_string())));
    }
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={}", crate::discovery::version()["gitVersion"].as_str().unwrap_or(""))}),
        );
    }
    json!({"paths": paths})
}

/// The components.schemas name kube uses for a kind (a custom resource:
/// its group reversed, `com.example.stable.v1.CronTab`).
pub fn schema_name(r: &Resource) -> String {
    if let Some(t) = r.typed {
        return (t.schema_name)().into_owned();
    }
    if r.custom.is_some() {
        let group: Vec<&str> = r.group.split('.').rev().collect();
        return format!("{}.{}.{}", group.join("."), r.version, r.kind);
    }
    let pkg = match r.group {
        "" => "core".to_string(),
        g => g
            .trim_end_matches(".k8s.io")
            .replace('.', "_")
            .split('_')
            .next()
            .unwrap_or(g)
            .to_string(),
    };
    format!("io.k8s.api.{pkg}.{}.{}", r.version, r.kind)
}

fn gvk(r: &Resource) -> Value {
    json!({"group": r.group, "version": r.version, "kind": r.kind})
}

fn param(name: &str) -> Value {
    json!({"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": true}})
}

fn op(r: &Resource, action: &str, content: &[&str]) -> Value {
    let schema = json!({"$ref": format!("#/components/schemas/{}", schema_name(r))});
    let mut o = json!({
        "x-kubernetes-group-version-kind": gvk(r),
        "x-kubernetes-action": action,
        "parameters": [param("dryRun"), param("fieldManager"), param("fieldValidation")],
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}},
    });
    if !content.is_empty() {
        let body: serde_json::Map<String, Value> = content
            .iter()
            .map(|c| (c.to_string(), json!({"schema": schema})))
            .collect();
        o["requestBody"] = json!({"content": body});
    }
    o
}

/// A kind's schema and what it references (see `registry::Typed`).
pub(crate) fn schema_of<T: schemars::JsonSchema>(generator: &mut schemars::SchemaGenerator) {
    generator.subschema_for::<T>();
}

/// components.schemas for these kinds and everything they reference, from
/// the `k8s-openapi` types (descriptions included, for `kubectl explain`).
fn schemas(kinds: &[&Resource]) -> serde_json::Map<String, Value> {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    for t in kinds.iter().filter_map(|r| r.typed) {
        (t.schema)(&mut generator);
    }
    if kinds.iter().any(|r| r.custom.is_some()) {
        schema_of::<k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(&mut generator);
    }
    let mut defs = generator.take_definitions(true);
    for r in kinds {
        if let Some(c) = r.custom {
            defs.insert(schema_name(r), custom_schema(c.schema()));
        }
    }
    for r in kinds {
        if let Some(d) = defs.get_mut(&schema_name(r)).and_then(Value::as_object_mut) {
            d.insert("x-kubernetes-group-version-kind".into(), json!([gvk(r)]));
        }
    }
    defs
}

/// A custom resource's schema as kube publishes it: the CRD's, with the
/// standard apiVersion, kind and metadata fields.
fn custom_schema(schema: &Value) -> Value {
    let mut s = schema.clone();
    if let Some(o) = s.as_object_mut() {
        let props = o
            .entry("properties")
            .or_insert_with(|| json!({}))
            .as_object_mut();
        if let Some(p) = props {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            p.insert("metadata".into(), json!({"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}], "description": "Standard object's metadata."}));
        }
    }
    s
}

/// The document of one group-version.
pub fn v3_group_version(served: &Served, group: &str, version: &str) -> Option<Value> {
    let resources: Vec<&Resource> = served.in_group_version(group, version).collect();
    if resources.is_empty() {
        return None;
    }
    let mut paths = serde_json::Map::new();
    let mut kinds = Vec::new();
    for r in resources {
        let base = format!("/{}", gv_path(r.group, r.version));
        let collection = if r.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", r.plural)
        } else {
            format!("{base}/{}", r.plural)
        };
        paths.insert(
            collection.clone(),
            json!({"get": op(r, "list", &[]), "post": op(r, "post", &["application/json", "application/yaml"])}),
        );
        paths.insert(
            format!("{collection}/{{name}}"),
            json!({
                "get": op(r, "get", &[]),
                "put": op(r, "put", &["application/json", "application/yaml"]),
                "patch": op(r, "patch", &["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"]),
                "delete": op(r, "delete", &[]),
            }),
        );
        kinds.push(r);
    }
    let schemas = schemas(&kinds);
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_version_has_a_document_with_field_validation() {
        let root = v3_root(&Served::default());
        for (p, _) in root["paths"].as_object().unwrap() {
            let parts: Vec<&str> = p.split('/').collect();
            let (g, v) = match parts.as_slice() {
                ["api", v] => ("", *v),
                ["apis", g, v] => (*g, *v),
                _ => panic!("{p}"),
            };
            let doc = v3_group_version(&Served::default(), g, v).unwrap();
            let patch = doc["paths"]
                .as_object()
                .unwrap()
                .values()
                .find_map(|p| p.get("patch"))
                .unwrap();
            assert!(
                patch["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == "fieldValidation")
            );
        }
        assert_eq!(
            schema_name(crate::registry::find("apps", "v1", "deployments").unwrap()),
            "io.k8s.api.apps.v1.Deployment"
        );
        assert_eq!(
            schema_name(crate::registry::find("rbac.authorization.k8s.io", "v1", "roles").unwrap()),
            "io.k8s.api.rbac.v1.Role"
        );
    }
}
