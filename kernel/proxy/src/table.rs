//! The Service table and connect-time backend choice.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::{Ipv4Addr, SocketAddrV4};

use skiff_node_proto::{Endpoint, EndpointSet, Protocol, Service, ServicePort, TargetPort};

use crate::dns::DEFAULT_CLUSTER_DOMAIN;
use crate::error::ApplyError;

/// kube's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
pub const DEFAULT_AFFINITY_TIMEOUT_SECS: u32 = 10800;
/// Client-IP affinity entries kept at most: expired ones are dropped first,
/// then the oldest, so a scan of many client addresses cannot grow the
/// kernel heap without bound.
pub const MAX_AFFINITY_ENTRIES: usize = 16 * 1024;

const SEC_NS: u64 = 1_000_000_000;

/// What a connection to `dst` should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resolution {
    /// `dst` is no Service address (or no node port): connect as asked.
    NotAService,
    /// Connect to this endpoint instead (its resolved target port).
    Backend(SocketAddrV4),
    /// A Service with no usable endpoint: refuse the connection at once
    /// (kube-proxy's REJECT: ECONNREFUSED, not a timeout).
    NoEndpoints,
}

/// `(namespace, name)`.
pub(crate) type Key = (String, String);

/// Which Service port an address or node port leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PortRef {
    key: Key,
    port: usize,
}

/// `(protocol, port)` as an ordered key (Protocol is not `Ord`).
fn proto_code(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
        Protocol::Sctp => 2,
    }
}

/// A client's pinned backend: (Service, port name, client) → (backend, last use).
type AffinityKey = (Key, String, Ipv4Addr);

/// The Services and endpoints this node knows, and the state connect-time
/// balancing keeps (client-IP affinity). See the crate docs.
#[derive(Debug)]
pub struct ServiceTable {
    node: String,
    pub(crate) domain: String,
    generation: u64,
    /// A full state arriving in parts: its generation and the parts so far.
    pending: Option<(u64, Vec<Service>)>,
    pub(crate) services: BTreeMap<Key, Service>,
    vips: BTreeMap<(u8, Ipv4Addr, u16), PortRef>,
    node_ports: BTreeMap<(u8, u16), PortRef>,
    affinity: BTreeMap<AffinityKey, (SocketAddrV4, u64)>,
}

impl ServiceTable {
    /// An empty table for node `node_name` (for `internalTrafficPolicy:
    /// Local` and `hints.forNodes`) in cluster domain `cluster.local`.
    pub fn new(node_name: &str) -> ServiceTable {
        ServiceTable::with_domain(node_name, DEFAULT_CLUSTER_DOMAIN)
    }

    /// As [`ServiceTable::new`] with another cluster domain (kubelet's
    /// `clusterDomain`); case and a trailing dot do not matter.
    pub fn with_domain(node_name: &str, cluster_domain: &str) -> ServiceTable {
        ServiceTable {
            node: String::from(node_name),
            domain: cluster_domain.trim_end_matches('.').to_ascii_lowercase(),
            generation: 0,
            pending: None,
            services: BTreeMap::new(),
            vips: BTreeMap::new(),
            node_ports: BTreeMap::new(),
            affinity: BTreeMap::new(),
        }
    }

