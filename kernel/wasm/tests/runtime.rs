//! The pod runtime end to end on the host: real guests (tests/wasm, built for
//! wasm32-wasip1), precompiled by our compiler, run through the container API
//! with a fake node host.

mod support;

use std::time::{Duration, Instant};

use skiff_wasm::{ContainerSpec, Error, Step, Target, Volume};
use support::{FakeHost, MIB, artifact, run_to_end, runtime, spec, wasm};

fn spawn(
    name: &str,
    spec: ContainerSpec,
) -> (
    skiff_wasm::Container,
    support::Output,
    std::sync::Arc<std::sync::Mutex<support::Net>>,
) {
    let rt = runtime();
    let image = rt.load(&artifact(name)).expect("load artifact");
    let (host, out, net) = FakeHost::new(&spec.ports);
    let c = rt.spawn(&image, spec, host).expect("spawn");
    (c, out, net)
}

#[test]
fn hello_prints_and_exits_with_the_requested_code() {
    let (mut c, out, _) = spawn("hello", spec(&["hello", "7"], &[]));
    assert_eq!(run_to_end(&mut c, Duration::from_secs(10)), Step::Exited(7));
    let stdout = out.stdout();
    assert!(stdout.contains("hello from a Skiff pod\n"), "{stdout}");
    assert!(stdout.contains("args: 2\n"), "{stdout}");
    assert!(stdout.contains("exiting with 7\n"), "{stdout}");
    assert_eq!(out.stderr(), "this line goes to stderr\n");
    // Finished containers keep answering with their outcome.
    assert_eq!(c.step(1), Step::Exited(7));

    let (mut c, out, _) = spawn("hello", spec(&["hello"], &[("EXIT_CODE", "3")]));
    assert_eq!(run_to_end(&mut c, Duration::from_secs(10)), Step::Exited(3));
    assert!(out.stdout().contains("exiting with 3"));

    let (mut c, _, _) = spawn("hello", spec(&["hello"], &[]));
    assert_eq!(run_to_end(&mut c, Duration::from_secs(10)), Step::Exited(0));
}

#[test]
fn env_reader_sees_args_env_and_configmap_and_cannot_write_it() {
    let config = Volume::read_only(
        "/config",
        [
            ("app.conf", b"mode=fast".to_vec()),
            ("greeting", b"hi there".to_vec()),
        ],
    )
    .unwrap();
    let data = Volume::empty_dir("/data", MIB).unwrap();
    let mut s = spec(
        &["env-reader", "--flag", "two words"],
        &[("POD_NAME", "pod-a"), ("DATA_DIR", "/data")],
    );
    s.volumes = vec![config.clone(), data.clone()];
    let (mut c, out, _) = spawn("env-reader", s);
    let end = run_to_end(&mut c, Duration::from_secs(10));
    let stdout = out.stdout();
    assert_eq!(
        end,
        Step::Exited(0),
        "stdout: {stdout}\nstderr: {}",
        out.stderr()
    );
    for line in [
        "arg[0]=env-reader",
        "arg[1]=--flag",
        "arg[2]=two words",
        "env DATA_DIR=/data",
        "env POD_NAME=pod-a",
        "file app.conf=mode=fast",
        "file greeting=hi there",
        // EROFS (69): ConfigMap volumes are read-only.
        "write /config: errno 69",
        "data written by env-reader",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    assert_eq!(config.read("written-by-guest"), None);
    // The emptyDir write is visible to the node (and other containers).
    assert_eq!(
        data.read("note.txt").as_deref(),
        Some(&b"written by env-reader"[..])
    );
}

#[test]
fn echo_server_answers_http_through_the_socket_host() {
    let mut s = spec(
        &["echo-server"],
        &[("POD_NAME", "echo-1"), ("MAX_REQUESTS", "2")],
    );
    s.ports = vec![8080];
    let (mut c, out, net) = spawn("echo-server", s);
    // No connection yet: the guest blocks in accept (I/O only, no deadline).
    let mut step = c.step(5);
    let t = Instant::now();
    while step == Step::Running && t.elapsed() < Duration::from_secs(5) {
        step = c.step(5);
    }
    assert_eq!(step, Step::Blocked { until: None }, "{}", out.stderr());

    for path in ["/hello", "/again?x=1"] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: echo.test\r\nUser-Agent: skiff-test\r\n\r\n");
        let id = net.lock().unwrap().connect(8080, request.as_bytes());
        let t = Instant::now();
        while !net.lock().unwrap().conns[&id].closed {
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "no response; stderr: {}",
                out.stderr()
            );
            if c.step(5).is_finished() {
                break;
            }
        }
        let conn = &net.lock().unwrap().conns[&id];
        let response = String::from_utf8(conn.outbound.clone()).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.contains("Hostname: echo-1"), "{response}");
        assert!(
            response.contains(&format!("request_uri={path}")),
            "{response}"
        );
        assert!(response.contains("host=echo.test"), "{response}");
        assert!(response.contains("user-agent=skiff-test"), "{response}");
        let (head, body) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{response}"
        );
        assert!(conn.shut_write && conn.closed);
    }
    assert_eq!(run_to_end(&mut c, Duration::from_secs(10)), Step::Exited(0));
    assert!(out.stdout().contains("served GET /hello HTTP/1.1"));
}

