//! The HTTPS listener: rustls with optional client certificates verified
//! against the cluster CA, one hyper HTTP/1.1 connection per TLS stream, and
//! per-request authentication before anything else runs.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use crate::authn::{self, Authenticator, Identity};
use crate::limits::{self, Gate, Kind, Limits};
use crate::status::ApiError;
use crate::{handlers, pki};

/// Everything a request handler needs.
pub struct State {
    pub store: skiff_store::Store,
    pub authn: Authenticator,
    /// How often watches that allow bookmarks get one.
    pub bookmark_interval: std::time::Duration,
    /// The store lease new events are attached to, and when it was granted.
    pub event_lease: tokio::sync::Mutex<Option<(skiff_store::LeaseId, std::time::Instant)>>,
    /// The resources CustomResourceDefinitions define.
    pub(crate) crds: crate::crd::Crds,
    /// The RBAC objects, kept current by a store watch.
    pub rbac: Arc<crate::rbac_cache::RbacCache>,
    /// Serves `pods/log`; the node gateway registers itself here.
    pub log_provider: Registered<dyn crate::pod_logs::LogProvider>,
    /// Reaches pods for port-forward and proxy; the node gateway registers
    /// itself here.
    pub pod_connector: Registered<dyn crate::connect::PodConnector>,
    /// Serves metrics.k8s.io; the node gateway registers itself here.
    pub usage_source: Registered<dyn crate::UsageSource>,
    /// The Prometheus series `/metrics` serves; components add collectors.
    pub metrics: crate::prometheus::Metrics,
    /// Connections, requests in flight, watches and objects per namespace.
    pub gate: Gate,
    /// The PKI directory (the join token and the CA live there).
    pub(crate) pki_dir: PathBuf,
}

/// A part another component registers once it starts (the node gateway's
/// log provider, pod connector and usage source): requests that need it
/// before then, or without one, get 503.
pub struct Registered<T: ?Sized>(std::sync::RwLock<Option<Arc<T>>>);

impl<T: ?Sized> Default for Registered<T> {
    fn default() -> Self {
        Registered(std::sync::RwLock::new(None))
    }
}

impl<T: ?Sized> std::fmt::Debug for Registered<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Registered")
            .field(&self.get().is_some())
            .finish()
    }
}

impl<T: ?Sized> Registered<T> {
    pub fn set(&self, part: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Some(part);
    }

    pub fn get(&self) -> Option<Arc<T>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The part, or 503 with `missing` as the message.
    pub fn require(&self, missing: &str) -> crate::status::ApiResult<Arc<T>> {
        self.get()
            .ok_or_else(|| ApiError::new(503, "ServiceUnavailable", missing))
    }
}

/// Events live this long (kube's --event-ttl default).
pub const EVENT_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// Events created within this window share one lease, so the store holds a
/// lease per minute rather than per event.
const EVENT_LEASE_REUSE: std::time::Duration = std::time::Duration::from_secs(60);

impl State {
    /// Routes `pods/log` to `p` (the node gateway calls this when it starts).
    pub fn set_log_provider(&self, p: Arc<dyn crate::pod_logs::LogProvider>) {
        self.log_provider.set(p);
    }

    /// Serves metrics.k8s.io from `s` (the node gateway calls this when it
    /// starts).
    pub fn set_usage_source(&self, s: Arc<dyn crate::UsageSource>) {
        self.usage_source.set(s);
    }

