//! The kernel command line → a typed [`NodeConfig`] (kernel/README.md,
//! "Command line").
//!
//! Parsing is strict for the `skiff.` namespace: an unknown key, a repeated
//! key or a malformed value is an error, never a silent default, because a
//! node that runs with a configuration its operator did not ask for is worse
//! than one that refuses to boot. Words that hypervisors inject are accepted:
//! `virtio_mmio.device=` (parsed, it is how virtio-mmio devices are found) and
//! a fixed allow-list of Linux-style words (reported in
//! [`NodeConfig::ignored`]). The result borrows from the command line; no
//! allocation.
#![cfg_attr(not(any(test, feature = "fuzz")), no_std)]

use core::fmt;
use core::net::Ipv4Addr;

/// At most this many `virtio_mmio.device=` words are kept.
pub const MAX_MMIO_DEVICES: usize = 16;
/// At most this many DNS servers (`skiff.dns=a,b`).
pub const MAX_DNS: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Cidr {
    pub addr: Ipv4Addr,
    pub prefix_len: u8,
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetMode {
    Dhcp,
    Static {
        ip: Ipv4Cidr,
        gateway: Option<Ipv4Addr>,
    },
    None,
}

/// `skiff.log`: the serial log's own level type, so the kernel needs no
/// mapping.
pub use skiff_serial_log::Level as LogLevel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Page,
    InvalidOpcode,
    Panic,
    /// Write to the kernel's own code (W^X: a page fault).
    WriteText,
    /// Jump into heap data (W^X: a page fault on the instruction fetch).
    ExecHeap,
    /// Recurse on the kernel stack until it hits its guard page.
    StackOverflow,
}

/// One `virtio_mmio.device=<size>@<addr>:<irq>[:<id>]` word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioDevice {
    pub size: u64,
    pub addr: u64,
    pub irq: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig<'a> {
    pub net: NetMode,
    dns: [Ipv4Addr; MAX_DNS],
    dns_len: usize,
    pub hostname: &'a str,
    pub diag_port: Option<u16>,
    /// Secret the diag service's mutating requests must carry
    /// (`skiff.diag_token`); without it the service is read-only.
    pub diag_token: Option<DiagToken<'a>>,
    pub log_level: LogLevel,
    pub fault: Option<FaultKind>,
    /// The control plane's node gateway (`skiff.gateway=a.b.c.d:port`).
    pub gateway: Option<(Ipv4Addr, u16)>,
    /// Bootstrap token `id.secret` (`skiff.token`).
    pub token: Option<Token<'a>>,
    /// The cluster CA certificate, base64 DER (`skiff.ca`).
    pub ca_base64: Option<&'a str>,
    /// Keep the node's certificate and key on its virtio-blk disk and
    /// reconnect with them at the next boot (`skiff.credentials=disk`).
    pub keep_credentials: bool,
    mmio: [MmioDevice; MAX_MMIO_DEVICES],
    mmio_len: usize,
    /// Allow-listed words that were ignored.
    pub ignored: usize,
}

impl NodeConfig<'_> {
    /// DNS servers from the command line (empty: use DHCP's).
    pub fn dns(&self) -> &[Ipv4Addr] {
        &self.dns[..self.dns_len]
    }

    /// virtio-mmio devices announced by the hypervisor, in command line order.
    pub fn mmio_devices(&self) -> &[MmioDevice] {
        &self.mmio[..self.mmio_len]
    }
}

