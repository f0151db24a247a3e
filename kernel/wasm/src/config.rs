//! The one wasmtime configuration shared by the node (runtime) and the control
//! plane (AOT compiler). A `.cwasm` records the target triple, the ISA flags,
//! the tunables and the wasm features of the `Config` that produced it, and
//! wasmtime refuses to load it under a different one, so both sides must build
//! their `Config` here and nowhere else.

use wasmtime::{Config, WasmFeatures};

/// The wasm features guests may use: WebAssembly 2.0, nothing newer. Every
/// proposal beyond it is more engine surface (multi-memory, threads, memory64,
/// GC, exceptions, ...) and more node memory we would have to account for, so
/// a module using one is refused when it is compiled
/// ([`crate::Error::UnsupportedFeature`]).
pub const FEATURES: WasmFeatures = WasmFeatures::WASM2;

/// The component model itself (the layer WASI preview 2 components use),
/// none of its extensions. Components' core modules are held to
/// [`FEATURES`] like plain modules.
const COMPONENTS: WasmFeatures = WasmFeatures::COMPONENT_MODEL;

/// What the compiled code will run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The Skiff unikernel: `x86_64-unknown-none`.
    Kernel,
    /// The machine running this process (host tests and benchmarks). Same
    /// settings as [`Target::Kernel`] except the triple.
    Host,
}

