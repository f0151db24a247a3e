//! Leaving the kernel: QEMU's `isa-debug-exit` (port 0xf4), else halt.
//! The codes are the contract in kernel/README.md.

use x86_64::instructions::port::Port;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    Success = 0x10,
    Panic = 0x11,
    Config = 0x12,
    Fault = 0x13,
    NoDevice = 0x14,
    #[allow(dead_code)] // raised by the TLS client when `entropy::fill` fails
    NoEntropy = 0x15,
    OutOfMemory = 0x16,
}

impl ExitCode {
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
}

/// Announces the exit on the serial log and leaves.
pub fn exit(code: ExitCode) -> ! {
    crate::log!(
        crate::log::Level::Info,
        "skiff",
        "exit code={}",
        code.name()
    );
    exit_quiet(code)
}

/// Leaves without logging (for paths where the log itself may be broken).
pub fn exit_quiet(code: ExitCode) -> ! {
    x86_64::instructions::interrupts::disable();
    // SAFETY: port 0xf4 is isa-debug-exit under QEMU (the process ends here);
    // on hardware without it the write is ignored and we halt below.
    unsafe { Port::<u32>::new(0xf4).write(code as u32) };
    loop {
        x86_64::instructions::hlt();
    }
}
