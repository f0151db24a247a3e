//! skiff-store: the control plane's state, an MVCC key-value store with
//! etcd's semantics over [redb], with watch.
//!
//! # Model (etcd's)
//! - One cluster-wide [`Revision`]: it starts at 0 for an empty store and
//!   increases by exactly one per committed command that changes at least
//!   one key (a put, or a delete that deleted something). Txns whose chosen
//!   branch changes nothing, lease grants and compactions do not consume one.
//! - Each live key has `create_revision`, `mod_revision` and `version`
//!   (1 on creation, +1 per put, reset by delete).
//! - Reads see a consistent revision: the current one, or an older one not
//!   yet compacted (`revision >= compacted`).
//! - Watches deliver every change of a key set from a start revision, in
//!   revision order, without gaps, each with its previous value.
//!
//! # Write path
//! Every mutation is a [`Command`] (serde-encodable), applied in order by one
//! writer thread as a pure state-machine step over a redb write transaction
//! (`state::apply`). The writer drains all queued commands and applies them in
//! one redb transaction committed with `Durability::Immediate` (group commit);
//! each command still gets its own revision. Callers are answered only after
//! the commit returned, i.e. after fsync (a group that changed nothing, e.g.
//! only failed compares, skips the commit). A Raft implementation can replicate
//! the same `Command`s and apply them with the same function.
//!
//! Wall-clock time never enters the state machine: lease expiry is decided by
//! the (leader's) [`Store`] in memory and carried out as a `LeaseRevoke`
//! command, as etcd does.

#![forbid(unsafe_code)]

mod db;
mod raft;
mod snapshot;
mod state;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

pub use bytes::Bytes;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

pub use raft::{BoxFuture, Cluster, Member, MemberId, RaftOptions, Rpc, Transport, TransportError};
pub use snapshot::{SnapshotInfo, inspect as inspect_snapshot};
pub use watch::Watcher;

/// A cluster-wide revision. 0 means "none" / "current" depending on context.
pub type Revision = u64;
/// A lease id; 0 means "no lease".
pub type LeaseId = u64;

/// A key with its value and MVCC metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: Bytes,
    pub value: Bytes,
    /// Revision of the put that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last change (for a delete event: the delete's revision).
    pub mod_revision: Revision,
    /// Number of puts since creation (1 after creation; 0 in a delete event).
    pub version: u64,
    /// Lease attached to the key, 0 for none.
    pub lease: LeaseId,
}

/// A set of keys: one key, or the half-open interval `[start, end)` (`end:
/// None` = up to the last key). Same meaning as etcd's `key`/`range_end`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeySet {
    Key(Bytes),
    Range { start: Bytes, end: Option<Bytes> },
}

impl KeySet {
    /// One key.
    pub fn key(key: impl Into<Bytes>) -> Self {
        KeySet::Key(key.into())
    }

    /// All keys starting with `prefix` (all keys if it is empty).
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        let start: Bytes = prefix.into();
        let end = prefix_end(&start);
        KeySet::Range { start, end }
    }

    /// `[start, end)`.
    pub fn range(start: impl Into<Bytes>, end: impl Into<Bytes>) -> Self {
        KeySet::Range {
            start: start.into(),
            end: Some(end.into()),
        }
    }

    /// Whether `key` is in the set.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeySet::Key(k) => k.as_ref() == key,
            KeySet::Range { start, end } => {
                key >= start.as_ref() && end.as_ref().is_none_or(|e| key < e.as_ref())
            }
        }
    }

    /// Whether the two sets share a key (used to refuse a txn that puts a key
    /// it also deletes, as etcd does).
    fn overlaps(&self, other: &KeySet) -> bool {
        match (self, other) {
            (KeySet::Key(k), s) | (s, KeySet::Key(k)) => s.contains(k),
            (KeySet::Range { start: a, end: ae }, KeySet::Range { start: b, end: be }) => {
                let a_before_b_ends = be.as_ref().is_none_or(|be| a < be);
                let b_before_a_ends = ae.as_ref().is_none_or(|ae| b < ae);
                a_before_b_ends && b_before_a_ends
            }
        }
    }
}

/// The smallest key greater than every key with this prefix, `None` if there
/// is none (empty prefix or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Bytes> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end.into());
        }
    }
    None
}

