//! Physical frame allocator over a [`MemoryMap`].
//!
//! Free memory is a sorted list of disjoint, non-adjacent ranges of 4 KiB
//! frames (`[start, end)`, page aligned). Allocation takes from the lowest
//! range that fits, so contiguous multi-frame requests (DMA buffers) work
//! while memory is young; freeing re-inserts and coalesces. Double frees and
//! frees of memory the allocator never owned are detected and refused.

use crate::{MemoryKind, MemoryMap};

pub const FRAME_SIZE: u64 = 4096;
const MAX_RANGES: usize = crate::memmap::MAX_REGIONS;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The range overlaps free memory (double free) or memory never owned.
    NotAllocated,
    /// Address not frame aligned or count zero.
    BadRange,
    /// Fragmentation exceeded the range table; the frames are leaked.
    TableFull,
}

#[derive(Debug, Clone)]
pub struct FrameAllocator {
    ranges: [(u64, u64); MAX_RANGES],
    len: usize,
    /// Every frame the allocator was given at construction, for validation.
    owned: [(u64, u64); MAX_RANGES],
    owned_len: usize,
    free_frames: u64,
    total_frames: u64,
}

impl FrameAllocator {
    /// Usable memory of `map`, frame-aligned inwards, minus the `exclude`d
    /// ranges (the kernel image, low memory, boot structures) and minus
    /// anything at or above `limit` (memory the kernel cannot address yet).
    pub fn new(map: &MemoryMap, exclude: &[(u64, u64)], limit: u64) -> Self {
        let mut fa = FrameAllocator {
            ranges: [(0, 0); MAX_RANGES],
            len: 0,
            owned: [(0, 0); MAX_RANGES],
            owned_len: 0,
            free_frames: 0,
            total_frames: 0,
        };
        for r in map
            .regions()
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
        {
            let mut pieces = [(0u64, 0u64); 16];
            let mut np = 1;
            pieces[0] = (align_up(r.start), align_down(r.end().min(limit)));
            for &(xs, xe) in exclude {
                let (xs, xe) = (align_down(xs), align_up(xe));
                let mut next = [(0u64, 0u64); 16];
                let mut nn = 0;
                for &(s, e) in &pieces[..np] {
                    for (a, b) in [(s, e.min(xs)), (s.max(xe), e)] {
                        if a < b && nn < next.len() {
                            next[nn] = (a, b);
                            nn += 1;
                        }
                    }
                }
                pieces = next;
                np = nn;
            }
            for &(s, e) in &pieces[..np] {
                if s < e && fa.len < MAX_RANGES {
                    fa.ranges[fa.len] = (s, e);
                    fa.len += 1;
                    fa.owned[fa.owned_len] = (s, e);
                    fa.owned_len += 1;
                    let n = (e - s) / FRAME_SIZE;
                    fa.free_frames += n;
                    fa.total_frames += n;
                }
            }
        }
        fa.ranges[..fa.len].sort_unstable();
        fa
    }

    pub fn free_frames(&self) -> u64 {
        self.free_frames
    }

    pub fn total_frames(&self) -> u64 {
        self.total_frames
    }

    /// Frames in the largest free contiguous run.
    pub fn largest_run(&self) -> u64 {
        self.ranges[..self.len]
            .iter()
            .map(|&(s, e)| (e - s) / FRAME_SIZE)
            .max()
            .unwrap_or(0)
    }

    /// Allocates `count` contiguous frames; returns the physical address.
    pub fn alloc(&mut self, count: u64) -> Option<u64> {
        if count == 0 {
            return None;
        }
        let bytes = count.checked_mul(FRAME_SIZE)?;
        let i = (0..self.len).find(|&i| self.ranges[i].1 - self.ranges[i].0 >= bytes)?;
        let start = self.ranges[i].0;
        self.ranges[i].0 += bytes;
        if self.ranges[i].0 == self.ranges[i].1 {
            self.ranges.copy_within(i + 1..self.len, i);
            self.len -= 1;
        }
        self.free_frames -= count;
        Some(start)
    }

    /// Returns `count` frames at `addr` to the allocator.
    pub fn free(&mut self, addr: u64, count: u64) -> Result<(), FrameError> {
        if count == 0 || !addr.is_multiple_of(FRAME_SIZE) {
            return Err(FrameError::BadRange);
        }
        let end = addr
            .checked_add(count * FRAME_SIZE)
            .ok_or(FrameError::BadRange)?;
        let owned = self.owned[..self.owned_len]
            .iter()
            .any(|&(s, e)| s <= addr && end <= e);
        let overlaps_free = self.ranges[..self.len]
            .iter()
            .any(|&(s, e)| addr < e && s < end);
        if !owned || overlaps_free {
            return Err(FrameError::NotAllocated);
        }
        let pos = self.ranges[..self.len].partition_point(|&(s, _)| s < addr);
        let joins_prev = pos > 0 && self.ranges[pos - 1].1 == addr;
        let joins_next = pos < self.len && self.ranges[pos].0 == end;
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[pos - 1].1 = self.ranges[pos].1;
                self.ranges.copy_within(pos + 1..self.len, pos);
                self.len -= 1;
            }
            (true, false) => self.ranges[pos - 1].1 = end,
            (false, true) => self.ranges[pos].0 = addr,
            (false, false) => {
                if self.len == MAX_RANGES {
                    return Err(FrameError::TableFull);
                }
                self.ranges.copy_within(pos..self.len, pos + 1);
                self.ranges[pos] = (addr, end);
                self.len += 1;
            }
        }
        self.free_frames += count;
        Ok(())
    }
}

