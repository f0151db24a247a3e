//! Container log streams between the API server's `pods/log` and the nodes
//! (the API server's [`LogProvider`]): a request becomes a
//! `PlaneToNode::LogRequest` with a fresh stream id on the node's live
//! session, and that node's `LogChunk` frames are routed back to the HTTP
//! response until `eof`.
//!
//! Bounded: a node serves at most [`MAX_STREAMS_PER_NODE`] streams, and
//! each stream buffers at most [`STREAM_QUEUE`] chunks for its HTTP client.
//! The protocol has no per-stream flow control and the session's reader must
//! never wait on one slow client (it carries the node's heartbeats too), so
//! output that does not fit is dropped and the client gets a note saying
//! how much. A client that goes away cancels the stream on the node; a
//! session that ends fails its streams.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};

use bytes::Bytes;
use skiff_apiserver::{ApiError, LogItem, LogProvider, LogQuery, LogStream};
use skiff_node_proto::{LogRequest, PlaneToNode, StreamId};
use tokio::sync::mpsc;

/// Most concurrent log streams per node (kube has no such limit, but one
/// node connection should not carry unbounded reader state).
pub const MAX_STREAMS_PER_NODE: usize = 32;
/// Chunks (each at most `MAX_LOG_CHUNK`, 64 KiB) buffered per stream.
pub const STREAM_QUEUE: usize = 32;

/// The live nodes' log streams, by node name.
#[derive(Debug, Default)]
pub struct LogRouter {
    nodes: Mutex<HashMap<String, Arc<NodeLogs>>>,
}

/// One session's log streams.
#[derive(Debug)]
pub struct NodeLogs {
    node: String,
    /// The session's queue of frames to the node.
    tx: mpsc::Sender<PlaneToNode>,
    /// The node negotiated `LOG_FOLLOW`; without it a follow is a snapshot.
    follow: bool,
    next_id: AtomicU32,
    streams: Mutex<HashMap<StreamId, Route>>,
}

#[derive(Debug)]
struct Route {
    tx: mpsc::Sender<LogItem>,
    /// Bytes dropped since the client last had room.
    dropped: u64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn not_connected(node: &str, pod: &str) -> ApiError {
    ApiError::new(
        502,
        "BadGateway",
        format!(
            "node {node:?} is not connected to the control plane: cannot get the logs of pod {pod:?}"
        ),
    )
}

fn dropped_note(bytes: u64) -> Bytes {
    Bytes::from(format!(
        "\n[skiff: {bytes} bytes of log output dropped: the client read too slowly]\n"
    ))
}

impl LogRouter {
    /// Makes `node`'s new session the one its log requests go to.
    pub fn attach(&self, node: &str, tx: mpsc::Sender<PlaneToNode>, follow: bool) -> Arc<NodeLogs> {
        let logs = Arc::new(NodeLogs {
            node: node.to_string(),
            tx,
            follow,
            next_id: AtomicU32::new(1),
            streams: Mutex::default(),
        });
        if let Some(old) = lock(&self.nodes).insert(node.to_string(), logs.clone()) {
            old.fail_all("was replaced by a new connection");
        }
        logs
    }

    /// The session ended: its streams fail, and it no longer takes requests
    /// (unless a newer session already replaced it).
    pub fn detach(&self, logs: &Arc<NodeLogs>, why: &str) {
        let mut nodes = lock(&self.nodes);
        if nodes.get(&logs.node).is_some_and(|l| Arc::ptr_eq(l, logs)) {
            nodes.remove(&logs.node);
        }
        drop(nodes);
        logs.fail_all(why);
    }

