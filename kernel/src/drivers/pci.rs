//! virtio-pci discovery on PCI bus 0 (q35), through the legacy 0xcf8/0xcfc
//! configuration ports.
//!
//! Firmware may leave memory BARs unassigned (qboot) or place 64-bit BARs
//! above 4 GiB, outside the kernel's identity map; such BARs are (re)placed
//! in the 32-bit PCI hole above every BAR already assigned there.
//!
//! Interrupts: without ACPI there is no routing table, but QEMU's q35
//! (ICH9, host bridge 8086:29c0) wires INTx of bus-0 slot `s`, pin `p`
//! (1 = INTA) to PIRQ `(s + p - 1) % 4 + 4` and PIRQ n to I/O APIC pin
//! 16 + n, level-triggered, active-low. Elsewhere PCI devices get no
//! interrupt line (`Irq::None`: the net task polls every millisecond).

use alloc::vec::Vec;

use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{
    BarInfo, Command, ConfigurationAccess, DeviceFunction, MemoryBarType, PciRoot,
};
use x86_64::instructions::port::Port;

use super::hal::KernelHal;
use super::{Irq, Location, VTransport};

/// Lowest address used for BARs the kernel assigns itself.
const HOLE_START: u64 = 0xc000_0000;
/// First address above the hole (the I/O APIC, LAPIC and firmware follow;
/// microvm's virtio-mmio window too).
const HOLE_END: u64 = 0xfeb0_0000;

struct PortCam;

impl PortCam {
    fn select(df: DeviceFunction, reg: u8) {
        let addr = 0x8000_0000u32
            | (u32::from(df.bus) << 16)
            | (u32::from(df.device) << 11)
            | (u32::from(df.function) << 8)
            | u32::from(reg & 0xfc);
        // SAFETY: 0xcf8 is the PCI configuration address port; selecting a
        // register has no effect by itself.
        unsafe { Port::<u32>::new(0xcf8).write(addr) };
    }
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, df: DeviceFunction, reg: u8) -> u32 {
        Self::select(df, reg);
        // SAFETY: reads the selected configuration register.
        unsafe { Port::<u32>::new(0xcfc).read() }
    }

    fn write_word(&mut self, df: DeviceFunction, reg: u8, data: u32) {
        Self::select(df, reg);
        // SAFETY: writes the selected configuration register; callers
        // (virtio-drivers' PciRoot and `probe`) only write BARs and command.
        unsafe { Port::<u32>::new(0xcfc).write(data) };
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

fn is_q35() -> bool {
    let id = PortCam.read_word(
        DeviceFunction {
            bus: 0,
            device: 0,
            function: 0,
        },
        0,
    );
    id == 0x29c0_8086
}

fn intx_irq(root: &PciRoot<PortCam>, df: DeviceFunction, q35: bool) -> Irq {
    let _ = root;
    let pin = (PortCam.read_word(df, 0x3c) >> 8) & 0xff;
    if !q35 || df.bus != 0 || !(1..=4).contains(&pin) {
        return Irq::None;
    }
    let pirq = (u32::from(df.device) + pin - 1) % 4 + 4;
    Irq::Level(16 + pirq)
}

fn present() -> bool {
    // Host bridge at 00:00.0 answers with a vendor id; no PCI reads all ones.
    PortCam.read_word(
        DeviceFunction {
            bus: 0,
            device: 0,
            function: 0,
        },
        0,
    ) != u32::MAX
}

pub fn probe() -> Vec<(VTransport, Location, Irq)> {
    let mut out = Vec::new();
    if !present() {
        return out;
    }
    let q35 = is_q35();
    let mut root = PciRoot::new(PortCam);
    let funcs: Vec<_> = root
        .enumerate_bus(0)
        .filter(|(_, info)| virtio_drivers::transport::pci::virtio_device_type(info).is_some())
        .map(|(df, _)| df)
        .collect();
    // Above every BAR already placed in the 32-bit hole.
    let mut next = HOLE_START;
    for (df, _) in root.enumerate_bus(0).collect::<Vec<_>>() {
        for bar in root.bars(df).into_iter().flatten().flatten() {
            if let BarInfo::Memory { address, size, .. } = bar
                && address != 0
                && address < 1 << 32
            {
                next = next.max(address + size);
            }
        }
    }
    for df in funcs {
        let Ok(bars) = root.bars(df) else { continue };
        for (i, bar) in bars.iter().enumerate() {
            let Some(BarInfo::Memory {
                address_type,
                address,
                size,
                ..
            }) = bar
            else {
                continue;
            };
            if *size == 0 || (*address != 0 && address + size <= 1 << 32) {
                continue;
            }
            let base = next.next_multiple_of(*size);
            if base + size > HOLE_END {
                warn!("devices", "no room for BAR{i} of {df} size={size:#x}");
                continue;
            }
            next = base + size;
            match address_type {
                MemoryBarType::Width64 => root.set_bar_64(df, i as u8, base),
                _ => root.set_bar_32(df, i as u8, base as u32),
            }
            debug!(
                "devices",
                "assigned BAR{i} of {df} at {base:#x} size={size:#x}"
            );
        }
        root.set_command(df, Command::MEMORY_SPACE | Command::BUS_MASTER);
        let irq = intx_irq(&root, df, q35);
        match PciTransport::new::<KernelHal, _>(&mut root, df) {
            Ok(t) => out.push((
                VTransport::from(t),
                Location::Pci {
                    bus: df.bus,
                    dev: df.device,
                    func: df.function,
                },
                irq,
            )),
            Err(e) => warn!("devices", "virtio-pci {df}: {e}"),
        }
    }
    out
}
