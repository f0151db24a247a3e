//! TCP servers: each containerPort is a preopened listening socket (like
//! `wasmtime run --tcplisten`); accepted connections are fds served by the
//! node's [`crate::Host`] socket calls. Blocking sockets suspend the guest.

use alloc::vec;
use core::task::Poll;

use wasmtime::Linker;

use super::abi::{self, Errno};
use super::{Ctx, Fd, Mem, Ret, blocking_fn, sync_fn};
use crate::host::{ConnId, NetError, Shutdown};

pub(super) fn add(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    blocking_fn!(
        linker,
        "sock_accept",
        |m, cx, fd: i32, flags: i32, out: i32| { accept(m, cx, fd, flags as u16, out as u32) }
    );
    blocking_fn!(
        linker,
        "sock_recv",
        |m, cx, fd: i32, iovs: i32, n: i32, _flags: i32, out_len: i32, out_flags: i32| {
            let (id, nonblock) = match conn(cx, fd) {
                Ok(c) => c,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let iovs = match m.iovecs(iovs as u32, n as u32) {
                Ok(iovs) => iovs,
                Err(e) => return Poll::Ready(Err(e)),
            };
            recv(m, cx, id, nonblock, &iovs).map(|r| {
                let count = r?;
                m.set_u32(out_len as u32, count as u32)?;
                m.write(out_flags as u32, &[0, 0])
            })
        }
    );
    blocking_fn!(
        linker,
        "sock_send",
        |m, cx, fd: i32, iovs: i32, n: i32, _flags: i32, out: i32| {
            let (id, nonblock) = match conn(cx, fd) {
                Ok(c) => c,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let data = match m.gather(iovs as u32, n as u32) {
                Ok(data) => data,
                Err(e) => return Poll::Ready(Err(e)),
            };
            send(cx, id, nonblock, &data).map(|r| m.set_u32(out as u32, r? as u32))
        }
    );
    sync_fn!(linker, "sock_shutdown", |_m, cx, fd: i32, how: i32| {
        let (id, _) = conn(cx, fd)?;
        let how = match how as u8 {
            abi::SDFLAGS_RD => Shutdown::Read,
            abi::SDFLAGS_WR => Shutdown::Write,
            h if h == abi::SDFLAGS_RD | abi::SDFLAGS_WR => Shutdown::Both,
            _ => return Err(abi::INVAL),
        };
        cx.host.shutdown(id, how).map_err(errno)
    });
    Ok(())
}

fn conn(cx: &Ctx, fd: i32) -> Result<(ConnId, bool), Errno> {
    match *cx.fd(fd)? {
        Fd::Conn { id, nonblock } => Ok((id, nonblock)),
        Fd::Listener { .. } => Err(abi::NOTCONN),
        _ => Err(abi::NOTSOCK),
    }
}

fn errno(e: NetError) -> Errno {
    match e {
        NetError::Reset => abi::CONNRESET,
        NetError::NotConnected => abi::NOTCONN,
        // Preview 1 only accepts, receives and sends, which fail in the
        // three ways above; the rest belong to preview 2's calls.
        NetError::Unsupported
        | NetError::Refused
        | NetError::TimedOut
        | NetError::Unreachable
        | NetError::AccessDenied
        | NetError::AddressInUse
        | NetError::TooLarge
        | NetError::NameUnresolvable
        | NetError::ResolverFailed => abi::NOTSUP,
    }
}

/// "Not now": EAGAIN for non-blocking sockets, else suspend until I/O.
fn would_block<T>(cx: &Ctx, nonblock: bool) -> Poll<Result<T, Errno>> {
    if nonblock {
        Poll::Ready(Err(abi::AGAIN))
    } else {
        cx.block(None);
        Poll::Pending
    }
}

fn accept(m: &mut Mem<'_>, cx: &mut Ctx, fd: i32, flags: u16, out: u32) -> Poll<Ret> {
    let (port, nonblock) = match cx.fd(fd) {
        Ok(&Fd::Listener { port, nonblock }) => (port, nonblock),
        Ok(_) => return Poll::Ready(Err(abi::NOTSOCK)),
        Err(e) => return Poll::Ready(Err(e)),
    };
    // Checked before taking one: the peer then waits in the node's backlog.
    if cx.connections() >= super::MAX_CONNECTIONS {
        return Poll::Ready(Err(abi::MFILE));
    }
    match cx.host.accept(port) {
        Ok(Some(id)) => {
            let conn = Fd::Conn {
                id,
                nonblock: flags & abi::FDFLAGS_NONBLOCK != 0,
            };
            Poll::Ready(match cx.insert(conn) {
                Ok(new) => m.set_u32(out, new),
                Err(e) => {
                    cx.host.close(id);
                    Err(e)
                }
            })
        }
        Ok(None) => would_block(cx, nonblock),
        Err(e) => Poll::Ready(Err(errno(e))),
    }
}

/// Receives into the first non-empty iovec (short reads are fine).
pub(super) fn recv(
    m: &mut Mem<'_>,
    cx: &mut Ctx,
    id: ConnId,
    nonblock: bool,
    iovs: &[(u32, u32)],
) -> Poll<Result<usize, Errno>> {
    let Some(&(buf, len)) = iovs.iter().find(|(_, len)| *len > 0) else {
        return Poll::Ready(Ok(0));
    };
    // Bounded so a huge iovec does not make a huge host buffer.
    let mut tmp = vec![0u8; (len as usize).min(64 << 10)];
    match cx.host.recv(id, &mut tmp) {
        Ok(Some(n)) => {
            let n = n.min(tmp.len());
            Poll::Ready(m.write(buf, &tmp[..n]).map(|()| n))
        }
        Ok(None) => would_block(cx, nonblock),
        Err(e) => Poll::Ready(Err(errno(e))),
    }
}

pub(super) fn send(
    cx: &mut Ctx,
    id: ConnId,
    nonblock: bool,
    data: &[u8],
) -> Poll<Result<usize, Errno>> {
    if data.is_empty() {
        return Poll::Ready(Ok(0));
    }
    match cx.host.send(id, data) {
        Ok(Some(n)) => Poll::Ready(Ok(n.min(data.len()))),
        Ok(None) => would_block(cx, nonblock),
        Err(e) => Poll::Ready(Err(errno(e))),
    }
}
