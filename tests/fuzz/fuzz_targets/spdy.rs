//! SPDY/3.1 frames as `kubectl port-forward` sends them to the API server
//! (`skiff-spdy`'s decoder, header blocks inflated with SPDY's
//! dictionary): nothing panics, nothing allocates beyond the limits, and
//! every decoded frame re-encodes to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_spdy::fuzz::one(data));
