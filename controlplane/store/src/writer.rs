//! The single writer: group commit.
//!
//! One OS thread owns all writes. It blocks for the first queued request,
//! drains up to `max_batch` more without waiting, applies them in order in one
//! redb write transaction (each command its own revision), commits with
//! `Durability::Immediate` (fsync), then publishes the events to watchers and
//! only then answers the callers. So an acknowledged write is durable, and a
//! watcher never sees a change that could still be lost.
//! If the commit fails, the in-memory counters are rolled back and every
//! request of the group gets the error: nothing of the group is visible.
//! If redb then refuses every transaction (an I/O error at commit latches
//! it), the file is reopened (see `db`) so later groups can succeed.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redb::Durability;
use tokio::sync::{mpsc, oneshot};

use crate::state::{self, Counters, Tables};
use crate::{Command, CommandResult, Error, LeaseId, Result, Shared};

pub(crate) enum Request {
    Command(Command, oneshot::Sender<Result<CommandResult>>),
    /// Committed Raft entries in log order (`None`: an entry without a
    /// command, blank or membership), applied in one transaction that also
    /// stores `raft`, the Raft state they bring the store to.
    Apply(
        Vec<Option<Command>>,
        Vec<u8>,
        oneshot::Sender<Result<ApplyResults>>,
    ),
    /// Replace the file by this restored one (a Raft snapshot); answers
    /// the new file's leases.
    Install(PathBuf, oneshot::Sender<Result<Vec<(LeaseId, u64)>>>),
    Close(oneshot::Sender<()>),
}

/// How long a reopen waits for readers to release the old handle.
const REOPEN_WAIT: Duration = Duration::from_secs(10);

pub(crate) fn spawn(
    shared: Arc<Shared>,
    counters: Counters,
    max_batch: usize,
    quota: u64,
) -> Result<mpsc::Sender<Request>> {
    let (tx, rx) = mpsc::channel(max_batch.max(1) * 4);
    std::thread::Builder::new()
        .name("skiff-store-writer".into())
        .spawn(move || run(shared, rx, counters, max_batch.max(1), quota))
        .map_err(|e| Error::Storage(format!("spawn writer thread: {e}")))?;
    Ok(tx)
}

fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<Request>,
    mut counters: Counters,
    max: usize,
    quota: u64,
) {
    let mut closers = Vec::new();
    let mut batch = Vec::with_capacity(max);
    while closers.is_empty() {
        let Some(first) = rx.blocking_recv() else {
            break;
        };
        batch.clear();
        for req in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match req {
                Request::Command(cmd, reply) => batch.push((cmd, reply)),
                Request::Close(done) => closers.push(done),
                // Raft requests keep their order with the commands before them.
                Request::Apply(cmds, raft, reply) => {
                    run_group(&shared, &mut counters, &mut batch, quota);
                    let _ = reply.send(apply_raft(&shared, &mut counters, &cmds, &raft, quota));
                }
                Request::Install(file, reply) => {
                    run_group(&shared, &mut counters, &mut batch, quota);
                    let _ = reply.send(install(&shared, &mut counters, &file));
                }
            }
            if batch.len() >= max {
                break;
            }
        }
        run_group(&shared, &mut counters, &mut batch, quota);
    }
    // Refuse what is still queued, then release the file.
    rx.close();
    while let Ok(req) = rx.try_recv() {
        if let Request::Close(done) = req {
            closers.push(done);
        }
    }
    shared.hub.close();
    drop(shared);
    for done in closers {
        let _ = done.send(());
    }
}

/// One answer per entry, `None` for entries without a command.
pub(crate) type ApplyResults = Vec<Option<Result<CommandResult>>>;

type Batch = Vec<(Command, oneshot::Sender<Result<CommandResult>>)>;

