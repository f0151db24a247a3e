//! Node messages as API objects: the Node (spec, labels, status), the node
//! Lease, pod status and Events. Pure functions from protocol values to the
//! JSON the API server stores.

use serde_json::{Map, Value, json};
use skiff_apiserver::node_may_set_label;
use skiff_node_proto as proto;

use crate::timefmt::{micro_time, now_millis, time};

/// Kubernetes' quantity spelling for millicores.
pub fn cpu_quantity(millis: u64) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes as the largest exact binary suffix (`Ki`, `Mi`, `Gi`), as kubelet
/// reports them.
pub fn bytes_quantity(b: u64) -> String {
    for (suffix, unit) in [("Gi", 1u64 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
        if b >= unit && b.is_multiple_of(unit) {
            return format!("{}{suffix}", b / unit);
        }
    }
    b.to_string()
}

pub fn resources(r: &proto::Resources) -> Value {
    json!({
        "cpu": cpu_quantity(r.cpu_millis),
        "memory": bytes_quantity(r.memory_bytes),
        "pods": r.pods.to_string(),
        "ephemeral-storage": bytes_quantity(r.ephemeral_storage_bytes),
    })
}

fn address_type(k: proto::AddressKind) -> &'static str {
    match k {
        proto::AddressKind::InternalIP => "InternalIP",
        proto::AddressKind::ExternalIP => "ExternalIP",
        proto::AddressKind::Hostname => "Hostname",
        proto::AddressKind::InternalDNS => "InternalDNS",
        proto::AddressKind::ExternalDNS => "ExternalDNS",
    }
}

/// The boot id as a UUID string (kube's `bootID` format).
pub fn boot_id(b: &[u8; 16]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The Node object a registering node creates.
pub fn node_object(info: &proto::NodeInfo) -> Value {
    let mut labels = Map::new();
    for (k, v) in info.labels.iter().filter(|(k, _)| node_may_set_label(k)) {
        labels.insert(k.clone(), json!(v));
    }
    labels.insert("kubernetes.io/hostname".into(), json!(info.name));
    labels.insert("kubernetes.io/os".into(), json!("skiff"));
    labels.insert("kubernetes.io/arch".into(), json!(info.architecture));
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": info.name, "labels": labels},
        "spec": {},
    })
}

pub fn condition_status(s: proto::ConditionStatus) -> &'static str {
    match s {
        proto::ConditionStatus::True => "True",
        proto::ConditionStatus::False => "False",
        proto::ConditionStatus::Unknown => "Unknown",
    }
}

fn node_condition_type(t: proto::NodeConditionType) -> &'static str {
    match t {
        proto::NodeConditionType::Ready => "Ready",
        proto::NodeConditionType::MemoryPressure => "MemoryPressure",
        proto::NodeConditionType::DiskPressure => "DiskPressure",
        proto::NodeConditionType::PIDPressure => "PIDPressure",
        proto::NodeConditionType::NetworkUnavailable => "NetworkUnavailable",
    }
}

pub fn node_conditions(cs: &[proto::NodeCondition]) -> Value {
    Value::Array(
        cs.iter()
            .map(|c| {
                json!({
                    "type": node_condition_type(c.kind),
                    "status": condition_status(c.status),
                    "reason": c.reason,
                    "message": c.message,
                    "lastHeartbeatTime": time(c.last_heartbeat),
                    "lastTransitionTime": time(c.last_transition),
                })
            })
            .collect(),
    )
}

