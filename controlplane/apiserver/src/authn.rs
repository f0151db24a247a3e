//! Authentication: who is asking. x509 client certificates verified by the
//! TLS layer against the cluster CA (CN = user, O = groups), bearer tokens
//! from the static token file, and node bootstrap tokens. Anonymous requests
//! are refused (401) by the caller.

use std::collections::HashMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::pki;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
    /// Set when authenticated by a service account token: the account must
    /// still exist with `uid`, and the object the token is bound to with its.
    pub service_account: Option<ServiceAccountToken>,
}

/// What a service account token names beyond the identity, checked
/// against the store on every request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAccountToken {
    pub namespace: String,
    pub name: String,
    pub bound: Option<crate::satoken::BoundObject>,
}

impl Identity {
    pub fn in_group(&self, g: &str) -> bool {
        self.groups.iter().any(|x| x == g)
    }

    /// The node name of a node identity (`system:node:NAME` in
    /// `system:nodes`), which the node authorizer and NodeRestriction bound.
    pub fn node_name(&self) -> Option<&str> {
        self.name
            .strip_prefix("system:node:")
            .filter(|_| self.in_group("system:nodes"))
    }
}

/// Reads CN and every O from a client certificate the TLS layer already
/// verified. Returns `None` for a certificate without a CN.
pub fn identity_from_cert(der: &[u8]) -> Option<Identity> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let name = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some(Identity {
        name,
        uid: String::new(),
        groups,
        service_account: None,
    })
}

struct BootstrapToken {
    secret: String,
    expires: u64,
}

/// Token authenticators loaded from the PKI directory.
#[derive(Default)]
pub struct Authenticator {
    /// SHA-256(token) -> identity, so that lookups do not compare secrets
    /// byte by byte.
    static_tokens: HashMap<Vec<u8>, Identity>,
    bootstrap: HashMap<String, BootstrapToken>,
    /// Service account token keys (absent when the PKI has no sa.key).
    pub service_accounts: Option<crate::satoken::Keys>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("static_tokens", &self.static_tokens.len())
            .field("bootstrap_tokens", &self.bootstrap.len())
            .finish()
    }
}

