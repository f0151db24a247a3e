//! wasi:sockets over the node's [`Host`](crate::Host): TCP (connect to any
//! address, listen and accept on the container's own ports), UDP, and name
//! lookup answered by the node. IPv4 only: IPv6 sockets are `not-supported`.
//!
//! The state machines follow the WIT (and wasmtime-wasi, the reference):
//! `start-*` checks and starts, `finish-*` completes or says `would-block`;
//! every pollable that is not ready suspends the guest through
//! [`Shared::block`], as preview 1's blocking calls do.
//!
//! Limits: each node socket a container holds (a connection, a UDP socket,
//! a lookup in flight) takes one of [`MAX_SOCKETS`] slots and
//! [`SOCKET_BYTES`] of its memory limit; past either the call fails with
//! `new-socket-limit` or `out-of-memory` and nothing is created. A
//! connection's slot is held until its socket and both streams are dropped.

mod tcp;
mod udp;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use core::sync::atomic::{AtomicUsize, Ordering};
use core::task::Poll;

use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{DynPollable, Pollable, subscribe};

use super::bindings::wasi::sockets::network::{
    self, ErrorCode, IpAddress, IpSocketAddress, Ipv4SocketAddress,
};
use super::bindings::wasi::sockets::{instance_network, ip_name_lookup};
use super::{Ctx, SharedHost};
use crate::host::{LookupId, NetError};
use crate::wasi::{SOCKET_BYTES, Shared};

pub use tcp::TcpSocket;
pub use udp::{IncomingDatagramStream, OutgoingDatagramStream, UdpSocket};

/// Most node sockets (connections, UDP sockets, lookups in flight) one
/// container holds at once.
pub const MAX_SOCKETS: usize = 64;

/// The `network` resource: a pod has one network, the node's.
pub struct Network;

/// What every socket object needs: the node and the guest's wait state.
#[derive(Clone)]
pub(crate) struct Net {
    host: SharedHost,
    shared: Arc<Shared>,
}

