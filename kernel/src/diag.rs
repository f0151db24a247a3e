//! The diagnostic TCP service (`skiff.diag=<port>`, kernel/README.md).
//!
//! `BACKLOG` acceptor tasks each keep one listening socket; when one
//! accepts, a handler task takes the connection and the acceptor listens
//! again, so several clients are served concurrently. Request parsing lives in `skiff-diag`.

use alloc::string::String;
use alloc::vec;
use core::fmt::Write;

use skiff_diag::Request;

use crate::arch::exit::{ExitCode, exit};
use crate::arch::time;
use crate::executor;
use crate::net::{self, TcpSocket};

/// Per-direction TCP buffer of each diag socket. 256 KiB gives a scaled
/// window large enough for `sink`/`source` to stream at device speed; the
/// `BACKLOG` listeners hold 8 × 512 KiB = 4 MiB of the ~16 MiB heap.
const SOCKET_BUF: usize = 256 * 1024;

pub struct Ctx {
    pub diag_rw: bool,
    pub devices: String,
}

static CTX: spin::Once<Ctx> = spin::Once::new();

/// Listening sockets kept open at once: a burst of connection attempts
/// beyond this many (before an acceptor re-arms) is refused by TCP reset.
const BACKLOG: usize = 8;

pub fn serve(port: u16, ctx: Ctx) {
    CTX.call_once(|| ctx);
    for _ in 0..BACKLOG {
        executor::spawn(acceptor(port));
    }
    info!("stage", "diag-ready t_us={} port={port}", time::uptime_us());
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
        executor::spawn(handle(sock));
    }
}

async fn handle(sock: TcpSocket) {
    let mut line = vec![0u8; skiff_diag::MAX_LINE];
    let mut len = 0;
    loop {
        if len == line.len() {
            let _ = sock.write_all(b"error line-too-long\n").await;
            sock.close().await;
            return;
        }
        let n = sock.read(&mut line[len..]).await;
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
    debug!("diag", "request {:?}", text.trim_end());
    let mut out = String::new();
    match skiff_diag::parse(text) {
        Err(e) => out.push_str(e.response()),
        // Bytes after the request line already belong to a `sink` stream.
        Ok(req) => respond(&sock, req, len.saturating_sub(end + 1), &mut out).await,
    }
    if !out.is_empty() {
        out.push('\n');
        let _ = sock.write_all(out.as_bytes()).await;
    }
    sock.close().await;
}

async fn respond(sock: &TcpSocket, req: Request<'_>, early: usize, out: &mut String) {
    let ctx = CTX.get().expect("set by serve");
    match req {
        Request::Status => {
            let (ip, gw) = net::with(|s| (s.ip, s.gateway));
            let (free, total) = crate::mem::frame_stats();
            let _ = write!(
                out,
                "version={}\nbuild={}\nuptime_us={}\nheap_used={}\nheap_total={}\nframes_free={free}\nframes_total={total}\n",
                crate::VERSION,
                crate::BUILD_ID,
                time::uptime_us(),
                crate::mem::heap_used(),
                crate::mem::heap_total(),
            );
            match ip {
                Some(ip) => {
                    let _ = writeln!(out, "ip={ip}");
                }
                None => out.push_str("ip=none\n"),
            }
            match gw {
                Some(gw) => {
                    let _ = writeln!(out, "gateway={gw}");
                }
                None => out.push_str("gateway=none\n"),
            }
            let _ = write!(
                out,
                "devices={}\nentropy={}\nend",
                ctx.devices,
                crate::entropy::sources()
            );
        }
        Request::Sleep { ms } => {
            let t0 = time::uptime_us();
            executor::sleep_us(ms.saturating_mul(1000)).await;
            let _ = write!(
                out,
                "slept requested_ms={ms} measured_us={}",
                time::uptime_us() - t0
            );
        }
        Request::Time => {
            let _ = write!(
                out,
                "uptime_us={} wall_unix={}",
                time::uptime_us(),
                time::wall_unix()
            );
        }
        Request::Ping(addr) => match net::ping(addr, crate::entropy::weak_u16(), 1_000_000).await {
            Some(rtt) => {
                let _ = write!(out, "pong rtt_us={rtt}");
            }
            None => out.push_str("timeout"),
        },
        Request::Resolve(name) => match net::resolve(name).await {
            Ok(a) => {
                let _ = write!(out, "addr {a}");
            }
            Err(e) => {
                let _ = write!(out, "error {e}");
            }
        },
        Request::BlkRead { sector } => match crate::blk::read(sector).await {
            Ok(data) => {
                let mut hex = [0u8; 2 * skiff_diag::SECTOR];
                let _ = write!(out, "data {}", skiff_diag::encode_hex(&data, &mut hex));
            }
            Err(e) => {
                let _ = write!(out, "error {e}");
            }
        },
        Request::BlkWrite { sector, data } => {
            if !ctx.diag_rw {
                out.push_str("error read-only");
            } else {
                match crate::blk::write(sector, &data).await {
                    Ok(()) => out.push_str("ok"),
                    Err(e) => {
                        let _ = write!(out, "error {e}");
                    }
                }
            }
        }
        Request::Sink => {
            let t0 = time::uptime_us();
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = early as u64;
            loop {
                let n = sock.read(&mut buf).await;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            let _ = write!(out, "received bytes={total} us={}", time::uptime_us() - t0);
        }
        Request::Source { bytes } => {
            let buf = vec![b'x'; 64 * 1024];
            let mut left = bytes;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                if !sock.write_all(&buf[..n]).await {
                    break;
                }
                left -= n as u64;
            }
        }
        Request::Shutdown => {
            let _ = sock.write_all(b"bye\n").await;
            // Send our FIN and let the reply and the FIN reach the peer before
            // the machine goes away (bounded: `close` gives up after 2 s), so
            // the client sees a clean end of stream even over tap.
            sock.close().await;
            exit(ExitCode::Success);
        }
    }
}
