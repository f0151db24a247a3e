//! wasi:sockets/tcp: a socket is unbound, then either connects out (to any
//! address) or listens on one of the container's ports (which the node has
//! been listening on since the container started; binding another port is
//! `access-denied`).

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddrV4;

use wasmtime::component::Resource;
use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::{DynPollable, Pollable, subscribe};
use wasmtime_wasi_io::streams::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, StreamError, StreamResult,
};

use super::super::bindings::wasi::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress};
use super::super::bindings::wasi::sockets::{tcp, tcp_create_socket};
use super::{Net, Network, Slot, code, remote, v4, wit};
use crate::component::Ctx;
use crate::host::{ConnId, NetError, Shutdown};
use crate::wasi::SOCKET_WRITE_BUFFER;

/// What Linux reports for an unconfigured socket, and what we keep.
const HOP_LIMIT: u8 = 64;
/// The node's buffer sizes, reported by the buffer-size getters.
const BUFFER_SIZE: u64 = 16 << 10;
/// Most bytes one `read` returns.
const READ_CHUNK: usize = 64 << 10;

pub struct TcpSocket {
    state: State,
    net: Net,
}

enum State {
    Unbound,
    BindStarted(SocketAddrV4),
    Bound(SocketAddrV4),
    ListenStarted(SocketAddrV4),
    Listening(SocketAddrV4),
    Connecting(Arc<Conn>),
    Connected(Arc<Conn>),
    /// A connect failed (or the connection was handed out and shut): the
    /// socket can do nothing more.
    Closed,
}

/// A node connection, closed when the socket and both its streams are gone.
struct Conn {
    id: ConnId,
    net: Net,
    _slot: Slot,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.net.host.lock().close(self.id);
    }
}

impl TcpSocket {
    fn new(state: State, net: Net) -> Self {
        Self { state, net }
    }

