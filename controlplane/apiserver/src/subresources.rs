//! Subresources and review endpoints that are not plain object writes:
//! `scale`, pod `binding`, service account `token` (TokenRequest) and
//! the self-subject reviews (access, rules, and who am I).

use axum::body::Body;
use axum::http::Response;
use serde_json::{Value, json};

use crate::authn::Identity;
use crate::authz::{self, Attributes};
use crate::http::json_response;
use crate::registry::Resource;
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::storage::{self, meta_str, target};

/// `kubectl auth can-i`: evaluates the caller's own permission.
pub(crate) async fn self_subject_access_review(
    state: &State,
    id: &Identity,
    mut review: Value,
) -> ApiResult<Response<Body>> {
    let ra = review.pointer("/spec/resourceAttributes").cloned();
    let allowed = match &ra {
        Some(ra) => {
            let f = |k: &str| ra.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            let (verb, group, resource, sub, ns, name) = (
                f("verb"),
                f("group"),
                f("resource"),
                f("subresource"),
                f("namespace"),
                f("name"),
            );
            authz::allowed(
                state,
                id,
                &Attributes {
                    verb: &verb,
                    group: &group,
                    resource: &resource,
                    subresource: &sub,
                    namespace: &ns,
                    name: &name,
                    field_selector: "",
                },
            )
            .await?
        }
        // Non-resource URLs (discovery, health, version) are open to every
        // authenticated user.
        None => {
            review
                .pointer("/spec/nonResourceAttributes/verb")
                .and_then(Value::as_str)
                == Some("get")
        }
    };
    review["status"] = json!({"allowed": allowed});
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    Ok(json_response(201, &review))
}

/// SelfSubjectReview (`kubectl auth whoami`, the dashboard's sign-in): who
/// the request was authenticated as. Whatever the body asks is ignored, as
/// kube does: the answer is only ever the caller's own identity.
pub(crate) fn self_subject_review(id: &Identity, _review: Value) -> Response<Body> {
    let mut user = json!({"username": id.name, "groups": id.groups});
    if !id.uid.is_empty() {
        user["uid"] = json!(id.uid);
    }
    json_response(
        201,
        &json!({
            "kind": "SelfSubjectReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": storage::now_rfc3339()},
            "status": {"userInfo": user},
        }),
    )
}

/// TokenRequest (`kubectl create token`): a signed token for an existing
/// service account, for the API server's audience unless others are asked
/// for, living at most the configured maximum, optionally bound to a Pod or
/// Secret of the account's namespace (then valid only while that object
/// exists with the same uid).
pub(crate) async fn token_request(
    state: &State,
    r: &'static Resource,
    ns: &str,
    name: &str,
    mut req: Value,
) -> ApiResult<Response<Body>> {
    let keys = state.authn.service_accounts.as_ref().ok_or_else(|| {
        ApiError::internal("no service account signing key (sa.key) in the PKI directory")
    })?;
    let sa = storage::get(&state.store, r, ns, name).await?;
    let invalid = |field: &str, msg: String| {
        ApiError::invalid(storage::target(r, name), &[(field.to_string(), msg)])
    };
    let requested = match req.pointer("/spec/expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => v.as_i64().ok_or_else(|| {
            invalid(
                "spec.expirationSeconds",
                format!("Invalid value: {v}: must be an integer"),
            )
        })?,
    };
    if requested < 600 {
        return Err(invalid(
            "spec.expirationSeconds",
            "Invalid value: may not specify a duration less than 10 minutes".into(),
        ));
    }
    if requested > 1 << 32 {
        return Err(invalid(
            "spec.expirationSeconds",
            "Invalid value: may not specify a duration larger than 2^32 seconds".into(),
        ));
    }
    // kube shortens (with a warning) rather than refuses a longer request.
    let max = i64::try_from(
        state
            .gate
            .limits
            .service_account_max_token_expiration
            .as_secs(),
    )
    .unwrap_or(i64::MAX)
    .max(600);
    let ttl = requested.min(max);
    let warning = (ttl < requested).then(|| {
        format!("299 - \"requested expiration of {requested} seconds shortened to {ttl} seconds\"")
    });
    let audiences: Vec<String> = req
        .pointer("/spec/audiences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    let bound = match req.pointer("/spec/boundObjectRef").filter(|b| !b.is_null()) {
        None => None,
        Some(b) => Some(bound_object(state, ns, name, b).await?),
    };
    let now = storage::unix_now();
    let claims = crate::satoken::Claims {
        namespace: ns.to_string(),
        name: name.to_string(),
        uid: meta_str(&sa, "uid").unwrap_or_default().to_string(),
        bound: bound.clone(),
    };
    let token = keys.issue(&claims, &audiences, now, ttl).map_err(|e| {
        invalid(
            "spec.expirationSeconds",
            format!("Invalid value: {ttl}: {e}"),
        )
    })?;
    let expires = now
        .checked_add(ttl)
        .and_then(|t| k8s_openapi::jiff::Timestamp::from_second(t).ok())
        .map(|t| t.to_string())
        .unwrap_or_default();
    req["apiVersion"] = json!("authentication.k8s.io/v1");
    req["kind"] = json!("TokenRequest");
    req["metadata"] =
        json!({"name": name, "namespace": ns, "creationTimestamp": storage::now_rfc3339()});
    if !req.get("spec").is_some_and(Value::is_object) {
        req["spec"] = json!({});
    }
    req["spec"]["expirationSeconds"] = json!(ttl);
    if audiences.is_empty() {
        req["spec"]["audiences"] = json!([crate::satoken::API_AUDIENCE]);
    }
    if let Some(b) = &bound {
        req["spec"]["boundObjectRef"]["uid"] = json!(b.uid);
    }
    req["status"] = json!({"token": token, "expirationTimestamp": expires});
    let mut resp = json_response(201, &req);
    if let Some(w) = warning.and_then(|w| axum::http::HeaderValue::from_str(&w).ok()) {
        resp.headers_mut().insert("warning", w);
    }
    Ok(resp)
}

