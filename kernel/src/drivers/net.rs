//! virtio-net as a smoltcp `phy::Device`, without blocking.
//!
//! Built on `VirtIONetRaw`: every receive descriptor owns a heap buffer
//! (identity-mapped, so valid for DMA) recorded by its token until the
//! device returns it; transmit buffers are likewise parked by token until
//! the device reports them used, then recycled. Nothing waits for the
//! device: completions are reaped whenever smoltcp asks to transmit and at
//! every poll. The tokens share the driver through `RefCell`s because
//! smoltcp hands out an rx and a tx token together.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};

use smoltcp::phy::{Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::Instant;
use virtio_drivers::device::net::VirtIONetRaw;

use super::VTransport;
use super::hal::KernelHal;

/// Descriptors per queue: enough receive buffers posted to absorb a full
/// TCP window burst (a 256 KiB window is ~180 segments) without drops, and
/// enough transmit slots that smoltcp's egress rarely finds the ring full.
pub const QUEUE_SIZE: usize = 256;
/// Header (≤ 12 bytes) + a 1514-byte frame, rounded up.
const BUF_LEN: usize = 2048;

/// Frames and bytes through the NIC since boot (usage reports).
#[derive(Debug)]
pub struct Counters {
    pub rx_bytes: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub rx_packets: AtomicU64,
    pub tx_packets: AtomicU64,
}

pub static COUNTERS: Counters = Counters {
    rx_bytes: AtomicU64::new(0),
    tx_bytes: AtomicU64::new(0),
    rx_packets: AtomicU64::new(0),
    tx_packets: AtomicU64::new(0),
};

type Nic = VirtIONetRaw<KernelHal, VTransport, QUEUE_SIZE>;

struct Inner {
    nic: Nic,
    /// Receive buffers posted to the device, by token.
    rx_posted: [Option<Box<[u8]>>; QUEUE_SIZE],
    /// Transmit buffers the device still owns, by token.
    tx_inflight: [Option<Box<[u8]>>; QUEUE_SIZE],
    tx_free: Vec<Box<[u8]>>,
}

pub struct NetDevice {
    inner: RefCell<Inner>,
}

impl Inner {
    fn post_rx(&mut self, mut buf: Box<[u8]>) {
        // SAFETY: `buf` is a heap buffer kept in `rx_posted` (untouched)
        // until the device returns its token in `receive`.
        match unsafe { self.nic.receive_begin(&mut buf) } {
            Ok(token) => self.rx_posted[usize::from(token)] = Some(buf),
            Err(e) => warn!("net", "rx post failed: {e:?}"),
        }
    }

    fn reap_tx(&mut self) {
        while let Some(token) = self.nic.poll_transmit() {
            let Some(buf) = self.tx_inflight[usize::from(token)].take() else {
                warn!("net", "tx completion for unknown token={token}");
                return;
            };
            // SAFETY: `buf` is the buffer passed to `transmit_begin` for
            // this token (recorded in `tx_inflight` under it).
            let _ = unsafe { self.nic.transmit_complete(token, &buf) };
            self.tx_free.push(buf);
        }
    }
}

impl NetDevice {
    pub fn new(transport: VTransport) -> Result<Self, virtio_drivers::Error> {
        let mut inner = Inner {
            nic: VirtIONetRaw::new(transport)?,
            rx_posted: [const { None }; QUEUE_SIZE],
            tx_inflight: [const { None }; QUEUE_SIZE],
            tx_free: Vec::new(),
        };
        for _ in 0..QUEUE_SIZE {
            inner.post_rx(vec![0u8; BUF_LEN].into_boxed_slice());
        }
        // Transmit buffers up front: no allocation on the packet path.
        inner.tx_free = (0..QUEUE_SIZE)
            .map(|_| vec![0u8; BUF_LEN].into_boxed_slice())
            .collect();
        Ok(NetDevice {
            inner: RefCell::new(inner),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.inner.borrow().nic.mac_address()
    }

    /// Acknowledges the device's interrupt (before draining the queues, so
    /// that a packet arriving afterwards raises a fresh edge) and reaps
    /// finished transmissions.
    pub fn ack_interrupt(&self) {
        let mut i = self.inner.borrow_mut();
        i.nic.ack_interrupt();
        i.reap_tx();
    }
}

pub struct Rx<'a> {
    inner: &'a RefCell<Inner>,
    buf: Option<Box<[u8]>>,
    start: usize,
    len: usize,
}

pub struct Tx<'a> {
    inner: &'a RefCell<Inner>,
}

impl RxToken for Rx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(mut self, f: F) -> R {
        let buf = self.buf.take().expect("token consumed once");
        COUNTERS.rx_packets.fetch_add(1, Ordering::Relaxed);
        COUNTERS
            .rx_bytes
            .fetch_add(self.len as u64, Ordering::Relaxed);
        let r = f(&buf[self.start..self.start + self.len]);
        self.inner.borrow_mut().post_rx(buf);
        r
    }
}

impl Drop for Rx<'_> {
    fn drop(&mut self) {
        // A token dropped unconsumed still owns a receive buffer.
        if let Some(buf) = self.buf.take() {
            self.inner.borrow_mut().post_rx(buf);
        }
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut i = self.inner.borrow_mut();
        let mut buf = i
            .tx_free
            .pop()
            .unwrap_or_else(|| vec![0u8; BUF_LEN].into_boxed_slice());
        let hdr = i.nic.fill_buffer_header(&mut buf).unwrap_or(0);
        let len = len.min(BUF_LEN - hdr);
        let r = f(&mut buf[hdr..hdr + len]);
        // SAFETY: `buf` is parked in `tx_inflight` under the returned token
        // and not touched until `reap_tx` sees that token used.
        match unsafe { i.nic.transmit_begin(&buf[..hdr + len]) } {
            Ok(token) => {
                COUNTERS.tx_packets.fetch_add(1, Ordering::Relaxed);
                COUNTERS.tx_bytes.fetch_add(len as u64, Ordering::Relaxed);
                i.tx_inflight[usize::from(token)] = Some(buf);
            }
            Err(e) => {
                warn!("net", "tx failed: {e:?}");
                i.tx_free.push(buf);
            }
        }
        r
    }
}

impl Device for NetDevice {
    type RxToken<'a> = Rx<'a>;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _t: Instant) -> Option<(Rx<'_>, Tx<'_>)> {
        let mut i = self.inner.borrow_mut();
        i.reap_tx();
        if !i.nic.can_send() {
            return None; // smoltcp may answer at once (ARP, ACK): need room
        }
        let token = i.nic.poll_receive()?;
        let mut buf = i.rx_posted[usize::from(token)].take()?;
        // SAFETY: `buf` is the buffer posted under this token.
        let (start, len) = match unsafe { i.nic.receive_complete(token, &mut buf) } {
            Ok(v) => v,
            Err(e) => {
                warn!("net", "rx complete failed: {e:?}");
                i.post_rx(buf);
                return None;
            }
        };
        drop(i);
        Some((
            Rx {
                inner: &self.inner,
                buf: Some(buf),
                start,
                len,
            },
            Tx { inner: &self.inner },
        ))
    }

    fn transmit(&mut self, _t: Instant) -> Option<Tx<'_>> {
        let mut i = self.inner.borrow_mut();
        i.reap_tx();
        i.nic.can_send().then_some(Tx { inner: &self.inner })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}
