//! The reference Skiff's WASI 0.2 layer must not drift from: runs a command
//! component under wasmtime's own WASI implementation (`wasmtime-wasi`, what
//! `wasmtime run` uses) at the node's wasmtime version, with what a Skiff
//! pod gets: its arguments and environment, the network (TCP, UDP, name
//! lookup), stdout and stderr captured.
//!
//! Tests run a guest here and as a pod on a kernel node and compare the two
//! outputs.

use std::path::Path;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Most output kept per stream.
const OUTPUT_LIMIT: usize = 16 << 20;

/// What a guest printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    /// 0 when `wasi:cli/run` returned ok, 1 when it returned an error, else
    /// the code passed to `wasi:cli/exit`; `None` when the guest trapped.
    pub code: Option<i32>,
    /// Why the guest trapped, if it did (a Rust panic is a trap).
    pub trap: Option<String>,
}

/// Why a component could not be run (the guest's own failures are in
/// [`Output`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("wasmtime: {0:#}")]
    Wasmtime(wasmtime::Error),
}

struct Ctx {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Ctx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Runs the `wasm32-wasip2` command component `wasm` with `args` (argv\[0\]
/// first) and `env`, to its end.
pub fn run(wasm: &[u8], args: &[&str], env: &[(&str, &str)]) -> Result<Output, Error> {
    run_with_dirs(wasm, args, env, &[])
}

/// [`run`] with host directories preopened read-write at guest paths, as
/// `wasmtime run --dir HOST::GUEST` does (a pod's emptyDir volumes).
pub fn run_with_dirs(
    wasm: &[u8],
    args: &[&str],
    env: &[(&str, &str)],
    dirs: &[(&Path, &str)],
) -> Result<Output, Error> {
    let engine = Engine::new(&Config::new()).map_err(Error::Wasmtime)?;
    let component = Component::new(&engine, wasm).map_err(Error::Wasmtime)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::Wasmtime)?;
    let stdout = MemoryOutputPipe::new(OUTPUT_LIMIT);
    let stderr = MemoryOutputPipe::new(OUTPUT_LIMIT);
    let mut wasi = WasiCtxBuilder::new();
    for (host, guest) in dirs {
        wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
            .map_err(Error::Wasmtime)?;
    }
    let wasi = wasi
        .args(args)
        .envs(env)
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .inherit_network()
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(true)
        .build();
    let mut store = Store::new(
        &engine,
        Ctx {
            wasi,
            table: ResourceTable::new(),
        },
    );
    let command = Command::instantiate(&mut store, &component, &linker).map_err(Error::Wasmtime)?;
    let (code, trap) = match command.wasi_cli_run().call_run(&mut store) {
        Ok(Ok(())) => (Some(0), None),
        Ok(Err(())) => (Some(1), None),
        Err(e) => match e.downcast_ref::<I32Exit>() {
            Some(I32Exit(code)) => (Some(*code), None),
            None => (None, Some(format!("{e:#}"))),
        },
    };
    let text = |pipe: &MemoryOutputPipe| String::from_utf8_lossy(&pipe.contents()).into_owned();
    Ok(Output {
        stdout: text(&stdout),
        stderr: text(&stderr),
        code,
        trap,
    })
}
