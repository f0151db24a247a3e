//! Demand-paged regions: guests' linear memories and fiber stacks.
//!
//! A region is a slot of [`REGION_BYTES`] of virtual address space in its
//! own window (PML4 entries 2–9; the identity map is entry 0, kernel stacks
//! entry 1). Nothing in a region is mapped until it is touched: the
//! page-fault handler ([`on_page_fault`]) maps a zeroed frame from the page
//! pool at the touched page if it lies in the region's accessible range
//! (`guard..end`). So a guest holds frames for the pages it has used, not for
//! what it declared: a Rust guest's 1 MiB shadow stack or an idle fiber
//! stack costs the pages really touched. A linear memory grows in place
//! (raising `end` maps nothing) and never moves or copies.
//!
//! Invariants:
//! * Pages are mapped only by the fault handler and unmapped only when their
//!   region is dropped; a page outside `guard..end` is never mapped, so a
//!   stack's guard page faults as an overflow.
//! * The pool lock is never held while code may touch an unmapped region
//!   page: pool pushes and pops touch only identity-mapped frames, and
//!   every normal-context locker goes through `pool()`, which faults in the
//!   stack it needs first (it may run on a fiber stack). Interrupts run on
//!   their own stack (`gdt`), so delivering one never touches a region
//!   either.
//! * A fault never needs a new page table: a region's tables are made when
//!   it is created or grown (refused then if the pool has none), so a
//!   fault needs one frame at most.
//! * Running out of frames never stops the node: a fault the pool cannot
//!   serve maps the scratch frame (zeroed again for every such fault) and
//!   marks the node starved; the runtime kills the container that was
//!   running ([`take_starved`]) before any other guest runs, and the
//!   scratch frame's contents are never anyone's data.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};

const PAGE: u64 = 4096;
/// Start of the region window.
const WINDOW: u64 = 2 << 39;
/// Each region's share of the window: the largest wasm32 linear memory.
pub const REGION_BYTES: u64 = 4 << 30;
/// Regions at once (8 PML4 entries of window): a linear memory or a
/// fiber stack each.
const MAX_REGIONS: usize = 1024;
/// Frames only page tables may take: a fault needing a new table still
/// finds one when data pages have run out.
const TABLE_RESERVE: u64 = 32;

struct Slot {
    /// Accessible bytes from the region's start (0 while unused).
    end: AtomicU64,
    /// Bytes at the region's start that are never mapped (a stack's guard).
    guard: AtomicU64,
    /// End of the highest page mapped (bounds the release walk).
    top: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Self {
            end: AtomicU64::new(0),
            guard: AtomicU64::new(0),
            top: AtomicU64::new(0),
        }
    }
}

static SLOTS: [Slot; MAX_REGIONS] = [const { Slot::new() }; MAX_REGIONS];
/// Released slot numbers, reused before [`NEXT_SLOT`].
static FREE_SLOTS: spin::Mutex<Vec<u16>> = spin::Mutex::new(Vec::new());
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
/// Set by a fault the pool could not serve; see [`take_starved`].
static STARVED: AtomicBool = AtomicBool::new(false);
/// The frame starved faults map (0 until [`init`]).
static SCRATCH: AtomicU64 = AtomicU64::new(0);

/// Other runs the pool may hold besides the one it shares with the heap.
const MAX_RUNS: usize = 8;

/// Frames for region pages and their page tables: a free list threaded
/// through the free frames themselves, then frames never used yet.
struct Pool {
    /// First free frame (its first 8 bytes hold the next; 0 ends the list).
    head: u64,
    /// Fresh frames of the run shared with the heap, `[floor, high)`,
    /// taken from the top down; the heap grows up into it from below
    /// ([`lend_to_heap`]).
    floor: u64,
    high: u64,
    /// Other fresh runs `[start, end)`, taken from the front.
    runs: [(u64, u64); MAX_RUNS],
    free: u64,
    total: u64,
}

static POOL: spin::Mutex<Pool> = spin::Mutex::new(Pool {
    head: 0,
    floor: 0,
    high: 0,
    runs: [(0, 0); MAX_RUNS],
    free: 0,
    total: 0,
});

