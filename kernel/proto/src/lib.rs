//! The Skiff node protocol, shared by the node kernel and the control plane's
//! node gateway. `no_std + alloc`; host-tested.
//!
//! # Transport
//!
//! The node dials one TCP connection to the node gateway and runs TLS over it:
//! - **bootstrap** connections are server-authenticated only (the node has the
//!   cluster CA but no certificate yet). Frames are limited to
//!   [`MAX_BOOTSTRAP_FRAME`]; the only messages allowed are [`NodeToPlane::Hello`],
//!   [`NodeToPlane::Bootstrap`] and the answers [`PlaneToNode::Welcome`],
//!   [`PlaneToNode::Certificate`] or [`PlaneToNode::Refused`]. The gateway closes
//!   the connection after answering.
//! - **node** connections are mutual TLS with the node certificate
//!   (`CN=system:node:<name>`, `O=system:nodes`). Frames are limited to
//!   [`MAX_FRAME`].
//!
//! # Frames
//!
//! Every message is one frame: a 4-byte **big-endian** `u32` body length, then
//! the body, which is the [postcard] encoding of exactly one [`NodeToPlane`] or
//! [`PlaneToNode`] value (trailing bytes are an error). See [`frame`] for the
//! encoder and the streaming [`FrameDecoder`].
//!
//! # Session
//!
//! ```text
//! node                                        plane
//!  | Hello{min..max version, caps, name}  ->   |
//!  |   <- Welcome{version, caps} | Refused{UnsupportedVersion{..}}
//!  | Register(NodeInfo)                    ->   |   (node connections)
//!  |   <- Registered{lease, pod CIDRs}          |
//!  |   <- DesiredPods{generation, pods}         |   full state, always first
//!  |   <- ConfigData / PodDelta / LogRequest …  |
//!  |   <- Services{generation, more} … (v3)     |   full Service state, then
//!  |   <- ServiceDelta …                        |   deltas
//!  |   <- NetworkPolicies{pods} … (v4)          |   on every change
//!  | LeaseRenew / NodeStatus / PodStatus / Event / LogChunk / SyncAck … -> |
//!  | Usage (v5, every USAGE_REPORT_SECS)   ->   |
//! ```
//!
//! # Compatibility (postcard is not self-describing)
//!
//! postcard encodes structs as their fields in order and enums as a varint
//! variant index followed by the variant's fields, with no names and no
//! lengths. So the rules are:
//! 1. The frame header and the **handshake** are frozen forever: variant 0 of
//!    [`NodeToPlane`] is `Hello(Hello)` and variants 0/1 of [`PlaneToNode`] are
//!    `Welcome(Welcome)` / `Refused(Refusal)`, and those structs never change
//!    (the [`RefusalReason::UnsupportedVersion`] variant index is frozen too).
//!    Any peer can therefore read any other peer's hello and answer it.
//! 2. The node offers `[min_version, max_version]`; the plane picks the
//!    highest version both support ([`negotiate`]) or refuses with
//!    [`RefusalReason::UnsupportedVersion`] naming its own range.
//! 3. After the handshake both sides send only what the negotiated version
//!    defines. Any change to a struct's fields or a nested enum is a new
//!    [`PROTOCOL_VERSION`]; new top-level messages and new enum variants are
//!    **appended only** (never reordered or removed), so a newer build
//!    speaking an older version simply doesn't send them.
//! 4. A top-level variant index the decoder does not know is reported as
//!    [`FrameError::UnknownMessage`]; the frame length is known, so the stream
//!    stays in sync and the receiver may skip it (or close, as policy).
//!
//! # Conventions
//!
//! - Times on the wire are Unix milliseconds ([`UnixMillis`]) from the
//!   sender's wall clock; durations are explicit in the field name.
//! - Pod specs are the **node-side subset** the control plane translates from
//!   Kubernetes objects: named ports are already resolved to numbers, defaults
//!   are already applied, images are pinned by digest.
//! - Resource quantities are integers: CPU in millicores, memory and storage
//!   in bytes.
//!
//! # Testing
//!
//! `cargo test -p skiff-node-proto` round-trips every message ([`sample`]),
//! pins the frozen handshake bytes, checks the decoder's edge cases, and runs
//! a seeded, time-bounded fuzz loop over random and mutated frames
//! (`SKIFF_FUZZ_SECS`, default 2; `SKIFF_FUZZ_SEED`). Deeper, coverage-guided
//! fuzzing is the libFuzzer target `node_proto` in `tests/fuzz`:
//! `cargo xtask fuzz node_proto --time 60`.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod frame;
pub mod sample;

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

pub use frame::{
    FrameDecoder, FrameError, decode_body, decode_frame, encode_frame, encode_frame_into, frame_len,
};

