//! A throwaway network namespace with a tap device, for tests that need a
//! real L2 path to the guest (ICMP from outside QEMU).

use std::fs::File;
use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A namespace `skiff-e2e-<pid>-<n>` holding `tap0` (up, with `host_ip`).
/// Deleted on drop, also when the test panics.
pub struct NetNs {
    pub name: String,
    pub tap: String,
}

fn ip(args: &[&str]) -> io::Result<()> {
    let out = Command::new("ip").args(args).output().map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("running ip (iproute2; `cargo xtask setup`): {e}"),
        )
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl NetNs {
    /// Creates the namespace and `tap0` with `host_cidr` (e.g. `192.168.77.1/24`).
    pub fn with_tap(host_cidr: &str) -> io::Result<Self> {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "skiff-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name])?;
        // From here on, Drop removes the namespace (and the tap with it).
        let ns = Self {
            name,
            tap: "tap0".into(),
        };
        let n = ns.name.as_str();
        ip(&["-n", n, "tuntap", "add", "dev", "tap0", "mode", "tap"])?;
        ip(&["-n", n, "addr", "add", host_cidr, "dev", "tap0"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "link", "set", "tap0", "up"])?;
        Ok(ns)
    }

    /// Runs `f` on a thread that has entered this namespace (sockets it
    /// opens live there); the caller's own thread is untouched.
    pub fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> io::Result<R> {
        let file = File::open(format!("/run/netns/{}", self.name))?;
        std::thread::spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(io::Error::from)?;
            Ok(f())
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete network namespace: {e}");
        }
    }
}

/// Sends one ICMP echo request to `dst` through a raw socket (we are root; no
/// ping(8) needed) and waits for the matching reply. Returns the round trip.
pub fn icmp_echo(dst: Ipv4Addr, seq: u16, timeout: Duration) -> io::Result<Duration> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
    let id = (std::process::id() & 0xffff) as u16;
    let mut pkt = vec![8u8, 0, 0, 0];
    pkt.extend_from_slice(&id.to_be_bytes());
    pkt.extend_from_slice(&seq.to_be_bytes());
    pkt.extend_from_slice(b"skiff-e2e icmp echo payload 0123456789");
    let sum = checksum(&pkt);
    pkt[2..4].copy_from_slice(&sum.to_be_bytes());
    let t = Instant::now();
    sock.send_to(&pkt, &SockAddr::from(SocketAddrV4::new(dst, 0)))?;
    let mut sock = sock;
    let mut buf = [0u8; 1500];
    loop {
        let left = timeout.saturating_sub(t.elapsed());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no ICMP echo reply from {dst} (seq {seq}) within {timeout:?}"),
            ));
        }
        sock.set_read_timeout(Some(left))?;
        let n = match sock.read(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => return Err(e),
        };
        // Raw IPv4 sockets deliver the IP header too.
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        if n < ihl + 8 || buf[12..16] != dst.octets() {
            continue;
        }
        let icmp = &buf[ihl..n];
        let is_reply = icmp[0] == 0
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
            && icmp[8..] == pkt[8..];
        if is_reply {
            return Ok(t.elapsed());
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let word = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_checksum() {
        // Echo request id=1 seq=1, no payload: checksum 0xf7fd.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }

    /// The pieces the tap test relies on, without QEMU: a namespace, a
    /// thread inside it, and the raw-socket echo client (needs root, as the
    /// tap test does).
    #[test]
    fn echo_inside_a_fresh_namespace() {
        let ns = NetNs::with_tap("192.168.78.1/24").expect("namespace");
        let rtt = ns
            .run(|| icmp_echo(Ipv4Addr::new(192, 168, 78, 1), 1, Duration::from_secs(2)))
            .expect("thread in namespace")
            .expect("echo reply from the namespace's own address");
        assert!(rtt < Duration::from_secs(1));
        let name = ns.name.clone();
        drop(ns);
        assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }
}
