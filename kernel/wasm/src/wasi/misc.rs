//! Process-level calls: arguments, environment, clocks, randomness, exit,
//! yielding and `poll_oneoff`.

use alloc::vec::Vec;
use core::task::Poll;

use wasmtime::Linker;

use super::abi::{self, Errno};
use super::{Ctx, Fd, Mem, ProcExit, Ret, sync_fn};

pub(super) fn add(linker: &mut Linker<Ctx>) -> wasmtime::Result<()> {
    sync_fn!(linker, "args_sizes_get", |m, cx, count: i32, size: i32| {
        sizes(m, &cx.args, count as u32, size as u32)
    });
    sync_fn!(linker, "args_get", |m, cx, argv: i32, buf: i32| {
        strings(m, &cx.args, argv as u32, buf as u32)
    });
    sync_fn!(
        linker,
        "environ_sizes_get",
        |m, cx, count: i32, size: i32| { sizes(m, &cx.env, count as u32, size as u32) }
    );
    sync_fn!(linker, "environ_get", |m, cx, environ: i32, buf: i32| {
        strings(m, &cx.env, environ as u32, buf as u32)
    });
    sync_fn!(linker, "clock_res_get", |m, cx, id: i32, out: i32| {
        clock_id(id as u32)?;
        m.set_u64(out as u32, cx.host.clock_resolution_ns())
    });
    sync_fn!(
        linker,
        "clock_time_get",
        |m, cx, id: i32, _precision: i64, out: i32| {
            let now = now(cx, clock_id(id as u32)?);
            m.set_u64(out as u32, now)
        }
    );
    sync_fn!(linker, "random_get", |m, cx, buf: i32, len: i32| {
        cx.host.random(m.bytes_mut(buf as u32, len as u32)?);
        Ok(())
    });
    linker.func_wrap(
        super::MODULE,
        "proc_exit",
        |code: i32| -> wasmtime::Result<()> { Err(wasmtime::Error::new(ProcExit(code))) },
    )?;
    // Give up the rest of the slice: suspend once (without marking the guest
    // blocked, so the step reports Running) and return on the next step.
    linker.func_wrap_async(
        super::MODULE,
        "sched_yield",
        |_caller: wasmtime::Caller<'_, Ctx>, (): ()| {
            alloc::boxed::Box::new(async move {
                let mut yielded = false;
                core::future::poll_fn(|_| {
                    if yielded {
                        Poll::Ready(())
                    } else {
                        yielded = true;
                        Poll::Pending
                    }
                })
                .await;
                Ok::<i32, wasmtime::Error>(0)
            })
        },
    )?;
    // The start time of a poll survives its suspensions so relative
    // timeouts count from the call, not from each retry.
    linker.func_wrap_async(
        super::MODULE,
        "poll_oneoff",
        |mut caller: wasmtime::Caller<'_, Ctx>, (subs, events, n, out): (i32, i32, i32, i32)| {
            alloc::boxed::Box::new(async move {
                let mut start = None;
                Ok::<i32, wasmtime::Error>(
                    core::future::poll_fn(|_| {
                        super::poll_call(&mut caller, |m, cx| {
                            poll_oneoff(m, cx, &mut start, [subs, events, n, out])
                        })
                    })
                    .await,
                )
            })
        },
    )?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Clock {
    Realtime,
    Monotonic,
}

fn clock_id(id: u32) -> Result<Clock, Errno> {
    match id {
        abi::CLOCK_REALTIME => Ok(Clock::Realtime),
        abi::CLOCK_MONOTONIC => Ok(Clock::Monotonic),
        // Process and thread CPU-time clocks.
        2 | 3 => Err(abi::NOTSUP),
        _ => Err(abi::INVAL),
    }
}

fn now(cx: &mut Ctx, clock: Clock) -> u64 {
    match clock {
        Clock::Realtime => cx.host.realtime_ns(),
        Clock::Monotonic => cx.host.monotonic_ns(),
    }
}

/// `*_sizes_get`: the count and the bytes needed with NUL terminators.
fn sizes(m: &mut Mem<'_>, list: &[Vec<u8>], count: u32, size: u32) -> Ret {
    let bytes: usize = list.iter().map(|s| s.len() + 1).sum();
    m.set_u32(count, list.len() as u32)?;
    m.set_u32(size, u32::try_from(bytes).map_err(|_| abi::OVERFLOW)?)
}

/// `*_get`: pointers at `ptrs`, NUL-terminated strings packed at `buf`.
fn strings(m: &mut Mem<'_>, list: &[Vec<u8>], ptrs: u32, buf: u32) -> Ret {
    let (mut ptr, mut at) = (ptrs, buf);
    for s in list {
        m.set_u32(ptr, at)?;
        m.write(at, s)?;
        let end = at.checked_add(s.len() as u32).ok_or(abi::FAULT)?;
        m.write(end, &[0])?;
        at = end.checked_add(1).ok_or(abi::FAULT)?;
        ptr = ptr.checked_add(4).ok_or(abi::FAULT)?;
    }
    Ok(())
}