#[test]
fn busy_loops_are_preempted_and_share_the_cpu() {
    // Forever, printing progress every 200k iterations.
    let burner = || spawn("cpu-burner", spec(&["cpu-burner", "0", "200000"], &[]));
    let (mut a, out_a, _) = burner();
    let (mut b, out_b, _) = burner();
    let mut longest = Duration::ZERO;
    for _ in 0..60 {
        for c in [&mut a, &mut b] {
            let t = Instant::now();
            assert_eq!(c.step(2), Step::Running);
            longest = longest.max(t.elapsed());
        }
    }
    // A 2-tick (2 ms) budget; allow for a loaded machine, but a slice that
    // never ends would hang the loop above and one that ignored the budget
    // would take seconds.
    assert!(
        longest < Duration::from_millis(500),
        "longest slice {longest:?}"
    );
    let progress = |out: &support::Output| {
        out.stdout()
            .lines()
            .filter(|l| l.starts_with("progress "))
            .count()
    };
    let (pa, pb) = (progress(&out_a), progress(&out_b));
    assert!(pa >= 3 && pb >= 3, "both must progress: {pa} vs {pb}");
    assert!(pa <= pb * 4 && pb <= pa * 4, "unfair split: {pa} vs {pb}");
}

#[test]
fn a_finite_burner_exits_with_its_result() {
    let (mut c, out, _) = spawn("cpu-burner", spec(&["cpu-burner", "1000000"], &[]));
    assert_eq!(run_to_end(&mut c, Duration::from_secs(20)), Step::Exited(0));
    assert!(
        out.stdout().contains("after 1000000 iterations"),
        "{}",
        out.stdout()
    );
}

#[test]
fn going_over_the_memory_limit_is_an_oom_kill() {
    let mut s = spec(&["oom"], &[]);
    s.memory_limit = 16 * MIB;
    let (mut c, out, _) = spawn("oom", s);
    assert_eq!(
        run_to_end(&mut c, Duration::from_secs(20)),
        Step::OutOfMemory
    );
    let allocated = out
        .stdout()
        .lines()
        .filter(|l| l.starts_with("allocated"))
        .count();
    assert!(
        (1..16).contains(&allocated),
        "allocated {allocated} MiB under a 16 MiB limit"
    );
}

#[test]
fn traps_are_reported() {
    let (mut c, out, _) = spawn("trap", spec(&["trap"], &[]));
    match run_to_end(&mut c, Duration::from_secs(10)) {
        Step::Trapped(reason) => assert!(reason.contains("unreachable"), "{reason}"),
        other => panic!("expected a trap, got {other:?}"),
    }
    assert_eq!(out.stdout(), "about to trap\n");
}

