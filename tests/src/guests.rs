//! The example wasm guests (`tests/wasm`), built once per test process by
//! `skiff-build` (into the directory every crate's tests share, so the
//! build is shared too).

pub use skiff_build::{test_guest as path, test_guests as dir};
