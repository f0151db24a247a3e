//! The distribution protocol's HTTP side: GETs of manifests and blobs with
//! basic or bearer-token auth, every response body read as a stream with a
//! byte limit checked while reading (and `Content-Length` checked first),
//! since a registry (or the token realm it names) is chosen by a pod's image
//! name and may answer with an endless body. Nothing a registry sends is
//! held past its limit: manifests 4 MiB, token answers and error bodies
//! 64 KiB, blobs their declared size.
//!
//! Plain HTTP is used only for registries the operator listed, and neither
//! a redirect nor a token realm may lead elsewhere over plain HTTP.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use oci_client::Reference;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode, Url};
use serde::Deserialize;

use crate::{PullError, PullFailure};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two reads of one response.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Token answers and error bodies: small JSON documents.
pub const MAX_SMALL_BODY: u64 = 64 << 10;
const MAX_REDIRECTS: usize = 5;
/// Bearer tokens kept (per registry, repository and credential).
const MAX_TOKENS: usize = 1024;
/// When the token answer names no lifetime (the spec's default).
const DEFAULT_TOKEN_SECS: u64 = 60;

/// Credentials for one registry.
#[derive(Clone, Debug)]
pub enum Auth {
    Anonymous,
    Basic { username: String, password: String },
}

/// (registry, repository, username, sha256 of the password).
type TokenKey = (String, String, Option<(String, String)>);