#[test]
fn sleeping_guests_block_until_their_deadline() {
    let (mut c, out, _) = spawn("hello", spec(&["hello"], &[("SLEEP_MS", "200")]));
    let t = Instant::now();
    let mut blocked_until = None;
    loop {
        match c.step(2) {
            Step::Running => {}
            Step::Blocked { until } => {
                blocked_until = blocked_until.or(until);
                std::thread::sleep(Duration::from_millis(5));
            }
            end => {
                assert_eq!(end, Step::Exited(0), "{}", out.stderr());
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(10));
    }
    assert!(blocked_until.is_some(), "sleep must report its deadline");
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "woke early: {:?}",
        t.elapsed()
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    assert_eq!(skiff_wasm::precompile(b"hello world"), Err(Error::NotWasm));
    let hello = wasm("hello");
    match skiff_wasm::precompile(&hello[..hello.len() / 2]) {
        Err(Error::Invalid(msg)) => assert!(!msg.is_empty()),
        other => panic!("truncated wasm: {other:?}"),
    }

    let rt = runtime();
    let err = |r: Result<skiff_wasm::Image, Error>| r.err().expect("load must fail").to_string();
    assert!(err(rt.load(&hello)).contains("raw WebAssembly"));
    assert!(err(rt.load(b"garbage")).contains("not a precompiled"));
    let good = artifact("hello");
    let e = err(rt.load(&good[..good.len() - 100]));
    assert!(e.contains("unusable precompiled artifact"), "{e}");
    // An artifact for the node kernel is rejected by the host runtime: the
    // header pins the target.
    let kernel = skiff_wasm::precompile(&hello).expect("kernel artifact");
    let e = err(rt.load(&kernel));
    assert!(e.contains("compiled for operating system 'none'"), "{e}");
    // A different configuration (no epoch checks) is rejected too.
    let mut other = skiff_wasm::engine_config(Target::Host);
    other.epoch_interruption(false);
    let foreign = skiff_wasm::wasmtime::Engine::new(&other)
        .unwrap()
        .precompile_module(&hello)
        .unwrap();
    let e = err(rt.load(&foreign));
    assert!(e.contains("unusable precompiled artifact"), "{e}");
}

#[test]
fn modules_importing_unknown_functions_are_refused() {
    let module =
        wat::parse_str(r#"(module (import "env" "nope" (func)) (func (export "_start")))"#)
            .unwrap();
    let a = skiff_wasm::precompile_for(Target::Host, &module).unwrap();
    let e = runtime().load(&a).err().expect("must fail").to_string();
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn guest_pointers_are_bounds_checked() {
    // fd_write with an iovec array past the end of memory must answer
    // EFAULT (21), which the module passes to proc_exit.
    let module = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (call $exit (call $w (i32.const 1) (i32.const 65530) (i32.const 4) (i32.const 0)))))"#,
    )
    .unwrap();
    let rt = runtime();
    let image = rt
        .load(&skiff_wasm::precompile_for(Target::Host, &module).unwrap())
        .unwrap();
    let (host, _, _) = FakeHost::new(&[]);
    let mut c = rt.spawn(&image, spec(&["x"], &[]), host).unwrap();
    assert_eq!(run_to_end(&mut c, Duration::from_secs(5)), Step::Exited(21));
}

