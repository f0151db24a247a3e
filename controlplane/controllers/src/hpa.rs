//! The HorizontalPodAutoscaler controller (autoscaling/v2): every sync
//! period it reads the target's scale subresource and its pods' usage from
//! metrics.k8s.io, and sets the replicas kube's algorithm asks for.
//!
//! Per `Resource` metric (cpu or memory, target `Utilization` of the pods'
//! requests or `AverageValue`): ratio = current / target, a change only
//! outside the 10 % tolerance, desired = ceil(ratio × pods measured); the
//! largest over the metrics, within `minReplicas..=maxReplicas`, scale-up
//! limited to max(2×, +4) per period and scale-down stabilized over
//! `behavior.scaleDown.stabilizationWindowSeconds` (300 s unless set): the
//! highest recommendation of the window wins. Pods are counted as kube's
//! replica calculator counts them ([`Sample`]): deleted and failed pods not
//! at all; pending pods, and for cpu pods not ready or measured before a
//! whole window of readiness (in their first 5 minutes), as unready, using
//! nothing only when that would scale up; pods without metrics using
//! nothing on a scale-up and their whole request (or the target) on a
//! scale-down; and no scaling when counting them would flip the direction.
//! Other metric types and custom scaling policies are not supported: the
//! HPA says so in its `ScalingActive` condition.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use serde_json::{Value, json};

use crate::{Error, Shared};

/// How often each HPA is evaluated (kube's
/// `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// No scaling while usage is within this fraction of the target.
const TOLERANCE: f64 = 0.1;
const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// A CPU sample from a pod's first minutes is trusted only once the pod
/// was ready for a whole window (kube's `--horizontal-pod-autoscaler-cpu-
/// initialization-period`).
const CPU_INITIALIZATION_PERIOD: Duration = Duration::from_secs(300);
/// A pod that turned unready this soon after starting has never been ready
/// (kube's `--horizontal-pod-autoscaler-initial-readiness-delay`).
const INITIAL_READINESS_DELAY: Duration = Duration::from_secs(30);

/// One pod of the target as the replica calculator counts it for one
/// resource (usage and requests in millicores or bytes). Deleted and failed
/// pods are not samples at all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Measured and ready: counted as measured.
    Ready { usage: f64, requests: f64 },
    /// Pending, or (cpu) not ready yet: counted as using nothing, and only
    /// when the ready pods ask to scale up.
    Unready { requests: f64 },
    /// No metrics: counted as using nothing on a scale-up, and its whole
    /// request (at least the target) on a scale-down.
    Missing { requests: f64 },
}

/// Why no replica count could be computed from the samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCount {
    /// No ready pod has metrics (yet).
    NoMetrics,
    /// A `Utilization` target, but the measured pods request nothing.
    MissingRequest,
}

/// A metric's target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Percent of the pods' requests.
    Utilization(i32),
    /// Per pod, in millicores or bytes.
    AverageValue(f64),
}

