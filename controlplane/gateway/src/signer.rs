//! Node certificates: signs a node's CSR with the cluster CA after checking
//! that it asks for exactly `CN=system:node:<name>`. Everything else in the
//! request (other subject fields, extensions) is ignored: the gateway, not the
//! node, decides what a node certificate may do.

use crate::StartError;
use std::path::Path;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, DnValue, ExtendedKeyUsagePurpose,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateSigningRequestDer;

/// The cluster CA, able to sign node certificates.
pub struct NodeSigner {
    issuer: Issuer<'static, KeyPair>,
    /// How long an issued node certificate is valid.
    pub validity: Duration,
}

impl std::fmt::Debug for NodeSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSigner")
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}

/// Node names follow DNS-1123 subdomain rules, like kube's Node names.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric()
}

fn common_name(p: &CertificateParams) -> Option<String> {
    match p.distinguished_name.get(&DnType::CommonName)? {
        DnValue::Utf8String(s) => Some(s.clone()),
        DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

impl NodeSigner {
    /// Loads `ca.crt` and `ca.key` from the API server's PKI directory.
    pub fn load(pki_dir: &Path, validity: Duration) -> Result<NodeSigner, StartError> {
        use skiff_apiserver::pki::{CA_CERT, CA_KEY};
        let ca_err = |f: &str, e: Box<dyn std::error::Error + Send + Sync>| StartError::Ca {
            path: pki_dir.join(f),
            source: e,
        };
        let read =
            |f: &str| std::fs::read_to_string(pki_dir.join(f)).map_err(|e| ca_err(f, e.into()));
        let key = KeyPair::from_pem(&read(CA_KEY)?).map_err(|e| ca_err(CA_KEY, e.into()))?;
        let issuer = Issuer::from_ca_cert_pem(&read(CA_CERT)?, key)
            .map_err(|e| ca_err(CA_CERT, e.into()))?;
        Ok(NodeSigner { issuer, validity })
    }

    /// Signs `csr_der` for node `name`; the error is the reason to log and
    /// send back.
    pub fn sign(&self, name: &str, csr_der: &[u8]) -> Result<Vec<u8>, String> {
        if !valid_node_name(name) {
            return Err(format!("invalid node name {name:?}"));
        }
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(|e| format!("bad certificate signing request: {e}"))?;
        let want = format!("system:node:{name}");
        match common_name(&csr.params) {
            Some(cn) if cn == want => {}
            Some(cn) => return Err(format!("CSR common name {cn:?} is not {want:?}")),
            None => return Err("CSR has no common name".into()),
        }
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, want);
        p.distinguished_name
            .push(DnType::OrganizationName, "system:nodes");
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let now = SystemTime::now();
        // A little back-dating absorbs clock skew between node and control plane.
        p.not_before = (now - Duration::from_secs(300)).into();
        p.not_after = (now + self.validity).into();
        let signed = CertificateSigningRequestParams {
            params: p,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| format!("signing: {e}"))?;
        Ok(signed.der().to_vec())
    }
}

/// The CSR decoder and signer under arbitrary input, for the `csr` fuzz
/// target and the bounded test below.
pub mod fuzz {
    pub use super::NodeSigner;
    use super::*;

    /// Node names the first input byte picks from, invalid ones included.
    pub const NAMES: &[&str] = &["n1", "node-a.example", "N/1", "", "a..b", "x"];

    /// A signer with a throwaway CA (no files).
    pub fn signer() -> NodeSigner {
        let key = KeyPair::generate().expect("CA key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, "fuzz-ca");
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        NodeSigner {
            issuer: Issuer::new(p, key),
            validity: Duration::from_secs(3600),
        }
    }

    /// A CSR for `cn`.
    pub fn csr(cn: &str) -> Vec<u8> {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serialize_request(&key).expect("CSR").der().to_vec()
    }

    /// First byte: the node name; the rest: the CSR's DER. Panics if an
    /// accepted request yields anything but a client certificate for
    /// exactly `system:node:<name>` in `system:nodes`, or an invalid name
    /// is signed at all.
    pub fn one(signer: &NodeSigner, data: &[u8]) {
        let Some((&ctl, der)) = data.split_first() else {
            return;
        };
        let name = NAMES[ctl as usize % NAMES.len()];
        let Ok(cert) = signer.sign(name, der) else {
            return;
        };
        assert!(valid_node_name(name), "signed for invalid name {name:?}");
        let id = skiff_apiserver::identity_from_cert(&cert).expect("issued cert parses");
        assert_eq!(id.name, format!("system:node:{name}"));
        assert_eq!(id.groups, vec!["system:nodes".to_string()]);
        let (_, c) = x509_parser::parse_x509_certificate(&cert).expect("x509");
        assert!(!c.is_ca(), "a node certificate must not be a CA");
        let life = c.validity().not_after.timestamp() - c.validity().not_before.timestamp();
        assert!(
            life <= signer.validity.as_secs() as i64 + 300,
            "lifetime {life}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounded fuzzing on stable over [`fuzz::one`]'s invariants: seeded
    /// mutations of CSRs for about a second (`SKIFF_FUZZ_SECS`,
    /// `SKIFF_FUZZ_SEED` override).
    #[test]
    fn fuzz_csr_bounded() {
        let env = |k: &str| std::env::var(k).ok().and_then(|s| s.parse::<f64>().ok());
        let secs = env("SKIFF_FUZZ_SECS").unwrap_or(1.0);
        let mut state = env("SKIFF_FUZZ_SEED").map_or(0x5eed, |s| s as u64);
        let mut next = move || {
            // splitmix64
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let signer = fuzz::signer();
        let seeds: Vec<Vec<u8>> = fuzz::NAMES
            .iter()
            .enumerate()
            .flat_map(|(i, n)| {
                [
                    [&[i as u8][..], &fuzz::csr(&format!("system:node:{n}"))].concat(),
                    [&[i as u8][..], &fuzz::csr("system:masters")].concat(),
                ]
            })
            .collect();
        let start = std::time::Instant::now();
        let mut runs = 0u64;
        while start.elapsed().as_secs_f64() < secs {
            let mut input = seeds[next() as usize % seeds.len()].clone();
            for _ in 0..next() % 4 {
                let len = input.len().max(2);
                let at = 1 + next() as usize % (len - 1);
                match next() % 4 {
                    0 if at < input.len() => input[at] = next() as u8,
                    1 => input.insert(at.min(input.len()), next() as u8),
                    2 if at < input.len() => {
                        input.remove(at);
                    }
                    _ => input.truncate(at),
                }
            }
            fuzz::one(&signer, &input);
            runs += 1;
        }
        assert!(runs > 10, "{runs} runs");
        // Unmutated seeds: the matching ones are signed.
        assert!(signer.sign("n1", &seeds[0][1..]).is_ok());
    }

    fn csr(cn: &str) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.serialize_request(&key).unwrap().der().to_vec()
    }

    fn signer() -> (tempfile::TempDir, NodeSigner) {
        let dir = tempfile::tempdir().unwrap();
        skiff_apiserver::pki::init(dir.path(), &Default::default()).unwrap();
        let s = NodeSigner::load(dir.path(), Duration::from_secs(3600)).unwrap();
        (dir, s)
    }

    #[test]
    fn signs_only_the_matching_common_name() {
        let (_d, s) = signer();
        let der = s.sign("n1", &csr("system:node:n1")).unwrap();
        let id = skiff_apiserver::identity_from_cert(&der).unwrap();
        assert_eq!(id.name, "system:node:n1");
        assert_eq!(id.groups, vec!["system:nodes"]);
        let e = s.sign("n1", &csr("system:node:n2")).unwrap_err();
        assert!(e.contains("is not"), "{e}");
        let e = s.sign("n1", &csr("system:masters")).unwrap_err();
        assert!(e.contains("is not"), "{e}");
        assert!(s.sign("N/1", &csr("system:node:N/1")).is_err());
        let mut bad = csr("system:node:n1");
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(s.sign("n1", &bad).unwrap_err().contains("bad certificate"));
    }
}
