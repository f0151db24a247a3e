//! What a node is made of, and the QEMU command line that makes it.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Machine {
    /// `-machine microvm,acpi=off`: PVH boot, virtio-mmio, no firmware (fast).
    #[default]
    Microvm,
    /// `-machine q35`: SeaBIOS, virtio-pci (slow here: seconds).
    Q35,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Software emulation: deterministic and available everywhere.
    #[default]
    Tcg,
    /// KVM. `-cpu host` aborts under this machine's nested KVM unless
    /// `arch-capabilities` is masked (DESIGN.md §3).
    Kvm,
}

/// One TCP port forward from the host's loopback into the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostFwd {
    pub host_port: u16,
    pub guest_port: u16,
    /// Guest address to forward to; QEMU's default is the first DHCP
    /// address (10.0.2.15 on the default network).
    pub guest_addr: Option<Ipv4Addr>,
}

impl HostFwd {
    pub fn new(host_port: u16, guest_port: u16) -> Self {
        Self {
            host_port,
            guest_port,
            guest_addr: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Net {
    /// No network device at all.
    #[default]
    None,
    /// QEMU user networking (slirp): DHCP server and gateway inside QEMU.
    User {
        hostfwd: Vec<HostFwd>,
        /// Slirp network as `a.b.c.d/len`; QEMU's default is 10.0.2.0/24
        /// (guest 10.0.2.15, gateway 10.0.2.2).
        subnet: Option<String>,
    },
    /// An existing tap device (`script=no,downscript=no`).
    Tap { ifname: String },
    /// A port on a shared L2 segment: a stream client of the hub listening
    /// on `hub` (see [`crate::Segment`], which also hands out the distinct
    /// [`NodeSpec::mac`] every node on a segment needs).
    Segment { hub: PathBuf },
}

/// A node to launch. Build with [`NodeSpec::new`] and the `with_*` methods, or
/// fill the public fields.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub machine: Machine,
    pub accel: Accel,
    pub memory_mib: u32,
    pub kernel: PathBuf,
    /// Kernel command line words (`skiff.*` keys).
    pub cmdline: Vec<String>,
    pub net: Net,
    /// Raw disk images, each a virtio-blk device, in order.
    pub disks: Vec<PathBuf>,
    /// Add a virtio-rng device fed from the host's /dev/urandom.
    pub rng: bool,
    /// The QEMU binary.
    pub qemu: String,
    /// Run QEMU inside this network namespace (`ip netns exec NAME`), e.g.
    /// to reach a tap device created there.
    pub netns: Option<String>,
    /// Guest MAC address of the network device (QEMU picks one if unset).
    pub mac: Option<String>,
    /// Extra QEMU arguments appended verbatim.
    pub extra_args: Vec<String>,
    /// Start QEMU in its own process group, so a terminal's Ctrl-C reaches
    /// only the caller, which can then shut the node down cleanly.
    pub own_process_group: bool,
    /// Boot this ISO through the machine's firmware (e.g. a GRUB image from
    /// `skiff-node-image`) instead of loading `kernel` directly: the ISO
    /// carries its own kernel and command line, so `kernel` and `cmdline`
    /// are not passed. q35 only (microvm has no disk boot path).
    pub cdrom: Option<PathBuf>,
}

impl NodeSpec {
    pub fn new(kernel: impl Into<PathBuf>) -> Self {
        Self {
            machine: Machine::Microvm,
            accel: Accel::Tcg,
            memory_mib: 32,
            kernel: kernel.into(),
            cmdline: Vec::new(),
            net: Net::None,
            disks: Vec::new(),
            rng: false,
            qemu: crate::QEMU.to_owned(),
            netns: None,
            mac: None,
            extra_args: Vec::new(),
            own_process_group: false,
            cdrom: None,
        }
    }

    /// Boot from a bootable ISO instead of `-kernel` (see [`NodeSpec::cdrom`]).
    pub fn cdrom(mut self, iso: impl Into<PathBuf>) -> Self {
        self.cdrom = Some(iso.into());
        self
    }

    pub fn machine(mut self, machine: Machine) -> Self {
        self.machine = machine;
        self
    }

    pub fn accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    /// Appends one command-line word, e.g. `"skiff.diag=7000"`.
    pub fn arg(mut self, word: impl Into<String>) -> Self {
        self.cmdline.push(word.into());
        self
    }

    /// Appends command-line words; a string with spaces is split into words.
    pub fn args<I, S>(mut self, words: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for w in words {
            self.cmdline
                .extend(w.as_ref().split_whitespace().map(str::to_owned));
        }
        self
    }

    pub fn net(mut self, net: Net) -> Self {
        self.net = net;
        self
    }

    /// User networking forwarding a free host port to `guest_port`; returns
    /// the spec and the host port.
    pub fn user_net_forwarding(self, guest_port: u16) -> io::Result<(Self, u16)> {
        let host_port = free_port()?;
        let spec = self.net(Net::User {
            hostfwd: vec![HostFwd::new(host_port, guest_port)],
            subnet: None,
        });
        Ok((spec, host_port))
    }

    pub fn disk(mut self, path: impl Into<PathBuf>) -> Self {
        self.disks.push(path.into());
        self
    }

    pub fn rng(mut self, on: bool) -> Self {
        self.rng = on;
        self
    }

    pub fn netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(name.into());
        self
    }

    /// The host port forwarded to `guest_port`, if user networking forwards it.
    pub fn host_port_for(&self, guest_port: u16) -> Option<u16> {
        match &self.net {
            Net::User { hostfwd, .. } => hostfwd
                .iter()
                .find(|f| f.guest_port == guest_port)
                .map(|f| f.host_port),
            _ => None,
        }
    }

    /// The kernel command line as passed to `-append`.
    /// The `skiff.diag_token=` value on the command line, if any.
    pub fn diag_token(&self) -> Option<&str> {
        self.cmdline
            .iter()
            .flat_map(|w| w.split_ascii_whitespace())
            .find_map(|w| w.strip_prefix("skiff.diag_token="))
    }

    pub fn cmdline_string(&self) -> String {
        self.cmdline.join(" ")
    }

    /// QEMU's arguments (without the binary).
    pub fn qemu_args(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |args: &[&str]| a.extend(args.iter().map(|s| (*s).to_owned()));
        // Device model suffix: virtio-mmio on microvm, virtio-pci on q35.
        let bus = match self.machine {
            Machine::Microvm => {
                // acpi=off makes QEMU append `virtio_mmio.device=...` words to
                // the PVH command line: that is how the kernel finds devices.
                push(&["-machine", "microvm,acpi=off"]);
                "device"
            }
            Machine::Q35 => {
                push(&["-machine", "q35"]);
                "pci"
            }
        };
        match self.accel {
            // `-cpu max`: the default qemu64 model lacks SSSE3/SSE4.x/POPCNT,
            // the ISA baseline of compiled wasm (kernel/wasm/README.md).
            Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
            Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
        }
        push(&[
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            // A triple fault would otherwise reboot forever: make it an exit.
            "-no-reboot",
            "-serial",
            "stdio",
        ]);
        if self.machine == Machine::Microvm {
            push(&["-global", "virtio-mmio.force-legacy=false"]);
        }
        push(&["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]);
        a.push("-m".into());
        a.push(format!("{}M", self.memory_mib));
        if let Some(iso) = &self.cdrom {
            a.push("-cdrom".into());
            a.push(iso.display().to_string());
        } else {
            a.push("-kernel".into());
            a.push(self.kernel.display().to_string());
            if !self.cmdline.is_empty() {
                a.push("-append".into());
                a.push(self.cmdline_string());
            }
        }
        let netdev = match &self.net {
            Net::None => None,
            Net::User { hostfwd, subnet } => {
                let mut s = String::from("user,id=net0");
                if let Some(subnet) = subnet {
                    s.push_str(",net=");
                    s.push_str(subnet);
                }
                for f in hostfwd {
                    let guest = f.guest_addr.map(|a| a.to_string()).unwrap_or_default();
                    s.push_str(&format!(
                        ",hostfwd=tcp:127.0.0.1:{}-{guest}:{}",
                        f.host_port, f.guest_port
                    ));
                }
                Some(s)
            }
            Net::Tap { ifname } => Some(format!(
                "tap,id=net0,ifname={ifname},script=no,downscript=no"
            )),
            Net::Segment { hub } => Some(format!(
                "stream,id=net0,addr.type=unix,addr.path={},server=off",
                crate::segment::qemu_path(hub)
            )),
        };
        if let Some(netdev) = netdev {
            a.push("-netdev".into());
            a.push(netdev);
            a.push("-device".into());
            let mut dev = format!("virtio-net-{bus},netdev=net0");
            if let Some(mac) = &self.mac {
                dev.push_str(",mac=");
                dev.push_str(mac);
            }
            a.push(dev);
        }
        for (i, disk) in self.disks.iter().enumerate() {
            a.push("-drive".into());
            a.push(format!(
                "file={},format=raw,if=none,id=disk{i}",
                disk.display()
            ));
            a.push("-device".into());
            a.push(format!("virtio-blk-{bus},drive=disk{i}"));
        }
        if self.rng {
            a.push("-object".into());
            a.push("rng-random,filename=/dev/urandom,id=rng0".into());
            a.push("-device".into());
            a.push(format!("virtio-rng-{bus},rng=rng0"));
        }
        a.extend(self.extra_args.iter().cloned());
        a
    }

    /// The full command (QEMU, or `ip netns exec NS qemu ...`), stdio not set.
    pub fn command(&self) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, &self.qemu]);
                c
            }
            None => Command::new(&self.qemu),
        };
        cmd.args(self.qemu_args());
        if self.own_process_group {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        cmd
    }

    /// The command line as one shell-like string, for logs and error messages.
    pub fn command_line(&self) -> String {
        let cmd = self.command();
        let mut s = cmd.get_program().to_string_lossy().into_owned();
        for arg in cmd.get_args() {
            let arg = arg.to_string_lossy();
            s.push(' ');
            if arg.contains(' ') {
                s.push_str(&format!("'{arg}'"));
            } else {
                s.push_str(&arg);
            }
        }
        s
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0, then
/// released). Another process may take it before QEMU binds it; QEMU then
/// fails at start with a hostfwd error, which [`NodeSpec::launch`] reports.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn microvm_tcg_user_net() {
        let spec = NodeSpec::new("/k/skiff-kernel")
            .args(["skiff.diag=7000 skiff.log=debug"])
            .net(Net::User {
                hostfwd: vec![HostFwd::new(40000, 7000)],
                subnet: None,
            });
        let mut expected = words(
            "-machine microvm,acpi=off -accel tcg -cpu max -nodefaults -no-user-config -display none \
             -no-reboot -serial stdio -global virtio-mmio.force-legacy=false \
             -device isa-debug-exit,iobase=0xf4,iosize=0x04 -m 32M -kernel /k/skiff-kernel",
        );
        expected.push("-append".into());
        expected.push("skiff.diag=7000 skiff.log=debug".into());
        expected.extend(words(
            "-netdev user,id=net0,hostfwd=tcp:127.0.0.1:40000-:7000 \
             -device virtio-net-device,netdev=net0",
        ));
        assert_eq!(spec.qemu_args(), expected);
        assert_eq!(spec.host_port_for(7000), Some(40000));
        assert_eq!(spec.host_port_for(22), None);
    }

    #[test]
    fn q35_kvm_uses_pci_devices_and_debug_exit() {
        let spec = NodeSpec::new("k")
            .machine(Machine::Q35)
            .accel(Accel::Kvm)
            .memory_mib(64)
            .net(Net::Tap {
                ifname: "tap0".into(),
            })
            .disk("/tmp/a.img")
            .rng(true);
        let a = spec.qemu_args().join(" ");
        assert!(a.starts_with("-machine q35 -accel kvm -cpu host,-arch-capabilities "));
        assert!(a.contains("-device isa-debug-exit,iobase=0xf4,iosize=0x04"));
        assert!(!a.contains("virtio-mmio.force-legacy"));
        assert!(!a.contains("-append"), "no empty command line");
        assert!(a.contains("-m 64M"));
        assert!(a.contains(
            "-netdev tap,id=net0,ifname=tap0,script=no,downscript=no -device virtio-net-pci,netdev=net0"
        ));
        assert!(a.contains(
            "-drive file=/tmp/a.img,format=raw,if=none,id=disk0 -device virtio-blk-pci,drive=disk0"
        ));
        assert!(a.contains(
            "-object rng-random,filename=/dev/urandom,id=rng0 -device virtio-rng-pci,rng=rng0"
        ));
    }

    #[test]
    fn no_net_means_no_netdev() {
        let a = NodeSpec::new("k").qemu_args().join(" ");
        assert!(!a.contains("-netdev"));
        assert!(!a.contains("virtio-net"));
    }

    #[test]
    fn several_disks_and_subnet_and_mac() {
        let mut spec = NodeSpec::new("k").disk("a").disk("b").net(Net::User {
            hostfwd: vec![HostFwd {
                host_port: 1,
                guest_port: 2,
                guest_addr: Some(Ipv4Addr::new(10, 9, 8, 20)),
            }],
            subnet: Some("10.9.8.0/24".into()),
        });
        spec.mac = Some("52:54:00:00:00:01".into());
        let a = spec.qemu_args().join(" ");
        assert!(
            a.contains("-netdev user,id=net0,net=10.9.8.0/24,hostfwd=tcp:127.0.0.1:1-10.9.8.20:2 ")
        );
        assert!(a.contains("virtio-net-device,netdev=net0,mac=52:54:00:00:00:01"));
        assert!(a.contains("id=disk0 -device virtio-blk-device,drive=disk0"));
        assert!(
            a.contains("file=b,format=raw,if=none,id=disk1 -device virtio-blk-device,drive=disk1")
        );
    }

    #[test]
    fn segment_net_is_a_stream_client_of_the_hub() {
        let mut spec = NodeSpec::new("k").net(Net::Segment {
            hub: "/tmp/s,1/hub.sock".into(),
        });
        spec.mac = Some("52:54:00:5e:00:01".into());
        let a = spec.qemu_args().join(" ");
        assert!(a.contains(
            "-netdev stream,id=net0,addr.type=unix,addr.path=/tmp/s,,1/hub.sock,server=off \
             -device virtio-net-device,netdev=net0,mac=52:54:00:5e:00:01"
        ));
    }

    #[test]
    fn netns_wraps_in_ip_netns_exec() {
        let spec = NodeSpec::new("k").netns("skiff-t1");
        let cmd = spec.command();
        assert_eq!(cmd.get_program(), "ip");
        let args: Vec<_> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(&args[..4], ["netns", "exec", "skiff-t1", crate::QEMU]);
        assert_eq!(args[4], "-machine");
    }

    #[test]
    fn cdrom_boot_replaces_kernel_and_cmdline() {
        let a = NodeSpec::new("k")
            .machine(Machine::Q35)
            .arg("skiff.diag=7000")
            .cdrom("/tmp/node.iso")
            .qemu_args()
            .join(" ");
        assert!(a.contains("-cdrom /tmp/node.iso"));
        assert!(!a.contains("-kernel"));
        assert!(!a.contains("-append"));
    }

    #[test]
    fn free_port_is_nonzero() {
        assert_ne!(free_port().unwrap(), 0);
    }
}
