//! The host⇄node diagnostic protocol (kernel/README.md, *Diagnostic
//! service*), both directions, for the node's service (`kernel/src/diag.rs`)
//! and the host's client (`skiff-qemu`):
//!
//! - a [`Request`] is one ASCII line, [`parse`]d by the node into a
//!   [`Line`] and written by the host with `Display`; a line may end with
//!   `token=<secret>`: requests that change the node
//!   ([`Request::is_mutating`]) are served only when the node was given
//!   `skiff.diag_token` and the line carries it ([`authorize`]);
//! - a [`Response`] (the [`Status`] response among them) is written by the
//!   node with `Display` and parsed by the host with [`parse_response`];
//!   refusals are `error <reason>` ([`Failure`]);
//! - [`Hex`] and [`decode_hex`] are the sector payloads' codec.
//!
//! No allocation: the sector payloads decode into fixed 512-byte buffers,
//! everything else borrows from the line; encoding writes to any
//! [`core::fmt::Write`].
#![cfg_attr(not(any(test, feature = "fuzz")), no_std)]

mod hex;
mod request;
mod response;

pub use hex::{Hex, decode_hex};
pub use request::{
    Denied, Line, MAX_LINE, MAX_NAME, MAX_SLEEP_MS, ParseError, Redacted, Request, SECTOR,
    authorize, parse,
};
pub use response::{Cidr, DecodeError, Failure, Response, Status, parse_response};

/// The node's request parser and the host's response parser under arbitrary
/// input (`cargo xtask fuzz diag`, and bounded in `cargo test`).
#[cfg(any(test, feature = "fuzz"))]
pub mod fuzz {
    use super::{MAX_LINE, Redacted, authorize, parse, parse_response};

    /// `data` as a request line and as a response: nothing panics, an
    /// accepted line is written back as one that parses the same (within
    /// [`MAX_LINE`]), no token shows when the line is logged, and an
    /// accepted response round-trips too.
    pub fn one(data: &[u8]) {
        let Ok(text) = core::str::from_utf8(data) else {
            return;
        };
        let shown = Redacted(text).to_string();
        for word in shown.split_ascii_whitespace() {
            if let Some(v) = word.strip_prefix("token=") {
                assert_eq!(v, "<redacted>", "{text:?}");
            }
        }
        if let Ok(line) = parse(text) {
            let again = line.to_string();
            assert_eq!(parse(&again).as_ref(), Ok(&line), "{text:?} → {again:?}");
            if text.len() <= MAX_LINE {
                assert!(again.len() <= MAX_LINE, "{text:?} → {again:?}");
            }
            // A mutating request never passes without the right token.
            if line.request.is_mutating() {
                assert!(authorize(&line, None).is_err());
                if line.token != Some("0123456789abcdef") {
                    assert!(authorize(&line, Some("0123456789abcdef")).is_err());
                }
            }
        }
        if let Ok(response) = parse_response(text) {
            let again = response.to_string();
            assert_eq!(
                parse_response(&again).as_ref(),
                Ok(&response),
                "{text:?} → {again:?}"
            );
        }
    }

    #[cfg(test)]
    mod tests {
        /// Bounded fuzzing on stable over [`super::one`] (`SKIFF_FUZZ_SECS`,
        /// `SKIFF_FUZZ_SEED` override): mutations of the fuzz target's seeds
        /// (`tests/fuzz/seeds/diag`: real requests and responses).
        #[test]
        fn fuzz_diag_bounded() {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fuzz/seeds/diag");
            let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| std::fs::read(e.unwrap().path()).unwrap())
                .collect();
            assert!(seeds.len() > 10, "{dir}");
            let mut run = skiff_test_support::fuzz::Bounded::from_env(1.0, 0xd1a9);
            while run.running() {
                let mut input = seeds[run.below(seeds.len())].clone();
                run.mutate(&mut input);
                super::one(&input);
            }
            eprintln!("fuzz: {} diag lines", run.runs());
            assert!(run.runs() > 100);
        }
    }
}