pub struct Registry {
    insecure: Vec<String>,
    http: reqwest::Client,
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

fn pull_err(message: String) -> PullError {
    PullError {
        reason: PullFailure::ErrImagePull,
        message,
    }
}

fn too_large(message: String) -> PullError {
    PullError {
        reason: PullFailure::TooLarge,
        message,
    }
}

/// Whether `url` may be fetched: HTTPS, or plain HTTP to a listed host.
fn allowed(insecure: &[String], url: &Url) -> bool {
    match url.scheme() {
        "https" => true,
        "http" => {
            let host = match (url.host_str(), url.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_string(),
                _ => return false,
            };
            insecure.iter().any(|r| r.eq_ignore_ascii_case(&host))
        }
        _ => false,
    }
}

/// The error chain of a transport failure, on one line.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

impl Registry {
    pub fn new(insecure: Vec<String>) -> Self {
        let listed = insecure.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if !allowed(&listed, attempt.url()) {
                attempt.error("redirect to plain HTTP on a registry not listed as insecure")
            } else {
                attempt.follow()
            }
        });
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .redirect(redirects)
            .user_agent(concat!("skiff-images/", env!("CARGO_PKG_VERSION")))
            .build()
            // Only a missing TLS backend fails here, fixed at build time.
            .expect("building the registry HTTP client");
        Self {
            insecure,
            http,
            tokens: Mutex::default(),
        }
    }

    /// Plain HTTP only for a registry the operator listed: a pod's image
    /// name must not point the plane at a host (loopback included: the
    /// plane's own ports) without TLS.
    fn base(&self, r: &Reference) -> String {
        let plain = self
            .insecure
            .iter()
            .any(|h| h.eq_ignore_ascii_case(r.registry()));
        let scheme = if plain { "http" } else { "https" };
        format!("{scheme}://{}/v2/{}", r.resolve_registry(), r.repository())
    }

    /// GETs `<base>/<path>` (`manifests/<ref>`, `blobs/<digest>`),
    /// authenticating as the registry asks; `what` names it in errors. A
    /// successful response is returned unread.
    pub async fn get(
        &self,
        r: &Reference,
        path: &str,
        accept: &[&str],
        auth: &Auth,
        what: &str,
    ) -> Result<Response, PullError> {
        let url = format!("{}/{path}", self.base(r));
        let key = token_key(r, auth);
        let cached = self.cached_token(&key);
        let mut response = self.send(&url, accept, cached.as_deref(), r, what).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            let challenge = response
                .headers()
                .get(WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            drop(response);
            let header = match parse_challenge(&challenge) {
                Some(Challenge::Bearer { realm, service }) => {
                    let token = self.token(r, auth, &realm, service.as_deref()).await?;
                    let header = format!("Bearer {token}");
                    self.remember_token(key, header.clone());
                    Some(header)
                }
                Some(Challenge::Basic) => match auth {
                    Auth::Basic { username, password } => Some(basic(username, password)),
                    Auth::Anonymous => None,
                },
                None => None,
            };
            let Some(header) = header else {
                return Err(pull_err(format!(
                    "unauthorized: the registry refused the {what} of {} (missing or wrong credentials)",
                    r.whole()
                )));
            };
            response = self.send(&url, accept, Some(&header), r, what).await?;
        }
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.failure(response, r, what).await)
    }

    async fn send(
        &self,
        url: &str,
        accept: &[&str],
        authorization: Option<&str>,
        r: &Reference,
        what: &str,
    ) -> Result<Response, PullError> {
        let mut req = self.http.get(url);
        if !accept.is_empty() {
            req = req.header(ACCEPT, accept.join(", "));
        }
        if let Some(a) = authorization {
            let mut v = HeaderValue::from_str(a).map_err(|_| {
                pull_err(format!(
                    "credentials for {} are not valid in a header",
                    r.whole()
                ))
            })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        req.send().await.map_err(|e| {
            pull_err(format!(
                "cannot reach the registry of {} for the {what}: {}",
                r.whole(),
                chain(&e)
            ))
        })
    }

    /// A bearer token for pulling `r`'s repository from `realm`.
    async fn token(
        &self,
        r: &Reference,
        auth: &Auth,
        realm: &str,
        service: Option<&str>,
    ) -> Result<String, PullError> {
        let name = r.whole();
        let mut url = Url::parse(realm)
            .map_err(|e| pull_err(format!("token realm {realm:?} of {name} is not a URL: {e}")))?;
        if !allowed(&self.insecure, &url) {
            return Err(pull_err(format!(
                "token realm {realm:?} of {name} is plain HTTP on a host not listed as an insecure registry"
            )));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            q.append_pair("scope", &format!("repository:{}:pull", r.repository()));
        }
        let mut req = self.http.get(url);
        if let Auth::Basic { username, password } = auth {
            req = req.basic_auth(username, Some(password));
        }
        let response = req.send().await.map_err(|e| {
            pull_err(format!(
                "unauthorized: token request for {name} failed: {}",
                chain(&e)
            ))
        })?;
        let status = response.status();
        let body = read_bounded(
            response,
            MAX_SMALL_BODY,
            &format!("the token answer for {name}"),
        )
        .await?;
        if !status.is_success() {
            return Err(pull_err(format!(
                "unauthorized: token request for {name} failed: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )));
        }
        #[derive(Deserialize)]
        struct Answer {
            token: Option<String>,
            access_token: Option<String>,
        }
        let a: Answer = serde_json::from_slice(&body).map_err(|e| {
            pull_err(format!(
                "unauthorized: token answer for {name} is not JSON: {e}"
            ))
        })?;
        a.token
            .or(a.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                pull_err(format!(
                    "unauthorized: token answer for {name} has no token"
                ))
            })
    }

    fn cached_token(&self, key: &TokenKey) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens
            .get(key)
            .filter(|(_, until)| Instant::now() < *until)
            .map(|(t, _)| t.clone())
    }

    fn remember_token(&self, key: TokenKey, header: String) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if tokens.len() >= MAX_TOKENS {
            let now = Instant::now();
            tokens.retain(|_, (_, until)| now < *until);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        // Renewed a little before the default lifetime ends.
        let until = Instant::now() + Duration::from_secs(DEFAULT_TOKEN_SECS - 10);
        tokens.insert(key, (header, until));
    }

    /// A failed response as kubelet-style text: "not found" and
    /// "unauthorized" spelled out so users (and tests) can tell them apart.
    async fn failure(&self, response: Response, r: &Reference, what: &str) -> PullError {
        let name = r.whole();
        let status = response.status();
        let url = response.url().clone();
        // The body only explains; past its bound it is cut, not fatal.
        let body = read_prefix(response, MAX_SMALL_BODY).await;
        #[derive(Deserialize)]
        struct Envelope {
            errors: Vec<OciError>,
        }
        #[derive(Deserialize)]
        struct OciError {
            code: String,
            #[serde(default)]
            message: String,
        }
        let errors = serde_json::from_slice::<Envelope>(&body)
            .map(|e| e.errors)
            .unwrap_or_default();
        let codes: Vec<String> = errors
            .iter()
            .map(|e| format!("{}: {}", e.code, e.message))
            .collect();
        let detail = if codes.is_empty() {
            String::from_utf8_lossy(&body[..body.len().min(512)])
                .trim()
                .to_string()
        } else {
            codes.join("; ")
        };
        let code_is = |names: &[&str]| errors.iter().any(|e| names.contains(&e.code.as_str()));
        let message = if status == StatusCode::NOT_FOUND
            || code_is(&[
                "MANIFEST_UNKNOWN",
                "NAME_UNKNOWN",
                "BLOB_UNKNOWN",
                "NOT_FOUND",
            ]) {
            format!("{what} of {name} not found (HTTP {status} from {url}: {detail})")
        } else if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            || code_is(&["UNAUTHORIZED", "DENIED"])
        {
            format!("unauthorized: {url} refused the {what} of {name}: HTTP {status}: {detail}")
        } else {
            format!("registry refused the {what} of {name}: HTTP {status}: {detail}")
        };
        pull_err(message)
    }
}

fn basic(username: &str, password: &str) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    format!("Basic {}", b64.encode(format!("{username}:{password}")))
}