/// A range read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub keys: KeySet,
    /// Read at this revision; 0 = current. Must be `>= compacted`.
    pub revision: Revision,
    /// At most this many keys (0 = no limit); `more` tells whether some
    /// were left out.
    pub limit: usize,
    /// Return keys and metadata with empty values.
    pub keys_only: bool,
    /// Return no key-values, only `count`.
    pub count_only: bool,
}

impl RangeRequest {
    pub fn new(keys: KeySet) -> Self {
        RangeRequest {
            keys,
            revision: 0,
            limit: 0,
            keys_only: false,
            count_only: false,
        }
    }
    pub fn key(key: impl Into<Bytes>) -> Self {
        Self::new(KeySet::key(key))
    }
    pub fn prefix(prefix: impl Into<Bytes>) -> Self {
        Self::new(KeySet::prefix(prefix))
    }
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }
    pub fn at_revision(mut self, revision: Revision) -> Self {
        self.revision = revision;
        self
    }
}

/// The answer to a [`RangeRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeResponse {
    pub kvs: Vec<KeyValue>,
    /// True if `limit` cut the answer short.
    pub more: bool,
    /// Number of keys in the range (ignoring `limit`).
    pub count: u64,
    /// The revision the read was served at (the store's revision for a
    /// current read).
    pub revision: Revision,
}

impl RangeResponse {
    /// The request for the next page (same revision, starting after the last
    /// key returned), or `None` if this was the last page. This is the
    /// continuation that a Kubernetes `continue` token encodes.
    pub fn next_page(&self, request: &RangeRequest) -> Option<RangeRequest> {
        if !self.more {
            return None;
        }
        let last = self.kvs.last()?;
        let mut start = last.key.to_vec();
        start.push(0);
        let end = match &request.keys {
            KeySet::Key(_) => return None,
            KeySet::Range { end, .. } => end.clone(),
        };
        Some(RangeRequest {
            keys: KeySet::Range {
                start: start.into(),
                end,
            },
            revision: self.revision,
            ..request.clone()
        })
    }
}

/// What a [`Compare`] looks at.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareTarget {
    /// Version (0 for a missing key: `Version(0)` Equal = "does not exist").
    Version(u64),
    CreateRevision(Revision),
    ModRevision(Revision),
    /// Value; false for a missing key whatever the operator.
    Value(Bytes),
    Lease(LeaseId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    Equal,
    NotEqual,
    Less,
    Greater,
}

/// One condition of a [`Txn`], on one key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compare {
    pub key: Bytes,
    pub target: CompareTarget,
    pub op: CompareOp,
}

impl Compare {
    pub fn new(key: impl Into<Bytes>, op: CompareOp, target: CompareTarget) -> Self {
        Compare {
            key: key.into(),
            target,
            op,
        }
    }
    /// The key exists.
    pub fn exists(key: impl Into<Bytes>) -> Self {
        Self::new(key, CompareOp::Greater, CompareTarget::Version(0))
    }
    /// The key does not exist.
    pub fn missing(key: impl Into<Bytes>) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::Version(0))
    }
    /// The key's mod_revision is `rev` (Kubernetes `resourceVersion` check).
    pub fn mod_revision(key: impl Into<Bytes>, rev: Revision) -> Self {
        Self::new(key, CompareOp::Equal, CompareTarget::ModRevision(rev))
    }
}

/// One operation of a [`Txn`] branch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Put {
        key: Bytes,
        value: Bytes,
        /// 0 for none; the lease must exist.
        lease: LeaseId,
    },
    Delete {
        keys: KeySet,
    },
    /// A read of the state as left by the ops before it. `revision` must be 0.
    Range(RangeRequest),
}

impl Op {
    pub fn put(key: impl Into<Bytes>, value: impl Into<Bytes>) -> Self {
        Op::Put {
            key: key.into(),
            value: value.into(),
            lease: 0,
        }
    }
    pub fn delete(keys: KeySet) -> Self {
        Op::Delete { keys }
    }
}

/// If all `compare` hold, apply `success`, else `failure`. Atomic; at most one
/// revision. A branch may not put the same key twice nor put a key it
/// deletes (etcd's rule), so each key changes at most once per revision.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    pub compare: Vec<Compare>,
    pub success: Vec<Op>,
    pub failure: Vec<Op>,
}

