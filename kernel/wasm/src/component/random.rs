//! wasi:random: every flavour draws from the node's secure source
//! ([`Host::random`](crate::Host::random)).

use alloc::vec;
use alloc::vec::Vec;

use super::Ctx;
use super::bindings::wasi::random::{insecure, insecure_seed, random};

/// Most bytes one call returns; a larger request traps instead of making
/// the node allocate it (the guest asks with a 64-bit length).
pub const MAX_RANDOM_BYTES: u64 = 1 << 20;

impl Ctx {
    fn random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > MAX_RANDOM_BYTES {
            wasmtime::bail!("{len} random bytes requested; at most {MAX_RANDOM_BYTES} per call");
        }
        let mut buf = vec![0; len as usize];
        self.host.lock().random(&mut buf);
        Ok(buf)
    }

    fn random_u64(&mut self) -> u64 {
        let mut buf = [0; 8];
        self.host.lock().random(&mut buf);
        u64::from_le_bytes(buf)
    }
}

impl random::Host for Ctx {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.random_bytes(len)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.random_u64())
    }
}

impl insecure::Host for Ctx {
    fn get_insecure_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        self.random_bytes(len)
    }

    fn get_insecure_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(self.random_u64())
    }
}

impl insecure_seed::Host for Ctx {
    fn insecure_seed(&mut self) -> wasmtime::Result<(u64, u64)> {
        Ok((self.random_u64(), self.random_u64()))
    }
}
