//! QEMU's exit status → how the node ended. The kernel's exit codes and
//! their mapping to QEMU statuses are `skiff-serial-log`'s
//! ([`ExitCode`]); this adds what only the host sees.

use std::fmt;
use std::process::ExitStatus;

pub use skiff_serial_log::ExitCode;

/// How a node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelExit {
    /// The kernel left through `isa-debug-exit` with this code.
    Code(ExitCode),
    /// Any other QEMU status (0: QEMU itself exited, e.g. a guest reset with
    /// `-no-reboot`; 1: QEMU error such as a bad option).
    Other(i32),
    /// QEMU ended by a signal (killed by us on timeout or drop, or by someone else).
    Killed(Option<i32>),
}

impl From<ExitCode> for KernelExit {
    fn from(code: ExitCode) -> Self {
        Self::Code(code)
    }
}

impl PartialEq<ExitCode> for KernelExit {
    fn eq(&self, code: &ExitCode) -> bool {
        *self == Self::Code(*code)
    }
}

impl KernelExit {
    /// Maps a QEMU process status code.
    pub fn from_code(code: i32) -> Self {
        ExitCode::from_qemu_status(code).map_or(Self::Other(code), Self::Code)
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
        match self {
            Self::Code(c) => Some(c.name()),
            Self::Other(_) | Self::Killed(_) => None,
        }
    }

    /// The QEMU process status for this exit (what `skiff node run` exits with).
    pub fn code(&self) -> i32 {
        match self {
            Self::Code(c) => c.qemu_status(),
            Self::Other(c) => *c,
            // Shell convention for "died of signal N".
            Self::Killed(sig) => 128 + sig.unwrap_or(9),
        }
    }
}

impl fmt::Display for KernelExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "{} (QEMU status {})", c.name(), c.qemu_status()),
            Self::Other(c) => write!(f, "QEMU status {c} (not a kernel exit code)"),
            Self::Killed(Some(s)) => write!(f, "killed by signal {s}"),
            Self::Killed(None) => write!(f, "killed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn maps_every_kernel_code() {
        for code in ExitCode::ALL {
            let exit = KernelExit::from_code(code.qemu_status());
            assert_eq!(exit, code);
            assert_eq!(exit.code(), code.qemu_status());
            assert_eq!(exit.name(), Some(code.name()));
        }
        assert_eq!(KernelExit::from_code(33), ExitCode::Success);
        assert_eq!(KernelExit::from_code(45), ExitCode::OutOfMemory);
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
            ExitCode::Fault
        );
        assert_eq!(
            KernelExit::from_status(ExitStatus::from_raw(9)),
            KernelExit::Killed(Some(9))
        );
        assert_eq!(KernelExit::Killed(Some(9)).code(), 137);
    }
}