impl Target {
    /// The target triple this configuration compiles for.
    pub fn triple(self) -> &'static str {
        match self {
            Target::Kernel => "x86_64-unknown-none",
            Target::Host => HOST_TRIPLE,
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
const HOST_TRIPLE: &str = "x86_64-unknown-linux-gnu";
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
const HOST_TRIPLE: &str = "x86_64-unknown-none";
#[cfg(not(target_arch = "x86_64"))]
compile_error!("skiff-wasm targets x86_64 only (the node kernel's architecture)");

/// x86-64-v2: the ISA baseline compiled code may use. It is explicit (never
/// inferred from the compiling machine) so a `.cwasm` built anywhere runs on
/// any node CPU that has these features; SSE4.1 also keeps float rounding
/// inline instead of calling back into the soft-float kernel (see
/// `Config::x86_float_abi_ok`). The node checks them with CPUID at load time.
pub const ISA_BASELINE: &[&str] = &[
    "has_sse3",
    "has_ssse3",
    "has_sse41",
    "has_sse42",
    "has_popcnt",
    "has_cmpxchg16b",
];

/// Largest wasm stack a guest may use (checked by generated code).
pub const MAX_WASM_STACK: usize = 512 << 10;
/// Each container's fiber stack: the wasm stack plus room for our WASI host
/// functions and wasmtime's own frames, which run on the same stack. On the
/// node it is a demand-paged region with a guard page that is never mapped
/// (the kernel's `RegionStacks`): only the pages a guest's calls reach hold
/// memory; wasmtime's stack limit traps a guest first.
pub const FIBER_STACK: usize = 1 << 20;

/// THE configuration. The kernel may add settings that do not change the
/// compiled artifact (`with_custom_code_memory`); anything else must be
/// changed here so both sides stay identical.
pub fn engine_config(target: Target) -> Config {
    let mut config = Config::new();
    // Pinning the triple also stops Cranelift from inferring the compiling
    // machine's CPU features (see `Config::target`).
    config
        .target(target.triple())
        .expect("the target triples above are known to wasmtime");
    #[cfg(feature = "compile")]
    {
        for flag in ISA_BASELINE {
            // SAFETY: the runtime side checks these features with CPUID
            // (`detect_host_feature`) before running code that uses them.
            unsafe {
                config.cranelift_flag_enable(flag);
            }
        }
    }
    // Only switch off what is beyond 2.0: wasmtime itself turns off parts of
    // 2.0 its build lacks (GC types: no `externref` without the gc feature).
    // The component model (preview 2 components) stays on; its extensions
    // (async, error contexts, ...) are off like every other proposal.
    config.wasm_features(WasmFeatures::all().difference(FEATURES | COMPONENTS), false);
    config.wasm_component_model(true);
    // What compiled code assumes of linear memories: explicit bounds checks,
    // no guard regions, a base that may move, no copy-on-write images. The
    // node supplies its own memories (the kernel's `RegionMemories`:
    // demand-paged regions that grow in place); host runs use wasmtime's.
    config
        .signals_based_traps(false)
        .memory_guard_size(0)
        .memory_reservation(0)
        .memory_reservation_for_growth(1 << 20)
        .memory_init_cow(false)
        .guard_before_linear_memory(false)
        // Preemption: generated code checks the engine's epoch counter, which
        // the node's timer advances; see `container.rs` for the yield.
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(FIBER_STACK);
    if target == Target::Kernel {
        // SAFETY: generated code uses SSE while the kernel's own code is
        // soft-float. The ISA baseline includes SSE4.1, so Cranelift emits
        // float rounding inline and no float crosses into kernel code; the
        // kernel enables SSE in CR0/CR4 before running any guest.
        unsafe {
            config.x86_float_abi_ok(true);
        }
    }
    #[cfg(target_os = "none")]
    {
        // SAFETY: `cpu_has` answers from CPUID, so only features the CPU
        // really has are reported present.
        unsafe {
            config.detect_host_feature(cpu_has);
        }
    }
    config
}

/// Runtime feature probe for the node (std builds use wasmtime's own).
#[cfg(target_os = "none")]
fn cpu_has(feature: &str) -> Option<bool> {
    use core::arch::x86_64::__cpuid;
    let leaf1 = __cpuid(1);
    let bit = |reg: u32, n: u32| Some(reg & (1 << n) != 0);
    match feature {
        "sse3" => bit(leaf1.ecx, 0),
        "ssse3" => bit(leaf1.ecx, 9),
        "cmpxchg16b" => bit(leaf1.ecx, 13),
        "sse4.1" => bit(leaf1.ecx, 19),
        "sse4.2" => bit(leaf1.ecx, 20),
        "popcnt" => bit(leaf1.ecx, 23),
        // Not in the baseline: report absent rather than guess.
        _ => Some(false),
    }
}

/// Validates `wasm` and compiles it for the node under [`engine_config`]. The
/// result is what the control plane ships to nodes.
#[cfg(feature = "compile")]
pub fn precompile(wasm: &[u8]) -> Result<alloc::vec::Vec<u8>, crate::Error> {
    precompile_for(Target::Kernel, wasm)
}

/// [`precompile`] for a chosen target (host tests and benchmarks use
/// [`Target::Host`] so they can run the result). Takes a core module
/// (preview 1) or a component (preview 2); a component importing
/// interfaces outside [`crate::SERVED_INTERFACES`] is refused here, naming
/// them, rather than failing on the node.
#[cfg(feature = "compile")]
pub fn precompile_for(target: Target, wasm: &[u8]) -> Result<alloc::vec::Vec<u8>, crate::Error> {
    use crate::Error;
    if !wasm.starts_with(b"\0asm") {
        return Err(Error::NotWasm);
    }
    // The header's layer field: 0 for a core module, 1 for a component.
    let component = wasm.get(6..8) == Some(&[1, 0]);
    let base = if component {
        FEATURES | COMPONENTS
    } else {
        FEATURES
    };
    if let Some(feature) = beyond(wasm, base) {
        return Err(Error::UnsupportedFeature(feature));
    }
    let surface = component.then(|| crate::component::surface(wasm));
    if let Some(surface) = &surface
        && !surface.unserved.is_empty()
    {
        return Err(Error::UnsupportedImports(surface.unserved.clone()));
    }
    let engine = wasmtime::Engine::new(&engine_config(target))
        .map_err(|e| Error::Engine(alloc::format!("{e}")))?;
    let compiled = if component {
        engine.precompile_component(wasm)
    } else {
        engine.precompile_module(wasm)
    };
    let artifact = compiled.map_err(|e| Error::Invalid(alloc::format!("{e:?}")))?;
    // Only now that it is known valid: an invalid component says so
    // rather than "nothing to run".
    if surface.is_some_and(|s| !s.runs && !s.handles) {
        return Err(Error::NotACommand);
    }
    Ok(artifact)
}

/// The first proposal beyond `base` that `wasm` needs: the input does not
/// validate under `base` but does with that one proposal added. `None` if it
/// validates, or is invalid for some other reason (compilation then reports
/// it).
#[cfg(feature = "compile")]
fn beyond(wasm: &[u8], base: WasmFeatures) -> Option<alloc::string::String> {
    use wasmparser::Validator;
    let validates = |features| {
        Validator::new_with_features(features)
            .validate_all(wasm)
            .is_ok()
    };
    if validates(base) {
        return None;
    }
    WasmFeatures::all()
        .difference(base)
        .iter_names()
        .find(|&(_, flag)| validates(base | flag))
        .map(|(name, _)| name.to_ascii_lowercase().replace('_', "-"))
}
