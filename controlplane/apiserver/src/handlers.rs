//! REST routing and verbs: parses kube's URL layout, authorizes, and runs
//! get/list/watch/create/update/patch/delete/deletecollection plus the
//! status, scale and binding subresources over [`crate::storage`], and
//! hands `pods/log` to [`crate::pod_logs`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, Response};
use axum::response::IntoResponse as _;
use serde_json::{Value, json};

use crate::authn::Identity;
use crate::authz::{self, Attributes};
use crate::clusterip::{self, NodePorts, allocate_cluster_ip};
use crate::http::{Query, decode_body, json_response, media_type, read_body};
use crate::kinds::Priority;
use crate::namespaces::delete_namespace;
use crate::patch::{self, Lists, PatchType};
use crate::prometheus::RequestInfo;
use crate::registry::{Resource, Served};
use crate::selectors::{FieldSelector, Filter, LabelSelector};
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::storage::{self, Deleted, meta_str};
use crate::subresources::{
    bind, scale_of, self_subject_access_review, self_subject_review, self_subject_rules_review,
    set_replicas, token_request,
};
use crate::watch::{self, WatchParams};
use crate::{admission, crd, discovery, openapi, ssa, tables};

/// Query options of a write.
#[derive(Debug, Clone, Copy)]
struct WriteOpts<'a> {
    /// `dryRun=All`: admit and answer, store nothing.
    dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are a 400.
    strict: bool,
    /// `fieldManager`, required by server-side apply.
    field_manager: Option<&'a str>,
    /// `force=true`: server-side apply takes over conflicting fields.
    force: bool,
}

/// A parsed resource URL.
#[derive(Debug, Clone)]
struct Path {
    resource: &'static Resource,
    namespace: String,
    name: Option<String>,
    sub: Option<String>,
    watch: bool,
    /// What follows `/proxy` in a proxy URL.
    proxy_path: String,
}

pub async fn handle(state: Arc<State>, id: Identity, req: Request<Body>) -> Response<Body> {
    let started = std::time::Instant::now();
    let mutating = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let _inflight = state.metrics.start(mutating);
    let mut info = RequestInfo {
        verb: req.method().as_str().to_string(),
        ..RequestInfo::default()
    };
    let protobuf = prefers_protobuf(&req);
    let resp = match dispatch(state.clone(), &id, req, &mut info).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    let resp = if protobuf {
        as_protobuf(resp).await
    } else {
        resp
    };
    state
        .metrics
        .observe(&info, resp.status().as_u16(), started.elapsed());
    if info.verb == "WATCH" && resp.status().is_success() {
        return state.metrics.long_running(&info, resp);
    }
    resp
}

/// kube's verb label for `apiserver_request_total`.
fn verb_label(verb: &str, apply: bool) -> &'static str {
    match verb {
        "get" => "GET",
        "list" => "LIST",
        "watch" => "WATCH",
        "create" => "POST",
        "update" => "PUT",
        "patch" if apply => "APPLY",
        "patch" => "PATCH",
        "delete" | "deletecollection" => "DELETE",
        _ => "UNKNOWN",
    }
}

/// Whether the client asks for protobuf first, as client-go's typed clients
/// do (`application/vnd.kubernetes.protobuf, application/json`), on a
/// request whose answer is one object. Watches and logs stream, and a Table
/// or partial-metadata view is asked for as JSON.
fn prefers_protobuf(req: &Request<Body>) -> bool {
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let first = accept.split(',').next().unwrap_or_default().trim();
    let mut params = first.split(';').map(str::trim);
    if params.next() != Some(skiff_kube_protobuf::MEDIA_TYPE) || params.next().is_some() {
        return false;
    }
    let watch = Query::parse(req.uri().query()).flag("watch")
        || req.uri().path().split('/').any(|s| s == "watch");
    !watch
}

/// Re-encodes a JSON answer as protobuf. An answer the definitions cannot
/// carry stays JSON, which the client accepts as its second choice.
async fn as_protobuf(resp: Response<Body>) -> Response<Body> {
    use http_body_util::BodyExt as _;
    let json = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes() == b"application/json");
    if !json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let Ok(collected) = body.collect().await else {
        return ApiError::internal("reading the response").into_response();
    };
    let bytes = collected.to_bytes();
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| skiff_kube_protobuf::encode(&v).ok());
    match encoded {
        Some(pb) => {
            parts.headers.insert(
                "content-type",
                hyper::header::HeaderValue::from_static(skiff_kube_protobuf::MEDIA_TYPE),
            );
            parts.headers.remove("content-length");
            Response::from_parts(parts, Body::from(pb))
        }
        None => Response::from_parts(parts, Body::from(bytes)),
    }
}

