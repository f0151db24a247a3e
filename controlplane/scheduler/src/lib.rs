//! The Skiff scheduler: a Kubernetes-compatible pod scheduler that runs as a
//! client of the API server (kube-rs watches in, `pods/binding` out).
//!
//! The core is pure and tested without a server: [`cache`] (nodes and the
//! pods placed on them, including assumed ones), [`queue`] (priority order
//! and back-off), [`framework`] (filter/score plugin traits, node sampling,
//! the "0/N nodes are available" message) and [`plugins`] (the in-tree
//! plugins and kube's default profile). [`run`] wires them to the API with
//! leader election ([`leader`]).

pub mod cache;
pub mod framework;
pub mod labels;
pub use skiff_client::leader;
pub mod plugins;
pub mod queue;
pub mod resources;
mod scheduler;

pub use scheduler::{PENDING_QUEUES, RunError, SchedulerConfig, Stats, run};
pub use skiff_client::{ClientError, client_from_kubeconfig};

/// The `spec.schedulerName` this scheduler serves by default.
pub const DEFAULT_SCHEDULER: &str = "default-scheduler";