impl Default for NodeConfig<'_> {
    fn default() -> Self {
        NodeConfig {
            net: NetMode::Dhcp,
            dns: [Ipv4Addr::UNSPECIFIED; MAX_DNS],
            dns_len: 0,
            hostname: "node",
            diag_port: None,
            diag_token: None,
            log_level: LogLevel::Info,
            fault: None,
            gateway: None,
            token: None,
            ca_base64: None,
            keep_credentials: false,
            mmio: [MmioDevice {
                size: 0,
                addr: 0,
                irq: 0,
            }; MAX_MMIO_DEVICES],
            mmio_len: 0,
            ignored: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError<'a> {
    /// A `skiff.*` key this kernel does not know.
    UnknownKey(&'a str),
    /// A word outside the `skiff.` namespace and the allow-list: its key
    /// only (a mistyped `skiff.token=` must not echo the secret).
    UnknownWord(&'a str),
    /// A `skiff.*` word without `=value`.
    MissingValue(&'a str),
    /// The same `skiff.*` key twice.
    Duplicate(&'a str),
    /// A value that does not parse; `expected` says what would.
    Malformed {
        key: &'a str,
        value: &'a str,
        expected: &'static str,
    },
    /// `skiff.net=static` without `skiff.ip`.
    MissingStaticIp,
    /// A key that only makes sense with `skiff.net=static`.
    RequiresStatic(&'a str),
    /// `skiff.gateway` without `skiff.token` and `skiff.ca` (or the reverse).
    IncompleteControlPlane,
    TooManyMmioDevices,
}

impl fmt::Display for ConfigError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey(k) => write!(f, "unknown key {k}"),
            ConfigError::UnknownWord(w) => write!(f, "unexpected word {w}"),
            ConfigError::MissingValue(k) => write!(f, "{k} needs =value"),
            ConfigError::Duplicate(k) => write!(f, "{k} given twice"),
            ConfigError::Malformed {
                key,
                value,
                expected,
            } => write!(f, "malformed {key}={value}: expected {expected}"),
            ConfigError::MissingStaticIp => f.write_str("skiff.net=static needs skiff.ip"),
            ConfigError::RequiresStatic(k) => write!(f, "{k} needs skiff.net=static"),
            ConfigError::IncompleteControlPlane => f.write_str(
                "skiff.gateway, skiff.token and skiff.ca go together (the node needs all three to join)",
            ),
            ConfigError::TooManyMmioDevices => {
                write!(f, "more than {MAX_MMIO_DEVICES} virtio_mmio.device words")
            }
        }
    }
}

/// Linux-style words hypervisors and loaders add; accepted and ignored.
const IGNORED_KEYS: &[&str] = &[
    "console",
    "reboot",
    "panic",
    "pci",
    "earlyprintk",
    "noapic",
    "nomodules",
];
const IGNORED_PREFIXES: &[&str] = &["i8042.", "8250."];

const KEYS: &[&str] = &[
    "skiff.net",
    "skiff.ip",
    "skiff.gw",
    "skiff.dns",
    "skiff.hostname",
    "skiff.diag",
    "skiff.diag_token",
    "skiff.log",
    "skiff.fault",
    "skiff.gateway",
    "skiff.token",
    "skiff.ca",
    "skiff.credentials",
];

/// Parses a kernel command line.
pub fn parse(cmdline: &str) -> Result<NodeConfig<'_>, ConfigError<'_>> {
    let mut cfg = NodeConfig::default();
    let mut seen = [false; KEYS.len()];
    let mut net = "dhcp";
    let mut ip = None;
    let mut gw = None;

    for word in cmdline.split_ascii_whitespace() {
        let (key, value) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (word, None),
        };
        if key.starts_with("skiff.") {
            let idx = KEYS
                .iter()
                .position(|k| *k == key)
                .ok_or(ConfigError::UnknownKey(key))?;
            if core::mem::replace(&mut seen[idx], true) {
                return Err(ConfigError::Duplicate(key));
            }
            let value = value.ok_or(ConfigError::MissingValue(key))?;
            let bad = |expected| ConfigError::Malformed {
                key,
                value,
                expected,
            };
            match key {
                "skiff.net" => {
                    if !matches!(value, "dhcp" | "static" | "none") {
                        return Err(bad("dhcp, static or none"));
                    }
                    net = value;
                }
                "skiff.ip" => ip = Some(parse_cidr(value).ok_or(bad("a.b.c.d/len"))?),
                "skiff.gw" => gw = Some(value.parse().map_err(|_| bad("a.b.c.d"))?),
                "skiff.dns" => {
                    for (i, part) in value.split(',').enumerate() {
                        if i == MAX_DNS {
                            return Err(bad("at most 2 addresses"));
                        }
                        cfg.dns[i] = part.parse().map_err(|_| bad("a.b.c.d[,a.b.c.d]"))?;
                        cfg.dns_len = i + 1;
                    }
                }
                "skiff.hostname" => {
                    if !is_dns_label(value) {
                        return Err(bad("a DNS label (a-z, 0-9, -; at most 63)"));
                    }
                    cfg.hostname = value;
                }
                "skiff.diag" => {
                    let port: u16 = value.parse().map_err(|_| bad("a port 1-65535"))?;
                    if port == 0 {
                        return Err(bad("a port 1-65535"));
                    }
                    cfg.diag_port = Some(port);
                }
                "skiff.diag_token" => {
                    if !DiagToken::is_valid(value) {
                        // Not echoed, like `skiff.token`.
                        return Err(ConfigError::Malformed {
                            key,
                            value: "<redacted>",
                            expected: DiagToken::EXPECTED,
                        });
                    }
                    cfg.diag_token = Some(DiagToken(value));
                }
                "skiff.log" => {
                    cfg.log_level = match value {
                        "error" => LogLevel::Error,
                        "warn" => LogLevel::Warn,
                        "info" => LogLevel::Info,
                        "debug" => LogLevel::Debug,
                        "trace" => LogLevel::Trace,
                        _ => return Err(bad("error, warn, info, debug or trace")),
                    }
                }
                "skiff.fault" => {
                    cfg.fault = Some(match value {
                        "page" => FaultKind::Page,
                        "ud" => FaultKind::InvalidOpcode,
                        "panic" => FaultKind::Panic,
                        "write-text" => FaultKind::WriteText,
                        "exec-heap" => FaultKind::ExecHeap,
                        "stack-overflow" => FaultKind::StackOverflow,
                        _ => {
                            return Err(bad(
                                "page, ud, panic, write-text, exec-heap or stack-overflow",
                            ));
                        }
                    })
                }
                "skiff.gateway" => {
                    let (ip, port) = value.split_once(':').ok_or(bad("a.b.c.d:port"))?;
                    let ip = ip.parse().map_err(|_| bad("a.b.c.d:port"))?;
                    let port: u16 = port.parse().map_err(|_| bad("a.b.c.d:port"))?;
                    if port == 0 {
                        return Err(bad("a.b.c.d:port"));
                    }
                    cfg.gateway = Some((ip, port));
                }
                "skiff.token" => {
                    if !is_bootstrap_token(value) {
                        // Not echoed: a mistyped secret is still a secret.
                        return Err(ConfigError::Malformed {
                            key,
                            value: "<redacted>",
                            expected: "a bootstrap token [a-z0-9]{6}.[a-z0-9]{16}",
                        });
                    }
                    cfg.token = Some(Token(value));
                }
                "skiff.ca" => {
                    let b64 = |b: u8| b.is_ascii_alphanumeric() || b"+/=".contains(&b);
                    if value.is_empty() || value.len() % 4 != 0 || !value.bytes().all(b64) {
                        return Err(bad("the CA certificate as base64 DER"));
                    }
                    cfg.ca_base64 = Some(value);
                }
                "skiff.credentials" => {
                    if value != "disk" {
                        return Err(bad("disk"));
                    }
                    cfg.keep_credentials = true;
                }
                _ => unreachable!("every entry of KEYS is handled"),
            }
        } else if key == "virtio_mmio.device" {
            let value = value.ok_or(ConfigError::MissingValue(key))?;
            let dev = parse_mmio(value).ok_or(ConfigError::Malformed {
                key,
                value,
                expected: "<size>@<addr>:<irq>",
            })?;
            if cfg.mmio_len == MAX_MMIO_DEVICES {
                return Err(ConfigError::TooManyMmioDevices);
            }
            cfg.mmio[cfg.mmio_len] = dev;
            cfg.mmio_len += 1;
        } else if IGNORED_KEYS.contains(&key) || IGNORED_PREFIXES.iter().any(|p| key.starts_with(p))
        {
            cfg.ignored += 1;
        } else {
            return Err(ConfigError::UnknownWord(key));
        }
    }

    let joins = [
        cfg.gateway.is_some(),
        cfg.token.is_some(),
        cfg.ca_base64.is_some(),
    ];
    if joins.contains(&true) && joins.contains(&false) {
        return Err(ConfigError::IncompleteControlPlane);
    }

    cfg.net = match net {
        "static" => NetMode::Static {
            ip: ip.ok_or(ConfigError::MissingStaticIp)?,
            gateway: gw,
        },
        other => {
            if ip.is_some() {
                return Err(ConfigError::RequiresStatic("skiff.ip"));
            }
            if gw.is_some() {
                return Err(ConfigError::RequiresStatic("skiff.gw"));
            }
            if other == "none" {
                NetMode::None
            } else {
                NetMode::Dhcp
            }
        }
    };
    Ok(cfg)
}

fn parse_cidr(s: &str) -> Option<Ipv4Cidr> {
    let (addr, len) = s.split_once('/')?;
    let prefix_len: u8 = len.parse().ok()?;
    if prefix_len > 32 || len.starts_with('+') {
        return None;
    }
    Some(Ipv4Cidr {
        addr: addr.parse().ok()?,
        prefix_len,
    })
}

/// A bootstrap token `id.secret`. Its `Debug` shows only the id, so a
/// logged [`NodeConfig`] cannot leak the secret; [`Token::secret_str`] is
/// the one way to the whole token (for the bootstrap request itself).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Token<'a>(&'a str);

impl<'a> Token<'a> {
    /// The whole `id.secret`: only for sending it to the gateway.
    pub fn secret_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({})", TokenDisplay(self.0))
    }
}

/// Shows a token as `id.<redacted>` (its public id only), whatever it is.
struct TokenDisplay<'a>(&'a str);

