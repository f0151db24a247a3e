//! Physical frames, the kernel heap, page mappings and guarded stacks.
//!
//! * Frames come from `skiff_boot::frames::FrameAllocator` over the boot
//!   memory map, minus low memory and the kernel image, below 4 GiB (what the
//!   boot identity map covers, so every frame is addressable at its physical
//!   address).
//! * The largest run of frames is shared by the heap and the pool of
//!   demand-paged regions (`regions`: guests' linear memories and fiber
//!   stacks): the heap starts at its bottom with [`INITIAL_HEAP`] and grows
//!   up into the pool's fresh frames as it needs, while the pool hands out
//!   frames from the top down and recycles freed ones. So pods' memory and
//!   the kernel's share one budget. Other runs, less [`FRAME_RESERVE`] for
//!   DMA rings and kernel stacks, go to the pool too. A failed heap
//!   allocation returns null: fallible users (`try_reserve`) see an error
//!   and cope; an infallible one reaches Rust's alloc error handler, whose
//!   panic the panic handler turns into exit `OUT_OF_MEMORY`.
//! * Stacks live in their own virtual window above the identity map, mapped
//!   4 KiB at a time with an unmapped guard page below each, so an overflow
//!   faults instead of corrupting its neighbour.
//! * Page-aligned heap allocations (guest code) are rounded up
//!   to whole pages, so `paging` can change their pages' protection without
//!   touching a neighbouring object.

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};

use skiff_boot::BootInfo;
use skiff_boot::frames::{FRAME_SIZE, FrameAllocator};
use x86_64::structures::paging::{
    Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use crate::arch::exit::{ExitCode, exit};

/// The identity map the boot trampoline built.
const IDENTITY_LIMIT: u64 = 1 << 32;
/// Start of the stack window (PML4 slot 1: nothing else lives there).
const STACK_WINDOW: u64 = 0x0000_0080_0000_0000;
/// The heap at boot; it grows into the region pool as it needs
/// ([`HEAP_GROWTH`] at a time).
const INITIAL_HEAP: u64 = 2 << 20;
const HEAP_GROWTH: usize = 1 << 20;
/// Frames kept out of the region pool for DMA rings and kernel stacks (the
/// identity map's page tables are reserved on top, by memory size).
const FRAME_RESERVE: u64 = 1 << 20;

static FRAMES: spin::Mutex<Option<FrameAllocator>> = spin::Mutex::new(None);
static NEXT_STACK: AtomicU64 = AtomicU64::new(STACK_WINDOW);
static STACK_END: AtomicU64 = AtomicU64::new(STACK_WINDOW);

unsafe extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// An allocation asking for page alignment gets whole pages: it may become
/// code or a guard page, whose protection must not reach another object.
fn page_granular(layout: Layout) -> Layout {
    if layout.align() >= FRAME_SIZE as usize {
        layout.pad_to_align()
    } else {
        layout
    }
}

struct KernelHeap {
    heap: spin::Mutex<linked_list_allocator::Heap>,
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap {
    heap: spin::Mutex::new(linked_list_allocator::Heap::empty()),
};

// SAFETY: allocation is delegated to linked_list_allocator under a lock;
// interrupt handlers never allocate, so the lock cannot be re-entered. The
// heap grows only over frames the pool hands over right above its end.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let layout = page_granular(layout);
        let mut heap = self.heap.lock();
        if let Ok(p) = heap.allocate_first_fit(layout) {
            return p.as_ptr();
        }
        // Grow into the pool's fresh frames above the heap.
        let want = layout
            .size()
            .saturating_add(layout.align())
            .next_multiple_of(HEAP_GROWTH);
        if crate::regions::lend_to_heap(heap.top() as u64, want as u64) {
            // SAFETY: the pool just gave up the `want` bytes right above the
            // heap's end: identity-mapped RAM, the heap's from now on.
            unsafe { heap.extend(want) };
            if let Ok(p) = heap.allocate_first_fit(layout) {
                return p.as_ptr();
            }
        }
        drop(heap);
        warn!(
            "mem",
            "heap allocation failed size={} align={}",
            layout.size(),
            layout.align()
        );
        core::ptr::null_mut()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = core::ptr::NonNull::new(ptr) {
            // SAFETY: the caller guarantees `ptr` came from `alloc` with
            // `layout`, which `alloc` padded the same way.
            unsafe { self.heap.lock().deallocate(p, page_granular(layout)) };
        }
    }
}

pub fn heap_used() -> usize {
    HEAP.heap.lock().used()
}

