//! Container environment resolution at start time, as the kubelet does it:
//! `envFrom` sources first (in order, with their prefix), then `env` entries,
//! later names overriding earlier ones. ConfigMap/Secret references are
//! resolved from the [`ConfigStore`] the control plane fills; a missing
//! non-optional reference is a `CreateContainerConfigError` (the container
//! waits and is retried on later syncs).

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use skiff_node_proto::{
    ConfigKind, ConfigObject, Container, DownwardField, EnvValue, PodSpec, ResourceField, Resources,
};

/// ConfigMaps and Secrets the control plane sent, by (kind, namespace, name).
#[derive(Debug, Default, Clone)]
pub struct ConfigStore {
    objects: BTreeMap<(ConfigKind, String, String), ConfigObject>,
}

impl ConfigStore {
    pub fn upsert(&mut self, obj: ConfigObject) {
        self.objects
            .insert((obj.kind, obj.namespace.clone(), obj.name.clone()), obj);
    }
    pub fn remove(&mut self, kind: ConfigKind, namespace: &str, name: &str) {
        self.objects
            .remove(&(kind, namespace.to_string(), name.to_string()));
    }
    pub fn get(&self, kind: ConfigKind, namespace: &str, name: &str) -> Option<&ConfigObject> {
        self.objects
            .get(&(kind, namespace.to_string(), name.to_string()))
    }
}

fn kind_name(kind: ConfigKind) -> &'static str {
    match kind {
        ConfigKind::ConfigMap => "configmap",
        ConfigKind::Secret => "secret",
    }
}

/// What the downward API can see besides the spec.
#[derive(Debug, Clone, Copy)]
pub struct PodContext<'a> {
    pub node_name: &'a str,
    pub host_ip: Option<&'a str>,
    pub pod_ip: Option<&'a str>,
    pub allocatable: &'a Resources,
}

fn lookup<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn format_map(pairs: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = pairs.iter().collect();
    sorted.sort();
    let lines: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    lines.join("\n")
}

/// A downward API field's value.
pub fn downward(pod: &PodSpec, ctx: &PodContext<'_>, field: &DownwardField) -> String {
    match field {
        DownwardField::Name => pod.name.clone(),
        DownwardField::Namespace => pod.namespace.clone(),
        DownwardField::Uid => pod.uid.clone(),
        DownwardField::Label(k) => lookup(&pod.labels, k).unwrap_or("").to_string(),
        DownwardField::Annotation(k) => lookup(&pod.annotations, k).unwrap_or("").to_string(),
        DownwardField::Labels => format_map(&pod.labels),
        DownwardField::Annotations => format_map(&pod.annotations),
        DownwardField::NodeName => ctx.node_name.to_string(),
        DownwardField::ServiceAccountName => pod.service_account_name.clone(),
        DownwardField::HostIP => ctx.host_ip.unwrap_or("").to_string(),
        DownwardField::PodIP => ctx.pod_ip.unwrap_or("").to_string(),
    }
}

/// `resourceFieldRef`: limits default to node allocatable, requests to the
/// limit (Kubernetes' defaulting), CPU request unset = 0; rounded up.
fn resource(
    pod: &PodSpec,
    ctx: &PodContext<'_>,
    container: &str,
    res: ResourceField,
    divisor: u64,
) -> Option<String> {
    let c = pod
        .containers
        .iter()
        .chain(&pod.init_containers)
        .find(|c| c.name == container)?;
    let (r, l) = (&c.resources.requests, &c.resources.limits);
    let value = match res {
        ResourceField::LimitsCpu => l.cpu_millis.unwrap_or(ctx.allocatable.cpu_millis),
        ResourceField::RequestsCpu => r.cpu_millis.or(l.cpu_millis).unwrap_or(0),
        ResourceField::LimitsMemory => l.memory_bytes.unwrap_or(ctx.allocatable.memory_bytes),
        ResourceField::RequestsMemory => r.memory_bytes.or(l.memory_bytes).unwrap_or(0),
        ResourceField::LimitsEphemeralStorage => l
            .ephemeral_storage_bytes
            .unwrap_or(ctx.allocatable.ephemeral_storage_bytes),
        ResourceField::RequestsEphemeralStorage => r
            .ephemeral_storage_bytes
            .or(l.ephemeral_storage_bytes)
            .unwrap_or(0),
    };
    // The wire divisor is in the resource's integer unit; "1" CPU = 1000 millicores.
    let divisor = divisor.max(1);
    Some(value.div_ceil(divisor).to_string())
}

