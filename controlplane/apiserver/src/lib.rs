//! skiff-apiserver: a Kubernetes-compatible API server over skiff-store.
//!
//! The API is what the binary, the gateway and the tests use: [`start`] a
//! server from a [`ServeConfig`] (its [`Running`] handle and shared
//! [`State`]), [`pki`] to create credentials, [`handle`] for an in-process
//! request as an authenticated [`Identity`], and the node-facing pieces the
//! gateway shares (NodeRestriction's label rule, the pod-log provider).
//!
//! Inside (private modules): `server` terminates TLS and authenticates
//! (`authn`, `satoken`); `handlers` routes kube URLs, authorizes (`authz`)
//! and runs verbs over `storage`, with `admission`, `patch`, `ssa`, `watch`,
//! `tables`, `discovery`, `openapi` and protobuf bodies
//! (`skiff-kube-protobuf`) around it, and the subresources, namespace
//! deletion, ClusterIP allocation, `pod_logs` and metrics.k8s.io
//! (`resource_metrics`, from a [`UsageSource`]) and Prometheus `/metrics`
//! (`prometheus`, [`Metrics`]) in their own modules; the
//! `registry` describes every served resource, one entry per kind in
//! `kinds`, plus those CustomResourceDefinitions define (`crd`, with their
//! structural schemas in `schema`).

mod admission;
mod authn;
mod authz;
mod cluster;
mod clusterip;
mod connect;
mod crd;
mod discovery;
mod handlers;
mod health;
mod http;
mod jsonpath;
mod kinds;
mod limits;
mod namespaces;
mod openapi;
mod patch;
pub mod pki;
mod pod_logs;
mod prometheus;
mod rbac_cache;
mod registry;
mod resource_metrics;
mod satoken;
mod schema;
mod selectors;
mod server;
mod ssa;
mod status;
mod storage;
mod subresources;
mod tables;
mod watch;

pub use admission::{cluster_ip, node_may_set_label};
pub use authn::{Identity, identity_from_cert, with_authenticated_group};
pub use connect::{PodConnector, PodStream, PodTarget};
pub use handlers::handle;
pub use limits::Limits;
pub use pod_logs::{LogItem, LogProvider, LogQuery, LogStream};
pub use prometheus::Metrics;
pub use prometheus_client;
pub use resource_metrics::{NodeSample, PodSample, Usage, UsageSource};
pub use satoken::{
    API_AUDIENCE, Claims as TokenClaims, ISSUER as TOKEN_ISSUER, KeyError as TokenKeyError,
    Keys as TokenKeys,
};
pub use server::{
    Running, ServeConfig, StartError, State, start, start_with_store, tls_server_config,
};
pub use status::{ApiError, ApiResult};

/// Entry points of the fuzz targets in `tests/fuzz`; not an API.
#[doc(hidden)]
pub mod fuzz {
    pub use crate::patch::fuzz as patch;
    pub use crate::satoken::fuzz as satoken;
    pub use crate::selectors::fuzz as selectors;
}
