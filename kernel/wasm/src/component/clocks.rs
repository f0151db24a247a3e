//! wasi:clocks over [`Host`](crate::Host)'s clocks. A monotonic-clock
//! pollable that is not yet due suspends the guest and makes the step
//! report [`Step::Blocked`](crate::Step::Blocked) with its deadline, the
//! same protocol as preview 1's `poll_oneoff`.

use alloc::boxed::Box;
use alloc::sync::Arc;
use core::task::Poll;

use wasmtime::component::Resource;
use wasmtime_wasi_io::poll::{DynPollable, Pollable, subscribe};

use super::bindings::wasi::clocks::{monotonic_clock, wall_clock};
use super::{Ctx, SharedHost};
use crate::wasi::Shared;

impl monotonic_clock::Host for Ctx {
    fn now(&mut self) -> wasmtime::Result<u64> {
        Ok(self.host.lock().monotonic_ns())
    }

    fn resolution(&mut self) -> wasmtime::Result<u64> {
        Ok(self.host.lock().clock_resolution_ns())
    }

    fn subscribe_instant(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let sleep = Sleep {
            until: when,
            host: self.host.clone(),
            shared: self.shared.clone(),
        };
        let sleep = self.table.push(sleep)?;
        subscribe(&mut self.table, sleep)
    }

    fn subscribe_duration(&mut self, when: u64) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.host.lock().monotonic_ns();
        self.subscribe_instant(now.saturating_add(when))
    }
}

impl wall_clock::Host for Ctx {
    fn now(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(datetime(self.host.lock().realtime_ns()))
    }

    fn resolution(&mut self) -> wasmtime::Result<wall_clock::Datetime> {
        Ok(datetime(self.host.lock().clock_resolution_ns()))
    }
}

fn datetime(ns: u64) -> wall_clock::Datetime {
    wall_clock::Datetime {
        seconds: ns / 1_000_000_000,
        nanoseconds: (ns % 1_000_000_000) as u32,
    }
}

/// Ready once the monotonic clock reaches `until`.
struct Sleep {
    until: u64,
    host: SharedHost,
    shared: Arc<Shared>,
}

#[wasmtime_wasi_io::async_trait]
impl Pollable for Sleep {
    async fn ready(&mut self) {
        core::future::poll_fn(|_| {
            if self.host.lock().monotonic_ns() >= self.until {
                return Poll::Ready(());
            }
            self.shared.block(Some(self.until));
            Poll::Pending
        })
        .await
    }
}
