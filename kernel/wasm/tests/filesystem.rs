//! wasi:filesystem for components: the `file-writer` guest (plain Rust std
//! built for wasm32-wasip2) on emptyDir and ConfigMap volumes.

mod support;

use std::time::Duration;

use skiff_wasm::{ENTRY_OVERHEAD, Step, Volume};
use support::{FakeHost, MIB, artifact, runtime, spec, wasm_p1};

/// Runs `file-writer` with these operations (none: its demo) on `volumes`;
/// its outcome and stdout.
fn file_writer(ops: &[&str], volumes: &[&Volume]) -> (Step, String) {
    let image = runtime()
        .load(&artifact("file-writer"))
        .expect("load component");
    run_writer(&image, ops, volumes)
}

fn run_writer(image: &skiff_wasm::Image, ops: &[&str], volumes: &[&Volume]) -> (Step, String) {
    let rt = runtime();
    let mut args = vec!["file-writer"];
    args.extend_from_slice(ops);
    let mut s = spec(&args, &[]);
    s.volumes = volumes.iter().map(|v| (*v).clone()).collect();
    let (host, out, _) = FakeHost::new(&[]);
    let mut c = rt.spawn(image, s, host).expect("spawn");
    let end = support::run_to_end(&mut c, Duration::from_secs(30));
    assert_eq!(out.stderr(), "", "stdout:\n{}", out.stdout());
    (end, out.stdout())
}

fn config() -> Volume {
    Volume::read_only("/config", [("greeting", b"hi from a ConfigMap".to_vec())]).unwrap()
}

#[test]
fn std_fs_works_on_an_empty_dir_and_a_config_map() {
    let data = Volume::empty_dir("/data", MIB).unwrap();
    let (end, stdout) = file_writer(&[], &[&data, &config()]);
    assert_eq!(end, Step::Exited(0), "{stdout}");
    // (Rust's std maps no ErrorKind to WASI's ENOTEMPTY, 55.)
    assert_eq!(
        stdout,
        "write /data/notes.txt: ok\n\
         append /data/notes.txt: ok\n\
         read /data/notes.txt: hello world\n\
         mkdir /data/sub: ok\n\
         write /data/sub/inner.txt: ok\n\
         ls /data: notes.txt sub\n\
         ls /data/sub: inner.txt\n\
         rmdir /data/sub: error Uncategorized (errno 55)\n\
         rm /data/sub/inner.txt: ok\n\
         rmdir /data/sub: ok\n\
         ls /data: notes.txt\n\
         read /config/greeting: hi from a ConfigMap\n\
         write /config/greeting: error ReadOnlyFilesystem (errno 69)\n\
         read /config/greeting: hi from a ConfigMap\n"
    );
    // The node sees what the guest wrote.
    assert_eq!(data.read("notes.txt").unwrap(), b"hello world");
    assert_eq!(data.read("sub/inner.txt"), None);
}

#[test]
fn renames_sizes_and_missing_files() {
    let data = Volume::empty_dir("/data", MIB).unwrap();
    let (end, stdout) = file_writer(
        &[
            "write:/data/a=12345",
            "size:/data/a",
            "rename:/data/a=/data/b",
            "read:/data/a",
            "read:/data/b",
            "mkdir:/data/d",
            "rename:/data/b=/data/d/c",
            "ls:/data/d",
            "rm:/data/d",
            "ls:/data/missing",
        ],
        &[&data],
    );
    assert_eq!(end, Step::Exited(0), "{stdout}");
    assert_eq!(
        stdout,
        "write /data/a: ok\n\
         size /data/a: 5\n\
         rename /data/a: ok\n\
         read /data/a: error NotFound (errno 44)\n\
         read /data/b: 12345\n\
         mkdir /data/d: ok\n\
         rename /data/b: ok\n\
         ls /data/d: c\n\
         rm /data/d: error IsADirectory (errno 31)\n\
         ls /data/missing: error NotFound (errno 44)\n"
    );
    assert_eq!(data.read("d/c").unwrap(), b"12345");
}

