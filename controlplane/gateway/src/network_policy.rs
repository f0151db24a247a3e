//! API -> nodes: NetworkPolicy, resolved for each node's pods.
//!
//! One list and watch of NetworkPolicies, Pods and Namespaces for the whole
//! gateway. Every change recomputes what each node's pods are allowed
//! ([`resolve`]): selectors become the addresses of the pods they select,
//! named ports become numbers, so a node learns addresses and ports but no
//! other pod's labels or spec (least privilege: its credentials would not
//! show it other nodes' pods either). A session sends its node the whole
//! set (an entry for every pod bound to it) after registration and again
//! whenever it changes, and records which pods the sets it sent cover:
//! the session's pod sync sends a pod only once a set covering it went
//! first, so no pod runs a moment unpoliced (as a CNI programs policy
//! before the container starts).
//!
//! kube's semantics: a pod selected by a policy with `Ingress` (`Egress`)
//! in its `policyTypes` is isolated in that direction and allows the union
//! of the rules of every such policy; an absent or empty peer or port list
//! matches all; `podSelector` peers are pods of the policy's namespace,
//! `namespaceSelector` picks namespaces, both together pods within them.
//! Only pods with an address of their own are selected as peers (a pod
//! sharing its node's address cannot be told apart from it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use skiff_apiserver::Identity;
use skiff_node_proto::{
    self as proto, Cidr, IpBlock, PlaneToNode, PodPolicy, PolicyRule, PortRange,
};
use skiff_selectors::LabelSelector;
use tokio::sync::{mpsc, watch};

use crate::local_api::{LocalApi, gateway_identity};
use crate::services::{meta, protocol};

/// Each node's pods' verdicts; `None` until the first listing is in.
type Verdicts = Option<Arc<BTreeMap<String, Vec<PodPolicy>>>>;

/// Largest encoded set sent to one node: past it the node's isolated pods
/// get default deny instead (fail closed) and the journal says why.
const POLICY_FRAME_BUDGET: usize = proto::MAX_FRAME / 2;

/// The current verdicts, for the sessions to follow.
#[derive(Debug)]
pub struct PolicyHub {
    verdicts: watch::Sender<Verdicts>,
}

impl Default for PolicyHub {
    fn default() -> Self {
        PolicyHub {
            verdicts: watch::channel(None).0,
        }
    }
}

/// The UIDs of the pods that the sets a session sent cover (`None` before
/// the first): its pod sync waits on it.
pub type Covered = watch::Receiver<Option<Arc<BTreeSet<String>>>>;

/// A session's record of what its sets covered.
pub fn coverage() -> (watch::Sender<Option<Arc<BTreeSet<String>>>>, Covered) {
    watch::channel(None)
}

/// How long the pod sync waits for a set covering a pod before it sends
/// the pod anyway (the node then denies the pod everything: fail closed).
pub const COVER_WAIT: Duration = Duration::from_secs(5);

/// Waits until the sets sent cover every pod in `uids` (or [`COVER_WAIT`]).
pub async fn wait_covered<'a>(covered: &mut Covered, uids: impl IntoIterator<Item = &'a str>) {
    let uids: Vec<&str> = uids.into_iter().collect();
    let all_in = |c: &Option<Arc<BTreeSet<String>>>| {
        c.as_ref()
            .is_some_and(|c| uids.iter().all(|u| c.contains(*u)))
    };
    let _ = tokio::time::timeout(COVER_WAIT, covered.wait_for(all_in)).await;
}