/// One subscription of a `poll_oneoff` call.
enum Sub {
    /// Ready at this monotonic time.
    Clock(u64),
    Read(i32),
    Write(i32),
}

fn poll_oneoff(
    m: &mut Mem<'_>,
    cx: &mut Ctx,
    start: &mut Option<u64>,
    args: [i32; 4],
) -> Poll<Ret> {
    match poll_inner(m, cx, start, args) {
        Ok(true) => Poll::Ready(Ok(())),
        Ok(false) => Poll::Pending,
        Err(e) => Poll::Ready(Err(e)),
    }
}

/// Returns whether the poll completed (events written).
fn poll_inner(
    m: &mut Mem<'_>,
    cx: &mut Ctx,
    start: &mut Option<u64>,
    args: [i32; 4],
) -> Result<bool, Errno> {
    let [subs_ptr, events_ptr, n, out] = args.map(|a| a as u32);
    if n == 0 || n > super::MAX_SUBSCRIPTIONS {
        return Err(abi::INVAL);
    }
    let mono = cx.host.monotonic_ns();
    let started = *start.get_or_insert(mono);
    let mut subs = Vec::with_capacity(n as usize);
    m.bytes(
        subs_ptr,
        n.checked_mul(abi::SUBSCRIPTION_SIZE).ok_or(abi::FAULT)?,
    )?;
    for i in 0..n {
        let at = subs_ptr + i * abi::SUBSCRIPTION_SIZE;
        let userdata = m.u64(at)?;
        let tag = m.bytes(at + 8, 1)?[0];
        let sub = match tag {
            abi::EVENTTYPE_CLOCK => {
                let clock = clock_id(m.u32(at + 16)?)?;
                let timeout = m.u64(at + 24)?;
                let flags = u16::from_le_bytes(m.bytes(at + 40, 2)?.try_into().expect("2 bytes"));
                let deadline = if flags & abi::SUBCLOCKFLAGS_ABSTIME == 0 {
                    started.saturating_add(timeout)
                } else {
                    match clock {
                        Clock::Monotonic => timeout,
                        // Translate a wall-clock deadline to the monotonic clock.
                        Clock::Realtime => {
                            let real = cx.host.realtime_ns();
                            mono.saturating_add(timeout.saturating_sub(real))
                        }
                    }
                };
                Sub::Clock(deadline)
            }
            abi::EVENTTYPE_FD_READ => Sub::Read(m.u32(at + 16)? as i32),
            abi::EVENTTYPE_FD_WRITE => Sub::Write(m.u32(at + 16)? as i32),
            _ => return Err(abi::INVAL),
        };
        subs.push((userdata, tag, sub));
    }
    let mut ready = Vec::new();
    let mut wake = None::<u64>;
    for (userdata, tag, sub) in &subs {
        let outcome = match *sub {
            Sub::Clock(deadline) if deadline <= mono => Some(abi::SUCCESS),
            Sub::Clock(deadline) => {
                wake = Some(wake.map_or(deadline, |w| w.min(deadline)));
                None
            }
            Sub::Read(fd) | Sub::Write(fd) => match fd_ready(cx, fd, matches!(sub, Sub::Read(_))) {
                Ok(true) => Some(abi::SUCCESS),
                Ok(false) => None,
                Err(e) => Some(e),
            },
        };
        if let Some(errno) = outcome {
            ready.push((*userdata, *tag, errno));
        }
    }
    if ready.is_empty() {
        cx.block(wake);
        return Ok(false);
    }
    m.bytes(events_ptr, (ready.len() as u32) * abi::EVENT_SIZE)?;
    for (i, (userdata, tag, errno)) in ready.iter().enumerate() {
        let at = events_ptr + i as u32 * abi::EVENT_SIZE;
        let mut event = [0u8; abi::EVENT_SIZE as usize];
        event[0..8].copy_from_slice(&userdata.to_le_bytes());
        event[8..10].copy_from_slice(&errno.to_le_bytes());
        event[10] = *tag;
        // fd events: nbytes unknown (0) is allowed by the spec.
        m.write(at, &event)?;
    }
    m.set_u32(out, ready.len() as u32)?;
    Ok(true)
}

/// Readiness for `poll_oneoff`: only sockets can be not ready.
fn fd_ready(cx: &mut Ctx, fd: i32, read: bool) -> Result<bool, Errno> {
    Ok(match *cx.fd(fd)? {
        Fd::Listener { port, .. } => read && cx.host.acceptable(port),
        Fd::Conn { id, .. } if read => cx.host.readable(id),
        Fd::Conn { id, .. } => cx.host.writable(id),
        _ => true,
    })
}