/// Ready=True plus the pressure conditions at False: what a registering
/// node reports until it sends its own [`proto::NodeStatus`].
pub fn initial_conditions() -> Vec<proto::NodeCondition> {
    let now = now_millis();
    let c = |kind, status, reason: &str, message: &str| proto::NodeCondition {
        kind,
        status,
        reason: reason.into(),
        message: message.into(),
        last_heartbeat: now,
        last_transition: now,
    };
    use proto::ConditionStatus::{False, True};
    use proto::NodeConditionType::*;
    vec![
        c(
            MemoryPressure,
            False,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        c(
            DiskPressure,
            False,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
        ),
        c(
            PIDPressure,
            False,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
        ),
        c(
            Ready,
            True,
            "KubeletReady",
            "kubelet is posting ready status",
        ),
    ]
}

/// The Node status a registration sets (a merge patch body for
/// `nodes/<name>/status`).
pub fn node_status_patch(info: &proto::NodeInfo, conditions: &[proto::NodeCondition]) -> Value {
    let addresses: Vec<Value> = info
        .addresses
        .iter()
        .map(|a| json!({"type": address_type(a.kind), "address": a.address}))
        .collect();
    json!({"status": {
        "capacity": resources(&info.capacity),
        "allocatable": resources(&info.allocatable),
        "addresses": addresses,
        "conditions": node_conditions(conditions),
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": boot_id(&info.boot_id).replace('-', ""),
            "systemUUID": boot_id(&info.boot_id),
            "bootID": boot_id(&info.boot_id),
            "kernelVersion": info.kernel_version,
            "osImage": info.os_image,
            "containerRuntimeVersion": info.runtime_version,
            "kubeletVersion": concat!("v1.33.0-skiff-", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": "skiff",
            "architecture": info.architecture,
        },
    }})
}

/// A later [`proto::NodeStatus`] as a merge patch.
pub fn node_status_update(s: &proto::NodeStatus) -> Value {
    json!({"status": {
        "capacity": resources(&s.capacity),
        "allocatable": resources(&s.allocatable),
        "conditions": node_conditions(&s.conditions),
    }})
}

/// The node Lease `kube-node-lease/<node>`.
pub fn lease_object(node: &str, node_uid: &str, duration_secs: u32, renew: u64) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": duration_secs,
            "renewTime": micro_time(renew),
        },
    })
}

pub fn lease_renew_patch(node: &str, duration_secs: u32, renew: u64) -> Value {
    json!({"spec": {
        "holderIdentity": node,
        "leaseDurationSeconds": duration_secs,
        "renewTime": micro_time(renew),
    }})
}

fn phase(p: proto::PodPhase) -> &'static str {
    match p {
        proto::PodPhase::Pending => "Pending",
        proto::PodPhase::Running => "Running",
        proto::PodPhase::Succeeded => "Succeeded",
        proto::PodPhase::Failed => "Failed",
        proto::PodPhase::Unknown => "Unknown",
    }
}

fn pod_condition_type(t: proto::PodConditionType) -> &'static str {
    match t {
        proto::PodConditionType::PodScheduled => "PodScheduled",
        proto::PodConditionType::Initialized => "Initialized",
        proto::PodConditionType::ContainersReady => "ContainersReady",
        proto::PodConditionType::Ready => "Ready",
    }
}

fn container_state(s: &proto::ContainerState) -> Value {
    match s {
        proto::ContainerState::Waiting { reason, message } => {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"waiting": w})
        }
        proto::ContainerState::Running { started_at } => {
            json!({"running": {"startedAt": time(*started_at)}})
        }
        proto::ContainerState::Terminated {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => {
            let mut t = json!({
                "exitCode": exit_code,
                "reason": reason,
                "finishedAt": time(*finished_at),
            });
            if let Some(m) = message {
                t["message"] = json!(m);
            }
            if let Some(s) = started_at {
                t["startedAt"] = json!(time(*s));
            }
            json!({"terminated": t})
        }
    }
}

fn container_statuses(cs: &[proto::ContainerStatus]) -> Value {
    Value::Array(
        cs.iter()
            .map(|c| {
                let mut v = json!({
                    "name": c.name,
                    "state": container_state(&c.state),
                    "lastState": c.last_state.as_ref().map(container_state).unwrap_or(json!({})),
                    "ready": c.ready,
                    "started": c.started,
                    "restartCount": c.restart_count,
                    "image": c.image,
                    "imageID": c.image_id,
                });
                if !c.container_id.is_empty() {
                    v["containerID"] = json!(c.container_id);
                }
                v
            })
            .collect(),
    )
}

