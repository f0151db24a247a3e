//! NetworkPolicy verdicts for the node's pods, as the plane sends them
//! ([`PlaneToNode::NetworkPolicies`](skiff_node_proto::PlaneToNode)):
//! selectors already resolved to addresses and named ports to numbers, so
//! the node decides with no labels and no other pod's spec. The kernel asks
//! at connect (egress; ingress too when the peer is a pod of this node) and
//! at accept and datagram receipt (ingress).
//!
//! Invariants: the plane lists every pod of the node, and sends a pod only
//! after a set that lists it. A direction left `None` is not isolated
//! (kube's default: allow); an isolated direction allows exactly what one of
//! its rules allows (none: deny all). A pod missing from a set is denied
//! everything (fail closed: the plane gave up waiting for its verdicts);
//! before any set arrived (a plane older than protocol version 4) nothing
//! is enforced. Traffic from or to the node itself is the kernel's to
//! exempt (kube lets the kubelet probe).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use skiff_node_proto::{Cidr, IpBlock, PodPolicy, PolicyRule, Protocol};

/// Which way a connection or datagram goes, seen from the node's pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The peer connects or sends to the pod.
    Ingress,
    /// The pod connects or sends to the peer.
    Egress,
}

/// The node's NetworkPolicy verdicts, shared between the agent (which
/// replaces them on each plane message) and the kernel's sockets.
pub type NetworkPolicies = Arc<spin::Mutex<PolicySet>>;

/// Every pod of the node (by UID) with what it is allowed.
#[derive(Debug, Default)]
pub struct PolicySet {
    /// `None` until the plane sent a set.
    pods: Option<BTreeMap<String, PodPolicy>>,
}

impl PolicySet {
    /// Replaces the whole set (the plane always sends it complete).
    pub fn replace(&mut self, pods: Vec<PodPolicy>) {
        self.pods = Some(pods.into_iter().map(|p| (p.pod_uid.clone(), p)).collect());
    }

    /// Pods with at least one isolated direction.
    pub fn isolated_pods(&self) -> usize {
        self.pods
            .iter()
            .flat_map(|p| p.values())
            .filter(|p| p.ingress.is_some() || p.egress.is_some())
            .count()
    }

    /// Whether `pod` may exchange `protocol` traffic with `peer` in
    /// `direction`; `port` is the pod's own port for ingress and the peer's
    /// for egress (the port being connected to, as in kube).
    pub fn allows(
        &self,
        pod_uid: &str,
        direction: Direction,
        peer: Ipv4Addr,
        protocol: Protocol,
        port: u16,
    ) -> bool {
        let Some(pods) = &self.pods else {
            return true;
        };
        let Some(policy) = pods.get(pod_uid) else {
            return false;
        };
        let rules = match direction {
            Direction::Ingress => &policy.ingress,
            Direction::Egress => &policy.egress,
        };
        match rules {
            None => true,
            Some(rules) => rules.iter().any(|r| rule_allows(r, peer, protocol, port)),
        }
    }
}

fn rule_allows(rule: &PolicyRule, peer: Ipv4Addr, protocol: Protocol, port: u16) -> bool {
    let peer_ok = rule
        .peers
        .as_ref()
        .is_none_or(|blocks| blocks.iter().any(|b| block_contains(b, peer)));
    let port_ok = rule.ports.as_ref().is_none_or(|ports| {
        ports
            .iter()
            .any(|p| p.protocol == protocol && (p.first..=p.last).contains(&port))
    });
    peer_ok && port_ok
}

fn block_contains(block: &IpBlock, ip: Ipv4Addr) -> bool {
    cidr_contains(block.cidr, ip) && !block.except.iter().any(|&e| cidr_contains(e, ip))
}