impl Pool {
    /// A frame, if more than `keep` would remain. Never allocates (the
    /// heap's growth takes this lock).
    fn take(&mut self, keep: u64) -> Option<u64> {
        if self.free <= keep {
            return None;
        }
        let frame = if self.head != 0 {
            let f = self.head;
            // SAFETY: `f` is a free pool frame, identity-mapped; its first
            // word holds the next free frame.
            self.head = unsafe { core::ptr::read(f as *const u64) };
            f
        } else if self.high > self.floor {
            self.high -= PAGE;
            self.high
        } else {
            let run = self.runs.iter_mut().find(|(s, e)| s < e)?;
            let f = run.0;
            run.0 += PAGE;
            f
        };
        self.free -= 1;
        Some(frame)
    }

    fn give(&mut self, frame: u64) {
        // SAFETY: `frame` is a pool frame no mapping refers to any more,
        // identity-mapped; it now holds the list link.
        unsafe { core::ptr::write(frame as *mut u64, self.head) };
        self.head = frame;
        self.free += 1;
    }
}

/// The pool, locked from normal context. Callers may run on a fiber stack
/// (a guest's memory growth asks [`free_bytes`]): touching an unmapped
/// stack page with the lock held would leave the fault handler without a
/// pool, so the stack this needs is faulted in first.
fn pool() -> spin::MutexGuard<'static, Pool> {
    core::hint::black_box([0u8; 2 * PAGE as usize]);
    POOL.lock()
}

fn zero(frame: u64) {
    // SAFETY: a frame just taken from the pool (or the scratch frame), owned
    // by the caller, identity-mapped below 4 GiB.
    unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE as usize) };
}

/// Hands the pool its frames (physical, identity-mapped, owned by the pool
/// from now on): `shared`, whose bottom the heap may grow into, and up to
/// [`MAX_RUNS`] other runs. One frame becomes the scratch frame.
pub fn init(shared: core::ops::Range<u64>, others: &[(u64, u64)]) {
    let mut pool = pool();
    pool.floor = shared.start;
    pool.high = shared.end;
    for (slot, run) in pool.runs.iter_mut().zip(others) {
        *slot = *run;
    }
    let others: u64 = pool.runs.iter().map(|(s, e)| (e - s) / PAGE).sum();
    pool.total = (shared.end - shared.start) / PAGE + others;
    pool.free = pool.total;
    if let Some(f) = pool.take(0) {
        SCRATCH.store(f, Relaxed);
        pool.total -= 1;
    }
}

/// Moves `bytes` of fresh frames from the bottom of the shared run to the
/// heap, whose end is `heap_top`: true if the pool had them there (and
/// keeps its reserve). The caller then extends the heap over them.
pub fn lend_to_heap(heap_top: u64, bytes: u64) -> bool {
    let mut pool = pool();
    let frames = bytes / PAGE;
    if pool.floor != heap_top
        || pool.high - pool.floor < bytes
        || pool.free < frames + TABLE_RESERVE
    {
        return false;
    }
    pool.floor += bytes;
    pool.free -= frames;
    pool.total -= frames;
    true
}

/// Bytes the pool can still hand out to region pages.
pub fn free_bytes() -> u64 {
    pool().free.saturating_sub(TABLE_RESERVE) * PAGE
}

/// Bytes the pool was given.
pub fn total_bytes() -> u64 {
    pool().total * PAGE
}

/// Bytes of pool frames mapped now (region pages and their page tables).
pub fn used_bytes() -> u64 {
    let pool = pool();
    (pool.total - pool.free) * PAGE
}

/// Whether a fault since the last call could not get a frame; clears it.
pub fn take_starved() -> bool {
    STARVED.swap(false, Relaxed)
}

fn base(slot: usize) -> u64 {
    WINDOW + slot as u64 * REGION_BYTES
}

