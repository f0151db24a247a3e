//! The real `skiff-controlplane` binary: `pki init`, then `serve` with the API
//! server and the node gateway, driven by the real kubectl 1.33 and by
//! hollow nodes that bootstrap with the printed token.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use skiff_hollow_node::{Fleet, FleetConfig};
use skiff_test_support::Scrape;
use skiff_test_support::peers::kubectl as kubectl_path;

mod common;
use common::{Child, contains_all, eventually, free_port, text};

#[test]
fn pki_init_serve_and_nodes_join() {
    let bin = env!("CARGO_BIN_EXE_skiff-controlplane");
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (api_port, node_port) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{api_port}");

    let out = Command::new(bin)
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .args(["--san", "cp.example", "--server", &url])
        .output()
        .unwrap();
    let printed = text(&out);
    assert!(out.status.success(), "{printed}");
    contains_all(&printed, &["admin kubeconfig:", "node bootstrap token:"]);
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("node bootstrap token: "))
        .unwrap()
        .trim()
        .to_string();
    // A second init refuses to replace the CA.
    let again = Command::new(bin)
        .args(["pki", "init", "--dir"])
        .arg(&pki)
        .output()
        .unwrap();
    assert!(!again.status.success());
    contains_all(&text(&again), &["refusing to overwrite"]);

    let _server = Child(
        Command::new(bin)
            .args(["serve", "--dir"])
            .arg(&pki)
            .arg("--data")
            .arg(dir.path().join("data"))
            .args(["--listen", &format!("127.0.0.1:{api_port}")])
            .args(["--node-listen", &format!("127.0.0.1:{node_port}")])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let kubeconfig = pki.join("admin.kubeconfig");
    let home = dir.path().to_path_buf();
    let kubectl = |args: &[&str]| {
        Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", &home)
            .output()
            .unwrap()
    };
    eventually(20, "API server ready", || {
        let out = kubectl(&["get", "--raw", "/readyz"]);
        (out.status.success() && out.stdout == b"ok")
            .then_some(())
            .ok_or_else(|| text(&out))
    });
    // kube's health checks: named, listed with ?verbose, one at a time,
    // one left out; an unknown one is 404.
    assert_eq!(
        text(&kubectl(&["get", "--raw", "/readyz?verbose"])),
        "[+]ping ok\n[+]etcd ok\nreadyz check passed\n"
    );
    assert_eq!(
        text(&kubectl(&["get", "--raw", "/livez?verbose&exclude=etcd"])),
        "[+]ping ok\n[+]etcd excluded: ok\nlivez check passed\n"
    );
    assert_eq!(text(&kubectl(&["get", "--raw", "/readyz/etcd"])), "ok");
    assert!(!kubectl(&["get", "--raw", "/readyz/nope"]).status.success());
    contains_all(
        &text(&kubectl(&["version", "-o", "json"])),
        &["\"serverVersion\"", "v1.33.0-skiff"],
    );
    contains_all(
        &text(&kubectl(&["get", "ns"])),
        &["default", "kube-system", "kube-public", "kube-node-lease"],
    );

    // Two hollow nodes bootstrap with the printed token through the
    // binary's gateway and become Ready nodes.
    let gateway = format!("127.0.0.1:{node_port}").parse().unwrap();
    let cfg = FleetConfig::new(gateway, &Path::new(&pki).join("ca.crt"), &token).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _fleet = rt.block_on(async {
        let mut fleet = Fleet::new();
        fleet.start_many(&cfg, "joiner", 2);
        fleet
    });
    eventually(30, "hollow nodes Ready", || {
        let out = text(&kubectl(&["get", "nodes", "--no-headers"]));
        let ready = out
            .lines()
            .filter(|l| l.starts_with("joiner") && l.split_whitespace().nth(1) == Some("Ready"))
            .count();
        (ready == 2).then_some(()).ok_or(out)
    });

    // The in-process scheduler places a pod, and says so on `/metrics`
    // under kube-scheduler's name.
    let pod = text(&kubectl(&[
        "run",
        "placed",
        "--image=skiff.dev/testrt",
        "--restart=Never",
    ]));
    eventually(30, "pod placed on a node", || {
        let node = text(&kubectl(&[
            "get",
            "pod",
            "placed",
            "-o",
            "jsonpath={.spec.nodeName}",
        ]));
        node.starts_with("joiner")
            .then_some(())
            .ok_or(format!("{pod}\n{node}"))
    });
    let scrape = Scrape::parse(&text(&kubectl(&["get", "--raw", "/metrics"])));
    let scheduled = [("profile", "default-scheduler"), ("result", "scheduled")];
    assert!(
        scrape
            .total("scheduler_schedule_attempts_total", &scheduled)
            .is_some_and(|n| n >= 1.0),
        "{scrape:?}"
    );
    assert!(
        scrape
            .total("etcd_disk_backend_commit_duration_seconds_count", &[])
            .is_some_and(|n| n > 0.0)
    );
    // Each attempt timed; the queues' gauges are there (their figures
    // trail by up to a second).
    assert!(
        scrape
            .total("scheduler_scheduling_algorithm_duration_seconds_count", &[])
            .is_some_and(|n| n >= 1.0),
        "{scrape:?}"
    );
    for queue in ["active", "backoff", "unschedulable"] {
        assert!(
            scrape
                .total("scheduler_pending_pods", &[("queue", queue)])
                .is_some(),
            "{queue}: {scrape:?}"
        );
    }
    // The controllers count their reconciles (the default ServiceAccounts'
    // controller ran for every namespace) and time them.
    let sa = [("name", "serviceaccount"), ("result", "success")];
    assert!(
        scrape
            .total("skiff_controller_reconciles_total", &sa)
            .is_some_and(|n| n >= 1.0),
        "{scrape:?}"
    );
    assert!(
        scrape
            .total(
                "workqueue_work_duration_seconds_count",
                &[("name", "serviceaccount")]
            )
            .is_some_and(|n| n >= 1.0),
        "{scrape:?}"
    );
    // A pod no node fits waits, and the gauges count it.
    text(&kubectl(&[
        "run",
        "stuck",
        "--image=skiff.dev/testrt",
        "--restart=Never",
        "--overrides={\"spec\":{\"nodeSelector\":{\"nowhere\":\"true\"}}}",
    ]));
    eventually(30, "the stuck pod counted as waiting", || {
        let s = Scrape::parse(&text(&kubectl(&["get", "--raw", "/metrics"])));
        let waiting = |q| s.total("scheduler_pending_pods", &[("queue", q)]);
        (waiting("unschedulable").unwrap_or(0.0) + waiting("backoff").unwrap_or(0.0) == 1.0)
            .then_some(())
            .ok_or(format!("{s:?}"))
    });
}

