//! The state machine: redb tables and the deterministic `apply` step.
//!
//! Tables and invariants (all in one redb file):
//! - `kv: (key, rev) -> Record`: every version of every key not yet
//!   compacted, a tombstone (`value: None`) at the revision of a delete.
//!   For `rev > compacted` all versions are present; for each key the newest
//!   version `<= compacted` is kept unless it is a tombstone, so a read at
//!   `compacted` is exact.
//! - `latest: key -> Record`: the live keys only, equal to their newest `kv`
//!   entry (a copy, so current reads cost one B-tree scan).
//! - `log: rev -> [key]`: keys changed at each revision `> compacted`, in
//!   apply order; exactly one entry per revision `compacted+1 ..= revision`.
//!   It drives watch catch-up and compaction.
//! - `leases: id -> ttl_secs`, `lease_keys: (id, key) -> ()` for live keys
//!   attached to a lease.
//! - `meta`: `format`, `compacted`, `next_lease`. The revision is the last
//!   `log` key (or `compacted` when the log is empty).
//!
//! `apply` validates a command with reads only, then writes; so a command
//! that fails (other than a storage error, which aborts the whole group)
//! changed nothing.

use std::collections::BTreeSet;
use std::ops::Bound;
use std::path::Path;

use bytes::Bytes;
use redb::{
    Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition,
    WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::{
    Command, CommandResult, Compare, CompareOp, CompareTarget, Error, Event, EventKind, KeySet,
    KeyValue, LeaseId, Op, OpResponse, RangeRequest, RangeResponse, Result, Revision, Txn,
    TxnResponse,
};

pub(crate) const KV: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("kv");
pub(crate) const LATEST: TableDefinition<&[u8], &[u8]> = TableDefinition::new("latest");
pub(crate) const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const LEASES: TableDefinition<u64, u64> = TableDefinition::new("leases");
pub(crate) const LEASE_KEYS: TableDefinition<(u64, &[u8]), ()> = TableDefinition::new("lease_keys");
/// A replicated store's Raft state, written in the transaction of the
/// entries it describes (absent in a store that never ran under Raft).
pub(crate) const RAFT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft");
/// The `RAFT` record: last applied log id and membership.
pub(crate) const RAFT_APPLIED: &str = "applied";

/// Bumped on any incompatible change of the tables above.
pub(crate) const FORMAT: u64 = 1;

/// Most of what encoding a [`Record`] adds to its value (varints).
const RECORD_OVERHEAD: usize = 48;

/// One version of a key (`value: None` = tombstone).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Record {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub version: u64,
    pub lease: LeaseId,
    pub value: Option<Bytes>,
}

