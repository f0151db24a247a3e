//! The WASI host layer under arbitrary calls (`cargo xtask fuzz wasi_calls`,
//! and bounded in `cargo test`): a fixed guest reads a script of calls from
//! the fuzz input (handed out as its first `random_get`) and makes them with
//! the script's arguments as pointers, lengths, fds and flags, then grows its
//! memory and tables as the script says. Nothing may panic, and every
//! allocation the host makes for the guest stays within the container's
//! limits: log writes at most [`crate::wasi::MAX_GATHER`] a call, memory
//! within its limit, the emptyDir within its capacity, accepted connections
//! at most [`MAX_CONNECTIONS`] and all closed when the container goes, and
//! no host call fails other than with an errno or an OOM kill.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use spin::{Mutex, Once};

use crate::host::{ConnId, Host, NetError, Shutdown, Stream};
use crate::{ContainerSpec, Image, MAX_CONNECTIONS, Runtime, Step, Target, Volume};

/// Each script record: an op byte, three unused, then nine i32 arguments.
const RECORD: usize = 40;
/// Where the script lands in the guest's memory, and its longest length.
const SCRIPT_AT: usize = 0x8000;
const SCRIPT_MAX: usize = 0x8000;
const MEMORY_LIMIT: usize = 4 << 20;
const EMPTY_DIR: usize = 16 << 10;
/// Steps before a guest that keeps blocking is given up (and dropped).
const MAX_STEPS: usize = 64;

/// (name, parameter types: `i` i32, `I` i64) of every call the script can
/// make; each returns an errno, which the guest drops.
const CALLS: &[(&str, &str)] = &[
    ("fd_read", "iiii"),
    ("fd_write", "iiii"),
    ("fd_close", "i"),
    ("fd_seek", "iIii"),
    ("fd_tell", "ii"),
    ("fd_fdstat_get", "ii"),
    ("fd_fdstat_set_flags", "ii"),
    ("fd_filestat_get", "ii"),
    ("fd_prestat_get", "ii"),
    ("fd_prestat_dir_name", "iii"),
    ("fd_readdir", "iiiIi"),
    ("fd_sync", "i"),
    ("fd_datasync", "i"),
    ("path_open", "iiiiiIIii"),
    ("path_filestat_get", "iiiii"),
    ("path_create_directory", "iii"),
    ("path_unlink_file", "iii"),
    ("path_remove_directory", "iii"),
    ("path_rename", "iiiiii"),
    ("fd_filestat_set_size", "iI"),
    ("args_sizes_get", "ii"),
    ("args_get", "ii"),
    ("environ_sizes_get", "ii"),
    ("environ_get", "ii"),
    ("clock_res_get", "ii"),
    ("clock_time_get", "iIi"),
    ("random_get", "ii"),
    ("poll_oneoff", "iiii"),
    ("sock_accept", "iii"),
    ("sock_recv", "iiiiii"),
    ("sock_send", "iiiii"),
    ("sock_shutdown", "ii"),
    ("sched_yield", ""),
];

/// The interpreter guest: `random_get` fetches the script, then each record
/// calls `CALLS[op % n]`, or (the two ops past them) grows the memory or the
/// table by its first argument.
fn guest_wat() -> String {
    let wasm_ty = |c: char| if c == 'I' { "i64" } else { "i32" };
    let mut imports = String::new();
    let mut cases = String::new();
    for (i, (name, params)) in CALLS.iter().enumerate() {
        let ps: Vec<&str> = params.chars().map(wasm_ty).collect();
        let ps = if ps.is_empty() {
            String::new()
        } else {
            format!("(param {})", ps.join(" "))
        };
        imports += &format!(
            "(import \"wasi_snapshot_preview1\" \"{name}\" (func $f{i} {ps} (result i32)))\n"
        );
        let args: String = params
            .chars()
            .enumerate()
            .map(|(k, c)| {
                let load = format!("(i32.load offset={} (local.get $p))", 4 + 4 * k);
                if c == 'I' {
                    format!("(i64.extend_i32_s {load}) ")
                } else {
                    format!("{load} ")
                }
            })
            .collect();
        cases += &format!(
            "(block (br_if 0 (i32.ne (local.get $op) (i32.const {i}))) (drop (call $f{i} {args})) (br $next))\n"
        );
    }
    let n = CALLS.len();
    format!(
        r#"(module
{imports}
(memory (export "memory") 1)
(table $t 1 funcref)
(func (export "_start") (local $p i32) (local $end i32) (local $op i32)
  (drop (call $f{random} (i32.const {SCRIPT_AT}) (i32.const {SCRIPT_MAX})))
  (local.set $p (i32.const {SCRIPT_AT}))
  (local.set $end (i32.const {end}))
  (block $done (loop $loop
    (br_if $done (i32.gt_u (i32.add (local.get $p) (i32.const {RECORD})) (local.get $end)))
    (local.set $op (i32.rem_u (i32.load8_u (local.get $p)) (i32.const {ops})))
    (block $next
{cases}
      (block (br_if 0 (i32.ne (local.get $op) (i32.const {n})))
        (drop (memory.grow (i32.and (i32.load offset=4 (local.get $p)) (i32.const 31)))) (br $next))
      (drop (table.grow $t (ref.null func) (i32.and (i32.load offset=4 (local.get $p)) (i32.const 0x3ffff)))))
    (local.set $p (i32.add (local.get $p) (i32.const {RECORD})))
    (br $loop))))
)"#,
        end = SCRIPT_AT + SCRIPT_MAX,
        random = CALLS
            .iter()
            .position(|(name, _)| *name == "random_get")
            .expect("random_get is a call"),
        ops = n + 2,
    )
}

