//! Watch: a stream of newline-delimited JSON events from a resourceVersion,
//! over the store's watch. Without a resourceVersion (or "0") it starts with
//! synthetic ADDED events for what exists. A compacted start gets an ERROR
//! event carrying a 410 Status, as kube sends it.
//!
//! Streaming lists (KEP-3157, what client-go 1.35 informers, `kubectl wait`
//! and `rollout status` use): `sendInitialEvents=true` sends the state as
//! ADDED events, then a BOOKMARK annotated `k8s.io/initial-events-end`
//! carrying the revision of that state, so the client knows its list is
//! complete without a separate LIST.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use skiff_store::{EventKind, KeySet, WatchRequest};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::registry::Resource;
use crate::selectors::Filter;
use crate::server::State;
use crate::status::ApiError;
use crate::{storage, tables};

/// kube picks 30-60 minutes when the client sets no timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(Debug, Clone)]
pub struct WatchParams {
    pub namespace: String,
    pub filter: Filter,
    pub start: Start,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// Some(includeObject) when the client wants Table rows.
    pub table: Option<Option<String>>,
}

/// Where a watch starts, from `resourceVersion`, `resourceVersionMatch`
/// and `sendInitialEvents` (see [`Start::from_query`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The current state as ADDED events, then changes after it (no
    /// resourceVersion, or "0").
    State,
    /// Changes after this revision only.
    After(u64),
    /// A streaming list: the current state, which is at least as new as
    /// this revision, as ADDED events, then the initial-events-end bookmark.
    InitialEvents { not_older_than: u64 },
}

/// The bookmark annotation that ends a streaming list's initial events.
pub const INITIAL_EVENTS_END: &str = "k8s.io/initial-events-end";

impl Start {
    /// kube's rules (`ValidateListOptions`): `sendInitialEvents` needs
    /// `resourceVersionMatch=NotOlderThan`, and when true
    /// `allowWatchBookmarks`; `resourceVersionMatch` on a watch needs
    /// `sendInitialEvents`. Err: the offending field and why (422).
    pub fn from_query(
        resource_version: Option<u64>,
        resource_version_match: Option<&str>,
        send_initial_events: Option<bool>,
        bookmarks: bool,
    ) -> Result<Start, (&'static str, &'static str)> {
        let rv = resource_version.unwrap_or(0);
        match send_initial_events {
            None if resource_version_match.is_some_and(|m| !m.is_empty()) => Err((
                "resourceVersionMatch",
                "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
            )),
            None if rv == 0 => Ok(Start::State),
            None => Ok(Start::After(rv)),
            Some(_) if resource_version_match != Some("NotOlderThan") => Err((
                "resourceVersionMatch",
                "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
            )),
            Some(true) if !bookmarks => Err((
                "allowWatchBookmarks",
                "sendInitialEvents requires setting allowWatchBookmarks to true",
            )),
            Some(true) => Ok(Start::InitialEvents { not_older_than: rv }),
            // No initial events: changes after the given revision, or
            // after now.
            Some(false) => Ok(Start::After(rv)),
        }
    }
}

