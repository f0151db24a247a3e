//! The node's cache of compiled wasm artifacts, filled from the plane over
//! the node connection ([`NodeToPlane::FetchArtifact`] /
//! [`PlaneToNode::ArtifactChunk`](skiff_node_proto::PlaneToNode::ArtifactChunk)).
//!
//! The runtime asks for an artifact by digest ([`ArtifactStore::want`]); the
//! agent sends the fetches ([`ArtifactStore::next_fetches`]) and feeds the
//! chunks back ([`ArtifactStore::on_chunk`]). A download becomes ready only
//! once its sha256 equals the digest the pod spec named, so the node never
//! loads bytes the plane did not vouch for; a mismatch fails that artifact
//! (the container start fails and the kubelet backs off and retries).
//!
//! Invariants: at most one fetch per download is in flight; a dropped
//! connection forgets in-flight fetches ([`ArtifactStore::on_disconnect`]) so
//! the next connection re-asks from the received offset; the cache holds at
//! most `max_bytes` of ready artifacts, evicting those no container uses.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use sha2::{Digest as _, Sha256};
use skiff_node_proto::{MAX_ARTIFACT_CHUNK, NodeToPlane};
use spin::Mutex;

/// Where an artifact stands on this node.
#[derive(Debug, Clone)]
pub enum ArtifactState {
    Ready(Arc<[u8]>),
    Fetching,
    /// The download failed (digest mismatch, the plane refused, too large).
    /// Reported once: the next [`ArtifactStore::want`] retries.
    Failed(String),
}

#[derive(Debug)]
struct Download {
    total: u64,
    buf: Vec<u8>,
    in_flight: bool,
}

#[derive(Debug, Default)]
struct Inner {
    max_bytes: usize,
    ready: BTreeMap<String, Arc<[u8]>>,
    /// Ready digests, least recently wanted first.
    lru: Vec<String>,
    downloads: BTreeMap<String, Download>,
    failed: BTreeMap<String, String>,
}

/// A shared handle to the node's artifact cache (the agent and the runtime
/// each hold one).
#[derive(Debug, Clone, Default)]
pub struct ArtifactStore(Arc<Mutex<Inner>>);

/// `"sha256:<hex>"` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let sum = Sha256::digest(bytes);
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in sum {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl ArtifactStore {
    /// A cache holding at most `max_bytes` of ready artifacts.
    pub fn new(max_bytes: usize) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            max_bytes,
            ..Inner::default()
        })))
    }

    /// The artifact if it is here.
    pub fn get(&self, digest: &str) -> Option<Arc<[u8]>> {
        self.0.lock().ready.get(digest).cloned()
    }

    /// The artifact `digest` of `size` bytes: ready, or now being fetched.
    pub fn want(&self, digest: &str, size: u64) -> ArtifactState {
        let mut g = self.0.lock();
        if let Some(a) = g.ready.get(digest).cloned() {
            g.lru.retain(|d| d != digest);
            g.lru.push(digest.into());
            return ArtifactState::Ready(a);
        }
        if let Some(err) = g.failed.remove(digest) {
            return ArtifactState::Failed(err);
        }
        if !digest.starts_with("sha256:") || digest.len() != 71 {
            return ArtifactState::Failed(format!(
                "artifact digest {digest:?} is not sha256:<hex>"
            ));
        }
        if size as usize > g.max_bytes {
            return ArtifactState::Failed(format!(
                "artifact {digest} is {size} bytes, more than this node's artifact cache ({} bytes)",
                g.max_bytes
            ));
        }
        g.downloads
            .entry(digest.into())
            .or_insert_with(|| Download {
                total: size,
                buf: Vec::new(),
                in_flight: false,
            });
        ArtifactState::Fetching
    }

    /// Whether any download is waiting for a fetch to be sent.
    pub fn has_pending_fetches(&self) -> bool {
        self.0.lock().downloads.values().any(|d| !d.in_flight)
    }

    /// Fetch requests to send now (one per download without one in flight).
    pub fn next_fetches(&self) -> Vec<NodeToPlane> {
        let mut g = self.0.lock();
        let mut out = Vec::new();
        for (digest, d) in g.downloads.iter_mut().filter(|(_, d)| !d.in_flight) {
            d.in_flight = true;
            let left = d.total.saturating_sub(d.buf.len() as u64);
            out.push(NodeToPlane::FetchArtifact {
                digest: digest.clone(),
                offset: d.buf.len() as u64,
                len: left.clamp(1, MAX_ARTIFACT_CHUNK as u64) as u32,
            });
        }
        out
    }

    /// Feeds one answer from the plane. Chunks that match no download (or
    /// not its offset) are ignored.
    pub fn on_chunk(
        &self,
        digest: &str,
        offset: u64,
        total: u64,
        data: &[u8],
        error: Option<&str>,
    ) {
        let mut g = self.0.lock();
        let Some(d) = g.downloads.get_mut(digest) else {
            return;
        };
        if offset != d.buf.len() as u64 {
            return;
        }
        d.in_flight = false;
        let fail = if let Some(e) = error {
            Some(format!("fetching artifact {digest}: {e}"))
        } else if total != d.total {
            Some(format!(
                "artifact {digest}: the plane says {total} bytes, the pod spec {} bytes",
                d.total
            ))
        } else if data.is_empty() || d.buf.len() + data.len() > total as usize {
            Some(format!(
                "artifact {digest}: chunk at {offset} does not fit its size {total}"
            ))
        } else {
            d.buf.extend_from_slice(data);
            None
        };
        if let Some(e) = fail {
            g.downloads.remove(digest);
            g.failed.insert(digest.into(), e);
            return;
        }
        if d.buf.len() as u64 != d.total {
            return;
        }
        let Some(d) = g.downloads.remove(digest) else {
            return;
        };
        let actual = sha256_digest(&d.buf);
        if actual != digest {
            g.failed.insert(
                digest.into(),
                format!("artifact digest mismatch: expected {digest}, received {actual}"),
            );
            return;
        }
        g.ready.insert(digest.into(), d.buf.into());
        g.lru.push(digest.into());
        g.evict();
    }

    /// The connection is gone: requests in flight will never be answered.
    pub fn on_disconnect(&self) {
        for d in self.0.lock().downloads.values_mut() {
            d.in_flight = false;
        }
    }

    /// Bytes of ready artifacts held.
    pub fn bytes(&self) -> usize {
        self.0.lock().ready.values().map(|a| a.len()).sum()
    }
}

