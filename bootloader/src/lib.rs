//! Boot entry and normalised boot information.
//!
//! * [`entry`] (only for `target_os = "none"`): the PVH note, the Multiboot2
//!   header and the 32→64-bit trampoline. It identity-maps the first 4 GiB with
//!   2 MiB pages and calls the kernel's `skiff_kernel_entry(kind, info_paddr)`.
//! * [`pvh`], [`multiboot2`]: parsers for the loaders' boot information. They
//!   read guest-physical memory only through [`PhysMemory`], so host tests feed
//!   them byte fixtures and the kernel feeds them identity-mapped memory.
//! * [`BootInfo`]: what the kernel gets, whatever loaded it: a sorted, merged
//!   memory map without empty entries, the command line, the ACPI RSDP.
//! * [`frames`]: the physical frame allocator built from that memory map.
//!
//! This crate has no `unsafe` outside [`entry`].
#![cfg_attr(not(test), no_std)]

pub mod frames;
pub mod memmap;
pub mod multiboot2;
pub mod pvh;

#[cfg(target_os = "none")]
pub mod entry;

pub use memmap::{MemoryKind, MemoryMap, MemoryRegion};

/// Which loader handed over control (the trampoline passes this in `edi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootProtocol {
    /// Xen PVH (`start_info` in `ebx`): QEMU `-kernel`, Firecracker, cloud-hypervisor.
    Pvh,
    /// Multiboot2 (info in `ebx`, magic in `eax`): GRUB.
    Multiboot2,
    /// Entered at the 64-bit ELF entry point without boot information.
    None,
}

impl BootProtocol {
    /// Decodes the value the trampoline passes to the kernel.
    pub fn from_raw(kind: u32) -> Self {
        match kind {
            1 => BootProtocol::Pvh,
            2 => BootProtocol::Multiboot2,
            _ => BootProtocol::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            BootProtocol::Pvh => "pvh",
            BootProtocol::Multiboot2 => "multiboot2",
            BootProtocol::None => "none",
        }
    }
}

/// Maximum command line length kept; longer ones are an error, not truncated,
/// since a truncated `skiff.*` value would silently change the configuration.
pub const CMDLINE_MAX: usize = 4096;

/// Boot information, normalised across loaders.
#[derive(Debug, Clone)]
pub struct BootInfo {
    pub protocol: BootProtocol,
    pub memory: MemoryMap,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
    /// Physical address of the ACPI RSDP, when the loader gave one. For
    /// Multiboot2 this points into the loader's info block, which the frame
    /// allocator may reuse: read [`BootInfo::rsdp_copy`] instead.
    pub rsdp: Option<u64>,
    /// The RSDP bytes copied out of a Multiboot2 tag during parsing.
    rsdp_copy: [u8; RSDP_MAX],
    rsdp_copy_len: usize,
}

/// Size of an ACPI 2.0 RSDP (a 1.0 one is the first 20 bytes).
pub const RSDP_MAX: usize = 36;

impl BootInfo {
    pub fn empty(protocol: BootProtocol) -> Self {
        BootInfo {
            protocol,
            memory: MemoryMap::new(),
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
            rsdp: None,
            rsdp_copy: [0; RSDP_MAX],
            rsdp_copy_len: 0,
        }
    }

    /// The command line (empty when the loader gave none).
    pub fn cmdline(&self) -> &str {
        // `set_cmdline` only stores valid UTF-8.
        core::str::from_utf8(&self.cmdline[..self.cmdline_len]).unwrap_or("")
    }

    /// The RSDP as copied from the boot information (Multiboot2 carries it
    /// inline), valid after the loader's memory is reused; `None` when the
    /// loader only gave an address (PVH: firmware-reserved memory).
    pub fn rsdp_copy(&self) -> Option<&[u8]> {
        (self.rsdp_copy_len > 0).then(|| &self.rsdp_copy[..self.rsdp_copy_len])
    }

