//! The serial log format (contract: *Serial log*):
//! `[<secs>.<micros>] <LEVEL> <target>: <message>[ key=value ...]`.

/// One parsed log line, borrowing from the line text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Kernel monotonic time since entry, in microseconds.
    pub time_us: u64,
    /// `ERROR`, `WARN`, `INFO`, `DEBUG` or `TRACE` (unpadded).
    pub level: &'a str,
    pub target: &'a str,
    /// Everything after `<target>: `, including the `key=value` words.
    pub message: &'a str,
}

const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];

/// Parses a line; `None` if it does not follow the format exactly.
pub fn parse(line: &str) -> Option<Record<'_>> {
    let rest = line.strip_prefix('[')?;
    let (time, rest) = rest.split_once("] ")?;
    let (secs, micros) = time.split_once('.')?;
    if secs.is_empty() || micros.len() != 6 || !all_digits(secs) || !all_digits(micros) {
        return None;
    }
    let time_us = secs.parse::<u64>().ok()? * 1_000_000 + micros.parse::<u64>().ok()?;
    // The level is padded to 5 columns, then one space.
    let padded = rest.get(..5)?;
    let level = padded.trim_end();
    if !LEVELS.contains(&level) || rest.as_bytes().get(5) != Some(&b' ') {
        return None;
    }
    let (target, message) = rest[6..].split_once(": ")?;
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
        if self.target != "stage" {
            return None;
        }
        let name = self.message.split_whitespace().next()?;
        let t_us = self.field("t_us")?.parse().ok()?;
        Some((name, t_us))
    }
}

/// The value of a `key=value` word in whitespace-separated text.
pub fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// The boot stages in contract order.
pub const STAGES: [&str; 7] = [
    "entry",
    "memory",
    "interrupts",
    "timers",
    "devices",
    "net-up",
    "diag-ready",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_contract_examples() {
        let r = parse("[0.000000] INFO  skiff: skiff-kernel 0.1.0 build=abc").unwrap();
        assert_eq!(r.time_us, 0);
        assert_eq!(r.level, "INFO");
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
        assert_eq!(r.level, "ERROR");
        assert_eq!(r.target, "fault");
        assert_eq!(r.field("vector"), Some("14"));
        assert_eq!(r.field("cr2"), Some("0xdead000"));
        assert_eq!(r.stage(), None);

        let r = parse("[12.000001] WARN  net::dhcp: retry n=2").unwrap();
        assert_eq!((r.level, r.target), ("WARN", "net::dhcp"));
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
}
