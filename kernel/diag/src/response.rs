//! Responses: what the node answers, written by the node and parsed by the
//! host. Every response is self-describing (its first word, or the `end`
//! line of a status), so [`parse_response`] needs no request.

use core::fmt;
use core::net::Ipv4Addr;

use crate::hex::{Hex, decode_hex};
use crate::request::SECTOR;

/// Why the node answered `error <reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    UnknownRequest,
    BadArgument,
    /// A mutating request to a node without `skiff.diag_token`.
    ReadOnly,
    /// A mutating request without the node's token.
    Unauthorized,
    /// All connections are being served.
    Busy,
    LineTooLong,
    NoBlockDevice,
    /// A sector past the disk's end.
    OutOfRange,
    /// A write to a read-only disk.
    ReadOnlyDevice,
    /// The block device failed the request.
    Io,
    /// `resolve`: no answer, or the server is unreachable.
    ResolveFailed,
    /// `resolve`: an answer without an IPv4 address.
    NoAddress,
    /// `resolve`: not a name the resolver accepts.
    BadName,
}

impl Failure {
    const ALL: [Failure; 13] = [
        Failure::UnknownRequest,
        Failure::BadArgument,
        Failure::ReadOnly,
        Failure::Unauthorized,
        Failure::Busy,
        Failure::LineTooLong,
        Failure::NoBlockDevice,
        Failure::OutOfRange,
        Failure::ReadOnlyDevice,
        Failure::Io,
        Failure::ResolveFailed,
        Failure::NoAddress,
        Failure::BadName,
    ];

    /// The reason word on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::UnknownRequest => "unknown-request",
            Failure::BadArgument => "bad-argument",
            Failure::ReadOnly => "read-only",
            Failure::Unauthorized => "unauthorized",
            Failure::Busy => "busy",
            Failure::LineTooLong => "line-too-long",
            Failure::NoBlockDevice => "no-block-device",
            Failure::OutOfRange => "out-of-range",
            Failure::ReadOnlyDevice => "read-only-device",
            Failure::Io => "io",
            Failure::ResolveFailed => "failed",
            Failure::NoAddress => "no-address",
            Failure::BadName => "bad-name",
        }
    }

    pub fn from_wire(word: &str) -> Option<Failure> {
        Failure::ALL.into_iter().find(|f| f.as_str() == word)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An IPv4 address with its prefix length, `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix_len)
    }
}

impl core::str::FromStr for Cidr {
    type Err = DecodeError;

    fn from_str(s: &str) -> Result<Cidr, DecodeError> {
        let (a, len) = s.split_once('/').ok_or(DecodeError)?;
        let prefix_len = len.parse().map_err(|_| DecodeError)?;
        if prefix_len > 32 {
            return Err(DecodeError);
        }
        Ok(Cidr {
            address: a.parse().map_err(|_| DecodeError)?,
            prefix_len,
        })
    }
}

/// The `status` response: `key=value` lines, then `end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status<'a> {
    pub version: &'a str,
    pub build: &'a str,
    pub uptime_us: u64,
    pub heap_used: u64,
    pub heap_total: u64,
    pub frames_free: u64,
    pub frames_total: u64,
    /// Bytes of the demand-paged region pool (guests' memories and fiber
    /// stacks) mapped now, and its size.
    pub pool_used: u64,
    pub pool_total: u64,
    /// `none` until the network is configured.
    pub ip: Option<Cidr>,
    pub gateway: Option<Ipv4Addr>,
    /// Comma-separated, e.g. `virtio-net@mmio:0xfeb00e00,virtio-blk@pci:00:03.0`;
    /// see [`Status::devices`].
    pub devices: &'a str,
    /// The entropy sources, e.g. `rdrand+virtio-rng` or `none`.
    pub entropy: &'a str,
}

impl<'a> Status<'a> {
    /// The devices one by one.
    pub fn devices(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        self.devices.split(',').filter(|s| !s.is_empty())
    }