/// The result of one [`Op`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResponse {
    Put {
        prev_kv: Option<KeyValue>,
    },
    Delete {
        deleted: u64,
        prev_kvs: Vec<KeyValue>,
    },
    Range(RangeResponse),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnResponse {
    pub succeeded: bool,
    /// The store's revision after the txn (the txn's own revision if it
    /// changed anything).
    pub revision: Revision,
    pub responses: Vec<OpResponse>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutResponse {
    pub revision: Revision,
    pub prev_kv: Option<KeyValue>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteResponse {
    pub revision: Revision,
    pub deleted: u64,
    pub prev_kvs: Vec<KeyValue>,
}

/// A deterministic state-machine command: the unit of the write path (and of
/// a future Raft log).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Txn(Txn),
    /// `id` 0 = let the state machine choose (deterministically).
    LeaseGrant {
        id: LeaseId,
        ttl_secs: u64,
    },
    LeaseRevoke {
        id: LeaseId,
    },
    /// Drop history older than `revision` (reads at `revision` stay valid).
    Compact {
        revision: Revision,
    },
}

/// Short, for logs (Raft's entry display): the kind, not the data.
impl std::fmt::Display for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Txn(t) => write!(
                f,
                "txn({} compares, {}/{} ops)",
                t.compare.len(),
                t.success.len(),
                t.failure.len()
            ),
            Command::LeaseGrant { id, ttl_secs } => write!(f, "lease-grant({id}, {ttl_secs}s)"),
            Command::LeaseRevoke { id } => write!(f, "lease-revoke({id})"),
            Command::Compact { revision } => write!(f, "compact({revision})"),
        }
    }
}

/// What applying a [`Command`] returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandResult {
    Txn(TxnResponse),
    LeaseGranted { id: LeaseId, ttl_secs: u64 },
    LeaseRevoked { revision: Revision },
    Compacted { revision: Revision },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// One change. `kv.mod_revision` is the change's revision; for a delete,
/// `kv` holds the key and that revision only.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    /// The key's value before this change, if it existed.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    pub fn revision(&self) -> Revision {
        self.kv.mod_revision
    }
}

/// A watch on a key set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchRequest {
    pub keys: KeySet,
    /// First revision to deliver; 0 = changes after the current revision.
    /// Must be `> compacted`.
    pub start_revision: Revision,
}

impl WatchRequest {
    pub fn new(keys: KeySet, start_revision: Revision) -> Self {
        WatchRequest {
            keys,
            start_revision,
        }
    }
}

/// Errors. Command errors (conflicts are not errors: see `TxnResponse::succeeded`)
/// leave the state untouched.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("revision {requested} has been compacted (compacted up to {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("lease {0} not found")]
    LeaseNotFound(LeaseId),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("watcher cut off: {0}")]
    WatchCanceled(String),
    #[error("{}: corrupt store file: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage error: {0}")]
    Storage(String),
    #[error("store closed")]
    Closed,
    /// A replicated store found no leader with a quorum in time: the write
    /// or linearizable read did not happen here (a write may still commit
    /// later if it reached the leader).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// etcd's `NOSPACE`: a put would take the store past
    /// [`Options::quota_bytes`]. Reads, deletes and compaction still work,
    /// and free the space.
    #[error(
        "database space exceeded: {stored} bytes stored, quota {quota}; \
         writes are refused until deletes and compaction free space"
    )]
    NoSpace { stored: u64, quota: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Periodic compaction: every `interval`, compact to `current - retain`.
#[derive(Clone, Debug)]
pub struct AutoCompaction {
    pub interval: Duration,
    pub retain_revisions: u64,
}

/// Tuning. `Default` is what the control plane uses.
#[derive(Clone, Debug)]
pub struct Options {
    /// Most commands applied in one redb transaction (group commit).
    pub max_batch: usize,
    /// Events kept in memory for watchers that start slightly in the past.
    pub watch_ring_events: usize,
    /// Bytes (keys and values, current and previous) the ring may hold.
    pub watch_ring_bytes: usize,
    /// Batches a watcher may have pending before it is cut off.
    pub watch_queue_batches: usize,
    /// Bytes a watcher may have pending before it is cut off: a slow
    /// watcher must not pin an unbounded share of memory.
    pub watch_queue_bytes: usize,
    /// The store quota (etcd's `--quota-backend-bytes`): the most the
    /// retained versions of all keys may take (keys, values and record
    /// overhead, as counted by [`Store::stored_bytes`]) before puts are
    /// refused with [`Error::NoSpace`]. 0 = no quota. The file itself holds
    /// somewhat more (B-tree pages, free pages awaiting reuse).
    pub quota_bytes: u64,
    /// How often leases are checked for expiry.
    pub lease_check_interval: Duration,
    pub auto_compaction: Option<AutoCompaction>,
    /// Most revisions one compaction command covers: a large compaction runs
    /// as several commands so that writers queued behind it wait less.
    pub compaction_step: u64,
    /// Verify every page checksum when opening (redb's integrity check).
    /// Costs a full read of the file; without it a damaged page is only
    /// found when read (as an error, or a refused open if redb panics).
    pub verify_on_open: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_batch: 1024,
            watch_ring_events: 16 * 1024,
            watch_ring_bytes: 64 << 20,
            watch_queue_batches: 1024,
            watch_queue_bytes: 16 << 20,
            // etcd's default.
            quota_bytes: 2 << 30,
            lease_check_interval: Duration::from_millis(500),
            auto_compaction: Some(AutoCompaction {
                interval: Duration::from_secs(300),
                retain_revisions: 100_000,
            }),
            compaction_step: 10_000,
            verify_on_open: true,
        }
    }
}

