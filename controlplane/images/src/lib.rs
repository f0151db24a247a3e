//! The control plane's image service: pulls a pod's image (a CNCF wasm
//! artifact in an OCI registry), verifies every manifest and blob against
//! its sha256 digest, validates the module and AOT-compiles it for the node
//! (`skiff_wasm::precompile`, `Target::Kernel`), and keeps the compiled
//! `.cwasm` in a disk cache that nodes fetch from by digest.
//!
//! See README.md for the cache layout and the failure reasons.

mod access;
mod auth;
mod cache;
mod fetch;
mod reference;
mod registry;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

pub use auth::credentials_from_docker_config;
pub use fetch::{WASM_CONFIG, WASM_LAYERS};

use crate::access::{Ledger, Puller};
use crate::cache::Cache;
use crate::fetch::Fetcher;
use crate::registry::Auth;

/// Pulls, verifies, compiles and caches images. Cheap to clone.
#[derive(Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

struct Inner {
    max_module_bytes: u64,
    fetcher: Fetcher,
    cache: Cache,
    /// Which credentials pulled each cached image (KEP-2535).
    access: Ledger,
    /// Normalised reference -> its last resolution (IfNotPresent, Never).
    refs: Mutex<HashMap<String, Arc<Pulled>>>,
    /// Module digest -> lock held while it is downloaded and compiled.
    flights: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    resolves: AtomicU64,
    downloads: AtomicU64,
    compiles: AtomicU64,
    cache_hits: AtomicU64,
    /// Compiles running at once are bounded: each takes a core and
    /// hundreds of MiB, and pods choose how many distinct images there are.
    compile_slots: tokio::sync::Semaphore,
    compiling: AtomicU64,
    peak_compiling: AtomicU64,
}

/// Service configuration.
pub struct Config {
    pub cache_dir: PathBuf,
    /// Registries (host[:port]) reached over plain HTTP, e.g.
    /// "127.0.0.1:5000"; every other registry (loopback too) over HTTPS.
    pub insecure_registries: Vec<String>,
    /// Largest module accepted (default 64 MiB).
    pub max_module_bytes: u64,
    /// AOT compiles at once (default 2); further pulls wait their turn.
    pub max_concurrent_compiles: usize,
}

impl Config {
    pub fn new(cache_dir: PathBuf) -> Self {
        Self {
            cache_dir,
            insecure_registries: Vec::new(),
            max_module_bytes: 64 << 20,
            max_concurrent_compiles: 2,
        }
    }
}

/// Counters for observability and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Manifest resolutions (registry round trips for a reference).
    pub resolves: u64,
    /// Module blobs downloaded.
    pub downloads: u64,
    /// Modules compiled.
    pub compiles: u64,
    /// Pulls whose module was already compiled (memory or disk cache).
    pub cache_hits: u64,
    /// Most compiles that ran at once.
    pub peak_compiling: u64,
}

/// One image pull.
pub struct PullRequest<'a> {
    pub reference: &'a str,
    pub policy: PullPolicy,
    /// Candidates (from the pod's pull secrets); the one whose registry
    /// matches the image's is used, else the pull is anonymous. A cached
    /// image is served without asking the registry only if these
    /// credentials (or an anonymous pull) pulled it before; otherwise the
    /// manifest is fetched with them first (kube's KEP-2535).
    pub credentials: &'a [Credential],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: Always for `:latest` or no tag, else
    /// IfNotPresent; parses "Always"/"IfNotPresent"/"Never".
    pub fn from_k8s(policy: Option<&str>, reference: &str) -> Self {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            Some("Never") => PullPolicy::Never,
            _ if reference::is_latest(reference) => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }
}

/// Registry credentials (from a pull secret).
#[derive(Clone, Debug)]
pub struct Credential {
    /// Registry host[:port] or URL, as the docker config key.
    pub registry: String,
    pub username: String,
    pub password: String,
}

/// A pulled and compiled image.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Pulled {
    /// The reference as requested.
    pub reference: String,
    /// "<registry>/<repo>@sha256:<manifest digest>" as kubectl shows imageID.
    pub image_id: String,
    /// Digest of the wasm module (the image's layer).
    pub module_digest: String,
    /// Digest of the compiled artifact, the name nodes fetch it by.
    pub artifact_digest: String,
    pub artifact_size: u64,
}

