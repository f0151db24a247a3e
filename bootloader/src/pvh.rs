//! Xen PVH `hvm_start_info` (xen/include/public/arch-x86/hvm/start_info.h).
//!
//! Layout (little endian): magic u32, version u32, flags u32, nr_modules u32,
//! modlist_paddr u64, cmdline_paddr u64, rsdp_paddr u64, and from version 1
//! memmap_paddr u64, memmap_entries u32, reserved u32. Memory map entries are
//! addr u64, size u64, type u32 (E820 numbering), reserved u32.

use crate::{BootError, BootInfo, BootProtocol, MemoryKind, MemoryRegion, PhysMemory};

pub const MAGIC: u32 = 0x336e_c578;
const FIXED_V0: usize = 40;
const FIXED_V1: usize = 56;
const ENTRY: usize = 24;

/// Parses the `start_info` at `paddr`.
pub fn parse<M: PhysMemory>(mem: &M, paddr: u64) -> Result<BootInfo, BootError> {
    let oob = |addr, len: usize| BootError::OutOfBounds {
        addr,
        len: len as u64,
    };
    let head = mem.read(paddr, FIXED_V0).ok_or(oob(paddr, FIXED_V0))?;
    let magic = crate::u32_at(head, 0)?;
    if magic != MAGIC {
        return Err(BootError::BadMagic(magic));
    }
    let version = crate::u32_at(head, 4)?;
    let cmdline = crate::u64_at(head, 24)?;
    let rsdp = crate::u64_at(head, 32)?;

    let mut info = BootInfo::empty(BootProtocol::Pvh);
    if cmdline != 0 {
        info.set_cmdline(crate::read_cstr(mem, cmdline)?)?;
    }
    info.rsdp = (rsdp != 0).then_some(rsdp);

    if version >= 1 {
        let head = mem.read(paddr, FIXED_V1).ok_or(oob(paddr, FIXED_V1))?;
        let map = crate::u64_at(head, 40)?;
        let entries = crate::u32_at(head, 48)? as usize;
        if map != 0 && entries != 0 {
            let len = entries
                .checked_mul(ENTRY)
                .ok_or(BootError::TooManyRegions)?;
            let bytes = mem.read(map, len).ok_or(oob(map, len))?;
            for e in bytes.chunks_exact(ENTRY) {
                info.memory.push(MemoryRegion {
                    start: crate::u64_at(e, 0)?,
                    len: crate::u64_at(e, 8)?,
                    kind: MemoryKind::from_e820(crate::u32_at(e, 16)?),
                })?;
            }
        }
    }
    info.memory.normalize()?;
    Ok(info)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::FlatMemory;

    /// Builds a PVH fixture at base 0x1000: start_info at 0x1000, memory map
    /// at 0x1100, command line at 0x1400.
    pub fn fixture(version: u32, map: &[(u64, u64, u32)], cmdline: Option<&str>) -> Vec<u8> {
        let mut b = vec![0u8; 0x1000];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4..8].copy_from_slice(&version.to_le_bytes());
        if let Some(c) = cmdline {
            b[24..32].copy_from_slice(&0x1400u64.to_le_bytes());
            b[0x400..0x400 + c.len()].copy_from_slice(c.as_bytes());
        }
        b[32..40].copy_from_slice(&0xf5a80u64.to_le_bytes());
        b[40..48].copy_from_slice(&0x1100u64.to_le_bytes());
        b[48..52].copy_from_slice(&(map.len() as u32).to_le_bytes());
        for (i, &(a, s, t)) in map.iter().enumerate() {
            let o = 0x100 + i * ENTRY;
            b[o..o + 8].copy_from_slice(&a.to_le_bytes());
            b[o + 8..o + 16].copy_from_slice(&s.to_le_bytes());
            b[o + 16..o + 20].copy_from_slice(&t.to_le_bytes());
        }
        b
    }

    #[test]
    fn parses_qemu_like_start_info() {
        // Unsorted, with a zero-length entry, as some hypervisors report.
        let b = fixture(
            1,
            &[
                (0x100000, 0x1f00000, 1),
                (0, 0, 1),
                (0, 0x9fc00, 1),
                (0xfeff_c000, 0x4000, 2),
            ],
            Some("skiff.net=dhcp virtio_mmio.device=512@0xfeb00e00:12"),
        );
        let info = parse(
            &FlatMemory {
                base: 0x1000,
                bytes: &b,
            },
            0x1000,
        )
        .unwrap();
        assert_eq!(info.protocol, BootProtocol::Pvh);
        assert_eq!(
            info.cmdline(),
            "skiff.net=dhcp virtio_mmio.device=512@0xfeb00e00:12"
        );
        assert_eq!(info.rsdp, Some(0xf5a80));
        let r = info.memory.regions();
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].start, r[0].len), (0, 0x9fc00));
        assert_eq!((r[1].start, r[1].len), (0x100000, 0x1f00000));
        assert_eq!(r[2].kind, MemoryKind::Reserved);
    }

    #[test]
    fn version0_has_no_memory_map() {
        let b = fixture(0, &[(0, 0x1000, 1)], None);
        let info = parse(
            &FlatMemory {
                base: 0x1000,
                bytes: &b,
            },
            0x1000,
        )
        .unwrap();
        assert!(info.memory.regions().is_empty());
        assert_eq!(info.cmdline(), "");
    }

    #[test]
    fn rejects_bad_magic_and_bad_pointers() {
        let mut b = fixture(1, &[], None);
        b[0] ^= 1;
        let m = FlatMemory {
            base: 0x1000,
            bytes: &b,
        };
        assert!(matches!(parse(&m, 0x1000), Err(BootError::BadMagic(_))));
        let mut b = fixture(1, &[(0, 0x1000, 1)], None);
        b[40..48].copy_from_slice(&0xdead_0000u64.to_le_bytes());
        let m = FlatMemory {
            base: 0x1000,
            bytes: &b,
        };
        assert!(matches!(
            parse(&m, 0x1000),
            Err(BootError::OutOfBounds { .. })
        ));
        assert!(matches!(
            parse(&m, 0x9000_0000),
            Err(BootError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn unterminated_cmdline_is_an_error() {
        let mut b = fixture(1, &[], Some("x"));
        for byte in &mut b[0x400..] {
            *byte = b'a';
        }
        let m = FlatMemory {
            base: 0x1000,
            bytes: &b,
        };
        assert!(parse(&m, 0x1000).is_err());
    }
}