    /// Open streams on all nodes.
    pub fn open_streams(&self) -> usize {
        lock(&self.nodes)
            .values()
            .map(|n| lock(&n.streams).len())
            .sum()
    }
}

impl LogProvider for LogRouter {
    fn open(&self, q: LogQuery) -> Result<LogStream, ApiError> {
        let node = lock(&self.nodes)
            .get(&q.node)
            .cloned()
            .ok_or_else(|| not_connected(&q.node, &q.pod))?;
        // One slot more than output may use: the last is for the final
        // note or error, so those always reach the client.
        let (tx, rx) = mpsc::channel(STREAM_QUEUE + 1);
        let id = {
            let mut streams = lock(&node.streams);
            if streams.len() >= MAX_STREAMS_PER_NODE {
                return Err(ApiError::new(
                    429,
                    "TooManyRequests",
                    format!(
                        "node {:?} already serves {MAX_STREAMS_PER_NODE} log streams; try again later",
                        q.node
                    ),
                ));
            }
            let mut id = node.next_id.fetch_add(1, Ordering::Relaxed);
            while streams.contains_key(&id) {
                id = node.next_id.fetch_add(1, Ordering::Relaxed);
            }
            streams.insert(id, Route { tx, dropped: 0 });
            id
        };
        let req = PlaneToNode::LogRequest(LogRequest {
            stream: id,
            pod_uid: q.pod_uid,
            container: q.container,
            follow: q.follow && node.follow,
            tail_lines: q.tail_lines,
            since: q.since_ms,
            limit_bytes: q.limit_bytes,
            timestamps: q.timestamps,
            previous: q.previous,
        });
        if node.tx.try_send(req).is_err() {
            lock(&node.streams).remove(&id);
            return Err(ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {:?} is not reading its connection", q.node),
            ));
        }
        let weak: Weak<NodeLogs> = Arc::downgrade(&node);
        Ok(LogStream::new(rx, move || {
            if let Some(n) = weak.upgrade() {
                n.cancel(id);
            }
        }))
    }
}

impl NodeLogs {
    /// The reader is gone: forget the stream and stop it on the node
    /// (unless it already ended).
    fn cancel(&self, id: StreamId) {
        if lock(&self.streams).remove(&id).is_some() {
            let _ = self.tx.try_send(PlaneToNode::LogCancel { stream: id });
        }
    }

    fn fail_all(&self, why: &str) {
        let gone = std::mem::take(&mut *lock(&self.streams));
        for r in gone.into_values() {
            let _ = r.tx.try_send(Err(ApiError::new(
                502,
                "BadGateway",
                format!("node {:?} {why}", self.node),
            )));
        }
    }

