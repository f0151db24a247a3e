//! Launches Skiff nodes (the kernel in `kernel/`) under QEMU and observes them
//! from the host, following the contract in `kernel/README.md`:
//!
//! - [`NodeSpec`] describes a node and builds the exact QEMU command line
//!   (microvm or q35, TCG or KVM, user/tap/segment networking, virtio-blk disks,
//!   virtio-rng);
//! - [`Segment`] is a flat L2 network for several nodes without root: a
//!   userspace [`Hub`] (QEMU's `-netdev stream` framing) plus a router QEMU
//!   bridging slirp onto it for DHCP, a gateway and live host forwards to
//!   any address on the segment;
//! - [`NodeSpec::launch`] starts QEMU and returns a [`Node`], which timestamps
//!   every serial line as it arrives, waits for log lines, maps QEMU's exit
//!   status to [`KernelExit`] and kills QEMU when dropped;
//! - [`DiagClient`] talks to the kernel's diagnostic TCP service in
//!   `skiff-diag`'s protocol (shared with the kernel);
//! - [`log`] is the serial log format (`skiff-serial-log`), shared with
//!   the kernel that writes it.

mod diag;
mod exit;
mod hub;
mod node;
mod segment;
mod spec;

pub use diag::{DiagClient, DiagError, Status, new_diag_token};
pub use exit::{ExitCode, KernelExit};
pub use hub::{Hub, MAX_FRAME};
pub use node::{LineHook, LogLine, Node, WaitError};
pub use segment::{SEGMENT_DHCP_START, SEGMENT_DNS, SEGMENT_GATEWAY, SEGMENT_NET, Segment};
pub use skiff_diag::Failure;
pub use skiff_serial_log as log;
pub use spec::{Accel, HostFwd, Machine, Net, NodeSpec, free_port};

/// The QEMU binary used unless [`NodeSpec::qemu`] overrides it.
pub const QEMU: &str = "qemu-system-x86_64";

/// Whether QEMU can be started at all (`qemu-system-x86_64 --version`).
/// Callers turn a `false` into an error telling to run `cargo xtask setup`.
pub fn qemu_available(qemu: &str) -> bool {
    std::process::Command::new(qemu)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}
