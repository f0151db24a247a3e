//! rustls client configurations for tests that speak the node protocol by
//! hand ([`crate::node::tls`]): bootstrap (verify the gateway only) and
//! mutual TLS with a node certificate. Hollow nodes themselves use the
//! agent's TLS (`skiff_node_agent::tls`).

use std::sync::Arc;

use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn roots(ca_der: &[CertificateDer<'static>]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in ca_der {
        roots.add(c.clone()).map_err(|e| e.to_string())?;
    }
    Ok(roots)
}

fn builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::WantsVerifier>, String> {
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())
}

/// Server-authenticated TLS: what a node without a certificate uses.
pub fn bootstrap_config(
    ca: &[CertificateDer<'static>],
) -> Result<Arc<rustls::ClientConfig>, String> {
    Ok(Arc::new(
        builder()?
            .with_root_certificates(roots(ca)?)
            .with_no_client_auth(),
    ))
}

/// Mutual TLS with the node certificate.
pub fn node_config(
    ca: &[CertificateDer<'static>],
    chain: Vec<Vec<u8>>,
    key: &KeyPair,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let chain = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok(Arc::new(
        builder()?
            .with_root_certificates(roots(ca)?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| e.to_string())?,
    ))
}
