//! The registry side: resolving a reference to the wasm module's descriptor
//! and downloading it, verifying every manifest and blob against its sha256
//! digest here (whatever the client library checked).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::reference::is_sha256_hex;
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
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two reads of one response.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
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

/// oci-client clients, one per (scheme, credentials): a client keeps the
/// first credentials it saw for a registry, so pulls with different pull
/// secrets must not share one.
pub struct Fetcher {
    insecure: Vec<String>,
    clients: Mutex<HashMap<ClientKey, Arc<Client>>>,
}

/// Plain HTTP?, and (username, sha256 of the password) for basic auth.
type ClientKey = (bool, Option<(String, String)>);

impl Fetcher {
    pub fn new(insecure: Vec<String>) -> Self {
        Self {
            insecure,
            clients: Mutex::default(),
        }
    }

    /// Plain HTTP only for a registry the operator listed: a pod's image
    /// name must not point the plane at a host (loopback included: the
    /// plane's own ports) without TLS.
    fn plain_http(&self, registry: &str) -> bool {
        self.insecure
            .iter()
            .any(|r| r.eq_ignore_ascii_case(registry))
    }

    fn client(&self, registry: &str, auth: &RegistryAuth) -> Arc<Client> {
        let http = self.plain_http(registry);
        let who = match auth {
            RegistryAuth::Basic(u, p) => Some((u.clone(), sha256_digest(p.as_bytes()))),
            _ => None,
        };
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        clients
            .entry((http, who))
            .or_insert_with(|| {
                Arc::new(Client::new(ClientConfig {
                    protocol: if http {
                        ClientProtocol::Http
                    } else {
                        ClientProtocol::Https
                    },
                    connect_timeout: Some(CONNECT_TIMEOUT),
                    read_timeout: Some(READ_TIMEOUT),
                    user_agent: concat!("skiff-images/", env!("CARGO_PKG_VERSION")),
                    // Index entries are chosen here, not by the library.
                    platform_resolver: None,
                    ..ClientConfig::default()
                }))
            })
            .clone()
    }

    /// Fetches the manifest `r` names (following an index to its wasm entry)
    /// and returns the module layer's descriptor.
    pub async fn resolve(&self, r: &Reference, auth: &RegistryAuth) -> Result<Resolved, PullError> {
        let client = self.client(r.registry(), auth);
        let (body, digest) = self.manifest(&client, r, auth, r.digest(), None).await?;
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
                .manifest(&client, &child, auth, Some(&entry.digest), Some(entry.size))
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

    /// One manifest, checked against `expected` (the digest it was asked by)
    /// and size-bounded.
    async fn manifest(
        &self,
        client: &Client,
        r: &Reference,
        auth: &RegistryAuth,
        expected: Option<&str>,
        declared_size: Option<u64>,
    ) -> Result<(Vec<u8>, String), PullError> {
        if let Some(size) = declared_size
            && size > MAX_MANIFEST_BYTES as u64
        {
            return Err(invalid(format!(
                "manifest {} is {size} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                r.whole()
            )));
        }
        // oci-client reads the body whole; the size is checked once it is here.
        let fetched =
            tokio::time::timeout(MANIFEST_TIMEOUT, client.pull_manifest_raw(r, auth, ACCEPT))
                .await
                .map_err(|_| {
                    pull_err(format!(
                        "fetching the manifest of {} timed out after {MANIFEST_TIMEOUT:?}",
                        r.whole()
                    ))
                })?;
        let (body, _) = fetched.map_err(|e| registry_error(e, r, "manifest"))?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(invalid(format!(
                "manifest {} is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed",
                r.whole(),
                body.len()
            )));
        }
        let actual = sha256_digest(&body);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(pull_err(format!(
                "manifest digest mismatch for {}: expected {expected}, got {actual}",
                r.whole()
            )));
        }
        Ok((body.to_vec(), actual))
    }

    /// Downloads the module blob, bounded by `max` bytes and verified against
    /// its descriptor's digest and size.
    pub async fn module(
        &self,
        r: &Reference,
        auth: &RegistryAuth,
        module: &Descriptor,
        max: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, PullError> {
        let client = self.client(r.registry(), auth);
        let work = async {
            let mut stream = client
                .pull_blob_stream(r, module.digest.as_str())
                .await
                .map_err(|e| registry_error(e, r, "module blob"))?;
            let mut bytes = Vec::with_capacity(module.size.min(max) as usize);
            let mut hasher = Sha256::new();
            let mut failure = None;
            while let Some(chunk) = stream.stream.next().await {
                match chunk {
                    Ok(chunk) => {
                        if (bytes.len() + chunk.len()) as u64 > module.size.min(max) {
                            return Err(pull_err(format!(
                                "module blob {} is larger than its declared {} bytes",
                                module.digest, module.size
                            )));
                        }
                        hasher.update(&chunk);
                        bytes.extend_from_slice(&chunk);
                    }
                    // The library's own check fails at the end of the stream;
                    // ours below names both digests.
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
            if bytes.len() as u64 == module.size && actual != module.digest {
                return Err(pull_err(format!(
                    "module blob digest mismatch for {}: expected {}, got {actual}",
                    r.whole(),
                    module.digest
                )));
            }
            if let Some(e) = failure {
                return Err(pull_err(format!(
                    "downloading module blob {}: {e}",
                    module.digest
                )));
            }
            if bytes.len() as u64 != module.size {
                return Err(pull_err(format!(
                    "module blob {} ended after {} of {} bytes",
                    module.digest,
                    bytes.len(),
                    module.size
                )));
            }
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

/// A registry failure as kubelet-style text: "not found" and "unauthorized"
/// are spelled out so users (and tests) can tell them apart.
fn registry_error(e: OciDistributionError, r: &Reference, what: &str) -> PullError {
    let name = r.whole();
    let message = match &e {
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes: Vec<String> = envelope
                .errors
                .iter()
                .map(|e| format!("{:?}: {}", e.code, e.message))
                .collect();
            let kind = envelope.errors.iter().find_map(|e| match e.code {
                OciErrorCode::ManifestUnknown
                | OciErrorCode::NameUnknown
                | OciErrorCode::BlobUnknown
                | OciErrorCode::NotFound => Some("not found"),
                OciErrorCode::Unauthorized | OciErrorCode::Denied => Some("unauthorized"),
                _ => None,
            });
            match kind {
                Some(kind) => format!("{what} of {name} {kind} ({})", codes.join("; ")),
                None => format!(
                    "registry refused the {what} of {name}: {}",
                    codes.join("; ")
                ),
            }
        }
        OciDistributionError::ServerError { code: 404, url, .. } => {
            format!("{what} of {name} not found (404 from {url})")
        }
        OciDistributionError::ServerError {
            code: 401 | 403,
            url,
            message,
        } => {
            format!("unauthorized: {url} refused the {what} of {name}: {message}")
        }
        OciDistributionError::UnauthorizedError { url } => format!(
            "unauthorized: {url} refused the {what} of {name} (missing or wrong credentials)"
        ),
        OciDistributionError::AuthenticationFailure(why) => {
            format!("unauthorized: token request for {name} failed: {why}")
        }
        OciDistributionError::DigestError(d) => format!("{what} digest mismatch for {name}: {d}"),
        OciDistributionError::RequestError(req) => {
            let mut text = format!("cannot reach the registry of {name}: {req}");
            let mut source = std::error::Error::source(req);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            text
        }
        other => format!("fetching the {what} of {name}: {other}"),
    };
    pull_err(message)
}
