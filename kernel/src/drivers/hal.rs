//! `virtio_drivers::Hal` for the kernel: DMA memory from the frame allocator,
//! identity-mapped, so virtual = physical below 4 GiB and buffers in the
//! stack window translate through the page tables.

use core::ptr::NonNull;

use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::arch::exit::{ExitCode, exit};
use crate::mem;

pub struct KernelHal;

// SAFETY: DMA regions are whole frames taken from the frame allocator
// (zeroed, identity-mapped, owned by the device until dealloc), and shared
// buffers are passed by their physical address without copying: the
// identity map and physically contiguous stacks make that address valid for
// the whole buffer.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let paddr = mem::alloc_frames(pages as u64);
        let vaddr = NonNull::new(paddr as *mut u8).expect("frame 0 is never allocated");
        (paddr, vaddr)
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        mem::free_frames(paddr, pages as u64);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("MMIO at physical 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let vaddr = buffer.as_ptr().cast::<u8>() as u64;
        match mem::virt_to_phys(vaddr) {
            Some(p) => p,
            None => {
                error!("devices", "DMA buffer not mapped vaddr={vaddr:#x}");
                exit(ExitCode::Panic)
            }
        }
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}
