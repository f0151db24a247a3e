//! Connection exhaustion: idle and slow clients are closed, a connection
//! cap keeps a share for the plane's own identities, and requests and
//! watches beyond the limits get 429 with Retry-After (checked with the
//! Python client in tests/py/limits.py) while everyone else is served.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use skiff_apiserver::Limits;
use skiff_test_support::api::ApiServer;

/// A TLS client of the cluster CA, without a client certificate.
fn tls_config(c: &ApiServer) -> Arc<rustls::ClientConfig> {
    let ca = std::fs::read(c.pki_dir().join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection with its handshake done.
fn tls_connect(c: &ApiServer, cfg: &Arc<rustls::ClientConfig>) -> Tls {
    let tcp = TcpStream::connect(c.addr()).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).unwrap();
    }
    tls
}

/// Whether the server closed the stream: EOF or an error on read (within
/// `wait`), rather than data or silence.
fn closed_by_server(s: &mut impl std::io::Read, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() > deadline {
                    return false;
                }
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_slow_connections_are_closed_while_others_are_served() {
    let c = ApiServer::start_tuned(
        |_| {},
        |cfg| {
            cfg.limits.handshake_timeout = Duration::from_secs(1);
            cfg.limits.header_read_timeout = Duration::from_secs(2);
        },
    );
    let tls = tls_config(&c);
    // Connections that never start TLS.
    let mut idle: Vec<TcpStream> = (0..20)
        .map(|_| {
            let s = TcpStream::connect(c.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            s
        })
        .collect();
    // Slowloris: a header line, then a byte every 200 ms, never done.
    let mut slow: Vec<Tls> = (0..5).map(|_| tls_connect(&c, &tls)).collect();
    for s in &mut slow {
        s.write_all(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        s.flush().unwrap();
    }
    // Keep-alive connections idle after one request.
    let mut kept: Vec<Tls> = (0..5).map(|_| tls_connect(&c, &tls)).collect();
    for s in &mut kept {
        s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 401"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
    // Meanwhile others are served, over and over.
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(4) {
        for s in &mut slow {
            // The server may already have closed it.
            let _ = s.write_all(b"a");
            let _ = s.flush();
        }
        c.ok(&["get", "ns", "default"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    for (i, s) in idle.iter_mut().enumerate() {
        assert!(
            closed_by_server(s, Duration::from_secs(2)),
            "idle TCP connection {i} still open"
        );
    }
    for (i, s) in slow.iter_mut().enumerate() {
        s.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            closed_by_server(s, Duration::from_secs(2)),
            "slowloris connection {i} still open"
        );
    }
    for (i, s) in kept.iter_mut().enumerate() {
        s.sock
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        assert!(
            closed_by_server(s, Duration::from_secs(2)),
            "idle keep-alive connection {i} still open"
        );
    }
    c.ok(&["get", "ns", "default"]);
}

#[test]
fn a_connection_cap_keeps_a_share_for_the_plane() {
    let c = ApiServer::start_tuned(
        |_| {},
        |cfg| {
            cfg.limits.max_connections = 8;
            cfg.limits.reserved_connections = 4;
        },
    );
    let tls = tls_config(&c);
    // A stranger holds every ordinary connection.
    let mut held: Vec<Tls> = (0..8).map(|_| tls_connect(&c, &tls)).collect();
    std::thread::sleep(Duration::from_millis(300));
    // One more is closed right after its handshake, unanswered.
    let mut extra = tls_connect(&c, &tls);
    let _ = extra.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(3)),
        "a connection past the cap was served"
    );
    // The plane's own identities still get in: the admin (system:masters)
    // and the scheduler.
    c.ok(&["get", "ns", "default"]);
    let sched = c.cert_kubeconfig("system:kube-scheduler", &[]);
    skiff_test_support::api::succeeds(
        c.kubectl_as(&sched, &["get", "pods", "-A"]),
        &["get", "pods", "-A"],
    );
    // The held connections are still served (they were never dropped).
    let s = &mut held[0];
    s.write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 401"));
    // Once the stranger lets go, ordinary connections work again.
    held.clear();
    std::thread::sleep(Duration::from_millis(300));
    let mut again = tls_connect(&c, &tls);
    again
        .write_all(b"GET /version HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let n = again.read(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 401"));
}

/// Users alice and bob (token, `edit` in default); the checks are in
/// tests/py/limits.py.
#[test]
fn watches_and_requests_past_the_limits_get_429_with_retry_after() {
    let c = ApiServer::start_tuned(
        |pki| {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(pki.join("tokens.csv"))
                .unwrap();
            writeln!(f, "alice-token-0123456789,alice,alice-uid").unwrap();
            writeln!(f, "bob-token-0123456789,bob,bob-uid").unwrap();
        },
        |cfg| {
            cfg.limits = Limits {
                max_watches_per_user: 3,
                max_mutating_requests_inflight: 2,
                request_timeout: Duration::from_secs(2),
                ..Limits::default()
            };
        },
    );
    for user in ["alice", "bob"] {
        c.ok(&[
            "create",
            "rolebinding",
            &format!("{user}-edit"),
            "--clusterrole=edit",
            &format!("--user={user}"),
            "-n",
            "default",
        ]);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/limits.py");
    c.run_python(script, "limits: all checks passed");
}