/// The replicas one metric asks for, given `current` replicas, and the
/// current value to report (the ready pods' utilization percent or average
/// value): kube's `GetResourceReplicas` / `GetRawResourceReplicas`.
pub fn replicas_for(
    samples: &[Sample],
    target: Target,
    current: i32,
) -> Result<(i32, f64), NoCount> {
    // (usage, requests) of the pods counted.
    let mut counted: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|s| match s {
            Sample::Ready { usage, requests } => Some((*usage, *requests)),
            _ => None,
        })
        .collect();
    if counted.is_empty() {
        return Err(NoCount::NoMetrics);
    }
    let ratio_of = |pods: &[(f64, f64)]| -> Result<(f64, f64), NoCount> {
        let usage: f64 = pods.iter().map(|(u, _)| u).sum();
        match target {
            Target::Utilization(pct) => {
                let requests: f64 = pods.iter().map(|(_, r)| r).sum();
                if requests <= 0.0 {
                    return Err(NoCount::MissingRequest);
                }
                let util = 100.0 * usage / requests;
                Ok((util / f64::from(pct), util))
            }
            Target::AverageValue(v) => {
                let avg = usage / pods.len() as f64;
                Ok((avg / v, avg))
            }
        }
    };
    let scale =
        |ratio: f64, pods: usize| (ratio * pods as f64).ceil().min(f64::from(i32::MAX)) as i32;
    let (ratio, value) = ratio_of(&counted)?;
    let unready = samples.iter().any(|s| matches!(s, Sample::Unready { .. }));
    let missing = samples.iter().any(|s| matches!(s, Sample::Missing { .. }));
    let up_with_unready = unready && ratio > 1.0;
    if !up_with_unready && !missing {
        if (ratio - 1.0).abs() <= TOLERANCE {
            return Ok((current, value));
        }
        return Ok((scale(ratio, counted.len()), value));
    }
    for s in samples {
        match *s {
            Sample::Missing { requests } if ratio < 1.0 => {
                let usage = match target {
                    Target::Utilization(pct) => requests * f64::from(pct.max(100)) / 100.0,
                    Target::AverageValue(v) => v,
                };
                counted.push((usage, requests));
            }
            Sample::Missing { requests } if ratio > 1.0 => counted.push((0.0, requests)),
            Sample::Unready { requests } if up_with_unready => counted.push((0.0, requests)),
            _ => {}
        }
    }
    let (new_ratio, _) = ratio_of(&counted)?;
    let flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    if (new_ratio - 1.0).abs() <= TOLERANCE || flipped {
        return Ok((current, value));
    }
    let n = scale(new_ratio, counted.len());
    if (new_ratio < 1.0 && n > current) || (new_ratio > 1.0 && n < current) {
        return Ok((current, value));
    }
    Ok((n, value))
}

/// How `pod` counts for `resource` given its metrics (`usage` summed over
/// its containers, measured at `at` over `window`), or `None` if it does
/// not count at all: kube's `groupPods`.
pub fn sample_of(
    pod: &Pod,
    resource: &str,
    metric: Option<(f64, Timestamp, Duration)>,
    now: Timestamp,
) -> Option<Sample> {
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() || phase == Some("Failed") {
        return None;
    }
    let requests = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get(resource))
        .filter_map(|q| quantity(resource, &q.0))
        .sum();
    if phase == Some("Pending") {
        return Some(Sample::Unready { requests });
    }
    let Some((usage, at, window)) = metric else {
        return Some(Sample::Missing { requests });
    };
    if resource == "cpu" {
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let started = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
        let unready = match (ready, started) {
            (Some(ready), Some(started)) => {
                let became = ready
                    .last_transition_time
                    .as_ref()
                    .map(|t| t.0)
                    .unwrap_or(started);
                let not_ready = ready.status == "False";
                if after(started, CPU_INITIALIZATION_PERIOD) > now {
                    // Young: the sample must cover a whole window of readiness.
                    not_ready || at < after(became, window)
                } else {
                    // Older: unready only if it never was ready.
                    not_ready && after(started, INITIAL_READINESS_DELAY) > became
                }
            }
            _ => true,
        };
        if unready {
            return Some(Sample::Unready { requests });
        }
    }
    Some(Sample::Ready { usage, requests })
}

/// `t` plus `d`, saturating.
fn after(t: Timestamp, d: Duration) -> Timestamp {
    let d = k8s_openapi::jiff::SignedDuration::try_from(d)
        .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}

/// Clamps `wanted` into the HPA's bounds, limits the scale-up rate and
/// stabilizes scale-down over `window` given earlier recommendations
/// (`history`, newest last, with their times). Returns the replicas to
/// set and whether a bound or limit cut the recommendation.
pub fn decide(
    wanted: i32,
    current: i32,
    min: i32,
    max: i32,
    history: &mut VecDeque<(Instant, i32)>,
    window: Duration,
    now: Instant,
) -> (i32, bool) {
    history.push_back((now, wanted));
    while history
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) > window)
    {
        history.pop_front();
    }
    let mut desired = wanted;
    if desired < current {
        // Scale-down: the highest recommendation of the window.
        desired = history.iter().map(|(_, r)| *r).max().unwrap_or(wanted);
    }
    // Saturating: replicas are the user's to set, up to i32::MAX.
    let up_limit = current.saturating_mul(2).max(current.saturating_add(4));
    let limited = desired.clamp(min, max.min(up_limit).max(min));
    (limited, limited != desired)
}

