//! Cluster PKI: the CA, the API server's serving certificate, client
//! certificates (CN = user, O = groups), kubeconfigs, the static token file
//! and node bootstrap tokens. Everything lives as PEM/CSV files in one
//! directory so `serve --dir` can load it back.
//!
//! Lifetimes are kubeadm's, counted from the moment of issue: the CA lasts
//! ten years, every other certificate one year, and each starts five
//! minutes in the past to absorb clock skew between hosts. [`expirations`]
//! lists what the plane holds (`pki check-expiration`) and [`renew`]
//! re-issues from the existing CA (`pki renew`); the API server and the
//! node gateway pick a renewed serving certificate up without a restart
//! (`server::tls_server_config`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const SERVING_CERT: &str = "apiserver.crt";
pub const SERVING_KEY: &str = "apiserver.key";
pub const ADMIN_KUBECONFIG: &str = "admin.kubeconfig";
/// The scheduler's credentials (`CN=system:kube-scheduler`).
pub const SCHEDULER_KUBECONFIG: &str = "scheduler.kubeconfig";
/// The controller manager's credentials (`CN=system:kube-controller-manager`).
pub const CONTROLLER_MANAGER_KUBECONFIG: &str = "controller-manager.kubeconfig";
pub const TOKEN_FILE: &str = "tokens.csv";
pub const BOOTSTRAP_TOKEN_FILE: &str = "bootstrap-tokens.csv";
/// Signs service account tokens (PKCS#8 P-256).
pub const SA_KEY: &str = "sa.key";

const CA_CN: &str = "skiff-ca";

const DAY: Duration = Duration::from_secs(24 * 3600);
/// The CA's lifetime (kubeadm: ten years).
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Serving and client certificates (kubeadm: one year).
pub const CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far `not_before` is set in the past (kubeadm's backdate).
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);
/// The plane warns this long before one of its certificates expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// What can go wrong with the PKI directory.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{0}: a CA already exists; refusing to overwrite it")]
    CaExists(PathBuf),
    #[error("a client certificate carries at most two groups")]
    TooManyGroups,
    #[error("unknown certificate {0:?}; known: {known}", known = known_names())]
    UnknownCertificate(String),
    #[error(
        "the CA is not renewed in place: every credential it signed would stop working; \
         create a new PKI with `pki init` instead"
    )]
    CaRenewal,
}

fn io_err(path: &Path, source: std::io::Error) -> PkiError {
    PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn invalid(path: &Path, reason: impl std::fmt::Display) -> PkiError {
    PkiError::Invalid {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

/// What `pki init` is asked for.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Extra SANs for the serving certificate (DNS names or IP addresses);
    /// `localhost` and `127.0.0.1` are always included.
    pub sans: Vec<String>,
    /// The server URL written into the admin kubeconfig.
    pub server_url: String,
    /// How many node bootstrap tokens to create.
    pub bootstrap_tokens: usize,
    /// Lifetime of bootstrap tokens, in seconds.
    pub bootstrap_ttl_secs: u64,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            sans: Vec::new(),
            server_url: "https://127.0.0.1:6443".into(),
            bootstrap_tokens: 1,
            bootstrap_ttl_secs: 24 * 3600,
        }
    }
}

/// Random lowercase alphanumerics: the alphabet of bootstrap tokens
/// (`[a-z0-9]{6}.[a-z0-9]{16}`), also fine for static tokens.
pub fn random_token(len: usize) -> String {
    use ring::rand::SecureRandom as _;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let rng = ring::rand::SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf).expect("system randomness");
        // 252 = 7 * 36: reject the tail to keep the choice uniform.
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[(*b % 36) as usize] as char);
        }
    }
    out
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Sets the validity window: from `now - BACKDATE` for `lifetime`.
fn validity(params: &mut CertificateParams, now: SystemTime, lifetime: Duration) {
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + lifetime).into();
}

