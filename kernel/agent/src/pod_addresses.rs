//! Pod IP assignment from the node's pod CIDR: the node's own host-local
//! IPAM (the CNI part a kubelet delegates; kube's `host-local` plugin).
//!
//! Addresses go round-robin from where the last one was taken, so a freed
//! address is not handed out again at once (Services and peers may still
//! hold it for a moment). The network address, the first host address
//! (by convention the gateway of a pod subnet) and the broadcast address are
//! never given out.

use alloc::collections::BTreeMap;
use alloc::string::String;
use core::net::Ipv4Addr;

/// A pod CIDR the node cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CidrError(pub String);

impl core::fmt::Display for CidrError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "unusable pod CIDR {:?}", self.0)
    }
}

impl core::error::Error for CidrError {}

/// An IPv4 network `a.b.c.d/len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn parse(s: &str) -> Option<Self> {
        let (ip, len) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let prefix: u8 = len.parse().ok().filter(|&l| l <= 32)?;
        let mask = Self::mask(prefix);
        (u32::from(ip) & !mask == 0).then_some(Self {
            network: ip,
            prefix,
        })
    }

    fn mask(prefix: u8) -> u32 {
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask(self.prefix) == u32::from(self.network)
    }
}

/// Assigns pod addresses; see the module docs.
#[derive(Debug, Default)]
pub struct PodAddresses {
    net: Option<Ipv4Net>,
    assigned: BTreeMap<String, Ipv4Addr>,
    /// Offset of the address handed out last.
    last: u32,
}

impl PodAddresses {
    /// Takes the first IPv4 CIDR of the Node's `spec.podCIDRs` (an IPv6 one,
    /// on a dual-stack cluster, is skipped). The same CIDR again changes
    /// nothing; a different one applies to pods assigned from now on.
    pub fn set_cidrs(&mut self, cidrs: &[String]) -> Result<(), CidrError> {
        let Some(c) = cidrs.iter().find(|c| !c.contains(':')) else {
            return Err(CidrError(cidrs.join(",")));
        };
        let net = Ipv4Net::parse(c)
            .filter(|n| n.prefix <= 30)
            .ok_or_else(|| CidrError(c.clone()))?;
        if self.net != Some(net) {
            self.net = Some(net);
            self.last = 1;
        }
        Ok(())
    }

    /// The pod network, once known.
    pub fn network(&self) -> Option<Ipv4Net> {
        self.net
    }

    /// The pod's address, assigning one if it has none; `None` without a
    /// CIDR or when every address is taken.
    pub fn assign(&mut self, pod_uid: &str) -> Option<Ipv4Addr> {
        if let Some(&ip) = self.assigned.get(pod_uid) {
            return Some(ip);
        }
        let net = self.net?;
        let size = 1u32 << (32 - u32::from(net.prefix));
        let base = u32::from(net.network);
        // Host offsets 2 ..= size - 2 (skipping network, gateway, broadcast).
        let usable = size - 3;
        for step in 1..=usable {
            let offset = (self.last + step - 2) % usable + 2;
            let ip = Ipv4Addr::from(base + offset);
            if !self.assigned.values().any(|&a| a == ip) {
                self.last = offset;
                self.assigned.insert(pod_uid.into(), ip);
                return Some(ip);
            }
        }
        None
    }

    pub fn get(&self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.assigned.get(pod_uid).copied()
    }

    /// Frees the pod's address.
    pub fn release(&mut self, pod_uid: &str) -> Option<Ipv4Addr> {
        self.assigned.remove(pod_uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;
    use alloc::vec::Vec;

    fn cidr(s: &str) -> Vec<String> {
        vec![s.into()]
    }

    #[test]
    fn addresses_come_from_the_cidr_round_robin_without_reserved_ones() {
        let mut a = PodAddresses::default();
        assert_eq!(a.assign("p0"), None, "no CIDR yet");
        a.set_cidrs(&cidr("10.244.3.0/29")).unwrap();
        let got: Vec<Ipv4Addr> = (0..5)
            .map(|i| a.assign(&format!("p{i}")).unwrap())
            .collect();
        assert_eq!(
            got,
            [
                "10.244.3.2",
                "10.244.3.3",
                "10.244.3.4",
                "10.244.3.5",
                "10.244.3.6"
            ]
            .map(|s| s.parse::<Ipv4Addr>().unwrap())
        );
        assert_eq!(a.assign("p9"), None, "the /29 is full");
        assert_eq!(
            a.assign("p1"),
            Some("10.244.3.3".parse().unwrap()),
            "stable"
        );
        // A freed address is reused only after the others were tried.
        assert_eq!(a.release("p1"), Some("10.244.3.3".parse().unwrap()));
        assert_eq!(a.release("p3"), Some("10.244.3.5".parse().unwrap()));
        assert_eq!(a.assign("q"), Some("10.244.3.3".parse().unwrap()));
        assert_eq!(a.assign("r"), Some("10.244.3.5".parse().unwrap()));
        assert_eq!(a.get("r"), Some("10.244.3.5".parse().unwrap()));
        a.release("r");
        a.release("p4");
        assert_eq!(
            a.assign("s"),
            Some("10.244.3.6".parse().unwrap()),
            "round robin continues after the last one taken"
        );
    }

    #[test]
    fn cidrs_are_checked_and_the_ipv4_one_is_used() {
        let mut a = PodAddresses::default();
        for bad in [
            "10.244.3.1/24",
            "10.244.3.0",
            "10.244.3.0/31",
            "fd00::/64",
            "x/24",
        ] {
            assert!(a.set_cidrs(&cidr(bad)).is_err(), "{bad}");
        }
        assert!(a.set_cidrs(&[]).is_err());
        a.set_cidrs(&["fd00::/64".into(), "10.244.0.0/24".into()])
            .unwrap();
        assert_eq!(
            a.network(),
            Some(Ipv4Net {
                network: "10.244.0.0".parse().unwrap(),
                prefix: 24
            })
        );
        let ip = a.assign("p").unwrap();
        assert!(a.network().unwrap().contains(ip));
        // The same CIDR again keeps assignments and position.
        a.set_cidrs(&cidr("10.244.0.0/24")).unwrap();
        assert_eq!(a.assign("p"), Some(ip));
        assert_eq!(a.assign("q"), Some("10.244.0.3".parse().unwrap()));
    }
}