    /// Routes one `LogChunk`. Returns a frame for the node: a `LogCancel`
    /// for output of a stream nobody reads any more.
    pub fn chunk(
        &self,
        id: StreamId,
        data: Vec<u8>,
        eof: bool,
        error: Option<String>,
    ) -> Option<PlaneToNode> {
        let mut streams = lock(&self.streams);
        let Some(r) = streams.get_mut(&id) else {
            return (!eof).then_some(PlaneToNode::LogCancel { stream: id });
        };
        if r.dropped > 0 && r.tx.capacity() > 1 {
            let _ = r.tx.try_send(Ok(dropped_note(r.dropped)));
            r.dropped = 0;
        }
        // An empty chunk still goes through unless it is the last: it may be
        // the node's answer, which the API server waits for before it sends
        // the response head (an error must come first to be the status).
        let len = data.len() as u64;
        if r.tx.is_closed() {
            streams.remove(&id);
            return (!eof).then_some(PlaneToNode::LogCancel { stream: id });
        }
        if data.is_empty() && eof {
        } else if r.dropped > 0 || r.tx.capacity() <= 1 {
            r.dropped += len;
        } else {
            let _ = r.tx.try_send(Ok(Bytes::from(data)));
        }
        if eof && let Some(r) = streams.remove(&id) {
            if let Some(e) = error {
                let _ = r.tx.try_send(Err(ApiError::bad_request(e)));
            } else if r.dropped > 0 {
                let _ = r.tx.try_send(Ok(dropped_note(r.dropped)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(node: &str) -> LogQuery {
        LogQuery {
            namespace: "default".into(),
            pod: "web".into(),
            pod_uid: "u1".into(),
            node: node.into(),
            container: "main".into(),
            follow: true,
            tail_lines: Some(3),
            since_ms: None,
            limit_bytes: None,
            timestamps: false,
            previous: false,
        }
    }

    #[tokio::test]
    async fn routes_chunks_cancels_on_drop_and_fails_on_detach() {
        let router = LogRouter::default();
        let e = router.open(query("n1")).unwrap_err();
        assert_eq!(e.code, 502);
        assert!(e.message.contains("node \"n1\" is not connected"), "{e:?}");

        let (tx, mut to_node) = mpsc::channel(16);
        let logs = router.attach("n1", tx, true);
        let mut s = router.open(query("n1")).unwrap();
        let Some(PlaneToNode::LogRequest(req)) = to_node.recv().await else {
            panic!("no request")
        };
        assert_eq!(
            (req.pod_uid.as_str(), req.follow, req.tail_lines),
            ("u1", true, Some(3))
        );
        assert!(
            logs.chunk(req.stream, b"a\n".to_vec(), false, None)
                .is_none()
        );
        assert_eq!(s.next().await.unwrap().unwrap(), "a\n");
        assert_eq!(router.open_streams(), 1);
        // The reader goes away: the node is told to stop.
        drop(s);
        assert_eq!(router.open_streams(), 0);
        assert_eq!(
            to_node.recv().await,
            Some(PlaneToNode::LogCancel { stream: req.stream })
        );
        // Late output of that stream is answered with another cancel.
        assert_eq!(
            logs.chunk(req.stream, b"late\n".to_vec(), false, None),
            Some(PlaneToNode::LogCancel { stream: req.stream })
        );
        assert_eq!(logs.chunk(req.stream, vec![], true, None), None);

        // A refusal from the node is the stream's error; eof ends it.
        let mut s = router.open(query("n1")).unwrap();
        let Some(PlaneToNode::LogRequest(req)) = to_node.recv().await else {
            panic!()
        };
        logs.chunk(
            req.stream,
            vec![],
            true,
            Some("container x is not valid".into()),
        );
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "container x is not valid")
        );
        assert!(s.next().await.is_none());
        drop(s);
        assert!(
            to_node.try_recv().is_err(),
            "an ended stream is not cancelled"
        );

        // The session ends: open streams fail, new requests are refused.
        let mut s = router.open(query("n1")).unwrap();
        router.detach(&logs, "disconnected");
        assert_eq!(s.next().await.unwrap().unwrap_err().code, 502);
        assert_eq!(router.open(query("n1")).map(|_| ()).unwrap_err().code, 502);
    }

    #[tokio::test]
    async fn slow_readers_lose_output_with_a_note_and_streams_are_bounded() {
        let router = LogRouter::default();
        let (tx, mut to_node) = mpsc::channel(256);
        let logs = router.attach("n1", tx, false);
        let mut s = router.open(query("n1")).unwrap();
        let Some(PlaneToNode::LogRequest(req)) = to_node.recv().await else {
            panic!()
        };
        assert!(!req.follow, "the node can't follow: a snapshot instead");
        for _ in 0..STREAM_QUEUE + 3 {
            logs.chunk(req.stream, b"0123456789".to_vec(), false, None);
        }
        logs.chunk(req.stream, vec![], true, None);
        let mut got = String::new();
        while let Some(b) = s.next().await {
            got.push_str(std::str::from_utf8(&b.unwrap()).unwrap());
        }
        assert!(got.starts_with("0123456789"));
        assert!(
            got.ends_with("[skiff: 30 bytes of log output dropped: the client read too slowly]\n"),
            "{got}"
        );
        drop(s);

        let mut open = Vec::new();
        for _ in 0..MAX_STREAMS_PER_NODE {
            open.push(router.open(query("n1")).unwrap());
        }
        assert_eq!(router.open(query("n1")).unwrap_err().code, 429);
    }
}