    /// A lease that expires at least [`EVENT_TTL`] from now.
    pub async fn event_lease(&self) -> Result<skiff_store::LeaseId, skiff_store::Error> {
        let mut cur = self.event_lease.lock().await;
        if let Some((id, at)) = *cur
            && at.elapsed() < EVENT_LEASE_REUSE
        {
            return Ok(id);
        }
        let ttl = (EVENT_TTL + EVENT_LEASE_REUSE).as_secs();
        let id = self.store.lease_grant(0, ttl).await?;
        *cur = Some((id, std::time::Instant::now()));
        Ok(id)
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

/// Where `serve` reads its PKI and keeps its data.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub pki_dir: PathBuf,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// How often watches that allow bookmarks get one (kube: about a minute).
    pub bookmark_interval: std::time::Duration,
    /// How often the plane's certificates are checked for coming expiry.
    pub cert_check_interval: std::time::Duration,
    /// What one client may hold of the server.
    pub limits: Limits,
    /// The embedded store's tuning, its quota among it.
    pub store: skiff_store::Options,
}

impl ServeConfig {
    pub fn new(pki_dir: PathBuf, data_dir: PathBuf, listen: SocketAddr) -> ServeConfig {
        ServeConfig {
            pki_dir,
            data_dir,
            listen,
            bookmark_interval: std::time::Duration::from_secs(60),
            cert_check_interval: std::time::Duration::from_secs(12 * 3600),
            limits: Limits::default(),
            store: skiff_store::Options::default(),
        }
    }
}

/// Why the API server, or the TLS identity it shares with the gateway,
/// could not start: one variant per thing an operator fixes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A PKI file is missing, unreadable or malformed, or a certificate
    /// does not match its key.
    #[error("{}: {source}", path.display())]
    Pki {
        path: PathBuf,
        #[source]
        source: BoxError,
    },
    /// rustls refused a configuration built from valid files.
    #[error("TLS configuration: {0}")]
    Tls(#[source] BoxError),
    /// The data directory cannot be created.
    #[error("{}: {source}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store: {0}")]
    Store(#[from] skiff_store::Error),
    /// Writing the default objects (namespaces, RBAC, priority classes) failed.
    #[error("bootstrapping default objects: {}", .0.message)]
    Bootstrap(ApiError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub(crate) fn pki_err(path: &Path, source: impl Into<BoxError>) -> StartError {
    StartError::Pki {
        path: path.to_owned(),
        source: source.into(),
    }
}

/// The API server's TLS configuration (HTTP/1.1, default TLS versions).
pub fn tls_config(pki_dir: &Path) -> Result<rustls::ServerConfig, StartError> {
    let mut cfg = tls_server_config(pki_dir, rustls::DEFAULT_VERSIONS)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// The cluster's TLS server identity, shared by the API server and the node
/// gateway: the serving certificate, and client certificates verified
/// against the cluster CA but optional at the TLS layer (token clients and
/// bootstrapping nodes have none; each listener refuses them per request).
pub fn tls_server_config(
    pki_dir: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig, StartError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_path = pki_dir.join(pki::CA_CERT);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca_path).map_err(|e| pki_err(&ca_path, e))? {
        roots
            .add(c.map_err(|e| pki_err(&ca_path, e))?)
            .map_err(|e| pki_err(&ca_path, e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| StartError::Tls(e.into()))?;
    let serving = ServingCert::load(pki_dir, provider.clone())?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| StartError::Tls(e.into()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(serving)))
}

/// The serving certificate, re-read when its file is replaced so that
/// `pki renew` takes effect at the next handshake without a restart;
/// connections already open (nodes included) keep theirs. A replacement
/// that fails to load is logged and the previous certificate stays.
#[derive(Debug)]
struct ServingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<rustls::crypto::CryptoProvider>,
    current: std::sync::RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<rustls::sign::CertifiedKey>,
    /// (inode, mtime) of the certificate file it came from: renewal renames
    /// a new file into place.
    file: Option<(u64, std::time::SystemTime)>,
    checked: std::time::Instant,
}

/// How often a handshake may look at the certificate file.
const CERT_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

impl ServingCert {
    fn load(
        pki_dir: &Path,
        provider: Arc<rustls::crypto::CryptoProvider>,
    ) -> Result<ServingCert, StartError> {
        let cert_path = pki_dir.join(pki::SERVING_CERT);
        let key_path = pki_dir.join(pki::SERVING_KEY);
        let file = file_id(&cert_path);
        let key = certified_key(&cert_path, &key_path, &provider)?;
        Ok(ServingCert {
            cert_path,
            key_path,
            provider,
            current: std::sync::RwLock::new(Loaded {
                key,
                file,
                checked: std::time::Instant::now(),
            }),
        })
    }

    fn current(&self) -> Arc<rustls::sign::CertifiedKey> {
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if cur.checked.elapsed() < CERT_RECHECK {
                return cur.key.clone();
            }
        }
        let mut cur = self.current.write().unwrap_or_else(|e| e.into_inner());
        cur.checked = std::time::Instant::now();
        let file = file_id(&self.cert_path);
        if file != cur.file {
            match certified_key(&self.cert_path, &self.key_path, &self.provider) {
                Ok(key) => {
                    tracing::info!(path = %self.cert_path.display(), "serving certificate reloaded");
                    cur.key = key;
                    cur.file = file;
                }
                Err(e) => {
                    tracing::error!(error = %e, "keeping the previous serving certificate");
                    cur.file = file;
                }
            }
        }
        cur.key.clone()
    }
}

impl rustls::server::ResolvesServerCert for ServingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.current())
    }
}

