//! A replicated control plane: `serve --cluster-init` / `--join`, the peer
//! transport (HTTPS with this member's certificate, CA-verified both
//! ways), and `member list|remove`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use skiff_apiserver::pki;
use skiff_store::{BoxFuture, Rpc, Transport, TransportError};

type Error = String;

fn rustls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// An HTTPS client trusting only the cluster CA, presenting `cert`/`key`.
pub fn client(pki_dir: &Path, cert: &str, key: &str) -> Result<reqwest::Client, Error> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca_path = pki_dir.join(pki::CA_CERT);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca_path)
        .map_err(|e| format!("{}: {e}", ca_path.display()))?
    {
        roots
            .add(c.map_err(|e| format!("{}: {e}", ca_path.display()))?)
            .map_err(|e| format!("{}: {e}", ca_path.display()))?;
    }
    let (cp, kp) = (pki_dir.join(cert), pki_dir.join(key));
    let certs = CertificateDer::pem_file_iter(&cp)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cp.display()))?;
    let key = PrivateKeyDer::from_pem_file(&kp).map_err(|e| format!("{}: {e}", kp.display()))?;
    let tls = rustls::ClientConfig::builder_with_provider(rustls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("{}: {e}", cp.display()))?;
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(1))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| e.to_string())
}

/// Raft traffic to `<addr>/skiff/peer/<call>`.
pub struct Https(pub reqwest::Client);

impl Transport for Https {
    fn call(
        &self,
        addr: &str,
        rpc: Rpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, TransportError>> {
        let req = self
            .0
            .post(format!("{addr}/skiff/peer/{}", rpc.name()))
            .timeout(timeout.max(Duration::from_millis(100)))
            .body(body);
        Box::pin(async move {
            let resp = req.send().await.map_err(|e| {
                if e.is_connect() {
                    TransportError::Unreachable(e.to_string())
                } else {
                    TransportError::Failed(e.to_string())
                }
            })?;
            let status = resp.status();
            let b = resp
                .bytes()
                .await
                .map_err(|e| TransportError::Failed(e.to_string()))?;
            if !status.is_success() {
                return Err(TransportError::Failed(format!(
                    "{status}: {}",
                    String::from_utf8_lossy(&b)
                )));
            }
            Ok(b.to_vec())
        })
    }
}

/// This member's id, kept in the data directory.
pub fn member_id(data: &Path) -> Result<u64, Error> {
    let path = data.join("member-id");
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            return u64::from_str_radix(s.trim(), 16)
                .map_err(|e| format!("{}: {e}", path.display()));
        }
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("{}: {e}", path.display()));
        }
        Err(_) => {}
    }
    use std::hash::BuildHasher as _;
    let id =
        std::collections::hash_map::RandomState::new().hash_one(std::time::SystemTime::now()) | 1;
    std::fs::create_dir_all(data).map_err(|e| format!("{}: {e}", data.display()))?;
    std::fs::write(&path, format!("{id:x}\n")).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(id)
}

