//! The node's serial log format (kernel/README.md, *Serial log* and *Exit
//! codes*), written by the kernel and read by `skiff-qemu`: one crate so the
//! two sides cannot drift.
//!
//! A line is `[<secs>.<micros>] <LEVEL> <target>: <message>[ key=value ...]`
//! ([`Header`] writes everything before the message, [`parse`] reads a whole
//! line into a [`Record`], whose `Display` writes it back). Boot stages are
//! `stage: <name> t_us=<n> ...` ([`Stage`], [`STAGES`], [`Record::stage`]);
//! an exit is
//! announced as `skiff: exit code=<NAME>` ([`Exit`], [`Record::exit`])
//! before the kernel leaves through QEMU's `isa-debug-exit` with an
//! [`ExitCode`].
//!
//! No allocation: encoding writes to any [`core::fmt::Write`], parsing
//! borrows from the line.
#![cfg_attr(not(test), no_std)]

use core::fmt;

/// A line's severity. Ordered: a log at level `L` shows every line `<= L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Error,
        Level::Warn,
        Level::Info,
        Level::Debug,
        Level::Trace,
    ];

    /// As written in a line, unpadded: `ERROR`, `WARN`, ...
    pub fn name(self) -> &'static str {
        match self {
            Level::Error => "ERROR",
            Level::Warn => "WARN",
            Level::Info => "INFO",
            Level::Debug => "DEBUG",
            Level::Trace => "TRACE",
        }
    }

    /// The level a line's (unpadded) level word names.
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }

    /// The inverse of `as u8`.
    pub fn from_u8(v: u8) -> Option<Level> {
        Level::ALL.into_iter().find(|l| *l as u8 == v)
    }
}

/// Columns the level word is padded to (then one space).
const LEVEL_WIDTH: usize = 5;

/// The start of a line, up to and including `<target>: `; the message
/// follows. `time_us` is the kernel's monotonic time since entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub time_us: u64,
    pub level: Level,
    pub target: &'a str,
}

impl fmt::Display for Header<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "[{}.{:06}] {:<LEVEL_WIDTH$} {}: ",
            self.time_us / 1_000_000,
            self.time_us % 1_000_000,
            self.level.name(),
            self.target
        )
    }
}

/// One parsed log line, borrowing from the line text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Kernel monotonic time since entry, in microseconds.
    pub time_us: u64,
    pub level: Level,
    pub target: &'a str,
    /// Everything after `<target>: `, including the `key=value` words.
    pub message: &'a str,
}

impl Record<'_> {
    pub fn header(&self) -> Header<'_> {
        Header {
            time_us: self.time_us,
            level: self.level,
            target: self.target,
        }
    }
}

/// The line without its newline.
impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.header(), self.message)
    }
}

/// Parses a line (without its newline); `None` if it does not follow the
/// format exactly.
pub fn parse(line: &str) -> Option<Record<'_>> {
    let rest = line.strip_prefix('[')?;
    let (time, rest) = rest.split_once("] ")?;
    let (secs, micros) = time.split_once('.')?;
    if secs.is_empty() || micros.len() != 6 || !all_digits(secs) || !all_digits(micros) {
        return None;
    }
    let time_us = secs
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000)?
        .checked_add(micros.parse::<u64>().ok()?)?;
    let padded = rest.get(..LEVEL_WIDTH)?;
    let level = Level::from_name(padded.trim_end())?;
    if rest.as_bytes().get(LEVEL_WIDTH) != Some(&b' ') {
        return None;
    }
    let (target, message) = rest[LEVEL_WIDTH + 1..].split_once(": ")?;
    if target.is_empty() || target.contains(' ') {
        return None;
    }
    Some(Record {
        time_us,
        level,
        target,
        message,
    })
}

fn all_digits(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit())
}

impl<'a> Record<'a> {
    /// The value of a `key=value` word in the message.
    pub fn field(&self, key: &str) -> Option<&'a str> {
        field(self.message, key)
    }

    /// For a `stage: <name> t_us=<n>` line: the stage name and its time.
    pub fn stage(&self) -> Option<(&'a str, u64)> {
        if self.target != STAGE_TARGET {
            return None;
        }
        let name = self.message.split_whitespace().next()?;
        let t_us = self.field("t_us")?.parse().ok()?;
        Some((name, t_us))
    }

    /// For a `skiff: exit code=<NAME>` line: the announced exit.
    pub fn exit(&self) -> Option<ExitCode> {
        if self.target != EXIT_TARGET {
            return None;
        }
        ExitCode::from_name(self.message.strip_prefix("exit code=")?)
    }
}

