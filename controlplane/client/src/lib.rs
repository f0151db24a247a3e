//! What every Skiff control-plane component (scheduler, controller
//! manager) needs to be an ordinary API client: a [`kube::Client`] from its
//! kubeconfig, and [`leader`] election over a coordination.k8s.io Lease so
//! several replicas can run with one active.

pub mod leader;

use std::path::Path;

use kube::Client;

/// A client for the API server from a kubeconfig, optionally pointed at
/// another server URL (the control plane passes its actual listen address).
pub async fn client_from_kubeconfig(path: &Path, server: Option<&str>) -> Result<Client, String> {
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .map_err(|e| err(&e))?;
    if let Some(s) = server {
        cfg.cluster_url = s.parse().map_err(|e| format!("server URL {s:?}: {e}"))?;
    }
    Client::try_from(cfg).map_err(|e| err(&e))
}
