//! Client of the kernel's diagnostic TCP service (contract: *Diagnostic
//! service*). The kernel answers one request per connection, then closes, so
//! every request opens a fresh connection. A client given the node's
//! `skiff.diag_token` sends it with every request (mutating requests need it).
//! Requests are written and responses parsed by `skiff-diag`, the kernel's
//! own implementation of the protocol; a refusal is [`DiagError::Refused`]
//! with the node's reason.

use std::fmt;
use std::io::{self, BufRead, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use skiff_diag::{Failure, Hex, Line, Request, Response, parse_response};

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
    /// A complete `status` response; anything else is given back.
    pub fn parse(text: String) -> Result<Self, String> {
        match parse_response(&text) {
            Ok(Response::Status(_)) => Ok(Self { text }),
            _ => Err(text),
        }
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

/// Why a diagnostic request did not get the answer it asks for.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// Connecting, sending or receiving failed (or timed out).
    #[error("diag service at {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// The node refused: it answered `error <reason>`.
    #[error("{request}: the node answered `error {failure}`")]
    Refused { request: String, failure: Failure },
    /// Not the response the request asks for, or no response at all.
    #[error("{request}: unexpected response {response:?}")]
    Unexpected { request: String, response: String },
    /// A request the client does not send (a `blk-write` over a sector).
    #[error("{request}: {why}")]
    Invalid { request: String, why: &'static str },
    /// [`DiagClient::wait_ready`] gave up.
    #[error("diag service at {addr} not answering `status` after {waited:?}: {last}")]
    NotReady {
        addr: SocketAddr,
        waited: Duration,
        #[source]
        last: Box<DiagError>,
    },
}

impl DiagError {
    /// What the response to `request` was instead of the one wanted.
    fn unexpected(request: impl fmt::Display, response: &str) -> DiagError {
        let request = request.to_string();
        match parse_response(response) {
            Ok(Response::Error(failure)) => DiagError::Refused { request, failure },
            _ => DiagError::Unexpected {
                request,
                response: response.to_owned(),
            },
        }
    }
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
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, DiagError> {
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
    pub fn wait_ready(&self, timeout: Duration) -> Result<Status, DiagError> {
        let deadline = Instant::now() + timeout;
        let quick = self.clone().with_timeout(Duration::from_secs(2));
        loop {
            let err = match quick.status() {
                Ok(s) => return Ok(s),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(DiagError::NotReady {
                    addr: self.addr,
                    waited: timeout,
                    last: Box::new(err),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn io(&self, source: io::Error) -> DiagError {
        DiagError::Io {
            addr: self.addr,
            source,
        }
    }

    /// A connection with `request`'s line sent.
    fn open(&self, request: impl fmt::Display) -> Result<TcpStream, DiagError> {
        let open = || {
            let mut s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            s.set_nodelay(true)?;
            s.write_all(self.line(request).as_bytes())?;
            Ok(s)
        };
        open().map_err(|e| self.io(e))
    }

    /// Sends one request line and returns the whole response (until the
    /// kernel closes the connection). Any text goes, for tests of how the
    /// node answers malformed lines; the typed requests below are the API.
    pub fn request(&self, line: &str) -> Result<String, DiagError> {
        self.send(line)
    }

    fn send(&self, request: impl fmt::Display) -> Result<String, DiagError> {
        let mut s = self.open(request)?;
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| self.io(e))?;
        Ok(out)
    }

    /// Sends `request` and maps its response with `want`; any other
    /// response is [`DiagError::Refused`] or [`DiagError::Unexpected`].
    fn call<T>(
        &self,
        request: &Request<'_>,
        want: impl FnOnce(Response<'_>) -> Option<T>,
    ) -> Result<T, DiagError> {
        let text = self.send(request)?;
        parse_response(&text)
            .ok()
            .and_then(want)
            .ok_or_else(|| DiagError::unexpected(request, &text))
    }

    /// Like [`DiagClient::request`], also returning the host round-trip time
    /// from just before connecting to the connection's close.
    pub fn timed_request(&self, line: &str) -> Result<(String, Duration), DiagError> {
        let t = Instant::now();
        let r = self.request(line)?;
        Ok((r, t.elapsed()))
    }

    pub fn status(&self) -> Result<Status, DiagError> {
        let text = self.send(Request::Status)?;
        Status::parse(text).map_err(|text| DiagError::unexpected(Request::Status, &text))
    }

    /// `sleep <ms>`: returns the kernel's measured microseconds and the host
    /// round trip.
    pub fn sleep(&self, ms: u64) -> Result<(u64, Duration), DiagError> {
        let t = Instant::now();
        let us = self.call(&Request::Sleep { ms }, |r| match r {
            Response::Slept { measured_us, .. } => Some(measured_us),
            _ => None,
        })?;
        Ok((us, t.elapsed()))
    }

    /// `time`: the node's `(uptime_us, wall_unix)`.
    pub fn time(&self) -> Result<(u64, u64), DiagError> {
        self.call(&Request::Time, |r| match r {
            Response::Time {
                uptime_us,
                wall_unix,
            } => Some((uptime_us, wall_unix)),
            _ => None,
        })
    }

    /// `ping <ip>`: `Some(rtt_us)` on `pong`, `None` on `timeout`.
    pub fn ping(&self, ip: Ipv4Addr) -> Result<Option<u64>, DiagError> {
        self.call(&Request::Ping(ip), |r| match r {
            Response::Pong { rtt_us } => Some(Some(rtt_us)),
            Response::Timeout => Some(None),
            _ => None,
        })
    }

    /// `blk-read <sector>`: the 512 bytes.
    pub fn blk_read(&self, sector: u64) -> Result<Vec<u8>, DiagError> {
        self.call(&Request::BlkRead { sector }, |r| match r {
            Response::Data(d) => Some(d.to_vec()),
            _ => None,
        })
    }

    /// `blk-write <sector> <hex>` (needs the token); up to 512 bytes.
    pub fn blk_write(&self, sector: u64, data: &[u8]) -> Result<(), DiagError> {
        let request = Request::blk_write(sector, data).ok_or(DiagError::Invalid {
            request: format!("blk-write {sector}"),
            why: "more than a sector of data",
        })?;
        self.call(&request, |r| matches!(r, Response::Ok).then_some(()))
    }

    /// `sink`: streams `total` bytes (in `chunk`-sized writes), half-closes,
    /// and returns the kernel's `(bytes, us)` report.
    pub fn sink(&self, total: u64, chunk: usize) -> Result<(u64, u64), DiagError> {
        let mut s = self.open(Request::Sink)?;
        let mut stream = || {
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
            Ok(r)
        };
        let r = stream().map_err(|e| self.io(e))?;
        match parse_response(&r) {
            Ok(Response::Received { bytes, us }) => Ok((bytes, us)),
            _ => Err(DiagError::unexpected(Request::Sink, &r)),
        }
    }

    /// `source <bytes>`: reads until the kernel closes; returns bytes received.
    pub fn source(&self, bytes: u64) -> Result<u64, DiagError> {
        let mut s = self.open(Request::Source { bytes })?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0u64;
        loop {
            match s.read(&mut buf).map_err(|e| self.io(e))? {
                0 => return Ok(got),
                n => got += n as u64,
            }
        }
    }

    /// `shutdown` (needs the token): the reply line (`bye` expected); the
    /// node then exits SUCCESS. Reads one line, not to EOF: the VM may be
    /// gone before its FIN leaves (on a tap device nobody would then close
    /// the connection).
    pub fn shutdown(&self) -> Result<String, DiagError> {
        let s = self.open(Request::Shutdown)?;
        let mut line = String::new();
        std::io::BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| self.io(e))?;
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
                          frames_free=4\nframes_total=5\npool_used=6\npool_total=7\n\
                          ip=10.0.2.15/24\ngateway=none\n\
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
        assert!(
            Status::parse(STATUS.replace("end\n", "")).is_err(),
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
            "pong\n",
        ]);
        // The first connection is dropped without an answer, as QEMU's
        // hostfwd does before the guest listens: connect() retries.
        let c = DiagClient::connect(addr, Duration::from_secs(5)).unwrap();
        assert_eq!(c.sleep(100).unwrap().0, 100_123);
        assert_eq!(c.ping([10, 0, 2, 2].into()).unwrap(), Some(250));
        assert_eq!(c.ping([10, 0, 2, 2].into()).unwrap(), None);
        c.blk_write(1, &[1, 2, 3]).unwrap();
        assert!(matches!(
            c.blk_read(1),
            Err(DiagError::Refused {
                failure: Failure::NoBlockDevice,
                ..
            })
        ));
        assert!(
            matches!(c.blk_write(1, &[0; 513]), Err(DiagError::Invalid { .. })),
            "refused before sending"
        );
        assert!(matches!(
            c.ping([10, 0, 2, 2].into()),
            Err(DiagError::Unexpected { .. })
        ));
    }
}
