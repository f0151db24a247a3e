//! The Skiff node kernel. Built for `x86_64-unknown-none` by `cargo xtask kernel`;
//! on the host this is an empty stub so workspace-wide commands stay simple.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("skiff-kernel runs on x86_64-unknown-none: build it with `cargo xtask kernel`");
    std::process::exit(2);
}