/// Handle to an open store. Cheap to clone; all clones share one writer.
/// Dropping the last clone stops the writer; use [`Store::close`] to wait for
/// it (e.g. before reopening the same file).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.shared.path)
            .finish()
    }
}

/// What watchers and the writer thread share (not the command channel, so a
/// live watcher does not keep the writer alive).
pub(crate) struct Shared {
    pub(crate) path: PathBuf,
    pub(crate) db: db::Db,
    pub(crate) hub: watch::Hub,
    /// `Counters::bytes` as of the last commit.
    pub(crate) stored_bytes: std::sync::atomic::AtomicU64,
    /// How long each write transaction's commit (with its fsync) took.
    pub(crate) commit_durations: Histogram,
}

struct Inner {
    shared: Arc<Shared>,
    compaction_step: u64,
    tx: mpsc::Sender<writer::Request>,
    /// In-memory lease deadlines (not replicated state, as in etcd).
    leases: raft::Leases,
    /// Set when the store is replicated with Raft.
    replica: Option<Arc<raft::Replica>>,
    tasks: Vec<tokio::task::AbortHandle>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Store {
    /// Opens (or creates) the store at `path`. A file that exists but is not
    /// an intact store is refused with [`Error::Corrupt`] naming it; it is
    /// never reset. Must be called within a tokio runtime.
    pub async fn open(path: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_with(path.as_ref(), options, None).await
    }

    /// Opens a store replicated with Raft: writes commit on a quorum of
    /// members (here if this member leads, else forwarded to the leader),
    /// current reads are linearizable (ReadIndex), reads at a revision and
    /// watches are served from this member's applied state. Leases expire
    /// on the leader only. A new member's store starts empty and is filled
    /// by the log or a snapshot; call [`Store::initialize_cluster`] on the
    /// first member only.
    pub async fn open_replicated(
        path: impl AsRef<Path>,
        options: Options,
        raft: RaftOptions,
        transport: Arc<dyn Transport>,
    ) -> Result<Store> {
        Self::open_with(path.as_ref(), options, Some((raft, transport))).await
    }

    async fn open_with(
        path: &Path,
        options: Options,
        raft: Option<(RaftOptions, Arc<dyn Transport>)>,
    ) -> Result<Store> {
        let path = path.to_path_buf();
        let p = path.clone();
        let check_pages = options.verify_on_open;
        let (db, counters, leases, applied) = tokio::task::spawn_blocking(move || {
            let (db, mut counters, leases) = state::open_db(&p, check_pages)?;
            counters.bytes = state::stored_bytes(&db)?;
            let applied = state::raft_applied(
                &redb::ReadableDatabase::begin_read(&db).map_err(state::storage)?,
            )?;
            Ok::<_, Error>((db, counters, leases, applied))
        })
        .await
        .map_err(|e| Error::Storage(format!("open task failed: {e}")))??;
        let shared = Arc::new(Shared {
            db: db::Db::new(&path, db),
            path: path.clone(),
            hub: watch::Hub::new(
                counters.revision,
                counters.compacted,
                watch::Bounds {
                    ring_events: options.watch_ring_events,
                    ring_bytes: options.watch_ring_bytes,
                    queue_batches: options.watch_queue_batches,
                    queue_bytes: options.watch_queue_bytes,
                },
            ),
            stored_bytes: counters.bytes.into(),
            // etcd's buckets: 1 ms doubling to 8.192 s.
            commit_durations: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
        });
        let tx = writer::spawn(
            shared.clone(),
            counters,
            options.max_batch,
            options.quota_bytes,
        )?;
        let lease_map: raft::Leases = Arc::default();
        raft::reset_leases(&lease_map, leases);
        let replica = match raft {
            None => None,
            Some((ro, transport)) => {
                let lp = ro.log_path.clone();
                let log = tokio::task::spawn_blocking(move || raft::LogStore::open(&lp))
                    .await
                    .map_err(|e| Error::Storage(format!("open task failed: {e}")))??;
                let sm = raft::StateMachine {
                    shared: shared.clone(),
                    tx: tx.clone(),
                    leases: lease_map.clone(),
                    applied: raft::Applied::decode(applied).map_err(|e| Error::Corrupt {
                        path: path.clone(),
                        reason: format!("Raft record: {e}"),
                    })?,
                    dir: path.parent().unwrap_or(Path::new(".")).to_path_buf(),
                };
                let config = Arc::new(raft::config(&ro)?);
                let r = raft::Raft::new(ro.id, config, raft::Net(transport.clone()), log, sm)
                    .await
                    .map_err(|e| Error::Storage(format!("starting Raft: {e}")))?;
                Some(Arc::new(raft::Replica {
                    raft: r,
                    transport,
                    id: ro.id,
                    addr: ro.addr,
                    quorum_timeout: ro.quorum_timeout,
                }))
            }
        };
        let inner = Arc::new_cyclic(|weak: &Weak<Inner>| {
            let mut tasks = vec![
                tokio::spawn(lease_expiry(weak.clone(), options.lease_check_interval))
                    .abort_handle(),
            ];
            if let Some(ac) = options.auto_compaction.clone() {
                tasks.push(tokio::spawn(auto_compact(weak.clone(), ac)).abort_handle());
            }
            Inner {
                shared,
                compaction_step: options.compaction_step.max(1),
                tx,
                leases: lease_map,
                replica,
                tasks,
            }
        });
        Ok(Store { inner })
    }

    /// Makes this member a cluster of one (`--cluster-init`); a member
    /// already in a cluster is left as it is.
    pub async fn initialize_cluster(&self) -> Result<()> {
        let r = self.replica()?;
        if r.raft
            .is_initialized()
            .await
            .map_err(|e| Error::Storage(e.to_string()))?
        {
            return Ok(());
        }
        let me = std::collections::BTreeMap::from([(
            r.id,
            openraft::BasicNode {
                addr: r.addr.clone(),
            },
        )]);
        r.raft
            .initialize(me)
            .await
            .map_err(|e| Error::Storage(format!("initializing the cluster: {e}")))
    }

    fn replica(&self) -> Result<&Arc<raft::Replica>> {
        self.inner
            .replica
            .as_ref()
            .ok_or_else(|| Error::InvalidArgument("the store is not replicated".into()))
    }

    /// Adds a member: a learner until it has caught up, then a voter. Runs
    /// on the leader (forwarded there from any member).
    pub async fn add_member(&self, id: MemberId, addr: String) -> Result<()> {
        self.replica()?.add_member(id, addr).await
    }

    /// Removes a member; refused for the last voter.
    pub async fn remove_member(&self, id: MemberId) -> Result<()> {
        self.replica()?.remove_member(id).await
    }

    /// The cluster as this member sees it (`None` for a store of one).
    pub fn cluster(&self) -> Option<Cluster> {
        self.inner.replica.as_ref().map(|r| r.cluster())
    }

    /// Whether this member was removed from its cluster.
    pub fn removed(&self) -> bool {
        self.inner.replica.as_ref().is_some_and(|r| r.removed())
    }

    /// Serves a call from another member (see [`Transport`]).
    pub async fn serve_peer(&self, rpc: Rpc, body: &[u8]) -> Result<Vec<u8>> {
        self.replica()?.serve(rpc, body).await
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.shared.path
    }

    /// The latest revision whose changes have been published to watchers.
    pub fn current_revision(&self) -> Revision {
        self.inner.shared.hub.current_revision()
    }

    /// How long the store's write commits took, fsync included: a live
    /// handle for a metrics registry (etcd serves it as
    /// `etcd_disk_backend_commit_duration_seconds`, with these buckets).
    pub fn commit_durations(&self) -> Histogram {
        self.inner.shared.commit_durations.clone()
    }

    /// Number of watchers registered for live events (a metric; watchers
    /// still catching up from history are not counted).
    pub fn watcher_count(&self) -> usize {
        self.inner.shared.hub.watchers()
    }

    /// What the retained versions of all keys take, as the quota counts it
    /// ([`Options::quota_bytes`]).
    pub fn stored_bytes(&self) -> u64 {
        self.inner
            .shared
            .stored_bytes
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The compaction revision: reads must be at or after it, watches after it.
    pub fn compacted_revision(&self) -> Revision {
        self.inner.shared.hub.compacted_revision()
    }

    /// Range read at the current or an older revision. Runs on the calling
    /// task (a redb read transaction; no I/O wait for a cached working set).
    /// On a replicated store a read at revision 0 is linearizable: it
    /// first waits until this member has applied what the leader had
    /// committed when the read began.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        if request.revision == 0
            && let Some(r) = &self.inner.replica
        {
            r.read_barrier_boxed().await?;
        }
        state::range_read(&*self.inner.shared.db.get()?, &request)
    }

    /// Read one key at the current revision.
    pub async fn get(&self, key: impl Into<Bytes>) -> Result<Option<KeyValue>> {
        let mut r = self.range(RangeRequest::key(key)).await?;
        Ok(r.kvs.pop())
    }

    /// Apply a transaction; answered once durable.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        state::validate_txn(&txn)?;
        let writes = |ops: &[Op]| ops.iter().any(|op| !matches!(op, Op::Range(_)));
        if !writes(&txn.success) && !writes(&txn.failure) {
            // Compares and reads only: one read transaction, no writer trip.
            if let Some(r) = &self.inner.replica {
                r.read_barrier_boxed().await?;
            }
            return state::read_only_txn(&*self.inner.shared.db.get()?, &txn);
        }
        match self.submit(Command::Txn(txn)).await? {
            CommandResult::Txn(r) => Ok(r),
            other => Err(Error::Storage(format!("unexpected result {other:?}"))),
        }
    }

