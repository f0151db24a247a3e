//! The registry side: resolving a reference to the wasm module's descriptor
//! and downloading it, verifying every manifest and blob against its sha256
//! digest, with every response size-bounded while it is read
//! ([`crate::registry`]).

use std::time::Duration;

use oci_client::Reference;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::reference::is_sha256_hex;
use crate::registry::{self, Auth, Registry};
use crate::{PullError, PullFailure};

/// The CNCF wasm artifact's config media type.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Its layer media type, and the older one still produced by some tools.
pub const WASM_LAYERS: &[&str] = &[
    "application/wasm",
    "application/vnd.wasm.content.layer.v1+wasm",
];
/// Largest manifest or index accepted.
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;
/// A whole manifest request (token round trip included).
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Index entries tried when none names a wasm platform.
const MAX_INDEX_PROBES: usize = 8;

const ACCEPT: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Manifest {
    media_type: Option<String>,
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    digest: String,
    #[serde(default)]
    size: u64,
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

/// A reference resolved to its wasm module.
#[derive(Debug)]
pub struct Resolved {
    /// Digest of the image manifest (of the index when the reference named one).
    pub manifest_digest: String,
    pub module: Descriptor,
}

fn pull_err(message: String) -> PullError {
    PullError {
        reason: PullFailure::ErrImagePull,
        message,
    }
}

fn invalid(message: String) -> PullError {
    PullError {
        reason: PullFailure::InvalidImage,
        message,
    }
}

pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Resolves references and downloads modules.
pub struct Fetcher {
    registry: Registry,
}

impl Fetcher {
    pub fn new(insecure: Vec<String>) -> Self {
        Self {
            registry: Registry::new(insecure),
        }
    }

    /// Fetches the manifest `r` names (following an index to its wasm entry)
    /// and returns the module layer's descriptor.
    pub async fn resolve(&self, r: &Reference, auth: &Auth) -> Result<Resolved, PullError> {
        let (body, digest) = self.manifest(r, auth, r.digest(), None).await?;
        let top = parse_manifest(&body, &digest)?;
        let Some(entries) = top.manifests else {
            let module = wasm_layer(&top, r, &digest)?;
            return Ok(Resolved {
                manifest_digest: digest,
                module,
            });
        };
        // An index: the entry for a wasm platform, else the first wasm manifest.
        let mut order: Vec<&IndexEntry> = entries
            .iter()
            .filter(|e| {
                e.platform
                    .as_ref()
                    .is_some_and(|p| p.architecture == "wasm" || p.os.starts_with("wasi"))
            })
            .collect();
        if order.is_empty() {
            order = entries.iter().take(MAX_INDEX_PROBES).collect();
        }
        let mut seen = Vec::new();
        for entry in order {
            let child = r.clone_with_digest(entry.digest.clone());
            let (body, child_digest) = self
                .manifest(&child, auth, Some(&entry.digest), Some(entry.size))
                .await?;
            let m = parse_manifest(&body, &child_digest)?;
            if m.manifests.is_some() {
                seen.push(format!("{child_digest} (nested index)"));
                continue;
            }
            match m.config.as_ref() {
                Some(c) if c.media_type == WASM_CONFIG => {
                    let module = wasm_layer(&m, r, &child_digest)?;
                    return Ok(Resolved {
                        manifest_digest: digest,
                        module,
                    });
                }
                c => seen.push(format!(
                    "{child_digest} (config {})",
                    c.map_or("none", |c| c.media_type.as_str())
                )),
            }
        }
        Err(invalid(format!(
            "image index {digest} for {} has no wasm manifest (config media type {WASM_CONFIG}); entries tried: {}",
            r.whole(),
            seen.join(", ")
        )))
    }

    /// One manifest, checked against `expected` (the digest it was asked
    /// by), read with at most [`MAX_MANIFEST_BYTES`] (or its declared size)
    /// held.
    async fn manifest(
        &self,
        r: &Reference,
        auth: &Auth,
        expected: Option<&str>,
        declared_size: Option<u64>,
    ) -> Result<(Vec<u8>, String), PullError> {
        let max = MAX_MANIFEST_BYTES as u64;
        if let Some(size) = declared_size
            && size > max
        {
            return Err(PullError {
                reason: PullFailure::TooLarge,
                message: format!(
                    "manifest {} is {size} bytes, more than the {max} allowed",
                    r.whole()
                ),
            });
        }
        let limit = declared_size.filter(|s| *s > 0).unwrap_or(max);
        let reference = r.digest().or(r.tag()).unwrap_or("latest");
        let what = format!("the manifest of {}", r.whole());
        let work = async {
            let response = self
                .registry
                .get(
                    r,
                    &format!("manifests/{reference}"),
                    ACCEPT,
                    auth,
                    "manifest",
                )
                .await?;
            registry::read_bounded(response, limit, &what).await
        };
        let body = tokio::time::timeout(MANIFEST_TIMEOUT, work)
            .await
            .map_err(|_| {
                pull_err(format!(
                    "fetching the manifest of {} timed out after {MANIFEST_TIMEOUT:?}",
                    r.whole()
                ))
            })??;
        let actual = sha256_digest(&body);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(pull_err(format!(
                "manifest digest mismatch for {}: expected {expected}, got {actual}",
                r.whole()
            )));
        }
        Ok((body, actual))
    }

    /// Downloads the module blob, bounded by `max` bytes and verified against
    /// its descriptor's digest and size.
    pub async fn module(
        &self,
        r: &Reference,
        auth: &Auth,
        module: &Descriptor,
        max: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, PullError> {
        let limit = module.size.min(max);
        let what = format!("module blob {}", module.digest);
        let work = async {
            let response = self
                .registry
                .get(
                    r,
                    &format!("blobs/{}", module.digest),
                    &[],
                    auth,
                    "module blob",
                )
                .await?;
            let mut bytes = Vec::with_capacity(limit as usize);
            let mut hasher = Sha256::new();
            registry::stream_bounded(response, limit, &what, |chunk| {
                hasher.update(chunk);
                bytes.extend_from_slice(chunk);
                Ok(())
            })
            .await?;
            if bytes.len() as u64 != module.size {
                return Err(pull_err(format!(
                    "module blob {} ended after {} of {} bytes",
                    module.digest,
                    bytes.len(),
                    module.size
                )));
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if actual != module.digest {
                return Err(pull_err(format!(
                    "module blob digest mismatch for {}: expected {}, got {actual}",
                    r.whole(),
                    module.digest
                )));
            }
            Ok(bytes)
        };
        tokio::time::timeout(timeout, work).await.map_err(|_| {
            pull_err(format!(
                "downloading module blob {} timed out after {timeout:?}",
                module.digest
            ))
        })?
    }
}

fn parse_manifest(body: &[u8], digest: &str) -> Result<Manifest, PullError> {
    let m: Manifest = serde_json::from_slice(body).map_err(|e| {
        invalid(format!(
            "manifest {digest} is not a valid image manifest: {e}"
        ))
    })?;
    if m.manifests.is_none() && m.config.is_none() {
        return Err(invalid(format!(
            "manifest {digest} (media type {}) has neither a config nor index entries",
            m.media_type.as_deref().unwrap_or("unset")
        )));
    }
    Ok(m)
}

/// The one wasm layer of a CNCF wasm artifact.
fn wasm_layer(m: &Manifest, r: &Reference, digest: &str) -> Result<Descriptor, PullError> {
    let config = m.config.as_ref().map_or("none", |c| c.media_type.as_str());
    if config != WASM_CONFIG {
        return Err(invalid(format!(
            "{} ({digest}) is not a wasm image: config media type is {config:?}, expected {WASM_CONFIG:?}",
            r.whole()
        )));
    }
    let wasm: Vec<&Descriptor> = m
        .layers
        .iter()
        .filter(|l| WASM_LAYERS.contains(&l.media_type.as_str()))
        .collect();
    let found = || {
        m.layers
            .iter()
            .map(|l| l.media_type.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wasm.as_slice() {
        [one] => {
            let ok = one
                .digest
                .strip_prefix("sha256:")
                .is_some_and(is_sha256_hex);
            if !ok {
                return Err(invalid(format!(
                    "wasm layer of {} has an unsupported digest {:?} (sha256 only)",
                    r.whole(),
                    one.digest
                )));
            }
            Ok((*one).clone())
        }
        [] => Err(invalid(format!(
            "{} ({digest}) has no wasm layer (media type application/wasm); layers: [{}]",
            r.whole(),
            found()
        ))),
        many => Err(invalid(format!(
            "{} ({digest}) has {} wasm layers, a wasm image has exactly one; layers: [{}]",
            r.whole(),
            many.len(),
            found()
        ))),
    }
}
