//! `skiff node ...`: run a node kernel under QEMU on this machine, on its
//! own (`run`) or joined to a control plane (`boot`).

use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use skiff_logging::Progress;
use skiff_qemu::{Accel, HostFwd, Machine, Net, NodeSpec};

#[derive(Subcommand)]
pub enum NodeCmd {
    /// Boot a node kernel under QEMU, print its serial log, exit with QEMU's
    /// status (33 SUCCESS, 35 PANIC, 37 CONFIG, 39 FAULT, 41 NO_DEVICE, ...).
    Run(RunArgs),
    /// Boot a node kernel under QEMU that joins a control plane (`skiff
    /// server` prints this command with its address and CA), print its
    /// serial log and keep it running. Fails within seconds, saying which,
    /// when the server is unreachable or refuses the token.
    Boot(BootArgs),
    /// Write a bootable hybrid ISO (BIOS and UEFI, GRUB and Multiboot2) of
    /// the node kernel with the join configuration baked into its command
    /// line: a machine booted from it joins the control plane. One image is
    /// one node (its name and token are in it); it holds the token, so keep
    /// it as secret as the token.
    Image(ImageArgs),
}

/// What a node needs to join a control plane.
#[derive(Args)]
pub struct JoinArgs {
    /// The control plane's node gateway, HOST:PORT.
    #[arg(long)]
    server: String,
    /// A bootstrap token, `<id>.<secret>` (`skiff token create`).
    #[arg(long)]
    token: String,
    /// The cluster CA certificate (PEM): the only one the node trusts.
    #[arg(long)]
    ca: PathBuf,
    /// The node's name [default: `node-` and six random characters].
    #[arg(long)]
    name: Option<String>,
}

impl JoinArgs {
    fn node_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("node-{}", skiff_apiserver::pki::random_token(6)))
    }

    /// The kernel command line words that make node `name` join `server`
    /// (the gateway's address as the node dials it).
    fn words(&self, server: SocketAddr, name: &str) -> Result<Vec<String>> {
        check_token(&self.token)?;
        let ca = ca_base64(&self.ca)?;
        Ok(vec![
            format!("skiff.hostname={name}"),
            format!("skiff.gateway={server}"),
            format!("skiff.token={}", self.token),
            format!("skiff.ca={ca}"),
        ])
    }
}

#[derive(Args)]
pub struct ImageArgs {
    /// --server is the address as the booted machine dials it (a QEMU guest
    /// on user networking sees this host as 10.0.2.2).
    #[command(flatten)]
    join: JoinArgs,
    /// Kernel ELF [default: $SKIFF_KERNEL, else target/x86_64-unknown-none/kernel/skiff-kernel].
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Where to write the ISO.
    #[arg(long, short)]
    output: PathBuf,
    /// More kernel command line words (e.g. `skiff.credentials=disk`).
    #[arg(last = true)]
    cmdline: Vec<String>,
}

#[derive(Args)]
pub struct BootArgs {
    #[command(flatten)]
    join: JoinArgs,
    /// Seconds the node may take to join before `boot` gives up.
    #[arg(long, default_value_t = 60)]
    join_timeout: u64,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Clone, Copy, ValueEnum)]
enum MachineArg {
    Microvm,
    Q35,
}

#[derive(Args)]
pub struct RunArgs {
    /// Kernel ELF [default: $SKIFF_KERNEL, else target/x86_64-unknown-none/kernel/skiff-kernel].
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "microvm")]
    machine: MachineArg,
    /// Use KVM instead of TCG.
    #[arg(long)]
    kvm: bool,
    /// Guest RAM in MiB (what is left after the kernel goes to pods).
    #[arg(long, default_value_t = 96)]
    memory: u32,
    /// Network: `user` (QEMU user networking), `tap:IFNAME`, or `none`.
    #[arg(long, default_value = "user")]
    net: String,
    /// Start the diag service on this guest port; with user networking it is
    /// forwarded from a free host port (printed).
    #[arg(long)]
    diag: Option<u16>,
    /// Forward host TCP port to guest port (user networking): HOST:GUEST.
    #[arg(long, value_name = "HOST:GUEST")]
    forward: Vec<String>,
    /// Boot this ISO (`skiff node image`) instead of the kernel ELF: q35
    /// only; the ISO's own command line is the one that counts.
    #[arg(long, conflicts_with = "kernel")]
    cdrom: Option<PathBuf>,
    /// Raw disk image, attached as virtio-blk (repeatable).
    #[arg(long)]
    disk: Vec<PathBuf>,
    /// Attach a virtio-rng device.
    #[arg(long)]
    rng: bool,
    /// Run QEMU inside this network namespace (`ip netns exec`).
    #[arg(long)]
    netns: Option<String>,
    /// Prefix each serial line with the host time since QEMU's spawn.
    #[arg(long)]
    timestamps: bool,
    /// Print the QEMU command line and exit.
    #[arg(long)]
    dry_run: bool,
    /// Kernel command line words (e.g. `skiff.net=static skiff.ip=10.0.2.15/24`).
    #[arg(last = true)]
    cmdline: Vec<String>,
}

