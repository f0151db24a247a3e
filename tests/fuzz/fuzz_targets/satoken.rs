//! Service account tokens as the API server verifies them
//! (`skiff-apiserver::satoken`): arbitrary tokens and edits of a valid one
//! (the first byte picks which) must be refused, whatever their header
//! claims (`none`, HMAC); lifetimes at the edges must not overflow.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_apiserver::TokenKeys as Keys;
use skiff_apiserver::fuzz::satoken as fuzz;

fuzz_target!(|data: &[u8]| {
    static KEYS: OnceLock<(Keys, String)> = OnceLock::new();
    let (k, issued) = KEYS.get_or_init(fuzz::keys);
    fuzz::one(k, issued, data);
});