fn digest(s: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, s.as_bytes())
        .as_ref()
        .to_vec()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Splits a CSV line, honouring double quotes (the token file quotes its
/// comma-separated group list).
fn csv_fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

impl Authenticator {
    pub fn load(dir: &Path) -> Result<Authenticator, crate::server::StartError> {
        let mut a = Authenticator::default();
        if let Ok(text) = std::fs::read_to_string(dir.join(pki::TOKEN_FILE)) {
            a.add_static_tokens(&text);
        }
        if let Ok(text) = std::fs::read_to_string(dir.join(pki::BOOTSTRAP_TOKEN_FILE)) {
            a.add_bootstrap_tokens(&text);
        }
        let sa_key = dir.join(pki::SA_KEY);
        if let Ok(pem) = std::fs::read_to_string(&sa_key) {
            let keys = crate::satoken::Keys::from_pem(&pem)
                .map_err(|e| crate::server::pki_err(&sa_key, e))?;
            a.service_accounts = Some(keys);
        }
        Ok(a)
    }

    /// kube-apiserver's `--token-auth-file` format: token,user,uid,"g1,g2".
    pub fn add_static_tokens(&mut self, text: &str) {
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let f = csv_fields(line);
            if f.len() < 2 || f[0].is_empty() {
                continue;
            }
            let groups = f
                .get(3)
                .map(|g| {
                    g.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            self.static_tokens.insert(
                digest(&f[0]),
                Identity {
                    name: f[1].clone(),
                    uid: f.get(2).cloned().unwrap_or_default(),
                    groups,
                    service_account: None,
                },
            );
        }
    }

    /// id,secret,expiry-unix-seconds per line.
    pub fn add_bootstrap_tokens(&mut self, text: &str) {
        for line in text.lines().map(str::trim) {
            let f = csv_fields(line);
            if f.len() == 3
                && let Ok(expires) = f[2].parse()
            {
                self.bootstrap.insert(
                    f[0].clone(),
                    BootstrapToken {
                        secret: f[1].clone(),
                        expires,
                    },
                );
            }
        }
    }

    /// Bootstrap tokens of the token file (`bootstrap-tokens.csv`) not yet
    /// expired: multi-use and bound to no node name.
    pub fn fleet_bootstrap_tokens(&self) -> usize {
        let now = now_secs();
        self.bootstrap.values().filter(|t| t.expires > now).count()
    }

    /// The identity for a bearer token, `None` when it is unknown, wrong or
    /// expired (all answered 401 alike).
    pub fn authenticate_token(&self, token: &str) -> Option<Identity> {
        if let Some(id) = self.static_tokens.get(&digest(token)) {
            return Some(id.clone());
        }
        if token.matches('.').count() == 2 {
            let c = self
                .service_accounts
                .as_ref()?
                .verify(token, now_secs() as i64, crate::satoken::API_AUDIENCE)
                .inspect_err(|e| tracing::debug!("service account token refused: {e}"))
                .ok()?;
            return Some(Identity {
                name: format!("system:serviceaccount:{}:{}", c.namespace, c.name),
                uid: c.uid,
                groups: vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", c.namespace),
                ],
                service_account: Some(ServiceAccountToken {
                    namespace: c.namespace,
                    name: c.name,
                    bound: c.bound,
                }),
            });
        }
        // Bootstrap token: [a-z0-9]{6}.[a-z0-9]{16}.
        let (id, secret) = token.split_once('.')?;
        if id.len() != 6 || secret.len() != 16 {
            return None;
        }
        let t = self.bootstrap.get(id)?;
        // Constant-time comparison: no early exit on the first difference.
        let same = t.secret.len() == secret.len()
            && t.secret
                .bytes()
                .zip(secret.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same || t.expires <= now_secs() {
            return None;
        }
        Some(Identity {
            name: format!("system:bootstrap:{id}"),
            uid: String::new(),
            groups: vec![
                "system:bootstrappers".into(),
                "system:bootstrappers:nodes".into(),
            ],
            service_account: None,
        })
    }
}

/// Adds the groups Kubernetes gives every authenticated user.
pub fn with_authenticated_group(mut id: Identity) -> Identity {
    if !id.in_group("system:authenticated") {
        id.groups.push("system:authenticated".into());
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_tokens_with_quoted_groups() {
        let mut a = Authenticator::default();
        a.add_static_tokens("# comment\nsecret1,alice,uid-1,\"dev,ops\"\nsecret2,bob,uid-2\n");
        let alice = a.authenticate_token("secret1").unwrap();
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.uid, "uid-1");
        assert_eq!(alice.groups, vec!["dev", "ops"]);
        assert!(a.authenticate_token("secret2").unwrap().groups.is_empty());
        assert!(a.authenticate_token("secret3").is_none());
    }

    #[test]
    fn bootstrap_tokens_check_secret_and_expiry() {
        let mut a = Authenticator::default();
        let future = now_secs() + 3600;
        a.add_bootstrap_tokens(&format!(
            "abcdef,0123456789abcdef,{future}\nzzzzzz,0123456789abcdef,1\n"
        ));
        let id = a.authenticate_token("abcdef.0123456789abcdef").unwrap();
        assert_eq!(id.name, "system:bootstrap:abcdef");
        assert!(id.in_group("system:bootstrappers"));
        assert!(a.authenticate_token("abcdef.0123456789abcdeX").is_none());
        // Expired.
        assert!(a.authenticate_token("zzzzzz.0123456789abcdef").is_none());
        assert_eq!(
            a.fleet_bootstrap_tokens(),
            1,
            "expired ones are not counted"
        );
    }
}
