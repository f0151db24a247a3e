//! Node TLS negatives (moved here from the node agent so its own tests need
//! no control plane): the node agent, driven over real TCP against the real
//! gateway (in process, with the API server), refuses a gateway serving
//! certificate from another CA, for another name, or expired, with a typed
//! rustls error, and never gets as far as sending its hello, bootstrap
//! token or registration. The serving certificate is swapped on disk, as
//! `pki renew` does (the gateway re-reads it at the next handshake).
//!
//! With the real certificate the same driver bootstraps and registers, so
//! the refusals are the certificates' doing.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rustls::CertificateError;
use rustls::pki_types::{CertificateDer, ServerName};
use skiff_apiserver::{ServeConfig, pki};
use skiff_gateway::GatewayConfig;
use skiff_kubelet::{Kubelet, ProbeId, ProbeResult, ProbeTarget, Prober};
use skiff_node_agent::testrt::TestRuntime;
use skiff_node_agent::tls::{FixedClock, TlsClient, TlsError, bootstrap_config};
use skiff_node_agent::{Agent, AgentConfig, Phase};
use skiff_node_proto::{NodeInfo, Resources};

/// The gateway's address as nodes under QEMU know it (user networking);
/// the certificates below name it or not.
const GATEWAY_IP: &str = "10.0.2.2";

struct NoProber;

impl Prober for NoProber {
    fn start(&mut self, _: ProbeId, _: &ProbeTarget<'_>) {}
    fn poll(&mut self, _: ProbeId) -> Option<ProbeResult> {
        Some(ProbeResult::Success)
    }
    fn cancel(&mut self, _: ProbeId) {}
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn der(pem: &str) -> CertificateDer<'static> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).expect("PEM");
    CertificateDer::from(p.contents)
}

fn gateway_name() -> ServerName<'static> {
    ServerName::try_from(GATEWAY_IP).unwrap()
}

/// Replaces the serving certificate and key (renamed into place, as `pki
/// renew` does) and waits out the gateway's re-check interval.
fn swap_serving_cert(pki_dir: &Path, issued: &pki::Issued) {
    for (name, text) in [
        (pki::SERVING_KEY, &issued.key_pem),
        (pki::SERVING_CERT, &issued.cert_pem),
    ] {
        let tmp = pki_dir.join(format!("{name}.new"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, pki_dir.join(name)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1200));
}

/// One TLS handshake with the node's own client and bootstrap config: its
/// error, if it fails.
fn handshake(addr: SocketAddr, ca: &CertificateDer<'static>) -> Result<(), TlsError> {
    let clock: skiff_node_agent::tls::Clock = Arc::new(FixedClock(now_secs()));
    let config = bootstrap_config(std::slice::from_ref(ca), &clock).unwrap();
    let mut tls = TlsClient::new(config, gateway_name())?;
    let mut tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 32 << 10];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !tls.is_established() {
        assert!(Instant::now() < deadline, "handshake hangs");
        tcp.write_all(&tls.take_outgoing()).unwrap();
        let n = tcp.read(&mut buf).unwrap();
        assert!(n > 0, "the gateway closed before the handshake ended");
        if let Err(e) = tls.receive(&buf[..n]) {
            // The alert rustls queued tells the gateway why.
            let _ = tcp.write_all(&tls.take_outgoing());
            return Err(e);
        }
    }
    Ok(())
}

/// The node agent with a test runtime, driven over real TCP.
struct Node {
    agent: Agent,
    rt: TestRuntime,
    epoch: Instant,
}

