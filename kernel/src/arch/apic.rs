//! Local APIC (x2APIC when the CPU has it) and its timer, plus the I/O APIC.
//!
//! The timer is one-shot: TSC-deadline mode where available, else the APIC
//! counter with a frequency measured against the TSC. The executor re-arms
//! it for the earliest deadline before each `hlt`. The I/O APIC is assumed
//! at 0xfec00000 (microvm with acpi=off has no MADT to say otherwise).

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

use crate::arch::{cpu, interrupts, time};

const XAPIC_BASE: u64 = 0xfee0_0000;
const IOAPIC_BASE: u64 = 0xfec0_0000;
const REG_ID: u32 = 0x20;
const REG_TPR: u32 = 0x80;
const REG_EOI: u32 = 0xb0;
const REG_SVR: u32 = 0xf0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CUR: u32 = 0x390;
const REG_TIMER_DIV: u32 = 0x3e0;
const MSR_APIC_BASE: u32 = 0x1b;
const MSR_TSC_DEADLINE: u32 = 0x6e0;

static X2APIC: AtomicBool = AtomicBool::new(false);
static TSC_DEADLINE: AtomicBool = AtomicBool::new(false);
/// APIC timer ticks per second (divide by 1), when not in TSC-deadline mode.
static APIC_HZ: AtomicU64 = AtomicU64::new(0);

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: x2APIC registers are MSRs 0x800 + reg/16; reads have no
        // side effects for the registers used here.
        unsafe { Msr::new(0x800 + (reg >> 4)).read() as u32 }
    } else {
        // SAFETY: the xAPIC page is identity-mapped uncached by the boot
        // tables; registers are 32-bit, 16-byte aligned.
        unsafe { core::ptr::read_volatile((XAPIC_BASE + u64::from(reg)) as *const u32) }
    }
}

fn write(reg: u32, val: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        // SAFETY: as in `read`; writes program this CPU's APIC only.
        unsafe { Msr::new(0x800 + (reg >> 4)).write(u64::from(val)) };
    } else {
        // SAFETY: as in `read`.
        unsafe { core::ptr::write_volatile((XAPIC_BASE + u64::from(reg)) as *mut u32, val) };
    }
}

pub fn x2apic() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

pub fn tsc_deadline() -> bool {
    TSC_DEADLINE.load(Ordering::Relaxed)
}

/// Masks the legacy PICs and enables the local APIC.
pub fn init() {
    // SAFETY: masking all lines of both 8259 PICs stops them raising
    // interrupts; the ports have no other effect.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    let mut base = Msr::new(MSR_APIC_BASE);
    // SAFETY: setting the enable bit (and x2APIC mode where CPUID reports
    // it) in IA32_APIC_BASE keeps the base address unchanged.
    unsafe {
        let mut v = base.read() | (1 << 11);
        if cpu::has_x2apic() {
            v |= 1 << 10;
            X2APIC.store(true, Ordering::Relaxed);
        }
        base.write(v);
    }
    write(REG_SVR, 0x100 | u32::from(interrupts::SPURIOUS_VECTOR));
    write(REG_TPR, 0);
    write(REG_LVT_TIMER, 1 << 16); // masked until calibrated
    write(REG_TIMER_DIV, 0b1011); // divide by 1
    ioapic_init();
}

pub fn id() -> u32 {
    let id = read(REG_ID);
    if x2apic() { id } else { id >> 24 }
}

pub fn eoi() {
    write(REG_EOI, 0);
}

/// Measures the APIC timer against the (calibrated) TSC over 0.5 ms; not
/// needed in TSC-deadline mode.
pub fn calibrate() {
    if cpu::has_tsc_deadline() {
        return;
    }
    let window = time::tsc_hz() / 2000;
    write(REG_LVT_TIMER, 1 << 16);
    let t0 = time::rdtsc();
    write(REG_TIMER_INIT, u32::MAX);
    while time::rdtsc() - t0 < window {}
    let elapsed = u64::from(u32::MAX - read(REG_TIMER_CUR));
    let ticks = time::rdtsc() - t0;
    write(REG_TIMER_INIT, 0);
    let hz = (u128::from(elapsed) * u128::from(time::tsc_hz()) / u128::from(ticks.max(1))) as u64;
    APIC_HZ.store(hz, Ordering::Relaxed);
}

