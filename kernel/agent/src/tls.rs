//! TLS 1.3 client without I/O, over rustls' unbuffered API (no_std rustls
//! has no `ClientConnection`).
//!
//! The driver moves bytes: ciphertext from the socket into
//! [`TlsClient::receive`], ciphertext from [`TlsClient::take_outgoing`] to
//! the socket. Plaintext goes in through [`TlsClient::send`] (queued until
//! the handshake completes) and comes out of [`TlsClient::take_plaintext`].
//! Memory is bounded by the peer's record size (16 KiB + overhead) plus what
//! the caller queues.

use alloc::string::{String, ToString as _};
use alloc::sync::Arc;
use alloc::vec::Vec;

use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::time_provider::TimeProvider;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// The node's clock for certificate validity checks.
pub type Clock = Arc<dyn TimeProvider>;

/// Largest TLS record we accept from the peer: 16 KiB plaintext plus the
/// TLS 1.3 expansion allowance (RFC 8446 §5.2) and the header.
const MAX_RECORD: usize = 5 + (1 << 14) + 256;

/// TLS 1.3 only, pure-Rust crypto, the node's clock.
fn base(
    clock: &Clock,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier>, String> {
    ClientConfig::builder_with_details(Arc::new(crate::crypto::provider()), clock.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| e.to_string())
}

/// Trust only the cluster CA.
fn roots(ca: &[CertificateDer<'static>]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for c in ca {
        roots
            .add(c.clone())
            .map_err(|e| alloc::format!("cluster CA certificate: {e}"))?;
    }
    Ok(roots)
}

/// Server-authenticated TLS: what a node without a certificate uses.
pub fn bootstrap_config(
    ca: &[CertificateDer<'static>],
    clock: &Clock,
) -> Result<Arc<ClientConfig>, String> {
    Ok(Arc::new(
        base(clock)?
            .with_root_certificates(roots(ca)?)
            .with_no_client_auth(),
    ))
}

/// Mutual TLS with the node certificate.
pub fn node_config(
    ca: &[CertificateDer<'static>],
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    clock: &Clock,
) -> Result<Arc<ClientConfig>, String> {
    Ok(Arc::new(
        base(clock)?
            .with_root_certificates(roots(ca)?)
            .with_client_auth_cert(chain, key)
            .map_err(|e| alloc::format!("node certificate: {e}"))?,
    ))
}

/// Why a TLS connection failed. The driver closes the connection on any of
/// them; [`TlsError::Handshake`] keeps rustls' own error so callers (and
/// tests) can tell an untrusted gateway certificate from a broken peer.
#[derive(Debug, Clone, PartialEq)]
pub enum TlsError {
    /// rustls refused the peer: a certificate from another CA, for another
    /// name, expired; an alert; a protocol violation.
    Handshake(rustls::Error),
    /// The peer sent more than two records' worth of unparsable data.
    Flood,
    /// The connection could not be set up or driven (a local fault).
    Local(String),
}

impl TlsError {
    /// The reason the gateway's certificate was refused, if that is why.
    pub fn certificate(&self) -> Option<&CertificateError> {
        match self {
            TlsError::Handshake(rustls::Error::InvalidCertificate(c)) => Some(c),
            _ => None,
        }
    }
}

impl core::fmt::Display for TlsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            TlsError::Handshake(e) => write!(f, "TLS: {e}"),
            TlsError::Flood => {
                f.write_str("TLS: peer sent more than two records' worth of unparsable data")
            }
            TlsError::Local(m) => write!(f, "TLS: {m}"),
        }
    }
}

impl core::error::Error for TlsError {}

/// A fixed clock, for hosts and tests.
#[derive(Debug)]
pub struct FixedClock(pub u64);

impl TimeProvider for FixedClock {
    fn current_time(&self) -> Option<UnixTime> {
        Some(UnixTime::since_unix_epoch(core::time::Duration::from_secs(
            self.0,
        )))
    }
}

/// One TLS connection's state. See the module docs.
pub struct TlsClient {
    conn: UnbufferedClientConnection,
    /// Ciphertext received and not yet consumed by rustls.
    incoming: Vec<u8>,
    /// Ciphertext ready for the socket.
    outgoing: Vec<u8>,
    /// Plaintext waiting for the handshake to finish.
    pending: Vec<u8>,
    /// Decrypted application data.
    plaintext: Vec<u8>,
    handshake_done: bool,
    peer_closed: bool,
}

