//! WASI preview 1 host functions over `Linker::func_wrap` (wasmtime-wasi
//! needs std). Each call gets the guest's memory and the container's
//! [`Ctx`]; every guest pointer and length goes through [`Mem`], which
//! bounds-checks it. Calls that may block (socket I/O, `poll_oneoff`,
//! `sched_yield`) are async host functions: returning `Pending` suspends the
//! guest's fiber and `Container::step` reports why.

mod abi;
mod files;
mod misc;
mod net;

use alloc::boxed::Box;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use core::task::Poll;

use wasmtime::{Caller, Extern, Linker, ResourceLimiter};

use crate::fs::Volume;
use crate::host::{ConnId, Host, Stream};
pub(crate) use abi::Errno;

const MODULE: &str = "wasi_snapshot_preview1";

/// `proc_exit` unwinds the guest with this error.
#[derive(Debug)]
pub(crate) struct ProcExit(pub i32);

impl core::fmt::Display for ProcExit {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "guest exited with code {}", self.0)
    }
}
impl core::error::Error for ProcExit {}

/// The memory limit was hit: the guest is killed, like a cgroup OOM kill.
#[derive(Debug)]
pub(crate) struct MemoryLimitExceeded;

impl core::fmt::Display for MemoryLimitExceeded {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("container memory limit exceeded")
    }
}
impl core::error::Error for MemoryLimitExceeded {}

/// State the running (fiber-owned) store and `Container::step` both see.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// Bumped by every `step`; the epoch callback grants a fresh budget when
    /// it sees a new value.
    pub slice: AtomicU64,
    /// Epoch ticks per slice, for all the container's stores together.
    pub budget: AtomicU64,
    /// Ticks the container's stores used in this step.
    pub used: AtomicU64,
    /// Set when the guest is suspended in a blocking call (not a time-slice
    /// yield), with the monotonic deadline that ends the wait (`u64::MAX`:
    /// only I/O can).
    pub blocked: AtomicBool,
    pub wake_at: AtomicU64,
}

impl Shared {
    /// Records that the guest is about to be suspended waiting, until
    /// `until` at the latest (`None`: only I/O ends the wait). Several
    /// waits recorded before the step ends (pollables in one wasi:io
    /// `poll`) keep the earliest deadline.
    pub fn block(&self, until: Option<u64>) {
        self.wake_at
            .fetch_min(until.unwrap_or(u64::MAX), Ordering::Relaxed);
        self.blocked.store(true, Ordering::Relaxed);
    }

    /// Forgets any recorded wait: the guest is runnable (a new step starts,
    /// or the epoch yields it mid-slice).
    pub fn runnable(&self) {
        self.blocked.store(false, Ordering::Relaxed);
        self.wake_at.store(u64::MAX, Ordering::Relaxed);
    }

    /// The wait recorded since the last [`Shared::runnable`]: `None` if the
    /// guest is runnable, else its deadline (`u64::MAX`: only I/O ends it).
    pub fn waiting(&self) -> Option<u64> {
        self.blocked
            .load(Ordering::Relaxed)
            .then(|| self.wake_at.load(Ordering::Relaxed))
    }
}

/// An open file descriptor.
#[derive(Debug)]
pub(crate) enum Fd {
    Stdin,
    Log(Stream),
    Dir {
        vol: usize,
        path: Vec<String>,
        preopen: bool,
    },
    File {
        vol: usize,
        path: Vec<String>,
        pos: u64,
        read: bool,
        write: bool,
        append: bool,
    },
    Listener {
        port: u16,
        nonblock: bool,
    },
    Conn {
        id: ConnId,
        nonblock: bool,
    },
}

