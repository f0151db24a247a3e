//! Resource quantities as the scheduler counts them: CPU in millicores,
//! memory in bytes, and a pod count; a pod's effective requests computed
//! the way kube does (containers summed, init containers as a maximum,
//! plus overhead).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// What a container without a CPU request counts as when scoring (kube's
/// `DefaultMilliCPURequest`), so best-effort pods still spread.
pub const DEFAULT_MILLI_CPU: i64 = 100;
/// The memory counterpart (kube's `DefaultMemoryRequest`, 200 MiB).
pub const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// Amounts of the resources the scheduler fits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.pods += o.pods;
    }

    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.pods -= o.pods;
    }

    fn max(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
    }

    /// A node's `status.allocatable` (falling back to `capacity`).
    pub fn from_list(list: Option<&BTreeMap<String, Quantity>>) -> Resources {
        let mut r = Resources::default();
        let Some(list) = list else { return r };
        if let Some(q) = list.get("cpu") {
            r.milli_cpu = parse_milli(&q.0).unwrap_or(0);
        }
        if let Some(q) = list.get("memory") {
            r.memory = parse_quantity(&q.0).unwrap_or(0);
        }
        if let Some(q) = list.get("pods") {
            r.pods = parse_quantity(&q.0).unwrap_or(0);
        }
        r
    }
}

/// A pod's requests: `(actual, non_zero)` where `non_zero` substitutes the
/// scoring defaults for containers that request nothing. Both count one pod.
pub fn pod_requests(spec: &PodSpec) -> (Resources, Resources) {
    let mut actual = Resources::default();
    let mut non_zero = Resources::default();
    for c in &spec.containers {
        let (a, n) = container_requests(c);
        actual.add(&a);
        non_zero.add(&n);
    }
    // Init containers run one at a time before the app containers, so a pod
    // needs the largest of them (sidecars with restartPolicy Always keep
    // running, which this simplification ignores).
    for c in spec.init_containers.iter().flatten() {
        let (a, n) = container_requests(c);
        actual.max(&a);
        non_zero.max(&n);
    }
    if let Some(overhead) = &spec.overhead {
        let o = Resources::from_list(Some(overhead));
        actual.add(&o);
        non_zero.add(&o);
    }
    actual.pods = 1;
    non_zero.pods = 1;
    (actual, non_zero)
}

fn container_requests(c: &Container) -> (Resources, Resources) {
    let res = c.resources.as_ref();
    // Limits without requests default the requests (API defaulting does
    // this too; doing it here keeps unsynced objects right).
    let get = |name: &str| {
        res.and_then(|r| r.requests.as_ref().and_then(|m| m.get(name)))
            .or_else(|| res.and_then(|r| r.limits.as_ref().and_then(|m| m.get(name))))
    };
    let cpu = get("cpu").and_then(|q| parse_milli(&q.0));
    let mem = get("memory").and_then(|q| parse_quantity(&q.0));
    let actual = Resources {
        milli_cpu: cpu.unwrap_or(0),
        memory: mem.unwrap_or(0),
        pods: 0,
    };
    let non_zero = Resources {
        milli_cpu: cpu.unwrap_or(DEFAULT_MILLI_CPU),
        memory: mem.unwrap_or(DEFAULT_MEMORY),
        pods: 0,
    };
    (actual, non_zero)
}

/// A quantity in whole units, rounded up ("1Gi" → 1073741824, "500m" → 1).
pub fn parse_quantity(s: &str) -> Option<i64> {
    scaled(s, 0)
}

/// A quantity in thousandths, rounded up ("100m" → 100, "2" → 2000).
pub fn parse_milli(s: &str) -> Option<i64> {
    scaled(s, 3)
}

/// Parses Kubernetes' quantity grammar (`<number><suffix>`, suffixes
/// binary Ki..Ei, decimal n u m k M G T P E, or an exponent `e3`) and
/// returns the value times `10^decimals`, rounded up like kube's `Value()`.
fn scaled(s: &str, decimals: i32) -> Option<i64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return None;
    }
    let (neg, num) = match num.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, num.strip_prefix('+').unwrap_or(num)),
    };
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    if !int_part
        .chars()
        .chain(frac_part.chars())
        .all(|c| c.is_ascii_digit())
    {
        return None;
    }
    // mantissa = digits as an integer, value = mantissa * 10^exp10 * 2^exp2
    let digits = format!("{int_part}{frac_part}");
    let mantissa: i128 = digits.parse().ok()?;
    let mut exp10: i32 = -(frac_part.len() as i32) + decimals;
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        e if e.starts_with(['e', 'E']) => exp10 += e[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    let mut v = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    if exp10 >= 0 {
        v = v.checked_mul(10i128.checked_pow(exp10 as u32)?)?;
    } else {
        let d = 10i128.checked_pow((-exp10) as u32)?;
        v = (v + d - 1) / d;
    }
    let v = i64::try_from(v).ok()?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ResourceRequirements;

    #[test]
    fn quantities() {
        assert_eq!(parse_milli("100m"), Some(100));
        assert_eq!(parse_milli("2"), Some(2000));
        assert_eq!(parse_milli("0.5"), Some(500));
        assert_eq!(parse_milli("1.5k"), Some(1_500_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("128Mi"), Some(128 << 20));
        assert_eq!(parse_quantity("1G"), Some(1_000_000_000));
        assert_eq!(parse_quantity("1e3"), Some(1000));
        assert_eq!(parse_quantity("500m"), Some(1), "rounds up like kube");
        assert_eq!(parse_quantity("110"), Some(110));
        assert_eq!(parse_quantity("12X"), None);
        assert_eq!(parse_quantity(""), None);
        assert_eq!(parse_quantity("Gi"), None);
    }

    fn container(cpu: Option<&str>, mem: Option<&str>) -> Container {
        let mut req = BTreeMap::new();
        if let Some(c) = cpu {
            req.insert("cpu".to_string(), Quantity(c.into()));
        }
        if let Some(m) = mem {
            req.insert("memory".to_string(), Quantity(m.into()));
        }
        Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                requests: Some(req),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn pod_requests_sum_containers_max_init() {
        let spec = PodSpec {
            containers: vec![container(Some("100m"), Some("1Gi")), container(None, None)],
            init_containers: Some(vec![container(Some("2"), None)]),
            ..Default::default()
        };
        let (a, n) = pod_requests(&spec);
        assert_eq!(
            a,
            Resources {
                milli_cpu: 2000,
                memory: 1 << 30,
                pods: 1
            }
        );
        assert_eq!(n.milli_cpu, 2000);
        assert_eq!(n.memory, (1 << 30) + DEFAULT_MEMORY);
    }
}