impl core::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("TlsClient")
            .field("handshake_done", &self.handshake_done)
            .field("incoming", &self.incoming.len())
            .field("outgoing", &self.outgoing.len())
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    pub fn new(config: Arc<ClientConfig>, server: ServerName<'static>) -> Result<Self, TlsError> {
        let conn = UnbufferedClientConnection::new(config, server).map_err(TlsError::Handshake)?;
        let mut c = TlsClient {
            conn,
            incoming: Vec::new(),
            outgoing: Vec::new(),
            pending: Vec::new(),
            plaintext: Vec::new(),
            handshake_done: false,
            peer_closed: false,
        };
        c.process()?; // the ClientHello
        Ok(c)
    }

    /// True once application data can flow.
    pub fn is_established(&self) -> bool {
        self.handshake_done
    }

    /// The peer sent close_notify (or the connection is finished).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Feeds ciphertext from the socket.
    pub fn receive(&mut self, data: &[u8]) -> Result<(), TlsError> {
        if self.incoming.len() + data.len() > 2 * MAX_RECORD {
            // rustls consumes whole records as they complete; more than two
            // records' worth unconsumed means the peer is not speaking TLS.
            return Err(TlsError::Flood);
        }
        self.incoming.extend_from_slice(data);
        self.process()
    }

    /// Queues plaintext; encrypted at once when the handshake is done.
    pub fn send(&mut self, data: &[u8]) -> Result<(), TlsError> {
        self.pending.extend_from_slice(data);
        self.process()
    }

    /// Ciphertext for the socket.
    pub fn take_outgoing(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.outgoing)
    }

    /// Decrypted bytes received so far.
    pub fn take_plaintext(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.plaintext)
    }

    /// Runs rustls until it needs more input from the socket.
    fn process(&mut self) -> Result<(), TlsError> {
        // Each loop iteration makes progress (consumes input, produces
        // output or changes state); the bound only guards against a bug.
        for _ in 0..10_000 {
            let status = self.conn.process_tls_records(&mut self.incoming);
            let mut discard = status.discard;
            let state = status.state.map_err(TlsError::Handshake)?;
            let mut again = true;
            match state {
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(rec) = r.next_record() {
                        let rec = rec.map_err(TlsError::Handshake)?;
                        discard += rec.discard;
                        self.plaintext.extend_from_slice(rec.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut e) => {
                    grow_and_retry(&mut self.outgoing, |buf| {
                        e.encode(buf).map_err(|err| match err {
                            EncodeError::InsufficientSize(s) => Ok(s),
                            other => Err(TlsError::Local(other.to_string())),
                        })
                    })?;
                }
                ConnectionState::TransmitTlsData(t) => {
                    // The driver sends `outgoing`; rustls may continue.
                    t.done();
                }
                ConnectionState::BlockedHandshake => again = false,
                ConnectionState::WriteTraffic(mut w) => {
                    self.handshake_done = true;
                    if !self.pending.is_empty() {
                        let data = core::mem::take(&mut self.pending);
                        grow_and_retry(&mut self.outgoing, |buf| {
                            w.encrypt(&data, buf).map_err(|err| match err {
                                EncryptError::InsufficientSize(s) => Ok(s),
                                other => Err(TlsError::Local(other.to_string())),
                            })
                        })?;
                    }
                    again = false;
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_closed = true;
                    again = false;
                }
                _ => {
                    return Err(TlsError::Local(
                        "unexpected connection state (early data / 0-RTT not used)".into(),
                    ));
                }
            }
            if discard > 0 {
                self.incoming.drain(..discard);
            }
            if !again {
                return Ok(());
            }
        }
        Err(TlsError::Local("state machine made no progress".into()))
    }
}

/// Appends to `out` whatever `f` writes, growing `out` when `f` reports
/// the size it needs.
fn grow_and_retry(
    out: &mut Vec<u8>,
    mut f: impl FnMut(&mut [u8]) -> Result<usize, Result<InsufficientSizeError, TlsError>>,
) -> Result<(), TlsError> {
    let used = out.len();
    out.resize(used + 4096, 0);
    let n = match f(&mut out[used..]) {
        Ok(n) => n,
        Err(Ok(InsufficientSizeError { required_size })) => {
            out.resize(used + required_size, 0);
            match f(&mut out[used..]) {
                Ok(n) => n,
                Err(Ok(_)) => {
                    return Err(TlsError::Local("output size grew between attempts".into()));
                }
                Err(Err(e)) => return Err(e),
            }
        }
        Err(Err(e)) => {
            out.truncate(used);
            return Err(e);
        }
    };
    out.truncate(used + n);
    Ok(())
}
