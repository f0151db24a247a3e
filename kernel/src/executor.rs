//! A single-CPU async executor.
//!
//! Tasks are boxed futures in a slab; a task's waker pushes its id onto the
//! ready queue. Interrupt handlers never touch the queue: they set flags
//! (`interrupts::TIMER_FIRED`, `interrupts::IRQ_PENDING`) that the run loop
//! turns into wakeups. Timers are an ordered map (deadline in TSC ticks, id)
//! → waker; a `Sleep` removes its entry when dropped. When nothing is ready
//! the loop arms the APIC one-shot timer for the earliest deadline and halts
//! with interrupts enabled atomically (`sti; hlt`), so an interrupt arriving
//! between the check and the halt still wakes it. There is no busy polling.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::{Context, Poll, Waker};

use crate::arch::{apic, interrupts, time};

type Task = Pin<Box<dyn Future<Output = ()>>>;

static READY: spin::Mutex<VecDeque<usize>> = spin::Mutex::new(VecDeque::new());
static SPAWNED: Spawned = Spawned(spin::Mutex::new(Vec::new()));

/// Spawned tasks waiting to be adopted by the run loop.
struct Spawned(spin::Mutex<Vec<Task>>);

// SAFETY: the kernel runs on one CPU and tasks are only created and polled
// by the executor's thread of control (never from interrupt handlers), so the
// non-`Send` futures inside never cross threads.
unsafe impl Sync for Spawned {}
/// Pending timers by (deadline in TSC ticks, unique id). A `Sleep` removes
/// its entry when dropped, so abandoned timeouts (the losing side of a
/// `select`) do not pile up.
static TIMERS: spin::Mutex<BTreeMap<(u64, u64), Waker>> = spin::Mutex::new(BTreeMap::new());
static NEXT_TIMER_ID: AtomicU64 = AtomicU64::new(0);
/// The deadline the APIC timer is armed for (`DISARMED`: none); reset when
/// the timer fires.
static ARMED: AtomicU64 = AtomicU64::new(DISARMED);
const DISARMED: u64 = u64::MAX;
const TIMER_SCAN_EVERY: u32 = 64;
/// TSC ticks spent halted in `idle`: the node's CPU time is uptime minus this.
static IDLE_TSC: AtomicU64 = AtomicU64::new(0);
static IRQ_WAKERS: spin::Mutex<[Option<Waker>; interrupts::IRQ_LINES]> =
    spin::Mutex::new([const { None }; interrupts::IRQ_LINES]);

struct TaskWaker(usize);

impl alloc::task::Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        x86_64::instructions::interrupts::without_interrupts(|| READY.lock().push_back(self.0));
    }
}

/// Queues a task; it starts running once `run` is (or continues) looping.
pub fn spawn(f: impl Future<Output = ()> + 'static) {
    SPAWNED.0.lock().push(Box::pin(f));
}

/// Runs tasks forever.
pub fn run() -> ! {
    let mut tasks: Vec<Option<(Task, Waker)>> = Vec::new();
    let mut round = 0u32;
    loop {
        // Adopt newly spawned tasks.
        let new: Vec<Task> = core::mem::take(&mut *SPAWNED.0.lock());
        for t in new {
            let id = tasks
                .iter()
                .position(Option::is_none)
                .unwrap_or(tasks.len());
            let waker = Waker::from(Arc::new(TaskWaker(id)));
            if id == tasks.len() {
                tasks.push(None);
            }
            tasks[id] = Some((t, waker));
            READY.lock().push_back(id);
        }
        round = round.wrapping_add(1);
        dispatch_interrupt_events(round);
        let next =
            x86_64::instructions::interrupts::without_interrupts(|| READY.lock().pop_front());
        if let Some(id) = next {
            if let Some(Some((task, waker))) = tasks.get_mut(id) {
                let mut cx = Context::from_waker(waker);
                if task.as_mut().poll(&mut cx).is_ready() {
                    tasks[id] = None;
                }
            }
            continue;
        }
        idle();
    }
}

/// Wakes timer waiters whose deadline passed and IRQ waiters whose line fired.
///
/// Timers are scanned after the timer interrupt (`idle` arms the earliest
/// deadline) and, for a loop that never idles, every `TIMER_SCAN_EVERY`
/// rounds: RDTSC traps to the hypervisor under some KVM setups (~10 µs
/// each), so it stays off the per-task path.
fn dispatch_interrupt_events(round: u32) {
    let fired = interrupts::TIMER_FIRED.swap(false, Ordering::AcqRel);
    if fired {
        // The one-shot (or TSC-deadline) timer is spent: `idle` re-arms.
        ARMED.store(DISARMED, Ordering::Relaxed);
    }
    if fired || round.is_multiple_of(TIMER_SCAN_EVERY) {
        let now = time::rdtsc();
        let mut timers = TIMERS.lock();
        while let Some(entry) = timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            entry.remove().wake();
        }
    }
    let pending = interrupts::IRQ_PENDING.load(Ordering::Acquire);
    if pending != 0 {
        let mut wakers = IRQ_WAKERS.lock();
        for (line, w) in wakers.iter_mut().enumerate() {
            if pending & (1 << line) != 0
                && let Some(w) = w.take()
            {
                w.wake();
            }
        }
    }
}

