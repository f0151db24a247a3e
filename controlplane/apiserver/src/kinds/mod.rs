//! Every served kind, one `Resource` entry each, grouped by API group. An
//! entry carries what is the kind's own: its names and scope, its typed
//! struct (admission's decoding, OpenAPI's schema), defaults, validation,
//! update rules and `kubectl get` columns. Everything else (storage,
//! discovery, protobuf, routing) is generic over the entry.

mod apiextensions;
mod apps;
mod autoscaling;
mod batch;
mod coordination;
mod core;
mod discovery;
mod events;
pub(crate) mod metrics;
mod networking;
mod rbac;
mod scheduling;

pub(crate) use scheduling::Priority;

use crate::registry::Resource;

/// The served resources, in the order discovery lists them (core first, as
/// kube does).
pub static RESOURCES: &[Resource] = &[
    core::NAMESPACES,
    core::NODES,
    core::PODS,
    core::SERVICES,
    core::ENDPOINTS,
    core::CONFIG_MAPS,
    core::SECRETS,
    core::SERVICE_ACCOUNTS,
    core::EVENTS,
    apps::DEPLOYMENTS,
    apps::REPLICA_SETS,
    apps::DAEMON_SETS,
    autoscaling::HORIZONTAL_POD_AUTOSCALERS,
    batch::JOBS,
    batch::CRON_JOBS,
    coordination::LEASES,
    discovery::ENDPOINT_SLICES,
    events::EVENTS,
    networking::NETWORK_POLICIES,
    metrics::NODE_METRICS,
    metrics::POD_METRICS,
    rbac::ROLES,
    rbac::ROLE_BINDINGS,
    rbac::CLUSTER_ROLES,
    rbac::CLUSTER_ROLE_BINDINGS,
    scheduling::PRIORITY_CLASSES,
    apiextensions::CUSTOM_RESOURCE_DEFINITIONS,
];
