//! Hardware glue for x86_64. Everything that touches ports, MSRs, control
//! registers or raw physical memory lives under this module.

pub mod apic;
pub mod cpu;
pub mod exit;
pub mod gdt;
pub mod interrupts;
pub mod kvmclock;
pub mod serial;
pub mod time;
