//! The gateway's rustls server: it presents the API server's serving
//! certificate and verifies client certificates against the cluster CA
//! (the same identity as the API server: `skiff_apiserver::server`). A
//! client certificate is optional at the TLS layer only so that a node
//! without one can bootstrap; such a connection may do nothing else. Nodes
//! speak TLS 1.3 only.

use std::path::Path;
use std::sync::Arc;

pub fn server_config(
    pki_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>, skiff_apiserver::StartError> {
    skiff_apiserver::tls_server_config(pki_dir, &[&rustls::version::TLS13]).map(Arc::new)
}
