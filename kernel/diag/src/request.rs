//! Requests: one ASCII line from the host, optionally ending with
//! `token=<secret>`; parsed by the node, written by the host.

use core::fmt;
use core::net::Ipv4Addr;

use crate::hex::{Hex, decode_hex};
use crate::response::Failure;

pub const SECTOR: usize = 512;
/// Longest accepted request line (a full `blk-write` with a token is
/// ~1200 bytes).
pub const MAX_LINE: usize = 2048;
/// Longest `sleep`: a request holds one of the service's few connections.
pub const MAX_SLEEP_MS: u64 = 60_000;
/// Longest `resolve` name (DNS).
pub const MAX_NAME: usize = 253;

const TOKEN: &str = "token=";

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

    /// A `blk-write` of `data` (at most a sector; zero-padded).
    pub fn blk_write(sector: u64, data: &[u8]) -> Option<Request<'static>> {
        let mut sector_data = [0u8; SECTOR];
        sector_data.get_mut(..data.len())?.copy_from_slice(data);
        Some(Request::BlkWrite {
            sector,
            data: sector_data,
        })
    }
}

/// The request as sent, without token or newline.
impl fmt::Display for Request<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Request::Status => f.write_str("status"),
            Request::Sleep { ms } => write!(f, "sleep {ms}"),
            Request::Time => f.write_str("time"),
            Request::Ping(ip) => write!(f, "ping {ip}"),
            Request::Resolve(name) => write!(f, "resolve {name}"),
            Request::BlkRead { sector } => write!(f, "blk-read {sector}"),
            Request::BlkWrite { sector, data } => {
                // The node pads the payload: its zero tail need not travel.
                let len = data.iter().rposition(|&b| b != 0).map_or(1, |i| i + 1);
                write!(f, "blk-write {sector} {}", Hex(&data[..len]))
            }
            Request::Sink => f.write_str("sink"),
            Request::Source { bytes } => write!(f, "source {bytes}"),
            Request::Shutdown => f.write_str("shutdown"),
        }
    }
}

/// One request line: the request and the token it carries, if any.
/// `Display` writes the line as sent (without the newline); `R` is a
/// [`Request`], or any text for a host that sends arbitrary lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line<'a, R = Request<'a>> {
    pub request: R,
    pub token: Option<&'a str>,
}

impl<R: fmt::Display> fmt::Display for Line<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.request)?;
        match self.token {
            Some(t) => write!(f, " {TOKEN}{t}"),
            None => Ok(()),
        }
    }
}

/// Why a request line was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not a known verb (`error unknown-request`).
    Unknown,
    /// A known verb with bad arguments (`error bad-argument`).
    BadArgument,
}

impl From<ParseError> for Failure {
    fn from(e: ParseError) -> Failure {
        match e {
            ParseError::Unknown => Failure::UnknownRequest,
            ParseError::BadArgument => Failure::BadArgument,
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

impl From<Denied> for Failure {
    fn from(d: Denied) -> Failure {
        match d {
            Denied::ReadOnly => Failure::ReadOnly,
            Denied::Unauthorized => Failure::Unauthorized,
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
        Some((rest, last)) if last.starts_with(TOKEN) => (rest, Some(&last[TOKEN.len()..])),
        _ => (line, None),
    };
    Ok(Line {
        request: parse_request(line)?,
        token,
    })
}

/// A request line to log: as given, with the token's value left out.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |f: &mut fmt::Formatter<'_>, word: &str| {
            if word.starts_with(TOKEN) {
                write!(f, "{TOKEN}<redacted>")
            } else {
                // A `blk-write` payload is long: the first bytes say enough.
                f.write_str(word.get(..80).unwrap_or(word))
            }
        };
        fmt::Display::fmt(&skiff_serial_log::Words(self.0, show), f)
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
            if name.len() > MAX_NAME {
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
        assert_eq!(Request::blk_write(0, &[0; SECTOR + 1]), None);
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
        assert_eq!(Failure::from(ParseError::Unknown), Failure::UnknownRequest);
    }

    #[test]
    fn requests_round_trip() {
        let mut sector = [0u8; SECTOR];
        sector[..3].copy_from_slice(&[1, 0, 0xff]);
        let full = [0xa5u8; SECTOR];
        let requests = [
            Request::Status,
            Request::Sleep { ms: 0 },
            Request::Sleep { ms: MAX_SLEEP_MS },
            Request::Time,
            Request::Ping(Ipv4Addr::new(10, 0, 2, 2)),
            Request::Resolve("example.com"),
            Request::BlkRead { sector: u64::MAX },
            Request::BlkWrite {
                sector: 3,
                data: sector,
            },
            Request::BlkWrite {
                sector: 0,
                data: [0; SECTOR],
            },
            Request::BlkWrite {
                sector: 1,
                data: full,
            },
            Request::Sink,
            Request::Source { bytes: 1 << 20 },
            Request::Shutdown,
        ];
        for request in requests {
            for token in [None, Some("0123456789abcdef-_XY")] {
                let line = Line {
                    request: request.clone(),
                    token,
                };
                let text = line.to_string();
                assert!(text.len() < MAX_LINE, "{text}");
                assert_eq!(parse(&format!("{text}\n")), Ok(line), "{text}");
            }
        }
        assert_eq!(
            Request::blk_write(3, &[1, 0, 0xff]).unwrap().to_string(),
            "blk-write 3 0100ff"
        );
        // Any text may go as the request, as a host's raw line.
        let raw = Line {
            request: "status extra",
            token: Some("t"),
        };
        assert_eq!(raw.to_string(), "status extra token=t");
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
        assert_eq!(Failure::from(Denied::Unauthorized), Failure::Unauthorized);
        assert_eq!(Failure::from(Denied::ReadOnly), Failure::ReadOnly);
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
