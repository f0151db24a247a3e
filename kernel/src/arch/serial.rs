//! COM1 (0x3f8) at 115200 8N1, polled. Writes never block forever: a UART
//! that never reports "transmit empty" (none fitted) is given up on per byte.

use x86_64::instructions::port::Port;

const COM1: u16 = 0x3f8;

/// Programs the UART. Safe to call more than once.
pub fn init() {
    let regs: [(u16, u8); 6] = [
        (1, 0x00), // no UART interrupts
        (3, 0x80), // DLAB on
        (0, 0x01), // divisor 1 = 115200
        (1, 0x00),
        (3, 0x03), // 8N1, DLAB off
        (2, 0xc7), // FIFO on, cleared, 14-byte threshold
    ];
    for (off, val) in regs {
        // SAFETY: COM1's registers are I/O ports with no memory effects.
        unsafe { Port::<u8>::new(COM1 + off).write(val) };
    }
}

/// Bytes the 16550 FIFO takes once "transmit holding register empty" is
/// set; checking the line status once per FIFO-full halves the port I/O
/// (each access is a VM exit under virtualisation).
const FIFO: usize = 16;

fn wait_fifo_empty() {
    for _ in 0..100_000 {
        // SAFETY: reading the line status register has no side effects.
        let lsr = unsafe { Port::<u8>::new(COM1 + 5).read() };
        if lsr & 0x20 != 0 {
            break;
        }
    }
}

/// Writes bytes, translating `\n` to `\r\n`.
pub fn write_bytes(bytes: &[u8]) {
    let mut room = 0;
    let mut put = |b: u8| {
        if room == 0 {
            wait_fifo_empty();
            room = FIFO;
        }
        // SAFETY: writing the data register queues one byte in the FIFO.
        unsafe { Port::<u8>::new(COM1).write(b) };
        room -= 1;
    };
    for &b in bytes {
        if b == b'\n' {
            put(b'\r');
        }
        put(b);
    }
}

/// A `fmt::Write` sink for COM1 (callers serialise lines themselves).
pub struct Serial;

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}
