//! The in-process scheduler's and controller manager's series on the API
//! server's `/metrics`, under kube-scheduler's and kube-controller-manager's
//! names (kube serves them on each component's own port; here they share
//! the API server's process).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use skiff_apiserver::prometheus_client::collector::Collector;
use skiff_apiserver::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use skiff_apiserver::prometheus_client::metrics::MetricType;
use skiff_apiserver::prometheus_client::metrics::counter::ConstCounter;
use skiff_apiserver::prometheus_client::metrics::gauge::ConstGauge;

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
        s.algorithm_durations.encode(encoder.encode_descriptor(
            "scheduler_scheduling_algorithm_duration_seconds",
            "Scheduling algorithm latency in seconds (filters and scores).",
            None,
            MetricType::Histogram,
        )?)?;
        let mut pending = encoder.encode_descriptor(
            "scheduler_pending_pods",
            "Number of pending pods, by the queue type. 'active' means number of pods in activeQ; 'backoff' means number of pods in backoffQ; 'unschedulable' means number of pods in unschedulablePods.",
            None,
            MetricType::Gauge,
        )?;
        for (queue, v) in skiff_scheduler::PENDING_QUEUES.iter().zip(&s.pending) {
            ConstGauge::new(n(v) as i64).encode(pending.encode_family(&[("queue", *queue)])?)?;
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

#[derive(Debug)]
pub(crate) struct ControllersCollector(pub Arc<skiff_controllers::Stats>);

impl Collector for ControllersCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        s.reconciles.encode(encoder.encode_descriptor(
            "skiff_controller_reconciles",
            "Reconciles run by each controller, by the outcome.",
            None,
            MetricType::Counter,
        )?)?;
        s.work_durations.encode(encoder.encode_descriptor(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes.",
            None,
            MetricType::Histogram,
        )?)?;
        s.retries.encode(encoder.encode_descriptor(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            None,
            MetricType::Counter,
        )?)
    }
}