impl Inner {
    /// Drops least recently wanted artifacts no one holds until under
    /// budget; never the newest (it was just fetched for a container).
    fn evict(&mut self) {
        let mut used: usize = self.ready.values().map(|a| a.len()).sum();
        let mut i = 0;
        while used > self.max_bytes && i + 1 < self.lru.len() {
            let d = &self.lru[i];
            match self.ready.get(d) {
                Some(a) if Arc::strong_count(a) == 1 => {
                    used -= a.len();
                    self.ready.remove(d);
                    self.lru.remove(i);
                }
                _ => i += 1,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn fetches(s: &ArtifactStore) -> Vec<(String, u64, u32)> {
        s.next_fetches()
            .into_iter()
            .map(|m| match m {
                NodeToPlane::FetchArtifact {
                    digest,
                    offset,
                    len,
                } => (digest, offset, len),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn downloads_in_chunks_and_verifies() {
        let body = vec![7u8; MAX_ARTIFACT_CHUNK + 10];
        let dig = sha256_digest(&body);
        let s = ArtifactStore::new(1 << 20);
        assert!(matches!(
            s.want(&dig, body.len() as u64),
            ArtifactState::Fetching
        ));
        assert_eq!(
            fetches(&s),
            vec![(dig.clone(), 0, MAX_ARTIFACT_CHUNK as u32)]
        );
        assert!(fetches(&s).is_empty(), "one fetch in flight");
        let total = body.len() as u64;
        s.on_chunk(&dig, 0, total, &body[..MAX_ARTIFACT_CHUNK], None);
        assert_eq!(
            fetches(&s),
            vec![(dig.clone(), MAX_ARTIFACT_CHUNK as u64, 10)]
        );
        // A connection drop forgets the request; the next one resumes.
        s.on_disconnect();
        assert_eq!(
            fetches(&s),
            vec![(dig.clone(), MAX_ARTIFACT_CHUNK as u64, 10)]
        );
        s.on_chunk(
            &dig,
            MAX_ARTIFACT_CHUNK as u64,
            total,
            &body[MAX_ARTIFACT_CHUNK..],
            None,
        );
        match s.want(&dig, total) {
            ArtifactState::Ready(a) => assert_eq!(&a[..], &body[..]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn digest_mismatch_fails_once_then_retries() {
        let dig = sha256_digest(b"good");
        let s = ArtifactStore::new(1 << 20);
        s.want(&dig, 4);
        fetches(&s);
        s.on_chunk(&dig, 0, 4, b"evil", None);
        match s.want(&dig, 4) {
            ArtifactState::Failed(e) => assert!(e.contains("digest mismatch"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(s.want(&dig, 4), ArtifactState::Fetching));
        assert!(s.get(&dig).is_none());
    }

    #[test]
    fn refusals_and_bad_sizes_fail() {
        let dig = sha256_digest(b"x");
        let s = ArtifactStore::new(1 << 20);
        s.want(&dig, 1);
        fetches(&s);
        s.on_chunk(&dig, 0, 0, &[], Some("unknown artifact"));
        assert!(
            matches!(s.want(&dig, 1), ArtifactState::Failed(e) if e.contains("unknown artifact"))
        );
        assert!(
            matches!(s.want(&dig, 2 << 20), ArtifactState::Failed(e) if e.contains("more than"))
        );
        assert!(matches!(s.want("md5:00", 1), ArtifactState::Failed(_)));
        // Stray chunks are ignored.
        s.on_chunk("sha256:nope", 0, 1, b"x", None);
    }

    #[test]
    fn evicts_unused_artifacts_over_budget() {
        let s = ArtifactStore::new(10);
        let (a, b) = (vec![1u8; 6], vec![2u8; 6]);
        let (da, db) = (sha256_digest(&a), sha256_digest(&b));
        for (d, body) in [(&da, &a), (&db, &b)] {
            s.want(d, 6);
            fetches(&s);
            s.on_chunk(d, 0, 6, body, None);
        }
        assert!(s.get(&da).is_none(), "oldest evicted");
        assert!(s.get(&db).is_some());
        // An artifact in use is kept even over budget.
        let held = s.get(&db).unwrap();
        s.want(&da, 6);
        fetches(&s);
        s.on_chunk(&da, 0, 6, &a, None);
        assert!(s.get(&db).is_some());
        drop(held);
        assert_eq!(s.bytes(), 12);
    }
}
