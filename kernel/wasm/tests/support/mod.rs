//! Test support: the example guests (tests/wasm, built by `skiff-build`)
//! precompiled for the host, and provides a fake node [`Host`] with an
//! in-memory TCP stack.
#![allow(dead_code)]

pub mod real_net;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use skiff_wasm::{
    ConnId, Container, ContainerSpec, Host, NetError, Runtime, Shutdown, Step, Stream, Target,
};

pub fn wasm(name: &str) -> Vec<u8> {
    let path = skiff_build::test_guest(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The preview 1 module of one of skiff-build's `P2_GUESTS` (every guest
/// is also built for wasm32-wasip1), where [`wasm`] gives the component.
pub fn wasm_p1(name: &str) -> Vec<u8> {
    let path = skiff_build::test_guests().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub const MIB: usize = 1 << 20;

/// A container spec with these args and env and a 64 MiB memory limit.
pub fn spec(args: &[&str], env: &[(&str, &str)]) -> ContainerSpec {
    ContainerSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        memory_limit: 64 * MIB,
        ..ContainerSpec::default()
    }
}

/// Host-target artifact for a guest, compiled once per process.
pub fn artifact(name: &str) -> Vec<u8> {
    static CACHE: OnceLock<Mutex<HashMap<String, Vec<u8>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(a) = cache.lock().unwrap().get(name) {
        return a.clone();
    }
    let compiled = skiff_wasm::precompile_for(Target::Host, &wasm(name)).expect("precompile");
    cache.lock().unwrap().insert(name.into(), compiled.clone());
    compiled
}

/// The host-target runtime with a 1 ms epoch ticker, like the node's timer.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = Runtime::new(&skiff_wasm::engine_config(Target::Host)).expect("runtime");
        let engine = rt.engine().clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(1));
                engine.increment_epoch();
            }
        });
        rt
    })
}

#[derive(Default)]
pub struct Conn {
    pub port: u16,
    pub inbound: VecDeque<u8>,
    pub outbound: Vec<u8>,
    /// The peer finished sending.
    pub peer_done: bool,
    pub shut_write: bool,
    pub closed: bool,
}

/// An in-memory TCP stack: tests "connect" and read what the guest sent.
#[derive(Default)]
pub struct Net {
    pub backlog: VecDeque<ConnId>,
    pub conns: HashMap<ConnId, Conn>,
    next: u64,
}

impl Net {
    pub fn connect(&mut self, port: u16, request: &[u8]) -> ConnId {
        self.next += 1;
        let id = ConnId(self.next);
        self.conns.insert(
            id,
            Conn {
                port,
                inbound: request.iter().copied().collect(),
                peer_done: true,
                ..Conn::default()
            },
        );
        self.backlog.push_back(id);
        id
    }

    /// A connection whose peer keeps it open: send with [`Net::send`].
    pub fn open(&mut self, port: u16) -> ConnId {
        let id = self.connect(port, b"");
        self.conns.get_mut(&id).unwrap().peer_done = false;
        id
    }

    /// The peer sends `bytes` on an open connection.
    pub fn send(&mut self, id: ConnId, bytes: &[u8]) {
        self.conns.get_mut(&id).unwrap().inbound.extend(bytes);
    }
}

#[derive(Clone, Default)]
pub struct Output {
    pub stdout: Arc<Mutex<Vec<u8>>>,
    pub stderr: Arc<Mutex<Vec<u8>>>,
    /// Random bytes the guest drew from the host.
    pub random_bytes: Arc<Mutex<usize>>,
}

impl Output {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }
}

pub struct FakeHost {
    pub out: Output,
    pub net: Arc<Mutex<Net>>,
    pub ports: Vec<u16>,
    start: Instant,
    seed: u64,
}

impl FakeHost {
    pub fn new(ports: &[u16]) -> (Box<Self>, Output, Arc<Mutex<Net>>) {
        let out = Output::default();
        let net = Arc::new(Mutex::new(Net::default()));
        let host = Box::new(Self {
            out: out.clone(),
            net: net.clone(),
            ports: ports.to_vec(),
            start: Instant::now(),
            seed: 0x1234_5678,
        });
        (host, out, net)
    }
}

impl Host for FakeHost {
    fn realtime_ns(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
    }
    fn monotonic_ns(&mut self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn random(&mut self, buf: &mut [u8]) {
        *self.out.random_bytes.lock().unwrap() += buf.len();
        for b in buf {
            self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            *b = (self.seed >> 33) as u8;
        }
    }
    fn log(&mut self, stream: Stream, bytes: &[u8]) {
        match stream {
            Stream::Stdout => self.out.stdout.lock().unwrap().extend_from_slice(bytes),
            Stream::Stderr => self.out.stderr.lock().unwrap().extend_from_slice(bytes),
        }
    }
    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, NetError> {
        assert!(
            self.ports.contains(&port),
            "guest accepted on unknown port {port}"
        );
        let mut net = self.net.lock().unwrap();
        let Some(pos) = net.backlog.iter().position(|id| net.conns[id].port == port) else {
            return Ok(None);
        };
        Ok(net.backlog.remove(pos))
    }
    fn acceptable(&mut self, port: u16) -> bool {
        let net = self.net.lock().unwrap();
        net.backlog.iter().any(|id| net.conns[id].port == port)
    }
    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        let mut net = self.net.lock().unwrap();
        let c = net.conns.get_mut(&conn).ok_or(NetError::NotConnected)?;
        if c.inbound.is_empty() {
            return Ok(if c.peer_done { Some(0) } else { None });
        }
        let n = buf.len().min(c.inbound.len());
        for (dst, src) in buf.iter_mut().zip(c.inbound.drain(..n)) {
            *dst = src;
        }
        Ok(Some(n))
    }
    fn readable(&mut self, conn: ConnId) -> bool {
        let net = self.net.lock().unwrap();
        net.conns
            .get(&conn)
            .is_none_or(|c| !c.inbound.is_empty() || c.peer_done)
    }
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, NetError> {
        let mut net = self.net.lock().unwrap();
        let c = net.conns.get_mut(&conn).ok_or(NetError::NotConnected)?;
        if c.shut_write {
            return Err(NetError::NotConnected);
        }
        // Accept at most 1 KiB per call to exercise partial writes.
        let n = data.len().min(1024);
        c.outbound.extend_from_slice(&data[..n]);
        Ok(Some(n))
    }
    fn shutdown(&mut self, conn: ConnId, how: Shutdown) -> Result<(), NetError> {
        let mut net = self.net.lock().unwrap();
        let c = net.conns.get_mut(&conn).ok_or(NetError::NotConnected)?;
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            c.shut_write = true;
        }
        Ok(())
    }
    fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.net.lock().unwrap().conns.get_mut(&conn) {
            c.closed = true;
        }
    }
}

/// Steps until the container finishes (sleeping while it is blocked) or
/// `limit` passes.
pub fn run_to_end(c: &mut Container, limit: Duration) -> Step {
    let deadline = Instant::now() + limit;
    loop {
        let step = c.step(2);
        if step.is_finished() {
            return step;
        }
        assert!(
            Instant::now() < deadline,
            "container still {step:?} after {limit:?}"
        );
        if let Step::Blocked { .. } = step {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
