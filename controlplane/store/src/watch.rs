//! Watch fan-out.
//!
//! Invariants:
//! - The hub's `current` is the last revision published; the writer publishes
//!   each group's events (in revision order) after its commit.
//! - `ring` holds the events of the revisions `floor ..= current` (whole
//!   revisions), at most about `ring_events` events and `ring_bytes` bytes.
//! - A registered watcher has been given every matching event before `next`
//!   and gets every matching event `>= next` through its bounded channel.
//!   If the channel is full, by batches or by bytes (each watcher may have
//!   at most `queue_bytes` of keys and values pending), the writer never
//!   waits: it drops the watcher, which then reports
//!   [`Error::WatchCanceled`] after the events it had.
//! - An unregistered watcher (starting before `floor`) catches up by
//!   reading history from redb in chunks, then registers; events published
//!   meanwhile are either read from redb or found in the ring, so there is
//!   neither gap nor duplicate (`next` only moves forward).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;

use crate::{Error, Event, KeySet, Result, Revision, Shared, WatchRequest};

/// Events read from history per `Watcher::next` call during catch-up.
const CATCH_UP_EVENTS: usize = 1024;

pub(crate) struct Hub {
    state: Mutex<HubState>,
}

/// How much the hub keeps in memory (see [`crate::Options`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub ring_events: usize,
    pub ring_bytes: usize,
    pub queue_batches: usize,
    pub queue_bytes: usize,
}

struct HubState {
    current: Revision,
    compacted: Revision,
    ring: VecDeque<Event>,
    /// [`event_bytes`] of the ring.
    ring_bytes: usize,
    floor: Revision,
    bounds: Bounds,
    watchers: HashMap<u64, Slot>,
    next_id: u64,
    closed: bool,
}

/// A batch and its [`event_bytes`].
type Batch = (Vec<Event>, usize);

struct Slot {
    keys: KeySet,
    next: Revision,
    tx: mpsc::Sender<Batch>,
    /// Bytes sent and not yet taken by the watcher.
    queued: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
}

/// What an event holds in memory: keys and values, current and previous.
fn event_bytes(e: &Event) -> usize {
    e.kv.key.len() + e.kv.value.len() + e.prev_kv.as_ref().map_or(0, |p| p.value.len())
}

