//! Client of the kernel's diagnostic TCP service (contract: *Diagnostic
//! service*). The kernel answers one request per connection, then closes, so
//! every request opens a fresh connection. A client given the node's
//! `skiff.diag_token` sends it with every request (mutating requests need it).

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use skiff_diag::{Hex, Line, Request, Response, parse_response};

#[derive(Debug, Clone)]
pub struct DiagClient {
    addr: SocketAddr,
    timeout: Duration,
    token: Option<String>,
}

/// A `status` response, kept as the node sent it; [`Status::fields`] reads
/// it (`skiff-diag`'s parser checked it when it arrived).
#[derive(Clone, PartialEq, Eq)]
pub struct Status {
    text: String,
}

impl Status {
    /// A complete response; `None` unless it is a whole `status` response.
    pub fn parse(text: String) -> Option<Self> {
        matches!(parse_response(&text), Ok(Response::Status(_))).then_some(Self { text })
    }

    pub fn fields(&self) -> skiff_diag::Status<'_> {
        match parse_response(&self.text) {
            Ok(Response::Status(s)) => s,
            _ => unreachable!("checked by Status::parse"),
        }
    }

    /// The `devices` list, e.g. `["virtio-net@mmio:0xfeb00e00", ...]`.
    pub fn devices(&self) -> Vec<&str> {
        self.fields().devices().collect()
    }

    /// The response as sent.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fields().fmt(f)
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl DiagClient {
    /// A client for `addr`; no I/O until a request. Per-request I/O timeout 10 s.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            timeout: Duration::from_secs(10),
            token: None,
        }
    }

    /// Sends `token` (the node's `skiff.diag_token`) with every request;
    /// `None` sends none.
    pub fn with_token(mut self, token: Option<impl Into<String>>) -> Self {
        self.token = token.map(Into::into);
        self
    }

    /// The same client sending no token (to check refusals).
    pub fn without_token(mut self) -> Self {
        self.token = None;
        self
    }

    /// The request line as sent: `request`, then the token if any.
    fn line(&self, request: impl fmt::Display) -> String {
        let line = Line {
            request,
            token: self.token.as_deref(),
        };
        format!("{line}\n")
    }

    /// Waits until the service at `addr` answers `status` (retrying while the
    /// node boots: QEMU's hostfwd accepts and then drops connections until the
    /// guest listens).
    pub fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let client = Self::new(addr);
        client.wait_ready(timeout)?;
        Ok(client)
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Retries `status` until it answers completely; returns it.
    pub fn wait_ready(&self, timeout: Duration) -> io::Result<Status> {
        let deadline = Instant::now() + timeout;
        let quick = self.clone().with_timeout(Duration::from_secs(2));
        loop {
            let err = match quick.status() {
                Ok(s) => return Ok(s),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "diag service at {} not answering `status` after {timeout:?}: {err}",
                        self.addr
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn open(&self) -> io::Result<TcpStream> {
        let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        s.set_nodelay(true)?;
        Ok(s)
    }

    /// Sends one request line and returns the whole response (until the
    /// kernel closes the connection). Any text goes, for tests of how the
    /// node answers malformed lines; the typed requests below are the API.
    pub fn request(&self, line: &str) -> io::Result<String> {
        self.send(line)
    }

    fn send(&self, request: impl fmt::Display) -> io::Result<String> {
        let mut s = self.open()?;
        s.write_all(self.line(request).as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Sends `request` and maps its response with `want`; any other
    /// response (an `error` among them) is an `InvalidData` error.
    fn call<T>(
        &self,
        request: &Request<'_>,
        want: impl FnOnce(Response<'_>) -> Option<T>,
    ) -> io::Result<T> {
        let text = self.send(request)?;
        parse_response(&text)
            .ok()
            .and_then(want)
            .ok_or_else(|| bad(format!("{request}: {:?}", text.trim_end())))
    }

    /// Like [`DiagClient::request`], also returning the host round-trip time
    /// from just before connecting to the connection's close.
    pub fn timed_request(&self, line: &str) -> io::Result<(String, Duration)> {
        let t = Instant::now();
        let r = self.request(line)?;
        Ok((r, t.elapsed()))
    }

    pub fn status(&self) -> io::Result<Status> {
        let text = self.send(Request::Status)?;
        Status::parse(text.clone())
            .ok_or_else(|| bad(format!("incomplete status response: {text:?}")))
    }

    /// `sleep <ms>`: returns the kernel's measured microseconds and the host
    /// round trip.
    pub fn sleep(&self, ms: u64) -> io::Result<(u64, Duration)> {
        let t = Instant::now();
        let us = self.call(&Request::Sleep { ms }, |r| match r {
            Response::Slept { measured_us, .. } => Some(measured_us),
            _ => None,
        })?;
        Ok((us, t.elapsed()))
    }

    /// `time`: the node's `(uptime_us, wall_unix)`.
    pub fn time(&self) -> io::Result<(u64, u64)> {
        self.call(&Request::Time, |r| match r {
            Response::Time {
                uptime_us,
                wall_unix,
            } => Some((uptime_us, wall_unix)),
            _ => None,
        })
    }

    /// `ping <ip>`: `Some(rtt_us)` on `pong`, `None` on `timeout`.
    pub fn ping(&self, ip: Ipv4Addr) -> io::Result<Option<u64>> {
        self.call(&Request::Ping(ip), |r| match r {
            Response::Pong { rtt_us } => Some(Some(rtt_us)),
            Response::Timeout => Some(None),
            _ => None,
        })
    }

    /// `blk-read <sector>`: the 512 bytes.
    pub fn blk_read(&self, sector: u64) -> io::Result<Vec<u8>> {
        self.call(&Request::BlkRead { sector }, |r| match r {
            Response::Data(d) => Some(d.to_vec()),
            _ => None,
        })
    }

    /// `blk-write <sector> <hex>` (needs the token); up to 512 bytes.
    pub fn blk_write(&self, sector: u64, data: &[u8]) -> io::Result<()> {
        let request = Request::blk_write(sector, data).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "blk-write {sector}: {} bytes is more than a sector",
                    data.len()
                ),
            )
        })?;
        self.call(&request, |r| matches!(r, Response::Ok).then_some(()))
    }

    /// `sink`: streams `total` bytes (in `chunk`-sized writes), half-closes,
    /// and returns the kernel's `(bytes, us)` report.
    pub fn sink(&self, total: u64, chunk: usize) -> io::Result<(u64, u64)> {
        let mut s = self.open()?;
        s.write_all(self.line(Request::Sink).as_bytes())?;
        let buf = vec![0x5au8; chunk.max(1)];
        let mut left = total;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            s.write_all(&buf[..n])?;
            left -= n as u64;
        }
        s.shutdown(Shutdown::Write)?;
        let mut r = String::new();
        s.read_to_string(&mut r)?;
        match parse_response(&r) {
            Ok(Response::Received { bytes, us }) => Ok((bytes, us)),
            _ => Err(bad(format!("bad sink response: {r:?}"))),
        }
    }

    /// `source <bytes>`: reads until the kernel closes; returns bytes received.
    pub fn source(&self, bytes: u64) -> io::Result<u64> {
        let mut s = self.open()?;
        s.write_all(self.line(Request::Source { bytes }).as_bytes())?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf)? {
                0 => return Ok(got),
                n => got += n as u64,
            }
        }
    }

    /// `shutdown` (needs the token): the reply line (`bye` expected); the
    /// node then exits SUCCESS. Reads one line, not to EOF: the VM may be
    /// gone before its FIN leaves (on a tap device nobody would then close
    /// the connection).
    pub fn shutdown(&self) -> io::Result<String> {
        let mut s = self.open()?;
        s.write_all(self.line(Request::Shutdown).as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    }
}

