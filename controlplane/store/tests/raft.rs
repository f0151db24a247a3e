//! Replicated stores in one process over an in-memory transport: quorum
//! writes from any member, linearizable reads, failover, quorum loss,
//! catch-up from a snapshot, and leader-only lease expiry.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skiff_store::{
    BoxFuture, Compare, Error, KeySet, Op, Options, RaftOptions, RangeRequest, Rpc, Store,
    Transport, TransportError, Txn, WatchRequest,
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
        // A stopped member's files are released once its last tasks end.
        let t = Instant::now();
        let store = loop {
            match Store::open_replicated(
                dir.join("store.redb"),
                opts.clone(),
                ro.clone(),
                link.clone(),
            )
            .await
            {
                Ok(s) => break s,
                Err(e) if t.elapsed() < Duration::from_secs(10) => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("restarting m{id}: {e}"),
            }
        };
        self.net.members.lock().unwrap().insert(addr, store.clone());
        store
    }

    fn down(&self, id: u64) {
        self.net.down.lock().unwrap().insert(format!("m{id}"));
    }

    fn up(&self, id: u64) {
        self.net.down.lock().unwrap().remove(&format!("m{id}"));
    }

    /// A live member other than those marked down, by rotation.
    fn pick(&self, n: usize) -> Option<Store> {
        let down = self.net.down.lock().unwrap().clone();
        let members = self.net.members.lock().unwrap();
        let mut live: Vec<(&String, &Store)> =
            members.iter().filter(|(a, _)| !down.contains(*a)).collect();
        live.sort_by_key(|(a, _)| (*a).clone());
        (!live.is_empty()).then(|| live[n % live.len()].1.clone())
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

/// What a client was told: `value` is at `key` as of `revision`.
#[derive(Clone, Debug)]
struct Acked {
    key: String,
    value: String,
    revision: u64,
}

/// The "no acknowledged write lost" check (etcd's robustness idea without
/// a linearizability search: every acked write has a unique revision).
/// Eight clients do unique puts, conditional updates and linearizable
/// reads against any live member while the leader is stopped (its Raft
/// and store shut down, its network cut) and restarted five times.
/// Afterwards every acked write is at its revision on every member, the
/// members' histories agree revision by revision, no client's reads went
/// back in time, and each member's watch stream is ordered and gap-free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_write_lost_across_leader_failures() {
    let c = Arc::new(Cluster::new());
    let mut stores = vec![c.start(1).await, c.start(2).await, c.start(3).await];
    stores[0].initialize_cluster().await.unwrap();
    leader_of(&[&stores[0]], Duration::from_secs(5)).await;
    stores[0].add_member(2, "m2".into()).await.unwrap();
    stores[0].add_member(3, "m3".into()).await.unwrap();

    // Live watch streams, one per member start, each until it is cut off.
    let streams: Arc<Mutex<Vec<Vec<u64>>>> = Arc::default();
    let watch = |s: &Store| {
        let (s, streams) = (s.clone(), streams.clone());
        tokio::spawn(async move {
            let Ok(mut w) = s.watch(WatchRequest::new(KeySet::prefix("/chk/"), 0)).await else {
                return;
            };
            drop(s);
            let mut revs = Vec::new();
            while let Ok(events) = w.next().await {
                revs.extend(events.iter().map(|e| e.kv.mod_revision));
            }
            streams.lock().unwrap().push(revs);
        });
    };
    for s in &stores {
        watch(s);
    }
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    // (start, end) of every acknowledged write.
    let ack_times: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for client in 0..8usize {
        let (c, acked, ack_times, stop) =
            (c.clone(), acked.clone(), ack_times.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = 0u64; // highest revision this client has read
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let Some(s) = c.pick(client + n) else {
                    continue;
                };
                let began = Instant::now();
                let ack = |key: String, value: String, revision: u64| {
                    acked.lock().unwrap().push(Acked {
                        key,
                        value,
                        revision,
                    });
                    ack_times.lock().unwrap().push((began, Instant::now()));
                };
                match n % 3 {
                    // A unique value under a unique key.
                    0 => {
                        let (k, v) = (format!("/chk/c{client}/{n}"), format!("v{client}-{n}"));
                        if let Ok(r) = s.put(k.clone(), v.clone()).await {
                            ack(k, v, r.revision);
                        }
                    }
                    // A conditional update of a key the clients share.
                    1 => {
                        let k = format!("/chk/shared{}", client % 2);
                        let Ok(cur) = s.range(RangeRequest::key(k.clone())).await else {
                            continue;
                        };
                        assert!(
                            cur.revision >= seen,
                            "read went back: {} < {seen}",
                            cur.revision
                        );
                        seen = cur.revision;
                        let at = cur.kvs.first().map_or(0, |kv| kv.mod_revision);
                        let v = format!("cas{client}-{n}");
                        let txn = Txn {
                            compare: vec![Compare::mod_revision(k.clone(), at)],
                            success: vec![Op::put(k.clone(), v.clone())],
                            failure: vec![],
                        };
                        if let Ok(r) = s.txn(txn).await
                            && r.succeeded
                        {
                            ack(k, v, r.revision);
                        }
                    }
                    // A linearizable read: never older than what this
                    // client saw before.
                    _ => {
                        if let Ok(r) = s.range(RangeRequest::prefix("/chk/").with_limit(1)).await {
                            assert!(
                                r.revision >= seen,
                                "read went back: {} < {seen}",
                                r.revision
                            );
                            seen = r.revision;
                        }
                    }
                }
            }
        }));
    }

    // Stop the leader five times; time the first acknowledged write after.
    let mut failovers = Vec::new();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let refs: Vec<&Store> = stores.iter().collect();
        let l = leader_of(&refs, Duration::from_secs(10)).await as usize;
        c.down(l as u64);
        let killed = Instant::now();
        c.net.members.lock().unwrap().remove(&format!("m{l}"));
        let dead = stores.remove(l - 1);
        dead.close().await.unwrap();
        // The first write that began after the stop and was acknowledged.
        loop {
            let first = ack_times
                .lock()
                .unwrap()
                .iter()
                .filter(|(began, _)| *began > killed)
                .map(|(_, end)| *end)
                .min();
            if let Some(end) = first {
                failovers.push(end.duration_since(killed));
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(10),
                "no write after the kill"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        c.up(l as u64);
        stores.insert(l - 1, c.start(l as u64).await);
        watch(&stores[l - 1]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }
    failovers.sort();
    eprintln!("stop of the leader to the first acknowledged write: {failovers:?}");
    assert!(
        failovers.iter().all(|d| *d < Duration::from_secs(2)),
        "{failovers:?}"
    );

    // Every member has applied everything (a linearizable read each).
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    let mut revs: Vec<u64> = acked.iter().map(|a| a.revision).collect();
    revs.sort_unstable();
    revs.dedup();
    assert_eq!(revs.len(), acked.len(), "two acked writes share a revision");
    let mut histories = Vec::new();
    for s in &stores {
        let end = s
            .range(RangeRequest::prefix("/chk/"))
            .await
            .unwrap()
            .revision;
        for a in &acked {
            let r = s
                .range(RangeRequest::key(a.key.clone()).at_revision(a.revision))
                .await
                .unwrap();
            let kv = r.kvs.first().unwrap_or_else(|| panic!("{a:?} missing"));
            assert_eq!(
                (kv.value.as_ref(), kv.mod_revision),
                (a.value.as_bytes(), a.revision)
            );
        }
        // The whole history, from a watch from revision 1: ordered and
        // gap-free (each revision changed one /chk/ key), the same on
        // every member.
        let mut w = s
            .watch(WatchRequest::new(KeySet::prefix("/chk/"), 1))
            .await
            .unwrap();
        let mut events = Vec::new();
        while events
            .last()
            .is_none_or(|e: &skiff_store::Event| e.kv.mod_revision < end)
        {
            events.extend(w.next().await.unwrap());
        }
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.kv.mod_revision,
                i as u64 + 1,
                "watch out of order or with a gap"
            );
        }
        histories.push(events);
    }
    assert_eq!(histories[0], histories[1]);
    assert_eq!(histories[0], histories[2]);
    // The live streams (those cut off by a stop included) were ordered and
    // gap-free while it all happened.
    for s in &stores {
        s.clone().close().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let streams = streams.lock().unwrap().clone();
    assert!(streams.len() >= 3, "{} watch streams ended", streams.len());
    for revs in &streams {
        for pair in revs.windows(2) {
            assert_eq!(
                pair[1],
                pair[0] + 1,
                "live watch out of order or with a gap"
            );
        }
    }
}
