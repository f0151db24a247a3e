//! A fixed-capacity physical memory map.
//!
//! Invariants after [`MemoryMap::normalize`]: regions are sorted by start, none
//! is empty, none overlaps another, and adjacent regions of the same kind are
//! merged. Where a usable region overlaps a reserved one the reserved one wins,
//! since handing out firmware-owned memory corrupts it silently.

/// Capacity of a [`MemoryMap`]. UEFI maps relayed by GRUB can list a few
/// hundred entries; when the map fills up, same-kind neighbours are merged
/// before giving up.
pub const MAX_REGIONS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemoryKind {
    /// RAM the kernel may use.
    Usable,
    /// ACPI tables (reclaimable once parsed; kept reserved for now).
    AcpiReclaimable,
    AcpiNvs,
    Bad,
    Reserved,
    /// A type number this crate does not know, treated as reserved.
    Other(u32),
}

impl MemoryKind {
    /// From an E820 type number (PVH and Multiboot2 both use E820 numbering).
    pub fn from_e820(t: u32) -> Self {
        match t {
            1 => MemoryKind::Usable,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Bad,
            other => MemoryKind::Other(other),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryRegion {
    pub start: u64,
    pub len: u64,
    pub kind: MemoryKind,
}

impl MemoryRegion {
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

#[derive(Debug, Clone)]
pub struct MemoryMap {
    regions: [MemoryRegion; MAX_REGIONS],
    len: usize,
}

impl Default for MemoryMap {
    fn default() -> Self {
        Self::new()
    }
}

const EMPTY: MemoryRegion = MemoryRegion {
    start: 0,
    len: 0,
    kind: MemoryKind::Reserved,
};

impl MemoryMap {
    pub const fn new() -> Self {
        MemoryMap {
            regions: [EMPTY; MAX_REGIONS],
            len: 0,
        }
    }

    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.len]
    }

    /// Adds a region as reported (call [`normalize`](Self::normalize) after the last).
    pub fn push(&mut self, region: MemoryRegion) -> Result<(), crate::BootError> {
        if region.len == 0 {
            return Ok(());
        }
        if self.len == MAX_REGIONS {
            self.merge_same_kind();
        }
        if self.len == MAX_REGIONS {
            return Err(crate::BootError::TooManyRegions);
        }
        // Clamp regions that wrap around the address space.
        let len = region.len.min(u64::MAX - region.start);
        self.regions[self.len] = MemoryRegion { len, ..region };
        self.len += 1;
        Ok(())
    }

    /// Total bytes of usable memory.
    pub fn usable_bytes(&self) -> u64 {
        self.regions()
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .map(|r| r.len)
            .sum()
    }

    /// Merges overlapping or adjacent regions of the same kind (leaves the
    /// map ordered by kind, then start).
    fn merge_same_kind(&mut self) {
        let n = self.len;
        self.regions[..n].sort_unstable_by_key(|r| (r.kind, r.start));
        let mut out = 0usize;
        for i in 0..n {
            let r = self.regions[i];
            if out > 0 {
                let last = &mut self.regions[out - 1];
                if last.kind == r.kind && r.start <= last.end() {
                    let end = last.end().max(r.end());
                    last.len = end - last.start;
                    continue;
                }
            }
            self.regions[out] = r;
            out += 1;
        }
        self.len = out;
    }

    /// Establishes the invariants in the module documentation.
    pub fn normalize(&mut self) -> Result<(), crate::BootError> {
        // 1. Merge overlapping or adjacent regions of the same kind.
        self.merge_same_kind();

        // 2. Cut reserved ranges out of usable ones (reserved wins).
        let src = self.clone();
        self.len = 0;
        for r in src
            .regions()
            .iter()
            .filter(|r| r.kind != MemoryKind::Usable)
        {
            self.push(*r)?;
        }
        for u in src
            .regions()
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
        {
            let mut start = u.start;
            let end = u.end();
            // Non-usable regions of different kinds may overlap each other, so
            // walk them in start order and advance `start` past each overlap.
            let mut holes: [(u64, u64); MAX_REGIONS] = [(0, 0); MAX_REGIONS];
            let mut nh = 0;
            for r in src
                .regions()
                .iter()
                .filter(|r| r.kind != MemoryKind::Usable)
            {
                if r.start < end && r.end() > start {
                    holes[nh] = (r.start, r.end());
                    nh += 1;
                }
            }
            holes[..nh].sort_unstable();
            for &(hs, he) in &holes[..nh] {
                if hs > start {
                    self.push(MemoryRegion {
                        start,
                        len: hs.min(end) - start,
                        kind: MemoryKind::Usable,
                    })?;
                }
                start = start.max(he);
                if start >= end {
                    break;
                }
            }
            if start < end {
                self.push(MemoryRegion {
                    start,
                    len: end - start,
                    kind: MemoryKind::Usable,
                })?;
            }
        }

        // 3. Sort by address.
        let n = self.len;
        self.regions[..n].sort_unstable_by_key(|r| (r.start, r.kind));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(rs: &[(u64, u64, MemoryKind)]) -> MemoryMap {
        let mut m = MemoryMap::new();
        for &(start, len, kind) in rs {
            m.push(MemoryRegion { start, len, kind }).unwrap();
        }
        m.normalize().unwrap();
        m
    }

    fn triples(m: &MemoryMap) -> Vec<(u64, u64, MemoryKind)> {
        m.regions()
            .iter()
            .map(|r| (r.start, r.len, r.kind))
            .collect()
    }

    use MemoryKind::*;

    #[test]
    fn sorts_and_drops_empty() {
        let m = map(&[
            (0x100000, 0x1000, Usable),
            (0, 0, Usable),
            (0, 0x9fc00, Usable),
        ]);
        assert_eq!(
            triples(&m),
            vec![(0, 0x9fc00, Usable), (0x100000, 0x1000, Usable)]
        );
    }

    #[test]
    fn merges_adjacent_and_overlapping() {
        let m = map(&[
            (0x2000, 0x1000, Usable),
            (0x0, 0x1000, Usable),
            (0x1000, 0x1000, Usable),
            (0x2800, 0x1000, Usable),
        ]);
        assert_eq!(triples(&m), vec![(0, 0x3800, Usable)]);
    }

    #[test]
    fn reserved_wins_over_usable() {
        let m = map(&[
            (0, 0x10000, Usable),
            (0x4000, 0x1000, Reserved),
            (0x8000, 0x1000, AcpiNvs),
            (0xf000, 0x2000, Reserved),
        ]);
        assert_eq!(
            triples(&m),
            vec![
                (0, 0x4000, Usable),
                (0x4000, 0x1000, Reserved),
                (0x5000, 0x3000, Usable),
                (0x8000, 0x1000, AcpiNvs),
                (0x9000, 0x6000, Usable),
                (0xf000, 0x2000, Reserved),
            ]
        );
        assert_eq!(m.usable_bytes(), 0xd000);
    }

    #[test]
    fn unknown_types_are_reserved() {
        assert_eq!(MemoryKind::from_e820(7), Other(7));
        let m = map(&[(0, 0x2000, Usable), (0x1000, 0x1000, Other(12))]);
        assert_eq!(
            triples(&m),
            vec![(0, 0x1000, Usable), (0x1000, 0x1000, Other(12))]
        );
    }

    #[test]
    fn wrapping_region_is_clamped() {
        let m = map(&[(u64::MAX - 0xfff, 0x2000, Reserved)]);
        assert_eq!(m.regions()[0].end(), u64::MAX);
    }

    #[test]
    fn capacity_is_enforced() {
        let mut m = MemoryMap::new();
        for i in 0..MAX_REGIONS as u64 {
            m.push(MemoryRegion {
                start: i * 0x2000,
                len: 0x1000,
                kind: Usable,
            })
            .unwrap();
        }
        assert!(
            m.push(MemoryRegion {
                start: 1 << 40,
                len: 1,
                kind: Usable
            })
            .is_err()
        );
    }

    #[test]
    fn full_map_merges_before_failing() {
        // A fragmented UEFI-style map: many adjacent pieces of one kind.
        let mut m = MemoryMap::new();
        for i in 0..(3 * MAX_REGIONS) as u64 {
            m.push(MemoryRegion {
                start: i * 0x1000,
                len: 0x1000,
                kind: Usable,
            })
            .unwrap();
        }
        m.normalize().unwrap();
        assert_eq!(
            triples(&m),
            vec![(0, 3 * MAX_REGIONS as u64 * 0x1000, Usable)]
        );
    }
}