/// A CA able to issue certificates.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// Issue as of this instant instead of the wall clock (tests).
    clock: Option<SystemTime>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate with its private key, both PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Ca {
    /// A new CA valid from `now` for [`CA_LIFETIME`], and its key (PEM).
    pub fn generate(now: SystemTime) -> Result<(Ca, String), PkiError> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_CN);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, now, CA_LIFETIME);
        let cert = params.self_signed(&key)?;
        Ok((
            Ca {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
                clock: Some(now),
            },
            key_pem,
        ))
    }

    /// The CA in `dir` (`ca.crt`, `ca.key`), issuing on the wall clock.
    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_path = dir.join(CA_CERT);
        let cert_pem = read(&cert_path)?;
        let key_path = dir.join(CA_KEY);
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| invalid(&key_path, e))?;
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| invalid(&cert_path, e))?;
        Ok(Ca {
            cert_pem,
            issuer,
            clock: None,
        })
    }

    /// Issues as of `now` rather than the wall clock.
    pub fn at(mut self, now: SystemTime) -> Ca {
        self.clock = Some(now);
        self
    }

    fn now(&self) -> SystemTime {
        self.clock.unwrap_or_else(SystemTime::now)
    }

    /// The API server's serving certificate (also the node gateway's).
    pub fn serving_cert(&self, extra_sans: &[String]) -> Result<Issued, PkiError> {
        let mut sans: Vec<String> = vec![
            "localhost".into(),
            "127.0.0.1".into(),
            "::1".into(),
            "kubernetes".into(),
            "kubernetes.default".into(),
            "kubernetes.default.svc".into(),
        ];
        for s in extra_sans {
            if !sans.contains(s) {
                sans.push(s.clone());
            }
        }
        let mut p = CertificateParams::new(sans)?;
        p.distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(p)
    }

    /// A client certificate: CN = user name, one O per group (Kubernetes'
    /// x509 authenticator convention).
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<Issued, PkiError> {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, user);
        // rcgen keys DN attributes by type, so a second O goes in under the
        // same OID spelled as a custom type; a third cannot be expressed.
        match groups {
            [] => {}
            [g] => p.distinguished_name.push(DnType::OrganizationName, *g),
            [g1, g2] => {
                p.distinguished_name.push(DnType::OrganizationName, *g1);
                p.distinguished_name
                    .push(DnType::CustomDnType(vec![2, 5, 4, 10]), *g2);
            }
            _ => return Err(PkiError::TooManyGroups),
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(p)
    }

    fn issue(&self, mut params: CertificateParams) -> Result<Issued, PkiError> {
        validity(&mut params, self.now(), CERT_LIFETIME);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|e| io_err(path, e))
}

/// Writes a file atomically: a temporary file created with its final mode
/// (owner-only for private material, so a key is never world-readable, not
/// even for an instant), synced, renamed over the target, and the directory
/// synced so the rename survives a crash.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(|e| io_err(&tmp, e))?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| io_err(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err(dir, e))
}

/// A kubeconfig with the certificates embedded (so it can be copied alone).
pub fn kubeconfig(server: &str, ca_pem: &str, user: &str, client: &Issued) -> String {
    let credential = format!(
        "client-certificate-data: {}\n    client-key-data: {}",
        b64(&client.cert_pem),
        b64(&client.key_pem)
    );
    kubeconfig_with(server, ca_pem, user, &credential)
}

/// A kubeconfig authenticating with a bearer token.
pub fn token_kubeconfig(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    kubeconfig_with(server, ca_pem, user, &format!("token: {token}"))
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

/// One cluster (the CA embedded), one user with `credential` (the lines of
/// its `user:` map), and the context joining them.
fn kubeconfig_with(server: &str, ca_pem: &str, user: &str, credential: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    {credential}
contexts:
- name: {user}@skiff
  context:
    cluster: skiff
    user: {user}
current-context: {user}@skiff
",
        ca = b64(ca_pem),
    )
}

/// What `pki init` wrote.
#[derive(Debug)]
pub struct InitOutput {
    pub admin_kubeconfig: PathBuf,
    pub admin_token: String,
    /// `id.secret` bootstrap tokens.
    pub bootstrap_tokens: Vec<String>,
}

