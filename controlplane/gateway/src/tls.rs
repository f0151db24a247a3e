//! The gateway's rustls server: it presents the API server's serving
//! certificate and verifies client certificates against the cluster CA.
//! A client certificate is optional at the TLS layer only so that a node
//! without one can bootstrap; such a connection may do nothing else.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use skiff_apiserver::pki;

fn err(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

pub fn server_config(pki_dir: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca_path = pki_dir.join(pki::CA_CERT);
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca_path).map_err(|e| err(&ca_path, e))? {
        roots
            .add(c.map_err(|e| err(&ca_path, e))?)
            .map_err(|e| err(&ca_path, e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("client verifier: {e}"))?;
    let cert_path = pki_dir.join(pki::SERVING_CERT);
    let key_path = pki_dir.join(pki::SERVING_KEY);
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| err(&cert_path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(&cert_path, e))?;
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| err(&key_path, e))?;
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| err(&cert_path, e))?;
    Ok(Arc::new(cfg))
}
