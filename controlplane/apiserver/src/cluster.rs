//! The control-plane members' own endpoints, beside the Kubernetes API on
//! the same port (as k3s' supervisor shares 6443):
//! - `GET /cacerts`: the CA certificate, to anyone; a joining member
//!   checks its hash against the join token before trusting it.
//! - `POST /skiff/join` with `Authorization: Bearer <join token>`: the PKI
//!   files a new member needs ([`pki::JOIN_BUNDLE`]).
//! - `POST /skiff/peer/<call>`: Raft traffic between members, only for
//!   client certificates of [`pki::MEMBER_GROUP`].
//! - `GET /skiff/members`, `POST /skiff/members/add|remove`: membership,
//!   for members and for `system:masters`.

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;

use crate::authn::Identity;
use crate::pki;
use crate::server::State;

/// Largest request body here (a snapshot can be large).
const MAX_BODY: usize = 1 << 30;

fn reply(status: StatusCode, body: impl Into<Body>) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(body.into())
        .expect("valid response")
}

fn json(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut r = reply(status, v.to_string());
    r.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A kube Status-like refusal with a reason people can act on.
fn refuse(status: StatusCode, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": message, "code": status.as_u16(),
        }),
    )
}

fn in_group(peer: &Option<Identity>, group: &str) -> bool {
    peer.as_ref()
        .is_some_and(|p| p.groups.iter().any(|g| g == group))
}

async fn body(req: Request<Incoming>) -> Option<bytes::Bytes> {
    let b = http_body_util::Limited::new(req.into_body(), MAX_BODY);
    b.collect().await.ok().map(|c| c.to_bytes())
}

/// Answers the members' endpoints; `None` for every other request.
pub(crate) async fn handle(
    state: &State,
    peer: &Option<Identity>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Request<Incoming>> {
    let path = req.uri().path().to_string();
    let member = in_group(peer, pki::MEMBER_GROUP);
    let admin = member || in_group(peer, "system:masters");
    match (req.method().clone(), path.as_str()) {
        (Method::GET, "/cacerts") => Ok(match std::fs::read(state.pki_dir.join(pki::CA_CERT)) {
            Ok(pem) => reply(StatusCode::OK, pem),
            Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }),
        (Method::POST, "/skiff/join") => Ok(join(state, &req)),
        (Method::POST, p) if p.starts_with("/skiff/peer/") => {
            let Some(rpc) = skiff_store::Rpc::from_name(&p["/skiff/peer/".len()..]) else {
                return Ok(refuse(StatusCode::NOT_FOUND, "no such peer call"));
            };
            if !member {
                return Ok(refuse(
                    StatusCode::FORBIDDEN,
                    "peer calls need a member certificate",
                ));
            }
            let Some(b) = body(req).await else {
                return Ok(refuse(StatusCode::BAD_REQUEST, "unreadable body"));
            };
            Ok(match state.store.serve_peer(rpc, &b).await {
                Ok(out) => reply(StatusCode::OK, out),
                Err(e) => refuse(StatusCode::BAD_REQUEST, &e.to_string()),
            })
        }
        (m, p) if p.starts_with("/skiff/members") => {
            if !admin {
                return Ok(refuse(
                    StatusCode::FORBIDDEN,
                    "membership needs a member certificate or system:masters",
                ));
            }
            Ok(members(state, m, p, req).await)
        }
        _ => Err(req),
    }
}

fn join(state: &State, req: &Request<Incoming>) -> Response<Body> {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(pki::parse_join_token)
        .map(|(_, s)| s.to_string());
    let ours = pki::join_token(&state.pki_dir).ok();
    let ours = ours
        .as_deref()
        .and_then(pki::parse_join_token)
        .map(|(_, s)| s);
    let ok = match (given.as_deref(), ours) {
        // Comparing digests: the time taken says nothing about the secret.
        (Some(g), Some(o)) => pki::ca_hash(g.as_bytes()) == pki::ca_hash(o.as_bytes()),
        _ => false,
    };
    if !ok {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "join token refused: its secret is not this cluster's",
        );
    }
    let mut files = Vec::new();
    for name in pki::JOIN_BUNDLE {
        match std::fs::read_to_string(state.pki_dir.join(name)) {
            Ok(c) => files.push((name.to_string(), c)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        }
    }
    json(StatusCode::OK, &serde_json::json!({ "files": files }))
}

async fn members(state: &State, m: Method, p: &str, req: Request<Incoming>) -> Response<Body> {
    let Some(cluster) = state.store.cluster() else {
        return refuse(
            StatusCode::NOT_FOUND,
            "this control plane is not a cluster (started without --cluster-init or --join)",
        );
    };
    let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).ok();
    let done = |r: Result<(), skiff_store::Error>| match r {
        Ok(()) => json(StatusCode::OK, &serde_json::json!({})),
        Err(e @ skiff_store::Error::InvalidArgument(_)) => {
            refuse(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Err(e) => refuse(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    };
    match (m, p) {
        (Method::GET, "/skiff/members") => json(
            StatusCode::OK,
            &serde_json::to_value(&cluster).expect("cluster serializes"),
        ),
        (Method::POST, "/skiff/members/add") => {
            let v = body(req).await.and_then(|b| parse(&b));
            let id = v.as_ref().and_then(|v| v["id"].as_u64());
            let addr = v
                .as_ref()
                .and_then(|v| v["addr"].as_str().map(str::to_string));
            match (id, addr) {
                (Some(id), Some(addr)) => done(state.store.add_member(id, addr).await),
                _ => refuse(StatusCode::BAD_REQUEST, "want {\"id\": N, \"addr\": URL}"),
            }
        }
        (Method::POST, "/skiff/members/remove") => {
            let v = body(req).await.and_then(|b| parse(&b));
            match v.as_ref().and_then(|v| v["id"].as_u64()) {
                Some(id) => done(state.store.remove_member(id).await),
                None => refuse(StatusCode::BAD_REQUEST, "want {\"id\": N}"),
            }
        }
        _ => refuse(StatusCode::NOT_FOUND, "no such membership call"),
    }
}
