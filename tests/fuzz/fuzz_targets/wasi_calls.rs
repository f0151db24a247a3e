//! The node's WASI preview 1 host layer (`skiff-wasm`): a guest makes the
//! calls a script (the input) names, with its pointers, lengths, fds and
//! flags, and grows memory and tables. Nothing may panic, no host call may
//! fail other than with an errno or an OOM kill, and every host allocation
//! for the guest stays within its limits (see `skiff_wasm::fuzz`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    skiff_wasm::fuzz::one(data);
});
