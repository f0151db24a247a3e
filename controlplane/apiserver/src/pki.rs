//! Cluster PKI: the CA, the API server's serving certificate, client
//! certificates (CN = user, O = groups), kubeconfigs, the static token file
//! and node bootstrap tokens. Everything lives as PEM/CSV files in one
//! directory so `serve --dir` can load it back.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

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

#[derive(Debug)]
pub struct PkiError(pub String);

impl std::fmt::Display for PkiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for PkiError {}

impl From<rcgen::Error> for PkiError {
    fn from(e: rcgen::Error) -> Self {
        PkiError(format!("certificate generation: {e}"))
    }
}

fn io_err(path: &Path, e: std::io::Error) -> PkiError {
    PkiError(format!("{}: {e}", path.display()))
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

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Validity window: from last year (clock skew between hosts) for `years`.
fn validity(params: &mut CertificateParams, years: i32) {
    let year = 1970 + (now_secs() / 31_556_952) as i32;
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + years, 1, 1);
}

/// The CA's parameters. Deterministic, so an [`Issuer`] can be rebuilt from
/// the CA key alone when more certificates are issued later.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_CN);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, 10);
    p
}

/// A loaded CA able to issue certificates.
pub struct Ca {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
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
    pub fn generate() -> Result<(Ca, String), PkiError> {
        let key = KeyPair::generate()?;
        let key_pem = key.serialize_pem();
        let params = ca_params();
        let cert = params.self_signed(&key)?;
        Ok((
            Ca {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            },
            key_pem,
        ))
    }

    pub fn load(dir: &Path) -> Result<Ca, PkiError> {
        let cert_pem = read(&dir.join(CA_CERT))?;
        let key = KeyPair::from_pem(&read(&dir.join(CA_KEY))?)?;
        Ok(Ca {
            cert_pem,
            issuer: Issuer::new(ca_params(), key),
        })
    }

    /// The API server's serving certificate.
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
        validity(&mut p, 1);
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
            _ => {
                return Err(PkiError(
                    "a client certificate carries at most two groups".into(),
                ));
            }
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut p, 1);
        self.issue(p)
    }

    fn issue(&self, params: CertificateParams) -> Result<Issued, PkiError> {
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

/// Writes a file; private material is made owner-only.
fn write(path: &Path, contents: &str, secret: bool) -> Result<(), PkiError> {
    std::fs::write(path, contents).map_err(|e| io_err(path, e))?;
    if secret {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| io_err(path, e))?;
    }
    Ok(())
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

/// Creates the whole PKI in `dir`. Refuses to overwrite an existing CA: a
/// second run would silently invalidate every issued credential.
pub fn init(dir: &Path, opts: &InitOptions) -> Result<InitOutput, PkiError> {
    std::fs::create_dir_all(dir).map_err(|e| io_err(dir, e))?;
    if dir.join(CA_KEY).exists() {
        return Err(PkiError(format!(
            "{}: a CA already exists; refusing to overwrite it",
            dir.join(CA_KEY).display()
        )));
    }
    let (ca, ca_key_pem) = Ca::generate()?;
    write(&dir.join(CA_KEY), &ca_key_pem, true)?;
    write(&dir.join(CA_CERT), &ca.cert_pem, false)?;

    let serving = ca.serving_cert(&opts.sans)?;
    write(&dir.join(SERVING_CERT), &serving.cert_pem, false)?;
    write(&dir.join(SERVING_KEY), &serving.key_pem, true)?;

    let admin = ca.client_cert("kubernetes-admin", &["system:masters"])?;
    let admin_kubeconfig = dir.join(ADMIN_KUBECONFIG);
    write(
        &admin_kubeconfig,
        &kubeconfig(&opts.server_url, &ca.cert_pem, "kubernetes-admin", &admin),
        true,
    )?;

    // Control-plane components get their own identities, bound to kube's
    // system:kube-scheduler / system:kube-controller-manager ClusterRoles.
    for (file, user) in [
        (SCHEDULER_KUBECONFIG, "system:kube-scheduler"),
        (
            CONTROLLER_MANAGER_KUBECONFIG,
            "system:kube-controller-manager",
        ),
    ] {
        let cert = ca.client_cert(user, &[])?;
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
    let expires = now_secs() + opts.bootstrap_ttl_secs;
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
        admin_kubeconfig,
        admin_token,
        bootstrap_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn der(pem: &str) -> Vec<u8> {
        let (_, p) = parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
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
        let err = init(dir.path(), &opts).unwrap_err();
        assert!(err.0.contains("refusing"), "{err}");
    }

    #[test]
    fn serving_cert_has_sans_and_chains_to_ca() {
        let (ca, _) = Ca::generate().unwrap();
        let s = ca.serving_cert(&["10.1.2.3".into()]).unwrap();
        let ca_der = der(&ca.cert_pem);
        let s_der = der(&s.cert_pem);
        let (_, ca_x) = parse_x509_certificate(&ca_der).unwrap();
        let (_, x) = parse_x509_certificate(&s_der).unwrap();
        assert_eq!(x.issuer(), ca_x.subject());
        let san = x.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(ip) => format!("{ip:?}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert!(names.contains(&"localhost".to_string()), "{names:?}");
        assert!(names.contains(&"[127, 0, 0, 1]".to_string()), "{names:?}");
        assert!(names.contains(&"[10, 1, 2, 3]".to_string()), "{names:?}");
    }

    #[test]
    fn client_cert_carries_user_and_groups() {
        let (ca, _) = Ca::generate().unwrap();
        let c = ca.client_cert("alice", &["dev", "ops"]).unwrap();
        let d = der(&c.cert_pem);
        let id = crate::authn::identity_from_cert(&d).unwrap();
        assert_eq!(id.name, "alice");
        assert_eq!(id.groups, vec!["dev", "ops"]);
        assert!(ca.client_cert("x", &["a", "b", "c"]).is_err());
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
