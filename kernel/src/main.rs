//! The Skiff node kernel. Built for `x86_64-unknown-none` by `cargo xtask kernel`;
//! on the host this is an empty stub so workspace-wide commands stay simple.
//!
//! Boot order (each step logs a `stage:` line, see kernel/README.md): entry →
//! memory → interrupts → timers → devices → net-up → diag-ready. After
//! `memory` the kernel leaves the boot stack for a guarded one.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
#[macro_use]
mod log;
#[cfg(target_os = "none")]
mod arch;
#[cfg(target_os = "none")]
mod blk;
#[cfg(target_os = "none")]
mod diag;
#[cfg(target_os = "none")]
mod drivers;
#[cfg(target_os = "none")]
mod entropy;
#[cfg(target_os = "none")]
mod executor;
#[cfg(target_os = "none")]
mod mem;
#[cfg(target_os = "none")]
mod net;
#[cfg(target_os = "none")]
mod node;
#[cfg(target_os = "none")]
mod node_ports;
#[cfg(target_os = "none")]
mod paging;
#[cfg(target_os = "none")]
mod pods;
#[cfg(target_os = "none")]
mod probes;
#[cfg(target_os = "none")]
mod regions;
#[cfg(target_os = "none")]
mod wasm;

#[cfg(target_os = "none")]
use arch::exit::{ExitCode, exit};
#[cfg(target_os = "none")]
use skiff_node_config::{FaultKind, NodeConfig};

#[cfg(target_os = "none")]
const VERSION: &str = env!("CARGO_PKG_VERSION");
#[cfg(target_os = "none")]
const BUILD_ID: &str = match option_env!("SKIFF_BUILD_ID") {
    Some(id) => id,
    None => "dev",
};

#[cfg(target_os = "none")]
static BOOT: spin::Once<skiff_boot::BootInfo> = spin::Once::new();
#[cfg(target_os = "none")]
static CONFIG: spin::Once<NodeConfig<'static>> = spin::Once::new();

#[cfg(target_os = "none")]
const MAIN_STACK_PAGES: u64 = 64;
#[cfg(target_os = "none")]
const IST_STACK_PAGES: u64 = 4;

/// Called by the skiff-boot trampoline in long mode on the boot stack.
#[cfg(target_os = "none")]
#[unsafe(no_mangle)]
extern "C" fn skiff_kernel_entry(kind: u32, info_paddr: u32) -> ! {
    arch::time::mark_entry();
    arch::serial::init();
    info!("skiff", "skiff-kernel {VERSION} build={BUILD_ID}");
    let boot = match skiff_boot::entry::read_boot_info(kind, info_paddr) {
        Ok(b) => BOOT.call_once(|| b),
        Err(e) => {
            error!("boot", "cannot read boot information: {e}");
            exit(ExitCode::Config);
        }
    };
    let config = match skiff_node_config::parse(boot.cmdline()) {
        Ok(c) => CONFIG.call_once(|| c),
        Err(e) => {
            error!("config", "{e}");
            exit(ExitCode::Config);
        }
    };
    log::set_max_level(config.log_level);
    debug!(
        "boot",
        "protocol={} usable_bytes={} rsdp={:?} rsdp_copied={} cmdline=\"{}\"",
        boot.protocol.name(),
        boot.memory.usable_bytes(),
        boot.rsdp,
        boot.rsdp_copy().map_or(0, <[u8]>::len),
        skiff_node_config::Redacted(boot.cmdline())
    );
    for r in boot.memory.regions() {
        debug!("boot", "memory {:#x}-{:#x} {:?}", r.start, r.end(), r.kind);
    }
    if config.ignored > 0 {
        debug!("config", "ignored {} hypervisor words", config.ignored);
    }
    stage("entry");

    let tsc_source = arch::time::calibrate();
    if matches!(tsc_source, arch::time::TscSource::Nominal) {
        warn!(
            "time",
            "no clock to calibrate the TSC against; assuming 2 GHz"
        );
    }
    debug!(
        "time",
        "tsc_hz={} source={}",
        arch::time::tsc_hz(),
        tsc_source.name()
    );
    arch::cpu::init();
    mem::init(boot);
    let ist = [
        mem::alloc_stack(IST_STACK_PAGES),
        mem::alloc_stack(IST_STACK_PAGES),
        mem::alloc_stack(IST_STACK_PAGES),
        mem::alloc_stack(IST_STACK_PAGES),
    ];
    IST_TOPS.call_once(|| ist);
    let (free, total) = mem::frame_stats();
    log::stage(
        "memory",
        format_args!(
            " heap_bytes={} frames_free={free} frames_total={total}",
            mem::heap_total()
        ),
    );
    let main_stack = mem::alloc_stack(MAIN_STACK_PAGES);
    wx_self_test();
    mem::run_on_stack(main_stack, kernel_main)
}

/// Reads the page tables back: no page writable and executable, kernel
/// text R+X, read-only data R, every stack's guard page unmapped. A failure
/// is a kernel bug, so it stops the node.
#[cfg(target_os = "none")]
fn wx_self_test() {
    let r = paging::check();
    if !r.ok() {
        panic!("W^X self-test failed: {r:?}");
    }
    info!(
        "paging",
        "wx-check ok nx={} pages_4k={} pages_2m={} code_pages={} guards={}",
        arch::cpu::nx_enabled(),
        r.pages_4k,
        r.pages_2m,
        r.code_pages,
        r.guards
    );
}

#[cfg(target_os = "none")]
static IST_TOPS: spin::Once<[u64; 4]> = spin::Once::new();