fn file_id(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.modified().ok()?))
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    provider: &rustls::crypto::CryptoProvider,
) -> Result<Arc<rustls::sign::CertifiedKey>, StartError> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| pki_err(cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pki_err(cert_path, e))?;
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| pki_err(key_path, e))?;
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| pki_err(key_path, e))?;
    let ck = rustls::sign::CertifiedKey::new(certs, signing);
    // A key that does not match the certificate is the certificate's fault
    // as far as the operator is concerned: renew it.
    ck.keys_match().map_err(|e| pki_err(cert_path, e))?;
    Ok(Arc::new(ck))
}

/// A running server (tests start one in-process).
#[derive(Debug)]
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
    rbac_task: tokio::task::JoinHandle<()>,
    cert_task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn abort(&self) {
        self.task.abort();
        self.rbac_task.abort();
        self.cert_task.abort();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.abort();
    }
}

/// Opens the store, binds and serves in the background.
pub async fn start(cfg: &ServeConfig) -> Result<Running, StartError> {
    std::fs::create_dir_all(&cfg.data_dir).map_err(|source| StartError::DataDir {
        path: cfg.data_dir.clone(),
        source,
    })?;
    let db = cfg.data_dir.join("store.redb");
    let store = skiff_store::Store::open(&db, cfg.store.clone()).await?;
    start_with_store(cfg, store).await
}

/// Serves over a store the caller opened (a replicated one: then peers
/// are served before the default objects are written, since those writes
/// need the cluster, which may need this member).
pub async fn start_with_store(
    cfg: &ServeConfig,
    store: skiff_store::Store,
) -> Result<Running, StartError> {
    let tls = tls_config(&cfg.pki_dir)?;
    let authn = Authenticator::load(&cfg.pki_dir)?;
    let replicated = store.cluster().is_some();
    let state = Arc::new(State {
        store,
        authn,
        bookmark_interval: cfg.bookmark_interval,
        event_lease: tokio::sync::Mutex::new(None),
        crds: crate::crd::Crds::default(),
        rbac: Arc::default(),
        log_provider: Registered::default(),
        pod_connector: Registered::default(),
        usage_source: Registered::default(),
        metrics: crate::prometheus::Metrics::default(),
        gate: Gate::new(cfg.limits.clone()),
        pki_dir: cfg.pki_dir.clone(),
    });
    state
        .metrics
        .register_collector(Box::new(crate::prometheus::StoreCollector {
            store: state.store.clone(),
            db_file: state.store.path().to_path_buf(),
        }));
    let listen = |source| StartError::Listen {
        addr: cfg.listen,
        source,
    };
    let mut listener = None;
    if replicated {
        listener = Some(TcpListener::bind(cfg.listen).await.map_err(listen)?);
    }
    let early = listener.take().map(|l| {
        let addr = l.local_addr();
        (
            tokio::spawn(accept_loop(l, Arc::new(tls.clone()), state.clone())),
            addr,
        )
    });
    // A member that is still joining has no cluster to write to yet.
    let joining = std::time::Instant::now() + std::time::Duration::from_secs(300);
    loop {
        match crate::storage::bootstrap(&state.store).await {
            Ok(()) => break,
            Err(e) if replicated && e.code == 503 && std::time::Instant::now() < joining => {
                tracing::info!(reason = %e.message, "waiting for the cluster to write the default objects");
            }
            Err(e) => return Err(StartError::Bootstrap(e)),
        }
    }
    state
        .crds
        .reload(&state.store)
        .await
        .map_err(StartError::Bootstrap)?;
    let (task, addr) = match early {
        Some((task, addr)) => (task, addr.map_err(listen)?),
        None => {
            let l = TcpListener::bind(cfg.listen).await.map_err(listen)?;
            let addr = l.local_addr().map_err(listen)?;
            (
                tokio::spawn(accept_loop(l, Arc::new(tls), state.clone())),
                addr,
            )
        }
    };
    let rbac_task = crate::rbac_cache::spawn(state.rbac.clone(), state.store.clone());
    let cert_task = tokio::spawn(watch_certificates(
        state.clone(),
        cfg.pki_dir.clone(),
        cfg.cert_check_interval,
    ));
    Ok(Running {
        addr,
        state,
        task,
        rbac_task,
        cert_task,
    })
}