/// The container's memory limit covers its linear memories, its tables,
/// its open fds and its sockets: all live in the node's heap. One limit
/// covers every store of the container (an HTTP handler's requests in
/// flight each have one): they share `held` and `sockets`, and each store's
/// `Limits` keeps its own part to give back when the store is dropped.
#[derive(Debug)]
pub(crate) struct Limits {
    pub memory: usize,
    /// Bytes of memories, tables and fds of all the stores sharing the limit.
    held: Arc<AtomicUsize>,
    /// Node sockets the container holds now, [`SOCKET_BYTES`] each; shared
    /// with the socket objects, which give theirs back when dropped.
    pub sockets: Arc<AtomicUsize>,
    /// This store's part of `held`: linear memory (all of a component's
    /// core memories), tables at [`TABLE_ELEMENT_BYTES`] an element, and the
    /// fds opened by calls ([`fd_cost`]).
    memory_used: usize,
    table_bytes: usize,
    fd_bytes: usize,
    pub oom: bool,
}

impl Limits {
    /// The limits of a container holding nothing yet.
    pub fn new(memory: usize) -> Self {
        Self::with(memory, Arc::default(), Arc::default())
    }

    fn with(memory: usize, held: Arc<AtomicUsize>, sockets: Arc<AtomicUsize>) -> Self {
        Self {
            memory,
            held,
            sockets,
            memory_used: 0,
            table_bytes: 0,
            fd_bytes: 0,
            oom: false,
        }
    }

    /// Limits for another store of the same container, under the same one
    /// limit.
    pub fn sharing(&self) -> Self {
        Self::with(self.memory, self.held.clone(), self.sockets.clone())
    }

    /// A reader of what the container holds, for usage reports.
    pub fn meter(&self) -> Meter {
        Meter {
            held: self.held.clone(),
            sockets: self.sockets.clone(),
        }
    }

    fn socket_bytes(&self) -> usize {
        self.sockets
            .load(Ordering::Relaxed)
            .saturating_mul(SOCKET_BYTES)
    }

    /// Whether `extra` more bytes fit under the limit.
    pub fn room_for(&self, extra: usize) -> bool {
        self.held
            .load(Ordering::Relaxed)
            .saturating_add(self.socket_bytes())
            .saturating_add(extra)
            <= self.memory
    }

    /// Adds `extra` to `held` if it fits under the limit (atomically: the
    /// stores sharing it may run on other threads).
    fn take(&self, extra: usize) -> bool {
        let sockets = self.socket_bytes();
        self.held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                let total = held.checked_add(extra)?;
                (total.saturating_add(sockets) <= self.memory).then_some(total)
            })
            .is_ok()
    }

    fn give(&self, bytes: usize) {
        self.held.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Charges `cost` bytes of descriptor state if the limit has room.
    pub fn charge(&mut self, cost: usize) -> bool {
        if !self.take(cost) {
            return false;
        }
        self.fd_bytes += cost;
        true
    }

    /// Gives back what [`Limits::charge`] took.
    pub fn uncharge(&mut self, cost: usize) {
        let cost = cost.min(self.fd_bytes);
        self.fd_bytes -= cost;
        self.give(cost);
    }
}

/// Reads the memory a container has charged to its limit, from outside
/// its stores.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meter {
    held: Arc<AtomicUsize>,
    sockets: Arc<AtomicUsize>,
}

impl Meter {
    /// Linear memories, tables and descriptors of all its stores, and its
    /// sockets at [`SOCKET_BYTES`] each.
    pub fn bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed).saturating_add(
            self.sockets
                .load(Ordering::Relaxed)
                .saturating_mul(SOCKET_BYTES),
        )
    }
}

/// The store is gone, and with it its memories, tables and fds.
impl Drop for Limits {
    fn drop(&mut self) {
        self.give(self.memory_used + self.table_bytes + self.fd_bytes);
    }
}

/// What one socket of a preview 2 container costs the node: its receive and
/// send buffers (16 KiB each on the kernel node) and the stream's own write
/// buffer ([`SOCKET_WRITE_BUFFER`]), rounded up.
pub const SOCKET_BYTES: usize = 96 << 10;
/// Most bytes an output stream of a socket holds for the node to send.
pub const SOCKET_WRITE_BUFFER: usize = 64 << 10;