/// The newest protocol version this build speaks.
///
/// Version 2: images resolved by the plane ([`ImagePull`]) and artifact
/// fetches. No version-1 peer was ever released, so 1 is not spoken.
/// Version 3: the cluster's Services and endpoints for the node's proxy
/// ([`PlaneToNode::Services`], [`PlaneToNode::ServiceDelta`],
/// [`NodeToPlane::ServiceResyncRequest`]); a plane speaking 2 sends none.
/// Version 4: NetworkPolicy for the node's pods
/// ([`PlaneToNode::NetworkPolicies`]).
/// Version 5: resource usage reports ([`NodeToPlane::Usage`]; a node
/// speaking 4 sends none) and byte-stream tunnels to the node's pods
/// ([`PlaneToNode::Tunnel`], [`NodeToPlane::Tunnel`]).
pub const PROTOCOL_VERSION: u16 = 5;
/// The oldest protocol version this build still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 2;

/// Largest frame body on an authenticated node connection (4 MiB): bounds a
/// full desired-pod set and one log chunk batch, and the decoder's buffer.
pub const MAX_FRAME: usize = 4 << 20;
/// Largest frame body before authentication (64 KiB): a token, a CSR and a
/// certificate chain fit easily; an unauthenticated peer can't make us buffer more.
pub const MAX_BOOTSTRAP_FRAME: usize = 64 << 10;
/// Largest `data` in one [`NodeToPlane::LogChunk`]; senders split larger output.
pub const MAX_LOG_CHUNK: usize = 64 << 10;
/// Largest `data` in one [`PlaneToNode::ArtifactChunk`] (and largest `len` a
/// node may ask for): well under [`MAX_FRAME`], small enough to interleave
/// with heartbeats.
pub const MAX_ARTIFACT_CHUNK: usize = 256 << 10;
/// Budget for one [`PlaneToNode::Services`] or [`PlaneToNode::ServiceDelta`]
/// body: the plane splits the Service state into parts of about this size
/// (a quarter of [`MAX_FRAME`], so heartbeats interleave), and trims the
/// endpoints of a single Service that would not fit.
pub const SERVICE_FRAME_BUDGET: usize = 1 << 20;

/// How often a node sends [`NodeToPlane::Usage`] (metrics-server's default
/// resolution is 15 s; the kubelet's housekeeping 10 s).
pub const USAGE_REPORT_SECS: u64 = 10;

/// Milliseconds since the Unix epoch (sender's wall clock).
pub type UnixMillis = u64;
/// A pod's `metadata.uid` (the Kubernetes UUID string).
pub type PodUid = String;
/// A control-plane–chosen id for one log stream on this connection.
pub type StreamId = u32;

/// Names a tunnel on one node connection; chosen by the plane.
pub type TunnelId = u32;

/// Bytes a tunnel's sender may have unacknowledged ([`TunnelFrame::Ack`]):
/// each side holds at most this much of a tunnel's data for the other.
pub const TUNNEL_WINDOW: u32 = 32 << 10;
/// The most data in one [`TunnelFrame::Data`].
pub const MAX_TUNNEL_CHUNK: usize = 16 << 10;
/// Tunnels open at once on one node connection.
pub const MAX_TUNNELS: usize = 16;

/// One step of a tunnel: a TCP connection from the node's address to one
/// of its pods, carried over the node connection. Either side may send
/// `Data`, `Ack`, `Eof` and `Reset`; only the plane sends `Open`, only the
/// node `Opened` and `Failed`. Flow control is by credit: a side may have
/// at most [`TUNNEL_WINDOW`] bytes of `Data` not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelFrame {
    /// Connect to `port` on `address`, an address of one of the node's
    /// pods (or the node's own, for pods sharing it).
    Open { address: String, port: u16 },
    /// Connected: data may flow.
    Opened,
    /// Could not connect; the tunnel is gone.
    Failed { error: TunnelError, message: String },
    /// The next bytes of the stream (at most [`MAX_TUNNEL_CHUNK`]).
    Data(Vec<u8>),
    /// The receiver passed on `bytes` more: the sender may send that much more.
    Ack { bytes: u32 },
    /// The sender is done sending (TCP's FIN); the other direction goes on.
    Eof,
    /// The stream broke (TCP's RST); the tunnel is gone.
    Reset,
}

/// Why a tunnel could not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TunnelError {
    /// Nothing listens on that port.
    Refused,
    /// The address is not one of this node's pods.
    NotThisNode,
    /// [`MAX_TUNNELS`] are open, or the id is in use.
    Busy,
    /// This node cannot open tunnels (e.g. it runs no pod network).
    Unsupported,
}

