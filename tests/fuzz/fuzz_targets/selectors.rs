//! Label and field selectors as the API server parses them
//! (`skiff-apiserver::selectors`): selector text from list/watch queries
//! and `metav1.LabelSelector` objects from aggregation rules (the first
//! byte picks which). Checks that nothing panics and that a selector that
//! asks for something never becomes the empty one that matches everything.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_apiserver::fuzz::selectors as fuzz;

fuzz_target!(|data: &[u8]| {
    static DOC: OnceLock<serde_json::Value> = OnceLock::new();
    fuzz::one(DOC.get_or_init(fuzz::object), data);
});