/// The client identities `pki init` writes kubeconfigs for: (file, user,
/// groups). The components get their own users, bound to kube's
/// `system:kube-scheduler` / `system:kube-controller-manager` roles.
const KUBECONFIGS: &[(&str, &str, &[&str])] = &[
    (ADMIN_KUBECONFIG, "kubernetes-admin", &["system:masters"]),
    (SCHEDULER_KUBECONFIG, "system:kube-scheduler", &[]),
    (
        CONTROLLER_MANAGER_KUBECONFIG,
        "system:kube-controller-manager",
        &[],
    ),
];

/// Creates the whole PKI in `dir`, issued now.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitOutput, PkiError> {
    init_at(dir, opts, SystemTime::now())
}

/// Creates the whole PKI in `dir` as of `now`. Refuses to overwrite an
/// existing CA: a second run would silently invalidate every issued
/// credential.
pub fn init_at(dir: &Path, opts: &InitOptions, now: SystemTime) -> Result<InitOutput, PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    if dir.join(CA_KEY).exists() {
        return Err(PkiError::CaExists(dir.join(CA_KEY)));
    }
    let (ca, ca_key_pem) = Ca::generate(now)?;
    write(&dir.join(CA_KEY), &ca_key_pem, true)?;
    write(&dir.join(CA_CERT), &ca.cert_pem, false)?;

    let serving = ca.serving_cert(&opts.sans)?;
    write(&dir.join(SERVING_CERT), &serving.cert_pem, false)?;
    write(&dir.join(SERVING_KEY), &serving.key_pem, true)?;

    for (file, user, groups) in KUBECONFIGS {
        let cert = ca.client_cert(user, groups)?;
        write(
            &dir.join(file),
            &kubeconfig(&opts.server_url, &ca.cert_pem, user, &cert),
            true,
        )?;
    }

    // Static token file in kube-apiserver's format: token,user,uid,"groups".
    let admin_token = random_token(32);
    write(
        &dir.join(TOKEN_FILE),
        &format!("{admin_token},admin-token,admin-token,\"system:masters\"\n"),
        true,
    )?;

    // Bootstrap tokens: id,secret,expiry (unix seconds).
    let expires = unix_secs(now) + opts.bootstrap_ttl_secs;
    let mut csv = String::new();
    let mut bootstrap_tokens = Vec::new();
    for _ in 0..opts.bootstrap_tokens {
        let (id, secret) = (random_token(6), random_token(16));
        let _ = writeln!(csv, "{id},{secret},{expires}");
        bootstrap_tokens.push(format!("{id}.{secret}"));
    }
    write(&dir.join(BOOTSTRAP_TOKEN_FILE), &csv, true)?;
    write(
        &dir.join(SA_KEY),
        &KeyPair::generate()?.serialize_pem(),
        true,
    )?;

    Ok(InitOutput {
        admin_kubeconfig: dir.join(ADMIN_KUBECONFIG),
        admin_token,
        bootstrap_tokens,
    })
}

/// The certificates the plane holds in its PKI directory, by the names
/// `check-expiration` shows and `renew` takes.
const MANAGED: &[&str] = &[
    "ca",
    "apiserver",
    ADMIN_KUBECONFIG,
    SCHEDULER_KUBECONFIG,
    CONTROLLER_MANAGER_KUBECONFIG,
];

fn known_names() -> String {
    MANAGED.join(", ")
}

/// One certificate's expiry, as `pki check-expiration` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expiration {
    /// `ca`, `apiserver` or a kubeconfig's file name.
    pub name: &'static str,
    /// The file it is read from.
    pub path: PathBuf,
    pub not_after: SystemTime,
    /// `ca` for certificates the CA signed, empty for the CA itself.
    pub authority: &'static str,
}

impl Expiration {
    /// Time left as of `now` (zero once expired).
    pub fn residual(&self, now: SystemTime) -> Duration {
        self.not_after.duration_since(now).unwrap_or_default()
    }
}

