//! Skiff's pod runtime: runs precompiled WebAssembly containers on wasmtime's
//! `runtime` (no compiler on the node) with WASI layers of our own: preview 1
//! for core modules, preview 2 (`wasi:cli/command`) for components, and
//! HTTP handler components (`wasi:http/proxy`: the runtime serves HTTP/1.1 on
//! the container's port and instantiates the component per request).
//!
//! - [`engine_config`]: the one `wasmtime::Config` shared by node and control
//!   plane; with feature `compile`, [`precompile`] builds node artifacts.
//! - [`Runtime`] loads artifacts into [`Image`]s and spawns [`Container`]s
//!   from a [`ContainerSpec`]; [`Container::step`] runs one time slice so the
//!   node's executor can interleave pods.
//! - [`Host`] is everything a container needs from the node (clocks,
//!   entropy, log sink, TCP); it knows nothing of either WASI ABI, so both
//!   layers share it. [`SERVED_INTERFACES`] lists the preview 2 interfaces
//!   components may import; they export [`RUN_EXPORT`] or
//!   [`HANDLER_EXPORT`].
//! - [`Volume`]: in-memory directories mounted into containers, preopened by
//!   both layers (preview 1 fds, preview 2 wasi:filesystem descriptors) over
//!   one implementation of each file operation.
#![no_std]

extern crate alloc;

mod component;
mod config;
mod container;
mod error;
mod fs;
#[cfg(feature = "fuzz")]
pub mod fuzz;
mod host;
mod wasi;

pub use component::{HANDLER_EXPORT, MAX_SOCKETS, RUN_EXPORT, SERVED_INTERFACES, http_limits};
pub use config::{FEATURES, FIBER_STACK, ISA_BASELINE, MAX_WASM_STACK, Target, engine_config};
#[cfg(feature = "compile")]
pub use config::{precompile, precompile_for};
pub use container::{Container, ContainerSpec, Image, ImageKind, Runtime, Step};
pub use error::Error;
pub use fs::{ENTRY_OVERHEAD, Volume};
pub use host::{ConnId, Host, LookupId, NetError, Shutdown, Stream, UdpId};
pub use wasi::{MAX_CONNECTIONS, MAX_FDS, MAX_SUBSCRIPTIONS, TABLE_ELEMENT_BYTES};
/// The wasmtime this crate is built on (the kernel needs its `Config`).
pub use wasmtime;