/// A merge patch for `pods/<name>/status`. Lists are replaced whole, which
/// is right: the node always sends the complete status.
pub fn pod_status_patch(s: &proto::PodStatus) -> Value {
    let conditions: Vec<Value> = s
        .conditions
        .iter()
        .map(|c| {
            let mut v = json!({
                "type": pod_condition_type(c.kind),
                "status": condition_status(c.status),
                "lastTransitionTime": time(c.last_transition),
            });
            if let Some(r) = &c.reason {
                v["reason"] = json!(r);
            }
            if let Some(m) = &c.message {
                v["message"] = json!(m);
            }
            v
        })
        .collect();
    let mut st = json!({
        "phase": phase(s.phase),
        "conditions": conditions,
        "containerStatuses": container_statuses(&s.container_statuses),
        "reason": s.reason,
        "message": s.message,
    });
    if !s.init_container_statuses.is_empty() {
        st["initContainerStatuses"] = container_statuses(&s.init_container_statuses);
    }
    if let Some(ip) = &s.pod_ip {
        st["podIP"] = json!(ip);
        st["podIPs"] = json!([{"ip": ip}]);
    }
    if let Some(ip) = &s.host_ip {
        st["hostIP"] = json!(ip);
        st["hostIPs"] = json!([{"ip": ip}]);
    }
    if let Some(t) = s.start_time {
        st["startTime"] = json!(time(t));
    }
    json!({"status": st})
}

/// A node's event as a core/v1 Event: its namespace, its name and the
/// object. Every event of one series (the kubelet numbers repeats with
/// `count`, keeping the first time) has the same name, so repeats update
/// one object as kube's event recorder does: `<object>.<first time in ns,
/// hex>`, kube's own form, with the digits below the millisecond (node
/// times are whole ms) taken from a hash of the series, so two series that
/// start within one millisecond ("Created", "Started") name two objects.
pub fn event_object(node: &str, e: &proto::Event) -> (String, String, Value) {
    let (ns, involved) = match &e.object {
        proto::ObjectRef::Node { name } => (
            "default".to_string(),
            json!({"kind": "Node", "name": name, "uid": name, "apiVersion": "v1"}),
        ),
        proto::ObjectRef::Pod {
            namespace,
            name,
            uid,
            field_path,
        } => {
            let mut o = json!({"kind": "Pod", "namespace": namespace, "name": name, "uid": uid, "apiVersion": "v1"});
            if let Some(f) = field_path {
                o["fieldPath"] = json!(f);
            }
            (namespace.clone(), o)
        }
    };
    let obj_name = involved["name"].as_str().unwrap_or("node").to_string();
    let name = format!("{obj_name}.{:x}", series_nanos(e));
    let ev = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": ns},
        "involvedObject": involved,
        "reason": e.reason,
        "message": e.message,
        "type": match e.kind { proto::EventType::Normal => "Normal", proto::EventType::Warning => "Warning" },
        "count": e.count.max(1),
        "firstTimestamp": time(e.first_timestamp),
        "lastTimestamp": time(e.last_timestamp),
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
    });
    (ns, name, ev)
}

/// What a repeat of a series changes on its Event (a merge patch).
pub fn event_repeat(e: &proto::Event) -> Value {
    json!({"count": e.count.max(1), "lastTimestamp": time(e.last_timestamp)})
}

