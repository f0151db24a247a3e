//! Bad boot input: a clear log line naming the problem and the defined exit
//! code, never a hang.

use std::time::Duration;

use skiff_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Runs to exit, expects `want`, an `ERROR` line whose text contains every
/// word of `names`, and the exit announcement.
fn rejected(spec: NodeSpec, want: KernelExit, names: &[&str]) {
    let (exit, node) = run_to_exit(spec, TIMEOUT);
    let log = node.log_text();
    assert_eq!(exit, want, "log:\n{log}");
    let lines = node.lines();
    let explained = lines.iter().any(|l| {
        let lower = l.text.to_lowercase();
        l.record().is_some_and(|r| r.level == log::Level::Error)
            && names.iter().all(|n| lower.contains(&n.to_lowercase()))
    });
    assert!(explained, "no ERROR line naming {names:?}\nlog:\n{log}");
    assert!(
        lines
            .iter()
            .any(|l| l.record().and_then(|r| r.exit()).is_some_and(|c| want == c)),
        "no `exit code={}` line\nlog:\n{log}",
        want.name().unwrap()
    );
}

#[test]
fn unknown_skiff_key_is_config_error() {
    let _g = shared();
    rejected(
        user_net(Machine::Microvm).arg("skiff.bogus=1"),
        KernelExit::Code(ExitCode::Config),
        &["skiff.bogus"],
    );
}

#[test]
fn malformed_ip_is_config_error() {
    let _g = shared();
    rejected(
        user_net(Machine::Microvm).args(["skiff.net=static skiff.ip=300.1.2.3/24"]),
        KernelExit::Code(ExitCode::Config),
        &["skiff.ip", "300.1.2.3"],
    );
}

#[test]
fn static_without_ip_is_config_error() {
    let _g = shared();
    rejected(
        user_net(Machine::Microvm).arg("skiff.net=static"),
        KernelExit::Code(ExitCode::Config),
        &["skiff.ip"],
    );
}

#[test]
fn no_network_device_is_no_device() {
    let _g = shared();
    rejected(
        spec(Machine::Microvm),
        KernelExit::Code(ExitCode::NoDevice),
        &["net"],
    );
}

#[test]
fn no_network_device_is_fine_with_net_none() {
    let _g = shared();
    let mut node = spec(Machine::Microvm)
        .arg("skiff.net=none")
        .launch()
        .expect("launching QEMU");
    if let Err(e) = node.wait_for_stage("devices", TIMEOUT) {
        panic!("skiff.net=none without a device did not reach `devices`: {e}");
    }
    // It must not then stop for the missing device.
    std::thread::sleep(Duration::from_millis(500));
    let exit = node.try_exit().unwrap();
    assert!(
        exit.is_none(),
        "exited {exit:?} with skiff.net=none\nlog:\n{}",
        node.log_text()
    );
}