fn align_up(x: u64) -> u64 {
    x.saturating_add(FRAME_SIZE - 1) & !(FRAME_SIZE - 1)
}

fn align_down(x: u64) -> u64 {
    x & !(FRAME_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryRegion;

    fn map32m() -> MemoryMap {
        let mut m = MemoryMap::new();
        for (start, len, kind) in [
            (0, 0x9fc00, MemoryKind::Usable),
            (0x100000, 0x1f00000, MemoryKind::Usable),
            (0xfeffc000, 0x4000, MemoryKind::Reserved),
        ] {
            m.push(MemoryRegion { start, len, kind }).unwrap();
        }
        m.normalize().unwrap();
        m
    }

    #[test]
    fn excludes_kernel_and_low_memory() {
        let fa = FrameAllocator::new(&map32m(), &[(0, 0x100000), (0x100000, 0x180123)], 1 << 32);
        // 32 MiB - 1 MiB - 0x81000 (the kernel rounded up).
        assert_eq!(fa.total_frames(), (0x1f00000 - 0x81000) / FRAME_SIZE);
        assert_eq!(fa.free_frames(), fa.total_frames());
    }

    #[test]
    fn alloc_free_coalesces() {
        let mut fa = FrameAllocator::new(&map32m(), &[(0, 0x100000)], 1 << 32);
        let total = fa.free_frames();
        let a = fa.alloc(1).unwrap();
        let b = fa.alloc(4).unwrap();
        let c = fa.alloc(1).unwrap();
        assert_eq!((a, b, c), (0x100000, 0x101000, 0x105000));
        assert_eq!(fa.free_frames(), total - 6);
        fa.free(b, 4).unwrap();
        assert_eq!(fa.free(b, 1), Err(FrameError::NotAllocated));
        fa.free(a, 1).unwrap();
        fa.free(c, 1).unwrap();
        assert_eq!(fa.free_frames(), total);
        assert_eq!(fa.len, 1);
        assert_eq!(fa.alloc(5), Some(0x100000));
    }

    #[test]
    fn largest_run_is_the_biggest_free_range() {
        // The kernel splits usable memory: 1 MiB..1.5 MiB and 2 MiB..32 MiB.
        let mut fa =
            FrameAllocator::new(&map32m(), &[(0, 0x100000), (0x180000, 0x200000)], 1 << 32);
        assert_eq!(fa.largest_run(), (0x2000000 - 0x200000) / FRAME_SIZE);
        let n = fa.largest_run();
        assert_eq!(fa.alloc(n), Some(0x200000));
        assert_eq!(fa.largest_run(), 0x80000 / FRAME_SIZE);
    }

    #[test]
    fn refuses_foreign_and_misaligned() {
        let mut fa = FrameAllocator::new(&map32m(), &[(0, 0x100000)], 1 << 32);
        assert_eq!(fa.free(0x1000, 1), Err(FrameError::NotAllocated));
        assert_eq!(fa.free(0x100001, 1), Err(FrameError::BadRange));
        assert_eq!(fa.free(0x100000, 0), Err(FrameError::BadRange));
    }

    #[test]
    fn exhaustion_returns_none() {
        let mut m = MemoryMap::new();
        m.push(MemoryRegion {
            start: 0x1000,
            len: 0x3000,
            kind: MemoryKind::Usable,
        })
        .unwrap();
        m.normalize().unwrap();
        let mut fa = FrameAllocator::new(&m, &[], u64::MAX);
        assert_eq!(fa.alloc(4), None);
        assert!(fa.alloc(3).is_some());
        assert_eq!(fa.alloc(1), None);
    }

    #[test]
    fn limit_cuts_high_memory() {
        let mut m = MemoryMap::new();
        m.push(MemoryRegion {
            start: 0,
            len: 1 << 33,
            kind: MemoryKind::Usable,
        })
        .unwrap();
        m.normalize().unwrap();
        let fa = FrameAllocator::new(&m, &[], 1 << 32);
        assert_eq!(fa.total_frames(), (1 << 32) / FRAME_SIZE);
    }
}