#[test]
fn a_write_past_the_empty_dirs_cap_fails_and_changes_nothing() {
    // Room for the file's entry, its 3 bytes and 100 more.
    let cap = "f".len() + ENTRY_OVERHEAD + 3 + 100;
    let data = Volume::empty_dir("/data", cap).unwrap();
    let (end, stdout) = file_writer(
        &[
            "write:/data/f=abc",
            "fill:/data/f=101",
            "read:/data/f",
            "fill:/data/f=100",
            "size:/data/f",
            "write:/data/g=",
        ],
        &[&data],
    );
    assert_eq!(end, Step::Exited(0), "{stdout}");
    // The stream write fails with insufficient-space; std's preview 1
    // adapter reports any stream error as EIO (it never asks
    // filesystem-error-code). The file keeps its 3 bytes, and exactly the
    // room left can still be used. Then not even an empty file fits.
    assert_eq!(
        stdout,
        "write /data/f: ok\n\
         fill /data/f: error Uncategorized (errno 29)\n\
         read /data/f: abc\n\
         fill /data/f: wrote 100\n\
         size /data/f: 103\n\
         write /data/g: error StorageFull (errno 51)\n"
    );
    assert_eq!(data.read("f").unwrap().len(), 103);
    assert_eq!(data.read("g"), None);
}

#[test]
fn read_only_volumes_and_dot_dot_escapes_are_refused() {
    let data = Volume::empty_dir("/data", MIB).unwrap();
    // The same emptyDir mounted read-only: refused however it is written.
    let ro = data.mounted_at("/ro", true).unwrap();
    let (end, stdout) = file_writer(
        &[
            "write:/data/x=1",
            "read:/ro/x",
            "write:/ro/x=2",
            "append:/ro/x=2",
            "mkdir:/ro/d",
            "rm:/ro/x",
            "rename:/ro/x=/ro/y",
            "rm:/config/greeting",
            "read:/data/../config/greeting",
            "read:/data/sub/../../config/greeting",
            "write:/data/../escaped=1",
            "read:/data/x",
        ],
        &[&data, &ro, &config()],
    );
    assert_eq!(end, Step::Exited(0), "{stdout}");
    // `..` may not leave a volume, even to reach another one: not-permitted
    // (EPERM).
    assert_eq!(
        stdout,
        "write /data/x: ok\n\
         read /ro/x: 1\n\
         write /ro/x: error ReadOnlyFilesystem (errno 69)\n\
         append /ro/x: error ReadOnlyFilesystem (errno 69)\n\
         mkdir /ro/d: error ReadOnlyFilesystem (errno 69)\n\
         rm /ro/x: error ReadOnlyFilesystem (errno 69)\n\
         rename /ro/x: error ReadOnlyFilesystem (errno 69)\n\
         rm /config/greeting: error ReadOnlyFilesystem (errno 69)\n\
         read /data/../config/greeting: error PermissionDenied (errno 63)\n\
         read /data/sub/../../config/greeting: error PermissionDenied (errno 63)\n\
         write /data/../escaped: error PermissionDenied (errno 63)\n\
         read /data/x: 1\n"
    );
    assert_eq!(data.read("x").unwrap(), b"1");
}

#[test]
fn containers_sharing_an_empty_dir_see_each_others_files() {
    let shared = Volume::empty_dir("/data", MIB).unwrap();
    let other = shared.mounted_at("/shared", false).unwrap();
    let (end, stdout) = file_writer(&["write:/data/from-a=hello from a"], &[&shared]);
    assert_eq!(end, Step::Exited(0), "{stdout}");
    let (end, stdout) = file_writer(
        &[
            "read:/shared/from-a",
            "append:/shared/from-a=, and b",
            "ls:/shared",
        ],
        &[&other],
    );
    assert_eq!(end, Step::Exited(0), "{stdout}");
    assert_eq!(
        stdout,
        "read /shared/from-a: hello from a\n\
         append /shared/from-a: ok\n\
         ls /shared: from-a\n"
    );
    let (_, stdout) = file_writer(&["read:/data/from-a"], &[&shared.clone()]);
    assert_eq!(stdout, "read /data/from-a: hello from a, and b\n");
}

