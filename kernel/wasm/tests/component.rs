//! WASI preview 2 end to end on the host: real components (tests/wasm's
//! `P2_GUESTS`, built for wasm32-wasip2), precompiled by our compiler, run
//! through the same container API and time slices as preview 1 modules.

mod support;

use std::time::{Duration, Instant};

use skiff_wasm::{ContainerSpec, Error, ImageKind, SERVED_INTERFACES, Step, Target};
use support::{FakeHost, Output, artifact, runtime, spec, wasm};

/// Runs `hello-p2` to its end; its outcome, output, and whether a step
/// reported it blocked until a deadline (its sleep).
fn run_hello(spec: ContainerSpec) -> (Step, Output, bool) {
    let rt = runtime();
    let image = rt.load(&artifact("hello-p2")).expect("load component");
    assert_eq!(image.kind(), ImageKind::Component);
    let (host, out, _) = FakeHost::new(&[]);
    let mut c = rt.spawn(&image, spec, host).expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut slept = false;
    loop {
        let step = c.step(2);
        match step {
            Step::Running => {}
            Step::Blocked { until } => {
                slept |= until.is_some();
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => return (step, out, slept),
        }
        assert!(Instant::now() < deadline, "still {step:?}");
    }
}

#[test]
fn component_sees_args_env_clocks_and_random_and_logs_its_output() {
    let (end, out, slept) = run_hello(spec(
        &["hello-p2", "0", "two words"],
        &[("GREETING", "hi from the node")],
    ));
    let stdout = out.stdout();
    assert_eq!(end, Step::Exited(0), "{stdout}\nstderr: {}", out.stderr());
    for line in [
        "arg[0]=hello-p2",
        "arg[1]=0",
        "arg[2]=two words",
        "GREETING=hi from the node",
        "wall clock after 2020: true",
        "hash map works: true",
        "slept 20 ms: true",
        "exiting with 0",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "missing {line:?} in:\n{stdout}"
        );
    }
    assert_eq!(out.stderr(), "this line goes to stderr\n");
    // The sleep suspended the guest with a deadline instead of spinning.
    assert!(slept, "the 20 ms sleep never blocked with a deadline");
    // HashMap's keys come from wasi:random/insecure-seed.
    assert!(*out.random_bytes.lock().unwrap() >= 16);
}

#[test]
fn component_exit_status_becomes_the_exit_code() {
    let (end, out, _) = run_hello(spec(&["hello-p2", "7"], &[("SLEEP_MS", "0")]));
    assert!(
        out.stdout().contains("exiting with 7\n"),
        "{}",
        out.stdout()
    );
    // Rust 1.95's std (its wasi-libc predates `exit-with-code`) exits through
    // wasi:cli/exit's `exit(err)`: every nonzero code arrives as 1.
    assert_eq!(end, Step::Exited(1));
}

#[test]
fn component_memory_limit_kills_it_as_out_of_memory() {
    // Less than the component's initial linear memory: OOM at instantiation,
    // through the same ResourceLimiter as preview 1.
    let mut s = spec(&["hello-p2"], &[]);
    s.memory_limit = 64 << 10;
    let (end, out, _) = run_hello(s);
    assert_eq!(end, Step::OutOfMemory);
    assert_eq!(out.stdout(), "");
}

