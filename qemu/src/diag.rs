//! Client of the kernel's diagnostic TCP service (contract: *Diagnostic
//! service*). The kernel answers one request per connection, then closes, so
//! every request opens a fresh connection. A client given the node's
//! `skiff.diag_token` sends it with every request (mutating requests need it).

use std::collections::BTreeMap;
use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct DiagClient {
    addr: SocketAddr,
    timeout: Duration,
    token: Option<String>,
}

/// The `status` response: `key=value` lines up to `end`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub fields: BTreeMap<String, String>,
}

impl Status {
    /// Parses a complete response; `None` unless it ends with the `end` line.
    pub fn parse(text: &str) -> Option<Self> {
        let mut fields = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line == "end" {
                return Some(Self { fields });
            }
            if let Some((k, v)) = line.split_once('=') {
                fields.insert(k.to_owned(), v.to_owned());
            }
        }
        None
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The `devices` list, e.g. `["virtio-net@mmio:0xfeb00e00", ...]`.
    pub fn devices(&self) -> Vec<&str> {
        self.get("devices")
            .map(|d| d.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
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

    /// The request line as sent: `line`, then the token if any.
    fn line(&self, line: &str) -> String {
        match &self.token {
            Some(t) => format!("{line} token={t}\n"),
            None => format!("{line}\n"),
        }
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
    /// kernel closes the connection).
    pub fn request(&self, line: &str) -> io::Result<String> {
        let mut s = self.open()?;
        s.write_all(self.line(line).as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    }

    /// Like [`DiagClient::request`], also returning the host round-trip time
    /// from just before connecting to the connection's close.
    pub fn timed_request(&self, line: &str) -> io::Result<(String, Duration)> {
        let t = Instant::now();
        let r = self.request(line)?;
        Ok((r, t.elapsed()))
    }

    pub fn status(&self) -> io::Result<Status> {
        let text = self.request("status")?;
        Status::parse(&text).ok_or_else(|| bad(format!("incomplete status response: {text:?}")))
    }

    /// `sleep <ms>`: returns the kernel's measured microseconds and the host
    /// round trip.
    pub fn sleep(&self, ms: u64) -> io::Result<(u64, Duration)> {
        let (r, rtt) = self.timed_request(&format!("sleep {ms}"))?;
        let us = r
            .strip_prefix("slept ")
            .and_then(|r| crate::log::field(r, "measured_us"))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad(format!("bad sleep response: {r:?}")))?;
        Ok((us, rtt))
    }

    /// `ping <ip>`: `Some(rtt_us)` on `pong`, `None` on `timeout`.
    pub fn ping(&self, ip: &str) -> io::Result<Option<u64>> {
        let r = self.request(&format!("ping {ip}"))?;
        let r = r.trim();
        if r == "timeout" {
            return Ok(None);
        }
        r.strip_prefix("pong ")
            .and_then(|r| crate::log::field(r, "rtt_us"))
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| bad(format!("bad ping response: {r:?}")))
    }

    /// `blk-read <sector>`: the 512 bytes.
    pub fn blk_read(&self, sector: u64) -> io::Result<Vec<u8>> {
        let r = self.request(&format!("blk-read {sector}"))?;
        let hex = r
            .trim()
            .strip_prefix("data ")
            .ok_or_else(|| bad(format!("blk-read {sector}: {r:?}")))?;
        decode_hex(hex).ok_or_else(|| bad(format!("blk-read {sector}: bad hex {hex:?}")))
    }

    /// `blk-write <sector> <hex>` (needs the token); up to 512 bytes.
    pub fn blk_write(&self, sector: u64, data: &[u8]) -> io::Result<()> {
        let r = self.request(&format!("blk-write {sector} {}", encode_hex(data)))?;
        if r.trim() == "ok" {
            Ok(())
        } else {
            Err(bad(format!("blk-write {sector}: {r:?}")))
        }
    }

    /// `sink`: streams `total` bytes (in `chunk`-sized writes), half-closes,
    /// and returns the kernel's `(bytes, us)` report.
    pub fn sink(&self, total: u64, chunk: usize) -> io::Result<(u64, u64)> {
        let mut s = self.open()?;
        s.write_all(self.line("sink").as_bytes())?;
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
        let parse = |k| crate::log::field(&r, k).and_then(|v| v.parse().ok());
        match (r.starts_with("received "), parse("bytes"), parse("us")) {
            (true, Some(b), Some(us)) => Ok((b, us)),
            _ => Err(bad(format!("bad sink response: {r:?}"))),
        }
    }

    /// `source <bytes>`: reads until the kernel closes; returns bytes received.
    pub fn source(&self, bytes: u64) -> io::Result<u64> {
        let mut s = self.open()?;
        s.write_all(self.line(&format!("source {bytes}")).as_bytes())?;
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
        s.write_all(self.line("shutdown").as_bytes())?;
        let mut line = String::new();
        std::io::BufReader::new(s).read_line(&mut line)?;
        Ok(line)
    }
}

/// A fresh random `skiff.diag_token` (32 hex digits, 128 bits).
pub fn new_diag_token() -> io::Result<String> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(encode_hex(&b))
}

pub(crate) fn encode_hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn status_parses_until_end() {
        let s = Status::parse(
            "version=0.1.0\nip=10.0.2.15/24\ndevices=virtio-net@mmio:0xfeb00e00,virtio-blk@pci:00:03.0\nend\n",
        )
        .unwrap();
        assert_eq!(s.get("ip"), Some("10.0.2.15/24"));
        assert_eq!(
            s.devices(),
            ["virtio-net@mmio:0xfeb00e00", "virtio-blk@pci:00:03.0"]
        );
        assert_eq!(Status::parse("ip=1\n"), None, "truncated response");
    }

    #[test]
    fn hex_round_trip() {
        let data: Vec<u8> = (0..=255).collect();
        assert_eq!(decode_hex(&encode_hex(&data)).unwrap(), data);
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
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
            "version=x\nend\n",
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
        assert_eq!(c.ping("10.0.2.2").unwrap(), Some(250));
        assert_eq!(c.ping("10.0.2.2").unwrap(), None);
        c.blk_write(1, &[1, 2, 3]).unwrap();
        assert!(c.blk_read(1).is_err());
    }
}