impl Hub {
    pub(crate) fn new(current: Revision, compacted: Revision, bounds: Bounds) -> Self {
        Hub {
            state: Mutex::new(HubState {
                current,
                compacted,
                ring: VecDeque::new(),
                ring_bytes: 0,
                floor: current + 1,
                bounds: Bounds {
                    ring_events: bounds.ring_events.max(1),
                    ring_bytes: bounds.ring_bytes.max(1),
                    queue_batches: bounds.queue_batches.max(1),
                    queue_bytes: bounds.queue_bytes.max(1),
                },
                watchers: HashMap::new(),
                next_id: 1,
                closed: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.state.lock().expect("watch hub")
    }

    pub(crate) fn current_revision(&self) -> Revision {
        self.lock().current
    }

    pub(crate) fn watchers(&self) -> usize {
        self.lock().watchers.len()
    }

    pub(crate) fn compacted_revision(&self) -> Revision {
        self.lock().compacted
    }

    /// Called by the writer after a commit, with the group's events in order.
    pub(crate) fn publish(&self, events: Vec<Event>, current: Revision, compacted: Revision) {
        let mut s = self.lock();
        s.compacted = compacted;
        if !events.is_empty() {
            let mut gone = Vec::new();
            let queue_bytes = s.bounds.queue_bytes;
            for (id, w) in &s.watchers {
                let batch: Vec<Event> = events
                    .iter()
                    .filter(|e| e.revision() >= w.next && w.keys.contains(&e.kv.key))
                    .cloned()
                    .collect();
                if batch.is_empty() {
                    continue;
                }
                let bytes: usize = batch.iter().map(event_bytes).sum();
                let pending = w.queued.load(Ordering::Acquire);
                // One batch is always let through to an idle watcher, so
                // an event larger than the bound is still delivered.
                let over = pending > 0 && pending + bytes > queue_bytes;
                let sent = !over && {
                    w.queued.fetch_add(bytes, Ordering::AcqRel);
                    match w.tx.try_send((batch, bytes)) {
                        Ok(()) => true,
                        Err(_) => {
                            w.queued.fetch_sub(bytes, Ordering::AcqRel);
                            false
                        }
                    }
                };
                if !sent {
                    if !w.tx.is_closed() {
                        w.cut.store(true, Ordering::Release);
                    }
                    gone.push(*id);
                }
            }
            for id in gone {
                s.watchers.remove(&id);
            }
            s.ring_bytes += events.iter().map(event_bytes).sum::<usize>();
            s.ring.extend(events);
            while s.ring.len() > s.bounds.ring_events || s.ring_bytes > s.bounds.ring_bytes {
                // Drop whole revisions from the front.
                let Some(first) = s.ring.pop_front() else {
                    break;
                };
                s.ring_bytes -= event_bytes(&first);
                let r = first.revision();
                while let Some(e) = s.ring.pop_front_if(|e| e.revision() == r) {
                    s.ring_bytes -= event_bytes(&e);
                }
                s.floor = r + 1;
            }
        }
        s.current = current;
        for w in s.watchers.values_mut() {
            w.next = w.next.max(current + 1);
        }
        if s.ring.is_empty() {
            s.floor = current + 1;
        }
    }

    /// Forget what was published (the file holds something else now):
    /// registered watchers are cut off and the ring emptied, so that every
    /// watch resumes from the file's history.
    pub(crate) fn reset(&self, current: Revision, compacted: Revision) {
        let mut s = self.lock();
        for w in s.watchers.values() {
            w.cut.store(true, Ordering::Release);
        }
        s.watchers.clear();
        s.ring.clear();
        s.ring_bytes = 0;
        s.current = current;
        s.compacted = compacted;
        s.floor = current + 1;
    }

    /// Drop all watchers: they report [`Error::Closed`].
    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.watchers.clear();
    }
}

/// A watch: call [`Watcher::next`] for batches of events, in revision order.
/// Dropping it unregisters it.
pub struct Watcher {
    shared: Arc<Shared>,
    keys: KeySet,
    /// First revision not yet delivered.
    next: Revision,
    rx: Option<mpsc::Receiver<Batch>>,
    /// Hub slot, once registered.
    id: Option<u64>,
    queued: Arc<AtomicUsize>,
    cut: Arc<AtomicBool>,
    pending: Vec<Event>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        // Free the slot now: a watch on keys that never change would
        // otherwise stay registered for the life of the store.
        if let Some(id) = self.id {
            self.shared.hub.lock().watchers.remove(&id);
        }
    }
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("keys", &self.keys)
            .field("next", &self.next)
            .finish()
    }
}

impl Watcher {
    pub(crate) fn new(shared: Arc<Shared>, req: WatchRequest) -> Result<Watcher> {
        let (next, compacted, closed) = {
            let s = shared.hub.lock();
            let next = if req.start_revision == 0 {
                s.current + 1
            } else {
                req.start_revision
            };
            (next, s.compacted, s.closed)
        };
        if closed {
            return Err(Error::Closed);
        }
        if next <= compacted {
            return Err(Error::Compacted {
                requested: next,
                compacted,
            });
        }
        let mut w = Watcher {
            shared,
            keys: req.keys,
            next,
            rx: None,
            id: None,
            queued: Arc::new(AtomicUsize::new(0)),
            cut: Arc::new(AtomicBool::new(false)),
            pending: Vec::new(),
        };
        // Register at once if the ring covers the start, so that events
        // committed right after `watch()` returned are not missed even if
        // the caller polls late.
        w.try_register()?;
        Ok(w)
    }

