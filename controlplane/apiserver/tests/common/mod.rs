//! Test harness: a control plane in-process on a free loopback port with a
//! temporary PKI and data directory, and the real kubectl / Python client.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_apiserver::{ServeConfig, pki};

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    running: Option<skiff_apiserver::Running>,
    // Dropped last: the server's tasks live on it.
    rt: tokio::runtime::Runtime,
}

#[allow(unused_imports)] // not every test binary runs kubectl
pub use skiff_test_support::peers::kubectl as kubectl_path;

#[allow(unused_imports)] // not every test binary runs kubectl 1.35
pub use skiff_test_support::peers::kubectl_latest as kubectl_latest_path;

#[allow(unused_imports)] // not every test binary runs Python
pub use skiff_test_support::peers::python as python_path;

impl Cluster {
    pub fn start() -> Cluster {
        Self::start_with(|_| {})
    }

    /// `prepare` may add credentials to the PKI directory before the server
    /// loads it.
    pub fn start_with(prepare: impl FnOnce(&Path)) -> Cluster {
        Self::start_tuned(prepare, |_| {})
    }

    /// [`Cluster::start_with`], and `tune` adjusts the server's
    /// configuration (limits, store options).
    pub fn start_tuned(
        prepare: impl FnOnce(&Path),
        tune: impl FnOnce(&mut ServeConfig),
    ) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        pki::init(&pki_dir, &pki::InitOptions::default()).expect("pki init");
        prepare(&pki_dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut cfg = ServeConfig::new(
            pki_dir.clone(),
            dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
        );
        cfg.bookmark_interval = Duration::from_millis(300);
        tune(&mut cfg);
        let running = rt
            .block_on(skiff_apiserver::start(&cfg))
            .expect("server starts");
        let url = format!("https://{}", running.addr);
        let kubeconfig = pki_dir.join(pki::ADMIN_KUBECONFIG);
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        std::fs::write(&kubeconfig, text.replace("https://127.0.0.1:6443", &url)).unwrap();
        Cluster {
            dir,
            url,
            kubeconfig,
            running: Some(running),
            rt,
        }
    }

    /// Runs `f` against the server's state on its runtime.
    pub fn with_state<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(std::sync::Arc<skiff_apiserver::State>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        let state = self.running.as_ref().unwrap().state.clone();
        self.rt.block_on(f(state))
    }

    /// Compacts the store's history up to its current revision.
    pub fn compact(&self) -> u64 {
        let state = self.running.as_ref().unwrap().state.clone();
        self.rt.block_on(async move {
            let rev = state.store.current_revision();
            state.store.compact(rev).await.unwrap();
            rev
        })
    }

    /// POSTs `body` with this content type over HTTPS as the admin
    /// (what a typed client sends); returns the status code and body.
    pub fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        self.request_raw("POST", path, content_type, body)
    }

    /// Any method with `body` over HTTPS as the admin; returns the status
    /// code and body.
    pub fn request_raw(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> (u16, Vec<u8>) {
        let (code, _, body) = self.request(method, path, content_type, "application/json", body);
        (code, body)
    }

    /// Any method with `body` and an `Accept` header over HTTPS as the
    /// admin; returns the status code, the response's content type and body.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        accept: &str,
        body: Vec<u8>,
    ) -> (u16, String, Vec<u8>) {
        use http_body_util::{BodyExt as _, Full};
        use rustls::pki_types::pem::PemObject as _;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

        let ca = pki::Ca::load(&self.pki_dir()).expect("load CA");
        let admin = ca
            .client_cert("kubernetes-admin", &["system:masters"])
            .expect("admin certificate");
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
            roots.add(c.expect("CA PEM")).expect("CA certificate");
        }
        let chain = CertificateDer::pem_slice_iter(admin.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .expect("client certificate PEM");
        let key = PrivateKeyDer::from_pem_slice(admin.key_pem.as_bytes()).expect("client key");
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client auth");
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
        let addr = self.running.as_ref().unwrap().addr;
        let (method, path, ct, accept) = (
            method.to_string(),
            path.to_string(),
            content_type.to_string(),
            accept.to_string(),
        );
        self.rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = ServerName::try_from("127.0.0.1").expect("server name");
            let tls = tls.connect(name, tcp).await.expect("TLS handshake");
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .expect("HTTP handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let req = hyper::Request::builder()
                .method(method.as_str())
                .uri(path)
                .header("host", "127.0.0.1")
                .header("accept", accept)
                .header("content-type", ct)
                .body(Full::new(bytes::Bytes::from(body)))
                .expect("request");
            let resp = send.send_request(req).await.expect("response");
            let status = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            (status, ct, body.to_vec())
        })
    }

    /// The server's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.running.as_ref().unwrap().addr
    }

    /// Runs `f` on the server's runtime.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    pub fn pki_dir(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `name` (a relative path; directories are created) in the
    /// cluster's scratch directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// A kubeconfig for a client certificate with this user and groups.
    pub fn cert_kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let ca = pki::Ca::load(&self.pki_dir()).unwrap();
        let cert = ca.client_cert(user, groups).unwrap();
        self.issued_kubeconfig(user, &cert)
    }

    /// A kubeconfig presenting `cert` (whatever issued it) to this
    /// cluster, which it trusts through the cluster CA.
    pub fn issued_kubeconfig(&self, user: &str, cert: &pki::Issued) -> PathBuf {
        let ca = pki::Ca::load(&self.pki_dir()).unwrap();
        let text = pki::kubeconfig(&self.url, &ca.cert_pem, user, cert);
        self.write(&format!("{}.kubeconfig", user.replace(':', "_")), &text)
    }

    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let ca = pki::Ca::load(&self.pki_dir()).unwrap();
        let text = pki::token_kubeconfig(&self.url, &ca.cert_pem, name, token);
        self.write(&format!("{name}.kubeconfig"), &text)
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        self.kubectl_bin_as(&kubectl_path(), kubeconfig, args)
    }

    /// [`Cluster::kubectl_as`] with a given kubectl binary (1.33 or 1.35).
    pub fn kubectl_bin_as(&self, bin: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
        Command::new(bin)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .env_remove("KUBE_EDITOR")
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.kubeconfig, args)
    }

    /// Runs kubectl as admin, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\nstdout: {so}\nstderr: {se}"
        );
        so.into_owned()
    }

    /// Runs kubectl as admin, asserting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        fails(self.kubectl(args), args)
    }

    pub fn eventually(&self, what: &str, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.abort();
            drop(r);
        }
    }
}

pub fn fails(out: Output, args: &[&str]) -> String {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        !out.status.success(),
        "kubectl {args:?} unexpectedly succeeded:\n{so}"
    );
    se.into_owned()
}

pub fn succeeds(out: Output, args: &[&str]) -> String {
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {so}\nstderr: {se}"
    );
    so.into_owned()
}

/// Asserts every needle occurs in the haystack.
#[track_caller]
pub fn contains_all(hay: &str, needles: &[&str]) {
    for n in needles {
        assert!(hay.contains(n), "expected {n:?} in:\n{hay}");
    }
}
