//! A TCP round-trip benchmark client (plain Rust std, `wasm32-wasip2`):
//! connects to `ADDR` (`host:port`), then `ROUNDS` times (default 1000)
//! sends `SIZE` bytes (default 1024) and reads as many back from an echo
//! server. Prints `connect_us=… rounds=… size=… elapsed_us=…`, the round
//! trips timed by the guest's own monotonic clock (connect excluded).
//! Exits 1 with the error if anything fails.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn var(key: &str, default: usize) -> usize {
    std::env::var(key).map_or(default, |v| v.parse().expect(key))
}

fn main() {
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "10.0.2.2:7".into());
    let rounds = var("ROUNDS", 1000);
    let size = var("SIZE", 1024);
    let t = Instant::now();
    let mut stream = TcpStream::connect(&addr).unwrap_or_else(|e| fail("connect", e));
    let connect_us = t.elapsed().as_micros();
    let request = vec![0x5au8; size];
    let mut reply = vec![0u8; size];
    let t = Instant::now();
    for _ in 0..rounds {
        stream
            .write_all(&request)
            .unwrap_or_else(|e| fail("send", e));
        stream
            .read_exact(&mut reply)
            .unwrap_or_else(|e| fail("receive", e));
    }
    let elapsed_us = t.elapsed().as_micros();
    assert!(reply == request, "the echo differs from the request");
    println!("connect_us={connect_us} rounds={rounds} size={size} elapsed_us={elapsed_us}");
}

fn fail(what: &str, e: std::io::Error) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1);
}
