//! The diagnostic protocol (`skiff-diag`): the node parses request lines
//! from its network and the host parses responses. Arbitrary input must
//! not panic, what parses is written back as input that parses the same,
//! a logged line never shows a token, and a mutating request never passes
//! without the right token.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_diag::fuzz::one(data));
