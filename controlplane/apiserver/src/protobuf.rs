//! A minimal decoder for Kubernetes' protobuf request bodies. client-go's
//! generated clients for built-in kinds always send protobuf, so commands
//! such as `kubectl create deployment|job|cronjob|service|role|configmap…`
//! and `kubectl auth can-i` need it. Stored kinds are decoded through
//! hand-written field tables (numbers from k8s.io/api's generated.proto) into
//! the JSON kube would write: camelCase names, empty `omitempty` fields left
//! out, IntOrString as a number or string, Quantity and Time as strings. A
//! field number a table does not know, in any message, is answered 415
//! naming it rather than dropped; so are kinds without a table.

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

/// How one field of a message maps to JSON.
#[derive(Clone, Copy)]
enum T {
    /// string, omitted when empty (`omitempty`)
    Str,
    /// integer, omitted when 0 (`omitempty`, not a pointer)
    Int,
    /// integer kept even when 0 (a pointer or a required field)
    Num,
    /// bool, omitted when false
    Bool,
    /// pointer bool, kept when false
    BoolPtr,
    /// repeated string; every element kept, empty ones too (`apiGroups: [""]`)
    Strs,
    /// map<string, string>
    Map,
    /// map<string, bytes>, base64 in JSON
    BytesMap,
    /// map<string, resource.Quantity>
    QtyMap,
    /// intstr.IntOrString: a number or a string
    IntOrStr,
    /// metav1.Time: an RFC 3339 string, omitted when unset
    Time,
    /// metav1.FieldsV1 (raw = 1): the JSON it carries
    FieldsV1,
    /// a message; its type name is used in errors
    Msg(&'static str, &'static [F]),
    /// a repeated message
    Msgs(&'static str, &'static [F]),
    /// a pointer to a struct this server only takes empty (`securityContext: {}`)
    EmptyObj,
    /// accepted only when every field in it is zero (a status the server
    /// resets anyway); dropped
    Zero,
}