/// Handles a page fault at `addr` (CR2) with error code `error`: true if it
/// was a first touch of a region page, now mapped, and the access can be
/// retried. Called by the exception handler, on its own stack.
pub fn on_page_fault(addr: u64, error: u64) -> bool {
    const PRESENT: u64 = 1;
    if error & PRESENT != 0 || addr < WINDOW {
        return false;
    }
    let slot = ((addr - WINDOW) / REGION_BYTES) as usize;
    let Some(s) = SLOTS.get(slot) else {
        return false;
    };
    let page = addr & !(PAGE - 1);
    let offset = page - base(slot);
    if offset < s.guard.load(Relaxed) || offset >= s.end.load(Relaxed) {
        return false;
    }
    // Held only by pool code, which never faults (see the module docs).
    let Some(mut pool) = POOL.try_lock() else {
        return false;
    };
    let (frame, starved) = match pool.take(TABLE_RESERVE) {
        Some(f) => (f, false),
        None => (SCRATCH.load(Relaxed), true),
    };
    if frame == 0 {
        return false;
    }
    zero(frame);
    // Every table exists already (`Region::grow_to`): a starved fault needs
    // nothing but the scratch frame.
    let mapped = crate::paging::map_region_page(page, frame);
    if !mapped {
        if !starved {
            pool.give(frame);
        }
        return false;
    }
    drop(pool);
    if starved {
        STARVED.store(true, Relaxed);
    }
    s.top.fetch_max(offset + PAGE, Relaxed);
    true
}

/// Whether `addr` is a region's guard page (for the fault report).
pub fn is_guard(addr: u64) -> bool {
    if addr < WINDOW {
        return false;
    }
    let slot = ((addr - WINDOW) / REGION_BYTES) as usize;
    SLOTS
        .get(slot)
        .is_some_and(|s| s.end.load(Relaxed) > 0 && addr - base(slot) < s.guard.load(Relaxed))
}

/// Whether `addr` lies in the region window (mapped or not).
pub fn in_window(addr: u64) -> bool {
    (WINDOW..base(MAX_REGIONS)).contains(&addr)
}

/// One region; its pages go back to the pool when it is dropped.
pub struct Region {
    slot: usize,
}

/// Why a region could not be made or grown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoRegion {
    #[error("all {MAX_REGIONS} memory regions are in use")]
    NoSlot,
    #[error("no memory for the region's page tables")]
    NoMemory,
}

impl Region {
    /// A region whose first `guard` bytes are never mapped and whose pages
    /// up to `end` map on first touch (both page multiples, `end` at most
    /// [`REGION_BYTES`]).
    pub fn new(guard: u64, end: u64) -> Result<Region, NoRegion> {
        debug_assert!(guard.is_multiple_of(PAGE) && end.is_multiple_of(PAGE));
        debug_assert!(end <= REGION_BYTES);
        let slot = match FREE_SLOTS.lock().pop() {
            Some(s) => usize::from(s),
            None => {
                let s = NEXT_SLOT.fetch_add(1, Relaxed);
                if s >= MAX_REGIONS {
                    NEXT_SLOT.fetch_sub(1, Relaxed);
                    return Err(NoRegion::NoSlot);
                }
                s
            }
        };
        let s = &SLOTS[slot];
        s.guard.store(guard, Relaxed);
        s.top.store(0, Relaxed);
        let region = Region { slot };
        region.grow_to(end)?;
        Ok(region)
    }

    /// The region's first byte.
    pub fn base(&self) -> *mut u8 {
        base(self.slot) as *mut u8
    }

    /// Makes the pages up to `end` (a page multiple, at most
    /// [`REGION_BYTES`]) accessible. Maps no page, but makes the page
    /// tables they need now (one per 2 MiB), so a fault never needs one:
    /// refused if the pool cannot give them.
    pub fn grow_to(&self, end: u64) -> Result<(), NoRegion> {
        debug_assert!(end.is_multiple_of(PAGE) && end <= REGION_BYTES);
        let start = base(self.slot);
        let mut pool = pool();
        let ready = crate::paging::prepare_region_tables(start..start + end, || {
            let t = pool.take(TABLE_RESERVE)?;
            zero(t);
            Some(t)
        });
        drop(pool);
        if !ready {
            return Err(NoRegion::NoMemory);
        }
        SLOTS[self.slot].end.fetch_max(end, Relaxed);
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        let s = &SLOTS[self.slot];
        // No new page can map: the fault handler sees an empty range.
        s.end.store(0, Relaxed);
        let start = base(self.slot);
        let scratch = SCRATCH.load(Relaxed);
        // Held across the walk: unmapping touches only page tables.
        let mut pool = pool();
        for page in (start..start + s.top.load(Relaxed)).step_by(PAGE as usize) {
            if let Some(frame) = crate::paging::unmap_region_page(page)
                && frame != scratch
            {
                pool.give(frame);
            }
        }
        drop(pool);
        FREE_SLOTS.lock().push(self.slot as u16);
    }
}