/// One of the container's [`MAX_SOCKETS`]; given back when dropped.
pub(crate) struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Ctx {
    fn net(&self) -> Net {
        Net {
            host: self.host.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Takes a socket slot, or says why not.
    pub(crate) fn slot(&self) -> Result<Slot, ErrorCode> {
        let sockets = &self.limits.sockets;
        if sockets.load(Ordering::Relaxed) >= MAX_SOCKETS {
            return Err(ErrorCode::NewSocketLimit);
        }
        if !self.limits.room_for(SOCKET_BYTES) {
            return Err(ErrorCode::OutOfMemory);
        }
        sockets.fetch_add(1, Ordering::Relaxed);
        Ok(Slot(sockets.clone()))
    }
}

impl Net {
    /// Waits until `ready` holds, suspending the guest (no deadline) while
    /// it does not.
    async fn until(&self, mut ready: impl FnMut(&mut dyn crate::Host) -> bool) {
        core::future::poll_fn(|_| {
            if ready(&mut **self.host.lock()) {
                return Poll::Ready(());
            }
            self.shared.block(None);
            Poll::Pending
        })
        .await
    }
}

fn code(e: NetError) -> ErrorCode {
    match e {
        NetError::Reset => ErrorCode::ConnectionReset,
        NetError::NotConnected => ErrorCode::InvalidState,
        NetError::Unsupported => ErrorCode::NotSupported,
        NetError::Refused => ErrorCode::ConnectionRefused,
        NetError::TimedOut => ErrorCode::Timeout,
        NetError::Unreachable => ErrorCode::RemoteUnreachable,
        NetError::AccessDenied => ErrorCode::AccessDenied,
        NetError::AddressInUse => ErrorCode::AddressInUse,
        NetError::TooLarge => ErrorCode::DatagramTooLarge,
        NetError::NameUnresolvable => ErrorCode::NameUnresolvable,
        NetError::ResolverFailed => ErrorCode::TemporaryResolverFailure,
    }
}

/// The IPv4 socket address in `addr`; IPv6 is `invalid-argument` on an IPv4
/// socket (all sockets here are).
fn v4(addr: IpSocketAddress) -> Result<SocketAddrV4, ErrorCode> {
    match addr {
        IpSocketAddress::Ipv4(Ipv4SocketAddress {
            port,
            address: (a, b, c, d),
        }) => Ok(SocketAddrV4::new(Ipv4Addr::new(a, b, c, d), port)),
        IpSocketAddress::Ipv6(_) => Err(ErrorCode::InvalidArgument),
    }
}

fn wit(addr: SocketAddrV4) -> IpSocketAddress {
    let [a, b, c, d] = addr.ip().octets();
    IpSocketAddress::Ipv4(Ipv4SocketAddress {
        port: addr.port(),
        address: (a, b, c, d),
    })
}

/// A remote address a socket may talk to (what wasmtime-wasi refuses as
/// `invalid-argument` too): not unspecified, broadcast or multicast, and
/// not port 0.
fn remote(addr: IpSocketAddress) -> Result<SocketAddrV4, ErrorCode> {
    let addr = v4(addr)?;
    let ip = addr.ip();
    if addr.port() == 0 || ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(ErrorCode::InvalidArgument);
    }
    Ok(addr)
}

impl network::Host for Ctx {
    /// Stream errors of sockets carry the [`NetError`] they failed with.
    fn network_error_code(
        &mut self,
        err: Resource<wasmtime_wasi_io::streams::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        let err = self.table.get(&err)?;
        Ok(err.downcast_ref::<NetError>().map(|e| code(*e)))
    }
}

impl network::HostNetwork for Ctx {
    fn drop(&mut self, rep: Resource<Network>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}

impl instance_network::Host for Ctx {
    fn instance_network(&mut self) -> wasmtime::Result<Resource<Network>> {
        Ok(self.table.push(Network)?)
    }
}

/// Longest host name a lookup takes (RFC 1035's 253 characters in text).
const MAX_NAME: usize = 253;

/// A lookup: the node's answer, handed out one address at a time.
pub struct ResolveAddressStream {
    state: Lookup,
    net: Net,
}

enum Lookup {
    /// Asked; holds a socket slot until the answer.
    Pending {
        id: LookupId,
        _slot: Slot,
    },
    Answered(alloc::vec::IntoIter<IpAddress>),
    Failed(ErrorCode),
}

impl ResolveAddressStream {
    /// Moves a pending lookup on if the node has answered.
    fn poll(&mut self) {
        let Lookup::Pending { id, .. } = &self.state else {
            return;
        };
        let answer = self.net.host.lock().lookup_result(*id);
        self.state = match answer {
            None => return,
            Some(Ok(addrs)) => Lookup::Answered(
                addrs
                    .into_iter()
                    .map(|a| {
                        let [a, b, c, d] = a.octets();
                        IpAddress::Ipv4((a, b, c, d))
                    })
                    .collect::<Vec<_>>()
                    .into_iter(),
            ),
            Some(Err(e)) => Lookup::Failed(code(e)),
        };
    }
}

impl Drop for ResolveAddressStream {
    fn drop(&mut self) {
        if let Lookup::Pending { id, .. } = self.state {
            self.net.host.lock().lookup_cancel(id);
        }
    }
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for ResolveAddressStream {
    async fn ready(&mut self) {
        core::future::poll_fn(|_| {
            self.poll();
            if matches!(self.state, Lookup::Pending { .. }) {
                self.net.shared.block(None);
                return Poll::Pending;
            }
            Poll::Ready(())
        })
        .await
    }
}

/// Whether `name` is a host name the resolver can be asked about:
/// dot-separated labels of letters, digits, `-` and `_`, each 1–63 long.
pub(crate) fn host_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl ip_name_lookup::Host for Ctx {
    fn resolve_addresses(
        &mut self,
        _network: Resource<Network>,
        name: String,
    ) -> wasmtime::Result<Result<Resource<ResolveAddressStream>, ErrorCode>> {
        // Address literals answer themselves, as getaddrinfo does.
        let literal = if let Ok(v4) = name.parse::<Ipv4Addr>() {
            let [a, b, c, d] = v4.octets();
            Some(IpAddress::Ipv4((a, b, c, d)))
        } else {
            let bare = name.trim_start_matches('[').trim_end_matches(']');
            bare.parse::<Ipv6Addr>().ok().map(|v6| {
                let [a, b, c, d, e, f, g, h] = v6.segments();
                IpAddress::Ipv6((a, b, c, d, e, f, g, h))
            })
        };
        let state = match literal {
            Some(addr) => Lookup::Answered(alloc::vec![addr].into_iter()),
            None if !host_name(&name) => return Ok(Err(ErrorCode::InvalidArgument)),
            None => {
                let slot = match self.slot() {
                    Ok(slot) => slot,
                    Err(e) => return Ok(Err(e)),
                };
                match self.host.lock().lookup(&name) {
                    Ok(id) => Lookup::Pending { id, _slot: slot },
                    Err(e) => return Ok(Err(code(e))),
                }
            }
        };
        let stream = ResolveAddressStream {
            state,
            net: self.net(),
        };
        Ok(Ok(self.table.push(stream)?))
    }
}

impl ip_name_lookup::HostResolveAddressStream for Ctx {
    fn resolve_next_address(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Result<Option<IpAddress>, ErrorCode>> {
        let stream = self.table.get_mut(&stream)?;
        stream.poll();
        Ok(match &mut stream.state {
            Lookup::Pending { .. } => Err(ErrorCode::WouldBlock),
            Lookup::Answered(addrs) => Ok(addrs.next()),
            Lookup::Failed(e) => Err(*e),
        })
    }

    fn subscribe(
        &mut self,
        stream: Resource<ResolveAddressStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        subscribe(&mut self.table, stream)
    }

    fn drop(&mut self, stream: Resource<ResolveAddressStream>) -> wasmtime::Result<()> {
        self.table.delete(stream)?;
        Ok(())
    }
}