/// Runs a module whose `_start` exits with the i32 left by `body`, with
/// `data` at address 64 of its memory and the given volumes preopened.
/// The body may count in global `$n` and use local `$r`.
fn exit_code_of(body: &str, data: &str, volumes: Vec<Volume>) -> Step {
    let module = wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "path_open"
                (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "path_create_directory"
                (func $mkdir (param i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "fd_write"
                (func $write (param i32 i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (global $n (mut i32) (i32.const 0))
            (data (i32.const 64) "{data}")
            (func (export "_start") (local $r i32) (call $exit {body})))"#
    ))
    .unwrap();
    let rt = runtime();
    let image = rt
        .load(&skiff_wasm::precompile_for(Target::Host, &module).unwrap())
        .unwrap();
    let (host, _, _) = FakeHost::new(&[]);
    let mut s = spec(&["x"], &[]);
    s.volumes = volumes;
    let mut c = rt.spawn(&image, s, host).unwrap();
    run_to_end(&mut c, Duration::from_secs(5))
}

#[test]
fn volumes_enforce_their_bounds() {
    let config = || Volume::read_only("/config", [("a", b"x".to_vec())]).unwrap();
    // Climbing out of the preopened directory: ENOTCAPABLE (76).
    let open = |path_len: usize, oflags: i32, rights: i64| {
        format!(
            "(call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const {path_len}) \
             (i32.const {oflags}) (i64.const {rights}) (i64.const 0) (i32.const 0) (i32.const 0))"
        )
    };
    assert_eq!(
        exit_code_of(&open(4, 0, 2), "../a", vec![config()]),
        Step::Exited(76)
    );
    // Reading a ConfigMap file is fine, creating one is EROFS (69), so is mkdir.
    assert_eq!(
        exit_code_of(&open(1, 0, 2), "a", vec![config()]),
        Step::Exited(0)
    );
    assert_eq!(
        exit_code_of(&open(1, 1, 64), "b", vec![config()]),
        Step::Exited(69)
    );
    let mkdir = "(call $mkdir (i32.const 3) (i32.const 64) (i32.const 1))";
    assert_eq!(exit_code_of(mkdir, "d", vec![config()]), Step::Exited(69));
    // An emptyDir holds at most its capacity (contents plus each entry's name
    // and ENTRY_OVERHEAD): the 9th byte is ENOSPC (51).
    // Opens "f" (fd 4), then writes 9 bytes from an iovec at 80.
    let write = format!(
        "(block (result i32) (drop {}) \
         (i32.store (i32.const 80) (i32.const 64)) (i32.store (i32.const 84) (i32.const 9)) \
         (call $write (i32.const 4) (i32.const 80) (i32.const 1) (i32.const 96)))",
        open(1, 1, 64)
    );
    let small = Volume::empty_dir("/data", 1 + skiff_wasm::ENTRY_OVERHEAD + 8).unwrap();
    assert_eq!(
        exit_code_of(&write, "f", vec![small.clone()]),
        Step::Exited(51)
    );
    assert_eq!(small.read("f").as_deref(), Some(&b""[..]));
    let big = Volume::empty_dir("/data", 1 + skiff_wasm::ENTRY_OVERHEAD + 9).unwrap();
    assert_eq!(
        exit_code_of(&write, "f", vec![big.clone()]),
        Step::Exited(0)
    );
    assert_eq!(big.read("f").as_deref(), Some(&b"f\0\0\0\0\0\0\0\0"[..]));
}

#[test]
fn nonblocking_listeners_answer_eagain() {
    // fd 3 is the listener (no volumes): set O_NONBLOCK, then accept with an
    // empty backlog must give EAGAIN (6) instead of suspending the guest.
    let module = wat::parse_str(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_fdstat_set_flags" (func $flags (param i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "sock_accept" (func $accept (param i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start")
                (drop (call $flags (i32.const 3) (i32.const 4)))
                (call $exit (call $accept (i32.const 3) (i32.const 0) (i32.const 0)))))"#,
    )
    .unwrap();
    let rt = runtime();
    let image = rt
        .load(&skiff_wasm::precompile_for(Target::Host, &module).unwrap())
        .unwrap();
    let mut s = spec(&["x"], &[]);
    s.ports = vec![8080];
    let (host, _, _) = FakeHost::new(&s.ports);
    let mut c = rt.spawn(&image, s, host).unwrap();
    assert_eq!(run_to_end(&mut c, Duration::from_secs(5)), Step::Exited(6));
}

#[test]
fn killing_a_container_mid_run_releases_it() {
    // A burner suspended mid-slice can be dropped (pod deletion).
    let (mut burner, _, _) = spawn("cpu-burner", spec(&["cpu-burner"], &[]));
    assert_eq!(burner.step(1), Step::Running);
    assert_eq!(burner.step(1), Step::Running);
    drop(burner);

    // An echo server blocked reading a half-sent request: dropping it closes
    // the connection on the node side.
    let mut s = spec(&["echo-server"], &[("POD_NAME", "p")]);
    s.ports = vec![8080];
    let (mut c, _, net) = spawn("echo-server", s);
    let id = net.lock().unwrap().connect(8080, b"GET / HTTP/1.1\r\n");
    net.lock().unwrap().conns.get_mut(&id).unwrap().peer_done = false;
    let t = Instant::now();
    // Accepted, then stuck in recv.
    while c.step(2) == Step::Running || !net.lock().unwrap().backlog.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    assert_eq!(c.step(2), Step::Blocked { until: None });
    assert!(!net.lock().unwrap().conns[&id].closed);
    drop(c);
    assert!(net.lock().unwrap().conns[&id].closed);
}