impl Record {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("record encodes")
    }
    pub(crate) fn decode(b: &[u8]) -> Result<Record> {
        postcard::from_bytes(b).map_err(|e| Error::Storage(format!("bad record: {e}")))
    }
    pub(crate) fn to_kv(&self, key: &[u8]) -> KeyValue {
        KeyValue {
            key: Bytes::copy_from_slice(key),
            value: self.value.clone().unwrap_or_default(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

pub(crate) fn encode_keys(keys: &[Bytes]) -> Vec<u8> {
    postcard::to_stdvec(keys).expect("keys encode")
}

pub(crate) fn decode_keys(b: &[u8]) -> Result<Vec<Bytes>> {
    postcard::from_bytes(b).map_err(|e| Error::Storage(format!("bad log entry: {e}")))
}

pub(crate) fn storage(e: impl std::fmt::Display) -> Error {
    Error::Storage(e.to_string())
}

/// The state machine's scalar state, mirrored in `meta` (except `bytes`,
/// which is counted from the `kv` table when the file is opened).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    pub revision: Revision,
    pub compacted: Revision,
    pub next_lease: LeaseId,
    /// What the `kv` table holds (every retained version of every key):
    /// the size the store quota limits. See [`entry_bytes`].
    pub bytes: u64,
}

/// What one `kv` entry counts against the quota: key, revision and record.
pub(crate) fn entry_bytes(key: &[u8], record_len: usize) -> u64 {
    (key.len() + 8 + record_len) as u64
}

/// Sums [`entry_bytes`] over the `kv` table (one scan, no decoding): the
/// `bytes` counter of a file being opened.
pub(crate) fn stored_bytes(db: &Database) -> Result<u64> {
    let r = db.begin_read().map_err(storage)?;
    let kv = r.open_table(KV).map_err(storage)?;
    let mut total = 0;
    for e in kv.iter().map_err(storage)? {
        let (k, v) = e.map_err(storage)?;
        total += entry_bytes(k.value().0, v.value().len());
    }
    Ok(total)
}

fn corrupt(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// I/O errors that say nothing about the file's content.
fn environmental(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        NotFound
            | PermissionDenied
            | ReadOnlyFilesystem
            | StorageFull
            | IsADirectory
            | NotADirectory
            | Interrupted
            | OutOfMemory
    )
}

/// An open database, its counters and its leases `(id, ttl_secs)`.
pub(crate) type Opened = (Database, Counters, Vec<(LeaseId, u64)>);
/// Counters and leases of a file.
pub(crate) type OpenedState = (Counters, Vec<(LeaseId, u64)>);

/// The stored Raft record, if any.
pub(crate) fn raft_applied(r: &redb::ReadTransaction) -> Result<Option<Vec<u8>>> {
    match r.open_table(RAFT) {
        Ok(t) => Ok(t
            .get(RAFT_APPLIED)
            .map_err(storage)?
            .map(|v| v.value().to_vec())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(storage(e)),
    }
}

/// Open or create the database file; verify it is an intact store.
pub(crate) fn open_db(path: &Path, check_pages: bool) -> Result<Opened> {
    let exists = path.exists();
    if exists {
        let len = std::fs::metadata(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?
            .len();
        if len == 0 {
            // redb would silently initialise an empty file: refuse instead.
            return Err(corrupt(path, "file is empty"));
        }
    }
    let p = path.to_path_buf();
    // redb checks page checksums on open with this flag; a damaged file may
    // still make it panic, which we report as corruption rather than crash.
    let opened = std::panic::catch_unwind(move || {
        let mut b = Database::builder();
        b.set_check_integrity_on_open(check_pages);
        if exists { b.open(&p) } else { b.create(&p) }
    });
    let db = match opened {
        Ok(Ok(db)) => db,
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(Error::Storage(format!(
                "{}: database already open",
                path.display()
            )));
        }
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if !exists || environmental(e.kind()) =>
        {
            // Not the content's fault (permissions, missing directory...).
            return Err(Error::Io {
                path: path.to_path_buf(),
                source: e,
            });
        }
        Ok(Err(e)) if !exists => return Err(storage(e)),
        Ok(Err(e)) => return Err(corrupt(path, e)),
        Err(_) => return Err(corrupt(path, "redb panicked while opening the file")),
    };
    // A crash between creating the file and the first commit leaves a valid
    // redb file without a single table: nothing was ever stored, so finish
    // creating it (a file with other content is checked below).
    let blank = exists
        && db
            .begin_read()
            .map_err(|e| corrupt(path, e))?
            .list_tables()
            .map_err(|e| corrupt(path, e))?
            .next()
            .is_none();
    if !exists || blank {
        let w = db.begin_write().map_err(storage)?;
        {
            let mut meta = w.open_table(META).map_err(storage)?;
            meta.insert("format", FORMAT).map_err(storage)?;
            meta.insert("compacted", 0).map_err(storage)?;
            meta.insert("next_lease", 1).map_err(storage)?;
            w.open_table(KV).map_err(storage)?;
            w.open_table(LATEST).map_err(storage)?;
            w.open_table(LOG).map_err(storage)?;
            w.open_table(LEASES).map_err(storage)?;
            w.open_table(LEASE_KEYS).map_err(storage)?;
        }
        w.commit().map_err(storage)?;
    }
    let (counters, leases) = verify(&db).map_err(|e| corrupt(path, e))?;
    Ok((db, counters, leases))
}

/// Cheap structural checks of our own on top of redb's checksums.
fn verify(db: &Database) -> std::result::Result<(Counters, Vec<(LeaseId, u64)>), String> {
    let r = db.begin_read().map_err(|e| e.to_string())?;
    let meta = r
        .open_table(META)
        .map_err(|e| format!("not a skiff store (meta table: {e})"))?;
    let get = |k: &str| -> std::result::Result<u64, String> {
        meta.get(k)
            .map_err(|e| e.to_string())?
            .map(|v| v.value())
            .ok_or_else(|| format!("meta record {k:?} missing"))
    };
    let format = get("format")?;
    if format != FORMAT {
        return Err(format!("format {format}, this build reads {FORMAT}"));
    }
    let log = r.open_table(LOG).map_err(|e| e.to_string())?;
    let compacted = get("compacted")?;
    let c = Counters {
        revision: log_revision(&log, compacted).map_err(|e| e.to_string())?,
        compacted,
        next_lease: get("next_lease")?,
        bytes: 0,
    };
    let n = log.len().map_err(|e| e.to_string())?;
    let first = log
        .first()
        .map_err(|e| e.to_string())?
        .map(|(k, _)| k.value());
    if n != c.revision - c.compacted || (n > 0 && first != Some(c.compacted + 1)) {
        return Err(format!(
            "revision log has {n} entries from {first:?} to {}, compacted at {}: revisions missing",
            c.revision, c.compacted
        ));
    }
    r.open_table(KV).map_err(|e| e.to_string())?;
    r.open_table(LATEST).map_err(|e| e.to_string())?;
    r.open_table(LEASE_KEYS).map_err(|e| e.to_string())?;
    let leases = r.open_table(LEASES).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for e in leases.iter().map_err(|e| e.to_string())? {
        let (k, v) = e.map_err(|e| e.to_string())?;
        out.push((k.value(), v.value()));
    }
    Ok((c, out))
}

fn key_bounds(keys: &KeySet) -> (Bound<&[u8]>, Bound<&[u8]>) {
    match keys {
        KeySet::Key(k) => (Bound::Included(k.as_ref()), Bound::Included(k.as_ref())),
        KeySet::Range { start, end } => (
            Bound::Included(start.as_ref()),
            match end {
                Some(e) => Bound::Excluded(e.as_ref()),
                None => Bound::Unbounded,
            },
        ),
    }
}

fn empty_range(keys: &KeySet) -> bool {
    match keys {
        KeySet::Key(_) => false,
        KeySet::Range { start, end } => end.as_ref().is_some_and(|e| e <= start),
    }
}

fn push_kv(resp: &mut RangeResponse, req: &RangeRequest, key: &[u8], rec: &Record) {
    resp.count += 1;
    if req.count_only {
        return;
    }
    if req.limit != 0 && resp.kvs.len() >= req.limit {
        resp.more = true;
        return;
    }
    let mut kv = rec.to_kv(key);
    if req.keys_only {
        kv.value = Bytes::new();
    }
    resp.kvs.push(kv);
}

/// Range over the live keys (current revision).
pub(crate) fn range_latest<T>(
    latest: &T,
    req: &RangeRequest,
    revision: Revision,
) -> Result<RangeResponse>
where
    T: ReadableTable<&'static [u8], &'static [u8]>,
{
    let mut resp = RangeResponse {
        kvs: Vec::new(),
        more: false,
        count: 0,
        revision,
    };
    if empty_range(&req.keys) {
        return Ok(resp);
    }
    let range = latest
        .range::<&[u8]>(key_bounds(&req.keys))
        .map_err(storage)?;
    if req.count_only {
        // Keys only: a count costs no record decoding.
        for e in range {
            e.map_err(storage)?;
            resp.count += 1;
        }
        return Ok(resp);
    }
    for e in range {
        let (k, v) = e.map_err(storage)?;
        push_kv(&mut resp, req, k.value(), &Record::decode(v.value())?);
    }
    Ok(resp)
}

/// Range at an older revision: for each key, its newest version `<= at`.
fn range_history<T>(kv: &T, req: &RangeRequest, at: Revision) -> Result<RangeResponse>
where
    T: ReadableTable<(&'static [u8], u64), &'static [u8]>,
{
    let mut resp = RangeResponse {
        kvs: Vec::new(),
        more: false,
        count: 0,
        revision: at,
    };
    if empty_range(&req.keys) {
        return Ok(resp);
    }
    let (lo, hi) = key_bounds(&req.keys);
    let lo = match lo {
        Bound::Included(k) => Bound::Included((k, 0u64)),
        _ => Bound::Unbounded,
    };
    let hi = match hi {
        Bound::Included(k) => Bound::Included((k, u64::MAX)),
        Bound::Excluded(k) => Bound::Excluded((k, 0u64)),
        Bound::Unbounded => Bound::Unbounded,
    };
    // Entries come ordered by (key, rev): remember the best candidate of the
    // current key and emit it when the key changes.
    let mut cur: Option<(Vec<u8>, Option<Record>)> = None;
    for e in kv.range::<(&[u8], u64)>((lo, hi)).map_err(storage)? {
        let (k, v) = e.map_err(storage)?;
        let (key, rev) = k.value();
        if cur.as_ref().is_none_or(|(ck, _)| ck.as_slice() != key) {
            if let Some((ck, Some(rec))) = cur.take()
                && rec.value.is_some()
            {
                push_kv(&mut resp, req, &ck, &rec);
            }
            cur = Some((key.to_vec(), None));
        }
        if rev <= at {
            let rec = Record::decode(v.value())?;
            if let Some((_, best)) = cur.as_mut() {
                *best = Some(rec);
            }
        }
    }
    if let Some((ck, Some(rec))) = cur
        && rec.value.is_some()
    {
        push_kv(&mut resp, req, &ck, &rec);
    }
    Ok(resp)
}

/// The store's revision: the last log entry, or `compacted` if compaction
/// emptied the log. (Not kept in `meta`: one table less to rewrite per
/// commit.)
fn log_revision<T>(log: &T, compacted: Revision) -> Result<Revision>
where
    T: ReadableTable<u64, &'static [u8]>,
{
    Ok(log
        .last()
        .map_err(storage)?
        .map_or(compacted, |(k, _)| k.value()))
}

/// A read outside the writer: one redb read transaction.
pub(crate) fn range_read(db: &Database, req: &RangeRequest) -> Result<RangeResponse> {
    let r = db.begin_read().map_err(storage)?;
    let meta = r.open_table(META).map_err(storage)?;
    let get = |k: &str| -> Result<u64> {
        Ok(meta
            .get(k)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0))
    };
    let compacted = get("compacted")?;
    let revision = log_revision(&r.open_table(LOG).map_err(storage)?, compacted)?;
    if req.revision == 0 || req.revision == revision {
        let latest = r.open_table(LATEST).map_err(storage)?;
        return range_latest(&latest, req, revision);
    }
    if req.revision > revision {
        return Err(Error::FutureRevision {
            requested: req.revision,
            current: revision,
        });
    }
    if req.revision < compacted {
        return Err(Error::Compacted {
            requested: req.revision,
            compacted,
        });
    }
    let kv = r.open_table(KV).map_err(storage)?;
    range_history(&kv, req, req.revision)
}

/// A txn without puts or deletes, evaluated on one read transaction.
pub(crate) fn read_only_txn(db: &Database, txn: &Txn) -> Result<TxnResponse> {
    let r = db.begin_read().map_err(storage)?;
    let compacted = r
        .open_table(META)
        .map_err(storage)?
        .get("compacted")
        .map_err(storage)?
        .map_or(0, |v| v.value());
    let revision = log_revision(&r.open_table(LOG).map_err(storage)?, compacted)?;
    let latest = r.open_table(LATEST).map_err(storage)?;
    let mut succeeded = true;
    for cmp in &txn.compare {
        let rec = match latest.get(cmp.key.as_ref()).map_err(storage)? {
            Some(v) => Some(Record::decode(v.value())?),
            None => None,
        };
        if !compare(cmp, rec.as_ref()) {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Range(req) => {
                responses.push(OpResponse::Range(range_latest(&latest, req, revision)?))
            }
            _ => return Err(Error::InvalidArgument("not a read-only txn".into())),
        }
    }
    Ok(TxnResponse {
        succeeded,
        revision,
        responses,
    })
}

/// Events of revisions `from..=to` (at most about `max_events`, whole
/// revisions) matching `keys`, read from history. Returns the events and the
/// last revision covered.
pub(crate) fn read_events(
    db: &Database,
    keys: &KeySet,
    from: Revision,
    max_events: usize,
) -> Result<(Vec<Event>, Revision)> {
    let r = db.begin_read().map_err(storage)?;
    let meta = r.open_table(META).map_err(storage)?;
    let get = |k: &str| -> Result<u64> {
        Ok(meta
            .get(k)
            .map_err(storage)?
            .map(|v| v.value())
            .unwrap_or(0))
    };
    let compacted = get("compacted")?;
    if from <= compacted {
        return Err(Error::Compacted {
            requested: from,
            compacted,
        });
    }
    let log = r.open_table(LOG).map_err(storage)?;
    let revision = log_revision(&log, compacted)?;
    let kv = r.open_table(KV).map_err(storage)?;
    let mut events = Vec::new();
    let mut last = revision.max(from.saturating_sub(1));
    for e in log.range(from..=revision).map_err(storage)? {
        let (rev, ks) = e.map_err(storage)?;
        let rev = rev.value();
        for key in decode_keys(ks.value())? {
            if !keys.contains(&key) {
                continue;
            }
            let rec = kv
                .get((key.as_ref(), rev))
                .map_err(storage)?
                .ok_or_else(|| Error::Storage(format!("log names {key:?}@{rev}, no version")))?;
            let rec = Record::decode(rec.value())?;
            let prev = kv
                .range::<(&[u8], u64)>((key.as_ref(), 0)..(key.as_ref(), rev))
                .map_err(storage)?
                .next_back()
                .transpose()
                .map_err(storage)?;
            let prev_kv = match prev {
                Some((_, v)) => {
                    let p = Record::decode(v.value())?;
                    p.value.is_some().then(|| p.to_kv(&key))
                }
                None => None,
            };
            events.push(make_event(&key, &rec, prev_kv));
        }
        if events.len() >= max_events {
            last = rev;
            break;
        }
    }
    Ok((events, last))
}

fn make_event(key: &[u8], rec: &Record, prev_kv: Option<KeyValue>) -> Event {
    match rec.value {
        Some(_) => Event {
            kind: EventKind::Put,
            kv: rec.to_kv(key),
            prev_kv,
        },
        None => Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: Bytes::copy_from_slice(key),
                value: Bytes::new(),
                create_revision: 0,
                mod_revision: rec.mod_revision,
                version: 0,
                lease: 0,
            },
            prev_kv,
        },
    }
}

/// etcd's txn rules: no key put twice, no key both put and deleted; reads
/// in a txn are at the txn's own state.
pub(crate) fn validate_txn(txn: &Txn) -> Result<()> {
    for ops in [&txn.success, &txn.failure] {
        let mut puts = BTreeSet::new();
        let mut deletes = Vec::new();
        for op in ops {
            match op {
                Op::Put { key, .. } => {
                    if !puts.insert(key.clone()) {
                        return Err(Error::InvalidArgument(format!(
                            "duplicate key {key:?} in txn"
                        )));
                    }
                }
                Op::Delete { keys } => deletes.push(keys),
                Op::Range(r) => {
                    if r.revision != 0 {
                        return Err(Error::InvalidArgument(
                            "a range inside a txn reads the txn's own revision".into(),
                        ));
                    }
                }
            }
        }
        for d in deletes {
            if let Some(k) = puts.iter().find(|k| d.overlaps(&KeySet::Key((*k).clone()))) {
                return Err(Error::InvalidArgument(format!(
                    "key {k:?} is both put and deleted in txn"
                )));
            }
        }
    }
    Ok(())
}

/// The tables of one write transaction, opened once per group commit.
pub(crate) struct Tables<'t> {
    pub kv: Table<'t, (&'static [u8], u64), &'static [u8]>,
    pub latest: Table<'t, &'static [u8], &'static [u8]>,
    pub log: Table<'t, u64, &'static [u8]>,
    pub meta: Table<'t, &'static str, u64>,
    pub leases: Table<'t, u64, u64>,
    pub lease_keys: Table<'t, (u64, &'static [u8]), ()>,
}

