//! events.k8s.io/v1: the same Events as core/v1, named differently.

use crate::registry::{BASE, Resource, Typed};

pub const EVENTS: Resource = Resource {
    group: "events.k8s.io",
    kind: "Event",
    plural: "events",
    singular: "event",
    short_names: &["ev"],
    has_spec: false,
    typed: Some(Typed::of::<k8s_openapi::api::events::v1::Event>()),
    columns: super::core::EVENT_COLUMNS,
    cells: super::core::event_cells,
    ..BASE
};
