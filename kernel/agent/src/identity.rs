//! The node's key and certificate signing request.
//!
//! The key is generated on the node (P-256, from the kernel's CSPRNG through
//! `getrandom`) and never leaves it; the control plane only sees the CSR
//! (PKCS#10, `CN=system:node:<name>, O=system:nodes`, ECDSA-SHA256 self
//! signature), which it checks before issuing the node certificate.
//! PKCS#10 is small enough to encode here directly: a DER writer of a few
//! lines saves an X.509 builder crate that would need `std`.

use alloc::vec::Vec;

use p256::ecdsa::{DerSignature, SigningKey, signature::Signer as _};
use p256::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the node's key or its CSR could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityError {
    /// The system has no randomness (the kernel's CSPRNG is not seeded),
    /// or it never gave a valid P-256 scalar.
    NoRandomness,
    /// The key did not encode as PKCS#8 or SubjectPublicKeyInfo: a bug,
    /// not an input.
    Encoding,
}

impl core::fmt::Display for IdentityError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            IdentityError::NoRandomness => "no randomness for the node key",
            IdentityError::Encoding => "the node key does not encode",
        })
    }
}

impl core::error::Error for IdentityError {}

/// A node key pair.
pub struct NodeKey {
    signing: SigningKey,
}

impl core::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("NodeKey(P-256, private)")
    }
}

impl NodeKey {
    /// A fresh key from the system's randomness (fails, never panics,
    /// when the node has none).
    pub fn generate() -> Result<NodeKey, IdentityError> {
        // A uniformly random scalar: retry the (~2^-32) out-of-range draws.
        for _ in 0..8 {
            let mut bytes = [0u8; 32];
            rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut bytes)
                .map_err(|_| IdentityError::NoRandomness)?;
            if let Ok(signing) = SigningKey::from_slice(&bytes) {
                return Ok(NodeKey { signing });
            }
        }
        Err(IdentityError::NoRandomness)
    }

    /// A key kept from an earlier boot (PKCS#8 DER, as
    /// [`NodeKey::private_key_der`] gave it).
    pub fn from_pkcs8(der: &[u8]) -> Option<NodeKey> {
        use p256::pkcs8::DecodePrivateKey as _;
        SigningKey::from_pkcs8_der(der)
            .ok()
            .map(|signing| NodeKey { signing })
    }

    /// The key for rustls (PKCS#8 DER).
    pub fn private_key_der(&self) -> Result<PrivateKeyDer<'static>, IdentityError> {
        let doc = self
            .signing
            .to_pkcs8_der()
            .map_err(|_| IdentityError::Encoding)?;
        Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            doc.as_bytes().to_vec(),
        )))
    }

    /// A PKCS#10 request for `CN=system:node:<node>, O=system:nodes`.
    pub fn csr(&self, node: &str) -> Result<Vec<u8>, IdentityError> {
        let spki = self
            .signing
            .verifying_key()
            .to_public_key_der()
            .map_err(|_| IdentityError::Encoding)?;
        let cn = alloc::format!("system:node:{node}");
        let subject = seq(&[
            &set(&seq(&[OID_ORGANIZATION, &utf8("system:nodes")])),
            &set(&seq(&[OID_COMMON_NAME, &utf8(&cn)])),
        ]);
        // version 0, subject, subjectPKInfo, attributes [0] (empty).
        let info = seq(&[
            &[0x02, 0x01, 0x00],
            &subject,
            spki.as_bytes(),
            &[0xa0, 0x00],
        ]);
        let sig: DerSignature = self.signing.sign(&info);
        Ok(seq(&[
            &info,
            &seq(&[OID_ECDSA_SHA256]),
            &bit_string(sig.as_bytes()),
        ]))
    }
}

/// 2.5.4.3 commonName.
const OID_COMMON_NAME: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x03];
/// 2.5.4.10 organizationName.
const OID_ORGANIZATION: &[u8] = &[0x06, 0x03, 0x55, 0x04, 0x0a];
/// 1.2.840.10045.4.3.2 ecdsa-with-SHA256.
const OID_ECDSA_SHA256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];

fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(tag);
    let n = body.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0x81, n as u8]);
    } else {
        // A CSR is far below 64 KiB.
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(body);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn set(body: &[u8]) -> Vec<u8> {
    tlv(0x31, body)
}

fn utf8(s: &str) -> Vec<u8> {
    tlv(0x0c, s.as_bytes())
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 1);
    body.push(0); // no unused bits
    body.extend_from_slice(bytes);
    tlv(0x03, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_use_the_long_form_above_127() {
        assert_eq!(tlv(0x04, &[0; 3])[..2], [0x04, 3]);
        assert_eq!(tlv(0x04, &[0; 200])[..3], [0x04, 0x81, 200]);
        assert_eq!(tlv(0x04, &[0; 300])[..4], [0x04, 0x82, 0x01, 0x2c]);
    }

    #[test]
    fn csr_parses_with_the_node_subject_and_a_valid_signature() {
        use x509_parser::prelude::*;
        let key = NodeKey::generate().unwrap();
        let der = key.csr("worker-1").unwrap();
        let (rest, csr) = X509CertificationRequest::from_der(&der).unwrap();
        assert!(rest.is_empty());
        csr.verify_signature().expect("self-signature verifies");
        let subject = &csr.certification_request_info.subject;
        let cn: Vec<_> = subject
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let o: Vec<_> = subject
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["system:node:worker-1"]);
        assert_eq!(o, ["system:nodes"]);
        // Two keys are different (the randomness is wired).
        assert_ne!(NodeKey::generate().unwrap().csr("worker-1").unwrap(), der);
    }
}
