//! A node [`Host`] over the host's real network (loopback in tests), so
//! guests' sockets meet real peers: outbound TCP, listeners on container
//! ports, UDP and name lookup. Container ports are mapped to ephemeral host
//! ports ([`RealHost::port`] says which) so tests never collide.
//!
//! Simplifications a test can afford: a connect to loopback completes (or
//! is refused) inside `connect`, and lookups are answered inside `lookup`.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{
    Ipv4Addr, Shutdown as NetShutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream,
    ToSocketAddrs, UdpSocket,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use skiff_wasm::{ConnId, Host, LookupId, NetError, Shutdown, Stream, UdpId};

use super::Output;

/// Where a container port (TCP or UDP) really is on the host.
#[derive(Clone, Default)]
pub struct PortMap(Arc<Mutex<HashMap<u16, u16>>>);

impl PortMap {
    /// The host port the container's `port` is reachable on.
    pub fn get(&self, port: u16) -> Option<u16> {
        self.0.lock().unwrap().get(&port).copied()
    }
}

enum Conn {
    Open(TcpStream),
    /// A connect that failed, reported by `connect_status`.
    Failed(NetError),
}

pub struct RealHost {
    out: Output,
    start: Instant,
    listeners: HashMap<u16, (TcpListener, VecDeque<TcpStream>)>,
    udp_ports: Vec<u16>,
    conns: HashMap<u64, Conn>,
    udp: HashMap<u64, UdpSocket>,
    lookups: HashMap<u64, Result<Vec<Ipv4Addr>, NetError>>,
    next: u64,
    /// Container UDP ports bound so far, to their host ports.
    pub udp_map: PortMap,
}

impl RealHost {
    /// A host listening (on loopback) for each of `tcp_ports`, and letting
    /// the container bind each of `udp_ports`.
    pub fn new(tcp_ports: &[u16], udp_ports: &[u16]) -> (Box<Self>, Output, PortMap) {
        let out = Output::default();
        let map = PortMap::default();
        let mut listeners = HashMap::new();
        for &port in tcp_ports {
            let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listen");
            l.set_nonblocking(true).unwrap();
            map.0
                .lock()
                .unwrap()
                .insert(port, l.local_addr().unwrap().port());
            listeners.insert(port, (l, VecDeque::new()));
        }
        let host = Box::new(Self {
            out: out.clone(),
            start: Instant::now(),
            listeners,
            udp_ports: udp_ports.to_vec(),
            conns: HashMap::new(),
            udp: HashMap::new(),
            lookups: HashMap::new(),
            next: 0,
            udp_map: map.clone(),
        });
        (host, out, map)
    }

    fn id(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    fn stream(&mut self, conn: ConnId) -> Result<&mut TcpStream, NetError> {
        match self.conns.get_mut(&conn.0) {
            Some(Conn::Open(s)) => Ok(s),
            _ => Err(NetError::NotConnected),
        }
    }

    fn udp(&mut self, sock: UdpId) -> Result<&UdpSocket, NetError> {
        self.udp.get(&sock.0).ok_or(NetError::NotConnected)
    }

    /// Moves connections waiting in the OS backlog into ours.
    fn pull(&mut self, port: u16) {
        if let Some((l, queue)) = self.listeners.get_mut(&port) {
            while let Ok((s, _)) = l.accept() {
                s.set_nonblocking(true).unwrap();
                queue.push_back(s);
            }
        }
    }
}

fn v4(addr: SocketAddr) -> SocketAddrV4 {
    match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => panic!("IPv6 address {a} on an IPv4 test host"),
    }
}

fn io_error(e: std::io::Error) -> NetError {
    match e.kind() {
        ErrorKind::ConnectionRefused => NetError::Refused,
        ErrorKind::TimedOut => NetError::TimedOut,
        ErrorKind::NotConnected => NetError::NotConnected,
        ErrorKind::AddrInUse => NetError::AddressInUse,
        _ => NetError::Reset,
    }
}

