//! A userspace Ethernet switch on a unix stream socket, speaking QEMU's
//! `-netdev stream` framing (each frame prefixed by its length, 4 bytes big
//! endian). Every connection is a port; the hub learns source MACs and
//! forwards unicast to the learned port, floods the rest.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest frame the hub carries; a longer length prefix means a broken
/// or hostile client, which is disconnected (the stream cannot be resynced).
pub const MAX_FRAME: usize = 65535;
/// Destination and source MAC plus EtherType: anything shorter is skipped.
const MIN_FRAME: usize = 14;
/// A client that does not take a frame within this long is dropped, so one
/// stuck QEMU cannot stall the segment.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

type Mac = [u8; 6];

struct Port {
    /// Serializes writes from the reader threads of other ports.
    writer: Mutex<UnixStream>,
}

#[derive(Default)]
struct State {
    ports: HashMap<u64, Arc<Port>>,
    macs: HashMap<Mac, u64>,
    next_id: u64,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove(&self, id: u64) {
        let mut st = self.lock();
        if let Some(port) = st.ports.remove(&id) {
            let w = port.writer.lock().unwrap_or_else(|e| e.into_inner());
            let _ = w.shutdown(Shutdown::Both);
        }
        st.macs.retain(|_, p| *p != id);
    }
}

/// A running hub. Dropping it closes the socket and every connection.
pub struct Hub {
    path: PathBuf,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub").field("path", &self.path).finish()
    }
}