/// The series' first time in nanoseconds, its sub-millisecond digits a hash
/// of what makes the series one (object, type, reason, message).
fn series_nanos(e: &proto::Event) -> u64 {
    use sha2::Digest as _;
    let kind = match e.kind {
        proto::EventType::Normal => "Normal",
        proto::EventType::Warning => "Warning",
    };
    let digest = sha2::Sha256::new()
        .chain_update(format!("{:?}", e.object))
        .chain_update([0])
        .chain_update(kind)
        .chain_update([0])
        .chain_update(&e.reason)
        .chain_update([0])
        .chain_update(&e.message)
        .finalize();
    let spread = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % 1_000_000;
    e.first_timestamp
        .saturating_mul(1_000_000)
        .saturating_add(spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, first: u64, count: u32) -> proto::Event {
        proto::Event {
            object: proto::ObjectRef::Pod {
                namespace: "default".into(),
                name: "web-1".into(),
                uid: "u1".into(),
                field_path: None,
            },
            kind: proto::EventType::Warning,
            reason: reason.into(),
            message: "Back-off restarting failed container".into(),
            count,
            first_timestamp: first,
            last_timestamp: first + 10_000 * u64::from(count),
        }
    }

    /// A series keeps one name, kube's `<object>.<hex ns>`; series that
    /// start in the same millisecond get different names.
    #[test]
    fn an_event_series_has_one_name() {
        let first = 1_765_000_000_123;
        let (ns, name, ev) = event_object("n1", &event("BackOff", first, 1));
        assert_eq!(ns, "default");
        assert_eq!(ev["metadata"]["name"], name.as_str());
        let (prefix, hex) = name.split_once('.').unwrap();
        assert_eq!(prefix, "web-1");
        let nanos = u64::from_str_radix(hex, 16).unwrap();
        assert_eq!(nanos / 1_000_000, first, "{name}");
        let (_, again, _) = event_object("n1", &event("BackOff", first, 7));
        assert_eq!(again, name, "a repeat names the same Event");
        let (_, other, _) = event_object("n1", &event("Failed", first, 1));
        assert_ne!(other, name, "another series in the same ms");
        let (_, later, _) = event_object("n1", &event("BackOff", first + 1, 1));
        assert_ne!(later, name, "a new series of the same event");
        assert_eq!(
            event_repeat(&event("BackOff", first, 3)),
            json!({"count": 3, "lastTimestamp": time(first + 30_000)})
        );
    }

    #[test]
    fn quantities() {
        assert_eq!(cpu_quantity(2000), "2");
        assert_eq!(cpu_quantity(1500), "1500m");
        assert_eq!(bytes_quantity(4 << 30), "4Gi");
        assert_eq!(bytes_quantity(1536 << 10), "1536Ki");
        assert_eq!(bytes_quantity(1000), "1000");
        assert_eq!(boot_id(&[0xab; 16]), "abababab-abab-abab-abab-abababababab");
    }

    /// A node's own labels pass the same rule the API's NodeRestriction
    /// admission applies, so a node cannot label itself into a role or a
    /// workload's `node-restriction` selector, nor fail to register.
    #[test]
    fn a_node_sets_only_the_labels_node_restriction_allows() {
        let proto::NodeToPlane::Register(mut info) = proto::sample::node_to_plane()
            .into_iter()
            .find(|m| matches!(m, proto::NodeToPlane::Register(_)))
            .expect("a sample Register")
        else {
            unreachable!()
        };
        let label = |k: &str| (k.to_string(), "x".to_string());
        info.labels = vec![
            label("node-role.kubernetes.io/control-plane"),
            label("node-restriction.kubernetes.io/pci"),
            label("example.k8s.io/anything"),
            label("node.kubernetes.io/pool"),
            label("example.com/rack"),
        ];
        let labels = node_object(&info)["metadata"]["labels"].clone();
        let keys: Vec<&str> = labels
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        for k in [
            "node.kubernetes.io/pool",
            "example.com/rack",
            "kubernetes.io/hostname",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        for k in [
            "node-role.kubernetes.io/control-plane",
            "node-restriction.kubernetes.io/pci",
            "example.k8s.io/anything",
        ] {
            assert!(!keys.contains(&k), "{k} kept in {keys:?}");
        }
    }
}
