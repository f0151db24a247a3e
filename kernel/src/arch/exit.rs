//! Leaving the kernel: QEMU's `isa-debug-exit` (port 0xf4), else halt.
//! The codes and their announcement are `skiff-serial-log`'s (the contract
//! in kernel/README.md, read back by `skiff-qemu`).

use skiff_serial_log::{EXIT_TARGET, Exit};
use x86_64::instructions::port::Port;

pub use skiff_serial_log::ExitCode;

use crate::log::{Level, log_unlocked};

/// Announces the exit on the serial log and leaves.
pub fn exit(code: ExitCode) -> ! {
    crate::log!(Level::Info, EXIT_TARGET, "{}", Exit(code));
    exit_quiet(code)
}

/// Announces the exit bypassing the log's lock (fault and panic paths,
/// where the interrupted code may hold it) and leaves.
pub fn exit_unlocked(code: ExitCode) -> ! {
    log_unlocked(Level::Info, EXIT_TARGET, format_args!("{}", Exit(code)));
    exit_quiet(code)
}

/// Leaves without logging (for paths where the log itself may be broken).
pub fn exit_quiet(code: ExitCode) -> ! {
    x86_64::instructions::interrupts::disable();
    // SAFETY: port 0xf4 is isa-debug-exit under QEMU (the process ends here);
    // on hardware without it the write is ignored and we halt below.
    unsafe { Port::<u32>::new(0xf4).write(u32::from(code as u8)) };
    loop {
        x86_64::instructions::hlt();
    }
}
