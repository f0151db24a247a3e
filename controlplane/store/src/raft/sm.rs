//! The Raft state machine: committed entries go to the store's writer
//! thread, which applies them with the same `state::apply` as the
//! single-member store, in one redb transaction that also records the last
//! applied log id and membership (so a crash never separates the two).
//! Snapshots are the store's own snapshot files; installing one replaces
//! the store file and restarts watchers from it.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::TryStreamExt as _;
use openraft::entry::RaftEntry as _;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{LogId, RemoteError, SnapshotMeta, StoredMembership, TypeConfig};
use crate::writer::Request;
use crate::{Command, CommandResult, LeaseId, Shared, snapshot};

pub(crate) type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub(crate) type Leases = Arc<Mutex<HashMap<LeaseId, (u64, Instant)>>>;

/// What the store file records about Raft (`state::RAFT_APPLIED`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub last: Option<LogId>,
    pub membership: StoredMembership,
}

impl Applied {
    pub(crate) fn decode(b: Option<Vec<u8>>) -> io::Result<Applied> {
        match b {
            Some(b) => {
                postcard::from_bytes(&b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
            }
            None => Ok(Applied::default()),
        }
    }
}

#[derive(Clone)]
pub(crate) struct StateMachine {
    pub(crate) shared: Arc<Shared>,
    pub(crate) tx: mpsc::Sender<Request>,
    pub(crate) leases: Leases,
    pub(crate) applied: Applied,
    /// Where the current snapshot file lives.
    pub(crate) dir: PathBuf,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    fn snapshot_path(&self) -> PathBuf {
        self.dir.join("raft-snapshot.snap")
    }

    async fn send<T>(&self, req: impl FnOnce(oneshot::Sender<T>) -> Request) -> io::Result<T> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(req(tx))
            .await
            .map_err(|_| io_err("store closed"))?;
        rx.await.map_err(|_| io_err("store closed"))
    }
}

pub(crate) fn reset_leases(leases: &Leases, list: impl IntoIterator<Item = (LeaseId, u64)>) {
    let now = Instant::now();
    let mut l = leases.lock().expect("lease map");
    l.clear();
    for (id, ttl) in list {
        l.insert(id, (ttl, now + Duration::from_secs(ttl)));
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let shared = self.shared.clone();
        let path = self.snapshot_path();
        let (raft, data) = tokio::task::spawn_blocking(move || {
            let raft =
                snapshot::write(&*shared.db.get().map_err(io_err)?, &path).map_err(io_err)?;
            let data = std::fs::read(&path)?;
            Ok::<_, io::Error>((raft, data))
        })
        .await
        .map_err(io_err)??;
        let applied = Applied::decode(raft)?;
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id: applied.last,
                last_membership: applied.membership,
            },
            snapshot: data,
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        Ok((self.applied.last, self.applied.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + Send,
    {
        let mut cmds = Vec::new();
        let mut responders = Vec::new();
        let mut applied = self.applied.clone();
        while let Some((entry, responder)) = entries.try_next().await? {
            let log_id = entry.log_id();
            applied.last = Some(log_id);
            let cmd = match entry.payload {
                EntryPayload::Normal(c) => Some(c),
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(log_id), m);
                    None
                }
                EntryPayload::Blank => None,
            };
            cmds.push(cmd);
            responders.push(responder);
        }
        if cmds.is_empty() {
            return Ok(());
        }
        let record = postcard::to_stdvec(&applied).map_err(io_err)?;
        let sent = cmds.clone();
        let results = self
            .send(|tx| Request::Apply(sent, record, tx))
            .await?
            .map_err(io_err)?;
        self.applied = applied;
        let now = Instant::now();
        for ((cmd, result), responder) in cmds.iter().zip(results).zip(responders) {
            // Every member keeps lease deadlines; only the leader acts on them.
            match (cmd, &result) {
                (_, Some(Ok(CommandResult::LeaseGranted { id, ttl_secs }))) => {
                    self.leases
                        .lock()
                        .expect("lease map")
                        .insert(*id, (*ttl_secs, now + Duration::from_secs(*ttl_secs)));
                }
                (Some(Command::LeaseRevoke { id }), _) => {
                    self.leases.lock().expect("lease map").remove(id);
                }
                _ => {}
            }
            if let Some(r) = responder {
                r.send(match result {
                    Some(r) => r.map_err(RemoteError::from),
                    None => Err(RemoteError::NoCommand),
                });
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: Vec<u8>) -> io::Result<()> {
        let snap = self.dir.join("raft-install.snap");
        let db = self.dir.join("store.restore.redb");
        let (s, d) = (snap.clone(), db.clone());
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_file(&d);
            std::fs::write(&s, &data)?;
            snapshot::restore(&s, &d).map_err(io_err)
        })
        .await
        .map_err(io_err)??;
        let leases = self
            .send(|tx| Request::Install(db, tx))
            .await?
            .map_err(io_err)?;
        reset_leases(&self.leases, leases);
        std::fs::rename(&snap, self.snapshot_path())?;
        self.applied = Applied {
            last: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let path = self.snapshot_path();
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let applied = Applied::decode(snapshot::raft_record(&data).map_err(io_err)?)?;
        Ok(Some(Snapshot {
            meta: SnapshotMeta {
                last_log_id: applied.last,
                last_membership: applied.membership,
            },
            snapshot: data,
        }))
    }
}
