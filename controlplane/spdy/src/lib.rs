//! SPDY/3.1 framing, the transport `kubectl port-forward` speaks to the
//! API server (kube's `httpstream/spdy`, moby's spdystream), as a codec
//! without I/O: [`Decoder`] turns bytes into [`Frame`]s, [`Encoder`] the
//! other way.
//!
//! Each direction of a connection compresses its header blocks as one
//! zlib stream primed with SPDY/3's dictionary, so each side keeps one
//! [`Decoder`] and one [`Encoder`] for the connection's life.
//!
//! Bounded: a frame longer than [`Limits::max_frame`] or a header block
//! that inflates beyond [`Limits::max_headers`] is an error, never a
//! large allocation; so is any malformed frame. Flow control
//! (`WINDOW_UPDATE`) is decoded but not enforced here: kube's peers do not
//! use it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// SPDY/3's header-compression dictionary (draft-mbelshe-httpbis-spdy-00
/// §2.6.10.1), a constant of the protocol.
const DICTIONARY: &[u8] = include_bytes!("dictionary.bin");

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
const FLAG_UNIDIRECTIONAL: u8 = 0x02;
const HEADER_LEN: usize = 8;

/// Header name/value pairs; names are lower case, several values of one
/// name are joined by NUL.
pub type Headers = Vec<(String, String)>;

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_id: u32,
        priority: u8,
        fin: bool,
        unidirectional: bool,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    /// Settings are read and ignored: kube's peers send none that matter.
    Settings,
    Ping {
        id: u32,
    },
    GoAway {
        last_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
    /// A control frame of a type this codec does not know (SPDY says:
    /// ignore it).
    Unknown {
        kind: u16,
    },
}

/// `RST_STREAM` status codes used here.
pub mod status {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("SPDY version {0} is not spoken (3 is)")]
    Version(u16),
    #[error("frame of {len} bytes is over the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("{kind} frame is malformed: {why}")]
    Malformed {
        kind: &'static str,
        why: &'static str,
    },
    #[error("header block does not inflate: {0}")]
    Compression(String),
    #[error("header block inflates beyond {0} bytes")]
    HeadersTooLarge(usize),
}

/// What one connection accepts.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest frame payload.
    pub max_frame: usize,
    /// Largest inflated header block.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame: 64 << 10,
            max_headers: 16 << 10,
        }
    }
}

/// Reads frames from one direction of a connection.
pub struct Decoder {
    limits: Limits,
    inflate: Decompress,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn malformed(kind: &'static str, why: &'static str) -> Error {
    Error::Malformed { kind, why }
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            inflate: Decompress::new(true),
        }
    }

    /// The next whole frame from the front of `buf` (consumed), `None` if
    /// `buf` holds only part of one. After an `Err` the connection is not
    /// usable: the header stream may be out of step.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let word = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = buf[4];
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        if len > self.limits.max_frame {
            return Err(Error::TooLong {
                len,
                max: self.limits.max_frame,
            });
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let mut body = buf.split_to(len).freeze();
        if word & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream_id: word & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: body,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(Error::Version(version));
        }
        let kind = (word & 0xffff) as u16;
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            1 => {
                let (stream_id, associated_id) = (
                    stream_id(&mut body, "SYN_STREAM")?,
                    stream_id(&mut body, "SYN_STREAM")?,
                );
                let priority = take::<2>(&mut body, "SYN_STREAM")?[0] >> 5;
                Frame::SynStream {
                    stream_id,
                    associated_id,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.headers(&body, "SYN_STREAM")?,
                }
            }
            2 => Frame::SynReply {
                stream_id: stream_id(&mut body, "SYN_REPLY")?,
                fin,
                headers: self.headers(&body, "SYN_REPLY")?,
            },
            3 => Frame::RstStream {
                stream_id: stream_id(&mut body, "RST_STREAM")?,
                status: word_of(&mut body, "RST_STREAM")?,
            },
            4 => Frame::Settings,
            6 => Frame::Ping {
                id: word_of(&mut body, "PING")?,
            },
            7 => Frame::GoAway {
                last_stream_id: stream_id(&mut body, "GOAWAY")?,
                status: word_of(&mut body, "GOAWAY")?,
            },
            8 => Frame::Headers {
                stream_id: stream_id(&mut body, "HEADERS")?,
                fin,
                headers: self.headers(&body, "HEADERS")?,
            },
            9 => Frame::WindowUpdate {
                stream_id: stream_id(&mut body, "WINDOW_UPDATE")?,
                delta: word_of(&mut body, "WINDOW_UPDATE")? & 0x7fff_ffff,
            },
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }

    /// Inflates a header block (the next piece of this direction's zlib
    /// stream) and parses its pairs.
    fn headers(&mut self, mut input: &[u8], kind: &'static str) -> Result<Headers, Error> {
        let max = self.limits.max_headers;
        let mut block = Vec::with_capacity(input.len().saturating_mul(4).min(max));
        while !input.is_empty() {
            if block.len() == block.capacity() {
                if block.len() >= max {
                    return Err(Error::HeadersTooLarge(max));
                }
                block.reserve((block.len() * 2).clamp(256, max) - block.len());
            }
            let before = self.inflate.total_in();
            match self
                .inflate
                .decompress_vec(input, &mut block, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| Error::Compression(e.to_string()))?;
                }
                Err(e) => return Err(Error::Compression(e.to_string())),
            }
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            if used == 0 && block.len() < block.capacity() && !input.is_empty() {
                // No progress with room to spare: the stream is stuck.
                return Err(Error::Compression("no progress".into()));
            }
        }
        parse_block(&block, kind)
    }
}

