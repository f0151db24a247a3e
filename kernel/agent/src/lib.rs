//! The Skiff node agent: everything between the node's TCP socket and its
//! kubelet core, without I/O, so the kernel and host tests run the same code.
//!
//! - [`identity`]: the node's P-256 key and its PKCS#10 CSR;
//! - [`tls`]: a TLS 1.3 client over rustls' unbuffered API (no_std), with
//!   [`crypto`]: a provider of just the algorithms the node uses
//!   (ChaCha20-Poly1305, X25519, ECDSA P-256) over RustCrypto;
//! - [`agent`]: the connection manager — token bootstrap, mutual-TLS
//!   sessions (hello, register, heartbeats, pods, the Service table of
//!   `skiff-proxy` shared with the kernel as [`Services`]), certificate rotation,
//!   reconnects with back-off and jitter — driving a [`skiff_kubelet::Kubelet`];
//! - [`artifacts`]: the node's cache of compiled wasm artifacts, fetched
//!   from the plane and checked against their digest;
//! - [`testrt`]: the built-in *test* runtime (scripted containers) that runs
//!   for `skiff.dev/testrt` images. It is labelled as such everywhere it shows;
//! - [`wasmrt`]: the wasm runtime over `skiff-wasm` (and [`wasmrt::NodeRuntime`],
//!   which dispatches between the two).
//!
//! Randomness comes from `getrandom` (the kernel registers its CSPRNG).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod agent;
pub mod artifacts;
pub mod crypto;
pub mod identity;
pub mod network_policy;
pub mod pod_addresses;
pub mod probe;
pub mod saved;
pub mod splice;
pub mod tls;
pub mod tunnels;

pub use agent::{
    Agent, AgentConfig, ConnectError, Credentials, Level, LinkError, Note, Phase, Services,
};
pub use identity::IdentityError;
pub use network_policy::NetworkPolicies;
pub use saved::SavedError;
pub mod testrt;
pub mod wasmrt;
