//! The reference Skiff's WASI 0.2 layer must not drift from: runs a command
//! component under wasmtime's own WASI implementation (`wasmtime-wasi`, what
//! `wasmtime run` uses) at the node's wasmtime version, with what a Skiff
//! pod gets: its arguments and environment, the network (TCP, UDP, name
//! lookup), stdout and stderr captured.
//!
//! Tests run a guest here and as a pod on a kernel node and compare the two
//! outputs. The `wasi` benchmark times [`Prepared::run`] (instantiate and
//! run, compiled once) and [`serve`] (a `wasi:http` handler served as
//! `wasmtime serve` serves it) against the node's runtime.

use std::net::SocketAddr;
use std::path::Path;

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::p2::bindings::sync::CommandPre;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

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
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs the `wasm32-wasip2` command component `wasm` with `args` (argv\[0\]
/// first) and `env`, to its end.
pub fn run(wasm: &[u8], args: &[&str], env: &[(&str, &str)]) -> Result<Output, Error> {
    Prepared::new(wasm)?.run(args, env)
}

/// [`run`] with host directories preopened read-write at guest paths, as
/// `wasmtime run --dir HOST::GUEST` does (a pod's emptyDir volumes).
pub fn run_with_dirs(
    wasm: &[u8],
    args: &[&str],
    env: &[(&str, &str)],
    dirs: &[(&Path, &str)],
) -> Result<Output, Error> {
    Prepared::new(wasm)?.run_in(args, env, dirs)
}

/// A command component compiled and linked once, run many times (each run
/// a fresh store and instance, as a pod's restart is).
pub struct Prepared {
    engine: Engine,
    pre: CommandPre<HttpCtx>,
}

impl Prepared {
    pub fn new(wasm: &[u8]) -> Result<Self, Error> {
        let engine = Engine::new(&Config::new()).map_err(Error::Wasmtime)?;
        let component = Component::new(&engine, wasm).map_err(Error::Wasmtime)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(Error::Wasmtime)?;
        // `wasmtime run -S http`: commands may send requests out.
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(Error::Wasmtime)?;
        let pre = linker
            .instantiate_pre(&component)
            .and_then(CommandPre::new)
            .map_err(Error::Wasmtime)?;
        Ok(Self { engine, pre })
    }

    /// Instantiates the component and runs `wasi:cli/run` to its end.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Result<Output, Error> {
        self.run_in(args, env, &[])
    }

    /// [`Self::run`] with `dirs` (host path, guest path) preopened.
    pub fn run_in(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        dirs: &[(&Path, &str)],
    ) -> Result<Output, Error> {
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
            &self.engine,
            HttpCtx {
                wasi,
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
            },
        );
        let command = self.pre.instantiate(&mut store).map_err(Error::Wasmtime)?;
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
}

/// A `wasi:http/incoming-handler` component served over HTTP/1.1 by
/// [`serve`] until dropped.
pub struct Server {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The state of one request's store.
struct HttpCtx {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
}

impl WasiView for HttpCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

/// Serves the `wasi:http/proxy` component `wasm` on `addr` as `wasmtime
/// serve` does: hyper's HTTP/1.1 server with keep-alive on a tokio
/// runtime of its own, compiled once, a new store and instance per request.
pub fn serve(wasm: &[u8], addr: SocketAddr) -> Result<Server, Error> {
    let engine = Engine::new(&Config::new()).map_err(Error::Wasmtime)?;
    let component = Component::new(&engine, wasm).map_err(Error::Wasmtime)?;
    let mut linker = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(Error::Wasmtime)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(Error::Wasmtime)?;
    let pre = linker
        .instantiate_pre(&component)
        .and_then(ProxyPre::new)
        .map_err(Error::Wasmtime)?;
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(listener) {
                Ok(l) => l,
                Err(e) => return eprintln!("wasi-reference serve: {e}"),
            };
            let accept = tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let pre = pre.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let pre = pre.clone();
                            async move { handle(pre, req).await }
                        });
                        // A client going away mid-request is its business.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .keep_alive(true)
                            .serve_connection(TokioIo::new(conn), service)
                            .await;
                    });
                }
            });
            let _ = stopped.await;
            accept.abort();
        });
    });
    Ok(Server {
        addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// One request: a fresh store and instance, run in a task of its own so
/// the body can stream after the head is sent (as `wasmtime serve` does).
async fn handle(
    pre: ProxyPre<HttpCtx>,
    req: hyper::Request<hyper::body::Incoming>,
) -> wasmtime::Result<hyper::Response<HyperOutgoingBody>> {
    let mut store = Store::new(
        pre.engine(),
        HttpCtx {
            wasi: WasiCtx::builder().build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
        },
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let req = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)?;
    let out = store.data_mut().http().new_response_outparam(sender)?;
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(store, req, out)
            .await
    });
    match receiver.await {
        Ok(Ok(resp)) => Ok(resp),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => {
            let e = match task.await {
                Ok(Ok(())) => wasmtime::format_err!("the handler set no response"),
                Ok(Err(e)) => e,
                Err(e) => e.into(),
            };
            Err(e.context("the handler set no response"))
        }
    }
}
