//! Page protections: W^X for everything the kernel maps, and guard pages.
//!
//! The boot trampoline identity-maps the first 4 GiB with 2 MiB pages, all
//! writable and executable. [`protect`] rewrites that map once, early in boot:
//!
//! * every 2 MiB page gets NX, except the ones holding the kernel image or the
//!   heap, which are split into 4 KiB pages;
//! * kernel image: `.text` R+X, `.boot`/`.rodata`/`.got` R, `.data`/`.bss`
//!   R+W+NX (section bounds from `linker.ld`);
//! * heap: R+W+NX. Guest code lives in page-aligned, page-sized heap
//!   allocations (see `mem`'s allocator) that [`set_code`] flips to R+X when
//!   wasmtime publishes them and back to R+W+NX when it unpublishes them: one
//!   PTE write per page, so no page is ever writable and executable at once;
//! * guard pages: the stack window's and the demand-paged regions' (fiber
//!   stacks, see `regions`) are never mapped, and the page below the boot
//!   stack (still in use until `main` switches to the guarded kernel stack)
//!   is left out of the split map.
//!
//! [`check`] walks the live page tables and verifies all of it; the kernel
//! runs it at boot and after every change to guest code mappings.
//!
//! Page tables below 4 GiB are reached through the identity map; the kernel
//! runs on one CPU, so an `invlpg` on this CPU is the whole TLB shootdown.
//! Page-table updates happen outside interrupt context, except
//! [`map_region_page`], which the page-fault handler calls to map a touched
//! page of a demand-paged region (see `regions`) and which only sets a leaf
//! of the region window.

use alloc::collections::BTreeSet;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, Ordering};

use x86_64::PhysAddr;
use x86_64::VirtAddr;
use x86_64::instructions::tlb;
use x86_64::registers::control::{Cr0, Cr0Flags};
use x86_64::structures::paging::page_table::PageTableEntry;
use x86_64::structures::paging::{PageTable, PageTableFlags as F};

const PAGE: u64 = 4096;
const HUGE: u64 = 2 << 20;
/// What the boot map covers.
const IDENTITY_LIMIT: u64 = 1 << 32;

unsafe extern "C" {
    static __kernel_start: u8;
    static __text_start: u8;
    static __text_end: u8;
    static __rodata_end: u8;
    static __kernel_end: u8;
    /// The page below the boot stack (skiff-boot's trampoline).
    static skiff_boot_stack_guard: u8;
}

/// Why a protection change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("range {start:#x}..{end:#x} is not page aligned")]
    Unaligned { start: u64, end: u64 },
    #[error("page {0:#x} is not in the 4 KiB-mapped heap")]
    NotHeap(u64),
}

/// The kernel image's sections, from `linker.ld`.
struct Image {
    start: u64,
    boot_stack_guard: u64,
    text: Range<u64>,
    rodata_end: u64,
    end: u64,
}

fn image() -> Image {
    // Linker-script symbols: only their addresses are meaningful.
    let a = |s: &u8| core::ptr::from_ref(s) as u64;
    // SAFETY: the symbols are defined by linker.ld; nothing reads through them.
    unsafe {
        Image {
            start: a(&__kernel_start),
            boot_stack_guard: a(&skiff_boot_stack_guard),
            text: a(&__text_start)..a(&__text_end),
            rodata_end: a(&__rodata_end),
            end: a(&__kernel_end),
        }
    }
}

/// The heap's range, set by [`protect`]: where guest code and fiber stacks live.
static HEAP: spin::Once<Range<u64>> = spin::Once::new();
static PROTECTED: AtomicBool = AtomicBool::new(false);
/// Guard pages that must stay not-present ([`check`] verifies each).
static GUARDS: spin::Mutex<BTreeSet<u64>> = spin::Mutex::new(BTreeSet::new());

fn nx() -> F {
    // With EFER.NXE off the NX bit is reserved: setting it would fault.
    if crate::arch::cpu::nx_enabled() {
        F::NO_EXECUTE
    } else {
        F::empty()
    }
}

/// The page table at physical address `phys` (below 4 GiB: identity-mapped).
///
/// # Safety
/// `phys` must be a page table of the live hierarchy, and the caller must not
/// hold another reference to it.
unsafe fn table(phys: PhysAddr) -> &'static mut PageTable {
    // SAFETY: per the contract, an identity-mapped page table no one else
    // references right now.
    unsafe { &mut *(phys.as_u64() as *mut PageTable) }
}

/// Read-only view of the page table at `phys` (see [`table`]).
///
/// # Safety
/// `phys` must be a page table of the live hierarchy.
unsafe fn table_ref(phys: PhysAddr) -> &'static PageTable {
    // SAFETY: per the contract; only read, on this single CPU.
    unsafe { &*(phys.as_u64() as *const PageTable) }
}

