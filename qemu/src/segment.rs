//! A flat L2 segment shared by several QEMU nodes, without root: a [`Hub`]
//! every node's NIC connects to (`-netdev stream`), and a router QEMU that
//! bridges slirp onto the hub (`-netdev hubport`), giving the segment DHCP,
//! a gateway and live TCP forwards from the host to any address on it.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::{Hub, Net, NodeSpec};

/// The slirp network: a /8, so that every 10.x address (nodes and the pod
/// range 10.244.0.0/16) is on-link for the nodes and slirp's forwards can
/// reach it. DHCP hands out netmask 255.0.0.0.
pub const SEGMENT_NET: &str = "10.0.0.0/8";
/// The gateway (slirp; the host's loopback as seen from the nodes).
pub const SEGMENT_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
/// The DNS server slirp announces.
pub const SEGMENT_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// The first DHCP address; later nodes get the next ones in order of their
/// first DISCOVER.
pub const SEGMENT_DHCP_START: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);

/// How long the router QEMU may take to come up.
const ROUTER_START: Duration = Duration::from_secs(20);

/// A running segment: the hub and the router QEMU. Dropping it stops both
/// (nodes still connected lose their link).
///
/// Nodes boot with `skiff.net=dhcp` (the default) and get
/// [`SEGMENT_DHCP_START`] onwards; a forward reaches an address only if some
/// node answers ARP for it (its pod IPs too). smoltcp drops the packet that
/// triggers an ARP lookup, so a node's first ping to a new neighbour may
/// time out; TCP retransmits and does not notice.
pub struct Segment {
    dir: PathBuf,
    hub: Hub,
    router: Child,
    qmp: Mutex<Qmp>,
    next_mac: AtomicU16,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("hub", &self.hub.path())
            .field("router_pid", &self.router.id())
            .finish()
    }
}

impl Segment {
    /// Starts the hub (socket `dir/hub.sock`), then the router QEMU (QMP
    /// socket `dir/router.qmp`, stderr `dir/router.log`), and waits until
    /// the router is connected to the hub. `dir` must exist and be short
    /// enough for unix socket paths (about 100 bytes).
    pub fn start(dir: &Path) -> io::Result<Segment> {
        Self::start_with(dir, crate::QEMU)
    }

