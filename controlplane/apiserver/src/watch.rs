//! Watch: a stream of newline-delimited JSON events from a resourceVersion,
//! over the store's watch. Without a resourceVersion (or "0") it starts with
//! synthetic ADDED events for what exists. A compacted start gets an ERROR
//! event carrying a 410 Status, as kube sends it.

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
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
    /// Some(includeObject) when the client wants Table rows.
    pub table: Option<Option<String>>,
}

fn event_line(kind: &str, obj: Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// The event line of `ev` from the stored JSON, when nothing needs the
/// object parsed: no selector, no Table. None: take the general path.
fn raw_event(p: &WatchParams, ev: &skiff_store::Event) -> Option<Bytes> {
    if p.table.is_some() || !p.filter.is_empty() {
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
    let start = match p.resource_version {
        Some(rv) if rv > 0 => rv + 1,
        _ => {
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
            page.revision + 1
        }
    };
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
                    if let Some(line) = raw_event(&p, &ev) {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let prev = ev.prev_kv.as_ref().and_then(|kv| storage::decode(kv).ok());
                    let (kind, obj) = match ev.kind {
                        EventKind::Delete => {
                            let Some(mut obj) = prev else { continue };
                            storage::set_rv(&mut obj, ev.revision());
                            if !p.filter.matches(&obj) { continue; }
                            ("DELETED", obj)
                        }
                        EventKind::Put => {
                            let Ok(obj) = storage::decode(&ev.kv) else { continue };
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
