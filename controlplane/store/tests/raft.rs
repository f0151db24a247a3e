//! Replicated stores in one process over an in-memory transport: quorum
//! writes from any member, linearizable reads, failover, quorum loss,
//! catch-up from a snapshot, and leader-only lease expiry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_store::{
    BoxFuture, Error, KeySet, Options, RaftOptions, RangeRequest, Rpc, Store, Transport,
    TransportError, WatchRequest,
};

/// Members by address; a member marked down neither sends nor receives.
#[derive(Default)]
struct Net {
    members: Mutex<HashMap<String, Store>>,
    down: Mutex<HashSet<String>>,
}

struct Link {
    net: Arc<Net>,
    from: String,
}

impl Transport for Link {
    fn call(
        &self,
        addr: &str,
        rpc: Rpc,
        body: Vec<u8>,
        _timeout: Duration,
    ) -> BoxFuture<Result<Vec<u8>, TransportError>> {
        let down = self.net.down.lock().unwrap();
        let target = if down.contains(addr) || down.contains(&self.from) {
            None
        } else {
            self.net.members.lock().unwrap().get(addr).cloned()
        };
        let addr = addr.to_string();
        Box::pin(async move {
            let Some(store) = target else {
                return Err(TransportError::Unreachable(addr));
            };
            store
                .serve_peer(rpc, &body)
                .await
                .map_err(|e| TransportError::Failed(e.to_string()))
        })
    }
}

