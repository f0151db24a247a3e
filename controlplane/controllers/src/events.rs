//! Events about what the controllers did (what `kubectl describe` lists),
//! written in the background: a lost event never fails a sync.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::{Client, Resource};

use crate::util;

/// Records a Normal (or Warning) event about `obj` from `component`.
pub fn record<K: Resource<DynamicType = ()>>(
    client: &Client,
    obj: &K,
    component: &str,
    warning: bool,
    reason: &str,
    message: String,
) {
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let now = util::now();
    let ev = Event {
        metadata: ObjectMeta {
            name: Some(format!("{}.{}", util::name(meta), util::random_suffix(10))),
            namespace: Some(ns.clone()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            api_version: Some(K::api_version(&()).into()),
            kind: Some(K::kind(&()).into()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            field_path: None,
        },
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(component.into()),
            host: None,
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some(component.into()),
        ..Default::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    tokio::spawn(async move {
        let _ = api.create(&PostParams::default(), &ev).await;
    });
}