struct Ctx {
    shared: Arc<Shared>,
    /// Recommendations per HPA (namespace/name), for stabilization; an
    /// HPA's go when it is no longer in `hpas`.
    history: Mutex<HashMap<String, VecDeque<(Instant, i32)>>>,
    hpas: Store<HorizontalPodAutoscaler>,
}

/// The target's pods as samples, per resource.
async fn read(
    ctx: &Ctx,
    ns: &str,
    selector: &str,
    resources: &[String],
) -> Result<BTreeMap<String, Vec<Sample>>, Error> {
    let matcher = skiff_selectors::LabelSelector::parse(selector)
        .map_err(|e| Error::InvalidSpec(format!("the target's selector {selector:?}: {e}")))?;
    let empty = BTreeMap::new();
    let pods: Vec<Arc<Pod>> = ctx
        .shared
        .pods
        .state()
        .into_iter()
        .filter(|p| {
            crate::util::namespace(&p.metadata) == ns
                && matcher.matches_labels(p.metadata.labels.as_ref().unwrap_or(&empty))
        })
        .collect();
    let query: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("labelSelector", selector)
        .finish();
    let url = format!("/apis/metrics.k8s.io/v1beta1/namespaces/{ns}/pods?{query}");
    let req = http::Request::get(url)
        .body(Vec::new())
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let metrics: Value = ctx.shared.client.request(req).await?;
    // Per pod: its containers' figures, when and over what window.
    let measured: HashMap<&str, (&Value, Timestamp, Duration)> = metrics["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| {
            let at = m["timestamp"].as_str()?.parse().ok()?;
            let window = m["window"].as_str().and_then(seconds).unwrap_or_default();
            Some((
                m.pointer("/metadata/name")?.as_str()?,
                (&m["containers"], at, window),
            ))
        })
        .collect();
    let now = Timestamp::now();
    let mut out = BTreeMap::new();
    for resource in resources {
        let samples = pods
            .iter()
            .filter_map(|pod| {
                let name = pod.metadata.name.as_deref().unwrap_or_default();
                let metric = measured.get(name).map(|(containers, at, window)| {
                    let usage = containers
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.pointer(&format!("/usage/{resource}"))?.as_str())
                        .filter_map(|q| quantity(resource, q))
                        .sum();
                    (usage, *at, *window)
                });
                sample_of(pod, resource, metric, now)
            })
            .collect();
        out.insert(resource.clone(), samples);
    }
    Ok(out)
}

/// A metrics window ("10s", "10.012s") as a duration.
fn seconds(window: &str) -> Option<Duration> {
    Duration::try_from_secs_f64(window.strip_suffix('s')?.parse().ok()?).ok()
}

/// A replica count in the scale subresource, within `0..=i32::MAX`.
fn replicas_at(scale: &Value, path: &str) -> Option<i32> {
    let n = scale.pointer(path)?.as_i64()?;
    Some(n.clamp(0, i64::from(i32::MAX)) as i32)
}

/// A quantity of `resource`: millicores for cpu, plain units (bytes) else.
fn quantity(resource: &str, q: &str) -> Option<f64> {
    let v = if resource == "cpu" {
        skiff_quantity::milli_value(q)
    } else {
        skiff_quantity::value(q)
    };
    v.map(|v| v as f64)
}