fn default_kernel() -> PathBuf {
    if let Some(p) = std::env::var_os("SKIFF_KERNEL") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| "target".into());
    skiff_build::kernel_elf_in(&target)
}

fn parse_forward(s: &str) -> Result<HostFwd> {
    let (h, g) = s
        .split_once(':')
        .with_context(|| format!("--forward {s:?}: expected HOST:GUEST"))?;
    Ok(HostFwd::new(
        h.parse().with_context(|| format!("host port {h:?}"))?,
        g.parse().with_context(|| format!("guest port {g:?}"))?,
    ))
}

/// Builds the spec from the arguments; returns it and the host diag port.
fn build_spec(a: &RunArgs) -> Result<(NodeSpec, Option<u16>)> {
    let kernel = a.kernel.clone().unwrap_or_else(default_kernel);
    let mut spec = NodeSpec::new(kernel)
        .machine(match a.machine {
            MachineArg::Microvm => Machine::Microvm,
            MachineArg::Q35 => Machine::Q35,
        })
        .accel(if a.kvm { Accel::Kvm } else { Accel::Tcg })
        .memory_mib(a.memory)
        .rng(a.rng)
        .args(&a.cmdline);
    spec.disks = a.disk.clone();
    if let Some(iso) = &a.cdrom {
        if !matches!(a.machine, MachineArg::Q35) {
            bail!("--cdrom needs --machine q35 (microvm has no disk boot path)");
        }
        spec = spec.cdrom(iso);
    }
    spec.netns = a.netns.clone();
    let mut hostfwd: Vec<HostFwd> = a
        .forward
        .iter()
        .map(|f| parse_forward(f))
        .collect::<Result<_>>()?;
    let mut diag_host = None;
    if let Some(port) = a.diag {
        spec = spec.arg(format!("skiff.diag={port}"));
        if a.net == "user" {
            let host = match hostfwd.iter().find(|f| f.guest_port == port) {
                Some(f) => f.host_port,
                None => {
                    let h = skiff_qemu::free_port()?;
                    hostfwd.push(HostFwd::new(h, port));
                    h
                }
            };
            diag_host = Some(host);
        }
    }
    spec.net = match a.net.as_str() {
        "user" => Net::User {
            hostfwd,
            subnet: None,
        },
        "none" => Net::None,
        other => match other.strip_prefix("tap:") {
            Some(ifname) if !ifname.is_empty() => Net::Tap {
                ifname: ifname.to_owned(),
            },
            _ => bail!("--net {other:?}: expected user, tap:IFNAME or none"),
        },
    };
    if !a.forward.is_empty() && !matches!(spec.net, Net::User { .. }) {
        bail!("--forward needs --net user");
    }
    Ok((spec, diag_host))
}

pub fn run(cmd: NodeCmd) -> Result<i32> {
    match cmd {
        NodeCmd::Run(a) => run_alone(a),
        NodeCmd::Boot(b) => boot(b),
        NodeCmd::Image(i) => image(i),
    }
}

fn run_alone(a: RunArgs) -> Result<i32> {
    let (spec, diag_host) = build_spec(&a)?;
    if a.dry_run {
        println!("{}", spec.command_line());
        return Ok(0);
    }
    if let Some(p) = diag_host {
        tracing::info!(
            "diag service will be at 127.0.0.1:{p} (e.g. `echo status | nc 127.0.0.1 {p}`)"
        );
    }
    let (mut node, _) = launch(&spec, a.timestamps, |l| println!("{l}"))?;
    finish(&mut node)
}

/// Launches `spec`, each serial line printed by `print` (with the host
/// time since spawn when `timestamps`) and passed on to the returned
/// receiver.
fn launch(
    spec: &NodeSpec,
    timestamps: bool,
    print: impl Fn(&str) + Send + Sync + 'static,
) -> Result<(skiff_qemu::Node, mpsc::Receiver<String>)> {
    if spec.cdrom.is_none() && !spec.kernel.is_file() {
        bail!(
            "kernel {} not found: build it with `cargo xtask kernel` or pass --kernel",
            spec.kernel.display()
        );
    }
    let (tx, rx) = mpsc::channel();
    let started = Instant::now();
    let hook = Box::new(move |l: &skiff_qemu::LogLine| {
        if timestamps {
            let ms = l.at.duration_since(started).as_secs_f64() * 1e3;
            print(&format!("+{ms:9.3}ms {}", l.text));
        } else {
            print(&l.text);
        }
        let _ = tx.send(l.text.clone());
    });
    Ok((spec.launch_with(Some(hook))?, rx))
}