/// Picks the protocol version for a peer offering `[peer_min, peer_max]`:
/// the highest version both support, or `None` if the ranges don't overlap.
pub fn negotiate(peer_min: u16, peer_max: u16) -> Option<u16> {
    let hi = peer_max.min(PROTOCOL_VERSION);
    let lo = peer_min.max(MIN_PROTOCOL_VERSION);
    (peer_min <= peer_max && lo <= hi).then_some(hi)
}

// ---------------------------------------------------------------------------
// Top-level messages
// ---------------------------------------------------------------------------

/// Everything the node sends. Variant order is the wire format: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeToPlane {
    /// First frame on every connection (frozen; see the crate docs).
    Hello(Hello),
    /// Bootstrap only: ask for a node certificate. `csr_der` is a PKCS#10 CSR
    /// for a key generated on the node, subject `CN=system:node:<node_name>`,
    /// `O=system:nodes`.
    Bootstrap {
        node_name: String,
        token: String,
        csr_der: Vec<u8>,
    },
    /// Register (or re-register after reconnecting) this node.
    Register(NodeInfo),
    /// Heartbeat: renew the node's Lease in `kube-node-lease`. `seq` increases
    /// by one per renewal so the plane can spot gaps.
    LeaseRenew {
        seq: u64,
        renew_time: UnixMillis,
    },
    /// Node conditions and resources (sent on change and at least every
    /// node-status report interval).
    NodeStatus(NodeStatus),
    /// The status of one pod (sent on change).
    PodStatus(PodStatus),
    /// A Kubernetes Event about a pod or the node.
    Event(Event),
    /// Output for a [`PlaneToNode::LogRequest`]. `eof` ends the stream; then
    /// `error` says why if it ended abnormally (no such container, cancelled…).
    LogChunk {
        stream: StreamId,
        data: Vec<u8>,
        eof: bool,
        error: Option<String>,
    },
    /// The node applied the desired pod set up to `generation`.
    SyncAck {
        generation: u64,
    },
    /// A [`PlaneToNode::PodDelta`] did not apply to the node's generation
    /// (`have`): send the full [`PlaneToNode::DesiredPods`] again.
    ResyncRequest {
        have: u64,
    },
    /// Rotate the node certificate (mTLS connection): a CSR for a new key.
    RenewCertificate {
        csr_der: Vec<u8>,
    },
    /// Liveness check / reply on an otherwise quiet connection.
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Orderly close (shutdown, drain, protocol error); the connection closes next.
    Goodbye {
        reason: String,
    },
    /// Ask for `len` bytes at `offset` of a compiled artifact named by an
    /// [`ImagePull::Ready`] of one of this node's pods.
    FetchArtifact {
        digest: String,
        offset: u64,
        len: u32,
    },
    /// (v3) A [`PlaneToNode::ServiceDelta`] did not apply to the node's
    /// Service generation (`have`): send the full [`PlaneToNode::Services`]
    /// again.
    ServiceResyncRequest {
        have: u64,
    },
    /// (v5) The node's and its containers' resource use, every
    /// [`USAGE_REPORT_SECS`]: cumulative counters, so the plane computes
    /// rates over the window between two reports (as metrics-server does).
    Usage(UsageReport),
    /// (v5) The node's side of a tunnel the plane opened.
    Tunnel {
        tunnel: TunnelId,
        frame: TunnelFrame,
    },
}

