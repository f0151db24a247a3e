//! Cluster DNS answers (what CoreDNS's `kubernetes` plugin answers for A
//! records), for the node's resolver: pods look names up through a host
//! call, so there is no DNS wire format here.

use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use skiff_node_proto::{Service, ServiceKind};

use crate::table::ServiceTable;

/// kube's default `clusterDomain`.
pub const DEFAULT_CLUSTER_DOMAIN: &str = "cluster.local";

/// kube's pod `resolv.conf` option `ndots:5`.
const NDOTS: usize = 5;

/// The answer to a name lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// A cluster name with these IPv4 addresses (empty: the name exists
    /// but has no address, e.g. a headless Service with no ready endpoint).
    Addresses(Vec<Ipv4Addr>),
    /// An ExternalName Service: resolve this name upstream instead (a
    /// CNAME in kube's DNS).
    Alias(String),
    /// No such name in the cluster domain.
    NxDomain,
    /// Not a cluster name: forward the name as the pod wrote it upstream.
    Upstream,
}

/// What one fully qualified candidate name gives.
enum Answer {
    Found(Lookup),
    /// Inside the cluster domain but unknown.
    Missing,
    /// Outside the cluster domain.
    Outside,
}

impl ServiceTable {
    /// Resolves `name` for a pod in `pod_namespace`, trying names as the
    /// pod's resolver would with kube's `resolv.conf` (`search
    /// <ns>.svc.<domain> svc.<domain> <domain>`, `ndots:5`): a name with a
    /// trailing dot is tried as written only; one with fewer than five dots
    /// is tried with each search suffix first, then as written; others as
    /// written first. The first cluster name that exists answers; a
    /// candidate outside the cluster domain is forwarded
    /// ([`Lookup::Upstream`]). Case-insensitive.
    pub fn lookup(&self, name: &str, pod_namespace: &str) -> Lookup {
        let absolute = name.ends_with('.');
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            return Lookup::NxDomain;
        }
        let ns = pod_namespace.to_ascii_lowercase();
        let d = &self.domain;
        let searched = [
            alloc::format!("{name}.{ns}.svc.{d}"),
            alloc::format!("{name}.svc.{d}"),
            alloc::format!("{name}.{d}"),
        ];
        let mut candidates: Vec<&str> = Vec::new();
        if absolute {
            candidates.push(&name);
        } else if name.matches('.').count() < NDOTS {
            candidates.extend(searched.iter().map(String::as_str));
            candidates.push(&name);
        } else {
            candidates.push(&name);
            candidates.extend(searched.iter().map(String::as_str));
        }
        for c in candidates {
            match self.answer(c) {
                Answer::Found(l) => return l,
                Answer::Missing => continue,
                // The resolver would send this candidate upstream; an
                // answer there ends the search, so it is the pod's name.
                Answer::Outside => return Lookup::Upstream,
            }
        }
        Lookup::NxDomain
    }

    /// A fully qualified, lower-case name without trailing dot.
    fn answer(&self, fqdn: &str) -> Answer {
        let rest = if fqdn == self.domain {
            ""
        } else {
            match fqdn
                .strip_suffix(self.domain.as_str())
                .and_then(|r| r.strip_suffix('.'))
            {
                Some(r) => r,
                // `svc` and `pod` are no public top-level domains: such a
                // name is a cluster name missing its domain suffix (the
                // search path already tried it with the suffix).
                None if fqdn.ends_with(".svc") || fqdn.ends_with(".pod") => {
                    return Answer::Missing;
                }
                None => return Answer::Outside,
            }
        };
        let labels: Vec<&str> = rest.split('.').collect();
        let found = match labels.as_slice() {
            [svc, ns, "svc"] => self.service_answer(ns, svc),
            [host, svc, ns, "svc"] => self.endpoint_answer(ns, svc, host),
            [ip, ns, "pod"] if !ns.is_empty() => {
                dashed_ip(ip).map(|a| Lookup::Addresses([a].into()))
            }
            _ => None,
        };
        found.map_or(Answer::Missing, Answer::Found)
    }

    fn find(&self, ns: &str, svc: &str) -> Option<&Service> {
        self.services.get(&(String::from(ns), String::from(svc)))
    }

    fn service_answer(&self, ns: &str, name: &str) -> Option<Lookup> {
        let svc = self.find(ns, name)?;
        if svc.kind == ServiceKind::ExternalName {
            return svc.external_name.clone().map(Lookup::Alias);
        }
        let mut ips: Vec<Ipv4Addr> = if svc.headless {
            ready_endpoints(svc)
                .flat_map(|e| e.addresses.iter())
                .filter_map(|a| a.parse().ok())
                .collect()
        } else {
            svc.cluster_ips
                .iter()
                .filter_map(|a| a.parse().ok())
                .collect()
        };
        ips.sort();
        ips.dedup();
        Some(Lookup::Addresses(ips))
    }

    /// `<hostname>.<svc>.<ns>.svc` (or `<a-b-c-d>.<svc>…` for an endpoint
    /// without a hostname) of a headless Service's ready endpoint.
    fn endpoint_answer(&self, ns: &str, name: &str, host: &str) -> Option<Lookup> {
        let svc = self.find(ns, name)?;
        if !svc.headless {
            return None;
        }
        let ip = dashed_ip(host);
        let mut ips: Vec<Ipv4Addr> = ready_endpoints(svc)
            .filter(|e| match &e.hostname {
                Some(h) => h.eq_ignore_ascii_case(host),
                None => ip.is_some_and(|ip| e.addresses.iter().any(|a| a.parse() == Ok(ip))),
            })
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        ips.sort();
        ips.dedup();
        (!ips.is_empty()).then_some(Lookup::Addresses(ips))
    }
}

/// The endpoints kube's DNS publishes: ready ones (a Service with
/// `publishNotReadyAddresses` has them marked ready by the controller).
fn ready_endpoints(svc: &Service) -> impl Iterator<Item = &skiff_node_proto::Endpoint> {
    svc.slices
        .iter()
        .flat_map(|s| s.endpoints.iter())
        .filter(|e| e.ready)
}

/// `10-244-1-5` → 10.244.1.5.
fn dashed_ip(label: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = label.split('-');
    for o in &mut octets {
        let p = parts.next()?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *o = p.parse().ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}
