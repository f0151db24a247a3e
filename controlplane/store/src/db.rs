//! The open database handle, which the writer replaces when redb stops
//! taking transactions after an I/O error.
//!
//! An I/O error during a commit (the disk is full, a write crosses a file
//! size limit with EFBIG) makes redb latch the failure: every later
//! transaction, reads included, fails with `PreviousIo` until the
//! `Database` is dropped and the file opened again, which recovers the last
//! committed state. So readers take a clone of the current handle for each
//! operation, and the writer, after a failed group, checks for the latch
//! and reopens the file: a transient disk-full costs the writes that hit
//! it, not every write until the plane restarts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use crate::state::{self, Counters};
use crate::{Error, Result};

pub(crate) struct Db {
    path: PathBuf,
    /// `None` only while a reopen failed; the next failed group retries.
    cur: RwLock<Option<Arc<Database>>>,
}

impl Db {
    pub(crate) fn new(path: &Path, db: Database) -> Db {
        Db {
            path: path.to_path_buf(),
            cur: RwLock::new(Some(Arc::new(db))),
        }
    }

    /// The current handle; hold it only for one operation.
    pub(crate) fn get(&self) -> Result<Arc<Database>> {
        self.cur
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| {
                Error::Storage(format!(
                    "{}: the store file could not be reopened after a write error",
                    self.path.display()
                ))
            })
    }

    /// Whether redb refuses transactions because of an earlier I/O error.
    pub(crate) fn latched(&self) -> bool {
        match self.get() {
            Ok(db) => matches!(
                db.begin_write(),
                Err(redb::TransactionError::Storage(
                    redb::StorageError::PreviousIo
                ))
            ),
            Err(_) => true,
        }
    }

    /// Drops the handle (waiting up to `wait` for readers to let go of it)
    /// and opens the file again; returns the counters it holds (`bytes`
    /// not counted).
    pub(crate) fn reopen(&self, wait: Duration) -> Result<Counters> {
        self.swap(None, wait).map(|(c, _)| c)
    }

    /// Like `reopen`, but renames `from` over the file first (a restored
    /// Raft snapshot); also returns the new file's leases.
    pub(crate) fn replace(&self, from: &Path, wait: Duration) -> Result<state::OpenedState> {
        self.swap(Some(from), wait)
    }

    fn swap(&self, from: Option<&Path>, wait: Duration) -> Result<state::OpenedState> {
        let deadline = Instant::now() + wait;
        let mut cur = self.cur.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(mut old) = cur.take() {
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(back) if Instant::now() < deadline => {
                        old = back;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(back) => {
                        *cur = Some(back);
                        return Err(Error::Storage(
                            "readers still hold the store file; not reopened".into(),
                        ));
                    }
                }
            }
        }
        if let Some(from) = from {
            std::fs::rename(from, &self.path).map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        // The file stays locked until the old handle's last transaction
        // is gone: retry briefly.
        loop {
            match state::open_db(&self.path, false) {
                Ok((db, counters, leases)) => {
                    *cur = Some(Arc::new(db));
                    return Ok((counters, leases));
                }
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
