//! WASI preview 2: components running the `wasi:cli/command` world, or
//! serving HTTP in the `wasi:http/proxy` world ([`http`]; the same linker
//! and store data serve both).
//!
//! The bindings come from `bindgen!` over our copy of the WASI 0.2.12 WIT
//! (`wit/`, checked byte-identical to the pinned `wasip2` crate by
//! tests/wit.rs); streams and pollables are wasmtime-wasi-io's. Only the
//! interfaces in [`SERVED_INTERFACES`] are linked: a component importing any
//! other one is refused when it is compiled
//! ([`crate::Error::UnsupportedImports`]) and again when it is loaded, never
//! run against a stub.
//!
//! The node's [`Host`] is shared (`Arc<Mutex<..>>`) between the store data
//! and the stream and pollable objects, because wasi:io calls those with
//! only `&mut self`.

mod cli;
mod clocks;
mod filesystem;
mod http;
mod random;
mod sockets;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use wasmtime::ResourceLimiter;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi_io::IoView;

use crate::fs::Volume;
use crate::host::Host;
use crate::wasi::{Limits, MAX_FDS, Shared};

/// Generated from `wit/` (the `wasi:cli/command` world, 0.2.12). Every
/// import returns `wasmtime::Result` so a host call can trap (exit, a
/// resource table full). Interfaces outside [`SERVED_INTERFACES`] are
/// generated but never added to the linker.
#[allow(dead_code, clippy::all)]
mod bindings {
    wasmtime::component::bindgen!({
        path: "wit",
        world: "wasi:cli/command",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "wasi:io": wasmtime_wasi_io::bindings::wasi::io,
            "wasi:sockets/network.network": super::sockets::Network,
            "wasi:sockets/tcp.tcp-socket": super::sockets::TcpSocket,
            "wasi:sockets/udp.udp-socket": super::sockets::UdpSocket,
            "wasi:sockets/udp.incoming-datagram-stream": super::sockets::IncomingDatagramStream,
            "wasi:sockets/udp.outgoing-datagram-stream": super::sockets::OutgoingDatagramStream,
            "wasi:sockets/ip-name-lookup.resolve-address-stream": super::sockets::ResolveAddressStream,
            "wasi:filesystem/types.descriptor": crate::component::filesystem::Descriptor,
            "wasi:filesystem/types.directory-entry-stream":
                crate::component::filesystem::DirectoryEntryStream,
        },
        require_store_data_send: true,
    });
}

pub(crate) use bindings::CommandPre;
pub use http::HANDLER_EXPORT;
#[cfg(feature = "fuzz")]
pub(crate) use http::fuzz_wire;
pub use sockets::MAX_SOCKETS;
/// The bounds of the HTTP server an HTTP handler container runs.
pub mod http_limits {
    pub use super::http::IDLE_TIMEOUT_NS;
    pub use super::http::server::{MAX_HEAD, MAX_HEADERS, MAX_HTTP_CONNECTIONS, MAX_REQUEST_BODY};
}
pub(crate) use http::ProxyPre;
pub(crate) use http::server::Server;

/// The interfaces a component may import (any `0.2.x` version: wasmtime
/// links semver-compatible versions to our 0.2.12 definitions).
pub const SERVED_INTERFACES: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:http/types",
    "wasi:http/outgoing-handler",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// The interface a WASI 0.2 name (`wasi:cli/environment@0.2.3`) refers to;
/// `None` for any other version or an unversioned name.
fn wasi_0_2(name: &str) -> Option<&str> {
    let (interface, version) = name.split_once('@')?;
    version.starts_with("0.2.").then_some(interface)
}

/// Whether an import name (`wasi:cli/environment@0.2.3`) is served.
pub(crate) fn served(import: &str) -> bool {
    wasi_0_2(import).is_some_and(|i| SERVED_INTERFACES.contains(&i))
}

/// The export a command component runs as a container: the
/// `wasi:cli/command` world's entry point (any `0.2.x` version). The other
/// kind of component serves HTTP ([`HANDLER_EXPORT`]).
pub const RUN_EXPORT: &str = "wasi:cli/run";

/// Whether an export name (`wasi:http/incoming-handler@0.2.3`) makes the
/// component an HTTP handler.
pub(crate) fn is_handler_export(export: &str) -> bool {
    wasi_0_2(export) == Some(HANDLER_EXPORT)
}

/// What the compiler checks in a component before compiling it: the
/// top-level imports it needs that are not served, in import order, and
/// whether it exports [`RUN_EXPORT`] or [`HANDLER_EXPORT`]. Imports of nested components and core
/// modules are satisfied inside the component, so only depth 1 counts.
/// Parse errors are left to validation (and end the walk).
#[cfg(feature = "compile")]
pub(crate) struct Surface {
    pub unserved: Vec<String>,
    pub runs: bool,
    pub handles: bool,
}

