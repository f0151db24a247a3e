//! Replication with openraft: the store's `Command`s are the Raft log's
//! entries. `log` keeps the log in its own redb file, `sm` applies
//! committed entries to the store file. Peers talk through a [`Transport`]
//! the embedding process provides (the control plane's is HTTPS with
//! client certificates); every message is postcard bytes, so no openraft
//! type crosses this crate's API.

mod log;
mod sm;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::watch::WatchReceiver as _;
use openraft::errors::{
    NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftMetrics, ReadPolicy, ServerState};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Command, CommandResult, Error, Result};

pub(crate) use log::LogStore;
pub(crate) use sm::{Applied, Leases, StateMachine, reset_leases};

openraft::declare_raft_types!(
    pub(crate) TypeConfig:
        D = Command,
        R = std::result::Result<CommandResult, RemoteError>,
        Node = BasicNode,
);

pub(crate) type Raft = openraft::Raft<TypeConfig, StateMachine>;
pub(crate) type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub(crate) type Vote = <TypeConfig as openraft::RaftTypeConfig>::Vote;
pub(crate) type Entry = <TypeConfig as openraft::RaftTypeConfig>::Entry;
pub(crate) type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
pub(crate) type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;

/// A member's id in the cluster.
pub type MemberId = u64;

/// A command's failure as it crosses the network (the store's
/// [`Error`] carries I/O sources that do not serialize).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RemoteError {
    Compacted {
        requested: u64,
        compacted: u64,
    },
    FutureRevision {
        requested: u64,
        current: u64,
    },
    LeaseNotFound(u64),
    InvalidArgument(String),
    NoSpace {
        stored: u64,
        quota: u64,
    },
    Unavailable(String),
    Storage(String),
    /// The answer to an entry that carried no command.
    NoCommand,
}

impl From<Error> for RemoteError {
    fn from(e: Error) -> Self {
        match e {
            Error::Compacted {
                requested,
                compacted,
            } => RemoteError::Compacted {
                requested,
                compacted,
            },
            Error::FutureRevision { requested, current } => {
                RemoteError::FutureRevision { requested, current }
            }
            Error::LeaseNotFound(id) => RemoteError::LeaseNotFound(id),
            Error::InvalidArgument(m) => RemoteError::InvalidArgument(m),
            Error::NoSpace { stored, quota } => RemoteError::NoSpace { stored, quota },
            Error::Unavailable(m) => RemoteError::Unavailable(m),
            other => RemoteError::Storage(other.to_string()),
        }
    }
}

impl From<RemoteError> for Error {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::Compacted {
                requested,
                compacted,
            } => Error::Compacted {
                requested,
                compacted,
            },
            RemoteError::FutureRevision { requested, current } => {
                Error::FutureRevision { requested, current }
            }
            RemoteError::LeaseNotFound(id) => Error::LeaseNotFound(id),
            RemoteError::InvalidArgument(m) => Error::InvalidArgument(m),
            RemoteError::NoSpace { stored, quota } => Error::NoSpace { stored, quota },
            RemoteError::Unavailable(m) => Error::Unavailable(m),
            RemoteError::Storage(m) => Error::Storage(m),
            RemoteError::NoCommand => Error::Storage("entry carried no command".into()),
        }
    }
}

/// The peer calls, each a request body and an answer body (postcard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rpc {
    Append,
    Vote,
    Snapshot,
    /// A write forwarded to the leader.
    Write,
    /// The leader's read index, for a linearizable read on a follower.
    ReadIndex,
    /// Add a member (learner, then voter) on the leader.
    AddMember,
    /// Remove a member on the leader.
    RemoveMember,
}

impl Rpc {
    const ALL: [Rpc; 7] = [
        Rpc::Append,
        Rpc::Vote,
        Rpc::Snapshot,
        Rpc::Write,
        Rpc::ReadIndex,
        Rpc::AddMember,
        Rpc::RemoveMember,
    ];