/// (field number, JSON name, type); numbers from k8s.io/api generated.proto.
type F = (u64, &'static str, T);

const OWNER_REF: &[F] = &[
    (1, "kind", T::Str),
    (3, "name", T::Str),
    (4, "uid", T::Str),
    (5, "apiVersion", T::Str),
    (6, "controller", T::BoolPtr),
    (7, "blockOwnerDeletion", T::BoolPtr),
];

const MANAGED_FIELDS_ENTRY: &[F] = &[
    (1, "manager", T::Str),
    (2, "operation", T::Str),
    (3, "apiVersion", T::Str),
    (4, "time", T::Time),
    (6, "fieldsType", T::Str),
    (7, "fieldsV1", T::FieldsV1),
    (8, "subresource", T::Str),
];

const OBJECT_META: &[F] = &[
    (1, "name", T::Str),
    (2, "generateName", T::Str),
    (3, "namespace", T::Str),
    (4, "selfLink", T::Str),
    (5, "uid", T::Str),
    (6, "resourceVersion", T::Str),
    (7, "generation", T::Int),
    (8, "creationTimestamp", T::Time),
    (9, "deletionTimestamp", T::Time),
    (10, "deletionGracePeriodSeconds", T::Num),
    (11, "labels", T::Map),
    (12, "annotations", T::Map),
    (
        13,
        "ownerReferences",
        T::Msgs("meta/v1 OwnerReference", OWNER_REF),
    ),
    (14, "finalizers", T::Strs),
    (
        17,
        "managedFields",
        T::Msgs("meta/v1 ManagedFieldsEntry", MANAGED_FIELDS_ENTRY),
    ),
];
const META: F = (1, "metadata", T::Msg("meta/v1 ObjectMeta", OBJECT_META));
const STATUS: F = (3, "status", T::Zero);

const SELECTOR_REQ: &[F] = &[
    (1, "key", T::Str),
    (2, "operator", T::Str),
    (3, "values", T::Strs),
];
const LABEL_SELECTOR: &[F] = &[
    (1, "matchLabels", T::Map),
    (
        2,
        "matchExpressions",
        T::Msgs("meta/v1 LabelSelectorRequirement", SELECTOR_REQ),
    ),
];
const SELECTOR: T = T::Msg("meta/v1 LabelSelector", LABEL_SELECTOR);

const CONTAINER_PORT: &[F] = &[
    (1, "name", T::Str),
    (2, "hostPort", T::Int),
    (3, "containerPort", T::Num),
    (4, "protocol", T::Str),
    (5, "hostIP", T::Str),
];
const ENV_VAR: &[F] = &[(1, "name", T::Str), (2, "value", T::Str)];
const RESOURCES: &[F] = &[(1, "limits", T::QtyMap), (2, "requests", T::QtyMap)];
const CONTAINER: &[F] = &[
    (1, "name", T::Str),
    (2, "image", T::Str),
    (3, "command", T::Strs),
    (4, "args", T::Strs),
    (5, "workingDir", T::Str),
    (6, "ports", T::Msgs("core/v1 ContainerPort", CONTAINER_PORT)),
    (7, "env", T::Msgs("core/v1 EnvVar", ENV_VAR)),
    (
        8,
        "resources",
        T::Msg("core/v1 ResourceRequirements", RESOURCES),
    ),
    (13, "terminationMessagePath", T::Str),
    (14, "imagePullPolicy", T::Str),
    (16, "stdin", T::Bool),
    (17, "stdinOnce", T::Bool),
    (18, "tty", T::Bool),
    (20, "terminationMessagePolicy", T::Str),
];
const LOCAL_REF: &[F] = &[(1, "name", T::Str)];
const POD_SPEC: &[F] = &[
    (2, "containers", T::Msgs("core/v1 Container", CONTAINER)),
    (3, "restartPolicy", T::Str),
    (4, "terminationGracePeriodSeconds", T::Num),
    (5, "activeDeadlineSeconds", T::Num),
    (6, "dnsPolicy", T::Str),
    (7, "nodeSelector", T::Map),
    (8, "serviceAccountName", T::Str),
    (9, "serviceAccount", T::Str),
    (10, "nodeName", T::Str),
    (11, "hostNetwork", T::Bool),
    (12, "hostPID", T::Bool),
    (13, "hostIPC", T::Bool),
    (14, "securityContext", T::EmptyObj),
    (
        15,
        "imagePullSecrets",
        T::Msgs("core/v1 LocalObjectReference", LOCAL_REF),
    ),
    (16, "hostname", T::Str),
    (17, "subdomain", T::Str),
    (19, "schedulerName", T::Str),
    (
        20,
        "initContainers",
        T::Msgs("core/v1 Container", CONTAINER),
    ),
    (21, "automountServiceAccountToken", T::BoolPtr),
    (24, "priorityClassName", T::Str),
    (25, "priority", T::Num),
    (27, "shareProcessNamespace", T::BoolPtr),
    (29, "runtimeClassName", T::Str),
    (30, "enableServiceLinks", T::BoolPtr),
    (31, "preemptionPolicy", T::Str),
    (35, "setHostnameAsFQDN", T::BoolPtr),
    (37, "hostUsers", T::BoolPtr),
];
const POD_TEMPLATE_SPEC: &[F] = &[META, (2, "spec", T::Msg("core/v1 PodSpec", POD_SPEC))];
const TEMPLATE: T = T::Msg("core/v1 PodTemplateSpec", POD_TEMPLATE_SPEC);

const ROLLING_UPDATE: &[F] = &[
    (1, "maxUnavailable", T::IntOrStr),
    (2, "maxSurge", T::IntOrStr),
];
const DEPLOYMENT_STRATEGY: &[F] = &[
    (1, "type", T::Str),
    (
        2,
        "rollingUpdate",
        T::Msg("apps/v1 RollingUpdateDeployment", ROLLING_UPDATE),
    ),
];
const DEPLOYMENT_SPEC: &[F] = &[
    (1, "replicas", T::Num),
    (2, "selector", SELECTOR),
    (3, "template", TEMPLATE),
    (
        4,
        "strategy",
        T::Msg("apps/v1 DeploymentStrategy", DEPLOYMENT_STRATEGY),
    ),
    (5, "minReadySeconds", T::Int),
    (6, "revisionHistoryLimit", T::Num),
    (7, "paused", T::Bool),
    (9, "progressDeadlineSeconds", T::Num),
];
const DEPLOYMENT: &[F] = &[
    META,
    (2, "spec", T::Msg("apps/v1 DeploymentSpec", DEPLOYMENT_SPEC)),
    STATUS,
];

const JOB_SPEC: &[F] = &[
    (1, "parallelism", T::Num),
    (2, "completions", T::Num),
    (3, "activeDeadlineSeconds", T::Num),
    (4, "selector", SELECTOR),
    (5, "manualSelector", T::BoolPtr),
    (6, "template", TEMPLATE),
    (7, "backoffLimit", T::Num),
    (8, "ttlSecondsAfterFinished", T::Num),
    (9, "completionMode", T::Str),
    (10, "suspend", T::BoolPtr),
    (12, "backoffLimitPerIndex", T::Num),
    (13, "maxFailedIndexes", T::Num),
    (14, "podReplacementPolicy", T::Str),
    (15, "managedBy", T::Str),
];
const JOB: &[F] = &[
    META,
    (2, "spec", T::Msg("batch/v1 JobSpec", JOB_SPEC)),
    STATUS,
];
const JOB_TEMPLATE_SPEC: &[F] = &[META, (2, "spec", T::Msg("batch/v1 JobSpec", JOB_SPEC))];
const CRON_JOB_SPEC: &[F] = &[
    (1, "schedule", T::Str),
    (2, "startingDeadlineSeconds", T::Num),
    (3, "concurrencyPolicy", T::Str),
    (4, "suspend", T::BoolPtr),
    (
        5,
        "jobTemplate",
        T::Msg("batch/v1 JobTemplateSpec", JOB_TEMPLATE_SPEC),
    ),
    (6, "successfulJobsHistoryLimit", T::Num),
    (7, "failedJobsHistoryLimit", T::Num),
    (8, "timeZone", T::Str),
];
const CRON_JOB: &[F] = &[
    META,
    (2, "spec", T::Msg("batch/v1 CronJobSpec", CRON_JOB_SPEC)),
    STATUS,
];

const SERVICE_PORT: &[F] = &[
    (1, "name", T::Str),
    (2, "protocol", T::Str),
    (3, "port", T::Num),
    (4, "targetPort", T::IntOrStr),
    (5, "nodePort", T::Int),
    (6, "appProtocol", T::Str),
];
const SERVICE_SPEC: &[F] = &[
    (1, "ports", T::Msgs("core/v1 ServicePort", SERVICE_PORT)),
    (2, "selector", T::Map),
    (3, "clusterIP", T::Str),
    (4, "type", T::Str),
    (5, "externalIPs", T::Strs),
    (7, "sessionAffinity", T::Str),
    (8, "loadBalancerIP", T::Str),
    (9, "loadBalancerSourceRanges", T::Strs),
    (10, "externalName", T::Str),
    (11, "externalTrafficPolicy", T::Str),
    (12, "healthCheckNodePort", T::Int),
    (13, "publishNotReadyAddresses", T::Bool),
    (17, "ipFamilyPolicy", T::Str),
    (18, "clusterIPs", T::Strs),
    (19, "ipFamilies", T::Strs),
    (20, "allocateLoadBalancerNodePorts", T::BoolPtr),
    (21, "loadBalancerClass", T::Str),
    (22, "internalTrafficPolicy", T::Str),
    (23, "trafficDistribution", T::Str),
];
const SERVICE: &[F] = &[
    META,
    (2, "spec", T::Msg("core/v1 ServiceSpec", SERVICE_SPEC)),
    STATUS,
];

const POLICY_RULE: &[F] = &[
    (1, "verbs", T::Strs),
    (2, "apiGroups", T::Strs),
    (3, "resources", T::Strs),
    (4, "resourceNames", T::Strs),
    (5, "nonResourceURLs", T::Strs),
];
const RULES: F = (2, "rules", T::Msgs("rbac/v1 PolicyRule", POLICY_RULE));
const ROLE: &[F] = &[META, RULES];
const AGGREGATION_RULE: &[F] = &[(
    1,
    "clusterRoleSelectors",
    T::Msgs("meta/v1 LabelSelector", LABEL_SELECTOR),
)];
const CLUSTER_ROLE: &[F] = &[
    META,
    RULES,
    (
        3,
        "aggregationRule",
        T::Msg("rbac/v1 AggregationRule", AGGREGATION_RULE),
    ),
];
const SUBJECT: &[F] = &[
    (1, "kind", T::Str),
    (2, "apiGroup", T::Str),
    (3, "name", T::Str),
    (4, "namespace", T::Str),
];
const ROLE_REF: &[F] = &[
    (1, "apiGroup", T::Str),
    (2, "kind", T::Str),
    (3, "name", T::Str),
];
const BINDING: &[F] = &[
    META,
    (2, "subjects", T::Msgs("rbac/v1 Subject", SUBJECT)),
    (3, "roleRef", T::Msg("rbac/v1 RoleRef", ROLE_REF)),
];

const NAMESPACE_SPEC: &[F] = &[(1, "finalizers", T::Strs)];
const NAMESPACE: &[F] = &[
    META,
    (2, "spec", T::Msg("core/v1 NamespaceSpec", NAMESPACE_SPEC)),
    STATUS,
];
const CONFIG_MAP: &[F] = &[
    META,
    (2, "data", T::Map),
    (3, "binaryData", T::BytesMap),
    (4, "immutable", T::BoolPtr),
];
const SECRET: &[F] = &[
    META,
    (2, "data", T::BytesMap),
    (3, "type", T::Str),
    (4, "stringData", T::Map),
    (5, "immutable", T::BoolPtr),
];
const OBJECT_REF: &[F] = &[
    (1, "kind", T::Str),
    (2, "namespace", T::Str),
    (3, "name", T::Str),
    (4, "uid", T::Str),
    (5, "apiVersion", T::Str),
    (6, "resourceVersion", T::Str),
    (7, "fieldPath", T::Str),
];
const SERVICE_ACCOUNT: &[F] = &[
    META,
    (2, "secrets", T::Msgs("core/v1 ObjectReference", OBJECT_REF)),
    (
        3,
        "imagePullSecrets",
        T::Msgs("core/v1 LocalObjectReference", LOCAL_REF),
    ),
    (4, "automountServiceAccountToken", T::BoolPtr),
];

/// The stored kinds decoded through the tables above.
fn table(api_version: &str, kind: &str) -> Option<&'static [F]> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => NAMESPACE,
        ("v1", "ConfigMap") => CONFIG_MAP,
        ("v1", "Secret") => SECRET,
        ("v1", "ServiceAccount") => SERVICE_ACCOUNT,
        ("v1", "Service") => SERVICE,
        ("apps/v1", "Deployment") => DEPLOYMENT,
        ("batch/v1", "Job") => JOB,
        ("batch/v1", "CronJob") => CRON_JOB,
        ("rbac.authorization.k8s.io/v1", "Role") => ROLE,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => CLUSTER_ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => BINDING,
        _ => return None,
    })
}