#[test]
fn invalid_specs_are_refused() {
    let rt = runtime();
    let image = rt.load(&artifact("hello")).unwrap();
    let err = |s: ContainerSpec| {
        let (host, _, _) = FakeHost::new(&[]);
        rt.spawn(&image, s, host)
            .err()
            .expect("spawn must fail")
            .to_string()
    };
    assert!(err(spec(&["a\0b"], &[])).contains("NUL"));
    assert!(err(spec(&["a"], &[("A=B", "c")])).contains("environment variable name"));
    let mut s = spec(&["a"], &[]);
    s.memory_limit = 0;
    assert!(err(s).contains("memory limit"));
    assert!(Volume::empty_dir("relative", 1).is_err());
    assert!(Volume::read_only("/c", [("../x", vec![])]).is_err());
}

#[test]
fn only_wasm2_features_are_accepted() {
    let refused = [
        ("multi-memory", "(module (memory 1) (memory 1))"),
        ("threads", "(module (memory 1 1 shared))"),
        ("memory64", "(module (memory i64 1))"),
        (
            "tail-call",
            "(module (func $f (return_call $f)) (func (export \"_start\")))",
        ),
        (
            "extended-const",
            "(module (global i32 (i32.add (i32.const 1) (i32.const 2))))",
        ),
    ];
    for (feature, text) in refused {
        let module = wat::parse_str(text).unwrap();
        for target in [Target::Host, Target::Kernel] {
            assert_eq!(
                skiff_wasm::precompile_for(target, &module),
                Err(Error::UnsupportedFeature(feature.to_string())),
                "{text}"
            );
        }
    }
    // Wasm 2.0 (SIMD, bulk memory, reference types, multi-value) still loads.
    let module = wat::parse_str(
        "(module (table 1 funcref) (memory 1)
            (func (result i32 i32) (i32.const 0) (i32.const 1))
            (func (memory.fill (i32.const 0) (i32.const 0) (i32.const 0)))
            (func (result v128) (v128.const i64x2 0 0)))",
    )
    .unwrap();
    let a = skiff_wasm::precompile_for(Target::Host, &module).unwrap();
    runtime().load(&a).unwrap();
}