#[derive(Clone, Debug)]
pub struct PullError {
    pub reason: PullFailure,
    pub message: String,
}

impl std::fmt::Display for PullError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.as_str(), self.message)
    }
}

impl std::error::Error for PullError {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFailure {
    /// The reference does not parse.
    InvalidImageName,
    /// Registry unreachable, not found, unauthorized, digest mismatch.
    ErrImagePull,
    /// Policy Never and the image is not present.
    ErrImageNeverPull,
    /// The image was fetched but is not a usable wasm module image (wrong
    /// media types, not wasm, fails validation, a component importing an
    /// interface the node does not serve).
    InvalidImage,
    /// A registry response (manifest, blob, token answer) was larger than
    /// its limit or its declared size; reading stopped there.
    TooLarge,
}

impl PullFailure {
    /// Kubernetes' container waiting reason. `InvalidImage` has no kube
    /// reason of its own and reports `ErrImagePull` (the message says why).
    pub fn as_str(self) -> &'static str {
        match self {
            PullFailure::InvalidImageName => "InvalidImageName",
            PullFailure::ErrImagePull | PullFailure::InvalidImage | PullFailure::TooLarge => {
                "ErrImagePull"
            }
            PullFailure::ErrImageNeverPull => "ErrImageNeverPull",
        }
    }
}

fn err(reason: PullFailure, message: String) -> PullError {
    PullError { reason, message }
}