/// The page-directory entry that maps identity address `addr`.
fn pde(addr: u64) -> &'static mut PageTableEntry {
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    // SAFETY: CR3 and its first PML4/PDPT entries are the boot trampoline's
    // identity map, whose tables all lie below 4 GiB; each reference lives
    // only for this walk.
    unsafe {
        let pml4 = table(pml4.start_address());
        let pdpt = table(pml4[0].addr());
        let pd = table(pdpt[((addr >> 30) & 511) as usize].addr());
        &mut pd[((addr >> 21) & 511) as usize]
    }
}

/// The 4 KiB entry that maps `addr`, if its 2 MiB region was split.
fn pte(addr: u64) -> Option<&'static mut PageTableEntry> {
    if addr >= IDENTITY_LIMIT {
        return None;
    }
    let e = pde(addr);
    if !e.flags().contains(F::PRESENT) || e.flags().contains(F::HUGE_PAGE) {
        return None;
    }
    // SAFETY: a present, non-huge PDE of the identity map points at a page
    // table `protect` allocated below 4 GiB.
    Some(unsafe { &mut table(e.addr())[((addr >> 12) & 511) as usize] })
}

/// Flags of the 4 KiB page at `addr` in a split region.
fn identity_flags(img: &Image, addr: u64) -> F {
    let p = F::PRESENT;
    if addr == img.boot_stack_guard {
        F::empty()
    } else if img.text.contains(&addr) {
        p
    } else if (img.start..img.rodata_end).contains(&addr) {
        // .boot (the trampoline, done with), .rodata and .got.
        p | nx()
    } else {
        p | F::WRITABLE | nx()
    }
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// Rewrites the boot identity map as described in the module docs. `heap` is
/// the heap's (page-aligned) range. Call once, after `mem::init`, before any
/// guest code is loaded.
pub fn protect(heap: Range<u64>) {
    let img = image();
    let kernel = img.start..img.end;
    for i in 0..IDENTITY_LIMIT / HUGE {
        let region = i * HUGE..(i + 1) * HUGE;
        let e = pde(region.start);
        if !e.flags().contains(F::PRESENT) {
            continue;
        }
        if !overlaps(&region, &kernel) && !overlaps(&region, &heap) {
            e.set_flags(e.flags() | nx());
            continue;
        }
        // Split: a zeroed frame (below 4 GiB) becomes this region's table.
        let pt_phys = PhysAddr::new(crate::mem::alloc_frames(1));
        // SAFETY: a fresh frame from the allocator, identity-mapped, not yet
        // part of any hierarchy.
        let pt = unsafe { table(pt_phys) };
        for (j, entry) in pt.iter_mut().enumerate() {
            let addr = region.start + j as u64 * PAGE;
            entry.set_addr(PhysAddr::new(addr), identity_flags(&img, addr));
        }
        // One 8-byte store swaps the 2 MiB mapping for the same addresses
        // in 4 KiB pages; the code running now stays mapped throughout. The
        // leaf flags alone decide access (a PDE's W and X only ever narrow).
        e.set_addr(pt_phys, F::PRESENT | F::WRITABLE);
    }
    tlb::flush_all();
    register_guard(img.boot_stack_guard);
    // SAFETY: CR0.WP makes read-only pages read-only for ring 0 too (else
    // the kernel, the only ring here, writes through them). Nothing writes
    // to the pages just made read-only: the GOT and rodata never change,
    // and the boot GDT in rodata is not reloaded (`gdt::init` installs the
    // kernel's own, in writable memory, before any segment reload).
    unsafe { Cr0::update(|f| f.insert(Cr0Flags::WRITE_PROTECT)) };
    HEAP.call_once(|| heap);
    PROTECTED.store(true, Ordering::Release);
}

fn heap_page(addr: u64) -> Result<&'static mut PageTableEntry, Error> {
    let heap = HEAP.get().ok_or(Error::NotHeap(addr))?;
    if !heap.contains(&addr) {
        return Err(Error::NotHeap(addr));
    }
    pte(addr).ok_or(Error::NotHeap(addr))
}

fn pages(range: &Range<u64>) -> Result<impl Iterator<Item = u64>, Error> {
    if !range.start.is_multiple_of(PAGE) || !range.end.is_multiple_of(PAGE) {
        return Err(Error::Unaligned {
            start: range.start,
            end: range.end,
        });
    }
    Ok((range.start..range.end).step_by(PAGE as usize))
}

/// Maps the heap pages `range` R+X (`exec`) or R+W+NX (not `exec`). Each page
/// changes in one PTE store, so none is ever writable and executable.
pub fn set_code(range: Range<u64>, exec: bool) -> Result<(), Error> {
    // Validate every page before changing any.
    for addr in pages(&range)? {
        heap_page(addr)?;
    }
    let flags = if exec {
        F::PRESENT
    } else {
        F::PRESENT | F::WRITABLE | nx()
    };
    for addr in pages(&range)? {
        heap_page(addr)?.set_flags(flags);
        tlb::flush(VirtAddr::new(addr));
    }
    Ok(())
}