/// Accepts any server certificate: only for fetching `/cacerts`, whose
/// answer is then checked against the token's hash.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// k3s-style join: fetch the CA, check its hash against the token, then
/// fetch the PKI with the token's secret over a connection verified by
/// that CA, and issue this member's own certificates.
pub async fn fetch_pki(
    join: &str,
    token: &str,
    pki_dir: &Path,
    sans: &[String],
    id: u64,
) -> Result<(), Error> {
    let (hash, _) = pki::parse_join_token(token)
        .ok_or("--token: not a join token (want K10<sha256 of the CA>::<secret>)")?;
    let provider = rustls_provider();
    let insecure = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_no_client_auth();
    let http = reqwest::Client::builder()
        .tls_backend_preconfigured(insecure)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let ca = http
        .get(format!("{join}/cacerts"))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| format!("fetching the cluster CA from {join}: {e}"))?
        .bytes()
        .await
        .map_err(|e| format!("fetching the cluster CA from {join}: {e}"))?;
    let got = pki::ca_hash(&ca);
    if got != hash {
        return Err(format!(
            "join refused: the CA served by {join} has hash {got}, the token expects {hash} \
             (a foreign cluster, or the wrong token)"
        ));
    }
    std::fs::create_dir_all(pki_dir).map_err(|e| format!("{}: {e}", pki_dir.display()))?;
    let tmp = pki_dir.join(pki::CA_CERT);
    std::fs::write(&tmp, &ca).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls::pki_types::pem::PemObject as _;
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots
                .add(c.map_err(|e| format!("cluster CA: {e}"))?)
                .map_err(|e| format!("cluster CA: {e}"))?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(rustls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let trusted = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = trusted
        .post(format!("{join}/skiff/join"))
        .bearer_auth(token.trim())
        .send()
        .await
        .map_err(|e| format!("joining through {join}: {e}"))?;
    let status = resp.status();
    let v: serde_json::Value = resp
        .json()
        .await
        .map_err(|e| format!("joining through {join}: {e}"))?;
    if !status.is_success() {
        return Err(format!(
            "join refused by {join}: {}",
            v["message"].as_str().unwrap_or("no reason given")
        ));
    }
    let files: Vec<(String, String)> =
        serde_json::from_value(v["files"].clone()).map_err(|e| format!("join bundle: {e}"))?;
    pki::install_join_bundle(pki_dir, &files).map_err(|e| e.to_string())?;
    pki::issue_member(pki_dir, id, Some(sans)).map_err(|e| e.to_string())
}

/// Asks the cluster (through `join`) to add this member; retried until
/// the cluster answers, since adding waits for this member to serve.
pub async fn request_add(client: reqwest::Client, join: String, id: u64, addr: String) {
    loop {
        let r = client
            .post(format!("{join}/skiff/members/add"))
            .timeout(Duration::from_secs(120))
            .json(&serde_json::json!({"id": id, "addr": addr}))
            .send()
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                tracing::info!(id = format!("{id:x}"), "joined the cluster as a voter");
                return;
            }
            Ok(r) => {
                let s = r.status();
                let t = r.text().await.unwrap_or_default();
                tracing::warn!(%s, "adding this member: {t}");
            }
            Err(e) => tracing::warn!(error = %e, "adding this member"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `member list` / `member remove`, as a member (its certificate in `dir`).
pub async fn member_cmd(dir: PathBuf, server: String, remove: Option<String>) -> Result<(), Error> {
    let http = client(&dir, pki::MEMBER_CERT, pki::MEMBER_KEY)?;
    if let Some(id) = remove {
        let id = u64::from_str_radix(&id, 16).map_err(|e| format!("member id {id:?}: {e}"))?;
        let r = http
            .post(format!("{server}/skiff/members/remove"))
            .json(&serde_json::json!({ "id": id }))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let ok = r.status().is_success();
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        if !ok {
            return Err(format!(
                "member remove refused: {}",
                v["message"].as_str().unwrap_or("no reason given")
            ));
        }
        println!("member {id:x} removed");
        return Ok(());
    }
    let r = http
        .get(format!("{server}/skiff/members"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let ok = r.status().is_success();
    let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    if !ok {
        return Err(v["message"].as_str().unwrap_or("refused").to_string());
    }
    let c: skiff_store::Cluster = serde_json::from_value(v).map_err(|e| e.to_string())?;
    println!(
        "{:<18} {:<32} {:<8} {:<7} TERM",
        "ID", "ADDRESS", "ROLE", "LEADER"
    );
    for m in &c.members {
        println!(
            "{:<18} {:<32} {:<8} {:<7} {}",
            format!("{:x}", m.id),
            m.addr,
            if m.voter { "voter" } else { "learner" },
            if m.leader { "*" } else { "" },
            c.term
        );
    }
    Ok(())
}
