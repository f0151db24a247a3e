//! What each controller's work queue did, under kube-controller-manager's
//! `workqueue_*` names: reconciles by outcome, how long each took, and the
//! failures retried with back-off. (Queue depth is kube-runtime's inside;
//! it is not measured.)

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::future::BoxFuture;
use kube::runtime::controller::Action;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};

use crate::Error;

/// `[("name", controller)]`, kube's label.
pub type ControllerLabel = [(&'static str, &'static str); 1];
/// `[("name", controller), ("result", "success" | "error")]`.
pub type OutcomeLabels = [(&'static str, &'static str); 2];

/// The controllers' reconcile figures; shared with whoever serves them
/// (`Config::stats`).
#[derive(Debug)]
pub struct Stats {
    /// Reconciles by controller and outcome.
    pub reconciles: Family<OutcomeLabels, Counter>,
    /// Seconds per reconcile (kube's `workqueue_work_duration_seconds`).
    pub work_durations: Family<ControllerLabel, Histogram>,
    /// Failed reconciles put back on the queue after a back-off (kube's
    /// `workqueue_retries_total`).
    pub retries: Family<ControllerLabel, Counter>,
}

impl Default for Stats {
    fn default() -> Stats {
        Stats {
            reconciles: Family::default(),
            // kube's work-queue buckets: 10 ns to 10 s.
            work_durations: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1e-8, 10.0, 10))
            }),
            retries: Family::default(),
        }
    }
}

impl Stats {
    fn observe(&self, controller: &'static str, seconds: f64, ok: bool) {
        let result = if ok { "success" } else { "error" };
        self.reconciles
            .get_or_create(&[("name", controller), ("result", result)])
            .inc();
        self.work_durations
            .get_or_create(&[("name", controller)])
            .observe(seconds);
        if !ok {
            self.retries.get_or_create(&[("name", controller)]).inc();
        }
    }
}

/// `reconcile`, each run timed and counted under `controller`.
pub(crate) fn metered<K, C, F, Fut>(
    controller: &'static str,
    stats: &Arc<Stats>,
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<C>) -> BoxFuture<'static, Result<Action, Error>> + use<K, C, F, Fut>
where
    F: Fn(Arc<K>, Arc<C>) -> Fut,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    let stats = stats.clone();
    move |obj, ctx| {
        let run = reconcile(obj, ctx);
        let stats = stats.clone();
        Box::pin(async move {
            let started = Instant::now();
            let result = run.await;
            stats.observe(controller, started.elapsed().as_secs_f64(), result.is_ok());
            result
        })
    }
}
