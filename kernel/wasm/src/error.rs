//! Errors from loading artifacts and creating containers. What happens inside
//! a running guest is reported by [`crate::Step`], not here.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input does not start with the wasm magic number.
    NotWasm,
    /// The module failed validation or compilation.
    Invalid(String),
    /// A valid input this runtime does not run (yet).
    Unsupported(&'static str),
    /// The module uses a wasm proposal beyond WebAssembly 2.0 (named in
    /// wasmparser's spelling, e.g. `multi-memory`, `threads`, `memory64`).
    UnsupportedFeature(String),
    /// The component imports interfaces this runtime does not serve: all of
    /// them, named as imported (e.g. `wasi:sockets/tcp@0.2.6`), in import
    /// order; see [`crate::SERVED_INTERFACES`].
    UnsupportedImports(Vec<String>),
    /// The component exports neither [`crate::RUN_EXPORT`] nor
    /// [`crate::HANDLER_EXPORT`]: only command components (what
    /// `wasm32-wasip2` programs are) and HTTP handlers run as containers.
    NotACommand,
    /// The artifact is not a precompiled module for this runtime's
    /// configuration (other wasmtime version, target, flags, or corrupt).
    Artifact(String),
    /// The module or component imports something this runtime does not
    /// provide.
    Link(String),
    /// The container spec cannot be honoured.
    Spec(String),
    /// wasmtime refused the engine configuration.
    Engine(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotWasm => f.write_str("not a WebAssembly module (missing \\0asm magic)"),
            Error::Invalid(e) => write!(f, "invalid WebAssembly module: {e}"),
            Error::Unsupported(what) => write!(f, "unsupported: {what}"),
            Error::UnsupportedFeature(name) => write!(
                f,
                "the module uses the wasm feature {name:?}; only WebAssembly 2.0 is supported"
            ),
            Error::UnsupportedImports(names) => write!(
                f,
                "the component imports {}, which this node does not provide",
                names.join(", ")
            ),
            Error::NotACommand => write!(
                f,
                "the component exports neither {}@0.2 nor {}@0.2 (only command components, as built for wasm32-wasip2, and HTTP handlers run as containers)",
                crate::RUN_EXPORT,
                crate::HANDLER_EXPORT
            ),
            Error::Artifact(e) => write!(f, "unusable precompiled artifact: {e}"),
            Error::Link(e) => write!(f, "cannot link module: {e}"),
            Error::Spec(e) => write!(f, "invalid container spec: {e}"),
            Error::Engine(e) => write!(f, "wasm engine configuration rejected: {e}"),
        }
    }
}

impl core::error::Error for Error {}
