//! discovery.k8s.io/v1: EndpointSlices.

use crate::registry::{BASE, Resource, Typed};

pub const ENDPOINT_SLICES: Resource = Resource {
    group: "discovery.k8s.io",
    kind: "EndpointSlice",
    plural: "endpointslices",
    singular: "endpointslice",
    has_spec: false,
    typed: Some(Typed::of::<k8s_openapi::api::discovery::v1::EndpointSlice>()),
    ..BASE
};