/// Every `every`, warns about each of the plane's certificates that expires
/// within [`pki::EXPIRY_WARNING`]: in the log and as a Warning Event in
/// `kube-system` (reason `CertificateExpiring`), which `kubectl get events`
/// shows.
async fn watch_certificates(state: Arc<State>, pki_dir: PathBuf, every: std::time::Duration) {
    loop {
        let now = std::time::SystemTime::now();
        match pki::expiring_soon(&pki_dir, now) {
            Ok(list) => {
                for e in list {
                    let days = e.residual(now).as_secs() / 86_400;
                    let message = format!(
                        "certificate {} ({}) expires in {days} days; renew it with \
                         `skiff-controlplane pki renew {} --dir {}`",
                        e.name,
                        e.path.display(),
                        e.name,
                        pki_dir.display()
                    );
                    tracing::warn!(certificate = e.name, days_left = days, "{message}");
                    if let Err(err) = certificate_event(&state, e.name, &message).await {
                        tracing::error!(error = %err.message, "recording the certificate warning");
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "checking certificate expiry"),
        }
        tokio::time::sleep(every).await;
    }
}

async fn certificate_event(state: &State, name: &str, message: &str) -> Result<(), ApiError> {
    let events = crate::registry::find("", "v1", "events").expect("events registered");
    let now = crate::storage::now_rfc3339();
    let event = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": format!("certificate-expiring.{}.{}", name.replace('.', "-"), crate::storage::unix_now()),
            "namespace": "kube-system",
        },
        "involvedObject": {"apiVersion": "v1", "kind": "Namespace", "name": "kube-system"},
        "reason": "CertificateExpiring",
        "message": message,
        "type": "Warning",
        "source": {"component": "skiff-controlplane"},
        "reportingComponent": "skiff-controlplane",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let lease = state.event_lease().await?;
    crate::storage::create_with_lease(state, events, "kube-system", event, false, lease)
        .await
        .map(|_| ())
}

async fn accept_loop(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: Arc<State>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Closed at once when too many handshakes are under way: they are
        // the only connections whose owner is not known yet.
        let Some(handshake) = state.gate.handshake() else {
            tracing::debug!(%addr, "too many TLS handshakes in progress: closed");
            continue;
        };
        // Responses are written whole; don't let Nagle hold back a last
        // small TLS record until the client's delayed ACK.
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(state.clone(), acceptor.clone(), tcp, handshake));
    }
}

