//! The diagnostic TCP service (`skiff.diag=<port>`, kernel/README.md).
//!
//! `BACKLOG` acceptor tasks each keep one listening socket; when one
//! accepts, a handler task takes the connection and the acceptor listens
//! again, so several clients are served concurrently. The protocol
//! (requests, the token check, responses) is `skiff-diag`'s, shared with
//! the host's client.
//!
//! The port is reachable from the node's network, so nothing a peer does
//! may hold node memory for long: at most [`MAX_CONNECTIONS`] are served at
//! once (others get `error busy` and are closed), and a peer that sends or
//! takes nothing for [`IDLE_TIMEOUT_US`] is dropped.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use skiff_diag::{Cidr, Failure, Request, Response, Status};

use crate::arch::exit::{ExitCode, exit};
use crate::arch::time;
use crate::executor;
use crate::net::{self, TcpSocket};

/// Per-direction TCP buffer of each diag socket. 256 KiB gives a scaled
/// window large enough for `sink`/`source` to stream at device speed; the
/// `BACKLOG` listeners and `MAX_CONNECTIONS` connections hold at most
/// 16 × 512 KiB = 8 MiB of heap (the service is for tests and benchmarks,
/// off unless `skiff.diag` is given).
const SOCKET_BUF: usize = 256 * 1024;

pub struct Ctx {
    /// `skiff.diag_token`: without it, mutating requests are refused.
    pub token: Option<&'static str>,
    pub devices: String,
}

static CTX: spin::Once<Ctx> = spin::Once::new();

/// Listening sockets kept open at once: a burst of connection attempts
/// beyond this many (before an acceptor re-arms) is refused by TCP reset.
const BACKLOG: usize = 8;

/// Connections served at once; each holds 2 × [`SOCKET_BUF`] of heap.
pub const MAX_CONNECTIONS: usize = 8;
/// A request line must arrive within this, and a stream (`sink`, `source`,
/// a reply) may make no progress for at most this long.
pub const IDLE_TIMEOUT_US: u64 = 10_000_000;

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// One slot of [`MAX_CONNECTIONS`], given back when dropped.
struct Slot;