fn cidr_contains(cidr: Cidr, ip: Ipv4Addr) -> bool {
    let prefix = u32::from(cidr.prefix.min(32));
    // A /0 masks nothing (and `u32 << 32` would overflow).
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(cidr.addr)) & mask
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use skiff_node_proto::PortRange;

    fn cidr(s: &str) -> Cidr {
        let (a, p) = s.split_once('/').unwrap();
        Cidr {
            addr: a.parse::<Ipv4Addr>().unwrap().octets(),
            prefix: p.parse().unwrap(),
        }
    }

    fn block(c: &str, except: &[&str]) -> IpBlock {
        IpBlock {
            cidr: cidr(c),
            except: except.iter().map(|e| cidr(e)).collect(),
        }
    }

    fn tcp(first: u16, last: u16) -> PortRange {
        PortRange {
            protocol: Protocol::Tcp,
            first,
            last,
        }
    }

    const POD: &str = "uid-pod";
    const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 244, 3, 9);

    fn set(ingress: Option<Vec<PolicyRule>>, egress: Option<Vec<PolicyRule>>) -> PolicySet {
        let mut s = PolicySet::default();
        s.replace(vec![
            PodPolicy {
                pod_uid: POD.into(),
                ingress,
                egress,
            },
            PodPolicy {
                pod_uid: "uid-open".into(),
                ingress: None,
                egress: None,
            },
        ]);
        s
    }

    #[test]
    fn directions_without_policy_allow_everything() {
        let s = set(None, Some(vec![]));
        assert!(s.allows("uid-open", Direction::Egress, CLIENT, Protocol::Udp, 53));
        assert!(s.allows(POD, Direction::Ingress, CLIENT, Protocol::Tcp, 8080));
        assert!(!s.allows(POD, Direction::Egress, CLIENT, Protocol::Tcp, 80));
        assert_eq!(s.isolated_pods(), 1);
    }

    #[test]
    fn nothing_is_enforced_before_a_set_and_unlisted_pods_are_denied_after() {
        let mut s = PolicySet::default();
        assert!(s.allows(POD, Direction::Ingress, CLIENT, Protocol::Tcp, 80));
        s.replace(vec![]);
        assert!(!s.allows(POD, Direction::Ingress, CLIENT, Protocol::Tcp, 80));
        assert!(!s.allows(POD, Direction::Egress, CLIENT, Protocol::Tcp, 80));
    }

    #[test]
    fn default_deny_denies_every_peer_and_port() {
        let s = set(Some(vec![]), None);
        for (peer, proto, port) in [
            (CLIENT, Protocol::Tcp, 8080),
            (OTHER, Protocol::Udp, 53),
            (Ipv4Addr::new(8, 8, 8, 8), Protocol::Tcp, 1),
        ] {
            assert!(!s.allows(POD, Direction::Ingress, peer, proto, port));
        }
        assert!(s.allows(POD, Direction::Egress, CLIENT, Protocol::Tcp, 80));
    }

    #[test]
    fn a_rule_needs_both_an_allowed_peer_and_an_allowed_port() {
        let s = set(
            Some(vec![PolicyRule {
                peers: Some(vec![block("10.244.2.7/32", &[])]),
                ports: Some(vec![tcp(8080, 8080)]),
            }]),
            None,
        );
        assert!(s.allows(POD, Direction::Ingress, CLIENT, Protocol::Tcp, 8080));
        assert!(!s.allows(POD, Direction::Ingress, CLIENT, Protocol::Tcp, 8081));
        assert!(!s.allows(POD, Direction::Ingress, CLIENT, Protocol::Udp, 8080));
        assert!(!s.allows(POD, Direction::Ingress, OTHER, Protocol::Tcp, 8080));
    }

    #[test]
    fn rules_add_up_and_absent_lists_mean_any() {
        let s = set(
            None,
            Some(vec![
                PolicyRule {
                    peers: None,
                    ports: Some(vec![tcp(5432, 5432)]),
                },
                PolicyRule {
                    peers: Some(vec![block("10.244.3.0/24", &[])]),
                    ports: None,
                },
            ]),
        );
        let e = Direction::Egress;
        assert!(s.allows(POD, e, Ipv4Addr::new(1, 2, 3, 4), Protocol::Tcp, 5432));
        assert!(s.allows(POD, e, OTHER, Protocol::Udp, 9));
        assert!(!s.allows(POD, e, CLIENT, Protocol::Tcp, 80));
    }

    #[test]
    fn ip_blocks_honour_prefixes_excepts_and_port_ranges() {
        let s = set(
            Some(vec![PolicyRule {
                peers: Some(vec![
                    block("10.244.0.0/16", &["10.244.3.0/24"]),
                    block("0.0.0.0/0", &["0.0.0.0/1"]),
                ]),
                ports: Some(vec![tcp(8000, 8999)]),
            }]),
            None,
        );
        let i = Direction::Ingress;
        assert!(s.allows(POD, i, CLIENT, Protocol::Tcp, 8000));
        assert!(s.allows(POD, i, CLIENT, Protocol::Tcp, 8999));
        assert!(!s.allows(POD, i, CLIENT, Protocol::Tcp, 9000));
        assert!(!s.allows(POD, i, OTHER, Protocol::Tcp, 8080), "excepted");
        assert!(!s.allows(POD, i, Ipv4Addr::new(10, 245, 0, 1), Protocol::Tcp, 8080));
        // 0.0.0.0/0 except 0.0.0.0/1: the upper half of the space.
        assert!(s.allows(POD, i, Ipv4Addr::new(192, 168, 0, 1), Protocol::Tcp, 8080));
        assert!(!s.allows(POD, i, Ipv4Addr::new(11, 0, 0, 1), Protocol::Tcp, 8080));
    }

    #[test]
    fn a_new_set_replaces_the_old_one_whole() {
        let mut s = set(Some(vec![]), None);
        assert!(!s.allows(POD, Direction::Ingress, CLIENT, Protocol::Tcp, 80));
        s.replace(vec![PodPolicy {
            pod_uid: POD.into(),
            ingress: None,
            egress: None,
        }]);
        assert!(s.allows(POD, Direction::Ingress, CLIENT, Protocol::Tcp, 80));
        assert_eq!(s.isolated_pods(), 0);
    }
}
