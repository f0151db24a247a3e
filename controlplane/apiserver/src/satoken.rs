//! Service account tokens: ES256 JWTs signed with the cluster's service
//! account key (`sa.key`), issued through the TokenRequest subresource and
//! verified by the authenticator. Like kube's bound tokens they carry the
//! service account's uid, and the caller checks it still exists.

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// The signing key and its public half.
pub struct Keys {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys").finish_non_exhaustive()
    }
}

/// An object a token is bound to (kube's `boundObjectRef`): the token is
/// valid only while that object exists with this uid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundObject {
    /// "Pod" or "Secret".
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub bound: Option<BoundObject>,
}

/// Why a token is refused (all answered 401 alike; the kinds are for logs
/// and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a compact JWS")]
    Malformed,
    #[error("algorithm is not ES256")]
    Algorithm,
    #[error("signature does not verify")]
    Signature,
    #[error("issuer is not the API server")]
    Issuer,
    #[error("audience does not include the API server")]
    Audience,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("claims are incomplete")]
    Claims,
    #[error("lifetime overflows")]
    Lifetime,
}

/// The audience the API server accepts (kube's `--api-audiences`, which
/// defaults to the issuer); TokenRequests without audiences get it.
pub const API_AUDIENCE: &str = ISSUER;

/// Clock skew allowed on `nbf`/`iat`.
const LEEWAY: i64 = 60;

/// Why a service-account signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("service account key: not a PKCS#8 PEM key: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("service account key: not a P-256 key: {0}")]
    Rejected(ring::error::KeyRejected),
}

impl Keys {
    /// From a PKCS#8 P-256 private key (PEM, as `pki init` writes it).
    pub fn from_pem(pem: &str) -> Result<Keys, KeyError> {
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(KeyError::Rejected)?;
        Ok(Keys { pair, rng })
    }

