//! The diagnostic service's request language (kernel/README.md,
//! "Diagnostic service"): one ASCII line in, a [`Request`] out.
//!
//! Unknown verbs are [`ParseError::Unknown`] (`error unknown-request` on the
//! wire); a known verb with bad arguments is [`ParseError::BadArgument`]
//! (`error bad-argument`). No allocation: the sector payload of `blk-write`
//! is decoded into a fixed 512-byte buffer.
//!
//! A line may end with `token=<secret>`: requests that change the node
//! ([`Request::is_mutating`]) are served only when the node was given
//! `skiff.diag_token` and the line carries it ([`authorize`]).
#![cfg_attr(not(test), no_std)]

use core::net::Ipv4Addr;

pub const SECTOR: usize = 512;
/// Longest accepted request line (a full `blk-write` with a token is
/// ~1200 bytes).
pub const MAX_LINE: usize = 2048;
/// Longest `sleep`: a request holds one of the service's few connections.
pub const MAX_SLEEP_MS: u64 = 60_000;

// The sector buffer makes `BlkWrite` large; boxing would need `alloc`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Status,
    Sleep {
        ms: u64,
    },
    Time,
    Ping(Ipv4Addr),
    Resolve(&'a str),
    BlkRead {
        sector: u64,
    },
    /// `data` is zero-padded to a whole sector.
    BlkWrite {
        sector: u64,
        data: [u8; SECTOR],
    },
    Sink,
    Source {
        bytes: u64,
    },
    Shutdown,
}

impl Request<'_> {
    /// Whether the request changes the node (its disk, or whether it runs);
    /// these need the token.
    pub fn is_mutating(&self) -> bool {
        matches!(self, Request::BlkWrite { .. } | Request::Shutdown)
    }
}

/// One request line: the request and the token it carries, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a> {
    pub request: Request<'a>,
    pub token: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    Unknown,
    BadArgument,
}

impl ParseError {
    /// The response line for this error.
    pub fn response(self) -> &'static str {
        match self {
            ParseError::Unknown => "error unknown-request",
            ParseError::BadArgument => "error bad-argument",
        }
    }
}

/// Why a mutating request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// The node has no `skiff.diag_token`: the service is read-only.
    ReadOnly,
    /// The line carries no token or the wrong one.
    Unauthorized,
}

impl Denied {
    /// The response line for this refusal.
    pub fn response(self) -> &'static str {
        match self {
            Denied::ReadOnly => "error read-only",
            Denied::Unauthorized => "error unauthorized",
        }
    }
}

/// Whether `line` may run on a node whose token is `expected`. Read-only
/// requests always may (a token on them is not checked).
pub fn authorize(line: &Line<'_>, expected: Option<&str>) -> Result<(), Denied> {
    if !line.request.is_mutating() {
        return Ok(());
    }
    let expected = expected.ok_or(Denied::ReadOnly)?;
    match line.token {
        Some(given) if token_eq(expected.as_bytes(), given.as_bytes()) => Ok(()),
        _ => Err(Denied::Unauthorized),
    }
}

/// Compares in time that depends on the lengths only, not on where the
/// bytes differ (the port is reachable from the node's network).
fn token_eq(want: &[u8], given: &[u8]) -> bool {
    let mut diff = want.len() ^ given.len();
    for (i, &w) in want.iter().enumerate() {
        diff |= usize::from(w ^ given.get(i).copied().unwrap_or(!w));
    }
    diff == 0
}

/// Parses one request line (without or with its trailing `\r`/`\n`).
pub fn parse(line: &str) -> Result<Line<'_>, ParseError> {
    let line = line.trim_end_matches(['\r', '\n']);
    // The token is the last word; the words before it are the request.
    let (line, token) = match line
        .trim_end()
        .rsplit_once(|c: char| c.is_ascii_whitespace())
    {
        Some((rest, last)) if last.starts_with("token=") => (rest, Some(&last[6..])),
        _ => (line, None),
    };
    Ok(Line {
        request: parse_request(line)?,
        token,
    })
}