/// Records a guard page (any address) for [`check`] to verify.
pub fn register_guard(addr: u64) {
    GUARDS.lock().insert(addr);
}

/// Whether `addr` is a registered guard page (for the fault report).
pub fn is_guard(addr: u64) -> bool {
    // The fault path must not spin on a lock a faulting context may hold.
    GUARDS
        .try_lock()
        .is_some_and(|g| g.contains(&(addr & !(PAGE - 1))))
}

/// Whether `addr` is mapped: every level of its walk present (the `x86_64`
/// crate's `translate` takes any non-zero entry for mapped, and a guard
/// page's entry keeps its address).
pub fn is_present(addr: u64) -> bool {
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    let mut phys = pml4.start_address();
    for shift in [39u32, 30, 21, 12] {
        // SAFETY: read-only walk of the live hierarchy; every table lies
        // below 4 GiB, in the identity map.
        let e = unsafe { &table_ref(phys)[((addr >> shift) & 511) as usize] };
        if !e.flags().contains(F::PRESENT) {
            return false;
        }
        if shift == 12 || e.flags().contains(F::HUGE_PAGE) {
            return true;
        }
        phys = e.addr();
    }
    true
}

/// The last-level entry of region page `addr` (outside the identity map),
/// if every table above it exists ([`prepare_region_tables`]).
fn region_leaf(addr: u64) -> Option<&'static mut PageTableEntry> {
    if addr < IDENTITY_LIMIT {
        return None;
    }
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    let mut phys = pml4.start_address();
    for shift in [39u32, 30, 21] {
        // SAFETY: read of a table of the live hierarchy (identity mapped).
        let e = unsafe { &table_ref(phys)[((addr >> shift) & 511) as usize] };
        if !e.flags().contains(F::PRESENT) || e.flags().contains(F::HUGE_PAGE) {
            return None;
        }
        phys = e.addr();
    }
    // SAFETY: the last-level table of `addr`; the caller changes only this
    // leaf.
    Some(unsafe { &mut table(phys)[((addr >> 12) & 511) as usize] })
}

/// Maps the 4 KiB page `addr` (a demand-paged region's page, see
/// `regions`) to `frame`, R+W+NX. Returns false if its tables were not
/// prepared or the page is mapped already.
///
/// Runs in the page-fault handler: it only sets a leaf of the region
/// window, whose tables [`prepare_region_tables`] made beforehand, so it
/// cannot race the normal-context updates (identity-map leaves; region
/// tables added by single entry stores, never removed) or
/// [`unmap_region_page`] (which only clears leaves of released regions).
pub fn map_region_page(addr: u64, frame: u64) -> bool {
    let Some(e) = region_leaf(addr).filter(|_| addr.is_multiple_of(PAGE)) else {
        return false;
    };
    if e.flags().contains(F::PRESENT) {
        return false;
    }
    e.set_addr(PhysAddr::new(frame), F::PRESENT | F::WRITABLE | nx());
    tlb::flush(VirtAddr::new(addr));
    true
}

/// Makes sure every table down to the last level exists for the region
/// pages in `range` (outside the identity map), so mapping any of them
/// later needs no new table. Tables come from `new_table`; false if it ran
/// out. Normal context only.
pub fn prepare_region_tables(
    range: Range<u64>,
    mut new_table: impl FnMut() -> Option<u64>,
) -> bool {
    if range.start < IDENTITY_LIMIT {
        return false;
    }
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    let mut addr = range.start & !(HUGE - 1);
    while addr < range.end {
        let mut phys = pml4.start_address();
        for shift in [39u32, 30, 21] {
            // SAFETY: a table of the live hierarchy (below 4 GiB, identity
            // mapped); the reference lives for this step of the walk.
            let e = unsafe { &mut table(phys)[((addr >> shift) & 511) as usize] };
            if !e.flags().contains(F::PRESENT) {
                let Some(t) = new_table() else {
                    return false;
                };
                e.set_addr(PhysAddr::new(t), F::PRESENT | F::WRITABLE);
            }
            phys = e.addr();
        }
        addr += HUGE;
    }
    true
}

/// Unmaps the 4 KiB page `addr` mapped by [`map_region_page`] and returns
/// its frame (None if it was not mapped). Tables stay for the next use.
pub fn unmap_region_page(addr: u64) -> Option<u64> {
    let e = region_leaf(addr)?;
    if !e.flags().contains(F::PRESENT) {
        return None;
    }
    let frame = e.addr().as_u64();
    e.set_unused();
    tlb::flush(VirtAddr::new(addr));
    Some(frame)
}

