//! The `skiff` command line end to end, through the binary: `node run`
//! with the real kernel under QEMU, and the front door a new user follows
//! (`server`, `token`, `kubeconfig`, `node boot`) with real kubectl.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_e2e::{eventually, peers};
use skiff_qemu::free_port;

#[test]
fn node_run_prints_serial_and_exits_with_kernel_code() {
    let _g = skiff_e2e::shared();
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["node", "run", "--kernel"])
        .arg(skiff_e2e::kernel())
        .args(["--", "skiff.bogus=1"])
        .output()
        .expect("running skiff");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(37),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(
        stdout.starts_with("[0.000000] INFO  skiff: skiff-kernel "),
        "{stdout}"
    );
    assert!(stdout.contains("skiff.bogus"), "{stdout}");
    assert!(stderr.contains("CONFIG"), "{stderr}");
}

#[test]
fn dry_run_prints_the_qemu_command() {
    let out = Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "node",
            "run",
            "--kernel",
            "k.elf",
            "--dry-run",
            "--",
            "skiff.net=none",
        ])
        .output()
        .expect("running skiff");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        stdout.starts_with("qemu-system-x86_64 -machine microvm,acpi=off "),
        "{stdout}"
    );
    assert!(
        stdout.contains("-kernel k.elf -append skiff.net=none"),
        "{stdout}"
    );
}

/// A `skiff` child in its own process group (QEMU, which `node boot`
/// spawns, is in it too), its output collected; SIGTERM to the group on drop.
struct Spawned {
    child: Child,
    output: Arc<Mutex<String>>,
}

impl Spawned {
    fn start(args: &[&str]) -> Self {
        use std::os::unix::process::CommandExt as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("spawning skiff");
        let output = Arc::new(Mutex::new(String::new()));
        let pipes: [Box<dyn std::io::Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for pipe in pipes {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut o = output.lock().unwrap();
                    o.push_str(&line);
                    o.push('\n');
                }
            });
        }
        Spawned { child, output }
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// Waits up to `secs` for the process to exit; its exit code.
    fn exit_within(&mut self, secs: u64) -> Option<i32> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the readers drain the pipes.
                std::thread::sleep(Duration::from_millis(200));
                return status.code();
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        if self.exit_within(20).is_none() {
            let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
            let _ = self.child.wait();
        }
    }
}

/// Runs `skiff args` to completion.
fn skiff(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running skiff")
}

#[track_caller]
fn stdout_of(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A `skiff server` on free loopback ports in a fresh directory, up and
/// printing its directions.
struct Server {
    dir: tempfile::TempDir,
    gateway: String,
    kubeconfig: PathBuf,
    process: Spawned,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (api, gateway) = (free_port().unwrap(), free_port().unwrap());
        let gateway = format!("127.0.0.1:{gateway}");
        let process = Spawned::start(&[
            "server",
            "--dir",
            dir.path().to_str().unwrap(),
            "--listen",
            &format!("127.0.0.1:{api}"),
            "--node-listen",
            &gateway,
        ]);
        eventually(
            "skiff server to print how to join a node",
            60,
            || process.output(),
            || process.output().contains("join a node:"),
        );
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let text = stdout_of(
            skiff(&["kubeconfig", "--dir", dir.path().to_str().unwrap()]),
            "skiff kubeconfig",
        );
        std::fs::write(&kubeconfig, text).unwrap();
        Server {
            dir,
            gateway,
            kubeconfig,
            process,
        }
    }

    fn dir(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("pki/ca.crt")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(peers::kubectl())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("running kubectl")
    }

    /// Waits up to `secs` until `kubectl get WHAT -o jsonpath=PATH` prints
    /// `want`; `node`'s output explains a timeout.
    fn wait_for(&self, what: &[&str], path: &str, want: &str, secs: u64, node: &Spawned) {
        let jsonpath = format!("jsonpath={path}");
        let get = [&["get"], what, &["-o", &jsonpath]].concat();
        eventually(
            &format!("{what:?} {path} to be {want:?}"),
            secs,
            || node.output(),
            || String::from_utf8_lossy(&self.kubectl(&get).stdout) == want,
        );
    }

    fn tokens(&self) -> String {
        stdout_of(
            skiff(&["token", "list", "--dir", self.dir()]),
            "skiff token list",
        )
    }

    fn boot(&self, name: &str, token: &str) -> Spawned {
        Spawned::start(&[
            "node",
            "boot",
            "--server",
            &self.gateway,
            "--ca",
            self.ca().to_str().unwrap(),
            "--token",
            token,
            "--name",
            name,
            "--join-timeout",
            "90",
            "--kernel",
            skiff_e2e::kernel().to_str().unwrap(),
        ])
    }
}

