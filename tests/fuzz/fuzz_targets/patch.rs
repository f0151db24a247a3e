//! Patches as the API server applies them (`skiff-apiserver::patch`): JSON
//! merge, JSON patch, strategic merge, server-side apply and YAML bodies
//! (the first byte picks which) over a fixed object. Checks that nothing
//! panics and that every accepted result stays within the bounds: nesting
//! the server can read back, JSON that decodes to itself, a size in
//! proportion to the object and the patch.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_apiserver::fuzz::patch as fuzz;

fuzz_target!(|data: &[u8]| {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    fuzz::one(DOC.get_or_init(fuzz::object), data);
});