/// The PEM certificate held by managed item `name`.
fn managed_cert_pem(dir: &Path, name: &str) -> Result<(PathBuf, String), PkiError> {
    match name {
        "ca" => Ok((dir.join(CA_CERT), read(&dir.join(CA_CERT))?)),
        "apiserver" => Ok((dir.join(SERVING_CERT), read(&dir.join(SERVING_CERT))?)),
        file => {
            let path = dir.join(file);
            let cfg = KubeconfigParts::read(&path)?;
            Ok((path, cfg.client_cert_pem))
        }
    }
}

fn not_after(path: &Path, pem: &str) -> Result<SystemTime, PkiError> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| invalid(path, e))?;
    let cert = p.parse_x509().map_err(|e| invalid(path, e))?;
    let secs = cert.validity().not_after.timestamp();
    Ok(UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
}

/// The expiry of every certificate in `dir`, CA first.
pub fn expirations(dir: &Path) -> Result<Vec<Expiration>, PkiError> {
    MANAGED
        .iter()
        .map(|&name| {
            let (path, pem) = managed_cert_pem(dir, name)?;
            Ok(Expiration {
                name,
                not_after: not_after(&path, &pem)?,
                path,
                authority: if name == "ca" { "" } else { "ca" },
            })
        })
        .collect()
}

/// `residual` the way kubeadm prints it: `364d`, `23h`, `<invalid>`.
pub fn residual_text(left: Duration) -> String {
    if left.is_zero() {
        "<invalid>".into()
    } else if left >= DAY {
        format!("{}d", left.as_secs() / DAY.as_secs())
    } else if left >= Duration::from_secs(3600) {
        format!("{}h", left.as_secs() / 3600)
    } else {
        format!("{}m", left.as_secs() / 60)
    }
}

/// `pki check-expiration`: kubeadm's table.
pub fn expiration_table(list: &[Expiration], now: SystemTime) -> String {
    let mut out = format!(
        "{:<32}{:<26}{:<16}{}\n",
        "CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY"
    );
    for e in list {
        let expires = time::OffsetDateTime::from(e.not_after);
        let when = format!(
            "{} {:02}, {} {:02}:{:02} UTC",
            month_abbrev(expires.month()),
            expires.day(),
            expires.year(),
            expires.hour(),
            expires.minute()
        );
        let _ = writeln!(
            out,
            "{:<32}{:<26}{:<16}{}",
            e.name,
            when,
            residual_text(e.residual(now)),
            e.authority
        );
    }
    out
}

fn month_abbrev(m: time::Month) -> &'static str {
    use time::Month::*;
    match m {
        January => "Jan",
        February => "Feb",
        March => "Mar",
        April => "Apr",
        May => "May",
        June => "Jun",
        July => "Jul",
        August => "Aug",
        September => "Sep",
        October => "Oct",
        November => "Nov",
        December => "Dec",
    }
}

/// The certificates that expire within [`EXPIRY_WARNING`] of `now`.
pub fn expiring_soon(dir: &Path, now: SystemTime) -> Result<Vec<Expiration>, PkiError> {
    Ok(expirations(dir)?
        .into_iter()
        .filter(|e| e.residual(now) < EXPIRY_WARNING)
        .collect())
}

/// The parts of one of our kubeconfigs that renewal keeps.
struct KubeconfigParts {
    server: String,
    user: String,
    client_cert_pem: String,
}

impl KubeconfigParts {
    fn read(path: &Path) -> Result<KubeconfigParts, PkiError> {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(&read(path)?).map_err(|e| invalid(path, e))?;
        let field = |v: &serde_yaml::Value, name: &str| -> Result<String, PkiError> {
            v.get(name)
                .and_then(|s| s.as_str())
                .map(str::to_string)
                .ok_or_else(|| invalid(path, format!("no {name}")))
        };
        let cluster = doc
            .get("clusters")
            .and_then(|c| c.get(0))
            .and_then(|c| c.get("cluster"))
            .ok_or_else(|| invalid(path, "no cluster"))?;
        let user = doc
            .get("users")
            .and_then(|u| u.get(0))
            .ok_or_else(|| invalid(path, "no user"))?;
        let data = user
            .get("user")
            .map(|u| field(u, "client-certificate-data"))
            .ok_or_else(|| invalid(path, "no client certificate"))??;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| invalid(path, "client-certificate-data is not base64 PEM"))?;
        Ok(KubeconfigParts {
            server: field(cluster, "server")?,
            user: field(user, "name")?,
            client_cert_pem: pem,
        })
    }
}

