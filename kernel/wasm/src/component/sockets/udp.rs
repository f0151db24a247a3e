//! wasi:sockets/udp: a socket binds (port 0 for an ephemeral port, or one
//! of the container's UDP ports), then sends and receives datagrams
//! through its streams, optionally fixed to one remote address.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::net::SocketAddrV4;

use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{DynPollable, Pollable, subscribe};

use super::super::bindings::wasi::sockets::network::{ErrorCode, IpAddressFamily, IpSocketAddress};
use super::super::bindings::wasi::sockets::{udp, udp_create_socket};
use super::{Net, Network, Slot, code, remote, v4, wit};
use crate::component::Ctx;
use crate::host::UdpId;

/// Largest datagram payload over IPv4 (the node may refuse smaller ones it
/// cannot send unfragmented: `datagram-too-large`).
const MAX_DATAGRAM: usize = 65_507;
/// Most datagrams one `receive` returns or one `check-send` permits.
const BATCH: u64 = 16;
const HOP_LIMIT: u8 = 64;
const BUFFER_SIZE: u64 = 16 << 10;

pub struct UdpSocket {
    state: State,
    /// Set by `stream` with a remote address: datagrams go there and only
    /// datagrams from there are received.
    remote: Option<SocketAddrV4>,
}

enum State {
    Unbound,
    BindStarted(Arc<Bound>),
    Bound(Arc<Bound>),
}

/// A node UDP socket, closed when the socket and its streams are gone.
struct Bound {
    id: UdpId,
    /// The address bound, with the port the node gave.
    local: SocketAddrV4,
    net: Net,
    _slot: Slot,
}

