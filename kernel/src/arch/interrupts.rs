//! IDT, interrupt dispatch and the fault report.
//!
//! Vectors: 0–31 CPU exceptions, 32 the local APIC timer, 33–56 I/O APIC
//! pins 0–23, 255 APIC spurious; all on IST stacks (see `gdt`). Handlers do
//! the minimum: device and timer interrupts only set flags that the executor
//! turns into task wakeups, so no lock is ever taken in interrupt context
//! except by the fault path, which never returns, and the demand paging of
//! regions (`regions::on_page_fault`), which only try-locks the page pool.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::arch::exit::{ExitCode, exit_quiet, exit_unlocked};
use crate::arch::{apic, gdt};
use crate::log::{Level, log_unlocked};

core::arch::global_asm!(include_str!("isr_stubs.s"), options(att_syntax));

pub const TIMER_VECTOR: u8 = 32;
pub const IRQ_BASE: u8 = 33;
pub const IRQ_LINES: usize = 24;
pub const SPURIOUS_VECTOR: u8 = 255;
const STUBS: usize = 65;

unsafe extern "C" {
    static skiff_isr_table: [u64; STUBS];
}

/// Registers as saved by `isr_common` plus the CPU's interrupt frame.
#[repr(C)]
#[derive(Debug)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[repr(C, align(16))]
struct Idt([u64; 512]);

static mut IDT: Idt = Idt([0; 512]);

/// Set by the timer interrupt; the executor consumes it.
pub static TIMER_FIRED: AtomicBool = AtomicBool::new(false);
/// One bit per I/O APIC pin that has interrupted since last consumed.
pub static IRQ_PENDING: AtomicU32 = AtomicU32::new(0);
static IN_FAULT: AtomicBool = AtomicBool::new(false);

fn gate(handler: u64, ist: u8) -> (u64, u64) {
    let selector: u64 = 0x08; // kernel code segment, first GDT entry
    let low = (handler & 0xffff)
        | (selector << 16)
        | (u64::from(ist) << 32)
        | (0x8e << 40) // present, ring 0, 64-bit interrupt gate
        | ((handler >> 16) & 0xffff) << 48;
    (low, handler >> 32)
}

/// Builds and loads the IDT. Call after `gdt::init`.
pub fn init() {
    // SAFETY: `skiff_isr_table` is a read-only table of stub addresses
    // defined in isr_stubs.s with exactly STUBS entries.
    let table = unsafe { &*core::ptr::addr_of!(skiff_isr_table) };
    // SAFETY: the IDT is written once, here, before `lidt` and before
    // interrupts are enabled; nothing else accesses it.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for (i, &handler) in table.iter().enumerate() {
        let vector = if i == STUBS - 1 { 255 } else { i };
        let ist = match vector {
            2 => gdt::IST_NMI,
            8 => gdt::IST_DOUBLE_FAULT,
            0..=31 => gdt::IST_EXCEPTION,
            _ => gdt::IST_INTERRUPT,
        };
        let (lo, hi) = gate(handler, ist);
        idt.0[vector * 2] = lo;
        idt.0[vector * 2 + 1] = hi;
    }
    let ptr = x86_64::structures::DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: x86_64::VirtAddr::new(idt.0.as_ptr() as u64),
    };
    // SAFETY: the IDT is 'static and every present gate points at a stub
    // that saves state and calls `skiff_isr_dispatch`.
    unsafe { x86_64::instructions::tables::lidt(&ptr) };
}

#[unsafe(no_mangle)]
extern "C" fn skiff_isr_dispatch(frame: &mut Frame) {
    let v = frame.vector as u8;
    match v {
        // A first touch of a demand-paged region page: mapped, retried.
        14 if crate::regions::on_page_fault(
            x86_64::registers::control::Cr2::read_raw(),
            frame.error,
        ) => {}
        0..=31 => fault(frame),
        TIMER_VECTOR => {
            TIMER_FIRED.store(true, Ordering::Release);
            crate::wasm::on_timer_interrupt();
            apic::eoi();
        }
        SPURIOUS_VECTOR => {}
        _ if v.wrapping_sub(IRQ_BASE) < IRQ_LINES as u8 => {
            let pin = v - IRQ_BASE;
            apic::ioapic_mask_if_level(pin.into());
            IRQ_PENDING.fetch_or(1 << pin, Ordering::Release);
            apic::eoi();
        }
        _ => apic::eoi(),
    }
}

fn exception_name(v: u64) -> &'static str {
    match v {
        0 => "divide-error",
        1 => "debug",
        2 => "nmi",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound-range",
        6 => "invalid-opcode",
        7 => "device-not-available",
        8 => "double-fault",
        10 => "invalid-tss",
        11 => "segment-not-present",
        12 => "stack-segment-fault",
        13 => "general-protection",
        14 => "page-fault",
        16 => "x87-floating-point",
        17 => "alignment-check",
        18 => "machine-check",
        19 => "simd-floating-point",
        20 => "virtualization",
        21 => "control-protection",
        _ => "reserved",
    }
}

fn fault(f: &Frame) -> ! {
    if IN_FAULT.swap(true, Ordering::SeqCst) {
        // A fault while reporting a fault: report nothing more.
        exit_quiet(ExitCode::Fault);
    }
    let cr2 = x86_64::registers::control::Cr2::read_raw();
    let line = |args: core::fmt::Arguments| log_unlocked(Level::Error, "fault", args);
    line(format_args!(
        "{} vector={} error={:#x} rip={:#x} cr2={:#x}",
        exception_name(f.vector),
        f.vector,
        f.error,
        f.rip,
        cr2
    ));
    if f.vector == 14 {
        // Page-fault error code: bit 0 present, 1 write, 4 instruction fetch.
        if crate::paging::is_guard(cr2) || crate::regions::is_guard(cr2) {
            line(format_args!("stack overflow: guard page {cr2:#x} hit"));
        } else if f.error & 0x11 == 0x11 {
            line(format_args!(
                "W^X: instruction fetch from no-execute page {cr2:#x}"
            ));
        } else if f.error & 0x3 == 0x3 {
            line(format_args!("W^X: write to read-only page {cr2:#x}"));
        }
    }
    line(format_args!(
        "rax={:#018x} rbx={:#018x} rcx={:#018x} rdx={:#018x}",
        f.rax, f.rbx, f.rcx, f.rdx
    ));
    line(format_args!(
        "rsi={:#018x} rdi={:#018x} rbp={:#018x} rsp={:#018x}",
        f.rsi, f.rdi, f.rbp, f.rsp
    ));
    line(format_args!(
        "r8={:#018x} r9={:#018x} r10={:#018x} r11={:#018x}",
        f.r8, f.r9, f.r10, f.r11
    ));
    line(format_args!(
        "r12={:#018x} r13={:#018x} r14={:#018x} r15={:#018x}",
        f.r12, f.r13, f.r14, f.r15
    ));
    line(format_args!(
        "cs={:#x} ss={:#x} rflags={:#x}",
        f.cs, f.ss, f.rflags
    ));
    for i in 0..4u64 {
        let addr = f.rsp.wrapping_add(i * 32);
        if !crate::mem::is_readable(addr, 32) {
            line(format_args!("stack {addr:#x}: unmapped"));
            break;
        }
        // SAFETY: `is_readable` checked that these 32 bytes are mapped.
        let w = unsafe { core::ptr::read_volatile(addr as *const [u64; 4]) };
        line(format_args!(
            "stack {addr:#x}: {:#018x} {:#018x} {:#018x} {:#018x}",
            w[0], w[1], w[2], w[3]
        ));
    }
    exit_unlocked(ExitCode::Fault)
}
