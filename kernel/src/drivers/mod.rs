//! Device discovery and drivers (virtio via the `virtio-drivers` crate).
//!
//! virtio-mmio devices come from the command line's `virtio_mmio.device=`
//! words (microvm, Firecracker); virtio-pci devices from a scan of PCI bus 0
//! (q35). Each found device is claimed by exactly one driver.

pub mod hal;
pub mod net;
pub mod pci;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;
use core::ptr::NonNull;

use skiff_node_config::MmioDevice;
use virtio_drivers::device::blk::VirtIOBlk;
use virtio_drivers::device::rng::VirtIORng;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, SomeTransport, Transport};

use hal::KernelHal;

pub type VTransport = SomeTransport<'static>;

/// Where a device sits, for logs and the diag `status` device list.
#[derive(Debug, Clone, Copy)]
pub enum Location {
    Mmio(u64),
    Pci { bus: u8, dev: u8, func: u8 },
}

impl core::fmt::Display for Location {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Location::Mmio(a) => write!(f, "mmio:{a:#x}"),
            Location::Pci { bus, dev, func } => write!(f, "pci:{bus:02x}:{dev:02x}.{func}"),
        }
    }
}

/// How a device interrupts: an I/O APIC pin (edge/active-high for
/// virtio-mmio, level/active-low for PCI INTx), or nothing (polled).
#[derive(Debug, Clone, Copy)]
pub enum Irq {
    Edge(u32),
    Level(u32),
    None,
}

impl Irq {
    pub fn pin(self) -> Option<u32> {
        match self {
            Irq::Edge(p) | Irq::Level(p) => Some(p),
            Irq::None => None,
        }
    }
}

pub struct Devices {
    pub net: Option<(VTransport, Location, Irq)>,
    pub blk: Option<(VirtIOBlk<KernelHal, VTransport>, Irq)>,
    pub rng: Option<spin::Mutex<VirtIORng<KernelHal, VTransport>>>,
    /// `kind@location` for every device claimed.
    pub names: Vec<String>,
}

fn type_name(t: DeviceType) -> &'static str {
    match t {
        DeviceType::Network => "virtio-net",
        DeviceType::Block => "virtio-blk",
        DeviceType::EntropySource => "virtio-rng",
        DeviceType::Console => "virtio-console",
        _ => "virtio-other",
    }
}

/// Finds and initialises devices.
pub fn probe(mmio: &[MmioDevice]) -> Devices {
    let mut found: Vec<(VTransport, Location, Irq)> = Vec::new();
    for d in mmio {
        if d.addr.checked_add(d.size).is_none_or(|end| end > 1 << 32) {
            warn!(
                "devices",
                "virtio-mmio outside the identity map addr={:#x}", d.addr
            );
            continue;
        }
        let Some(header) = NonNull::new(d.addr as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: the hypervisor announced a virtio-mmio region of `size`
        // bytes at `addr`; it is identity-mapped (uncached) by the boot
        // tables and owned by this transport alone from now on.
        match unsafe { MmioTransport::new(header, d.size as usize) } {
            Ok(t) => found.push((t.into(), Location::Mmio(d.addr), Irq::Edge(d.irq))),
            // Empty slots (device id 0) are normal on microvm.
            Err(e) => debug!("devices", "virtio-mmio {:#x}: {e}", d.addr),
        }
    }
    found.extend(pci::probe());

    let mut devs = Devices {
        net: None,
        blk: None,
        rng: None,
        names: Vec::new(),
    };
    for (t, loc, irq) in found {
        let ty = t.device_type();
        let mut name = String::new();
        let _ = write!(name, "{}@{loc}", type_name(ty));
        let claimed = match ty {
            DeviceType::Network if devs.net.is_none() => {
                devs.net = Some((t, loc, irq));
                true
            }
            DeviceType::Block if devs.blk.is_none() => match VirtIOBlk::new(t) {
                Ok(b) => {
                    info!("devices", "{name} sectors={}", b.capacity());
                    devs.blk = Some((b, irq));
                    true
                }
                Err(e) => {
                    warn!("devices", "{name} init failed: {e:?}");
                    false
                }
            },
            DeviceType::EntropySource if devs.rng.is_none() => match VirtIORng::new(t) {
                Ok(r) => {
                    devs.rng = Some(spin::Mutex::new(r));
                    true
                }
                Err(e) => {
                    warn!("devices", "{name} init failed: {e:?}");
                    false
                }
            },
            _ => false,
        };
        if claimed {
            debug!("devices", "claimed {name} irq={irq:?}");
            devs.names.push(name);
        } else {
            debug!("devices", "unclaimed {name}");
        }
    }
    devs
}
