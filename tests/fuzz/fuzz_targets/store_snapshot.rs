//! Store snapshot files (`skiff-store`), which `Store::restore` reads from
//! wherever an operator got them. The input is taken both as a whole file
//! and as a file body with its correct SHA-256 trailer appended, so the
//! record decoder is reached, not only the checksum. Nothing may panic or
//! allocate out of proportion to the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fuzz_target!(|data: &[u8]| {
    let _ = skiff_store::inspect_snapshot(data);
    let mut file = data.to_vec();
    file.extend_from_slice(&Sha256::digest(data));
    if let Ok(info) = skiff_store::inspect_snapshot(&file) {
        assert!(info.compacted <= info.revision);
        assert!(info.records as usize <= file.len());
    }
});
