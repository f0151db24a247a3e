//! The API server in process (feature `api`): a fresh PKI and data
//! directory, the real server on a free loopback port, the admin kubeconfig
//! pointed at it, and the clients the tests drive it with (the real
//! kubectl, raw HTTPS requests). The API server's own tests use it as is;
//! `skiff-e2e`'s `Plane` adds the node gateway, images and control loops.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use skiff_apiserver::{ServeConfig, pki};

/// More to say when a wait times out (a plane adds its gateway's journal).
type Diagnostics = Box<dyn Fn() -> String + Send + Sync>;

pub struct ApiServer {
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    /// What `pki init` wrote (bootstrap tokens, the admin token).
    pub pki: pki::InitOutput,
    running: Option<skiff_apiserver::Running>,
    diagnostics: Option<Diagnostics>,
    // Dropped last: the server's tasks (and a plane's) live on it.
    pub rt: tokio::runtime::Runtime,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        Self::start_with(|_| {})
    }

    /// `prepare` may add credentials to the PKI directory before the server
    /// loads it.
    pub fn start_with(prepare: impl FnOnce(&Path)) -> ApiServer {
        Self::start_tuned(prepare, |_| {})
    }

    /// [`ApiServer::start_with`], and `tune` adjusts the server's
    /// configuration (limits, store options). Bookmarks come every 300 ms
    /// so that watch tests see them quickly.
    pub fn start_tuned(
        prepare: impl FnOnce(&Path),
        tune: impl FnOnce(&mut ServeConfig),
    ) -> ApiServer {
        Self::start_full(&pki::InitOptions::default(), prepare, |cfg| {
            cfg.bookmark_interval = Duration::from_millis(300);
            tune(cfg);
        })
    }

    /// The general form: the PKI is made with `init` (e.g. extra SANs),
    /// then `prepare`d; `tune` adjusts the server's configuration.
    pub fn start_full(
        init: &pki::InitOptions,
        prepare: impl FnOnce(&Path),
        tune: impl FnOnce(&mut ServeConfig),
    ) -> ApiServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki_dir = dir.path().join("pki");
        let out = pki::init(&pki_dir, init).expect("pki init");
        prepare(&pki_dir);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let mut cfg = ServeConfig::new(
            pki_dir.clone(),
            dir.path().join("data"),
            "127.0.0.1:0".parse().unwrap(),
        );
        tune(&mut cfg);
        let running = rt
            .block_on(skiff_apiserver::start(&cfg))
            .expect("server starts");
        let url = format!("https://{}", running.addr);
        // pki init writes the default port; the server took a free one.
        let kubeconfig = pki_dir.join(pki::ADMIN_KUBECONFIG);
        let text = std::fs::read_to_string(&kubeconfig).unwrap();
        std::fs::write(&kubeconfig, text.replace("https://127.0.0.1:6443", &url)).unwrap();
        ApiServer {
            dir,
            url,
            kubeconfig,
            pki: out,
            running: Some(running),
            diagnostics: None,
            rt,
        }
    }

    /// Adds `f`'s text to every timed-out wait's failure message.
    pub fn set_diagnostics(&mut self, f: impl Fn() -> String + Send + Sync + 'static) {
        self.diagnostics = Some(Box::new(f));
    }

    fn running(&self) -> &skiff_apiserver::Running {
        self.running.as_ref().expect("server running")
    }

    /// The server's shared state (to start in-process peers against it).
    pub fn state(&self) -> Arc<skiff_apiserver::State> {
        self.running().state.clone()
    }

    /// Runs `f` against the server's state on its runtime.
    pub fn with_state<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(Arc<skiff_apiserver::State>) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.rt.block_on(f(self.state()))
    }

    /// Compacts the store's history up to its current revision.
    pub fn compact(&self) -> u64 {
        self.with_state(|state| async move {
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
        self.request_with_headers(
            method,
            path,
            &[("content-type", content_type), ("accept", accept)],
            body,
        )
    }

    /// Any method with these headers (and `Host: 127.0.0.1`) over HTTPS as
    /// the admin; returns the status code, the response's content type and
    /// body.
    pub fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (u16, String, Vec<u8>) {
        use http_body_util::{BodyExt as _, Full};

        let tls = tls_client(&self.pki_dir(), "kubernetes-admin", &["system:masters"]);
        let addr = self.addr();
        let (method, path) = (method.to_string(), path.to_string());
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.rt.block_on(async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("server name");
            let tls = tls.connect(name, tcp).await.expect("TLS handshake");
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .expect("HTTP handshake");
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let mut req = hyper::Request::builder()
                .method(method.as_str())
                .uri(path)
                .header("host", "127.0.0.1");
            for (k, v) in &headers {
                req = req.header(k, v);
            }
            let req = req
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
        self.running().addr
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
    /// scratch directory.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.path(name);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&p, contents).unwrap();
        p
    }

    /// The cluster CA certificate (PEM).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.pki_dir().join(pki::CA_CERT)).expect("CA certificate")
    }

    /// A kubeconfig for a client certificate with this user and groups.
    pub fn cert_kubeconfig(&self, user: &str, groups: &[&str]) -> PathBuf {
        let ca = pki::Ca::load(&self.pki_dir()).unwrap();
        let cert = ca.client_cert(user, groups).unwrap();
        self.issued_kubeconfig(user, &cert)
    }

    /// A kubeconfig presenting `cert` (whatever issued it) to this
    /// server, which it trusts through the cluster CA.
    pub fn issued_kubeconfig(&self, user: &str, cert: &pki::Issued) -> PathBuf {
        let text = pki::kubeconfig(&self.url, &self.ca_pem(), user, cert);
        self.write(&format!("{}.kubeconfig", user.replace(':', "_")), &text)
    }

    pub fn token_kubeconfig(&self, name: &str, token: &str) -> PathBuf {
        let text = pki::token_kubeconfig(&self.url, &self.ca_pem(), name, token);
        self.write(&format!("{name}.kubeconfig"), &text)
    }

    /// A kubectl command as `kubeconfig`'s user, with this scratch
    /// directory as its home (its cache) and no editor.
    pub fn kubectl_command(&self, bin: &Path, kubeconfig: &Path) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env("KUBECONFIG", kubeconfig)
            .env("HOME", self.dir.path())
            .env_remove("KUBE_EDITOR")
            .stdin(Stdio::null());
        cmd
    }

    pub fn kubectl_as(&self, kubeconfig: &Path, args: &[&str]) -> Output {
        self.kubectl_bin_as(&crate::peers::kubectl(), kubeconfig, args)
    }

    /// [`ApiServer::kubectl_as`] with a given kubectl binary (1.33 or 1.35).
    pub fn kubectl_bin_as(&self, bin: &Path, kubeconfig: &Path, args: &[&str]) -> Output {
        self.kubectl_command(bin, kubeconfig)
            .args(args)
            .output()
            .expect("run kubectl")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_as(&self.kubeconfig, args)
    }

    /// `kubectl <what> -o jsonpath=<path>` as admin; stdout, empty when
    /// the command failed (for polling).
    pub fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let out = self.kubectl(&[what, &["-o", &format!("jsonpath={path}")]].concat());
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl as admin, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeds(self.kubectl(args), args)
    }

    /// Runs kubectl as admin, asserting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        fails(self.kubectl(args), args)
    }

    /// Runs the Python client script `script` as admin (`KUBECONFIG`, and
    /// `SKIFF_URL` and `SKIFF_CA` for raw requests), asserting it exits 0
    /// and prints `passed`; returns its stdout.
    #[track_caller]
    pub fn run_python(&self, script: &str, passed: &str) -> String {
        self.run_python_with(script, &[], passed)
    }

    /// [`ApiServer::run_python`] with more variables in the script's
    /// environment.
    #[track_caller]
    pub fn run_python_with(&self, script: &str, env: &[(&str, &str)], passed: &str) -> String {
        let out = Command::new(crate::peers::python())
            .arg(script)
            .envs(env.iter().copied())
            // The tests' own Python modules (`skiff_browser`).
            .env(
                "PYTHONPATH",
                crate::workspace_root().join("tests/support/py"),
            )
            .env("KUBECONFIG", &self.kubeconfig)
            .env("SKIFF_URL", &self.url)
            .env("SKIFF_CA", self.pki_dir().join(pki::CA_CERT))
            .stdin(Stdio::null())
            .output()
            .expect("run python");
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && so.contains(passed),
            "python {script} failed:\nstdout: {so}\nstderr: {se}"
        );
        so.into_owned()
    }

    /// The API server's `/metrics` as admin, parsed ([`crate::Scrape`]).
    #[track_caller]
    pub fn scrape(&self) -> crate::Scrape {
        crate::Scrape::parse(&self.ok(&["get", "--raw", "/metrics"]))
    }

    /// `kubectl apply -f` of `yaml` (written to a fresh file).
    pub fn apply(&self, yaml: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let path = self.write(&format!("apply-{nanos}.yaml"), yaml);
        self.ok(&["apply", "-f", path.to_str().unwrap()])
    }

    /// [`crate::eventually`], the failure message also carrying the
    /// diagnostics ([`ApiServer::set_diagnostics`]).
    #[track_caller]
    pub fn eventually(
        &self,
        what: &str,
        secs: u64,
        context: impl Fn() -> String,
        f: impl FnMut() -> bool,
    ) {
        let more = || self.diagnostics.as_ref().map(|d| d()).unwrap_or_default();
        crate::eventually(what, secs, || format!("{}\n{}", context(), more()), f);
    }

    /// Waits until `kubectl args` prints `needle` (stdout or stderr);
    /// returns that output.
    #[track_caller]
    pub fn wait_output(
        &self,
        args: &[&str],
        needle: &str,
        secs: u64,
        context: impl Fn() -> String,
    ) -> String {
        let last = std::cell::RefCell::new(String::new());
        self.eventually(
            &format!("{needle:?} in kubectl {args:?}"),
            secs,
            || format!("last output:\n{}\n{}", last.borrow(), context()),
            || {
                let out = self.kubectl(args);
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                let found = text.contains(needle);
                *last.borrow_mut() = text;
                found
            },
        );
        last.into_inner()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.abort();
        }
    }
}

/// A TLS client trusting the CA in `pki_dir` and presenting a fresh
/// certificate for `cn` in `groups`.
pub fn tls_client(pki_dir: &Path, cn: &str, groups: &[&str]) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let ca = pki::Ca::load(pki_dir).expect("load CA");
    let cert = ca.client_cert(cn, groups).expect("client certificate");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.cert_pem.as_bytes()) {
        roots.add(c.expect("CA PEM")).expect("CA certificate");
    }
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .expect("client certificate PEM");
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).expect("client key PEM");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .expect("client auth");
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// Asserts kubectl failed; returns its stderr.
#[track_caller]
pub fn fails(out: Output, args: &[&str]) -> String {
    let so = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "kubectl {args:?} unexpectedly succeeded:\n{so}"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Asserts kubectl succeeded; returns its stdout.
#[track_caller]
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
