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

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Keys {
    /// From a PKCS#8 P-256 private key (PEM, as `pki init` writes it).
    pub fn from_pem(pem: &str) -> Result<Keys, String> {
        use rustls::pki_types::pem::PemObject as _;
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| format!("service account key: {e}"))?;
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| format!("service account key: {e}"))?;
        Ok(Keys { pair, rng })
    }

    fn kid(&self) -> String {
        let d = ring::digest::digest(&ring::digest::SHA256, self.pair.public_key().as_ref());
        b64(&d.as_ref()[..16])
    }

    /// A token for a service account, valid from `now` for `ttl` seconds.
    pub fn issue(&self, c: &Claims, audiences: &[String], now: i64, ttl: i64) -> String {
        let header = json!({"alg": "ES256", "kid": self.kid()});
        let aud = if audiences.is_empty() {
            vec![ISSUER.to_string()]
        } else {
            audiences.to_vec()
        };
        let claims = json!({
            "iss": ISSUER,
            "aud": aud,
            "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.name),
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "kubernetes.io": {"namespace": c.namespace, "serviceaccount": {"name": c.name, "uid": c.uid}},
        });
        let signing_input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = self
            .pair
            .sign(&self.rng, signing_input.as_bytes())
            .expect("ECDSA signing");
        format!("{signing_input}.{}", b64(sig.as_ref()))
    }

    /// Verifies signature, issuer and lifetime; `None` for anything else.
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&unb64(h)?).ok()?;
        if header["alg"] != "ES256" {
            return None;
        }
        let public = signature::UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.pair.public_key().as_ref(),
        );
        public
            .verify(format!("{h}.{p}").as_bytes(), &unb64(s)?)
            .ok()?;
        let claims: Value = serde_json::from_slice(&unb64(p)?).ok()?;
        let exp = claims["exp"].as_i64()?;
        let nbf = claims["nbf"].as_i64().unwrap_or(0);
        if claims["iss"] != ISSUER || exp <= now || nbf > now + 60 {
            return None;
        }
        let k = &claims["kubernetes.io"];
        Some(Claims {
            namespace: k["namespace"].as_str()?.to_string(),
            name: k["serviceaccount"]["name"].as_str()?.to_string(),
            uid: k["serviceaccount"]["uid"].as_str()?.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::from_pem(&rcgen::KeyPair::generate().unwrap().serialize_pem()).unwrap()
    }

    #[test]
    fn issue_and_verify() {
        let k = keys();
        let c = Claims {
            namespace: "ns".into(),
            name: "robot".into(),
            uid: "u-1".into(),
        };
        let t = k.issue(&c, &[], 1000, 3600);
        assert_eq!(k.verify(&t, 1001), Some(c.clone()));
        // Expired, tampered, or signed by another key.
        assert_eq!(k.verify(&t, 4600), None);
        let mut bad = t.clone();
        bad.insert(bad.len() - 5, 'A');
        assert_eq!(k.verify(&bad, 1001), None);
        assert_eq!(keys().verify(&t, 1001), None);
        let (h, rest) = t.split_once('.').unwrap();
        let forged_claims = b64(json!({"iss": ISSUER, "exp": 99999, "kubernetes.io": {"namespace": "kube-system", "serviceaccount": {"name": "x", "uid": "y"}}}).to_string().as_bytes());
        let sig = rest.rsplit('.').next().unwrap();
        assert_eq!(k.verify(&format!("{h}.{forged_claims}.{sig}"), 1001), None);
    }
}