    fn kid(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, self.pair.public_key().as_ref());
        b64(&d.as_ref()[..16])
    }

    /// The public key (uncompressed SEC1 point), what a forger knows.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// A token for a service account, valid from `now` for `ttl` seconds
    /// (`now + ttl` checked: an overflow is an error, never a wrapped or
    /// saturated expiry).
    pub fn issue(
        &self,
        c: &Claims,
        audiences: &[String],
        now: i64,
        ttl: i64,
    ) -> Result<String, TokenError> {
        let exp = now.checked_add(ttl).ok_or(TokenError::Lifetime)?;
        if ttl <= 0 {
            return Err(TokenError::Lifetime);
        }
        let header = json!({"alg": "ES256", "kid": self.kid()});
        let aud = if audiences.is_empty() {
            vec![API_AUDIENCE.to_string()]
        } else {
            audiences.to_vec()
        };
        let mut k =
            json!({"namespace": c.namespace, "serviceaccount": {"name": c.name, "uid": c.uid}});
        if let Some(b) = &c.bound {
            let field = if b.kind == "Pod" { "pod" } else { "secret" };
            k[field] = json!({"name": b.name, "uid": b.uid});
        }
        let claims = json!({
            "iss": ISSUER,
            "aud": aud,
            "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.name),
            "iat": now,
            "nbf": now,
            "exp": exp,
            "kubernetes.io": k,
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| TokenError::Signature)?;
        Ok(format!("{signing_input}.{}", b64(sig.as_ref())))
    }

    /// Verifies the algorithm (ES256 only: `none` and HMAC are refused
    /// before anything else), the signature with this key, issuer,
    /// audience (must include `audience`), lifetime and the claims' shape.
    /// Whether the account and bound object still exist is the caller's
    /// check.
    pub fn verify(&self, token: &str, now: i64, audience: &str) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let header: Value = unb64(h)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if header.get("alg").and_then(Value::as_str) != Some("ES256") {
            return Err(TokenError::Algorithm);
        }
        let sig = unb64(s).ok_or(TokenError::Malformed)?;
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.pair.public_key().as_ref(),
        );
        public
            .verify(format!("{h}.{p}").as_bytes(), &sig)
            .map_err(|_| TokenError::Signature)?;
        let claims: Value = unb64(p)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenError::Malformed)?;
        if claims.get("iss").and_then(Value::as_str) != Some(ISSUER) {
            return Err(TokenError::Issuer);
        }
        let aud_ok = match claims.get("aud") {
            Some(Value::String(a)) => a == audience,
            Some(Value::Array(l)) => l.iter().any(|a| a.as_str() == Some(audience)),
            _ => false,
        };
        if !aud_ok {
            return Err(TokenError::Audience);
        }
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or(TokenError::Claims)?;
        if exp <= now {
            return Err(TokenError::Expired);
        }
        for f in ["nbf", "iat"] {
            if let Some(t) = claims.get(f)
                && t.as_i64().is_none_or(|t| t > now.saturating_add(LEEWAY))
            {
                return Err(TokenError::NotYetValid);
            }
        }
        let k = claims.get("kubernetes.io").ok_or(TokenError::Claims)?;
        let text = |v: &Value, ptr: &str| {
            v.pointer(ptr)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .ok_or(TokenError::Claims)
        };
        let namespace = text(k, "/namespace")?;
        let name = text(k, "/serviceaccount/name")?;
        let uid = text(k, "/serviceaccount/uid")?;
        if claims.get("sub").and_then(Value::as_str)
            != Some(format!("system:serviceaccount:{namespace}:{name}").as_str())
        {
            return Err(TokenError::Claims);
        }
        let bound = match (k.get("pod"), k.get("secret")) {
            (None, None) => None,
            (Some(b), None) | (None, Some(b)) => Some(BoundObject {
                kind: if k.get("pod").is_some() {
                    "Pod"
                } else {
                    "Secret"
                }
                .to_string(),
                name: text(b, "/name")?,
                uid: text(b, "/uid")?,
            }),
            (Some(_), Some(_)) => return Err(TokenError::Claims),
        };
        Ok(Claims {
            namespace,
            name,
            uid,
            bound,
        })
    }
}

/// The invariants the `satoken` fuzz target (`tests/fuzz`) and the
/// bounded test below check.
#[doc(hidden)]
pub mod fuzz {
    use super::{API_AUDIENCE, Claims, Keys};

    /// The fixed moment tokens are checked at.
    pub const NOW: i64 = 1_800_000_000;

    /// A signing key (new per process) and a token it issued.
    pub fn keys() -> (Keys, String) {
        let pem = rcgen::KeyPair::generate().expect("key").serialize_pem();
        let k = Keys::from_pem(&pem).expect("key loads");
        let t = k.issue(&claims(), &[], NOW - 10, 3600).expect("issues");
        (k, t)
    }

    fn claims() -> Claims {
        Claims {
            namespace: "ns".into(),
            name: "robot".into(),
            uid: "u-1".into(),
            bound: None,
        }
    }

