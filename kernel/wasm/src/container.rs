//! Loading artifacts and running containers in time slices.
//!
//! Preemption: wasmtime can only suspend a running guest and resume it later
//! on a fiber (its `async` support; a trap would unwind the instance). So a
//! container's whole life (instantiate, `_start`) is one future, polled once
//! per [`Container::step`] with a no-op waker. Generated code checks the
//! engine's epoch counter (advanced by the node's timer through
//! [`Runtime::tick`]); at the deadline our callback either grants the budget
//! of a new step or yields the fiber, which ends the step with
//! [`Step::Running`]. Blocking WASI calls suspend the same way and report
//! [`Step::Blocked`] so the executor can park the container.
//!
//! Core modules run `_start` under our preview 1 layer; components run their
//! `wasi:cli/run` export under the preview 2 layer; an HTTP handler's future
//! is a server that makes a store per request (`component/http/server.rs`).
//! All use the same store set-up (epoch slices, memory limits), so
//! scheduling and OOM kills do not depend on the kind.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::Ordering;
use core::task::{Context, Poll, Waker};

use wasmtime::component::Component;
use wasmtime::{
    Config, Engine, InstancePre, Linker, Module, Precompiled, ResourceLimiter, Store,
    UpdateDeadline,
};

use crate::Error;
use crate::component::{self, CommandPre, ProxyPre, Server};
use crate::fs::Volume;
use crate::host::Host;
use crate::wasi::{self, Ctx, Fd, Limits, MemoryLimitExceeded, Meter, ProcExit, Shared};

/// One engine (shared by all pods of a node) and the WASI linkers.
pub struct Runtime {
    engine: Engine,
    linker: Linker<Ctx>,
    components: wasmtime::component::Linker<component::Ctx>,
}

/// A loaded, linked module or component: spawn containers from it cheaply.
#[derive(Clone)]
pub struct Image {
    pre: Pre,
}

#[derive(Clone)]
enum Pre {
    Module(InstancePre<Ctx>),
    Component(CommandPre<component::Ctx>),
    Http(ProxyPre<component::Ctx>),
}

/// What an [`Image`] holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// A core module run under WASI preview 1 (`_start`).
    Module,
    /// A component run under WASI preview 2 (`wasi:cli/run`).
    Component,
    /// A component exporting `wasi:http/incoming-handler` (the
    /// `wasi:http/proxy` world): an HTTP server on its one containerPort,
    /// one fresh instance per request.
    HttpHandler,
}

impl Image {
    pub fn kind(&self) -> ImageKind {
        match self.pre {
            Pre::Module(_) => ImageKind::Module,
            Pre::Component(_) => ImageKind::Component,
            Pre::Http(_) => ImageKind::HttpHandler,
        }
    }
}

/// What a container gets: the compact pod spec's view of one container.
#[derive(Debug, Clone, Default)]
pub struct ContainerSpec {
    /// argv, including argv\[0\] (the container name by convention).
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Linear memory limit in bytes (`resources.limits.memory`).
    pub memory_limit: usize,
    /// Preopened at fd 3, 4, … in this order, at their mount paths.
    pub volumes: Vec<Volume>,
    /// TCP containerPorts. A module gets a listening socket each, preopened
    /// after the volumes (fd 3 when there are no volumes; directories come
    /// first because wasi-libc stops scanning preopens at the first fd that
    /// is not one). A command component gets the volumes as wasi:filesystem
    /// preopens and may bind and listen on these ports (wasi:sockets). An
    /// HTTP handler takes exactly one port, which the runtime serves for it.
    pub ports: Vec<u16>,
}

/// The result of one [`Container::step`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The slice ended with the guest still runnable.
    Running,
    /// The guest waits for socket I/O or, if `until` is set, at most until
    /// that monotonic time ([`Host::monotonic_ns`]). Step it again when
    /// either may have happened.
    Blocked { until: Option<u64> },
    /// `_start` returned (code 0), `wasi:cli/run` returned (0 for ok, 1 for
    /// error), or the guest called `proc_exit` or `wasi:cli/exit`.
    Exited(i32),
    /// The guest trapped (or the module could not be instantiated).
    Trapped(String),
    /// The guest went over its memory limit and was killed.
    OutOfMemory,
}