impl ImageService {
    /// Opens (creates) the cache directory. Installs ring as the process'
    /// default rustls provider if none is installed yet.
    pub fn new(cfg: Config) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fingerprint = cache::engine_fingerprint()?;
        let cache = Cache::open(&cfg.cache_dir, fingerprint)
            .map_err(|e| anyhow::anyhow!("image cache {}: {e}", cfg.cache_dir.display()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                max_module_bytes: cfg.max_module_bytes,
                fetcher: Fetcher::new(cfg.insecure_registries),
                cache,
                access: Ledger::new(),
                refs: Mutex::default(),
                flights: Mutex::default(),
                resolves: AtomicU64::new(0),
                downloads: AtomicU64::new(0),
                compiles: AtomicU64::new(0),
                cache_hits: AtomicU64::new(0),
                compile_slots: tokio::sync::Semaphore::new(cfg.max_concurrent_compiles.max(1)),
                compiling: AtomicU64::new(0),
                peak_compiling: AtomicU64::new(0),
            }),
        })
    }

    /// Resolve + pull + verify + validate + compile (single-flight per
    /// module digest; the compiler runs in `spawn_blocking`).
    pub async fn pull(&self, req: &PullRequest<'_>) -> Result<Arc<Pulled>, PullError> {
        let span =
            tracing::info_span!("image_pull", reference = req.reference, policy = ?req.policy);
        async {
            let start = Instant::now();
            let result = self.pull_inner(req).await;
            match &result {
                Ok(p) => tracing::info!(
                    elapsed_ms = start.elapsed().as_millis() as u64,
                    image_id = %p.image_id,
                    artifact = %p.artifact_digest,
                    "image ready"
                ),
                Err(e) => tracing::warn!(
                    elapsed_ms = start.elapsed().as_millis() as u64,
                    reason = e.reason.as_str(),
                    error = %e.message,
                    "image pull failed"
                ),
            }
            result
        }
        .instrument(span)
        .await
    }

    /// A compiled artifact by its digest ("sha256:<hex>"), from memory or
    /// the disk cache (re-verified on load).
    pub fn artifact(&self, digest: &str) -> Option<Arc<[u8]>> {
        self.inner.cache.load(digest)
    }

    pub fn stats(&self) -> Stats {
        let i = &self.inner;
        Stats {
            resolves: i.resolves.load(Ordering::Relaxed),
            downloads: i.downloads.load(Ordering::Relaxed),
            compiles: i.compiles.load(Ordering::Relaxed),
            cache_hits: i.cache_hits.load(Ordering::Relaxed),
            peak_compiling: i.peak_compiling.load(Ordering::Relaxed),
        }
    }

    async fn pull_inner(&self, req: &PullRequest<'_>) -> Result<Arc<Pulled>, PullError> {
        let r = reference::parse(req.reference)?;
        let key = r.whole();
        let credential = auth::find(req.credentials, r.registry());
        let who = Puller::new(r.registry(), credential);
        if req.policy != PullPolicy::Always
            && let Some(present) = self.present(&key, req.reference)
        {
            if self.may_use(&present, &who) {
                return Ok(present);
            }
            if req.policy == PullPolicy::Never {
                // Kube's answer: present, but this pod may not use it.
                return Err(err(
                    PullFailure::ErrImageNeverPull,
                    format!(
                        "Container image {:?} is present with pull policy of Never but does not have the proper auth to access it",
                        req.reference
                    ),
                ));
            }
            tracing::info!(
                image_id = %present.image_id,
                "cached image not pulled with these credentials before: verifying with the registry"
            );
        }
        if req.policy == PullPolicy::Never {
            return Err(err(
                PullFailure::ErrImageNeverPull,
                format!(
                    "Container image {:?} is not present with pull policy of Never",
                    req.reference
                ),
            ));
        }
        let inner = &self.inner;
        let auth = match credential {
            Some(c) => Auth::Basic {
                username: c.username.clone(),
                password: c.password.clone(),
            },
            None => Auth::Anonymous,
        };

        let t = Instant::now();
        inner.resolves.fetch_add(1, Ordering::Relaxed);
        let resolved = inner.fetcher.resolve(&r, &auth).await?;
        let module = resolved.module;
        tracing::debug!(
            elapsed_ms = t.elapsed().as_millis() as u64,
            manifest = %resolved.manifest_digest,
            module = %module.digest,
            size = module.size,
            "resolved"
        );
        if module.size > inner.max_module_bytes {
            return Err(err(
                PullFailure::InvalidImage,
                format!(
                    "module {} of {} is {} bytes, more than the {} allowed",
                    module.digest, req.reference, module.size, inner.max_module_bytes
                ),
            ));
        }

        let flight = {
            let mut flights = inner.flights.lock().unwrap_or_else(|e| e.into_inner());
            flights.entry(module.digest.clone()).or_default().clone()
        };
        let (artifact_digest, artifact) = {
            let _guard = flight.lock().await;
            let found = inner.cache.lookup(&module.digest);
            let result = match found {
                Some(hit) => {
                    inner.cache_hits.fetch_add(1, Ordering::Relaxed);
                    Ok(hit)
                }
                None => {
                    self.download_and_compile(&r, &auth, &module, req.reference)
                        .await
                }
            };
            drop(_guard);
            let mut flights = inner.flights.lock().unwrap_or_else(|e| e.into_inner());
            // Forget the lock once nobody else waits on it.
            if Arc::strong_count(&flight) <= 2 {
                flights.remove(&module.digest);
            }
            result?
        };

        let pulled = Arc::new(Pulled {
            reference: req.reference.to_string(),
            image_id: format!(
                "{}@{}",
                reference::repository_name(&r),
                resolved.manifest_digest
            ),
            module_digest: module.digest.clone(),
            artifact_digest,
            artifact_size: artifact.len() as u64,
        });
        // The registry served this image's manifest to `who`.
        inner.access.record(&inner.cache, &pulled.image_id, &who);
        if let Err(e) = inner.cache.save_ref(&key, &pulled) {
            tracing::warn!(error = %e, "cannot record the image resolution on disk");
        }
        inner
            .refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, pulled.clone());
        Ok(pulled)
    }

    /// The image if it is already here and `policy` lets a pull with
    /// `credentials` use it without asking the registry (`IfNotPresent`,
    /// `Never`, and those credentials or an anonymous pull pulled it);
    /// `None` otherwise. Synchronous: callers can answer at once instead of
    /// awaiting a pull.
    pub fn present_for(
        &self,
        reference: &str,
        policy: PullPolicy,
        credentials: &[Credential],
    ) -> Option<Arc<Pulled>> {
        if policy == PullPolicy::Always {
            return None;
        }
        let r = reference::parse(reference).ok()?;
        let who = Puller::new(r.registry(), auth::find(credentials, r.registry()));
        self.present(&r.whole(), reference)
            .filter(|p| self.may_use(p, &who))
    }

    fn may_use(&self, p: &Pulled, who: &Puller) -> bool {
        let inner = &self.inner;
        inner.access.may_use(&inner.cache, &p.image_id, who)
    }

    /// The last resolution of `key` if its artifact is still servable.
    fn present(&self, key: &str, requested: &str) -> Option<Arc<Pulled>> {
        let inner = &self.inner;
        let known = inner
            .refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned();
        let pulled = match known {
            Some(p) if p.reference == requested => p,
            // The same image spelled differently (`hello` and
            // `docker.io/library/hello`): answer with this spelling.
            Some(p) => Arc::new(Pulled {
                reference: requested.to_string(),
                ..(*p).clone()
            }),
            None => {
                let mut p = inner.cache.load_ref(key)?;
                p.reference = requested.to_string();
                Arc::new(p)
            }
        };
        inner.cache.load(&pulled.artifact_digest)?;
        inner
            .refs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_string(), pulled.clone());
        Some(pulled)
    }

    async fn download_and_compile(
        &self,
        r: &oci_client::Reference,
        auth: &Auth,
        module: &fetch::Descriptor,
        requested: &str,
    ) -> Result<(String, Arc<[u8]>), PullError> {
        let inner = &self.inner;
        let t = Instant::now();
        inner.downloads.fetch_add(1, Ordering::Relaxed);
        // Generous for a slow link, bounded for a stalled one.
        let timeout = Duration::from_secs(120 + module.size / (1 << 20));
        let wasm = inner
            .fetcher
            .module(r, auth, module, inner.max_module_bytes, timeout)
            .await?;
        tracing::debug!(
            elapsed_ms = t.elapsed().as_millis() as u64,
            bytes = wasm.len(),
            "module downloaded"
        );

        let t = Instant::now();
        let _slot = inner.compile_slots.acquire().await.map_err(|_| {
            err(
                PullFailure::ErrImagePull,
                "the image service stopped".into(),
            )
        })?;
        inner.compiles.fetch_add(1, Ordering::Relaxed);
        let now = inner.compiling.fetch_add(1, Ordering::Relaxed) + 1;
        inner.peak_compiling.fetch_max(now, Ordering::Relaxed);
        let compiled = tokio::task::spawn_blocking(move || {
            let out = skiff_wasm::precompile(&wasm);
            (out, wasm)
        })
        .await;
        inner.compiling.fetch_sub(1, Ordering::Relaxed);
        let compiled = compiled.map_err(|e| {
            err(
                PullFailure::ErrImagePull,
                format!("the compiler task failed: {e}"),
            )
        })?;
        let artifact = match compiled {
            (Ok(a), _) => a,
            (Err(e), wasm) => {
                let what = match e {
                    skiff_wasm::Error::NotWasm => format!("{e}; it starts with {}", preview(&wasm)),
                    other => other.to_string(),
                };
                return Err(err(
                    PullFailure::InvalidImage,
                    format!(
                        "the wasm layer {} of {requested} cannot run on a node: {what}",
                        module.digest
                    ),
                ));
            }
        };
        tracing::info!(
            elapsed_ms = t.elapsed().as_millis() as u64,
            module = %module.digest,
            module_bytes = module.size,
            artifact_bytes = artifact.len(),
            "module compiled"
        );
        inner.cache.store(&module.digest, artifact).map_err(|e| {
            err(
                PullFailure::ErrImagePull,
                format!("storing the compiled artifact: {e}"),
            )
        })
    }
}

/// The first bytes of a blob, printable, for "not wasm" messages.
fn preview(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(16)];
    format!("{:?}", String::from_utf8_lossy(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_like_kubernetes() {
        use PullPolicy::*;
        assert_eq!(PullPolicy::from_k8s(None, "hello"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "r:5000/hello:latest"), Always);
        assert_eq!(PullPolicy::from_k8s(None, "r:5000/hello:1.0"), IfNotPresent);
        let pinned = format!("hello@sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::from_k8s(None, &pinned), IfNotPresent);
        assert_eq!(PullPolicy::from_k8s(Some("Never"), "hello"), Never);
        assert_eq!(PullPolicy::from_k8s(Some("Always"), "hello:1"), Always);
        assert_eq!(
            PullPolicy::from_k8s(Some("IfNotPresent"), "hello"),
            IfNotPresent
        );
    }

    #[test]
    fn reasons() {
        assert_eq!(PullFailure::InvalidImageName.as_str(), "InvalidImageName");
        assert_eq!(PullFailure::InvalidImage.as_str(), "ErrImagePull");
        assert_eq!(PullFailure::ErrImageNeverPull.as_str(), "ErrImageNeverPull");
    }
}
