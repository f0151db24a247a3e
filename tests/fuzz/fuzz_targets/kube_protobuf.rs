//! Kubernetes protobuf request bodies as the API server decodes them
//! (`skiff-kube-protobuf`): nothing panics, and what decodes round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| skiff_kube_protobuf::fuzz::one(data));