    fn parse(text: &'a str) -> Result<Status<'a>, DecodeError> {
        // `\n` only: the node never sends `\r`, so one is part of a value.
        let mut lines = text.split('\n');
        let mut status = Status {
            version: "",
            build: "",
            uptime_us: 0,
            heap_used: 0,
            heap_total: 0,
            frames_free: 0,
            frames_total: 0,
            pool_used: 0,
            pool_total: 0,
            ip: None,
            gateway: None,
            devices: "",
            entropy: "",
        };
        // Every key exactly once (13 of them), then `end`.
        let mut seen = 0u16;
        for line in lines.by_ref() {
            if line == END {
                break;
            }
            let (key, value) = line.split_once('=').ok_or(DecodeError)?;
            let num = || value.parse::<u64>().map_err(|_| DecodeError);
            let bit = match key {
                "version" => {
                    status.version = value;
                    0
                }
                "build" => {
                    status.build = value;
                    1
                }
                "uptime_us" => {
                    status.uptime_us = num()?;
                    2
                }
                "heap_used" => {
                    status.heap_used = num()?;
                    3
                }
                "heap_total" => {
                    status.heap_total = num()?;
                    4
                }
                "frames_free" => {
                    status.frames_free = num()?;
                    5
                }
                "frames_total" => {
                    status.frames_total = num()?;
                    6
                }
                "ip" => {
                    status.ip = optional(value)?;
                    7
                }
                "gateway" => {
                    status.gateway = optional(value)?;
                    8
                }
                "devices" => {
                    status.devices = value;
                    9
                }
                "entropy" => {
                    status.entropy = value;
                    10
                }
                "pool_used" => {
                    status.pool_used = num()?;
                    11
                }
                "pool_total" => {
                    status.pool_total = num()?;
                    12
                }
                // A newer node may say more.
                _ => continue,
            };
            if seen & (1 << bit) != 0 {
                return Err(DecodeError);
            }
            seen |= 1 << bit;
        }
        if seen != (1 << 13) - 1 || lines.next().is_some() || !text.ends_with(END) {
            return Err(DecodeError);
        }
        Ok(status)
    }
}

const END: &str = "end";
const NONE: &str = "none";

fn optional<T: core::str::FromStr>(value: &str) -> Result<Option<T>, DecodeError> {
    if value == NONE {
        return Ok(None);
    }
    value.parse().map(Some).map_err(|_| DecodeError)
}

/// `value`, or `none`.
struct Optional<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Optional<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str(NONE),
        }
    }
}

impl fmt::Display for Status<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version={}\nbuild={}\nuptime_us={}\nheap_used={}\nheap_total={}\n\
             frames_free={}\nframes_total={}\npool_used={}\npool_total={}\nip={}\ngateway={}\n\
             devices={}\nentropy={}\n{END}",
            self.version,
            self.build,
            self.uptime_us,
            self.heap_used,
            self.heap_total,
            self.frames_free,
            self.frames_total,
            self.pool_used,
            self.pool_total,
            Optional(self.ip),
            Optional(self.gateway),
            self.devices,
            self.entropy,
        )
    }
}

/// What the node answers (`source` answers with its bytes instead).
/// `Display` writes it as sent, without the final newline.
// The sector makes `Data` large; boxing would need `alloc`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response<'a> {
    Status(Status<'a>),
    /// `sleep`: as asked, and as the node's clock measured it.
    Slept {
        requested_ms: u64,
        measured_us: u64,
    },
    Time {
        uptime_us: u64,
        wall_unix: u64,
    },
    Pong {
        rtt_us: u64,
    },
    /// `ping`: no echo reply within a second.
    Timeout,
    Addr(Ipv4Addr),
    /// `blk-read`: the sector.
    Data([u8; SECTOR]),
    /// `blk-write` done.
    Ok,
    /// `sink`: what arrived, and in how long.
    Received {
        bytes: u64,
        us: u64,
    },
    /// `shutdown`: the node exits next.
    Bye,
    Error(Failure),
}

