//! Multiboot2 boot information (GNU Multiboot2 specification, section 3.6).
//!
//! Layout: total_size u32, reserved u32, then tags, each 8-byte aligned:
//! type u32, size u32 (including the 8-byte header), payload. Tags used here:
//! 1 command line (NUL-terminated), 6 memory map (entry_size u32,
//! entry_version u32, entries of base u64, length u64, type u32, reserved u32),
//! 14/15 a copy of the ACPI 1.0/2.0 RSDP, 0 the end.

use crate::{BootError, BootInfo, BootProtocol, MemoryKind, MemoryRegion, PhysMemory};

/// The value a Multiboot2 loader leaves in `eax`.
pub const BOOTLOADER_MAGIC: u32 = 0x36d7_6289;
/// Refuse absurd `total_size` values rather than walking random memory.
const MAX_TOTAL: usize = 1 << 20;

pub fn parse<M: PhysMemory>(mem: &M, paddr: u64) -> Result<BootInfo, BootError> {
    let head = mem.read(paddr, 8).ok_or(BootError::OutOfBounds {
        addr: paddr,
        len: 8,
    })?;
    let total = crate::u32_at(head, 0)? as usize;
    if !(8..=MAX_TOTAL).contains(&total) {
        return Err(BootError::Truncated);
    }
    let all = mem.read(paddr, total).ok_or(BootError::OutOfBounds {
        addr: paddr,
        len: total as u64,
    })?;
    let mut info = BootInfo::empty(BootProtocol::Multiboot2);
    let mut off = 8usize;
    let mut rsdp_v2 = false;
    while off + 8 <= total {
        let ty = crate::u32_at(all, off)?;
        let size = crate::u32_at(all, off + 4)? as usize;
        if size < 8 || off + size > total {
            return Err(BootError::Truncated);
        }
        let payload = &all[off + 8..off + size];
        match ty {
            0 => break,
            1 => {
                let end = payload
                    .iter()
                    .position(|&b| b == 0)
                    .ok_or(BootError::CmdlineUnterminated)?;
                info.set_cmdline(&payload[..end])?;
            }
            6 => {
                let entry_size = crate::u32_at(payload, 0)? as usize;
                if entry_size < 20 {
                    return Err(BootError::Truncated);
                }
                for e in payload[8..].chunks_exact(entry_size) {
                    info.memory.push(MemoryRegion {
                        start: crate::u64_at(e, 0)?,
                        len: crate::u64_at(e, 8)?,
                        kind: MemoryKind::from_e820(crate::u32_at(e, 16)?),
                    })?;
                }
            }
            // The tag holds a copy of the RSDP; prefer the 2.0 one. Copy
            // it out: the info block's memory is free for reuse after boot.
            14 if !rsdp_v2 => {
                info.rsdp = Some(paddr + off as u64 + 8);
                info.set_rsdp_copy(payload);
            }
            15 => {
                info.rsdp = Some(paddr + off as u64 + 8);
                info.set_rsdp_copy(payload);
                rsdp_v2 = true;
            }
            _ => {}
        }
        off = (off + size + 7) & !7;
    }
    info.memory.normalize()?;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FlatMemory;

    fn tag(out: &mut Vec<u8>, ty: u32, payload: &[u8]) {
        out.extend_from_slice(&ty.to_le_bytes());
        out.extend_from_slice(&(8 + payload.len() as u32).to_le_bytes());
        out.extend_from_slice(payload);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
    }

    fn fixture(cmdline: &str, map: &[(u64, u64, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 8];
        tag(&mut b, 1, format!("{cmdline}\0").as_bytes());
        tag(&mut b, 4, &[0; 8]); // basic meminfo: ignored
        let mut mm = Vec::new();
        mm.extend_from_slice(&24u32.to_le_bytes());
        mm.extend_from_slice(&0u32.to_le_bytes());
        for &(a, l, t) in map {
            mm.extend_from_slice(&a.to_le_bytes());
            mm.extend_from_slice(&l.to_le_bytes());
            mm.extend_from_slice(&t.to_le_bytes());
            mm.extend_from_slice(&0u32.to_le_bytes());
        }
        tag(&mut b, 6, &mm);
        tag(&mut b, 14, &[b'R'; 20]);
        tag(&mut b, 0, &[]);
        let total = b.len() as u32;
        b[0..4].copy_from_slice(&total.to_le_bytes());
        b
    }

    #[test]
    fn parses_grub_like_info() {
        let b = fixture(
            "skiff.net=none",
            &[
                (0x100000, 0x7ee0000, 1),
                (0, 0x9fc00, 1),
                (0x9fc00, 0x400, 2),
            ],
        );
        let m = FlatMemory {
            base: 0x10000,
            bytes: &b,
        };
        let info = parse(&m, 0x10000).unwrap();
        assert_eq!(info.protocol, BootProtocol::Multiboot2);
        assert_eq!(info.cmdline(), "skiff.net=none");
        let r = info.memory.regions();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].start, 0);
        assert_eq!(r[1].kind, MemoryKind::Reserved);
        assert_eq!(r[2].start, 0x100000);
        let rsdp = info.rsdp.unwrap();
        assert_eq!(m.read(rsdp, 1).unwrap(), b"R");
        assert_eq!(info.rsdp_copy(), Some(&[b'R'; 20][..]));
    }

    #[test]
    fn copies_the_rsdp_and_prefers_acpi2() {
        let mut b = vec![0u8; 8];
        tag(&mut b, 15, &[b'2'; 36]);
        tag(&mut b, 14, &[b'1'; 20]);
        tag(&mut b, 0, &[]);
        let total = b.len() as u32;
        b[0..4].copy_from_slice(&total.to_le_bytes());
        let info = {
            let m = FlatMemory { base: 0, bytes: &b };
            parse(&m, 0).unwrap()
        };
        // The copy outlives the loader's block.
        b.fill(0);
        assert_eq!(info.rsdp_copy(), Some(&[b'2'; 36][..]));
        assert_eq!(info.rsdp, Some(16));
    }

    #[test]
    fn rejects_truncated_tags() {
        let mut b = fixture("x", &[]);
        // Make the first tag claim more bytes than the structure has.
        b[12..16].copy_from_slice(&0x1000u32.to_le_bytes());
        let m = FlatMemory { base: 0, bytes: &b };
        assert_eq!(parse(&m, 0).unwrap_err(), BootError::Truncated);
        assert!(
            parse(
                &FlatMemory {
                    base: 0,
                    bytes: &[0; 4]
                },
                0
            )
            .is_err()
        );
    }
}