fn event_line(kind: &str, obj: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The event line of `ev` from the stored JSON, when nothing needs the
/// object parsed: no selector, no Table. None: take the general path.
fn raw_event(r: &Resource, p: &WatchParams, ev: &skiff_store::Event) -> Option<Bytes> {
    if p.table.is_some() || !p.filter.is_empty() || crate::crd::converts(r) {
        return None;
    }
    let (kind, obj) = match ev.kind {
        EventKind::Delete => (
            "DELETED",
            storage::raw_with_rv(&ev.prev_kv.as_ref()?.value, ev.revision())?,
        ),
        EventKind::Put => {
            // Stored values are JSON this server wrote, so a previous
            // state means the watcher already has the object.
            (
                if ev.prev_kv.is_some() {
                    "MODIFIED"
                } else {
                    "ADDED"
                },
                storage::raw_with_rv(&ev.kv.value, ev.kv.mod_revision)?,
            )
        }
    };
    let mut line = Vec::with_capacity(obj.len() + 32);
    line.extend_from_slice(b"{\"type\":\"");
    line.extend_from_slice(kind.as_bytes());
    line.extend_from_slice(b"\",\"object\":");
    line.extend_from_slice(&obj);
    line.extend_from_slice(b"}\n");
    Some(Bytes::from(line))
}

/// Event lines a watch may have waiting for a client that reads slowly,
/// in bytes (past that, the watch waits; its store watcher then falls
/// behind and is cut off).
const BUFFER_BYTES: usize = 4 << 20;

/// The sending half of a watch's response body, bounded in bytes: each
/// line holds permits of `budget` until the body hands it to hyper.
struct Tx {
    lines: mpsc::Sender<(Bytes, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
}

impl Tx {
    async fn send(&self, line: Bytes) -> Result<(), ()> {
        let n = line.len().clamp(1, BUFFER_BYTES) as u32;
        let permit = self
            .budget
            .clone()
            .acquire_many_owned(n)
            .await
            .map_err(drop)?;
        self.lines.send((line, permit)).await.map_err(drop)
    }

    async fn closed(&self) {
        self.lines.closed().await
    }
}

pub async fn watch(state: Arc<State>, r: &'static Resource, p: WatchParams) -> Response {
    let (lines, rx) = mpsc::channel::<(Bytes, OwnedSemaphorePermit)>(256);
    let tx = Tx {
        lines,
        budget: Arc::new(Semaphore::new(BUFFER_BYTES)),
    };
    tokio::spawn(run(state, r, p, tx));
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|(b, _permit)| (Ok::<_, Infallible>(b), rx))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .expect("static response parts")
}

async fn run(state: Arc<State>, r: &'static Resource, p: WatchParams, tx: Tx) {
    let shape = |obj: Value| -> Value {
        match &p.table {
            Some(include) => {
                tables::table(r, std::slice::from_ref(&obj), include.as_deref(), json!({}))
            }
            None => obj,
        }
    };
    let deadline = tokio::time::Instant::now() + p.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let current = state.store.current_revision();
    let (start, initial_events_end) = match p.start {
        Start::After(0) => (current + 1, false),
        Start::After(rv) => (rv + 1, false),
        Start::InitialEvents { not_older_than } if not_older_than > current => {
            let e = ApiError::timeout(format!(
                "Too large resource version: {not_older_than}, current: {current}"
            ));
            let _ = tx.send(event_line("ERROR", e.to_status())).await;
            return;
        }
        Start::State | Start::InitialEvents { .. } => {
            // Synthetic ADDED events for the current state, then changes after it.
            let page = match storage::list(&state.store, r, &p.namespace, &p.filter, 0, None).await
            {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(event_line("ERROR", e.to_status())).await;
                    return;
                }
            };
            for obj in page.items {
                if tx.send(event_line("ADDED", shape(obj))).await.is_err() {
                    return;
                }
            }
            (
                page.revision + 1,
                matches!(p.start, Start::InitialEvents { .. }),
            )
        }
    };
    if initial_events_end {
        let obj = json!({
            "kind": r.kind,
            "apiVersion": r.api_version(),
            "metadata": {
                "resourceVersion": (start - 1).to_string(),
                "annotations": {INITIAL_EVENTS_END: "true"},
            },
        });
        if tx.send(event_line("BOOKMARK", obj)).await.is_err() {
            return;
        }
    }
    let keys = KeySet::prefix(r.list_prefix(&p.namespace).into_bytes());
    let mut watcher = match state.store.watch(WatchRequest::new(keys, start)).await {
        Ok(w) => w,
        Err(e) => {
            let _ = tx
                .send(event_line("ERROR", ApiError::from(e).to_status()))
                .await;
            return;
        }
    };
    let mut last_rev = start - 1;
    let every = state.bookmark_interval;
    let mut bookmark = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => return,
            _ = tx.closed() => return,
            _ = bookmark.tick(), if p.bookmarks => {
                let rev = last_rev.max(watcher.next_revision().saturating_sub(1));
                let obj = json!({"kind": r.kind, "apiVersion": r.api_version(), "metadata": {"resourceVersion": rev.to_string()}});
                if tx.send(event_line("BOOKMARK", obj)).await.is_err() {
                    return;
                }
            }
            batch = watcher.next() => {
                let events = match batch {
                    Ok(ev) => ev,
                    Err(e) => {
                        let _ = tx.send(event_line("ERROR", ApiError::from(e).to_status())).await;
                        return;
                    }
                };
                for ev in events {
                    last_rev = ev.revision();
                    if let Some(line) = raw_event(r, &p, &ev) {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let prev = ev.prev_kv.as_ref().and_then(|kv| storage::decode_as(r, kv).ok());
                    let (kind, obj) = match ev.kind {
                        EventKind::Delete => {
                            let Some(mut obj) = prev else { continue };
                            storage::set_rv(&mut obj, ev.revision());
                            if !p.filter.matches(&obj) { continue; }
                            ("DELETED", obj)
                        }
                        EventKind::Put => {
                            let Ok(obj) = storage::decode_as(r, &ev.kv) else { continue };
                            let now = p.filter.matches(&obj);
                            let before = prev.as_ref().is_some_and(|o| p.filter.matches(o));
                            match (prev.is_some() && before, now) {
                                (false, true) => ("ADDED", obj),
                                (true, true) => ("MODIFIED", obj),
                                // It left the selection: the client sees it go.
                                (true, false) => ("DELETED", obj),
                                (false, false) => continue,
                            }
                        }
                    };
                    if tx.send(event_line(kind, shape(obj))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Start;

    #[test]
    fn start_follows_kubes_list_options_rules() {
        let not_older = Some("NotOlderThan");
        // Legacy watches.
        assert_eq!(Start::from_query(None, None, None, false), Ok(Start::State));
        assert_eq!(
            Start::from_query(Some(0), None, None, true),
            Ok(Start::State)
        );
        assert_eq!(
            Start::from_query(Some(7), None, None, false),
            Ok(Start::After(7))
        );
        // Streaming lists.
        assert_eq!(
            Start::from_query(Some(7), not_older, Some(true), true),
            Ok(Start::InitialEvents { not_older_than: 7 })
        );
        assert_eq!(
            Start::from_query(None, not_older, Some(true), true),
            Ok(Start::InitialEvents { not_older_than: 0 })
        );
        assert_eq!(
            Start::from_query(None, not_older, Some(false), false),
            Ok(Start::After(0))
        );
        assert_eq!(
            Start::from_query(Some(9), not_older, Some(false), false),
            Ok(Start::After(9))
        );
        // Refused combinations name the field.
        fn field(r: Result<Start, (&'static str, &'static str)>) -> &'static str {
            r.unwrap_err().0
        }
        assert_eq!(
            field(Start::from_query(None, not_older, None, true)),
            "resourceVersionMatch"
        );
        assert_eq!(
            field(Start::from_query(None, None, Some(true), true)),
            "resourceVersionMatch"
        );
        assert_eq!(
            field(Start::from_query(None, Some("Exact"), Some(false), true)),
            "resourceVersionMatch"
        );
        assert_eq!(
            field(Start::from_query(None, not_older, Some(true), false)),
            "allowWatchBookmarks"
        );
    }
}
