//! End-to-end test support: finds (or builds) the kernel, launches nodes under
//! QEMU through `skiff-qemu`, and turns every failure into a panic that
//! carries the node's serial log. The tests are in `tests/tests/e2e/`, one
//! test binary (`cargo test -p skiff-e2e --test e2e MODULE::`).
//!
//! Environment: `SKIFF_KERNEL` (kernel ELF; built with the `kernel` profile
//! when unset), `SKIFF_KVM=1` (KVM instead of TCG). QEMU is required: a
//! missing QEMU fails the tests with a pointer to `cargo xtask setup`.
//! QEMU tests hold [`shared`] (or [`exclusive`] for timing-sensitive ones).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

pub use skiff_qemu::{
    Accel, DiagClient, DiagError, ExitCode, Failure, HostFwd, KernelExit, Machine, Net, Node,
    NodeSpec, Segment, Status, WaitError, log, new_diag_token,
};

pub mod cluster;
pub mod guests;
pub mod netns;
pub mod plane;
pub mod registry;

pub use skiff_test_support::{Scrape, api, bench, eventually, median, peers, percentile};

/// Guest port of the diagnostic service in every test.
pub const DIAG_PORT: u16 = 7000;

/// The kernel ELF: `$SKIFF_KERNEL`, or built once with the `kernel` profile.
pub fn kernel() -> PathBuf {
    static KERNEL: OnceLock<PathBuf> = OnceLock::new();
    KERNEL
        .get_or_init(|| match std::env::var_os("SKIFF_KERNEL") {
            Some(p) => {
                let p = PathBuf::from(p);
                assert!(p.is_file(), "SKIFF_KERNEL={} is not a file", p.display());
                p
            }
            None => skiff_build::build_kernel().unwrap_or_else(|e| panic!("{e}")),
        })
        .clone()
}

/// Fails (never skips) when QEMU is missing.
pub fn require_qemu() {
    assert!(
        skiff_qemu::qemu_available(skiff_qemu::QEMU),
        "{} is not installed or does not run: run `cargo xtask setup`",
        skiff_qemu::QEMU
    );
}

/// TCG unless `SKIFF_KVM=1` (KVM here is nested and has timer quirks).
pub fn accel() -> Accel {
    match std::env::var("SKIFF_KVM").as_deref() {
        Ok("1") => Accel::Kvm,
        _ => Accel::Tcg,
    }
}

static QEMU_LOCK: RwLock<()> = RwLock::new(());

/// Held by every QEMU test: ordinary tests share it (they may run in
/// parallel), timing tests take it exclusively via [`exclusive`].
pub fn shared() -> RwLockReadGuard<'static, ()> {
    require_qemu();
    QEMU_LOCK.read().unwrap_or_else(|e| e.into_inner())
}

/// For timing tests: no other QEMU of this test process runs meanwhile.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    require_qemu();
    QEMU_LOCK.write().unwrap_or_else(|e| e.into_inner())
}

/// A node spec for the test kernel on `machine` with the test accelerator.
pub fn spec(machine: Machine) -> NodeSpec {
    NodeSpec::new(kernel()).machine(machine).accel(accel())
}

/// How long a boot to `diag-ready` may take (generous: a hang fails, a slow
/// shared CI machine should not). q35 runs SeaBIOS first.
pub fn boot_timeout(machine: Machine) -> Duration {
    match machine {
        Machine::Microvm => Duration::from_secs(30),
        Machine::Q35 => Duration::from_secs(90),
    }
}

/// A node whose diag service answers.
pub struct Booted {
    pub node: Node,
    pub diag: DiagClient,
    pub status: Status,
}

/// Adds `skiff.diag`, a fresh `skiff.diag_token` (unless the spec has one;
/// the returned client sends it) and (for user networking) a hostfwd to it,
/// launches, waits for the `diag-ready` stage and for `status` to answer.
pub fn boot(spec: NodeSpec) -> Booted {
    try_boot(spec).unwrap_or_else(|e| panic!("{e}"))
}

/// [`boot`], with failures as errors (benchmarks probing limits).
pub fn try_boot(spec: NodeSpec) -> Result<Booted, String> {
    let spec = with_diag(spec)?;
    let ours = matches!(&spec.net, Net::User { hostfwd, .. }
        if !hostfwd.iter().any(|f| f.guest_port == DIAG_PORT));
    let timeout = boot_timeout(spec.machine);
    let mut attempt = 0;
    let node = loop {
        let mut spec = spec.clone();
        if ours && let Net::User { hostfwd, .. } = &mut spec.net {
            hostfwd.push(HostFwd::new(
                skiff_qemu::free_port().map_err(|e| format!("free port: {e}"))?,
                DIAG_PORT,
            ));
        }
        let mut node = spec.launch().map_err(|e| format!("launching QEMU: {e}"))?;
        match node.wait_for_stage("diag-ready", timeout) {
            Ok(_) => break node,
            // free_port() is racy: another process may bind the port first.
            Err(WaitError::Exited { .. })
                if ours && attempt < 3 && node.stderr().contains("host forwarding") =>
            {
                attempt += 1;
            }
            Err(e) => return Err(format!("node did not reach `stage: diag-ready`: {e}")),
        }
    };
    let diag = node
        .diag(DIAG_PORT)
        .ok_or("boot() needs user networking to reach the diag service")?;
    ready(node, diag)
}

