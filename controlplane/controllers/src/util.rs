//! Helpers every controller shares: label selectors, controller references,
//! pod state predicates, kube's name suffixes and time stamps.

use std::collections::BTreeMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicU64, Ordering};

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use k8s_openapi::jiff::Timestamp;

/// Whether `labels` match `sel` (`skiff-selectors`, kube's semantics). An
/// empty selector matches everything, as in kube; a missing or invalid one
/// nothing.
pub fn selector_matches(
    sel: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = sel.map(skiff_selectors::LabelSelector::from_typed) else {
        return false;
    };
    let empty = BTreeMap::new();
    sel.is_ok_and(|s| s.matches_labels(labels.unwrap_or(&empty)))
}

/// The owner reference with `controller: true`, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
}

/// A controller reference to an owner (blocks the owner's foreground
/// deletion, like kube's controllers set it).
pub fn controller_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

pub fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

pub fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

pub fn uid(meta: &ObjectMeta) -> &str {
    meta.uid.as_deref().unwrap_or_default()
}

pub fn deleting(meta: &ObjectMeta) -> bool {
    meta.deletion_timestamp.is_some()
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

/// Neither finished nor being deleted: what kube's controllers count.
pub fn pod_active(pod: &Pod) -> bool {
    !matches!(phase(pod), "Succeeded" | "Failed") && !deleting(&pod.metadata)
}

pub fn pod_succeeded(pod: &Pod) -> bool {
    phase(pod) == "Succeeded"
}

pub fn pod_failed(pod: &Pod) -> bool {
    phase(pod) == "Failed"
}

fn ready_condition(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

pub fn pod_ready(pod: &Pod) -> bool {
    ready_condition(pod).is_some_and(|c| c.status == "True")
}

/// Ready for at least `min_ready` seconds at `now`.
pub fn pod_available(pod: &Pod, min_ready: i32, now: Timestamp) -> bool {
    let Some(c) = ready_condition(pod).filter(|c| c.status == "True") else {
        return false;
    };
    if min_ready <= 0 {
        return true;
    }
    c.last_transition_time.as_ref().is_some_and(|t| {
        t.0 + k8s_openapi::jiff::SignedDuration::from_secs(i64::from(min_ready)) <= now
    })
}

pub fn pod_node(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .unwrap_or_default()
}

/// How long from `now` until `t` (zero if past).
pub fn until(t: Timestamp, now: Timestamp) -> std::time::Duration {
    std::time::Duration::try_from(t.duration_since(now)).unwrap_or_default()
}

pub fn now() -> Time {
    Time(Timestamp::now())
}

/// kube's name suffix alphabet (no vowels, no confusable digits).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `n` random characters as in kube's generated names.
pub fn random_suffix(n: usize) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut x = h.finish();
    (0..n)
        .map(|_| {
            let c = ALPHANUMS[(x % ALPHANUMS.len() as u64) as usize] as char;
            x /= ALPHANUMS.len() as u64;
            c
        })
        .collect()
}

/// kube's SafeEncodeString: each byte of `s` mapped into [`ALPHANUMS`].
pub fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[b as usize % ALPHANUMS.len()] as char)
        .collect()
}

/// FNV-1a, 32 bits (the hash kube uses for pod-template-hash).
pub fn fnv32a(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// `<prefix>-<5 random>` shortened like kube's generateName.
pub fn generate_name(prefix: &str) -> String {
    let p = if prefix.len() > 57 {
        &prefix[..57]
    } else {
        prefix
    };
    format!("{p}-{}", random_suffix(5))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(
            Some(&sel),
            Some(&labels(&[("app", "web")]))
        ));
        assert!(!selector_matches(
            Some(&sel),
            Some(&labels(&[("app", "web"), ("tier", "db")]))
        ));
        assert!(!selector_matches(
            Some(&sel),
            Some(&labels(&[("app", "x")]))
        ));
        assert!(!selector_matches(None, Some(&labels(&[("app", "web")]))));
        assert!(selector_matches(Some(&LabelSelector::default()), None));
    }

    #[test]
    fn names() {
        let s = random_suffix(5);
        assert_eq!(s.len(), 5);
        assert!(s.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert_ne!(random_suffix(10), random_suffix(10));
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(safe_encode("0"), "4");
        assert!(generate_name(&"x".repeat(80)).len() <= 63);
    }
}
