//! Sector access over the virtio-blk device, if any (the diag service's
//! `blk-read`/`blk-write`, whose error replies are its errors).
//!
//! Reads and writes are submitted without blocking and completed when the
//! device interrupts (with a 100 ms re-check as a safety net). Requests are
//! serialised by an async lock; request headers and data live on the heap,
//! which is identity-mapped, so their addresses are valid for DMA. Flush
//! has no non-blocking form in virtio-drivers and waits on the used ring.

use alloc::boxed::Box;
use alloc::vec;

use skiff_diag::{Failure, SECTOR};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};

use crate::drivers::hal::KernelHal;
use crate::drivers::{Irq, VTransport};
use crate::executor::{self, AsyncLock, IrqWait, select};

struct Blk {
    dev: VirtIOBlk<KernelHal, VTransport>,
    irq: Irq,
}

struct Global(spin::Mutex<Option<Blk>>);
// SAFETY: one CPU; the device is touched only from task context.
unsafe impl Sync for Global {}

static BLK: Global = Global(spin::Mutex::new(None));
static LOCK: AsyncLock = AsyncLock::new();

pub fn init(dev: VirtIOBlk<KernelHal, VTransport>, irq: Irq) {
    if let Some(pin) = irq.pin() {
        crate::arch::apic::ioapic_enable(pin, matches!(irq, Irq::Level(_)));
    }
    *BLK.0.lock() = Some(Blk { dev, irq });
}

fn with<R>(f: impl FnOnce(&mut Blk) -> Result<R, Failure>) -> Result<R, Failure> {
    match BLK.0.lock().as_mut() {
        Some(b) => f(b),
        None => Err(Failure::NoBlockDevice),
    }
}

async fn wait_used(token: u16) -> Result<(), Failure> {
    loop {
        let (done, irq) = with(|b| {
            b.dev.ack_interrupt();
            if let Some(pin) = b.irq.pin() {
                crate::arch::apic::ioapic_unmask(pin);
            }
            Ok((b.dev.peek_used() == Some(token), b.irq))
        })?;
        if done {
            return Ok(());
        }
        match irq.pin() {
            Some(p) => {
                let _ = select(IrqWait(p as usize), executor::sleep_us(100_000)).await;
            }
            None => executor::sleep_us(1000).await,
        }
    }
}

fn check_range(b: &Blk, sector: u64) -> Result<(), Failure> {
    if sector >= b.dev.capacity() {
        Err(Failure::OutOfRange)
    } else {
        Ok(())
    }
}

pub async fn read(sector: u64) -> Result<[u8; SECTOR], Failure> {
    let _g = LOCK.lock().await;
    let mut req = Box::new(BlkReq::default());
    let mut resp = Box::new(BlkResp::default());
    let mut buf = vec![0u8; SECTOR].into_boxed_slice();
    let token = with(|b| {
        check_range(b, sector)?;
        // SAFETY: `req`, `buf` and `resp` are heap allocations owned by this
        // future, not touched until `complete_read_blocks` below, and freed
        // only after it (or never reused if the device stops answering:
        // the future then never completes and keeps them alive).
        unsafe {
            b.dev
                .read_blocks_nb(sector as usize, &mut req, &mut buf, &mut resp)
        }
        .map_err(|_| Failure::Io)
    })?;
    wait_used(token).await?;
    with(|b| {
        // SAFETY: the same buffers as passed to `read_blocks_nb`.
        unsafe { b.dev.complete_read_blocks(token, &req, &mut buf, &mut resp) }
            .map_err(|_| Failure::Io)
    })?;
    let mut data = [0u8; SECTOR];
    data.copy_from_slice(&buf);
    Ok(data)
}

pub async fn write(sector: u64, data: &[u8; SECTOR]) -> Result<(), Failure> {
    let _g = LOCK.lock().await;
    let mut req = Box::new(BlkReq::default());
    let mut resp = Box::new(BlkResp::default());
    let buf: Box<[u8]> = Box::from(&data[..]);
    let token = with(|b| {
        check_range(b, sector)?;
        if b.dev.readonly() {
            return Err(Failure::ReadOnlyDevice);
        }
        // SAFETY: as in `read`: heap buffers owned by this future until
        // `complete_write_blocks`.
        unsafe {
            b.dev
                .write_blocks_nb(sector as usize, &mut req, &buf, &mut resp)
        }
        .map_err(|_| Failure::Io)
    })?;
    wait_used(token).await?;
    with(|b| {
        // SAFETY: the same buffers as passed to `write_blocks_nb`.
        unsafe { b.dev.complete_write_blocks(token, &req, &buf, &mut resp) }
            .map_err(|_| Failure::Io)?;
        b.dev.flush().map_err(|_| Failure::Io)
    })
}