    /// The generation of the last complete state applied (0: none yet).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn node_name(&self) -> &str {
        &self.node
    }

    pub fn cluster_domain(&self) -> &str {
        &self.domain
    }

    /// Number of Services known.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    #[cfg(test)]
    pub(crate) fn affinity_len(&self) -> usize {
        self.affinity.len()
    }

    /// The Service `namespace/name`, as last received.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services
            .get(&(String::from(namespace), String::from(name)))
    }

    /// One part of a full state (`PlaneToNode::Services`): the parts of one
    /// generation are collected and replace the table when the last one
    /// (`more == false`) arrives. A part of another generation starts over
    /// (the plane sends one full state at a time).
    pub fn apply_full(&mut self, generation: u64, services: Vec<Service>, more: bool) {
        let mut parts = match self.pending.take() {
            Some((g, parts)) if g == generation => parts,
            _ => Vec::new(),
        };
        parts.extend(services);
        if more {
            self.pending = Some((generation, parts));
            return;
        }
        self.services.clear();
        self.vips.clear();
        self.node_ports.clear();
        for s in parts {
            self.insert(s);
        }
        self.generation = generation;
        self.prune_affinity(None);
    }

    /// A `PlaneToNode::ServiceDelta`. Applies only on top of
    /// `from_generation`; otherwise nothing changes and the caller asks for
    /// the full state again.
    pub fn apply_delta(
        &mut self,
        from_generation: u64,
        generation: u64,
        upserts: Vec<Service>,
        removes: &[skiff_node_proto::ServiceRef],
    ) -> Result<(), ApplyError> {
        if self.pending.is_some() || from_generation != self.generation {
            return Err(ApplyError::Generation {
                have: self.generation,
                from_generation,
            });
        }
        for r in removes {
            self.remove(&(r.namespace.clone(), r.name.clone()));
        }
        for s in upserts {
            self.insert(s);
        }
        self.generation = generation;
        self.prune_affinity(None);
        Ok(())
    }

    fn insert(&mut self, s: Service) {
        let key = (s.namespace.clone(), s.name.clone());
        self.remove(&key);
        for (i, p) in s.ports.iter().enumerate() {
            let at = PortRef {
                key: key.clone(),
                port: i,
            };
            for ip in s.cluster_ips.iter().filter_map(|a| a.parse().ok()) {
                self.vips
                    .insert((proto_code(p.protocol), ip, p.port), at.clone());
            }
            if let Some(np) = p.node_port {
                self.node_ports
                    .insert((proto_code(p.protocol), np), at.clone());
            }
        }
        self.services.insert(key, s);
    }

    fn remove(&mut self, key: &Key) {
        if self.services.remove(key).is_some() {
            self.vips.retain(|_, r| &r.key != key);
            self.node_ports.retain(|_, r| &r.key != key);
        }
    }

    /// The node ports of `proto` this node serves (any Service port with a
    /// `nodePort`), ascending, for whoever keeps their listeners.
    pub fn node_ports(&self, proto: Protocol) -> impl Iterator<Item = u16> + '_ {
        let code = proto_code(proto);
        self.node_ports
            .range((code, 0)..=(code, u16::MAX))
            .map(|(&(_, port), _)| port)
    }

    /// Connect-time translation of a pod's `connect(dst)` (or first UDP
    /// send) from `client`. `now_ns` is the node's monotonic clock (client-IP
    /// affinity times out on it); `random` picks among the backends.
    pub fn resolve(
        &mut self,
        proto: Protocol,
        dst: SocketAddrV4,
        client: Ipv4Addr,
        now_ns: u64,
        random: u64,
    ) -> Resolution {
        let Some(at) = self
            .vips
            .get(&(proto_code(proto), *dst.ip(), dst.port()))
            .cloned()
        else {
            return Resolution::NotAService;
        };
        self.pick(&at, false, client, now_ns, random)
    }

    /// A connection to this node's `port` (a Service's nodePort) from
    /// `client`: resolved as [`ServiceTable::resolve`] does, with
    /// `externalTrafficPolicy: Local` meaning this node's endpoints only.
    pub fn node_port(
        &mut self,
        proto: Protocol,
        port: u16,
        client: Ipv4Addr,
        now_ns: u64,
        random: u64,
    ) -> Resolution {
        let Some(at) = self.node_ports.get(&(proto_code(proto), port)).cloned() else {
            return Resolution::NotAService;
        };
        self.pick(&at, true, client, now_ns, random)
    }

    fn pick(
        &mut self,
        at: &PortRef,
        external: bool,
        client: Ipv4Addr,
        now_ns: u64,
        random: u64,
    ) -> Resolution {
        let Some(svc) = self.services.get(&at.key) else {
            return Resolution::NotAService;
        };
        let port = &svc.ports[at.port];
        let local = if external {
            svc.external_local
        } else {
            svc.internal_local
        };
        let backends = categorize(svc, port, &self.node, local);
        if backends.is_empty() {
            return Resolution::NoEndpoints;
        }
        let Some(timeout_s) = svc.affinity_timeout_secs else {
            return Resolution::Backend(backends[(random % backends.len() as u64) as usize]);
        };
        let timeout = u64::from(timeout_s) * SEC_NS;
        let key: AffinityKey = (at.key.clone(), port.name.clone(), client);
        if let Some((b, last)) = self.affinity.get_mut(&key)
            && now_ns.saturating_sub(*last) <= timeout
            && backends.contains(b)
        {
            *last = now_ns;
            return Resolution::Backend(*b);
        }
        let b = backends[(random % backends.len() as u64) as usize];
        if self.affinity.len() >= MAX_AFFINITY_ENTRIES && !self.affinity.contains_key(&key) {
            self.prune_affinity(Some(now_ns));
        }
        self.affinity.insert(key, (b, now_ns));
        Resolution::Backend(b)
    }

    /// Drops affinity entries of Services that are gone or no longer have
    /// affinity; with `now`, also expired ones, then the oldest if still
    /// full.
    fn prune_affinity(&mut self, now: Option<u64>) {
        let services = &self.services;
        self.affinity.retain(|(key, _, _), (_, last)| {
            let Some(t) = services.get(key).and_then(|s| s.affinity_timeout_secs) else {
                return false;
            };
            now.is_none_or(|n| n.saturating_sub(*last) <= u64::from(t) * SEC_NS)
        });
        if now.is_some() && self.affinity.len() >= MAX_AFFINITY_ENTRIES {
            let oldest = self
                .affinity
                .iter()
                .min_by_key(|(_, (_, last))| *last)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.affinity.remove(&k);
            }
        }
    }
}

