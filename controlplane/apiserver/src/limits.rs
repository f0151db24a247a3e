//! What one client may hold of the API server: connections, requests in
//! flight, watches, time, and objects per namespace.
//!
//! kube's defaults where kube has them: `--max-requests-inflight` 400 and
//! `--max-mutating-requests-inflight` 200, answered 429 with `Retry-After`;
//! long-running requests (watches, `pods/log`) are not counted, and
//! `system:masters` is exempt. kube shares out the rest with priority and
//! fairness; here the plane's own identities get a reserved share instead:
//! the [`privileged`] ones (`system:masters`, the scheduler, the controller
//! manager) are not held to the in-flight and per-user watch limits, have
//! connections of their own beyond what strangers can fill, and are not
//! closed when idle. The node gateway calls the handlers in process and
//! passes none of these gates (the gateway bounds its nodes itself).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::http::Method;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::authn::Identity;
use crate::status::ApiError;

/// The limits; `Default` is what `serve` uses.
#[derive(Debug, Clone)]
pub struct Limits {
    /// A TLS handshake must finish within this.
    pub handshake_timeout: Duration,
    /// Handshakes in progress at once; more are closed at accept.
    pub max_handshakes: usize,
    /// A request's headers must arrive within this, counted from when the
    /// connection starts waiting for them: an idle keep-alive connection
    /// is closed after it too (slow or idle clients hold no connection).
    pub header_read_timeout: Duration,
    /// A response write that makes no progress for this long closes the
    /// connection (a client that stops reading, watches included).
    pub write_timeout: Duration,
    /// A request that is not long-running must be answered within this
    /// (kube's `--request-timeout`): 504, and a slowly sent body with it.
    pub request_timeout: Duration,
    /// Established connections of anyone.
    pub max_connections: usize,
    /// Further connections only [`privileged`] client certificates get.
    pub reserved_connections: usize,
    /// Read-only requests in flight (kube: 400).
    pub max_requests_inflight: usize,
    /// Mutating requests in flight (kube: 200).
    pub max_mutating_requests_inflight: usize,
    /// Open watches per user.
    pub max_watches_per_user: usize,
    /// Objects one namespace may hold, all kinds together.
    pub max_objects_per_namespace: usize,
    /// The longest a TokenRequest token lives (kube's
    /// `--service-account-max-token-expiration`): longer requests are
    /// shortened to it.
    pub service_account_max_token_expiration: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_handshakes: 512,
            header_read_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(60),
            max_connections: 4096,
            reserved_connections: 256,
            max_requests_inflight: 400,
            max_mutating_requests_inflight: 200,
            service_account_max_token_expiration: Duration::from_secs(24 * 3600),
            max_watches_per_user: 250,
            max_objects_per_namespace: 50_000,
        }
    }
}

/// The plane's own identities: never throttled, with a reserved share of
/// connections.
pub fn privileged(id: &Identity) -> bool {
    id.in_group("system:masters")
        || matches!(
            id.name.as_str(),
            "system:kube-scheduler" | "system:kube-controller-manager"
        )
}

/// What a request is, for the in-flight limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Watches and `pods/log`: not counted, not timed out.
    LongRunning {
        watch: bool,
    },
    ReadOnly,
    Mutating,
}

impl Kind {
    pub fn of(method: &Method, path: &str, query: &crate::http::Query) -> Kind {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let watch = query.flag("watch")
            || matches!(
                segs.as_slice(),
                ["api", _, "watch", ..] | ["apis", _, _, "watch", ..]
            );
        // Streams: logs, port-forward sessions and proxied requests.
        let connect = matches!(
            segs.as_slice(),
            [
                "api",
                "v1",
                "namespaces",
                _,
                "pods" | "services",
                _,
                "proxy" | "portforward",
                ..
            ]
        );
        if watch || connect || segs.last() == Some(&"log") {
            return Kind::LongRunning { watch };
        }
        match *method {
            Method::GET | Method::HEAD | Method::OPTIONS => Kind::ReadOnly,
            _ => Kind::Mutating,
        }
    }
}

/// The counters behind [`Limits`], shared by every connection.
#[derive(Debug)]
pub struct Gate {
    pub limits: Limits,
    handshakes: Arc<Semaphore>,
    connections: Arc<Semaphore>,
    reserved: Arc<Semaphore>,
    read_only: Arc<Semaphore>,
    mutating: Arc<Semaphore>,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

/// Held while a request is in flight or a watch is open; gives its slot
/// back when dropped.
#[derive(Debug)]
pub enum Ticket {
    None,
    Permit(OwnedSemaphorePermit),
    Watch(WatchSlot),
}

#[derive(Debug)]
pub struct WatchSlot {
    user: String,
    watches: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut w = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = w.get_mut(&self.user) {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.user);
            }
        }
    }
}

/// `resp` with `ticket` given back only when its body has been sent (or
/// dropped): a response the client does not read still counts, until the
/// write timeout closes the connection.
pub fn hold(resp: axum::response::Response, ticket: Ticket) -> axum::response::Response {
    if matches!(ticket, Ticket::None) {
        return resp;
    }
    crate::http::keep_until_sent(resp, ticket)
}

/// kube's answer when a limit is reached: 429, with `Retry-After: 1`.
pub fn too_many(message: impl Into<String>) -> ApiError {
    ApiError::new(429, "TooManyRequests", message)
}