pub fn heap_total() -> usize {
    HEAP.heap.lock().size()
}

pub fn heap_free() -> usize {
    HEAP.heap.lock().free()
}

/// Memory kept for the kernel itself (network buffers, the agent, TLS): pods
/// are given only what is free beyond it.
const KERNEL_MARGIN: u64 = 2 << 20;

/// Memory pods may still be given: the heap's free bytes (their stores,
/// sockets and logs) and the pool's (their memories and stacks), less
/// [`KERNEL_MARGIN`].
pub fn available_to_pods() -> u64 {
    (heap_free() as u64 + crate::regions::free_bytes()).saturating_sub(KERNEL_MARGIN)
}

/// (free, total) frames.
pub fn frame_stats() -> (u64, u64) {
    FRAMES
        .lock()
        .as_ref()
        .map_or((0, 0), |f| (f.free_frames(), f.total_frames()))
}

/// Allocates `count` contiguous zeroed frames; exits OUT_OF_MEMORY if none.
pub fn alloc_frames(count: u64) -> u64 {
    let addr = alloc_frames_uninit(count);
    // SAFETY: the frames are free RAM below 4 GiB (identity-mapped) that no
    // one else references, just taken from the allocator.
    unsafe { core::ptr::write_bytes(addr as *mut u8, 0, (count * FRAME_SIZE) as usize) };
    addr
}

/// Allocates `count` contiguous frames with whatever they held (stacks:
/// zeroing them is wasted boot time, ~1 ms per 64 KiB under emulation).
fn alloc_frames_uninit(count: u64) -> u64 {
    let Some(addr) = FRAMES.lock().as_mut().and_then(|f| f.alloc(count)) else {
        error!("mem", "out of frames count={count}");
        exit(ExitCode::OutOfMemory)
    };
    addr
}

pub fn free_frames(addr: u64, count: u64) {
    if let Some(f) = FRAMES.lock().as_mut()
        && let Err(e) = f.free(addr, count)
    {
        warn!(
            "mem",
            "frame free refused addr={addr:#x} count={count} err={e:?}"
        );
    }
}

/// Whether `[addr, addr+len)` is mapped (for the fault report's stack dump
/// and the guard-page check).
pub fn is_readable(addr: u64, len: u64) -> bool {
    let end = addr.saturating_add(len);
    if end <= IDENTITY_LIMIT {
        if addr < 0x1000 {
            return false;
        }
    } else if crate::regions::in_window(addr) {
        if !crate::regions::in_window(end - 1) {
            return false;
        }
    } else if addr < STACK_WINDOW || end > STACK_END.load(Ordering::Relaxed) {
        return false;
    }
    // Guard pages (in the stack window and in the heap) are unmapped: walk
    // the page tables.
    let pages = (addr / FRAME_SIZE)..=((end.max(addr + 1) - 1) / FRAME_SIZE);
    pages
        .into_iter()
        .all(|p| crate::paging::is_present(p * FRAME_SIZE))
}

/// Physical address of a kernel virtual address: identity below 4 GiB,
/// page-table walk in the stack window (stacks are physically contiguous).
pub fn virt_to_phys(addr: u64) -> Option<u64> {
    if addr < IDENTITY_LIMIT {
        Some(addr)
    } else {
        translate(addr)
    }
}

fn translate(addr: u64) -> Option<u64> {
    use x86_64::structures::paging::Translate;
    with_mapper(|m| m.translate_addr(VirtAddr::new(addr)).map(|p| p.as_u64()))
}

fn with_mapper<R>(f: impl FnOnce(&mut OffsetPageTable<'static>) -> R) -> R {
    let (pml4, _) = x86_64::registers::control::Cr3::read();
    // SAFETY: CR3 holds the boot PML4, which lies in the identity map
    // (offset 0); page-table updates happen only with the frame lock held
    // by the caller chain on this single CPU.
    let mut mapper = unsafe {
        OffsetPageTable::new(
            &mut *(pml4.start_address().as_u64() as *mut PageTable),
            VirtAddr::new(0),
        )
    };
    f(&mut mapper)
}

struct Frames;

// SAFETY: hands out frames owned by the frame allocator, each exactly once.
unsafe impl x86_64::structures::paging::FrameAllocator<Size4KiB> for Frames {
    fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
        Some(PhysFrame::containing_address(PhysAddr::new(alloc_frames(
            1,
        ))))
    }
}