    /// The call's name (a URL path segment).
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Append => "append",
            Rpc::Vote => "vote",
            Rpc::Snapshot => "snapshot",
            Rpc::Write => "write",
            Rpc::ReadIndex => "read-index",
            Rpc::AddMember => "add-member",
            Rpc::RemoveMember => "remove-member",
        }
    }

    pub fn from_name(name: &str) -> Option<Rpc> {
        Rpc::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// Why a peer call failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Nothing was delivered (connection refused, no route): safe to retry.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The call may or may not have been delivered.
    #[error("peer call failed: {0}")]
    Failed(String),
}

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How members reach each other; `addr` is a member's advertised address.
pub trait Transport: Send + Sync + 'static {
    fn call(
        &self,
        addr: &str,
        rpc: Rpc,
        body: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<std::result::Result<Vec<u8>, TransportError>>;
}

/// A replicated store's settings.
#[derive(Clone, Debug)]
pub struct RaftOptions {
    pub id: MemberId,
    /// The address other members reach this one at (its API URL).
    pub addr: String,
    /// The Raft log file (kept apart from the store file).
    pub log_path: PathBuf,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// A snapshot after this many applied entries; the log before it is
    /// purged.
    pub snapshot_every: u64,
    /// The longest a write or a linearizable read waits for a leader and a
    /// quorum before it fails with [`Error::Unavailable`].
    pub quorum_timeout: Duration,
}

impl RaftOptions {
    pub fn new(id: MemberId, addr: String, log_path: PathBuf) -> RaftOptions {
        RaftOptions {
            id,
            addr,
            log_path,
            heartbeat: Duration::from_millis(150),
            // Not DESIGN's 1-2 s: openraft's leader lease is the election
            // timeout's maximum and a follower only votes once it ran out,
            // so failover takes about twice the maximum; 0.6-1.2 s keeps
            // the API writable within 2 s of losing the leader.
            election_timeout: (Duration::from_millis(600), Duration::from_millis(1200)),
            snapshot_every: 10_000,
            quorum_timeout: Duration::from_secs(5),
        }
    }
}

/// One member as `member list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: MemberId,
    pub addr: String,
    pub voter: bool,
    pub leader: bool,
}

/// The cluster as this member sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: MemberId,
    pub term: u64,
    pub leader: Option<MemberId>,
    pub members: Vec<Member>,
    pub applied_index: Option<u64>,
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("peer messages encode")
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    postcard::from_bytes(b).map_err(|e| Error::InvalidArgument(format!("bad peer message: {e}")))
}

// ---- the openraft network over the transport ----

#[derive(Clone)]
pub(crate) struct Net(pub(crate) Arc<dyn Transport>);

pub(crate) struct Peer {
    addr: String,
    transport: Arc<dyn Transport>,
}

impl RaftNetworkFactory<TypeConfig> for Net {
    type Network = Peer;

    async fn new_client(&mut self, _target: MemberId, node: &BasicNode) -> Peer {
        Peer {
            addr: node.addr.clone(),
            transport: self.0.clone(),
        }
    }
}

impl Peer {
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        rpc: Rpc,
        req: &Req,
        timeout: Duration,
    ) -> std::result::Result<Resp, RPCError<TypeConfig>> {
        let body = self
            .transport
            .call(&self.addr, rpc, encode(req), timeout)
            .await
            .map_err(|e| match e {
                TransportError::Unreachable(_) => RPCError::Unreachable(Unreachable::new(&e)),
                TransportError::Failed(_) => RPCError::Network(NetworkError::new(&e)),
            })?;
        let r: std::result::Result<Resp, RaftError<TypeConfig>> =
            postcard::from_bytes(&body).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        r.map_err(|e| RPCError::Network(NetworkError::new(&e)))
    }
}

impl RaftNetworkV2<TypeConfig> for Peer {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::Append, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> std::result::Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: sm::Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> std::result::Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let req = (vote, snapshot.meta, snapshot.snapshot);
        // A snapshot takes longer than a heartbeat: give it its own time.
        let timeout = option.hard_ttl().max(Duration::from_secs(60));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = self.call(Rpc::Snapshot, &req, timeout) => Ok(r?),
        }
    }
}

