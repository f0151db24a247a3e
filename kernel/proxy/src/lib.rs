//! The node's kube-proxy core, without I/O: what a Skiff node needs to
//! serve Services the way Cilium's socket-level load balancer does (no
//! NAT: a pod's `connect` to a ClusterIP is pointed at a backend before
//! any packet leaves).
//!
//! - [`ServiceTable`]: the cluster's Services and endpoints as the node
//!   knows them, kept from the node protocol's `Services` (full state with
//!   a generation, possibly in parts) and `ServiceDelta` messages;
//! - [`ServiceTable::resolve`] / [`ServiceTable::node_port`]: connect-time
//!   translation, choosing endpoints as kube-proxy's `CategorizeEndpoints`
//!   does (traffic policies, `hints.forNodes`, serving-terminating
//!   fallback), then `sessionAffinity: ClientIP` or a random pick;
//! - [`ServiceTable::lookup`]: cluster DNS answers for the node's resolver
//!   (pods' names resolve through a host call: no DNS wire format here).
//!
//! Time and randomness are passed in, so every decision is reproducible in
//! tests.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

mod dns;
mod error;
mod table;

pub use dns::{DEFAULT_CLUSTER_DOMAIN, Lookup};
pub use error::ApplyError;
pub use skiff_node_proto::Protocol;
pub use table::{DEFAULT_AFFINITY_TIMEOUT_SECS, MAX_AFFINITY_ENTRIES, Resolution, ServiceTable};

#[cfg(test)]
mod tests;