impl fmt::Display for TokenDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once('.') {
            Some((id, _)) if id.len() == 6 && id.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                write!(f, "{id}.<redacted>")
            }
            _ => f.write_str("<redacted>"),
        }
    }
}

/// The diag service's secret (`skiff.diag_token`). Its `Debug` shows
/// nothing of it; [`DiagToken::secret_str`] is the one way to it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct DiagToken<'a>(&'a str);

impl<'a> DiagToken<'a> {
    /// Shortest accepted token: 16 characters of 64 kinds, 96 bits.
    pub const MIN_LEN: usize = 16;
    pub const MAX_LEN: usize = 128;
    const EXPECTED: &'static str = "16 to 128 characters of [A-Za-z0-9_-]";

    fn is_valid(s: &str) -> bool {
        (Self::MIN_LEN..=Self::MAX_LEN).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }

    /// The secret itself: only for the diag service's check.
    pub fn secret_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for DiagToken<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DiagToken(<redacted>)")
    }
}

/// A command line to log: every word as given except the secret part of
/// `skiff.token=` and all of `skiff.diag_token=`.
pub struct Redacted<'a>(pub &'a str);

impl fmt::Display for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |f: &mut fmt::Formatter<'_>, word: &str| match word.split_once('=') {
            Some(("skiff.token", v)) => write!(f, "skiff.token={}", TokenDisplay(v)),
            Some(("skiff.diag_token", _)) => f.write_str("skiff.diag_token=<redacted>"),
            _ => f.write_str(word),
        };
        fmt::Display::fmt(&skiff_serial_log::Words(self.0, show), f)
    }
}