impl Slot {
    fn take() -> Option<Slot> {
        ACTIVE
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_CONNECTIONS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// `fut`, or `None` once `us` pass first.
async fn timeout<F: core::future::Future>(us: u64, fut: F) -> Option<F::Output> {
    executor::select(fut, executor::sleep_us(us)).await.ok()
}

pub fn serve(port: u16, ctx: Ctx) {
    CTX.call_once(|| ctx);
    for _ in 0..BACKLOG {
        executor::spawn(acceptor(port));
    }
    let mode = if CTX.get().is_some_and(|c| c.token.is_some()) {
        "token"
    } else {
        "read-only"
    };
    crate::log::stage("diag-ready", format_args!(" port={port} mutating={mode}"));
}

async fn acceptor(port: u16) {
    loop {
        let sock = match TcpSocket::listen(port, SOCKET_BUF) {
            Ok(s) => s,
            Err(e) => {
                error!("diag", "cannot listen port={port}: {e:?}");
                return;
            }
        };
        sock.accept().await;
        match Slot::take() {
            Some(slot) => executor::spawn(handle(sock, slot)),
            // Answered here, not in a task: the refusal costs no more than
            // the listener it replaces, and this acceptor waits meanwhile.
            None => {
                // Debug, not warn: a flood must not become a serial-log flood.
                debug!(
                    "diag",
                    "connection refused: {MAX_CONNECTIONS} already served"
                );
                reply(&sock, Failure::Busy.into()).await;
                sock.close().await;
            }
        }
    }
}

async fn handle(sock: TcpSocket, _slot: Slot) {
    let mut line = vec![0u8; skiff_diag::MAX_LINE];
    let mut len = 0;
    // The whole line within the timeout, however it trickles in.
    let deadline = time::uptime_us() + IDLE_TIMEOUT_US;
    loop {
        if len == line.len() {
            reply(&sock, Failure::LineTooLong.into()).await;
            sock.close().await;
            return;
        }
        let left = deadline.saturating_sub(time::uptime_us());
        let Some(n) = timeout(left, sock.read(&mut line[len..])).await else {
            debug!(
                "diag",
                "connection idle for {} s: closed",
                IDLE_TIMEOUT_US / 1_000_000
            );
            // A FIN (bounded by `close`), not a drop: the reset a drop
            // asks for is never sent once the socket is removed.
            sock.close().await;
            return;
        };
        if n == 0 {
            break;
        }
        len += n;
        if line[..len].contains(&b'\n') {
            break;
        }
    }
    let end = line[..len].iter().position(|&b| b == b'\n').unwrap_or(len);
    let text = core::str::from_utf8(&line[..end]).unwrap_or("");
    debug!("diag", "request {}", skiff_diag::Redacted(text));
    let ctx = CTX.get().expect("set by serve");
    let response = match skiff_diag::parse(text) {
        Err(e) => Some(Failure::from(e).into()),
        Ok(l) => match skiff_diag::authorize(&l, ctx.token) {
            Err(denied) => {
                let failure = Failure::from(denied);
                warn!(
                    "diag",
                    "refused {}: error {failure}",
                    skiff_diag::Redacted(text)
                );
                Some(failure.into())
            }
            // Bytes after the request line already belong to a `sink` stream.
            Ok(()) => respond(&sock, l.request, len.saturating_sub(end + 1)).await,
        },
    };
    if let Some(r) = response {
        reply(&sock, r).await;
    }
    sock.close().await;
}

/// Writes `r` and its newline (bounded by the idle timeout).
async fn reply(sock: &TcpSocket, r: Response<'_>) {
    let _ = timeout(IDLE_TIMEOUT_US, sock.write_all(format!("{r}\n").as_bytes())).await;
}

/// Serves an authorized request; the response to send, if any.
async fn respond<'a>(sock: &TcpSocket, req: Request<'_>, early: usize) -> Option<Response<'a>> {
    Some(match req {
        Request::Status => {
            let ctx = CTX.get().expect("set by serve");
            let (ip, gw) = net::with(|s| (s.ip, s.gateway));
            let (free, total) = crate::mem::frame_stats();
            Response::Status(Status {
                version: crate::VERSION,
                build: crate::BUILD_ID,
                uptime_us: time::uptime_us(),
                heap_used: crate::mem::heap_used() as u64,
                heap_total: crate::mem::heap_total() as u64,
                frames_free: free,
                frames_total: total,
                pool_used: crate::regions::used_bytes(),
                pool_total: crate::regions::total_bytes(),
                ip: ip.map(|ip| Cidr {
                    address: ip.address(),
                    prefix_len: ip.prefix_len(),
                }),
                gateway: gw,
                devices: &ctx.devices,
                entropy: crate::entropy::sources(),
            })
        }
        Request::Sleep { ms } => {
            let t0 = time::uptime_us();
            executor::sleep_us(ms.saturating_mul(1000)).await;
            Response::Slept {
                requested_ms: ms,
                measured_us: time::uptime_us() - t0,
            }
        }
        Request::Time => Response::Time {
            uptime_us: time::uptime_us(),
            wall_unix: time::wall_unix(),
        },
        Request::Ping(addr) => match net::ping(addr, crate::entropy::weak_u16(), 1_000_000).await {
            Some(rtt_us) => Response::Pong { rtt_us },
            None => Response::Timeout,
        },
        Request::Resolve(name) => match net::resolve(name).await {
            Ok(a) => Response::Addr(a),
            Err(e) => Response::Error(match e {
                net::ResolveError::BadName => Failure::BadName,
                net::ResolveError::NoAddress => Failure::NoAddress,
                net::ResolveError::Failed | net::ResolveError::Busy => Failure::ResolveFailed,
            }),
        },
        Request::BlkRead { sector } => match crate::blk::read(sector).await {
            Ok(data) => Response::Data(data),
            Err(e) => Response::Error(e),
        },
        // Authorized by `handle`.
        Request::BlkWrite { sector, data } => match crate::blk::write(sector, &data).await {
            Ok(()) => Response::Ok,
            Err(e) => Response::Error(e),
        },
        Request::Sink => {
            let t0 = time::uptime_us();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = early as u64;
            loop {
                match timeout(IDLE_TIMEOUT_US, sock.read(&mut buf)).await {
                    Some(0) => break,
                    Some(n) => total += n as u64,
                    None => break, // a stalled sender is closed on
                }
            }
            Response::Received {
                bytes: total,
                us: time::uptime_us() - t0,
            }
        }
        Request::Source { bytes } => {
            let buf = vec![b'x'; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                // Each chunk must make progress: a peer that stops reading
                // does not keep the connection.
                if timeout(IDLE_TIMEOUT_US, sock.write_all(&buf[..n])).await != Some(true) {
                    break;
                }
                left -= n as u64;
            }
            return None;
        }
        // Authorized by `handle`.
        Request::Shutdown => {
            info!("diag", "shutdown requested");
            reply(sock, Response::Bye).await;
            // Send our FIN and let the reply and the FIN reach the peer before
            // the machine goes away (bounded: `close` gives up after 2 s), so
            // the client sees a clean end of stream even over tap.
            sock.close().await;
            exit(ExitCode::Success);
        }
    })
}