fn take<const N: usize>(body: &mut Bytes, kind: &'static str) -> Result<[u8; N], Error> {
    if body.len() < N {
        return Err(malformed(kind, "too short"));
    }
    let mut out = [0; N];
    body.copy_to_slice(&mut out);
    Ok(out)
}

fn word_of(body: &mut Bytes, kind: &'static str) -> Result<u32, Error> {
    take::<4>(body, kind).map(u32::from_be_bytes)
}

fn stream_id(body: &mut Bytes, kind: &'static str) -> Result<u32, Error> {
    word_of(body, kind).map(|w| w & 0x7fff_ffff)
}

fn parse_block(mut b: &[u8], kind: &'static str) -> Result<Headers, Error> {
    let word = |b: &mut &[u8]| -> Result<usize, Error> {
        let w: [u8; 4] = b
            .get(..4)
            .and_then(|w| w.try_into().ok())
            .ok_or_else(|| malformed(kind, "header block cut short"))?;
        *b = &b[4..];
        Ok(u32::from_be_bytes(w) as usize)
    };
    let count = word(&mut b)?;
    // Each pair takes at least 8 bytes: a count beyond that is a lie.
    if count > b.len() / 8 {
        return Err(malformed(kind, "header count exceeds the block"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let text = |b: &mut &[u8]| -> Result<String, Error> {
            let n = word(b)?;
            let s = b
                .get(..n)
                .ok_or_else(|| malformed(kind, "header cut short"))?;
            *b = &b[n..];
            String::from_utf8(s.to_vec()).map_err(|_| malformed(kind, "header is not UTF-8"))
        };
        let name = text(&mut b)?;
        let value = text(&mut b)?;
        if name.is_empty() {
            return Err(malformed(kind, "empty header name"));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// Writes frames for one direction of a connection.
pub struct Encoder {
    deflate: Compress,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").finish_non_exhaustive()
    }
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder::new()
    }
}

impl Encoder {
    pub fn new() -> Encoder {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(DICTIONARY)
            .expect("a fresh deflate stream takes a dictionary");
        Encoder { deflate }
    }

    /// Appends `frame` to `out`. Data longer than a frame can say (16 MiB)
    /// is the caller's to split.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) {
        let start = out.len();
        let control = |out: &mut BytesMut, kind: u16, flags: u8| {
            out.put_u32(0x8000_0000 | u32::from(VERSION) << 16 | u32::from(kind));
            out.put_u32(u32::from(flags) << 24); // length patched below
        };
        let fin = |f: bool| if f { FLAG_FIN } else { 0 };
        match frame {
            Frame::Data {
                stream_id,
                fin: f,
                data,
            } => {
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32(u32::from(fin(*f)) << 24);
                out.put_slice(data);
            }
            Frame::SynStream {
                stream_id,
                associated_id,
                priority,
                fin: f,
                unidirectional,
                headers,
            } => {
                let flags = fin(*f)
                    | if *unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                control(out, 1, flags);
                out.put_u32(*stream_id);
                out.put_u32(*associated_id);
                out.put_u8(priority << 5);
                out.put_u8(0);
                self.put_headers(headers, out);
            }
            Frame::SynReply {
                stream_id,
                fin: f,
                headers,
            } => {
                control(out, 2, fin(*f));
                out.put_u32(*stream_id);
                self.put_headers(headers, out);
            }
            Frame::RstStream { stream_id, status } => {
                control(out, 3, 0);
                out.put_u32(*stream_id);
                out.put_u32(*status);
            }
            Frame::Settings => {
                control(out, 4, 0);
                out.put_u32(0);
            }
            Frame::Ping { id } => {
                control(out, 6, 0);
                out.put_u32(*id);
            }
            Frame::GoAway {
                last_stream_id,
                status,
            } => {
                control(out, 7, 0);
                out.put_u32(*last_stream_id);
                out.put_u32(*status);
            }
            Frame::Headers {
                stream_id,
                fin: f,
                headers,
            } => {
                control(out, 8, fin(*f));
                out.put_u32(*stream_id);
                self.put_headers(headers, out);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control(out, 9, 0);
                out.put_u32(*stream_id);
                out.put_u32(*delta);
            }
            Frame::Unknown { kind } => control(out, *kind, 0),
        }
        let len = out.len() - start - HEADER_LEN;
        assert!(len < 1 << 24, "a SPDY frame holds less than 16 MiB");
        out[start + 5..start + 8].copy_from_slice(&(len as u32).to_be_bytes()[1..]);
    }

    fn put_headers(&mut self, headers: &Headers, out: &mut BytesMut) {
        let mut block = Vec::new();
        block.put_u32(headers.len() as u32);
        for (name, value) in headers {
            block.put_u32(name.len() as u32);
            block.put_slice(name.to_ascii_lowercase().as_bytes());
            block.put_u32(value.len() as u32);
            block.put_slice(value.as_bytes());
        }
        let mut compressed = Vec::with_capacity(block.len() + 64);
        let mut input = &block[..];
        loop {
            let before = self.deflate.total_in();
            let status = self
                .deflate
                .compress_vec(input, &mut compressed, FlushCompress::Sync)
                .expect("deflate into a growing buffer does not fail");
            input = &input[(self.deflate.total_in() - before) as usize..];
            // Done when all is in and the flush left room to spare.
            if input.is_empty() && compressed.len() < compressed.capacity() {
                break;
            }
            if status == Status::BufError || compressed.len() == compressed.capacity() {
                compressed.reserve(compressed.capacity().max(64));
            }
        }
        out.put_slice(&compressed);
    }
}

#[cfg(test)]
mod tests;

/// Entry points of the fuzz target in `tests/fuzz`; not an API.
#[doc(hidden)]
pub mod fuzz {
    use super::*;

    /// Decodes `data` as one direction of a connection: nothing may panic,
    /// and every frame decoded re-encodes to itself.
    pub fn one(data: &[u8]) {
        let mut dec = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(data);
        while let Ok(Some(frame)) = dec.decode(&mut buf) {
            let mut wire = BytesMut::new();
            Encoder::new().encode(&frame, &mut wire);
            let again = Decoder::new(Limits::default()).decode(&mut wire);
            assert_eq!(again, Ok(Some(frame)), "re-encoded frame differs");
        }
    }

    /// Every kind of frame kubectl and the server exchange, as bytes.
    pub fn seed() -> Vec<u8> {
        let mut enc = Encoder::new();
        let mut wire = BytesMut::new();
        for f in crate::sample::every_frame() {
            enc.encode(&f, &mut wire);
        }
        wire.to_vec()
    }
}

#[doc(hidden)]
pub mod sample {
    use super::*;

    /// One frame of each kind, with the headers kubectl's port-forward sends.
    pub fn every_frame() -> Vec<Frame> {
        let h = |pairs: &[(&str, &str)]| -> Headers {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect()
        };
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_id: 0,
                priority: 3,
                fin: false,
                unidirectional: false,
                headers: h(&[
                    ("streamtype", "error"),
                    ("port", "8080"),
                    ("requestid", "0"),
                ]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_id: 1,
                priority: 0,
                fin: true,
                unidirectional: true,
                headers: h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::RstStream {
                stream_id: 3,
                status: status::CANCEL,
            },
            Frame::Settings,
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_stream_id: 5,
                status: 0,
            },
            Frame::Headers {
                stream_id: 5,
                fin: true,
                headers: h(&[("x", "a\0b")]),
            },
            Frame::WindowUpdate {
                stream_id: 5,
                delta: 65536,
            },
            Frame::Data {
                stream_id: 3,
                fin: false,
                data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
            },
            Frame::Data {
                stream_id: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::Unknown { kind: 0x55 },
        ]
    }
}
