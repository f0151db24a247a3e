//! Generic object storage over skiff-store: objects are JSON under
//! `/registry/<group>/<plural>/[<namespace>/]<name>`, and resourceVersion is
//! the key's mod_revision (set on read, never stored), as kube's etcd3 store
//! does. Every write is a compare-and-swap on mod_revision.

use base64::Engine as _;
use serde_json::{Value, json};
use skiff_store::{Compare, KeySet, KeyValue, Op, RangeRequest, Store, Txn};

use crate::registry::{self, Resource};
use crate::selectors::Filter;
use crate::status::{ApiError, ApiResult, Target};

pub fn target<'a>(r: &'a Resource, name: &'a str) -> Target<'a> {
    Target {
        group: r.group,
        plural: r.plural,
        kind: r.kind,
        name,
    }
}

pub fn now_rfc3339() -> String {
    // Kubernetes timestamps have whole seconds.
    k8s_openapi::jiff::Timestamp::from_second(unix_now())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn new_uid() -> String {
    use ring::rand::SecureRandom as _;
    let mut b = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system randomness");
    b[6] = (b[6] & 0x0f) | 0x40; // UUID v4
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Decodes a stored value and stamps resourceVersion.
pub fn decode(kv: &KeyValue) -> ApiResult<Value> {
    let mut v: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    set_rv(&mut v, kv.mod_revision);
    Ok(v)
}

/// [`decode`] as read through `r` (a custom resource's version).
pub fn decode_as(r: &Resource, kv: &KeyValue) -> ApiResult<Value> {
    let mut v = decode(kv)?;
    crate::crd::at_version(r, &mut v);
    Ok(v)
}

/// The stored JSON of `kv` with metadata.resourceVersion spliced in, without
/// building a [`Value`]: lists and watches with no selector send this.
/// None when the bytes are not an object with a top-level "metadata" object
/// free of a resourceVersion (callers then go through [`decode`]).
pub fn raw_with_rv(value: &[u8], rev: u64) -> Option<Vec<u8>> {
    let (open, close) = raw::metadata_object(value)?;
    let meta = &value[open..close];
    if meta.windows(17).any(|w| w == b"\"resourceVersion\"") {
        return None;
    }
    let empty = value[open + 1..close].iter().all(u8::is_ascii_whitespace);
    let rv = format!(
        "\"resourceVersion\":\"{rev}\"{}",
        if empty { "" } else { "," }
    );
    let mut out = Vec::with_capacity(value.len() + rv.len());
    out.extend_from_slice(&value[..=open]);
    out.extend_from_slice(rv.as_bytes());
    out.extend_from_slice(&value[open + 1..]);
    Some(out)
}

/// Just enough of a JSON scanner to find a top-level member.
mod raw {
    fn ws(v: &[u8], mut i: usize) -> usize {
        while v.get(i).is_some_and(u8::is_ascii_whitespace) {
            i += 1;
        }
        i
    }

    /// `i` is at a '"'; the index after the closing one.
    fn string_end(v: &[u8], i: usize) -> Option<usize> {
        let mut j = i + 1;
        while j < v.len() {
            match v[j] {
                b'\\' => j += 2,
                b'"' => return Some(j + 1),
                _ => j += 1,
            }
        }
        None
    }

    /// `i` is at the start of a value; the index after it.
    fn value_end(v: &[u8], i: usize) -> Option<usize> {
        match *v.get(i)? {
            b'"' => string_end(v, i),
            b'{' | b'[' => {
                let mut depth = 0usize;
                let mut j = i;
                while j < v.len() {
                    match v[j] {
                        b'"' => {
                            j = string_end(v, j)?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth -= 1;
                            if depth == 0 {
                                return Some(j + 1);
                            }
                        }
                        _ => {}
                    }
                    j += 1;
                }
                None
            }
            _ => {
                let n = v[i..]
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']') || b.is_ascii_whitespace())
                    .unwrap_or(v.len() - i);
                (n > 0).then_some(i + n)
            }
        }
    }

    /// The indexes of the '{' and '}' of the top-level "metadata" object.
    pub fn metadata_object(v: &[u8]) -> Option<(usize, usize)> {
        let mut i = ws(v, 0);
        if *v.get(i)? != b'{' {
            return None;
        }
        i += 1;
        loop {
            i = ws(v, i);
            if *v.get(i)? != b'"' {
                return None;
            }
            let key_end = string_end(v, i)?;
            let key = &v[i + 1..key_end - 1];
            i = ws(v, key_end);
            if *v.get(i)? != b':' {
                return None;
            }
            i = ws(v, i + 1);
            let end = value_end(v, i)?;
            if key == b"metadata" {
                return (v[i] == b'{').then_some((i, end - 1));
            }
            i = ws(v, end);
            if *v.get(i)? != b',' {
                return None;
            }
            i += 1;
        }
    }
}