/// Resolves a TokenRequest's `boundObjectRef` as kube does: a Pod or Secret
/// in the account's namespace, its uid matching when one is given, and a
/// pod running as this service account.
async fn bound_object(
    state: &State,
    ns: &str,
    sa: &str,
    b: &Value,
) -> ApiResult<crate::satoken::BoundObject> {
    let f = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("");
    let (kind, name, uid) = (f("kind"), f("name"), f("uid"));
    let plural = match (f("apiVersion"), kind) {
        ("v1" | "", "Pod") => "pods",
        ("v1" | "", "Secret") => "secrets",
        _ => {
            return Err(ApiError::bad_request(format!(
                "cannot bind token to object of type {}, {kind}",
                f("apiVersion")
            )));
        }
    };
    if name.is_empty() {
        return Err(ApiError::bad_request("boundObjectRef.name is required"));
    }
    let r = crate::registry::find("", "v1", plural).expect("registered");
    let obj = storage::get(&state.store, r, ns, name).await?;
    let have = meta_str(&obj, "uid").unwrap_or("");
    if !uid.is_empty() && uid != have {
        return Err(ApiError::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {kind} \"{name}\": the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
            ),
        ));
    }
    if kind == "Pod"
        && obj
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            != sa
    {
        return Err(ApiError::bad_request(format!(
            "cannot bind token for serviceaccount \"{sa}\" to pod running with different serviceaccount name."
        )));
    }
    Ok(crate::satoken::BoundObject {
        kind: kind.to_string(),
        name: name.to_string(),
        uid: have.to_string(),
    })
}

/// Where a kind keeps its replicas: `spec.replicas` and `status.replicas`
/// for built-ins, the CRD's `specReplicasPath`/`statusReplicasPath`.
fn replica_paths(r: &Resource) -> (&str, &str) {
    match r.custom.and_then(|c| c.scale.as_ref()) {
        Some(s) => (&s.spec_replicas, &s.status_replicas),
        None => ("/spec/replicas", "/status/replicas"),
    }
}

pub(crate) fn scale_of(r: &Resource, obj: &Value) -> Value {
    let (spec, status) = replica_paths(r);
    let custom_selector = r
        .custom
        .and_then(|c| c.scale.as_ref())
        .map(|s| s.label_selector.as_deref().and_then(|p| obj.pointer(p)));
    if let Some(sel) = custom_selector {
        return scale(obj, spec, status, sel.and_then(Value::as_str).unwrap_or(""));
    }
    let selector = obj
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    scale(obj, spec, status, &selector)
}

