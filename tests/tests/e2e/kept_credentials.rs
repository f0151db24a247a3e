//! A kernel node that keeps its credentials on its disk
//! (`skiff.credentials=disk`) reconnects with them at the next boot instead
//! of bootstrapping again; a corrupted record is refused with the reason,
//! and the node bootstraps as on its first boot.

use std::io::{Read as _, Seek as _, SeekFrom, Write as _};

use skiff_e2e::plane::Plane;
use skiff_e2e::*;

const BOOTSTRAPPED: &str = "bootstrap: certificate issued for system:node:keeper";
const RESTORED: &str = "credentials restored for system:node:keeper";

fn ready(plane: &Plane, b: &Booted) {
    plane.wait_output(
        &[
            "get",
            "node",
            "keeper",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        "True",
        60,
        || b.node.log_text(),
    );
    plane.eventually(
        "the node to register",
        30,
        || b.node.log_text(),
        || b.node.log_text().contains("stage: node-registered"),
    );
}

#[test]
fn a_node_reconnects_with_the_certificate_kept_on_its_disk() {
    let _g = shared();
    let plane = Plane::start(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("node.raw");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let spec = || {
        plane
            .node_spec("keeper", &plane.token)
            .disk(&disk)
            .arg("skiff.credentials=disk")
    };

    // First boot: nothing kept yet, so a token bootstrap; the certificate
    // and key go to the disk.
    let mut b = boot(spec());
    ready(&plane, &b);
    plane.eventually(
        "the credentials to be saved",
        30,
        || b.node.log_text(),
        || b.node.log_text().contains("credentials saved to disk"),
    );
    let text = b.node.log_text();
    assert!(
        text.contains("bootstrapping: no saved credentials"),
        "{text}"
    );
    assert!(text.contains(BOOTSTRAPPED), "{text}");
    b.node.kill();

    // Second boot: the kept certificate, no bootstrap.
    let mut b = boot(spec());
    ready(&plane, &b);
    let text = b.node.log_text();
    assert!(text.contains(RESTORED), "{text}");
    assert!(!text.contains(BOOTSTRAPPED), "bootstrapped again:\n{text}");
    b.node.kill();

    // A flipped bit in the record: refused with the reason, then a
    // bootstrap (and a fresh record).
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)
        .unwrap();
    let mut byte = [0u8; 1];
    f.seek(SeekFrom::Start(100)).unwrap();
    f.read_exact(&mut byte).unwrap();
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(&[byte[0] ^ 1]).unwrap();
    drop(f);
    let mut b = boot(spec());
    ready(&plane, &b);
    let text = b.node.log_text();
    assert!(
        text.contains("bootstrapping: saved credentials are corrupt (checksum mismatch)"),
        "{text}"
    );
    assert!(text.contains(BOOTSTRAPPED), "{text}");
    b.node.kill();
}
