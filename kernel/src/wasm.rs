//! wasmtime glue: the C symbols it imports, the engine, and epoch ticks.
//!
//! Guests run on wasmtime fibers inside `Container::step`, called from a
//! kernel task. Preemption needs the engine's epoch to advance while a guest
//! runs, so [`with_ticks`] keeps the APIC timer firing every [`TICK_US`] and
//! the timer interrupt calls `Engine::increment_epoch` (one atomic add: the
//! only wasmtime call that is safe from an interrupt). Outside `with_ticks`
//! the epoch stands still, so a step's budget is guest CPU time.
//!
//! SSE: generated code uses XMM registers; `arch::cpu::init` enabled SSE in
//! CR0/CR4. Interrupts taken while a guest runs save only the general
//! registers (`isr_stubs.s`): that is enough because every handler is
//! kernel code, built soft-float for `x86_64-unknown-none`, which never
//! touches XMM/MXCSR. Fiber switches need not save XMM either (all XMM
//! registers are caller-saved in the System V ABI).
//!
//! Code memory (W^X): wasmtime without virtual memory copies a module's
//! code into a page-aligned heap allocation (`required_alignment`), whose
//! pages are R+W+NX like the rest of the heap while it writes them;
//! [`CodeMemory`] flips the text pages to R+X when wasmtime publishes them
//! and back to R+W+NX when it unpublishes them (`paging::set_code`).
//!
//! Fiber stacks ([`RegionStacks`]) and linear memories ([`RegionMemories`])
//! are demand-paged regions (`regions`): pages map on first touch, a
//! memory grows in place, and a stack's lowest page is a guard that is never
//! mapped, so a host-side overflow (wasmtime's own `max_wasm_stack` check
//! traps a recursing guest long before) faults instead of writing over a
//! neighbour.

use core::sync::atomic::{AtomicBool, AtomicPtr, Ordering};

use alloc::boxed::Box;

use crate::arch::{apic, time};

/// Epoch tick period while guests run: a step's budget is in these.
pub const TICK_US: u64 = 1000;

/// wasmtime's thread-local slots (slot 0; slot 1 only with
/// component-model-async). One CPU: a static array is the thread.
static TLS: [AtomicPtr<u8>; 2] = [const { AtomicPtr::new(core::ptr::null_mut()) }; 2];

#[unsafe(no_mangle)]
extern "C" fn wasmtime_tls_get(slot: usize) -> *mut u8 {
    TLS.get(slot)
        .map_or(core::ptr::null_mut(), |s| s.load(Ordering::Relaxed))
}

#[unsafe(no_mangle)]
extern "C" fn wasmtime_tls_set(slot: usize, ptr: *mut u8) {
    if let Some(s) = TLS.get(slot) {
        s.store(ptr, Ordering::Relaxed);
    }
}

static ENGINE: spin::Once<skiff_wasm::wasmtime::Engine> = spin::Once::new();
static RUNNING: AtomicBool = AtomicBool::new(false);

const PAGE: usize = 4096;

/// Publishes loaded guest code R+X and unpublishes it R+W+NX.
struct CodeMemory;

/// The pages `[ptr, ptr + len)` touches. wasmtime starts the text section
/// on a page (the allocation and the section are page aligned); its tail
/// page holds only the rest of the same image, which wasmtime never writes
/// after publishing, since page-aligned allocations get whole pages.
fn pages(ptr: *const u8, len: usize) -> core::ops::Range<u64> {
    let start = ptr as u64 & !(PAGE as u64 - 1);
    let end = (ptr as u64 + len as u64).next_multiple_of(PAGE as u64);
    start..end
}

impl skiff_wasm::wasmtime::CustomCodeMemory for CodeMemory {
    fn required_alignment(&self) -> usize {
        PAGE
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> skiff_wasm::wasmtime::Result<()> {
        let range = pages(ptr, len);
        crate::paging::set_code(range.clone(), true).map_err(skiff_wasm::wasmtime::Error::new)?;
        // Self-test: the whole address space still holds W^X and its guards.
        let r = crate::paging::check();
        if !r.ok() {
            panic!("W^X check failed after publishing guest code: {r:?}");
        }
        debug!(
            "paging",
            "published guest code {:#x}+{:#x} wx-check ok code_pages={} guards={} pages_4k={} pages_2m={}",
            range.start,
            range.end - range.start,
            r.code_pages,
            r.guards,
            r.pages_4k,
            r.pages_2m
        );
        Ok(())
    }

    fn unpublish_executable(&self, ptr: *const u8, len: usize) -> skiff_wasm::wasmtime::Result<()> {
        crate::paging::set_code(pages(ptr, len), false).map_err(skiff_wasm::wasmtime::Error::new)
    }
}

/// Fiber stacks in demand-paged regions, the lowest page a guard that is
/// never mapped: an idle guest holds the few pages its stack really used.
struct RegionStacks;

struct RegionStack {
    region: crate::regions::Region,
    /// Guard page plus stack, bytes.
    size: usize,
}

// SAFETY: every stack is a fresh region owned by the returned value alone:
// its pages above the guard map zeroed on first touch, the guard never.
unsafe impl skiff_wasm::wasmtime::StackCreator for RegionStacks {
    fn new_stack(
        &self,
        size: usize,
        _zeroed: bool,
    ) -> skiff_wasm::wasmtime::Result<Box<dyn skiff_wasm::wasmtime::StackMemory>> {
        use skiff_wasm::wasmtime::{Error, OutOfMemory};
        let size = size
            .checked_next_multiple_of(PAGE)
            .and_then(|s| s.checked_add(PAGE))
            .filter(|&s| s as u64 <= crate::regions::REGION_BYTES)
            .ok_or_else(|| Error::new(OutOfMemory::new(size)))?;
        let region = crate::regions::Region::new(PAGE as u64, size as u64).map_err(Error::new)?;
        Ok(Box::new(RegionStack { region, size }))
    }
}

// SAFETY: `top` and `range` describe the pages above the guard.
unsafe impl skiff_wasm::wasmtime::StackMemory for RegionStack {
    fn top(&self) -> *mut u8 {
        self.region.base().wrapping_add(self.size)
    }