pub fn set_rv(v: &mut Value, rev: u64) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(rev.to_string()));
    }
}

/// The largest object stored, encoded: etcd's default request limit
/// (`--max-request-bytes`, 1.5 MiB), which bounds kube's objects too.
pub const MAX_OBJECT: usize = 3 * 512 * 1024;

/// The stored form of an object: its JSON without resourceVersion.
fn stored_json(v: &Value) -> ApiResult<Vec<u8>> {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&v).map_err(ApiError::internal)
}

/// [`stored_json`], refused with 413 when larger than [`MAX_OBJECT`]
/// (whatever made it so: a large body, a patch or an apply), before
/// anything is written.
fn encode(r: &Resource, v: &Value) -> ApiResult<Vec<u8>> {
    let bytes = match crate::crd::at_storage_version(r, v) {
        Some(stored) => stored_json(&stored)?,
        None => stored_json(v)?,
    };
    if bytes.len() > MAX_OBJECT {
        let name = meta_str(v, "name").unwrap_or_default();
        return Err(ApiError::too_large_msg(format!(
            "{} \"{name}\" would be {} bytes, more than the limit of {MAX_OBJECT}",
            r.kind,
            bytes.len()
        )));
    }
    Ok(bytes)
}

pub fn meta_str<'a>(v: &'a Value, field: &str) -> Option<&'a str> {
    v.get("metadata")?.get(field)?.as_str()
}

/// The resourceVersion a client sent, if any (empty = none).
pub fn client_rv(v: &Value) -> ApiResult<Option<u64>> {
    match meta_str(v, "resourceVersion") {
        None | Some("") => Ok(None),
        Some(s) => s
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}"))),
    }
}

pub async fn get(store: &Store, r: &Resource, ns: &str, name: &str) -> ApiResult<Value> {
    match store.get(r.key(ns, name)).await? {
        Some(kv) => decode_as(r, &kv),
        None => Err(ApiError::not_found(target(r, name))),
    }
}

/// Creates an object whose metadata admission already completed; fills the
/// server-owned fields.
pub async fn create(
    store: &Store,
    r: &Resource,
    ns: &str,
    obj: Value,
    dry_run: bool,
) -> ApiResult<Value> {
    insert(store, r, ns, obj, dry_run, 0, None).await
}

/// [`create`] as a client asks it: within the namespace object limit of
/// `state`, with the key attached to a store lease (0 = none) so that the
/// object goes when the lease expires, as kube's events do.
pub async fn create_with_lease(
    state: &crate::server::State,
    r: &Resource,
    ns: &str,
    obj: Value,
    dry_run: bool,
    lease: skiff_store::LeaseId,
) -> ApiResult<Value> {
    let quota = Quota {
        max: state.gate.limits.max_objects_per_namespace,
        served: state.crds.served(),
    };
    insert(&state.store, r, ns, obj, dry_run, lease, Some(quota)).await
}

/// The objects a namespace may hold, counted over what is served (custom
/// objects count like built-in ones).
struct Quota {
    max: usize,
    served: registry::Served,
}

