//! Container log buffers for `kubectl logs` (`--tail`, `--since`,
//! `--limit-bytes`, `--timestamps`, `--follow`).
//!
//! Invariants:
//! - a buffer holds whole lines, oldest first, numbered by a sequence that
//!   never repeats; it keeps at most `cap_bytes` of line data plus
//!   [`LINE_OVERHEAD`] a line, evicting the oldest lines; a line longer than
//!   [`MAX_LINE`] or the cap is split;
//! - an unterminated line stays invisible until its newline arrives or the
//!   buffer is closed (the instance exited), so readers never see half lines;
//! - a [`LogCursor`] is just a sequence number and a byte budget: any number
//!   of followers can read one buffer, and a follower that fell behind
//!   eviction resumes at the oldest retained line.
//!
//! [`LogStreams`] serves the plane's `LogRequest`s from those buffers: it
//! answers every request at once (data so far, or an error), then sends
//! what appears later to followers until the instance ends or the plane
//! cancels.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use skiff_node_proto::{
    ContainerState, LogRequest, MAX_LOG_CHUNK, NodeToPlane, PlaneToNode, StreamId, UnixMillis,
};

use crate::{ContainerId, Kubelet};

/// Longest line kept as one (CRI's 16 KiB partial-line size). With the
/// timestamp prefix it stays well inside [`skiff_node_proto::MAX_LOG_CHUNK`].
pub const MAX_LINE: usize = 16 << 10;

/// What a line costs the node beyond its text (its slot in the deque, its
/// allocation), charged against the cap: a flood of empty lines is bounded
/// like one long line, not by its text alone.
pub const LINE_OVERHEAD: usize = 64;

#[derive(Debug, Clone)]
struct Line {
    at: UnixMillis,
    /// Including the trailing `\n` (absent only for a final partial line).
    text: Vec<u8>,
}

/// One container instance's log.
#[derive(Debug, Clone)]
pub struct LogBuffer {
    cap_bytes: usize,
    lines: VecDeque<Line>,
    bytes: usize,
    /// Sequence number of `lines[0]`.
    first_seq: u64,
    partial: Vec<u8>,
    partial_at: UnixMillis,
    closed: bool,
}

/// Where a reader is, and how many bytes it may still receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogCursor {
    next_seq: u64,
    remaining: Option<u64>,
    timestamps: bool,
}

/// Reader options (the subset of `LogRequest` that concerns the buffer).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogOptions {
    pub tail_lines: Option<u32>,
    pub since: Option<UnixMillis>,
    pub limit_bytes: Option<u64>,
    pub timestamps: bool,
}

impl LogBuffer {
    pub fn new(cap_bytes: usize) -> Self {
        Self {
            cap_bytes: cap_bytes.max(1),
            lines: VecDeque::new(),
            bytes: 0,
            first_seq: 0,
            partial: Vec::new(),
            partial_at: 0,
            closed: false,
        }
    }

    /// Bytes held now (kept lines and the partial one, as charged to the cap).
    pub fn held_bytes(&self) -> usize {
        self.bytes + self.partial.len()
    }

