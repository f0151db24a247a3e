//! `pods/portforward` (`kubectl port-forward`): kube's port-forward
//! protocol (`portforward.k8s.io`) over SPDY/3.1 after an HTTP upgrade.
//!
//! The client opens a pair of streams per forwarded connection, both
//! naming the `port` and a `requestid`: an error stream (the client closes
//! its side at once and reads ours to its end: a message there is the
//! connection's failure) and a data stream (the connection's bytes, both
//! ways, half-closes included). Each complete pair becomes a
//! [`PodStream`] from the [`PodConnector`]; when the connection ends, the
//! error stream is closed too, which the client waits for.
//!
//! kubectl 1.31+ first tries the same protocol tunnelled in WebSocket
//! (`SPDY/3.1+portforward.k8s.io`); that upgrade is refused with 400, on
//! which kubectl falls back to SPDY itself.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::{Bytes, BytesMut};
use hyper_util::rt::TokioIo;
use skiff_spdy::{Decoder, Encoder, Frame, Limits, status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{PodConnector, PodStream, PodTarget, placed_pod};
use crate::server::State;
use crate::status::{ApiError, ApiResult};

/// The one sub-protocol spoken.
const PROTOCOL: &str = "portforward.k8s.io";
/// Forwarded connections open at once on one port-forward session.
const MAX_PAIRS: usize = 32;
/// A stream's inbound frames waiting for the pod: the reader waits (and
/// TCP pushes back on the client) beyond this.
const INBOUND_FRAMES: usize = 8;
/// Bytes read from the pod per data frame.
const DATA_FRAME: usize = 32 << 10;

/// Answers the upgrade and serves the session in the background.
pub async fn serve(
    state: &State,
    ns: &str,
    name: &str,
    req: Request<Body>,
) -> ApiResult<Response<Body>> {
    check_upgrade(
        &header_values(&req, "upgrade"),
        &header_values(&req, "x-stream-protocol-version"),
    )?;
    let (_, node, address) = placed_pod(state, ns, name).await?;
    let connector = state.pod_connector()?;
    let pod = PodTarget {
        node,
        namespace: ns.to_string(),
        pod: name.to_string(),
        address,
        port: 0,
    };
    let upgraded = hyper::upgrade::on(req);
    tokio::spawn(async move {
        match upgraded.await {
            Ok(io) => session(TokioIo::new(io), connector, pod).await,
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    Ok(Response::builder()
        .status(101)
        .header("connection", "Upgrade")
        .header("upgrade", "SPDY/3.1")
        .header("x-stream-protocol-version", PROTOCOL)
        .body(Body::empty())
        .expect("static response parts"))
}

fn header_values(req: &Request<Body>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .collect()
}

/// The upgrade kubectl asks for: SPDY/3.1 speaking `portforward.k8s.io`.
fn check_upgrade(upgrade: &[String], offered: &[String]) -> ApiResult<()> {
    if upgrade.iter().any(|u| u.eq_ignore_ascii_case("websocket")) {
        return Err(ApiError::bad_request(
            "port-forward over WebSocket is not supported: use SPDY/3.1",
        ));
    }
    if !upgrade.iter().any(|u| u.eq_ignore_ascii_case("SPDY/3.1")) {
        return Err(ApiError::bad_request(
            "port-forward needs an upgrade to SPDY/3.1 (Upgrade: SPDY/3.1)",
        ));
    }
    if !offered.is_empty() && !offered.iter().any(|p| p == PROTOCOL) {
        return Err(ApiError::new(
            403,
            "Forbidden",
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [{PROTOCOL:?}]"
            ),
        ));
    }
    Ok(())
}

/// The streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<u32>,
    data: Option<u32>,
    port: Option<u16>,
}

/// A stream's bytes from the client: `Some(bytes)`, then `None` at its FIN;
/// the channel closing without a FIN is a reset.
type Inbound = mpsc::Sender<Option<Bytes>>;

/// One upgraded connection: decode the client's frames, pair streams, and
/// write every outgoing frame through one encoder.
async fn session<IO>(io: IO, connector: Arc<dyn PodConnector>, pod: PodTarget)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (out, mut outgoing) = mpsc::channel::<Frame>(64);
    let writer = tokio::spawn(async move {
        let mut enc = Encoder::new();
        let mut buf = BytesMut::new();
        while let Some(f) = outgoing.recv().await {
            enc.encode(&f, &mut buf);
            while let Ok(f) = outgoing.try_recv() {
                enc.encode(&f, &mut buf);
            }
            if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            buf.clear();
        }
        let _ = wr.shutdown().await;
    });
    let mut dec = Decoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(16 << 10);
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut inbound: HashMap<u32, Inbound> = HashMap::new();
    let why = 'read: loop {
        loop {
            let frame = match dec.decode(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'read Some(e.to_string()),
            };
            match frame {
                Frame::SynStream {
                    stream_id, headers, ..
                } => {
                    let _ = out
                        .send(Frame::SynReply {
                            stream_id,
                            fin: false,
                            headers: vec![],
                        })
                        .await;
                    if let Err(status) = open_stream(
                        stream_id,
                        &headers,
                        &mut pairs,
                        &mut inbound,
                        &connector,
                        &pod,
                        &out,
                    ) {
                        let _ = out.send(Frame::RstStream { stream_id, status }).await;
                    }
                }
                Frame::Data {
                    stream_id,
                    fin,
                    data,
                } => {
                    let Some(tx) = inbound.get(&stream_id) else {
                        continue; // the error stream's close, or a stream gone
                    };
                    if !data.is_empty() && tx.send(Some(data)).await.is_err() {
                        inbound.remove(&stream_id);
                        continue;
                    }
                    if fin {
                        let _ = tx.send(None).await;
                        inbound.remove(&stream_id);
                    }
                }
                // Dropping its sender tells the connection's task.
                Frame::RstStream { stream_id, .. } => {
                    inbound.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    let _ = out.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break 'read None,
                Frame::SynReply { .. }
                | Frame::Settings
                | Frame::Headers { .. }
                | Frame::WindowUpdate { .. }
                | Frame::Unknown { .. } => {}
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break None,
            Ok(_) => {}
        }
    };
    if let Some(why) = why {
        tracing::debug!(pod = %pod.pod, error = %why, "port-forward: bad frame; closing");
        let _ = out
            .send(Frame::GoAway {
                last_stream_id: 0,
                status: 1,
            })
            .await;
    }
    // Connections end with their inbound senders; the writer with `out`.
    drop(inbound);
    drop(out);
    let _ = writer.await;
}

/// A new stream of the client's: pairs it, and starts the connection once
/// both of a pair are there. `Err`: reset it with this status.
fn open_stream(
    stream_id: u32,
    headers: &[(String, String)],
    pairs: &mut HashMap<String, Pair>,
    inbound: &mut HashMap<u32, Inbound>,
    connector: &Arc<dyn PodConnector>,
    pod: &PodTarget,
    out: &mpsc::Sender<Frame>,
) -> Result<(), u32> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let port = get("port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    // Clients before request ids paired a data stream with the error
    // stream two ids before it.
    let is_error = match get("streamtype") {
        Some("error") => true,
        Some("data") => false,
        _ => return Err(status::PROTOCOL_ERROR),
    };
    let request = match get("requestid") {
        Some(id) => id.to_string(),
        None if is_error => stream_id.to_string(),
        None => stream_id.saturating_sub(2).to_string(),
    };
    if !pairs.contains_key(&request) && pairs.len() >= MAX_PAIRS {
        return Err(status::REFUSED_STREAM);
    }
    let pair = pairs.entry(request.clone()).or_default();
    let slot = if is_error {
        &mut pair.error
    } else {
        &mut pair.data
    };
    if slot.replace(stream_id).is_some() {
        return Err(status::PROTOCOL_ERROR);
    }
    pair.port = pair.port.or(port);
    let (Some(error), Some(data)) = (pair.error, pair.data) else {
        return Ok(());
    };
    let pair = pairs.remove(&request).expect("just seen");
    let (tx, rx) = mpsc::channel(INBOUND_FRAMES);
    inbound.insert(data, tx);
    let target = pair.port.map(|port| PodTarget {
        port,
        ..pod.clone()
    });
    tokio::spawn(connection(
        connector.clone(),
        target,
        error,
        data,
        rx,
        out.clone(),
    ));
    Ok(())
}

/// One forwarded connection: the pod's stream joined to the data stream;
/// a failure is written on the error stream.
async fn connection(
    connector: Arc<dyn PodConnector>,
    target: Option<PodTarget>,
    error: u32,
    data: u32,
    rx: mpsc::Receiver<Option<Bytes>>,
    out: mpsc::Sender<Frame>,
) {
    let send = |stream_id, fin, data: Bytes| {
        out.send(Frame::Data {
            stream_id,
            fin,
            data,
        })
    };
    let result = match &target {
        None => Err("no valid port was given".to_string()),
        Some(t) => match connector.connect(t.clone()).await {
            Ok(stream) => relay(stream, data, rx, &out).await,
            Err(e) => Err(e.message),
        },
    };
    match result {
        Ok(()) => {}
        Err(message) => {
            let port = target.map_or(0, |t| t.port);
            let text = format!("error forwarding port {port} to pod: {message}");
            let _ = send(error, false, Bytes::from(text)).await;
            let _ = out
                .send(Frame::RstStream {
                    stream_id: data,
                    status: status::CANCEL,
                })
                .await;
        }
    }
    // The client waits for the error stream's end before it moves on.
    let _ = send(error, true, Bytes::new()).await;
}

/// Moves bytes both ways until both directions ended or the client reset
/// the stream (`Ok`: kubectl resets a stream once our side ended, to drop
/// what it has not sent), or the pod's side broke.
async fn relay(
    stream: PodStream,
    data: u32,
    mut rx: mpsc::Receiver<Option<Bytes>>,
    out: &mpsc::Sender<Frame>,
) -> Result<(), String> {
    let (mut from_pod, mut to_pod) = tokio::io::split(stream);
    let up = async {
        loop {
            match rx.recv().await {
                Some(Some(bytes)) => {
                    if to_pod.write_all(&bytes).await.is_err() {
                        return Err("the pod's connection broke".to_string());
                    }
                }
                Some(None) => {
                    let _ = to_pod.shutdown().await;
                    return Ok(true);
                }
                // Reset: the whole connection is over.
                None => return Ok(false),
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; DATA_FRAME];
        loop {
            let n = match from_pod.read(&mut buf).await {
                Ok(n) => n,
                Err(_) => return Err("the pod's connection broke".to_string()),
            };
            let f = Frame::Data {
                stream_id: data,
                fin: n == 0,
                data: Bytes::copy_from_slice(&buf[..n]),
            };
            if out.send(f).await.is_err() {
                return Err("the session ended".to_string());
            }
            if n == 0 {
                return Ok(());
            }
        }
    };
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            r = &mut up, if !up_done => {
                if !r? {
                    return Ok(()); // dropping the pod's stream ends it
                }
                up_done = true;
            }
            r = &mut down, if !down_done => { r?; down_done = true; }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A "pod" that echoes in upper case; refuses port 9.
    struct Echo {
        targets: Mutex<Vec<PodTarget>>,
    }

    impl PodConnector for Echo {
        fn connect(
            &self,
            target: PodTarget,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<PodStream, ApiError>> + Send + '_>>
        {
            Box::pin(async move {
                if target.port == 9 {
                    return Err(ApiError::new(502, "BadGateway", "connection refused"));
                }
                self.targets.lock().unwrap().push(target);
                let (ours, mut pod) = tokio::io::duplex(1024);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 256];
                    loop {
                        match pod.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                let up = buf[..n].to_ascii_uppercase();
                                if pod.write_all(&up).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                    let _ = pod.shutdown().await;
                });
                Ok(ours)
            })
        }
    }

    fn syn(stream_id: u32, kind: &str, port: &str, request: &str) -> Frame {
        Frame::SynStream {
            stream_id,
            associated_id: 0,
            priority: 0,
            fin: false,
            unidirectional: false,
            headers: vec![
                ("streamtype".into(), kind.into()),
                ("port".into(), port.into()),
                ("requestid".into(), request.into()),
            ],
        }
    }

    /// Runs a session over an in-memory pipe; the test is the client.
    struct Client {
        io: tokio::io::DuplexStream,
        enc: Encoder,
        dec: Decoder,
        buf: BytesMut,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let mut b = BytesMut::new();
            self.enc.encode(&f, &mut b);
            self.io.write_all(&b).await.unwrap();
        }

        async fn next(&mut self) -> Frame {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).unwrap() {
                    return f;
                }
                assert!(self.io.read_buf(&mut self.buf).await.unwrap() > 0, "closed");
            }
        }
    }

    fn start() -> (Client, Arc<Echo>) {
        let (client, server) = tokio::io::duplex(64 << 10);
        let echo = Arc::new(Echo {
            targets: Mutex::default(),
        });
        let pod = PodTarget {
            node: "n1".into(),
            namespace: "default".into(),
            pod: "web".into(),
            address: "10.244.1.5".into(),
            port: 0,
        };
        tokio::spawn(session(server, echo.clone(), pod));
        let client = Client {
            io: client,
            enc: Encoder::new(),
            dec: Decoder::new(Limits::default()),
            buf: BytesMut::new(),
        };
        (client, echo)
    }

    #[tokio::test]
    async fn a_pair_of_streams_forwards_a_connection_as_kubectl_opens_it() {
        let (mut c, echo) = start();
        c.send(syn(1, "error", "8080", "0")).await;
        assert!(matches!(
            c.next().await,
            Frame::SynReply { stream_id: 1, .. }
        ));
        // kubectl closes its side of the error stream at once.
        c.send(Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::new(),
        })
        .await;
        c.send(syn(3, "data", "8080", "0")).await;
        assert!(matches!(
            c.next().await,
            Frame::SynReply { stream_id: 3, .. }
        ));
        c.send(Frame::Ping { id: 5 }).await;
        assert_eq!(c.next().await, Frame::Ping { id: 5 });
        c.send(Frame::Data {
            stream_id: 3,
            fin: false,
            data: Bytes::from_static(b"hello"),
        })
        .await;
        assert_eq!(
            c.next().await,
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"HELLO")
            }
        );
        // The client's FIN reaches the pod, whose close ends the data
        // stream, then the error stream with no message.
        c.send(Frame::Data {
            stream_id: 3,
            fin: true,
            data: Bytes::new(),
        })
        .await;
        assert_eq!(
            c.next().await,
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new()
            }
        );
        assert_eq!(
            c.next().await,
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new()
            }
        );
        let t = echo.targets.lock().unwrap().pop().unwrap();
        assert_eq!(
            (t.address.as_str(), t.port, t.node.as_str()),
            ("10.244.1.5", 8080, "n1")
        );
    }

    #[tokio::test]
    async fn a_refused_connection_is_reported_on_the_error_stream() {
        let (mut c, _) = start();
        c.send(syn(1, "error", "9", "7")).await;
        c.next().await;
        c.send(syn(3, "data", "9", "7")).await;
        c.next().await;
        let Frame::Data {
            stream_id: 1,
            fin: false,
            data,
        } = c.next().await
        else {
            panic!("no error message")
        };
        let text = String::from_utf8(data.to_vec()).unwrap();
        assert!(
            text.contains("error forwarding port 9") && text.contains("connection refused"),
            "{text}"
        );
        assert!(matches!(
            c.next().await,
            Frame::RstStream { stream_id: 3, .. }
        ));
        assert_eq!(
            c.next().await,
            Frame::Data {
                stream_id: 1,
                fin: true,
                data: Bytes::new()
            }
        );
    }

    #[tokio::test]
    async fn malformed_streams_are_reset_and_garbage_ends_the_session() {
        let (mut c, _) = start();
        c.send(syn(1, "bogus", "80", "0")).await;
        c.next().await; // the reply
        assert!(matches!(
            c.next().await,
            Frame::RstStream {
                stream_id: 1,
                status: status::PROTOCOL_ERROR
            }
        ));
        c.io.write_all(&[0x80, 9, 0, 1, 0, 0, 0, 0]).await.unwrap();
        assert!(matches!(c.next().await, Frame::GoAway { .. }));
    }
}