/// The backends of `port` this node may use, as kube-proxy's
/// `CategorizeEndpoints` chooses them:
/// - `local` (a `Local` traffic policy): endpoints on this node only, ready
///   ones, else serving-terminating ones;
/// - otherwise, when every ready endpoint carries `hints.forNodes` and
///   some name this node (trafficDistribution PreferSameNode): those;
///   else all ready endpoints; with none ready, the serving-terminating
///   ones (so connections drain to pods shutting down gracefully).
fn categorize(svc: &Service, port: &ServicePort, node: &str, local: bool) -> Vec<SocketAddrV4> {
    let all: Vec<(&Endpoint, SocketAddrV4)> = svc
        .slices
        .iter()
        .filter_map(|set| backend_port(set, port).map(|p| (set, p)))
        .flat_map(|(set, p)| {
            set.endpoints.iter().flat_map(move |e| {
                e.addresses
                    .iter()
                    .filter_map(|a| a.parse::<Ipv4Addr>().ok())
                    .map(move |ip| (e, SocketAddrV4::new(ip, p)))
            })
        })
        .collect();
    let on_node = |e: &Endpoint| e.node_name.as_deref() == Some(node);
    let serving_terminating = |e: &Endpoint| e.serving && e.terminating;
    let select = |f: &dyn Fn(&Endpoint) -> bool| -> Vec<SocketAddrV4> {
        let mut v: Vec<SocketAddrV4> = all.iter().filter(|(e, _)| f(e)).map(|(_, a)| *a).collect();
        v.sort();
        v.dedup();
        v
    };
    if local {
        let ready = select(&|e| e.ready && on_node(e));
        return if ready.is_empty() {
            select(&|e| serving_terminating(e) && on_node(e))
        } else {
            ready
        };
    }
    let mut ready = all.iter().filter(|(e, _)| e.ready).peekable();
    let hinted = ready.peek().is_some() && ready.all(|(e, _)| !e.for_nodes.is_empty());
    if hinted {
        let mine = select(&|e| e.ready && e.for_nodes.iter().any(|n| n == node));
        if !mine.is_empty() {
            return mine;
        }
    }
    let ready = select(&|e| e.ready);
    if ready.is_empty() {
        select(&serving_terminating)
    } else {
        ready
    }
}

/// The port a slice's endpoints serve `port` on: the slice port of the same
/// name and protocol (kube resolves named target ports per pod into the
/// slices), else a numeric target port if the slice lists no ports.
fn backend_port(set: &EndpointSet, port: &ServicePort) -> Option<u16> {
    if let Some(p) = set
        .ports
        .iter()
        .find(|p| p.name == port.name && p.protocol == port.protocol)
    {
        return Some(p.port);
    }
    match &port.target_port {
        TargetPort::Number(n) if set.ports.is_empty() => Some(*n),
        _ => None,
    }
}
