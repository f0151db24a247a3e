//! skiff-apiserver: a Kubernetes-compatible API server over skiff-store.
//!
//! Module map: [`pki`] creates credentials; [`server`] terminates TLS and
//! authenticates ([`authn`], [`satoken`]); [`handlers`] routes kube URLs,
//! authorizes ([`authz`]) and runs verbs over [`storage`], with
//! [`admission`], [`patch`], [`ssa`], [`watch`], [`tables`], [`discovery`],
//! [`openapi`] and protobuf bodies (`skiff-kube-protobuf`) around it, and the subresources, namespace
//! deletion, ClusterIP allocation and [`pod_logs`] in their own modules; the [`registry`]
//! table describes every served resource.

/// Calls `$callback!(<args>, "Kind", "group" => Type, ...)` with every kind
/// that has a typed `k8s-openapi` struct, so the places that need the Rust
/// type (admission's typed round trip, OpenAPI schemas) list the kinds once.
macro_rules! with_typed_kinds {
    ($callback:ident!($($args:tt)*)) => {
        $callback!($($args)*,
            "Namespace", "" => k8s_openapi::api::core::v1::Namespace,
            "Node", "" => k8s_openapi::api::core::v1::Node,
            "Pod", "" => k8s_openapi::api::core::v1::Pod,
            "Service", "" => k8s_openapi::api::core::v1::Service,
            "Endpoints", "" => k8s_openapi::api::core::v1::Endpoints,
            "ConfigMap", "" => k8s_openapi::api::core::v1::ConfigMap,
            "Secret", "" => k8s_openapi::api::core::v1::Secret,
            "ServiceAccount", "" => k8s_openapi::api::core::v1::ServiceAccount,
            "Event", "" => k8s_openapi::api::core::v1::Event,
            "Deployment", "apps" => k8s_openapi::api::apps::v1::Deployment,
            "ReplicaSet", "apps" => k8s_openapi::api::apps::v1::ReplicaSet,
            "DaemonSet", "apps" => k8s_openapi::api::apps::v1::DaemonSet,
            "Job", "batch" => k8s_openapi::api::batch::v1::Job,
            "CronJob", "batch" => k8s_openapi::api::batch::v1::CronJob,
            "Lease", "coordination.k8s.io" => k8s_openapi::api::coordination::v1::Lease,
            "EndpointSlice", "discovery.k8s.io" => k8s_openapi::api::discovery::v1::EndpointSlice,
            "Event", "events.k8s.io" => k8s_openapi::api::events::v1::Event,
            "Role", "rbac.authorization.k8s.io" => k8s_openapi::api::rbac::v1::Role,
            "RoleBinding", "rbac.authorization.k8s.io" => k8s_openapi::api::rbac::v1::RoleBinding,
            "ClusterRole", "rbac.authorization.k8s.io" => k8s_openapi::api::rbac::v1::ClusterRole,
            "ClusterRoleBinding", "rbac.authorization.k8s.io" => k8s_openapi::api::rbac::v1::ClusterRoleBinding,
        )
    };
}

pub mod admission;
pub mod authn;
pub mod authz;
mod clusterip;
pub mod discovery;
pub mod handlers;
pub mod http;
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
