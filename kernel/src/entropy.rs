//! Randomness: RDRAND (CPUID-checked, retried, all-ones/all-zeros rejected)
//! and virtio-rng seed a ChaCha20 CSPRNG. With neither source the kernel
//! has no CSPRNG and work that needs one fails closed: the node logs an
//! `ERROR` and does not join a control plane (no key, no TLS), and
//! `getrandom` fails. The node keeps running; the exit code `NO_ENTROPY`
//! is reserved and not raised (kernel/README.md).

use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};

use crate::arch::cpu;
use crate::drivers::Devices;

struct State {
    rng: Option<ChaCha20Rng>,
    sources: &'static str,
}

static STATE: spin::Mutex<State> = spin::Mutex::new(State {
    rng: None,
    sources: "none",
});

fn rdrand64() -> Option<u64> {
    if !cpu::has_rdrand() {
        return None;
    }
    for _ in 0..10 {
        let mut v = 0u64;
        // SAFETY: RDRAND exists (CPUID checked); it only writes `v`.
        let ok = unsafe { core::arch::x86_64::_rdrand64_step(&mut v) };
        // Some broken CPUs return all ones (or zeros) with success set.
        if ok == 1 && v != u64::MAX && v != 0 {
            return Some(v);
        }
    }
    None
}

/// Seeds the CSPRNG from every source present.
pub fn init(devs: &Devices) {
    let mut seed = [0u8; 32];
    let mut rdrand = true;
    for chunk in seed.chunks_exact_mut(8) {
        match rdrand64() {
            Some(v) => chunk.copy_from_slice(&v.to_le_bytes()),
            None => {
                rdrand = false;
                break;
            }
        }
    }
    if !rdrand {
        seed = [0; 32];
    }
    let mut virtio = false;
    if let Some(rng) = &devs.rng {
        let mut buf = alloc::vec![0u8; 32];
        let mut got = 0;
        let mut dev = rng.lock();
        for _ in 0..8 {
            match dev.request_entropy(&mut buf[got..]) {
                Ok(n) => got += n,
                Err(e) => {
                    warn!("entropy", "virtio-rng failed: {e:?}");
                    break;
                }
            }
            if got == buf.len() {
                break;
            }
        }
        if got == buf.len() {
            for (s, b) in seed.iter_mut().zip(&buf) {
                *s ^= b;
            }
            virtio = true;
        }
    }
    let sources = match (rdrand, virtio) {
        (true, true) => "rdrand+virtio-rng",
        (true, false) => "rdrand",
        (false, true) => "virtio-rng",
        (false, false) => "none",
    };
    let mut st = STATE.lock();
    st.sources = sources;
    st.rng = (rdrand || virtio).then(|| ChaCha20Rng::from_seed(seed));
    info!("entropy", "sources={sources}");
}

pub fn sources() -> &'static str {
    STATE.lock().sources
}

/// Fills `buf` from the CSPRNG; `false` when there is no entropy source.
pub fn fill(buf: &mut [u8]) -> bool {
    match STATE.lock().rng.as_mut() {
        Some(r) => {
            r.fill_bytes(buf);
            true
        }
        None => false,
    }
}

/// A non-cryptographic 16-bit value (ICMP identifiers).
pub fn weak_u16() -> u16 {
    let mut b = [0u8; 2];
    if !fill(&mut b) {
        return (crate::arch::time::rdtsc() as u16) | 1;
    }
    u16::from_le_bytes(b)
}

/// `getrandom`'s source on this target (rustls, key generation): the CSPRNG,
/// failing closed when the node has no entropy source.
fn getrandom_hook(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    if fill(buf) {
        Ok(())
    } else {
        Err(getrandom::Error::UNSUPPORTED)
    }
}
getrandom::register_custom_getrandom!(getrandom_hook);