/// Waits for QEMU to exit (Ctrl-C reaches it too: same process group) and
/// returns the kernel's exit code.
fn finish(node: &mut skiff_qemu::Node) -> Result<i32> {
    let exit = node
        .wait(Duration::MAX)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let stderr = node.stderr();
    if !stderr.trim().is_empty() {
        eprint!("{stderr}");
    }
    tracing::info!("node exited: {exit}");
    Ok(exit.code())
}

/// The PEM file's first certificate as the base64 of its DER (a PEM body
/// is exactly that): the form `skiff.ca=` takes.
fn ca_base64(path: &Path) -> Result<String> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading the cluster CA {}", path.display()))?;
    let body = pem
        .split("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .and_then(|rest| rest.split("-----END CERTIFICATE-----").next())
        .with_context(|| format!("{}: no PEM certificate in it", path.display()))?;
    Ok(body.split_whitespace().collect())
}

/// `[a-z0-9]{6}.[a-z0-9]{16}`: what the gateway accepts.
fn check_token(token: &str) -> Result<()> {
    match skiff_gateway::split_bootstrap_token(token) {
        Some(_) => Ok(()),
        None => bail!("--token: expected <id>.<secret>, 6 and 16 characters of [a-z0-9]"),
    }
}

fn resolve(server: &str) -> Result<SocketAddr> {
    server
        .to_socket_addrs()
        .with_context(|| format!("--server {server:?}: expected HOST:PORT"))?
        .next()
        .with_context(|| format!("--server {server:?}: the name has no address"))
}

/// Checks from this host that the server answers, so an unreachable server
/// is reported at once, not after the node's retries.
fn check_reachable(server: &str, addr: SocketAddr) -> Result<()> {
    TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .with_context(|| format!("the server {server} ({addr}) is unreachable"))?;
    Ok(())
}

/// The server's address as the node dials it: on QEMU's user network the
/// host's loopback is `10.0.2.2`.
fn as_seen_by_node(addr: SocketAddr, net: &Net) -> SocketAddr {
    match (addr.ip(), net) {
        (ip, Net::User { .. }) if ip.is_loopback() => {
            SocketAddr::new(IpAddr::V4(crate::server::GUEST_HOST_ADDR), addr.port())
        }
        _ => addr,
    }
}

/// Why the node has not joined, from one serial line, if the line says.
fn join_failure(line: &str) -> Option<&str> {
    let (_, why) = line.split_once("link down (")?;
    let why = why.rsplit_once("); reconnecting").map_or(why, |(w, _)| w);
    why.starts_with("refused by the gateway").then_some(why)
}

fn image(i: ImageArgs) -> Result<i32> {
    let words = i
        .join
        .words(resolve(&i.join.server)?, &i.join.node_name())?;
    let cmdline = [words, i.cmdline].concat().join(" ");
    let kernel = i.kernel.unwrap_or_else(default_kernel);
    let progress = Progress::start(format!("building {}", i.output.display()));
    skiff_node_image::grub_iso(&kernel, &cmdline, &i.output)
        .with_context(|| format!("writing {}", i.output.display()))?;
    progress.finish(format_args!(
        "boots {} and joins {} (it holds the token: keep it secret)",
        kernel.display(),
        i.join.server
    ));
    Ok(0)
}

