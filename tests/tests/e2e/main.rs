//! The end-to-end suite: the real kernel in real QEMU, the real control
//! plane, real clients. One test binary (each file a module) rather than one
//! per file: every binary links the plane, wasmtime and the clients, and
//! twenty-two of them outgrew a CI machine's disk. One process also makes
//! `exclusive()` (timing tests) exclusive across the whole suite.
//!
//! Run one module: `cargo test -p skiff-e2e --test e2e wasm_pods::`.

mod agent;
mod bad_input;
mod blk;
mod boot;
mod diag;
mod fault;
mod gateway_tls;
mod grub;
mod icmp;
mod kept_credentials;
mod network_policy;
mod node_heal;
mod node_join;
mod node_memory;
mod node_ports;
mod pod_network;
mod port_forward;
mod segment;
mod services;
mod timer;
mod wasm_pods;
mod wx;
