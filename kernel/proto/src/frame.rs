//! Length-prefixed postcard frames.
//!
//! Wire format: `u32` big-endian body length, then `length` bytes of postcard.
//!
//! Invariants of [`FrameDecoder`]:
//! - it never buffers more than the frame header (4 bytes) plus one body, and
//!   the body buffer never exceeds the configured limit: a header announcing
//!   more is rejected with [`FrameError::TooLarge`] before any allocation, and
//!   the body buffer grows only as bytes actually arrive (a peer can't make us
//!   reserve 4 MiB by sending 4 bytes);
//! - it consumes input only up to the end of the frame it returns, so the
//!   caller's remaining bytes are the start of the next frame;
//! - a body must decode to exactly one message with no trailing bytes (so
//!   every accepted frame re-encodes to the same bytes).
//!
//! Errors and the stream: `TooLarge` is fatal (the decoder stays failed and
//! the caller should close the connection). `Malformed` and `UnknownMessage`
//! leave the stream in sync at the next frame; the protocol's policy is to
//! close on `Malformed` and to skip `UnknownMessage` (see the crate docs).

use alloc::vec::Vec;
use core::fmt;
use core::marker::PhantomData;

use crate::{MIN_PROTOCOL_VERSION, Message, PROTOCOL_VERSION};

/// Size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// A decoded body buffer larger than this is freed rather than kept for the
/// next frame, so one big frame doesn't pin memory for the connection's life.
const KEEP_CAPACITY: usize = 64 << 10;

/// Everything that can go wrong with a frame or the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The header announced (or the encoder produced) `len` bytes, over `max`.
    TooLarge { len: usize, max: usize },
    /// The input ended in the middle of a frame.
    Truncated { have: usize, need: usize },
    /// The body isn't a valid message; `detail` says which check failed.
    Malformed { detail: &'static str },
    /// A top-level message variant this build doesn't know (sent by a newer
    /// peer); the frame was consumed and the stream is still in sync.
    UnknownMessage { variant: u32 },
    /// The peer's hello offers no version we speak.
    UnsupportedVersion { peer_min: u16, peer_max: u16 },
}

impl FrameError {
    /// Whether the stream is unusable after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::TooLarge { .. } | Self::Truncated { .. })
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { len, max } => write!(f, "frame of {len} bytes exceeds limit {max}"),
            Self::Truncated { have, need } => {
                write!(f, "stream ended inside a frame ({have} of {need} bytes)")
            }
            Self::Malformed { detail } => write!(f, "malformed frame: {detail}"),
            Self::UnknownMessage { variant } => write!(f, "unknown message variant {variant}"),
            Self::UnsupportedVersion { peer_min, peer_max } => write!(
                f,
                "peer speaks protocol {peer_min}..={peer_max}, we speak \
                 {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}"
            ),
        }
    }
}

impl core::error::Error for FrameError {}

fn malformed(e: postcard::Error) -> FrameError {
    use postcard::Error as E;
    let detail = match e {
        E::DeserializeUnexpectedEnd => "body ends early",
        E::DeserializeBadVarint => "bad varint",
        E::DeserializeBadBool => "bad bool",
        E::DeserializeBadChar => "bad char",
        E::DeserializeBadUtf8 => "bad utf-8",
        E::DeserializeBadOption => "bad option tag",
        E::DeserializeBadEnum => "bad enum variant",
        E::DeserializeBadEncoding => "bad encoding",
        E::DeserializeBadCrc => "bad crc",
        E::SerdeDeCustom => "invalid value",
        _ => "invalid body",
    };
    FrameError::Malformed { detail }
}

/// The body length announced by a frame header, if `bytes` holds one.
pub fn frame_len(bytes: &[u8]) -> Option<usize> {
    let h: [u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(h) as usize)
}

/// Encodes `msg` as one frame appended to `out`. Fails (appending nothing)
/// if the body would exceed `max`.
pub fn encode_frame_into<M: Message>(
    msg: &M,
    out: &mut Vec<u8>,
    max: usize,
) -> Result<(), FrameError> {
    // Serialize first (it's our own message, bounded by what we built), then
    // check the limit before anything reaches the output.
    let body = postcard::to_allocvec(msg).map_err(malformed)?;
    let len = body.len();
    if len > max || len > u32::MAX as usize {
        return Err(FrameError::TooLarge { len, max });
    }
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Encodes `msg` as one frame.
pub fn encode_frame<M: Message>(msg: &M, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::new();
    encode_frame_into(msg, &mut out, max)?;
    Ok(out)
}

/// Decodes one complete frame from the front of `bytes`; returns the message
/// and the number of bytes it took.
pub fn decode_frame<M: Message>(bytes: &[u8], max: usize) -> Result<(M, usize), FrameError> {
    let len = frame_len(bytes).ok_or(FrameError::Truncated {
        have: bytes.len(),
        need: HEADER_LEN,
    })?;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let body = bytes
        .get(HEADER_LEN..HEADER_LEN + len)
        .ok_or(FrameError::Truncated {
            have: bytes.len(),
            need: HEADER_LEN + len,
        })?;
    Ok((decode_body(body)?, HEADER_LEN + len))
}

/// Decodes a frame body (without its header).
pub fn decode_body<M: Message>(body: &[u8]) -> Result<M, FrameError> {
    // Check the top-level variant first, so a newer peer's message is
    // reported as unknown (skippable) rather than malformed.
    let variant = leading_varint(body).ok_or(FrameError::Malformed {
        detail: "bad message tag",
    })?;
    if variant >= M::VARIANTS {
        return Err(FrameError::UnknownMessage { variant });
    }
    let (msg, rest) = postcard::take_from_bytes::<M>(body).map_err(malformed)?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed {
            detail: "trailing bytes",
        });
    }
    Ok(msg)
}

