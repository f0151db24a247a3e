//! TLS bootstrap on a connection without a client certificate: the only
//! thing it may do is `Hello` then `Bootstrap{node_name, token, csr}`. The
//! token must be a valid bootstrap token of the API server (group
//! `system:bootstrappers`); the CSR must ask for `CN=system:node:<node_name>`.
//! The answer is the signed certificate, and the connection closes: the node
//! reconnects with mutual TLS. [`crate::tokens`] decides which tokens may
//! bootstrap which node; a node with a live session cannot be bootstrapped
//! again (an impostor holding a token would get its pods).

use std::net::SocketAddr;

use skiff_node_proto::{
    MAX_BOOTSTRAP_FRAME, NodeToPlane, PlaneToNode, Refusal, RefusalReason, UnixMillis,
};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::Shared;
use crate::metrics::Metrics;
use crate::session::{hello, refuse};
use crate::timefmt::now_millis;
use crate::wire::{read_frame, write_frame};

pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(shared: &Shared, mut s: S, peer: SocketAddr) {
    let who = format!("{peer} (bootstrap)");
    let Some(hello) = hello(shared, &mut s, &who, MAX_BOOTSTRAP_FRAME).await else {
        return;
    };
    let msg = tokio::time::timeout(
        shared.cfg.handshake_timeout,
        read_frame::<NodeToPlane, _>(&mut s, MAX_BOOTSTRAP_FRAME),
    )
    .await;
    let (node_name, token, csr_der) = match msg {
        Ok(Ok(NodeToPlane::Bootstrap {
            node_name,
            token,
            csr_der,
        })) => (node_name, token, csr_der),
        Ok(Ok(other)) => {
            let what = format!("{other:?}");
            let what = what.split(['(', ' ', '{']).next().unwrap_or("");
            return refuse(
                shared,
                s,
                peer,
                RefusalReason::Forbidden,
                format!("{who}: only a bootstrap request is allowed without a node certificate, got {what}"),
            )
            .await;
        }
        Ok(Err(e)) => {
            shared.journal.log(format!("{who}: closing: {e}"));
            return;
        }
        Err(_) => {
            shared
                .journal
                .log(format!("{who}: closing: no bootstrap request in time"));
            return;
        }
    };
    if node_name != hello.node_name {
        return refuse(
            shared,
            s,
            peer,
            RefusalReason::NodeNameMismatch,
            format!(
                "{who}: bootstrap for {node_name:?} but hello named {:?}",
                hello.node_name
            ),
        )
        .await;
    }
    let (grant, der) = match issue(shared, &token, &node_name, &csr_der).await {
        Ok(issued) => issued,
        Err((reason, why)) => {
            return refuse(
                shared,
                s,
                peer,
                reason,
                format!("{who}: node {node_name:?}: {why}"),
            )
            .await;
        }
    };
    shared.journal.log(format!(
        "{who}: issued a node certificate for {node_name:?} (bootstrap token {:?})",
        grant.id
    ));
    let answer = PlaneToNode::Certificate {
        chain_der: vec![der],
        not_after: not_after(shared),
    };
    if let Err(e) = write_frame(&mut s, &answer, MAX_BOOTSTRAP_FRAME).await {
        shared
            .journal
            .log(format!("{who}: sending certificate: {e}"));
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut s).await;
}

/// Checks the token, signs the CSR and consumes the token, under one lock
/// (held for API calls only, never for a peer's I/O): a single-use or still
/// unbound token must not issue two certificates.
async fn issue(
    shared: &Shared,
    token: &str,
    node_name: &str,
    csr_der: &[u8],
) -> Result<(crate::tokens::Grant, Vec<u8>), (RefusalReason, String)> {
    let _one_at_a_time = shared.bootstrap.lock().await;
    let grant = crate::tokens::check(shared, token, node_name)
        .await
        .map_err(|e| {
            let reason = if e.is_bad_token() {
                RefusalReason::BadToken
            } else {
                RefusalReason::Forbidden
            };
            (reason, e.to_string())
        })?;
    // A node with a live session is not taken over by whoever holds a
    // token; the real node, if it restarted, gets in once its old session
    // has closed.
    if shared.is_live(node_name) {
        return Err((
            RefusalReason::Forbidden,
            format!(
                "has a live session; bootstrap with token {:?} refused",
                grant.id
            ),
        ));
    }
    let der = shared
        .signer
        .sign(node_name, csr_der)
        .map_err(|e| (RefusalReason::BadCsr, e))?;
    crate::tokens::consume(shared, &grant, node_name)
        .await
        .map_err(|e| (RefusalReason::Forbidden, e.to_string()))?;
    shared.issued(node_name, &der);
    Ok((grant, der))
}

/// When a certificate issued now expires.
pub fn not_after(shared: &Shared) -> UnixMillis {
    now_millis() + shared.cfg.cert_validity.as_millis() as u64
}

/// Sends a refusal (best effort), logging it.
pub async fn send_refusal<S: AsyncWrite + Unpin>(
    shared: &Shared,
    s: &mut S,
    reason: RefusalReason,
    message: String,
) {
    Metrics::inc(&shared.metrics.refused);
    shared
        .journal
        .log(format!("refused ({reason:?}): {message}"));
    let r = PlaneToNode::Refused(Refusal { reason, message });
    let _ = write_frame(s, &r, MAX_BOOTSTRAP_FRAME).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(s).await;
}
