//! CustomResourceDefinitions (apiextensions.k8s.io/v1): the CRD kind's own
//! rules (names, versions, structural schemas, status conditions) and the
//! resources CRDs define. Each served version of an established CRD becomes
//! a [`Resource`] like a built-in's, with its [`Custom`] part (schema,
//! printer columns, scale paths), so routing, storage, watch, patch, apply,
//! tables and RBAC are the built-ins' paths.
//!
//! Resources are `&'static` everywhere; a CRD's are leaked once per distinct
//! CRD spec (interned), which bounds the leak by how often CRDs change.

use std::collections::HashMap;
use std::sync::RwLock;

use serde_json::{Value, json};

use crate::admission::{DNS1123_SUBDOMAIN, is_dns1035_label, is_dns1123_label, obj_mut};
use crate::jsonpath::JsonPath;
use crate::registry::{BASE, Causes, Column, Resource, Served};
use crate::schema;
use crate::status::ApiResult;
use crate::storage::{self, meta_str};

pub const GROUP: &str = "apiextensions.k8s.io";

/// What a custom resource has beyond a built-in's entry.
#[derive(Debug)]
pub struct Custom {
    /// The version's `openAPIV3Schema` (structural: checked at CRD write).
    schema: schema::Schema,
    /// The printer columns after NAME: (path, type).
    printer: Vec<(Option<JsonPath>, String)>,
    /// The scale subresource's paths, as JSON pointers.
    pub scale: Option<ScalePaths>,
    /// The version objects are stored at (kube's storage version).
    pub storage_version: &'static str,
    /// Fields beyond metadata.name and metadata.namespace that field
    /// selectors may name (the version's `selectableFields`), dotted.
    selectable: Vec<String>,
}

#[derive(Debug)]
pub struct ScalePaths {
    pub spec_replicas: String,
    pub status_replicas: String,
    pub label_selector: Option<String>,
}

impl Custom {
    /// Prunes fields the schema does not know and applies its defaults, as
    /// kube's decoder does for custom resources; metadata goes through
    /// ObjectMeta.
    pub fn normalize(&self, obj: &Value) -> ApiResult<Value> {
        let mut out = obj.clone();
        let Some(o) = out.as_object_mut() else {
            return Ok(out);
        };
        if let Some(meta) = o.get_mut("metadata") {
            let typed: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta =
                serde_json::from_value(meta.clone()).map_err(|e| {
                    crate::status::ApiError::bad_request(format!(
                        "metadata: cannot be handled as ObjectMeta: {e}"
                    ))
                })?;
            *meta = serde_json::to_value(typed).map_err(crate::status::ApiError::internal)?;
        }
        self.schema.prune_and_default(&mut out);
        Ok(out)
    }

    /// Whether field selectors may name `field` (kube: metadata.name,
    /// metadata.namespace and the CRD's selectableFields).
    pub fn selectable(&self, field: &str) -> bool {
        matches!(field, "metadata.name" | "metadata.namespace")
            || self.selectable.iter().any(|f| f == field)
    }

    pub fn schema(&self) -> &Value {
        self.schema.root()
    }

    /// The schema's checks, as kube reports them (`spec.replicas: Invalid
    /// value: 0: spec.replicas in body should be ...`).
    pub fn validate(&self, obj: &Value, old: Option<&Value>, causes: &mut Causes) {
        self.schema.validate(obj, old, causes);
    }
}

/// The served custom resources, rebuilt from the stored CRDs after every
/// CRD write and at start.
#[derive(Default)]
pub struct Crds {
    inner: RwLock<Inner>,
    /// One rebuild at a time, so a later one never installs older state.
    reload: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Inner {
    served: Served,
    /// CRD spec (as JSON) -> its leaked resources.
    interned: HashMap<String, Vec<&'static Resource>>,
}

impl Crds {
    pub fn served(&self) -> Served {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .served
            .clone()
    }