impl From<Failure> for Response<'_> {
    fn from(f: Failure) -> Self {
        Response::Error(f)
    }
}

impl fmt::Display for Response<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Response::Status(s) => s.fmt(f),
            Response::Slept {
                requested_ms,
                measured_us,
            } => write!(
                f,
                "slept requested_ms={requested_ms} measured_us={measured_us}"
            ),
            Response::Time {
                uptime_us,
                wall_unix,
            } => write!(f, "uptime_us={uptime_us} wall_unix={wall_unix}"),
            Response::Pong { rtt_us } => write!(f, "pong rtt_us={rtt_us}"),
            Response::Timeout => f.write_str("timeout"),
            Response::Addr(a) => write!(f, "addr {a}"),
            Response::Data(d) => write!(f, "data {}", Hex(d)),
            Response::Ok => f.write_str("ok"),
            Response::Received { bytes, us } => write!(f, "received bytes={bytes} us={us}"),
            Response::Bye => f.write_str("bye"),
            Response::Error(e) => write!(f, "error {e}"),
        }
    }
}

/// A response that does not follow the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("malformed diagnostic response")
    }
}

impl core::error::Error for DecodeError {}

/// Parses a whole response (with or without its final newline).
pub fn parse_response(text: &str) -> Result<Response<'_>, DecodeError> {
    let text = text.strip_suffix('\n').unwrap_or(text);
    if text.rsplit('\n').next() == Some(END) {
        return Status::parse(text).map(Response::Status);
    }
    if text.contains('\n') {
        return Err(DecodeError);
    }
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    let bare = |r: Response<'static>| {
        if rest.is_empty() {
            Ok(r)
        } else {
            Err(DecodeError)
        }
    };
    match verb {
        "slept" => {
            let [requested_ms, measured_us] = fields(rest, ["requested_ms", "measured_us"])?;
            Ok(Response::Slept {
                requested_ms,
                measured_us,
            })
        }
        "pong" => {
            let [rtt_us] = fields(rest, ["rtt_us"])?;
            Ok(Response::Pong { rtt_us })
        }
        "received" => {
            let [bytes, us] = fields(rest, ["bytes", "us"])?;
            Ok(Response::Received { bytes, us })
        }
        "addr" => rest.parse().map(Response::Addr).map_err(|_| DecodeError),
        "data" => {
            let mut data = [0u8; SECTOR];
            match decode_hex(rest, &mut data) {
                Some(SECTOR) => Ok(Response::Data(data)),
                _ => Err(DecodeError),
            }
        }
        "error" => Failure::from_wire(rest)
            .map(Response::Error)
            .ok_or(DecodeError),
        "timeout" => bare(Response::Timeout),
        "ok" => bare(Response::Ok),
        "bye" => bare(Response::Bye),
        // `time` answers with fields only.
        _ => {
            let [uptime_us, wall_unix] = fields(text, ["uptime_us", "wall_unix"])?;
            Ok(Response::Time {
                uptime_us,
                wall_unix,
            })
        }
    }
}