/// What the host saw, checked as it happens and after the container ends.
#[derive(Default)]
struct Seen {
    open: Vec<ConnId>,
    next: u64,
}

struct FuzzHost {
    script: Option<Vec<u8>>,
    clock: u64,
    seen: Arc<Mutex<Seen>>,
}

impl Host for FuzzHost {
    fn realtime_ns(&mut self) -> u64 {
        1_700_000_000_000_000_000 + self.monotonic_ns()
    }
    fn monotonic_ns(&mut self) -> u64 {
        // Every look at the clock moves it, so sleeps end.
        self.clock += 1_000_000;
        self.clock
    }
    fn random(&mut self, buf: &mut [u8]) {
        match self.script.take() {
            Some(script) => {
                let n = script.len().min(buf.len());
                buf[..n].copy_from_slice(&script[..n]);
                buf[n..].fill(0);
            }
            None => buf.fill(0x5a),
        }
    }
    fn log(&mut self, _stream: Stream, bytes: &[u8]) {
        assert!(
            bytes.len() <= crate::wasi::MAX_GATHER,
            "one write logged {} bytes",
            bytes.len()
        );
    }
    fn memory_growing(&mut self, _current: usize, desired: usize) -> bool {
        assert!(
            desired <= MEMORY_LIMIT,
            "asked the node for {desired} bytes"
        );
        true
    }
    fn accept(&mut self, port: u16) -> Result<Option<ConnId>, NetError> {
        assert_eq!(port, 8080);
        let mut s = self.seen.lock();
        assert!(s.open.len() < MAX_CONNECTIONS, "accepted past the cap");
        s.next += 1;
        let id = ConnId(s.next);
        s.open.push(id);
        Ok(Some(id))
    }
    fn acceptable(&mut self, _port: u16) -> bool {
        true
    }
    fn recv(&mut self, conn: ConnId, buf: &mut [u8]) -> Result<Option<usize>, NetError> {
        self.known(conn)?;
        // Odd connections have data; even ones have none yet.
        if conn.0 % 2 == 1 {
            let n = buf.len().min(7);
            buf[..n].copy_from_slice(&b"GET / \n"[..n]);
            Ok(Some(n))
        } else {
            Ok(None)
        }
    }
    fn readable(&mut self, conn: ConnId) -> bool {
        conn.0 % 2 == 1
    }
    fn send(&mut self, conn: ConnId, data: &[u8]) -> Result<Option<usize>, NetError> {
        self.known(conn)?;
        Ok(Some(data.len().min(1000)))
    }
    fn shutdown(&mut self, conn: ConnId, _how: Shutdown) -> Result<(), NetError> {
        self.known(conn)
    }
    fn close(&mut self, conn: ConnId) {
        let mut s = self.seen.lock();
        let at = s.open.iter().position(|&c| c == conn);
        let at = at.unwrap_or_else(|| panic!("{conn:?} closed twice or never accepted"));
        s.open.swap_remove(at);
    }
}

impl FuzzHost {
    fn known(&self, conn: ConnId) -> Result<(), NetError> {
        assert!(
            self.seen.lock().open.contains(&conn),
            "{conn:?} used after close"
        );
        Ok(())
    }
}

fn setup() -> &'static (Runtime, Image) {
    static RT: Once<(Runtime, Image)> = Once::new();
    RT.call_once(|| {
        let rt = Runtime::new(&crate::engine_config(Target::Host)).expect("runtime");
        let wasm = wat::parse_str(guest_wat()).expect("the interpreter guest parses");
        let artifact = crate::precompile_for(Target::Host, &wasm).expect("compiles");
        let image = rt.load(&artifact).expect("loads");
        (rt, image)
    })
}