/// What an open fd costs the node: its slot and the path it keeps.
pub(crate) fn fd_cost(fd: &Fd) -> usize {
    match fd {
        Fd::Dir { path, .. } | Fd::File { path, .. } => path_cost(path),
        _ => path_cost(&[]),
    }
}

/// What a descriptor (either layer's) keeping `path` costs the node.
pub(crate) fn path_cost(path: &[String]) -> usize {
    const SLOT: usize = 64;
    SLOT + path
        .iter()
        .map(|c| c.len() + core::mem::size_of::<String>())
        .sum::<usize>()
}

/// Most open fds per container; past it, calls that open one get EMFILE.
pub const MAX_FDS: usize = 1024;
/// Most accepted connections a container holds at once: each is a node
/// socket with its own buffers. Past it `sock_accept` answers EMFILE and
/// the connection waits in the node's (bounded) backlog.
pub const MAX_CONNECTIONS: usize = 64;
/// Most subscriptions one `poll_oneoff` takes; more is EINVAL (the host
/// copies them).
pub const MAX_SUBSCRIPTIONS: u32 = 4096;
/// What one table element costs the node (a pointer), charged to the
/// container's memory limit.
pub const TABLE_ELEMENT_BYTES: usize = core::mem::size_of::<usize>();

impl Ctx {
    fn oom_kill(&mut self) -> wasmtime::Error {
        self.limits.oom_kill()
    }
}

impl Limits {
    /// The guest is killed as out of memory.
    pub fn oom_kill(&mut self) -> wasmtime::Error {
        self.oom = true;
        wasmtime::Error::new(MemoryLimitExceeded)
    }

    /// [`ResourceLimiter::memory_growing`] for either WASI layer: the
    /// container's limit first, then the node's say
    /// ([`Host::memory_growing`]); either refusal kills the guest as out of
    /// memory. Counted as a change (`desired - current`, `current` is 0 at
    /// instantiation) so a component's several core memories add up.
    pub fn memory_growing(
        &mut self,
        host: &mut dyn Host,
        current: usize,
        desired: usize,
    ) -> wasmtime::Result<bool> {
        let extra = desired.saturating_sub(current);
        self.grow(host, extra, current, desired)?;
        self.memory_used += extra;
        Ok(true)
    }

    /// [`ResourceLimiter::table_growing`] for either WASI layer: tables are
    /// charged like memory (also at instantiation, where `current` is 0).
    pub fn table_growing(
        &mut self,
        host: &mut dyn Host,
        current: usize,
        desired: usize,
    ) -> wasmtime::Result<bool> {
        let bytes = |n: usize| n.saturating_mul(TABLE_ELEMENT_BYTES);
        let extra = bytes(desired).saturating_sub(bytes(current));
        self.grow(host, extra, bytes(current), bytes(desired))?;
        self.table_bytes += extra;
        Ok(true)
    }

    /// Takes `extra` bytes for a growth from `current` to `desired` if both
    /// the limit and the node allow it, else OOM-kills the guest.
    fn grow(
        &mut self,
        host: &mut dyn Host,
        extra: usize,
        current: usize,
        desired: usize,
    ) -> wasmtime::Result<()> {
        if !self.take(extra) {
            return Err(self.oom_kill());
        }
        if !host.memory_growing(current, desired) {
            self.give(extra);
            return Err(self.oom_kill());
        }
        Ok(())
    }
}

/// The limits in [`Limits`], with the node's say ([`Host::memory_growing`]):
/// a refusal kills the guest as out of memory.
impl ResourceLimiter for Ctx {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits
            .memory_growing(&mut *self.host, current, desired)
    }

    /// Allowed, but the node could not allocate it (a fragmented or full
    /// heap): the node is out of memory, so the guest is OOM-killed rather
    /// than handed a failed `memory.grow` it would usually abort on.
    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(self.oom_kill())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(&mut *self.host, current, desired)
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        Err(self.oom_kill())
    }
}