/// The value of a `key=value` word in whitespace-separated text.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// Whitespace-separated text as a log message, word by word through
/// `show` (runs of ASCII whitespace become one space): how a command line
/// or a diag request is logged with its secrets left out.
pub struct Words<'a, F>(pub &'a str, pub F);

impl<F> fmt::Display for Words<'_, F>
where
    F: Fn(&mut fmt::Formatter<'_>, &str) -> fmt::Result,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, word) in self.0.split_ascii_whitespace().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            (self.1)(f, word)?;
        }
        Ok(())
    }
}

/// The target of boot stage lines.
pub const STAGE_TARGET: &str = "stage";

/// A boot stage's message: `<name> t_us=<n>`, then `extra` (` key=value`
/// words, each with its leading space), logged under [`STAGE_TARGET`] at
/// `INFO`. `t_us` is the time since kernel entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage<'a, E = &'a str> {
    pub name: &'a str,
    pub t_us: u64,
    pub extra: E,
}

impl<E: fmt::Display> fmt::Display for Stage<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} t_us={}{}", self.name, self.t_us, self.extra)
    }
}

/// The boot stages in contract order (`node-registered` follows when the
/// node joins a control plane).
pub const STAGES: [&str; 7] = [
    "entry",
    "memory",
    "interrupts",
    "timers",
    "devices",
    "net-up",
    "diag-ready",
];

/// The target of the exit announcement (and of the first line).
pub const EXIT_TARGET: &str = "skiff";

/// The message announcing an exit, `exit code=<NAME>`, logged under
/// [`EXIT_TARGET`] at `INFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit(pub ExitCode);

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "exit code={}", self.0.name())
    }
}

/// How the kernel leaves: the value written to QEMU's `isa-debug-exit`
/// port. QEMU's process status is then `(value << 1) | 1`
/// ([`ExitCode::qemu_status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ExitCode {
    /// Orderly shutdown (diag `shutdown`).
    Success = 0x10,
    /// A Rust panic.
    Panic = 0x11,
    /// A bad command line.
    Config = 0x12,
    /// A CPU exception.
    Fault = 0x13,
    /// A required device is missing.
    NoDevice = 0x14,
    /// Reserved for a node that cannot run without entropy; never raised
    /// today: without RDRAND or virtio-rng the node logs an `ERROR`, does
    /// not join a control plane, and keeps running (its diag service too).
    NoEntropy = 0x15,
    /// Heap or frame exhaustion.
    OutOfMemory = 0x16,
}

impl ExitCode {
    pub const ALL: [ExitCode; 7] = [
        ExitCode::Success,
        ExitCode::Panic,
        ExitCode::Config,
        ExitCode::Fault,
        ExitCode::NoDevice,
        ExitCode::NoEntropy,
        ExitCode::OutOfMemory,
    ];