/// Resolves a container's environment; `Err(message)` is a
/// `CreateContainerConfigError` with the kubelet's wording.
pub fn resolve(
    pod: &PodSpec,
    container: &Container,
    configs: &ConfigStore,
    ctx: &PodContext<'_>,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |name: String, value: String| {
        if let Some(slot) = out.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            out.push((name, value));
        }
    };
    for src in &container.env_from {
        match configs.get(src.kind, &pod.namespace, &src.name) {
            Some(obj) => {
                for (k, v) in &obj.data {
                    set(
                        format!("{}{k}", src.prefix),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
            None if src.optional => {}
            None => {
                return Err(format!(
                    "{} \"{}\" not found",
                    kind_name(src.kind),
                    src.name
                ));
            }
        }
    }
    for var in &container.env {
        let value = match &var.value {
            EnvValue::Literal(v) => Some(v.clone()),
            EnvValue::ConfigMapKey {
                name,
                key,
                optional,
            }
            | EnvValue::SecretKey {
                name,
                key,
                optional,
            } => {
                let kind = if matches!(var.value, EnvValue::SecretKey { .. }) {
                    ConfigKind::Secret
                } else {
                    ConfigKind::ConfigMap
                };
                match configs.get(kind, &pod.namespace, name) {
                    Some(obj) => match obj.data.iter().find(|(k, _)| k == key) {
                        Some((_, v)) => Some(String::from_utf8_lossy(v).into_owned()),
                        None if *optional => None,
                        None => {
                            let kind = if kind == ConfigKind::Secret {
                                "secret"
                            } else {
                                "ConfigMap"
                            };
                            return Err(format!(
                                "couldn't find key {key} in {kind} {}/{name}",
                                pod.namespace
                            ));
                        }
                    },
                    None if *optional => None,
                    None => return Err(format!("{} \"{name}\" not found", kind_name(kind))),
                }
            }
            EnvValue::Field(f) => Some(downward(pod, ctx, f)),
            EnvValue::Resource {
                container: c,
                resource: r,
                divisor,
            } => {
                let c = if c.is_empty() { &container.name } else { c };
                Some(
                    resource(pod, ctx, c, *r, *divisor)
                        .ok_or_else(|| format!("container {c} not found"))?,
                )
            }
        };
        if let Some(v) = value {
            set(var.name.clone(), v);
        }
    }
    Ok(out)
}

/// One file of a projected volume (ConfigMap, Secret, downward API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFile {
    /// Relative to the volume root.
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// A pod volume as the runtime mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeContent {
    /// Runtime-managed scratch space (`emptyDir`), shared by the pod's containers.
    EmptyDir {
        memory: bool,
        size_limit_bytes: Option<u64>,
    },
    /// Files computed by the kubelet at container start.
    Files(Vec<VolumeFile>),
}

/// Projects a volume's content, as the kubelet's volume plugins do: every
/// key (or just `items`) of a ConfigMap/Secret, or downward API fields.
/// `Err(message)` for a missing non-optional source (a `FailedMount`).
pub fn project_volume(
    pod: &PodSpec,
    volume: &skiff_node_proto::Volume,
    configs: &ConfigStore,
    ctx: &PodContext<'_>,
) -> Result<VolumeContent, String> {
    use skiff_node_proto::VolumeSource;
    let (kind, name, items, optional, default_mode) = match &volume.source {
        VolumeSource::EmptyDir {
            memory,
            size_limit_bytes,
        } => {
            return Ok(VolumeContent::EmptyDir {
                memory: *memory,
                size_limit_bytes: *size_limit_bytes,
            });
        }
        VolumeSource::DownwardApi {
            items,
            default_mode,
        } => {
            let files = items
                .iter()
                .map(|f| VolumeFile {
                    path: f.path.clone(),
                    data: downward(pod, ctx, &f.field).into_bytes(),
                    mode: *default_mode,
                })
                .collect();
            return Ok(VolumeContent::Files(files));
        }
        VolumeSource::ConfigMap {
            name,
            items,
            optional,
            default_mode,
        } => (ConfigKind::ConfigMap, name, items, *optional, *default_mode),
        VolumeSource::Secret {
            name,
            items,
            optional,
            default_mode,
        } => (ConfigKind::Secret, name, items, *optional, *default_mode),
    };
    let Some(obj) = configs.get(kind, &pod.namespace, name) else {
        return if optional {
            Ok(VolumeContent::Files(Vec::new()))
        } else {
            Err(format!("{} \"{name}\" not found", kind_name(kind)))
        };
    };
    let mut files = Vec::new();
    if items.is_empty() {
        for (k, v) in &obj.data {
            files.push(VolumeFile {
                path: k.clone(),
                data: v.clone(),
                mode: default_mode,
            });
        }
    } else {
        for item in items {
            match obj.data.iter().find(|(k, _)| *k == item.key) {
                Some((_, v)) => files.push(VolumeFile {
                    path: item.path.clone(),
                    data: v.clone(),
                    mode: item.mode.unwrap_or(default_mode),
                }),
                None if optional => {}
                None => {
                    return Err(format!(
                        "configmap references non-existent config key: {}",
                        item.key
                    ));
                }
            }
        }
    }
    Ok(VolumeContent::Files(files))
}