    /// [`Segment::start`] with another QEMU binary for the router.
    pub fn start_with(dir: &Path, qemu: &str) -> io::Result<Segment> {
        // QEMU 7.2's stream netdev does not reconnect: the hub comes first.
        let hub = Hub::start(dir.join("hub.sock"))?;
        let qmp_path = dir.join("router.qmp");
        let log_path = dir.join("router.log");
        let mut router = Command::new(qemu)
            .args(router_args(hub.path(), &qmp_path))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path)?)
            .spawn()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    io::Error::new(
                        e.kind(),
                        format!("{qemu} not found: run `cargo xtask setup` to install QEMU"),
                    )
                } else {
                    io::Error::new(e.kind(), format!("starting the segment router {qemu}: {e}"))
                }
            })?;
        let failed = |router: &mut Child, what: &str| {
            let _ = router.kill();
            let _ = router.wait();
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            io::Error::other(format!("segment router: {what}; its stderr:\n{log}"))
        };
        let deadline = Instant::now() + ROUTER_START;
        let qmp = loop {
            if let Ok(Some(status)) = router.try_wait() {
                return Err(failed(&mut router, &format!("QEMU exited ({status})")));
            }
            if let Ok(s) = UnixStream::connect(&qmp_path) {
                match Qmp::handshake(s) {
                    Ok(q) => break q,
                    Err(e) => return Err(failed(&mut router, &format!("QMP: {e}"))),
                }
            }
            if Instant::now() >= deadline {
                return Err(failed(&mut router, "no QMP socket in time"));
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        while hub.ports() == 0 {
            if Instant::now() >= deadline {
                return Err(failed(&mut router, "did not connect to the hub in time"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Segment {
            dir: dir.to_owned(),
            hub,
            router,
            qmp: Mutex::new(qmp),
            next_mac: AtomicU16::new(1),
        })
    }

    /// The hub's socket.
    pub fn hub_path(&self) -> &Path {
        self.hub.path()
    }

    /// Clients connected to the hub (the router and the running nodes).
    pub fn ports(&self) -> usize {
        self.hub.ports()
    }

    /// The network of a node on this segment. Every node also needs its own
    /// MAC ([`Segment::next_mac`]; QEMU's default is the same for all):
    /// [`Segment::attach`] sets both.
    pub fn node_net(&self) -> Net {
        Net::Segment {
            hub: self.hub.path().to_owned(),
        }
    }

    /// A MAC not yet handed out by this segment (locally administered,
    /// `52:54:00:5e:xx:yy`).
    pub fn next_mac(&self) -> String {
        mac(self.next_mac.fetch_add(1, Ordering::Relaxed))
    }

    /// `spec` on this segment: [`Segment::node_net`] and a fresh MAC.
    pub fn attach(&self, spec: NodeSpec) -> NodeSpec {
        let mut spec = spec.net(self.node_net());
        spec.mac = Some(self.next_mac());
        spec
    }

    /// Adds a TCP forward from a free port on the host's 127.0.0.1 to
    /// `guest` (any address on the segment: a node's or a pod's) to the
    /// running router, and returns the host port. Slirp connects to `guest`
    /// only when a host client connects.
    pub fn forward(&self, guest: SocketAddrV4) -> io::Result<u16> {
        let mut qmp = self.qmp.lock().unwrap_or_else(|e| e.into_inner());
        let mut last = String::new();
        // free_port() is racy: another process may take the port first.
        for _ in 0..5 {
            let port = crate::free_port()?;
            let out = qmp.hmp(&format!(
                "hostfwd_add {ROUTER_SLIRP} tcp:127.0.0.1:{port}-{}:{}",
                guest.ip(),
                guest.port()
            ))?;
            if out.trim().is_empty() {
                return Ok(port);
            }
            last = out;
        }
        Err(io::Error::other(format!(
            "hostfwd_add to {guest}: {}",
            last.trim()
        )))
    }

    /// One HMP command on the router (e.g. `info usernet`); its output.
    pub fn monitor(&self, command: &str) -> io::Result<String> {
        self.qmp
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .hmp(command)
    }

    /// The router QEMU's stderr so far, for error messages.
    pub fn router_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("router.log")).unwrap_or_default()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = self.router.kill();
        let _ = self.router.wait();
        let _ = std::fs::remove_file(self.dir.join("router.qmp"));
        // The hub stops when its field drops, after this.
    }
}

fn mac(n: u16) -> String {
    format!("52:54:00:5e:{:02x}:{:02x}", n >> 8, n & 0xff)
}

/// The router's slirp netdev id (`hostfwd_add` names it).
const ROUTER_SLIRP: &str = "slirp";

/// The router QEMU: no CPU or devices, only slirp and a stream client to
/// the hub joined by QEMU's internal hub (the warning "hub 0 with no nics"
/// is expected: there is no NIC at all).
fn router_args(hub: &Path, qmp: &Path) -> Vec<String> {
    let hub = qemu_path(hub);
    let qmp = qemu_path(qmp);
    [
        "-machine",
        "none",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-netdev",
        &format!(
            "user,id={ROUTER_SLIRP},net={SEGMENT_NET},host={SEGMENT_GATEWAY},\
             dns={SEGMENT_DNS},dhcpstart={SEGMENT_DHCP_START}"
        ),
        "-netdev",
        &format!("stream,id=hub,addr.type=unix,addr.path={hub},server=off"),
        "-netdev",
        &format!("hubport,id=p0,hubid=0,netdev={ROUTER_SLIRP}"),
        "-netdev",
        "hubport,id=p1,hubid=0,netdev=hub",
        "-chardev",
        &format!("socket,id=qmp,path={qmp},server=on,wait=off"),
        "-mon",
        "chardev=qmp,mode=control",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// A path inside a QEMU option value: commas are doubled.
pub(crate) fn qemu_path(p: &Path) -> String {
    p.display().to_string().replace(',', ",,")
}

/// A QMP connection (line-delimited JSON), used only to run HMP commands.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    fn handshake(stream: UnixStream) -> io::Result<Qmp> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut qmp = Qmp {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
        };
        let greeting = qmp.line()?;
        if !greeting.contains("\"QMP\"") {
            return Err(io::Error::other(format!("QMP greeting {greeting:?}")));
        }
        qmp.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(qmp)
    }

    fn line(&mut self) -> io::Result<String> {
        let mut l = String::new();
        if self.reader.read_line(&mut l)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "QMP closed"));
        }
        Ok(l)
    }

    /// Sends one command; returns the `"return"` response line (events are
    /// skipped), or an error for an `"error"` response.
    fn execute(&mut self, command: &str) -> io::Result<String> {
        self.writer.write_all(command.as_bytes())?;
        self.writer.write_all(b"\n")?;
        loop {
            let l = self.line()?;
            if l.starts_with("{\"return\"") {
                return Ok(l);
            }
            if l.starts_with("{\"error\"") {
                return Err(io::Error::other(format!("QMP {command}: {}", l.trim())));
            }
        }
    }

    /// An HMP command through `human-monitor-command`; its output text.
    fn hmp(&mut self, command: &str) -> io::Result<String> {
        let line = format!(
            r#"{{"execute":"human-monitor-command","arguments":{{"command-line":"{}"}}}}"#,
            json_escape(command)
        );
        let reply = self.execute(&line)?;
        json_string_value(&reply).ok_or_else(|| io::Error::other(format!("QMP reply {reply:?}")))
    }
}

fn json_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// The string in `{"return": "..."}` with the escapes QEMU writes undone.
fn json_string_value(reply: &str) -> Option<String> {
    let rest = reply.split_once(':')?.1.trim_start();
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut out = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                'r' => out.push('\r'),
                't' => out.push('\t'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => out.push(c),
            },
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_command_line() {
        let a = router_args(Path::new("/d/hub.sock"), Path::new("/d,x/router.qmp")).join(" ");
        assert!(a.starts_with("-machine none -nodefaults"), "{a}");
        assert!(a.contains(
            "-netdev user,id=slirp,net=10.0.0.0/8,host=10.0.2.2,dns=10.0.2.3,dhcpstart=10.0.2.15 "
        ));
        assert!(
            a.contains("-netdev stream,id=hub,addr.type=unix,addr.path=/d/hub.sock,server=off")
        );
        assert!(a.contains("hubport,id=p0,hubid=0,netdev=slirp"));
        assert!(a.contains("hubport,id=p1,hubid=0,netdev=hub"));
        assert!(a.contains("socket,id=qmp,path=/d,,x/router.qmp,server=on,wait=off"));
    }

    #[test]
    fn json_strings() {
        assert_eq!(json_escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(
            json_string_value("{\"return\": \"\"}\r\n").as_deref(),
            Some("")
        );
        assert_eq!(
            json_string_value(r#"{"return": "Could not \"x\"\r\n\u0041"}"#).as_deref(),
            Some("Could not \"x\"\r\nA")
        );
        assert_eq!(json_string_value(r#"{"return": {}}"#), None);
    }

    #[test]
    fn macs() {
        assert_eq!(mac(1), "52:54:00:5e:00:01");
        assert_eq!(mac(0x1234), "52:54:00:5e:12:34");
    }
}