fn token_key(r: &Reference, auth: &Auth) -> TokenKey {
    let who = match auth {
        Auth::Anonymous => None,
        Auth::Basic { username, password } => Some((
            username.clone(),
            crate::fetch::sha256_digest(password.as_bytes()),
        )),
    };
    (r.registry().to_string(), r.repository().to_string(), who)
}

enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// `Bearer realm="...",service="..."` or `Basic realm="..."`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (k, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (v, tail) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            after.split_once(',').map_or((after, ""), |(v, t)| (v, t))
        };
        match k.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(v.to_string()),
            "service" => service = Some(v.to_string()),
            _ => {}
        }
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

/// Reads `response` whole if it is at most `limit` bytes: a larger
/// `Content-Length` is refused before reading, and the count is checked
/// after every chunk, so no more than `limit` plus one chunk is held.
pub async fn read_bounded(
    response: Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, PullError> {
    let mut out = Vec::new();
    stream_bounded(response, limit, what, |chunk| {
        out.extend_from_slice(chunk);
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Feeds `response`'s body to `sink` chunk by chunk, failing with
/// [`PullFailure::TooLarge`] past `limit` bytes (see [`read_bounded`]).
/// Returns the bytes read.
pub async fn stream_bounded(
    mut response: Response,
    limit: u64,
    what: &str,
    mut sink: impl FnMut(&[u8]) -> Result<(), PullError>,
) -> Result<u64, PullError> {
    if let Some(len) = response.content_length()
        && len > limit
    {
        return Err(too_large(format!(
            "{what} is {len} bytes (Content-Length), more than the {limit} allowed"
        )));
    }
    let mut total: u64 = 0;
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| pull_err(format!("reading {what}: {}", chain(&e))))?;
        let Some(chunk) = chunk else {
            return Ok(total);
        };
        total += chunk.len() as u64;
        if total > limit {
            return Err(too_large(format!(
                "{what} is more than the {limit} bytes allowed"
            )));
        }
        sink(&chunk)?;
    }
}

/// At most `limit` bytes of the body; the rest is not read.
async fn read_prefix(mut response: Response, limit: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while (out.len() as u64) < limit {
        match response.chunk().await {
            Ok(Some(c)) => {
                let room = (limit as usize).saturating_sub(out.len());
                out.extend_from_slice(&c[..c.len().min(room)]);
            }
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let Some(Challenge::Bearer { realm, service }) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:x:pull""#,
        ) else {
            panic!("bearer")
        };
        assert_eq!(realm, "https://auth.docker.io/token");
        assert_eq!(service.as_deref(), Some("registry.docker.io"));
        let Some(Challenge::Bearer { realm, service }) =
            parse_challenge("bearer realm=http://h:1/t, service=s")
        else {
            panic!("unquoted")
        };
        assert_eq!(
            (realm.as_str(), service.as_deref()),
            ("http://h:1/t", Some("s"))
        );
        assert!(matches!(
            parse_challenge(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        ));
        assert!(parse_challenge("Bearer service=x").is_none(), "no realm");
        assert!(parse_challenge("Negotiate").is_none());
        assert!(parse_challenge(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn plain_http_only_to_listed_hosts() {
        let listed = vec!["127.0.0.1:5000".to_string()];
        let ok = |u: &str| allowed(&listed, &Url::parse(u).unwrap());
        assert!(ok("https://anything.example/x"));
        assert!(ok("http://127.0.0.1:5000/token"));
        assert!(!ok("http://127.0.0.1:6443/api"));
        assert!(!ok("http://127.0.0.1/x"));
        assert!(!ok("file:///etc/passwd"));
    }
}
