//! `skiff node ...`: run a node kernel under QEMU on this machine.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use skiff_qemu::{Accel, HostFwd, Machine, Net, NodeSpec};

#[derive(Subcommand)]
pub enum NodeCmd {
    /// Boot a node kernel under QEMU, print its serial log, exit with QEMU's
    /// status (33 SUCCESS, 35 PANIC, 37 CONFIG, 39 FAULT, 41 NO_DEVICE, ...).
    Run(RunArgs),
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
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 32)]
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
    let NodeCmd::Run(a) = cmd;
    let (spec, diag_host) = build_spec(&a)?;
    if a.dry_run {
        println!("{}", spec.command_line());
        return Ok(0);
    }
    if !spec.kernel.is_file() {
        bail!(
            "kernel {} not found: build it with `cargo xtask kernel` or pass --kernel",
            spec.kernel.display()
        );
    }
    if let Some(p) = diag_host {
        tracing::info!(
            "diag service will be at 127.0.0.1:{p} (e.g. `echo status | nc 127.0.0.1 {p}`)"
        );
    }
    let timestamps = a.timestamps;
    let started = std::time::Instant::now();
    let hook = Box::new(move |l: &skiff_qemu::LogLine| {
        let mut out = std::io::stdout().lock();
        let _ = if timestamps {
            let ms = l.at.duration_since(started).as_secs_f64() * 1e3;
            writeln!(out, "+{ms:9.3}ms {}", l.text)
        } else {
            writeln!(out, "{}", l.text)
        };
    });
    let mut node = spec.launch_with(Some(hook))?;
    // Ctrl-C reaches QEMU too (same process group), which then exits.
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
        let NodeCmd::Run(a) = t.cmd;
        build_spec(&a)
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