/// The subject alternative names of a serving certificate, as
/// [`Ca::serving_cert`] takes them.
fn sans_of(path: &Path, pem: &str) -> Result<Vec<String>, PkiError> {
    use x509_parser::extensions::GeneralName;
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| invalid(path, e))?;
    let cert = p.parse_x509().map_err(|e| invalid(path, e))?;
    let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| invalid(path, e))?
    else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => out.push(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => out.push(
                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*b).expect("4")).to_string(),
                ),
                16 => out.push(
                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*b).expect("16")).to_string(),
                ),
                _ => return Err(invalid(path, "malformed IP address SAN")),
            },
            _ => {}
        }
    }
    Ok(out)
}

/// Re-issues `name` (`apiserver`, a kubeconfig's file name, or `all`) from
/// the existing CA with a fresh key, keeping its subject, SANs and server
/// URL. Returns the names renewed. The CA itself is not renewed.
pub fn renew(dir: &Path, name: &str) -> Result<Vec<&'static str>, PkiError> {
    renew_with(&Ca::load(dir)?, dir, name)
}

fn renew_with(ca: &Ca, dir: &Path, name: &str) -> Result<Vec<&'static str>, PkiError> {
    let names: Vec<&'static str> = match name {
        "all" => MANAGED.iter().copied().filter(|n| *n != "ca").collect(),
        "ca" => return Err(PkiError::CaRenewal),
        other => vec![
            *MANAGED
                .iter()
                .find(|n| **n == other)
                .ok_or_else(|| PkiError::UnknownCertificate(other.to_string()))?,
        ],
    };
    for &n in &names {
        if n == "apiserver" {
            let path = dir.join(SERVING_CERT);
            let sans = sans_of(&path, &read(&path)?)?;
            let issued = ca.serving_cert(&sans)?;
            // Key first: a reloading server only switches once the
            // certificate file changes, and then finds the matching key.
            write(&dir.join(SERVING_KEY), &issued.key_pem, true)?;
            write(&path, &issued.cert_pem, false)?;
        } else {
            let path = dir.join(n);
            let old = KubeconfigParts::read(&path)?;
            let (_, groups) = KUBECONFIGS
                .iter()
                .find(|(f, ..)| *f == n)
                .map(|(_, u, g)| (*u, *g))
                .expect("managed kubeconfigs are in KUBECONFIGS");
            let issued = ca.client_cert(&old.user, groups)?;
            write(
                &path,
                &kubeconfig(&old.server, &ca.cert_pem, &old.user, &issued),
                true,
            )?;
        }
    }
    Ok(names)
}

/// The control-plane join token (k3s' form `K10<sha256 of ca.crt>::<secret>`):
/// the hash lets a joining member check the CA before trusting it, the
/// secret lets the cluster hand it the PKI.
pub const JOIN_TOKEN_FILE: &str = "join-token";
/// A member's client certificate for peer (Raft) traffic.
pub const MEMBER_CERT: &str = "member.crt";
pub const MEMBER_KEY: &str = "member.key";
/// The group of control-plane members' peer certificates.
pub const MEMBER_GROUP: &str = "skiff:members";
/// The files a joining member receives: everything but the serving and
/// member certificates, which it issues itself for its own names.
pub const JOIN_BUNDLE: &[&str] = &[
    CA_CERT,
    CA_KEY,
    ADMIN_KUBECONFIG,
    SCHEDULER_KUBECONFIG,
    CONTROLLER_MANAGER_KUBECONFIG,
    TOKEN_FILE,
    BOOTSTRAP_TOKEN_FILE,
    SA_KEY,
    JOIN_TOKEN_FILE,
];