struct Cluster {
    net: Arc<Net>,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster {
            net: Arc::default(),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn start(&self, id: u64) -> Store {
        let addr = format!("m{id}");
        let dir = self.dir.path().join(&addr);
        std::fs::create_dir_all(&dir).unwrap();
        let mut ro = RaftOptions::new(id, addr.clone(), dir.join("raft-log.redb"));
        ro.heartbeat = Duration::from_millis(50);
        ro.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
        ro.snapshot_every = 20;
        ro.quorum_timeout = Duration::from_secs(2);
        let opts = Options {
            lease_check_interval: Duration::from_millis(50),
            ..Options::default()
        };
        let link = Arc::new(Link {
            net: self.net.clone(),
            from: addr.clone(),
        });
        let store = Store::open_replicated(dir.join("store.redb"), opts, ro, link)
            .await
            .unwrap();
        self.net.members.lock().unwrap().insert(addr, store.clone());
        store
    }

    fn down(&self, id: u64) {
        self.net.down.lock().unwrap().insert(format!("m{id}"));
    }

    fn up(&self, id: u64) {
        self.net.down.lock().unwrap().remove(&format!("m{id}"));
    }
}

async fn leader_of(stores: &[&Store], within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        for s in stores {
            let c = s.cluster().unwrap();
            if let Some(l) = c.leader
                && l == c.id
            {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn value(s: &Store, key: &str) -> Option<String> {
    s.get(key.to_string())
        .await
        .unwrap()
        .map(|kv| String::from_utf8(kv.value.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_fail_over_and_catch_up() {
    let c = Cluster::new();
    let s1 = c.start(1).await;
    let s2 = c.start(2).await;
    let s3 = c.start(3).await;
    s1.initialize_cluster().await.unwrap();
    leader_of(&[&s1], Duration::from_secs(5)).await;
    // Asked of a follower-to-be: forwarded to the leader.
    s1.add_member(2, "m2".into()).await.unwrap();
    s2.add_member(3, "m3".into()).await.unwrap();
    let cl = s3.cluster().unwrap();
    assert_eq!(cl.members.iter().filter(|m| m.voter).count(), 3, "{cl:?}");

    // A write on a follower commits through the leader; a current read on
    // another follower sees it at once (linearizable).
    let mut w = s3
        .watch(WatchRequest::new(KeySet::prefix("/k/"), 0))
        .await
        .unwrap();
    let put = s2.put("/k/a", "1").await.unwrap();
    assert_eq!(value(&s3, "/k/a").await.as_deref(), Some("1"));
    assert_eq!(value(&s1, "/k/a").await.as_deref(), Some("1"));
    let events = w.next().await.unwrap();
    assert_eq!(events[0].kv.mod_revision, put.revision);

    // The leader goes away: the others elect one and keep taking writes.
    let old = leader_of(&[&s1, &s2, &s3], Duration::from_secs(5)).await;
    c.down(old);
    let killed = Instant::now();
    let rest: Vec<&Store> = [&s1, &s2, &s3]
        .into_iter()
        .filter(|s| s.cluster().unwrap().id != old)
        .collect();
    let r = loop {
        match rest[0].put("/k/b", "2").await {
            Ok(r) => break r,
            Err(Error::Unavailable(_)) => assert!(killed.elapsed() < Duration::from_secs(10)),
            Err(e) => panic!("{e}"),
        }
    };
    assert!(r.revision > put.revision);
    assert_eq!(value(rest[1], "/k/b").await.as_deref(), Some("2"));

    // Two of three gone: writes fail with Unavailable within the bound.
    let second = rest[1].cluster().unwrap().id;
    c.down(second);
    let t = Instant::now();
    match rest[0].put("/k/c", "3").await {
        Err(Error::Unavailable(_)) => {}
        other => panic!("want Unavailable, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    // Healing: back with a quorum, writes go through again.
    c.up(second);
    c.up(old);
    let t = Instant::now();
    loop {
        match rest[0].put("/k/c", "3").await {
            Ok(_) => break,
            Err(Error::Unavailable(_)) if t.elapsed() < Duration::from_secs(10) => {}
            Err(e) => panic!("{e}"),
        }
    }

    // Enough writes for snapshots (every 20 entries) to purge the log: a
    // new member can only catch up from a snapshot.
    for i in 0..60 {
        s1.put(format!("/k/n{i:03}"), format!("{i}")).await.unwrap();
    }
    let s4 = c.start(4).await;
    s2.add_member(4, "m4".into()).await.unwrap();
    let want = s1.range(RangeRequest::prefix("/k/")).await.unwrap();
    let got = s4.range(RangeRequest::prefix("/k/")).await.unwrap();
    assert_eq!(got.kvs, want.kvs);
    assert!(s4.compacted_revision() <= want.revision);
    // Every member agrees on every revision's state.
    for s in [&s1, &s2, &s3, &s4] {
        for rev in [put.revision, r.revision] {
            let a = s1
                .range(RangeRequest::prefix("/k/").at_revision(rev))
                .await
                .unwrap();
            let b = s
                .range(RangeRequest::prefix("/k/").at_revision(rev))
                .await
                .unwrap();
            assert_eq!(a.kvs, b.kvs);
        }
    }

    // Removing members: never the last voter.
    let all = [&s1, &s2, &s3, &s4];
    let l = leader_of(&all, Duration::from_secs(5)).await;
    for id in [1, 2, 3, 4].into_iter().filter(|i| *i != l) {
        s1.remove_member(id).await.unwrap();
    }
    let leader = all[l as usize - 1];
    let cl = leader.cluster().unwrap();
    assert_eq!(cl.members.len(), 1, "{cl:?}");
    match leader.remove_member(l).await {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("last voter"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_on_the_leader_only() {
    let c = Cluster::new();
    let s1 = c.start(1).await;
    let s2 = c.start(2).await;
    s1.initialize_cluster().await.unwrap();
    leader_of(&[&s1], Duration::from_secs(5)).await;
    s1.add_member(2, "m2".into()).await.unwrap();
    let id = s2.lease_grant(0, 1).await.unwrap();
    s2.put_with_lease("/lease/x", "v", id).await.unwrap();
    // Keepalives count on the leader only.
    assert!(matches!(
        s2.lease_keepalive(id).await,
        Err(Error::Unavailable(_))
    ));
    let t = Instant::now();
    while value(&s2, "/lease/x").await.is_some() {
        assert!(t.elapsed() < Duration::from_secs(5), "lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(t.elapsed() >= Duration::from_millis(500));
    assert!(s1.leases().await.is_empty() && s2.leases().await.is_empty());
}
