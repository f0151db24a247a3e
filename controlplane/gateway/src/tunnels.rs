//! Byte streams to pods over their node's session (the API server's
//! [`PodConnector`]: `kubectl port-forward`, `pods/proxy`,
//! `services/proxy`): a connect becomes a `TunnelFrame::Open` with a fresh
//! id on the node's live session; once the node answers `Opened`, the
//! caller gets one end of an in-memory duplex pipe and two tasks move its
//! bytes to and from the node's `Data` frames.
//!
//! Flow control is the protocol's credit: the plane sends at most
//! `TUNNEL_WINDOW` bytes the node has not acknowledged, and acknowledges
//! the node's bytes only once the caller took them, so neither side holds
//! more than a window per tunnel and the session's reader (which carries
//! the node's heartbeats too) never waits on a slow caller. A node that
//! sends beyond its credit loses the tunnel. Sessions end their tunnels.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_apiserver::{ApiError, PodConnector, PodStream, PodTarget};
use skiff_node_proto::{
    MAX_TUNNEL_CHUNK, MAX_TUNNELS, PlaneToNode, TUNNEL_WINDOW, TunnelError, TunnelFrame, TunnelId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How long a node may take to answer an `Open`.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The live nodes' tunnels, by node name.
#[derive(Debug, Default)]
pub struct TunnelRouter {
    nodes: Mutex<HashMap<String, Arc<NodeTunnels>>>,
}

/// One session's tunnels.
#[derive(Debug)]
pub struct NodeTunnels {
    node: String,
    /// The node opens tunnels (protocol v5, `Capabilities::TUNNEL`).
    supported: bool,
    tx: mpsc::Sender<PlaneToNode>,
    next_id: AtomicU32,
    routes: Mutex<HashMap<TunnelId, Route>>,
}

#[derive(Debug)]
enum Route {
    /// Waiting for the node's `Opened` or `Failed`.
    Opening(oneshot::Sender<Result<(), (TunnelError, String)>>),
    Open {
        /// The node's frames for the downstream task.
        frames: mpsc::UnboundedSender<TunnelFrame>,
        /// The node's bytes not yet acknowledged (its credit in use).
        unacked: Arc<AtomicU32>,
        /// The node's acknowledgements: credit for our sends.
        credit: Arc<Semaphore>,
    },
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn frame(tunnel: TunnelId, frame: TunnelFrame) -> PlaneToNode {
    PlaneToNode::Tunnel { tunnel, frame }
}

impl TunnelRouter {
    /// Makes `node`'s new session the one its tunnels go to.
    pub fn attach(
        &self,
        node: &str,
        tx: mpsc::Sender<PlaneToNode>,
        supported: bool,
    ) -> Arc<NodeTunnels> {
        let tunnels = Arc::new(NodeTunnels {
            node: node.to_string(),
            supported,
            tx,
            next_id: AtomicU32::new(1),
            routes: Mutex::default(),
        });
        if let Some(old) = lock(&self.nodes).insert(node.to_string(), tunnels.clone()) {
            old.end_all();
        }
        tunnels
    }

    /// The session ended: its tunnels break.
    pub fn detach(&self, tunnels: &Arc<NodeTunnels>) {
        let mut nodes = lock(&self.nodes);
        if nodes
            .get(&tunnels.node)
            .is_some_and(|t| Arc::ptr_eq(t, tunnels))
        {
            nodes.remove(&tunnels.node);
        }
        drop(nodes);
        tunnels.end_all();
    }

    /// Tunnels open on all nodes.
    #[cfg(test)]
    fn open_tunnels(&self) -> usize {
        lock(&self.nodes)
            .values()
            .map(|n| lock(&n.routes).len())
            .sum()
    }

    async fn connect(&self, t: PodTarget) -> Result<PodStream, ApiError> {
        let node = lock(&self.nodes).get(&t.node).cloned().ok_or_else(|| {
            ApiError::new(
                502,
                "BadGateway",
                format!(
                    "node {:?} is not connected to the control plane: cannot reach pod {:?}",
                    t.node, t.pod
                ),
            )
        })?;
        if !node.supported {
            return Err(ApiError::new(
                502,
                "BadGateway",
                format!(
                    "node {:?} does not open connections to its pods (a hollow node, or a kernel before protocol 5)",
                    t.node
                ),
            ));
        }
        let (answer, opened) = oneshot::channel();
        let id = {
            let mut routes = lock(&node.routes);
            if routes.len() >= MAX_TUNNELS {
                return Err(ApiError::new(
                    429,
                    "TooManyRequests",
                    format!(
                        "node {:?} already carries {MAX_TUNNELS} connections to its pods; try again later",
                        t.node
                    ),
                ));
            }
            let mut id = node.next_id.fetch_add(1, Ordering::Relaxed);
            while routes.contains_key(&id) {
                id = node.next_id.fetch_add(1, Ordering::Relaxed);
            }
            routes.insert(id, Route::Opening(answer));
            id
        };
        let open = frame(
            id,
            TunnelFrame::Open {
                address: t.address.clone(),
                port: t.port,
            },
        );
        if node.tx.try_send(open).is_err() {
            lock(&node.routes).remove(&id);
            return Err(ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {:?} is not reading its connection", t.node),
            ));
        }
        let failed = |code, reason, message: String| {
            Err(ApiError::new(
                code,
                reason,
                format!(
                    "error connecting to pod {:?} port {}: {message}",
                    t.pod, t.port
                ),
            ))
        };
        match tokio::time::timeout(OPEN_TIMEOUT, opened).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err((error, message)))) => {
                let code = match error {
                    TunnelError::Busy => 429,
                    _ => 502,
                };
                let reason = if code == 429 {
                    "TooManyRequests"
                } else {
                    "BadGateway"
                };
                return failed(code, reason, message);
            }
            Ok(Err(_)) => {
                return failed(502, "BadGateway", format!("node {:?} disconnected", t.node));
            }
            Err(_) => {
                lock(&node.routes).remove(&id);
                let _ = node.tx.try_send(frame(id, TunnelFrame::Reset));
                return failed(
                    504,
                    "Timeout",
                    format!("node {:?} did not answer within {OPEN_TIMEOUT:?}", t.node),
                );
            }
        }
        Ok(node.start(id))
    }
}