/// Adds `skiff.diag` and, unless the spec has one, a fresh `skiff.diag_token`.
fn with_diag(spec: NodeSpec) -> Result<NodeSpec, String> {
    let mut spec = spec.arg(format!("skiff.diag={DIAG_PORT}"));
    if spec.diag_token().is_none() {
        let token = skiff_qemu::new_diag_token().map_err(|e| format!("diag token: {e}"))?;
        spec = spec.arg(format!("skiff.diag_token={token}"));
    }
    Ok(spec)
}

/// Waits for `diag` to answer `status` on a node past `diag-ready`.
fn ready(node: Node, diag: DiagClient) -> Result<Booted, String> {
    let status = diag
        .wait_ready(Duration::from_secs(20))
        .map_err(|e| format!("{e}\nlog:\n{}", node.log_text()))?;
    Ok(Booted { node, diag, status })
}

/// Boots `spec` as a node on `segment`: attaches it (the segment's network
/// and a fresh MAC), adds the diag service as [`boot`] does, reads the
/// node's address from its `net-up` line (DHCP unless the spec says
/// otherwise) and forwards a host port to its diag service through the
/// segment's router.
pub fn boot_on(segment: &Segment, spec: NodeSpec) -> Booted {
    try_boot_on(segment, spec).unwrap_or_else(|e| panic!("{e}"))
}

/// [`boot_on`], with failures as errors.
pub fn try_boot_on(segment: &Segment, spec: NodeSpec) -> Result<Booted, String> {
    let spec = with_diag(segment.attach(spec))?;
    let timeout = boot_timeout(spec.machine);
    let mut node = spec.launch().map_err(|e| format!("launching QEMU: {e}"))?;
    let up = node
        .wait_for_stage("net-up", timeout)
        .map_err(|e| format!("node on the segment did not reach `stage: net-up`: {e}"))?;
    let ip: Ipv4Addr = log::field(&up.text, "ip")
        .and_then(|cidr| cidr.split('/').next()?.parse().ok())
        .ok_or_else(|| format!("no ip= in {:?}\nlog:\n{}", up.text, node.log_text()))?;
    node.wait_for_stage("diag-ready", timeout)
        .map_err(|e| format!("node did not reach `stage: diag-ready`: {e}"))?;
    let port = segment
        .forward(SocketAddrV4::new(ip, DIAG_PORT))
        .map_err(|e| {
            format!(
                "forward to {ip}:{DIAG_PORT}: {e}\nlog:\n{}",
                node.log_text()
            )
        })?;
    let diag =
        DiagClient::new((Ipv4Addr::LOCALHOST, port).into()).with_token(node.spec().diag_token());
    ready(node, diag)
}

/// A user-networking spec (QEMU's default 10.0.2.0/24 slirp network).
pub fn user_net(machine: Machine) -> NodeSpec {
    spec(machine).net(Net::User {
        hostfwd: vec![],
        subnet: None,
    })
}

impl Booted {
    /// Asks the node to shut down and checks it exits `SUCCESS`.
    pub fn shutdown(mut self) {
        let reply = self
            .diag
            .shutdown()
            .unwrap_or_else(|e| panic!("diag shutdown: {e}\nlog:\n{}", self.node.log_text()));
        assert_eq!(reply.trim(), "bye", "shutdown reply");
        let exit = self
            .node
            .wait(Duration::from_secs(20))
            .unwrap_or_else(|e| panic!("node did not exit after shutdown: {e}"));
        assert_eq!(
            exit,
            KernelExit::Code(ExitCode::Success),
            "exit after shutdown\nlog:\n{}",
            self.node.log_text()
        );
    }

    /// The node's address, as its `status` reported it at boot.
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.status.fields().ip.map(|c| c.address)
    }

    /// Panics with the node's log appended.
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}\nlog:\n{}", self.node.log_text())
    }
}

/// Launches a node that is expected to stop by itself; returns its exit and
/// the node (for its log). A hang fails after `timeout`.
pub fn run_to_exit(spec: NodeSpec, timeout: Duration) -> (KernelExit, Node) {
    let mut node = spec
        .launch()
        .unwrap_or_else(|e| panic!("launching QEMU: {e}"));
    match node.wait(timeout) {
        Ok(exit) => (exit, node),
        Err(e) => panic!("node did not exit within {timeout:?} (hang?): {e}"),
    }
}

/// One HTTP/1.1 GET of `path` on a host port forwarded to a node (5 s read
/// timeout); the whole answer.
pub fn http_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: skiff\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut out = String::new();
    s.read_to_string(&mut out).map_err(|e| e.to_string())?;
    Ok(out)
}
