//! Allocates one `MIB`-MiB (default 16) vector (fresh memory from
//! `memory.grow`, untouched), waits `TOUCH_AFTER_MS` (default 0) ms, fills
//! it page by page (or with one memset if `FILL=1`) and checks it back, holds it `HOLD_MS` (default 0) ms, then
//! exits 0: a guest whose heap grows to that size and must run to
//! completion under a limit a little above it.
use std::time::Duration;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let mib = env("MIB", 16) as usize;
    // Reserved, not written: the allocator grows memory without touching it.
    let mut v: Vec<u8> = Vec::with_capacity(mib << 20);
    println!("allocated {mib} MiB");
    std::thread::sleep(Duration::from_millis(env("TOUCH_AFTER_MS", 0)));
    if env("FILL", 0) == 1 {
        // One memset (wasm `memory.fill`): the whole range in one
        // instruction, which no epoch check interrupts.
        v.resize(mib << 20, 0xab);
        assert!(v.chunks(4096).all(|p| p[0] == 0xab), "pages read back");
    } else {
        for i in 0..(mib << 20) / 4096 {
            v.extend(std::iter::repeat_n(i as u8, 4096));
        }
        let sum: u64 = v.chunks(4096).map(|p| u64::from(p[0])).sum();
        let want: u64 = (0..(mib << 20) / 4096).map(|i| u64::from(i as u8)).sum();
        assert_eq!(sum, want, "pages read back");
    }
    println!("built {mib} MiB");
    std::thread::sleep(Duration::from_millis(env("HOLD_MS", 0)));
    assert_ne!(v[4096], 0, "still there after holding it");
}