fn scale(obj: &Value, spec: &str, status: &str, selector: &str) -> Value {
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj.pointer("/metadata/name"),
            "namespace": obj.pointer("/metadata/namespace"),
            "uid": obj.pointer("/metadata/uid"),
            "resourceVersion": obj.pointer("/metadata/resourceVersion"),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer(spec).and_then(Value::as_i64).unwrap_or(0)},
        "status": {"replicas": obj.pointer(status).and_then(Value::as_i64).unwrap_or(0), "selector": selector},
    })
}

pub(crate) async fn set_replicas(
    state: &State,
    r: &'static Resource,
    ns: &str,
    name: &str,
    replicas: Option<i64>,
    rv: Option<u64>,
    dry_run: bool,
) -> ApiResult<Response<Body>> {
    let Some(n) = replicas.filter(|n| *n >= 0) else {
        return Err(ApiError::invalid(
            target(r, name),
            &[(
                "spec.replicas".into(),
                "Invalid value: must be greater than or equal to 0".into(),
            )],
        ));
    };
    let updated = storage::update(&state.store, r, ns, name, dry_run, |mut current| {
        if let Some(rv) = rv {
            current["metadata"]["resourceVersion"] = json!(rv.to_string());
        }
        let old = r.custom.is_some().then(|| current.clone());
        set_at(&mut current, replica_paths(r).0, json!(n));
        if let Some(c) = r.custom {
            // The schema still holds (a maximum on the replicas).
            let mut causes = Vec::new();
            c.validate(&current, old.as_ref(), &mut causes);
            if !causes.is_empty() {
                return Err(ApiError::invalid(target(r, name), &causes));
            }
        }
        Ok(current)
    })
    .await?;
    Ok(json_response(200, &scale_of(r, &updated)))
}

pub(crate) async fn bind(
    state: &State,
    r: &'static Resource,
    ns: &str,
    name: &str,
    body: &Value,
) -> ApiResult<Response<Body>> {
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                target(r, name),
                &[("target.name".into(), "Required value".into())],
            )
        })?
        .to_string();
    storage::update(&state.store, r, ns, name, false, |mut current| {
        if current
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "pod {name} is already assigned to node {:?}",
                    current["spec"]["nodeName"]
                ),
            ));
        }
        if meta_str(&current, "deletionTimestamp").is_some() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        current["spec"]["nodeName"] = json!(node);
        Ok(current)
    })
    .await?;
    Ok(json_response(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// `kubectl auth can-i --list`: the caller's rules in a namespace.
pub(crate) async fn self_subject_rules_review(
    state: &State,
    id: &Identity,
    mut review: Value,
) -> ApiResult<Response<Body>> {
    let ns = review
        .pointer("/spec/namespace")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let everything = json!([{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]);
    let (rules, incomplete) = if id.in_group("system:masters") {
        (everything.as_array().cloned().unwrap_or_default(), false)
    } else if id.name.starts_with("system:node:") && id.in_group("system:nodes") {
        // The node authorizer decides per object; it has no rule list.
        (Vec::new(), true)
    } else {
        (authz::rbac_rules(state, id, &ns).await?, false)
    };
    let resource_rules: Vec<Value> = rules
        .iter()
        .filter(|r| r.get("resources").is_some())
        .map(|r| {
            let mut out = json!({"verbs": r["verbs"], "apiGroups": r.get("apiGroups").cloned().unwrap_or(json!([])), "resources": r["resources"]});
            if let Some(n) = r.get("resourceNames").filter(|n| n.as_array().is_some_and(|a| !a.is_empty())) {
                out["resourceNames"] = n.clone();
            }
            out
        })
        .collect();
    review["status"] = json!({
        "resourceRules": resource_rules,
        "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": authz::DISCOVERY_URLS}],
        "incomplete": incomplete,
    });
    if review.get("metadata").is_none() {
        review["metadata"] = json!({});
    }
    Ok(json_response(201, &review))
}

/// Sets the value at a JSON pointer, making the objects on the way.
fn set_at(doc: &mut Value, pointer: &str, v: Value) {
    let mut cur = doc;
    let mut segs = pointer.split('/').skip(1).peekable();
    while let Some(seg) = segs.next() {
        let key = seg.replace("~1", "/").replace("~0", "~");
        if !cur.is_object() {
            *cur = json!({});
        }
        let o = cur.as_object_mut().expect("just made an object");
        if segs.peek().is_none() {
            o.insert(key, v);
            return;
        }
        cur = o.entry(key).or_insert_with(|| json!({}));
    }
}