/// One connection: a TLS handshake within the handshake timeout, a
/// connection slot (the reserved share for the plane's own certificates),
/// then HTTP/1.1 with the header read timeout (which also closes idle
/// keep-alive connections; the plane's own are left open) and, under all
/// of it, a write timeout for clients that stop reading.
async fn connection(
    state: Arc<State>,
    acceptor: tokio_rustls::TlsAcceptor,
    tcp: tokio::net::TcpStream,
    handshake: tokio::sync::OwnedSemaphorePermit,
) {
    let limits = &state.gate.limits;
    let mut io = tokio_io_timeout::TimeoutStream::new(tcp);
    io.set_write_timeout(Some(limits.write_timeout));
    let Ok(Ok(stream)) =
        tokio::time::timeout(limits.handshake_timeout, acceptor.accept(Box::pin(io))).await
    else {
        return;
    };
    drop(handshake);
    let peer: Option<Identity> = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| authn::identity_from_cert(c));
    let Some(_slot) = state.gate.connection(peer.as_ref()) else {
        tracing::debug!("connection limit reached: closed");
        return;
    };
    let header_timeout =
        (!peer.as_ref().is_some_and(limits::privileged)).then_some(limits.header_read_timeout);
    let peer = Arc::new(peer);
    let svc_state = state.clone();
    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
        let state = svc_state.clone();
        let peer = peer.clone();
        async move { Ok::<_, Infallible>(route(state, &peer, req).await) }
    });
    let io = hyper_util::rt::TokioIo::new(stream);
    let _ = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, svc)
        // Port-forward takes the connection over (SPDY).
        .with_upgrades()
        .await;
}

/// Serves the dashboard's static files, then authenticates, admits past
/// the limits and dispatches. Health and version are open to any
/// authenticated caller, as kube's default RBAC allows them.
async fn route(
    state: Arc<State>,
    peer: &Option<Identity>,
    req: Request<Incoming>,
) -> Response<Body> {
    use axum::response::IntoResponse as _;
    // The dashboard's files hold no data: anyone may load the sign-in page.
    if let Some(page) = skiff_dashboard::serve(req.method(), req.uri().path()) {
        return page.map(Body::from);
    }
    if let Some(origin) = cross_site(&req) {
        return ApiError::new(
            403,
            "Forbidden",
            format!("a browser request from another site ({origin}) is refused"),
        )
        .into_response();
    }
    let req = match crate::cluster::handle(&state, peer, req).await {
        Ok(resp) => return resp,
        Err(req) => req,
    };
    let identity = match authenticate(&state, peer, &req) {
        Some(id) if service_account_exists(&state, &id).await => {
            authn::with_authenticated_group(id)
        }
        _ => {
            return ApiError::unauthorized().into_response();
        }
    };
    let kind = Kind::of(
        req.method(),
        req.uri().path(),
        &crate::http::Query::parse(req.uri().query()),
    );
    let ticket = match state.gate.admit(&identity, kind) {
        Ok(t) => t,
        Err(e) => {
            let mut resp = e.into_response();
            resp.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
            return resp;
        }
    };
    let resp = match kind {
        Kind::LongRunning { .. } => handlers::handle(state, identity, req.map(Body::new)).await,
        _ => {
            let timeout = state.gate.limits.request_timeout;
            match tokio::time::timeout(
                timeout,
                handlers::handle(state, identity, req.map(Body::new)),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => ApiError::timeout(format!(
                    "Timeout: request did not complete within the allotted timeout of {}s",
                    timeout.as_secs()
                ))
                .into_response(),
            }
        }
    };
    limits::hold(resp, ticket)
}

/// The other site a browser says sent this request, if one did. A browser
/// attaches its client certificate to any request to this server, whichever
/// page made it, so requests other sites' pages make are refused before
/// authentication (CSRF; cross-site WebSocket upgrades too). Browsers mark
/// every request with `Sec-Fetch-Site` and writes with `Origin`; kubectl
/// and other clients send neither.
fn cross_site(req: &Request<Incoming>) -> Option<String> {
    let h = req.headers();
    let shown = |v: &axum::http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
    if let Some(site) = h.get("sec-fetch-site")
        // `none`: the user typed the address or opened a bookmark.
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Some(
            h.get(axum::http::header::ORIGIN)
                .map_or_else(|| shown(site), shown),
        );
    }
    let origin = h.get(axum::http::header::ORIGIN)?;
    let host = h.get(axum::http::header::HOST).map(|v| v.as_bytes());
    let origin_host = origin.as_bytes().strip_prefix(b"https://");
    (origin_host.is_none() || origin_host != host).then(|| shown(origin))
}