    /// Put one key; answered once durable.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<PutResponse> {
        self.put_with_lease(key, value, 0).await
    }

    /// Put one key attached to a lease (0 = none).
    pub async fn put_with_lease(
        &self,
        key: impl Into<Bytes>,
        value: impl Into<Bytes>,
        lease: LeaseId,
    ) -> Result<PutResponse> {
        let r = self
            .txn(Txn {
                success: vec![Op::Put {
                    key: key.into(),
                    value: value.into(),
                    lease,
                }],
                ..Txn::default()
            })
            .await?;
        match r.responses.into_iter().next() {
            Some(OpResponse::Put { prev_kv }) => Ok(PutResponse {
                revision: r.revision,
                prev_kv,
            }),
            other => Err(Error::Storage(format!("unexpected response {other:?}"))),
        }
    }

    /// Delete a key set; answered once durable.
    pub async fn delete_range(&self, keys: KeySet) -> Result<DeleteResponse> {
        let r = self
            .txn(Txn {
                success: vec![Op::Delete { keys }],
                ..Txn::default()
            })
            .await?;
        match r.responses.into_iter().next() {
            Some(OpResponse::Delete { deleted, prev_kvs }) => Ok(DeleteResponse {
                revision: r.revision,
                deleted,
                prev_kvs,
            }),
            other => Err(Error::Storage(format!("unexpected response {other:?}"))),
        }
    }

    /// Watch a key set from a revision. Fails with [`Error::Compacted`] if
    /// that revision was compacted.
    pub async fn watch(&self, request: WatchRequest) -> Result<Watcher> {
        Watcher::new(self.inner.shared.clone(), request)
    }

    /// Grant a lease of `ttl_secs` (`id` 0 = the store picks one).
    pub async fn lease_grant(&self, id: LeaseId, ttl_secs: u64) -> Result<LeaseId> {
        if ttl_secs == 0 {
            return Err(Error::InvalidArgument("lease TTL must be > 0".into()));
        }
        match self.submit(Command::LeaseGrant { id, ttl_secs }).await? {
            CommandResult::LeaseGranted { id, ttl_secs } => {
                let deadline = Instant::now() + Duration::from_secs(ttl_secs);
                self.inner
                    .leases
                    .lock()
                    .expect("lease map")
                    .insert(id, (ttl_secs, deadline));
                Ok(id)
            }
            other => Err(Error::Storage(format!("unexpected result {other:?}"))),
        }
    }

    /// Revoke a lease, deleting its keys (in one revision, if any).
    pub async fn lease_revoke(&self, id: LeaseId) -> Result<Revision> {
        let r = self.submit(Command::LeaseRevoke { id }).await;
        self.inner.leases.lock().expect("lease map").remove(&id);
        match r? {
            CommandResult::LeaseRevoked { revision } => Ok(revision),
            other => Err(Error::Storage(format!("unexpected result {other:?}"))),
        }
    }

    /// Renew a lease for its full TTL; returns the TTL.
    /// On a replicated store only the leader keeps deadlines that count.
    pub async fn lease_keepalive(&self, id: LeaseId) -> Result<u64> {
        if let Some(r) = &self.inner.replica
            && !r.is_leader()
        {
            return Err(Error::Unavailable(
                "lease keepalives are served by the leader".into(),
            ));
        }
        let mut leases = self.inner.leases.lock().expect("lease map");
        match leases.get_mut(&id) {
            Some((ttl, deadline)) => {
                *deadline = Instant::now() + Duration::from_secs(*ttl);
                Ok(*ttl)
            }
            None => Err(Error::LeaseNotFound(id)),
        }
    }

    /// A lease's granted TTL and the time left before it expires.
    pub async fn lease_time_to_live(&self, id: LeaseId) -> Result<(u64, Duration)> {
        let leases = self.inner.leases.lock().expect("lease map");
        match leases.get(&id) {
            Some((ttl, deadline)) => Ok((*ttl, deadline.saturating_duration_since(Instant::now()))),
            None => Err(Error::LeaseNotFound(id)),
        }
    }

    /// Ids of all live leases, sorted.
    pub async fn leases(&self) -> Vec<LeaseId> {
        let mut ids: Vec<LeaseId> = self
            .inner
            .leases
            .lock()
            .expect("lease map")
            .keys()
            .copied()
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Compact history before `revision` (reads at `revision` keep working).
    pub async fn compact(&self, revision: Revision) -> Result<()> {
        let mut at = self.compacted_revision();
        if revision <= at {
            // Let the state machine give the precise error.
            return self.submit(Command::Compact { revision }).await.map(|_| ());
        }
        while at < revision {
            let step = revision.min(at.saturating_add(self.inner.compaction_step));
            match self.submit(Command::Compact { revision: step }).await {
                Ok(_) => {}
                // Someone else compacted past this step meanwhile.
                Err(Error::Compacted { compacted, .. }) if compacted >= step => {}
                Err(e) => return Err(e),
            }
            at = step;
        }
        Ok(())
    }

    /// Submit a raw command (what a Raft layer would apply on every replica).
    pub async fn submit(&self, command: Command) -> Result<CommandResult> {
        if let Some(r) = &self.inner.replica {
            // Boxed as `dyn`: openraft's futures are deep, and callers'
            // futures (the API server's handlers) would otherwise embed
            // their whole layout.
            let r = r.clone();
            let f: BoxFuture<Result<CommandResult>> =
                Box::pin(async move { r.write(command).await });
            return f.await;
        }
        let (reply, rx) = oneshot::channel();
        self.inner
            .tx
            .send(writer::Request::Command(command, reply))
            .await
            .map_err(|_| Error::Closed)?;
        rx.await.map_err(|_| Error::Closed)?
    }

    /// Write a consistent snapshot of the whole store to `path` (header,
    /// postcard records, SHA-256 trailer). Does not block writers.
    pub async fn snapshot(&self, path: impl AsRef<Path>) -> Result<()> {
        let shared = self.inner.shared.clone();
        let path = path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || snapshot::write(&*shared.db.get()?, &path).map(drop))
            .await
            .map_err(|e| Error::Storage(format!("snapshot task failed: {e}")))?
    }

    /// Create a new store file at `db_path` from a snapshot. The snapshot's
    /// checksum and structure are verified before anything is written;
    /// `db_path` must not exist.
    pub async fn restore(snapshot: impl AsRef<Path>, db_path: impl AsRef<Path>) -> Result<()> {
        let s = snapshot.as_ref().to_path_buf();
        let d = db_path.as_ref().to_path_buf();
        tokio::task::spawn_blocking(move || snapshot::restore(&s, &d))
            .await
            .map_err(|e| Error::Storage(format!("restore task failed: {e}")))?
    }

    /// Stop the writer after the commands already queued and wait until the
    /// database file is released by it (watchers still alive keep the file
    /// open until dropped). Other clones get [`Error::Closed`] afterwards.
    pub async fn close(self) -> Result<()> {
        if let Some(r) = &self.inner.replica {
            let _ = r.raft.shutdown().await;
        }
        let (reply, rx) = oneshot::channel();
        if self
            .inner
            .tx
            .send(writer::Request::Close(reply))
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
        Ok(())
    }
}

