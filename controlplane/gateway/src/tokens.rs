//! Bootstrap tokens, as kube's `bootstrap.kubernetes.io/token` Secrets in
//! `kube-system` (named `bootstrap-token-<id>`: `token-id`, `token-secret`,
//! `expiration`, `usage-bootstrap-authentication`), plus two Skiff keys:
//!
//! - `skiff-node-name`: the one node the token may bootstrap. A token
//!   without it is bound to the first node it issues a certificate for (the
//!   gateway writes the key then), so a leaked used token cannot claim
//!   another node.
//! - `skiff-single-use: "true"`: the Secret is deleted when it issues its
//!   certificate.
//!
//! Tokens of the PKI directory's `bootstrap-tokens.csv` (`pki init`) are
//! fleet join tokens: multi-use and unbound, like kubeadm's default token;
//! they are only looked at when no Secret of that id exists. They are the
//! test and lab-fleet path: the gateway warns at every start while one is
//! unexpired, and `pki init` says so when it writes them.
//!
//! Nothing here logs or returns a token's secret: errors name the id only.

use base64::Engine as _;
use hyper::Method;
use serde_json::{Value, json};

use crate::Shared;
use crate::local_api::gateway_identity;

/// The Secret type kube gives bootstrap tokens.
pub const SECRET_TYPE: &str = "bootstrap.kubernetes.io/token";
/// Secret key (Skiff): the node name the token is bound to.
pub const NODE_NAME_KEY: &str = "skiff-node-name";
/// Secret key (Skiff): `"true"` makes the token single-use.
pub const SINGLE_USE_KEY: &str = "skiff-single-use";

/// Why a token does not bootstrap this node. `Display` never shows the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("bootstrap token {0:?} is malformed")]
    Malformed(String),
    #[error("bootstrap token {0:?} is unknown, wrong or expired")]
    Invalid(String),
    #[error("bootstrap token {id:?} is bound to node {bound:?}")]
    BoundElsewhere { id: String, bound: String },
    #[error("bootstrap token {0:?} was used concurrently; try again")]
    Conflict(String),
    #[error("bootstrap token {id:?}: API: {message}")]
    Api { id: String, message: String },
}

impl TokenError {
    /// Whether the node's token itself is at fault (answered `BadToken`).
    pub fn is_bad_token(&self) -> bool {
        matches!(self, TokenError::Malformed(_) | TokenError::Invalid(_))
    }
}

/// A token that may bootstrap the node it was checked for.
#[derive(Debug, Clone)]
pub struct Grant {
    pub id: String,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    /// A Secret: its uid, and what issuing a certificate does to it.
    Secret {
        uid: String,
        single_use: bool,
        bound: bool,
    },
    /// `bootstrap-tokens.csv`.
    File,
}