/// A fresh random `skiff.diag_token` (32 hex digits, 128 bits).
pub fn new_diag_token() -> io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(Hex(&b).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    const STATUS: &str = "version=0.1.0\nbuild=x\nuptime_us=1\nheap_used=2\nheap_total=3\n\
                          frames_free=4\nframes_total=5\nip=10.0.2.15/24\ngateway=none\n\
                          devices=virtio-net@mmio:0xfeb00e00,virtio-blk@pci:00:03.0\n\
                          entropy=rdrand\nend\n";

    #[test]
    fn status_parses_until_end() {
        let s = Status::parse(STATUS.into()).unwrap();
        assert_eq!(s.fields().ip.unwrap().to_string(), "10.0.2.15/24");
        assert_eq!(s.fields().gateway, None);
        assert_eq!(
            s.devices(),
            ["virtio-net@mmio:0xfeb00e00", "virtio-blk@pci:00:03.0"]
        );
        assert_eq!(
            Status::parse(STATUS.replace("end\n", "")),
            None,
            "truncated response"
        );
    }

    #[test]
    fn a_token_goes_with_every_request() {
        let c = DiagClient::new(([127, 0, 0, 1], 1).into());
        assert_eq!(c.line("shutdown"), "shutdown\n");
        let t = new_diag_token().unwrap();
        assert_eq!(t.len(), 32);
        assert_ne!(t, new_diag_token().unwrap());
        let c = c.with_token(Some(t.clone()));
        assert_eq!(
            c.line("blk-write 1 00"),
            format!("blk-write 1 00 token={t}\n")
        );
    }

    /// A fake one-request-per-connection server, as the kernel behaves.
    fn fake(replies: Vec<&'static str>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for reply in replies {
                let (mut s, _) = l.accept().unwrap();
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read(&mut b).unwrap() == 1 && b[0] != b'\n' {
                    line.push(b[0]);
                }
                s.write_all(reply.as_bytes()).unwrap();
            }
        });
        addr
    }

    #[test]
    fn typed_requests_against_fake_service() {
        let addr = fake(vec![
            "",
            STATUS,
            "slept requested_ms=100 measured_us=100123\n",
            "pong rtt_us=250\n",
            "timeout\n",
            "ok\n",
            "error no-block-device\n",
        ]);
        // The first connection is dropped without an answer, as QEMU's
        // hostfwd does before the guest listens: connect() retries.
        let c = DiagClient::connect(addr, Duration::from_secs(5)).unwrap();
        assert_eq!(c.sleep(100).unwrap().0, 100_123);
        assert_eq!(c.ping([10, 0, 2, 2].into()).unwrap(), Some(250));
        assert_eq!(c.ping([10, 0, 2, 2].into()).unwrap(), None);
        c.blk_write(1, &[1, 2, 3]).unwrap();
        assert!(c.blk_read(1).is_err());
        assert!(c.blk_write(1, &[0; 513]).is_err(), "refused before sending");
    }
}