fn idle() {
    x86_64::instructions::interrupts::disable();
    let ready = !READY.lock().is_empty() || !SPAWNED.0.lock().is_empty();
    let irq_waited = {
        let pending = interrupts::IRQ_PENDING.load(Ordering::Acquire);
        let wakers = IRQ_WAKERS.lock();
        wakers
            .iter()
            .enumerate()
            .any(|(l, w)| w.is_some() && pending & (1 << l) != 0)
    };
    if ready || irq_waited || interrupts::TIMER_FIRED.load(Ordering::Acquire) {
        x86_64::instructions::interrupts::enable();
        return;
    }
    // Reprogram the timer only when the earliest deadline changed: each
    // write is a VM exit.
    let want = TIMERS
        .lock()
        .first_key_value()
        .map_or(DISARMED, |(&(deadline, _), _)| deadline);
    if ARMED.swap(want, Ordering::Relaxed) != want {
        match want {
            DISARMED => apic::disarm(),
            deadline => apic::arm(deadline),
        }
    }
    // `sti; hlt` back to back: an interrupt pending since `disable` above is
    // taken after `hlt` starts, so it cannot be lost.
    let halted = time::rdtsc();
    x86_64::instructions::interrupts::enable_and_hlt();
    IDLE_TSC.fetch_add(time::rdtsc().saturating_sub(halted), Ordering::Relaxed);
}

/// Microseconds the CPU has spent halted (idle) since boot.
pub fn idle_us() -> u64 {
    time::tsc_to_us(IDLE_TSC.load(Ordering::Relaxed))
}

/// The APIC timer was re-programmed behind the executor's back (guest epoch
/// ticks, see `wasm::with_ticks`): re-arm for the earliest deadline when idle.
pub fn timer_rearm() {
    ARMED.store(DISARMED, Ordering::Relaxed);
}

/// Lets every other ready task run once before continuing.
pub async fn yield_now() {
    let mut yielded = false;
    core::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Completes at TSC value `deadline`.
pub struct Sleep {
    deadline: u64,
    /// Key in `TIMERS` once registered.
    key: Option<(u64, u64)>,
}

impl Future for Sleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if time::rdtsc() >= self.deadline {
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let key = *self
            .key
            .get_or_insert_with(|| (deadline, NEXT_TIMER_ID.fetch_add(1, Ordering::Relaxed)));
        // (Re-)register: the entry may have fired early or the waker changed.
        TIMERS.lock().insert(key, cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            TIMERS.lock().remove(&key);
        }
    }
}

pub fn sleep_until(deadline: u64) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

pub fn sleep_us(us: u64) -> Sleep {
    sleep_until(time::rdtsc() + time::us_to_tsc(us))
}

/// Completes when I/O APIC line `line` has interrupted (consuming the event).
pub struct IrqWait(pub usize);

impl Future for IrqWait {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let bit = 1u32 << self.0;
        if interrupts::IRQ_PENDING.fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
            return Poll::Ready(());
        }
        IRQ_WAKERS.lock()[self.0] = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// A wakeup flag for one waiting task: `notify` from anywhere (not ISRs).
#[derive(Default)]
pub struct Notify {
    state: spin::Mutex<(bool, Option<Waker>)>,
}

impl Notify {
    pub const fn new() -> Self {
        Notify {
            state: spin::Mutex::new((false, None)),
        }
    }

    pub fn notify(&self) {
        let mut s = self.state.lock();
        s.0 = true;
        if let Some(w) = s.1.take() {
            w.wake();
        }
    }

    /// Ready once `notify` was called since the last completed poll.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.state.lock();
        if core::mem::take(&mut s.0) {
            return Poll::Ready(());
        }
        s.1 = Some(cx.waker().clone());
        Poll::Pending
    }
}

/// Polls `a` then `b`; completes with whichever is ready first.
pub async fn select<A: Future, B: Future>(
    a: A,
    b: B,
) -> core::result::Result<A::Output, B::Output> {
    let mut a = core::pin::pin!(a);
    let mut b = core::pin::pin!(b);
    core::future::poll_fn(move |cx| {
        if let Poll::Ready(v) = a.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if let Poll::Ready(v) = b.as_mut().poll(cx) {
            return Poll::Ready(Err(v));
        }
        Poll::Pending
    })
    .await
}

/// A fair async lock for serialising access to a device across awaits
/// (a spin lock held across an await would deadlock the single CPU).
pub struct AsyncLock {
    state: spin::Mutex<(bool, VecDeque<Waker>)>,
}

pub struct AsyncLockGuard<'a>(&'a AsyncLock);

impl AsyncLock {
    pub const fn new() -> Self {
        AsyncLock {
            state: spin::Mutex::new((false, VecDeque::new())),
        }
    }

    pub async fn lock(&self) -> AsyncLockGuard<'_> {
        core::future::poll_fn(|cx| {
            let mut s = self.state.lock();
            if s.0 {
                s.1.push_back(cx.waker().clone());
                Poll::Pending
            } else {
                s.0 = true;
                Poll::Ready(())
            }
        })
        .await;
        AsyncLockGuard(self)
    }
}

impl Drop for AsyncLockGuard<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.0 = false;
        if let Some(w) = s.1.pop_front() {
            w.wake();
        }
    }
}