impl Node {
    fn new(ca: &CertificateDer<'static>, token: &str) -> Node {
        let clock: skiff_node_agent::tls::Clock = Arc::new(FixedClock(now_secs()));
        let name = "tls-node";
        let node = NodeInfo {
            name: name.into(),
            boot_id: [7; 16],
            addresses: Vec::new(),
            capacity: Resources::default(),
            allocatable: Resources::default(),
            kernel_version: "test".into(),
            runtime_version: "skiff-testrt://0".into(),
            os_image: "test".into(),
            architecture: "amd64".into(),
            labels: Vec::new(),
        };
        let cfg = AgentConfig {
            node,
            gateway: gateway_name(),
            ca: vec![ca.clone()],
            token: token.into(),
            software: "gateway_tls test".into(),
        };
        let kubelet = Kubelet::new(skiff_kubelet::Config::new(name, Resources::default()));
        Node {
            agent: Agent::new(cfg, clock, kubelet),
            rt: TestRuntime::new(now_secs() * 1000, None),
            epoch: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Up to `connections` connections until `Running` (a first boot takes
    /// two: bootstrap, then the session) or the first link error.
    fn run(&mut self, addr: SocketAddr, connections: usize) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut buf = vec![0u8; 64 << 10];
        for _ in 0..connections {
            let mut tcp = TcpStream::connect(addr).unwrap();
            tcp.set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            self.agent
                .on_connected(self.now())
                .map_err(|e| e.to_string())?;
            loop {
                assert!(Instant::now() < deadline, "the agent got stuck");
                tcp.write_all(&self.agent.take_outgoing()).unwrap();
                if self.agent.phase() == Phase::Running {
                    return Ok(());
                }
                if self.agent.should_close() {
                    self.agent.on_closed(self.now(), "done");
                    break;
                }
                match tcp.read(&mut buf) {
                    Ok(0) => {
                        self.agent.on_closed(self.now(), "closed by the gateway");
                        return Err("closed by the gateway".into());
                    }
                    Ok(n) => {
                        let now = self.now();
                        let r = self
                            .agent
                            .on_data(now, &buf[..n], &mut self.rt, &mut NoProber);
                        if let Err(e) = r {
                            let _ = tcp.write_all(&self.agent.take_outgoing());
                            let e = e.to_string();
                            self.agent.on_closed(now, &e);
                            return Err(e);
                        }
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        Err(format!("not running: {:?}", self.agent.phase()))
    }
}

#[test]
fn the_node_refuses_a_gateway_certificate_from_another_ca_for_another_name_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let pki_dir = dir.path().join("pki");
    let opts = pki::InitOptions {
        sans: vec![GATEWAY_IP.into()],
        ..pki::InitOptions::default()
    };
    let out = pki::init(&pki_dir, &opts).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let api = rt
        .block_on(skiff_apiserver::start(&ServeConfig::new(
            pki_dir.clone(),
            dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
        )))
        .unwrap();
    let gateway = rt
        .block_on(skiff_gateway::start(
            GatewayConfig::new(pki_dir.clone(), "127.0.0.1:0".parse().unwrap()),
            api.state.clone(),
        ))
        .unwrap();
    let addr = gateway.addr;
    let ca_pem = std::fs::read_to_string(pki_dir.join(pki::CA_CERT)).unwrap();
    let ca = der(&ca_pem);
    let original = pki::Issued {
        cert_pem: std::fs::read_to_string(pki_dir.join(pki::SERVING_CERT)).unwrap(),
        key_pem: std::fs::read_to_string(pki_dir.join(pki::SERVING_KEY)).unwrap(),
    };
    let cluster_ca = pki::Ca::load(&pki_dir).unwrap();
    let token = &out.bootstrap_tokens[0];

    let foreign = pki::Ca::generate(SystemTime::now())
        .unwrap()
        .0
        .serving_cert(&[GATEWAY_IP.into()])
        .unwrap();
    // The cluster CA's, naming loopback and the usual names but not the
    // gateway's address.
    let other_name = cluster_ca.serving_cert(&[]).unwrap();
    // The cluster CA's, for the right name, valid for a year two years ago.
    let two_years = Duration::from_secs(2 * 365 * 24 * 3600);
    let expired = pki::Ca::load(&pki_dir)
        .unwrap()
        .at(SystemTime::now() - two_years)
        .serving_cert(&[GATEWAY_IP.into()])
        .unwrap();

    type Check = fn(&CertificateError) -> bool;
    let cases: [(&str, &pki::Issued, Check); 3] = [
        // `pki` gives every CA the same subject, so webpki tries the
        // cluster CA as the issuer and the signature fails; a CA of
        // another name is an unknown issuer. Either way: refused.
        ("another CA", &foreign, |c| {
            matches!(
                c,
                CertificateError::BadSignature | CertificateError::UnknownIssuer
            )
        }),
        ("another name", &other_name, |c| {
            matches!(
                c,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        }),
        ("expired", &expired, |c| {
            matches!(
                c,
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )
        }),
    ];
    for (what, issued, check) in cases {
        swap_serving_cert(&pki_dir, issued);
        let e = handshake(addr, &ca).expect_err(what);
        let c = e
            .certificate()
            .unwrap_or_else(|| panic!("{what}: not a certificate error: {e:?}"));
        assert!(check(c), "{what}: {c:?}");

        // The agent itself: the link fails before anything is sent in it.
        let e = Node::new(&ca, token).run(addr, 2).expect_err(what);
        assert!(
            e.contains("TLS") && e.contains("certificate"),
            "{what}: {e}"
        );
    }
    // The gateway logs each refusal once it sees the connection end.
    let refused = |j: &[String]| {
        j.iter()
            .filter(|l| l.contains("TLS handshake refused"))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while refused(&gateway.journal()) < 6 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let journal = gateway.journal();
    assert_eq!(refused(&journal), 6, "{journal:#?}");
    assert!(
        !journal.iter().any(|l| l.contains("tls-node")),
        "the gateway heard from the node: {journal:#?}"
    );

    // The real certificate: the same node bootstraps and registers.
    swap_serving_cert(&pki_dir, &original);
    handshake(addr, &ca).expect("the real certificate");
    let mut node = Node::new(&ca, token);
    node.run(addr, 2).expect("the real certificate");
    // Reconnecting with its node certificate (mutual TLS) it refuses a
    // foreign gateway certificate just the same.
    swap_serving_cert(&pki_dir, &foreign);
    node.agent.on_closed(node.now(), "test: reconnect");
    let e = node.run(addr, 1).expect_err("foreign CA, node certificate");
    assert!(e.contains("TLS") && e.contains("certificate"), "{e}");
    drop(gateway);
    drop(api);
}