    fn set_rsdp_copy(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(RSDP_MAX);
        self.rsdp_copy[..n].copy_from_slice(&bytes[..n]);
        self.rsdp_copy_len = n;
    }

    fn set_cmdline(&mut self, bytes: &[u8]) -> Result<(), BootError> {
        if bytes.len() > CMDLINE_MAX {
            return Err(BootError::CmdlineTooLong);
        }
        core::str::from_utf8(bytes).map_err(|_| BootError::CmdlineNotUtf8)?;
        self.cmdline[..bytes.len()].copy_from_slice(bytes);
        self.cmdline_len = bytes.len();
        Ok(())
    }
}

/// Why boot information could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// The structure's magic number is wrong.
    BadMagic(u32),
    /// A pointer or length leads outside readable memory.
    OutOfBounds {
        addr: u64,
        len: u64,
    },
    /// A structure is shorter than its fixed part or its own size field.
    Truncated,
    /// The memory map has more regions than [`memmap::MAX_REGIONS`].
    TooManyRegions,
    CmdlineTooLong,
    CmdlineNotUtf8,
    /// The command line has no NUL terminator within [`CMDLINE_MAX`] bytes.
    CmdlineUnterminated,
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::BadMagic(m) => write!(f, "bad magic {m:#x}"),
            BootError::OutOfBounds { addr, len } => {
                write!(f, "out of bounds addr={addr:#x} len={len:#x}")
            }
            BootError::Truncated => f.write_str("truncated structure"),
            BootError::TooManyRegions => f.write_str("too many memory regions"),
            BootError::CmdlineTooLong => f.write_str("command line too long"),
            BootError::CmdlineNotUtf8 => f.write_str("command line is not UTF-8"),
            BootError::CmdlineUnterminated => f.write_str("command line not terminated"),
        }
    }
}

/// Read access to guest-physical memory.
pub trait PhysMemory {
    /// The `len` bytes at physical address `addr`, or `None` when they are not
    /// readable.
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]>;
}

/// Reads a NUL-terminated string at `addr` (at most [`CMDLINE_MAX`] bytes).
pub(crate) fn read_cstr<M: PhysMemory>(mem: &M, addr: u64) -> Result<&[u8], BootError> {
    // Read in growing chunks: the string may end near the end of memory.
    let mut len = 0usize;
    loop {
        let chunk = 64usize;
        let bytes = match mem.read(addr + len as u64, chunk) {
            Some(b) => b,
            None => {
                // Fall back to byte reads near a boundary.
                let Some(b) = mem.read(addr + len as u64, 1) else {
                    return Err(BootError::OutOfBounds {
                        addr: addr + len as u64,
                        len: 1,
                    });
                };
                b
            }
        };
        if let Some(pos) = bytes.iter().position(|&b| b == 0) {
            let total = len + pos;
            if total > CMDLINE_MAX {
                return Err(BootError::CmdlineTooLong);
            }
            return mem.read(addr, total).ok_or(BootError::OutOfBounds {
                addr,
                len: total as u64,
            });
        }
        len += bytes.len();
        if len > CMDLINE_MAX {
            return Err(BootError::CmdlineUnterminated);
        }
    }
}

pub(crate) fn u32_at(b: &[u8], off: usize) -> Result<u32, BootError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BootError::Truncated)
}

pub(crate) fn u64_at(b: &[u8], off: usize) -> Result<u64, BootError> {
    Ok(u64::from(u32_at(b, off)?) | (u64::from(u32_at(b, off + 4)?) << 32))
}

/// A flat byte image of physical memory starting at `base` (tests and fixtures).
#[derive(Debug)]
pub struct FlatMemory<'a> {
    pub base: u64,
    pub bytes: &'a [u8],
}

impl PhysMemory for FlatMemory<'_> {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let start = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        self.bytes.get(start..start.checked_add(len)?)
    }
}
