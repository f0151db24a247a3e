//! Tries to take more than its share of the node, one way after another,
//! and says how each attempt ended: open files until refused (in `DIR`,
//! default `/scratch`), flood its log with gathered writes that repeat one
//! buffer, spin on host calls for `SPIN_MS` (default 3000) ms, then grow its
//! memory until it is killed.
use std::fs::File;
use std::io::{IoSlice, Write};
use std::time::{Duration, Instant};

fn main() {
    let dir = std::env::var("DIR").unwrap_or_else(|_| "/scratch".into());
    let mut files = Vec::new();
    let err = loop {
        match File::create(format!("{dir}/f{}", files.len() % 8)) {
            Ok(f) => files.push(f),
            Err(e) => break e,
        }
    };
    let fds = format!(
        "fds: {} opened, then errno {}",
        files.len(),
        err.raw_os_error().unwrap_or(-1)
    );
    println!("{fds}");
    drop(files);

    // 1024 slices of one 64 KiB buffer: 64 MiB asked per call.
    let chunk = vec![b'.'; 64 << 10];
    let slices = vec![IoSlice::new(&chunk); 1024];
    let mut out = std::io::stdout().lock();
    let (mut calls, mut written) = (0u64, 0usize);
    while written < 16 << 20 {
        written += out.write_vectored(&slices).unwrap_or(0);
        calls += 1;
    }
    drop(out);
    // Again after the flood, which a bounded log drops the start of; after
    // a pause, or the node's full output queue would drop this line too.
    std::thread::sleep(Duration::from_millis(500));
    println!("\nlog flood: {written} bytes in {calls} calls\n{fds}");

    let spin = Duration::from_millis(
        std::env::var("SPIN_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000),
    );
    let (t0, mut n) = (Instant::now(), 0u64);
    while t0.elapsed() < spin {
        n += 1; // every elapsed() is a clock_time_get host call
    }
    println!("spin: {n} host calls");

    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut c = vec![0u8; 1 << 20];
        for page in c.chunks_mut(4096) {
            page[0] = 1;
        }
        chunks.push(c);
        println!("allocated {} MiB", chunks.len());
    }
}
