//! The diagnostic service's request language (kernel/README.md,
//! "Diagnostic service"): one ASCII line in, a [`Request`] out.
//!
//! Unknown verbs are [`ParseError::Unknown`] (`error unknown-request` on the
//! wire); a known verb with bad arguments is [`ParseError::BadArgument`]
//! (`error bad-argument`). No allocation: the sector payload of `blk-write`
//! is decoded into a fixed 512-byte buffer.
#![cfg_attr(not(test), no_std)]

use core::net::Ipv4Addr;

pub const SECTOR: usize = 512;
/// Longest accepted request line (a full `blk-write` is ~1050 bytes).
pub const MAX_LINE: usize = 2048;

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

/// Parses one request line (without or with its trailing `\r`/`\n`).
pub fn parse(line: &str) -> Result<Request<'_>, ParseError> {
    let mut words = line.split_ascii_whitespace();
    let verb = words.next().ok_or(ParseError::Unknown)?;
    let mut arg = || words.next().ok_or(ParseError::BadArgument);
    let num = |s: &str| s.parse::<u64>().map_err(|_| ParseError::BadArgument);
    let req = match verb {
        "status" => Request::Status,
        "time" => Request::Time,
        "sink" => Request::Sink,
        "shutdown" => Request::Shutdown,
        "sleep" => Request::Sleep { ms: num(arg()?)? },
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

    #[test]
    fn simple_verbs() {
        assert_eq!(parse("status\n"), Ok(Request::Status));
        assert_eq!(parse("time\r\n"), Ok(Request::Time));
        assert_eq!(parse("sink"), Ok(Request::Sink));
        assert_eq!(parse("shutdown"), Ok(Request::Shutdown));
        assert_eq!(parse("sleep 250"), Ok(Request::Sleep { ms: 250 }));
        assert_eq!(
            parse("source 1048576"),
            Ok(Request::Source { bytes: 1 << 20 })
        );
        assert_eq!(
            parse("ping 10.0.2.2"),
            Ok(Request::Ping(Ipv4Addr::new(10, 0, 2, 2)))
        );
        assert_eq!(
            parse("resolve example.com"),
            Ok(Request::Resolve("example.com"))
        );
        assert_eq!(parse("blk-read 7"), Ok(Request::BlkRead { sector: 7 }));
    }

    #[test]
    fn blk_write_pads() {
        match parse("blk-write 3 DEADbeef") {
            Ok(Request::BlkWrite { sector: 3, data }) => {
                assert_eq!(&data[..4], &[0xde, 0xad, 0xbe, 0xef]);
                assert!(data[4..].iter().all(|&b| b == 0));
            }
            other => panic!("{other:?}"),
        }
        let full = "ab".repeat(512);
        assert!(parse(&format!("blk-write 0 {full}")).is_ok());
        let too_long = "ab".repeat(513);
        assert_eq!(
            parse(&format!("blk-write 0 {too_long}")),
            Err(ParseError::BadArgument)
        );
    }

    #[test]
    fn errors() {
        assert_eq!(parse(""), Err(ParseError::Unknown));
        assert_eq!(parse("reboot"), Err(ParseError::Unknown));
        assert_eq!(parse("sleep"), Err(ParseError::BadArgument));
        assert_eq!(parse("sleep -1"), Err(ParseError::BadArgument));
        assert_eq!(parse("ping 10.0.2"), Err(ParseError::BadArgument));
        assert_eq!(parse("blk-write 1 abc"), Err(ParseError::BadArgument));
        assert_eq!(parse("blk-write 1 zz"), Err(ParseError::BadArgument));
        assert_eq!(parse("status extra"), Err(ParseError::BadArgument));
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
}
