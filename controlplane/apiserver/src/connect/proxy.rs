//! `pods/proxy` and `services/proxy`: one HTTP/1.1 request forwarded to
//! a pod over a [`PodStream`], the response streamed back.
//!
//! As kube's proxy: the path after `/proxy` with the query goes to the
//! pod, hop-by-hop headers and the caller's credentials do not, and the
//! pod's answer comes back as it is (status, headers, body). Unlike
//! kube, links in proxied HTML are not rewritten.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, Response, header};
use hyper_util::rt::TokioIo;

use super::{PodConnector, PodTarget};
use crate::status::{ApiError, ApiResult};

/// Headers that belong to one connection, not to the request (RFC 9110
/// §7.6.1), and the caller's credentials for the API server.
const NOT_FORWARDED: &[header::HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::AUTHORIZATION,
    header::HOST,
];

fn strip(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|h| h.trim().to_ascii_lowercase()))
        .collect();
    for h in NOT_FORWARDED {
        headers.remove(h);
    }
    for h in named {
        headers.remove(h.as_str());
    }
    headers.remove("keep-alive");
}

fn bad_gateway(t: &PodTarget, what: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        502,
        "BadGateway",
        format!(
            "error trying to reach pod {:?} port {}: {what}",
            t.pod, t.port
        ),
    )
}

/// Forwards `req` to `target` at `path` (with the request's query).
pub async fn forward(
    connector: &dyn PodConnector,
    target: PodTarget,
    path: &str,
    req: Request<Body>,
) -> ApiResult<Response<Body>> {
    let stream = connector.connect(target.clone()).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| bad_gateway(&target, e))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let (mut parts, body) = req.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("/{}?{q}", path.trim_start_matches('/')),
        None => format!("/{}", path.trim_start_matches('/')),
    };
    parts.uri = path_and_query
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid proxy path {path_and_query:?}")))?;
    strip(&mut parts.headers);
    let host = format!("{}:{}", target.address, target.port);
    parts.headers.insert(
        header::HOST,
        HeaderValue::from_str(&host).map_err(|_| bad_gateway(&target, "bad address"))?,
    );
    parts.version = hyper::Version::HTTP_11;
    parts.extensions = Default::default();
    let resp = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| bad_gateway(&target, e))?;
    let (mut parts, body) = resp.into_parts();
    strip(&mut parts.headers);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_credentials_stay_behind() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Private"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::ACCEPT, HeaderValue::from_static("text/plain"));
        strip(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[header::ACCEPT], "text/plain");
    }
}
