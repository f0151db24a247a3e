//! An in-memory copy of the RBAC objects (Roles, ClusterRoles, RoleBindings,
//! ClusterRoleBindings), kept current by a store watch: list at revision R,
//! watch from R + 1, relist when the watch fails (compacted, cut off).
//!
//! Readers must not see state older than a write that preceded their request,
//! so [`RbacCache::wait_applied`] waits until the cache has applied at least
//! the store's current revision. Writes to other keys advance that revision
//! too: the watch's progress (every matching event up to R delivered) moves
//! the applied revision past them, and a waiter pokes the task to ask.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::time::Duration;

use serde_json::Value;
use skiff_store::{EventKind, KeySet, KeyValue, RangeRequest, Store, WatchRequest};
use tokio::sync::{Notify, watch};

const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// The RBAC objects, keyed by namespace (namespaced kinds) and name.
#[derive(Default, Debug)]
pub struct Objects {
    pub roles: BTreeMap<String, BTreeMap<String, Value>>,
    pub cluster_roles: BTreeMap<String, Value>,
    pub role_bindings: BTreeMap<String, BTreeMap<String, Value>>,
    pub cluster_role_bindings: BTreeMap<String, Value>,
}

enum Slot<'a> {
    Namespaced(
        &'a mut BTreeMap<String, BTreeMap<String, Value>>,
        String,
        String,
    ),
    Cluster(&'a mut BTreeMap<String, Value>, String),
}

impl Objects {
    fn slot(&mut self, key: &[u8]) -> Option<Slot<'_>> {
        let rest = std::str::from_utf8(key).ok()?.strip_prefix(PREFIX)?;
        let mut parts = rest.split('/');
        let plural = parts.next()?;
        let a = parts.next()?.to_string();
        let b = parts.next().map(str::to_string);
        if parts.next().is_some() {
            return None;
        }
        Some(match (plural, b) {
            ("roles", Some(n)) => Slot::Namespaced(&mut self.roles, a, n),
            ("rolebindings", Some(n)) => Slot::Namespaced(&mut self.role_bindings, a, n),
            ("clusterroles", None) => Slot::Cluster(&mut self.cluster_roles, a),
            ("clusterrolebindings", None) => Slot::Cluster(&mut self.cluster_role_bindings, a),
            _ => return None,
        })
    }

    fn put(&mut self, kv: &KeyValue) {
        // Objects are validated on the way in; an undecodable one grants
        // nothing (as the store-read path, which would fail the request).
        let Ok(v) = serde_json::from_slice::<Value>(&kv.value) else {
            self.delete(&kv.key);
            return;
        };
        match self.slot(&kv.key) {
            Some(Slot::Namespaced(m, ns, name)) => {
                m.entry(ns).or_default().insert(name, v);
            }
            Some(Slot::Cluster(m, name)) => {
                m.insert(name, v);
            }
            None => {}
        }
    }

    fn delete(&mut self, key: &[u8]) {
        match self.slot(key) {
            Some(Slot::Namespaced(m, ns, name)) => {
                if let Some(inner) = m.get_mut(&ns) {
                    inner.remove(&name);
                    if inner.is_empty() {
                        m.remove(&ns);
                    }
                }
            }
            Some(Slot::Cluster(m, name)) => {
                m.remove(&name);
            }
            None => {}
        }
    }
}

/// The cache; [`spawn`] keeps it current.
#[derive(Debug)]
pub struct RbacCache {
    objects: RwLock<Objects>,
    /// The revision up to which every RBAC change is in `objects`.
    applied: AtomicU64,
    applied_tx: watch::Sender<u64>,
    /// Asks the task to publish the watch's progress.
    poke: Notify,
}

impl Default for RbacCache {
    fn default() -> Self {
        RbacCache {
            objects: RwLock::new(Objects::default()),
            applied: AtomicU64::new(0),
            applied_tx: watch::Sender::new(0),
            poke: Notify::new(),
        }
    }
}

/// How long a request waits for the cache before reading the store itself.
pub const WAIT: Duration = Duration::from_secs(1);

impl RbacCache {
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }

    fn publish(&self, rev: u64) {
        if rev > self.applied.load(Ordering::Acquire) {
            self.applied.fetch_max(rev, Ordering::AcqRel);
            self.applied_tx.send_modify(|a| *a = (*a).max(rev));
        }
    }

    /// Whether the cache has applied `target` (now or within `timeout`);
    /// false means: read the store.
    pub async fn wait_applied(&self, target: u64, timeout: Duration) -> bool {
        if self.applied() >= target {
            return true;
        }
        let mut rx = self.applied_tx.subscribe();
        self.poke.notify_one();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|a| *a >= target)).await,
            Ok(Ok(_))
        )
    }

    /// Read access to the objects (do not hold across an await).
    pub fn read(&self) -> RwLockReadGuard<'_, Objects> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Objects> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// Starts the task that keeps `cache` current; it ends when the store closes.