// ---- the replicated side of a Store ----

pub(crate) struct Replica {
    pub(crate) raft: Raft,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) id: MemberId,
    pub(crate) addr: String,
    pub(crate) quorum_timeout: Duration,
}

pub(crate) fn config(o: &RaftOptions) -> Result<openraft::Config> {
    let ms = |d: Duration| d.as_millis() as u64;
    openraft::Config {
        cluster_name: "skiff".into(),
        heartbeat_interval: ms(o.heartbeat),
        election_timeout_min: ms(o.election_timeout.0),
        election_timeout_max: ms(o.election_timeout.1),
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(o.snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        ..Default::default()
    }
    .validate()
    .map_err(|e| Error::InvalidArgument(format!("Raft settings: {e}")))
}

fn unavailable(what: &str, t: Duration) -> Error {
    Error::Unavailable(format!(
        "{what}: no leader with a quorum answered within {}s",
        t.as_secs_f32()
    ))
}

impl Replica {
    fn leader_addr(&self, f: &openraft::errors::ForwardToLeader<TypeConfig>) -> Option<String> {
        match (&f.leader_id, &f.leader_node) {
            (Some(id), Some(node)) if *id != self.id => Some(node.addr.clone()),
            _ => None,
        }
    }

    /// A write: committed through Raft here if this member leads, else
    /// forwarded to the leader; retried only while nothing was delivered.
    pub(crate) async fn write(&self, cmd: Command) -> Result<CommandResult> {
        let t = self.quorum_timeout;
        tokio::time::timeout(t, self.write_loop(cmd, Instant::now() + t))
            .await
            .unwrap_or_else(|_| Err(unavailable("write", t)))
    }

    async fn write_loop(&self, cmd: Command, deadline: Instant) -> Result<CommandResult> {
        loop {
            let f = match self.raft.client_write(cmd.clone()).await {
                Ok(r) => return r.data.map_err(Error::from),
                Err(RaftError::APIError(openraft::errors::ClientWriteError::ForwardToLeader(
                    f,
                ))) => f,
                Err(e) => return Err(Error::Unavailable(format!("write: {e}"))),
            };
            if let Some(addr) = self.leader_addr(&f) {
                let left = deadline.saturating_duration_since(Instant::now());
                match self
                    .transport
                    .call(&addr, Rpc::Write, encode(&cmd), left)
                    .await
                {
                    Ok(b) => match decode::<std::result::Result<CommandResult, RemoteError>>(&b)? {
                        // That member stopped leading before taking it.
                        Err(RemoteError::Unavailable(_)) => {}
                        r => return r.map_err(Error::from),
                    },
                    Err(TransportError::Unreachable(_)) => {}
                    Err(e) => {
                        return Err(Error::Unavailable(format!(
                            "write forwarded to {addr}: {e}"
                        )));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// [`Replica::read_barrier`] behind a `dyn` future (see `Store::submit`).
    pub(crate) fn read_barrier_boxed(self: &Arc<Self>) -> BoxFuture<Result<()>> {
        let r = self.clone();
        Box::pin(async move { r.read_barrier().await })
    }

    /// Waits until this member has applied everything committed before
    /// the call (ReadIndex, on the leader or asked of it).
    pub(crate) async fn read_barrier(&self) -> Result<()> {
        let t = self.quorum_timeout;
        tokio::time::timeout(t, self.read_loop())
            .await
            .unwrap_or_else(|_| Err(unavailable("linearizable read", t)))
    }

    async fn read_loop(&self) -> Result<()> {
        loop {
            let f = match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
                Ok(_) => return Ok(()),
                Err(RaftError::APIError(
                    openraft::errors::LinearizableReadError::ForwardToLeader(f),
                )) => f,
                Err(RaftError::APIError(_)) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(e) => return Err(Error::Unavailable(format!("read: {e}"))),
            };
            if let Some(addr) = self.leader_addr(&f)
                && let Ok(b) = self
                    .transport
                    .call(&addr, Rpc::ReadIndex, Vec::new(), self.quorum_timeout)
                    .await
                && let Ok(index) = decode::<std::result::Result<u64, RemoteError>>(&b)?
            {
                self.raft
                    .wait(None)
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map_err(|e| Error::Unavailable(format!("read: {e}")))?;
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Serves a peer's call.
    pub(crate) async fn serve(&self, rpc: Rpc, body: &[u8]) -> Result<Vec<u8>> {
        Ok(match rpc {
            Rpc::Append => encode(&self.raft.append_entries(decode(body)?).await),
            Rpc::Vote => encode(&self.raft.vote(decode(body)?).await),
            Rpc::Snapshot => {
                let (vote, meta, data): (Vote, SnapshotMeta, Vec<u8>) = decode(body)?;
                let r = self
                    .raft
                    .install_full_snapshot(
                        vote,
                        sm::Snapshot {
                            meta,
                            snapshot: data,
                        },
                    )
                    .await
                    .map_err(RaftError::<TypeConfig>::Fatal);
                encode(&r)
            }
            Rpc::Write => {
                let cmd: Command = decode(body)?;
                let r = match self.raft.client_write(cmd).await {
                    Ok(r) => r.data,
                    Err(e) => Err(RemoteError::Unavailable(e.to_string())),
                };
                encode(&r)
            }
            Rpc::ReadIndex => {
                let r = match self.raft.get_read_linearizer(ReadPolicy::ReadIndex).await {
                    Ok(l) => Ok(l.read_log_id().index()),
                    Err(e) => Err(RemoteError::Unavailable(e.to_string())),
                };
                encode(&r)
            }
            Rpc::AddMember => {
                let (id, addr): (MemberId, String) = decode(body)?;
                encode(
                    &self
                        .add_member_here(id, addr)
                        .await
                        .map_err(RemoteError::from),
                )
            }
            Rpc::RemoveMember => {
                let id: MemberId = decode(body)?;
                encode(&self.remove_member_here(id).await.map_err(RemoteError::from))
            }
        })
    }

    /// Runs a membership change on the leader (here, or forwarded).
    async fn on_leader(&self, rpc: Rpc, body: Vec<u8>) -> Result<()> {
        let t = self.quorum_timeout * 6;
        let deadline = Instant::now() + t;
        loop {
            let leader = self.raft.current_leader().await;
            let addr = leader.and_then(|l| {
                self.metrics()
                    .membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| n.addr.clone())
            });
            if let Some(addr) = addr {
                match self.transport.call(&addr, rpc, body.clone(), t).await {
                    Ok(b) => match decode::<std::result::Result<(), RemoteError>>(&b)? {
                        Err(RemoteError::Unavailable(_)) if Instant::now() < deadline => {}
                        r => return r.map_err(Error::from),
                    },
                    Err(TransportError::Unreachable(_)) if Instant::now() < deadline => {}
                    Err(e) => return Err(Error::Unavailable(e.to_string())),
                }
            } else if Instant::now() >= deadline {
                return Err(unavailable("membership change", t));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub(crate) async fn add_member(&self, id: MemberId, addr: String) -> Result<()> {
        self.on_leader(Rpc::AddMember, encode(&(id, addr))).await
    }

    pub(crate) async fn remove_member(&self, id: MemberId) -> Result<()> {
        self.on_leader(Rpc::RemoveMember, encode(&id)).await
    }

    fn not_leader(&self) -> Option<Error> {
        (!self.raft.is_leader()).then(|| Error::Unavailable("not the leader".into()))
    }

    /// Learner first (it catches up, from a snapshot if the log was
    /// purged), then voter.
    async fn add_member_here(&self, id: MemberId, addr: String) -> Result<()> {
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        let m =
            |e: RaftError<TypeConfig, _>| Error::Unavailable(format!("adding member {id}: {e}"));
        self.raft
            .add_learner(id, BasicNode { addr }, true)
            .await
            .map_err(m)?;
        self.raft
            .change_membership(openraft::ChangeMembers::AddVoterIds([id].into()), false)
            .await
            .map_err(m)?;
        Ok(())
    }

    async fn remove_member_here(&self, id: MemberId) -> Result<()> {
        if let Some(e) = self.not_leader() {
            return Err(e);
        }
        let metrics = self.metrics();
        let membership = metrics.membership_config.membership();
        let voters: Vec<MemberId> = membership.voter_ids().collect();
        let is_voter = voters.contains(&id);
        if membership.get_node(&id).is_none() {
            return Err(Error::InvalidArgument(format!("{id:x} is not a member")));
        }
        if is_voter && voters.len() == 1 {
            return Err(Error::InvalidArgument(format!(
                "{id:x} is the last voter: removing it would leave no cluster"
            )));
        }
        let m = |e: RaftError<TypeConfig, _>| {
            Error::Unavailable(format!("removing member {id:x}: {e}"))
        };
        // `retain: false` drops a removed voter from the nodes too.
        let change = if is_voter {
            openraft::ChangeMembers::RemoveVoters([id].into())
        } else {
            openraft::ChangeMembers::RemoveNodes([id].into())
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(m)?;
        Ok(())
    }

    pub(crate) fn cluster(&self) -> Cluster {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<MemberId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, n)| Member {
                id: *id,
                addr: n.addr.clone(),
                voter: voters.contains(id),
                leader: m.current_leader == Some(*id),
            })
            .collect();
        Cluster {
            id: self.id,
            term: m.current_term,
            leader: m.current_leader,
            members,
            applied_index: m.last_applied.map(|l| l.index()),
        }
    }

    /// Whether this member is in the cluster's membership at all (a
    /// removed member is not, once it learned of its removal).
    pub(crate) fn removed(&self) -> bool {
        let m = self.metrics();
        m.membership_config.log_id().is_some()
            && m.membership_config
                .membership()
                .get_node(&self.id)
                .is_none()
    }

    pub(crate) fn is_leader(&self) -> bool {
        matches!(self.metrics().state, ServerState::Leader)
    }

    fn metrics(&self) -> RaftMetrics<TypeConfig> {
        self.raft.metrics().borrow_watched().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::StorageError;
    use openraft::testing::log::{StoreBuilder, Suite};

    /// A fresh store file and log file per case.
    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
        async fn build(
            &self,
        ) -> std::result::Result<
            (tempfile::TempDir, LogStore, StateMachine),
            StorageError<TypeConfig>,
        > {
            let dir = tempfile::tempdir().unwrap();
            let store = crate::Store::open(dir.path().join("s.redb"), crate::Options::default())
                .await
                .unwrap();
            let log = LogStore::open(&dir.path().join("raft-log.redb")).unwrap();
            let inner = &store.inner;
            let sm = StateMachine {
                shared: inner.shared.clone(),
                tx: inner.tx.clone(),
                leases: inner.leases.clone(),
                applied: Applied::default(),
                dir: dir.path().to_path_buf(),
            };
            // The writer lives on while `sm` holds its channel.
            drop(store);
            Ok((dir, log, sm))
        }
    }

    /// openraft's storage conformance suite on our log and state machine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn openraft_storage_suite() {
        Suite::test_all(Builder).await.unwrap();
    }

    #[test]
    fn peer_messages_round_trip() {
        for r in Rpc::ALL {
            assert_eq!(Rpc::from_name(r.name()), Some(r));
        }
        let e: std::result::Result<CommandResult, RemoteError> =
            Err(RemoteError::Unavailable("x".into()));
        let b = encode(&e);
        assert!(matches!(
            decode::<std::result::Result<CommandResult, RemoteError>>(&b).unwrap(),
            Err(RemoteError::Unavailable(m)) if m == "x"
        ));
    }
}
