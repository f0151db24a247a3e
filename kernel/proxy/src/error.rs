//! Why a message did not apply.

/// A Service message the table could not apply. The node answers with
/// `NodeToPlane::ServiceResyncRequest { have }` and the plane resends the
/// full state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApplyError {
    /// A delta from `from_generation` while the table is at `have` (or
    /// still assembling a full state in parts).
    Generation { have: u64, from_generation: u64 },
}

impl core::fmt::Display for ApplyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ApplyError::Generation {
                have,
                from_generation,
            } => write!(
                f,
                "service delta from generation {from_generation} does not apply to generation {have}"
            ),
        }
    }
}

impl core::error::Error for ApplyError {}