/// `[a-z0-9]{n}`: a token's id (6) or secret (16).
fn token_part(p: &str, n: usize) -> bool {
    p.len() == n
        && p.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Whether `id` is a bootstrap token id, `[a-z0-9]{6}`.
pub fn is_token_id(id: &str) -> bool {
    token_part(id, 6)
}

/// `[a-z0-9]{6}.[a-z0-9]{16}`, split into id and secret.
pub fn split(token: &str) -> Option<(&str, &str)> {
    token
        .split_once('.')
        .filter(|(id, secret)| is_token_id(id) && token_part(secret, 16))
}

fn secret_path(id: &str) -> String {
    format!("/api/v1/namespaces/kube-system/secrets/bootstrap-token-{id}")
}

/// A Secret `data` value, decoded.
fn field(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.pointer(&format!("/data/{key}"))?.as_str()?;
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    String::from_utf8(raw).ok()
}

/// No early exit on the first differing byte.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether an RFC 3339 `expiration` is still ahead; one that does not
/// parse counts as expired (kube does the same).
fn unexpired(expiration: &str, now_secs: i64) -> bool {
    time::OffsetDateTime::parse(expiration, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|t| t.unix_timestamp() > now_secs)
}

/// Checks `token` for bootstrapping `node`.
pub async fn check(shared: &Shared, token: &str, node: &str) -> Result<Grant, TokenError> {
    let Some((id, secret)) = split(token) else {
        return Err(TokenError::Malformed(
            token
                .split('.')
                .next()
                .unwrap_or("")
                .chars()
                .take(6)
                .collect(),
        ));
    };
    let invalid = || TokenError::Invalid(id.to_string());
    let api_err = |message: String| TokenError::Api {
        id: id.to_string(),
        message,
    };
    let a = shared
        .api
        .get(&gateway_identity(), &secret_path(id))
        .await
        .map_err(api_err)?;
    match a.code {
        200 => {}
        404 => {
            // No Secret: a fleet token of the PKI directory, if any.
            let ok = shared
                .api
                .state()
                .authn
                .authenticate_token(token)
                .is_some_and(|i| i.in_group("system:bootstrappers"));
            return if ok {
                Ok(Grant {
                    id: id.to_string(),
                    source: Source::File,
                })
            } else {
                Err(invalid())
            };
        }
        _ => return Err(api_err(a.message())),
    }
    let s = &a.body;
    let now = crate::timefmt::now_millis() as i64 / 1000;
    let valid = s.get("type").and_then(Value::as_str) == Some(SECRET_TYPE)
        && field(s, "token-id").as_deref() == Some(id)
        && field(s, "token-secret").is_some_and(|v| same(&v, secret))
        && field(s, "usage-bootstrap-authentication").as_deref() == Some("true")
        && field(s, "expiration").is_none_or(|e| unexpired(&e, now))
        && s.pointer("/metadata/deletionTimestamp").is_none();
    if !valid {
        return Err(invalid());
    }
    let bound = field(s, NODE_NAME_KEY);
    if let Some(b) = &bound
        && b != node
    {
        return Err(TokenError::BoundElsewhere {
            id: id.to_string(),
            bound: b.clone(),
        });
    }
    Ok(Grant {
        id: id.to_string(),
        source: Source::Secret {
            uid: s
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            single_use: field(s, SINGLE_USE_KEY).as_deref() == Some("true"),
            bound: bound.is_some(),
        },
    })
}

/// Records that `grant` issued `node` its certificate: a single-use token's
/// Secret is deleted, an unbound one is bound to `node`. Callers serialize
/// check and consume (one bootstrap at a time), and the uid precondition
/// makes a re-created Secret of the same name a conflict.
pub async fn consume(shared: &Shared, grant: &Grant, node: &str) -> Result<(), TokenError> {
    let Source::Secret {
        uid,
        single_use,
        bound,
    } = &grant.source
    else {
        return Ok(());
    };
    let id = &grant.id;
    let api = &shared.api;
    let path = secret_path(id);
    let a = if *single_use {
        api.call(
            &gateway_identity(),
            Method::DELETE,
            &path,
            "application/json",
            Some(&json!({"preconditions": {"uid": uid}})),
        )
        .await
    } else if !bound {
        let name = base64::engine::general_purpose::STANDARD.encode(node);
        api.merge_patch(
            &gateway_identity(),
            &path,
            &json!({"metadata": {"uid": uid}, "data": {NODE_NAME_KEY: name}}),
        )
        .await
    } else {
        return Ok(());
    };
    let a = a.map_err(|message| TokenError::Api {
        id: id.clone(),
        message,
    })?;
    match a.code {
        200..=299 => Ok(()),
        404 | 409 => Err(TokenError::Conflict(id.clone())),
        _ => Err(TokenError::Api {
            id: id.clone(),
            message: a.message(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_shape_and_expiry() {
        assert_eq!(
            split("abcdef.0123456789abcdef"),
            Some(("abcdef", "0123456789abcdef"))
        );
        for bad in [
            "abcdef.0123",
            "ABCDEF.0123456789abcdef",
            "abcdef0123456789abcdef",
            "",
        ] {
            assert_eq!(split(bad), None, "{bad}");
        }
        assert!(unexpired("2100-01-01T00:00:00Z", 0));
        assert!(!unexpired("2000-01-01T00:00:00Z", 1_700_000_000));
        assert!(!unexpired("tomorrow", 0));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("abc", "ab"));
        let e = TokenError::Invalid("abcdef".into()).to_string();
        assert!(e.contains("abcdef"), "{e}");
    }
}