/// A container's store data.
pub(crate) struct Ctx {
    pub args: Vec<Vec<u8>>,
    /// `KEY=VALUE` strings.
    pub env: Vec<Vec<u8>>,
    /// Indexed by fd number; closed fds are `None`.
    pub fds: Vec<Option<Fd>>,
    pub volumes: Vec<Volume>,
    pub host: Box<dyn Host>,
    pub limits: Limits,
    pub shared: Arc<Shared>,
    pub seen_slice: u64,
}

impl Ctx {
    pub fn fd(&self, fd: i32) -> Result<&Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.fds.get(i))
            .and_then(Option::as_ref)
            .ok_or(abi::BADF)
    }

    pub fn fd_mut(&mut self, fd: i32) -> Result<&mut Fd, Errno> {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.fds.get_mut(i))
            .and_then(Option::as_mut)
            .ok_or(abi::BADF)
    }

    /// Lowest free fd number, as POSIX does; EMFILE past [`MAX_FDS`],
    /// ENOMEM when its [`fd_cost`] would take the container over its memory
    /// limit.
    pub fn insert(&mut self, fd: Fd) -> Result<u32, Errno> {
        let free = self.fds.iter().position(Option::is_none);
        if free.is_none() && self.fds.len() >= MAX_FDS {
            return Err(abi::MFILE);
        }
        if !self.limits.charge(fd_cost(&fd)) {
            return Err(abi::NOMEM);
        }
        let slot = free.unwrap_or_else(|| {
            self.fds.push(None);
            self.fds.len() - 1
        });
        self.fds[slot] = Some(fd);
        Ok(slot as u32)
    }

    /// Closes `fd` (checked open), giving back what it was charged.
    pub fn remove(&mut self, fd: i32) -> Ret {
        self.fd(fd)?;
        let Some(old) = self.fds[fd as usize].take() else {
            unreachable!("checked open above");
        };
        // Preopens were never charged.
        self.limits.uncharge(fd_cost(&old));
        if let Fd::Conn { id, .. } = old {
            self.host.close(id);
        }
        Ok(())
    }

    /// Accepted connections held now.
    pub fn connections(&self) -> usize {
        self.fds
            .iter()
            .filter(|f| matches!(f, Some(Fd::Conn { .. })))
            .count()
    }

    /// Records why the guest is about to be suspended.
    pub fn block(&self, until: Option<u64>) {
        self.shared.block(until);
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        for fd in self.fds.drain(..).flatten() {
            if let Fd::Conn { id, .. } = fd {
                self.host.close(id);
            }
        }
    }
}

/// Most iovecs one call takes (POSIX `IOV_MAX`); more is EINVAL. The host
/// copies the list, so without a cap a guest could make the node allocate
/// several times its own memory limit in one call.
pub(crate) const IOV_MAX: u32 = 1024;
/// Most bytes one write gathers: a list repeating one large buffer is
/// written short instead of copied into a node buffer of any size.
pub(crate) const MAX_GATHER: usize = 1 << 20;
/// Longest path a call accepts (POSIX `PATH_MAX`); longer is ENAMETOOLONG.
pub(crate) const PATH_MAX: u32 = 4096;

/// Bounds-checked view of the guest's linear memory.
pub(crate) struct Mem<'a>(&'a mut [u8]);