#[cfg(feature = "compile")]
pub(crate) fn surface(wasm: &[u8]) -> Surface {
    use wasmparser::{Parser, Payload};
    let mut depth = 0usize;
    let mut surface = Surface {
        unserved: Vec::new(),
        runs: false,
        handles: false,
    };
    for payload in Parser::new(0).parse_all(wasm) {
        let Ok(payload) = payload else { break };
        match payload {
            // Every module or component, nested or not, starts with its
            // version and ends with `End`.
            Payload::Version { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(imports) if depth == 1 => {
                for import in imports {
                    let Ok(import) = import else { break };
                    if !served(import.name.name) {
                        surface.unserved.push(import.name.name.into());
                    }
                }
            }
            Payload::ComponentExportSection(exports) if depth == 1 => {
                for export in exports {
                    let Ok(export) = export else { break };
                    surface.runs |= wasi_0_2(export.name.name) == Some(RUN_EXPORT);
                    surface.handles |= is_handler_export(export.name.name);
                }
            }
            _ => {}
        }
    }
    surface
}

/// The node's side of a container, shared with its streams and pollables.
pub(crate) type SharedHost = Arc<spin::Mutex<Box<dyn Host>>>;

/// A component container's store data.
pub(crate) struct Ctx {
    /// Resources handed to the guest (streams, pollables, descriptors); at
    /// most [`MAX_FDS`] live at once, like preview 1's fds.
    pub table: ResourceTable,
    pub host: SharedHost,
    /// Preopened at their mount paths, in this order.
    pub volumes: Vec<Volume>,
    /// The paths descriptors and their streams keep, each charged to
    /// `limits` until nothing else holds it (see `filesystem`).
    pub paths: Vec<Arc<Vec<String>>>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// The container's TCP ports: the only ones it may listen on.
    pub ports: Vec<u16>,
    pub limits: Limits,
    pub shared: Arc<Shared>,
    pub seen_slice: u64,
    /// The HTTP request this store answers (HTTP handlers only).
    pub http: http::Exchange,
}

impl Ctx {
    pub fn new(
        host: Box<dyn Host>,
        args: Vec<String>,
        env: Vec<(String, String)>,
        ports: Vec<u16>,
        volumes: Vec<Volume>,
        limits: Limits,
        shared: Arc<Shared>,
    ) -> Self {
        let host = Arc::new(spin::Mutex::new(host));
        Self::with_host(host, args, env, ports, volumes, limits, shared)
    }

    /// A store's data on a host other stores share (an HTTP handler's
    /// requests).
    pub fn with_host(
        host: SharedHost,
        args: Vec<String>,
        env: Vec<(String, String)>,
        ports: Vec<u16>,
        volumes: Vec<Volume>,
        limits: Limits,
        shared: Arc<Shared>,
    ) -> Self {
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_FDS);
        Self {
            table,
            host,
            volumes,
            paths: Vec::new(),
            args,
            env,
            ports,
            limits,
            shared,
            seen_slice: 0,
            http: http::Exchange::default(),
        }
    }
}

impl IoView for Ctx {
    fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }
}

/// The same limits as preview 1 ([`Limits`]); a component's core memories
/// and tables all count.
impl ResourceLimiter for Ctx {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let mut host = self.host.lock();
        self.limits.memory_growing(&mut **host, current, desired)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(self.limits.oom_kill())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let mut host = self.host.lock();
        self.limits.table_growing(&mut **host, current, desired)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(self.limits.oom_kill())
    }
}

/// Adds the interfaces in [`SERVED_INTERFACES`] (and only those) to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    use bindings::wasi::{cli, clocks, filesystem, random, sockets};
    wasmtime_wasi_io::add_to_linker_async(linker)?;
    cli::environment::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::exit::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::stdin::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::stdout::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::stderr::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::terminal_input::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::terminal_output::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::terminal_stdin::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::terminal_stdout::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    cli::terminal_stderr::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    clocks::monotonic_clock::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    clocks::wall_clock::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    filesystem::types::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    filesystem::preopens::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    random::random::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    random::insecure::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    random::insecure_seed::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    sockets::network::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, &Default::default(), get)?;
    sockets::instance_network::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    sockets::tcp::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    sockets::tcp_create_socket::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    sockets::udp::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    sockets::udp_create_socket::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    sockets::ip_name_lookup::add_to_linker::<Ctx, HasSelf<Ctx>>(linker, get)?;
    http::add_to_linker(linker)?;
    Ok(())
}

/// The store data is the host for every interface.
fn get(cx: &mut Ctx) -> &mut Ctx {
    cx
}