/// Runs one script (`data`, at most 32 KiB of it) against the host layer;
/// how the guest ended (`Running`: given up while blocked).
pub fn one(data: &[u8]) -> Step {
    let (rt, image) = setup();
    let data = &data[..data.len().min(SCRIPT_MAX)];
    let scratch = Volume::empty_dir("/data", EMPTY_DIR).expect("volume");
    let config = Volume::read_only("/cfg", [("a", b"x=1".to_vec()), ("d/b", b"yy".to_vec())])
        .expect("volume");
    let spec = ContainerSpec {
        args: ["fuzz", "a b"].map(String::from).to_vec(),
        env: [("K", "v")]
            .map(|(k, v)| (String::from(k), String::from(v)))
            .to_vec(),
        memory_limit: MEMORY_LIMIT,
        volumes: [scratch.clone(), config].to_vec(),
        ports: [8080].to_vec(),
    };
    let seen = Arc::new(Mutex::new(Seen::default()));
    let host = FuzzHost {
        script: Some(data.to_vec()),
        clock: 0,
        seen: seen.clone(),
    };
    let mut c = rt.spawn(image, spec, Box::new(host)).expect("spawn");
    let mut step = Step::Running;
    for _ in 0..MAX_STEPS {
        step = c.step(1 << 40);
        if step.is_finished() {
            break;
        }
        let tree = scratch.tree.lock();
        assert!(
            tree.used <= tree.capacity,
            "emptyDir {} > {}",
            tree.used,
            tree.capacity
        );
    }
    drop(c);
    assert!(
        seen.lock().open.is_empty(),
        "connections left open after the container went"
    );
    let tree = scratch.tree.lock();
    assert!(
        tree.used <= tree.capacity,
        "emptyDir {} > {}",
        tree.used,
        tree.capacity
    );
    // The interpreter itself cannot trap: a trap is a host call failing
    // with something other than an errno or an OOM kill.
    assert!(!matches!(step, Step::Trapped(_)), "{step:?}");
    step
}

/// The HTTP/1.1 decoders of `wasi:http` pods, which read what clients
/// send to a handler and what servers answer the outgoing handler
/// (`cargo xtask fuzz http_wire`, and bounded in `cargo test`): the input
/// is one connection's bytes after two control bytes (which side; how many
/// bytes arrive at a time). Nothing may panic, every `content-length` body
/// decodes to exactly its length, no body to more bytes than arrived, and
/// the undecoded bytes held stay bounded. How many messages were whole.
pub fn http_wire(data: &[u8]) -> usize {
    crate::component::fuzz_wire(data)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use crate::Step;

    /// Bounded fuzzing on stable over [`super::one`] (`SKIFF_FUZZ_SECS`,
    /// `SKIFF_FUZZ_SEED` override): random scripts biased to small numbers,
    /// which make valid fds, pointers and lengths.
    #[test]
    fn fuzz_wasi_calls_bounded() {
        let mut run = skiff_test_support::fuzz::Bounded::from_env(2.0, 0xa51);
        let mut ends = std::collections::BTreeMap::<&str, u64>::new();
        while run.running() {
            let records = 1 + run.next_u64() as usize % 64;
            let mut script = alloc::vec![0u8; records * super::RECORD];
            for r in script.chunks_mut(super::RECORD) {
                r[0] = run.next_u64() as u8;
                for a in r[4..].chunks_mut(4) {
                    let v: u32 = match run.next_u64() % 4 {
                        0 => (run.next_u64() % 8) as u32,
                        1 => (run.next_u64() % 0x10000) as u32,
                        2 => (run.next_u64() % 64) as u32 * 8,
                        _ => run.next_u64() as u32,
                    };
                    a.copy_from_slice(&v.to_le_bytes());
                }
            }
            let end = match super::one(&script) {
                Step::Exited(0) => "completed",
                Step::Exited(_) => "exited",
                Step::OutOfMemory => "oom",
                _ => "blocked",
            };
            *ends.entry(end).or_default() += 1;
        }
        std::eprintln!("fuzz: {} WASI scripts: {ends:?}", run.runs());
        // The script really ran: most complete, some hit the limits.
        assert!(run.runs() > 10);
        assert!(
            ends.get("completed").copied().unwrap_or(0) > run.runs() / 4,
            "{ends:?}"
        );
    }

    /// Bounded fuzzing over [`super::http_wire`]: well-formed exchanges of
    /// each framing, mutated; unmutated, each decodes whole.
    #[test]
    fn fuzz_http_wire_bounded() {
        const REQUESTS: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n\
            POST /e HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
            5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\nTrailer: t\r\n\r\n";
        const RESPONSES: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n\
            HTTP/1.1 204 No Content\r\n\r\n\
            HTTP/1.1 200 OK\r\n\r\nuntil the close";
        let seeds: [(u8, &[u8], usize); 2] = [(0, REQUESTS, 3), (1, RESPONSES, 5)];
        for (side, wire, whole) in seeds {
            for piece in [1u8, 7, 255] {
                let input = [&[side, piece][..], wire].concat();
                assert_eq!(super::http_wire(&input), whole, "side {side} piece {piece}");
            }
        }
        let mut run = skiff_test_support::fuzz::Bounded::from_env(2.0, 0x4770);
        let mut refused = 0;
        while run.running() {
            let (side, wire, whole) = seeds[run.below(2)];
            let mut input = [
                &[side | (run.next_u64() as u8 & 2), run.next_u64() as u8][..],
                wire,
            ]
            .concat();
            run.mutate(&mut input);
            if super::http_wire(&input) < whole {
                refused += 1;
            }
        }
        std::eprintln!("fuzz: {} exchanges, {refused} cut short", run.runs());
        assert!(run.runs() > 10);
    }
}