/// A service account token is only good while its account exists with the
/// uid the token names, and so does the object it is bound to (kube's
/// bound-token checks: a pod deleted more than a minute ago no longer
/// vouches for its token).
async fn service_account_exists(state: &State, id: &Identity) -> bool {
    let Some(sa) = &id.service_account else {
        return true;
    };
    let live = |kind: &str, name: &str, uid: &str| {
        let plural = if kind == "Pod" {
            "pods"
        } else if kind == "Secret" {
            "secrets"
        } else {
            "serviceaccounts"
        };
        let r = crate::registry::find("", "v1", plural).expect("registered");
        let (ns, name, uid) = (sa.namespace.clone(), name.to_string(), uid.to_string());
        async move {
            match crate::storage::get(&state.store, r, &ns, &name).await {
                Ok(o) => {
                    let deleted_long_ago = crate::storage::meta_str(&o, "deletionTimestamp")
                        .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
                        .is_some_and(|t| t.as_second() + 60 < crate::storage::unix_now());
                    crate::storage::meta_str(&o, "uid") == Some(uid.as_str()) && !deleted_long_ago
                }
                Err(_) => false,
            }
        }
    };
    if !live("ServiceAccount", &sa.name, &id.uid).await {
        return false;
    }
    match &sa.bound {
        Some(b) => live(&b.kind, &b.name, &b.uid).await,
        None => true,
    }
}

fn authenticate(
    state: &State,
    peer: &Option<Identity>,
    req: &Request<Incoming>,
) -> Option<Identity> {
    // kube's union authenticator tries x509 before tokens; the first that
    // succeeds decides.
    if peer.is_some() {
        return peer.clone();
    }
    let auth = req.headers().get("authorization")?;
    let token = auth.to_str().ok()?.strip_prefix("Bearer ")?.trim();
    state.authn.authenticate_token(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, listen: SocketAddr) -> ServeConfig {
        ServeConfig::new(dir.join("pki"), dir.join("data"), listen)
    }

    /// Asserts `err` is a PKI error naming the file `file`.
    fn assert_pki_error(err: StartError, file: &str) {
        match err {
            StartError::Pki { path, .. } => assert!(path.ends_with(file), "{path:?}"),
            e => panic!("want Pki for {file}, got {e:?}"),
        }
    }

    fn started(cfg: &ServeConfig) -> Result<Running, StartError> {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let r = rt.block_on(start(cfg));
        if let Ok(r) = &r {
            r.abort();
        }
        r
    }

    #[test]
    fn missing_pki_names_the_ca_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = started(&config(dir.path(), "127.0.0.1:0".parse().unwrap())).unwrap_err();
        assert_pki_error(err, pki::CA_CERT);
    }

    #[test]
    fn serving_key_of_another_certificate_is_a_pki_error() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        pki::init(&pki_dir, &pki::InitOptions::default()).unwrap();
        // The CA's key is a valid key, just not the serving certificate's.
        std::fs::copy(pki_dir.join(pki::CA_KEY), pki_dir.join(pki::SERVING_KEY)).unwrap();
        let err = started(&config(dir.path(), "127.0.0.1:0".parse().unwrap())).unwrap_err();
        assert_pki_error(err, pki::SERVING_CERT);
    }

    #[test]
    fn corrupt_service_account_key_is_a_pki_error() {
        let dir = tempfile::tempdir().unwrap();
        let pki_dir = dir.path().join("pki");
        pki::init(&pki_dir, &pki::InitOptions::default()).unwrap();
        std::fs::write(pki_dir.join(pki::SA_KEY), "not a key").unwrap();
        let err = started(&config(dir.path(), "127.0.0.1:0".parse().unwrap())).unwrap_err();
        assert_pki_error(err, pki::SA_KEY);
    }

    #[test]
    fn taken_port_is_a_listen_error() {
        let dir = tempfile::tempdir().unwrap();
        pki::init(&dir.path().join("pki"), &pki::InitOptions::default()).unwrap();
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        match started(&config(dir.path(), addr)).unwrap_err() {
            StartError::Listen { addr: a, .. } => assert_eq!(a, addr),
            e => panic!("want Listen, got {e:?}"),
        }
    }
}