/// Everything the control plane sends. Variant order is the wire format: append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlaneToNode {
    /// Accepts the hello (frozen; see the crate docs).
    Welcome(Welcome),
    /// Refuses the hello, the bootstrap, or the registration; the connection
    /// closes next (frozen; see the crate docs).
    Refused(Refusal),
    /// The issued node certificate: leaf first, then intermediates (DER).
    Certificate {
        chain_der: Vec<Vec<u8>>,
        not_after: UnixMillis,
    },
    /// Registration accepted.
    Registered(Registered),
    /// The complete desired pod set for this node at `generation`. Replaces
    /// whatever the node had: pods not listed are to be stopped.
    DesiredPods {
        generation: u64,
        pods: Vec<PodSpec>,
    },
    /// Changes from `from_generation` to `generation`: upserts replace whole
    /// pods by uid; `removes` are stopped (with the pod's grace period) and
    /// forgotten. If the node is not at `from_generation` it answers
    /// [`NodeToPlane::ResyncRequest`] and ignores the delta.
    PodDelta {
        from_generation: u64,
        generation: u64,
        upserts: Vec<PodSpec>,
        removes: Vec<PodUid>,
    },
    /// Start streaming a container's log (`kubectl logs`).
    LogRequest(LogRequest),
    /// Stop a log stream; the node answers with a final `LogChunk{eof: true}`.
    LogCancel {
        stream: StreamId,
    },
    /// ConfigMap or Secret data referenced by this node's pods (and only
    /// those: the node authorizer's rule). Upsert by (kind, namespace, name).
    ConfigData(ConfigObject),
    /// A ConfigMap or Secret is gone (or no longer referenced).
    ConfigRemove {
        kind: ConfigKind,
        namespace: String,
        name: String,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// Orderly close; the connection closes next.
    Goodbye {
        reason: String,
    },
    /// Answer to [`NodeToPlane::FetchArtifact`]: `data` (at most
    /// [`MAX_ARTIFACT_CHUNK`] bytes) from `offset` of an artifact of `total`
    /// bytes, or `error` (unknown digest, not this node's) with no data.
    ArtifactChunk {
        digest: String,
        offset: u64,
        total: u64,
        data: Vec<u8>,
        error: Option<String>,
    },
    /// (v3) The cluster's complete Service state at `generation` (every
    /// node gets the same: nodes may read all Services and EndpointSlices).
    /// Split into parts of at most [`SERVICE_FRAME_BUDGET`]: `more` says
    /// another part of the same generation follows; the node replaces its
    /// state when the last part (`more: false`) arrives. Sent after
    /// `Registered` and on [`NodeToPlane::ServiceResyncRequest`].
    Services {
        generation: u64,
        services: Vec<Service>,
        more: bool,
    },
    /// (v3) Changes from `from_generation` to `generation`: upserts replace
    /// whole Services (with their endpoints) by namespace/name, `removes`
    /// are gone. A node not at `from_generation` ignores it and answers
    /// [`NodeToPlane::ServiceResyncRequest`].
    ServiceDelta {
        from_generation: u64,
        generation: u64,
        upserts: Vec<Service>,
        removes: Vec<ServiceRef>,
    },
    /// (v3) The node's `spec.podCIDRs`, sent once the controller manager's
    /// node IPAM has set them if they were not known at [`Registered`] (a
    /// new Node gets its CIDR a moment after it is created). They never
    /// change afterwards (kube makes them immutable).
    PodNetwork {
        pod_cidrs: Vec<String>,
    },
    /// (v4) What NetworkPolicy allows the node's pods: one entry for every
    /// pod bound to the node (a direction that is `None` is not isolated),
    /// complete (it replaces the last one). The plane resolves selectors to
    /// addresses (so a node learns no other pod's labels) and named ports
    /// to numbers; it sends this after `Registered` and whenever the result
    /// changes, and sends a pod only once a set covering it went first.
    NetworkPolicies {
        pods: Vec<PodPolicy>,
    },
    /// (v5) A byte stream to a pod of this node (`kubectl port-forward`,
    /// the API server's `pods/proxy`), opened by
    /// [`TunnelFrame::Open`]; only to nodes offering
    /// [`Capabilities::TUNNEL`].
    Tunnel {
        tunnel: TunnelId,
        frame: TunnelFrame,
    },
}

impl NodeToPlane {
    /// Number of variants this build knows (the decoder reports higher indices
    /// as [`FrameError::UnknownMessage`]).
    pub const VARIANTS: u32 = 18;
}

impl PlaneToNode {
    /// Number of variants this build knows.
    pub const VARIANTS: u32 = 19;
}

/// A message type the frame codec can carry: one of the two top-level enums.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// Number of top-level variants this build knows.
    const VARIANTS: u32;
}
impl Message for NodeToPlane {
    const VARIANTS: u32 = NodeToPlane::VARIANTS;
}
impl Message for PlaneToNode {
    const VARIANTS: u32 = PlaneToNode::VARIANTS;
}

// ---------------------------------------------------------------------------
// Handshake (frozen)
// ---------------------------------------------------------------------------

/// The node's opening frame. **Frozen**: never change these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub min_version: u16,
    pub max_version: u16,
    /// The node name it will register as (the certificate must agree on
    /// authenticated connections).
    pub node_name: String,
    pub capabilities: Capabilities,
    /// Free-form build identification, e.g. `"skiff-kernel 0.1.0 build=ab12"`.
    pub software: String,
}

/// The plane's acceptance of a hello. **Frozen**: never change these fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The negotiated version: both sides use it from the next frame on.
    pub version: u16,
    pub capabilities: Capabilities,
    /// The plane's wall clock, so a node without an RTC can set its own.
    pub server_time: UnixMillis,
}

/// A refusal. **Frozen** (the layout; new reasons are appended).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub reason: RefusalReason,
    /// Human-readable detail for the node's log.
    pub message: String,
}