    /// Appends output written at `at`.
    pub fn append(&mut self, at: UnixMillis, mut data: &[u8]) {
        if self.closed {
            return;
        }
        // Lines longer than MAX_LINE (or the cap) are split, as CRI runtimes
        // split them into 16 KiB partial lines: bounded memory, and a read
        // of one line always fits a log chunk frame.
        let limit = self
            .cap_bytes
            .saturating_sub(LINE_OVERHEAD)
            .clamp(1, MAX_LINE);
        while !data.is_empty() {
            if self.partial.is_empty() {
                self.partial_at = at;
            }
            let nl = data.iter().position(|&b| b == b'\n');
            let take = nl
                .map_or(data.len(), |i| i + 1)
                .min(limit - self.partial.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() == limit || self.partial.last() == Some(&b'\n') {
                let text = core::mem::take(&mut self.partial);
                self.push_line(Line {
                    at: self.partial_at,
                    text,
                });
            }
        }
    }

    /// The instance exited: flush the partial line; followers then get EOF.
    pub fn close(&mut self) {
        if !self.partial.is_empty() {
            let text = core::mem::take(&mut self.partial);
            self.push_line(Line {
                at: self.partial_at,
                text,
            });
        }
        self.closed = true;
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    fn push_line(&mut self, mut line: Line) {
        // The text grew by appends: drop spare capacity the overhead does
        // not cover, so what is charged is what is held.
        if line.text.capacity() - line.text.len() > LINE_OVERHEAD / 2 {
            line.text.shrink_to_fit();
        }
        self.bytes += line.text.len() + LINE_OVERHEAD;
        self.lines.push_back(line);
        while self.bytes > self.cap_bytes {
            let old = self.lines.pop_front().expect("bytes > 0 implies a line");
            self.bytes -= old.text.len() + LINE_OVERHEAD;
            self.first_seq += 1;
        }
    }

    fn end_seq(&self) -> u64 {
        self.first_seq + self.lines.len() as u64
    }

    /// A reader positioned per `opts`: at the last `tail_lines` lines (all
    /// retained lines if `None`), skipping lines older than `since`.
    pub fn reader(&self, opts: &LogOptions) -> LogCursor {
        let mut start = match opts.tail_lines {
            Some(n) => self
                .end_seq()
                .saturating_sub(u64::from(n))
                .max(self.first_seq),
            None => self.first_seq,
        };
        if let Some(since) = opts.since {
            while start < self.end_seq() && self.lines[(start - self.first_seq) as usize].at < since
            {
                start += 1;
            }
        }
        LogCursor {
            next_seq: start,
            remaining: opts.limit_bytes,
            timestamps: opts.timestamps,
        }
    }

    /// True when `cursor` has read every line appended so far (or its byte
    /// limit is used up): a read now would return nothing.
    pub fn caught_up(&self, cursor: &LogCursor) -> bool {
        cursor.remaining == Some(0) || cursor.next_seq.max(self.first_seq) >= self.end_seq()
    }

    /// Reads up to about `max` bytes (at least one line if any is ready)
    /// from `cursor`. Returns the data and whether the stream has ended
    /// (closed and fully read, or the byte limit reached).
    pub fn read(&self, cursor: &mut LogCursor, max: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        cursor.next_seq = cursor.next_seq.max(self.first_seq);
        while cursor.next_seq < self.end_seq() && cursor.remaining != Some(0) {
            let line = &self.lines[(cursor.next_seq - self.first_seq) as usize];
            let mut chunk = Vec::new();
            if cursor.timestamps {
                chunk.extend_from_slice(&rfc3339(line.at));
                chunk.push(b' ');
            }
            chunk.extend_from_slice(&line.text);
            if !out.is_empty() && out.len() + chunk.len() > max {
                break;
            }
            if let Some(rem) = cursor.remaining.as_mut() {
                chunk.truncate((*rem).min(chunk.len() as u64) as usize);
                *rem -= chunk.len() as u64;
            }
            out.extend_from_slice(&chunk);
            cursor.next_seq += 1;
        }
        let eof = cursor.remaining == Some(0) || (self.closed && cursor.next_seq >= self.end_seq());
        (out, eof)
    }
}

/// Read access to the runtime's per-instance log buffers (the runtime keeps
/// one per instance until [`crate::Runtime::remove`]).
pub trait LogSource {
    fn log_buffer(&self, id: ContainerId) -> Option<&LogBuffer>;
}

/// Most streams a node serves at once; more are refused, so a plane (or a
/// bug) can't make the node hold unbounded reader state.
pub const MAX_STREAMS: usize = 64;

#[derive(Debug, Clone)]
struct Stream {
    instance: ContainerId,
    cursor: LogCursor,
    follow: bool,
}

/// The node's open log streams (one connection's worth: the driver drops
/// them all when its connection to the plane ends).
#[derive(Debug, Default)]
pub struct LogStreams {
    streams: BTreeMap<StreamId, Stream>,
}

fn chunk(stream: StreamId, data: Vec<u8>, eof: bool, error: Option<String>) -> NodeToPlane {
    NodeToPlane::LogChunk {
        stream,
        data,
        eof,
        error,
    }
}

impl LogStreams {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of open (following) streams.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Forgets every stream (the connection they belong to is gone).
    pub fn clear(&mut self) {
        self.streams.clear();
    }

    /// Handles `LogRequest` and `LogCancel`; `None` for other messages
    /// (they are the kubelet's).
    pub fn handle<S: LogSource>(
        &mut self,
        msg: &PlaneToNode,
        kubelet: &Kubelet,
        src: &S,
    ) -> Option<Vec<NodeToPlane>> {
        match msg {
            PlaneToNode::LogRequest(req) => Some(self.open(req, kubelet, src)),
            PlaneToNode::LogCancel { stream } => Some(self.cancel(*stream).into_iter().collect()),
            _ => None,
        }
    }

    /// Starts a stream. The answer comes at once: what is readable now
    /// (possibly nothing but an empty chunk when following, so the plane
    /// knows the stream started), or `eof` with an error in kubelet words.
    pub fn open<S: LogSource>(
        &mut self,
        req: &LogRequest,
        kubelet: &Kubelet,
        src: &S,
    ) -> Vec<NodeToPlane> {
        let fail = |e: String| alloc::vec![chunk(req.stream, Vec::new(), true, Some(e))];
        if self.streams.contains_key(&req.stream) {
            return fail(format!("log stream {} is already open", req.stream));
        }
        if req.follow && self.streams.len() >= MAX_STREAMS {
            return fail(format!(
                "node {:?} already serves {MAX_STREAMS} log streams",
                kubelet.config().node_name
            ));
        }
        let instance = match resolve(req, kubelet) {
            Ok(id) => id,
            Err(e) => return fail(e),
        };
        let Some(buf) = src.log_buffer(instance) else {
            return fail(format!(
                "container {:?} has no log: its instance is gone",
                req.container
            ));
        };
        let cursor = buf.reader(&LogOptions {
            tail_lines: req.tail_lines,
            since: req.since,
            limit_bytes: req.limit_bytes,
            timestamps: req.timestamps,
        });
        let mut s = Stream {
            instance,
            cursor,
            follow: req.follow,
        };
        let mut out = Vec::new();
        let ended = drain(req.stream, &mut s, buf, &mut out);
        if !ended {
            self.streams.insert(req.stream, s);
        }
        if out.is_empty() {
            out.push(chunk(req.stream, Vec::new(), false, None));
        }
        out
    }

    /// Stops a stream; the final chunk says it was cancelled. Unknown
    /// streams (already ended) get no answer.
    pub fn cancel(&mut self, stream: StreamId) -> Option<NodeToPlane> {
        self.streams
            .remove(&stream)
            .map(|_| chunk(stream, Vec::new(), true, Some("cancelled".into())))
    }

    /// Sends followers what appeared since the last poll, and ends the
    /// streams whose instance exited (or was removed). Call after every
    /// kubelet tick and whenever the runtime wrote output.
    pub fn poll<S: LogSource>(&mut self, src: &S) -> Vec<NodeToPlane> {
        let mut out = Vec::new();
        self.streams
            .retain(|&id, s| match src.log_buffer(s.instance) {
                Some(buf) => !drain(id, s, buf, &mut out),
                None => {
                    out.push(chunk(id, Vec::new(), true, None));
                    false
                }
            });
        out
    }
}

/// Reads everything readable into chunks of at most [`MAX_LOG_CHUNK`];
/// returns whether the stream ended (its last chunk then has `eof`).
fn drain(id: StreamId, s: &mut Stream, buf: &LogBuffer, out: &mut Vec<NodeToPlane>) -> bool {
    loop {
        let (data, end) = buf.read(&mut s.cursor, MAX_LOG_CHUNK);
        // Without follow the stream is a snapshot: it ends once caught up.
        let end = end || (!s.follow && buf.caught_up(&s.cursor));
        if data.is_empty() && !end {
            return false;
        }
        out.push(chunk(id, data, end, None));
        if end {
            return true;
        }
    }
}

/// The instance a request reads, or the kubelet's error for why there is
/// none (`validateContainerLogStatus`' wording).
fn resolve(req: &LogRequest, kubelet: &Kubelet) -> Result<ContainerId, String> {
    let node = &kubelet.config().node_name;
    let Some(pod) = kubelet.pod(&req.pod_uid) else {
        return Err(format!(
            "pod with uid {:?} is not on node {node:?}",
            req.pod_uid
        ));
    };
    let spec = pod.spec();
    let (c, p) = (&req.container, &spec.name);
    if !spec
        .init_containers
        .iter()
        .chain(&spec.containers)
        .any(|x| &x.name == c)
    {
        return Err(format!("container {c} is not valid for pod {p}"));
    }
    if let Some(id) = pod.log_instance(c, req.previous) {
        return Ok(id);
    }
    if req.previous {
        return Err(format!(
            "previous terminated container {c:?} in pod {p:?} not found"
        ));
    }
    let waiting = pod.status().and_then(|st| {
        st.init_container_statuses
            .iter()
            .chain(&st.container_statuses)
            .find(|s| &s.name == c)
            .and_then(|s| match &s.state {
                ContainerState::Waiting { reason, .. } => Some(reason.clone()),
                _ => None,
            })
    });
    Err(match waiting {
        Some(reason) => format!("container {c:?} in pod {p:?} is waiting to start: {reason}"),
        None => format!("container {c:?} in pod {p:?} is waiting to start - no logs yet"),
    })
}

/// `2006-01-02T15:04:05.000000000Z` (Kubernetes' RFC 3339 with nanoseconds).
pub fn rfc3339(ms: UnixMillis) -> [u8; 30] {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (0..width).rev() {
            b[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, y as u64);
    put(5, 2, m as u64);
    put(8, 2, d as u64);
    put(11, 2, rem / 3600);
    put(14, 2, rem / 60 % 60);
    put(17, 2, rem % 60);
    put(20, 3, ms % 1000);
    b
}