    /// The contract name, as announced: `SUCCESS`, `NO_DEVICE`, ...
    pub fn name(self) -> &'static str {
        match self {
            ExitCode::Success => "SUCCESS",
            ExitCode::Panic => "PANIC",
            ExitCode::Config => "CONFIG",
            ExitCode::Fault => "FAULT",
            ExitCode::NoDevice => "NO_DEVICE",
            ExitCode::NoEntropy => "NO_ENTROPY",
            ExitCode::OutOfMemory => "OUT_OF_MEMORY",
        }
    }

    pub fn from_name(name: &str) -> Option<ExitCode> {
        ExitCode::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The QEMU process status this exit gives.
    pub fn qemu_status(self) -> i32 {
        (i32::from(self as u8) << 1) | 1
    }

    /// The exit a QEMU process status means, if it is one.
    pub fn from_qemu_status(status: i32) -> Option<ExitCode> {
        ExitCode::ALL
            .into_iter()
            .find(|c| c.qemu_status() == status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_examples() {
        let r = parse("[0.000000] INFO  skiff: skiff-kernel 0.1.0 build=abc").unwrap();
        assert_eq!(r.time_us, 0);
        assert_eq!(r.level, Level::Info);
        assert_eq!(r.target, "skiff");
        assert_eq!(r.message, "skiff-kernel 0.1.0 build=abc");
        assert_eq!(r.field("build"), Some("abc"));

        let r = parse("[1.250003] INFO  stage: net-up t_us=1250003 ip=10.0.2.15/24").unwrap();
        assert_eq!(r.time_us, 1_250_003);
        assert_eq!(r.stage(), Some(("net-up", 1_250_003)));
        assert_eq!(r.field("ip"), Some("10.0.2.15/24"));

        let r = parse(
            "[0.031000] ERROR fault: page fault vector=14 error=0x2 rip=0x10203 cr2=0xdead000",
        )
        .unwrap();
        assert_eq!(r.level, Level::Error);
        assert_eq!(r.target, "fault");
        assert_eq!(r.field("vector"), Some("14"));
        assert_eq!(r.field("cr2"), Some("0xdead000"));
        assert_eq!(r.stage(), None);

        let r = parse("[12.000001] WARN  net::dhcp: retry n=2").unwrap();
        assert_eq!((r.level, r.target), (Level::Warn, "net::dhcp"));

        let r = parse("[3.000000] INFO  skiff: exit code=NO_DEVICE").unwrap();
        assert_eq!(r.exit(), Some(ExitCode::NoDevice));
    }

    #[test]
    fn rejects_malformed_lines() {
        for bad in [
            "",
            "hello",
            "[0.0] INFO  skiff: short micros",
            "[0.000000] INFO skiff: level not padded",
            "[0.000000] NOTE  skiff: unknown level",
            "[0.000000] INFO  skiff no colon",
            "[x.000000] INFO  skiff: bad secs",
            "0.000000] INFO  skiff: no bracket",
            "[99999999999999999999.000000] INFO  skiff: time overflows",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn field_needs_exact_key() {
        assert_eq!(field("ip=1 gateway_ip=2", "ip"), Some("1"));
        assert_eq!(field("gateway_ip=2", "ip"), None);
        assert_eq!(field("ipx=2", "ip"), None);
    }

    #[test]
    fn lines_round_trip() {
        for level in Level::ALL {
            for (time_us, target, message) in [
                (0, "skiff", "skiff-kernel 0.1.0 build=abc"),
                (1_250_003, "stage", "net-up t_us=1250003 ip=10.0.2.15/24"),
                (u64::MAX, "net::dhcp", ""),
            ] {
                let r = Record {
                    time_us,
                    level,
                    target,
                    message,
                };
                let line = r.to_string();
                assert_eq!(parse(&line), Some(r), "{line:?}");
                // The header is the line's start, as the kernel writes it.
                assert!(line.starts_with(&r.header().to_string()));
            }
        }
        assert_eq!(
            Header {
                time_us: 1_250_003,
                level: Level::Warn,
                target: "net"
            }
            .to_string(),
            "[1.250003] WARN  net: "
        );
    }

    #[test]
    fn stages_round_trip() {
        for (name, t_us, extra) in [
            ("entry", 0, ""),
            ("net-up", 1_250_003, " ip=10.0.2.15/24"),
            ("diag-ready", u64::MAX, " port=7000 mutating=token"),
        ] {
            let msg = Stage { name, t_us, extra }.to_string();
            let line = Record {
                time_us: t_us,
                level: Level::Info,
                target: STAGE_TARGET,
                message: &msg,
            }
            .to_string();
            let r = parse(&line).unwrap();
            assert_eq!(r.stage(), Some((name, t_us)), "{line}");
            assert!(r.message.ends_with(extra), "{line}");
        }
    }

    #[test]
    fn levels_are_ordered_and_named() {
        for l in Level::ALL {
            assert_eq!(Level::from_name(l.name()), Some(l));
            assert_eq!(Level::from_u8(l as u8), Some(l));
        }
        assert!(Level::Error < Level::Warn && Level::Debug < Level::Trace);
        assert_eq!(Level::from_name("WARN "), None);
    }

    #[test]
    fn exit_codes_match_the_contract() {
        let table = [
            (0x10, ExitCode::Success, "SUCCESS", 33),
            (0x11, ExitCode::Panic, "PANIC", 35),
            (0x12, ExitCode::Config, "CONFIG", 37),
            (0x13, ExitCode::Fault, "FAULT", 39),
            (0x14, ExitCode::NoDevice, "NO_DEVICE", 41),
            (0x15, ExitCode::NoEntropy, "NO_ENTROPY", 43),
            (0x16, ExitCode::OutOfMemory, "OUT_OF_MEMORY", 45),
        ];
        assert_eq!(table.len(), ExitCode::ALL.len());
        for (value, code, name, status) in table {
            assert_eq!(code as u8, value);
            assert_eq!(code.name(), name);
            assert_eq!(code.qemu_status(), status);
            assert_eq!(ExitCode::from_qemu_status(status), Some(code));
            assert_eq!(ExitCode::from_name(name), Some(code));
            // The announcement round-trips through a whole line.
            let msg = Exit(code).to_string();
            let line = Record {
                time_us: 5,
                level: Level::Info,
                target: EXIT_TARGET,
                message: &msg,
            }
            .to_string();
            assert_eq!(parse(&line).and_then(|r| r.exit()), Some(code));
        }
        for status in [0, 1, 2, 31, 32, 34, 47, 255] {
            assert_eq!(ExitCode::from_qemu_status(status), None);
        }
    }
}