/// A request line to log: as given, with the token's value left out.
pub struct Redacted<'a>(pub &'a str);

impl core::fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, word) in self.0.split_ascii_whitespace().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if word.starts_with("token=") {
                f.write_str("token=<redacted>")?;
            } else {
                // A `blk-write` payload is long: the first bytes say enough.
                f.write_str(word.get(..80).unwrap_or(word))?;
            }
        }
        Ok(())
    }
}

fn parse_request(line: &str) -> Result<Request<'_>, ParseError> {
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().ok_or(ParseError::Unknown)?;
    let mut arg = || words.next().ok_or(ParseError::BadArgument);
    let num = |s: &str| s.parse::<u64>().map_err(|_| ParseError::BadArgument);
    let req = match verb {
        "status" => Request::Status,
        "time" => Request::Time,
        "sink" => Request::Sink,
        "shutdown" => Request::Shutdown,
        "sleep" => {
            let ms = num(arg()?)?;
            if ms > MAX_SLEEP_MS {
                return Err(ParseError::BadArgument);
            }
            Request::Sleep { ms }
        }
        "ping" => Request::Ping(arg()?.parse().map_err(|_| ParseError::BadArgument)?),
        "resolve" => {
            let name = arg()?;
            if name.len() > 253 {
                return Err(ParseError::BadArgument);
            }
            Request::Resolve(name)
        }
        "blk-read" => Request::BlkRead {
            sector: num(arg()?)?,
        },
        "blk-write" => {
            let sector = num(arg()?)?;
            let mut data = [0u8; SECTOR];
            decode_hex(arg()?, &mut data).ok_or(ParseError::BadArgument)?;
            Request::BlkWrite { sector, data }
        }
        "source" => Request::Source {
            bytes: num(arg()?)?,
        },
        _ => return Err(ParseError::Unknown),
    };
    if words.next().is_some() {
        return Err(ParseError::BadArgument);
    }
    Ok(req)
}