impl Drop for Bound {
    fn drop(&mut self) {
        self.net.host.lock().udp_close(self.id);
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for UdpSocket {
    async fn ready(&mut self) {}
}

pub struct IncomingDatagramStream {
    udp: Arc<Bound>,
    remote: Option<SocketAddrV4>,
}

pub struct OutgoingDatagramStream {
    udp: Arc<Bound>,
    remote: Option<SocketAddrV4>,
    /// Datagrams the last `check-send` allowed and `send` has not used.
    permit: u64,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for IncomingDatagramStream {
    async fn ready(&mut self) {
        let id = self.udp.id;
        self.udp.net.until(|h| h.udp_readable(id)).await
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for OutgoingDatagramStream {
    async fn ready(&mut self) {
        let id = self.udp.id;
        self.udp.net.until(|h| h.udp_writable(id)).await
    }
}

impl udp_create_socket::Host for Ctx {
    fn create_udp_socket(
        &mut self,
        family: IpAddressFamily,
    ) -> wasmtime::Result<Result<Resource<UdpSocket>, ErrorCode>> {
        if family != IpAddressFamily::Ipv4 {
            return Ok(Err(ErrorCode::NotSupported));
        }
        let socket = UdpSocket {
            state: State::Unbound,
            remote: None,
        };
        Ok(Ok(self.table.push(socket)?))
    }
}

impl udp::Host for Ctx {}

impl udp::HostUdpSocket for Ctx {
    fn start_bind(
        &mut self,
        socket: Resource<UdpSocket>,
        _network: Resource<Network>,
        local: IpSocketAddress,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        if !matches!(self.table.get(&socket)?.state, State::Unbound) {
            return Ok(Err(ErrorCode::InvalidState));
        }
        let local = match v4(local) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let local_ip = self.host.lock().local_ip();
        let ip = *local.ip();
        if !(ip.is_unspecified() || ip.is_loopback() || ip == local_ip) {
            return Ok(Err(ErrorCode::AddressNotBindable));
        }
        let slot = match self.slot() {
            Ok(s) => s,
            Err(e) => return Ok(Err(e)),
        };
        let bound = self.host.lock().udp_bind(local.port());
        let (id, port) = match bound {
            Ok(b) => b,
            Err(e) => return Ok(Err(code(e))),
        };
        let bound = Arc::new(Bound {
            id,
            local: SocketAddrV4::new(ip, port),
            net: self.net(),
            _slot: slot,
        });
        self.table.get_mut(&socket)?.state = State::BindStarted(bound);
        Ok(Ok(()))
    }

    fn finish_bind(
        &mut self,
        socket: Resource<UdpSocket>,
    ) -> wasmtime::Result<Result<(), ErrorCode>> {
        let socket = self.table.get_mut(&socket)?;
        let State::BindStarted(bound) = &socket.state else {
            return Ok(Err(ErrorCode::NotInProgress));
        };
        socket.state = State::Bound(bound.clone());
        Ok(Ok(()))
    }

    fn stream(
        &mut self,
        socket: Resource<UdpSocket>,
        to: Option<IpSocketAddress>,
    ) -> wasmtime::Result<
        Result<
            (
                Resource<IncomingDatagramStream>,
                Resource<OutgoingDatagramStream>,
            ),
            ErrorCode,
        >,
    > {
        let to = match to.map(remote).transpose() {
            Ok(to) => to,
            Err(e) => return Ok(Err(e)),
        };
        let sock = self.table.get_mut(&socket)?;
        let State::Bound(udp) = &sock.state else {
            return Ok(Err(ErrorCode::InvalidState));
        };
        let udp = udp.clone();
        sock.remote = to;
        let incoming = IncomingDatagramStream {
            udp: udp.clone(),
            remote: to,
        };
        let outgoing = OutgoingDatagramStream {
            udp,
            remote: to,
            permit: 0,
        };
        let incoming = self.table.push(incoming)?;
        let outgoing = self.table.push(outgoing)?;
        Ok(Ok((incoming, outgoing)))
    }

    fn local_address(
        &mut self,
        socket: Resource<UdpSocket>,
    ) -> wasmtime::Result<Result<IpSocketAddress, ErrorCode>> {
        Ok(match &self.table.get(&socket)?.state {
            State::Bound(b) => Ok(wit(b.local)),
            _ => Err(ErrorCode::InvalidState),
        })
    }

    fn remote_address(
        &mut self,
        socket: Resource<UdpSocket>,
    ) -> wasmtime::Result<Result<IpSocketAddress, ErrorCode>> {
        Ok(self
            .table
            .get(&socket)?
            .remote
            .map(wit)
            .ok_or(ErrorCode::InvalidState))
    }

    fn address_family(&mut self, _: Resource<UdpSocket>) -> wasmtime::Result<IpAddressFamily> {
        Ok(IpAddressFamily::Ipv4)
    }

    // Hop limit and buffer sizes are the node's: reported, not settable.
    fn unicast_hop_limit(
        &mut self,
        _: Resource<UdpSocket>,
    ) -> wasmtime::Result<Result<u8, ErrorCode>> {
        Ok(Ok(HOP_LIMIT))
    }
    fn set_unicast_hop_limit(
        &mut self,
        _: Resource<UdpSocket>,
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
        _: Resource<UdpSocket>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        Ok(Ok(BUFFER_SIZE))
    }
    fn set_receive_buffer_size(
        &mut self,
        _: Resource<UdpSocket>,
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
        _: Resource<UdpSocket>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        Ok(Ok(BUFFER_SIZE))
    }
    fn set_send_buffer_size(
        &mut self,
        _: Resource<UdpSocket>,
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
        socket: Resource<UdpSocket>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(&mut self.table, socket)
    }

    fn drop(&mut self, socket: Resource<UdpSocket>) -> wasmtime::Result<()> {
        self.table.delete(socket)?;
        Ok(())
    }
}

impl udp::HostIncomingDatagramStream for Ctx {
    fn receive(
        &mut self,
        stream: Resource<IncomingDatagramStream>,
        max: u64,
    ) -> wasmtime::Result<Result<Vec<udp::IncomingDatagram>, ErrorCode>> {
        let stream = self.table.get(&stream)?;
        let mut got = Vec::new();
        if max == 0 {
            return Ok(Ok(got));
        }
        let mut buf = vec![0; MAX_DATAGRAM];
        while (got.len() as u64) < max.min(BATCH) {
            let received = stream.udp.net.host.lock().udp_recv(stream.udp.id, &mut buf);
            match received {
                Ok(Some((n, from))) => {
                    // A connected socket ignores everyone else.
                    if stream.remote.is_some_and(|r| r != from) {
                        continue;
                    }
                    got.push(udp::IncomingDatagram {
                        data: buf[..n].to_vec(),
                        remote_address: wit(from),
                    });
                }
                Ok(None) => break,
                Err(e) if got.is_empty() => return Ok(Err(code(e))),
                Err(_) => break,
            }
        }
        Ok(Ok(got))
    }

    fn subscribe(
        &mut self,
        stream: Resource<IncomingDatagramStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(&mut self.table, stream)
    }

    fn drop(&mut self, stream: Resource<IncomingDatagramStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}

impl udp::HostOutgoingDatagramStream for Ctx {
    fn check_send(
        &mut self,
        stream: Resource<OutgoingDatagramStream>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        let stream = self.table.get_mut(&stream)?;
        let writable = stream.udp.net.host.lock().udp_writable(stream.udp.id);
        stream.permit = if writable { BATCH } else { 0 };
        Ok(Ok(stream.permit))
    }

    fn send(
        &mut self,
        stream: Resource<OutgoingDatagramStream>,
        datagrams: Vec<udp::OutgoingDatagram>,
    ) -> wasmtime::Result<Result<u64, ErrorCode>> {
        let stream = self.table.get_mut(&stream)?;
        if datagrams.len() as u64 > stream.permit {
            return Err(wasmtime::format_err!(
                "send of {} datagrams exceeds the check-send permit of {}",
                datagrams.len(),
                stream.permit
            ));
        }
        let mut sent = 0;
        for d in datagrams {
            let to = match (d.remote_address.map(remote).transpose(), stream.remote) {
                (Err(e), _) => Err(e),
                (Ok(Some(to)), Some(fixed)) if to != fixed => Err(ErrorCode::InvalidArgument),
                (Ok(Some(to)), _) | (Ok(None), Some(to)) => Ok(to),
                (Ok(None), None) => Err(ErrorCode::InvalidArgument),
            };
            let to = match to {
                Ok(to) if d.data.len() <= MAX_DATAGRAM => Ok(to),
                Ok(_) => Err(ErrorCode::DatagramTooLarge),
                Err(e) => Err(e),
            };
            let result = to.and_then(|to| {
                stream
                    .udp
                    .net
                    .host
                    .lock()
                    .udp_send(stream.udp.id, to, &d.data)
                    .map_err(code)
            });
            match result {
                Ok(true) => sent += 1,
                Ok(false) => break,
                Err(e) if sent == 0 => {
                    stream.permit = 0;
                    return Ok(Err(e));
                }
                Err(_) => break,
            }
        }
        stream.permit -= sent;
        Ok(Ok(sent))
    }

    fn subscribe(
        &mut self,
        stream: Resource<OutgoingDatagramStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(&mut self.table, stream)
    }

    fn drop(&mut self, stream: Resource<OutgoingDatagramStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}
