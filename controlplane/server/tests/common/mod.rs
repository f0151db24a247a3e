//! What the binary's tests share: child processes killed on drop, free
//! ports, output text, polling.
#![allow(dead_code)]

use std::process::Output;

pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub fn contains_all(hay: &str, needles: &[&str]) {
    for n in needles {
        assert!(hay.contains(n), "expected {n:?} in:\n{hay}");
    }
}

/// Retries `check` until it passes or `secs` run out; the failure names
/// `check`'s last error. (`skiff_test_support::eventually` polls.)
#[track_caller]
pub fn eventually(secs: u64, what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let last = std::cell::RefCell::new(String::new());
    skiff_test_support::eventually(
        what,
        secs,
        || last.borrow().clone(),
        || match check() {
            Ok(()) => true,
            Err(e) => {
                *last.borrow_mut() = e;
                false
            }
        },
    );
}