async fn lease_expiry(inner: Weak<Inner>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    let mut led = false;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if let Some(r) = &inner.replica {
            // Only the leader expires leases; one that just took over
            // gives every lease its full TTL again, as etcd does (the old
            // leader's keepalives were never replicated).
            let leads = r.is_leader();
            if leads && !led {
                let mut l = inner.leases.lock().expect("lease map");
                let now = Instant::now();
                for (ttl, deadline) in l.values_mut() {
                    *deadline = now + Duration::from_secs(*ttl);
                }
            }
            led = leads;
            if !leads {
                continue;
            }
        }
        let expired: Vec<LeaseId> = {
            let now = Instant::now();
            let leases = inner.leases.lock().expect("lease map");
            leases
                .iter()
                .filter(|(_, (_, deadline))| *deadline <= now)
                .map(|(id, _)| *id)
                .collect()
        };
        let store = Store { inner };
        for id in expired {
            match store.lease_revoke(id).await {
                Ok(_) | Err(Error::LeaseNotFound(_)) => {}
                Err(e) => tracing::warn!("lease {id} expiry: {e}"),
            }
        }
    }
}

async fn auto_compact(inner: Weak<Inner>, ac: AutoCompaction) {
    let mut tick = tokio::time::interval(ac.interval);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        let store = Store { inner };
        let target = store.current_revision().saturating_sub(ac.retain_revisions);
        if target > store.compacted_revision()
            && let Err(e) = store.compact(target).await
        {
            tracing::warn!("periodic compaction to {target}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_move_across_tasks() {
        fn send_sync<T: Send + Sync + 'static>() {}
        fn send<T: Send + 'static>() {}
        send_sync::<Store>();
        send::<Watcher>();
        send_sync::<Error>();
    }

    #[test]
    fn prefix_end_and_keysets() {
        assert_eq!(prefix_end(b"a"), Some(Bytes::from_static(b"b")));
        assert_eq!(prefix_end(b"a\xff"), Some(Bytes::from_static(b"b")));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
        let p = KeySet::prefix("/pods/");
        assert!(p.contains(b"/pods/x"));
        assert!(!p.contains(b"/pods0"));
        assert!(KeySet::prefix("").contains(b"anything"));
        assert!(p.overlaps(&KeySet::key("/pods/a")));
        assert!(!p.overlaps(&KeySet::key("/pod")));
        assert!(p.overlaps(&KeySet::range("/a", "/pods/0")));
        assert!(!p.overlaps(&KeySet::range("/a", "/pods/")));
    }

    #[test]
    fn commands_are_postcard_encodable() {
        let c = Command::Txn(Txn {
            compare: vec![Compare::mod_revision("k", 3)],
            success: vec![Op::put("k", "v"), Op::delete(KeySet::prefix("p"))],
            failure: vec![Op::Range(RangeRequest::key("k"))],
        });
        let b = postcard::to_stdvec(&c).unwrap();
        assert_eq!(postcard::from_bytes::<Command>(&b).unwrap(), c);
    }
}
