//! Monotonic time from the TSC.
//!
//! `uptime_us` counts from kernel entry. Until the TSC frequency is known
//! (see `calibrate`), it reads 0, which is what the first log lines show.

use core::sync::atomic::{AtomicU64, Ordering};

static TSC_AT_ENTRY: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);

pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; every x86_64 CPU has it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Records the entry timestamp (first thing the kernel does).
pub fn mark_entry() {
    TSC_AT_ENTRY.store(rdtsc(), Ordering::Relaxed);
}

pub fn set_tsc_hz(hz: u64) {
    TSC_HZ.store(hz, Ordering::Relaxed);
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Converts a TSC delta to microseconds (0 while uncalibrated).
pub fn tsc_to_us(ticks: u64) -> u64 {
    let hz = tsc_hz();
    if hz == 0 {
        return 0;
    }
    ((u128::from(ticks) * 1_000_000) / u128::from(hz)) as u64
}

pub fn us_to_tsc(us: u64) -> u64 {
    ((u128::from(us) * u128::from(tsc_hz())) / 1_000_000) as u64
}

/// Microseconds since kernel entry.
pub fn uptime_us() -> u64 {
    tsc_to_us(rdtsc().saturating_sub(TSC_AT_ENTRY.load(Ordering::Relaxed)))
}

/// Where the TSC frequency came from.
#[derive(Debug, Clone, Copy)]
pub enum TscSource {
    KvmClock,
    CpuidCrystal,
    CpuidBase,
    Hypervisor,
    Pit,
    /// Nothing to measure against: timers and timestamps may be off.
    Nominal,
}

/// Assumed TSC frequency when nothing can measure it.
const NOMINAL_TSC_HZ: u64 = 2_000_000_000;

impl TscSource {
    pub fn name(self) -> &'static str {
        match self {
            TscSource::KvmClock => "kvmclock",
            TscSource::CpuidCrystal => "cpuid-0x15",
            TscSource::CpuidBase => "cpuid-0x16",
            TscSource::Hypervisor => "cpuid-0x40000010",
            TscSource::Pit => "pit",
            TscSource::Nominal => "nominal",
        }
    }
}

fn cpuid_tsc_hz() -> Option<(u64, TscSource)> {
    use crate::arch::cpu;
    if cpu::has_hypervisor() && cpu::cpuid(0x4000_0000).eax >= 0x4000_0010 {
        let khz = cpu::cpuid(0x4000_0010).eax;
        if khz != 0 {
            return Some((u64::from(khz) * 1000, TscSource::Hypervisor));
        }
    }
    let max = cpu::max_leaf();
    if max >= 0x15 {
        let r = cpu::cpuid(0x15);
        if r.eax != 0 && r.ebx != 0 && r.ecx != 0 {
            let hz = u64::from(r.ecx) * u64::from(r.ebx) / u64::from(r.eax);
            return Some((hz, TscSource::CpuidCrystal));
        }
    }
    if max >= 0x16 {
        let mhz = cpu::cpuid(0x16).eax & 0xffff;
        if mhz != 0 {
            return Some((u64::from(mhz) * 1_000_000, TscSource::CpuidBase));
        }
    }
    None
}

const PIT_HZ: u64 = 1_193_182;
/// Calibration window: short, since boot time matters more than the last
/// few ppm (the RTC anchors wall time, and timers only need to be close).
const CALIBRATION_PIT_TICKS: u64 = PIT_HZ / 500; // 2 ms

fn pit_read() -> u16 {
    use x86_64::instructions::port::Port;
    // SAFETY: latching and reading PIT channel 0's counter has no effect
    // beyond the read (channel 0's IRQ is masked at the PIC and I/O APIC).
    unsafe {
        Port::<u8>::new(0x43).write(0x00);
        let lo = Port::<u8>::new(0x40).read();
        let hi = Port::<u8>::new(0x40).read();
        u16::from_le_bytes([lo, hi])
    }
}

