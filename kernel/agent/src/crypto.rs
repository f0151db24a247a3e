//! The node's TLS crypto provider: exactly what the node uses, nothing else.
//!
//! TLS 1.3 with ChaCha20-Poly1305 (the fastest AEAD in software on a node
//! without AES instructions), X25519 key exchange, and ECDSA P-256/SHA-256
//! for both the cluster's certificates and the node's own key. The cipher
//! suite and the signer come from `rustls-rustcrypto`; the key exchange and
//! the verifier are written here over the RustCrypto primitives so that the
//! algorithms the node never meets (RSA, P-384, AES, Ed25519 verification)
//! are not linked into the kernel: less code in the trusted base, and about
//! 150 KB less image.

use alloc::boxed::Box;
use alloc::sync::Arc;

use rustls::crypto::{
    ActiveKeyExchange, CryptoProvider, KeyProvider, SharedSecret, SupportedKxGroup,
    WebPkiSupportedAlgorithms,
};
use rustls::pki_types::{
    AlgorithmIdentifier, InvalidSignature, PrivateKeyDer, SignatureVerificationAlgorithm, alg_id,
};
use rustls::{NamedGroup, SignatureScheme};

/// The provider for every node TLS connection.
pub fn provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: alloc::vec![rustls_rustcrypto::TLS13_CHACHA20_POLY1305_SHA256],
        kx_groups: alloc::vec![&X25519 as &dyn SupportedKxGroup],
        signature_verification_algorithms: ALGORITHMS,
        secure_random: &rustls_rustcrypto::Provider,
        key_provider: &EcdsaKeys,
    }
}

static ALGORITHMS: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[&EcdsaP256Sha256],
    mapping: &[(SignatureScheme::ECDSA_NISTP256_SHA256, &[&EcdsaP256Sha256])],
};

/// ECDSA P-256 with SHA-256 signatures (certificates and CertificateVerify).
#[derive(Debug)]
struct EcdsaP256Sha256;

impl SignatureVerificationAlgorithm for EcdsaP256Sha256 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        use p256::ecdsa::signature::Verifier as _;
        let key =
            p256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).map_err(|_| InvalidSignature)?;
        let sig = p256::ecdsa::DerSignature::from_bytes(signature).map_err(|_| InvalidSignature)?;
        key.verify(message, &sig).map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_P256
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::ECDSA_SHA256
    }
}

/// Loads the node's own (P-256) key.
#[derive(Debug)]
struct EcdsaKeys;

impl KeyProvider for EcdsaKeys {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        rustls_rustcrypto::sign::any_ecdsa_type(&key_der)
    }
}

/// X25519 ephemeral key exchange.
#[derive(Debug)]
struct X25519;

impl SupportedKxGroup for X25519 {
    fn start(&self) -> Result<Box<dyn ActiveKeyExchange>, rustls::Error> {
        let secret = x25519_dalek::EphemeralSecret::random_from_rng(rand_core::OsRng);
        let public = x25519_dalek::PublicKey::from(&secret);
        Ok(Box::new(X25519Exchange { secret, public }))
    }

    fn name(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

struct X25519Exchange {
    secret: x25519_dalek::EphemeralSecret,
    public: x25519_dalek::PublicKey,
}

impl ActiveKeyExchange for X25519Exchange {
    fn complete(self: Box<Self>, peer: &[u8]) -> Result<SharedSecret, rustls::Error> {
        let peer: [u8; 32] = peer
            .try_into()
            .map_err(|_| rustls::PeerMisbehaved::InvalidKeyShare)?;
        let shared = self
            .secret
            .diffie_hellman(&x25519_dalek::PublicKey::from(peer));
        // A low-order peer point gives an all-zero secret (RFC 7748 §6.1).
        if !shared.was_contributory() {
            return Err(rustls::PeerMisbehaved::InvalidKeyShare.into());
        }
        Ok(SharedSecret::from(&shared.as_bytes()[..]))
    }

    fn pub_key(&self) -> &[u8] {
        self.public.as_bytes()
    }

    fn group(&self) -> NamedGroup {
        NamedGroup::X25519
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x25519_refuses_a_low_order_peer_point_and_agrees_otherwise() {
        let a = X25519.start().unwrap();
        // The all-zero point has order 1: the shared secret would be zero.
        assert!(a.complete(&[0u8; 32]).is_err());
        let (a, b) = (X25519.start().unwrap(), X25519.start().unwrap());
        let (pa, pb) = (a.pub_key().to_vec(), b.pub_key().to_vec());
        let (sa, sb) = (a.complete(&pb).unwrap(), b.complete(&pa).unwrap());
        assert_eq!(sa.secret_bytes(), sb.secret_bytes());
        assert!(X25519.start().unwrap().complete(&[1u8; 31]).is_err());
    }

    #[test]
    fn the_verifier_accepts_p256_sha256_and_nothing_forged() {
        use p256::ecdsa::signature::Signer as _;
        let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let public = key.verifying_key().to_encoded_point(false);
        let sig: p256::ecdsa::DerSignature = key.sign(b"message");
        let v = EcdsaP256Sha256;
        assert!(
            v.verify_signature(public.as_bytes(), b"message", sig.as_bytes())
                .is_ok()
        );
        assert!(
            v.verify_signature(public.as_bytes(), b"massage", sig.as_bytes())
                .is_err()
        );
        assert!(
            v.verify_signature(public.as_bytes(), b"message", &sig.as_bytes()[1..])
                .is_err()
        );
        assert!(
            v.verify_signature(&[4u8; 65], b"message", sig.as_bytes())
                .is_err()
        );
    }
}
