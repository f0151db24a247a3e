//! Namespace deletion: the namespace turns Terminating at once, and its
//! content and then the namespace itself go shortly after, as kube's
//! namespace controller does it.

use std::time::Duration;

use axum::body::Body;
use axum::http::Response;
use serde_json::json;

use crate::http::json_response;
use crate::registry::{Resource, Served};
use crate::server::State;
use crate::status::{ApiError, ApiResult};
use crate::storage::{self, meta_str};

/// Deleting a namespace deletes what it holds. There is no namespace
/// controller yet, so the content goes at once, then the namespace.
pub(crate) async fn delete_namespace(
    state: &State,
    r: &'static Resource,
    name: &str,
    dry_run: bool,
) -> ApiResult<Response<Body>> {
    if ["default", "kube-system", "kube-public"].contains(&name) {
        return Err(ApiError::forbidden(format!(
            "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
        )));
    }
    let current = storage::get(&state.store, r, "", name).await?;
    if dry_run {
        return Ok(json_response(200, &current));
    }
    if meta_str(&current, "deletionTimestamp").is_some() {
        return Ok(json_response(202, &current));
    }
    let terminating = storage::update(&state.store, r, "", name, false, |mut ns| {
        ns["metadata"]["deletionTimestamp"] = json!(storage::now_rfc3339());
        ns["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        ns["status"] = json!({"phase": "Terminating"});
        Ok(ns)
    })
    .await?;
    let store = state.store.clone();
    let name = name.to_string();
    let served = state.crds.served();
    tokio::spawn(async move {
        // Like kube's namespace controller, finish shortly after: clients
        // deleting a namespace and its content in one go still find it.
        tokio::time::sleep(NAMESPACE_CLEANUP_DELAY).await;
        if let Err(e) = finish_namespace(&store, &served, r, &name).await {
            tracing::error!(namespace = %name, error = %e.message, "deleting the namespace's content");
        }
    });
    Ok(json_response(202, &terminating))
}

pub(crate) const NAMESPACE_CLEANUP_DELAY: Duration = Duration::from_millis(500);

pub(crate) async fn finish_namespace(
    store: &skiff_store::Store,
    served: &Served,
    r: &'static Resource,
    name: &str,
) -> ApiResult<()> {
    for res in served.all().filter(|x| x.namespaced) {
        store
            .delete_range(skiff_store::KeySet::prefix(
                res.list_prefix(name).into_bytes(),
            ))
            .await?;
    }
    store
        .delete_range(skiff_store::KeySet::key(r.key("", name)))
        .await?;
    Ok(())
}
