//! Leader election over a coordination.k8s.io Lease, as kube's
//! client-go leaderelection does it: the holder renews `renewTime` every
//! retry period; others take over once `renewTime + leaseDurationSeconds`
//! has passed. Every write is a replace carrying the read resourceVersion,
//! so two candidates racing for an expired lease cannot both win.
//! (client-go measures expiry on the observer's clock to tolerate skew;
//! this uses the lease's timestamps, fine for replicas on one host or
//! synchronized clocks.)

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// Where and how to elect.
#[derive(Debug, Clone)]
pub struct LeaderElection {
    /// The component, for log lines (e.g. `"scheduler"`).
    pub component: &'static str,
    pub namespace: String,
    pub name: String,
    /// Unique per replica.
    pub identity: String,
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long steps down.
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderElection {
    /// kube's component defaults for Lease `kube-system/<lease>`: 15 s
    /// lease, 10 s renew deadline, 2 s retry.
    pub fn kube_defaults(
        component: &'static str,
        lease: &str,
        identity: impl Into<String>,
    ) -> LeaderElection {
        LeaderElection {
            component,
            namespace: "kube-system".into(),
            name: lease.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A replica identity: host name, process id and start time.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}_{}_{nanos:08x}", std::process::id())
}

/// Whether the lease, as read, lets `identity` take or keep it at `now`.
pub fn may_hold(spec: &LeaseSpec, identity: &str, now: Timestamp) -> bool {
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let (Some(renew), Some(secs)) = (&spec.renew_time, spec.lease_duration_seconds) else {
        return true;
    };
    renew.0 + SignedDuration::from_secs(i64::from(secs)) < now
}

/// One attempt to take or renew the lease: `Ok(true)` when we hold it.
pub async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaderElection,
) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let secs = i32::try_from(cfg.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&cfg.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.is_already_exists() => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if !may_hold(spec, &cfg.identity, now) {
        return Ok(false);
    }
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(MicroTime(now));
    spec.lease_duration_seconds = Some(secs);
    match api.replace(&cfg.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        // Someone else wrote first.
        Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}

/// Waits until this replica holds the lease.
pub async fn acquire(api: &Api<Lease>, cfg: &LeaderElection) {
    loop {
        match try_acquire_or_renew(api, cfg).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => tracing::warn!(component = %cfg.component, error = %e, "leader election"),
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

/// Keeps renewing; returns when leadership is lost (another holder, or no
/// successful renewal within the renew deadline).
pub async fn hold(api: &Api<Lease>, cfg: &LeaderElection) {
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(cfg.retry_period).await;
        match try_acquire_or_renew(api, cfg).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(component = %cfg.component, error = %e, "renewing the leader lease");
                if renewed.elapsed() > cfg.renew_deadline {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_rules() {
        let now = Timestamp::now();
        let spec = |holder: &str, ago: i64| LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(now - SignedDuration::from_secs(ago))),
            ..Default::default()
        };
        assert!(may_hold(&spec("me", 1), "me", now));
        assert!(!may_hold(&spec("other", 1), "me", now));
        assert!(may_hold(&spec("other", 16), "me", now), "expired");
        assert!(may_hold(&spec("", 1), "me", now), "released");
        assert!(may_hold(&LeaseSpec::default(), "me", now));
    }
}
