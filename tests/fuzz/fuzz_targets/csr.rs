//! The node gateway's CSR decoder and signer (`skiff-gateway::signer`),
//! which a bootstrap request with any valid token reaches: the first byte
//! picks the node name, the rest is the CSR's DER. Checks that nothing
//! panics and that whatever is signed is a client certificate for exactly
//! `system:node:<name>` in `system:nodes`, never for an invalid name.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_gateway::csr_fuzz::{self as fuzz, NodeSigner};

fuzz_target!(|data: &[u8]| {
    static SIGNER: OnceLock<NodeSigner> = OnceLock::new();
    fuzz::one(SIGNER.get_or_init(fuzz::signer), data);
});
