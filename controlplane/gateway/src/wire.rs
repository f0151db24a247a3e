//! Frames over an async byte stream: the protocol crate's codec, with reads
//! that tell a clean end of stream from a frame cut off in the middle.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use skiff_node_proto::{FrameError, Message, decode_body, encode_frame};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};

/// Why reading a frame stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed at a frame boundary.
    Closed,
    /// A bad frame (too large, truncated, malformed, unknown message).
    Frame(FrameError),
    Io(std::io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("connection closed"),
            ReadError::Frame(e) => write!(f, "bad frame: {e}"),
            ReadError::Io(e) => write!(f, "read: {e}"),
        }
    }
}

/// Reads one frame of at most `max` body bytes.
pub async fn read_frame<M: Message, R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<M, ReadError> {
    let mut header = [0u8; 4];
    let mut have = 0;
    while have < header.len() {
        match r.read(&mut header[have..]).await {
            Ok(0) if have == 0 => return Err(ReadError::Closed),
            Ok(0) => {
                return Err(ReadError::Frame(FrameError::Truncated { have, need: 4 }));
            }
            Ok(n) => have += n,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && have == 0 => {
                return Err(ReadError::Closed);
            }
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(ReadError::Frame(FrameError::TooLarge { len, max }));
    }
    let mut body = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match r.read(&mut body[got..]).await {
            Ok(0) => {
                return Err(ReadError::Frame(FrameError::Truncated {
                    have: 4 + got,
                    need: 4 + len,
                }));
            }
            Ok(n) => got += n,
            Err(e) => return Err(ReadError::Io(e)),
        }
    }
    decode_body(&body).map_err(ReadError::Frame)
}

/// Writes one frame and flushes it; the frame's length in bytes.
pub async fn write_frame<M: Message, W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &M,
    max: usize,
) -> std::io::Result<usize> {
    let bytes = encode_frame(msg, max).map_err(|e| std::io::Error::other(e.to_string()))?;
    w.write_all(&bytes).await?;
    w.flush().await?;
    Ok(bytes.len())
}

/// A reader that adds every byte read through it to a counter (a
/// session's bytes from its node, frames or not).
pub struct Counted<'a, R> {
    pub inner: R,
    pub bytes: &'a AtomicU64,
}

impl<R: AsyncRead + Unpin> AsyncRead for Counted<'_, R> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let me = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut me.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        me.bytes.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skiff_node_proto::{MAX_BOOTSTRAP_FRAME, NodeToPlane};

    fn read(bytes: &[u8]) -> Result<NodeToPlane, ReadError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut r = bytes;
        rt.block_on(read_frame::<NodeToPlane, _>(&mut r, MAX_BOOTSTRAP_FRAME))
    }

    #[test]
    fn tells_closed_from_truncated_and_bad_frames() {
        let ping = encode_frame(&NodeToPlane::Ping { nonce: 7 }, 64).unwrap();
        assert_eq!(read(&ping).unwrap(), NodeToPlane::Ping { nonce: 7 });
        assert!(matches!(read(&[]), Err(ReadError::Closed)));
        assert!(matches!(
            read(&ping[..2]),
            Err(ReadError::Frame(FrameError::Truncated { .. }))
        ));
        assert!(matches!(
            read(&ping[..ping.len() - 1]),
            Err(ReadError::Frame(FrameError::Truncated { .. }))
        ));
        assert!(matches!(
            read(&u32::MAX.to_be_bytes()),
            Err(ReadError::Frame(FrameError::TooLarge { .. }))
        ));
        assert!(matches!(
            read(&[0, 0, 0, 2, 0xff, 0xff]),
            Err(ReadError::Frame(_))
        ));
    }
}
