//! GDT with a TSS whose interrupt stack table gives exception handlers
//! stacks of their own (a kernel stack overflow then still gets reported),
//! and interrupts one too.

use spin::Once;
use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::instructions::tables::load_tss;
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// IST slots (1-based in the IDT, 0-based in the TSS).
pub const IST_EXCEPTION: u8 = 1;
pub const IST_NMI: u8 = 2;
pub const IST_DOUBLE_FAULT: u8 = 3;
/// Device and timer interrupts: delivering one never pushes onto the
/// interrupted stack, which may be a guest's demand-paged fiber stack whose
/// next page is not mapped yet (`regions`). Interrupt gates mask further
/// interrupts, so one stack serves them all.
pub const IST_INTERRUPT: u8 = 4;

static TSS: Once<TaskStateSegment> = Once::new();
static GDT: Once<GlobalDescriptorTable> = Once::new();

/// Loads the GDT and TSS. `ist_tops` are the tops of the four IST stacks.
pub fn init(ist_tops: [u64; 4]) {
    let tss = TSS.call_once(|| {
        let mut tss = TaskStateSegment::new();
        for (i, top) in ist_tops.iter().enumerate() {
            tss.interrupt_stack_table[i] = VirtAddr::new(*top);
        }
        tss
    });
    let mut code = None;
    let mut data = None;
    let mut tss_sel = None;
    let gdt = GDT.call_once(|| {
        let mut gdt = GlobalDescriptorTable::new();
        code = Some(gdt.append(Descriptor::kernel_code_segment()));
        data = Some(gdt.append(Descriptor::kernel_data_segment()));
        tss_sel = Some(gdt.append(Descriptor::tss_segment(tss)));
        gdt
    });
    gdt.load();
    let (Some(code), Some(data), Some(tss_sel)) = (code, data, tss_sel) else {
        return; // already initialised
    };
    // SAFETY: the selectors index the GDT just loaded, whose code segment is
    // a 64-bit ring-0 segment and whose data segment is flat ring-0 data.
    unsafe {
        CS::set_reg(code);
        SS::set_reg(data);
        DS::set_reg(data);
        ES::set_reg(data);
        load_tss(tss_sel);
    }
}
