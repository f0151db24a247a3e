//! The node's end of the plane's tunnels: `kubectl port-forward` and the
//! API server's `pods/proxy` reach a pod over the node's one connection to
//! the control plane, so the node needs no inbound port.
//!
//! A [`TunnelFrame::Open`] becomes a connection from the node's address to
//! the pod, made by the driver's [`PodDialer`] (the kernel splices it in
//! memory to the pod's listener); [`Tunnels::pump`] then moves bytes
//! between that [`Splice`] and `Data` frames, passing on half-closes and
//! resets.
//!
//! Invariants:
//! - each tunnel holds at most [`TUNNEL_WINDOW`] bytes from the plane (the
//!   plane's credit; a plane that sends more resets the tunnel) and has at
//!   most [`TUNNEL_WINDOW`] bytes in flight to it, so [`MAX_TUNNELS`]
//!   bound what tunnels make the node hold;
//! - a pod that stops reading holds up only its own tunnel: bytes wait in
//!   the plane until the node acknowledges them;
//! - when the connection to the plane ends, every tunnel resets.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::ToString as _;
use alloc::vec;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};
use core::task::{Poll, Waker};

use skiff_node_proto::{
    MAX_TUNNEL_CHUNK, MAX_TUNNELS, NodeToPlane, TUNNEL_WINDOW, TunnelError, TunnelFrame, TunnelId,
};

use crate::splice::Splice;

/// How the driver connects to its pods.
pub trait PodDialer: Send {
    /// A connection from the node's address to `to`, an address of one of
    /// this node's pods (or the node's own); the error says why not, the
    /// message is for the user.
    fn dial(&mut self, to: SocketAddrV4) -> Result<Splice, (TunnelError, alloc::string::String)>;

    /// Bytes moved on a dialled connection: the pods' runner should look.
    fn activity(&mut self) {}
}

/// One open tunnel.
struct Tunnel {
    conn: Splice,
    /// Bytes from the plane not yet taken by the pod.
    inbound: VecDeque<u8>,
    /// The plane sent `Eof`: shut the pod's receiving side once drained.
    inbound_eof: bool,
    shut: bool,
    /// Bytes taken by the pod since the last `Ack`.
    to_ack: u32,
    /// Bytes sent to the plane and not yet acknowledged.
    in_flight: u32,
    /// The pod's end-of-stream was passed on.
    eof_sent: bool,
}

/// The tunnels of one connection to the plane.
#[derive(Default)]
pub struct Tunnels {
    open: BTreeMap<TunnelId, Tunnel>,
    dialer: Option<Box<dyn PodDialer>>,
    /// Tunnels opened since boot.
    pub opened: u64,
}

impl core::fmt::Debug for Tunnels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tunnels")
            .field("open", &self.open.len())
            .field("dialer", &self.dialer.is_some())
            .finish()
    }
}

fn frame(tunnel: TunnelId, frame: TunnelFrame) -> NodeToPlane {
    NodeToPlane::Tunnel { tunnel, frame }
}

impl Tunnels {
    pub fn set_dialer(&mut self, dialer: Box<dyn PodDialer>) {
        self.dialer = Some(dialer);
    }

    pub fn can_dial(&self) -> bool {
        self.dialer.is_some()
    }

    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Takes a frame from the plane; returns the answers.
    pub fn handle(&mut self, tunnel: TunnelId, f: TunnelFrame) -> Vec<NodeToPlane> {
        match f {
            TunnelFrame::Open { address, port } => vec![self.open(tunnel, &address, port)],
            TunnelFrame::Data(data) => {
                let Some(t) = self.open.get_mut(&tunnel) else {
                    return Vec::new(); // reset already; the plane will learn
                };
                if t.inbound_eof || t.inbound.len() + data.len() > TUNNEL_WINDOW as usize {
                    // The plane broke its credit: this tunnel cannot go on.
                    self.open.remove(&tunnel);
                    return vec![frame(tunnel, TunnelFrame::Reset)];
                }
                t.inbound.extend(data);
                Vec::new()
            }
            TunnelFrame::Ack { bytes } => {
                if let Some(t) = self.open.get_mut(&tunnel) {
                    t.in_flight = t.in_flight.saturating_sub(bytes);
                }
                Vec::new()
            }
            TunnelFrame::Eof => {
                if let Some(t) = self.open.get_mut(&tunnel) {
                    t.inbound_eof = true;
                }
                Vec::new()
            }
            // Dropping the end without a shutdown resets the pod's side.
            TunnelFrame::Reset => {
                self.open.remove(&tunnel);
                Vec::new()
            }
            // Only the node sends these.
            TunnelFrame::Opened | TunnelFrame::Failed { .. } => match self.open.remove(&tunnel) {
                Some(_) => vec![frame(tunnel, TunnelFrame::Reset)],
                None => Vec::new(),
            },
        }
    }