/// A metric's resource name and target, or why it is not supported.
fn target_of(m: &MetricSpec) -> Result<(String, Target), String> {
    let res = m
        .resource
        .as_ref()
        .filter(|_| m.type_ == "Resource")
        .ok_or_else(|| format!("metric type {:?} is not supported", m.type_))?;
    let t = &res.target;
    let target = match (t.type_.as_str(), t.average_utilization, &t.average_value) {
        ("Utilization", Some(p), _) => Target::Utilization(p),
        ("AverageValue", _, Some(q)) => Target::AverageValue(
            quantity(&res.name, &q.0)
                .ok_or_else(|| format!("averageValue {:?} does not parse", q.0))?,
        ),
        (other, _, _) => return Err(format!("target type {other:?} is not supported")),
    };
    Ok((res.name.clone(), target))
}

/// Millicores as `250m`, bytes as a plain number: metrics.k8s.io's forms.
fn quantity_string(resource: &str, v: f64) -> String {
    if resource == "cpu" {
        format!("{}m", v.round() as i64)
    } else {
        format!("{}", v.round() as i64)
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
) -> HorizontalPodAutoscalerCondition {
    HorizontalPodAutoscalerCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(crate::util::now()),
    }
}

/// `status` with `conditions`, each keeping its lastTransitionTime while
/// its status stays (kube's SetCondition), so a sync that changes nothing
/// leaves the status as it was.
fn with_conditions(
    mut status: HorizontalPodAutoscalerStatus,
    conditions: Vec<HorizontalPodAutoscalerCondition>,
) -> HorizontalPodAutoscalerStatus {
    let previous = status.conditions.take().unwrap_or_default();
    let conditions = conditions
        .into_iter()
        .map(|mut c| {
            if let Some(p) = previous
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
            {
                c.last_transition_time = p.last_transition_time.clone();
            }
            c
        })
        .collect();
    status.conditions = Some(conditions);
    status
}

/// Writes `status` unless it is what `hpa` already has; the next sync is a
/// period away.
async fn set_status(
    api: &Api<HorizontalPodAutoscaler>,
    hpa: &HorizontalPodAutoscaler,
    status: HorizontalPodAutoscalerStatus,
) -> Result<Action, Error> {
    if hpa.status.as_ref() != Some(&status) {
        let name = crate::util::name(&hpa.metadata);
        let patch = Patch::Merge(json!({"status": status}));
        api.patch_status(name, &PatchParams::default(), &patch)
            .await?;
    }
    Ok(Action::requeue(SYNC_PERIOD))
}