impl Mem<'_> {
    fn range(&self, ptr: u32, len: usize) -> Result<Range<usize>, Errno> {
        let start = ptr as usize;
        let end = start.checked_add(len).ok_or(abi::FAULT)?;
        if end > self.0.len() {
            return Err(abi::FAULT);
        }
        Ok(start..end)
    }

    pub fn bytes(&self, ptr: u32, len: u32) -> Result<&[u8], Errno> {
        let r = self.range(ptr, len as usize)?;
        Ok(&self.0[r])
    }

    pub fn bytes_mut(&mut self, ptr: u32, len: u32) -> Result<&mut [u8], Errno> {
        let r = self.range(ptr, len as usize)?;
        Ok(&mut self.0[r])
    }

    pub fn write(&mut self, ptr: u32, data: &[u8]) -> Result<(), Errno> {
        let r = self.range(ptr, data.len())?;
        self.0[r].copy_from_slice(data);
        Ok(())
    }

    pub fn u32(&self, ptr: u32) -> Result<u32, Errno> {
        let r = self.range(ptr, 4)?;
        Ok(u32::from_le_bytes(self.0[r].try_into().expect("4 bytes")))
    }

    pub fn u64(&self, ptr: u32) -> Result<u64, Errno> {
        let r = self.range(ptr, 8)?;
        Ok(u64::from_le_bytes(self.0[r].try_into().expect("8 bytes")))
    }

    pub fn set_u32(&mut self, ptr: u32, v: u32) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }

    pub fn set_u64(&mut self, ptr: u32, v: u64) -> Result<(), Errno> {
        self.write(ptr, &v.to_le_bytes())
    }

    pub fn str(&self, ptr: u32, len: u32) -> Result<&str, Errno> {
        core::str::from_utf8(self.bytes(ptr, len)?).map_err(|_| abi::INVAL)
    }

    /// A path argument: at most [`PATH_MAX`] bytes of UTF-8.
    pub fn path(&self, ptr: u32, len: u32) -> Result<&str, Errno> {
        if len > PATH_MAX {
            return Err(abi::NAMETOOLONG);
        }
        self.str(ptr, len)
    }

    /// An iovec array as (pointer, length) pairs, each checked; at most
    /// [`IOV_MAX`] of them.
    pub fn iovecs(&self, ptr: u32, count: u32) -> Result<Vec<(u32, u32)>, Errno> {
        if count > IOV_MAX {
            return Err(abi::INVAL);
        }
        let size = count.checked_mul(abi::IOVEC_SIZE).ok_or(abi::FAULT)?;
        self.range(ptr, size as usize)?;
        let mut out = Vec::with_capacity(count as usize);
        for i in 0..count {
            let at = ptr + i * abi::IOVEC_SIZE;
            let (buf, len) = (self.u32(at)?, self.u32(at + 4)?);
            self.range(buf, len as usize)?;
            out.push((buf, len));
        }
        Ok(out)
    }

    /// Concatenates the buffers of an iovec array (for writes), up to
    /// [`MAX_GATHER`] bytes: the rest is left for the guest to write again.
    pub fn gather(&self, ptr: u32, count: u32) -> Result<Vec<u8>, Errno> {
        let mut data = Vec::new();
        for (buf, len) in self.iovecs(ptr, count)? {
            let room = MAX_GATHER - data.len();
            let bytes = self.bytes(buf, len)?;
            data.extend_from_slice(&bytes[..bytes.len().min(room)]);
            if data.len() == MAX_GATHER {
                break;
            }
        }
        Ok(data)
    }

    /// Copies `data` across the buffers of an iovec array (for reads).
    pub fn scatter(&mut self, iovs: &[(u32, u32)], mut data: &[u8]) -> Result<usize, Errno> {
        let mut total = 0;
        for &(buf, len) in iovs {
            if data.is_empty() {
                break;
            }
            let n = data.len().min(len as usize);
            self.write(buf, &data[..n])?;
            data = &data[n..];
            total += n;
        }
        Ok(total)
    }
}

type Ret = Result<(), Errno>;

fn code(result: Ret) -> i32 {
    i32::from(result.err().unwrap_or(abi::SUCCESS))
}