/// A running `skiff-controlplane serve` with a fresh PKI, its log in a file.
struct Served {
    dir: tempfile::TempDir,
    server: Child,
    api_port: u16,
    node_port: u16,
    token: String,
}

impl Served {
    fn start(log_args: &[&str]) -> Served {
        let bin = env!("CARGO_BIN_EXE_skiff-controlplane");
        let dir = tempfile::tempdir().unwrap();
        let pki = dir.path().join("pki");
        let (api_port, node_port) = (free_port(), free_port());
        let out = Command::new(bin)
            .args(["pki", "init", "--dir"])
            .arg(&pki)
            .args(["--server", &format!("https://127.0.0.1:{api_port}")])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        let token = text(&out)
            .lines()
            .find_map(|l| l.strip_prefix("node bootstrap token: "))
            .unwrap()
            .trim()
            .to_string();
        let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
        let server = Child(
            Command::new(bin)
                .args(["serve", "--dir"])
                .arg(&pki)
                .arg("--data")
                .arg(dir.path().join("data"))
                .args(["--listen", &format!("127.0.0.1:{api_port}")])
                .args(["--node-listen", &format!("127.0.0.1:{node_port}")])
                .args(log_args)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let s = Served {
            dir,
            server,
            api_port,
            node_port,
            token,
        };
        eventually(20, "API server ready", || {
            let out = s.kubectl(&["get", "--raw", "/readyz"]);
            (out.status.success() && out.stdout == b"ok")
                .then_some(())
                .ok_or_else(|| text(&out))
        });
        s
    }

    fn pki(&self) -> std::path::PathBuf {
        self.dir.path().join("pki")
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(kubectl_path())
            .args(args)
            .env("KUBECONFIG", self.pki().join("admin.kubeconfig"))
            .env("HOME", self.dir.path())
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap()
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_skiff-controlplane"))
            .args(args)
            .arg("--dir")
            .arg(self.pki())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The certificate a TLS server presents, PEM, as the real Python `ssl`
/// client receives it.
fn presented_cert(port: u16) -> String {
    let out = Command::new(skiff_test_support::peers::python())
        .args([
            "-c",
            "import ssl, sys; print(ssl.get_server_certificate(('127.0.0.1', int(sys.argv[1]))))",
        ])
        .arg(port.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn pem_body(pem: &str) -> String {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

/// `pki check-expiration` shows a year for every certificate but the CA;
/// `pki renew apiserver` on a running plane is served at the next handshake
/// by the API server and the node gateway alike, while connected nodes keep
/// their sessions; `pki renew all` gives a working admin kubeconfig.
#[test]
fn certificates_are_checked_and_renewed_on_a_running_plane() {
    let s = Served::start(&["--log-level", "warn"]);
    let table = s.cli(&["pki", "check-expiration"]);
    let rows: Vec<&str> = table.lines().collect();
    assert!(rows[0].starts_with("CERTIFICATE"), "{table}");
    for name in ["apiserver", "admin.kubeconfig", "scheduler.kubeconfig"] {
        let row = rows.iter().find(|r| r.starts_with(name)).unwrap();
        assert!(row.contains("364d") || row.contains("365d"), "{table}");
    }
    let ca = rows.iter().find(|r| r.starts_with("ca ")).unwrap();
    assert!(ca.contains("3649d") || ca.contains("3650d"), "{table}");

    let gateway = format!("127.0.0.1:{}", s.node_port).parse().unwrap();
    let cfg = FleetConfig::new(gateway, &s.pki().join("ca.crt"), &s.token).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fleet = rt.block_on(async {
        let mut fleet = Fleet::new();
        fleet.start_many(&cfg, "steady", 2);
        fleet
    });
    let ready = |s: &Served| {
        let out = text(&s.kubectl(&["get", "nodes", "--no-headers"]));
        let n = out
            .lines()
            .filter(|l| l.starts_with("steady") && l.split_whitespace().nth(1) == Some("Ready"))
            .count();
        (n == 2).then_some(()).ok_or(out)
    };
    eventually(30, "hollow nodes Ready", || ready(&s));
    let sessions = skiff_hollow_node::Stats::get(&fleet.stats.sessions);

    let before = presented_cert(s.api_port);
    assert_eq!(pem_body(&before), pem_body(&presented_cert(s.node_port)));
    assert_eq!(
        s.cli(&["pki", "renew", "apiserver"]).trim(),
        "apiserver: renewed"
    );
    let on_disk = pem_body(&std::fs::read_to_string(s.pki().join("apiserver.crt")).unwrap());
    assert_ne!(on_disk, pem_body(&before));
    eventually(10, "the renewed certificate served", || {
        let (api, gw) = (presented_cert(s.api_port), presented_cert(s.node_port));
        (pem_body(&api) == on_disk && pem_body(&gw) == on_disk)
            .then_some(())
            .ok_or_else(|| "still the old certificate".to_string())
    });
    // kubectl trusts it (same CA); the nodes never noticed.
    contains_all(&text(&s.kubectl(&["get", "ns"])), &["kube-system"]);
    std::thread::sleep(Duration::from_secs(2));
    eventually(10, "hollow nodes still Ready", || ready(&s));
    assert_eq!(
        skiff_hollow_node::Stats::get(&fleet.stats.sessions),
        sessions,
        "a node reconnected"
    );
    assert_eq!(skiff_hollow_node::Stats::get(&fleet.stats.errors), 0);

    let old_admin = std::fs::read_to_string(s.pki().join("admin.kubeconfig")).unwrap();
    let renewed = s.cli(&["pki", "renew", "all"]);
    contains_all(
        &renewed,
        &["apiserver: renewed", "admin.kubeconfig: renewed"],
    );
    assert_ne!(
        old_admin,
        std::fs::read_to_string(s.pki().join("admin.kubeconfig")).unwrap()
    );
    contains_all(&text(&s.kubectl(&["get", "nodes"])), &["steady-0"]);
    // The CA is not renewed in place; unknown names are refused.
    let out = Command::new(env!("CARGO_BIN_EXE_skiff-controlplane"))
        .args(["pki", "renew", "ca", "--dir"])
        .arg(s.pki())
        .output()
        .unwrap();
    assert!(!out.status.success());
    contains_all(&text(&out), &["not renewed in place"]);
    // `--log-level warn` kept the info lines out.
    let log = s.log();
    assert!(!log.contains("INFO"), "{log}");
}

/// A write the store cannot commit (here: the process's file size limit,
/// set from outside with prlimit, makes redb's file growth fail with EFBIG)
/// fails that request and is logged as an ERROR in the JSON log; the plane
/// survives SIGXFSZ and keeps serving reads.
#[test]
fn a_store_commit_failure_reaches_the_log() {
    let s = Served::start(&["--log-format", "json"]);
    let log = s.log();
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.starts_with('{') && first.contains(r#""level":"INFO""#),
        "{log}"
    );
    contains_all(&log, &["serving the Kubernetes API"]);

    let db = s.dir.path().join("data/store.redb");
    let size = std::fs::metadata(&db).unwrap().len();
    let pid = s.server.0.id().to_string();
    let out = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--fsize={size}:{size}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let manifest = s.dir.path().join("big.yaml");
    let mut failed = None;
    for i in 0..20 {
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big-{i}\ndata:\n  blob: {}\n",
                "x".repeat(512 * 1024)
            ),
        )
        .unwrap();
        let out = s.kubectl(&["create", "-f", manifest.to_str().unwrap()]);
        if !out.status.success() {
            failed = Some(text(&out));
            break;
        }
    }
    let failed = failed.expect("a write past the file size limit failed");
    assert!(failed.contains("Error"), "{failed}");
    eventually(10, "the commit failure logged", || {
        let log = s.log();
        log.lines()
            .any(|l| l.contains(r#""level":"ERROR""#) && l.contains("store group commit failed"))
            .then_some(())
            .ok_or(log)
    });
    // Still up: reads work.
    contains_all(&text(&s.kubectl(&["get", "ns"])), &["kube-system"]);
}