impl Hub {
    /// Listens on a new unix socket at `path` (which must not exist) and
    /// serves it on background threads.
    pub fn start(path: impl Into<PathBuf>) -> io::Result<Hub> {
        let path = path.into();
        let listener = UnixListener::bind(&path)?;
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("segment-hub".into())
            .spawn(move || accept_loop(&listener, &s))?;
        Ok(Hub {
            path,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// The socket QEMU connects to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many clients are connected now.
    pub fn ports(&self) -> usize {
        self.shared.lock().ports.len()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = UnixStream::connect(&self.path);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        let ids: Vec<u64> = self.shared.lock().ports.keys().copied().collect();
        for id in ids {
            self.shared.remove(id);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: &UnixListener, shared: &Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let Ok(conn) = conn else {
            // E.g. out of descriptors: do not spin.
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let Ok(writer) = conn.try_clone() else {
            continue;
        };
        if writer.set_write_timeout(Some(WRITE_TIMEOUT)).is_err() {
            continue;
        }
        let id = {
            let mut st = shared.lock();
            let id = st.next_id;
            st.next_id += 1;
            st.ports.insert(
                id,
                Arc::new(Port {
                    writer: Mutex::new(writer),
                }),
            );
            id
        };
        let s = Arc::clone(shared);
        let spawned = std::thread::Builder::new()
            .name(format!("segment-port-{id}"))
            .spawn(move || {
                serve_port(conn, id, &s);
                s.remove(id);
            });
        if spawned.is_err() {
            shared.remove(id);
        }
    }
}

/// Reads frames from one port until it closes or breaks the framing.
fn serve_port(mut conn: UnixStream, id: u64, shared: &Shared) {
    let mut buf = vec![0u8; MAX_FRAME];
    loop {
        let mut len = [0u8; 4];
        if conn.read_exact(&mut len).is_err() {
            return;
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_FRAME {
            return;
        }
        let frame = &mut buf[..len];
        if conn.read_exact(frame).is_err() {
            return;
        }
        if len >= MIN_FRAME {
            forward(shared, id, frame);
        }
    }
}

fn forward(shared: &Shared, from: u64, frame: &[u8]) {
    let mut dst = [0u8; 6];
    let mut src = [0u8; 6];
    dst.copy_from_slice(&frame[..6]);
    src.copy_from_slice(&frame[6..12]);
    let targets: Vec<(u64, Arc<Port>)> = {
        let mut st = shared.lock();
        // A multicast source is bogus: never learn it.
        if src[0] & 1 == 0 {
            st.macs.insert(src, from);
        }
        let learned = (dst[0] & 1 == 0)
            .then(|| st.macs.get(&dst).copied())
            .flatten();
        match learned {
            // Unicast to a MAC behind the sender's own port: nothing to do.
            Some(to) if to == from => Vec::new(),
            Some(to) => st
                .ports
                .get(&to)
                .map(|p| vec![(to, Arc::clone(p))])
                .unwrap_or_default(),
            None => st
                .ports
                .iter()
                .filter(|(id, _)| **id != from)
                .map(|(id, p)| (*id, Arc::clone(p)))
                .collect(),
        }
    };
    let mut msg = Vec::with_capacity(4 + frame.len());
    msg.extend_from_slice(&(frame.len() as u32).to_be_bytes());
    msg.extend_from_slice(frame);
    for (id, port) in targets {
        let ok = {
            let mut w = port.writer.lock().unwrap_or_else(|e| e.into_inner());
            w.write_all(&msg).is_ok()
        };
        // A failed or timed-out write may have sent part of a frame: that
        // client's stream is out of sync, so it goes.
        if !ok {
            shared.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn hub() -> (tempfile::TempDir, Hub) {
        let dir = tempfile::tempdir().unwrap();
        let hub = Hub::start(dir.path().join("hub.sock")).unwrap();
        (dir, hub)
    }

    fn client(hub: &Hub) -> UnixStream {
        let before = hub.ports();
        let c = UnixStream::connect(hub.path()).unwrap();
        wait_ports(hub, before + 1);
        c
    }

    fn wait_ports(hub: &Hub, n: usize) {
        let t = Instant::now();
        while hub.ports() != n {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "{} ports",
                hub.ports()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn mac(n: u8) -> Mac {
        [0x52, 0x54, 0, 0, 0, n]
    }

    const BROADCAST: Mac = [0xff; 6];

    fn frame(dst: Mac, src: Mac, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(payload);
        f
    }

    fn send(c: &mut UnixStream, f: &[u8]) {
        c.write_all(&(f.len() as u32).to_be_bytes()).unwrap();
        c.write_all(f).unwrap();
    }

    /// The next frame, waiting up to 5 s; `None` if the hub closed `c`.
    fn recv(c: &mut UnixStream) -> Option<Vec<u8>> {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut len = [0u8; 4];
        c.read_exact(&mut len).ok()?;
        let mut f = vec![0u8; u32::from_be_bytes(len) as usize];
        c.read_exact(&mut f).unwrap();
        Some(f)
    }

    /// Nothing arrives within 300 ms (and the connection is still open).
    fn silent(c: &mut UnixStream) -> bool {
        c.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut b = [0u8; 1];
        matches!(c.read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    #[test]
    fn floods_broadcast_and_unknown_then_learns() {
        let (_d, hub) = hub();
        let (mut a, mut b, mut c) = (client(&hub), client(&hub), client(&hub));

        let bc = frame(BROADCAST, mac(1), b"hello");
        send(&mut a, &bc);
        assert_eq!(recv(&mut b).as_deref(), Some(&bc[..]));
        assert_eq!(recv(&mut c).as_deref(), Some(&bc[..]));
        assert!(silent(&mut a), "no echo to the sender");

        // mac(2) is unknown yet: flooded. The hub learns it behind b.
        let to_unknown = frame(mac(2), mac(1), b"x");
        send(&mut a, &to_unknown);
        assert_eq!(recv(&mut b).as_deref(), Some(&to_unknown[..]));
        assert_eq!(recv(&mut c).as_deref(), Some(&to_unknown[..]));
        let reply = frame(mac(1), mac(2), b"reply");
        send(&mut b, &reply);
        assert_eq!(recv(&mut a).as_deref(), Some(&reply[..]));
        assert!(silent(&mut c), "learned unicast goes to one port");

        let unicast = frame(mac(2), mac(1), b"to b only");
        send(&mut a, &unicast);
        assert_eq!(recv(&mut b).as_deref(), Some(&unicast[..]));
        assert!(silent(&mut c));

        // Multicast (odd first octet) is flooded like broadcast.
        let mc = frame([0x01, 0, 0x5e, 0, 0, 1], mac(3), b"mc");
        send(&mut c, &mc);
        assert_eq!(recv(&mut a).as_deref(), Some(&mc[..]));
        assert_eq!(recv(&mut b).as_deref(), Some(&mc[..]));
    }

    #[test]
    fn a_disconnect_drops_only_that_port_and_its_macs() {
        let (_d, hub) = hub();
        let (mut a, mut b, mut c) = (client(&hub), client(&hub), client(&hub));
        send(&mut b, &frame(BROADCAST, mac(2), b""));
        assert!(recv(&mut a).is_some() && recv(&mut c).is_some());
        drop(b);
        wait_ports(&hub, 2);
        // mac(2) is forgotten: a frame to it floods to c instead of vanishing.
        let f = frame(mac(2), mac(1), b"where?");
        send(&mut a, &f);
        assert_eq!(recv(&mut c).as_deref(), Some(&f[..]));
        // A newcomer works as before.
        let mut d = client(&hub);
        let bc = frame(BROADCAST, mac(3), b"hi");
        send(&mut c, &bc);
        assert_eq!(recv(&mut a).as_deref(), Some(&bc[..]));
        assert_eq!(recv(&mut d).as_deref(), Some(&bc[..]));
    }

    #[test]
    fn malformed_and_oversized_frames_do_not_hurt_others() {
        let (_d, hub) = hub();
        let (mut a, mut b, mut c) = (client(&hub), client(&hub), client(&hub));
        // Too short to be Ethernet: skipped, the stream stays in sync.
        send(&mut a, b"short");
        send(&mut a, &[]);
        let ok = frame(BROADCAST, mac(1), b"after");
        send(&mut a, &ok);
        assert_eq!(recv(&mut b).as_deref(), Some(&ok[..]));
        assert_eq!(recv(&mut c).as_deref(), Some(&ok[..]));
        // The largest legal frame passes.
        let big = frame(BROADCAST, mac(1), &vec![7u8; MAX_FRAME - 14]);
        send(&mut a, &big);
        assert_eq!(recv(&mut b).map(|f| f.len()), Some(MAX_FRAME));
        assert_eq!(recv(&mut c).map(|f| f.len()), Some(MAX_FRAME));
        // A length over the bound disconnects the sender only.
        c.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes()).unwrap();
        wait_ports(&hub, 2);
        assert_eq!(recv(&mut c), None, "hub closed c");
        let again = frame(BROADCAST, mac(2), b"still here");
        send(&mut b, &again);
        assert_eq!(recv(&mut a).as_deref(), Some(&again[..]));
        // So does a frame cut short by the client closing.
        b.write_all(&100u32.to_be_bytes()).unwrap();
        b.write_all(&[0u8; 10]).unwrap();
        drop(b);
        wait_ports(&hub, 1);
    }

    #[test]
    fn drop_closes_clients_and_removes_the_socket() {
        let (_d, hub) = hub();
        let mut a = client(&hub);
        let path = hub.path().to_owned();
        drop(hub);
        assert!(!path.exists());
        assert_eq!(recv(&mut a), None);
    }
}
