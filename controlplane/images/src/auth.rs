//! Registry credentials: pull secrets (`kubernetes.io/dockerconfigjson`,
//! legacy `.dockercfg`) and matching them to a registry host.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::Credential;

#[derive(Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Parses a dockerconfigjson (`{"auths": {...}}`) or a legacy dockercfg (the
/// `auths` map alone). Each entry has `auth` (base64 `user:password`) or
/// `username` and `password`.
pub fn credentials_from_docker_config(json: &[u8]) -> Result<Vec<Credential>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("docker config is not JSON: {e}"))?;
    let map = match value.get("auths") {
        Some(auths) => auths.clone(),
        None => value,
    };
    let entries: std::collections::BTreeMap<String, Entry> = serde_json::from_value(map)
        .map_err(|e| format!("docker config: expected an object of registry entries: {e}"))?;
    let mut out = Vec::with_capacity(entries.len());
    for (registry, entry) in entries {
        let (username, password) = match (entry.auth.filter(|a| !a.is_empty()), entry.username) {
            (Some(auth), _) => {
                let raw = STANDARD.decode(auth.trim()).map_err(|e| {
                    format!("docker config entry {registry:?}: `auth` is not base64: {e}")
                })?;
                let text = String::from_utf8(raw).map_err(|_| {
                    format!("docker config entry {registry:?}: `auth` is not UTF-8")
                })?;
                let (u, p) = text.split_once(':').ok_or_else(|| {
                    format!("docker config entry {registry:?}: `auth` is not user:password")
                })?;
                (u.to_string(), p.to_string())
            }
            (None, Some(u)) => (u, entry.password.unwrap_or_default()),
            (None, None) => {
                return Err(format!(
                    "docker config entry {registry:?} has neither `auth` nor `username`"
                ));
            }
        };
        out.push(Credential {
            registry,
            username,
            password,
        });
    }
    Ok(out)
}

/// The host[:port] a credential's registry key names: keys may be URLs
/// (`https://index.docker.io/v1/`) or hosts with a path.
fn key_host(key: &str) -> &str {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    key.split('/').next().unwrap_or(key)
}

pub(crate) fn canonical_host(host: &str) -> &str {
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io",
        h => h,
    }
}

/// The first credential for `registry` (as in a parsed reference:
/// `docker.io`, `127.0.0.1:5000`).
pub fn find<'a>(creds: &'a [Credential], registry: &str) -> Option<&'a Credential> {
    let want = canonical_host(registry);
    creds
        .iter()
        .find(|c| canonical_host(key_host(&c.registry)).eq_ignore_ascii_case(want))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerconfigjson_with_auth_and_username() {
        let auth = STANDARD.encode("alice:s3cr:et");
        let json = format!(
            r#"{{"auths":{{"127.0.0.1:5000":{{"auth":"{auth}"}},
                "https://index.docker.io/v1/":{{"username":"bob","password":"pw"}}}}}}"#
        );
        let creds = credentials_from_docker_config(json.as_bytes()).unwrap();
        assert_eq!(creds.len(), 2);
        let local = find(&creds, "127.0.0.1:5000").unwrap();
        assert_eq!(
            (local.username.as_str(), local.password.as_str()),
            ("alice", "s3cr:et")
        );
        let hub = find(&creds, "docker.io").unwrap();
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("bob", "pw")
        );
        assert!(find(&creds, "127.0.0.1:5001").is_none());
    }

    #[test]
    fn legacy_dockercfg() {
        let auth = STANDARD.encode("u:p");
        let json = format!(r#"{{"registry.example:443":{{"auth":"{auth}","email":"x@y"}}}}"#);
        let creds = credentials_from_docker_config(json.as_bytes()).unwrap();
        assert_eq!(creds[0].registry, "registry.example:443");
        assert!(find(&creds, "registry.example:443").is_some());
    }

    #[test]
    fn errors_are_clear() {
        let e = credentials_from_docker_config(b"nope").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let e = credentials_from_docker_config(br#"{"auths":{"r":{"auth":"!!"}}}"#).unwrap_err();
        assert!(e.contains("not base64"), "{e}");
        let bad = STANDARD.encode("nocolon");
        let e = credentials_from_docker_config(
            format!(r#"{{"auths":{{"r":{{"auth":"{bad}"}}}}}}"#).as_bytes(),
        )
        .unwrap_err();
        assert!(e.contains("user:password"), "{e}");
        let e = credentials_from_docker_config(br#"{"auths":{"r":{}}}"#).unwrap_err();
        assert!(e.contains("neither"), "{e}");
        let e = credentials_from_docker_config(br#"{"auths":[1]}"#).unwrap_err();
        assert!(e.contains("expected an object"), "{e}");
    }
}
