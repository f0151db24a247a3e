//! The node's credentials as kept on its disk between boots: the record
//! codec. A node that boots with a certificate still valid for its name
//! and its cluster reconnects with it instead of bootstrapping again (as
//! the kubelet keeps `/var/lib/kubelet/pki`); anything else in the record
//! place (an empty disk, another node's or cluster's record, a torn or
//! corrupted write) is refused with the reason and the node bootstraps.
//!
//! Layout, little endian: magic `SKIFFCR1`, payload length (u32), SHA-256
//! of the payload, then the payload: node name (u16 length + UTF-8),
//! SHA-256 of the cluster CA certificate, issued and not-after (unix ms,
//! u64 each), the PKCS#8 key (u16 length + DER), the chain (u8 count, then
//! u16 length + DER each, leaf first).

use alloc::string::String;
use alloc::vec::Vec;

use sha2::{Digest as _, Sha256};

const MAGIC: &[u8; 8] = b"SKIFFCR1";
/// Magic, length and checksum: enough to know how much more to read.
pub const HEADER: usize = 8 + 4 + 32;
/// Largest record accepted: a key and a short chain fit many times over.
pub const MAX_RECORD: usize = 16 << 10;
const MAX_CHAIN: usize = 8;

/// Why a kept record was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavedError {
    /// Nothing was ever saved there (all zeros).
    Empty,
    /// A torn write, a flipped bit, or not a record at all.
    Corrupt(&'static str),
    /// Another node's credentials.
    OtherNode(String),
    /// Credentials from a cluster with another CA.
    OtherCluster,
    /// The certificate's not-after (unix ms) has passed.
    Expired(u64),
    /// The key is not a P-256 PKCS#8 key.
    BadKey,
}

impl core::fmt::Display for SavedError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SavedError::Empty => f.write_str("no saved credentials"),
            SavedError::Corrupt(why) => write!(f, "saved credentials are corrupt ({why})"),
            SavedError::OtherNode(n) => write!(f, "saved credentials belong to node {n:?}"),
            SavedError::OtherCluster => f.write_str("saved credentials are for another cluster CA"),
            SavedError::Expired(t) => write!(f, "saved certificate expired at unix_ms={t}"),
            SavedError::BadKey => f.write_str("saved key does not decode"),
        }
    }
}

impl core::error::Error for SavedError {}

/// A decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub node: String,
    pub ca_sha256: [u8; 32],
    pub issued_ms: u64,
    pub not_after_ms: u64,
    pub key_pkcs8: Vec<u8>,
    pub chain: Vec<Vec<u8>>,
}

pub(crate) fn ca_fingerprint(ca_der: &[u8]) -> [u8; 32] {
    Sha256::digest(ca_der).into()
}

impl Record {
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Vec::new();
        let field = |p: &mut Vec<u8>, b: &[u8]| {
            p.extend_from_slice(&(b.len() as u16).to_le_bytes());
            p.extend_from_slice(b);
        };
        field(&mut p, self.node.as_bytes());
        p.extend_from_slice(&self.ca_sha256);
        p.extend_from_slice(&self.issued_ms.to_le_bytes());
        p.extend_from_slice(&self.not_after_ms.to_le_bytes());
        field(&mut p, &self.key_pkcs8);
        p.push(self.chain.len() as u8);
        for c in &self.chain {
            field(&mut p, c);
        }
        let mut out = Vec::with_capacity(HEADER + p.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(&Sha256::digest(&p));
        out.extend_from_slice(&p);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Record, SavedError> {
        let total = record_len(bytes)?;
        let Some(payload) = bytes.get(HEADER..total) else {
            return Err(SavedError::Corrupt("truncated"));
        };
        if Sha256::digest(payload).as_slice() != &bytes[12..HEADER] {
            return Err(SavedError::Corrupt("checksum mismatch"));
        }
        let mut r = Reader(payload);
        let node =
            String::from_utf8(r.field()?.to_vec()).map_err(|_| SavedError::Corrupt("node name"))?;
        let ca_sha256 = r.take(32)?.try_into().expect("32 bytes");
        let issued_ms = r.u64()?;
        let not_after_ms = r.u64()?;
        let key_pkcs8 = r.field()?.to_vec();
        let n = usize::from(r.take(1)?[0]);
        if n == 0 || n > MAX_CHAIN {
            return Err(SavedError::Corrupt("chain length"));
        }
        let chain = (0..n)
            .map(|_| r.field().map(<[u8]>::to_vec))
            .collect::<Result<Vec<_>, _>>()?;
        if !r.0.is_empty() {
            return Err(SavedError::Corrupt("trailing bytes"));
        }
        Ok(Record {
            node,
            ca_sha256,
            issued_ms,
            not_after_ms,
            key_pkcs8,
            chain,
        })
    }
}

/// Bytes the record starting with `head` (at least [`HEADER`] bytes of it)
/// takes in all: how much a driver reading it from disk needs.
pub fn record_len(head: &[u8]) -> Result<usize, SavedError> {
    if head.len() < HEADER {
        return Err(SavedError::Corrupt("short header"));
    }
    if &head[..8] != MAGIC {
        return Err(if head[..8].iter().all(|&b| b == 0) {
            SavedError::Empty
        } else {
            SavedError::Corrupt("bad magic")
        });
    }
    let len = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")) as usize;
    if HEADER + len > MAX_RECORD {
        return Err(SavedError::Corrupt("too long"));
    }
    Ok(HEADER + len)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SavedError> {
        if self.0.len() < n {
            return Err(SavedError::Corrupt("truncated field"));
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    fn u64(&mut self) -> Result<u64, SavedError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn field(&mut self) -> Result<&'a [u8], SavedError> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().expect("2 bytes"));
        self.take(usize::from(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn record() -> Record {
        Record {
            node: "node-1".into(),
            ca_sha256: [7; 32],
            issued_ms: 1_000,
            not_after_ms: 2_000,
            key_pkcs8: vec![1, 2, 3],
            chain: vec![vec![4; 600], vec![5; 10]],
        }
    }

    #[test]
    fn round_trips() {
        let bytes = record().encode();
        assert_eq!(record_len(&bytes), Ok(bytes.len()));
        assert_eq!(Record::decode(&bytes), Ok(record()));
        // Sector padding after the record is ignored.
        let mut padded = bytes.clone();
        padded.resize(4096, 0);
        assert_eq!(Record::decode(&padded), Ok(record()));
    }

    #[test]
    fn an_empty_disk_is_empty_not_corrupt() {
        assert_eq!(Record::decode(&[0; 512]), Err(SavedError::Empty));
    }

    #[test]
    fn every_flipped_or_missing_byte_is_refused() {
        let bytes = record().encode();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x40;
            assert!(Record::decode(&b).is_err(), "flip at {i} accepted");
            assert!(Record::decode(&bytes[..i]).is_err(), "cut at {i} accepted");
        }
    }
}