/// The wasi:filesystem functions the edge-case component below imports,
/// typed as in the 0.2.12 WIT.
const FS_IMPORTS: &str = r#"
    (import "wasi:io/error@0.2.12" (instance $io_error
        (export "error" (type (sub resource)))))
    (alias export $io_error "error" (type $error))
    (import "wasi:io/streams@0.2.12" (instance $streams
        (alias outer 1 $error (type $e))
        (export "output-stream" (type $os (sub resource)))
        (type $se' (variant (case "last-operation-failed" (own $e)) (case "closed")))
        (export "stream-error" (type $se (eq $se')))
        (export "[method]output-stream.write" (func
            (param "self" (borrow $os)) (param "contents" (list u8))
            (result (result (error $se)))))))
    (alias export $streams "output-stream" (type $output_stream))
    (import "wasi:filesystem/types@0.2.12" (instance $types
        (alias outer 1 $error (type $e))
        (alias outer 1 $output_stream (type $os))
        (export "descriptor" (type $d (sub resource)))
        (type $ec' (enum "access" "would-block" "already" "bad-descriptor" "busy"
            "deadlock" "quota" "exist" "file-too-large" "illegal-byte-sequence"
            "in-progress" "interrupted" "invalid" "io" "is-directory" "loop"
            "too-many-links" "message-size" "name-too-long" "no-device" "no-entry"
            "no-lock" "insufficient-memory" "insufficient-space" "not-directory"
            "not-empty" "not-recoverable" "unsupported" "no-tty" "no-such-device"
            "overflow" "not-permitted" "pipe" "read-only" "invalid-seek"
            "text-file-busy" "cross-device"))
        (export "error-code" (type $ec (eq $ec')))
        (type $df' (flags "read" "write" "file-integrity-sync" "data-integrity-sync"
            "requested-write-sync" "mutate-directory"))
        (export "descriptor-flags" (type $df (eq $df')))
        (type $pf' (flags "symlink-follow"))
        (export "path-flags" (type $pf (eq $pf')))
        (type $of' (flags "create" "directory" "exclusive" "truncate"))
        (export "open-flags" (type $of (eq $of')))
        (export "[method]descriptor.open-at" (func
            (param "self" (borrow $d)) (param "path-flags" $pf) (param "path" string)
            (param "open-flags" $of) (param "flags" $df)
            (result (result (own $d) (error $ec)))))
        (export "[method]descriptor.read" (func
            (param "self" (borrow $d)) (param "length" u64) (param "offset" u64)
            (result (result (tuple (list u8) bool) (error $ec)))))
        (export "[method]descriptor.write" (func
            (param "self" (borrow $d)) (param "buffer" (list u8)) (param "offset" u64)
            (result (result u64 (error $ec)))))
        (export "[method]descriptor.write-via-stream" (func
            (param "self" (borrow $d)) (param "offset" u64)
            (result (result (own $os) (error $ec)))))
        (export "filesystem-error-code" (func
            (param "err" (borrow $e)) (result (option $ec))))))
    (alias export $types "descriptor" (type $descriptor))
    (import "wasi:filesystem/preopens@0.2.12" (instance $preopens
        (alias outer 1 $descriptor (type $d))
        (export "get-directories" (func (result (list (tuple (own $d) string)))))))
    (import "wasi:cli/exit@0.2.12" (instance $exit
        (export "exit-with-code" (func (param "status-code" u8)))))
"#;

/// A component whose core `run` body is `body`, with the functions above
/// lowered as `$dirs`, `$open`, `$read`, `$write`, `$write_via_stream`,
/// `$stream_write`, `$error_code`, `$drop` (a descriptor) and `$exit`, a bump
/// `realloc` from 64 KiB up, `$fail` (exit with the given code), a local
/// `$n`, and the strings "f", "../x", "big" and "." at 100, 101, 105, 108.
fn fs_component(body: &str) -> skiff_wasm::Image {
    let text = format!(
        r#"(component
        {FS_IMPORTS}
        (core module $libc
            (memory (export "memory") 64)
            (global $heap (mut i32) (i32.const 65536))
            (func (export "realloc") (param i32 i32 i32 i32) (result i32)
                (local $at i32)
                (local.set $at (global.get $heap))
                (global.set $heap (i32.add (local.get $at)
                    (i32.and (i32.add (local.get 3) (i32.const 7)) (i32.const -8))))
                (local.get $at)))
        (core instance $libc (instantiate $libc))
        (core func $dirs (canon lower (func $preopens "get-directories")
            (memory $libc "memory") (realloc (func $libc "realloc"))))
        (core func $open (canon lower (func $types "[method]descriptor.open-at")
            (memory $libc "memory") (realloc (func $libc "realloc"))))
        (core func $read (canon lower (func $types "[method]descriptor.read")
            (memory $libc "memory") (realloc (func $libc "realloc"))))
        (core func $write (canon lower (func $types "[method]descriptor.write")
            (memory $libc "memory") (realloc (func $libc "realloc"))))
        (core func $write_via_stream (canon lower
            (func $types "[method]descriptor.write-via-stream") (memory $libc "memory")))
        (core func $stream_write (canon lower (func $streams "[method]output-stream.write")
            (memory $libc "memory") (realloc (func $libc "realloc"))))
        (core func $error_code (canon lower (func $types "filesystem-error-code")
            (memory $libc "memory")))
        (core func $drop (canon resource.drop $descriptor))
        (core func $exit (canon lower (func $exit "exit-with-code")))
        (core module $m
            (import "libc" "memory" (memory 1))
            (import "host" "dirs" (func $dirs (param i32)))
            (import "host" "open" (func $open (param i32 i32 i32 i32 i32 i32 i32)))
            (import "host" "read" (func $read (param i32 i64 i64 i32)))
            (import "host" "write" (func $write (param i32 i32 i32 i64 i32)))
            (import "host" "write_via_stream" (func $write_via_stream (param i32 i64 i32)))
            (import "host" "stream_write" (func $stream_write (param i32 i32 i32 i32)))
            (import "host" "error_code" (func $error_code (param i32 i32)))
            (import "host" "drop" (func $drop (param i32)))
            (import "host" "exit" (func $exit (param i32)))
            (data (i32.const 100) "f../xbig.")
            (data (i32.const 200) "hello")
            (func $fail (param i32) (call $exit (local.get 0)) (unreachable))
            ;; The i-th preopen's descriptor (after $dirs wrote the list at 0).
            (func $preopen (param i32) (result i32)
                (i32.load (i32.add (i32.load (i32.const 0)) (i32.mul (local.get 0) (i32.const 12)))))
            (func (export "run") (result i32) (local $n i32)
                (call $dirs (i32.const 0))
                {body}
                (i32.const 0)))
        (core instance $host
            (export "dirs" (func $dirs)) (export "open" (func $open))
            (export "read" (func $read)) (export "write" (func $write))
            (export "write_via_stream" (func $write_via_stream))
            (export "stream_write" (func $stream_write))
            (export "error_code" (func $error_code))
            (export "drop" (func $drop))
            (export "exit" (func $exit)))
        (core instance $i (instantiate $m
            (with "libc" (instance $libc)) (with "host" (instance $host))))
        (func $run (result (result)) (canon lift (core func $i "run")))
        (instance $run_inst (export "run" (func $run)))
        (export "wasi:cli/run@0.2.12" (instance $run_inst)))"#
    );
    let component = wat::parse_str(&text).expect("component text");
    let artifact = skiff_wasm::precompile_for(skiff_wasm::Target::Host, &component)
        .unwrap_or_else(|e| panic!("{e}"));
    runtime().load(&artifact).unwrap_or_else(|e| panic!("{e}"))
}

fn run_image(image: &skiff_wasm::Image, volumes: &[&Volume]) -> Step {
    run_limited(image, volumes, 64 * MIB)
}

fn run_limited(image: &skiff_wasm::Image, volumes: &[&Volume], memory_limit: usize) -> Step {
    let mut s = spec(&["fs"], &[]);
    s.memory_limit = memory_limit;
    s.volumes = volumes.iter().map(|v| (*v).clone()).collect();
    let (host, _, _) = FakeHost::new(&[]);
    let mut c = runtime().spawn(image, s, host).expect("spawn");
    support::run_to_end(&mut c, Duration::from_secs(30))
}

#[test]
fn out_of_range_offsets_and_huge_lengths_give_error_codes_not_allocations() {
    // Memory: 16 open-at's result, 32 write's (payload at 40), 48 read's
    // (list at 52/56, end-of-file flag at 60). Each failed check exits
    // with its own code.
    let body = r#"
        ;; f = open-at(preopen 0, "f", create, read|write)
        (call $open (call $preopen (i32.const 0)) (i32.const 0) (i32.const 100) (i32.const 1)
            (i32.const 1) (i32.const 3) (i32.const 16))
        (if (i32.load8_u (i32.const 16)) (then (call $fail (i32.const 10))))
        (call $write (i32.load (i32.const 20)) (i32.const 200) (i32.const 5) (i64.const 0) (i32.const 32))
        (if (i32.load8_u (i32.const 32)) (then (call $fail (i32.const 11))))
        ;; A 2^40-byte read returns the 5 bytes there are, and end of file.
        (call $read (i32.load (i32.const 20)) (i64.const 0x10000000000) (i64.const 0) (i32.const 48))
        (if (i32.load8_u (i32.const 48)) (then (call $fail (i32.const 12))))
        (if (i32.ne (i32.load (i32.const 56)) (i32.const 5)) (then (call $fail (i32.const 13))))
        (if (i32.eqz (i32.load8_u (i32.const 60))) (then (call $fail (i32.const 14))))
        ;; Reading at 2^63: nothing, end of file.
        (call $read (i32.load (i32.const 20)) (i64.const 1) (i64.const 0x8000000000000000) (i32.const 48))
        (if (i32.load8_u (i32.const 48)) (then (call $fail (i32.const 15))))
        (if (i32.load (i32.const 56)) (then (call $fail (i32.const 16))))
        ;; Writing at 2^62: insufficient-space (23), nothing allocated.
        (call $write (i32.load (i32.const 20)) (i32.const 200) (i32.const 5)
            (i64.const 0x4000000000000000) (i32.const 32))
        (if (i32.ne (i32.load8_u (i32.const 32)) (i32.const 1)) (then (call $fail (i32.const 17))))
        (if (i32.ne (i32.load8_u (i32.const 40)) (i32.const 23)) (then (call $fail (i32.const 18))))
        ;; Writing at 2^64 - 1: overflow (30).
        (call $write (i32.load (i32.const 20)) (i32.const 200) (i32.const 5) (i64.const -1) (i32.const 32))
        (if (i32.ne (i32.load8_u (i32.const 40)) (i32.const 30)) (then (call $fail (i32.const 19))))
        ;; "../x": not-permitted (31).
        (call $open (call $preopen (i32.const 0)) (i32.const 0) (i32.const 101) (i32.const 4)
            (i32.const 0) (i32.const 1) (i32.const 16))
        (if (i32.ne (i32.load8_u (i32.const 16)) (i32.const 1)) (then (call $fail (i32.const 20))))
        (if (i32.ne (i32.load8_u (i32.const 20)) (i32.const 31)) (then (call $fail (i32.const 21))))
        ;; A 2 MiB ConfigMap file: one read returns at most 1 MiB.
        (call $open (call $preopen (i32.const 1)) (i32.const 0) (i32.const 105) (i32.const 3)
            (i32.const 0) (i32.const 1) (i32.const 16))
        (if (i32.load8_u (i32.const 16)) (then (call $fail (i32.const 22))))
        (call $read (i32.load (i32.const 20)) (i64.const -1) (i64.const 0) (i32.const 48))
        (if (i32.load8_u (i32.const 48)) (then (call $fail (i32.const 23))))
        (if (i32.ne (i32.load (i32.const 56)) (i32.const 0x100000)) (then (call $fail (i32.const 24))))
        (if (i32.load8_u (i32.const 60)) (then (call $fail (i32.const 25))))
        ;; Writing to it: the descriptor was opened read-only (bad-descriptor, 3).
        (call $write (i32.load (i32.const 20)) (i32.const 200) (i32.const 5) (i64.const 0) (i32.const 32))
        (if (i32.ne (i32.load8_u (i32.const 40)) (i32.const 3)) (then (call $fail (i32.const 26))))
        ;; Opening it for writing: read-only (33).
        (call $open (call $preopen (i32.const 1)) (i32.const 0) (i32.const 105) (i32.const 3)
            (i32.const 0) (i32.const 2) (i32.const 16))
        (if (i32.ne (i32.load8_u (i32.const 20)) (i32.const 33)) (then (call $fail (i32.const 27))))
    "#;
    let data = Volume::empty_dir("/data", MIB).unwrap();
    let big = Volume::read_only("/config", [("big", vec![7u8; 2 * MIB])]).unwrap();
    assert_eq!(
        run_image(&fs_component(body), &[&data, &big]),
        Step::Exited(0)
    );
    assert_eq!(data.read("f").unwrap(), b"hello");
}

#[test]
fn a_failed_stream_write_carries_its_error_code() {
    // Memory: 16 open-at's result, 32 write-via-stream's, 48 write's
    // (stream-error case at 52, its error at 56), 64 filesystem-error-code's.
    let body = r#"
        (call $open (call $preopen (i32.const 0)) (i32.const 0) (i32.const 100) (i32.const 1)
            (i32.const 1) (i32.const 3) (i32.const 16))
        (if (i32.load8_u (i32.const 16)) (then (call $fail (i32.const 10))))
        (call $write_via_stream (i32.load (i32.const 20)) (i64.const 0) (i32.const 32))
        (if (i32.load8_u (i32.const 32)) (then (call $fail (i32.const 11))))
        ;; 5 bytes where the cap leaves room for 3: last-operation-failed.
        (call $stream_write (i32.load (i32.const 36)) (i32.const 200) (i32.const 5) (i32.const 48))
        (if (i32.ne (i32.load8_u (i32.const 48)) (i32.const 1)) (then (call $fail (i32.const 12))))
        (if (i32.load8_u (i32.const 52)) (then (call $fail (i32.const 13))))
        ;; filesystem-error-code: some(insufficient-space), 23.
        (call $error_code (i32.load (i32.const 56)) (i32.const 64))
        (if (i32.ne (i32.load8_u (i32.const 64)) (i32.const 1)) (then (call $fail (i32.const 14))))
        (if (i32.ne (i32.load8_u (i32.const 65)) (i32.const 23)) (then (call $fail (i32.const 15))))
        ;; The stream is closed after that.
        (call $stream_write (i32.load (i32.const 36)) (i32.const 200) (i32.const 1) (i32.const 48))
        (if (i32.ne (i32.load8_u (i32.const 52)) (i32.const 1)) (then (call $fail (i32.const 16))))
    "#;
    let data = Volume::empty_dir("/data", "f".len() + ENTRY_OVERHEAD + 3).unwrap();
    assert_eq!(run_image(&fs_component(body), &[&data]), Step::Exited(0));
    assert_eq!(data.read("f").unwrap(), b"");
}

#[test]
fn descriptors_are_charged_to_the_memory_limit_until_dropped() {
    // Opens "." until open-at fails: it must answer insufficient-memory
    // (22) well before the table's MAX_FDS; after dropping one descriptor
    // the next open succeeds. Exits with 100 + the number opened.
    let body = r#"
        (loop $open_more
            (call $open (call $preopen (i32.const 0)) (i32.const 0) (i32.const 108) (i32.const 1)
                (i32.const 0) (i32.const 1) (i32.const 16))
            (if (i32.eqz (i32.load8_u (i32.const 16))) (then
                (local.set $n (i32.add (local.get $n) (i32.const 1)))
                (i32.store (i32.const 24) (i32.load (i32.const 20)))
                (br $open_more))))
        (if (i32.ne (i32.load8_u (i32.const 20)) (i32.const 22)) (then (call $fail (i32.const 10))))
        (call $drop (i32.load (i32.const 24)))
        (call $open (call $preopen (i32.const 0)) (i32.const 0) (i32.const 108) (i32.const 1)
            (i32.const 0) (i32.const 1) (i32.const 16))
        (if (i32.load8_u (i32.const 16)) (then (call $fail (i32.const 11))))
        (call $fail (i32.add (i32.const 100) (local.get $n)))
    "#;
    let data = Volume::empty_dir("/data", MIB).unwrap();
    // The component's 4 MiB memory, and 4 KiB: room for a few dozen
    // descriptors at 64 bytes (and their path) each.
    let Step::Exited(code) = run_limited(&fs_component(body), &[&data], 4 * MIB + 4096) else {
        panic!("expected an exit");
    };
    assert!((110..200).contains(&code), "opened {}", code - 100);
}

#[test]
fn a_rename_is_charged_for_its_longer_name() {
    // Exactly full after writing "a": a longer name does not fit, one of
    // the same length does, and replacing a file frees what it held.
    let data = Volume::empty_dir("/data", "a".len() + ENTRY_OVERHEAD + 5).unwrap();
    let (end, stdout) = file_writer(
        &[
            "write:/data/a=12345",
            "rename:/data/a=/data/bb",
            "rename:/data/a=/data/b",
            "read:/data/b",
        ],
        &[&data],
    );
    assert_eq!(end, Step::Exited(0), "{stdout}");
    assert_eq!(
        stdout,
        "write /data/a: ok\n\
         rename /data/a: error StorageFull (errno 51)\n\
         rename /data/a: ok\n\
         read /data/b: 12345\n"
    );
    let data = Volume::empty_dir("/data", 2 * (1 + ENTRY_OVERHEAD) + 6).unwrap();
    let (_, stdout) = file_writer(
        &[
            "write:/data/a=1",
            "write:/data/b=22222",
            "rename:/data/a=/data/b",
            // The 5 bytes of the old b are free again.
            "write:/data/c=12345",
        ],
        &[&data],
    );
    assert_eq!(
        stdout,
        "write /data/a: ok\n\
         write /data/b: ok\n\
         rename /data/a: ok\n\
         write /data/c: ok\n"
    );
    assert_eq!(data.read("b").unwrap(), b"1");
}

#[test]
fn relative_paths_resolve_against_the_root() {
    // No initial cwd: wasi-libc (under Rust's std) starts at `/`, so a
    // relative path reaches the volume mounted at its first component.
    let data = Volume::empty_dir("/data", MIB).unwrap();
    let (end, stdout) = file_writer(
        &[
            "write:data/rel=relative",
            "read:/data/rel",
            "read:config/greeting",
        ],
        &[&data, &config()],
    );
    assert_eq!(end, Step::Exited(0), "{stdout}");
    assert_eq!(
        stdout,
        "write data/rel: ok\n\
         read /data/rel: relative\n\
         read config/greeting: hi from a ConfigMap\n"
    );
}

#[test]
fn preview_1_and_preview_2_agree_on_the_same_operations() {
    // The same std program built for wasm32-wasip1 (our preview 1 layer)
    // and wasm32-wasip2 (wasi:filesystem): one implementation underneath,
    // so the same results, errors included. (Only a `..` escape differs in
    // code: preview 1 has ENOTCAPABLE, preview 2 only not-permitted.)
    let ops = [
        "write:/data/a=12345",
        "append:/data/a=678",
        "size:/data/a",
        "mkdir:/data/d",
        "rename:/data/a=/data/d/b",
        "ls:/data/d",
        "rmdir:/data/d",
        "rename:/data/d=/data/d/e",
        "rename:/data/d=/config/d",
        "read:/data/d/b",
        "write:/config/greeting=x",
        "ls:/config",
    ];
    let module = skiff_wasm::precompile_for(skiff_wasm::Target::Host, &wasm_p1("file-writer"))
        .expect("precompile");
    let module = runtime().load(&module).expect("load module");
    assert_eq!(module.kind(), skiff_wasm::ImageKind::Module);
    let p1_data = Volume::empty_dir("/data", MIB).unwrap();
    let (end, p1) = run_writer(&module, &ops, &[&p1_data, &config()]);
    assert_eq!(end, Step::Exited(0), "{p1}");
    let p2_data = Volume::empty_dir("/data", MIB).unwrap();
    let (end, p2) = file_writer(&ops, &[&p2_data, &config()]);
    assert_eq!(end, Step::Exited(0), "{p2}");
    assert_eq!(p1, p2);
    assert_eq!(
        p2,
        "write /data/a: ok\n\
         append /data/a: ok\n\
         size /data/a: 8\n\
         mkdir /data/d: ok\n\
         rename /data/a: ok\n\
         ls /data/d: b\n\
         rmdir /data/d: error Uncategorized (errno 55)\n\
         rename /data/d: error InvalidInput (errno 28)\n\
         rename /data/d: error CrossesDevices (errno 75)\n\
         read /data/d/b: 12345678\n\
         write /config/greeting: error ReadOnlyFilesystem (errno 69)\n\
         ls /config: greeting\n"
    );
    assert_eq!(p1_data.read("d/b").unwrap(), b"12345678");
}

/// The same operations on an emptyDir under Skiff and in a host directory
/// preopened by the reference runtime (wasmtime-wasi): same output, errno
/// for errno. (Read-only volumes differ on purpose: Skiff answers
/// `read-only` like a kubelet's read-only mount, wasmtime-wasi
/// `not-permitted`; tested above.)
#[test]
fn file_operations_on_an_empty_dir_match_the_reference() {
    let ops = [
        "write:/data/notes.txt=hello",
        "append:/data/notes.txt= world",
        "read:/data/notes.txt",
        "mkdir:/data/sub",
        "write:/data/sub/inner.txt=inside",
        "ls:/data",
        "rmdir:/data/sub",
        "rm:/data/sub/inner.txt",
        "rmdir:/data/sub",
        "size:/data/notes.txt",
        "rename:/data/notes.txt=/data/moved.txt",
        "read:/data/notes.txt",
        "mkdir:/data/d",
        "rename:/data/moved.txt=/data/d/c",
        "ls:/data/d",
        "rm:/data/d",
        "mkdir:/data/d",
        "ls:/data/missing",
        "read:/data/../escape",
        "write:/elsewhere=x",
    ];
    let data = Volume::empty_dir("/data", MIB).unwrap();
    let (end, ours) = file_writer(&ops, &[&data]);
    assert_eq!(end, Step::Exited(0), "{ours}");

    let dir = tempfile::tempdir().unwrap();
    let mut argv = vec!["file-writer"];
    argv.extend_from_slice(&ops);
    let reference = skiff_wasi_reference::run_with_dirs(
        &support::wasm("file-writer"),
        &argv,
        &[],
        &[(dir.path(), "/data")],
    )
    .expect("reference run");
    assert_eq!(reference.code, Some(0), "{reference:?}");
    assert_eq!(ours, reference.stdout);
    assert_eq!(data.read("d/c").unwrap(), b"hello world");
    assert_eq!(
        std::fs::read(dir.path().join("d/c")).unwrap(),
        b"hello world"
    );
}