/// A request's steps: server metadata (version, health, OpenAPI,
/// discovery), the authorizer's reviews, then a resource verb, authorized
/// first.
async fn dispatch(
    state: Arc<State>,
    id: &Identity,
    req: Request<Body>,
    info: &mut RequestInfo,
) -> ApiResult<Response<Body>> {
    let path = req.uri().path().trim_end_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segs == ["metrics"] && req.method() == Method::GET {
        authz::authorize_url(&state, id, "get", "/metrics").await?;
        let text = state.metrics.encode().map_err(ApiError::internal)?;
        return Ok(Response::builder()
            .status(200)
            .header(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
            .body(Body::from(text))
            .expect("static response parts"));
    }
    if let [endpoint @ ("healthz" | "livez" | "readyz"), rest @ ..] = segs.as_slice()
        && rest.len() <= 1
        && req.method() == Method::GET
    {
        let query = Query::parse(req.uri().query());
        return crate::health::serve(&state, endpoint, rest.first().copied(), &query)
            .await
            .ok_or_else(ApiError::not_found_path);
    }
    let served = state.crds.served();
    if let Some(resp) = metadata(&served, &segs, &req) {
        return resp;
    }
    if let Some(review) = review_of(&segs, &req) {
        return review_request(&state, id, review, req).await;
    }
    let p = parse_path(&served, &segs).ok_or_else(ApiError::not_found_path)?;
    let query = Query::parse(req.uri().query());
    let verb = verb_of(req.method(), &p, &query)?;
    *info = RequestInfo {
        verb: verb_label(
            verb,
            content_type(&req).starts_with("application/apply-patch"),
        )
        .into(),
        group: p.resource.group.into(),
        resource: p.resource.plural.into(),
        subresource: p.sub.clone().unwrap_or_default(),
    };
    authz::authorize(
        &state,
        id,
        &Attributes {
            verb,
            group: p.resource.group,
            resource: p.resource.plural,
            subresource: p.sub.as_deref().unwrap_or(""),
            namespace: &p.namespace,
            name: p.name.as_deref().unwrap_or(""),
            field_selector: query.get("fieldSelector").unwrap_or(""),
        },
    )
    .await?;
    let crd_write = crd::is_crd(p.resource)
        && !matches!(verb, "get" | "list" | "watch")
        && query.get("dryRun").is_none();
    let resp = resource_verb(state.clone(), id, req, p, &query, verb).await;
    if crd_write {
        // Served resources follow the stored CRDs; rebuilt even after a
        // failed write, which may have changed some of them (a collection).
        // The write stands either way; the next CRD write retries.
        if let Err(e) = state.crds.reload(&state.store).await {
            tracing::error!(error = %e.message, "serving the CustomResourceDefinitions");
        }
    }
    resp
}

/// Answers that describe the server rather than objects: `/version`, the
/// health checks, OpenAPI and discovery. `None`: not one of them.
fn metadata(
    served: &Served,
    segs: &[&str],
    req: &Request<Body>,
) -> Option<ApiResult<Response<Body>>> {
    let get = req.method() == Method::GET;
    let found = |v: Option<Value>| {
        Some(
            v.map(|v| json_response(200, &v))
                .ok_or_else(ApiError::not_found_path),
        )
    };
    match segs {
        ["version"] => Some(Ok(json_response(200, &discovery::version()))),
        ["openapi", "v2"] if get => Some(Ok(Response::builder()
            .status(200)
            .header(
                "content-type",
                "application/com.github.proto-openapi.spec.v2.v1.0+protobuf",
            )
            .body(Body::empty())
            .expect("static response parts"))),
        ["openapi", "v3"] if get => Some(Ok(json_response(200, &openapi::v3_root(served)))),
        ["openapi", "v3", "api", v] if get => found(openapi::v3_group_version(served, "", v)),
        ["openapi", "v3", "apis", g, v] if get => found(openapi::v3_group_version(served, g, v)),
        ["api" | "apis"] if get => {
            let accept = req.headers().get("accept").and_then(|v| v.to_str().ok());
            let core = segs[0] == "api";
            Some(Ok(match discovery::aggregated_version(accept) {
                Some(v) => Response::builder()
                    .status(200)
                    .header(
                        "content-type",
                        format!(
                            "application/json;g=apidiscovery.k8s.io;v={v};as=APIGroupDiscoveryList"
                        ),
                    )
                    .body(Body::from(
                        discovery::aggregated(served, core, v).to_string(),
                    ))
                    .expect("static response parts"),
                None if core => json_response(200, &discovery::api_versions()),
                None => json_response(200, &discovery::api_groups(served)),
            }))
        }
        ["api", v] if get => found(discovery::resource_list(served, "", v)),
        ["apis", g] if get => found(discovery::api_group(served, g)),
        ["apis", g, v] if get => found(discovery::resource_list(served, g, v)),
        _ => None,
    }
}

/// The reviews ([`discovery::REVIEWS`]), answered rather than stored.
#[derive(Debug, Clone, Copy)]
enum Review {
    Access,
    Rules,
    Subject,
}

fn review_of(segs: &[&str], req: &Request<Body>) -> Option<Review> {
    let ["apis", group, "v1", plural] = segs else {
        return None;
    };
    if req.method() != Method::POST {
        return None;
    }
    match (*group, *plural) {
        (discovery::AUTHZ_GROUP, "selfsubjectaccessreviews") => Some(Review::Access),
        (discovery::AUTHZ_GROUP, "selfsubjectrulesreviews") => Some(Review::Rules),
        (discovery::AUTHN_GROUP, "selfsubjectreviews") => Some(Review::Subject),
        _ => None,
    }
}

async fn review_request(
    state: &State,
    id: &Identity,
    review: Review,
    req: Request<Body>,
) -> ApiResult<Response<Body>> {
    let ct = content_type(&req);
    let body = decode_body(&ct, &read_body(req.into_body()).await?)?;
    match review {
        Review::Access => self_subject_access_review(state, id, body).await,
        Review::Rules => self_subject_rules_review(state, id, body).await,
        Review::Subject => Ok(self_subject_review(id, body)),
    }
}

fn content_type(req: &Request<Body>) -> String {
    media_type(
        req.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
    )
}

/// Runs an authorized verb on a resource (or one of its subresources).
async fn resource_verb(
    state: Arc<State>,
    id: &Identity,
    req: Request<Body>,
    p: Path,
    query: &Query,
    verb: &str,
) -> ApiResult<Response<Body>> {
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let ct = content_type(&req);
    let table = tables::wants_table(accept.as_deref())
        .then(|| query.get("includeObject").map(str::to_string));
    let dry_run = query.get("dryRun").is_some_and(|d| d == "All");
    let opts = WriteOpts {
        dry_run,
        strict: query.get("fieldValidation") == Some("Strict"),
        field_manager: query.get("fieldManager").filter(|m| !m.is_empty()),
        force: query.flag("force"),
    };
    let r = p.resource;
    let ns = p.namespace.clone();
    if !r.stored {
        let name = p.name.as_deref();
        return crate::resource_metrics::serve(&state, r, verb, &ns, name, query, &table).await;
    }
    let name = p.name.clone().unwrap_or_default();
    match (verb, p.sub.as_deref()) {
        (_, Some("portforward")) => crate::connect::portforward(&state, &ns, &name, req).await,
        (_, Some("proxy")) if r.plural == "pods" => {
            crate::connect::pod_proxy(&state, &ns, &name, &p.proxy_path, req).await
        }
        (_, Some("proxy")) => {
            crate::connect::service_proxy(&state, &ns, &name, &p.proxy_path, req).await
        }
        ("get", None) => {
            let obj = storage::get(&state.store, r, &ns, &name).await?;
            Ok(respond_object(r, obj, &table, 200))
        }
        ("get", Some("status")) => {
            let obj = storage::get(&state.store, r, &ns, &name).await?;
            Ok(json_response(200, &obj))
        }
        ("get", Some("scale")) => {
            let obj = storage::get(&state.store, r, &ns, &name).await?;
            Ok(json_response(200, &scale_of(r, &obj)))
        }
        ("get", Some("log")) => crate::pod_logs::get(&state, &ns, &name, query).await,
        ("list", _) => list(&state, r, &ns, query, &table).await,
        ("watch", _) => {
            let params = watch_params(r, query, ns, p.name.as_deref(), table)?;
            Ok(watch::watch(state, r, params).await)
        }
        ("create", Some("token")) => {
            let body = decode_body(&ct, &read_body(req.into_body()).await?)?;
            token_request(&state, r, &ns, &name, body).await
        }
        ("create", Some("binding")) => {
            let body = decode_body(&ct, &read_body(req.into_body()).await?)?;
            bind(&state, r, &ns, &name, &body).await
        }
        ("create", _) => {
            let body = decode_body(&ct, &read_body(req.into_body()).await?)?;
            create(&state, id, r, &ns, body, opts).await
        }
        // Subresources that are not views of the object (binding, token,
        // log) have their own verbs above; a PUT or PATCH of them must not
        // fall through to a write of the whole object. Namespace finalize
        // is an update only, as in kube.
        ("update", Some(s)) if !matches!(s, "status" | "scale" | "finalize") => {
            Err(ApiError::method_not_allowed())
        }
        ("patch", Some(s)) if !matches!(s, "status" | "scale") => {
            Err(ApiError::method_not_allowed())
        }
        ("update", sub) => {
            let body = decode_body(&ct, &read_body(req.into_body()).await?)?;
            update(&state, id, r, &ns, &name, sub, body, opts).await
        }
        ("patch", sub) => {
            let kind = PatchType::from_media_type(&ct)?;
            let body = read_body(req.into_body()).await?;
            patch_object(&state, id, r, &ns, &name, sub, kind, &body, opts).await
        }
        ("delete", None) => {
            let opts = delete_options(&ct, &read_body(req.into_body()).await?)?;
            delete(&state, id, r, &ns, &name, query, &opts, dry_run).await
        }
        ("deletecollection", None) => delete_collection(&state, r, &ns, query, dry_run).await,
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// A watch's parameters from its query, checked as kube checks them.
fn watch_params(
    r: &Resource,
    query: &Query,
    namespace: String,
    name: Option<&str>,
    table: Option<Option<String>>,
) -> ApiResult<WatchParams> {
    let resource_version = match query.get("resourceVersion") {
        None | Some("") => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let send_initial_events = query
        .get("sendInitialEvents")
        .map(|_| query.flag("sendInitialEvents"));
    let start = watch::Start::from_query(
        resource_version,
        query.get("resourceVersionMatch"),
        send_initial_events,
        bookmarks,
    )
    .map_err(|(field, why)| ApiError::new(422, "Invalid", format!("{field}: Forbidden: {why}")))?;
    Ok(WatchParams {
        namespace,
        filter: filter_of(r, query, name)?,
        start,
        bookmarks,
        timeout: query
            .get("timeoutSeconds")
            .and_then(|t| t.parse().ok())
            .map(Duration::from_secs),
        table,
    })
}

/// DeleteOptions, as JSON or (typed clients, `helm uninstall`) protobuf;
/// none is `{}`.
fn delete_options(ct: &str, body: &[u8]) -> ApiResult<Value> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    decode_body(ct, body)
        .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {}", e.message)))
}

/// Deletes what a list with the request's selectors returns, but what may
/// not be deleted one by one.
async fn delete_collection(
    state: &State,
    r: &'static Resource,
    ns: &str,
    query: &Query,
    dry_run: bool,
) -> ApiResult<Response<Body>> {
    let filter = filter_of(r, query, None)?;
    let page = storage::list(&state.store, r, ns, &filter, 0, None).await?;
    let mut gone = Vec::new();
    for obj in page.items {
        let (ons, oname) = (
            meta_str(&obj, "namespace").unwrap_or("").to_string(),
            meta_str(&obj, "name").unwrap_or("").to_string(),
        );
        if (r.deletable)(&oname).is_err() {
            continue;
        }
        let pre = storage::Preconditions::default();
        match storage::delete(&state.store, r, &ons, &oname, None, &pre, dry_run).await {
            Ok(Deleted::Now(o) | Deleted::Pending(o)) if crd::is_crd(r) && !dry_run => {
                crd::delete_objects(&state.store, &o).await?;
                gone.push(o);
            }
            Ok(Deleted::Now(o) | Deleted::Pending(o)) => gone.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json_response(
        200,
        &list_object(r, gone, page.revision, None, None),
    ))
}

fn parse_path(served: &Served, segs: &[&str]) -> Option<Path> {
    let (group, version, rest) = match segs {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (watch, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let (namespace, plural, rest) = match rest {
        ["namespaces", ns, plural, rest @ ..] if !["status", "finalize"].contains(plural) => {
            (ns.to_string(), *plural, rest)
        }
        [plural, rest @ ..] => (String::new(), *plural, rest),
        [] => return None,
    };
    let resource = served.find(group, version, plural)?;
    if (resource.namespaced && namespace.is_empty() && !rest.is_empty())
        || (!resource.namespaced && !namespace.is_empty())
    {
        // Cluster-scoped under a namespace, or a namespaced object without one.
        return None;
    }
    let mut proxy_path = String::new();
    let (name, sub) = match rest {
        [] => (None, None),
        [name] => (Some(name.to_string()), None),
        [name, sub] if resource.has_sub(sub) => (Some(name.to_string()), Some(sub.to_string())),
        [name, "proxy", path @ ..] if resource.has_sub("proxy") => {
            proxy_path = path.join("/");
            (Some(name.to_string()), Some("proxy".to_string()))
        }
        _ => return None,
    };
    Some(Path {
        resource,
        namespace,
        name,
        sub,
        watch,
        proxy_path,
    })
}

fn verb_of(m: &Method, p: &Path, q: &Query) -> ApiResult<&'static str> {
    let named = p.name.is_some();
    if named && matches!(p.sub.as_deref(), Some("portforward" | "proxy")) {
        // Connect subresources: the verb is the method's, as in kube.
        return Ok(match *m {
            Method::GET | Method::HEAD | Method::OPTIONS => "get",
            Method::POST => "create",
            Method::PUT => "update",
            Method::PATCH => "patch",
            Method::DELETE => "delete",
            _ => return Err(ApiError::method_not_allowed()),
        });
    }
    Ok(match *m {
        Method::GET if p.watch || q.flag("watch") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST if named && matches!(p.sub.as_deref(), Some("binding" | "token")) => "create",
        Method::POST if !named => "create",
        Method::PUT if named => "update",
        Method::PATCH if named => "patch",
        Method::DELETE if named && p.sub.is_none() => "delete",
        Method::DELETE if !named => "deletecollection",
        _ => return Err(ApiError::method_not_allowed()),
    })
}

fn filter_of(r: &Resource, q: &Query, name: Option<&str>) -> ApiResult<Filter> {
    let mut fields = q.get("fieldSelector").unwrap_or("").to_string();
    if let Some(c) = r.custom {
        let parsed = FieldSelector::parse(&fields)?;
        if let Some(f) = parsed.fields().find(|f| !c.selectable(f)) {
            return Err(ApiError::bad_request(format!(
                "field label not supported: {f}"
            )));
        }
    }
    if let Some(n) = name {
        // A watch on one object is a watch with a name field selector.
        fields = if fields.is_empty() {
            format!("metadata.name={n}")
        } else {
            format!("{fields},metadata.name={n}")
        };
    }
    Ok(Filter {
        labels: LabelSelector::parse(q.get("labelSelector").unwrap_or(""))?,
        fields: FieldSelector::parse(&fields)?,
    })
}

fn respond_object(
    r: &Resource,
    obj: Value,
    table: &Option<Option<String>>,
    code: u16,
) -> Response<Body> {
    match table {
        Some(include) => {
            let rv = meta_str(&obj, "resourceVersion").unwrap_or("").to_string();
            json_response(
                code,
                &tables::table(
                    r,
                    &[obj],
                    include.as_deref(),
                    json!({"resourceVersion": rv}),
                ),
            )
        }
        None => json_response(code, &obj),
    }
}

fn list_object(
    r: &Resource,
    items: Vec<Value>,
    rev: u64,
    cont: Option<String>,
    remaining: Option<u64>,
) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    if let Some(n) = remaining {
        meta["remainingItemCount"] = json!(n);
    }
    json!({
        "kind": format!("{}List", r.kind),
        "apiVersion": r.api_version(),
        "metadata": meta,
        "items": items,
    })
}

async fn list(
    state: &State,
    r: &'static Resource,
    ns: &str,
    q: &Query,
    table: &Option<Option<String>>,
) -> ApiResult<Response<Body>> {
    let filter = filter_of(r, q, None)?;
    let limit = match q.get("limit") {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?
            .max(0) as usize,
    };
    // resourceVersion on a list: "Exact" reads that revision; otherwise the
    // answer must be at least that new, and the current state always is.
    let rv = match q.get("resourceVersion") {
        None | Some("") => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))?,
        ),
    };
    let current = state.store.current_revision();
    if let Some(rv) = rv.filter(|rv| *rv > current) {
        return Err(ApiError::timeout(format!(
            "Too large resource version: {rv}, current: {current}"
        )));
    }
    let at = rv.filter(|rv| *rv > 0 && q.get("resourceVersionMatch") == Some("Exact"));
    if table.is_none() && filter.is_empty() {
        // The common case: the stored JSON goes out as it is.
        let page = storage::list_raw(&state.store, r, ns, limit, q.get("continue"), at).await?;
        return Ok(raw_list_response(r, page));
    }
    let page = storage::list_at(&state.store, r, ns, &filter, limit, q.get("continue"), at).await?;
    match table {
        Some(include) => {
            let mut meta = json!({"resourceVersion": page.revision.to_string()});
            if let Some(c) = &page.continue_token {
                meta["continue"] = json!(c);
            }
            Ok(json_response(
                200,
                &tables::table(r, &page.items, include.as_deref(), meta),
            ))
        }
        None => Ok(json_response(
            200,
            &list_object(
                r,
                page.items,
                page.revision,
                page.continue_token,
                page.remaining,
            ),
        )),
    }
}

/// [`list_object`] of raw items, written without building a [`Value`].
fn raw_list_response(r: &Resource, page: storage::Page<Vec<u8>>) -> Response<Body> {
    let empty = list_object(
        r,
        Vec::new(),
        page.revision,
        page.continue_token,
        page.remaining,
    );
    let head = serde_json::to_vec(&empty).unwrap_or_default();
    // Put the items into the empty array.
    const ITEMS: &[u8] = b"\"items\":[";
    let Some(close) = head
        .windows(ITEMS.len())
        .position(|w| w == ITEMS)
        .map(|at| at + ITEMS.len())
    else {
        return json_response(500, &empty);
    };
    let size = head.len() + page.items.iter().map(|i| i.len() + 1).sum::<usize>();
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(&head[..close]);
    for (n, item) in page.items.iter().enumerate() {
        if n > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(&head[close..]);
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("static response parts")
}

fn random_suffix() -> String {
    // kube's generateName suffix alphabet avoids vowels and look-alikes.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 5];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness");
    b.iter()
        .map(|x| ALPHABET[*x as usize % ALPHABET.len()] as char)
        .collect()
}

async fn create(
    state: &State,
    id: &Identity,
    r: &'static Resource,
    ns: &str,
    mut body: Value,
    opts: WriteOpts<'_>,
) -> ApiResult<Response<Body>> {
    admission::check_type(r, &mut body)?;
    if r.namespaced {
        match meta_str(&body, "namespace") {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => body["metadata"]["namespace"] = json!(ns),
        }
    }
    if meta_str(&body, "name").is_none_or(str::is_empty)
        && let Some(g) = meta_str(&body, "generateName").map(str::to_string)
    {
        body["metadata"]["name"] = json!(format!("{g}{}", random_suffix()));
    }
    let requested_ip = body
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .is_some_and(|ip| !ip.is_empty());
    Priority::load(&state.store, r)
        .await?
        .admit(r, None, &mut body)?;
    let mut obj = admission::admit(r, ns, body, None, opts.strict)?;
    admission::node_restriction(
        id,
        r,
        ns,
        meta_str(&obj, "name").unwrap_or(""),
        None,
        Some(&obj),
    )?;
    authz::check_escalation(state, id, r, ns, "", None, &obj).await?;
    allocate_service(state, r, &mut obj, requested_ip).await?;
    let lease = lease_for(state, r, opts.dry_run).await?;
    let created = storage::create_with_lease(state, r, ns, obj, opts.dry_run, lease).await?;
    Ok(json_response(201, &created))
}

/// The store lease a new object is attached to: events expire, nothing
/// else does.
async fn lease_for(state: &State, r: &Resource, dry_run: bool) -> ApiResult<skiff_store::LeaseId> {
    Ok(if r.kind == "Event" && !dry_run {
        state.event_lease().await?
    } else {
        0
    })
}

/// Keeps the half of an object a request may not change: the status for a
/// main-resource write, everything but the status for a status write, and
/// everything but `spec.finalizers` for a namespace's finalize.
fn scope_change(r: &Resource, sub: Option<&str>, current: &Value, mut new: Value) -> Value {
    match sub {
        Some("finalize") => {
            let mut out = current.clone();
            let finalizers = new
                .pointer_mut("/spec/finalizers")
                .map(Value::take)
                .unwrap_or_else(|| json!([]));
            if !out.get("spec").is_some_and(Value::is_object) {
                out["spec"] = json!({});
            }
            out["spec"]["finalizers"] = finalizers;
            if let Some(rv) = new.pointer("/metadata/resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            out
        }
        Some("status") => {
            let mut out = current.clone();
            match new.get_mut("status").map(Value::take) {
                Some(s) => out["status"] = s,
                None => {
                    if let Some(o) = out.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            if let Some(rv) = new.pointer("/metadata/resourceVersion") {
                out["metadata"]["resourceVersion"] = rv.clone();
            }
            out
        }
        _ if r.has_sub("status") => {
            match current.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(o) = new.as_object_mut() {
                        o.remove("status");
                    }
                }
            }
            new
        }
        _ => new,
    }
}

#[allow(clippy::too_many_arguments)]
async fn update(
    state: &State,
    id: &Identity,
    r: &'static Resource,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    body: Value,
    opts: WriteOpts<'_>,
) -> ApiResult<Response<Body>> {
    if sub == Some("scale") {
        let replicas = body.pointer("/spec/replicas").and_then(Value::as_i64);
        let rv = storage::client_rv(&body)?;
        return set_replicas(state, r, ns, name, replicas, rv, opts.dry_run).await;
    }
    if let Some(n) = meta_str(&body, "namespace")
        && r.namespaced
        && !n.is_empty()
        && n != ns
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let priority = Priority::load(&state.store, r).await?;
    let node_ports = node_ports_for(state, r, sub).await?;
    let updated = checked_update(state, id, r, ns, name, opts.dry_run, |current| {
        let mut new = body.clone();
        admission::check_type(r, &mut new)?;
        let mut new = scope_change(r, sub, &current, new);
        priority.admit(r, Some(&current), &mut new)?;
        let mut new = admission::admit(r, ns, new, Some(&current), opts.strict)?;
        admission::node_restriction(id, r, ns, name, Some(&current), Some(&new))?;
        if let Some(p) = &node_ports {
            p.assign(r, &mut new, Some(&current))?;
        }
        Ok(new)
    })
    .await?;
    Ok(json_response(200, &updated))
}

#[allow(clippy::too_many_arguments)]
async fn patch_object(
    state: &State,
    id: &Identity,
    r: &'static Resource,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    kind: PatchType,
    body: &[u8],
    opts: WriteOpts<'_>,
) -> ApiResult<Response<Body>> {
    if kind == PatchType::Strategic && r.custom.is_some() {
        // kube: custom resources have no Go type to carry patch strategies.
        return Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
        ));
    }
    if kind == PatchType::Apply && sub.is_none() {
        return server_side_apply(state, id, r, ns, name, body, opts).await;
    }
    if sub == Some("scale") {
        let current = storage::get(&state.store, r, ns, name).await?;
        let scale = patch::apply(kind, &scale_of(r, &current), body)?;
        let replicas = scale.pointer("/spec/replicas").and_then(Value::as_i64);
        return set_replicas(state, r, ns, name, replicas, None, opts.dry_run).await;
    }
    let priority = Priority::load(&state.store, r).await?;
    let node_ports = node_ports_for(state, r, sub).await?;
    let updated = checked_update(state, id, r, ns, name, opts.dry_run, |current| {
        let new = patch::apply(kind, &current, body)?;
        let mut new = scope_change(r, sub, &current, new);
        priority.admit(r, Some(&current), &mut new)?;
        let mut new = admission::admit(r, ns, new, Some(&current), opts.strict)?;
        admission::node_restriction(id, r, ns, name, Some(&current), Some(&new))?;
        if let Some(p) = &node_ports {
            p.assign(r, &mut new, Some(&current))?;
        }
        Ok(new)
    })
    .await?;
    Ok(json_response(200, &updated))
}

/// [`storage::update`] for writes the authorizer must see the result of
/// (RBAC objects, see [`authz::check_escalation`]): the change is computed
/// once without storing to learn the object as it would be stored, checked,
/// then applied; if what the stored object grants moved in between, the
/// write is a conflict rather than an unchecked grant.
#[allow(clippy::too_many_arguments)]
async fn checked_update<F>(
    state: &State,
    id: &Identity,
    r: &'static Resource,
    ns: &str,
    name: &str,
    dry_run: bool,
    mut change: F,
) -> ApiResult<Value>
where
    F: FnMut(Value) -> ApiResult<Value>,
{
    if !authz::guards_escalation(r) {
        return storage::update(&state.store, r, ns, name, dry_run, change).await;
    }
    let mut seen = None;
    storage::update(&state.store, r, ns, name, true, |current| {
        let new = change(current.clone())?;
        seen = Some((authz::grants(&current), new.clone(), current));
        Ok(new)
    })
    .await?;
    let (old_grants, checked, old) =
        seen.ok_or_else(|| ApiError::internal("update ran no change"))?;
    authz::check_escalation(state, id, r, ns, name, Some(&old), &checked).await?;
    let checked = authz::grants(&checked);
    storage::update(&state.store, r, ns, name, dry_run, |current| {
        let new = change(current.clone())?;
        if authz::grants(&current) != old_grants || authz::grants(&new) != checked {
            return Err(ApiError::conflict(storage::target(r, name)));
        }
        Ok(new)
    })
    .await
}

/// `kubectl apply --server-side`: creates the object if it is missing,
/// otherwise merges the applied configuration as [`crate::ssa`] describes.
async fn server_side_apply(
    state: &State,
    id: &Identity,
    r: &'static Resource,
    ns: &str,
    name: &str,
    body: &[u8],
    opts: WriteOpts<'_>,
) -> ApiResult<Response<Body>> {
    let manager = opts.field_manager.ok_or_else(|| {
        ApiError::bad_request("PATCH requests with apply content type must specify fieldManager")
    })?;
    let mut applied = decode_body("application/yaml", body)?;
    admission::check_type(r, &mut applied)?;
    if meta_str(&applied, "name") != Some(name) {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            meta_str(&applied, "name").unwrap_or_default()
        )));
    }
    if r.namespaced {
        applied["metadata"]["namespace"] = json!(ns);
    }
    let now = storage::now_rfc3339();
    let priority = Priority::load(&state.store, r).await?;
    match storage::get(&state.store, r, ns, name).await {
        Err(e) if e.code == 404 => {
            let mut obj = ssa::apply(None, &applied, manager, opts.force, &now, Lists::of(r))?;
            priority.admit(r, None, &mut obj)?;
            let requested_ip = applied
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .is_some_and(|ip| !ip.is_empty());
            let mut obj = admission::admit(r, ns, obj, None, opts.strict)?;
            admission::node_restriction(id, r, ns, name, None, Some(&obj))?;
            authz::check_escalation(state, id, r, ns, name, None, &obj).await?;
            allocate_service(state, r, &mut obj, requested_ip).await?;
            let lease = lease_for(state, r, opts.dry_run).await?;
            let created =
                storage::create_with_lease(state, r, ns, obj, opts.dry_run, lease).await?;
            Ok(json_response(201, &created))
        }
        Err(e) => Err(e),
        Ok(_) => {
            let node_ports = node_ports_for(state, r, None).await?;
            let updated = checked_update(state, id, r, ns, name, opts.dry_run, |current| {
                let mut new = ssa::apply(
                    Some(&current),
                    &applied,
                    manager,
                    opts.force,
                    &now,
                    Lists::of(r),
                )?;
                // The applier does not hold the object's version.
                new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
                let mut new = scope_change(r, None, &current, new);
                priority.admit(r, Some(&current), &mut new)?;
                let mut new = admission::admit(r, ns, new, Some(&current), opts.strict)?;
                admission::node_restriction(id, r, ns, name, Some(&current), Some(&new))?;
                if let Some(p) = &node_ports {
                    p.assign(r, &mut new, Some(&current))?;
                }
                Ok(new)
            })
            .await?;
            Ok(json_response(200, &updated))
        }
    }
}