#[test]
fn skiff_commands_alone_give_a_server_a_joined_node_and_a_running_pod() {
    let _g = skiff_e2e::shared();
    let server = Server::start();
    let directions = server.process.output();
    for shown in [
        "export KUBECONFIG=",
        "skiff token create",
        "skiff node boot --server",
    ] {
        assert!(directions.contains(shown), "{shown:?} in:\n{directions}");
    }

    let token = stdout_of(
        skiff(&[
            "token",
            "create",
            "--dir",
            server.dir(),
            "--description",
            "first node",
        ]),
        "skiff token create",
    );
    let token = token.trim();
    let (id, secret) = token.split_once('.').expect("<id>.<secret>");
    let list = server.tokens();
    assert!(list.contains(id) && list.contains("first node"), "{list}");
    assert!(
        !list.contains(secret),
        "a token's secret in `token list`:\n{list}"
    );

    let node = server.boot("front-1", token);
    server.wait_for(
        &["node", "front-1"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        120,
        &node,
    );
    // Without a terminal, the wait to join is a line at each end.
    let said = node.output();
    assert!(
        said.contains("node front-1: booting and joining ")
            && said.contains(": joined; it is a Node in the cluster now ("),
        "{said}"
    );
    // The token is bound to the node it admitted.
    let list = server.tokens();
    assert!(list.contains("front-1"), "{list}");

    let pod = server.dir.path().join("pod.yaml");
    std::fs::write(
        &pod,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: hello}\nspec:\n  containers:\n  - name: main\n    image: skiff.dev/testrt\n    command: [\"echo hello from front-1\", \"forever\"]\n",
    )
    .unwrap();
    stdout_of(
        server.kubectl(&["apply", "-f", pod.to_str().unwrap()]),
        "kubectl apply",
    );
    server.wait_for(
        &["pod", "hello"],
        "{.spec.nodeName} {.status.phase}",
        "front-1 Running",
        60,
        &node,
    );
    eventually(
        "pod hello's log",
        30,
        || node.output(),
        || {
            String::from_utf8_lossy(&server.kubectl(&["logs", "hello"]).stdout)
                .contains("hello from front-1")
        },
    );

    eprintln!("{}\n{}", server.process.output(), node.output());
    let revoked = stdout_of(
        skiff(&["token", "revoke", id, "--dir", server.dir()]),
        "skiff token revoke",
    );
    assert!(revoked.contains(id), "{revoked}");
    let list = server.tokens();
    assert!(!list.contains(id), "revoked token still listed:\n{list}");
    let again = skiff(&["token", "revoke", id, "--dir", server.dir()]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no token"),
        "{again:?}"
    );
}

#[test]
fn node_boot_says_which_when_the_token_is_wrong_or_the_server_unreachable() {
    let _g = skiff_e2e::shared();
    let server = Server::start();
    let started = Instant::now();
    let mut node = server.boot("front-bad", "abcdef.0123456789abcdef");
    let code = node.exit_within(60);
    let output = node.output();
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("refused node front-bad") && output.contains("BadToken"),
        "{output}"
    );
    eprintln!(
        "wrong token reported after {:?}:\n{output}",
        started.elapsed()
    );

    // Nothing listens on this port: said before any QEMU starts.
    let closed = format!("127.0.0.1:{}", free_port().unwrap());
    let started = Instant::now();
    let out = skiff(&[
        "node",
        "boot",
        "--server",
        &closed,
        "--ca",
        server.ca().to_str().unwrap(),
        "--token",
        "abcdef.0123456789abcdef",
        "--kernel",
        skiff_e2e::kernel().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("the server {closed}")) && stderr.contains("unreachable"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));

    // A malformed token or CA file is refused before anything is dialled.
    let refused = |ca: &str, token: &str| {
        let out = skiff(&[
            "node",
            "boot",
            "--server",
            &server.gateway,
            "--ca",
            ca,
            "--token",
            token,
        ]);
        assert!(!out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = refused("/nonexistent", "abcdef.0123456789abcdef");
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    let stderr = refused(server.ca().to_str().unwrap(), "not-a-token");
    assert!(stderr.contains("--token"), "{stderr}");
}

#[test]
fn an_image_from_skiff_node_image_boots_and_joins() {
    let _g = skiff_e2e::shared();
    let server = Server::start();
    let token = stdout_of(
        skiff(&["token", "create", "--dir", server.dir(), "--node", "iso-1"]),
        "skiff token create",
    );
    let iso = server.dir.path().join("node.iso");
    // The machine dials the gateway at the host's address on QEMU's user
    // network, which the serving certificate of `skiff server` names.
    let port = server.gateway.rsplit_once(':').unwrap().1;
    let made = skiff(&[
        "node",
        "image",
        "--server",
        &format!("10.0.2.2:{port}"),
        "--ca",
        server.ca().to_str().unwrap(),
        "--token",
        token.trim(),
        "--name",
        "iso-1",
        "--kernel",
        skiff_e2e::kernel().to_str().unwrap(),
        "--output",
        iso.to_str().unwrap(),
    ]);
    stdout_of(made, "skiff node image (`cargo xtask setup` installs GRUB)");
    let node = Spawned::start(&[
        "node",
        "run",
        "--machine",
        "q35",
        "--rng",
        "--cdrom",
        iso.to_str().unwrap(),
    ]);
    server.wait_for(
        &["node", "iso-1"],
        "{.status.conditions[?(@.type==\"Ready\")].status}",
        "True",
        180,
        &node,
    );
    // GRUB's menu entry: the ISO, not `-kernel`, booted it.
    assert!(
        node.output().contains("Booting `skiff'"),
        "{}",
        node.output()
    );
}