/// Runs `f` with the guest memory and the context.
fn call(caller: &mut Caller<'_, Ctx>, f: impl FnOnce(&mut Mem<'_>, &mut Ctx) -> Ret) -> i32 {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        // A module without an exported memory cannot use pointer-taking calls.
        return i32::from(abi::NOSYS);
    };
    let (data, ctx) = memory.data_and_store_mut(caller);
    code(f(&mut Mem(data), ctx))
}

/// [`call`] for operations that may have to wait.
fn poll_call(
    caller: &mut Caller<'_, Ctx>,
    f: impl FnOnce(&mut Mem<'_>, &mut Ctx) -> Poll<Ret>,
) -> Poll<i32> {
    let Some(Extern::Memory(memory)) = caller.get_export("memory") else {
        return Poll::Ready(i32::from(abi::NOSYS));
    };
    let (data, ctx) = memory.data_and_store_mut(caller);
    f(&mut Mem(data), ctx).map(code)
}

/// Defines a non-blocking call: `sync_fn!(l, "name", |m, cx, a: i32| body)`.
macro_rules! sync_fn {
    ($linker:expr, $name:literal, |$m:ident, $cx:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {
        $linker.func_wrap(
            crate::wasi::MODULE,
            $name,
            |mut caller: wasmtime::Caller<'_, crate::wasi::Ctx> $(, $arg: $ty)*| -> i32 {
                crate::wasi::call(&mut caller, |$m, $cx| $body)
            },
        )?;
    };
}

/// Defines a call whose body returns `Poll<Ret>`; `Pending` suspends the
/// guest until a later step finds the body ready.
macro_rules! blocking_fn {
    ($linker:expr, $name:literal, |$m:ident, $cx:ident $(, $arg:ident : $ty:ty)*| $body:expr) => {
        $linker.func_wrap_async(
            crate::wasi::MODULE,
            $name,
            |mut caller: wasmtime::Caller<'_, crate::wasi::Ctx>, ($($arg,)*): ($($ty,)*)| {
                alloc::boxed::Box::new(async move {
                    Ok::<i32, wasmtime::Error>(
                        core::future::poll_fn(|_| {
                            crate::wasi::poll_call(&mut caller, |$m, $cx| $body)
                        })
                        .await,
                    )
                })
            },
        )?;
    };
}

/// Calls we do not implement: present (so modules importing them still
/// link) and answering ENOSYS.
macro_rules! unsupported_fn {
    ($linker:expr, $name:literal, $($ty:ty),*) => {
        $linker.func_wrap(crate::wasi::MODULE, $name, |$(_: $ty),*| -> i32 {
            i32::from(crate::wasi::abi::NOSYS)
        })?;
    };
}

pub(crate) use files::stdio;
use {blocking_fn, sync_fn};

/// Adds every `wasi_snapshot_preview1` function to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    misc::add(linker)?;
    files::add(linker)?;
    net::add(linker)?;
    unsupported_fn!(linker, "fd_advise", i32, i64, i64, i32);
    unsupported_fn!(linker, "fd_allocate", i32, i64, i64);
    unsupported_fn!(linker, "fd_fdstat_set_rights", i32, i64, i64);
    unsupported_fn!(linker, "fd_filestat_set_times", i32, i64, i64, i32);
    unsupported_fn!(linker, "fd_pread", i32, i32, i32, i64, i32);
    unsupported_fn!(linker, "fd_pwrite", i32, i32, i32, i64, i32);
    unsupported_fn!(linker, "fd_renumber", i32, i32);
    unsupported_fn!(
        linker,
        "path_filestat_set_times",
        i32,
        i32,
        i32,
        i32,
        i64,
        i64,
        i32
    );
    unsupported_fn!(linker, "path_link", i32, i32, i32, i32, i32, i32, i32);
    unsupported_fn!(linker, "path_readlink", i32, i32, i32, i32, i32, i32);
    unsupported_fn!(linker, "path_symlink", i32, i32, i32, i32, i32);
    unsupported_fn!(linker, "proc_raise", i32);
    Ok(())
}
