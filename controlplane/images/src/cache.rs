//! The compiled-artifact cache.
//!
//! ```text
//! <cache_dir>/artifacts/<hex>.cwasm   artifact, named by its own sha256
//! <cache_dir>/index/<key>             "sha256:<artifact hex>", key = sha256(engine fingerprint, module digest)
//! <cache_dir>/refs/<sha256(ref)>.json the last resolution of an image reference (IfNotPresent, Never)
//! <cache_dir>/access/<sha256(image id)>.json who pulled that image (see `access`)
//! ```
//!
//! Every artifact read from disk is hashed and compared with its name; a
//! mismatch deletes the file (and the caller compiles again). Files are
//! written to a temporary name and renamed, so a crash leaves no half file
//! under a final name.

use std::collections::{HashMap, VecDeque};
use std::hash::Hasher;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};
use skiff_wasm::Target;
use skiff_wasm::wasmtime::Engine;

use crate::Pulled;
use crate::access::Access;
use crate::fetch::sha256_digest;
use crate::reference::is_sha256_hex;

/// Artifacts kept in memory (the disk cache has everything).
const MEMORY_BYTES: usize = 256 << 20;

/// Feeds `Hash` output into sha256, so the fingerprint is stable across
/// processes and Rust versions (unlike `DefaultHasher`).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the sha256 is read")
    }
}

/// Identifies the compiler configuration: wasmtime's own compatibility hash
/// of the node engine (version, triple, ISA flags, tunables, features).
pub fn engine_fingerprint() -> anyhow::Result<String> {
    let engine = Engine::new(&skiff_wasm::engine_config(Target::Kernel))
        .map_err(|e| anyhow::anyhow!("building the kernel-target wasm engine: {e}"))?;
    let mut hasher = ShaHasher(Sha256::new());
    std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut hasher);
    hasher.write(Target::Kernel.triple().as_bytes());
    Ok(hex::encode(hasher.0.finalize()))
}

#[derive(Default)]
struct Memory {
    map: HashMap<String, Arc<[u8]>>,
    order: VecDeque<String>,
    bytes: usize,
}

pub struct Cache {
    dir: PathBuf,
    fingerprint: String,
    memory: Mutex<Memory>,
}

impl Cache {
    pub fn open(dir: &Path, fingerprint: String) -> io::Result<Self> {
        for sub in ["artifacts", "index", "refs", "access", "tmp"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            fingerprint,
            memory: Mutex::default(),
        })
    }

    fn artifact_path(&self, hex: &str) -> PathBuf {
        self.dir.join("artifacts").join(format!("{hex}.cwasm"))
    }

    fn index_path(&self, module_digest: &str) -> PathBuf {
        let key = sha256_digest(format!("{}\n{module_digest}", self.fingerprint).as_bytes());
        self.dir.join("index").join(&key["sha256:".len()..])
    }

    fn ref_path(&self, reference: &str) -> PathBuf {
        let key = sha256_digest(reference.as_bytes());
        self.dir
            .join("refs")
            .join(format!("{}.json", &key["sha256:".len()..]))
    }

    /// The artifact compiled from `module_digest` under this engine, if any.
    pub fn lookup(&self, module_digest: &str) -> Option<(String, Arc<[u8]>)> {
        let path = self.index_path(module_digest);
        let digest = std::fs::read_to_string(&path).ok()?;
        let digest = digest.trim().to_string();
        match self.load(&digest) {
            Some(bytes) => Some((digest, bytes)),
            None => {
                // The artifact is gone or was corrupt: forget the entry.
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// An artifact by digest: from memory, else from disk after checking its
    /// sha256 (a corrupt file is deleted, never served).
    pub fn load(&self, digest: &str) -> Option<Arc<[u8]>> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| is_sha256_hex(h))?;
        if let Some(bytes) = self.lock().map.get(digest) {
            return Some(bytes.clone());
        }
        let path = self.artifact_path(hex);
        let bytes = std::fs::read(&path).ok()?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            tracing::warn!(path = %path.display(), expected = digest, %actual, "corrupt cached artifact deleted");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let bytes: Arc<[u8]> = bytes.into();
        self.remember(digest, bytes.clone());
        Some(bytes)
    }

    /// Stores a freshly compiled artifact for `module_digest`.
    pub fn store(&self, module_digest: &str, artifact: Vec<u8>) -> io::Result<(String, Arc<[u8]>)> {
        let digest = sha256_digest(&artifact);
        self.write_atomic(&self.artifact_path(&digest["sha256:".len()..]), &artifact)?;
        self.write_atomic(&self.index_path(module_digest), digest.as_bytes())?;
        let bytes: Arc<[u8]> = artifact.into();
        self.remember(&digest, bytes.clone());
        Ok((digest, bytes))
    }

    /// The last resolution of `reference` whose artifact is still usable.
    pub fn load_ref(&self, key: &str) -> Option<Pulled> {
        let text = std::fs::read(self.ref_path(key)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save_ref(&self, key: &str, pulled: &Pulled) -> io::Result<()> {
        let json = serde_json::to_vec(pulled).map_err(io::Error::other)?;
        self.write_atomic(&self.ref_path(key), &json)
    }

    fn access_path(&self, image_id: &str) -> PathBuf {
        let key = sha256_digest(image_id.as_bytes());
        self.dir
            .join("access")
            .join(format!("{}.json", &key["sha256:".len()..]))
    }

    /// Who pulled `image_id`, as last saved.
    pub fn load_access(&self, image_id: &str) -> Option<Access> {
        let text = std::fs::read(self.access_path(image_id)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    pub fn save_access(&self, image_id: &str, access: &Access) -> io::Result<()> {
        let json = serde_json::to_vec(access).map_err(io::Error::other)?;
        self.write_atomic(&self.access_path(image_id), &json)
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = tempfile_in(&self.dir.join("tmp"))?;
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, digest: &str, bytes: Arc<[u8]>) {
        let mut mem = self.lock();
        if bytes.len() > MEMORY_BYTES || mem.map.contains_key(digest) {
            return;
        }
        mem.bytes += bytes.len();
        mem.map.insert(digest.to_string(), bytes);
        mem.order.push_back(digest.to_string());
        while mem.bytes > MEMORY_BYTES {
            let Some(old) = mem.order.pop_front() else {
                break;
            };
            if let Some(b) = mem.map.remove(&old) {
                mem.bytes -= b.len();
            }
        }
    }
}

/// A fresh file name under `dir` (process id + counter: unique per process,
/// and processes sharing a cache dir differ in pid).
fn tempfile_in(dir: &Path) -> io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!("{}-{n}.tmp", std::process::id())))
}
