//! `skiff node run` end to end: the real kernel under QEMU, through the binary.

use std::process::Command;

#[test]
fn node_run_prints_serial_and_exits_with_kernel_code() {
    let _g = skiff_e2e::shared();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["node", "run", "--kernel"])
        .arg(skiff_e2e::kernel())
        .args(["--", "skiff.bogus=1"])
        .output()
        .expect("running skiff");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(37),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.starts_with("[0.000000] INFO  skiff: skiff-kernel "),
        "{stdout}"
    );
    assert!(stdout.contains("skiff.bogus"), "{stdout}");
    assert!(stderr.contains("CONFIG"), "{stderr}");
}

#[test]
fn dry_run_prints_the_qemu_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "node",
            "run",
            "--kernel",
            "k.elf",
            "--dry-run",
            "--",
            "skiff.net=none",
        ])
        .output()
        .expect("running skiff");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.starts_with("qemu-system-x86_64 -machine microvm,acpi=off "),
        "{stdout}"
    );
    assert!(
        stdout.contains("-kernel k.elf -append skiff.net=none"),
        "{stdout}"
    );
}
