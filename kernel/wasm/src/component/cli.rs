//! wasi:cli: arguments and environment, exit, and stdio (stdin is empty,
//! stdout and stderr go to [`Host::log`](crate::Host::log)); no terminals.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use wasmtime::component::Resource;
use wasmtime_wasi_io::bytes::Bytes;
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{
    DynInputStream, DynOutputStream, InputStream, OutputStream, StreamError, StreamResult,
};

use super::bindings::wasi::cli::{
    environment, exit, stderr, stdin, stdout, terminal_input, terminal_output, terminal_stderr,
    terminal_stdin, terminal_stdout,
};
use super::{Ctx, SharedHost};
use crate::host::Stream;
use crate::wasi::{MAX_GATHER, ProcExit};

impl environment::Host for Ctx {
    fn get_environment(&mut self) -> wasmtime::Result<Vec<(String, String)>> {
        Ok(self.env.clone())
    }

    fn get_arguments(&mut self) -> wasmtime::Result<Vec<String>> {
        Ok(self.args.clone())
    }

    /// None: volumes are preopened at their absolute mount paths, and
    /// wasi-libc (Rust std included) resolves relative paths against its
    /// own default of `/`, which is what a cwd of `/` would say anyway.
    fn initial_cwd(&mut self) -> wasmtime::Result<Option<String>> {
        Ok(None)
    }
}

/// Exiting unwinds the guest with [`ProcExit`], as preview 1's `proc_exit`.
impl exit::Host for Ctx {
    fn exit(&mut self, status: Result<(), ()>) -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(ProcExit(if status.is_ok() {
            0
        } else {
            1
        })))
    }

    fn exit_with_code(&mut self, status_code: u8) -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(ProcExit(i32::from(status_code))))
    }
}

impl stdin::Host for Ctx {
    fn get_stdin(&mut self) -> wasmtime::Result<Resource<DynInputStream>> {
        Ok(self.table.push(Box::new(Empty) as DynInputStream)?)
    }
}

impl stdout::Host for Ctx {
    fn get_stdout(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        log_stream(self, Stream::Stdout)
    }
}

impl stderr::Host for Ctx {
    fn get_stderr(&mut self) -> wasmtime::Result<Resource<DynOutputStream>> {
        log_stream(self, Stream::Stderr)
    }
}

fn log_stream(cx: &mut Ctx, stream: Stream) -> wasmtime::Result<Resource<DynOutputStream>> {
    let log = Log {
        stream,
        host: cx.host.clone(),
    };
    Ok(cx.table.push(Box::new(log) as DynOutputStream)?)
}

/// Stdin: a pod has none, so it is at its end from the start.
struct Empty;

#[wasmtime_wasi_io::async_trait]
impl Pollable for Empty {
    async fn ready(&mut self) {}
}

impl InputStream for Empty {
    fn read(&mut self, _size: usize) -> StreamResult<Bytes> {
        Err(StreamError::Closed)
    }
}

/// Stdout or stderr: always writable, [`MAX_GATHER`] bytes at a time like
/// one preview 1 `fd_write` (the permit also bounds what `write-zeroes`
/// makes the node allocate).
struct Log {
    stream: Stream,
    host: SharedHost,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for Log {
    async fn ready(&mut self) {}
}

impl OutputStream for Log {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > MAX_GATHER {
            return Err(StreamError::trap("write exceeds the check-write permit"));
        }
        self.host.lock().log(self.stream, &bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_GATHER)
    }
}

/// Pods have no terminal: every `get-terminal-*` answers none, so these
/// resources are never created.
impl terminal_input::Host for Ctx {}
impl terminal_input::HostTerminalInput for Ctx {
    fn drop(&mut self, rep: Resource<terminal_input::TerminalInput>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}
impl terminal_output::Host for Ctx {}
impl terminal_output::HostTerminalOutput for Ctx {
    fn drop(&mut self, rep: Resource<terminal_output::TerminalOutput>) -> wasmtime::Result<()> {
        self.table.delete(rep)?;
        Ok(())
    }
}
impl terminal_stdin::Host for Ctx {
    fn get_terminal_stdin(
        &mut self,
    ) -> wasmtime::Result<Option<Resource<terminal_input::TerminalInput>>> {
        Ok(None)
    }
}
impl terminal_stdout::Host for Ctx {
    fn get_terminal_stdout(
        &mut self,
    ) -> wasmtime::Result<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}
impl terminal_stderr::Host for Ctx {
    fn get_terminal_stderr(
        &mut self,
    ) -> wasmtime::Result<Option<Resource<terminal_output::TerminalOutput>>> {
        Ok(None)
    }
}