    fn open(&mut self, tunnel: TunnelId, address: &str, port: u16) -> NodeToPlane {
        let failed = |error, message: &str| {
            frame(
                tunnel,
                TunnelFrame::Failed {
                    error,
                    message: message.to_string(),
                },
            )
        };
        if self.open.len() >= MAX_TUNNELS || self.open.contains_key(&tunnel) {
            return failed(
                TunnelError::Busy,
                &alloc::format!("the node has {MAX_TUNNELS} tunnels open"),
            );
        }
        let Some(dialer) = self.dialer.as_mut() else {
            return failed(
                TunnelError::Unsupported,
                "this node does not open connections to its pods",
            );
        };
        let Ok(ip) = address.parse::<Ipv4Addr>() else {
            return failed(
                TunnelError::NotThisNode,
                &alloc::format!("{address:?} is not an IPv4 address"),
            );
        };
        match dialer.dial(SocketAddrV4::new(ip, port)) {
            Ok(conn) => {
                self.opened += 1;
                self.open.insert(
                    tunnel,
                    Tunnel {
                        conn,
                        inbound: VecDeque::new(),
                        inbound_eof: false,
                        shut: false,
                        to_ack: 0,
                        in_flight: 0,
                        eof_sent: false,
                    },
                );
                frame(tunnel, TunnelFrame::Opened)
            }
            Err((error, message)) => failed(error, &message),
        }
    }

    /// Moves what it can both ways; returns the frames for the plane.
    pub fn pump(&mut self) -> Vec<NodeToPlane> {
        let mut out = Vec::new();
        let mut moved = false;
        let mut buf = [0u8; MAX_TUNNEL_CHUNK];
        self.open.retain(|&id, t| {
            let keep = t.pump(id, &mut buf, &mut out, &mut moved);
            if !keep {
                moved = true;
            }
            keep
        });
        if moved && let Some(d) = self.dialer.as_mut() {
            d.activity();
        }
        out
    }

    /// Ready when a tunnel has something to move (bytes or an end from a
    /// pod, or room for bytes waiting for one); else `waker` is woken when
    /// one has.
    pub fn poll_ready(&self, waker: &Waker) -> Poll<()> {
        let ready = self.open.values().any(|t| {
            (t.wants_recv() && t.conn.readable()) || (!t.inbound.is_empty() && t.conn.writable())
        });
        if ready {
            return Poll::Ready(());
        }
        for t in self.open.values() {
            if t.wants_recv() {
                t.conn.register_recv_waker(waker);
            }
            if !t.inbound.is_empty() {
                t.conn.register_send_waker(waker);
            }
        }
        Poll::Pending
    }

    /// The connection to the plane ended: every tunnel resets.
    pub fn reset_all(&mut self) {
        self.open.clear();
        if let Some(d) = self.dialer.as_mut() {
            d.activity();
        }
    }
}

impl Tunnel {
    fn wants_recv(&self) -> bool {
        !self.eof_sent && self.in_flight < TUNNEL_WINDOW
    }