/// WASI isolation: host allocations a guest causes are bounded.
#[test]
fn host_allocations_for_a_guest_are_bounded() {
    // 1025 iovecs: EINVAL (28) before the host copies any list.
    let write = |count: u32| {
        format!(
            "(block (result i32) \
             (i32.store (i32.const 1024) (i32.const 0)) (i32.store (i32.const 1028) (i32.const 65536)) \
             (memory.copy (i32.const 1032) (i32.const 1024) (i32.const 8)) \
             (memory.copy (i32.const 1040) (i32.const 1024) (i32.const 16)) \
             (memory.copy (i32.const 1056) (i32.const 1024) (i32.const 32)) \
             (memory.copy (i32.const 1088) (i32.const 1024) (i32.const 64)) \
             (memory.copy (i32.const 1152) (i32.const 1024) (i32.const 128)) \
             (memory.copy (i32.const 1280) (i32.const 1024) (i32.const 256)) \
             (memory.copy (i32.const 1536) (i32.const 1024) (i32.const 512)) \
             (memory.copy (i32.const 2048) (i32.const 1024) (i32.const 1024)) \
             (memory.copy (i32.const 3072) (i32.const 1024) (i32.const 2048)) \
             (memory.copy (i32.const 5120) (i32.const 1024) (i32.const 4096)) \
             (memory.copy (i32.const 9216) (i32.const 1024) (i32.const 8)) \
             (call $write (i32.const 1) (i32.const 1024) (i32.const {count}) (i32.const 16)))"
        )
    };
    assert_eq!(exit_code_of(&write(1025), "", vec![]), Step::Exited(28));
    // 1024 iovecs repeating one 64 KiB buffer (64 MiB from a 64 KiB memory):
    // written short, 1 MiB, not copied whole into the node heap.
    let short = format!(
        "(block (result i32) (drop {}) (i32.ne (i32.load (i32.const 16)) (i32.const {})))",
        write(1024),
        MIB
    );
    assert_eq!(exit_code_of(&short, "", vec![]), Step::Exited(0));

    // A path longer than PATH_MAX: ENAMETOOLONG (37).
    let dir = || Volume::empty_dir("/data", 1 << 20).unwrap();
    let mkdir = |len: u32| format!("(call $mkdir (i32.const 3) (i32.const 64) (i32.const {len}))");
    assert_eq!(
        exit_code_of(&mkdir(4097), "d", vec![dir()]),
        Step::Exited(37)
    );

    // Empty directories and files are charged to the emptyDir: a flood of
    // them ends in ENOSPC instead of growing the node heap.
    let flood = |create: &str| {
        format!(
            "(block $done (result i32) (loop $next \
               (i32.store8 (i32.const 64) (i32.add (i32.const 97) (i32.rem_u (global.get $n) (i32.const 26)))) \
               (i32.store8 (i32.const 65) (i32.add (i32.const 97) (i32.div_u (global.get $n) (i32.const 26)))) \
               (global.set $n (i32.add (global.get $n) (i32.const 1))) \
               (local.set $r {create}) \
               (br_if $done (i32.add (i32.mul (local.get $r) (i32.const 1000)) (global.get $n)) \
                 (local.get $r)) \
               (br $next)) (unreachable))"
        )
    };
    let open = "(call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 2) \
                (i32.const 1) (i64.const 0) (i64.const 0) (i32.const 0) (i32.const 128))";
    for create in [mkdir(2), open.to_string()] {
        let small = Volume::empty_dir("/data", 10 * (2 + skiff_wasm::ENTRY_OVERHEAD)).unwrap();
        assert_eq!(
            // ENOSPC (51) at the 11th entry.
            exit_code_of(&flood(&create), "", vec![small]),
            Step::Exited(51_011),
            "{create}"
        );
    }
}

/// Runs `wat` (a whole module) with `s`, a host with `conns` connections
/// waiting on port 8080 (listener at fd 3 when `s` has no volumes).
fn run_module(wat: &str, mut s: ContainerSpec, conns: usize) -> Step {
    let module = wat::parse_str(wat).unwrap();
    let rt = runtime();
    let image = rt
        .load(&skiff_wasm::precompile_for(Target::Host, &module).unwrap())
        .unwrap();
    s.ports = vec![8080];
    let (host, _, net) = FakeHost::new(&s.ports);
    for _ in 0..conns {
        net.lock().unwrap().connect(8080, b"");
    }
    let mut c = rt.spawn(&image, s, host).unwrap();
    run_to_end(&mut c, Duration::from_secs(10))
}

/// A module whose `_start` repeats `call` (an i32 errno) until it fails,
/// then exits with errno * 10000 + attempts.
fn until_error(imports: &str, call: &str) -> String {
    format!(
        r#"(module {imports}
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "f")
            (func (export "_start") (local $n i32) (local $r i32)
                (loop $next
                    (local.set $n (i32.add (local.get $n) (i32.const 1)))
                    (local.set $r {call})
                    (br_if $next (i32.eqz (local.get $r))))
                (call $exit (i32.add (i32.mul (local.get $r) (i32.const 10000)) (local.get $n)))))"#
    )
}

// WASI isolation (issue 14 item 6): per-container caps answer with an
// errno or an OOM kill, never with node memory.

#[test]
fn open_fds_are_capped_with_emfile() {
    // Open fds: EMFILE (33) once MAX_FDS are open (0-2 stdio, 3 the
    // emptyDir, 4 the listener, so MAX_FDS - 5 opens succeed).
    let open = r#"(import "wasi_snapshot_preview1" "path_open"
        (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))"#;
    let mut s = spec(&["x"], &[]);
    s.volumes = vec![Volume::empty_dir("/data", MIB).unwrap()];
    let step = run_module(
        &until_error(
            open,
            "(call $open (i32.const 3) (i32.const 0) (i32.const 64) (i32.const 1) \
             (i32.const 1) (i64.const -1) (i64.const -1) (i32.const 0) (i32.const 128))",
        ),
        s,
        0,
    );
    let fds = skiff_wasm::MAX_FDS as i32;
    assert_eq!(step, Step::Exited(33 * 10000 + fds - 5 + 1));
}

