//! What every Skiff control-plane component (scheduler, controller
//! manager) needs to be an ordinary API client: a [`kube::Client`] from its
//! kubeconfig, and [`leader`] election over a coordination.k8s.io Lease so
//! several replicas can run with one active.

pub mod leader;

use std::path::{Path, PathBuf};

use kube::Client;

/// Why [`client_from_kubeconfig`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig could not be read, parsed or resolved to a config.
    #[error("kubeconfig {}: {source}", path.display())]
    Kubeconfig {
        path: PathBuf,
        #[source]
        source: kube::config::KubeconfigError,
    },
    /// The server URL override is not a valid URL.
    #[error("server URL {url:?}: {source}")]
    ServerUrl {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    /// The kube client could not be built from the config (TLS setup).
    #[error("kube client from {}: {source}", path.display())]
    Build {
        path: PathBuf,
        #[source]
        source: kube::Error,
    },
}

/// A client for the API server from a kubeconfig, optionally pointed at
/// another server URL (the control plane passes its actual listen address).
pub async fn client_from_kubeconfig(
    path: &Path,
    server: Option<&str>,
) -> Result<Client, ClientError> {
    let kubeconfig = |source| ClientError::Kubeconfig {
        path: path.to_owned(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(kubeconfig)?;
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(kubeconfig)?;
    if let Some(s) = server {
        cfg.cluster_url = s.parse().map_err(|source| ClientError::ServerUrl {
            url: s.to_owned(),
            source,
        })?;
    }
    Client::try_from(cfg).map_err(|source| ClientError::Build {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_kubeconfig_is_the_kubeconfig_variant() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.kubeconfig");
        std::fs::write(&path, "clusters: [this is not: a kubeconfig").unwrap();
        let Err(err) = client_from_kubeconfig(&path, None).await else {
            panic!("a malformed kubeconfig gave a client");
        };
        assert!(
            matches!(err, ClientError::Kubeconfig { path: ref p, .. } if *p == path),
            "{err}"
        );
    }
}
