//! Busy loop: iterates a 64-bit mixing function. Arguments: iteration count
//! (0 or absent: forever) and how often to print progress (0: never). At the
//! end it prints the loop's time by the guest's monotonic clock
//! (`elapsed_ns N`), which `cargo xtask bench pods` compares across runtimes.
fn main() {
    let mut args = std::env::args().skip(1);
    let iterations: u64 = args.next().map_or(0, |a| a.parse().expect("iterations"));
    let report: u64 = args.next().map_or(0, |a| a.parse().expect("report interval"));
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut i: u64 = 0;
    let start = std::time::Instant::now();
    while iterations == 0 || i < iterations {
        // splitmix64 step: integer multiply/xor/shift, no memory traffic.
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= z ^ (z >> 31);
        i += 1;
        if report != 0 && i % report == 0 {
            println!("progress {i}");
        }
    }
    let elapsed = start.elapsed();
    println!("result {x:016x} after {i} iterations");
    println!("elapsed_ns {}", elapsed.as_nanos());
}
