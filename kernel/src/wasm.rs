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
//! Code memory: wasmtime without virtual memory refuses to load code unless
//! the embedder publishes it ([`CodeMemory`]). The boot identity map (2 MiB
//! pages) has no NX bit, so the heap where wasmtime places loaded code is
//! already executable and publishing has nothing to change. (Making the heap
//! NX and flipping just code pages would need 4 KiB mappings of the heap;
//! see kernel/README.md.)

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

/// Publishes loaded code: see the module docs for why it is a no-op.
struct CodeMemory;

impl skiff_wasm::wasmtime::CustomCodeMemory for CodeMemory {
    fn required_alignment(&self) -> usize {
        1
    }

    fn publish_executable(&self, _ptr: *const u8, _len: usize) -> skiff_wasm::wasmtime::Result<()> {
        Ok(())
    }

    fn unpublish_executable(
        &self,
        _ptr: *const u8,
        _len: usize,
    ) -> skiff_wasm::wasmtime::Result<()> {
        Ok(())
    }
}

/// Creates the node's wasm runtime (engine + WASI linker). Called once, by
/// the node task; the runtime lives as long as the node.
pub fn init() -> Result<&'static skiff_wasm::Runtime, skiff_wasm::Error> {
    let mut config = skiff_wasm::engine_config(skiff_wasm::Target::Kernel);
    // Does not change what artifacts the engine accepts.
    config.with_custom_code_memory(Some(alloc::sync::Arc::new(CodeMemory)));
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