impl Gate {
    pub fn new(limits: Limits) -> Gate {
        let sem = |n: usize| Arc::new(Semaphore::new(n));
        Gate {
            handshakes: sem(limits.max_handshakes),
            connections: sem(limits.max_connections),
            reserved: sem(limits.reserved_connections),
            read_only: sem(limits.max_requests_inflight),
            mutating: sem(limits.max_mutating_requests_inflight),
            watches: Arc::default(),
            limits,
        }
    }

    /// A slot for a TLS handshake in progress, or None: close at once.
    pub fn handshake(&self) -> Option<OwnedSemaphorePermit> {
        self.handshakes.clone().try_acquire_owned().ok()
    }

    /// A slot for an established connection whose client certificate (if
    /// any) names `peer`, or None: close it.
    pub fn connection(&self, peer: Option<&Identity>) -> Option<OwnedSemaphorePermit> {
        if let Ok(p) = self.connections.clone().try_acquire_owned() {
            return Some(p);
        }
        if peer.is_some_and(privileged) {
            return self.reserved.clone().try_acquire_owned().ok();
        }
        None
    }

    /// Admits a request of `kind` from `id`, or answers 429.
    pub fn admit(&self, id: &Identity, kind: Kind) -> Result<Ticket, ApiError> {
        if privileged(id) {
            return Ok(Ticket::None);
        }
        let pool = match kind {
            Kind::LongRunning { watch: false } => return Ok(Ticket::None),
            Kind::LongRunning { watch: true } => return self.watch(id),
            Kind::ReadOnly => &self.read_only,
            Kind::Mutating => &self.mutating,
        };
        pool.clone()
            .try_acquire_owned()
            .map(Ticket::Permit)
            .map_err(|_| too_many("Too many requests, please try again later."))
    }

    fn watch(&self, id: &Identity) -> Result<Ticket, ApiError> {
        let max = self.limits.max_watches_per_user;
        let mut w = self.watches.lock().unwrap_or_else(PoisonError::into_inner);
        let n = w.entry(id.name.clone()).or_default();
        if *n >= max {
            return Err(too_many(format!(
                "Too many watches: user {:?} already has {n} open, the most one user may have; \
                 close one or try again later.",
                id.name
            )));
        }
        *n += 1;
        Ok(Ticket::Watch(WatchSlot {
            user: id.name.clone(),
            watches: self.watches.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Query;

    fn id(name: &str, groups: &[&str]) -> Identity {
        Identity {
            name: name.into(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            service_account: None,
        }
    }

    #[test]
    fn request_kinds() {
        let q = |s| Query::parse(Some(s));
        let get = Method::GET;
        assert_eq!(
            Kind::of(&get, "/api/v1/namespaces/a/pods", &q("watch=true")),
            Kind::LongRunning { watch: true }
        );
        assert_eq!(
            Kind::of(&get, "/apis/apps/v1/watch/deployments", &q("")),
            Kind::LongRunning { watch: true }
        );
        assert_eq!(
            Kind::of(&get, "/api/v1/namespaces/a/pods/p/log", &q("follow=1")),
            Kind::LongRunning { watch: false }
        );
        assert_eq!(Kind::of(&get, "/api/v1/pods", &q("")), Kind::ReadOnly);
        assert_eq!(
            Kind::of(&Method::PATCH, "/api/v1/namespaces/a", &q("")),
            Kind::Mutating
        );
    }

    #[test]
    fn pools_watches_and_exemptions() {
        let gate = Gate::new(Limits {
            max_mutating_requests_inflight: 1,
            max_watches_per_user: 2,
            ..Limits::default()
        });
        let alice = id("alice", &[]);
        let held = gate.admit(&alice, Kind::Mutating).unwrap();
        let e = gate.admit(&alice, Kind::Mutating).unwrap_err();
        assert_eq!((e.code, e.reason), (429, "TooManyRequests"));
        let admin = id("root", &["system:masters"]);
        assert!(gate.admit(&admin, Kind::Mutating).is_ok());
        assert!(
            gate.admit(&id("system:kube-scheduler", &[]), Kind::Mutating)
                .is_ok()
        );
        drop(held);
        assert!(gate.admit(&alice, Kind::Mutating).is_ok());

        let watch = Kind::LongRunning { watch: true };
        let w1 = gate.admit(&alice, watch).unwrap();
        let _w2 = gate.admit(&alice, watch).unwrap();
        assert_eq!(gate.admit(&alice, watch).unwrap_err().code, 429);
        assert!(gate.admit(&id("bob", &[]), watch).is_ok());
        drop(w1);
        assert!(gate.admit(&alice, watch).is_ok());
    }

    #[test]
    fn reserved_connections_are_for_the_plane() {
        let gate = Gate::new(Limits {
            max_connections: 1,
            reserved_connections: 1,
            ..Limits::default()
        });
        let stranger = id("eve", &[]);
        let _a = gate.connection(Some(&stranger)).unwrap();
        assert!(gate.connection(Some(&stranger)).is_none());
        assert!(gate.connection(None).is_none());
        let _b = gate
            .connection(Some(&id("system:kube-controller-manager", &[])))
            .unwrap();
        assert!(
            gate.connection(Some(&id("root", &["system:masters"])))
                .is_none()
        );
    }
}
