//! The serial log: lines in `skiff-serial-log`'s format
//! (`[<secs>.<micros>] <LEVEL> <target>: <message>`) on COM1.
//!
//! A line is formatted into a stack buffer and written whole under a lock
//! taken with interrupts off, so lines from interrupt handlers never split
//! other lines and never deadlock against them.

use core::fmt::Write;
use core::sync::atomic::{AtomicU8, Ordering};

pub use skiff_serial_log::Level;
use skiff_serial_log::{Header, STAGE_TARGET, Stage};

static MAX_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

pub fn set_max_level(level: Level) {
    MAX_LEVEL.store(level as u8, Ordering::Relaxed);
}

pub fn enabled(level: Level) -> bool {
    level as u8 <= MAX_LEVEL.load(Ordering::Relaxed)
}

/// A fixed buffer that truncates instead of failing.
struct LineBuf {
    buf: [u8; 512],
    len: usize,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

pub fn log(level: Level, target: &str, args: core::fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let mut line = LineBuf {
        buf: [0; 512],
        len: 0,
    };
    let _ = write!(line, "{}{args}", header(level, target));
    if line.len == line.buf.len() {
        line.len -= 1;
    }
    line.buf[line.len] = b'\n';
    line.len += 1;
    x86_64::instructions::interrupts::without_interrupts(|| {
        let _guard = LOCK.lock();
        crate::arch::serial::write_bytes(&line.buf[..line.len]);
    });
}

/// Writes a line bypassing the lock (fault and panic paths, where the lock
/// may be held by the interrupted code).
pub fn log_unlocked(level: Level, target: &str, args: core::fmt::Arguments) {
    let _ = writeln!(
        crate::arch::serial::Serial,
        "{}{args}",
        header(level, target)
    );
}

/// A boot stage line (`stage: <name> t_us=<now>` then `extra`, which starts
/// with a space if not empty).
pub fn stage(name: &str, extra: core::fmt::Arguments) {
    let stage = Stage {
        name,
        t_us: crate::arch::time::uptime_us(),
        extra,
    };
    log(Level::Info, STAGE_TARGET, format_args!("{stage}"));
}

fn header(level: Level, target: &str) -> Header<'_> {
    Header {
        time_us: crate::arch::time::uptime_us(),
        level,
        target,
    }
}

#[macro_export]
macro_rules! log {
    ($level:expr, $target:expr, $($arg:tt)*) => {
        $crate::log::log($level, $target, format_args!($($arg)*))
    };
}
#[macro_export]
macro_rules! error { ($target:expr, $($arg:tt)*) => { $crate::log!($crate::log::Level::Error, $target, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($target:expr, $($arg:tt)*) => { $crate::log!($crate::log::Level::Warn, $target, $($arg)*) }; }
#[macro_export]
macro_rules! info { ($target:expr, $($arg:tt)*) => { $crate::log!($crate::log::Level::Info, $target, $($arg)*) }; }
#[macro_export]
macro_rules! debug { ($target:expr, $($arg:tt)*) => { $crate::log!($crate::log::Level::Debug, $target, $($arg)*) }; }