/// Objects namespace `ns` holds, all kinds together: key counts of every
/// namespaced resource in one read transaction.
pub async fn namespace_objects(
    store: &Store,
    served: &registry::Served,
    ns: &str,
) -> ApiResult<u64> {
    // One range per stored prefix (a kind served at two versions is
    // stored once).
    let prefixes: std::collections::BTreeSet<String> = served
        .all()
        .filter(|r| r.namespaced && r.kind != "Namespace")
        .map(|r| r.list_prefix(ns))
        .collect();
    let ranges = prefixes
        .into_iter()
        .map(|p| {
            let mut req = RangeRequest::prefix(p.into_bytes());
            req.count_only = true;
            Op::Range(req)
        })
        .collect();
    let resp = store
        .txn(Txn {
            success: ranges,
            ..Txn::default()
        })
        .await?;
    Ok(resp
        .responses
        .iter()
        .map(|r| match r {
            skiff_store::OpResponse::Range(r) => r.count,
            _ => 0,
        })
        .sum())
}

async fn insert(
    store: &Store,
    r: &Resource,
    ns: &str,
    mut obj: Value,
    dry_run: bool,
    lease: skiff_store::LeaseId,
    quota: Option<Quota>,
) -> ApiResult<Value> {
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("admitted object has metadata");
    // Admission chose it (see `admission::admit`); other writers get one here.
    meta.entry("uid").or_insert_with(|| json!(new_uid()));
    meta.insert("creationTimestamp".into(), json!(now_rfc3339()));
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("resourceVersion");
    if r.namespaced {
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.remove("namespace");
    }
    if r.has_spec {
        meta.insert("generation".into(), json!(1));
    }
    if r.namespaced && r.kind != "Namespace" {
        let nsr = registry::find("", "v1", "namespaces").expect("namespaces registered");
        let nso = get(store, nsr, "", ns).await?;
        if meta_str(&nso, "deletionTimestamp").is_some() {
            return Err(ApiError::forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                r.plural
            )));
        }
        if let Some(Quota {
            max: max_objects,
            served,
        }) = quota
        {
            let used = namespace_objects(store, &served, ns).await?;
            if used >= max_objects as u64 {
                // kube's ResourceQuota wording.
                return Err(ApiError::forbidden(format!(
                    "{} \"{name}\" is forbidden: exceeded quota: objects per namespace, \
                     requested: 1, used: {used}, limited: {max_objects}",
                    r.plural
                )));
            }
        }
    }
    let key = r.key(ns, &name);
    let value = encode(r, &obj)?;
    if dry_run {
        if store.get(key.clone()).await?.is_some() {
            return Err(ApiError::already_exists(target(r, &name)));
        }
        return Ok(obj);
    }
    let resp = store
        .txn(Txn {
            compare: vec![Compare::missing(key.clone())],
            success: vec![Op::Put {
                key: key.into(),
                value: value.into(),
                lease,
            }],
            failure: vec![],
        })
        .await?;
    if !resp.succeeded {
        return Err(ApiError::already_exists(target(r, &name)));
    }
    set_rv(&mut obj, resp.revision);
    Ok(obj)
}

fn without_meta_status(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("metadata");
        o.remove("status");
    }
    v
}