    /// Rebuilds the served set from the stored CRDs, as kube's naming and
    /// establishing controllers do: in a group, the first CRD (by creation)
    /// keeps a name; a later one asking for it is not accepted (condition
    /// `NamesAccepted` False, `"ct" is already in use`) and not served.
    /// Changed conditions are written to the CRD's status.
    pub async fn reload(&self, store: &skiff_store::Store) -> ApiResult<()> {
        let _one = self.reload.lock().await;
        let r = crd_resource();
        let mut crds = storage::list(store, r, "", &Default::default(), 0, None)
            .await?
            .items;
        crds.retain(|c| meta_str(c, "deletionTimestamp").is_none());
        crds.sort_by(|a, b| {
            let key = |c: &Value| {
                (
                    str_at(c, "/metadata/creationTimestamp").to_string(),
                    str_at(c, "/metadata/name").to_string(),
                )
            };
            key(a).cmp(&key(b))
        });
        let mut taken: Vec<(String, &'static str, String)> = Vec::new();
        let mut accepted = Vec::new();
        for crd in &crds {
            let group = str_at(crd, "/spec/group").to_string();
            let wanted = names_of(crd);
            let conflict = wanted.iter().find(|(what, n)| {
                taken
                    .iter()
                    .any(|(g, w, t)| *g == group && w == what && t == n)
            });
            let status = names_status(crd, conflict.map(|(what, n)| (*what, n.as_str())));
            if conflict.is_none() {
                taken.extend(wanted.into_iter().map(|(w, n)| (group.clone(), w, n)));
                accepted.push(crd);
            }
            if !same_conditions(crd.get("status"), &status) {
                let name = str_at(crd, "/metadata/name").to_string();
                let written = storage::update(store, r, "", &name, false, |mut cur| {
                    let st = obj_mut(&mut cur, "status");
                    for (k, v) in status.as_object().into_iter().flatten() {
                        st.insert(k.clone(), v.clone());
                    }
                    Ok(cur)
                })
                .await;
                match written {
                    Ok(_) => {}
                    // Deleted in between: the next reload forgets it.
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let mut custom = Vec::new();
        for crd in accepted {
            let key = crd["spec"].to_string();
            let made = inner
                .interned
                .entry(key)
                .or_insert_with(|| resources_of(crd).into_iter().map(leak).collect());
            custom.extend(made.iter().copied());
        }
        inner.served = Served::with_custom(custom);
        Ok(())
    }
}

fn crd_resource() -> &'static Resource {
    crate::registry::find(GROUP, "v1", "customresourcedefinitions").expect("registered")
}

pub fn is_crd(r: &Resource) -> bool {
    (r.group, r.kind) == (GROUP, "CustomResourceDefinition")
}

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

fn leak_str(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn strs(v: Option<&Value>) -> &'static [&'static str] {
    let list: Vec<&'static str> = v
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(leak_str)
        .collect();
    Box::leak(list.into_boxed_slice())
}

/// A path of fields (`.spec.replicas`) as a JSON pointer: kube's scale
/// paths are such paths (checked at CRD write).
fn simple_pointer(path: &str) -> String {
    JsonPath::parse(path)
        .ok()
        .and_then(|p| p.pointer())
        .unwrap_or_default()
}

/// The resources a CRD serves: one per served version.
fn resources_of(crd: &Value) -> Vec<Resource> {
    let spec = &crd["spec"];
    let storage_version = spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == json!(true))
        .map(|v| leak_str(str_at(v, "/name")))
        .unwrap_or("");
    let (group, kind, plural) = (
        leak_str(str_at(spec, "/group")),
        leak_str(str_at(spec, "/names/kind")),
        leak_str(str_at(spec, "/names/plural")),
    );
    let singular = match str_at(spec, "/names/singular") {
        "" => leak_str(&kind.to_lowercase()),
        s => leak_str(s),
    };
    let short_names = strs(spec.pointer("/names/shortNames"));
    let categories = strs(spec.pointer("/names/categories"));
    let namespaced = str_at(spec, "/scope") != "Cluster";
    let mut out = Vec::new();
    for v in spec["versions"].as_array().into_iter().flatten() {
        if v["served"] != json!(true) {
            continue;
        }
        let status = v.pointer("/subresources/status").is_some();
        let scale = v.pointer("/subresources/scale").map(|s| ScalePaths {
            spec_replicas: simple_pointer(str_at(s, "/specReplicasPath")),
            status_replicas: simple_pointer(str_at(s, "/statusReplicasPath")),
            label_selector: s
                .get("labelSelectorPath")
                .and_then(Value::as_str)
                .map(simple_pointer),
        });
        let subresources: &'static [&'static str] = match (status, scale.is_some()) {
            (true, true) => &["status", "scale"],
            (true, false) => &["status"],
            (false, true) => &["scale"],
            (false, false) => &[],
        };
        let printer_cols: Vec<&Value> = v["additionalPrinterColumns"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default();
        let mut columns: Vec<Column> = vec![("Name", "string", 0)];
        let mut printer = Vec::new();
        if printer_cols.is_empty() {
            // kube's default column for a CRD without its own.
            columns.push(("Age", "date", 0));
            let created = JsonPath::parse(".metadata.creationTimestamp").expect("a valid path");
            printer.push((Some(created), "date".into()));
        }
        for c in printer_cols {
            let ty = str_at(c, "/type");
            columns.push((
                leak_str(str_at(c, "/name")),
                leak_str(ty),
                c["priority"].as_i64().unwrap_or(0).clamp(0, 255) as u8,
            ));
            // Checked at CRD write; a column that does not parse stays empty.
            let path = JsonPath::parse(str_at(c, "/jsonPath")).ok();
            printer.push((path, ty.to_string()));
        }
        let custom = Custom {
            schema: schema::Schema::new(v.pointer("/schema/openAPIV3Schema").cloned().unwrap_or(
                json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
            )),
            printer,
            scale,
            storage_version,
            selectable: v["selectableFields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| str_at(f, "/jsonPath").trim_start_matches('.').to_string())
                .collect(),
        };
        out.push(Resource {
            group,
            version: leak_str(str_at(v, "/name")),
            kind,
            plural,
            singular,
            short_names,
            namespaced,
            subresources,
            categories,
            has_spec: true,
            typed: None,
            name_rule: DNS1123_SUBDOMAIN,
            columns: Box::leak(columns.into_boxed_slice()),
            cells,
            custom: Some(leak(custom)),
            ..BASE
        });
    }
    out
}

/// A custom object's Table cells: NAME, then its printer columns.
fn cells(r: &Resource, o: &Value) -> Vec<Value> {
    let mut out = vec![json!(str_at(o, "/metadata/name"))];
    for (path, ty) in r.custom.map(|c| c.printer.as_slice()).unwrap_or_default() {
        let found: Vec<&Value> = path
            .iter()
            .flat_map(|p| p.eval(o))
            .filter(|v| !v.is_null())
            .collect();
        out.push(match (ty.as_str(), found.as_slice()) {
            (_, []) => Value::Null,
            ("date", [t]) => json!(crate::tables::age(Some(t))),
            (_, [v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))]) => (*v).clone(),
            (_, [v]) => json!(v.to_string()),
            // Several matches show together, as kubectl's jsonpath prints them.
            (_, many) => json!(
                many.iter()
                    .map(|v| crate::tables::s(Some(v)))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        });
    }
    out
}

/// The group of the built-in kinds: a CRD may not claim it.
fn builtin_group(group: &str) -> bool {
    crate::registry::RESOURCES.iter().any(|r| r.group == group)
        || group.is_empty()
        || crate::discovery::REVIEWS.iter().any(|r| r.group == group)
}

/// CRD defaults (kube's `SetDefaults_CustomResourceDefinition`) and the
/// stored versions; the conditions are [`Crds::reload`]'s.
pub fn defaults(crd: &mut Value, _ns: &str) {
    let spec = obj_mut(crd, "spec");
    let names = spec
        .entry("names")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    if let Some(names) = names {
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !kind.is_empty() {
            names
                .entry("listKind")
                .or_insert_with(|| json!(format!("{kind}List")));
            names
                .entry("singular")
                .or_insert_with(|| json!(kind.to_lowercase()));
        }
    }
    spec.entry("conversion")
        .or_insert_with(|| json!({"strategy": "None"}));
    let storage: Vec<Value> = spec
        .get("versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|v| v["storage"] == json!(true))
        .map(|v| v["name"].clone())
        .collect();
    let status = obj_mut(crd, "status");
    let mut stored: Vec<Value> = status
        .get("storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for v in storage {
        if !stored.contains(&v) {
            stored.push(v);
        }
    }
    status.insert("storedVersions".into(), json!(stored));
}

/// The names a CRD asks for in its group, each with what it is.
fn names_of(crd: &Value) -> Vec<(&'static str, String)> {
    let n = |p: &str| str_at(crd, &format!("/spec/names/{p}")).to_string();
    let mut out = vec![
        ("plural", n("plural")),
        ("singular", n("singular")),
        ("kind", n("kind")),
        ("listKind", n("listKind")),
    ];
    for s in crd
        .pointer("/spec/names/shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        out.push(("shortNames", s.to_string()));
    }
    out.retain(|(_, n)| !n.is_empty());
    out
}

/// The status fields the naming controller owns: acceptedNames and the
/// NamesAccepted and Established conditions (kube's reasons and messages);
/// transition times are kept while a condition's status holds.
fn names_status(crd: &Value, conflict: Option<(&str, &str)>) -> Value {
    let now = storage::now_rfc3339();
    let since = |t: &str, status: &str| {
        crd.pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|c| c["type"] == t && c["status"] == status)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| json!(now))
    };
    let condition = |t: &str, ok: bool, reason: &str, message: String| {
        let status = if ok { "True" } else { "False" };
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": since(t, status)})
    };
    match conflict {
        None => json!({
            "acceptedNames": crd.pointer("/spec/names").cloned().unwrap_or(json!({})),
            "conditions": [
                condition("NamesAccepted", true, "NoConflicts", "no conflicts found".into()),
                condition("Established", true, "InitialNamesAccepted", "the initial names have been accepted".into()),
            ],
        }),
        Some((what, name)) => {
            let reason = match what {
                "plural" => "PluralConflict",
                "singular" => "SingularConflict",
                "kind" => "KindConflict",
                "listKind" => "ListKindConflict",
                _ => "ShortNamesConflict",
            };
            json!({
                "acceptedNames": crd.pointer("/status/acceptedNames").cloned().unwrap_or(json!({"plural": "", "kind": ""})),
                "conditions": [
                    condition("NamesAccepted", false, reason, format!("{name:?} is already in use")),
                    condition("Established", false, "NotAccepted", "not all names are accepted".into()),
                ],
            })
        }
    }
}

/// Whether the stored status already says what `want` says.
fn same_conditions(have: Option<&Value>, want: &Value) -> bool {
    let strip = |v: Option<&Value>| -> Vec<(Value, Value, Value)> {
        v.and_then(|s| s.get("conditions"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|c| (c["type"].clone(), c["status"].clone(), c["message"].clone()))
            .collect()
    };
    strip(have) == strip(Some(want))
        && have.and_then(|h| h.get("acceptedNames")) == want.get("acceptedNames")
}

fn name_causes(path: &str, v: &str, causes: &mut Causes) {
    if v.is_empty() {
        causes.push((path.into(), "Required value".into()));
    } else if !is_dns1123_label(v) {
        causes.push((path.into(), format!("Invalid value: {v:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")));
    }
}

/// kube's `ValidateCustomResourceDefinition`, the parts a user meets.
pub fn validate(crd: &Value, causes: &mut Causes) {
    let spec = &crd["spec"];
    let group = str_at(spec, "/group");
    let plural = str_at(spec, "/names/plural");
    let name = str_at(crd, "/metadata/name");
    if name != format!("{plural}.{group}") {
        causes.push((
            "metadata.name".into(),
            format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if group.is_empty() {
        causes.push(("spec.group".into(), "Required value".into()));
    } else if !crate::admission::is_dns1123_subdomain(group) {
        causes.push((
            "spec.group".into(),
            format!("Invalid value: {group:?}: {}", DNS1123_SUBDOMAIN.1),
        ));
    } else if !group.contains('.') {
        causes.push((
            "spec.group".into(),
            format!("Invalid value: {group:?}: should be a domain with at least one dot"),
        ));
    } else if builtin_group(group) {
        causes.push((
            "spec.group".into(),
            format!("Invalid value: {group:?}: is served by the API server itself"),
        ));
    }
    name_causes("spec.names.plural", plural, causes);
    let singular = str_at(spec, "/names/singular");
    if !singular.is_empty() {
        name_causes("spec.names.singular", singular, causes);
    }
    for (i, s) in spec
        .pointer("/names/shortNames")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        name_causes(
            &format!("spec.names.shortNames[{i}]"),
            s.as_str().unwrap_or(""),
            causes,
        );
    }
    for (field, k) in [
        ("kind", str_at(spec, "/names/kind")),
        ("listKind", str_at(spec, "/names/listKind")),
    ] {
        if k.is_empty() {
            causes.push((format!("spec.names.{field}"), "Required value".into()));
        } else if !is_dns1035_label(&k.to_lowercase()) {
            causes.push((format!("spec.names.{field}"), format!("Invalid value: {k:?}: may have mixed case, but should otherwise match: [a-z]([-a-z0-9]*[a-z0-9])?")));
        }
    }
    match str_at(spec, "/scope") {
        "Namespaced" | "Cluster" => {}
        s => causes.push((
            "spec.scope".into(),
            format!("Unsupported value: {s:?}: supported values: \"Cluster\", \"Namespaced\""),
        )),
    }
    if spec.get("preserveUnknownFields") == Some(&json!(true)) {
        causes.push((
            "spec.preserveUnknownFields".into(),
            "Invalid value: true: cannot set to true, set x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead".into(),
        ));
    }
    let strategy = str_at(spec, "/conversion/strategy");
    if strategy != "None" {
        causes.push((
            "spec.conversion.strategy".into(),
            format!("Unsupported value: {strategy:?}: supported values: \"None\""),
        ));
    }
    let versions = spec["versions"].as_array().cloned().unwrap_or_default();
    if versions.is_empty() {
        causes.push((
            "spec.versions".into(),
            "Invalid value: null: must have exactly one version marked as storage version".into(),
        ));
    } else if versions
        .iter()
        .filter(|v| v["storage"] == json!(true))
        .count()
        != 1
    {
        causes.push((
            "spec.versions".into(),
            format!(
                "Invalid value: {}: must have exactly one version marked as storage version",
                Value::Array(versions.clone())
            ),
        ));
    }
    if !versions.is_empty() && !versions.iter().any(|v| v["served"] == json!(true)) {
        causes.push((
            "spec.versions".into(),
            "Invalid value: must have at least one version marked as served".into(),
        ));
    }
    let mut seen = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let vname = str_at(v, "/name");
        let path = format!("spec.versions[{i}]");
        if vname.is_empty() || !is_dns1035_label(vname) {
            causes.push((format!("{path}.name"), format!("Invalid value: {vname:?}: a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character")));
        } else if seen.contains(&vname) {
            causes.push((
                format!("{path}.name"),
                format!("Duplicate value: {vname:?}"),
            ));
        }
        seen.push(vname);
        match v.pointer("/schema/openAPIV3Schema") {
            None => causes.push((
                format!("{path}.schema.openAPIV3Schema"),
                "Required value: schemas are required".into(),
            )),
            Some(s) => {
                schema::structural(s, &format!("{path}.schema.openAPIV3Schema"), true, causes)
            }
        }
        if let Some(s) = v.pointer("/subresources/scale") {
            for (f, under) in [
                ("specReplicasPath", ".spec."),
                ("statusReplicasPath", ".status."),
                ("labelSelectorPath", ""),
            ] {
                let Some(p) = s.get(f).and_then(Value::as_str) else {
                    if !under.is_empty() {
                        causes.push((
                            format!("{path}.subresources.scale.{f}"),
                            "Required value".into(),
                        ));
                    }
                    continue;
                };
                let simple = JsonPath::parse(p).ok().and_then(|j| j.pointer()).is_some();
                if !simple || !p.starts_with(under) {
                    let under = if under.is_empty() {
                        ".spec or .status"
                    } else {
                        under.trim_end_matches('.')
                    };
                    causes.push((
                        format!("{path}.subresources.scale.{f}"),
                        format!("Invalid value: {p:?}: should be a json path under {under}"),
                    ));
                }
            }
        }
        for (j, c) in v["additionalPrinterColumns"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cpath = format!("{path}.additionalPrinterColumns[{j}]");
            if str_at(c, "/name").is_empty() {
                causes.push((format!("{cpath}.name"), "Required value".into()));
            }
            let ty = str_at(c, "/type");
            if !["integer", "number", "string", "boolean", "date"].contains(&ty) {
                causes.push((format!("{cpath}.type"), format!("Unsupported value: {ty:?}: supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\"")));
            }
            let jp = str_at(c, "/jsonPath");
            if jp.is_empty() {
                causes.push((format!("{cpath}.jsonPath"), "Required value".into()));
            } else if let Err(why) = JsonPath::parse(jp) {
                causes.push((
                    format!("{cpath}.jsonPath"),
                    format!("Invalid value: {jp:?}: must be a valid JSON path: {why}"),
                ));
            }
        }
    }
}

/// Group and scope may not change (kube: they name where objects live).
pub fn validate_update(old: &Value, new: &Value, causes: &mut Causes) {
    crate::admission::immutable(&["/spec/group", "/spec/names/plural"], old, new, causes);
    if old.pointer("/spec/scope") != new.pointer("/spec/scope") {
        causes.push((
            "spec.scope".into(),
            format!(
                "Invalid value: {}: field is immutable",
                new.pointer("/spec/scope").unwrap_or(&Value::Null)
            ),
        ));
    }
}

/// After a CRD is gone: its objects go too (kube's CRD finalizer).
pub async fn delete_objects(store: &skiff_store::Store, crd: &Value) -> ApiResult<()> {
    let (group, plural) = (
        str_at(crd, "/spec/group"),
        str_at(crd, "/spec/names/plural"),
    );
    if group.is_empty() || plural.is_empty() {
        return Ok(());
    }
    store
        .delete_range(skiff_store::KeySet::prefix(
            format!("/registry/{group}/{plural}/").into_bytes(),
        ))
        .await?;
    Ok(())
}

/// Whether objects read through `r` may differ from what is stored: every
/// custom object, as it may have been stored at an earlier storage version
/// (so the stored JSON never goes out as it is).
pub fn converts(r: &Resource) -> bool {
    r.custom.is_some()
}

/// A custom object as read through `r`'s version: with conversion
/// strategy None only apiVersion differs between versions.
pub fn at_version(r: &Resource, obj: &mut Value) {
    if converts(r)
        && let Some(o) = obj.as_object_mut()
    {
        o.insert("apiVersion".into(), json!(r.api_version()));
    }
}

/// A custom object written through another version than its storage
/// version, as it is stored; `None`: stored as it is.
pub fn at_storage_version(r: &Resource, obj: &Value) -> Option<Value> {
    let c = r.custom?;
    let stored = format!("{}/{}", r.group, c.storage_version);
    if obj.get("apiVersion").and_then(Value::as_str) == Some(stored.as_str()) {
        return None;
    }
    let mut out = obj.clone();
    out.as_object_mut()?
        .insert("apiVersion".into(), json!(stored));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_paths_become_pointers() {
        assert_eq!(simple_pointer(".spec.replicas"), "/spec/replicas");
        assert_eq!(simple_pointer("{.status.a[0].b}"), "/status/a/0/b");
    }

    fn crd() -> Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "crontabs.stable.example.com"},
            "spec": {"group": "stable.example.com", "scope": "Namespaced",
                "names": {"plural": "crontabs", "kind": "CronTab", "shortNames": ["ct"]},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"replicas": {"type": "integer"}}}}}},
                    "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
                    "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]}]}
        })
    }

    #[test]
    fn a_valid_crd_defines_its_resource() {
        let mut c = crd();
        defaults(&mut c, "");
        let mut causes = Causes::new();
        validate(&c, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        assert_eq!(c["spec"]["names"]["listKind"], "CronTabList");
        assert_eq!(c["status"]["storedVersions"], json!(["v1"]));
        let rs = resources_of(&c);
        assert_eq!(rs.len(), 1);
        let r = &rs[0];
        assert_eq!(
            (r.plural, r.singular, r.kind),
            ("crontabs", "crontab", "CronTab")
        );
        assert!(r.has_sub("status") && r.has_sub("scale"));
        let cells = (r.cells)(
            r,
            &json!({"metadata": {"name": "a"}, "spec": {"replicas": 3}}),
        );
        assert_eq!(cells, vec![json!("a"), json!(3)]);
    }

    /// What `start` does: the CRDs already stored are served again.
    #[tokio::test]
    async fn stored_crds_are_served_after_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = skiff_store::Store::open(dir.path().join("s.redb"), Default::default())
            .await
            .unwrap();
        let crds = Crds::default();
        crds.reload(&store).await.unwrap();
        assert!(
            crds.served()
                .find("stable.example.com", "v1", "crontabs")
                .is_none()
        );
        let mut c = crd();
        defaults(&mut c, "");
        storage::create(&store, crd_resource(), "", c, false)
            .await
            .unwrap();
        crds.reload(&store).await.unwrap();
        let r = crds
            .served()
            .find("stable.example.com", "v1", "crontabs")
            .unwrap();
        assert_eq!(r.short_names, ["ct"]);
        let stored = storage::get(&store, crd_resource(), "", "crontabs.stable.example.com")
            .await
            .unwrap();
        assert_eq!(stored["status"]["conditions"][1]["type"], "Established");
        assert_eq!(stored["status"]["conditions"][1]["status"], "True");
        assert_eq!(stored["status"]["acceptedNames"]["listKind"], "CronTabList");

        // A later CRD of the group asking for a taken name is not accepted.
        let mut later = crd();
        later["metadata"]["name"] = json!("jobs.stable.example.com");
        later["spec"]["names"] = json!({"plural": "jobs", "kind": "Job", "shortNames": ["ct"]});
        defaults(&mut later, "");
        storage::create(&store, crd_resource(), "", later, false)
            .await
            .unwrap();
        crds.reload(&store).await.unwrap();
        assert!(
            crds.served()
                .find("stable.example.com", "v1", "jobs")
                .is_none()
        );
        let stored = storage::get(&store, crd_resource(), "", "jobs.stable.example.com")
            .await
            .unwrap();
        let names = &stored["status"]["conditions"][0];
        assert_eq!(
            (&names["status"], &names["reason"], &names["message"]),
            (
                &json!("False"),
                &json!("ShortNamesConflict"),
                &json!("\"ct\" is already in use")
            )
        );
        assert_eq!(stored["status"]["conditions"][1]["status"], "False");

        // Interned: an unchanged CRD is not leaked again.
        crds.reload(&store).await.unwrap();
        assert!(std::ptr::eq(
            r,
            crds.served()
                .find("stable.example.com", "v1", "crontabs")
                .unwrap()
        ));
    }

    #[test]
    fn scale_paths_printer_paths_and_pruning_flag_are_checked() {
        let mut c = crd();
        let v = &mut c["spec"]["versions"][0];
        v["subresources"]["scale"]["specReplicasPath"] = json!(".status.replicas");
        v["additionalPrinterColumns"][0]["jsonPath"] = json!(".spec.x[?(@.a>1)]");
        c["spec"]["preserveUnknownFields"] = json!(true);
        defaults(&mut c, "");
        let mut causes = Causes::new();
        validate(&c, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.preserveUnknownFields",
                "spec.versions[0].subresources.scale.specReplicasPath",
                "spec.versions[0].additionalPrinterColumns[0].jsonPath",
            ]
        );
        assert!(
            causes[1].1.contains("should be a json path under .spec"),
            "{causes:?}"
        );
    }

    #[test]
    fn invalid_names_are_refused_with_the_field() {
        let mut c = crd();
        c["metadata"]["name"] = json!("wrong.stable.example.com");
        c["spec"]["group"] = json!("stable.example.com");
        c["spec"]["scope"] = json!("Everywhere");
        defaults(&mut c, "");
        let mut causes = Causes::new();
        validate(&c, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "spec.scope"]);
        assert!(
            causes[0]
                .1
                .contains("must be spec.names.plural+\".\"+spec.group")
        );
    }
}
