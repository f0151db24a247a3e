//! Images for one node's pods. The node never talks to a registry: for each
//! (pod, container) the gateway asks the image service to pull, verify and
//! compile the container's image, with the pod's `imagePullSecrets` read as
//! the node itself (the node authorizer allows exactly those), and tells the
//! node the outcome through the pod's [`proto::ImagePull`]. Failures retry
//! with kube's image back-off (10 s doubling to 5 min); while waiting the
//! container shows `ImagePullBackOff`, as the kubelet's would.
//!
//! The image cache is shared by all pods of all nodes; the image service
//! serves a cached image only to a pod whose pull secrets pulled it before,
//! or once an anonymous pull made it public (kube's KEP-2535); any other pod
//! pulls it with its own secrets first.
//!
//! The node then fetches the compiled artifact by digest; it may fetch only
//! artifacts of its own pods ([`NodeImages::may_fetch`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use skiff_apiserver::Identity;
use skiff_images::{Credential, ImageService, PullPolicy, PullRequest};
use skiff_node_proto::{self as proto, ImagePull};
use tokio::sync::mpsc;

use crate::Shared;
use crate::timefmt::now_millis;

/// Built into every node runtime: never pulled.
pub const BUILTIN_PREFIX: &str = "skiff.dev/testrt";

/// Kube's image pull back-off cap.
const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// The image service as the gateway holds it.
#[derive(Clone)]
pub struct Images(pub ImageService);

impl std::fmt::Debug for Images {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Images")
    }
}