    /// Moves a connect in progress on once the node knows how it went;
    /// returns the failure if it failed.
    fn poll_connect(&mut self) -> Option<NetError> {
        let State::Connecting(conn) = &self.state else {
            return None;
        };
        let status = self.net.host.lock().connect_status(conn.id);
        match status {
            Ok(false) => None,
            Ok(true) => {
                let State::Connecting(conn) = core::mem::replace(&mut self.state, State::Closed)
                else {
                    unreachable!("matched above");
                };
                self.state = State::Connected(conn);
                None
            }
            Err(e) => {
                self.state = State::Closed;
                Some(e)
            }
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for TcpSocket {
    /// Ready when a connect has finished or a listener has a connection;
    /// otherwise at once (the WIT's "ready" for other states).
    async fn ready(&mut self) {
        let net = self.net.clone();
        match &self.state {
            State::Connecting(conn) => {
                let id = conn.id;
                net.until(|h| !matches!(h.connect_status(id), Ok(false)))
                    .await
            }
            State::Listening(addr) => {
                let port = addr.port();
                net.until(|h| h.acceptable(port)).await
            }
            _ => {}
        }
    }
}

fn streams(
    cx: &mut Ctx,
    conn: &Arc<Conn>,
) -> wasmtime::Result<(Resource<DynInputStream>, Resource<DynOutputStream>)> {
    let reader = Reader { conn: conn.clone() };
    let writer = Writer {
        conn: conn.clone(),
        pending: Vec::new(),
        failed: None,
    };
    let input = cx.table.push(Box::new(reader) as DynInputStream)?;
    let output = cx.table.push(Box::new(writer) as DynOutputStream)?;
    Ok((input, output))
}

impl tcp_create_socket::Host for Ctx {
    fn create_tcp_socket(
        &mut self,
        family: IpAddressFamily,
    ) -> wasmtime::Result<Result<Resource<TcpSocket>, ErrorCode>> {
        if family != IpAddressFamily::Ipv4 {
            return Ok(Err(ErrorCode::NotSupported));
        }
        Ok(Ok(self
            .table
            .push(TcpSocket::new(State::Unbound, self.net()))?))
    }
}

impl tcp::Host for Ctx {}

impl tcp::HostTcpSocket for Ctx {
    fn start_bind(
        &mut self,
        socket: Resource<TcpSocket>,
        _network: Resource<Network>,
        local: IpSocketAddress,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let local_ip = self.host.lock().local_ip();
        let socket = self.table.get_mut(&socket)?;
        if !matches!(socket.state, State::Unbound) {
            return Ok(Err(ErrorCode::InvalidState));
        }
        let addr = match v4(local) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        // No pod addresses yet: a pod listens on the node's address.
        let ip = *addr.ip();
        if !(ip.is_unspecified() || ip.is_loopback() || ip == local_ip) {
            return Ok(Err(ErrorCode::AddressNotBindable));
        }
        socket.state = State::BindStarted(addr);
        Ok(Ok(()))
    }

    fn finish_bind(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table.get_mut(&socket)?;
        let State::BindStarted(addr) = socket.state else {
            return Ok(Err(ErrorCode::NotInProgress));
        };
        socket.state = State::Bound(addr);
        Ok(Ok(()))
    }

    fn start_connect(
        &mut self,
        socket: Resource<TcpSocket>,
        _network: Resource<Network>,
        to: IpSocketAddress,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        if !matches!(
            self.table.get(&socket)?.state,
            State::Unbound | State::Bound(_)
        ) {
            return Ok(Err(ErrorCode::InvalidState));
        }
        let to = match remote(to) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let slot = match self.slot() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let started = self.host.lock().connect(to);
        let net = self.net();
        let socket = self.table.get_mut(&socket)?;
        match started {
            Ok(id) => {
                socket.state = State::Connecting(Arc::new(Conn {
                    id,
                    net,
                    _slot: slot,
                }));
                Ok(Ok(()))
            }
            Err(e) => {
                socket.state = State::Closed;
                Ok(Err(code(e)))
            }
        }
    }

    fn finish_connect(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<(Resource<DynInputStream>, Resource<DynOutputStream>), ErrorCode>>
    {
        let sock = self.table.get_mut(&socket)?;
        if !matches!(sock.state, State::Connecting(_)) {
            return Ok(Err(ErrorCode::NotInProgress));
        }
        if let Some(e) = sock.poll_connect() {
            return Ok(Err(code(e)));
        }
        let State::Connected(conn) = &sock.state else {
            return Ok(Err(ErrorCode::WouldBlock));
        };
        let conn = conn.clone();
        Ok(Ok(streams(self, &conn)?))
    }

    fn start_listen(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table.get_mut(&socket)?;
        let State::Bound(addr) = socket.state else {
            return Ok(Err(ErrorCode::InvalidState));
        };
        // The node listens on the container's ports only (they are its
        // containerPorts, forwarded and reserved on the node).
        if addr.port() == 0 || !self.ports.contains(&addr.port()) {
            return Ok(Err(ErrorCode::AccessDenied));
        }
        socket.state = State::ListenStarted(addr);
        Ok(Ok(()))
    }

    fn finish_listen(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table.get_mut(&socket)?;
        let State::ListenStarted(addr) = socket.state else {
            return Ok(Err(ErrorCode::NotInProgress));
        };
        socket.state = State::Listening(addr);
        Ok(Ok(()))
    }

    fn accept(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<
        Result<
            (
                Resource<TcpSocket>,
                Resource<DynInputStream>,
                Resource<DynOutputStream>,
            ),
            ErrorCode,
        >,
    > {
        let State::Listening(addr) = self.table.get(&socket)?.state else {
            return Ok(Err(ErrorCode::InvalidState));
        };
        // Past the cap the connection waits in the node's backlog.
        let slot = match self.slot() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let accepted = self.host.lock().accept(addr.port());
        let id = match accepted {
            Ok(Some(id)) => id,
            Ok(None) => return Ok(Err(ErrorCode::WouldBlock)),
            Err(e) => return Ok(Err(code(e))),
        };
        let conn = Arc::new(Conn {
            id,
            net: self.net(),
            _slot: slot,
        });
        let (input, output) = streams(self, &conn)?;
        let accepted = TcpSocket::new(State::Connected(conn), self.net());
        let accepted = self.table.push(accepted)?;
        Ok(Ok((accepted, input, output)))
    }

    fn local_address(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<IpSocketAddress, ErrorCode>> {
        let socket = self.table.get(&socket)?;
        Ok(match &socket.state {
            State::Bound(a) | State::ListenStarted(a) | State::Listening(a) => Ok(wit(*a)),
            State::Connecting(c) | State::Connected(c) => {
                addresses(&c.net, c.id).map(|(l, _)| wit(l))
            }
            State::Unbound | State::BindStarted(_) | State::Closed => Err(ErrorCode::InvalidState),
        })
    }

    fn remote_address(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<IpSocketAddress, ErrorCode>> {
        let socket = self.table.get(&socket)?;
        Ok(match &socket.state {
            State::Connected(c) => addresses(&c.net, c.id).map(|(_, r)| wit(r)),
            _ => Err(ErrorCode::InvalidState),
        })
    }

    fn is_listening(&mut self, socket: Resource<TcpSocket>) -> wasmtime::Result<bool> {
        Ok(matches!(
            self.table.get(&socket)?.state,
            State::Listening(_)
        ))
    }

    fn address_family(
        &mut self,
        _socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<IpAddressFamily> {
        Ok(IpAddressFamily::Ipv4)
    }

    /// The node keeps its own backlog per port; any positive size is taken.
    fn set_listen_backlog_size(
        &mut self,
        _socket: Resource<TcpSocket>,
        value: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(if value == 0 {
            Err(ErrorCode::InvalidArgument)
        } else {
            Ok(())
        })
    }

    // Keep-alive, hop limit and buffer sizes are the node's: reported, not
    // settable (a setter that pretended would lie to the guest).
    fn keep_alive_enabled(
        &mut self,
        _: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<bool, ErrorCode>> {
        Ok(Ok(false))
    }
    fn set_keep_alive_enabled(
        &mut self,
        _: Resource<TcpSocket>,
        _: bool,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(Err(ErrorCode::NotSupported))
    }
    fn keep_alive_idle_time(
        &mut self,
        _: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        Ok(Err(ErrorCode::NotSupported))
    }
    fn set_keep_alive_idle_time(
        &mut self,
        _: Resource<TcpSocket>,
        _: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(Err(ErrorCode::NotSupported))
    }
    fn keep_alive_interval(
        &mut self,
        _: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        Ok(Err(ErrorCode::NotSupported))
    }
    fn set_keep_alive_interval(
        &mut self,
        _: Resource<TcpSocket>,
        _: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(Err(ErrorCode::NotSupported))
    }
    fn keep_alive_count(
        &mut self,
        _: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<u32, ErrorCode>> {
        Ok(Err(ErrorCode::NotSupported))
    }
    fn set_keep_alive_count(
        &mut self,
        _: Resource<TcpSocket>,
        _: u32,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(Err(ErrorCode::NotSupported))
    }
    fn hop_limit(&mut self, _: Resource<TcpSocket>) -> wasmtime::Result<Result<u8, ErrorCode>> {
        Ok(Ok(HOP_LIMIT))
    }
    fn set_hop_limit(
        &mut self,
        _: Resource<TcpSocket>,
        value: u8,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(Err(if value == 0 {
            ErrorCode::InvalidArgument
        } else {
            ErrorCode::NotSupported
        }))
    }
    fn receive_buffer_size(
        &mut self,
        _: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        Ok(Ok(BUFFER_SIZE))
    }
    fn set_receive_buffer_size(
        &mut self,
        _: Resource<TcpSocket>,
        value: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(Err(if value == 0 {
            ErrorCode::InvalidArgument
        } else {
            ErrorCode::NotSupported
        }))
    }
    fn send_buffer_size(
        &mut self,
        _: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        Ok(Ok(BUFFER_SIZE))
    }
    fn set_send_buffer_size(
        &mut self,
        _: Resource<TcpSocket>,
        value: u64,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        Ok(Err(if value == 0 {
            ErrorCode::InvalidArgument
        } else {
            ErrorCode::NotSupported
        }))
    }

    fn subscribe(
        &mut self,
        socket: Resource<TcpSocket>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(&mut self.table, socket)
    }

    fn shutdown(
        &mut self,
        socket: Resource<TcpSocket>,
        how: tcp::ShutdownType,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let State::Connected(conn) = &self.table.get(&socket)?.state else {
            return Ok(Err(ErrorCode::InvalidState));
        };
        let how = match how {
            tcp::ShutdownType::Receive => Shutdown::Read,
            tcp::ShutdownType::Send => Shutdown::Write,
            tcp::ShutdownType::Both => Shutdown::Both,
        };
        let id = conn.id;
        Ok(self.host.lock().shutdown(id, how).map_err(code))
    }

    fn drop(&mut self, socket: Resource<TcpSocket>) -> wasmtime::Result<()> {
        self.table.delete(socket)?;
        Ok(())
    }
}

fn addresses(net: &Net, id: ConnId) -> Result<(SocketAddrV4, SocketAddrV4), ErrorCode> {
    net.host.lock().addresses(id).map_err(code)
}

/// A connection's input stream.
struct Reader {
    conn: Arc<Conn>,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for Reader {
    async fn ready(&mut self) {
        let id = self.conn.id;
        self.conn.net.until(|h| h.readable(id)).await
    }
}

impl InputStream for Reader {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        // Never allocate what the guest asks for unbounded.
        let mut buf = vec![0; size.min(READ_CHUNK)];
        let got = self.conn.net.host.lock().recv(self.conn.id, &mut buf);
        match got {
            Ok(Some(0)) => Err(StreamError::Closed),
            Ok(Some(n)) => {
                buf.truncate(n);
                Ok(Bytes::from(buf))
            }
            Ok(None) => Ok(Bytes::new()),
            Err(e) => Err(StreamError::LastOperationFailed(wasmtime::Error::new(e))),
        }
    }
}

/// A connection's output stream. The node may take fewer bytes than a
/// `check-write` permitted, so the rest waits here (at most
/// [`SOCKET_WRITE_BUFFER`]) until the node has room.
struct Writer {
    conn: Arc<Conn>,
    pending: Vec<u8>,
    /// The connection failed; reported by the next call.
    failed: Option<NetError>,
}

impl Writer {
    /// Hands the node as much of `pending` as it takes now.
    fn push(&mut self) {
        while !self.pending.is_empty() && self.failed.is_none() {
            let sent = self.conn.net.host.lock().send(self.conn.id, &self.pending);
            match sent {
                Ok(Some(n)) if n > 0 => {
                    self.pending.drain(..n);
                }
                Ok(_) => break,
                Err(e) => {
                    self.pending.clear();
                    self.failed = Some(e);
                }
            }
        }
    }

    fn check(&mut self) -> StreamResult<()> {
        match self.failed {
            Some(e) => Err(StreamError::LastOperationFailed(wasmtime::Error::new(e))),
            None => Ok(()),
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for Writer {
    async fn ready(&mut self) {
        let net = self.conn.net.clone();
        let id = self.conn.id;
        core::future::poll_fn(|_| {
            self.push();
            let ready =
                self.failed.is_some() || (self.pending.is_empty() && net.host.lock().writable(id));
            if ready {
                return core::task::Poll::Ready(());
            }
            net.shared.block(None);
            core::task::Poll::Pending
        })
        .await
    }
}

impl OutputStream for Writer {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.check()?;
        if self.pending.len() + bytes.len() > SOCKET_WRITE_BUFFER {
            return Err(StreamError::trap("write exceeds the check-write permit"));
        }
        self.pending.extend_from_slice(&bytes);
        self.push();
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        self.push();
        self.check()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.push();
        self.check()?;
        Ok(
            if self.pending.is_empty() && self.conn.net.host.lock().writable(self.conn.id) {
                SOCKET_WRITE_BUFFER
            } else {
                0
            },
        )
    }
}