impl Step {
    pub fn is_finished(&self) -> bool {
        !matches!(self, Step::Running | Step::Blocked { .. })
    }
}

type Run = Pin<Box<dyn Future<Output = Step> + Send>>;

/// A running (or finished) container.
pub struct Container {
    run: Option<Run>,
    shared: Arc<Shared>,
    finished: Option<Step>,
    meter: Meter,
}

impl Runtime {
    /// Builds the engine from [`crate::engine_config`] (plus any kernel-only
    /// additions the caller made to it).
    pub fn new(config: &Config) -> Result<Self, Error> {
        let engine = Engine::new(config).map_err(|e| Error::Engine(format!("{e}")))?;
        let mut linker = Linker::new(&engine);
        wasi::add_to_linker(&mut linker).map_err(|e| Error::Engine(format!("{e}")))?;
        let mut components = wasmtime::component::Linker::new(&engine);
        component::add_to_linker(&mut components).map_err(|e| Error::Engine(format!("{e}")))?;
        Ok(Self {
            engine,
            linker,
            components,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Advances the epoch by one tick: call it from the node's timer. Safe
    /// from interrupt context (one atomic add).
    pub fn tick(&self) {
        self.engine.increment_epoch();
    }

    /// Loads an artifact made by [`crate::precompile`] for this runtime's
    /// configuration: a module or a component.
    pub fn load(&self, artifact: &[u8]) -> Result<Image, Error> {
        match Engine::detect_precompiled(artifact) {
            Some(Precompiled::Module) => {}
            Some(Precompiled::Component) => return self.load_component(artifact),
            None if artifact.starts_with(b"\0asm") => {
                return Err(Error::Artifact(
                    "this is raw WebAssembly; nodes only run precompiled modules".into(),
                ));
            }
            None => return Err(Error::Artifact("not a precompiled wasmtime module".into())),
        }
        // SAFETY: artifacts come only from Skiff's own compiler (the control
        // plane's image service, over mutual TLS, digest-checked), i.e. they
        // are wasmtime's output for this exact wasmtime. wasmtime itself
        // checks the header (version, target, ISA flags, tunables, features)
        // and the ELF structure, so mismatched or truncated input is an error.
        let module = unsafe { Module::deserialize(&self.engine, artifact) }
            .map_err(|e| Error::Artifact(format!("{e:?}")))?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| Error::Link(format!("{e:?}")))?;
        Ok(Image {
            pre: Pre::Module(pre),
        })
    }

    fn load_component(&self, artifact: &[u8]) -> Result<Image, Error> {
        // SAFETY: as for modules in `load`: our compiler's output for this
        // wasmtime, whose header and structure wasmtime checks.
        let component = unsafe { Component::deserialize(&self.engine, artifact) }
            .map_err(|e| Error::Artifact(format!("{e:?}")))?;
        // The compiler refused these already; say so again rather than
        // report a bare link error for an artifact made elsewhere.
        let ty = component.component_type();
        let unserved: Vec<String> = ty
            .imports(&self.engine)
            .filter(|(name, _)| !component::served(name))
            .map(|(name, _)| name.into())
            .collect();
        if !unserved.is_empty() {
            return Err(Error::UnsupportedImports(unserved));
        }
        let link = |e: wasmtime::Error| Error::Link(format!("{e:?}"));
        let pre = self.components.instantiate_pre(&component).map_err(link)?;
        // A handler built as a Rust binary also exports `wasi:cli/run`
        // (its empty `main`): serving is what it is for.
        let handles = ty
            .exports(&self.engine)
            .any(|(name, _)| component::is_handler_export(name));
        let pre = if handles {
            Pre::Http(ProxyPre::new(pre).map_err(link)?)
        } else {
            Pre::Component(CommandPre::new(pre).map_err(link)?)
        };
        Ok(Image { pre })
    }

    /// Creates a container; nothing runs until the first [`Container::step`].
    pub fn spawn(
        &self,
        image: &Image,
        spec: ContainerSpec,
        host: Box<dyn Host>,
    ) -> Result<Container, Error> {
        if spec.memory_limit == 0 {
            return Err(Error::Spec("memory limit must be positive".into()));
        }
        // C guests see NUL-terminated strings and `KEY=VALUE` pairs.
        let env_strings = spec.env.iter().flat_map(|(k, v)| [k, v]);
        if let Some(bad) = spec
            .args
            .iter()
            .chain(env_strings)
            .find(|s| s.contains('\0'))
        {
            return Err(Error::Spec(format!("{bad:?} contains a NUL byte")));
        }
        if let Some((bad, _)) = spec
            .env
            .iter()
            .find(|(k, _)| k.is_empty() || k.contains('='))
        {
            return Err(Error::Spec(format!(
                "bad environment variable name {bad:?}"
            )));
        }
        let shared = Arc::new(Shared::default());
        let limits = Limits::new(spec.memory_limit);
        let meter = limits.meter();
        let run: Run = match &image.pre {
            Pre::Module(pre) => {
                let ctx = module_ctx(spec, host, limits, shared.clone());
                let mut store = new_store(&self.engine, ctx);
                let pre = pre.clone();
                Box::pin(async move {
                    let result = async {
                        let instance = pre.instantiate_async(&mut store).await?;
                        let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
                        start.call_async(&mut store, ()).await.map(|()| 0)
                    }
                    .await;
                    outcome(result, store.data().limits.oom)
                })
            }
            Pre::Component(pre) => {
                let ctx = component::Ctx::new(
                    host,
                    spec.args,
                    spec.env,
                    spec.ports,
                    spec.volumes,
                    limits,
                    shared.clone(),
                );
                let mut store = new_store(&self.engine, ctx);
                let pre = pre.clone();
                Box::pin(async move {
                    let result = async {
                        let command = pre.instantiate_async(&mut store).await?;
                        let run = command.wasi_cli_run().call_run(&mut store).await?;
                        Ok(if run.is_ok() { 0 } else { 1 })
                    }
                    .await;
                    outcome(result, store.data().limits.oom)
                })
            }
            Pre::Http(pre) => {
                let &[port] = spec.ports.as_slice() else {
                    return Err(Error::Spec(
                        "an HTTP handler component serves exactly one containerPort".into(),
                    ));
                };
                if !spec.volumes.is_empty() {
                    return Err(Error::Unsupported(
                        "volumes for components (WASI preview 2)",
                    ));
                }
                let server = Server {
                    engine: self.engine.clone(),
                    pre: pre.clone(),
                    port,
                    host: Arc::new(spin::Mutex::new(host)),
                    shared: shared.clone(),
                    limits,
                    args: spec.args,
                    env: spec.env,
                };
                Box::pin(server.run())
            }
        };
        Ok(Container {
            run: Some(run),
            shared,
            finished: None,
            meter,
        })
    }
}

/// The preview 1 store data: fds 0–2 are stdio, then the volumes, then the
/// listening ports.
fn module_ctx(
    spec: ContainerSpec,
    host: Box<dyn Host>,
    limits: Limits,
    shared: Arc<Shared>,
) -> Ctx {
    let mut fds: Vec<Option<Fd>> = wasi::stdio().into_iter().map(Some).collect();
    for (vol, _) in spec.volumes.iter().enumerate() {
        fds.push(Some(Fd::Dir {
            vol,
            path: Vec::new(),
            preopen: true,
        }));
    }
    for &port in &spec.ports {
        fds.push(Some(Fd::Listener {
            port,
            nonblock: false,
        }));
    }
    Ctx {
        args: spec.args.into_iter().map(String::into_bytes).collect(),
        env: spec
            .env
            .into_iter()
            .map(|(k, v)| format!("{k}={v}").into_bytes())
            .collect(),
        fds,
        volumes: spec.volumes,
        host,
        limits,
        shared,
        seen_slice: 0,
    }
}

/// What the store set-up needs from either layer's store data.
pub(crate) trait Sliced: ResourceLimiter + Send + 'static {
    /// The state shared with [`Container::step`] and the last slice number
    /// the epoch callback saw.
    fn slicing(&mut self) -> (&Shared, &mut u64);
}

impl Sliced for Ctx {
    fn slicing(&mut self) -> (&Shared, &mut u64) {
        (&self.shared, &mut self.seen_slice)
    }
}

impl Sliced for component::Ctx {
    fn slicing(&mut self) -> (&Shared, &mut u64) {
        (&self.shared, &mut self.seen_slice)
    }
}

/// A store whose guest runs in slices: memory limits through the store
/// data's `ResourceLimiter`, and the epoch callback granting each step its
/// budget.
pub(crate) fn new_store<T: Sliced>(engine: &Engine, data: T) -> Store<T> {
    let mut store = Store::new(engine, data);
    store.limiter(|ctx| ctx);
    store.epoch_deadline_callback(|mut store| {
        let (shared, seen_slice) = store.data_mut().slicing();
        let slice = shared.slice.load(Ordering::Relaxed);
        if slice != *seen_slice {
            // This store's first check in a new step: the ticks since its
            // last deadline were spent elsewhere.
            *seen_slice = slice;
        } else {
            shared.used.fetch_add(1, Ordering::Relaxed);
        }
        // A tick at a time, counted for the container: the stores of an
        // HTTP handler's requests in flight share one budget per step.
        if shared.used.load(Ordering::Relaxed) < shared.budget.load(Ordering::Relaxed) {
            Ok(UpdateDeadline::Continue(1))
        } else {
            // Budget used up: end this step. The deadline set here may
            // have passed when the next step resumes us; that only
            // brings us straight back here to take the new budget.
            // The guest is runnable, whatever a pollable that was not
            // ready recorded during a wasi:io `poll` that returned anyway
            // (another one was ready): the step must say Running.
            shared.runnable();
            Ok(UpdateDeadline::Yield(1))
        }
    });
    // Enter the callback at the first check so the first step's budget
    // applies.
    store.set_epoch_deadline(0);
    store
}

/// Maps how the guest ended (its exit code, or why not) to a [`Step`].
pub(crate) fn outcome(result: wasmtime::Result<i32>, oom: bool) -> Step {
    match result {
        Ok(code) => Step::Exited(code),
        Err(e) => {
            if let Some(ProcExit(code)) = e.downcast_ref::<ProcExit>() {
                Step::Exited(*code)
            } else if oom || e.is::<MemoryLimitExceeded>() {
                Step::OutOfMemory
            } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
                Step::Trapped(trap.to_string())
            } else {
                // A host call's own error (not the wasm backtrace context
                // wasmtime wraps it in) says what went wrong.
                Step::Trapped(format!("{}", e.root_cause()))
            }
        }
    }
}

