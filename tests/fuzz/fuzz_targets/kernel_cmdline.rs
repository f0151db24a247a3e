//! The node's kernel command line parser (`skiff-node-config`): arbitrary
//! lines must not panic, an accepted configuration stays within its bounds,
//! and neither the bootstrap token's secret nor the diag token shows in the
//! logged line, in `Debug` or in an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_node_config::fuzz::one(data));