impl PodConnector for TunnelRouter {
    fn connect(
        &self,
        target: PodTarget,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<PodStream, ApiError>> + Send + '_>> {
        Box::pin(TunnelRouter::connect(self, target))
    }
}

impl NodeTunnels {
    /// The node opened `id`: the caller's end, with the tasks that move
    /// the other end's bytes.
    fn start(self: &Arc<Self>, id: TunnelId) -> PodStream {
        let (caller, ours) = tokio::io::duplex(TUNNEL_WINDOW as usize);
        let (frames_tx, frames) = mpsc::unbounded_channel();
        let unacked = Arc::new(AtomicU32::new(0));
        let credit = Arc::new(Semaphore::new(TUNNEL_WINDOW as usize));
        lock(&self.routes).insert(
            id,
            Route::Open {
                frames: frames_tx,
                unacked: unacked.clone(),
                credit: credit.clone(),
            },
        );
        let (from_caller, to_caller) = tokio::io::split(ours);
        let this = self.clone();
        tokio::spawn(async move {
            let down = this.clone().downstream(id, frames, to_caller, unacked);
            let up = this.clone().upstream(id, from_caller, credit);
            tokio::pin!(down, up);
            let (mut down_done, mut up_done) = (false, false);
            // A reset either way ends both directions.
            let orderly = loop {
                tokio::select! {
                    r = &mut down, if !down_done => match r {
                        Ok(()) => down_done = true,
                        Err(()) => break false,
                    },
                    r = &mut up, if !up_done => match r {
                        Ok(()) => up_done = true,
                        Err(()) => break false,
                    },
                }
                if down_done && up_done {
                    break true;
                }
            };
            if !orderly {
                this.reset(id);
            }
            this.forget(id);
        });
        caller
    }

    /// The node's bytes to the caller, acknowledged once taken.
    async fn downstream(
        self: Arc<Self>,
        id: TunnelId,
        mut frames: mpsc::UnboundedReceiver<TunnelFrame>,
        mut to_caller: tokio::io::WriteHalf<tokio::io::DuplexStream>,
        unacked: Arc<AtomicU32>,
    ) -> Result<(), ()> {
        while let Some(f) = frames.recv().await {
            match f {
                TunnelFrame::Data(data) => {
                    if to_caller.write_all(&data).await.is_err() {
                        return Err(()); // the caller is gone
                    }
                    let n = data.len() as u32;
                    unacked.fetch_sub(n, Ordering::AcqRel);
                    let ack = frame(id, TunnelFrame::Ack { bytes: n });
                    if self.tx.send(ack).await.is_err() {
                        return Err(());
                    }
                }
                TunnelFrame::Eof => {
                    let _ = to_caller.shutdown().await;
                    return Ok(());
                }
                _ => return Err(()),
            }
        }
        Err(()) // the route went away: a reset or the session's end
    }