/// Why the plane refused. Variant 0 is frozen; others are append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalReason {
    /// No common protocol version; the plane speaks `[min, max]`.
    UnsupportedVersion { min: u16, max: u16 },
    /// Bootstrap token unknown, expired, or not allowed to bootstrap nodes.
    BadToken,
    /// The CSR does not parse, isn't self-signed correctly, or has the wrong
    /// subject/key type.
    BadCsr,
    /// The client certificate's node name does not match the hello/registration.
    NodeNameMismatch,
    /// Not allowed (certificate revoked, node deleted, bootstrap over mTLS, …).
    Forbidden,
    /// Try again later.
    RateLimited { retry_after_ms: u64 },
    /// The peer broke the protocol (unexpected message for this state).
    ProtocolError,
    /// The plane is shutting down or overloaded.
    Unavailable,
}

/// Optional features, as a bit set. Unknown bits are ignored (bits are
/// assigned append only), so both sides can send all they support and use the
/// intersection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Capabilities(pub u64);

impl Capabilities {
    pub const NONE: Self = Self(0);
    /// Log streams with `follow`.
    pub const LOG_FOLLOW: Self = Self(1 << 0);
    /// Incremental [`PlaneToNode::PodDelta`] (else the plane sends full sets).
    pub const POD_DELTA: Self = Self(1 << 1);
    /// Certificate rotation over the node connection.
    pub const CERT_ROTATION: Self = Self(1 << 2);
    /// Runs wasm (AOT `.cwasm`) containers.
    pub const WASM: Self = Self(1 << 3);
    /// Opens [`PlaneToNode::Tunnel`]s to its pods (v5).
    pub const TUNNEL: Self = Self(1 << 4);

    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    pub const fn intersect(self, other: Self) -> Self {
        Self(self.0 & other.0)
    }
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
}

// ---------------------------------------------------------------------------
// Registration, lease, node status
// ---------------------------------------------------------------------------

/// What a node says about itself when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Random per boot: a changed boot id tells the plane the node restarted
    /// (all its pods' containers are gone).
    pub boot_id: [u8; 16],
    pub addresses: Vec<NodeAddress>,
    pub capacity: Resources,
    pub allocatable: Resources,
    /// e.g. `"skiff-kernel 0.1.0"` (Node `status.nodeInfo.kernelVersion`).
    pub kernel_version: String,
    /// e.g. `"wasmtime://48.0.8"` (`containerRuntimeVersion`).
    pub runtime_version: String,
    /// e.g. `"Skiff unikernel"` (`osImage`).
    pub os_image: String,
    /// e.g. `"amd64"`.
    pub architecture: String,
    /// Labels the node asks for (the plane may filter them).
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeAddress {
    pub kind: AddressKind,
    pub address: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AddressKind {
    InternalIP,
    ExternalIP,
    Hostname,
    InternalDNS,
    ExternalDNS,
}

/// Node resources in integer units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub pods: u32,
    pub ephemeral_storage_bytes: u64,
}

/// The plane's answer to [`NodeToPlane::Register`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    /// The Node object's uid.
    pub node_uid: String,
    /// `leaseDurationSeconds` of the node Lease (Kubernetes default 40).
    pub lease_duration_secs: u32,
    /// How often to renew (Kubernetes default 10 s = lease / 4).
    pub renew_interval_ms: u32,
    /// How often to send [`NodeStatus`] when nothing changed (default 5 min).
    pub node_status_report_ms: u32,
    /// `spec.podCIDRs` for pod addresses on this node.
    pub pod_cidrs: Vec<String>,
}

/// Node `status`: conditions and resources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub conditions: Vec<NodeCondition>,
    pub capacity: Resources,
    pub allocatable: Resources,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCondition {
    pub kind: NodeConditionType,
    pub status: ConditionStatus,
    /// e.g. `"KubeletReady"`, `"KubeletHasSufficientMemory"`.
    pub reason: String,
    pub message: String,
    pub last_heartbeat: UnixMillis,
    pub last_transition: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeConditionType {
    Ready,
    MemoryPressure,
    DiskPressure,
    PIDPressure,
    NetworkUnavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

// ---------------------------------------------------------------------------
// Pod specs (node-side subset)
// ---------------------------------------------------------------------------

/// A pod as the node needs it. The control plane fills defaults (restart
/// policy, grace period, probe timings) and resolves named ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub uid: PodUid,
    pub namespace: String,
    pub name: String,
    /// Labels and annotations (for the downward API).
    pub labels: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
    pub service_account_name: String,
    pub init_containers: Vec<Container>,
    pub containers: Vec<Container>,
    pub restart_policy: RestartPolicy,
    /// `terminationGracePeriodSeconds` (Kubernetes default 30).
    pub termination_grace_period_secs: u64,
    /// `activeDeadlineSeconds`.
    pub active_deadline_secs: Option<u64>,
    pub volumes: Vec<Volume>,
    /// Set when the pod is being deleted (`deletionTimestamp` is set): stop
    /// it with this grace period (`deletionGracePeriodSeconds`), report the
    /// final status, then the plane removes it.
    pub deletion_grace_period_secs: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: ImageRef,
    /// `command` (entrypoint override) and `args`.
    pub command: Vec<String>,
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    pub env: Vec<EnvVar>,
    pub env_from: Vec<EnvFromSource>,
    pub ports: Vec<ContainerPort>,
    pub resources: ResourceRequirements,
    pub volume_mounts: Vec<VolumeMount>,
    pub readiness_probe: Option<Probe>,
    pub liveness_probe: Option<Probe>,
    pub startup_probe: Option<Probe>,
}

/// A container image as the plane resolved it for this node. The node never
/// talks to a registry: the plane's image service pulls, verifies and
/// compiles the image, and the node fetches the compiled artifact by digest
/// ([`NodeToPlane::FetchArtifact`]) and checks it against that digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// As written in the pod spec, e.g. `"registry.local/hello:1.0"`.
    pub reference: String,
    pub pull: ImagePull,
}

