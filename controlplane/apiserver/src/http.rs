//! Small HTTP helpers: responses, bounded bodies, query strings, media types.

use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt as _;
use serde_json::Value;

use crate::status::ApiError;

/// kube-apiserver's limit for request bodies.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

pub fn json_response(code: u16, v: &Value) -> Response {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("static response parts")
}

/// How much of an over-limit body is read and thrown away before the 413 is
/// sent. The server speaks HTTP/1.1, where replying before the body is read
/// closes the connection under a client still writing: it then sees "broken
/// pipe" instead of the status (Go's net/http drains for the same reason).
const DRAIN_AFTER_LIMIT: usize = 4 * 1024 * 1024;

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes with 413.
/// `resp` with `guard` kept alive until its body has been sent or dropped
/// (a request slot, an in-flight gauge): a response the client does not
/// read still counts, until the write timeout closes the connection.
pub fn keep_until_sent<G: Send + Unpin + 'static>(resp: Response, guard: G) -> Response {
    let (parts, body) = resp.into_parts();
    Response::from_parts(
        parts,
        Body::new(Guarded {
            body,
            _guard: guard,
        }),
    )
}

struct Guarded<G> {
    body: Body,
    _guard: G,
}

impl<G: Unpin> hyper::body::Body for Guarded<G> {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

pub async fn read_body(body: axum::body::Body) -> Result<bytes::Bytes, ApiError> {
    read_bounded(body, MAX_BODY).await
}

async fn read_bounded<B>(mut body: B, limit: usize) -> Result<bytes::Bytes, ApiError>
where
    B: hyper::body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let declared = body.size_hint().exact().unwrap_or(0);
    if declared > (limit + DRAIN_AFTER_LIMIT) as u64 {
        return Err(ApiError::too_large());
    }
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen = seen.saturating_add(data.len());
        if seen > limit + DRAIN_AFTER_LIMIT {
            break;
        }
        if seen <= limit {
            kept.extend_from_slice(&data);
        }
    }
    if seen > limit {
        return Err(ApiError::too_large());
    }
    Ok(kept.freeze())
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parsed query string; the last value of a repeated key wins.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        Query(
            q.unwrap_or("")
                .split('&')
                .filter(|s| !s.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (percent_decode(k), percent_decode(v))
                })
                .collect(),
        )
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    /// Every value of a repeated key, in order.
    pub fn all<'a>(&'a self, k: &'a str) -> impl Iterator<Item = &'a str> {
        self.0
            .iter()
            .filter(move |(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
    pub fn flag(&self, k: &str) -> bool {
        // Go's strconv.ParseBool spellings: clients send "true", "True", "1".
        matches!(
            self.get(k),
            Some("true" | "True" | "TRUE" | "t" | "T" | "1" | "")
        )
    }
}

/// The media type of a Content-Type header, lowercased, without parameters.
pub fn media_type(ct: Option<&str>) -> String {
    ct.unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Decodes a JSON or YAML request body into JSON.
pub fn decode_body(ct: &str, body: &[u8]) -> Result<Value, ApiError> {
    match ct {
        "application/json" | "" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        "application/yaml" | "application/x-yaml" | "text/yaml" => yaml_to_json(body),
        skiff_kube_protobuf::MEDIA_TYPE => {
            skiff_kube_protobuf::decode(body).map_err(protobuf_error)
        }
        other => Err(ApiError::unsupported_media(other)),
    }
}

/// A protobuf body kube's definitions do not describe is 415 (send JSON);
/// one that is not valid protobuf is 400.
fn protobuf_error(e: skiff_kube_protobuf::Error) -> ApiError {
    use skiff_kube_protobuf::Error as E;
    match e {
        E::UnknownKind { .. } | E::UnknownField { .. } => ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("protobuf request body: {e}"),
        ),
        _ => ApiError::bad_request(e.to_string()),
    }
}

/// Decodes a YAML document into JSON, refusing one that stands for more
/// than a JSON body of the largest size could hold: an alias repeats the
/// anchored node wherever it appears, so a few kilobytes of nested aliases
/// ("billion laughs") would otherwise expand to gigabytes.
pub fn yaml_to_json(body: &[u8]) -> Result<Value, ApiError> {
    use serde::de::DeserializeSeed as _;
    let budget = std::cell::Cell::new(MAX_BODY.max(body.len().saturating_mul(2)));
    bounded::Seed(&budget)
        .deserialize(serde_yaml::Deserializer::from_slice(body))
        .map_err(|e| {
            if budget.get() == 0 {
                ApiError::too_large_msg(format!(
                    "the YAML document expands (through its aliases) to more than {} bytes",
                    MAX_BODY.max(body.len().saturating_mul(2))
                ))
            } else {
                ApiError::bad_request(format!("error converting YAML to JSON: {e}"))
            }
        })
}

/// A [`Value`] built from any serde format, charging about the JSON size of
/// every node it builds to a budget and failing once that runs out.
mod bounded {
    use std::cell::Cell;
    use std::fmt;

    use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Number, Value};

    #[derive(Clone, Copy)]
    pub struct Seed<'a>(pub &'a Cell<usize>);

    impl Seed<'_> {
        fn charge<E: de::Error>(self, n: usize) -> Result<(), E> {
            match self.0.get().checked_sub(n) {
                Some(left) => {
                    self.0.set(left);
                    Ok(())
                }
                None => {
                    self.0.set(0);
                    Err(E::custom("document too large"))
                }
            }
        }
    }

    impl<'de> DeserializeSeed<'de> for Seed<'_> {
        type Value = Value;
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Seed<'_> {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("any JSON value")
        }
        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
            self.charge(5)?;
            Ok(Value::Bool(v))
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
            self.charge(8)?;
            Ok(Value::from(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
            self.charge(8)?;
            Ok(Value::from(v))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
            self.charge(8)?;
            Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
            self.charge(v.len() + 2)?;
            Ok(Value::String(v.to_owned()))
        }
        fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
            self.charge(v.len() + 2)?;
            Ok(Value::String(v))
        }
        fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
            self.charge(4)?;
            Ok(Value::Null)
        }
        fn visit_none<E: de::Error>(self) -> Result<Value, E> {
            self.visit_unit()
        }
        fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            self.charge(2)?;
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(self)? {
                self.charge(1)?;
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            self.charge(2)?;
            let mut out = Map::new();
            while let Some(k) = map.next_key::<String>()? {
                self.charge(k.len() + 4)?;
                let v = map.next_value_seed(self)?;
                out.insert(k, v);
            }
            Ok(Value::Object(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert_eq!(q.get("limit"), Some("5"));
        assert_eq!(percent_decode("a%2"), "a%2");
    }

    /// "Billion laughs": nine levels of ten aliases each stand for 10^9
    /// strings. Refused after a few megabytes of work, not gigabytes.
    #[test]
    fn yaml_alias_expansion_is_bounded() {
        let mut doc = String::from("a0: &a0 [\"lol\", \"lol\"]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let start = std::time::Instant::now();
        // serde_yaml's own limit (alias jumps per event) refuses this one.
        let e = decode_body("application/yaml", doc.as_bytes()).unwrap_err();
        assert_eq!(e.code, 400, "{}", e.message);
        // Padding raises that limit (it grows with the document); a
        // kilobyte string through seven levels is 10 GB in ~10^7 jumps.
        let pad = vec!["0"; 200_000].join(",");
        let mut doc = format!("pad: [{pad}]\na0: &a0 \"{}\"\n", "x".repeat(1000));
        for i in 1..8 {
            let refs = vec![format!("*a{}", i - 1); 10].join(", ");
            doc.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let e = decode_body("application/yaml", doc.as_bytes()).unwrap_err();
        assert_eq!(
            (e.code, e.reason),
            (413, "RequestEntityTooLarge"),
            "{}",
            e.message
        );
        assert!(e.message.contains("aliases"), "{}", e.message);
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
        // Aliases that stay small are fine.
        let v = decode_body("application/yaml", b"a: &x {k: v}\nb: *x\n").unwrap();
        assert_eq!(v["b"]["k"], "v");
    }

    #[tokio::test]
    async fn over_limit_bodies_are_drained_then_refused() {
        use futures_util::StreamExt as _;
        use http_body_util::{Full, StreamBody};
        let ok = read_bounded(Full::new(bytes::Bytes::from_static(b"abc")), 3).await;
        assert_eq!(&ok.unwrap()[..], b"abc");
        let e = read_bounded(Full::new(bytes::Bytes::from_static(b"abcd")), 3).await;
        assert_eq!(e.unwrap_err().code, 413);
        // A chunked body is read to its end (so the client can read the
        // status) but not kept; past the drain bound reading stops.
        let polled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = polled.clone();
        let chunks = futures_util::stream::iter(0..100_000).map(move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(bytes::Bytes::from(
                vec![b'x'; 1024],
            )))
        });
        let e = read_bounded(StreamBody::new(chunks), 1024).await;
        assert_eq!(e.unwrap_err().code, 413);
        let n = polled.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(n, 1 + DRAIN_AFTER_LIMIT / 1024 + 1, "read {n} chunks");
    }

    #[test]
    fn yaml_and_json_bodies() {
        let v = decode_body("application/yaml", b"a: 1\nb: [x]\n").unwrap();
        assert_eq!(v["b"][0], "x");
        assert_eq!(decode_body("application/json", b"{").unwrap_err().code, 400);
        assert_eq!(decode_body("text/plain", b"x").unwrap_err().code, 415);
    }
}
