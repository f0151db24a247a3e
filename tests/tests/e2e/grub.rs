//! The bare-metal boot path: a GRUB hybrid ISO built by `skiff-node-image`
//! boots the same kernel ELF through its Multiboot2 header under SeaBIOS
//! (q35, virtio-pci). No `-kernel` is passed, so PVH cannot be what booted.

use skiff_e2e::*;

#[test]
fn grub_iso_boots_the_kernel_via_multiboot2() {
    let _qemu = shared();
    let dir = tempfile::tempdir().unwrap();
    let iso = dir.path().join("node.iso");
    let token = new_diag_token().unwrap();
    skiff_node_image::grub_iso(
        &kernel(),
        &format!("skiff.diag={DIAG_PORT} skiff.diag_token={token} skiff.log=debug"),
        &iso,
    )
    .unwrap_or_else(|e| panic!("building the ISO: {e} (run `cargo xtask setup`)"));

    // The ISO's command line is the one that boots; the spec's copy of the
    // token only tells `boot` and its diag client which one the node has.
    let booted = boot(
        user_net(Machine::Q35)
            .cdrom(&iso)
            .arg(format!("skiff.diag_token={token}")),
    );
    let log = booted.node.log_text();
    if !log.contains("boot: protocol=multiboot2") {
        booted.fail("the kernel did not report a Multiboot2 boot");
    }
    let devices = booted.status.devices().join(",");
    if !devices.contains("virtio-net@pci") {
        booted.fail(&format!("devices {devices:?}: want virtio-net on pci"));
    }
    if booted
        .status
        .fields()
        .ip
        .is_none_or(|ip| ip.address != std::net::Ipv4Addr::new(10, 0, 2, 15))
    {
        booted.fail("no DHCP address");
    }
    booted.shutdown();
}