/// Serves one node session (protocol version 4 or later): the node's set
/// once the first listing is in, then each change of it, until the
/// session's queue closes; `covered` records what was sent. The first set
/// is sent even when empty: a node keeps its set across reconnects and
/// this replaces it.
pub async fn serve_node(
    hub: Arc<PolicyHub>,
    node: String,
    tx: mpsc::Sender<PlaneToNode>,
    covered: watch::Sender<Option<Arc<BTreeSet<String>>>>,
) {
    let mut rx = hub.verdicts.subscribe();
    let mut sent: Option<Vec<PodPolicy>> = None;
    loop {
        let mine = rx
            .borrow_and_update()
            .as_ref()
            .map(|all| all.get(&node).cloned().unwrap_or_default());
        if let Some(mine) = mine
            && sent.as_ref() != Some(&mine)
        {
            let uids = mine.iter().map(|p| p.pod_uid.clone()).collect();
            let msg = PlaneToNode::NetworkPolicies { pods: mine.clone() };
            if tx.send(msg).await.is_err() {
                return;
            }
            // Queued before any pod the sync sends after seeing this.
            covered.send_replace(Some(Arc::new(uids)));
            sent = Some(mine);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

const POLICIES: &str = "/apis/networking.k8s.io/v1/networkpolicies";
const PODS: &str = "/api/v1/pods";
const NAMESPACES: &str = "/api/v1/namespaces";

/// Which watch an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Policy,
    Pod,
    Namespace,
}

/// The hub's one list-and-watch loop, for the gateway's life.
pub async fn run(shared: Arc<crate::Shared>, hub: Arc<PolicyHub>) {
    let api = shared.api.clone();
    let id = gateway_identity();
    loop {
        let began = std::time::Instant::now();
        if let Err(e) = sync(&api, &id, &hub, &shared.journal).await {
            shared
                .journal
                .log(format!("network policies: list/watch failed: {e}"));
        }
        // A watch the API closed at once is no reason to spin.
        if began.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The objects the verdicts are made from, as far as they matter.
#[derive(Default)]
struct World {
    policies: BTreeMap<(String, String), Value>,
    pods: BTreeMap<(String, String), Pod>,
    /// Namespace labels by name.
    namespaces: BTreeMap<String, Map<String, Value>>,
}

impl World {
    /// Applies one object; whether anything that matters changed.
    fn apply(&mut self, source: Source, deleted: bool, obj: &Value) -> bool {
        let (ns, name) = meta(obj);
        match source {
            Source::Policy if deleted => self.policies.remove(&(ns, name)).is_some(),
            Source::Policy => self.policies.insert((ns, name), obj.clone()).as_ref() != Some(obj),
            Source::Pod => {
                let pod = (!deleted).then(|| Pod::from_object(obj)).flatten();
                let key = (ns, name);
                match pod {
                    Some(p) => self.pods.insert(key, p.clone()) != Some(p),
                    None => self.pods.remove(&key).is_some(),
                }
            }
            Source::Namespace if deleted => self.namespaces.remove(&name).is_some(),
            Source::Namespace => {
                let labels = labels(obj);
                self.namespaces.insert(name, labels.clone()) != Some(labels)
            }
        }
    }
}

/// What a pod contributes: who it is, where, and its named ports.
#[derive(Debug, Clone, PartialEq)]
struct Pod {
    uid: String,
    namespace: String,
    labels: Map<String, Value>,
    /// Its own address (not its node's), once it has one.
    ip: Option<Ipv4Addr>,
    node: String,
    /// Container port names → (protocol, number).
    named_ports: BTreeMap<String, (proto::Protocol, u16)>,
}

impl Pod {
    /// `None` for a pod that is on no node yet, or finished.
    fn from_object(v: &Value) -> Option<Pod> {
        let st = |p: &str| v.pointer(p).and_then(Value::as_str);
        if matches!(st("/status/phase"), Some("Succeeded" | "Failed")) {
            return None;
        }
        let host_ip = st("/status/hostIP").and_then(|h| h.parse::<Ipv4Addr>().ok());
        let ip = st("/status/podIP")
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok())
            .filter(|ip| Some(*ip) != host_ip)
            .filter(|_| v.pointer("/spec/hostNetwork").and_then(Value::as_bool) != Some(true));
        let named_ports = v
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|c| {
                c.get("ports")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|p| {
                let name = p.get("name").and_then(Value::as_str)?;
                let port = u16::try_from(p.get("containerPort")?.as_u64()?).ok()?;
                Some((name.to_string(), (protocol(p.get("protocol")), port)))
            })
            .collect();
        Some(Pod {
            uid: st("/metadata/uid")?.to_string(),
            namespace: meta(v).0,
            labels: labels(v),
            ip,
            node: st("/spec/nodeName")?.to_string(),
            named_ports,
        })
    }
}

fn labels(v: &Value) -> Map<String, Value> {
    v.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// A selector as written; an invalid one (the API refuses them, so only an
/// object stored before validation existed) selects nothing.
fn selector(v: Option<&Value>) -> Option<LabelSelector> {
    match v {
        None | Some(Value::Null) => LabelSelector::from_object(&Value::Object(Map::new())).ok(),
        Some(v) => LabelSelector::from_object(v).ok(),
    }
}

/// A rule's ports: numbers and ranges as written, names still to resolve
/// against the pod that owns the port.
#[derive(Default)]
struct Ports {
    /// `None`: all ports.
    numeric: Option<Vec<PortRange>>,
    named: Vec<(proto::Protocol, String)>,
}

fn ports(rule: &Value) -> Ports {
    let list = rule.get("ports").and_then(Value::as_array);
    let Some(list) = list.filter(|l| !l.is_empty()) else {
        return Ports::default();
    };
    let mut out = Ports {
        numeric: Some(Vec::new()),
        named: Vec::new(),
    };
    for p in list {
        let proto = protocol(p.get("protocol"));
        match p.get("port") {
            None | Some(Value::Null) => out.numeric.get_or_insert_default().push(PortRange {
                protocol: proto,
                first: 0,
                last: u16::MAX,
            }),
            Some(Value::String(name)) => out.named.push((proto, name.clone())),
            Some(n) => {
                let Some(first) = n.as_u64().and_then(|n| u16::try_from(n).ok()) else {
                    continue;
                };
                let last = p
                    .get("endPort")
                    .and_then(Value::as_u64)
                    .and_then(|n| u16::try_from(n).ok())
                    .unwrap_or(first);
                out.numeric.get_or_insert_default().push(PortRange {
                    protocol: proto,
                    first,
                    last,
                });
            }
        }
    }
    out
}

/// `named` resolved against `pod`'s container ports (unknown names match
/// nothing, as in kube).
fn resolve_named(named: &[(proto::Protocol, String)], pod: &Pod) -> Vec<PortRange> {
    named
        .iter()
        .filter_map(|(proto, name)| {
            let &(p, port) = pod.named_ports.get(name)?;
            (p == *proto).then_some(PortRange {
                protocol: p,
                first: port,
                last: port,
            })
        })
        .collect()
}

/// A rule's peers: `None` for any peer, else address blocks and the keys
/// of the pods selected.
struct Peers {
    blocks: Vec<IpBlock>,
    pods: BTreeSet<(String, String)>,
}

fn peers(world: &World, policy_ns: &str, list: Option<&Value>) -> Option<Peers> {
    let list = list.and_then(Value::as_array).filter(|l| !l.is_empty())?;
    let mut out = Peers {
        blocks: Vec::new(),
        pods: BTreeSet::new(),
    };
    for peer in list {
        if let Some(block) = peer.get("ipBlock").filter(|b| !b.is_null()) {
            out.blocks.extend(ip_block(block));
            continue;
        }
        let pod_sel = peer.get("podSelector").filter(|v| !v.is_null());
        let ns_sel = peer.get("namespaceSelector").filter(|v| !v.is_null());
        let pod_sel = selector(pod_sel);
        let ns_sel = match ns_sel {
            Some(s) => match LabelSelector::from_object(s) {
                Ok(s) => Some(s),
                Err(_) => continue,
            },
            None => None,
        };
        let Some(pod_sel) = pod_sel else { continue };
        for (key, pod) in &world.pods {
            let ns_ok = match &ns_sel {
                None => pod.namespace == policy_ns,
                Some(sel) => sel.matches(world.namespaces.get(&pod.namespace)),
            };
            if ns_ok && pod_sel.matches(Some(&pod.labels)) {
                out.pods.insert(key.clone());
            }
        }
    }
    Some(out)
}

/// An `ipBlock` as the node's form (IPv6 blocks: nodes are IPv4, none).
fn ip_block(v: &Value) -> Option<IpBlock> {
    let block = cidr(v.get("cidr")?.as_str()?)?;
    let except = v
        .get("except")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| cidr(e.as_str()?))
        .collect();
    Some(IpBlock {
        cidr: block,
        except,
    })
}

fn cidr(s: &str) -> Option<Cidr> {
    let (addr, len) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = len.parse().ok().filter(|p| *p <= 32)?;
    Some(Cidr {
        addr: addr.octets(),
        prefix,
    })
}

fn host(ip: Ipv4Addr) -> IpBlock {
    IpBlock {
        cidr: Cidr {
            addr: ip.octets(),
            prefix: 32,
        },
        except: Vec::new(),
    }
}

/// The rules one written rule becomes for `pod` in `direction`.
fn rules_for(
    world: &World,
    peers: &Option<Peers>,
    ports: &Ports,
    pod: &Pod,
    ingress: bool,
) -> Vec<PolicyRule> {
    let peer_blocks = |only: Option<&Pod>| -> Option<Vec<IpBlock>> {
        let p = peers.as_ref()?;
        Some(match only {
            Some(one) => one.ip.map(host).into_iter().collect(),
            None => {
                let mut v = p.blocks.clone();
                v.extend(
                    p.pods
                        .iter()
                        .filter_map(|k| world.pods.get(k)?.ip)
                        .map(host),
                );
                v
            }
        })
    };
    let mut out = Vec::new();
    if ports.named.is_empty() {
        out.push(PolicyRule {
            peers: peer_blocks(None),
            ports: ports.numeric.clone(),
        });
        return out;
    }
    if let Some(numeric) = ports.numeric.as_ref().filter(|n| !n.is_empty()) {
        out.push(PolicyRule {
            peers: peer_blocks(None),
            ports: Some(numeric.clone()),
        });
    }
    if ingress {
        // The pod's own port names.
        let resolved = resolve_named(&ports.named, pod);
        if !resolved.is_empty() {
            out.push(PolicyRule {
                peers: peer_blocks(None),
                ports: Some(resolved),
            });
        }
    } else {
        // The destination's port names: one rule per peer pod that has them
        // (any pod when the rule names no peers).
        let candidates: Vec<&Pod> = match peers {
            None => world.pods.values().collect(),
            Some(p) => p.pods.iter().filter_map(|k| world.pods.get(k)).collect(),
        };
        for peer in candidates {
            let Some(ip) = peer.ip else { continue };
            let resolved = resolve_named(&ports.named, peer);
            if !resolved.is_empty() {
                out.push(PolicyRule {
                    peers: Some(vec![host(ip)]),
                    ports: Some(resolved),
                });
            }
        }
    }
    out
}

/// Every node's pods' verdicts.
fn resolve(world: &World) -> BTreeMap<String, Vec<PodPolicy>> {
    // Each policy once: its selector and its rules' peers and ports.
    struct Compiled<'a> {
        namespace: &'a str,
        select: LabelSelector,
        ingress: Option<Vec<(Option<Peers>, Ports)>>,
        egress: Option<Vec<(Option<Peers>, Ports)>>,
    }
    let compiled: Vec<Compiled> = world
        .policies
        .iter()
        .filter_map(|((ns, _), p)| {
            let spec = p.get("spec")?;
            let select = selector(spec.get("podSelector"))?;
            let types: Vec<&str> = spec
                .get("policyTypes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let rules = |dir: &str, peer_field: &str| {
                types.contains(&dir).then(|| {
                    spec.get(dir.to_ascii_lowercase())
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .map(|r| (peers(world, ns, r.get(peer_field)), ports(r)))
                        .collect()
                })
            };
            Some(Compiled {
                namespace: ns,
                select,
                ingress: rules("Ingress", "from"),
                egress: rules("Egress", "to"),
            })
        })
        .collect();
    let mut out: BTreeMap<String, Vec<PodPolicy>> = BTreeMap::new();
    for pod in world.pods.values() {
        let mut ingress: Option<Vec<PolicyRule>> = None;
        let mut egress: Option<Vec<PolicyRule>> = None;
        for c in compiled
            .iter()
            .filter(|c| c.namespace == pod.namespace && c.select.matches(Some(&pod.labels)))
        {
            for (rules, into, is_ingress) in [
                (&c.ingress, &mut ingress, true),
                (&c.egress, &mut egress, false),
            ] {
                let Some(rules) = rules else { continue };
                let v = into.get_or_insert_default();
                for (peers, ports) in rules {
                    v.extend(rules_for(world, peers, ports, pod, is_ingress));
                }
            }
        }
        // Every pod gets its entry: one missing means "not known yet".
        out.entry(pod.node.clone()).or_default().push(PodPolicy {
            pod_uid: pod.uid.clone(),
            ingress,
            egress,
        });
    }
    out
}

/// A node's set that would not fit a frame: its isolated directions deny
/// everything instead (fail closed).
fn fit(node: &str, pods: &mut [PodPolicy], journal: &crate::journal::Journal) {
    let size = postcard::experimental::serialized_size(&*pods).unwrap_or(usize::MAX);
    if size <= POLICY_FRAME_BUDGET {
        return;
    }
    journal.log(format!(
        "network policies for node {node}: {size} bytes exceed {POLICY_FRAME_BUDGET}; its isolated pods deny all traffic until the policies shrink"
    ));
    for p in pods {
        for rules in [&mut p.ingress, &mut p.egress].into_iter().flatten() {
            rules.clear();
        }
    }
}

/// One listing of all three, then their watches until one ends.
async fn sync(
    api: &LocalApi,
    id: &Identity,
    hub: &PolicyHub,
    journal: &crate::journal::Journal,
) -> Result<(), String> {
    let mut world = World::default();
    let (policy_rv, policies) = api.list(id, POLICIES).await?;
    let (pod_rv, pods) = api.list(id, PODS).await?;
    let (ns_rv, namespaces) = api.list(id, NAMESPACES).await?;
    for (source, items) in [
        (Source::Policy, policies),
        (Source::Pod, pods),
        (Source::Namespace, namespaces),
    ] {
        for v in &items {
            world.apply(source, false, v);
        }
    }
    let publish = |world: &World| {
        let mut all = resolve(world);
        for (node, pods) in all.iter_mut() {
            fit(node, pods, journal);
        }
        hub.verdicts.send_if_modified(|v| {
            let changed = v.as_deref() != Some(&all);
            if changed {
                *v = Some(Arc::new(all));
            }
            changed
        });
    };
    publish(&world);

    let (etx, mut erx) = mpsc::channel::<(Source, Value)>(1024);
    let apply = async {
        while let Some(first) = erx.recv().await {
            // Everything already queued goes into one recomputation.
            let mut batch = vec![first];
            while let Ok(more) = erx.try_recv() {
                batch.push(more);
            }
            let mut changed = false;
            for (source, ev) in batch {
                let obj = ev.get("object").cloned().unwrap_or(Value::Null);
                match ev.get("type").and_then(Value::as_str).unwrap_or("") {
                    "ADDED" | "MODIFIED" => changed |= world.apply(source, false, &obj),
                    "DELETED" => changed |= world.apply(source, true, &obj),
                    "ERROR" => return Err(format!("watch error: {}", obj["message"])),
                    _ => {}
                }
            }
            if changed {
                publish(&world);
            }
        }
        Ok(())
    };
    tokio::select! {
        r = api.watch(id, POLICIES, &policy_rv, Source::Policy, etx.clone()) => r,
        r = api.watch(id, PODS, &pod_rv, Source::Pod, etx.clone()) => r,
        r = api.watch(id, NAMESPACES, &ns_rv, Source::Namespace, etx) => r,
        r = apply => r,
    }
}

#[cfg(test)]
mod tests;