    /// First revision this watcher has not delivered yet.
    pub fn next_revision(&self) -> Revision {
        self.next
    }

    /// A revision `R` such that every matching event up to `R` has already
    /// been returned by [`Watcher::next`] (for Kubernetes watch bookmarks /
    /// etcd progress notifications). `None` while catching up or while
    /// events are queued.
    pub fn progress(&self) -> Option<Revision> {
        let rx = self.rx.as_ref()?;
        if !self.pending.is_empty() {
            return None;
        }
        // Publishing queues events and advances `current` under this lock,
        // so an empty queue seen under it means nothing up to `current` is
        // outstanding.
        let s = self.shared.hub.lock();
        if s.closed || !rx.is_empty() || self.cut.load(Ordering::Acquire) {
            return None;
        }
        Some(s.current.max(self.next.saturating_sub(1)))
    }

    /// Register with the hub if the ring covers `next`; collect the ring's
    /// events from `next` into `pending`. Returns whether registered.
    fn try_register(&mut self) -> Result<bool> {
        let mut s = self.shared.hub.lock();
        if s.closed {
            return Err(Error::Closed);
        }
        // Events still in the ring are served even if compaction has passed
        // them: only history reads need the revisions to be uncompacted.
        if self.next < s.floor {
            return Ok(false);
        }
        self.pending.extend(
            s.ring
                .iter()
                .filter(|e| e.revision() >= self.next && self.keys.contains(&e.kv.key))
                .cloned(),
        );
        // `next` may be past `current` if catch-up read commits that were not
        // published yet: those will come through the channel, filtered.
        let next = self.next.max(s.current + 1);
        let (tx, rx) = mpsc::channel(s.bounds.queue_batches);
        let id = s.next_id;
        s.next_id += 1;
        s.watchers.insert(
            id,
            Slot {
                keys: self.keys.clone(),
                next,
                tx,
                queued: self.queued.clone(),
                cut: self.cut.clone(),
            },
        );
        self.next = next;
        self.rx = Some(rx);
        self.id = Some(id);
        Ok(true)
    }

    /// The next non-empty batch of events, in revision order. Errors:
    /// [`Error::Compacted`] (history needed for catch-up was compacted),
    /// [`Error::WatchCanceled`] (too slow: the queue filled up),
    /// [`Error::Closed`] (store closed). After an error the watcher is dead.
    pub async fn next(&mut self) -> Result<Vec<Event>> {
        loop {
            if !self.pending.is_empty() {
                return Ok(std::mem::take(&mut self.pending));
            }
            if let Some(rx) = self.rx.as_mut() {
                return match rx.recv().await {
                    Some((batch, bytes)) => {
                        self.queued.fetch_sub(bytes, Ordering::AcqRel);
                        if let Some(last) = batch.last() {
                            self.next = last.revision() + 1;
                        }
                        Ok(batch)
                    }
                    None if self.cut.load(Ordering::Acquire) => Err(Error::WatchCanceled(
                        "watcher fell too far behind (event queue full), or the store \
                         restarted its watches"
                            .into(),
                    )),
                    None => Err(Error::Closed),
                };
            }
            if self.try_register()? {
                continue;
            }
            // Catch up from history, off the async workers.
            let shared = self.shared.clone();
            let keys = self.keys.clone();
            let from = self.next;
            let (events, last) = tokio::task::spawn_blocking(move || {
                crate::state::read_events(&*shared.db.get()?, &keys, from, CATCH_UP_EVENTS)
            })
            .await
            .map_err(|e| Error::Storage(format!("watch catch-up task: {e}")))??;
            self.next = last + 1;
            self.pending = events;
            // Register as soon as caught up, so that the ring moving on
            // meanwhile cannot force another trip to history.
            self.try_register()?;
        }
    }
}