/// The rest of boot, on a guarded stack.
#[cfg(target_os = "none")]
extern "C" fn kernel_main() -> ! {
    let config = CONFIG.get().expect("set before the stack switch");
    arch::gdt::init(*IST_TOPS.get().expect("set before the stack switch"));
    arch::interrupts::init();
    arch::apic::init();
    log::stage(
        "interrupts",
        format_args!(" x2apic={}", arch::apic::x2apic()),
    );

    arch::apic::calibrate();
    arch::apic::timer_enable();
    let unix = arch::time::rtc_init();
    x86_64::instructions::interrupts::enable();
    log::stage(
        "timers",
        format_args!(
            " tsc_hz={} tsc_deadline={} apic_hz={} wall_unix={}",
            arch::time::tsc_hz(),
            arch::apic::tsc_deadline(),
            arch::apic::apic_timer_hz(),
            unix.unwrap_or(0)
        ),
    );

    if let Some(kind) = config.fault {
        deliberate_fault(kind);
    }

    let devs = drivers::probe(config.mmio_devices());
    let names = devs.names.join(",");
    log::stage("devices", format_args!(" devices={names}"));
    entropy::init(&devs);
    let drivers::Devices { net: nic, blk, .. } = devs;
    if let Some((dev, irq)) = blk {
        blk::init(dev, irq);
    }
    start_network(config, nic, names);
    executor::run()
}

#[cfg(target_os = "none")]
fn start_network(
    config: &'static NodeConfig<'static>,
    nic: Option<(drivers::VTransport, drivers::Location, drivers::Irq)>,
    devices: alloc::string::String,
) {
    use skiff_node_config::NetMode;
    let Some((transport, loc, irq)) = nic else {
        if config.net != NetMode::None {
            error!(
                "devices",
                "no network device (use skiff.net=none to boot without one)"
            );
            exit(ExitCode::NoDevice);
        }
        return;
    };
    if config.net == NetMode::None {
        return;
    }
    let dev = match drivers::net::NetDevice::new(transport) {
        Ok(d) => d,
        Err(e) => {
            error!("devices", "virtio-net@{loc} init failed: {e:?}");
            exit(ExitCode::NoDevice);
        }
    };
    if let Some(pin) = irq.pin() {
        arch::apic::ioapic_enable(pin, matches!(irq, drivers::Irq::Level(_)));
    }
    net::init(dev, irq, config);
    let usable = BOOT.get().map_or(0, |b| b.memory.usable_bytes());
    executor::spawn(async move {
        core::future::poll_fn(|cx| net::UP.poll_notified(cx)).await;
        if let Some(port) = config.diag_port {
            diag::serve(
                port,
                diag::Ctx {
                    token: config.diag_token.map(|t| t.secret_str()),
                    devices,
                },
            );
        }
        node::start(config, usable);
    });
}

#[cfg(target_os = "none")]
fn deliberate_fault(kind: FaultKind) {
    warn!("skiff", "deliberate fault requested kind={kind:?}");
    match kind {
        // SAFETY: deliberately reads an unmapped address (the guard page
        // below the first stack) to exercise the page-fault report.
        FaultKind::Page => unsafe {
            core::ptr::read_volatile(0x0000_0080_0000_0000 as *const u64);
        },
        // SAFETY: `ud2` raises #UD on purpose; the handler never returns.
        FaultKind::InvalidOpcode => unsafe { core::arch::asm!("ud2") },
        FaultKind::Panic => panic!("deliberate panic (skiff.fault=panic)"),
        FaultKind::WriteText => {
            let code = deliberate_fault as *const () as *mut u8;
            // SAFETY: deliberately writes this function's first byte back
            // unchanged: W^X maps kernel text read-only, so the write
            // faults (and would change nothing if it did not).
            unsafe { core::ptr::write_volatile(code, core::ptr::read_volatile(code)) };
        }
        FaultKind::ExecHeap => {
            let ret = alloc::boxed::Box::new([0xc3u8; 16]); // `ret`
            // SAFETY: deliberately calls heap data that holds `ret`: W^X
            // maps the heap NX, so the instruction fetch faults (and would
            // just return if it did not).
            let f: extern "C" fn() = unsafe { core::mem::transmute(ret.as_ptr()) };
            f();
        }
        FaultKind::StackOverflow => {
            info!("skiff", "recursed {} frames", recurse(0));
        }
    }
}

/// Recurses until the stack's guard page faults (a 4 KiB frame each).
#[cfg(target_os = "none")]
fn recurse(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 512]);
    if depth == u64::MAX {
        return 0;
    }
    recurse(depth + 1) + core::hint::black_box(frame)[511]
}

#[cfg(target_os = "none")]
fn stage(name: &str) {
    log::stage(name, format_args!(""));
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // One line, as the log format requires (panic messages may span lines).
    let loc = info.location();
    log::log_unlocked(
        log::Level::Error,
        "panic",
        format_args!(
            "{} at {}:{}",
            info.message(),
            loc.map_or("?", |l| l.file()),
            loc.map_or(0, |l| l.line())
        ),
    );
    // Rust's alloc error handler panics from library/alloc: that is the
    // heap running out under an allocation that cannot fail.
    if loc.is_some_and(|l| l.file().ends_with("alloc/src/alloc.rs")) {
        arch::exit::exit_unlocked(ExitCode::OutOfMemory)
    }
    arch::exit::exit_unlocked(ExitCode::Panic)
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("skiff-kernel runs on x86_64-unknown-none: build it with `cargo xtask kernel`");
    std::process::exit(2);
}
