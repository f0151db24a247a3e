//! virtio-blk: a sector written through the diag service survives a reboot.

use std::io::{Read, Seek, SeekFrom};

use skiff_e2e::*;

const SECTOR: u64 = 5;

fn sector_on_host(path: &std::path::Path) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(SECTOR * 512)).unwrap();
    let mut buf = vec![0u8; 512];
    f.read_exact(&mut buf).unwrap();
    buf
}

#[test]
fn block_written_survives_reboot() {
    let _g = shared();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let data: Vec<u8> = (0..512u32).map(|i| (i * 7 + 3) as u8).collect();

    // Boot 1: write (allowed with the diag token `boot` gives the node and
    // its client), then an orderly shutdown.
    let b = boot(user_net(Machine::Microvm).disk(&disk));
    if !b
        .status
        .devices()
        .iter()
        .any(|d| d.starts_with("virtio-blk@mmio:"))
    {
        b.fail(&format!(
            "devices {:?} lack virtio-blk@mmio",
            b.status.devices()
        ));
    }
    match b.diag.blk_read(SECTOR) {
        Ok(d) if d == vec![0u8; 512] => {}
        other => b.fail(&format!("fresh disk sector {SECTOR}: {other:?}")),
    }
    if let Err(e) = b.diag.blk_write(SECTOR, &data) {
        b.fail(&format!("blk-write: {e}"));
    }
    b.shutdown();
    assert_eq!(
        sector_on_host(&disk),
        data,
        "the raw file holds the written sector"
    );

    // Boot 2: read back; writes without the token are refused.
    let b = boot(user_net(Machine::Microvm).disk(&disk));
    match b.diag.blk_read(SECTOR) {
        Ok(d) if d == data => {}
        other => b.fail(&format!("sector {SECTOR} after reboot: {other:?}")),
    }
    match b.diag.clone().without_token().blk_write(SECTOR, &[0xff; 2]) {
        Err(DiagError::Refused {
            failure: Failure::Unauthorized,
            ..
        }) => {}
        other => b.fail(&format!("blk-write without the diag token: {other:?}")),
    }
    b.shutdown();
    assert_eq!(
        sector_on_host(&disk),
        data,
        "refused write left the disk alone"
    );
}

#[test]
fn blk_read_without_disk_says_no_block_device() {
    let _g = shared();
    let b = boot(user_net(Machine::Microvm));
    let r = b.diag.request("blk-read 0").unwrap();
    if r.trim() != "error no-block-device" {
        b.fail(&format!("blk-read without a disk: {r:?}"));
    }
    b.shutdown();
}
