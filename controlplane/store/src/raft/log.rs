//! The Raft log: its own redb file (redb has one writer per file, and the
//! state machine's file is busy applying), entries keyed by index, and the
//! vote, the committed id and the last purged id beside them. Every change
//! is durable (fsync) before it is acknowledged.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{RaftLogReader, entry::RaftEntry};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Entry, LogId, TypeConfig, Vote};
use crate::{Error, Result};

const ENTRIES: TableDefinition<u64, &[u8]> = TableDefinition::new("entries");
const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const PURGED: &str = "purged";

#[derive(Clone)]
pub(crate) struct LogStore {
    db: Arc<Database>,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: Serialize>(v: &T) -> io::Result<Vec<u8>> {
    postcard::to_stdvec(v).map_err(io_err)
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    postcard::from_bytes(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

impl LogStore {
    /// Opens or creates the log file; a damaged one is refused naming it.
    pub(crate) fn open(path: &Path) -> Result<LogStore> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            reason: format!("Raft log: {reason}"),
        };
        let exists = path.exists();
        if exists && std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
            return Err(corrupt("file is empty".into()));
        }
        let p = path.to_path_buf();
        let opened = std::panic::catch_unwind(move || {
            let mut b = Database::builder();
            b.set_check_integrity_on_open(true);
            if exists { b.open(&p) } else { b.create(&p) }
        });
        let db = match opened {
            Ok(Ok(db)) => db,
            Ok(Err(e)) if exists => return Err(corrupt(e.to_string())),
            Ok(Err(e)) => return Err(Error::Storage(format!("{}: {e}", path.display()))),
            Err(_) => return Err(corrupt("redb panicked while opening the file".into())),
        };
        let w = db.begin_write().map_err(|e| corrupt(e.to_string()))?;
        {
            w.open_table(ENTRIES).map_err(|e| corrupt(e.to_string()))?;
            w.open_table(STATE).map_err(|e| corrupt(e.to_string()))?;
        }
        w.commit().map_err(|e| corrupt(e.to_string()))?;
        let store = LogStore { db: Arc::new(db) };
        // Every entry must decode: a log we cannot read is refused now,
        // not when Raft first needs the entry.
        let r = store.db.begin_read().map_err(|e| corrupt(e.to_string()))?;
        let t = r.open_table(ENTRIES).map_err(|e| corrupt(e.to_string()))?;
        for e in t.iter().map_err(|e| corrupt(e.to_string()))? {
            let (k, v) = e.map_err(|e| corrupt(e.to_string()))?;
            let entry: Entry =
                decode(v.value()).map_err(|e| corrupt(format!("entry {}: {e}", k.value())))?;
            if entry.index() != k.value() {
                return Err(corrupt(format!(
                    "entry {} holds index {}",
                    k.value(),
                    entry.index()
                )));
            }
        }
        Ok(store)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> io::Result<T> + Send + 'static,
    ) -> io::Result<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(io_err)?
    }

    async fn get_state<T: DeserializeOwned + Send + 'static>(
        &self,
        key: &'static str,
    ) -> io::Result<Option<T>> {
        self.blocking(move |db| {
            let r = db.begin_read().map_err(io_err)?;
            let t = r.open_table(STATE).map_err(io_err)?;
            match t.get(key).map_err(io_err)? {
                Some(v) => decode(v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn put_state<T: Serialize>(&self, key: &'static str, v: &T) -> io::Result<()> {
        let b = encode(v)?;
        self.blocking(move |db| {
            let mut w = db.begin_write().map_err(io_err)?;
            w.set_durability(Durability::Immediate).map_err(io_err)?;
            w.open_table(STATE)
                .map_err(io_err)?
                .insert(key, b.as_slice())
                .map_err(io_err)?;
            w.commit().map_err(io_err)
        })
        .await
    }
}

fn bounds(range: &impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        let b = bounds(&range);
        self.blocking(move |db| {
            let r = db.begin_read().map_err(io_err)?;
            let t = r.open_table(ENTRIES).map_err(io_err)?;
            let mut out = Vec::new();
            for e in t.range::<u64>(b).map_err(io_err)? {
                let (_, v) = e.map_err(io_err)?;
                out.push(decode(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        self.get_state(VOTE).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let purged: Option<LogId> = self.get_state(PURGED).await?;
        let last = self
            .blocking(|db| {
                let r = db.begin_read().map_err(io_err)?;
                let t = r.open_table(ENTRIES).map_err(io_err)?;
                match t.last().map_err(io_err)? {
                    Some((_, v)) => Ok(Some(decode::<Entry>(v.value())?.log_id())),
                    None => Ok(None),
                }
            })
            .await?;
        Ok(LogState {
            last_log_id: last.or(purged),
            last_purged_log_id: purged,
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        self.put_state(VOTE, vote).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        self.put_state(COMMITTED, &committed).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.get_state::<Option<LogId>>(COMMITTED).await?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut encoded = Vec::new();
        for e in entries {
            encoded.push((e.index(), encode(&e)?));
        }
        let r = self
            .blocking(move |db| {
                let mut w = db.begin_write().map_err(io_err)?;
                w.set_durability(Durability::Immediate).map_err(io_err)?;
                {
                    let mut t = w.open_table(ENTRIES).map_err(io_err)?;
                    for (i, b) in &encoded {
                        t.insert(*i, b.as_slice()).map_err(io_err)?;
                    }
                }
                w.commit().map_err(io_err)
            })
            .await;
        let report = r
            .as_ref()
            .map(|_| ())
            .map_err(|e| io::Error::new(e.kind(), e.to_string()));
        callback.io_completed(report);
        r
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> io::Result<()> {
        let from = last.map_or(0, |l| l.index() + 1);
        self.blocking(move |db| {
            let mut w = db.begin_write().map_err(io_err)?;
            w.set_durability(Durability::Immediate).map_err(io_err)?;
            w.open_table(ENTRIES)
                .map_err(io_err)?
                .retain_in(from.., |_, _| false)
                .map_err(io_err)?;
            w.commit().map_err(io_err)
        })
        .await
    }

    async fn purge(&mut self, upto: LogId) -> io::Result<()> {
        let b = encode(&upto)?;
        let last = upto.index();
        self.blocking(move |db| {
            let mut w = db.begin_write().map_err(io_err)?;
            w.set_durability(Durability::Immediate).map_err(io_err)?;
            {
                w.open_table(STATE)
                    .map_err(io_err)?
                    .insert(PURGED, b.as_slice())
                    .map_err(io_err)?;
                w.open_table(ENTRIES)
                    .map_err(io_err)?
                    .retain_in(..=last, |_, _| false)
                    .map_err(io_err)?;
            }
            w.commit().map_err(io_err)
        })
        .await
    }
}
