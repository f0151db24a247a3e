//! Recurses without bound on the wasm stack: wasmtime's stack limit must
//! stop it with a trap ("call stack exhausted") long before the fiber
//! stack's guard page. Nothing here lives in linear memory (no address
//! taken), so the shadow stack that Rust keeps there never runs out first.
#[inline(never)]
fn deeper(n: u64) -> u64 {
    if n == 0 {
        return 1;
    }
    // Work after the call: no tail call, no accumulator loop.
    deeper(n - 1).rotate_left(7) ^ n
}

fn main() {
    println!("recursing without bound");
    // Not a constant, so the depth cannot be folded away.
    let n = u64::MAX - std::env::args().count() as u64;
    println!("{}", deeper(n));
}
