//! Pod objects as the node's pod spec: defaults applied, named probe ports
//! resolved, quantities as integers. Also lists the ConfigMaps and Secrets a
//! pod references, which the gateway sends the node as `ConfigData`.

use serde_json::Value;
use skiff_node_proto as proto;

fn s(v: &Value, ptr: &str) -> String {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(v: Option<&Value>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = v
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn arr(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// A Kubernetes quantity in thousandths of its unit (cpu "250m" -> 250,
/// "2" -> 2000) or in plain units (memory "64Mi" -> 67108864), rounded up;
/// `None` for a negative one or one that does not parse (the API server
/// refuses those).
pub fn parse_quantity(q: &str, milli: bool) -> Option<u64> {
    let v = if milli {
        skiff_quantity::milli_value(q)
    } else {
        skiff_quantity::value(q)
    }?;
    u64::try_from(v).ok()
}

fn resource_list(v: Option<&Value>) -> proto::ResourceList {
    let get = |k: &str, milli| {
        v.and_then(|m| m.get(k))
            .and_then(Value::as_str)
            .and_then(|q| parse_quantity(q, milli))
    };
    proto::ResourceList {
        cpu_millis: get("cpu", true),
        memory_bytes: get("memory", false),
        ephemeral_storage_bytes: get("ephemeral-storage", false),
    }
}

fn downward_field(path: &str) -> Option<proto::DownwardField> {
    use proto::DownwardField as F;
    let quoted = |p: &str, prefix: &str| {
        p.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['"))
            .and_then(|r| r.strip_suffix("']"))
            .map(str::to_string)
    };
    Some(match path {
        "metadata.name" => F::Name,
        "metadata.namespace" => F::Namespace,
        "metadata.uid" => F::Uid,
        "metadata.labels" => F::Labels,
        "metadata.annotations" => F::Annotations,
        "spec.nodeName" => F::NodeName,
        "spec.serviceAccountName" => F::ServiceAccountName,
        "status.hostIP" => F::HostIP,
        "status.podIP" => F::PodIP,
        p => {
            if let Some(k) = quoted(p, "metadata.labels") {
                F::Label(k)
            } else {
                F::Annotation(quoted(p, "metadata.annotations")?)
            }
        }
    })
}

fn resource_field(r: &str) -> Option<proto::ResourceField> {
    use proto::ResourceField as R;
    Some(match r {
        "requests.cpu" => R::RequestsCpu,
        "limits.cpu" => R::LimitsCpu,
        "requests.memory" => R::RequestsMemory,
        "limits.memory" => R::LimitsMemory,
        "requests.ephemeral-storage" => R::RequestsEphemeralStorage,
        "limits.ephemeral-storage" => R::LimitsEphemeralStorage,
        _ => return None,
    })
}

fn env_var(e: &Value, container: &str) -> Option<proto::EnvVar> {
    let name = e.get("name")?.as_str()?.to_string();
    let opt = |v: &Value| v.get("optional").and_then(Value::as_bool).unwrap_or(false);
    let value = if let Some(vf) = e.get("valueFrom") {
        if let Some(r) = vf.get("configMapKeyRef") {
            proto::EnvValue::ConfigMapKey {
                name: s(r, "/name"),
                key: s(r, "/key"),
                optional: opt(r),
            }
        } else if let Some(r) = vf.get("secretKeyRef") {
            proto::EnvValue::SecretKey {
                name: s(r, "/name"),
                key: s(r, "/key"),
                optional: opt(r),
            }
        } else if let Some(r) = vf.get("fieldRef") {
            proto::EnvValue::Field(downward_field(&s(r, "/fieldPath"))?)
        } else if let Some(r) = vf.get("resourceFieldRef") {
            let res = s(r, "/resource");
            let milli = res.ends_with("cpu");
            let divisor = r
                .get("divisor")
                .and_then(Value::as_str)
                .and_then(|d| parse_quantity(d, milli))
                .unwrap_or(1)
                .max(1);
            let c = s(r, "/containerName");
            proto::EnvValue::Resource {
                container: if c.is_empty() {
                    container.to_string()
                } else {
                    c
                },
                resource: resource_field(&res)?,
                divisor,
            }
        } else {
            return None;
        }
    } else {
        proto::EnvValue::Literal(s(e, "/value"))
    };
    Some(proto::EnvVar { name, value })
}

/// A probe port: a number, or the name of one of the container's ports.
fn port(v: Option<&Value>, ports: &[proto::ContainerPort]) -> u16 {
    match v {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as u16,
        Some(Value::String(name)) => ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .map(|p| p.container_port)
            .or_else(|| name.parse().ok())
            .unwrap_or(0),
        _ => 0,
    }
}

fn probe(v: Option<&Value>, ports: &[proto::ContainerPort]) -> Option<proto::Probe> {
    let p = v?;
    let handler = if let Some(h) = p.get("httpGet") {
        proto::ProbeHandler::HttpGet {
            port: port(h.get("port"), ports),
            path: h
                .get("path")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string(),
            scheme: if s(h, "/scheme").eq_ignore_ascii_case("https") {
                proto::HttpScheme::Https
            } else {
                proto::HttpScheme::Http
            },
            headers: arr(h.get("httpHeaders"))
                .iter()
                .map(|x| (s(x, "/name"), s(x, "/value")))
                .collect(),
        }
    } else if let Some(t) = p.get("tcpSocket") {
        proto::ProbeHandler::TcpSocket {
            port: port(t.get("port"), ports),
        }
    } else {
        // exec and grpc probes: no shell on the node; the probe is dropped.
        return None;
    };
    let n = |k: &str, d: u64| p.get(k).and_then(Value::as_u64).unwrap_or(d);
    Some(proto::Probe {
        handler,
        initial_delay_secs: n("initialDelaySeconds", 0) as u32,
        period_secs: n("periodSeconds", 10) as u32,
        timeout_secs: n("timeoutSeconds", 1) as u32,
        success_threshold: n("successThreshold", 1) as u32,
        failure_threshold: n("failureThreshold", 3) as u32,
        termination_grace_period_secs: p
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_u64),
    })
}

fn container(c: &Value) -> proto::Container {
    let name = s(c, "/name");
    let ports: Vec<proto::ContainerPort> = arr(c.get("ports"))
        .iter()
        .map(|p| proto::ContainerPort {
            name: p.get("name").and_then(Value::as_str).map(str::to_string),
            container_port: p.get("containerPort").and_then(Value::as_u64).unwrap_or(0) as u16,
            protocol: match p.get("protocol").and_then(Value::as_str) {
                Some("UDP") => proto::Protocol::Udp,
                Some("SCTP") => proto::Protocol::Sctp,
                _ => proto::Protocol::Tcp,
            },
        })
        .collect();
    proto::Container {
        image: proto::ImageRef {
            reference: s(c, "/image"),
            // The gateway's image pulls fill this in for wasm nodes.
            pull: proto::ImagePull::Unresolved,
        },
        command: strings(c.get("command")),
        args: strings(c.get("args")),
        working_dir: c
            .get("workingDir")
            .and_then(Value::as_str)
            .map(str::to_string),
        env: arr(c.get("env"))
            .iter()
            .filter_map(|e| env_var(e, &name))
            .collect(),
        env_from: arr(c.get("envFrom"))
            .iter()
            .filter_map(|e| {
                let prefix = s(e, "/prefix");
                let (kind, r) = if let Some(r) = e.get("configMapRef") {
                    (proto::ConfigKind::ConfigMap, r)
                } else {
                    (proto::ConfigKind::Secret, e.get("secretRef")?)
                };
                Some(proto::EnvFromSource {
                    kind,
                    name: s(r, "/name"),
                    prefix,
                    optional: r.get("optional").and_then(Value::as_bool).unwrap_or(false),
                })
            })
            .collect(),
        resources: proto::ResourceRequirements {
            requests: resource_list(c.pointer("/resources/requests")),
            limits: resource_list(c.pointer("/resources/limits")),
        },
        volume_mounts: arr(c.get("volumeMounts"))
            .iter()
            .map(|m| proto::VolumeMount {
                name: s(m, "/name"),
                mount_path: s(m, "/mountPath"),
                read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false),
                sub_path: m.get("subPath").and_then(Value::as_str).map(str::to_string),
            })
            .collect(),
        readiness_probe: probe(c.get("readinessProbe"), &ports),
        liveness_probe: probe(c.get("livenessProbe"), &ports),
        startup_probe: probe(c.get("startupProbe"), &ports),
        ports,
        name,
    }
}

fn key_to_paths(v: Option<&Value>) -> Vec<proto::KeyToPath> {
    arr(v)
        .iter()
        .map(|i| proto::KeyToPath {
            key: s(i, "/key"),
            path: s(i, "/path"),
            mode: i.get("mode").and_then(Value::as_u64).map(|m| m as u32),
        })
        .collect()
}

fn volume(v: &Value) -> Option<proto::Volume> {
    let mode = |x: &Value| {
        x.get("defaultMode")
            .and_then(Value::as_u64)
            .unwrap_or(0o644) as u32
    };
    let opt = |x: &Value| x.get("optional").and_then(Value::as_bool).unwrap_or(false);
    let source = if let Some(e) = v.get("emptyDir") {
        proto::VolumeSource::EmptyDir {
            memory: s(e, "/medium") == "Memory",
            size_limit_bytes: e
                .get("sizeLimit")
                .and_then(Value::as_str)
                .and_then(|q| parse_quantity(q, false)),
        }
    } else if let Some(c) = v.get("configMap") {
        proto::VolumeSource::ConfigMap {
            name: s(c, "/name"),
            items: key_to_paths(c.get("items")),
            optional: opt(c),
            default_mode: mode(c),
        }
    } else if let Some(c) = v.get("secret") {
        proto::VolumeSource::Secret {
            name: s(c, "/secretName"),
            items: key_to_paths(c.get("items")),
            optional: opt(c),
            default_mode: mode(c),
        }
    } else if let Some(d) = v.get("downwardAPI") {
        proto::VolumeSource::DownwardApi {
            items: arr(d.get("items"))
                .iter()
                .filter_map(|i| {
                    Some(proto::DownwardApiFile {
                        path: s(i, "/path"),
                        field: downward_field(&s(i, "/fieldRef/fieldPath"))?,
                    })
                })
                .collect(),
            default_mode: mode(d),
        }
    } else {
        // hostPath, PVCs, projected…: not supported on Skiff nodes yet.
        return None;
    };
    Some(proto::Volume {
        name: s(v, "/name"),
        source,
    })
}

/// The node-side spec of a pod object.
pub fn pod_spec(pod: &Value) -> proto::PodSpec {
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    proto::PodSpec {
        uid: s(pod, "/metadata/uid"),
        namespace: s(pod, "/metadata/namespace"),
        name: s(pod, "/metadata/name"),
        labels: pairs(pod.pointer("/metadata/labels")),
        annotations: pairs(pod.pointer("/metadata/annotations")),
        service_account_name: s(&spec, "/serviceAccountName"),
        init_containers: arr(spec.get("initContainers"))
            .iter()
            .map(container)
            .collect(),
        containers: arr(spec.get("containers")).iter().map(container).collect(),
        restart_policy: match spec.get("restartPolicy").and_then(Value::as_str) {
            Some("Never") => proto::RestartPolicy::Never,
            Some("OnFailure") => proto::RestartPolicy::OnFailure,
            _ => proto::RestartPolicy::Always,
        },
        termination_grace_period_secs: spec
            .get("terminationGracePeriodSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(30),
        active_deadline_secs: spec.get("activeDeadlineSeconds").and_then(Value::as_u64),
        volumes: arr(spec.get("volumes")).iter().filter_map(volume).collect(),
        deletion_grace_period_secs: pod.pointer("/metadata/deletionTimestamp").is_some().then(
            || {
                pod.pointer("/metadata/deletionGracePeriodSeconds")
                    .and_then(Value::as_u64)
                    .unwrap_or(0)
            },
        ),
    }
}

/// The (kind, name) of every ConfigMap and Secret a pod spec references.
pub fn config_refs(p: &proto::PodSpec) -> Vec<(proto::ConfigKind, String)> {
    use proto::ConfigKind::{ConfigMap, Secret};
    let mut out = Vec::new();
    for c in p.init_containers.iter().chain(&p.containers) {
        for e in &c.env {
            match &e.value {
                proto::EnvValue::ConfigMapKey { name, .. } => out.push((ConfigMap, name.clone())),
                proto::EnvValue::SecretKey { name, .. } => out.push((Secret, name.clone())),
                _ => {}
            }
        }
        for e in &c.env_from {
            out.push((e.kind, e.name.clone()));
        }
    }
    for v in &p.volumes {
        match &v.source {
            proto::VolumeSource::ConfigMap { name, .. } => out.push((ConfigMap, name.clone())),
            proto::VolumeSource::Secret { name, .. } => out.push((Secret, name.clone())),
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn translates_a_pod() {
        let pod = json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
            "spec": {"nodeName": "n1", "restartPolicy": "Never", "containers": [{
                "name": "c", "image": "hello:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "A", "value": "1"},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
                        {"name": "C", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}],
                "envFrom": [{"configMapRef": {"name": "cm"}}],
                "resources": {"requests": {"cpu": "250m", "memory": "64Mi"}},
                "readinessProbe": {"httpGet": {"port": "http", "path": "/healthz"}},
            }]},
        });
        let p = pod_spec(&pod);
        assert_eq!(p.restart_policy, proto::RestartPolicy::Never);
        assert_eq!(p.termination_grace_period_secs, 30);
        let c = &p.containers[0];
        assert_eq!(c.resources.requests.cpu_millis, Some(250));
        assert_eq!(c.resources.requests.memory_bytes, Some(64 << 20));
        assert_eq!(
            c.env[2].value,
            proto::EnvValue::Field(proto::DownwardField::Label("app".into()))
        );
        match &c.readiness_probe.as_ref().unwrap().handler {
            proto::ProbeHandler::HttpGet { port, .. } => assert_eq!(*port, 8080),
            h => panic!("{h:?}"),
        }
        assert_eq!(
            config_refs(&p),
            vec![
                (proto::ConfigKind::ConfigMap, "cm".to_string()),
                (proto::ConfigKind::Secret, "s".to_string())
            ]
        );
        assert_eq!(parse_quantity("2", true), Some(2000));
        assert_eq!(parse_quantity("1.5Gi", false), Some(3 << 29));
        // Every form kube takes reaches the node (a limit is never
        // dropped for its spelling); a negative one is no limit.
        assert_eq!(parse_quantity("500000u", true), Some(500));
        assert_eq!(parse_quantity("1Pi", false), Some(1 << 50));
        assert_eq!(parse_quantity("64e6", false), Some(64_000_000));
        assert_eq!(parse_quantity("-1", false), None);
    }
}