/// Where the plane stands with a container's image. A change is sent as a
/// [`PlaneToNode::PodDelta`] upsert of the pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImagePull {
    /// Not resolved by the plane: the node's runtime knows the image by its
    /// reference (built-in images; nodes without [`Capabilities::WASM`]).
    Unresolved,
    /// Being pulled and compiled (`ContainerCreating`).
    Pulling,
    /// Ready to run.
    Ready {
        /// `"sha256:<hex>"` of the compiled artifact the node must load.
        artifact_digest: String,
        artifact_size: u64,
        /// The pulled image by digest, as `status.containerStatuses[].imageID`
        /// shows it: `"<registry>/<repository>@sha256:<manifest digest>"`.
        image_id: String,
    },
    /// The pull failed: the container waits with this `reason`
    /// (`ErrImagePull`, `ImagePullBackOff`, `InvalidImageName`,
    /// `ErrImageNeverPull`) and `message`; the plane retries with back-off.
    Failed { reason: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub name: String,
    pub value: EnvValue,
}

/// Where an environment variable's value comes from. References are resolved
/// on the node at container start (as the kubelet does), from
/// [`PlaneToNode::ConfigData`] and the pod's own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvValue {
    /// A literal value (with `$(VAR)` references already expanded by the plane).
    Literal(String),
    ConfigMapKey {
        name: String,
        key: String,
        optional: bool,
    },
    SecretKey {
        name: String,
        key: String,
        optional: bool,
    },
    /// `fieldRef`: the downward API.
    Field(DownwardField),
    /// `resourceFieldRef`: a container's request/limit divided by `divisor`
    /// (in the resource's integer unit: millicores or bytes), rounded up.
    Resource {
        container: String,
        resource: ResourceField,
        divisor: u64,
    },
}

/// `envFrom`: all keys of a ConfigMap or Secret, with an optional prefix.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvFromSource {
    pub kind: ConfigKind,
    pub name: String,
    pub prefix: String,
    pub optional: bool,
}

/// Downward API fields (`fieldRef.fieldPath`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DownwardField {
    Name,
    Namespace,
    Uid,
    /// `metadata.labels['key']`
    Label(String),
    /// `metadata.annotations['key']`
    Annotation(String),
    /// All labels / annotations as `key="value"` lines (volumes only).
    Labels,
    Annotations,
    NodeName,
    ServiceAccountName,
    HostIP,
    PodIP,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ResourceField {
    RequestsCpu,
    LimitsCpu,
    RequestsMemory,
    LimitsMemory,
    RequestsEphemeralStorage,
    LimitsEphemeralStorage,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub container_port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
    Sctp,
}

/// Requests and limits; `None` = not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceRequirements {
    pub requests: ResourceList,
    pub limits: ResourceList,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ResourceList {
    pub cpu_millis: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub ephemeral_storage_bytes: Option<u64>,
}

/// A probe with Kubernetes' timing fields (defaults applied by the plane:
/// period 10 s, timeout 1 s, success 1, failure 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    pub handler: ProbeHandler,
    pub initial_delay_secs: u32,
    pub period_secs: u32,
    pub timeout_secs: u32,
    pub success_threshold: u32,
    pub failure_threshold: u32,
    /// Probe-level `terminationGracePeriodSeconds` (liveness/startup kills).
    pub termination_grace_period_secs: Option<u64>,
}

