//! skiff-apiserver: a Kubernetes-compatible API server over skiff-store.
//!
//! Module map: [`pki`] creates credentials; [`server`] terminates TLS and
//! authenticates ([`authn`], [`satoken`]); [`handlers`] routes kube URLs,
//! authorizes ([`authz`]) and runs verbs over [`storage`], with
//! [`admission`], [`patch`], [`ssa`], [`watch`], [`tables`], [`discovery`],
//! [`openapi`] and protobuf bodies (`skiff-kube-protobuf`) around it, and the subresources, namespace
//! deletion, ClusterIP allocation and [`pod_logs`] in their own modules; the [`registry`]
//! table describes every served resource.

pub mod admission;
pub mod authn;
pub mod authz;
mod clusterip;
pub mod discovery;
pub mod handlers;
pub mod http;
mod kinds;
pub mod limits;
mod namespaces;
pub mod openapi;
pub mod patch;
pub mod pki;
pub mod pod_logs;
pub mod rbac_cache;
pub mod registry;
pub mod satoken;
pub mod selectors;
pub mod server;
pub mod ssa;
pub mod status;
pub mod storage;
mod subresources;
pub mod tables;
pub mod watch;

pub use server::{Running, ServeConfig, start};