impl<'t> Tables<'t> {
    pub(crate) fn open(w: &'t WriteTransaction) -> Result<Tables<'t>> {
        Ok(Tables {
            kv: w.open_table(KV).map_err(storage)?,
            latest: w.open_table(LATEST).map_err(storage)?,
            log: w.open_table(LOG).map_err(storage)?,
            meta: w.open_table(META).map_err(storage)?,
            leases: w.open_table(LEASES).map_err(storage)?,
            lease_keys: w.open_table(LEASE_KEYS).map_err(storage)?,
        })
    }

    fn latest(&self, key: &[u8]) -> Result<Option<Record>> {
        match self.latest.get(key).map_err(storage)? {
            Some(v) => Ok(Some(Record::decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn write_meta(&mut self, c: &Counters) -> Result<()> {
        self.meta
            .insert("compacted", c.compacted)
            .map_err(storage)?;
        self.meta
            .insert("next_lease", c.next_lease)
            .map_err(storage)?;
        Ok(())
    }

    /// Delete one live key at `rev` (its tombstone counted in `c.bytes`);
    /// returns the event.
    fn delete_key(
        &mut self,
        c: &mut Counters,
        key: &[u8],
        prev: Record,
        rev: Revision,
    ) -> Result<Event> {
        let tomb = Record {
            create_revision: 0,
            mod_revision: rev,
            version: 0,
            lease: 0,
            value: None,
        };
        let enc = tomb.encode();
        self.kv
            .insert((key, rev), enc.as_slice())
            .map_err(storage)?;
        c.bytes += entry_bytes(key, enc.len());
        self.latest.remove(key).map_err(storage)?;
        if prev.lease != 0 {
            self.lease_keys.remove((prev.lease, key)).map_err(storage)?;
        }
        Ok(make_event(key, &tomb, Some(prev.to_kv(key))))
    }
}

fn compare(c: &Compare, rec: Option<&Record>) -> bool {
    use std::cmp::Ordering;
    let ord: Ordering = match (&c.target, rec) {
        (CompareTarget::Value(_), None) => return false,
        (CompareTarget::Value(v), Some(r)) => {
            r.value.as_deref().unwrap_or_default().cmp(v.as_ref())
        }
        (CompareTarget::Version(v), r) => r.map_or(0, |r| r.version).cmp(v),
        (CompareTarget::CreateRevision(v), r) => r.map_or(0, |r| r.create_revision).cmp(v),
        (CompareTarget::ModRevision(v), r) => r.map_or(0, |r| r.mod_revision).cmp(v),
        (CompareTarget::Lease(v), r) => r.map_or(0, |r| r.lease).cmp(v),
    };
    match c.op {
        CompareOp::Equal => ord == Ordering::Equal,
        CompareOp::NotEqual => ord != Ordering::Equal,
        CompareOp::Less => ord == Ordering::Less,
        CompareOp::Greater => ord == Ordering::Greater,
    }
}

/// Apply one command. On `Err` nothing was written, except for
/// `Error::Storage`, after which the caller must abort the redb transaction.
/// `quota`: the most `c.bytes` a txn that puts may leave (0 = no limit).
pub(crate) fn apply(
    t: &mut Tables<'_>,
    c: &mut Counters,
    cmd: &Command,
    quota: u64,
) -> Result<(CommandResult, Vec<Event>)> {
    match cmd {
        Command::Txn(txn) => apply_txn(t, c, txn, quota),
        Command::LeaseGrant { id, ttl_secs } => {
            if *ttl_secs == 0 {
                return Err(Error::InvalidArgument("lease TTL must be > 0".into()));
            }
            let id = if *id == 0 { c.next_lease } else { *id };
            if t.leases.get(id).map_err(storage)?.is_some() {
                return Err(Error::InvalidArgument(format!("lease {id} exists")));
            }
            t.leases.insert(id, *ttl_secs).map_err(storage)?;
            c.next_lease = c.next_lease.max(id.saturating_add(1));
            t.write_meta(c)?;
            Ok((
                CommandResult::LeaseGranted {
                    id,
                    ttl_secs: *ttl_secs,
                },
                Vec::new(),
            ))
        }
        Command::LeaseRevoke { id } => {
            if t.leases.get(*id).map_err(storage)?.is_none() {
                return Err(Error::LeaseNotFound(*id));
            }
            let mut keys = Vec::new();
            for e in t
                .lease_keys
                .range::<(u64, &[u8])>((*id, &[][..])..)
                .map_err(storage)?
            {
                let (k, _) = e.map_err(storage)?;
                let (lid, key) = k.value();
                if lid != *id {
                    break;
                }
                keys.push(Bytes::copy_from_slice(key));
            }
            let mut events = Vec::new();
            if !keys.is_empty() {
                let rev = c.revision + 1;
                for key in &keys {
                    let prev = t
                        .latest(key)?
                        .ok_or_else(|| Error::Storage(format!("leased key {key:?} not live")))?;
                    events.push(t.delete_key(c, key, prev, rev)?);
                }
                t.log
                    .insert(rev, encode_keys(&keys).as_slice())
                    .map_err(storage)?;
                c.revision = rev;
            }
            t.leases.remove(*id).map_err(storage)?;
            Ok((
                CommandResult::LeaseRevoked {
                    revision: c.revision,
                },
                events,
            ))
        }
        Command::Compact { revision } => {
            let revision = *revision;
            if revision <= c.compacted {
                return Err(Error::Compacted {
                    requested: revision,
                    compacted: c.compacted,
                });
            }
            if revision > c.revision {
                return Err(Error::FutureRevision {
                    requested: revision,
                    current: c.revision,
                });
            }
            let mut keys = BTreeSet::new();
            let mut revs = Vec::new();
            for e in t.log.range(c.compacted + 1..=revision).map_err(storage)? {
                let (r, ks) = e.map_err(storage)?;
                revs.push(r.value());
                keys.extend(decode_keys(ks.value())?);
            }
            for r in revs {
                t.log.remove(r).map_err(storage)?;
            }
            for key in &keys {
                let mut versions = Vec::new();
                for e in
                    t.kv.range::<(&[u8], u64)>((key.as_ref(), 0)..=(key.as_ref(), revision))
                        .map_err(storage)?
                {
                    let (k, v) = e.map_err(storage)?;
                    let tomb = Record::decode(v.value())?.value.is_none();
                    versions.push((k.value().1, tomb, v.value().len()));
                }
                // Keep the newest version <= revision unless it is a tombstone.
                let keep = match versions.last() {
                    Some((r, false, _)) => Some(*r),
                    _ => None,
                };
                for (r, _, len) in versions {
                    if Some(r) != keep {
                        t.kv.remove((key.as_ref(), r)).map_err(storage)?;
                        c.bytes = c.bytes.saturating_sub(entry_bytes(key, len));
                    }
                }
            }
            c.compacted = revision;
            t.write_meta(c)?;
            Ok((CommandResult::Compacted { revision }, Vec::new()))
        }
    }
}

fn apply_txn(
    t: &mut Tables<'_>,
    c: &mut Counters,
    txn: &Txn,
    quota: u64,
) -> Result<(CommandResult, Vec<Event>)> {
    validate_txn(txn)?;
    let mut succeeded = true;
    for cmp in &txn.compare {
        if !compare(cmp, t.latest(&cmp.key)?.as_ref()) {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    for op in ops {
        if let Op::Put { lease, .. } = op
            && *lease != 0
            && t.leases.get(*lease).map_err(storage)?.is_none()
        {
            return Err(Error::LeaseNotFound(*lease));
        }
    }
    // etcd's NOSPACE: puts are refused once the quota is reached; deletes,
    // reads, lease revocations and compaction (what frees space) are not.
    let cost: u64 = ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value, .. } => entry_bytes(key, value.len() + RECORD_OVERHEAD),
            _ => 0,
        })
        .sum();
    if quota > 0 && cost > 0 && c.bytes.saturating_add(cost) > quota {
        return Err(Error::NoSpace {
            stored: c.bytes,
            quota,
        });
    }
    // From here on only storage errors can fail.
    let rev = c.revision + 1;
    let mut changed: Vec<Bytes> = Vec::new();
    let mut events = Vec::new();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        match op {
            Op::Put { key, value, lease } => {
                let prev = t.latest(key)?;
                let rec = Record {
                    create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                    mod_revision: rev,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                    lease: *lease,
                    value: Some(value.clone()),
                };
                let enc = rec.encode();
                t.kv.insert((key.as_ref(), rev), enc.as_slice())
                    .map_err(storage)?;
                c.bytes += entry_bytes(key, enc.len());
                t.latest
                    .insert(key.as_ref(), enc.as_slice())
                    .map_err(storage)?;
                if let Some(p) = &prev
                    && p.lease != 0
                    && p.lease != *lease
                {
                    t.lease_keys
                        .remove((p.lease, key.as_ref()))
                        .map_err(storage)?;
                }
                if *lease != 0 {
                    t.lease_keys
                        .insert((*lease, key.as_ref()), ())
                        .map_err(storage)?;
                }
                let prev_kv = prev.map(|p| p.to_kv(key));
                events.push(Event {
                    kind: EventKind::Put,
                    kv: rec.to_kv(key),
                    prev_kv: prev_kv.clone(),
                });
                changed.push(key.clone());
                responses.push(OpResponse::Put { prev_kv });
            }
            Op::Delete { keys } => {
                let found = if empty_range(keys) {
                    Vec::new()
                } else {
                    let mut found = Vec::new();
                    for e in t.latest.range::<&[u8]>(key_bounds(keys)).map_err(storage)? {
                        let (k, v) = e.map_err(storage)?;
                        found.push((
                            Bytes::copy_from_slice(k.value()),
                            Record::decode(v.value())?,
                        ));
                    }
                    found
                };
                let mut prev_kvs = Vec::with_capacity(found.len());
                for (key, prev) in found {
                    prev_kvs.push(prev.to_kv(&key));
                    events.push(t.delete_key(c, &key, prev, rev)?);
                    changed.push(key);
                }
                responses.push(OpResponse::Delete {
                    deleted: prev_kvs.len() as u64,
                    prev_kvs,
                });
            }
            Op::Range(req) => {
                let at = if changed.is_empty() { c.revision } else { rev };
                responses.push(OpResponse::Range(range_latest(&t.latest, req, at)?));
            }
        }
    }
    if !changed.is_empty() {
        t.log
            .insert(rev, encode_keys(&changed).as_slice())
            .map_err(storage)?;
        c.revision = rev;
    }
    Ok((
        CommandResult::Txn(TxnResponse {
            succeeded,
            revision: c.revision,
            responses,
        }),
        events,
    ))
}