/// Probe actions against the pod's own address (no `exec`: there is no shell).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeHandler {
    TcpSocket {
        port: u16,
    },
    HttpGet {
        port: u16,
        path: String,
        scheme: HttpScheme,
        headers: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HttpScheme {
    #[default]
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
    pub read_only: bool,
    pub sub_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub source: VolumeSource,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum VolumeSource {
    EmptyDir {
        memory: bool,
        size_limit_bytes: Option<u64>,
    },
    ConfigMap {
        name: String,
        items: Vec<KeyToPath>,
        optional: bool,
        default_mode: u32,
    },
    Secret {
        name: String,
        items: Vec<KeyToPath>,
        optional: bool,
        default_mode: u32,
    },
    DownwardApi {
        items: Vec<DownwardApiFile>,
        default_mode: u32,
    },
}

/// `items`: project `key` to `path`; empty `items` projects every key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyToPath {
    pub key: String,
    pub path: String,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownwardApiFile {
    pub path: String,
    pub field: DownwardField,
}

// ---------------------------------------------------------------------------
// ConfigMaps and Secrets
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ConfigKind {
    ConfigMap,
    Secret,
}

/// A ConfigMap (`data` as UTF-8 bytes + `binaryData`) or Secret (decoded
/// `data`), keys sorted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigObject {
    pub kind: ConfigKind,
    pub namespace: String,
    pub name: String,
    pub resource_version: String,
    pub data: Vec<(String, Vec<u8>)>,
}

// ---------------------------------------------------------------------------
// Pod status
// ---------------------------------------------------------------------------

/// A pod's `status` as the kubelet computes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    pub uid: PodUid,
    pub namespace: String,
    pub name: String,
    pub phase: PodPhase,
    pub conditions: Vec<PodCondition>,
    pub init_container_statuses: Vec<ContainerStatus>,
    pub container_statuses: Vec<ContainerStatus>,
    pub pod_ip: Option<String>,
    pub host_ip: Option<String>,
    pub start_time: Option<UnixMillis>,
    /// Pod-level reason/message (e.g. `"DeadlineExceeded"`).
    pub reason: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PodPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodCondition {
    pub kind: PodConditionType,
    pub status: ConditionStatus,
    /// e.g. `"ContainersNotReady"`, `"PodCompleted"`.
    pub reason: Option<String>,
    pub message: Option<String>,
    pub last_transition: UnixMillis,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodConditionType {
    PodScheduled,
    Initialized,
    ContainersReady,
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerStatus {
    pub name: String,
    pub state: ContainerState,
    /// The previous termination, if the container restarted.
    pub last_state: Option<ContainerState>,
    pub ready: bool,
    /// `started`: the startup probe passed (or there is none) and it runs.
    pub started: bool,
    pub restart_count: u32,
    pub image: String,
    pub image_id: String,
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    /// e.g. `"ContainerCreating"`, `"CrashLoopBackOff"`, `"PodInitializing"`,
    /// `"CreateContainerConfigError"`.
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: UnixMillis,
    },
    /// `reason`: `"Completed"` (exit 0), `"Error"`, `"OOMKilled"`, …
    Terminated {
        exit_code: i32,
        reason: String,
        message: Option<String>,
        started_at: Option<UnixMillis>,
        finished_at: UnixMillis,
    },
}

// ---------------------------------------------------------------------------
// Events and logs
// ---------------------------------------------------------------------------

/// A Kubernetes Event (`core/v1`), deduplicated on the node by
/// (object, reason, message) with a count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub object: ObjectRef,
    pub kind: EventType,
    /// e.g. `"Pulled"`, `"Started"`, `"Killing"`, `"BackOff"`, `"Unhealthy"`.
    pub reason: String,
    pub message: String,
    pub count: u32,
    pub first_timestamp: UnixMillis,
    pub last_timestamp: UnixMillis,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObjectRef {
    Node {
        name: String,
    },
    /// `field_path` e.g. `"spec.containers{web}"`.
    Pod {
        namespace: String,
        name: String,
        uid: PodUid,
        field_path: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    Normal,
    Warning,
}

/// `kubectl logs` options the node implements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRequest {
    pub stream: StreamId,
    pub pod_uid: PodUid,
    pub container: String,
    /// `--follow`: keep streaming until the container ends or `LogCancel`.
    pub follow: bool,
    /// `--tail`: start with the last N lines (`None` = all retained).
    pub tail_lines: Option<u32>,
    /// `--since`/`--since-time`, as a wall-clock lower bound.
    pub since: Option<UnixMillis>,
    /// `--limit-bytes`.
    pub limit_bytes: Option<u64>,
    /// `--timestamps`: prefix lines with RFC 3339 times.
    pub timestamps: bool,
    /// `--previous`: the last terminated instance.
    pub previous: bool,
}

// ---------------------------------------------------------------------------
// Services and endpoints (v3)
// ---------------------------------------------------------------------------

/// A Service with its endpoints, as a node's proxy and DNS need it: the
/// Service's spec and all its EndpointSlices, translated by the plane.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub namespace: String,
    pub name: String,
    pub kind: ServiceKind,
    /// `spec.clusterIPs` (IPv4 and IPv6 as written); empty when headless
    /// or ExternalName.
    pub cluster_ips: Vec<String>,
    /// `clusterIP: None`: DNS answers the endpoints' addresses.
    pub headless: bool,
    pub ports: Vec<ServicePort>,
    /// `sessionAffinity: ClientIP` with its `timeoutSeconds` (kube's
    /// default 10800 applied by the plane); `None` = no affinity.
    pub affinity_timeout_secs: Option<u32>,
    /// `internalTrafficPolicy: Local`.
    pub internal_local: bool,
    /// `externalTrafficPolicy: Local` (node ports).
    pub external_local: bool,
    /// `spec.externalName` of an ExternalName Service.
    pub external_name: Option<String>,
    /// One entry per EndpointSlice.
    pub slices: Vec<EndpointSet>,
}

/// A Service's name, for removals.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ServiceKind {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
    ExternalName,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// Empty for a Service's single unnamed port.
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
    pub node_port: Option<u16>,
    /// Used when no EndpointSlice port of this name exists (kube resolves
    /// named target ports per pod into the slices' ports).
    pub target_port: TargetPort,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    Number(u16),
    Name(String),
}