/// Builds the frame allocator and the heap from the boot memory map.
pub fn init(boot: &BootInfo) {
    // Linker-script symbols: only their addresses are meaningful.
    let (kstart, kend) = (
        core::ptr::addr_of!(__kernel_start) as u64,
        core::ptr::addr_of!(__kernel_end) as u64,
    );
    let fa = FrameAllocator::new(
        &boot.memory,
        &[(0, 0x10_0000), (kstart, kend)],
        IDENTITY_LIMIT,
    );
    // Beyond the fixed reserve: one page table per 2 MiB for `protect`'s
    // split of the shared run into 4 KiB pages.
    let reserve = FRAME_RESERVE / FRAME_SIZE + fa.free_frames() / 512 + 1;
    // The largest run (less the reserve, if nothing else can hold it) is
    // shared by the heap, at its bottom, and the region pool.
    let largest = fa.largest_run();
    let shared = if fa.free_frames() - largest >= reserve {
        largest
    } else {
        largest.saturating_sub(reserve)
    };
    *FRAMES.lock() = Some(fa);
    if shared * FRAME_SIZE < INITIAL_HEAP * 2 {
        error!(
            "mem",
            "not enough memory: largest usable run {shared} frames"
        );
        exit(ExitCode::OutOfMemory);
    }
    let Some(base) = FRAMES.lock().as_mut().and_then(|f| f.alloc(shared)) else {
        unreachable!("the largest run was just measured");
    };
    let end = base + shared * FRAME_SIZE;
    // SAFETY: [base, base + INITIAL_HEAP) was just taken from the frame
    // allocator, is identity-mapped RAM and is owned by the heap from now on.
    unsafe {
        HEAP.heap
            .lock()
            .init(base as *mut u8, INITIAL_HEAP as usize)
    };
    debug!(
        "mem",
        "kernel={kstart:#x}-{kend:#x} heap+pool={base:#x}..{end:#x}"
    );
    crate::paging::protect(base..end);
    // Every other frame beyond the reserve goes to the pool too.
    let mut others = [(0, 0); 8];
    let mut n = 0;
    if let Some(fa) = FRAMES.lock().as_mut() {
        while n < others.len() {
            let frames = fa
                .largest_run()
                .min(fa.free_frames().saturating_sub(reserve));
            let Some(start) = (frames > 0).then(|| fa.alloc(frames)).flatten() else {
                break;
            };
            others[n] = (start, start + frames * FRAME_SIZE);
            n += 1;
        }
    }
    crate::regions::init(base + INITIAL_HEAP..end, &others[..n]);
}

/// Maps a fresh stack of `pages` pages below an unmapped guard page and
/// returns its top (16-byte aligned).
pub fn alloc_stack(pages: u64) -> u64 {
    let base = NEXT_STACK.fetch_add((pages + 1) * FRAME_SIZE, Ordering::Relaxed);
    let bottom = base + FRAME_SIZE; // `base` itself stays unmapped: the guard
    crate::paging::register_guard(base);
    let flags = PageTableFlags::PRESENT
        | PageTableFlags::WRITABLE
        | if crate::arch::cpu::nx_enabled() {
            PageTableFlags::NO_EXECUTE
        } else {
            PageTableFlags::empty()
        };
    // Physically contiguous, so a buffer on a stack can be shared with a
    // device by translating its start address alone (see `virt_to_phys`).
    let phys = alloc_frames_uninit(pages);
    with_mapper(|m| {
        for i in 0..pages {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(bottom + i * FRAME_SIZE));
            let frame = PhysFrame::containing_address(PhysAddr::new(phys + i * FRAME_SIZE));
            // SAFETY: the page lies in the stack window, which nothing else
            // maps, and the frame is freshly allocated and zeroed.
            match unsafe { m.map_to(page, frame, flags, &mut Frames) } {
                Ok(flush) => flush.flush(),
                Err(e) => {
                    error!("mem", "cannot map stack page: {e:?}");
                    exit(ExitCode::OutOfMemory)
                }
            }
        }
    });
    let top = bottom + pages * FRAME_SIZE;
    STACK_END.fetch_max(top, Ordering::Relaxed);
    top
}

/// Continues execution in `f` on the stack whose top is `top`.
pub fn run_on_stack(top: u64, f: extern "C" fn() -> !) -> ! {
    // SAFETY: `top` is the top of a mapped, unused stack from `alloc_stack`;
    // `f` never returns, so nothing needs the old stack again.
    unsafe {
        core::arch::asm!(
            "mov rsp, {top}",
            "xor ebp, ebp",
            "call {f}",
            "ud2",
            top = in(reg) top,
            f = in(reg) f,
            options(noreturn)
        )
    }
}