fn boot(b: BootArgs) -> Result<i32> {
    let (spec, _) = build_spec(&b.run)?;
    let addr = resolve(&b.join.server)?;
    let name = b.join.node_name();
    let words = b.join.words(as_seen_by_node(addr, &spec.net), &name)?;
    // TCG's CPU has no RDRAND: joining needs entropy.
    let spec = spec.rng(true).args(&words);
    if b.run.dry_run {
        println!("{}", spec.command_line());
        return Ok(0);
    }
    check_reachable(&b.join.server, addr)?;
    let progress = Progress::start(format!(
        "node {name}: booting and joining {}",
        b.join.server
    ));
    let (mut node, lines) = launch(&spec, b.run.timestamps, progress.printer())?;
    let deadline = Instant::now() + Duration::from_secs(b.join_timeout);
    let mut last_link = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left.min(Duration::from_millis(500))) {
            Ok(line) if line.contains("stage: node-registered") => {
                progress.finish("joined; it is a Node in the cluster now");
                break;
            }
            Ok(line) => {
                if let Some((_, stage)) = line.split_once("stage: ") {
                    progress.update(stage);
                }
                if let Some(why) = join_failure(&line) {
                    node.kill();
                    bail!("the server refused node {name}: {why}");
                }
                if line.contains("link down") {
                    last_link = Some(line);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) if !left.is_zero() => {}
            Err(_) => {
                node.kill();
                let code = node.try_exit().ok().flatten();
                bail!(
                    "node {name} did not join {} within {} s{}{}",
                    b.join.server,
                    b.join_timeout,
                    code.map(|c| format!(" (the kernel exited: {c})"))
                        .unwrap_or_default(),
                    last_link
                        .map(|l| format!("; its last word: {l}"))
                        .unwrap_or_default(),
                );
            }
        }
    }
    // Joined: stop collecting lines nobody reads (the hook's sends fail).
    drop(lines);
    finish(&mut node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(subcommand)]
        cmd: NodeCmd,
    }

    fn spec_of(args: &[&str]) -> Result<(NodeSpec, Option<u16>)> {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))?;
        let NodeCmd::Run(a) = t.cmd else {
            panic!("not `run`")
        };
        build_spec(&a)
    }

    #[test]
    fn boot_checks_its_inputs_before_booting() {
        assert!(check_token("abc123.0123456789abcdef").is_ok());
        for bad in [
            "abc123",
            "abc12.0123456789abcdef",
            "ABC123.0123456789abcdef",
            "",
        ] {
            assert!(check_token(bad).is_err(), "{bad:?}");
        }
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.crt");
        std::fs::write(
            &pem,
            "-----BEGIN CERTIFICATE-----\nMIIB\nAgEC\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert_eq!(ca_base64(&pem).unwrap(), "MIIBAgEC");
        std::fs::write(&pem, "not a certificate").unwrap();
        assert!(ca_base64(&pem).is_err());
        assert!(ca_base64(&dir.path().join("absent")).is_err());
        assert!(resolve("no-port").is_err());
    }

    #[test]
    fn the_node_dials_the_hosts_loopback_at_the_user_network_gateway() {
        let user = Net::User {
            hostfwd: vec![],
            subnet: None,
        };
        let lo: SocketAddr = "127.0.0.1:6444".parse().unwrap();
        assert_eq!(
            as_seen_by_node(lo, &user),
            "10.0.2.2:6444".parse::<SocketAddr>().unwrap()
        );
        let lan: SocketAddr = "192.168.1.5:6444".parse().unwrap();
        assert_eq!(as_seen_by_node(lan, &user), lan);
        let tap = Net::Tap {
            ifname: "tap0".into(),
        };
        assert_eq!(as_seen_by_node(lo, &tap), lo);
    }

    #[test]
    fn a_refusal_on_the_serial_log_is_a_join_failure() {
        let line = "[1.2] WARN  node: link down (refused by the gateway (BadToken): bootstrap token \"abcdef\" is unknown, wrong or expired); reconnecting in 30000 ms";
        assert_eq!(
            join_failure(line),
            Some(
                "refused by the gateway (BadToken): bootstrap token \"abcdef\" is unknown, wrong or expired"
            )
        );
        assert_eq!(
            join_failure("[1.2] INFO  node: link down (connection refused)"),
            None
        );
    }

    #[test]
    fn run_builds_spec() {
        let (spec, diag) = spec_of(&[
            "run",
            "--kernel",
            "k.elf",
            "--machine",
            "q35",
            "--memory",
            "64",
            "--diag",
            "7000",
            "--forward",
            "8080:80",
            "--disk",
            "d.img",
            "--",
            "skiff.log=debug",
        ])
        .unwrap();
        assert_eq!(spec.machine, Machine::Q35);
        assert_eq!(spec.memory_mib, 64);
        assert_eq!(spec.cmdline, ["skiff.log=debug", "skiff.diag=7000"]);
        assert_eq!(spec.host_port_for(80), Some(8080));
        assert_eq!(spec.host_port_for(7000), diag);
        assert!(diag.is_some());
        assert_eq!(spec.disks, [PathBuf::from("d.img")]);
    }

    #[test]
    fn net_variants() {
        let (s, _) = spec_of(&["run", "--kernel", "k", "--net", "tap:tap3"]).unwrap();
        assert_eq!(
            s.net,
            Net::Tap {
                ifname: "tap3".into()
            }
        );
        let (s, _) = spec_of(&["run", "--kernel", "k", "--net", "none"]).unwrap();
        assert_eq!(s.net, Net::None);
        assert!(spec_of(&["run", "--kernel", "k", "--net", "bridge"]).is_err());
        assert!(spec_of(&["run", "--kernel", "k", "--net", "none", "--forward", "1:2"]).is_err());
    }
}