    fn range(&self) -> core::ops::Range<usize> {
        let base = self.region.base() as usize;
        base + PAGE..base + self.size
    }

    fn guard_range(&self) -> core::ops::Range<*mut u8> {
        self.region.base()..self.region.base().wrapping_add(PAGE)
    }
}

/// Linear memories in demand-paged regions: a memory grows in place up to
/// the largest wasm32 memory, and only touched pages hold frames.
struct RegionMemories;

struct RegionMemory {
    region: crate::regions::Region,
    size: usize,
    capacity: usize,
}

// SAFETY: each memory is a fresh region (zeroed on first touch), owned by
// the returned value alone, whose base never moves.
unsafe impl skiff_wasm::wasmtime::MemoryCreator for RegionMemories {
    fn new_memory(
        &self,
        _ty: skiff_wasm::wasmtime::MemoryType,
        minimum: usize,
        maximum: Option<usize>,
        _reserved: Option<usize>,
        _guard: usize,
    ) -> Result<Box<dyn skiff_wasm::wasmtime::LinearMemory>, alloc::string::String> {
        let region_bytes = crate::regions::REGION_BYTES as usize;
        let capacity = maximum.unwrap_or(region_bytes).min(region_bytes);
        if minimum > capacity {
            return Err(alloc::format!(
                "a memory of {minimum} bytes exceeds the node's {capacity}-byte limit"
            ));
        }
        let end = minimum.next_multiple_of(PAGE) as u64;
        let region = crate::regions::Region::new(0, end).map_err(|e| alloc::format!("{e}"))?;
        Ok(Box::new(RegionMemory {
            region,
            size: minimum,
            capacity,
        }))
    }
}

// SAFETY: `as_ptr` is the region's fixed base; `byte_size` bytes from it are
// accessible (mapped on touch) and growth never moves it.
unsafe impl skiff_wasm::wasmtime::LinearMemory for RegionMemory {
    fn byte_size(&self) -> usize {
        self.size
    }

    fn byte_capacity(&self) -> usize {
        self.capacity
    }

    fn grow_to(&mut self, new_size: usize) -> skiff_wasm::wasmtime::Result<()> {
        if new_size > self.capacity {
            return Err(skiff_wasm::wasmtime::Error::new(
                skiff_wasm::wasmtime::OutOfMemory::new(new_size),
            ));
        }
        self.region
            .grow_to(new_size.next_multiple_of(PAGE) as u64)
            .map_err(skiff_wasm::wasmtime::Error::new)?;
        self.size = self.size.max(new_size);
        Ok(())
    }

    fn as_ptr(&self) -> *mut u8 {
        self.region.base()
    }
}

static RUNTIME: spin::Once<Result<&'static skiff_wasm::Runtime, skiff_wasm::Error>> =
    spin::Once::new();

/// The node's wasm runtime (engine + WASI linkers), created on first use
/// and kept for the node's life (the agent's `EngineSource`). Creating it
/// is the slowest step of a boot, so the node warms it only once it has
/// registered ([`warm`]).
pub fn runtime() -> Result<&'static skiff_wasm::Runtime, skiff_wasm::Error> {
    RUNTIME.call_once(create).clone()
}

/// Creates the runtime now if nothing has yet, saying how long it took.
pub fn warm() {
    if RUNTIME.is_completed() {
        return;
    }
    let t0 = time::uptime_us();
    match runtime() {
        Ok(_) => info!(
            "node",
            "wasm runtime ready in {} us",
            time::uptime_us() - t0
        ),
        Err(e) => error!(
            "node",
            "cannot create the wasm runtime: {e}; wasm pods cannot start"
        ),
    }
}

fn create() -> Result<&'static skiff_wasm::Runtime, skiff_wasm::Error> {
    let mut config = skiff_wasm::engine_config(skiff_wasm::Target::Kernel);
    // Does not change what artifacts the engine accepts.
    config.with_custom_code_memory(Some(alloc::sync::Arc::new(CodeMemory)));
    // Neither do where fiber stacks and linear memories come from.
    config.with_host_stack(alloc::sync::Arc::new(RegionStacks));
    config.with_host_memory(alloc::sync::Arc::new(RegionMemories));
    let rt: &'static skiff_wasm::Runtime = Box::leak(Box::new(skiff_wasm::Runtime::new(&config)?));
    ENGINE.call_once(|| rt.engine().clone());
    Ok(rt)
}

/// Runs `f` (which steps guests) with the epoch ticking.
pub fn with_ticks<R>(f: impl FnOnce() -> R) -> R {
    RUNNING.store(true, Ordering::Release);
    apic::arm(time::rdtsc() + time::us_to_tsc(TICK_US));
    let r = f();
    RUNNING.store(false, Ordering::Release);
    // The executor's notion of the armed deadline is stale now.
    crate::executor::timer_rearm();
    r
}

/// Called by the timer interrupt: one epoch tick and the next one armed
/// while guests run.
pub fn on_timer_interrupt() {
    if RUNNING.load(Ordering::Acquire)
        && let Some(engine) = ENGINE.get()
    {
        engine.increment_epoch();
        apic::arm(time::rdtsc() + time::us_to_tsc(TICK_US));
    }
}