pub fn apic_timer_hz() -> u64 {
    APIC_HZ.load(Ordering::Relaxed)
}

/// Selects the timer mode after calibration and unmasks it.
pub fn timer_enable() {
    if cpu::has_tsc_deadline() {
        TSC_DEADLINE.store(true, Ordering::Relaxed);
        write(
            REG_LVT_TIMER,
            (0b10 << 17) | u32::from(interrupts::TIMER_VECTOR),
        );
    } else {
        write(REG_LVT_TIMER, u32::from(interrupts::TIMER_VECTOR));
    }
}

/// Arms the one-shot timer to fire at TSC value `deadline` (or soon after;
/// far deadlines may fire early, the executor then re-arms).
pub fn arm(deadline: u64) {
    if tsc_deadline() {
        // SAFETY: IA32_TSC_DEADLINE exists (CPUID checked) and only arms the
        // timer interrupt.
        unsafe { Msr::new(MSR_TSC_DEADLINE).write(deadline.max(1)) };
        return;
    }
    let now = time::rdtsc();
    let ticks = deadline.saturating_sub(now);
    let hz = time::tsc_hz().max(1);
    let count = u128::from(ticks) * u128::from(apic_timer_hz()) / u128::from(hz);
    write(REG_TIMER_INIT, count.clamp(1, u128::from(u32::MAX)) as u32);
}

/// Stops the one-shot timer.
pub fn disarm() {
    if tsc_deadline() {
        // SAFETY: writing 0 disarms the TSC-deadline timer.
        unsafe { Msr::new(MSR_TSC_DEADLINE).write(0) };
    } else {
        write(REG_TIMER_INIT, 0);
    }
}

fn ioapic_write(reg: u32, val: u32) {
    // SAFETY: the I/O APIC's index/data window is identity-mapped uncached;
    // writing the index then the data programs one register.
    unsafe {
        core::ptr::write_volatile(IOAPIC_BASE as *mut u32, reg);
        core::ptr::write_volatile((IOAPIC_BASE + 0x10) as *mut u32, val);
    }
}

fn ioapic_init() {
    // Masking is all that matters until a pin is enabled (each write is a
    // VM exit, so the destination half is left for `ioapic_enable`).
    for pin in 0..interrupts::IRQ_LINES as u32 {
        ioapic_write(0x10 + 2 * pin, 1 << 16);
    }
}

/// Pins programmed level-triggered (masked by the ISR until the driver has
/// acknowledged its device, see `ioapic_unmask`).
static LEVEL_PINS: AtomicU32 = AtomicU32::new(0);

/// Routes I/O APIC `pin` to this CPU at vector `IRQ_BASE + pin`: edge/high
/// for virtio-mmio (microvm), level/low for PCI INTx.
pub fn ioapic_enable(pin: u32, level_low: bool) {
    if pin as usize >= interrupts::IRQ_LINES {
        return;
    }
    let mut low = u32::from(interrupts::IRQ_BASE) + pin;
    if level_low {
        low |= (1 << 13) | (1 << 15);
        LEVEL_PINS.fetch_or(1 << pin, Ordering::Relaxed);
    }
    ioapic_write(0x11 + 2 * pin, id() << 24);
    ioapic_write(0x10 + 2 * pin, low);
}

/// In the ISR: masks a level-triggered pin so that it does not fire again
/// before the driver acknowledged the device (the line stays asserted).
pub fn ioapic_mask_if_level(pin: u32) {
    if LEVEL_PINS.load(Ordering::Relaxed) & (1 << pin) != 0 {
        let low = u32::from(interrupts::IRQ_BASE) + pin;
        ioapic_write(0x10 + 2 * pin, low | (1 << 13) | (1 << 15) | (1 << 16));
    }
}

/// After the driver acknowledged its device: unmasks a level pin again.
pub fn ioapic_unmask(pin: u32) {
    if LEVEL_PINS.load(Ordering::Relaxed) & (1 << pin) != 0 {
        let low = u32::from(interrupts::IRQ_BASE) + pin;
        x86_64::instructions::interrupts::without_interrupts(|| {
            ioapic_write(0x10 + 2 * pin, low | (1 << 13) | (1 << 15));
        });
    }
}
