//! The in-process scheduler's series on the API server's `/metrics`, under
//! kube-scheduler's names (kube serves them on the scheduler's own port;
//! here the scheduler shares the API server's process).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use skiff_apiserver::prometheus_client::collector::Collector;
use skiff_apiserver::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use skiff_apiserver::prometheus_client::metrics::MetricType;
use skiff_apiserver::prometheus_client::metrics::counter::ConstCounter;

#[derive(Debug)]
pub(crate) struct SchedulerCollector(pub Arc<skiff_scheduler::Stats>);

impl Collector for SchedulerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let n = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let mut attempts = encoder.encode_descriptor(
            "scheduler_schedule_attempts",
            "Number of attempts to schedule pods, by the result. 'unschedulable' means a pod could not be scheduled, while 'error' means a binding failed.",
            None,
            MetricType::Counter,
        )?;
        for (result, v) in [
            ("scheduled", n(&s.bound)),
            ("unschedulable", n(&s.unschedulable)),
            ("error", n(&s.bind_errors)),
        ] {
            let labels = [("profile", "default-scheduler"), ("result", result)];
            ConstCounter::new(v).encode(attempts.encode_family(&labels)?)?;
        }
        let dropped = ConstCounter::new(n(&s.events_dropped));
        dropped.encode(encoder.encode_descriptor(
            "skiff_scheduler_events_dropped",
            "Scheduling events not written because the event queue was full.",
            None,
            MetricType::Counter,
        )?)
    }
}