    /// The caller's bytes to the node, within the node's credit.
    async fn upstream(
        self: Arc<Self>,
        id: TunnelId,
        mut from_caller: tokio::io::ReadHalf<tokio::io::DuplexStream>,
        credit: Arc<Semaphore>,
    ) -> Result<(), ()> {
        let mut buf = vec![0u8; MAX_TUNNEL_CHUNK];
        loop {
            // At least one byte of credit, then as much as is free.
            let Ok(first) = credit.acquire().await else {
                return Err(());
            };
            first.forget();
            let extra = credit
                .available_permits()
                .min(MAX_TUNNEL_CHUNK - 1)
                .try_into()
                .unwrap_or(0);
            let more = credit.try_acquire_many(extra).map(|p| {
                p.forget();
                extra as usize
            });
            let room = 1 + more.unwrap_or(0);
            let n = match from_caller.read(&mut buf[..room]).await {
                Ok(n) => n,
                Err(_) => return Err(()),
            };
            if n < room {
                credit.add_permits(room - n);
            }
            let f = if n == 0 {
                TunnelFrame::Eof
            } else {
                TunnelFrame::Data(buf[..n].to_vec())
            };
            if self.tx.send(frame(id, f)).await.is_err() {
                return Err(());
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    fn reset(&self, id: TunnelId) {
        if lock(&self.routes).remove(&id).is_some() {
            let _ = self.tx.try_send(frame(id, TunnelFrame::Reset));
        }
    }

    fn forget(&self, id: TunnelId) {
        lock(&self.routes).remove(&id);
    }

    fn end_all(&self) {
        lock(&self.routes).clear();
    }

    /// Routes one of the node's tunnel frames. Returns a frame for the
    /// node: a `Reset` for a tunnel that is gone or broke the rules.
    pub fn on_frame(&self, id: TunnelId, f: TunnelFrame) -> Option<PlaneToNode> {
        let mut routes = lock(&self.routes);
        let reset = Some(frame(id, TunnelFrame::Reset));
        match (routes.get(&id), f) {
            (None, TunnelFrame::Reset | TunnelFrame::Failed { .. }) => None,
            (None, _) => reset,
            (Some(Route::Opening(_)), f @ (TunnelFrame::Opened | TunnelFrame::Failed { .. })) => {
                let Some(Route::Opening(answer)) = routes.remove(&id) else {
                    unreachable!()
                };
                let result = match f {
                    TunnelFrame::Failed { error, message } => Err((error, message)),
                    _ => Ok(()),
                };
                // A caller that gave up: the tunnel is not wanted.
                let opened = result.is_ok();
                if answer.send(result).is_err() && opened {
                    return reset;
                }
                None
            }
            (Some(Route::Open { credit, .. }), TunnelFrame::Ack { bytes }) => {
                // Credit never exceeds the window, whatever the node says.
                let room =
                    TUNNEL_WINDOW as usize - credit.available_permits().min(TUNNEL_WINDOW as usize);
                credit.add_permits((bytes as usize).min(room));
                None
            }
            (
                Some(Route::Open {
                    frames, unacked, ..
                }),
                f @ (TunnelFrame::Data(_) | TunnelFrame::Eof),
            ) => {
                let len = match &f {
                    TunnelFrame::Data(d) => d.len() as u32,
                    _ => 0,
                };
                let within = unacked.fetch_add(len, Ordering::AcqRel) + len <= TUNNEL_WINDOW;
                if within && frames.send(f).is_ok() {
                    return None;
                }
                routes.remove(&id);
                reset
            }
            // A reset, or a frame only the plane sends: the tunnel is over
            // (dropping the route ends its tasks).
            (Some(_), TunnelFrame::Reset) => {
                routes.remove(&id);
                None
            }
            (Some(_), _) => {
                routes.remove(&id);
                reset
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(node: &str) -> PodTarget {
        PodTarget {
            node: node.into(),
            namespace: "default".into(),
            pod: "web".into(),
            address: "10.244.1.5".into(),
            port: 8080,
        }
    }

    /// What the router asked of the node: the tunnel id and the frame.
    async fn next(rx: &mut mpsc::Receiver<PlaneToNode>) -> (TunnelId, TunnelFrame) {
        match rx.recv().await {
            Some(PlaneToNode::Tunnel { tunnel, frame }) => (tunnel, frame),
            other => panic!("not a tunnel frame: {other:?}"),
        }
    }

    #[tokio::test]
    async fn bytes_flow_both_ways_with_credit_and_close_in_order() {
        let router = Arc::new(TunnelRouter::default());
        let e = router.connect(target("n1")).await.unwrap_err();
        assert_eq!(e.code, 502, "{e:?}");

        let (tx, mut to_node) = mpsc::channel(64);
        let node = router.attach("n1", tx, true);
        let r = router.clone();
        let connecting = tokio::spawn(async move { r.connect(target("n1")).await });
        let (id, open) = next(&mut to_node).await;
        assert_eq!(
            open,
            TunnelFrame::Open {
                address: "10.244.1.5".into(),
                port: 8080
            }
        );
        assert_eq!(node.on_frame(id, TunnelFrame::Opened), None);
        let mut stream = connecting.await.unwrap().unwrap();

        // Caller → node.
        stream.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let (_, data) = next(&mut to_node).await;
        assert_eq!(data, TunnelFrame::Data(b"GET / HTTP/1.1\r\n\r\n".to_vec()));
        // Node → caller, acknowledged once read into the pipe.
        assert_eq!(
            node.on_frame(id, TunnelFrame::Data(b"HTTP/1.1 200".to_vec())),
            None
        );
        let mut buf = [0u8; 12];
        stream.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        assert_eq!(next(&mut to_node).await.1, TunnelFrame::Ack { bytes: 12 });
        // The node's end-of-stream reaches the caller; the caller's too.
        node.on_frame(id, TunnelFrame::Eof);
        assert_eq!(stream.read(&mut buf).await.unwrap(), 0);
        stream.shutdown().await.unwrap();
        assert_eq!(next(&mut to_node).await.1, TunnelFrame::Eof);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(router.open_tunnels(), 0, "both directions over: forgotten");
    }

    #[tokio::test]
    async fn the_plane_sends_no_more_than_the_nodes_credit() {
        let router = Arc::new(TunnelRouter::default());
        let (tx, mut to_node) = mpsc::channel(1024);
        let node = router.attach("n1", tx, true);
        let r = router.clone();
        let connecting = tokio::spawn(async move { r.connect(target("n1")).await });
        let (id, _) = next(&mut to_node).await;
        node.on_frame(id, TunnelFrame::Opened);
        let mut stream = connecting.await.unwrap().unwrap();
        let writer = tokio::spawn(async move {
            let _ = stream
                .write_all(&vec![7u8; 3 * TUNNEL_WINDOW as usize])
                .await;
            stream
        });
        let mut sent = 0;
        while let Ok((_, TunnelFrame::Data(d))) =
            tokio::time::timeout(Duration::from_millis(200), next(&mut to_node)).await
        {
            sent += d.len();
        }
        assert_eq!(sent, TUNNEL_WINDOW as usize, "stops at the window");
        node.on_frame(id, TunnelFrame::Ack { bytes: 1000 });
        let (_, more) = next(&mut to_node).await;
        assert_eq!(more, TunnelFrame::Data(vec![7; 1000]));
        // An Ack beyond what was sent gives no extra credit.
        node.on_frame(id, TunnelFrame::Ack { bytes: u32::MAX });
        writer.abort();
    }

    #[tokio::test]
    async fn failures_and_node_misbehaviour_end_tunnels_with_reasons() {
        let router = Arc::new(TunnelRouter::default());
        let (tx, mut to_node) = mpsc::channel(64);
        let node = router.attach("n1", tx, true);
        // The node refuses: the caller learns why.
        let r = router.clone();
        let connecting = tokio::spawn(async move { r.connect(target("n1")).await });
        let (id, _) = next(&mut to_node).await;
        node.on_frame(
            id,
            TunnelFrame::Failed {
                error: TunnelError::Refused,
                message: "dial tcp 10.244.1.5:8080: connect: connection refused".into(),
            },
        );
        let e = connecting.await.unwrap().unwrap_err();
        assert_eq!(e.code, 502);
        assert!(e.message.contains("connection refused"), "{e:?}");

        // A node sending beyond its credit loses the tunnel.
        let r = router.clone();
        let connecting = tokio::spawn(async move { r.connect(target("n1")).await });
        let (id, _) = next(&mut to_node).await;
        node.on_frame(id, TunnelFrame::Opened);
        let mut stream = connecting.await.unwrap().unwrap();
        let too_much = vec![0u8; TUNNEL_WINDOW as usize + 1];
        assert_eq!(
            node.on_frame(id, TunnelFrame::Data(too_much)),
            Some(frame(id, TunnelFrame::Reset))
        );
        let mut buf = [0u8; 8];
        assert_eq!(
            stream.read(&mut buf).await.unwrap_or(0),
            0,
            "the caller's stream ends"
        );
        // Frames for unknown tunnels are answered with a reset.
        assert_eq!(
            node.on_frame(999, TunnelFrame::Data(vec![1])),
            Some(frame(999, TunnelFrame::Reset))
        );

        // The session ends: a later connect is refused at once.
        router.detach(&node);
        assert_eq!(router.connect(target("n1")).await.unwrap_err().code, 502);
    }
}