/// postcard's varint `u32` (LEB128, at most 5 bytes, no overflow).
fn leading_varint(bytes: &[u8]) -> Option<u32> {
    let mut v: u32 = 0;
    for (i, &b) in bytes.iter().take(5).enumerate() {
        let part = u32::from(b & 0x7f);
        if i == 4 && part > 0x0f {
            return None;
        }
        v |= part << (7 * i);
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// A streaming frame decoder for one direction of one connection.
///
/// ```
/// use skiff_node_proto::{FrameDecoder, PlaneToNode, MAX_FRAME};
/// let mut dec = FrameDecoder::<PlaneToNode>::new(MAX_FRAME);
/// let mut input: &[u8] = &[]; // bytes just read from the socket
/// while let Some(msg) = dec.push(&mut input) {
///     let _ = msg; // handle Ok(message) / Err(error)
/// }
/// // `input` is now empty: read more and push again.
/// ```
pub struct FrameDecoder<M> {
    max: usize,
    header: [u8; HEADER_LEN],
    header_len: usize,
    /// Body length once the header is complete.
    body_len: usize,
    body: Vec<u8>,
    failed: Option<FrameError>,
    _msg: PhantomData<fn() -> M>,
}

impl<M> fmt::Debug for FrameDecoder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameDecoder")
            .field("max", &self.max)
            .field("header_len", &self.header_len)
            .field("body_len", &self.body_len)
            .field("buffered", &self.body.len())
            .field("failed", &self.failed)
            .finish()
    }
}

impl<M: Message> FrameDecoder<M> {
    /// A decoder accepting bodies of at most `max` bytes (use
    /// [`crate::MAX_FRAME`] or [`crate::MAX_BOOTSTRAP_FRAME`]).
    pub fn new(max: usize) -> Self {
        Self {
            max,
            header: [0; HEADER_LEN],
            header_len: 0,
            body_len: 0,
            body: Vec::new(),
            failed: None,
            _msg: PhantomData,
        }
    }

    /// The body limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Consumes bytes from the front of `input` up to the end of the next
    /// frame. Returns `None` once `input` is empty without a complete frame
    /// (partial bytes are kept), `Some(Ok(msg))` for a frame, `Some(Err(..))`
    /// for a bad one. After a fatal error the decoder stays failed: each later
    /// call with non-empty input drains it and repeats the error.
    pub fn push(&mut self, input: &mut &[u8]) -> Option<Result<M, FrameError>> {
        if let Some(e) = self.failed {
            if input.is_empty() {
                return None;
            }
            *input = &[];
            return Some(Err(e));
        }
        if self.header_len < HEADER_LEN {
            let n = (HEADER_LEN - self.header_len).min(input.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
            self.header_len += n;
            *input = &input[n..];
            if self.header_len < HEADER_LEN {
                return None;
            }
            self.body_len = u32::from_be_bytes(self.header) as usize;
            if self.body_len > self.max {
                let e = FrameError::TooLarge {
                    len: self.body_len,
                    max: self.max,
                };
                self.failed = Some(e);
                *input = &[];
                return Some(Err(e));
            }
        }
        let need = self.body_len - self.body.len();
        let n = need.min(input.len());
        if n > 0 {
            // Grow only by what arrived (exactly), never past `body_len`.
            self.body.reserve_exact(n);
            self.body.extend_from_slice(&input[..n]);
            *input = &input[n..];
        }
        if self.body.len() < self.body_len {
            return None;
        }
        let result = decode_body(&self.body);
        self.header_len = 0;
        self.body_len = 0;
        if self.body.capacity() > KEEP_CAPACITY {
            self.body = Vec::new();
        } else {
            self.body.clear();
        }
        Some(result)
    }

    /// Whether the decoder sits at a frame boundary (nothing partial buffered).
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && self.failed.is_none()
    }

    /// Call at end of stream: `Err(Truncated)` if a frame was cut off.
    pub fn finish(&self) -> Result<(), FrameError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.header_len == 0 {
            return Ok(());
        }
        let (have, need) = if self.header_len < HEADER_LEN {
            (self.header_len, HEADER_LEN)
        } else {
            (HEADER_LEN + self.body.len(), HEADER_LEN + self.body_len)
        };
        Err(FrameError::Truncated { have, need })
    }

    /// Bytes currently reserved for the body (never above [`Self::max`]).
    pub fn buffer_capacity(&self) -> usize {
        self.body.capacity()
    }
}

impl crate::Hello {
    /// The version to use with this peer, or `UnsupportedVersion`.
    pub fn negotiate(&self) -> Result<u16, FrameError> {
        crate::negotiate(self.min_version, self.max_version).ok_or(FrameError::UnsupportedVersion {
            peer_min: self.min_version,
            peer_max: self.max_version,
        })
    }
}