/// A new Service's ClusterIP and node ports, unique among Services (every
/// create path: POST and server-side apply).
async fn allocate_service(
    state: &State,
    r: &'static Resource,
    obj: &mut Value,
    requested_ip: bool,
) -> ApiResult<()> {
    if (r.group, r.kind) != ("", "Service") {
        return Ok(());
    }
    let services = clusterip::services(state, r).await?;
    allocate_cluster_ip(r, &services, obj, requested_ip)?;
    NodePorts::of(&services).assign(r, obj, None)
}

/// The node ports Services hold, for a write of a Service's main resource.
async fn node_ports_for(
    state: &State,
    r: &'static Resource,
    sub: Option<&str>,
) -> ApiResult<Option<NodePorts>> {
    if (r.group, r.kind) != ("", "Service") || sub.is_some() {
        return Ok(None);
    }
    NodePorts::load(state, r).await.map(Some)
}

#[allow(clippy::too_many_arguments)]
async fn delete(
    state: &State,
    id: &Identity,
    r: &'static Resource,
    ns: &str,
    name: &str,
    q: &Query,
    opts: &Value,
    dry_run: bool,
) -> ApiResult<Response<Body>> {
    let grace = q
        .get("gracePeriodSeconds")
        .and_then(|g| g.parse().ok())
        .or_else(|| opts.get("gracePeriodSeconds").and_then(Value::as_i64));
    let mut pre = storage::Preconditions {
        resource_version: opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(|s| {
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request("invalid precondition resourceVersion"))
            })
            .transpose()?,
        uid: opts
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    if id.node_name().is_some() {
        // NodeRestriction sees the object it deletes, and the delete is
        // pinned to that object (not one recreated in between).
        let current = storage::get(&state.store, r, ns, name).await?;
        admission::node_restriction(id, r, ns, name, Some(&current), None)?;
        let uid = meta_str(&current, "uid").unwrap_or("").to_string();
        if pre.uid.as_ref().is_some_and(|u| *u != uid) {
            return Err(ApiError::conflict(storage::target(r, name)));
        }
        pre.uid = Some(uid);
    }
    if let Err(why) = (r.deletable)(name) {
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: {why}",
            storage::target(r, name).resource()
        )));
    }
    if r.kind == "Namespace" && r.group.is_empty() {
        return delete_namespace(state, r, name, dry_run).await;
    }
    // Foreground and Orphan propagation leave a finalizer that the
    // controller manager's garbage collector acts on and then removes.
    let policy = q
        .get("propagationPolicy")
        .or_else(|| opts.get("propagationPolicy").and_then(Value::as_str))
        .or_else(|| (opts.get("orphanDependents") == Some(&json!(true))).then_some("Orphan"));
    let finalizer = match policy {
        None | Some("Background") => None,
        Some("Foreground") => Some("foregroundDeletion"),
        Some("Orphan") => Some("orphan"),
        Some(p) => {
            return Err(ApiError::bad_request(format!(
                "invalid propagationPolicy {p:?}: must be Orphan, Foreground or Background"
            )));
        }
    };
    if let Some(f) = finalizer
        && !dry_run
    {
        storage::update(&state.store, r, ns, name, false, |mut o| {
            if meta_str(&o, "deletionTimestamp").is_none() {
                let list = o["metadata"]
                    .as_object_mut()
                    .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?
                    .entry("finalizers")
                    .or_insert_with(|| json!([]));
                if let Some(l) = list.as_array_mut()
                    && !l.iter().any(|x| x == f)
                {
                    l.push(json!(f));
                }
            }
            Ok(o)
        })
        .await?;
    }
    let deleted = storage::delete(&state.store, r, ns, name, grace, &pre, dry_run).await?;
    if let Deleted::Now(crd) | Deleted::Pending(crd) = &deleted
        && crd::is_crd(r)
        && !dry_run
    {
        // A CRD being deleted is no longer served, whatever finalizers
        // keep it: its objects go now.
        crd::delete_objects(&state.store, crd).await?;
    }
    match deleted {
        Deleted::Pending(obj) => Ok(json_response(202, &obj)),
        Deleted::Now(obj) if r.kind == "Pod" => Ok(json_response(200, &obj)),
        Deleted::Now(obj) => Ok(json_response(
            200,
            &json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": r.group, "kind": r.plural, "uid": obj.pointer("/metadata/uid")},
            }),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &str) -> Option<Path> {
        let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        parse_path(&Served::default(), &segs)
    }

    #[test]
    fn url_layout() {
        let p = parse("/api/v1/namespaces/default/pods/web/status").unwrap();
        assert_eq!(
            (
                p.resource.plural,
                p.namespace.as_str(),
                p.name.as_deref(),
                p.sub.as_deref()
            ),
            ("pods", "default", Some("web"), Some("status"))
        );
        let p = parse("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (p.resource.plural, p.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let p = parse("/api/v1/namespaces/x/status").unwrap();
        assert_eq!(
            (p.resource.plural, p.name.as_deref(), p.sub.as_deref()),
            ("namespaces", Some("x"), Some("status"))
        );
        let p = parse("/apis/apps/v1/watch/namespaces/a/deployments").unwrap();
        assert!(p.watch && p.name.is_none());
        assert!(parse("/api/v1/pods").unwrap().namespace.is_empty());
        assert!(parse("/api/v1/pods/x").is_none());
        assert!(parse("/api/v1/namespaces/a/nodes/n").is_none());
        assert!(parse("/api/v1/namespaces/a/pods/p/bogus").is_none());
        assert!(parse("/apis/apps/v1/widgets").is_none());
    }
}