/// 415 for a field this decoder does not map: dropping it would lose data
/// silently, so the client is told to send JSON instead.
fn unsupported(kind: &str, path: &str, what: &str) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "protobuf request body for {kind}: {what} at {path} is not supported by this server \
             and nothing was stored; send the object as JSON instead (e.g. `kubectl create ... \
             --dry-run=client -o yaml | kubectl apply --server-side -f -`, or a client with \
             content type application/json)"
        ),
    )
}

/// Whether a message holds only zero values (nested messages included).
fn is_zero(b: &[u8]) -> bool {
    fields(b).is_some_and(|fs| {
        fs.iter().all(|(_, f)| match f {
            Field::Varint(v) => *v == 0,
            Field::Bytes(x) => x.is_empty() || is_zero(x),
            Field::Other => false,
        })
    })
}

/// A map entry message: key = 1, value = 2.
fn map_entry(b: &[u8]) -> Result<(String, &[u8]), ApiError> {
    let (mut k, mut v) = (String::new(), &[][..]);
    for (n, f) in fields(b).ok_or_else(bad)? {
        match (n, f) {
            (1, Field::Bytes(x)) => k = string(x)?,
            (2, Field::Bytes(x)) => v = x,
            _ => return Err(bad()),
        }
    }
    Ok((k, v))
}