#[test]
fn accepted_connections_are_capped_with_emfile() {
    // Accepted connections: EMFILE once MAX_CONNECTIONS are held, although
    // more are waiting (they stay in the node's backlog).
    let accept = r#"(import "wasi_snapshot_preview1" "sock_accept"
        (func $accept (param i32 i32 i32) (result i32)))"#;
    let held = skiff_wasm::MAX_CONNECTIONS as i32;
    let step = run_module(
        &until_error(
            accept,
            "(call $accept (i32.const 3) (i32.const 0) (i32.const 0))",
        ),
        spec(&["x"], &[]),
        skiff_wasm::MAX_CONNECTIONS + 10,
    );
    assert_eq!(step, Step::Exited(33 * 10000 + held + 1));
}

#[test]
fn poll_subscriptions_are_capped_with_einval() {
    // poll_oneoff with more subscriptions than MAX_SUBSCRIPTIONS: EINVAL
    // (28) before the host allocates for them.
    let poll = r#"(import "wasi_snapshot_preview1" "poll_oneoff"
        (func $poll (param i32 i32 i32 i32) (result i32)))"#;
    for n in [skiff_wasm::MAX_SUBSCRIPTIONS + 1, u32::MAX] {
        let step = run_module(
            &until_error(
                poll,
                &format!(
                    "(call $poll (i32.const 0) (i32.const 0) (i32.const {}) (i32.const 0))",
                    n as i32
                ),
            ),
            spec(&["x"], &[]),
            0,
        );
        assert_eq!(step, Step::Exited(28 * 10000 + 1), "{n} subscriptions");
    }
}

#[test]
fn tables_are_charged_to_the_memory_limit() {
    // Tables are charged to the memory limit: one too large to instantiate,
    // and one grown in a loop, are both OOM kills.
    let limit = 8 * MIB;
    let elements = limit / skiff_wasm::TABLE_ELEMENT_BYTES;
    let mut s = spec(&["x"], &[]);
    s.memory_limit = limit;
    let big = format!(
        r#"(module (memory (export "memory") 1) (table {elements} funcref)
            (func (export "_start")))"#
    );
    assert_eq!(run_module(&big, s.clone(), 0), Step::OutOfMemory);
    // Just under the limit with its one page of memory: runs.
    let fits = format!(
        r#"(module (memory (export "memory") 1) (table {} funcref)
            (func (export "_start")))"#,
        elements - 65536 / skiff_wasm::TABLE_ELEMENT_BYTES
    );
    assert_eq!(run_module(&fits, s.clone(), 0), Step::Exited(0));
    let grow = r#"(module (memory (export "memory") 1) (table 0 funcref)
        (func (export "_start")
            (loop $more
                (br_if $more (i32.ne (table.grow (ref.null func) (i32.const 65536)) (i32.const -1))))))"#;
    assert_eq!(run_module(grow, s, 0), Step::OutOfMemory);
}

/// Host-call-heavy guests are preempted like busy loops: a loop of
/// zero-timeout `poll_oneoff`s or of maximal gathered writes still ends each
/// slice near its budget, so neighbours (and the node) keep the CPU.
#[test]
fn host_call_loops_are_preempted() {
    let imports = r#"
        (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))"#;
    // A relative clock subscription with timeout 0 at 1024 (type 0 = clock,
    // clock id 1), events at 2048; iovecs at 4096: 1024 × (0, 64 KiB).
    let loops = [
        "(drop (call $poll (i32.const 1024) (i32.const 2048) (i32.const 1) (i32.const 3000)))",
        "(drop (call $write (i32.const 1) (i32.const 4096) (i32.const 1024) (i32.const 3000)))",
    ];
    for body in loops {
        let module = wat::parse_str(format!(
            r#"(module {imports}
                (memory (export "memory") 2)
                (func (export "_start") (local $i i32)
                    (i32.store (i32.const 1040) (i32.const 1))
                    (loop $fill
                        (i32.store (i32.add (i32.const 4100) (i32.shl (local.get $i) (i32.const 3)))
                            (i32.const 65536))
                        (local.set $i (i32.add (local.get $i) (i32.const 1)))
                        (br_if $fill (i32.lt_u (local.get $i) (i32.const 1024))))
                    (loop $forever {body} (br $forever))))"#
        ))
        .unwrap();
        let rt = runtime();
        let image = rt
            .load(&skiff_wasm::precompile_for(Target::Host, &module).unwrap())
            .unwrap();
        let (host, out, _) = FakeHost::new(&[]);
        let mut c = rt.spawn(&image, spec(&["x"], &[]), host).unwrap();
        let mut longest = Duration::ZERO;
        for _ in 0..20 {
            let t = Instant::now();
            assert_eq!(c.step(2), Step::Running, "{body}");
            longest = longest.max(t.elapsed());
            out.stdout.lock().unwrap().clear();
        }
        assert!(
            longest < Duration::from_millis(500),
            "{body}: longest slice {longest:?}"
        );
    }
}