#[test]
fn a_component_importing_unserved_interfaces_is_refused_naming_them() {
    let unserved = [
        "wasi:keyvalue/store@0.2.0-draft",
        "wasi:blobstore/blobstore@0.2.0-draft",
    ];
    let text = format!(
        r#"(component
            (import "{}" (instance))
            (import "wasi:cli/environment@0.2.3" (instance))
            (import "{}" (instance))
            (core module $m (func (export "run") (result i32) (i32.const 0)))
            (core instance $i (instantiate $m))
            (func $run (result (result)) (canon lift (core func $i "run")))
            (instance $run_inst (export "run" (func $run)))
            (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#,
        unserved[0], unserved[1]
    );
    let component = wat::parse_str(&text).unwrap();
    let refused = skiff_wasm::precompile_for(Target::Host, &component);
    let names = vec![unserved[0].to_string(), unserved[1].to_string()];
    assert_eq!(refused, Err(Error::UnsupportedImports(names.clone())));
    let message = Error::UnsupportedImports(names.clone()).to_string();
    assert!(
        names.iter().all(|n| message.contains(n.as_str())),
        "{message}"
    );
    // An artifact compiled past that check (straight through wasmtime) is
    // refused again when the node loads it.
    let engine =
        skiff_wasm::wasmtime::Engine::new(&skiff_wasm::engine_config(Target::Host)).unwrap();
    let artifact = engine.precompile_component(&component).unwrap();
    assert_eq!(
        runtime().load(&artifact).err(),
        Some(Error::UnsupportedImports(names))
    );
}

#[test]
fn modules_and_components_load_side_by_side() {
    let rt = runtime();
    assert_eq!(
        rt.load(&artifact("hello")).unwrap().kind(),
        ImageKind::Module
    );
    assert_eq!(
        rt.load(&artifact("hello-p2")).unwrap().kind(),
        ImageKind::Component
    );
    // Raw component bytes are not an artifact.
    assert!(matches!(
        rt.load(&wasm("hello-p2")),
        Err(Error::Artifact(_))
    ));
}

#[test]
fn bad_component_bytes_give_the_usual_errors() {
    assert_eq!(
        skiff_wasm::precompile_for(Target::Host, b"not wasm"),
        Err(Error::NotWasm)
    );
    // A component header followed by garbage.
    let garbage = b"\0asm\x0d\0\x01\0\xff\xff\xff";
    assert!(matches!(
        skiff_wasm::precompile_for(Target::Host, garbage),
        Err(Error::Invalid(_))
    ));
    // A truncated real component.
    let component = wasm("hello-p2");
    assert!(matches!(
        skiff_wasm::precompile_for(Target::Host, &component[..component.len() / 2]),
        Err(Error::Invalid(_))
    ));
    // A component using a proposal beyond the model itself is refused by
    // name, like a module beyond WebAssembly 2.0.
    let multi_memory = wat::parse_str("(component (core module (memory 1) (memory 1)))").unwrap();
    assert_eq!(
        skiff_wasm::precompile_for(Target::Host, &multi_memory),
        Err(Error::UnsupportedFeature("multi-memory".into()))
    );
    // Importing something that is not WASI at all.
    let custom = wat::parse_str(r#"(component (import "my:pkg/thing" (instance)))"#).unwrap();
    assert_eq!(
        skiff_wasm::precompile_for(Target::Host, &custom),
        Err(Error::UnsupportedImports(vec!["my:pkg/thing".into()]))
    );
    // Nothing to run: neither a wasi:cli/run nor a
    // wasi:http/incoming-handler export (a library component).
    let empty = wat::parse_str("(component)").unwrap();
    assert_eq!(
        skiff_wasm::precompile_for(Target::Host, &empty),
        Err(Error::NotACommand)
    );
}

/// A component exporting `wasi:cli/run` whose core `run` (returning the
/// result's discriminant: 0 ok, 1 error) is `body`, with `$exit` bound to
/// wasi:cli/exit's `exit-with-code`.
fn run_component(body: &str) -> skiff_wasm::Image {
    let text = format!(
        r#"(component
            (import "wasi:cli/exit@0.2.12" (instance $exit
                (export "exit-with-code" (func (param "status-code" u8)))))
            (core func $exit_with_code (canon lower (func $exit "exit-with-code")))
            (core module $m
                (import "exit" "exit-with-code" (func $exit (param i32)))
                (func (export "run") (result i32) {body}))
            (core instance $exit_inst (export "exit-with-code" (func $exit_with_code)))
            (core instance $i (instantiate $m (with "exit" (instance $exit_inst))))
            (func $run (result (result)) (canon lift (core func $i "run")))
            (instance $run_inst (export "run" (func $run)))
            (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#
    );
    load_wat(&text)
}

/// A component written as text, precompiled for the host and loaded.
fn try_load_wat(text: &str) -> Result<skiff_wasm::Image, Error> {
    let component = wat::parse_str(text).expect("component text");
    runtime().load(&skiff_wasm::precompile_for(Target::Host, &component)?)
}

fn load_wat(text: &str) -> skiff_wasm::Image {
    try_load_wat(text).unwrap_or_else(|e| panic!("{e}"))
}

fn spawn_image(image: &skiff_wasm::Image) -> skiff_wasm::Container {
    let (host, _, _) = FakeHost::new(&[]);
    runtime()
        .spawn(image, spec(&["c"], &[]), host)
        .expect("spawn")
}

#[test]
fn run_results_and_exit_with_code_become_exit_codes() {
    let cases = [
        ("(i32.const 0)", 0),
        ("(i32.const 1)", 1),
        ("(call $exit (i32.const 42)) (unreachable)", 42),
    ];
    for (body, code) in cases {
        let mut c = spawn_image(&run_component(body));
        assert_eq!(
            support::run_to_end(&mut c, Duration::from_secs(10)),
            Step::Exited(code),
            "{body}"
        );
    }
    let mut c = spawn_image(&run_component("(unreachable)"));
    assert!(matches!(
        support::run_to_end(&mut c, Duration::from_secs(10)),
        Step::Trapped(_)
    ));
}

#[test]
fn busy_components_are_preempted() {
    let image = run_component("(loop $spin (br $spin)) (i32.const 0)");
    let mut c = spawn_image(&image);
    // Each step ends after its budget with the guest still runnable.
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(c.step(2), Step::Running);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // A second container still gets its turn.
    let mut other = spawn_image(&run_component("(i32.const 0)"));
    assert_eq!(
        support::run_to_end(&mut other, Duration::from_secs(10)),
        Step::Exited(0)
    );
    assert_eq!(c.step(2), Step::Running);
}

#[test]
fn every_served_interface_is_linked() {
    // An empty instance import only needs the linker to define the
    // interface: it ties SERVED_INTERFACES to what the runtime links.
    for interface in SERVED_INTERFACES {
        let text = format!(
            r#"(component
                (import "{interface}@0.2.12" (instance))
                (core module $m (func (export "run") (result i32) (i32.const 0)))
                (core instance $i (instantiate $m))
                (func $run (result (result)) (canon lift (core func $i "run")))
                (instance $run_inst (export "run" (func $run)))
                (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#
        );
        let image = try_load_wat(&text).unwrap_or_else(|e| panic!("{interface}: {e}"));
        let mut c = spawn_image(&image);
        assert_eq!(
            support::run_to_end(&mut c, Duration::from_secs(10)),
            Step::Exited(0),
            "{interface}"
        );
    }
}

#[test]
fn random_and_clock_calls_reach_the_host() {
    // run: exits with 0 when wasi:random/random and wasi:random/insecure
    // answered different words and the monotonic clock did not go back.
    let text = r#"(component
        (import "wasi:random/random@0.2.12" (instance $random
            (export "get-random-u64" (func (result u64)))))
        (import "wasi:random/insecure@0.2.12" (instance $insecure
            (export "get-insecure-random-u64" (func (result u64)))))
        (import "wasi:clocks/monotonic-clock@0.2.12" (instance $clock
            (export "now" (func (result u64)))))
        (core func $random (canon lower (func $random "get-random-u64")))
        (core func $insecure (canon lower (func $insecure "get-insecure-random-u64")))
        (core func $now (canon lower (func $clock "now")))
        (core module $m
            (import "host" "random" (func $random (result i64)))
            (import "host" "insecure" (func $insecure (result i64)))
            (import "host" "now" (func $now (result i64)))
            (func (export "run") (result i32) (local $t i64)
                (local.set $t (call $now))
                (if (i64.eq (call $random) (call $insecure)) (then (return (i32.const 1))))
                (i64.lt_u (call $now) (local.get $t))))
        (core instance $host
            (export "random" (func $random))
            (export "insecure" (func $insecure))
            (export "now" (func $now)))
        (core instance $i (instantiate $m (with "host" (instance $host))))
        (func $run (result (result)) (canon lift (core func $i "run")))
        (instance $run_inst (export "run" (func $run)))
        (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#;
    let image = load_wat(text);
    let (host, out, _) = FakeHost::new(&[]);
    let mut c = runtime().spawn(&image, spec(&["r"], &[]), host).unwrap();
    assert_eq!(
        support::run_to_end(&mut c, Duration::from_secs(10)),
        Step::Exited(0)
    );
    assert_eq!(*out.random_bytes.lock().unwrap(), 16);
}

#[test]
fn oversized_random_requests_trap_instead_of_allocating() {
    let run = |len: u64| {
        let text = format!(
            r#"(component
            (import "wasi:random/random@0.2.12" (instance $random
                (export "get-random-bytes" (func (param "len" u64) (result (list u8))))))
            (core module $libc
                (memory (export "memory") 1)
                (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024)))
            (core instance $libc (instantiate $libc))
            (core func $bytes (canon lower (func $random "get-random-bytes")
                (memory $libc "memory") (realloc (func $libc "realloc"))))
            (core module $m
                (import "host" "bytes" (func $bytes (param i64 i32)))
                (func (export "run") (result i32)
                    (call $bytes (i64.const {len}) (i32.const 0))
                    (i32.const 0)))
            (core instance $host (export "bytes" (func $bytes)))
            (core instance $i (instantiate $m (with "host" (instance $host))))
            (func $run (result (result)) (canon lift (core func $i "run")))
            (instance $run_inst (export "run" (func $run)))
            (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#
        );
        let image = load_wat(&text);
        let (host, out, _) = FakeHost::new(&[]);
        let mut c = runtime().spawn(&image, spec(&["r"], &[]), host).unwrap();
        let end = support::run_to_end(&mut c, Duration::from_secs(10));
        let drawn = *out.random_bytes.lock().unwrap();
        (end, drawn)
    };
    assert_eq!(run(16), (Step::Exited(0), 16));
    // 2^40 bytes: refused before the host allocates anything.
    let (end, drawn) = run(1 << 40);
    assert!(
        matches!(&end, Step::Trapped(why) if why.contains("random bytes")),
        "{end:?}"
    );
    assert_eq!(drawn, 0);
}

#[test]
fn a_poll_that_returns_leaves_the_guest_runnable() {
    // poll([sleep 1 h, sleep 0]) returns at once (the second is ready);
    // the guest then spins: its steps must report Running, not Blocked
    // until the hour is up.
    let text = r#"(component
        (import "wasi:io/poll@0.2.12" (instance $poll
            (export "pollable" (type $p (sub resource)))
            (export "poll" (func (param "in" (list (borrow $p))) (result (list u32))))))
        (alias export $poll "pollable" (type $pollable))
        (import "wasi:clocks/monotonic-clock@0.2.12" (instance $clock
            (alias outer 1 $pollable (type $p))
            (export "subscribe-duration" (func (param "when" u64) (result (own $p))))))
        (core module $libc
            (memory (export "memory") 1)
            (func (export "realloc") (param i32 i32 i32 i32) (result i32) (i32.const 1024)))
        (core instance $libc (instantiate $libc))
        (core func $sleep (canon lower (func $clock "subscribe-duration")))
        (core func $poll (canon lower (func $poll "poll")
            (memory $libc "memory") (realloc (func $libc "realloc"))))
        (core module $m
            (import "libc" "memory" (memory 1))
            (import "host" "sleep" (func $sleep (param i64) (result i32)))
            (import "host" "poll" (func $poll (param i32 i32 i32)))
            (func (export "run") (result i32)
                (i32.store (i32.const 0) (call $sleep (i64.const 3600000000000)))
                (i32.store (i32.const 4) (call $sleep (i64.const 0)))
                (call $poll (i32.const 0) (i32.const 2) (i32.const 16))
                (loop $spin (br $spin))
                (i32.const 0)))
        (core instance $host (export "sleep" (func $sleep)) (export "poll" (func $poll)))
        (core instance $i (instantiate $m
            (with "libc" (instance $libc)) (with "host" (instance $host))))
        (func $run (result (result)) (canon lift (core func $i "run")))
        (instance $run_inst (export "run" (func $run)))
        (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#;
    let image = load_wat(text);
    let mut c = spawn_image(&image);
    for _ in 0..5 {
        assert_eq!(c.step(2), Step::Running);
    }
}

#[test]
fn a_components_core_memories_add_up_against_its_limit() {
    // Two core instances with 128 KiB of memory each: 256 KiB in all.
    let text = r#"(component
        (core module $a (memory (export "memory") 2))
        (core module $b (memory 2) (func (export "run") (result i32) (i32.const 0)))
        (core instance $a (instantiate $a))
        (core instance $b (instantiate $b))
        (func $run (result (result)) (canon lift (core func $b "run")))
        (instance $run_inst (export "run" (func $run)))
        (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#;
    let image = load_wat(text);
    let run = |limit: usize| {
        let (host, _, _) = FakeHost::new(&[]);
        let mut s = spec(&["m"], &[]);
        s.memory_limit = limit;
        let mut c = runtime().spawn(&image, s, host).unwrap();
        support::run_to_end(&mut c, Duration::from_secs(10))
    };
    // Each memory alone fits in 200 KiB; both do not.
    assert_eq!(run(200 << 10), Step::OutOfMemory);
    assert_eq!(run(300 << 10), Step::Exited(0));
}
