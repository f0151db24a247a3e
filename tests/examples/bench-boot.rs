//! `cargo xtask bench boot`: boots the kernel under microvm (TCG unless
//! SKIFF_KVM=1) repeatedly and measures, from QEMU's spawn, the first serial
//! byte, the kernel's entry line, `stage: net-up` and the diag service
//! answering `status`; plus the ELF size, the smallest RAM that boots, and the
//! kernel's own stage times.
//!
//! Options: `--out PATH`, `--boots N` (default 12).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use skiff_e2e::bench::{Args, Figure, write_report};
use skiff_e2e::*;

struct Sample {
    first_byte_ms: f64,
    entry_ms: f64,
    net_up_ms: f64,
    diag_ms: f64,
    stages_us: Vec<(String, u64)>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One boot with `mem` MiB; an error if it never reaches a `status` answer.
fn boot_once(mem: u32, timeout: Duration) -> Result<Sample, String> {
    let port = skiff_qemu::free_port().map_err(|e| e.to_string())?;
    let spec = spec(Machine::Microvm)
        .memory_mib(mem)
        .net(Net::User {
            hostfwd: vec![HostFwd::new(port, DIAG_PORT)],
            subnet: None,
        })
        .arg(format!("skiff.diag={DIAG_PORT}"))
        // `shutdown` at the end needs it; the client gets it from the spec.
        .arg(format!(
            "skiff.diag_token={}",
            new_diag_token().map_err(|e| e.to_string())?
        ));
    let mut node = spec.launch().map_err(|e| e.to_string())?;
    let t0 = node.started();
    let diag = node
        .diag(DIAG_PORT)
        .ok_or("no forward to the diag port")?
        .with_timeout(Duration::from_secs(2));
    // (c): ask only once the kernel logs `diag-ready`. Earlier, QEMU's
    // hostfwd accepts and then retries its SYN to a guest without an address
    // for seconds, which would measure slirp's retransmit timer.
    node.wait_for_stage("diag-ready", timeout)
        .map_err(|e| format!("no `stage: diag-ready`: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let diag_at = loop {
        if diag.status().is_ok() {
            break Instant::now();
        }
        if Instant::now() > deadline {
            return Err(format!(
                "no `status` answer after diag-ready:\n{}",
                node.log_text()
            ));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let entry = node
        .wait_for_stage("entry", Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let net_up = node
        .wait_for_stage("net-up", Duration::from_secs(1))
        .map_err(|e| e.to_string())?;
    let stages_us = node
        .lines()
        .iter()
        .filter_map(|l| {
            l.record()
                .and_then(|r| r.stage())
                .map(|(n, t)| (n.to_owned(), t))
        })
        .collect();
    let sample = Sample {
        first_byte_ms: ms(node.first_byte().unwrap_or(entry.at) - t0),
        entry_ms: ms(entry.at - t0),
        net_up_ms: ms(net_up.at - t0),
        diag_ms: ms(diag_at - t0),
        stages_us,
    };
    let _ = diag.shutdown();
    let _ = node.wait(Duration::from_secs(10));
    Ok(sample)
}

fn main() {
    let args = Args::parse("target/bench/boot.json");
    let boots: usize = args.get("boots", 12);
    require_qemu();
    let elf = kernel();
    let accel = accel();

    let mut samples = Vec::new();
    for i in 0..boots {
        match boot_once(32, Duration::from_secs(30)) {
            Ok(s) => {
                eprintln!(
                    "boot {i}: first byte {:.1} ms, entry {:.1} ms, net-up {:.1} ms, diag {:.1} ms",
                    s.first_byte_ms, s.entry_ms, s.net_up_ms, s.diag_ms
                );
                samples.push(s);
            }
            Err(e) => panic!("boot {i} failed: {e}"),
        }
    }

    let mut figures = Vec::new();
    let mut stat = |name: &str, f: &dyn Fn(&Sample) -> f64| {
        let v: Vec<f64> = samples.iter().map(f).collect();
        figures.push(Figure::new(
            format!("{name}_median"),
            "ms",
            median(&v),
            "lower",
        ));
        figures.push(Figure::new(
            format!("{name}_p90"),
            "ms",
            percentile(&v, 90.0),
            "lower",
        ));
    };
    stat("spawn_to_first_serial_byte", &|s| s.first_byte_ms);
    stat("spawn_to_entry_line", &|s| s.entry_ms);
    stat("spawn_to_net_up", &|s| s.net_up_ms);
    stat("spawn_to_diag_status", &|s| s.diag_ms);

    // Kernel-reported stage times (µs since entry), median over boots.
    let mut by_stage: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for s in &samples {
        for (n, t) in &s.stages_us {
            by_stage.entry(n.clone()).or_default().push(*t as f64);
        }
    }
    for stage in log::STAGES {
        if let Some(v) = by_stage.get(stage) {
            figures.push(Figure::new(
                format!("kernel_stage_{stage}_median"),
                "us",
                median(v),
                "lower",
            ));
        }
    }

    let size = std::fs::metadata(&elf).map(|m| m.len()).unwrap_or(0);
    figures.push(Figure::new(
        "kernel_elf_size",
        "bytes",
        size as f64,
        "lower",
    ));

    // Smallest guest RAM that still answers `status` (ascending; first success).
    let mut notes = vec![format!(
        "{boots} boots, microvm, {accel:?}, 1 vCPU, 32 MiB, user networking; times from QEMU spawn on the host; kernel {}",
        elf.display()
    )];
    let mut min_ram = None;
    for mem in [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64] {
        match boot_once(mem, Duration::from_secs(10)) {
            Ok(_) => {
                min_ram = Some(mem);
                break;
            }
            Err(e) => {
                let first = e
                    .lines()
                    .find(|l| log::parse(l).is_some_and(|r| r.level == log::Level::Error))
                    .unwrap_or("");
                eprintln!("{mem} MiB: no `status` answer {first}");
            }
        }
    }
    match min_ram {
        Some(m) => figures.push(Figure::new(
            "min_guest_ram_to_diag_status",
            "MiB",
            f64::from(m),
            "lower",
        )),
        None => notes.push("no tried RAM size (1..64 MiB) reached `status`".into()),
    }
    notes.push(
        "min RAM: first of 1,2,3,4,6,8,12,16,24,32,48,64 MiB whose diag answers `status`".into(),
    );
    write_report(&args.out, "boot", &figures, &notes);
}