/// Read-modify-write with optimistic concurrency. `change` gets the current
/// object (resourceVersion stamped) and returns the desired one; if that
/// carries a resourceVersion different from the current one the answer is
/// 409, otherwise a concurrent writer just causes a retry. Server-owned
/// metadata is carried over; removing the last finalizer of an object being
/// deleted deletes it.
pub async fn update<F>(
    store: &Store,
    r: &Resource,
    ns: &str,
    name: &str,
    dry_run: bool,
    mut change: F,
) -> ApiResult<Value>
where
    F: FnMut(Value) -> ApiResult<Value>,
{
    let key = r.key(ns, name);
    loop {
        let kv = store
            .get(key.clone())
            .await?
            .ok_or_else(|| ApiError::not_found(target(r, name)))?;
        let current = decode_as(r, &kv)?;
        let mut new = change(current.clone())?;
        if let Some(rv) = client_rv(&new)?
            && rv != kv.mod_revision
        {
            return Err(ApiError::conflict(target(r, name)));
        }
        // A uid in the body is a precondition (kube): an update meant for
        // an object that was deleted and recreated under the same name
        // must not land on the new one.
        if let Some(want) = meta_str(&new, "uid").filter(|u| !u.is_empty()) {
            let have = meta_str(&current, "uid").unwrap_or("");
            if want != have {
                return Err(uid_conflict(r, name, want, have));
            }
        }
        if meta_str(&new, "name") != Some(name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({name})",
                meta_str(&new, "name").unwrap_or_default()
            )));
        }
        {
            let cm = current["metadata"].as_object().cloned().unwrap_or_default();
            let m = new["metadata"]
                .as_object_mut()
                .ok_or_else(|| ApiError::bad_request("metadata must be an object"))?;
            for f in [
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match cm.get(f) {
                    Some(v) => m.insert(f.into(), v.clone()),
                    None => m.remove(f),
                };
            }
            if r.namespaced {
                m.insert("namespace".into(), json!(ns));
            }
            m.insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        }
        if r.has_spec && without_meta_status(&new) != without_meta_status(&current) {
            let g = current
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            new["metadata"]["generation"] = json!(g + 1);
        }
        if new == current {
            return Ok(new);
        }
        let finalizers_empty = new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        let deleting = meta_str(&new, "deletionTimestamp").is_some();
        let op = if deleting && finalizers_empty {
            Op::delete(KeySet::key(key.clone()))
        } else {
            // Keep the key's lease (an updated event still expires).
            Op::Put {
                key: key.clone().into(),
                value: encode(r, &new)?.into(),
                lease: kv.lease,
            }
        };
        if dry_run {
            return Ok(new);
        }
        let resp = store
            .txn(Txn {
                compare: vec![Compare::mod_revision(key.clone(), kv.mod_revision)],
                success: vec![op],
                failure: vec![],
            })
            .await?;
        if resp.succeeded {
            set_rv(&mut new, resp.revision);
            return Ok(new);
        }
    }
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// Gone; the last state.
    Now(Value),
    /// Marked with deletionTimestamp; finalizers or a grace period remain.
    Pending(Value),
}

/// Deletes an object, honouring finalizers and (for pods bound to a node)
/// graceful deletion: those get deletionTimestamp and stay until the node or
/// the last finalizer lets go.
/// DeleteOptions' preconditions: the object is deleted only if it is still
/// this version of this object (a recreated one has another uid).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub resource_version: Option<u64>,
    pub uid: Option<String>,
}

/// kube's answer when a write names an object by a uid it no longer has.
fn uid_conflict(r: &Resource, name: &str, want: &str, have: &str) -> ApiError {
    let mut e = ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": Precondition failed: UID in precondition: {want}, UID in object meta: {have}",
            target(r, name).resource()
        ),
    );
    e.details = Some(json!({"name": name, "group": r.group, "kind": r.plural}));
    e
}