fn int_or_string(b: &[u8]) -> Result<Value, ApiError> {
    let (mut ty, mut int, mut s) = (0, 0i64, String::new());
    for (n, f) in fields(b).ok_or_else(bad)? {
        match (n, f) {
            (1, Field::Varint(v)) => ty = v,
            // int32 values arrive sign-extended to 64 bits.
            (2, Field::Varint(v)) => int = v as i64,
            (3, Field::Bytes(x)) => s = string(x)?,
            _ => return Err(bad()),
        }
    }
    Ok(if ty == 1 { json!(s) } else { json!(int) })
}

/// metav1.Time (seconds = 1, nanos = 2) as kube's JSON: RFC 3339 in whole
/// seconds, UTC; `None` when unset.
fn time(b: &[u8]) -> Result<Option<Value>, ApiError> {
    let mut secs: Option<i64> = None;
    for (n, f) in fields(b).ok_or_else(bad)? {
        match (n, f) {
            (1, Field::Varint(v)) => secs = Some(v as i64),
            (2, Field::Varint(_)) => {}
            _ => return Err(bad()),
        }
    }
    Ok(secs.map(|s| json!(rfc3339(s))))
}

fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Decodes one message by its table into a JSON object.
fn message(
    b: &[u8],
    (type_name, table): (&str, &[F]),
    kind: &str,
    path: &str,
) -> Result<Map<String, Value>, ApiError> {
    let mut m = Map::new();
    for (n, f) in fields(b).ok_or_else(bad)? {
        let Some(&(_, name, ty)) = table.iter().find(|(k, _, _)| *k == n) else {
            let path = if path.is_empty() {
                "the top level"
            } else {
                path
            };
            return Err(unsupported(
                kind,
                path,
                &format!("field number {n} of {type_name}"),
            ));
        };
        let here = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}.{name}")
        };
        let value = match (ty, f) {
            (T::Str, Field::Bytes(x)) => (!x.is_empty())
                .then(|| string(x))
                .transpose()?
                .map(Value::from),
            (T::Int, Field::Varint(v)) => (v != 0).then(|| json!(v as i64)),
            (T::Num, Field::Varint(v)) => Some(json!(v as i64)),
            (T::Bool, Field::Varint(v)) => (v != 0).then_some(json!(true)),
            (T::BoolPtr, Field::Varint(v)) => Some(json!(v != 0)),
            (T::Strs, Field::Bytes(x)) => {
                push(&mut m, name, json!(string(x)?));
                None
            }
            (T::Map | T::BytesMap | T::QtyMap, Field::Bytes(x)) => {
                let (k, v) = map_entry(x)?;
                let v = match ty {
                    T::Map => json!(string(v)?),
                    T::BytesMap => json!(base64::engine::general_purpose::STANDARD.encode(v)),
                    // resource.Quantity { optional string string = 1; }
                    _ => strings_message(v, &[(1, "string")])?
                        .get("string")
                        .cloned()
                        .unwrap_or_else(|| json!("0")),
                };
                m.entry(name)
                    .or_insert_with(|| json!({}))
                    .as_object_mut()
                    .ok_or_else(bad)?
                    .insert(k, v);
                None
            }
            (T::IntOrStr, Field::Bytes(x)) => Some(int_or_string(x)?),
            (T::Time, Field::Bytes(x)) => time(x)?,
            (T::FieldsV1, Field::Bytes(x)) => {
                let mut raw = &[][..];
                for (n, f) in fields(x).ok_or_else(bad)? {
                    match (n, f) {
                        (1, Field::Bytes(r)) => raw = r,
                        _ => return Err(unsupported(kind, &here, &format!("field number {n}"))),
                    }
                }
                Some(if raw.is_empty() {
                    json!({})
                } else {
                    serde_json::from_slice(raw).map_err(|_| bad())?
                })
            }
            (T::Msg(tn, t), Field::Bytes(x)) => {
                Some(Value::Object(message(x, (tn, t), kind, &here)?))
            }
            (T::Msgs(tn, t), Field::Bytes(x)) => {
                let item = message(x, (tn, t), kind, &here)?;
                push(&mut m, name, Value::Object(item));
                None
            }
            (T::EmptyObj, Field::Bytes([])) => Some(json!({})),
            (T::EmptyObj, Field::Bytes(_)) => {
                return Err(unsupported(kind, &here, "a non-empty value"));
            }
            (T::Zero, Field::Bytes(x)) if is_zero(x) => None,
            (T::Zero, _) => return Err(unsupported(kind, &here, "a non-empty value")),
            _ => return Err(bad()),
        };
        if let Some(v) = value {
            m.insert(name.to_string(), v);
        }
    }
    Ok(m)
}