/// The abusive guest the node test runs (tests/wasm/src/bin/abuser.rs):
/// each attempt ends in an errno or a bound, and finally an OOM kill.
#[test]
fn the_abuser_is_refused_at_every_step() {
    let mut s = spec(&["abuser"], &[("SPIN_MS", "200")]);
    s.memory_limit = 16 * MIB;
    s.volumes = vec![Volume::empty_dir("/scratch", MIB).unwrap()];
    let (mut c, out, _) = spawn("abuser", s);
    assert_eq!(
        run_to_end(&mut c, Duration::from_secs(60)),
        Step::OutOfMemory
    );
    let stdout = out.stdout();
    let fds = skiff_wasm::MAX_FDS - 4; // stdio and the emptyDir
    assert!(
        stdout.contains(&format!("fds: {fds} opened, then errno 33\n")),
        "{}",
        &stdout[..stdout.len().min(300)]
    );
    // Each gathered write took at most 1 MiB, not the 64 MiB asked.
    assert!(stdout.contains("log flood: 16777216 bytes in 16 calls"));
    assert!(stdout.contains("spin: "));
    assert!(stdout.contains("allocated 1 MiB"));
}

#[test]
fn open_fds_are_charged_to_the_memory_limit() {
    // Twenty nested 200-byte directory names: each fd of the deepest keeps a
    // ~4.5 KB path on the node. Under a 1 MiB limit they run out (ENOMEM,
    // 48) long before MAX_FDS.
    let level = format!("{}/", "x".repeat(200));
    let path = level.repeat(20);
    let depth = path.len() as i32 - 1;
    let mkdirs: String = (1..=20)
        .map(|k| {
            format!(
                "(drop (call $mkdir (i32.const 3) (i32.const 64) (i32.const {})))",
                201 * k - 1
            )
        })
        .collect();
    let module = format!(
        r#"(module
            (import "wasi_snapshot_preview1" "path_create_directory"
                (func $mkdir (param i32 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "path_open"
                (func $open (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "{path}")
            (func (export "_start") (local $n i32) (local $r i32)
                {mkdirs}
                (loop $next
                    (local.set $n (i32.add (local.get $n) (i32.const 1)))
                    (local.set $r (call $open (i32.const 3) (i32.const 0) (i32.const 64)
                        (i32.const {depth}) (i32.const 2) (i64.const 0) (i64.const 0)
                        (i32.const 0) (i32.const 8000)))
                    (br_if $next (i32.eqz (local.get $r))))
                (call $exit (i32.add (i32.mul (local.get $r) (i32.const 10000)) (local.get $n)))))"#
    );
    let mut s = spec(&["x"], &[]);
    s.memory_limit = MIB;
    s.volumes = vec![Volume::empty_dir("/data", MIB).unwrap()];
    let step = run_module(&module, s, 0);
    let Step::Exited(code) = step else {
        panic!("{step:?}")
    };
    let opened = code % 10000 - 1;
    assert_eq!(
        code / 10000,
        48,
        "{opened} opened, then errno {}",
        code / 10000
    );
    // About (1 MiB - 64 KiB) / 4.5 KB of them.
    assert!((150..250).contains(&opened), "{opened} opened");
}