/// The SHA-256 of a CA certificate file, hex (the token's first part).
pub fn ca_hash(ca_pem: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, ca_pem)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Splits a join token into (CA hash, secret).
pub fn parse_join_token(token: &str) -> Option<(&str, &str)> {
    let (hash, secret) = token.trim().strip_prefix("K10")?.split_once("::")?;
    (hash.len() == 64 && !secret.is_empty()).then_some((hash, secret))
}

/// The cluster's join token, created on first use.
pub fn join_token(dir: &Path) -> Result<String, PkiError> {
    let path = dir.join(JOIN_TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) => return Ok(t.trim().to_string()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io_err(&path, e)),
        Err(_) => {}
    }
    let ca_path = dir.join(CA_CERT);
    let ca = std::fs::read(&ca_path).map_err(|e| io_err(&ca_path, e))?;
    let token = format!("K10{}::{}", ca_hash(&ca), random_token(32));
    write(&path, &format!("{token}\n"), true)?;
    Ok(token)
}

/// Issues this member's peer certificate (`MEMBER_GROUP`) from the CA in
/// `dir`, and with `serving_sans` also its own serving certificate (a
/// joining member's names differ from the first one's).
pub fn issue_member(dir: &Path, id: u64, serving_sans: Option<&[String]>) -> Result<(), PkiError> {
    let ca = Ca::load(dir)?;
    let cert = ca.client_cert(&format!("skiff-member-{id:x}"), &[MEMBER_GROUP])?;
    write(&dir.join(MEMBER_CERT), &cert.cert_pem, false)?;
    write(&dir.join(MEMBER_KEY), &cert.key_pem, true)?;
    if let Some(sans) = serving_sans {
        let serving = ca.serving_cert(sans)?;
        write(&dir.join(SERVING_CERT), &serving.cert_pem, false)?;
        write(&dir.join(SERVING_KEY), &serving.key_pem, true)?;
    }
    Ok(())
}