/// Applies and answers the queued commands (group commit).
fn run_group(shared: &Shared, counters: &mut Counters, batch: &mut Batch, quota: u64) {
    if batch.is_empty() {
        return;
    }
    let before = *counters;
    match commit_group(shared, counters, batch, quota) {
        Ok((results, events)) => {
            shared
                .hub
                .publish(events, counters.revision, counters.compacted);
            shared.stored_bytes.store(counters.bytes, Ordering::Relaxed);
            for ((_, reply), r) in batch.drain(..).zip(results) {
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            tracing::error!("store group commit failed: {e}");
            *counters = before;
            let msg = match &e {
                Error::Storage(m) => m.clone(),
                other => other.to_string(),
            };
            for (_, reply) in batch.drain(..) {
                let _ = reply.send(Err(Error::Storage(msg.clone())));
            }
            if shared.db.latched() {
                recover(shared, counters);
            }
        }
    }
}

/// Applies committed Raft entries and records the Raft state with them in
/// one transaction, so the applied log id never disagrees with the data.
/// A command's own failure (a validation error) is its answer, the same on
/// every replica; a storage error fails the whole call.
fn apply_raft(
    shared: &Shared,
    counters: &mut Counters,
    cmds: &[Option<Command>],
    raft: &[u8],
    quota: u64,
) -> Result<ApplyResults> {
    let before = *counters;
    let run = |counters: &mut Counters| -> Result<_> {
        let db = shared.db.get()?;
        let mut w = db.begin_write().map_err(state::storage)?;
        w.set_durability(Durability::Immediate)
            .map_err(state::storage)?;
        let mut results = Vec::with_capacity(cmds.len());
        let mut events = Vec::new();
        {
            let mut tables = Tables::open(&w)?;
            for cmd in cmds {
                let Some(cmd) = cmd else {
                    results.push(None);
                    continue;
                };
                match state::apply(&mut tables, counters, cmd, quota) {
                    Ok((r, ev)) => {
                        results.push(Some(Ok(r)));
                        events.extend(ev);
                    }
                    Err(e @ Error::Storage(_)) => return Err(e),
                    Err(e) => results.push(Some(Err(e))),
                }
            }
            let mut t = w.open_table(state::RAFT).map_err(state::storage)?;
            t.insert(state::RAFT_APPLIED, raft)
                .map_err(state::storage)?;
        }
        commit(shared, w)?;
        Ok((results, events))
    };
    match run(counters) {
        Ok((results, events)) => {
            shared
                .hub
                .publish(events, counters.revision, counters.compacted);
            shared.stored_bytes.store(counters.bytes, Ordering::Relaxed);
            Ok(results)
        }
        Err(e) => {
            *counters = before;
            if shared.db.latched() {
                recover(shared, counters);
            }
            Err(e)
        }
    }
}

/// Puts a restored file in place of the current one; watchers start over.
fn install(shared: &Shared, counters: &mut Counters, file: &Path) -> Result<Vec<(LeaseId, u64)>> {
    let (mut disk, leases) = shared.db.replace(file, REOPEN_WAIT)?;
    disk.bytes = state::stored_bytes(&*shared.db.get()?)?;
    *counters = disk;
    shared.hub.reset(disk.revision, disk.compacted);
    shared.stored_bytes.store(disk.bytes, Ordering::Relaxed);
    Ok(leases)
}

/// Reopens a file redb refuses after an I/O error. The file holds the last
/// group that committed, which is normally where `counters` stand; if the
/// failed group reached the file after all, the file wins and watchers
/// start over from it (their events for it were never published).
fn recover(shared: &Shared, counters: &mut Counters) {
    tracing::warn!(path = %shared.path.display(), "the store refuses transactions after an I/O error: reopening its file");
    match shared.db.reopen(REOPEN_WAIT) {
        Ok(disk) if (disk.revision, disk.compacted) == (counters.revision, counters.compacted) => {
            tracing::info!(revision = counters.revision, "store file reopened");
        }
        Ok(mut disk) => {
            tracing::warn!(
                expected = counters.revision,
                found = disk.revision,
                "the failed group was committed after all; restarting watchers from the file"
            );
            disk.bytes = shared
                .db
                .get()
                .and_then(|db| state::stored_bytes(&db))
                .unwrap_or(counters.bytes);
            *counters = disk;
            shared.hub.reset(disk.revision, disk.compacted);
            shared.stored_bytes.store(disk.bytes, Ordering::Relaxed);
        }
        Err(e) => tracing::error!(
            "reopening the store file failed (retried after the next failed write): {e}"
        ),
    }
}

type GroupResult = (Vec<Result<CommandResult>>, Vec<crate::Event>);

fn commit_group(
    shared: &Shared,
    counters: &mut Counters,
    batch: &[(Command, oneshot::Sender<Result<CommandResult>>)],
    quota: u64,
) -> Result<GroupResult> {
    let db = shared.db.get()?;
    let mut w = db.begin_write().map_err(state::storage)?;
    w.set_durability(Durability::Immediate)
        .map_err(state::storage)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    let before = counters.revision;
    let mut wrote = false;
    {
        let mut tables = Tables::open(&w)?;
        for (cmd, _) in batch {
            match state::apply(&mut tables, counters, cmd, quota) {
                Ok((r, ev)) => {
                    wrote |= !matches!(r, CommandResult::Txn(_));
                    results.push(Ok(r));
                    events.extend(ev);
                }
                // The transaction may hold part of this command: drop it all.
                Err(e @ Error::Storage(_)) => return Err(e),
                Err(e) => results.push(Err(e)),
            }
        }
    }
    if wrote || counters.revision != before {
        commit(shared, w)?;
    } else {
        // Only failed commands and txns that changed nothing: their answers
        // rest on state that is already durable, so skip the fsync.
        w.abort().map_err(state::storage)?;
    }
    Ok((results, events))
}

/// Commits `w` (fsync included), timing it for `commit_durations`.
fn commit(shared: &Shared, w: redb::WriteTransaction) -> Result<()> {
    let started = std::time::Instant::now();
    w.commit().map_err(state::storage)?;
    shared
        .commit_durations
        .observe(started.elapsed().as_secs_f64());
    Ok(())
}