    /// One round; false when the tunnel is over (both directions ended, or
    /// a reset).
    fn pump(
        &mut self,
        id: TunnelId,
        buf: &mut [u8],
        out: &mut Vec<NodeToPlane>,
        moved: &mut bool,
    ) -> bool {
        // Plane → pod.
        while !self.inbound.is_empty() {
            let (front, _) = self.inbound.as_slices();
            match self.conn.send(front) {
                Ok(Some(n)) => {
                    self.inbound.drain(..n);
                    self.to_ack += n as u32;
                    *moved = true;
                }
                Ok(None) => break,
                Err(_) => {
                    out.push(frame(id, TunnelFrame::Reset));
                    return false;
                }
            }
        }
        if self.inbound.is_empty() && self.inbound_eof && !self.shut {
            self.conn.shutdown();
            self.shut = true;
            *moved = true;
        }
        if self.to_ack > 0 {
            out.push(frame(
                id,
                TunnelFrame::Ack {
                    bytes: core::mem::take(&mut self.to_ack),
                },
            ));
        }
        // Pod → plane, within the plane's credit.
        while self.wants_recv() {
            let room = (TUNNEL_WINDOW - self.in_flight) as usize;
            let want = room.min(buf.len());
            match self.conn.recv(&mut buf[..want]) {
                Ok(Some(0)) => {
                    self.eof_sent = true;
                    out.push(frame(id, TunnelFrame::Eof));
                }
                Ok(Some(n)) => {
                    self.in_flight += n as u32;
                    *moved = true;
                    out.push(frame(id, TunnelFrame::Data(buf[..n].to_vec())));
                }
                Ok(None) => break,
                Err(_) => {
                    out.push(frame(id, TunnelFrame::Reset));
                    return false;
                }
            }
        }
        // Over when both sides are done: dropping a shut end is an
        // orderly close.
        !(self.eof_sent && self.shut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;
    use alloc::sync::Arc;

    /// A node with one "pod" listening at 10.244.0.5:8080: dialled
    /// connections' server ends land in `accepted`.
    struct FakePods {
        accepted: Arc<spin::Mutex<Vec<Splice>>>,
    }

    const POD: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 244, 0, 5), 8080);
    const NODE: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 40000);

    impl PodDialer for FakePods {
        fn dial(&mut self, to: SocketAddrV4) -> Result<Splice, (TunnelError, String)> {
            if *to.ip() != *POD.ip() {
                return Err((TunnelError::NotThisNode, "not here".into()));
            }
            if to.port() != POD.port() {
                return Err((TunnelError::Refused, "connection refused".into()));
            }
            let (client, server) = Splice::pair(NODE, to, 8 << 10);
            self.accepted.lock().push(server);
            Ok(client)
        }
    }

    fn tunnels() -> (Tunnels, Arc<spin::Mutex<Vec<Splice>>>) {
        let accepted = Arc::new(spin::Mutex::new(Vec::new()));
        let mut t = Tunnels::default();
        t.set_dialer(Box::new(FakePods {
            accepted: accepted.clone(),
        }));
        (t, accepted)
    }

    fn open(t: &mut Tunnels, id: TunnelId, port: u16) -> Vec<NodeToPlane> {
        t.handle(
            id,
            TunnelFrame::Open {
                address: "10.244.0.5".into(),
                port,
            },
        )
    }

    fn frames(out: Vec<NodeToPlane>) -> Vec<TunnelFrame> {
        out.into_iter()
            .map(|m| match m {
                NodeToPlane::Tunnel { frame, .. } => frame,
                m => panic!("not a tunnel frame: {m:?}"),
            })
            .collect()
    }

    fn data(out: &[TunnelFrame]) -> Vec<u8> {
        out.iter()
            .flat_map(|f| match f {
                TunnelFrame::Data(d) => d.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn bytes_flow_both_ways_and_half_closes_pass_through() {
        let (mut t, pods) = tunnels();
        assert_eq!(frames(open(&mut t, 1, 8080)), [TunnelFrame::Opened]);
        let pod = pods.lock().pop().unwrap();
        assert!(t.handle(1, TunnelFrame::Data(b"GET /".to_vec())).is_empty());
        assert!(t.handle(1, TunnelFrame::Eof).is_empty());
        // The pod gets the bytes, then end-of-stream; the plane its credit back.
        assert_eq!(frames(t.pump()), [TunnelFrame::Ack { bytes: 5 }]);
        let mut buf = [0u8; 64];
        assert_eq!(pod.recv(&mut buf), Ok(Some(5)));
        assert_eq!(&buf[..5], b"GET /");
        assert_eq!(pod.recv(&mut buf), Ok(Some(0)));
        // The pod answers and closes: data, then Eof, and the tunnel is over.
        pod.send(b"200 OK").unwrap();
        pod.shutdown();
        assert_eq!(
            frames(t.pump()),
            [TunnelFrame::Data(b"200 OK".to_vec()), TunnelFrame::Eof]
        );
        assert!(t.is_empty());
    }

    #[test]
    fn the_node_sends_no_more_than_the_window_until_acknowledged() {
        let (mut t, pods) = tunnels();
        open(&mut t, 1, 8080);
        let pod = pods.lock().pop().unwrap();
        let stream: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut written, mut sent) = (0, Vec::new());
        // The pod writes until held up; the splice holds 8 KiB at a time.
        loop {
            let end = (written + 4096).min(stream.len());
            match pod.send(&stream[written..end]).unwrap() {
                Some(n) => written += n,
                None => {
                    let more = data(&frames(t.pump()));
                    if more.is_empty() {
                        break;
                    }
                    sent.extend(more);
                }
            }
        }
        assert_eq!(sent.len(), TUNNEL_WINDOW as usize, "stops at the window");
        assert!(
            pod.send(&[0; 4096]).unwrap().is_none(),
            "the pod is held up"
        );
        t.handle(1, TunnelFrame::Ack { bytes: 16 << 10 });
        sent.extend(data(&frames(t.pump())));
        let window = TUNNEL_WINDOW as usize;
        assert!(sent.len() > window && sent.len() <= window + (16 << 10));
        assert_eq!(sent[..], stream[..sent.len()]);
    }

    #[test]
    fn a_plane_beyond_its_credit_resets_the_tunnel_and_the_pod_sees_it() {
        let (mut t, pods) = tunnels();
        open(&mut t, 1, 8080);
        let pod = pods.lock().pop().unwrap();
        let too_much = vec![0u8; TUNNEL_WINDOW as usize + 1];
        assert_eq!(
            frames(t.handle(1, TunnelFrame::Data(too_much))),
            [TunnelFrame::Reset]
        );
        assert!(t.is_empty());
        assert!(pod.recv(&mut [0; 8]).is_err(), "the pod is reset");
    }

    #[test]
    fn failures_say_why() {
        let (mut t, _) = tunnels();
        let refused = frames(open(&mut t, 1, 9));
        assert!(matches!(
            refused[..],
            [TunnelFrame::Failed {
                error: TunnelError::Refused,
                ..
            }]
        ));
        let elsewhere = frames(t.handle(
            2,
            TunnelFrame::Open {
                address: "10.244.7.7".into(),
                port: 8080,
            },
        ));
        assert!(matches!(
            elsewhere[..],
            [TunnelFrame::Failed {
                error: TunnelError::NotThisNode,
                ..
            }]
        ));
        for id in 0..MAX_TUNNELS as u32 {
            assert_eq!(frames(open(&mut t, 10 + id, 8080)), [TunnelFrame::Opened]);
        }
        assert!(matches!(
            frames(open(&mut t, 99, 8080))[..],
            [TunnelFrame::Failed {
                error: TunnelError::Busy,
                ..
            }]
        ));
        let mut hollow = Tunnels::default();
        assert!(matches!(
            frames(open(&mut hollow, 1, 8080))[..],
            [TunnelFrame::Failed {
                error: TunnelError::Unsupported,
                ..
            }]
        ));
    }

    #[test]
    fn a_reset_either_way_ends_the_tunnel() {
        let (mut t, pods) = tunnels();
        open(&mut t, 1, 8080);
        open(&mut t, 2, 8080);
        let second = pods.lock().pop().unwrap();
        let first = pods.lock().pop().unwrap();
        // The plane resets tunnel 1: its pod sees a reset.
        t.handle(1, TunnelFrame::Reset);
        assert!(first.recv(&mut [0; 8]).is_err());
        // Tunnel 2's pod goes away without a close: the plane gets a Reset.
        drop(second);
        assert_eq!(frames(t.pump()), [TunnelFrame::Reset]);
        assert!(t.is_empty());
    }
}
