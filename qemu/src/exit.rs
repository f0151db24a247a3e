//! QEMU's exit status → the kernel's exit code (contract: *Exit codes*).

use std::fmt;
use std::process::ExitStatus;

/// How a node ended. With `isa-debug-exit`, QEMU's status is `(value << 1) | 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelExit {
    /// 0x10 → 33: orderly shutdown.
    Success,
    /// 0x11 → 35: Rust panic.
    Panic,
    /// 0x12 → 37: bad command line.
    Config,
    /// 0x13 → 39: CPU exception.
    Fault,
    /// 0x14 → 41: required device missing.
    NoDevice,
    /// 0x15 → 43: no entropy source.
    NoEntropy,
    /// 0x16 → 45: heap or frame exhaustion.
    OutOfMemory,
    /// Any other QEMU status (0: QEMU itself exited, e.g. a guest reset with
    /// `-no-reboot`; 1: QEMU error such as a bad option).
    Other(i32),
    /// QEMU ended by a signal (killed by us on timeout or drop, or by someone else).
    Killed(Option<i32>),
}

impl KernelExit {
    /// Maps a QEMU process status code.
    pub fn from_code(code: i32) -> Self {
        match code {
            33 => Self::Success,
            35 => Self::Panic,
            37 => Self::Config,
            39 => Self::Fault,
            41 => Self::NoDevice,
            43 => Self::NoEntropy,
            45 => Self::OutOfMemory,
            other => Self::Other(other),
        }
    }

    pub fn from_status(status: ExitStatus) -> Self {
        match status.code() {
            Some(code) => Self::from_code(code),
            None => {
                use std::os::unix::process::ExitStatusExt;
                Self::Killed(status.signal())
            }
        }
    }

    /// The name the kernel announces in `skiff: exit code=<name>`.
    pub fn name(&self) -> Option<&'static str> {
        Some(match self {
            Self::Success => "SUCCESS",
            Self::Panic => "PANIC",
            Self::Config => "CONFIG",
            Self::Fault => "FAULT",
            Self::NoDevice => "NO_DEVICE",
            Self::NoEntropy => "NO_ENTROPY",
            Self::OutOfMemory => "OUT_OF_MEMORY",
            Self::Other(_) | Self::Killed(_) => return None,
        })
    }

    /// The QEMU process status for this exit (what `skiff node run` exits with).
    pub fn code(&self) -> i32 {
        match self {
            Self::Success => 33,
            Self::Panic => 35,
            Self::Config => 37,
            Self::Fault => 39,
            Self::NoDevice => 41,
            Self::NoEntropy => 43,
            Self::OutOfMemory => 45,
            Self::Other(c) => *c,
            // Shell convention for "died of signal N".
            Self::Killed(sig) => 128 + sig.unwrap_or(9),
        }
    }
}

impl fmt::Display for KernelExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Other(c) => write!(f, "QEMU status {c} (not a kernel exit code)"),
            Self::Killed(Some(s)) => write!(f, "killed by signal {s}"),
            Self::Killed(None) => write!(f, "killed"),
            named => write!(
                f,
                "{} (QEMU status {})",
                named.name().unwrap_or("?"),
                named.code()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn maps_every_contract_code() {
        let table = [
            (0x10, KernelExit::Success, "SUCCESS"),
            (0x11, KernelExit::Panic, "PANIC"),
            (0x12, KernelExit::Config, "CONFIG"),
            (0x13, KernelExit::Fault, "FAULT"),
            (0x14, KernelExit::NoDevice, "NO_DEVICE"),
            (0x15, KernelExit::NoEntropy, "NO_ENTROPY"),
            (0x16, KernelExit::OutOfMemory, "OUT_OF_MEMORY"),
        ];
        for (value, exit, name) in table {
            let status = (value << 1) | 1;
            assert_eq!(KernelExit::from_code(status), exit);
            assert_eq!(exit.code(), status);
            assert_eq!(exit.name(), Some(name));
        }
        assert_eq!(KernelExit::from_code(33), KernelExit::Success);
        assert_eq!(KernelExit::from_code(45), KernelExit::OutOfMemory);
    }

    #[test]
    fn other_statuses_are_not_kernel_exits() {
        for code in [0, 1, 2, 31, 32, 34, 47, 255] {
            assert_eq!(KernelExit::from_code(code), KernelExit::Other(code));
        }
    }

    #[test]
    fn maps_process_status() {
        // Raw wait status: exit code in bits 8..16, signal in the low 7 bits.
        assert_eq!(
            KernelExit::from_status(ExitStatus::from_raw(39 << 8)),
            KernelExit::Fault
        );
        assert_eq!(
            KernelExit::from_status(ExitStatus::from_raw(9)),
            KernelExit::Killed(Some(9))
        );
        assert_eq!(KernelExit::Killed(Some(9)).code(), 137);
    }
}