/// Writes a join bundle received from the cluster into `dir`; only the
/// names in [`JOIN_BUNDLE`] are taken.
pub fn install_join_bundle(dir: &Path, files: &[(String, String)]) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    for (name, contents) in files {
        if !JOIN_BUNDLE.contains(&name.as_str()) {
            return Err(invalid(&dir.join(name), "not a file of the join bundle"));
        }
        write(&dir.join(name), contents, name != CA_CERT)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn der(pem: &str) -> Vec<u8> {
        let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    /// Midnight UTC on the given date.
    fn date(year: i32, month: u8, day: u8) -> SystemTime {
        let t = rcgen::date_time_ymd(year, month, day);
        UNIX_EPOCH + Duration::from_secs(t.unix_timestamp() as u64)
    }

    fn window(pem: &str) -> (SystemTime, SystemTime) {
        let d = der(pem);
        let (_, x) = parse_x509_certificate(&d).unwrap();
        let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t as u64);
        (
            at(x.validity().not_before.timestamp()),
            at(x.validity().not_after.timestamp()),
        )
    }

    #[test]
    fn init_writes_everything_and_refuses_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let opts = InitOptions {
            sans: vec!["10.0.0.1".into(), "cp.example".into()],
            bootstrap_tokens: 2,
            ..Default::default()
        };
        let out = init(dir.path(), &opts).unwrap();
        for f in [
            CA_CERT,
            CA_KEY,
            SERVING_CERT,
            SERVING_KEY,
            ADMIN_KUBECONFIG,
            SCHEDULER_KUBECONFIG,
            CONTROLLER_MANAGER_KUBECONFIG,
            TOKEN_FILE,
            BOOTSTRAP_TOKEN_FILE,
            SA_KEY,
        ] {
            assert!(dir.path().join(f).exists(), "{f} missing");
        }
        assert_eq!(out.bootstrap_tokens.len(), 2);
        for t in &out.bootstrap_tokens {
            let (id, secret) = t.split_once('.').unwrap();
            assert_eq!((id.len(), secret.len()), (6, 16));
        }
        assert!(matches!(
            init(dir.path(), &opts),
            Err(PkiError::CaExists(_))
        ));
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &InitOptions::default()).unwrap();
        for f in [CA_KEY, SERVING_KEY, ADMIN_KUBECONFIG, TOKEN_FILE, SA_KEY] {
            let mode = std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let mode = std::fs::metadata(dir.path().join(CA_CERT))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }

    /// The bug this replaces: validity counted in calendar years, so a PKI
    /// made on 5 or 31 December expired on the next 1 January.
    #[test]
    fn lifetimes_count_from_the_moment_of_issue() {
        for now in [
            date(2026, 12, 5),
            date(2026, 12, 31),
            date(2027, 1, 1),
            date(2028, 2, 29),
        ] {
            let dir = tempfile::tempdir().unwrap();
            init_at(dir.path(), &InitOptions::default(), now).unwrap();
            let (nb, na) = window(&read(&dir.path().join(CA_CERT)).unwrap());
            assert_eq!(nb, now - BACKDATE);
            assert_eq!(na, now + CA_LIFETIME);
            let (nb, na) = window(&read(&dir.path().join(SERVING_CERT)).unwrap());
            assert_eq!(nb, now - BACKDATE);
            assert_eq!(na, now + CERT_LIFETIME);
            let list = expirations(dir.path()).unwrap();
            assert_eq!(list.len(), MANAGED.len());
            for e in &list {
                let want = if e.name == "ca" {
                    CA_LIFETIME
                } else {
                    CERT_LIFETIME
                };
                assert_eq!(e.not_after, now + want, "{}", e.name);
                assert_eq!(e.residual(now), want);
            }
            // Nothing is due for renewal on the day of issue, everything but
            // the CA is within the warning a month before the year is out.
            assert!(expiring_soon(dir.path(), now).unwrap().is_empty());
            let late = now + CERT_LIFETIME - 29 * DAY;
            let soon: Vec<_> = expiring_soon(dir.path(), late)
                .unwrap()
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(soon, &MANAGED[1..]);
        }
    }

    #[test]
    fn renew_keeps_identity_and_extends_from_now() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = date(2026, 12, 5);
        let opts = InitOptions {
            sans: vec!["10.9.8.7".into(), "cp.example".into()],
            server_url: "https://cp.example:6443".into(),
            ..Default::default()
        };
        init_at(dir.path(), &opts, t0).unwrap();
        let before = std::fs::read_to_string(dir.path().join(SERVING_KEY)).unwrap();
        let t1 = t0 + 300 * DAY;
        let ca = Ca::load(dir.path()).unwrap().at(t1);
        let renewed = renew_with(&ca, dir.path(), "all").unwrap();
        assert_eq!(renewed, &MANAGED[1..]);
        for e in expirations(dir.path()).unwrap() {
            let want = if e.name == "ca" {
                t0 + CA_LIFETIME
            } else {
                t1 + CERT_LIFETIME
            };
            assert_eq!(e.not_after, want, "{}", e.name);
        }
        // A fresh key, the same SANs and the same issuer.
        assert_ne!(before, read(&dir.path().join(SERVING_KEY)).unwrap());
        let serving = read(&dir.path().join(SERVING_CERT)).unwrap();
        let sans = sans_of(Path::new("x"), &serving).unwrap();
        assert!(sans.contains(&"10.9.8.7".to_string()), "{sans:?}");
        assert!(sans.contains(&"cp.example".to_string()), "{sans:?}");
        let (ca_d, s_d) = (der(&ca.cert_pem), der(&serving));
        let (_, cax) = parse_x509_certificate(&ca_d).unwrap();
        let (_, sx) = parse_x509_certificate(&s_d).unwrap();
        sx.verify_signature(Some(cax.public_key())).unwrap();
        // The kubeconfig keeps its server and user, and its cert its groups.
        let admin = KubeconfigParts::read(&dir.path().join(ADMIN_KUBECONFIG)).unwrap();
        assert_eq!(admin.server, "https://cp.example:6443");
        assert_eq!(admin.user, "kubernetes-admin");
        let id = crate::authn::identity_from_cert(&der(&admin.client_cert_pem)).unwrap();
        assert_eq!(id.groups, vec!["system:masters"]);
        // One at a time, and clear refusals.
        assert_eq!(
            renew_with(&ca, dir.path(), "apiserver").unwrap(),
            ["apiserver"]
        );
        assert!(matches!(
            renew_with(&ca, dir.path(), "ca"),
            Err(PkiError::CaRenewal)
        ));
        let err = renew_with(&ca, dir.path(), "etcd").unwrap_err();
        assert!(matches!(err, PkiError::UnknownCertificate(_)));
        assert!(err.to_string().contains("admin.kubeconfig"), "{err}");
    }

    #[test]
    fn expiration_table_reads_like_kubeadms() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = date(2026, 12, 5);
        init_at(dir.path(), &InitOptions::default(), t0).unwrap();
        let table = expiration_table(&expirations(dir.path()).unwrap(), t0 + DAY);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("CERTIFICATE"), "{table}");
        assert!(
            lines[1].starts_with("ca ") && lines[1].contains("Dec 02, 2036"),
            "{table}"
        );
        assert!(lines[1].contains("3649d"), "{table}");
        assert!(
            lines[2].starts_with("apiserver ") && lines[2].contains("Dec 05, 2027"),
            "{table}"
        );
        assert!(
            lines[2].contains("364d") && lines[2].trim_end().ends_with("ca"),
            "{table}"
        );
        assert_eq!(residual_text(Duration::ZERO), "<invalid>");
        assert_eq!(residual_text(Duration::from_secs(7200)), "2h");
    }

    #[test]
    fn serving_cert_has_sans_and_chains_to_ca() {
        let (ca, _) = Ca::generate(SystemTime::now()).unwrap();
        let s = ca.serving_cert(&["10.1.2.3".into()]).unwrap();
        let ca_der = der(&ca.cert_pem);
        let s_der = der(&s.cert_pem);
        let (_, ca_x) = parse_x509_certificate(&ca_der).unwrap();
        let (_, x) = parse_x509_certificate(&s_der).unwrap();
        assert_eq!(x.issuer(), ca_x.subject());
        let names = sans_of(Path::new("x"), &s.cert_pem).unwrap();
        for want in ["localhost", "127.0.0.1", "::1", "10.1.2.3"] {
            assert!(names.contains(&want.to_string()), "{names:?}");
        }
    }

    #[test]
    fn client_cert_carries_user_and_groups() {
        let (ca, _) = Ca::generate(SystemTime::now()).unwrap();
        let c = ca.client_cert("alice", &["dev", "ops"]).unwrap();
        let d = der(&c.cert_pem);
        let id = crate::authn::identity_from_cert(&d).unwrap();
        assert_eq!(id.name, "alice");
        assert_eq!(id.groups, vec!["dev", "ops"]);
        assert!(matches!(
            ca.client_cert("x", &["a", "b", "c"]),
            Err(PkiError::TooManyGroups)
        ));
    }

    #[test]
    fn reloaded_ca_issues_certs_with_the_same_issuer() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), &InitOptions::default()).unwrap();
        let ca = Ca::load(dir.path()).unwrap();
        let c = ca.client_cert("bob", &[]).unwrap();
        let (ca_d, c_d) = (der(&ca.cert_pem), der(&c.cert_pem));
        let (_, cax) = parse_x509_certificate(&ca_d).unwrap();
        let (_, cx) = parse_x509_certificate(&c_d).unwrap();
        assert_eq!(cx.issuer(), cax.subject());
        cx.verify_signature(Some(cax.public_key())).unwrap();
    }

    #[test]
    fn tokens_are_from_the_bootstrap_alphabet() {
        let t = random_token(100);
        assert_eq!(t.len(), 100);
        assert!(
            t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
    }
}