async fn reconcile(hpa: Arc<HorizontalPodAutoscaler>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let client = &ctx.shared.client;
    let ns = crate::util::namespace(&hpa.metadata).to_string();
    let name = crate::util::name(&hpa.metadata).to_string();
    let spec = hpa.spec.clone().unwrap_or_default();
    let target = &spec.scale_target_ref;
    let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), &ns);
    let previous = hpa.status.clone().unwrap_or_default();
    let fail = |type_: &str, reason: &str, message: String| {
        with_conditions(
            previous.clone(),
            vec![condition(type_, false, reason, message)],
        )
    };
    let scale_path = match (target.api_version.as_deref(), target.kind.as_str()) {
        (Some("apps/v1") | None, "Deployment") => "deployments",
        (Some("apps/v1") | None, "ReplicaSet") => "replicasets",
        _ => {
            let why = format!(
                "cannot scale {}/{}: only apps/v1 Deployments and ReplicaSets",
                target.kind, target.name
            );
            return set_status(&api, &hpa, fail("AbleToScale", "FailedGetScale", why)).await;
        }
    };
    let scale_url = format!(
        "/apis/apps/v1/namespaces/{ns}/{scale_path}/{}/scale",
        target.name
    );
    let get = http::Request::get(&scale_url)
        .body(Vec::new())
        .map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let scale: Value = match client.request(get).await {
        Ok(s) => s,
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let why = format!("{} {:?} not found", target.kind, target.name);
            return set_status(&api, &hpa, fail("AbleToScale", "FailedGetScale", why)).await;
        }
        Err(e) => return Err(e.into()),
    };
    let current = replicas_at(&scale, "/spec/replicas").unwrap_or(0);
    let selector = scale
        .pointer("/status/selector")
        .and_then(Value::as_str)
        .unwrap_or("");
    let (min, max) = (spec.min_replicas.unwrap_or(1), spec.max_replicas);
    let metrics = spec.metrics.clone().unwrap_or_default();
    let targets: Result<Vec<_>, String> = metrics.iter().map(target_of).collect();
    let targets = match targets {
        Ok(t) => t,
        Err(why) => {
            let status = fail("ScalingActive", "InvalidMetricSourceType", why);
            return set_status(&api, &hpa, status).await;
        }
    };
    if current == 0 {
        // kube: a target scaled to zero by hand turns autoscaling off.
        let why = "scaling is disabled since the replica count of the target is zero";
        let mut status = fail("ScalingActive", "ScalingDisabled", why.into());
        status.current_replicas = Some(0);
        status.desired_replicas = 0;
        return set_status(&api, &hpa, status).await;
    }
    let resources: Vec<String> = targets.iter().map(|(r, _)| r.clone()).collect();
    let readings = read(&ctx, &ns, selector, &resources).await?;
    let mut wanted = None::<i32>;
    let mut current_metrics = Vec::new();
    let mut reasons = Vec::new();
    for (resource, t) in &targets {
        let samples = readings.get(resource).map_or(&[][..], Vec::as_slice);
        let (n, now) = match replicas_for(samples, *t, current) {
            Ok(counted) => counted,
            Err(NoCount::NoMetrics) => {
                reasons.push(format!(
                    "did not receive {resource} metrics for any ready pod of the target (pods may be unready or just started)"
                ));
                continue;
            }
            Err(NoCount::MissingRequest) => {
                reasons.push(format!("missing request for {resource}"));
                continue;
            }
        };
        wanted = Some(wanted.map_or(n, |w| w.max(n)));
        let ready: Vec<f64> = samples
            .iter()
            .filter_map(|s| match s {
                Sample::Ready { usage, .. } => Some(*usage),
                _ => None,
            })
            .collect();
        let average = quantity_string(resource, ready.iter().sum::<f64>() / ready.len() as f64);
        let current = match t {
            Target::Utilization(_) => {
                json!({"averageUtilization": now.round() as i64, "averageValue": average})
            }
            Target::AverageValue(_) => json!({"averageValue": average}),
        };
        current_metrics
            .push(json!({"type": "Resource", "resource": {"name": resource, "current": current}}));
    }
    let mut status = previous.clone();
    status.current_replicas = replicas_at(&scale, "/status/replicas");
    status.observed_generation = hpa.metadata.generation;
    status.current_metrics = serde_json::from_value(Value::Array(current_metrics)).ok();
    let Some(wanted) = wanted else {
        status.desired_replicas = current;
        let status = with_conditions(
            status,
            vec![
                condition(
                    "AbleToScale",
                    true,
                    "SucceededGetScale",
                    "the HPA controller was able to get the target's current scale".into(),
                ),
                condition(
                    "ScalingActive",
                    false,
                    "FailedGetResourceMetric",
                    reasons.join("; "),
                ),
            ],
        );
        return set_status(&api, &hpa, status).await;
    };
    let window = spec
        .behavior
        .as_ref()
        .and_then(|b| b.scale_down.as_ref())
        .and_then(|d| d.stabilization_window_seconds)
        .map_or(DEFAULT_SCALE_DOWN_WINDOW, |s| {
            Duration::from_secs(s.max(0) as u64)
        });
    let (desired, limited) = {
        let mut h = ctx.history.lock().unwrap_or_else(|e| e.into_inner());
        // Deleted HPAs' recommendations go (a new one of the same name
        // starts afresh).
        let live: std::collections::HashSet<String> = ctx
            .hpas
            .state()
            .iter()
            .map(|a| {
                format!(
                    "{}/{}",
                    crate::util::namespace(&a.metadata),
                    crate::util::name(&a.metadata)
                )
            })
            .collect();
        h.retain(|key, _| live.contains(key));
        let history = h.entry(format!("{ns}/{name}")).or_default();
        decide(wanted, current, min, max, history, window, Instant::now())
    };
    if desired != current {
        let patch = json!({"spec": {"replicas": desired}});
        let req = http::Request::patch(&scale_url)
            .header("Content-Type", "application/merge-patch+json")
            .body(serde_json::to_vec(&patch).unwrap_or_default())
            .map_err(|e| Error::InvalidSpec(e.to_string()))?;
        let _: Value = client.request(req).await?;
        let reason = if desired > current { "above" } else { "below" };
        crate::events::record(
            client,
            hpa.as_ref(),
            "horizontal-pod-autoscaler",
            false,
            "SuccessfulRescale",
            format!(
                "New size: {desired}; reason: {} resource utilization {reason} target",
                resources.join(", ")
            ),
        );
        status.last_scale_time = Some(crate::util::now());
    }
    status.desired_replicas = desired;
    let status = with_conditions(
        status,
        vec![
            condition(
                "AbleToScale",
                true,
                "SucceededRescale",
                "the HPA controller was able to update the target scale".into(),
            ),
            condition(
                "ScalingActive",
                true,
                "ValidMetricFound",
                "the HPA was able to successfully calculate a replica count".into(),
            ),
            condition(
                "ScalingLimited",
                limited,
                match (limited, desired > wanted) {
                    (false, _) => "DesiredWithinRange",
                    (true, true) => "TooFewReplicas",
                    (true, false) => "TooManyReplicas",
                },
                if limited {
                    format!("the desired replica count {wanted} was limited to {desired}")
                } else {
                    "the desired count is within the acceptable range".into()
                },
            ),
        ],
    );
    set_status(&api, &hpa, status).await
}

