//! CPU feature detection and control-register setup.

use core::arch::x86_64::{__cpuid, CpuidResult};
use x86_64::registers::control::{Cr0, Cr0Flags, Cr4, Cr4Flags};
use x86_64::registers::model_specific::{Efer, EferFlags};

pub fn cpuid(leaf: u32) -> CpuidResult {
    __cpuid(leaf)
}

pub fn max_leaf() -> u32 {
    cpuid(0).eax
}

pub fn has_x2apic() -> bool {
    cpuid(1).ecx & (1 << 21) != 0
}

pub fn has_tsc_deadline() -> bool {
    cpuid(1).ecx & (1 << 24) != 0
}

pub fn has_rdrand() -> bool {
    cpuid(1).ecx & (1 << 30) != 0
}

pub fn has_hypervisor() -> bool {
    cpuid(1).ecx & (1 << 31) != 0
}

fn has_nx() -> bool {
    cpuid(0x8000_0000).eax >= 0x8000_0001 && cpuid(0x8000_0001).edx & (1 << 20) != 0
}

/// Enables SSE for code the kernel runs later (AOT-compiled wasm uses it;
/// the kernel's own code is soft-float and never touches XMM registers), and
/// the no-execute bit for page mappings where the CPU has it.
pub fn init() {
    // SAFETY: clearing EM and setting MP/OSFXSR/OSXMMEXCPT only enables SSE
    // instructions; it changes no memory mapping or privilege.
    unsafe {
        Cr0::update(|f| {
            f.remove(Cr0Flags::EMULATE_COPROCESSOR);
            f.insert(Cr0Flags::MONITOR_COPROCESSOR);
        });
        Cr4::update(|f| {
            f.insert(Cr4Flags::OSFXSR | Cr4Flags::OSXMMEXCPT_ENABLE);
        });
    }
    if has_nx() {
        // SAFETY: NXE only makes the NX bit meaningful; no existing mapping
        // sets it, so nothing that executes today stops executing.
        unsafe { Efer::update(|f| f.insert(EferFlags::NO_EXECUTE_ENABLE)) };
    }
}

pub fn nx_enabled() -> bool {
    Efer::read().contains(EferFlags::NO_EXECUTE_ENABLE)
}
