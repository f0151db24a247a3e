//! The diagnostic service's protocol beyond `status`: errors, `time`, and
//! the streaming `sink`/`source` requests the TCP benchmark relies on.

use std::time::{SystemTime, UNIX_EPOCH};

use skiff_e2e::*;

#[test]
fn requests_errors_time_and_streams() {
    let _g = shared();
    let b = boot(user_net(Machine::Microvm));
    let ask = |line: &str| {
        b.diag
            .request(line)
            .unwrap_or_else(|e| b.fail(&format!("{line:?}: {e}")))
    };
    for (req, want) in [
        ("frobnicate", "error unknown-request"),
        ("sleep soon", "error bad-argument"),
        ("blk-read 0", "error no-block-device"),
    ] {
        let got = ask(req);
        if got.trim() != want {
            b.fail(&format!("{req:?} → {got:?}, want {want:?}"));
        }
    }
    let long = format!("status {}", "x".repeat(3000));
    let got = ask(&long);
    if got.trim() != "error line-too-long" {
        b.fail(&format!("3 KB request line → {got:?}"));
    }

    // `time`: RTC-based wall clock agrees with the host's (QEMU's RTC
    // starts at host UTC).
    let got = ask("time");
    let wall: Option<f64> = log::field(&got, "wall_unix").and_then(|v| v.parse().ok());
    let uptime: Option<u64> = log::field(&got, "uptime_us").and_then(|v| v.parse().ok());
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    match (wall, uptime) {
        (Some(w), Some(_)) if (w - host).abs() < 5.0 => {}
        _ => b.fail(&format!("time → {got:?}; host unix time {host:.0}")),
    }

    // Streams: exact byte counts both ways.
    let n = 3 << 20;
    match b.diag.sink(n, 64 * 1024) {
        Ok((got, _us)) if got == n => {}
        other => b.fail(&format!("sink {n} bytes → {other:?}")),
    }
    match b.diag.source(1_000_003) {
        Ok(1_000_003) => {}
        other => b.fail(&format!("source 1000003 → {other:?}")),
    }
    b.shutdown();
}
