//! Boot under microvm and q35; address by DHCP and by the command line; the
//! host reaches the diag service through QEMU's hostfwd.

use std::net::Ipv4Addr;

use skiff_e2e::*;

const NET_BLK_RNG: [&str; 3] = ["virtio-net", "virtio-blk", "virtio-rng"];

/// The address without its prefix length (`ip` may be given as `a.b.c.d/len`).
fn addr(v: &str) -> &str {
    v.split('/').next().unwrap_or(v)
}

/// Boots, checks the serial log contract, `status` and that each of
/// `devices` (e.g. `virtio-net`) is listed on `bus`, shuts down.
fn check(spec: NodeSpec, ip: &str, gateway: &str, bus: &str, devices: &[&str]) {
    let booted = boot(spec);
    let lines = booted.node.lines();

    // Serial log contract: first line, every line's format, stages in order.
    let first = &lines[0].text;
    assert!(
        first.starts_with("[0.000000] INFO  skiff: skiff-kernel ") && first.contains(" build="),
        "first serial line: {first:?}"
    );
    for l in &lines {
        if l.record().is_none() {
            booted.fail(&format!("serial line breaks the log format: {:?}", l.text));
        }
    }
    let stages: Vec<(String, u64)> = lines
        .iter()
        .filter_map(|l| {
            l.record()
                .and_then(|r| r.stage())
                .map(|(n, t)| (n.to_owned(), t))
        })
        .collect();
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    if names != log::STAGES {
        booted.fail(&format!(
            "stages {names:?}, want {:?} once each",
            log::STAGES
        ));
    }
    if !stages.windows(2).all(|w| w[0].1 <= w[1].1) {
        booted.fail(&format!("stage times not monotonic: {stages:?}"));
    }
    let net_up = lines
        .iter()
        .find_map(|l| {
            l.record()
                .filter(|r| r.stage().is_some_and(|s| s.0 == "net-up"))
                .and_then(|r| r.field("ip"))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    if addr(&net_up) != ip || !net_up.contains('/') {
        booted.fail(&format!("`stage: net-up` ip={net_up:?}, want {ip}/<len>"));
    }

    // The diag service, reached over TCP through hostfwd (its `status`
    // has every field: skiff-diag's parser checked that).
    let s = &booted.status;
    let f = s.fields();
    let got_ip = f.ip.map(|c| c.address.to_string());
    let got_gw = f.gateway.map(|g| g.to_string());
    if got_ip.as_deref() != Some(ip) || got_gw.as_deref() != Some(gateway) {
        booted.fail(&format!("status {s:?}, want ip {ip} via {gateway}"));
    }
    for dev in devices {
        let prefix = format!("{dev}@{bus}:");
        if !s.devices().iter().any(|d| d.starts_with(&prefix)) {
            booted.fail(&format!("devices {:?} lack {prefix}…", s.devices()));
        }
    }
    if devices.contains(&"virtio-rng") && !f.entropy.contains("virtio-rng") {
        booted.fail(&format!("entropy={:?} with a virtio-rng device", f.entropy));
    }
    booted.shutdown();
}

#[test]
fn microvm_dhcp() {
    let _g = shared();
    // A non-default slirp network: the address can only come from DHCP.
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(1 << 20).unwrap();
    let spec = spec(Machine::Microvm)
        .net(Net::User {
            hostfwd: vec![],
            subnet: Some("10.9.8.0/24".into()),
        })
        .disk(disk.path())
        .rng(true)
        // Debug lines must follow the log format too.
        .arg("skiff.log=debug");
    check(spec, "10.9.8.15", "10.9.8.2", "mmio", &NET_BLK_RNG);
}

#[test]
fn microvm_static_from_command_line() {
    let _g = shared();
    let spec = user_net(Machine::Microvm)
        .args(["skiff.net=static skiff.ip=10.0.2.15/24 skiff.gw=10.0.2.2"]);
    check(spec, "10.0.2.15", "10.0.2.2", "mmio", &["virtio-net"]);
}

#[test]
fn microvm_static_address_dhcp_would_not_give() {
    let _g = shared();
    let spec = spec(Machine::Microvm)
        .net(Net::User {
            hostfwd: vec![HostFwd {
                host_port: skiff_qemu::free_port().unwrap(),
                guest_port: DIAG_PORT,
                guest_addr: Some(Ipv4Addr::new(10, 0, 2, 77)),
            }],
            subnet: None,
        })
        .args(["skiff.net=static skiff.ip=10.0.2.77/24 skiff.gw=10.0.2.2"]);
    check(spec, "10.0.2.77", "10.0.2.2", "mmio", &["virtio-net"]);
}

#[test]
fn q35_dhcp() {
    let _g = shared();
    let disk = tempfile::NamedTempFile::new().unwrap();
    disk.as_file().set_len(1 << 20).unwrap();
    let spec = spec(Machine::Q35)
        .net(Net::User {
            hostfwd: vec![],
            subnet: Some("10.9.8.0/24".into()),
        })
        .disk(disk.path())
        .rng(true);
    check(spec, "10.9.8.15", "10.9.8.2", "pci", &NET_BLK_RNG);
}

#[test]
fn q35_static_from_command_line() {
    let _g = shared();
    let spec =
        user_net(Machine::Q35).args(["skiff.net=static skiff.ip=10.0.2.15/24 skiff.gw=10.0.2.2"]);
    check(spec, "10.0.2.15", "10.0.2.2", "pci", &["virtio-net"]);
}

/// A small node and a large one both boot, and all their memory but the
/// kernel image and a small reserve goes to the heap and the region pool
/// (a 1 GiB node once ran out of frames splitting its identity map).
#[test]
fn nodes_small_and_large_give_their_memory_to_heap_and_pool() {
    let _g = shared();
    for mib in [32u64, 1024] {
        let b = boot(user_net(Machine::Microvm).memory_mib(mib as u32));
        let f = b.status.fields();
        let (usable, total) = (f.heap_total + f.pool_total, mib << 20);
        // Low memory, the image, DMA and stack reserve, page tables.
        let overhead = (8 << 20) + total / 128;
        if usable + overhead < total {
            b.fail(&format!(
                "{mib} MiB node: heap {} + pool {} bytes, want at least {}",
                f.heap_total,
                f.pool_total,
                total - overhead
            ));
        }
        b.shutdown();
    }
}