fn push(m: &mut Map<String, Value>, name: &str, v: Value) {
    if let Some(a) = m.entry(name).or_insert_with(|| json!([])).as_array_mut() {
        a.push(v);
    }
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
    if let Some(t) = table(&api_version, &kind) {
        let m = message(raw, (&kind, t), &kind, "")?;
        obj.extend(m);
        // Lists kube serialises without omitempty.
        let always = match kind.as_str() {
            "Role" | "ClusterRole" => Some("rules"),
            "RoleBinding" | "ClusterRoleBinding" => Some("subjects"),
            _ => None,
        };
        if let Some(f) = always {
            obj.entry(f).or_insert_with(|| json!([]));
        }
        obj.entry("metadata").or_insert_with(|| json!({}));
        return Ok(Value::Object(obj));
    }
    let msg = fields(raw).ok_or_else(bad)?;
    match (api_version.as_str(), kind.as_str()) {
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
                        // Dropping the reference would issue an unbound token.
                        (3, Field::Bytes(b)) => {
                            spec.insert(
                                "boundObjectRef".into(),
                                strings_message(
                                    b,
                                    &[(1, "kind"), (2, "apiVersion"), (3, "name"), (4, "uid")],
                                )?,
                            );
                        }
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
        assert!(b.len() < 128);
        let mut out = key(field, 2);
        out.push(b.len() as u8);
        out.extend_from_slice(b);
        out
    }

    fn key(field: u64, wire: u64) -> Vec<u8> {
        let mut out = Vec::new();
        let mut v = (field << 3) | wire;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
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
            decode(&envelope("policy/v1", "PodDisruptionBudget", &[]))
                .unwrap_err()
                .code,
            415
        );
        assert_eq!(decode(b"k8s\0\xff").unwrap_err().code, 400);
        assert_eq!(decode(b"nope").unwrap_err().code, 400);
    }

    fn varint_field(field: u64, v: u64) -> Vec<u8> {
        let mut out = key(field, 0);
        let mut v = v;
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
        out
    }

    /// kubectl's `--dry-run=client -o json` of the same command, without
    /// what the protobuf form cannot say (`creationTimestamp: null`) and the
    /// status the server resets.
    fn dry_run(name: &str) -> Value {
        fn strip(v: &mut Value) {
            if let Value::Object(m) = v {
                if m.get("creationTimestamp") == Some(&Value::Null) {
                    m.remove("creationTimestamp");
                }
                m.values_mut().for_each(strip);
            }
        }
        let path = format!("tests/protobuf/kubectl-1.33-{name}.json");
        let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("status");
        strip(&mut v);
        v
    }

    fn captured(name: &str) -> Value {
        let path = format!("tests/protobuf/kubectl-1.33-{name}.bin");
        decode(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Bodies captured from kubectl 1.33 (`-v=9`) decode to exactly the
    /// JSON kubectl prints for the same object.
    #[test]
    fn real_kubectl_bodies_match_its_json() {
        for name in [
            "deployment_web",
            "job_j1",
            "cronjob_cj",
            "service_clusterip",
            "service_nodeport",
        ] {
            assert_eq!(captured(name), dry_run(name), "{name}");
        }
        let v = captured("deployment_web");
        assert_eq!(v["spec"]["replicas"], 2);
        assert_eq!(
            v["spec"]["template"]["spec"]["containers"][0]["ports"],
            json!([{"containerPort": 8080}])
        );
        assert_eq!(
            captured("service_clusterip")["spec"]["ports"][0]["targetPort"],
            8080
        );
        assert_eq!(
            captured("service_nodeport")["spec"]["ports"][0]["targetPort"],
            "http"
        );
        assert_eq!(
            captured("role_r1"),
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                   "metadata": {"name": "r1"},
                   "rules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}]})
        );
        assert_eq!(
            captured("clusterrole_cr1")["rules"],
            json!([{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"], "resourceNames": ["x"]}])
        );
    }

    #[test]
    fn quantities_int_or_strings_times_and_pointers() {
        let qty = |k: &[u8], v: &[u8]| ld(1, &[ld(1, k), ld(2, &ld(1, v))].concat());
        let container = [
            ld(1, b"c"),
            ld(2, b"img"),
            ld(7, &[ld(1, b"A"), ld(2, b"1")].concat()),
            ld(
                8,
                &[
                    qty(b"cpu", b"500m"),
                    ld(2, &[ld(1, b"memory"), ld(2, &ld(1, b"64Mi"))].concat()),
                ]
                .concat(),
            ),
        ]
        .concat();
        let pod = [ld(2, &container), ld(14, &[]), varint_field(4, 30)].concat();
        let strategy = [
            ld(1, b"RollingUpdate"),
            ld(
                2,
                &[
                    ld(1, &[varint_field(1, 0), varint_field(2, 1)].concat()),
                    ld(2, &[varint_field(1, 1), ld(3, b"25%")].concat()),
                ]
                .concat(),
            ),
        ]
        .concat();
        let meta = [ld(1, b"d"), ld(8, &varint_field(1, 1_700_000_000))].concat();
        let spec = [
            varint_field(1, 0),
            ld(3, &ld(2, &pod)),
            ld(4, &strategy),
            varint_field(5, 0),
            varint_field(7, 0),
        ]
        .concat();
        let raw = [
            ld(1, &meta),
            ld(2, &spec),
            ld(3, &[varint_field(2, 0), ld(6, &[])].concat()),
        ]
        .concat();
        let v = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "d", "creationTimestamp": "2023-11-14T22:13:20Z"},
                   "spec": {
                       "replicas": 0,
                       "template": {"spec": {
                           "containers": [{"name": "c", "image": "img", "env": [{"name": "A", "value": "1"}],
                                           "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}}}],
                           "securityContext": {},
                           "terminationGracePeriodSeconds": 30}},
                       "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": "25%"}}}})
        );
        let mf = [
            ld(1, b"kubectl"),
            ld(2, b"Apply"),
            ld(4, &varint_field(1, 0)),
            ld(7, &ld(1, br#"{"f:data":{}}"#)),
        ]
        .concat();
        let v = decode(&envelope("v1", "ConfigMap", &ld(1, &ld(17, &mf)))).unwrap();
        assert_eq!(
            v["metadata"]["managedFields"],
            json!([{"manager": "kubectl", "operation": "Apply", "time": "1970-01-01T00:00:00Z", "fieldsV1": {"f:data": {}}}])
        );
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        // int32 -1 is sent as ten bytes, sign-extended.
        let raw = ld(2, &varint_field(1, u64::MAX));
        let v = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap();
        assert_eq!(v["spec"]["replicas"], -1);
    }

    /// A field this decoder has no name for is refused, never dropped.
    #[test]
    fn unknown_fields_are_415_naming_the_field() {
        // spec.template.spec.volumes (field 1 of PodSpec) is not mapped.
        let raw = ld(2, &ld(3, &ld(2, &ld(1, &ld(1, b"data")))));
        let e = decode(&envelope("apps/v1", "Deployment", &raw)).unwrap_err();
        assert_eq!(e.code, 415);
        for want in [
            "Deployment",
            "field number 1 of core/v1 PodSpec",
            "spec.template.spec",
            "JSON",
            "nothing was stored",
        ] {
            assert!(e.message.contains(want), "{want:?} in {}", e.message);
        }
        // An unmapped top-level field and a status with content.
        let e = decode(&envelope("v1", "ConfigMap", &ld(9, b"x"))).unwrap_err();
        assert_eq!(e.code, 415);
        assert!(
            e.message
                .contains("field number 9 of ConfigMap at the top level"),
            "{}",
            e.message
        );
        let e = decode(&envelope("batch/v1", "Job", &ld(3, &varint_field(4, 1)))).unwrap_err();
        assert_eq!(e.code, 415);
        assert!(e.message.contains("at status"), "{}", e.message);
        // A non-empty pod securityContext is not decoded either.
        let raw = ld(2, &ld(6, &ld(2, &ld(14, &varint_field(1, 1000)))));
        let e = decode(&envelope("batch/v1", "Job", &raw)).unwrap_err();
        assert!(
            e.message.contains("spec.template.spec.securityContext"),
            "{}",
            e.message
        );
        // A known field with the wrong wire type is a bad request.
        let e = decode(&envelope("apps/v1", "Deployment", &ld(2, &ld(1, b"2")))).unwrap_err();
        assert_eq!(e.code, 400);
    }
}
