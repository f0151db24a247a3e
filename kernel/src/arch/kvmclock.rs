//! KVM's paravirtual clock: the TSC frequency and the wall clock without
//! slow port I/O (PIT calibration costs ~100 ms under nested KVM, and QEMU
//! microvm under KVM has no CMOS RTC).
//!
//! Protocol (Linux Documentation/virt/kvm/x86/msr.rst): the guest writes the
//! physical address of a `pvclock_vcpu_time_info` (| 1 to enable) to
//! MSR_KVM_SYSTEM_TIME_NEW and of a `pvclock_wall_clock` to
//! MSR_KVM_WALL_CLOCK_NEW; the host fills them. Readers retry while the
//! version is odd or changed (the host is updating).

use core::sync::atomic::{Ordering, fence};

use x86_64::registers::model_specific::Msr;

use crate::arch::cpu;

const MSR_WALL_CLOCK_NEW: u32 = 0x4b56_4d00;
const MSR_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
const FEATURE_CLOCKSOURCE2: u32 = 1 << 3;

#[repr(C, align(64))]
struct TimeInfo {
    version: u32,
    pad0: u32,
    tsc_timestamp: u64,
    system_time: u64,
    tsc_to_system_mul: u32,
    tsc_shift: i8,
    flags: u8,
    pad: [u8; 2],
}

#[repr(C, align(16))]
struct WallClock {
    version: u32,
    sec: u32,
    nsec: u32,
}

static mut TIME: TimeInfo = TimeInfo {
    version: 0,
    pad0: 0,
    tsc_timestamp: 0,
    system_time: 0,
    tsc_to_system_mul: 0,
    tsc_shift: 0,
    flags: 0,
    pad: [0; 2],
};
static mut WALL: WallClock = WallClock {
    version: 0,
    sec: 0,
    nsec: 0,
};

fn present() -> bool {
    if !cpu::has_hypervisor() {
        return false;
    }
    let sig = cpu::cpuid(0x4000_0000);
    let mut name = [0u8; 12];
    name[..4].copy_from_slice(&sig.ebx.to_le_bytes());
    name[4..8].copy_from_slice(&sig.ecx.to_le_bytes());
    name[8..].copy_from_slice(&sig.edx.to_le_bytes());
    &name == b"KVMKVMKVM\0\0\0" && cpu::cpuid(0x4000_0001).eax & FEATURE_CLOCKSOURCE2 != 0
}

/// A consistent copy of a host-updated structure field set.
fn read_time() -> (u64, u64, u32, i8) {
    let p = core::ptr::addr_of!(TIME);
    loop {
        // SAFETY: `TIME` is a static the host writes; volatile reads of
        // plain integers, validated by the version protocol below.
        unsafe {
            let v1 = core::ptr::read_volatile(&raw const (*p).version);
            fence(Ordering::Acquire);
            let r = (
                core::ptr::read_volatile(&raw const (*p).tsc_timestamp),
                core::ptr::read_volatile(&raw const (*p).system_time),
                core::ptr::read_volatile(&raw const (*p).tsc_to_system_mul),
                core::ptr::read_volatile(&raw const (*p).tsc_shift),
            );
            fence(Ordering::Acquire);
            let v2 = core::ptr::read_volatile(&raw const (*p).version);
            if v1 == v2 && v1 & 1 == 0 {
                return r;
            }
        }
    }
}

fn scale(delta: u64, mul: u32, shift: i8) -> u64 {
    let d = if shift >= 0 {
        delta << shift
    } else {
        delta >> (-shift)
    };
    ((u128::from(d) * u128::from(mul)) >> 32) as u64
}

/// Registers the structures; returns (TSC Hz, Unix seconds now) when KVM's
/// clock is available.
pub fn init() -> Option<(u64, u64)> {
    if !present() {
        return None;
    }
    let time_pa = core::ptr::addr_of!(TIME) as u64;
    let wall_pa = core::ptr::addr_of!(WALL) as u64;
    // SAFETY: the statics are identity-mapped kernel memory (physical =
    // virtual below 4 GiB), reserved for the host's writes; the MSRs exist
    // (CPUID KVM_FEATURE_CLOCKSOURCE2).
    unsafe {
        Msr::new(MSR_SYSTEM_TIME_NEW).write(time_pa | 1);
        Msr::new(MSR_WALL_CLOCK_NEW).write(wall_pa);
    }
    let (tsc_ts, sys_time, mul, shift) = read_time();
    if mul == 0 {
        return None;
    }
    // ns = ((ticks << shift) * mul) >> 32  ⇒  Hz = 1e9 · 2^32 / (mul · 2^shift)
    let num = 1_000_000_000u128 << 32;
    let hz = if shift >= 0 {
        num / (u128::from(mul) << shift)
    } else {
        (num << (-shift)) / u128::from(mul)
    } as u64;
    let p = core::ptr::addr_of!(WALL);
    // SAFETY: as in `read_time`; the host wrote `WALL` during the MSR write.
    let (sec, nsec) = unsafe {
        (
            core::ptr::read_volatile(&raw const (*p).sec),
            core::ptr::read_volatile(&raw const (*p).nsec),
        )
    };
    let now_ns = sys_time
        + scale(
            crate::arch::time::rdtsc().saturating_sub(tsc_ts),
            mul,
            shift,
        );
    let unix = u64::from(sec) + (u64::from(nsec) + now_ns) / 1_000_000_000;
    Some((hz, unix))
}
