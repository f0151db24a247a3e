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
//! highest recommendation of the window wins. Only pods that are Running,
//! not being deleted and measured count (kube also treats unready and
//! unmeasured pods conservatively; here they are left out). Other metric
//! types and custom scaling policies are not supported: the HPA says so in
//! its `ScalingActive` condition.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::api::autoscaling::v2::{
    HorizontalPodAutoscaler, HorizontalPodAutoscalerCondition, HorizontalPodAutoscalerStatus,
    MetricSpec,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use serde_json::{Value, json};
use skiff_scheduler::resources::{parse_milli, parse_quantity};

use crate::{Error, Shared};

/// How often each HPA is evaluated (kube's
/// `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_PERIOD: Duration = Duration::from_secs(15);
/// No scaling while usage is within this fraction of the target.
const TOLERANCE: f64 = 0.1;
const DEFAULT_SCALE_DOWN_WINDOW: Duration = Duration::from_secs(300);

/// One metric's reading over the measured pods.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// "cpu" or "memory".
    pub resource: String,
    /// Summed usage (millicores, or bytes) of the measured pods.
    pub usage: f64,
    /// Summed requests of the same pods, for `Utilization` targets.
    pub requests: f64,
    pub pods: u32,
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
/// current value to report (utilization percent or average value).
pub fn replicas_for(reading: &Reading, target: Target, current: i32) -> (i32, f64) {
    let pods = f64::from(reading.pods.max(1));
    let (ratio, now) = match target {
        Target::Utilization(pct) => {
            let util = 100.0 * reading.usage / reading.requests;
            (util / f64::from(pct), util)
        }
        Target::AverageValue(v) => {
            let avg = reading.usage / pods;
            (avg / v, avg)
        }
    };
    if (ratio - 1.0).abs() <= TOLERANCE {
        return (current, now);
    }
    ((ratio * pods).ceil() as i32, now)
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
    /// Recommendations per HPA (namespace/name), for stabilization.
    history: Mutex<HashMap<String, VecDeque<(Instant, i32)>>>,
}

/// What the target's pods use and request, per resource, summed over the
/// pods that are Running, not being deleted and measured.
async fn read(
    ctx: &Ctx,
    ns: &str,
    selector: &str,
    resources: &[String],
) -> Result<BTreeMap<String, Reading>, Error> {
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
    let usage: HashMap<&str, &Value> = metrics["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m.pointer("/metadata/name")?.as_str()?, &m["containers"])))
        .collect();
    let mut out = BTreeMap::new();
    for resource in resources {
        let mut r = Reading {
            resource: resource.clone(),
            usage: 0.0,
            requests: 0.0,
            pods: 0,
        };
        for pod in &pods {
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let name = pod.metadata.name.as_deref().unwrap_or_default();
            let Some(containers) = usage.get(name) else {
                continue;
            };
            if !running || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            r.pods += 1;
            for c in containers.as_array().into_iter().flatten() {
                let q = c
                    .pointer(&format!("/usage/{resource}"))
                    .and_then(Value::as_str);
                r.usage += q.and_then(|q| quantity(resource, q)).unwrap_or(0.0);
            }
            for c in pod.spec.iter().flat_map(|s| &s.containers) {
                let q = c
                    .resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .and_then(|r| r.get(resource.as_str()));
                r.requests += q.and_then(|q| quantity(resource, &q.0)).unwrap_or(0.0);
            }
        }
        out.insert(resource.clone(), r);
    }
    Ok(out)
}

/// A replica count in the scale subresource, within `0..=i32::MAX`.
fn replicas_at(scale: &Value, path: &str) -> Option<i32> {
    let n = scale.pointer(path)?.as_i64()?;
    Some(n.clamp(0, i64::from(i32::MAX)) as i32)
}

/// A quantity of `resource`: millicores for cpu, plain units (bytes) else.
fn quantity(resource: &str, q: &str) -> Option<f64> {
    let v = if resource == "cpu" {
        parse_milli(q)
    } else {
        parse_quantity(q)
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
        let Some(r) = readings.get(resource).filter(|r| r.pods > 0) else {
            reasons.push(format!("no {resource} metrics for the pods yet"));
            continue;
        };
        if matches!(t, Target::Utilization(_)) && r.requests <= 0.0 {
            reasons.push(format!("missing request for {resource}"));
            continue;
        }
        let (n, now) = replicas_for(r, *t, current);
        wanted = Some(wanted.map_or(n, |w| w.max(n)));
        let average = quantity_string(resource, r.usage / f64::from(r.pods));
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

    fn cpu(usage_m: f64, requests_m: f64, pods: u32) -> Reading {
        Reading {
            resource: "cpu".into(),
            usage: usage_m,
            requests: requests_m,
            pods,
        }
    }

    #[test]
    fn utilization_scales_by_the_ratio_outside_the_tolerance() {
        // One pod at 500m of 250m requested, target 50 %: 200 % → 4 pods.
        assert_eq!(
            replicas_for(&cpu(500.0, 250.0, 1), Target::Utilization(50), 1),
            (4, 200.0)
        );
        // 54 % against 50 % is inside the 10 % tolerance: stay.
        assert_eq!(
            replicas_for(&cpu(540.0, 1000.0, 4), Target::Utilization(50), 4).0,
            4
        );
        // Idle: scale down to what the usage needs (0 → the floor later).
        assert_eq!(
            replicas_for(&cpu(0.0, 1000.0, 4), Target::Utilization(50), 4).0,
            0
        );
        assert_eq!(
            replicas_for(&cpu(900.0, 0.0, 3), Target::AverageValue(100.0), 3),
            (9, 300.0)
        );
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