pub async fn delete(
    store: &Store,
    r: &Resource,
    ns: &str,
    name: &str,
    grace: Option<i64>,
    pre: &Preconditions,
    dry_run: bool,
) -> ApiResult<Deleted> {
    let key = r.key(ns, name);
    loop {
        let kv = store
            .get(key.clone())
            .await?
            .ok_or_else(|| ApiError::not_found(target(r, name)))?;
        if pre.resource_version.is_some_and(|rv| rv != kv.mod_revision) {
            return Err(ApiError::conflict(target(r, name)));
        }
        let current = decode_as(r, &kv)?;
        if let Some(want) = &pre.uid {
            let have = meta_str(&current, "uid").unwrap_or("");
            if want != have {
                return Err(uid_conflict(r, name, want, have));
            }
        }
        let has_finalizers = current
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let pod_grace = if r.kind == "Pod"
            && current
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty())
        {
            let g = grace
                .or_else(|| {
                    current
                        .pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30);
            (g > 0).then_some(g)
        } else {
            None
        };
        if has_finalizers || pod_grace.is_some() {
            if meta_str(&current, "deletionTimestamp").is_some() {
                return Ok(Deleted::Pending(current));
            }
            let mut new = current.clone();
            new["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
            new["metadata"]["deletionGracePeriodSeconds"] = json!(pod_grace.unwrap_or(0));
            // Unchecked: marking an object for deletion must never fail on
            // its size.
            let value = stored_json(&new)?;
            if dry_run {
                return Ok(Deleted::Pending(new));
            }
            let resp = store
                .txn(Txn {
                    compare: vec![Compare::mod_revision(key.clone(), kv.mod_revision)],
                    success: vec![Op::Put {
                        key: key.clone().into(),
                        value: value.into(),
                        lease: kv.lease,
                    }],
                    failure: vec![],
                })
                .await?;
            if resp.succeeded {
                set_rv(&mut new, resp.revision);
                return Ok(Deleted::Pending(new));
            }
            continue;
        }
        if dry_run {
            return Ok(Deleted::Now(current));
        }
        let resp = store
            .txn(Txn {
                compare: vec![Compare::mod_revision(key.clone(), kv.mod_revision)],
                success: vec![Op::delete(KeySet::key(key.clone()))],
                failure: vec![],
            })
            .await?;
        if resp.succeeded {
            let mut last = current;
            set_rv(&mut last, resp.revision);
            return Ok(Deleted::Now(last));
        }
    }
}

/// One page of a list.
#[derive(Debug)]
pub struct Page<T = Value> {
    pub items: Vec<T>,
    pub revision: u64,
    pub continue_token: Option<String>,
    pub remaining: Option<u64>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    start: String,
}

fn decode_continue(t: &str) -> ApiResult<ContinueToken> {
    let bad = || ApiError::bad_request("continue key is not valid");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(t)
        .map_err(|_| bad())?;
    serde_json::from_slice(&raw).map_err(|_| bad())
}

fn encode_continue(rv: u64, start: &[u8]) -> String {
    let t = ContinueToken {
        rv,
        start: String::from_utf8_lossy(start).into_owned(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).expect("serializes"))
}

/// Lists a namespace ("" = all) with selectors and limit/continue paging.
/// Pages are served at one revision, so a continued list is consistent.
pub async fn list(
    store: &Store,
    r: &Resource,
    ns: &str,
    filter: &Filter,
    limit: usize,
    cont: Option<&str>,
) -> ApiResult<Page> {
    list_at(store, r, ns, filter, limit, cont, None).await
}

/// [`list`] at an exact past revision (`resourceVersionMatch=Exact`).
pub async fn list_at(
    store: &Store,
    r: &Resource,
    ns: &str,
    filter: &Filter,
    limit: usize,
    cont: Option<&str>,
    at: Option<u64>,
) -> ApiResult<Page> {
    let keep = |kv: &KeyValue| -> ApiResult<Option<Value>> {
        let v = decode_as(r, kv)?;
        Ok(filter.matches(&v).then_some(v))
    };
    list_with(store, r, ns, filter.is_empty(), limit, cont, at, keep).await
}

/// [`list_at`] without selectors, each item the stored JSON with its
/// resourceVersion spliced in ([`raw_with_rv`]), never parsed.
pub async fn list_raw(
    store: &Store,
    r: &Resource,
    ns: &str,
    limit: usize,
    cont: Option<&str>,
    at: Option<u64>,
) -> ApiResult<Page<Vec<u8>>> {
    let keep = |kv: &KeyValue| -> ApiResult<Option<Vec<u8>>> {
        let raw = (!crate::crd::converts(r))
            .then(|| raw_with_rv(&kv.value, kv.mod_revision))
            .flatten();
        Ok(Some(match raw {
            Some(raw) => raw,
            None => serde_json::to_vec(&decode_as(r, kv)?).map_err(ApiError::internal)?,
        }))
    };
    list_with(store, r, ns, true, limit, cont, at, keep).await
}

/// The paging of [`list_at`]; `keep` turns a stored pair into an item or
/// filters it out (`unfiltered`: it never does, so counts are exact).
#[allow(clippy::too_many_arguments)]
async fn list_with<T>(
    store: &Store,
    r: &Resource,
    ns: &str,
    unfiltered: bool,
    limit: usize,
    cont: Option<&str>,
    at: Option<u64>,
    mut keep: impl FnMut(&KeyValue) -> ApiResult<Option<T>>,
) -> ApiResult<Page<T>> {
    let prefix = r.list_prefix(ns);
    let end = skiff_store::prefix_end(prefix.as_bytes()).expect("non-empty prefix");
    let (mut req, revision_pinned) = match cont {
        Some(t) if !t.is_empty() => {
            let tok = decode_continue(t)?;
            if !tok.start.starts_with(&prefix) {
                return Err(ApiError::bad_request("continue key is not valid"));
            }
            (
                RangeRequest::new(KeySet::range(tok.start.into_bytes(), end.clone()))
                    .at_revision(tok.rv),
                true,
            )
        }
        _ => match at {
            Some(rev) => (
                RangeRequest::new(KeySet::range(prefix.clone().into_bytes(), end.clone()))
                    .at_revision(rev),
                true,
            ),
            None => (
                RangeRequest::new(KeySet::range(prefix.clone().into_bytes(), end.clone())),
                false,
            ),
        },
    };
    if limit > 0 {
        req = req.with_limit(limit);
    }
    let mut items = Vec::new();
    loop {
        let resp = match store.range(req.clone()).await {
            Err(skiff_store::Error::Compacted { requested, .. })
                if revision_pinned && cont.is_none() =>
            {
                return Err(ApiError::gone(format!(
                    "too old resource version: {requested}"
                )));
            }
            Err(skiff_store::Error::Compacted { .. }) if revision_pinned => {
                return Err(ApiError::gone(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ));
            }
            other => other?,
        };
        for kv in &resp.kvs {
            if let Some(item) = keep(kv)? {
                items.push(item);
            }
        }
        let next = resp.next_page(&req);
        let full = limit > 0 && items.len() >= limit;
        match next {
            Some(n) if full => {
                let start = match &n.keys {
                    KeySet::Range { start, .. } => start.clone(),
                    _ => unreachable!("next_page yields a range"),
                };
                let remaining =
                    unfiltered.then(|| resp.count.saturating_sub(resp.kvs.len() as u64));
                return Ok(Page {
                    items,
                    revision: resp.revision,
                    continue_token: Some(encode_continue(resp.revision, &start)),
                    remaining,
                });
            }
            Some(n) => {
                // Selectors filtered some out: keep reading at the same revision.
                req = n.with_limit(limit.saturating_sub(items.len()).max(1));
            }
            None => {
                return Ok(Page {
                    items,
                    revision: resp.revision,
                    continue_token: None,
                    remaining: None,
                });
            }
        }
    }
}

/// Creates an object unless one of that name exists (bootstrap objects are
/// left alone once created, so administrators may change them).
async fn ensure(store: &Store, r: &Resource, obj: Value) -> ApiResult<()> {
    let name = meta_str(&obj, "name").unwrap_or_default().to_string();
    if store.get(r.key("", &name)).await?.is_some() {
        return Ok(());
    }
    match create(store, r, "", obj, false).await {
        Err(e) if e.code != 409 => Err(e),
        _ => Ok(()),
    }
}

/// Objects every cluster has: the default namespaces, kube's default
/// user-facing ClusterRoles (admin/edit/view aggregate their labelled
/// parts, as in kube) with cluster-admin bound to system:masters, and each
/// kind's built-in objects.
pub async fn bootstrap(store: &Store) -> ApiResult<()> {
    let nsr = registry::find("", "v1", "namespaces").expect("namespaces registered");
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let obj = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
            "spec": {"finalizers": ["kubernetes"]},
            "status": {"phase": "Active"},
        });
        ensure(store, nsr, obj).await?;
    }
    let g = "rbac.authorization.k8s.io";
    let roles = registry::find(g, "v1", "clusterroles").expect("registered");
    let bindings = registry::find(g, "v1", "clusterrolebindings").expect("registered");
    let read = json!(["get", "list", "watch"]);
    let write = json!(["create", "delete", "deletecollection", "patch", "update"]);
    let workloads = json!({"apiGroups": ["", "apps", "autoscaling", "batch", "discovery.k8s.io", "coordination.k8s.io",
                      "events.k8s.io", "networking.k8s.io"],
        "resources": ["pods", "pods/log", "pods/status", "services", "endpoints", "endpointslices", "configmaps",
                      "serviceaccounts", "events", "leases", "deployments", "deployments/scale", "deployments/status",
                      "replicasets", "replicasets/scale", "daemonsets", "horizontalpodautoscalers", "jobs", "cronjobs",
                      "networkpolicies"]});
    let with_verbs = |rule: &Value, verbs: &Value| {
        let mut r = rule.clone();
        r["verbs"] = verbs.clone();
        r
    };
    let secrets = json!({"apiGroups": [""], "resources": ["secrets"]});
    // kube's edit role reaches into pods; view does not.
    let connect = json!({"apiGroups": [""], "resources": ["pods/portforward", "pods/proxy", "services/proxy"]});
    let rbac_ns = json!({"apiGroups": [g], "resources": ["roles", "rolebindings"]});
    let defaults = [
        (
            "cluster-admin",
            None,
            // Both halves of kube's "full authority" (the aggregationRule
            // and escalation checks ask for it).
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        (
            "view",
            Some("view"),
            json!([with_verbs(&workloads, &read), {"apiGroups": [""], "resources": ["namespaces"], "verbs": read}]),
        ),
        (
            "edit",
            Some("edit"),
            json!([
                with_verbs(&workloads, &write),
                with_verbs(&secrets, &read),
                with_verbs(&secrets, &write),
                with_verbs(&connect, &read),
                with_verbs(&connect, &write)
            ]),
        ),
        (
            "admin",
            Some("admin"),
            json!([with_verbs(&rbac_ns, &read), with_verbs(&rbac_ns, &write)]),
        ),
    ];
    for (name, aggregate, rules) in defaults {
        let mut labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
        let mut role = json!({"apiVersion": format!("{g}/v1"), "kind": "ClusterRole", "metadata": {"name": name}, "rules": []});
        if let Some(part) = aggregate {
            // The role itself aggregates "<part>" and the broader roles
            // include it: admin ⊇ edit ⊇ view, as in kube.
            let selectors: Vec<Value> = match part {
                "view" => vec![json!({"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}})],
                "edit" => ["edit", "view"].iter().map(|p| json!({"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{p}"): "true"}})).collect(),
                _ => ["admin", "edit", "view"].iter().map(|p| json!({"matchLabels": {format!("rbac.authorization.k8s.io/aggregate-to-{p}"): "true"}})).collect(),
            };
            role["aggregationRule"] = json!({"clusterRoleSelectors": selectors});
            // The rules live in a labelled part, which the aggregator collects.
            labels[format!("rbac.authorization.k8s.io/aggregate-to-{part}")] = json!("true");
            let part_role = json!({"apiVersion": format!("{g}/v1"), "kind": "ClusterRole",
                "metadata": {"name": format!("system:aggregate-to-{part}"), "labels": labels}, "rules": rules});
            ensure(store, roles, part_role).await?;
        } else {
            role["rules"] = rules;
            role["metadata"]["labels"] = labels;
        }
        ensure(store, roles, role).await?;
    }
    // metrics-server's reader role: view, edit and admin aggregate it.
    let metrics_reader = json!({"apiVersion": format!("{g}/v1"), "kind": "ClusterRole",
        "metadata": {"name": "system:aggregated-metrics-reader", "labels": {
            "kubernetes.io/bootstrapping": "rbac-defaults",
            "rbac.authorization.k8s.io/aggregate-to-view": "true",
            "rbac.authorization.k8s.io/aggregate-to-edit": "true",
            "rbac.authorization.k8s.io/aggregate-to-admin": "true"}},
        "rules": [{"apiGroups": ["metrics.k8s.io"], "resources": ["pods", "nodes"], "verbs": read}]});
    ensure(store, roles, metrics_reader).await?;
    // kube's monitoring role: health checks and /metrics, for the group
    // system:monitoring (bind others to it to let them scrape).
    let monitoring = json!({"apiVersion": format!("{g}/v1"), "kind": "ClusterRole",
        "metadata": {"name": "system:monitoring", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "rules": [{"nonResourceURLs": ["/healthz", "/healthz/*", "/livez", "/livez/*", "/readyz", "/readyz/*", "/metrics"],
                   "verbs": ["get"]}]});
    ensure(store, roles, monitoring).await?;
    let monitoring_binding = json!({"apiVersion": format!("{g}/v1"), "kind": "ClusterRoleBinding",
        "metadata": {"name": "system:monitoring", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": g, "kind": "ClusterRole", "name": "system:monitoring"},
        "subjects": [{"apiGroup": g, "kind": "Group", "name": "system:monitoring"}]});
    ensure(store, bindings, monitoring_binding).await?;
    let binding = json!({"apiVersion": format!("{g}/v1"), "kind": "ClusterRoleBinding",
        "metadata": {"name": "cluster-admin", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
        "roleRef": {"apiGroup": g, "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"apiGroup": g, "kind": "Group", "name": "system:masters"}]});
    ensure(store, bindings, binding).await?;
    // Control-plane components: each user gets its same-named role and
    // binding, as kube's bootstrap policy does.
    for (user, rules) in component_roles() {
        let role = json!({"apiVersion": format!("{g}/v1"), "kind": "ClusterRole",
            "metadata": {"name": user, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "rules": rules});
        ensure(store, roles, role).await?;
        let binding = json!({"apiVersion": format!("{g}/v1"), "kind": "ClusterRoleBinding",
            "metadata": {"name": user, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"}},
            "roleRef": {"apiGroup": g, "kind": "ClusterRole", "name": user},
            "subjects": [{"apiGroup": g, "kind": "User", "name": user}]});
        ensure(store, bindings, binding).await?;
    }
    for r in registry::RESOURCES {
        for obj in (r.builtin)() {
            ensure(store, r, obj).await?;
        }
    }
    Ok(())
}

/// The scheduler reads the cluster and binds pods; the controller manager
/// reconciles workloads, nodes and endpoints (kube splits the latter per
/// controller; one identity keeps it simple here).
fn component_roles() -> [(&'static str, Value); 2] {
    let read = json!(["get", "list", "watch"]);
    let all = json!([
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection"
    ]);
    let scheduler = json!([
        {"apiGroups": [""], "resources": ["pods", "nodes", "namespaces", "services", "persistentvolumeclaims",
            "persistentvolumes", "replicationcontrollers"], "verbs": read},
        {"apiGroups": ["apps"], "resources": ["replicasets", "statefulsets"], "verbs": read},
        {"apiGroups": ["storage.k8s.io"], "resources": ["*"], "verbs": read},
        {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": read},
        {"apiGroups": ["scheduling.k8s.io"], "resources": ["priorityclasses"], "verbs": read},
        {"apiGroups": [""], "resources": ["pods/binding", "bindings"], "verbs": ["create"]},
        {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch", "update"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]},
        {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch", "update"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": all},
    ]);
    let controller_manager = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": all}]);
    [
        ("system:kube-scheduler", scheduler),
        ("system:kube-controller-manager", controller_manager),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_resource_version_matches_decode() {
        for obj in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "labels": {"x": "}{\"]["}}, "data": {"k": "metadata\":{"}}),
            json!({"aaa": {"metadata": {"inner": 1}}, "metadata": {}, "spec": {"template": {"metadata": {"labels": {}}}}}),
            json!({"a": [1, {"b": "\\"}], "n": -1.5e3, "t": true, "z": null, "metadata": {"name": "x"}}),
        ] {
            let r = registry::find("", "v1", "configmaps").expect("registered");
            let bytes = encode(r, &obj).unwrap();
            let kv = KeyValue {
                key: Default::default(),
                value: bytes.clone().into(),
                create_revision: 42,
                mod_revision: 42,
                version: 1,
                lease: 0,
            };
            let raw = raw_with_rv(&bytes, 42).expect("splices");
            let back: Value = serde_json::from_slice(&raw).expect("valid JSON");
            assert_eq!(back, decode(&kv).unwrap());
        }
        // Not spliceable: the caller decodes instead.
        assert!(raw_with_rv(b"[1]", 1).is_none());
        assert!(raw_with_rv(br#"{"kind":"X"}"#, 1).is_none());
        assert!(raw_with_rv(br#"{"metadata":"s"}"#, 1).is_none());
        assert!(raw_with_rv(br#"{"metadata":{"resourceVersion":"3"}}"#, 1).is_none());
        assert!(raw_with_rv(br#"{"metadata":{"#, 1).is_none());
    }
}
