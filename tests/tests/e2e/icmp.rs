//! ICMP: the guest answers echo requests from outside QEMU (tap in a network
//! namespace), and the kernel's own ICMP client (`ping`) reaches its gateway.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use skiff_e2e::netns::{NetNs, icmp_echo};
use skiff_e2e::*;

#[test]
fn diag_ping_gateway_over_user_net() {
    let _g = shared();
    let booted = boot(user_net(Machine::Microvm));
    // Slirp's virtual gateway answers echo requests itself.
    match booted.diag.ping(Ipv4Addr::new(10, 0, 2, 2)) {
        Ok(Some(rtt_us)) => eprintln!("diag ping 10.0.2.2: rtt {rtt_us} us"),
        Ok(None) => booted.fail("diag `ping 10.0.2.2` timed out"),
        Err(e) => booted.fail(&format!("diag `ping 10.0.2.2`: {e}")),
    }
    booted.shutdown();
}

#[test]
fn guest_answers_icmp_echo_on_tap() {
    let _g = shared();
    let ns = NetNs::with_tap("192.168.77.1/24").expect("network namespace with a tap device");
    let guest = Ipv4Addr::new(192, 168, 77, 2);
    let token = new_diag_token().expect("diag token");
    let mut spec = spec(Machine::Microvm)
        .net(Net::Tap {
            ifname: ns.tap.clone(),
        })
        .netns(ns.name.clone())
        .args([
            "skiff.net=static skiff.ip=192.168.77.2/24 skiff.gw=192.168.77.1",
            &format!("skiff.diag={DIAG_PORT}"),
            &format!("skiff.diag_token={token}"),
        ]);
    spec.mac = Some("52:54:00:12:34:77".into());
    let mut node = spec.launch().expect("launching QEMU in the namespace");
    if let Err(e) = node.wait_for_stage("diag-ready", boot_timeout(Machine::Microvm)) {
        panic!("node on tap did not reach diag-ready: {e}");
    }

    // Everything below runs inside the namespace, where the tap lives.
    let result = ns
        .run(move || -> Result<(), String> {
            for seq in 1..=3 {
                let rtt = icmp_echo(guest, seq, Duration::from_secs(2))
                    .map_err(|e| format!("echo {seq}: {e}"))?;
                eprintln!("icmp echo {seq} to {guest}: {rtt:?}");
            }
            let diag = DiagClient::connect(
                SocketAddr::from((guest, DIAG_PORT)),
                Duration::from_secs(10),
            )
            .map_err(|e| e.to_string())?
            .with_token(Some(token));
            match diag
                .ping(Ipv4Addr::new(192, 168, 77, 1))
                .map_err(|e| e.to_string())?
            {
                Some(rtt) => eprintln!("diag ping gateway 192.168.77.1: {rtt} us"),
                None => return Err("diag `ping 192.168.77.1` (gateway on tap) timed out".into()),
            }
            let bye = diag.shutdown().map_err(|e| e.to_string())?;
            if bye.trim() != "bye" {
                return Err(format!("shutdown reply {bye:?}"));
            }
            Ok(())
        })
        .expect("entering the namespace");
    if let Err(e) = result {
        panic!("{e}\nlog:\n{}", node.log_text());
    }
    let exit = node
        .wait(Duration::from_secs(20))
        .expect("exit after shutdown");
    assert_eq!(
        exit,
        KernelExit::Code(ExitCode::Success),
        "log:\n{}",
        node.log_text()
    );
}