/// Measures the TSC against the PIT, unless CPUID gives its frequency.
/// Interrupts must be off.
pub fn calibrate() -> TscSource {
    if let Some((hz, unix)) = crate::arch::kvmclock::init() {
        set_tsc_hz(hz);
        set_wall(unix);
        return TscSource::KvmClock;
    }
    if let Some((hz, src)) = cpuid_tsc_hz() {
        set_tsc_hz(hz);
        return src;
    }
    // SAFETY: programs PIT channel 0 as a free-running rate generator
    // (mode 2, reload 65536) so its counter can be sampled; its IRQ is
    // masked (PIC masked by `apic::init`, I/O APIC pins masked).
    unsafe {
        use x86_64::instructions::port::Port;
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0x43).write(0x34);
        Port::<u8>::new(0x40).write(0);
        Port::<u8>::new(0x40).write(0);
    }
    let mut last = pit_read();
    let mut elapsed = 0u64;
    let t0 = rdtsc();
    let mut t1;
    let mut reads = 0u32;
    loop {
        let now = pit_read();
        elapsed += u64::from(last.wrapping_sub(now));
        last = now;
        t1 = rdtsc();
        reads += 1;
        if elapsed >= CALIBRATION_PIT_TICKS {
            break;
        }
        // No PIT (a counter that never moves): give up rather than hang.
        if elapsed == 0 && reads > 100_000 {
            set_tsc_hz(NOMINAL_TSC_HZ);
            return TscSource::Nominal;
        }
    }
    set_tsc_hz((t1 - t0) * PIT_HZ / elapsed);
    TscSource::Pit
}

static WALL_AT_ENTRY: AtomicU64 = AtomicU64::new(0);

fn set_wall(unix_now: u64) {
    WALL_AT_ENTRY.store(
        unix_now.saturating_sub(uptime_us() / 1_000_000),
        Ordering::Relaxed,
    );
}

/// Unix seconds now (RTC or kvmclock at boot + monotonic since).
pub fn wall_unix() -> u64 {
    WALL_AT_ENTRY.load(Ordering::Relaxed) + uptime_us() / 1_000_000
}

fn cmos(reg: u8) -> u8 {
    use x86_64::instructions::port::Port;
    // SAFETY: selecting a CMOS register (NMI stays enabled: bit 7 clear)
    // and reading it has no other effect.
    unsafe {
        Port::<u8>::new(0x70).write(reg);
        Port::<u8>::new(0x71).read()
    }
}

/// Reads the CMOS RTC once at boot and anchors wall time to it. Returns
/// `None` (wall time stays 0) when the RTC is absent or reads nonsense.
pub fn rtc_init() -> Option<u64> {
    if WALL_AT_ENTRY.load(Ordering::Relaxed) != 0 {
        return Some(wall_unix()); // kvmclock already gave it
    }
    // Wait out an update in progress (it lasts < 2 ms; port I/O can be very
    // slow under nested virtualisation, so bound the wait in time, not
    // iterations), then read until two snapshots agree.
    let limit = us_to_tsc(3000);
    let read_all = || {
        let t0 = rdtsc();
        while cmos(0x0a) & 0x80 != 0 && rdtsc() - t0 < limit {}
        [
            cmos(0x00),
            cmos(0x02),
            cmos(0x04),
            cmos(0x07),
            cmos(0x08),
            cmos(0x09),
            cmos(0x32),
        ]
    };
    let mut v = read_all();
    for _ in 0..3 {
        let w = read_all();
        if w == v {
            break;
        }
        v = w;
    }
    let status_b = cmos(0x0b);
    let bcd = status_b & 0x04 == 0;
    let conv = |x: u8| if bcd { (x & 0x0f) + (x >> 4) * 10 } else { x };
    let sec = conv(v[0]);
    let min = conv(v[1]);
    let mut hour = conv(v[2] & 0x7f);
    if status_b & 0x02 == 0 && v[2] & 0x80 != 0 {
        hour = (hour % 12) + 12; // 12-hour mode, PM
    }
    let day = conv(v[3]);
    let month = conv(v[4]);
    let century = match conv(v[6]) {
        c @ 19..=21 => u64::from(c),
        _ => 20,
    };
    let year = century * 100 + u64::from(conv(v[5]));
    if sec > 59
        || min > 59
        || hour > 23
        || !(1..=31).contains(&day)
        || !(1..=12).contains(&month)
        || year < 1970
    {
        warn!(
            "time",
            "implausible RTC reading raw={v:02x?} status_b={status_b:#x}"
        );
        return None;
    }
    let unix = days_from_civil(year, u64::from(month), u64::from(day)) * 86_400
        + u64::from(hour) * 3600
        + u64::from(min) * 60
        + u64::from(sec);
    WALL_AT_ENTRY.store(
        unix.saturating_sub(uptime_us() / 1_000_000),
        Ordering::Relaxed,
    );
    Some(unix)
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm, years ≥ 1970).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}
