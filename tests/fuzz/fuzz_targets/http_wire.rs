//! The HTTP/1.1 decoders of `wasi:http` pods (`skiff-wasm`): a connection's
//! requests as a handler pod's server reads them, or responses as the
//! outgoing handler reads them, arriving a few bytes at a time. Nothing may
//! panic and every body decodes to exactly its framed length (see
//! `skiff_wasm::fuzz::http_wire`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    skiff_wasm::fuzz::http_wire(data);
});