/// Decodes hex (either case) into the front of `out`; the length written.
pub fn decode_hex(s: &str, out: &mut [u8]) -> Option<usize> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) || b.len() / 2 > out.len() {
        return None;
    }
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(b.len() / 2)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Encodes `data` as lowercase hex into `out` (which must hold 2× the bytes).
pub fn encode_hex<'o>(data: &[u8], out: &'o mut [u8]) -> &'o str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = data.len().min(out.len() / 2);
    for (i, b) in data[..n].iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    core::str::from_utf8(&out[..2 * n]).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(line: &str) -> Result<Request<'_>, ParseError> {
        parse(line).map(|l| l.request)
    }

    #[test]
    fn simple_verbs() {
        assert_eq!(req("status\n"), Ok(Request::Status));
        assert_eq!(req("time\r\n"), Ok(Request::Time));
        assert_eq!(req("sink"), Ok(Request::Sink));
        assert_eq!(req("shutdown"), Ok(Request::Shutdown));
        assert_eq!(req("sleep 250"), Ok(Request::Sleep { ms: 250 }));
        assert_eq!(
            req("source 1048576"),
            Ok(Request::Source { bytes: 1 << 20 })
        );
        assert_eq!(
            req("ping 10.0.2.2"),
            Ok(Request::Ping(Ipv4Addr::new(10, 0, 2, 2)))
        );
        assert_eq!(
            req("resolve example.com"),
            Ok(Request::Resolve("example.com"))
        );
        assert_eq!(req("blk-read 7"), Ok(Request::BlkRead { sector: 7 }));
    }

    #[test]
    fn blk_write_pads() {
        match req("blk-write 3 DEADbeef") {
            Ok(Request::BlkWrite { sector: 3, data }) => {
                assert_eq!(&data[..4], &[0xde, 0xad, 0xbe, 0xef]);
                assert!(data[4..].iter().all(|&b| b == 0));
            }
            other => panic!("{other:?}"),
        }
        let full = "ab".repeat(512);
        assert!(req(&format!("blk-write 0 {full}")).is_ok());
        let too_long = "ab".repeat(513);
        assert_eq!(
            req(&format!("blk-write 0 {too_long}")),
            Err(ParseError::BadArgument)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(req(""), Err(ParseError::Unknown));
        assert_eq!(req("reboot"), Err(ParseError::Unknown));
        assert_eq!(req("sleep"), Err(ParseError::BadArgument));
        assert_eq!(req("sleep -1"), Err(ParseError::BadArgument));
        assert_eq!(req("ping 10.0.2"), Err(ParseError::BadArgument));
        assert_eq!(req("blk-write 1 abc"), Err(ParseError::BadArgument));
        assert_eq!(req("blk-write 1 zz"), Err(ParseError::BadArgument));
        assert_eq!(req("status extra"), Err(ParseError::BadArgument));
        assert_eq!(ParseError::Unknown.response(), "error unknown-request");
    }

    #[test]
    fn hex_roundtrip() {
        let mut out = [0u8; 8];
        assert_eq!(encode_hex(&[0x00, 0x7f, 0xff], &mut out), "007fff");
        let mut back = [0u8; 3];
        assert_eq!(decode_hex("007fff", &mut back), Some(3));
        assert_eq!(back, [0, 0x7f, 0xff]);
    }

    #[test]
    fn tokens_gate_mutating_requests_only() {
        let secret = "0123456789abcdef-_XY";
        let l = parse("shutdown token=0123456789abcdef-_XY\n").unwrap();
        assert_eq!(l.request, Request::Shutdown);
        assert_eq!(l.token, Some(secret));
        assert_eq!(authorize(&l, Some(secret)), Ok(()));
        // No token configured: read-only whatever the line says.
        assert_eq!(authorize(&l, None), Err(Denied::ReadOnly));
        for line in [
            "shutdown",
            "shutdown token=",
            "shutdown token=0123456789abcdef-_X",
            "shutdown token=0123456789abcdef-_XYZ",
            "shutdown token=1123456789abcdef-_XY",
            "blk-write 1 00",
            "blk-write 1 00 token=wrong",
        ] {
            let l = parse(line).unwrap();
            assert!(l.request.is_mutating(), "{line}");
            assert_eq!(
                authorize(&l, Some(secret)),
                Err(Denied::Unauthorized),
                "{line}"
            );
        }
        // Read-only requests need none, and a token does not change them.
        for line in [
            "status",
            "time token=x",
            "blk-read 0",
            "sink",
            "source 1",
            "sleep 1",
        ] {
            let l = parse(line).unwrap();
            assert!(!l.request.is_mutating(), "{line}");
            assert_eq!(authorize(&l, Some(secret)), Ok(()), "{line}");
            assert_eq!(authorize(&l, None), Ok(()), "{line}");
        }
        // The token is not an argument: extra words are still refused.
        assert_eq!(req("shutdown now token=x"), Err(ParseError::BadArgument));
        assert_eq!(req("token=x"), Err(ParseError::Unknown));
        assert_eq!(Denied::Unauthorized.response(), "error unauthorized");
        assert_eq!(Denied::ReadOnly.response(), "error read-only");
    }

    #[test]
    fn logged_lines_hide_the_token() {
        let shown = Redacted("blk-write 1 abcd token=hunter2hunter2hunter2").to_string();
        assert_eq!(shown, "blk-write 1 abcd token=<redacted>");
        let long = format!("blk-write 1 {}", "ab".repeat(512));
        assert!(Redacted(&long).to_string().len() < 100);
    }

    #[test]
    fn sleeps_are_bounded() {
        assert_eq!(
            req(&format!("sleep {MAX_SLEEP_MS}")),
            Ok(Request::Sleep { ms: MAX_SLEEP_MS })
        );
        assert_eq!(
            req(&format!("sleep {}", MAX_SLEEP_MS + 1)),
            Err(ParseError::BadArgument)
        );
    }
}
