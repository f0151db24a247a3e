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

/// Reads the whole body, refusing more than [`MAX_BODY`] bytes with 413.
pub async fn read_body(body: hyper::body::Incoming) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::too_large()),
        Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
    }
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
        "application/yaml" | "application/x-yaml" | "text/yaml" => {
            let v: Value = serde_yaml::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("error converting YAML to JSON: {e}"))
            })?;
            Ok(v)
        }
        crate::protobuf::MEDIA_TYPE => crate::protobuf::decode(body),
        other => Err(ApiError::unsupported_media(other)),
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

    #[test]
    fn yaml_and_json_bodies() {
        let v = decode_body("application/yaml", b"a: 1\nb: [x]\n").unwrap();
        assert_eq!(v["b"][0], "x");
        assert_eq!(decode_body("application/json", b"{").unwrap_err().code, 400);
        assert_eq!(decode_body("text/plain", b"x").unwrap_err().code, 415);
    }
}