/// One EndpointSlice: its ports (resolved target ports, named like the
/// Service's ports) and endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointSet {
    pub ports: Vec<EndpointPort>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointPort {
    pub name: String,
    pub protocol: Protocol,
    pub port: u16,
}

/// An EndpointSlice endpoint with its conditions (unset `ready`/`serving`
/// already defaulted to true by the plane, as kube reads them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub addresses: Vec<String>,
    pub node_name: Option<String>,
    pub hostname: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
    /// `hints.forNodes` (trafficDistribution: PreferSameNode).
    pub for_nodes: Vec<String>,
}

// ---------------------------------------------------------------------------
// Resource usage (v5)
// ---------------------------------------------------------------------------

/// What the node and its running containers have used, read at `timestamp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub timestamp: UnixMillis,
    pub node: NodeUsage,
    /// Pods with at least one running container.
    pub pods: Vec<PodUsage>,
    /// The figures are made up by a simulated runtime (hollow nodes), not
    /// measured.
    pub simulated: bool,
}

/// The whole node's use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeUsage {
    /// CPU time spent not idle since boot, all CPUs.
    pub cpu_ns: u64,
    /// Memory in use now (the kernel's heap, containers included).
    pub memory_working_set_bytes: u64,
    /// The node's network interface since boot.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub net_rx_packets: u64,
    pub net_tx_packets: u64,
    /// Bytes held in containers' log buffers now.
    pub log_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodUsage {
    pub uid: PodUid,
    pub namespace: String,
    pub name: String,
    pub containers: Vec<ContainerUsage>,
}

/// One running container instance. Counters start at zero with each
/// instance: a changed `started_at` means a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerUsage {
    pub name: String,
    pub started_at: UnixMillis,
    /// CPU time the instance has run.
    pub cpu_ns: u64,
    /// Memory charged to its limit now (linear memories, tables,
    /// descriptors, sockets).
    pub memory_working_set_bytes: u64,
    /// Bytes held in its log buffer now.
    pub log_bytes: u64,
}

// ---------------------------------------------------------------------------
// NetworkPolicy (v4)
// ---------------------------------------------------------------------------

/// The NetworkPolicy verdicts for one of the node's pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPolicy {
    pub pod_uid: PodUid,
    /// `None`: no policy isolates the pod for ingress. `Some(rules)`: only
    /// what one of the rules allows may connect to it (none: default deny).
    pub ingress: Option<Vec<PolicyRule>>,
    /// The same for the pod's own connections and datagrams.
    pub egress: Option<Vec<PolicyRule>>,
}

/// Peers × ports: allows traffic with a peer in `peers` on a port in
/// `ports` (the pod's port for ingress, the peer's for egress).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRule {
    /// `None`: any peer.
    pub peers: Option<Vec<IpBlock>>,
    /// `None`: any port and protocol.
    pub ports: Option<Vec<PortRange>>,
}

/// An IPv4 prefix with holes (`ipBlock`; a selected pod is a /32).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpBlock {
    pub cidr: Cidr,
    pub except: Vec<Cidr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cidr {
    pub addr: [u8; 4],
    /// 0..=32.
    pub prefix: u8,
}

/// Ports `first..=last` of `protocol` (a single port: `first == last`;
/// every port: `0..=65535`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRange {
    pub protocol: Protocol,
    pub first: u16,
    pub last: u16,
}

#[cfg(test)]
mod tests;