/// The numbers of `text`'s `key=value` words: exactly `keys`, in order,
/// one space apart.
fn fields<const N: usize>(text: &str, keys: [&str; N]) -> Result<[u64; N], DecodeError> {
    let mut words = text.split(' ');
    let mut out = [0; N];
    for (key, out) in keys.iter().zip(&mut out) {
        *out = words
            .next()
            .and_then(|w| w.strip_prefix(key))
            .and_then(|v| v.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or(DecodeError)?;
    }
    match words.next() {
        None => Ok(out),
        Some(_) => Err(DecodeError),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status<'static> {
        Status {
            version: "0.1.0",
            build: "abc",
            uptime_us: 1_250_003,
            heap_used: 1 << 20,
            heap_total: 1 << 26,
            frames_free: 100,
            frames_total: 200,
            pool_used: 4096,
            pool_total: 1 << 25,
            ip: Some(Cidr {
                address: Ipv4Addr::new(10, 0, 2, 15),
                prefix_len: 24,
            }),
            gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
            devices: "virtio-net@mmio:0xfeb00e00,virtio-blk@pci:00:03.0",
            entropy: "rdrand+virtio-rng",
        }
    }

    #[test]
    fn responses_round_trip() {
        let mut sector = [0u8; SECTOR];
        sector[0] = 0xde;
        sector[SECTOR - 1] = 0x01;
        let mut offline = status();
        offline.ip = None;
        offline.gateway = None;
        offline.devices = "";
        offline.entropy = "none";
        let mut responses = vec![
            Response::Status(status()),
            Response::Status(offline),
            Response::Slept {
                requested_ms: 100,
                measured_us: 100_123,
            },
            Response::Time {
                uptime_us: 5,
                wall_unix: 1_765_000_000,
            },
            Response::Pong { rtt_us: 250 },
            Response::Timeout,
            Response::Addr(Ipv4Addr::new(93, 184, 216, 34)),
            Response::Data(sector),
            Response::Data([0; SECTOR]),
            Response::Ok,
            Response::Received {
                bytes: u64::MAX,
                us: 0,
            },
            Response::Bye,
        ];
        responses.extend(Failure::ALL.map(Response::Error));
        for r in responses {
            let text = r.to_string();
            assert_eq!(parse_response(&text), Ok(r.clone()), "{text}");
            assert_eq!(parse_response(&format!("{text}\n")), Ok(r), "{text}");
        }
    }

    #[test]
    fn status_as_the_node_writes_it() {
        let text = "version=0.1.0\nbuild=abc\nuptime_us=1250003\nheap_used=1048576\n\
                    heap_total=67108864\nframes_free=100\nframes_total=200\npool_used=4096\n\
                    pool_total=33554432\nip=10.0.2.15/24\n\
                    gateway=10.0.2.2\ndevices=virtio-net@mmio:0xfeb00e00,virtio-blk@pci:00:03.0\n\
                    entropy=rdrand+virtio-rng\nend\n";
        assert_eq!(parse_response(text), Ok(Response::Status(status())));
        assert_eq!(
            status().devices().collect::<Vec<_>>(),
            ["virtio-net@mmio:0xfeb00e00", "virtio-blk@pci:00:03.0"]
        );
        // `\r` is not a line end: it stays in the value (and round-trips).
        let cr = text.replace("build=abc", "build=abc\r\r");
        match parse_response(&cr) {
            Ok(Response::Status(s)) => {
                assert_eq!(s.build, "abc\r\r");
                assert_eq!(parse_response(&s.to_string()), Ok(Response::Status(s)));
            }
            other => panic!("{other:?}"),
        }
        // A newer node's extra keys are ignored.
        let newer = text.replace("end\n", "cpus=4\nend\n");
        assert_eq!(parse_response(&newer), Ok(Response::Status(status())));
    }

    #[test]
    fn malformed_responses_are_errors() {
        let full = status().to_string();
        let truncated = &full[..full.len() - 4];
        let missing = full.replace("build=abc\n", "");
        let twice = full.replace("build=abc\n", "build=abc\nbuild=abc\n");
        let bad_ip = full.replace("10.0.2.15/24", "10.0.2.15/33");
        let after_end = format!("{full}\nversion=2");
        for bad in [
            "",
            "end",
            truncated,
            &missing,
            &twice,
            &bad_ip,
            &after_end,
            "slept requested_ms=1",
            "slept measured_us=1 requested_ms=1",
            "slept requested_ms=1 measured_us=1 extra=2",
            "pong",
            "pong rtt_us=x",
            "timeout now",
            "ok\nok",
            "addr 10.0.2",
            "data 00",
            "error",
            "error who-knows",
            "uptime_us=1",
            "uptime_us=1 wall=2",
            "received bytes=1",
            "hello",
        ] {
            assert_eq!(parse_response(bad), Err(DecodeError), "{bad:?}");
        }
    }
}
