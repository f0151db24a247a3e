//! Boot entry: PVH note, Multiboot2 header and the 32→64-bit trampoline.
//!
//! Both PVH and Multiboot2 enter in 32-bit protected mode with paging off and
//! the boot information's physical address in `ebx`. The trampoline fills
//! static page tables identity-mapping the first 4 GiB with 2 MiB pages (the
//! top GiB, where MMIO lives, uncached), enables long mode, loads a minimal
//! GDT and calls the kernel:
//!
//! ```text
//! extern "C" fn skiff_kernel_entry(kind: u32, info_paddr: u32) -> !
//! ```
//!
//! on a 64 KiB boot stack (above a page, `skiff_boot_stack_guard`, that the
//! kernel unmaps once it manages page protections), with `kind` decoded by
//! [`BootProtocol::from_raw`](crate::BootProtocol::from_raw). The ELF entry
//! point (`skiff_boot_entry64`) is for loaders that enter in long mode: it
//! installs the same tables and passes `kind = 0` (no boot information).
//! The kernel must be linked at 1 MiB so that physical = virtual.

use crate::{BootError, BootInfo, BootProtocol, PhysMemory};

core::arch::global_asm!(
    r#"
    .section .multiboot2, "a"
    .balign 8
mb2_header:
    .long 0xe85250d6
    .long 0
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (0xe85250d6 + (mb2_header_end - mb2_header))
    .balign 8
    .short 3, 0
    .long 12
    .long skiff_boot_mb2_start
    .balign 8
    .short 0, 0
    .long 8
mb2_header_end:

    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad skiff_boot_pvh_start
    .balign 4

    .macro FILL_TABLES
    xorl %eax, %eax
    movl $boot_pml4, %edx
    movl $2048, %ecx
1:  movl %eax, (%edx)
    addl $4, %edx
    loop 1b
    movl $boot_pd, %edx
    movl $0x83, %eax
    movl $2048, %ecx
2:  movl %eax, (%edx)
    movl $0, 4(%edx)
    cmpl $0xc0000000, %eax
    jb 3f
    orl $0x18, (%edx)
3:  addl $0x200000, %eax
    addl $8, %edx
    loop 2b
    movl $boot_pdpt, %edx
    movl $(boot_pd + 3), %eax
    movl $4, %ecx
4:  movl %eax, (%edx)
    addl $4096, %eax
    addl $8, %edx
    loop 4b
    movl $(boot_pdpt + 3), %eax
    movl %eax, boot_pml4
    .endm

    .section .boot.text, "ax"
    .code32
    .global skiff_boot_pvh_start
skiff_boot_pvh_start:
    cli
    cld
    movl %ebx, %esi
    movl $1, %edi
    jmp boot32
    .global skiff_boot_mb2_start
skiff_boot_mb2_start:
    cli
    cld
    movl %ebx, %esi
    movl $2, %edi
    cmpl $0x36d76289, %eax
    je boot32
    xorl %edi, %edi
boot32:
    FILL_TABLES
    movl %cr4, %eax
    orl $0x20, %eax
    movl %eax, %cr4
    movl $boot_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax
    movl %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $boot64

    .code64
    .global skiff_boot_entry64
skiff_boot_entry64:
    cli
    cld
    xorl %edi, %edi
    xorl %esi, %esi
    FILL_TABLES
    movq $boot_pml4, %rax
    movq %rax, %cr3
    lgdt boot_gdt_ptr
    pushq $0x08
    leaq boot64(%rip), %rax
    pushq %rax
    lretq
boot64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw %ax, %fs
    movw %ax, %gs
    movq $boot_stack_top, %rsp
    xorl %ebp, %ebp
    movl %edi, %edi
    movl %esi, %esi
    call skiff_kernel_entry
5:  cli
    hlt
    jmp 5b

    .section .rodata.boot_gdt, "a"
    .balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff
    .quad 0x00cf92000000ffff
boot_gdt_end:
    .balign 16
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .quad boot_gdt

    .section .bss.boot_tables, "aw", @nobits
    .balign 4096
boot_pml4:
    .skip 4096
boot_pdpt:
    .skip 4096
boot_pd:
    .skip 4 * 4096
    .section .bss.boot_stack, "aw", @nobits
    .balign 4096
    .global skiff_boot_stack_guard
skiff_boot_stack_guard:
    .skip 4096
    .skip 65536
boot_stack_top:
    .code64
"#,
    options(att_syntax)
);

/// Physical memory through the boot identity map (first 4 GiB).
struct IdentityMemory;

impl PhysMemory for IdentityMemory {
    fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        // The trampoline maps [0, 4 GiB). Boot structures may sit in page 0
        // (SeaBIOS's PVH ROM puts the memory map at ~0x500), but never at 0.
        if addr == 0 || end > 1 << 32 {
            return None;
        }
        // SAFETY: the range lies in the identity-mapped first 4 GiB (checked
        // above), which the boot page tables map for the kernel's lifetime;
        // the loader's structures there are not written while the returned
        // borrow lives (the kernel parses them once, before allocating).
        Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len) })
    }
}

/// Reads the loader's boot information passed by the trampoline.
///
/// Must be called before the kernel hands out memory that could overlap the
/// loader's structures (the frame allocator is built from the result).
pub fn read_boot_info(kind: u32, info_paddr: u32) -> Result<BootInfo, BootError> {
    match BootProtocol::from_raw(kind) {
        BootProtocol::Pvh => crate::pvh::parse(&IdentityMemory, info_paddr.into()),
        BootProtocol::Multiboot2 => crate::multiboot2::parse(&IdentityMemory, info_paddr.into()),
        BootProtocol::None => Ok(BootInfo::empty(BootProtocol::None)),
    }
}