pub fn spawn(cache: Arc<RbacCache>, store: Store) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match sync_once(&cache, &store).await {
                Err(skiff_store::Error::Closed) => return,
                // Compacted, cut off, storage errors: relist.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Ok(()) => {}
            }
        }
    })
}

/// One list and the watch after it, until the watch fails.
async fn sync_once(cache: &RbacCache, store: &Store) -> Result<(), skiff_store::Error> {
    let list = store.range(RangeRequest::prefix(PREFIX)).await?;
    let rev = list.revision;
    let mut fresh = Objects::default();
    for kv in &list.kvs {
        fresh.put(kv);
    }
    let mut w = store
        .watch(WatchRequest::new(KeySet::prefix(PREFIX), rev + 1))
        .await?;
    *cache.write() = fresh;
    cache.publish(rev);
    loop {
        tokio::select! {
            biased;
            batch = w.next() => {
                let batch = batch?;
                if let Some(last) = batch.last() {
                    let last = last.revision();
                    {
                        let mut o = cache.write();
                        for e in &batch {
                            match e.kind {
                                EventKind::Put => o.put(&e.kv),
                                EventKind::Delete => o.delete(&e.kv.key),
                            }
                        }
                    }
                    // Later events of the same revision may still be queued.
                    cache.publish(last.saturating_sub(1));
                }
            }
            _ = cache.poke.notified() => {}
        }
        if let Some(p) = w.progress() {
            cache.publish(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_kinds() {
        let mut o = Objects::default();
        let kv = |k: &str, v: &str| KeyValue {
            key: k.as_bytes().to_vec().into(),
            value: v.as_bytes().to_vec().into(),
            create_revision: 1,
            mod_revision: 1,
            version: 1,
            lease: 0,
        };
        o.put(&kv(&format!("{PREFIX}roles/ns/r"), "{\"a\":1}"));
        o.put(&kv(&format!("{PREFIX}clusterroles/cr"), "{}"));
        o.put(&kv(&format!("{PREFIX}rolebindings/ns/b"), "{}"));
        o.put(&kv(&format!("{PREFIX}clusterrolebindings/c"), "{}"));
        assert_eq!(o.roles["ns"]["r"]["a"], 1);
        assert!(o.cluster_roles.contains_key("cr"));
        assert!(o.role_bindings["ns"].contains_key("b"));
        assert!(o.cluster_role_bindings.contains_key("c"));
        o.delete(format!("{PREFIX}roles/ns/r").as_bytes());
        assert!(!o.roles.contains_key("ns"));
    }

    /// Writes to RBAC keys show up, writes elsewhere are caught up with
    /// through the watch's progress (no waiting out the timeout), and a
    /// compaction past the watch does not lose anything.
    #[tokio::test]
    async fn follows_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path().join("s.redb"), skiff_store::Options::default())
            .await
            .expect("open");
        let cache = Arc::new(RbacCache::default());
        let task = spawn(cache.clone(), store.clone());
        let long = Duration::from_secs(30);
        let quick = |c: &RbacCache, rev| {
            let c = c.applied();
            assert!(c >= rev, "applied {c} < {rev}");
        };
        let key = format!("{PREFIX}clusterroles/a");
        store.put(key.clone(), "{\"rules\":[]}").await.expect("put");
        for i in 0..20 {
            store
                .put(format!("/registry/core/configmaps/ns/c{i}"), "{}")
                .await
                .expect("put");
            let t = std::time::Instant::now();
            assert!(cache.wait_applied(store.current_revision(), long).await);
            assert!(t.elapsed() < Duration::from_secs(5));
            quick(&cache, store.current_revision());
        }
        assert!(cache.read().cluster_roles.contains_key("a"));
        store.delete_range(KeySet::key(key)).await.expect("delete");
        assert!(cache.wait_applied(store.current_revision(), long).await);
        assert!(cache.read().cluster_roles.is_empty());
        store
            .put(format!("{PREFIX}rolebindings/ns/b"), "{}")
            .await
            .expect("put");
        store
            .compact(store.current_revision())
            .await
            .expect("compact");
        assert!(cache.wait_applied(store.current_revision(), long).await);
        assert!(cache.read().role_bindings["ns"].contains_key("b"));
        task.abort();
        let _ = task.await;
        store.close().await.expect("close");
    }
}