    /// First byte even: `data` is a token, which must be refused unless it
    /// is the issued one (nobody but the key holder makes a valid token,
    /// whatever the header says). Odd: the bytes edit the issued token
    /// (offset, byte pairs), and any changed token must be refused too; the
    /// last eight bytes of a long input are also a lifetime to issue with,
    /// which must not panic and must verify when it is accepted.
    pub fn one(k: &Keys, issued: &str, data: &[u8]) {
        let Some((&ctl, body)) = data.split_first() else {
            return;
        };
        let token = if ctl % 2 == 0 {
            String::from_utf8_lossy(body).into_owned()
        } else {
            let mut t = issued.as_bytes().to_vec();
            for pair in body.chunks(2) {
                let at = pair[0] as usize % t.len();
                match pair.get(1) {
                    Some(b) => t[at] = *b,
                    None => {
                        t.remove(at);
                    }
                }
            }
            String::from_utf8_lossy(&t).into_owned()
        };
        let verdict = k.verify(&token, NOW, API_AUDIENCE);
        assert!(
            verdict.is_err() || token == issued,
            "accepted a token it did not issue: {token}"
        );
        if body.len() >= 8 {
            let ttl = i64::from_le_bytes(body[body.len() - 8..].try_into().expect("8 bytes"));
            if let Ok(t) = k.issue(&claims(), &[], NOW, ttl) {
                assert_eq!(k.verify(&t, NOW, API_AUDIENCE), Ok(claims()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_pem(&rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            namespace: "ns".into(),
            name: "robot".into(),
            uid: "u-1".into(),
            bound: None,
        }
    }

    fn sign_with(k: &Keys, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = k.pair.sign(&k.rng, input.as_bytes()).unwrap();
        format!("{input}.{}", b64(sig.as_ref()))
    }

    #[test]
    fn issue_and_verify() {
        let k = keys();
        let c = claims();
        let t = k.issue(&c, &[], 1000, 3600).unwrap();
        assert_eq!(k.verify(&t, 1001, API_AUDIENCE), Ok(c.clone()));
        // Expired, tampered, or signed by another key.
        assert_eq!(k.verify(&t, 4600, API_AUDIENCE), Err(TokenError::Expired));
        let mut bad = t.clone();
        bad.insert(bad.len() - 5, 'A');
        assert!(k.verify(&bad, 1001, API_AUDIENCE).is_err());
        assert_eq!(
            keys().verify(&t, 1001, API_AUDIENCE),
            Err(TokenError::Signature)
        );
        let (h, rest) = t.split_once('.').unwrap();
        let forged_claims = b64(json!({"iss": ISSUER, "exp": 99999, "kubernetes.io": {"namespace": "kube-system", "serviceaccount": {"name": "x", "uid": "y"}}}).to_string().as_bytes());
        let sig = rest.rsplit('.').next().unwrap();
        assert_eq!(
            k.verify(&format!("{h}.{forged_claims}.{sig}"), 1001, API_AUDIENCE),
            Err(TokenError::Signature)
        );
        // Bound objects travel in the token.
        let bound = Claims {
            bound: Some(BoundObject {
                kind: "Pod".into(),
                name: "p".into(),
                uid: "pu".into(),
            }),
            ..claims()
        };
        let t = k.issue(&bound, &[], 1000, 3600).unwrap();
        assert_eq!(k.verify(&t, 1001, API_AUDIENCE), Ok(bound));
    }

    /// The forgeries kube's authenticator refuses: no algorithm, HMAC keyed
    /// with the (public) verification key, another audience, a lifetime
    /// that overflows.
    #[test]
    fn forged_tokens_are_refused() {
        let k = keys();
        let body = json!({"iss": ISSUER, "aud": [API_AUDIENCE], "sub": "system:serviceaccount:ns:robot",
            "exp": 99999, "nbf": 0, "iat": 0,
            "kubernetes.io": {"namespace": "ns", "serviceaccount": {"name": "robot", "uid": "u-1"}}});
        let enc = |v: &Value| b64(v.to_string().as_bytes());
        let none = format!("{}.{}.", enc(&json!({"alg": "none"})), enc(&body));
        assert_eq!(
            k.verify(&none, 1000, API_AUDIENCE),
            Err(TokenError::Algorithm)
        );
        let input = format!("{}.{}", enc(&json!({"alg": "HS256"})), enc(&body));
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k.public_key()),
            input.as_bytes(),
        );
        let hs = format!("{input}.{}", b64(mac.as_ref()));
        assert_eq!(
            k.verify(&hs, 1000, API_AUDIENCE),
            Err(TokenError::Algorithm)
        );
        // Lower-case or padded algorithm names are not ES256 either.
        let es = format!(
            "{}.{}.{}",
            enc(&json!({"alg": "es256"})),
            enc(&body),
            b64(mac.as_ref())
        );
        assert_eq!(
            k.verify(&es, 1000, API_AUDIENCE),
            Err(TokenError::Algorithm)
        );
        // Properly signed, for someone else.
        let other = k
            .issue(&claims(), &["https://vault.example".into()], 1000, 3600)
            .unwrap();
        assert_eq!(
            k.verify(&other, 1001, API_AUDIENCE),
            Err(TokenError::Audience)
        );
        let mut no_aud = body.clone();
        no_aud.as_object_mut().unwrap().remove("aud");
        let t = sign_with(&k, &json!({"alg": "ES256"}), &no_aud);
        assert_eq!(k.verify(&t, 1000, API_AUDIENCE), Err(TokenError::Audience));
        // A subject that disagrees with the claims, or a token from the future.
        let mut sub = body.clone();
        sub["sub"] = json!("system:serviceaccount:kube-system:admin");
        let t = sign_with(&k, &json!({"alg": "ES256"}), &sub);
        assert_eq!(k.verify(&t, 1000, API_AUDIENCE), Err(TokenError::Claims));
        let mut future = body.clone();
        future["nbf"] = json!(5000);
        let t = sign_with(&k, &json!({"alg": "ES256"}), &future);
        assert_eq!(
            k.verify(&t, 1000, API_AUDIENCE),
            Err(TokenError::NotYetValid)
        );
        // now + ttl overflowing is refused, not wrapped.
        assert_eq!(
            k.issue(&claims(), &[], i64::MAX - 10, 3600),
            Err(TokenError::Lifetime)
        );
        assert_eq!(k.issue(&claims(), &[], 1000, 0), Err(TokenError::Lifetime));
        // Garbage of every shape.
        for t in ["", ".", "..", "a.b.c", "a.b.c.d", "e30.e30.", "!!.!!.!!"] {
            assert!(k.verify(t, 1000, API_AUDIENCE).is_err(), "{t}");
        }
    }

    /// Bounded fuzzing on stable over [`fuzz::one`] (`SKIFF_FUZZ_SECS`,
    /// `SKIFF_FUZZ_SEED` override): arbitrary tokens, edits of a valid
    /// one and lifetimes at the edges.
    #[test]
    fn fuzz_tokens_bounded() {
        let mut run = skiff_test_support::fuzz::Bounded::from_env(1.0, 0x70c);
        let (k, issued) = fuzz::keys();
        let (h, rest) = issued.split_once('.').unwrap();
        let (p, _) = rest.split_once('.').unwrap();
        let none = format!("{}.{p}.", b64(br#"{"alg":"none"}"#));
        let hs = format!("{}.{p}.{}", b64(br#"{"alg":"HS256"}"#), b64(b"sig"));
        let seeds: Vec<Vec<u8>> = vec![
            [&[0u8][..], issued.as_bytes()].concat(),
            [&[0u8][..], none.as_bytes()].concat(),
            [&[0u8][..], hs.as_bytes()].concat(),
            [&[0u8][..], format!("{h}.{p}").as_bytes()].concat(),
            [&[1u8, 5, b'A', 200], &i64::MAX.to_le_bytes()[..]].concat(),
            [&[1u8, 9], &(-1i64).to_le_bytes()[..]].concat(),
        ];
        while run.running() {
            let mut input = seeds[run.next_u64() as usize % seeds.len()].clone();
            for _ in 0..run.next_u64() % 4 {
                let len = input.len();
                let at = 1 + run.next_u64() as usize % len.max(1);
                match run.next_u64() % 3 {
                    0 if at < len => input[at] = run.next_u64() as u8,
                    1 => input.insert(at.min(len), b".=-_{}\"A0"[run.next_u64() as usize % 9]),
                    _ if at < len => {
                        input.remove(at);
                    }
                    _ => {}
                }
            }
            fuzz::one(&k, &issued, &input);
        }
        eprintln!("fuzz: {} tokens", run.runs());
        assert!(run.runs() > 100);
    }
}