fn policy(hpa: Arc<HorizontalPodAutoscaler>, e: &Error, ctx: Arc<Ctx>) -> Action {
    crate::error_policy(hpa, e, ctx.shared.clone())
}

pub async fn run(shared: Arc<Shared>, informers: &crate::Informers) {
    let ctx = Arc::new(Ctx {
        shared,
        history: Mutex::default(),
        hpas: informers.hpas.store(),
    });
    Controller::for_shared_stream(informers.hpas.subscribe(), informers.hpas.store())
        .reconcile_all_on(crate::ticks(SYNC_PERIOD))
        .run(
            crate::metrics::metered("horizontalpodautoscaler", &ctx.shared.cfg.stats, reconcile),
            policy,
            ctx,
        )
        .for_each(|_| async {})
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(usage: f64, requests: f64) -> Sample {
        Sample::Ready { usage, requests }
    }

    #[test]
    fn utilization_scales_by_the_ratio_outside_the_tolerance() {
        let util = Target::Utilization(50);
        // One pod at 500m of 250m requested, target 50 %: 200 % -> 4 pods.
        assert_eq!(
            replicas_for(&[ready(500.0, 250.0)], util, 1),
            Ok((4, 200.0))
        );
        // 54 % against 50 % is inside the 10 % tolerance: stay.
        let four = [ready(135.0, 250.0); 4];
        assert_eq!(replicas_for(&four, util, 4).unwrap().0, 4);
        // Idle: scale down to what the usage needs (0 -> the floor later).
        assert_eq!(replicas_for(&[ready(0.0, 250.0); 4], util, 4).unwrap().0, 0);
        let avg = Target::AverageValue(100.0);
        assert_eq!(
            replicas_for(&[ready(300.0, 0.0); 3], avg, 3),
            Ok((9, 300.0))
        );
        // Nothing measured, or nothing requested, is no count at all.
        let missing = [Sample::Missing { requests: 250.0 }];
        assert_eq!(replicas_for(&missing, util, 1), Err(NoCount::NoMetrics));
        assert_eq!(
            replicas_for(&[ready(100.0, 0.0)], util, 1),
            Err(NoCount::MissingRequest)
        );
    }

    /// kube's replica calculator: unready pods count as idle only when
    /// scaling up, pods without metrics as idle on a scale-up and fully
    /// busy on a scale-down, and a count that would turn the direction
    /// around keeps the replicas.
    #[test]
    fn unready_and_unmeasured_pods_count_as_kube_counts_them() {
        let util = Target::Utilization(50);
        let unready = Sample::Unready { requests: 100.0 };
        let missing = Sample::Missing { requests: 100.0 };
        // Scale-up: 2 ready at 100 % (ratio 2) and 2 unready counted idle:
        // 200 / 400 = 50 % -> ratio 1: within tolerance, stay at 4.
        let s = [ready(100.0, 100.0), ready(100.0, 100.0), unready, unready];
        assert_eq!(replicas_for(&s, util, 4), Ok((4, 100.0)));
        // Hotter ready pods still scale up: 2 x 200 % + 2 idle = 100 % -> 8.
        let s = [ready(200.0, 100.0), ready(200.0, 100.0), unready, unready];
        assert_eq!(replicas_for(&s, util, 4).unwrap().0, 8);
        // Scale-down ignores unready pods: 2 ready at 10 % -> ratio 0.2 x 2.
        let s = [ready(10.0, 100.0), ready(10.0, 100.0), unready, unready];
        assert_eq!(replicas_for(&s, util, 4).unwrap().0, 1);
        // Scale-down with pods unmeasured: they count at 100 % of their
        // request, (10 + 10 + 100 + 100) / 400 = 55 % -> within tolerance.
        let s = [ready(10.0, 100.0), ready(10.0, 100.0), missing, missing];
        assert_eq!(replicas_for(&s, util, 4).unwrap().0, 4);
        // Scale-up with pods unmeasured: they count as idle, 300 / 200 =
        // 150 % -> ratio 3 over 2 pods.
        let s = [ready(300.0, 100.0), missing];
        assert_eq!(replicas_for(&s, util, 2), Ok((6, 300.0)));
        // Would flip: 1 ready at 60 % (ratio 1.2) with 3 unmeasured counted
        // idle is 15 % (ratio 0.3): no change rather than a scale-down.
        let s = [ready(60.0, 100.0), missing, missing, missing];
        assert_eq!(replicas_for(&s, util, 4).unwrap().0, 4);
        // AverageValue: an unmeasured pod on a scale-down counts as the target.
        let s = [ready(10.0, 0.0), missing];
        assert_eq!(
            replicas_for(&s, Target::AverageValue(100.0), 2).unwrap().0,
            2
        );
    }

    fn pod(phase: &str, ready: &str, started_ago: i64, ready_ago: i64, now: Timestamp) -> Pod {
        let t = |ago: i64| (now - k8s_openapi::jiff::SignedDuration::from_secs(ago)).to_string();
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "resources": {"requests": {"cpu": "200m", "memory": "64Mi"}}},
                {"name": "b", "resources": {"requests": {"cpu": "50m"}}},
            ]},
            "status": {
                "phase": phase,
                "startTime": t(started_ago),
                "conditions": [{"type": "Ready", "status": ready, "lastTransitionTime": t(ready_ago)}],
            },
        }))
        .unwrap()
    }

    #[test]
    fn pods_are_grouped_as_kube_groups_them() {
        let now = Timestamp::now();
        let ago = |s: i64| now - k8s_openapi::jiff::SignedDuration::from_secs(s);
        let w = Duration::from_secs(10);
        let m = |at| Some((120.0, at, w));
        let cpu = |p: &Pod, metric| sample_of(p, "cpu", metric, now);
        let busy = Sample::Ready {
            usage: 120.0,
            requests: 250.0,
        };
        let unready = Sample::Unready { requests: 250.0 };
        // Requests are summed over the containers.
        assert_eq!(
            cpu(&pod("Running", "True", 600, 590, now), m(now)),
            Some(busy)
        );
        assert_eq!(
            sample_of(
                &pod("Running", "True", 600, 590, now),
                "memory",
                m(now),
                now
            ),
            Some(Sample::Ready {
                usage: 120.0,
                requests: 64.0 * 1024.0 * 1024.0
            })
        );
        // Failed or being deleted: not counted at all.
        assert_eq!(cpu(&pod("Failed", "False", 600, 590, now), m(now)), None);
        let mut deleted = pod("Running", "True", 600, 590, now);
        deleted.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert_eq!(cpu(&deleted, m(now)), None);
        // Pending: unready; no metrics: missing.
        assert_eq!(
            cpu(&pod("Pending", "False", 5, 5, now), m(now)),
            Some(unready)
        );
        assert_eq!(
            cpu(&pod("Running", "True", 600, 590, now), None),
            Some(Sample::Missing { requests: 250.0 })
        );
        // Young pods: a sample counts once it covers a window of readiness.
        let young = pod("Running", "True", 60, 20, now);
        assert_eq!(cpu(&young, m(now)), Some(busy));
        assert_eq!(
            cpu(&young, m(ago(15))),
            Some(unready),
            "measured before ready + window"
        );
        assert_eq!(
            cpu(&pod("Running", "False", 60, 20, now), m(now)),
            Some(unready)
        );
        // Older pods: unready only if never ready since start.
        assert_eq!(
            cpu(&pod("Running", "False", 600, 590, now), m(now)),
            Some(unready)
        );
        assert_eq!(
            cpu(&pod("Running", "False", 600, 100, now), m(now)),
            Some(busy)
        );
        // Memory does not wait for readiness.
        assert!(matches!(
            sample_of(&pod("Running", "False", 60, 20, now), "memory", m(now), now),
            Some(Sample::Ready { .. })
        ));
        assert_eq!(seconds("10.012s"), Some(Duration::from_millis(10_012)));
        assert_eq!(seconds("1m"), None);
    }

    #[test]
    fn conditions_keep_their_transition_time_while_their_status_stays() {
        let old = crate::util::now();
        let mut first = condition("ScalingActive", true, "ValidMetricFound", "ok".into());
        first.last_transition_time = Some(old.clone());
        let status = HorizontalPodAutoscalerStatus {
            conditions: Some(vec![first]),
            ..Default::default()
        };
        let later = |ok| {
            with_conditions(
                status.clone(),
                vec![condition("ScalingActive", ok, "R", "m".into())],
            )
        };
        let kept = later(true).conditions.unwrap();
        assert_eq!(kept[0].last_transition_time, Some(old.clone()));
        assert_eq!(kept[0].reason.as_deref(), Some("R"));
        std::thread::sleep(Duration::from_millis(1100));
        let flipped = later(false).conditions.unwrap();
        assert_ne!(flipped[0].last_transition_time, Some(old));
    }

    #[test]
    fn decisions_clamp_limit_and_stabilize() {
        let t0 = Instant::now();
        let w = Duration::from_secs(300);
        let mut h = VecDeque::new();
        // Bounds.
        assert_eq!(decide(10, 2, 1, 5, &mut h, w, t0), (5, true));
        // Scale-up rate: max(2×, +4) per period.
        let mut h = VecDeque::new();
        assert_eq!(decide(50, 10, 1, 100, &mut h, w, t0), (20, true));
        // Scale-down waits for the window's highest recommendation.
        let mut h = VecDeque::new();
        assert_eq!(decide(4, 1, 1, 10, &mut h, w, t0), (4, false));
        assert_eq!(
            decide(1, 4, 1, 10, &mut h, w, t0 + Duration::from_secs(15)),
            (4, false)
        );
        assert_eq!(
            decide(1, 4, 1, 10, &mut h, w, t0 + Duration::from_secs(316)),
            (1, false)
        );
        // Huge replica counts do not overflow the rate limit.
        let mut h = VecDeque::new();
        assert_eq!(
            decide(i32::MAX, i32::MAX - 1, 1, i32::MAX, &mut h, w, t0),
            (i32::MAX, false)
        );
        // A zero window scales down at once, to the floor.
        let mut h = VecDeque::new();
        assert_eq!(decide(0, 4, 1, 10, &mut h, Duration::ZERO, t0), (1, true));
    }
}