impl Container {
    /// Memory charged to the container's limit now: its working set (0
    /// once it has ended).
    pub fn memory_used(&self) -> usize {
        self.meter.bytes()
    }

    /// Runs the guest for about `budget` epoch ticks (or until it blocks or
    /// ends). After the end, returns the final outcome again.
    pub fn step(&mut self, budget: u64) -> Step {
        // wasmtime adds the budget to the current epoch unchecked.
        let budget = budget.clamp(1, 1 << 48);
        if let Some(done) = &self.finished {
            return done.clone();
        }
        let Some(run) = self.run.as_mut() else {
            unreachable!("a container without a future has finished");
        };
        self.shared.budget.store(budget, Ordering::Relaxed);
        self.shared.used.store(0, Ordering::Relaxed);
        self.shared.slice.fetch_add(1, Ordering::Relaxed);
        self.shared.runnable();
        let mut cx = Context::from_waker(Waker::noop());
        match run.as_mut().poll(&mut cx) {
            Poll::Ready(step) => {
                // Dropping the future drops the store: memory and sockets go.
                self.run = None;
                self.finished = Some(step.clone());
                step
            }
            Poll::Pending => match self.shared.waiting() {
                Some(until) => Step::Blocked {
                    until: (until != u64::MAX).then_some(until),
                },
                None => Step::Running,
            },
        }
    }
}