impl Host for RealHost {
    fn realtime_ns(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn random(&mut self, buf: &mut [u8]) {
        // Tests need no secrecy, only variety.
        let mut seed = self.monotonic_ns() | 1;
        for b in buf {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
    }
    fn log(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => self.out.stdout.lock().unwrap().extend_from_slice(bytes),
            Stream::Stderr => self.out.stderr.lock().unwrap().extend_from_slice(bytes),
        }
    }

    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, NetError> {
        self.pull(port);
        let (_, queue) = self
            .listeners
            .get_mut(&port)
            .ok_or(NetError::NotConnected)?;
        let Some(s) = queue.pop_front() else {
            return Ok(None);
        };
        let id = self.id();
        self.conns.insert(id, Conn::Open(s));
        Ok(Some(ConnId(id)))
    }
    fn acceptable(&mut self, port: u16) -> bool {
        self.pull(port);
        self.listeners
            .get(&port)
            .is_some_and(|(_, q)| !q.is_empty())
    }
    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        match self.stream(conn)?.read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }
    fn readable(&mut self, conn: ConnId) -> bool {
        let Ok(s) = self.stream(conn) else {
            return true;
        };
        !matches!(s.peek(&mut [0]), Err(e) if e.kind() == ErrorKind::WouldBlock)
    }
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, NetError> {
        match self.stream(conn)?.write(data) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }
    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), NetError> {
        let how = match how {
            Shutdown::Read => NetShutdown::Read,
            Shutdown::Write => NetShutdown::Write,
            Shutdown::Both => NetShutdown::Both,
        };
        self.stream(conn)?.shutdown(how).map_err(io_error)
    }
    fn close(&mut self, conn: ConnId) {
        self.conns.remove(&conn.0);
    }

    fn local_ip(&mut self) -> Ipv4Addr {
        Ipv4Addr::LOCALHOST
    }
    fn connect(&mut self, to: SocketAddrV4) -> Result<ConnId, NetError> {
        let conn = match TcpStream::connect_timeout(&to.into(), Duration::from_secs(5)) {
            Ok(s) => {
                s.set_nonblocking(true).unwrap();
                Conn::Open(s)
            }
            Err(e) => Conn::Failed(io_error(e)),
        };
        let id = self.id();
        self.conns.insert(id, conn);
        Ok(ConnId(id))
    }
    fn connect_status(&mut self, conn: ConnId) -> Result<bool, NetError> {
        match self.conns.get(&conn.0) {
            Some(Conn::Open(_)) => Ok(true),
            Some(Conn::Failed(e)) => Err(*e),
            None => Err(NetError::NotConnected),
        }
    }
    fn addresses(&mut self, conn: ConnId) -> Result<(SocketAddrV4, SocketAddrV4), NetError> {
        let s = self.stream(conn)?;
        Ok((
            v4(s.local_addr().map_err(io_error)?),
            v4(s.peer_addr().map_err(io_error)?),
        ))
    }

    fn udp_bind(&mut self, port: u16) -> Result<(UdpId, u16), NetError> {
        if port != 0 && !self.udp_ports.contains(&port) {
            return Err(NetError::AccessDenied);
        }
        let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io_error)?;
        s.set_nonblocking(true).unwrap();
        let real = s.local_addr().unwrap().port();
        let bound = if port == 0 { real } else { port };
        self.udp_map.0.lock().unwrap().insert(bound, real);
        let id = self.id();
        self.udp.insert(id, s);
        Ok((UdpId(id), bound))
    }
    fn udp_send(&mut self, sock: UdpId, to: SocketAddrV4, data: &[u8]) -> Result<bool, NetError> {
        match self.udp(sock)?.send_to(data, to) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(io_error(e)),
        }
    }
    fn udp_recv(
        &mut self,
        sock: UdpId,
        buf: &mut [u8],
    ) -> Result<Option<(usize, SocketAddrV4)>, NetError> {
        match self.udp(sock)?.recv_from(buf) {
            Ok((n, from)) => Ok(Some((n, v4(from)))),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(io_error(e)),
        }
    }
    fn udp_readable(&mut self, sock: UdpId) -> bool {
        self.udp(sock).is_ok_and(|s| s.peek_from(&mut [0]).is_ok())
    }
    fn udp_close(&mut self, sock: UdpId) {
        self.udp.remove(&sock.0);
    }

    fn lookup(&mut self, name: &str) -> Result<LookupId, NetError> {
        let answer = match (name, 0).to_socket_addrs() {
            Ok(addrs) => {
                let v4: Vec<Ipv4Addr> = addrs
                    .filter_map(|a| match a {
                        SocketAddr::V4(a) => Some(*a.ip()),
                        SocketAddr::V6(_) => None,
                    })
                    .collect();
                if v4.is_empty() {
                    Err(NetError::NameUnresolvable)
                } else {
                    Ok(v4)
                }
            }
            Err(_) => Err(NetError::NameUnresolvable),
        };
        let id = self.id();
        self.lookups.insert(id, answer);
        Ok(LookupId(id))
    }
    fn lookup_result(&mut self, id: LookupId) -> Option<Result<Vec<Ipv4Addr>, NetError>> {
        Some(
            self.lookups
                .remove(&id.0)
                .unwrap_or(Err(NetError::NotConnected)),
        )
    }
    fn lookup_cancel(&mut self, id: LookupId) {
        self.lookups.remove(&id.0);
    }
}
