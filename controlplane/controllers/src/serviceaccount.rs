//! The service account controller: every active namespace has a
//! ServiceAccount `default` (recreated if deleted).

use std::sync::Arc;

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::util;
use crate::{Error, Shared};

/// The pure decision: whether `ns` needs its `default` ServiceAccount.
pub fn needs_default(ns: &Namespace, has_default: bool) -> bool {
    let active = ns.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Terminating")
        && !util::deleting(&ns.metadata);
    active && !has_default
}

struct Ctx {
    shared: Arc<Shared>,
    sas: Store<ServiceAccount>,
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = util::name(&ns.metadata);
    let has = ctx
        .sas
        .get(&ObjectRef::new("default").within(name))
        .is_some();
    if needs_default(&ns, has) {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".into()),
                namespace: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match Api::<ServiceAccount>::namespaced(ctx.shared.client.clone(), name)
            .create(&PostParams::default(), &sa)
            .await
        {
            Ok(_) => {}
            // Already there (cache behind) or the namespace is going.
            Err(kube::Error::Api(s)) if s.code == 409 || s.code == 403 || s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}

fn policy(ns: Arc<Namespace>, e: &Error, ctx: Arc<Ctx>) -> Action {
    crate::error_policy(ns, e, ctx.shared.clone())
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let sa_events = informers
        .serviceaccounts
        .subscribe()
        .filter(|sa| std::future::ready(util::name(&sa.metadata) == "default"))
        .map(|sa| ObjectRef::<Namespace>::new(util::namespace(&sa.metadata)));
    let ctx = Arc::new(Ctx {
        shared,
        sas: informers.serviceaccounts.store(),
    });
    informers.serviceaccounts.ready().await;
    Controller::for_shared_stream(
        informers.namespaces.subscribe(),
        informers.namespaces.store(),
    )
    .reconcile_on(sa_events)
    .run(
        crate::metrics::metered("serviceaccount", &ctx.shared.cfg.stats, reconcile),
        policy,
        ctx,
    )
    .for_each(|_| async {})
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_active_namespaces_without_one() {
        let active: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "a"}, "status": {"phase": "Active"}}),
        )
        .unwrap();
        let going: Namespace = serde_json::from_value(
            json!({"metadata": {"name": "b"}, "status": {"phase": "Terminating"}}),
        )
        .unwrap();
        assert!(needs_default(&active, false));
        assert!(!needs_default(&active, true));
        assert!(!needs_default(&going, false));
    }
}