/// What [`check`] saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Present leaf mappings, 4 KiB and 2 MiB.
    pub pages_4k: u64,
    pub pages_2m: u64,
    /// Executable 4 KiB pages inside the heap: published guest code.
    pub code_pages: u64,
    /// Registered guard pages (all verified not present).
    pub guards: u64,
    /// Pages both writable and executable (must be 0).
    pub wx: u64,
    /// Kernel text pages writable or not executable, rodata pages writable
    /// or executable, guard pages present (must be 0).
    pub wrong: u64,
    /// First offending address, if any.
    pub first_bad: Option<u64>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.wx == 0 && self.wrong == 0
    }
}

/// Access to a present leaf, with its parents' restrictions folded in.
#[derive(Clone, Copy)]
struct Access {
    write: bool,
    exec: bool,
}

fn leaf(acc: Access, flags: F) -> Access {
    Access {
        write: acc.write && flags.contains(F::WRITABLE),
        exec: acc.exec && !flags.contains(F::NO_EXECUTE),
    }
}

/// Walks every present mapping and checks the invariants in the module docs.
pub fn check() -> Report {
    let mut r = Report::default();
    if !PROTECTED.load(Ordering::Acquire) {
        r.wrong = 1;
        return r;
    }
    let img = image();
    let heap = HEAP.get().cloned().unwrap_or(0..0);
    let nx_on = crate::arch::cpu::nx_enabled();
    let top = Access {
        write: true,
        exec: true,
    };
    let bad = |r: &mut Report, addr: u64, wx: bool| {
        if wx {
            r.wx += 1;
        } else {
            r.wrong += 1;
        }
        r.first_bad.get_or_insert(addr);
    };
    let visit = |r: &mut Report, addr: u64, size: u64, acc: Access| {
        if size == PAGE {
            r.pages_4k += 1;
        } else {
            r.pages_2m += 1;
        }
        if acc.write && acc.exec {
            bad(r, addr, true);
        }
        let range = addr..addr + size;
        let text_overlap = overlaps(&range, &img.text);
        if text_overlap && (acc.write || !acc.exec || size != PAGE) {
            bad(r, addr, false);
        }
        if overlaps(&range, &(img.text.end..img.rodata_end)) && (acc.write || acc.exec) {
            bad(r, addr, false);
        }
        if acc.exec && !text_overlap {
            if heap.contains(&addr) && size == PAGE {
                r.code_pages += 1;
            } else {
                // Only kernel text and published guest code may execute.
                bad(r, addr, false);
            }
        }
    };
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    // SAFETY: read-only walk of the live hierarchy through the identity map
    // (all page tables lie below 4 GiB); nothing else runs meanwhile.
    unsafe {
        let pml4 = table_ref(pml4.start_address());
        for (i4, e4) in pml4.iter().enumerate() {
            if !e4.flags().contains(F::PRESENT) {
                continue;
            }
            let a4 = leaf(top, e4.flags());
            let pdpt = table_ref(e4.addr());
            for (i3, e3) in pdpt.iter().enumerate() {
                let base3 = ((i4 as u64) << 39) | ((i3 as u64) << 30);
                if !e3.flags().contains(F::PRESENT) {
                    continue;
                }
                let a3 = leaf(a4, e3.flags());
                if e3.flags().contains(F::HUGE_PAGE) {
                    // 1 GiB pages: the kernel never makes any.
                    bad(&mut r, base3, false);
                    continue;
                }
                let pd = table_ref(e3.addr());
                for (i2, e2) in pd.iter().enumerate() {
                    let base2 = base3 | ((i2 as u64) << 21);
                    if !e2.flags().contains(F::PRESENT) {
                        continue;
                    }
                    let a2 = leaf(a3, e2.flags());
                    if e2.flags().contains(F::HUGE_PAGE) {
                        visit(&mut r, base2, HUGE, a2);
                        continue;
                    }
                    let pt = table_ref(e2.addr());
                    for (i1, e1) in pt.iter().enumerate() {
                        if e1.flags().contains(F::PRESENT) {
                            let a1 = leaf(a2, e1.flags());
                            visit(&mut r, base2 | ((i1 as u64) << 12), PAGE, a1);
                        }
                    }
                }
            }
        }
    }
    // Without NX every readable page executes, and without CR0.WP ring 0
    // writes read-only pages: W^X cannot hold.
    if !nx_on || !Cr0::read().contains(Cr0Flags::WRITE_PROTECT) {
        r.wx = r.wx.max(1);
    }
    let guards = GUARDS.lock();
    for &g in guards.iter() {
        r.guards += 1;
        if is_present(g) {
            bad(&mut r, g, false);
        }
    }
    r
}