/// kube's bootstrap token format: `[a-z0-9]{6}.[a-z0-9]{16}`.
fn is_bootstrap_token(s: &str) -> bool {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    matches!(s.split_once('.'), Some((id, secret)) if ok(id, 6) && ok(secret, 16))
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `<size>@<addr>:<irq>[:<id>]`, size with an optional K/M/G suffix, address
/// in hex (`0x`) or decimal, as Linux's virtio_mmio module parses it.
fn parse_mmio(s: &str) -> Option<MmioDevice> {
    let (size, rest) = s.split_once('@')?;
    let (addr, rest) = rest.split_once(':')?;
    let irq = rest.split(':').next()?;
    let (digits, shift) = match size.as_bytes().last()? {
        b'K' | b'k' => (&size[..size.len() - 1], 10),
        b'M' | b'm' => (&size[..size.len() - 1], 20),
        b'G' | b'g' => (&size[..size.len() - 1], 30),
        _ => (size, 0),
    };
    let size = parse_u64(digits)?.checked_mul(1 << shift)?;
    if size == 0 {
        return None;
    }
    Some(MmioDevice {
        size,
        addr: parse_u64(addr)?,
        irq: irq.parse().ok()?,
    })
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The command-line parser under arbitrary input (`cargo xtask fuzz
/// kernel_cmdline`, and bounded in `cargo test`).
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz {
    use super::{ConfigError, MAX_DNS, MAX_MMIO_DEVICES, Redacted, parse};

    /// Parses `data` as a command line: nothing may panic, an accepted
    /// configuration stays within its bounds, and no secret (the bootstrap
    /// token's, the diag token) shows in the logged line, in `Debug` or in
    /// an error.
    pub fn one(data: &[u8]) {
        let Ok(line) = core::str::from_utf8(data) else {
            return;
        };
        let shown = Redacted(line).to_string();
        for word in shown.split_ascii_whitespace() {
            if let Some(v) = word.strip_prefix("skiff.diag_token=") {
                assert_eq!(v, "<redacted>", "{line:?}");
            }
            if let Some(v) = word.strip_prefix("skiff.token=") {
                assert!(v.ends_with("<redacted>"), "{line:?} shows {v:?}");
            }
        }
        match parse(line) {
            Ok(cfg) => {
                assert!(cfg.dns().len() <= MAX_DNS);
                assert!(cfg.mmio_devices().len() <= MAX_MMIO_DEVICES);
                assert!(cfg.hostname.len() <= 63 && !cfg.hostname.is_empty());
                if let Some(t) = cfg.token {
                    let (_, secret) = t.secret_str().split_once('.').expect("id.secret");
                    assert!(!format!("{t:?}").contains(secret), "{line:?}");
                }
                if let Some(t) = cfg.diag_token {
                    assert!(!format!("{t:?}").contains(t.secret_str()), "{line:?}");
                }
                if let Some((_, port)) = cfg.gateway {
                    assert_ne!(port, 0);
                }
                assert_ne!(cfg.diag_port, Some(0));
            }
            Err(e) => {
                // A secret is never echoed (unless the line repeats it in
                // some other word, which the parser cannot know is secret).
                // The words an error quotes from the line:
                let quoted = match e {
                    ConfigError::UnknownKey(w)
                    | ConfigError::UnknownWord(w)
                    | ConfigError::MissingValue(w)
                    | ConfigError::Duplicate(w)
                    | ConfigError::RequiresStatic(w) => [w, ""],
                    // `<redacted>` stands in for a secret: not from the line.
                    ConfigError::Malformed { key, value, .. } if value != "<redacted>" => {
                        [key, value]
                    }
                    ConfigError::Malformed { key, .. } => [key, ""],
                    _ => ["", ""],
                };
                for word in line.split_ascii_whitespace() {
                    for key in ["skiff.token=", "skiff.diag_token="] {
                        if let Some(v) = word.strip_prefix(key)
                            && !v.is_empty()
                            && line.matches(v).count() == 1
                        {
                            assert!(!quoted.iter().any(|q| q.contains(v)), "{line:?} → {e:?}");
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_line_gives_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.net, NetMode::Dhcp);
        assert_eq!(c.hostname, "node");
        assert_eq!(c.diag_port, None);
        assert_eq!(c.diag_token, None);
        assert_eq!(c.log_level, LogLevel::Info);
        assert!(c.dns().is_empty());
        assert!(c.mmio_devices().is_empty());
    }

    #[test]
    fn qemu_microvm_line() {
        let c = parse(
            "skiff.diag=7777 skiff.log=debug earlyprintk=ttyS0 console=ttyS0 reboot=t panic=1 \
             virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=512@0xfeb00c00:11 \
             virtio_mmio.device=4K@0xc0001000:5:3",
        )
        .unwrap();
        assert_eq!(c.diag_port, Some(7777));
        assert_eq!(c.log_level, LogLevel::Debug);
        assert_eq!(c.ignored, 4);
        assert_eq!(
            c.mmio_devices(),
            &[
                MmioDevice {
                    size: 512,
                    addr: 0xfeb00e00,
                    irq: 12
                },
                MmioDevice {
                    size: 512,
                    addr: 0xfeb00c00,
                    irq: 11
                },
                MmioDevice {
                    size: 4096,
                    addr: 0xc0001000,
                    irq: 5
                },
            ]
        );
    }

    #[test]
    fn static_network() {
        let c = parse("skiff.net=static skiff.ip=10.0.0.5/24 skiff.gw=10.0.0.1 skiff.dns=1.1.1.1,8.8.8.8 skiff.hostname=worker-1")
            .unwrap();
        assert_eq!(
            c.net,
            NetMode::Static {
                ip: Ipv4Cidr {
                    addr: Ipv4Addr::new(10, 0, 0, 5),
                    prefix_len: 24
                },
                gateway: Some(Ipv4Addr::new(10, 0, 0, 1)),
            }
        );
        assert_eq!(
            c.dns(),
            &[Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(8, 8, 8, 8)]
        );
        assert_eq!(c.hostname, "worker-1");
        assert_eq!(
            format!(
                "{}",
                Ipv4Cidr {
                    addr: Ipv4Addr::new(10, 0, 0, 5),
                    prefix_len: 24
                }
            ),
            "10.0.0.5/24"
        );
    }

    #[test]
    fn errors_are_precise() {
        assert_eq!(
            parse("skiff.bogus=1"),
            Err(ConfigError::UnknownKey("skiff.bogus"))
        );
        assert_eq!(parse("quiet"), Err(ConfigError::UnknownWord("quiet")));
        assert_eq!(
            parse("root=/dev/sda"),
            Err(ConfigError::UnknownWord("root"))
        );
        assert_eq!(
            parse("skiff.net"),
            Err(ConfigError::MissingValue("skiff.net"))
        );
        assert_eq!(parse("skiff.net=static"), Err(ConfigError::MissingStaticIp));
        assert_eq!(
            parse("skiff.ip=10.0.0.1/24"),
            Err(ConfigError::RequiresStatic("skiff.ip"))
        );
        assert_eq!(
            parse("skiff.net=dhcp skiff.gw=10.0.0.1"),
            Err(ConfigError::RequiresStatic("skiff.gw"))
        );
        assert_eq!(
            parse("skiff.log=info skiff.log=debug"),
            Err(ConfigError::Duplicate("skiff.log"))
        );
        for bad in [
            "skiff.net=static skiff.ip=10.0.0.1",
            "skiff.net=static skiff.ip=10.0.0.1/33",
            "skiff.net=static skiff.ip=10.0.0/24",
            "skiff.net=static skiff.ip=10.0.0.256/24",
            "skiff.net=static skiff.ip=10.0.0.1/+8",
        ] {
            assert!(
                matches!(
                    parse(bad),
                    Err(ConfigError::Malformed {
                        key: "skiff.ip",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        for (bad, key) in [
            ("skiff.net=maybe", "skiff.net"),
            ("skiff.diag=0", "skiff.diag"),
            ("skiff.diag=65536", "skiff.diag"),
            ("skiff.diag_token=short", "skiff.diag_token"),
            ("skiff.diag_token=has.a.dot.0123456789", "skiff.diag_token"),
            ("skiff.log=loud", "skiff.log"),
            ("skiff.fault=gp", "skiff.fault"),
            ("skiff.hostname=Node_1", "skiff.hostname"),
            ("skiff.hostname=-a", "skiff.hostname"),
            ("skiff.dns=1.1.1.1,2.2.2.2,3.3.3.3", "skiff.dns"),
            ("skiff.dns=1.1.1", "skiff.dns"),
            ("virtio_mmio.device=512@zz:12", "virtio_mmio.device"),
            ("virtio_mmio.device=0@0x1000:12", "virtio_mmio.device"),
            ("virtio_mmio.device=512@0x1000", "virtio_mmio.device"),
        ] {
            match parse(bad) {
                Err(ConfigError::Malformed { key: k, .. }) => assert_eq!(k, key, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn errors_display() {
        let e = parse("skiff.net=static skiff.ip=1.2.3.4/40").unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed skiff.ip=1.2.3.4/40: expected a.b.c.d/len"
        );
    }

    #[test]
    fn fault_and_flags() {
        let c = parse("skiff.fault=ud skiff.net=none i8042.noaux 8250.nr_uarts=1 noapic").unwrap();
        assert_eq!(c.fault, Some(FaultKind::InvalidOpcode));
        for (word, kind) in [
            ("write-text", FaultKind::WriteText),
            ("exec-heap", FaultKind::ExecHeap),
            ("stack-overflow", FaultKind::StackOverflow),
        ] {
            let line = format!("skiff.fault={word}");
            assert_eq!(parse(&line).unwrap().fault, Some(kind), "{word}");
        }
        assert_eq!(c.net, NetMode::None);
        assert_eq!(c.ignored, 3);
    }

    #[test]
    fn too_many_mmio_devices() {
        let line: String = (0..=MAX_MMIO_DEVICES)
            .map(|i| format!("virtio_mmio.device=512@{:#x}:5 ", 0x1000 * (i + 1)))
            .collect();
        assert_eq!(parse(&line), Err(ConfigError::TooManyMmioDevices));
    }

    #[test]
    fn credentials_are_kept_on_disk_only_when_asked() {
        assert!(!parse("").unwrap().keep_credentials);
        assert!(parse("skiff.credentials=disk").unwrap().keep_credentials);
        assert!(matches!(
            parse("skiff.credentials=tpm"),
            Err(ConfigError::Malformed { .. })
        ));
    }

    #[test]
    fn control_plane_keys_go_together_and_are_checked() {
        let c =
            parse("skiff.gateway=10.0.2.2:6444 skiff.token=abcdef.0123456789abcdef skiff.ca=QUJD")
                .unwrap();
        assert_eq!(c.gateway, Some((Ipv4Addr::new(10, 0, 2, 2), 6444)));
        assert_eq!(
            c.token.map(|t| t.secret_str()),
            Some("abcdef.0123456789abcdef")
        );
        assert_eq!(c.ca_base64, Some("QUJD"));
        assert_eq!(
            parse("skiff.gateway=10.0.2.2:6444"),
            Err(ConfigError::IncompleteControlPlane)
        );
        for bad in [
            "skiff.gateway=10.0.2.2",
            "skiff.gateway=10.0.2.2:0",
            "skiff.token=ABCDEF.0123456789abcdef",
            "skiff.token=abcdef.0123",
            "skiff.ca=QUJ",
            "skiff.ca=QU*D",
        ] {
            assert!(
                matches!(parse(bad), Err(ConfigError::Malformed { .. })),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn token_secrets_never_show_in_logs() {
        let secret = "0123456789abcdef";
        let line = format!("skiff.gateway=10.0.2.2:6444 skiff.token=abcdef.{secret} skiff.ca=QUJD");
        let c = parse(&line).unwrap();
        let shown = format!("{c:?} {}", Redacted(&line));
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("skiff.token=abcdef.<redacted>"), "{shown}");
        assert!(shown.contains("skiff.ca=QUJD"), "{shown}");
        // A malformed token is not echoed in the error either.
        let e = parse("skiff.token=abcdef.0123456789ABCDEF").unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains("0123456789ABCDEF"), "{shown}");
    }

    #[test]
    fn diag_token_is_checked_and_never_shown() {
        let secret = "s3cr3t-diag_TOKEN-0123";
        let line = format!("skiff.diag=7000 skiff.diag_token={secret} skiff.log=debug");
        let c = parse(&line).unwrap();
        assert_eq!(c.diag_token.map(|t| t.secret_str()), Some(secret));
        let shown = format!("{c:?} {}", Redacted(&line));
        assert!(!shown.contains(secret), "{shown}");
        assert!(shown.contains("skiff.diag_token=<redacted>"), "{shown}");
        // Neither a too-short nor a too-long one is echoed in the error.
        for bad in ["abc123".to_string(), "x".repeat(DiagToken::MAX_LEN + 1)] {
            let line = format!("skiff.diag_token={bad}");
            let e = parse(&line).unwrap_err();
            let shown = format!("{e} {e:?}");
            assert!(!shown.contains(&bad), "{shown}");
        }
        // The old read-write switch is gone: the token is the one gate.
        assert_eq!(
            parse("skiff.diag_rw=1"),
            Err(ConfigError::UnknownKey("skiff.diag_rw"))
        );
    }

    /// Bounded fuzzing on stable over [`fuzz::one`] (`SKIFF_FUZZ_SECS`,
    /// `SKIFF_FUZZ_SEED` override): seeded mutations of real command lines.
    #[test]
    fn fuzz_kernel_cmdline_bounded() {
        let mut run = skiff_test_support::fuzz::Bounded::from_env(1.0, 0xc0de);
        let seeds = [
            "skiff.diag=7000 skiff.diag_token=0123456789abcdef-_XY skiff.log=debug console=ttyS0 \
             virtio_mmio.device=512@0xfeb00e00:12 virtio_mmio.device=4K@0xc0001000:5:3",
            "skiff.net=static skiff.ip=10.0.0.5/24 skiff.gw=10.0.0.1 skiff.dns=1.1.1.1,8.8.8.8 \
             skiff.hostname=worker-1 skiff.fault=ud i8042.noaux",
            "skiff.gateway=10.0.2.2:6444 skiff.token=abcdef.0123456789abcdef skiff.ca=QUJD",
        ];
        let alphabet = b" =.,:@/_-0123456789abcdefxKMG";
        while run.running() {
            let mut input = seeds[run.next_u64() as usize % seeds.len()]
                .as_bytes()
                .to_vec();
            for _ in 0..run.next_u64() % 8 {
                let len = input.len();
                let at = run.next_u64() as usize % len.max(1);
                match run.next_u64() % 4 {
                    0 if at < len => input[at] = alphabet[run.next_u64() as usize % alphabet.len()],
                    1 => input.insert(at, alphabet[run.next_u64() as usize % alphabet.len()]),
                    2 if at < len => {
                        input.remove(at);
                    }
                    _ => {
                        // Splice a word of another seed.
                        let other = seeds[run.next_u64() as usize % seeds.len()];
                        let words: Vec<&str> = other.split(' ').collect();
                        let w = words[run.next_u64() as usize % words.len()];
                        input.splice(at..at, format!(" {w}").bytes());
                    }
                }
            }
            fuzz::one(&input);
        }
        eprintln!("fuzz: {} command lines", run.runs());
        assert!(run.runs() > 100);
    }
}