struct Entry {
    reference: String,
    state: ImagePull,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One node session's image pulls, keyed by (pod uid, container name).
pub struct NodeImages {
    shared: Arc<Shared>,
    service: ImageService,
    node: String,
    id: Identity,
    entries: Mutex<HashMap<(String, String), Entry>>,
    /// Pod uids whose pull state changed: the pod sync resends them.
    changed: mpsc::UnboundedSender<String>,
}

impl std::fmt::Debug for NodeImages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeImages")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl NodeImages {
    pub fn new(
        shared: Arc<Shared>,
        service: ImageService,
        node: String,
        id: Identity,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<String>) {
        let (changed, rx) = mpsc::unbounded_channel();
        let me = Arc::new(Self {
            shared,
            service,
            node,
            id,
            entries: Mutex::default(),
            changed,
        });
        (me, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fills in each container's pull state for the pod object `pod` (its
    /// spec already translated into `spec`), starting pulls not yet begun.
    pub fn apply(self: &Arc<Self>, spec: &mut proto::PodSpec, pod: &Value) {
        let secrets: Vec<String> = pod
            .pointer("/spec/imagePullSecrets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.get("name").and_then(Value::as_str).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let policies: HashMap<String, Option<String>> = ["initContainers", "containers"]
            .iter()
            .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
            .flatten()
            .map(|c| {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("");
                let p = c.get("imagePullPolicy").and_then(Value::as_str);
                (name.to_string(), p.map(str::to_string))
            })
            .collect();
        let uid = spec.uid.clone();
        let objects: HashMap<String, proto::ObjectRef> = spec
            .init_containers
            .iter()
            .chain(&spec.containers)
            .map(|c| (c.name.clone(), pod_ref(spec, &c.name)))
            .collect();
        let mut entries = self.lock();
        for c in spec
            .init_containers
            .iter_mut()
            .chain(spec.containers.iter_mut())
        {
            let reference = c.image.reference.clone();
            if reference.starts_with(BUILTIN_PREFIX) {
                continue;
            }
            let key = (uid.clone(), c.name.clone());
            if let Some(e) = entries.get(&key)
                && e.reference == reference
            {
                c.image.pull = e.state.clone();
                continue;
            }
            let policy =
                PullPolicy::from_k8s(policies.get(&c.name).and_then(|p| p.as_deref()), &reference);
            // Only a public image is ready at once: for any other the
            // pod's pull secrets must be read first (KEP-2535, in the
            // image service).
            if let Some(p) = self.service.present_for(&reference, policy, &[]) {
                // Already here: ready at once, as the kubelet's "already
                // present on machine".
                let state = ImagePull::Ready {
                    artifact_digest: p.artifact_digest.clone(),
                    artifact_size: p.artifact_size,
                    image_id: p.image_id.clone(),
                };
                c.image.pull = state.clone();
                let (me, object) = (self.clone(), objects[&c.name].clone());
                let msg = format!("Container image \"{reference}\" already present on machine");
                let task = tokio::spawn(async move {
                    me.event(&object, proto::EventType::Normal, "Pulled", msg)
                        .await
                });
                entries.insert(
                    key,
                    Entry {
                        reference,
                        state,
                        task,
                    },
                );
                continue;
            }
            let task = tokio::spawn(self.clone().pull_loop(
                key.clone(),
                reference.clone(),
                policy,
                secrets.clone(),
                objects[&c.name].clone(),
            ));
            c.image.pull = ImagePull::Pulling;
            entries.insert(
                key,
                Entry {
                    reference,
                    state: ImagePull::Pulling,
                    task,
                },
            );
        }
    }

    /// Refreshes `spec` from the pull states known now; true if it changed.
    pub fn refresh(&self, spec: &mut proto::PodSpec) -> bool {
        let entries = self.lock();
        let mut changed = false;
        for c in spec
            .init_containers
            .iter_mut()
            .chain(spec.containers.iter_mut())
        {
            if let Some(e) = entries.get(&(spec.uid.clone(), c.name.clone()))
                && e.reference == c.image.reference
                && e.state != c.image.pull
            {
                c.image.pull = e.state.clone();
                changed = true;
            }
        }
        changed
    }

    /// The pod is gone from the node: stop its pulls.
    pub fn forget(&self, uid: &str) {
        self.lock().retain(|(u, _), _| u != uid);
    }

    /// Whether `digest` is the artifact of one of this node's containers.
    pub fn may_fetch(&self, digest: &str) -> bool {
        self.lock().values().any(|e| {
            matches!(&e.state, ImagePull::Ready { artifact_digest, .. } if artifact_digest == digest)
        })
    }

    pub fn service(&self) -> &ImageService {
        &self.service
    }

    fn set(&self, key: &(String, String), state: ImagePull) {
        if let Some(e) = self.lock().get_mut(key) {
            e.state = state;
        }
        let _ = self.changed.send(key.0.clone());
    }

    async fn pull_loop(
        self: Arc<Self>,
        key: (String, String),
        reference: String,
        policy: PullPolicy,
        secrets: Vec<String>,
        object: proto::ObjectRef,
    ) {
        let mut backoff = self.shared.cfg.image_backoff;
        loop {
            let credentials = self.credentials(&object, &secrets).await;
            if let Some(p) = self.service.present_for(&reference, policy, &credentials) {
                // Here, and these secrets pulled it before.
                self.set(
                    &key,
                    ImagePull::Ready {
                        artifact_digest: p.artifact_digest.clone(),
                        artifact_size: p.artifact_size,
                        image_id: p.image_id.clone(),
                    },
                );
                let msg = format!("Container image \"{reference}\" already present on machine");
                self.event(&object, proto::EventType::Normal, "Pulled", msg)
                    .await;
                return;
            }
            self.event(
                &object,
                proto::EventType::Normal,
                "Pulling",
                format!("Pulling image \"{reference}\""),
            )
            .await;
            let t = Instant::now();
            let req = PullRequest {
                reference: &reference,
                policy,
                credentials: &credentials,
            };
            match self.service.pull(&req).await {
                Ok(p) => {
                    let msg = format!(
                        "Successfully pulled and compiled image \"{reference}\" in {:.3}s. Artifact size: {} bytes.",
                        t.elapsed().as_secs_f64(),
                        p.artifact_size
                    );
                    self.set(
                        &key,
                        ImagePull::Ready {
                            artifact_digest: p.artifact_digest.clone(),
                            artifact_size: p.artifact_size,
                            image_id: p.image_id.clone(),
                        },
                    );
                    self.event(&object, proto::EventType::Normal, "Pulled", msg)
                        .await;
                    return;
                }
                Err(e) => {
                    self.shared.journal.log(format!(
                        "node {}: pulling {reference}: {}",
                        self.node, e.message
                    ));
                    let reason = e.reason.as_str().to_string();
                    self.set(
                        &key,
                        ImagePull::Failed {
                            reason: reason.clone(),
                            message: e.message.clone(),
                        },
                    );
                    if reason == "InvalidImageName" {
                        // Retrying cannot fix the spec (kube doesn't either).
                        return;
                    }
                    let show = backoff.min(Duration::from_secs(2));
                    tokio::time::sleep(show).await;
                    self.set(
                        &key,
                        ImagePull::Failed {
                            reason: "ImagePullBackOff".into(),
                            message: format!("Back-off pulling image \"{reference}\""),
                        },
                    );
                    tokio::time::sleep(backoff - show).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Registry credentials from the pod's `imagePullSecrets`, read as the
    /// node. A secret that is missing or malformed is reported and skipped
    /// (the pull then fails with the registry's own answer).
    async fn credentials(&self, object: &proto::ObjectRef, names: &[String]) -> Vec<Credential> {
        let proto::ObjectRef::Pod { namespace, .. } = object else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for name in names {
            let path = format!("/api/v1/namespaces/{namespace}/secrets/{name}");
            let a = match self.shared.api.get(&self.id, &path).await {
                Ok(a) if a.ok() => a,
                _ => {
                    self.shared.journal.log(format!(
                        "node {}: imagePullSecret {namespace}/{name} not readable",
                        self.node
                    ));
                    continue;
                }
            };
            let data = a.body.get("data").cloned().unwrap_or_default();
            let b64 = base64::engine::general_purpose::STANDARD;
            for key in [".dockerconfigjson", ".dockercfg"] {
                let Some(raw) = data.get(key).and_then(Value::as_str) else {
                    continue;
                };
                match b64
                    .decode(raw)
                    .map_err(|e| e.to_string())
                    .and_then(|j| skiff_images::credentials_from_docker_config(&j))
                {
                    Ok(c) => out.extend(c),
                    Err(e) => self.shared.journal.log(format!(
                        "node {}: imagePullSecret {namespace}/{name}: {e}",
                        self.node
                    )),
                }
            }
        }
        out
    }

    async fn event(
        &self,
        object: &proto::ObjectRef,
        kind: proto::EventType,
        reason: &str,
        message: String,
    ) {
        let now = now_millis();
        let e = proto::Event {
            object: object.clone(),
            kind,
            reason: reason.into(),
            message,
            count: 1,
            first_timestamp: now,
            last_timestamp: now,
        };
        let _ = crate::session::record_event(&self.shared.api, &self.id, &self.node, &e).await;
    }
}

fn pod_ref(spec: &proto::PodSpec, container: &str) -> proto::ObjectRef {
    let init = spec.init_containers.iter().any(|c| c.name == container);
    let list = if init { "initContainers" } else { "containers" };
    proto::ObjectRef::Pod {
        namespace: spec.namespace.clone(),
        name: spec.name.clone(),
        uid: spec.uid.clone(),
        field_path: Some(format!("spec.{list}{{{container}}}")),
    }
}

/// The answer to a node's `FetchArtifact`.
pub fn fetch(
    images: Option<&NodeImages>,
    digest: &str,
    offset: u64,
    len: u32,
) -> proto::PlaneToNode {
    let answer = |total, data, error: Option<String>| proto::PlaneToNode::ArtifactChunk {
        digest: digest.to_string(),
        offset,
        total,
        data,
        error,
    };
    let Some(images) = images.filter(|i| i.may_fetch(digest)) else {
        return answer(
            0,
            Vec::new(),
            Some(format!(
                "artifact {digest} is not one of this node's pods' images"
            )),
        );
    };
    let Some(bytes) = images.service().artifact(digest) else {
        return answer(
            0,
            Vec::new(),
            Some(format!(
                "artifact {digest} is no longer cached by the plane"
            )),
        );
    };
    let total = bytes.len() as u64;
    if offset >= total {
        return answer(
            total,
            Vec::new(),
            Some(format!(
                "offset {offset} is past the artifact's end ({total})"
            )),
        );
    }
    let end = (offset + u64::from(len).min(proto::MAX_ARTIFACT_CHUNK as u64)).min(total);
    answer(total, bytes[offset as usize..end as usize].to_vec(), None)
}
