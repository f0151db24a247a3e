//! Behaviour tests of the store: MVCC, txns, leases, watch, compaction,
//! snapshot/restore, corruption handling and a SIGKILL crash test.

use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command as Proc, Stdio};
use std::time::{Duration, Instant};

use skiff_store::*;

fn opts() -> Options {
    Options {
        auto_compaction: None,
        ..Options::default()
    }
}

async fn open(path: &Path) -> Store {
    Store::open(path, opts()).await.expect("open")
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

#[tokio::test]
async fn revisions_versions_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db")).await;
    assert_eq!(s.current_revision(), 0);
    let r = s.put("a", "1").await.unwrap();
    assert_eq!((r.revision, r.prev_kv), (1, None));
    let r = s.put("a", "2").await.unwrap();
    assert_eq!(r.revision, 2);
    assert_eq!(r.prev_kv.unwrap().value, b("1"));
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (1, 2, 2));
    let d = s.delete_range(KeySet::key("a")).await.unwrap();
    assert_eq!((d.revision, d.deleted), (3, 1));
    // Deleting nothing does not consume a revision.
    let d = s.delete_range(KeySet::key("a")).await.unwrap();
    assert_eq!((d.revision, d.deleted), (3, 0));
    s.put("a", "3").await.unwrap();
    let kv = s.get("a").await.unwrap().unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (4, 4, 1));
    assert_eq!(s.current_revision(), 4);
    s.close().await.unwrap();
    // Reopen: state and revision survive.
    let s = open(&dir.path().join("db")).await;
    assert_eq!(s.current_revision(), 4);
    assert_eq!(s.get("a").await.unwrap().unwrap().value, b("3"));
    s.close().await.unwrap();
}

#[tokio::test]
async fn range_limit_continuation_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path().join("db"),
        Options {
            compaction_step: 2,
            ..opts()
        },
    )
    .await
    .unwrap();
    for i in 0..10 {
        s.put(format!("/p/{i}"), format!("v{i}")).await.unwrap();
    }
    s.put("/q", "x").await.unwrap();
    let req = RangeRequest::prefix("/p/").with_limit(4);
    let mut seen = Vec::new();
    let mut next = Some(req);
    while let Some(req) = next {
        let r = s.range(req.clone()).await.unwrap();
        assert_eq!(r.revision, 11);
        seen.extend(r.kvs.iter().map(|kv| kv.key.clone()));
        next = r.next_page(&req);
        if next.is_some() {
            assert!(r.more);
            // Writes between pages do not show up: the page is at r.revision.
            s.put("/p/5", "changed").await.unwrap();
        }
    }
    assert_eq!(seen.len(), 10);
    let r = s
        .range(RangeRequest::prefix("/p/").at_revision(5))
        .await
        .unwrap();
    assert_eq!(r.count, 5);
    assert!(r.kvs.iter().all(|kv| kv.mod_revision <= 5));
    let mut cnt = RangeRequest::prefix("/p/");
    cnt.count_only = true;
    let r = s.range(cnt).await.unwrap();
    assert_eq!((r.count, r.kvs.len()), (10, 0));
    let future = s.range(RangeRequest::prefix("/").at_revision(1000)).await;
    assert!(matches!(future, Err(Error::FutureRevision { .. })));
    s.compact(2).await.unwrap();
    // In steps of 2 revisions (Options::compaction_step below).
    s.compact(8).await.unwrap();
    assert_eq!(s.compacted_revision(), 8);
    let old = s.range(RangeRequest::prefix("/p/").at_revision(7)).await;
    assert!(
        matches!(
            old,
            Err(Error::Compacted {
                requested: 7,
                compacted: 8
            })
        ),
        "{old:?}"
    );
    let at8 = s
        .range(RangeRequest::prefix("/p/").at_revision(8))
        .await
        .unwrap();
    assert_eq!(at8.count, 8);
    s.close().await.unwrap();
}

#[tokio::test]
async fn txn_compare_and_rules() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db")).await;
    // Create only if missing.
    let create = |v: &'static str| Txn {
        compare: vec![Compare::missing("k")],
        success: vec![Op::put("k", v)],
        failure: vec![Op::Range(RangeRequest::key("k"))],
    };
    let r = s.txn(create("1")).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 1);
    let r = s.txn(create("2")).await.unwrap();
    assert!(!r.succeeded);
    assert_eq!(
        r.revision, 1,
        "a failed txn without writes takes no revision"
    );
    match &r.responses[0] {
        OpResponse::Range(rr) => assert_eq!(rr.kvs[0].value, b("1")),
        other => panic!("{other:?}"),
    }
    // Optimistic concurrency on mod_revision (resourceVersion).
    let upd = |rv| Txn {
        compare: vec![Compare::mod_revision("k", rv)],
        success: vec![Op::put("k", "new")],
        failure: vec![],
    };
    assert!(!s.txn(upd(7)).await.unwrap().succeeded);
    assert!(s.txn(upd(1)).await.unwrap().succeeded);
    assert!(!s.txn(upd(1)).await.unwrap().succeeded);
    let v = Txn {
        compare: vec![Compare::new(
            "k",
            CompareOp::Equal,
            CompareTarget::Value(b("new")),
        )],
        success: vec![Op::delete(KeySet::key("k")), Op::put("other", "x")],
        failure: vec![],
    };
    let r = s.txn(v).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 3, "one revision for the whole txn");
    // etcd's rules: no duplicate put, no put of a deleted key.
    let dup = Txn {
        success: vec![Op::put("a", "1"), Op::put("a", "2")],
        ..Txn::default()
    };
    assert!(matches!(s.txn(dup).await, Err(Error::InvalidArgument(_))));
    let both = Txn {
        success: vec![Op::delete(KeySet::prefix("a")), Op::put("ab", "2")],
        ..Txn::default()
    };
    assert!(matches!(s.txn(both).await, Err(Error::InvalidArgument(_))));
    let lease = Txn {
        success: vec![Op::Put {
            key: b("l"),
            value: b("v"),
            lease: 99,
        }],
        ..Txn::default()
    };
    assert!(matches!(s.txn(lease).await, Err(Error::LeaseNotFound(99))));
    assert_eq!(s.current_revision(), 3);
    // Read-only txn (served from a read transaction).
    let ro = Txn {
        compare: vec![Compare::exists("other")],
        success: vec![Op::Range(RangeRequest::prefix(""))],
        failure: vec![],
    };
    let r = s.txn(ro).await.unwrap();
    assert!(r.succeeded);
    assert_eq!(r.revision, 3);
    match &r.responses[0] {
        OpResponse::Range(rr) => assert_eq!(rr.kvs.len(), 1),
        other => panic!("{other:?}"),
    }
    s.close().await.unwrap();
}

#[tokio::test]
async fn concurrent_writers_get_distinct_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db")).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.put(format!("k{i}"), "v").await.unwrap().revision
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    assert_eq!(revs, (1..=200).collect::<Vec<_>>());
    s.close().await.unwrap();
}

#[tokio::test]
async fn leases_expire_and_delete_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path().join("db"),
        Options {
            lease_check_interval: Duration::from_millis(50),
            ..opts()
        },
    )
    .await
    .unwrap();
    let short = s.lease_grant(0, 1).await.unwrap();
    let kept = s.lease_grant(0, 5).await.unwrap();
    assert_ne!(short, kept);
    assert_eq!(s.leases().await, vec![short, kept]);
    let (ttl, left) = s.lease_time_to_live(kept).await.unwrap();
    assert!(ttl == 5 && left <= Duration::from_secs(5));
    s.put_with_lease("/events/a", "x", short).await.unwrap();
    s.put_with_lease("/events/b", "y", short).await.unwrap();
    s.put_with_lease("/leases/n1", "z", kept).await.unwrap();
    let mut w = s
        .watch(WatchRequest::new(KeySet::prefix("/events/"), 0))
        .await
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(2500) {
        s.lease_keepalive(kept).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ev = w.next().await.unwrap();
    assert_eq!(ev.len(), 2, "both keys deleted in one revision");
    assert!(ev.iter().all(|e| e.kind == EventKind::Delete));
    assert_eq!(ev[0].revision(), ev[1].revision());
    assert!(s.get("/events/a").await.unwrap().is_none());
    assert!(s.get("/leases/n1").await.unwrap().is_some());
    assert!(matches!(
        s.lease_keepalive(short).await,
        Err(Error::LeaseNotFound(_))
    ));
    s.lease_revoke(kept).await.unwrap();
    assert!(s.get("/leases/n1").await.unwrap().is_none());
    drop(w);
    s.close().await.unwrap();
}

async fn collect(w: &mut Watcher, until: Revision) -> Vec<Event> {
    let mut out: Vec<Event> = Vec::new();
    while out.last().is_none_or(|e| e.revision() < until) {
        let batch = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("watch timed out")
            .expect("watch failed");
        assert!(!batch.is_empty());
        out.extend(batch);
    }
    out
}

#[tokio::test]
async fn watch_live_history_compacted_and_prev_kv() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny ring forces old watchers to catch up from redb.
    let s = Store::open(
        dir.path().join("db"),
        Options {
            watch_ring_events: 4,
            ..opts()
        },
    )
    .await
    .unwrap();
    let mut live = s
        .watch(WatchRequest::new(KeySet::prefix("/a/"), 0))
        .await
        .unwrap();
    for i in 0..20 {
        s.put(format!("/a/{}", i % 3), format!("{i}"))
            .await
            .unwrap();
        s.put("/b/x", format!("{i}")).await.unwrap();
    }
    s.delete_range(KeySet::prefix("/a/")).await.unwrap();
    let cur = s.current_revision();
    assert_eq!(cur, 41);
    assert_eq!(live.progress(), None, "events are queued");
    let ev = collect(&mut live, cur).await;
    assert_eq!(live.progress(), Some(41));
    s.put("/b/y", "other prefix").await.unwrap();
    assert_eq!(live.progress(), Some(42), "progress without events");
    assert_eq!(ev.len(), 23);
    let revs: Vec<_> = ev.iter().map(Event::revision).collect();
    assert!(revs.windows(2).all(|w| w[0] <= w[1]));
    // The 4th put of /a/0 has the first as prev.
    assert_eq!(ev[3].prev_kv.as_ref().unwrap().value, b("0"));
    assert_eq!(ev[3].kv.version, 2);
    // From history: same stream from revision 1.
    let mut old = s
        .watch(WatchRequest::new(KeySet::prefix("/a/"), 1))
        .await
        .unwrap();
    assert_eq!(collect(&mut old, cur).await, ev);
    // Compaction: a watch at or before it fails clearly.
    s.compact(10).await.unwrap();
    let err = s
        .watch(WatchRequest::new(KeySet::prefix("/a/"), 10))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Compacted {
            requested: 10,
            compacted: 10
        }
    ));
    assert!(err.to_string().contains("compacted"));
    let mut after = s
        .watch(WatchRequest::new(KeySet::prefix("/a/"), 11))
        .await
        .unwrap();
    let tail = collect(&mut after, cur).await;
    assert_eq!(
        tail[..],
        ev[ev.iter().position(|e| e.revision() >= 11).unwrap()..]
    );
    drop((live, old, after));
    s.close().await.unwrap();
}

#[tokio::test]
async fn slow_watcher_is_cut_off_without_blocking_writers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path().join("db"),
        Options {
            watch_queue_batches: 2,
            ..opts()
        },
    )
    .await
    .unwrap();
    let mut slow = s
        .watch(WatchRequest::new(KeySet::prefix(""), 0))
        .await
        .unwrap();
    for i in 0..10 {
        s.put(format!("k{i}"), "v").await.unwrap();
    }
    assert_eq!(s.current_revision(), 10, "writers were not blocked");
    assert_eq!(slow.next().await.unwrap()[0].revision(), 1);
    assert_eq!(slow.next().await.unwrap()[0].revision(), 2);
    let err = slow.next().await.unwrap_err();
    assert!(matches!(err, Error::WatchCanceled(_)), "{err}");
    drop(slow);
    s.close().await.unwrap();
}

/// A slow watcher is bounded by bytes too: few large events fill its
/// queue long before the batch count does.
#[tokio::test]
async fn slow_watcher_is_cut_off_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path().join("db"),
        Options {
            watch_queue_bytes: 100_000,
            watch_ring_bytes: 100_000,
            ..opts()
        },
    )
    .await
    .unwrap();
    let mut slow = s
        .watch(WatchRequest::new(KeySet::prefix(""), 0))
        .await
        .unwrap();
    let big = vec![b'x'; 30_000];
    for i in 0..10 {
        s.put(format!("k{i}"), big.clone()).await.unwrap();
    }
    let mut got = 0;
    let err = loop {
        match slow.next().await {
            Ok(b) => got += b.len(),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::WatchCanceled(_)), "{err}");
    assert!((1..=4).contains(&got), "{got} events before the cut");
    // The ring keeps about 100 kB: a watch from revision 1 catches up
    // from history instead, and sees everything.
    let mut w = s
        .watch(WatchRequest::new(KeySet::prefix(""), 1))
        .await
        .unwrap();
    assert_eq!(collect(&mut w, 10).await.len(), 10);
    s.close().await.unwrap();
}

/// etcd's NOSPACE: past the quota puts are refused with a clear error;
/// reads, deletes and compaction work, and compaction frees the space.
#[tokio::test]
async fn quota_refuses_puts_and_allows_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let s = Store::open(
        &path,
        Options {
            quota_bytes: 200_000,
            ..opts()
        },
    )
    .await
    .unwrap();
    let value = vec![b'v'; 10_000];
    let mut stored = 0;
    let err = loop {
        match s.put(format!("k{stored}"), value.clone()).await {
            Ok(_) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 100, "the quota never refused a put");
    };
    match &err {
        Error::NoSpace { stored, quota } => {
            assert_eq!(*quota, 200_000);
            assert!(*stored <= 200_000 && *stored > 150_000, "{stored}");
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("database space exceeded"), "{err}");
    let rev = s.current_revision();
    assert_eq!(rev, stored as u64, "a refused put took no revision");
    // Reads and compare-only txns work; a txn that puts is refused whole.
    assert_eq!(s.get("k0").await.unwrap().unwrap().value.len(), 10_000);
    let both = Txn {
        success: vec![Op::delete(KeySet::key("k1")), Op::put("new", value.clone())],
        ..Txn::default()
    };
    assert!(matches!(s.txn(both).await, Err(Error::NoSpace { .. })));
    assert!(s.get("k1").await.unwrap().is_some(), "nothing half-applied");
    // Deletes work (a tombstone is small), but history still holds the
    // values: puts stay refused until compaction.
    let del = s.delete_range(KeySet::prefix("k")).await.unwrap();
    assert_eq!(del.deleted, stored as u64);
    assert!(matches!(
        s.put("x", value.clone()).await,
        Err(Error::NoSpace { .. })
    ));
    let before = s.stored_bytes();
    s.compact(s.current_revision()).await.unwrap();
    assert!(s.stored_bytes() < before / 10, "{}", s.stored_bytes());
    s.put("x", "y").await.unwrap();
    // The running count matches a fresh count of the file.
    let counted = s.stored_bytes();
    s.close().await.unwrap();
    let s = open(&path).await;
    assert_eq!(s.stored_bytes(), counted);
    s.close().await.unwrap();
}

#[tokio::test]
async fn dropped_watchers_are_unregistered() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db")).await;
    // Many short-lived watches on keys that never change, then writes
    // elsewhere: nothing accumulates, nothing is sent to dead watchers.
    for _ in 0..1000 {
        let w = s.watch(WatchRequest::new(KeySet::key("quiet"), 0)).await;
        drop(w.unwrap());
    }
    assert_eq!(s.watcher_count(), 0);
    let mut live = s
        .watch(WatchRequest::new(KeySet::key("busy"), 0))
        .await
        .unwrap();
    assert_eq!(s.watcher_count(), 1);
    s.put("busy", "1").await.unwrap();
    assert_eq!(live.next().await.unwrap().len(), 1);
    drop(live);
    assert_eq!(s.watcher_count(), 0);
    s.close().await.unwrap();
}

#[tokio::test]
async fn snapshot_restore_and_damaged_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db")).await;
    let lease = s.lease_grant(0, 60).await.unwrap();
    for i in 0..50 {
        s.put(format!("k{}", i % 7), format!("v{i}")).await.unwrap();
    }
    s.put_with_lease("leased", "x", lease).await.unwrap();
    s.compact(20).await.unwrap();
    let snap = dir.path().join("snap");
    s.snapshot(&snap).await.unwrap();
    let want = s.range(RangeRequest::prefix("")).await.unwrap();
    let want_old = s
        .range(RangeRequest::prefix("").at_revision(30))
        .await
        .unwrap();
    s.close().await.unwrap();

    let restored = dir.path().join("restored");
    Store::restore(&snap, &restored).await.unwrap();
    let r = open(&restored).await;
    assert_eq!(r.range(RangeRequest::prefix("")).await.unwrap(), want);
    assert_eq!(
        r.range(RangeRequest::prefix("").at_revision(30))
            .await
            .unwrap(),
        want_old
    );
    assert_eq!(r.compacted_revision(), 20);
    r.lease_revoke(lease).await.unwrap();
    assert!(r.get("leased").await.unwrap().is_none());
    r.close().await.unwrap();

    // Restore refuses an existing target.
    assert!(Store::restore(&snap, &restored).await.is_err());
    let data = std::fs::read(&snap).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", data[..data.len() / 2].to_vec()),
        ("flipped", {
            let mut d = data.clone();
            let i = d.len() / 3;
            d[i] ^= 0x40;
            d
        }),
        (
            "garbage",
            b"hello world, not a snapshot at all....................".to_vec(),
        ),
        ("empty", Vec::new()),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join(format!("snap-{name}"));
        std::fs::write(&p, bytes).unwrap();
        let target = dir.path().join(format!("db-{name}"));
        let err = Store::restore(&p, &target).await.unwrap_err();
        match &err {
            Error::Corrupt { path, .. } => assert_eq!(path, &p, "{name}"),
            other => panic!("{name}: {other}"),
        }
        assert!(err.to_string().contains(&format!("snap-{name}")), "{err}");
        assert!(!target.exists(), "{name}: nothing half-restored");
    }
}

/// Bounded fuzzing of snapshot decoding on stable (the `store_snapshot`
/// target in tests/fuzz runs the same inputs coverage-guided): mutations
/// of a real snapshot's body, re-sealed with a correct checksum so the
/// record decoder sees them. Nothing may panic; `SKIFF_FUZZ_SECS` and
/// `SKIFF_FUZZ_SEED` override the defaults.
#[tokio::test]
async fn fuzz_snapshot_decoding_bounded() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir.path().join("db")).await;
    let lease = s.lease_grant(0, 60).await.unwrap();
    for i in 0..20 {
        s.put(format!("k{}", i % 5), format!("v{i}")).await.unwrap();
    }
    s.put_with_lease("leased", "x", lease).await.unwrap();
    s.delete_range(KeySet::key("k0")).await.unwrap();
    s.compact(10).await.unwrap();
    let snap = dir.path().join("snap");
    s.snapshot(&snap).await.unwrap();
    let file = std::fs::read(&snap).unwrap();
    let info = inspect_snapshot(&file).unwrap();
    assert_eq!((info.revision, info.compacted), (s.current_revision(), 10));
    let body = &file[..file.len() - 32];
    let mut rng = skiff_test_support::fuzz::Bounded::from_env(2.0, 0x5eed);
    let mut accepted = 0u64;
    while rng.running() {
        let mut b = body.to_vec();
        for _ in 0..1 + rng.below(4) {
            let len = b.len();
            match rng.below(5) {
                0 if len > 0 => b[rng.below(len)] ^= 1 << rng.below(8),
                1 if len > 0 => b[rng.below(len)] = rng.next_u64() as u8,
                2 => b.insert(rng.below(len + 1), rng.next_u64() as u8),
                3 if len > 0 => {
                    b.remove(rng.below(len));
                }
                _ if len > 12 => {
                    // A huge record or element length.
                    let i = 12 + rng.below(len - 12);
                    b[i] = 0xff;
                }
                _ => {}
            }
        }
        b.extend_from_slice(&sha2::Sha256::digest(&b));
        accepted += u64::from(inspect_snapshot(&b).is_ok());
    }
    let (runs, seed) = (rng.runs(), rng.seed);
    eprintln!("fuzz: {runs} snapshots, {accepted} accepted, seed {seed:#x}");
    assert!(runs > 100);
}

#[tokio::test]
async fn damaged_database_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    let s = open(&good).await;
    for i in 0..300 {
        s.put(format!("key-{i:04}"), vec![b'x'; 512]).await.unwrap();
    }
    s.close().await.unwrap();
    let data = std::fs::read(&good).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("truncated-header", data[..100].to_vec()),
        ("truncated-half", data[..data.len() / 2].to_vec()),
        ("garbage", vec![0x5a; 64 * 1024]),
        ("header-overwritten", {
            let mut d = data.clone();
            d[..64].fill(0xff);
            d
        }),
    ];
    for (name, bytes) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes).unwrap();
        let err = Store::open(&p, opts()).await.unwrap_err();
        match &err {
            Error::Corrupt { path, .. } => assert_eq!(path, &p, "{name}"),
            other => panic!("{name}: expected Corrupt, got {other}"),
        }
        assert!(err.to_string().contains(name), "{err}");
        // Never silently reset: the file is untouched.
        assert_eq!(std::fs::read(&p).unwrap(), bytes, "{name}");
    }
    // A redb file of someone else's is refused, not adopted.
    let foreign = dir.path().join("foreign");
    {
        let db = redb::Database::create(&foreign).unwrap();
        let w = db.begin_write().unwrap();
        let t: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("theirs");
        w.open_table(t).unwrap().insert("x", 1).unwrap();
        w.commit().unwrap();
    }
    match Store::open(&foreign, opts()).await {
        Err(Error::Corrupt { path, reason }) => {
            assert_eq!(path, foreign);
            assert!(reason.contains("not a skiff store"), "{reason}");
        }
        other => panic!("foreign: {other:?}"),
    }
    // A crash right after creating the file leaves a redb file with no
    // table at all: nothing was stored, so it is simply initialised.
    let blank = dir.path().join("blank");
    drop(redb::Database::create(&blank).unwrap());
    let s = open(&blank).await;
    assert_eq!(s.current_revision(), 0);
    s.close().await.unwrap();
    // Not corruption: a missing directory is an I/O error naming the path.
    let missing = dir.path().join("no-such-dir").join("db");
    match Store::open(&missing, opts()).await {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("missing dir: {other:?}"),
    }
    // Damage in the middle of the data pages: refused at open, or at worst
    // reported as an error on read; never wrong data.
    let p = dir.path().join("middle");
    std::fs::write(&p, &data).unwrap();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
        f.seek(SeekFrom::Start(data.len() as u64 / 2)).unwrap();
        f.write_all(&[0xa5; 8192]).unwrap();
    }
    match Store::open(&p, opts()).await {
        Err(Error::Corrupt { path, reason }) => {
            eprintln!("middle damage refused: {reason}");
            assert_eq!(path, p);
        }
        Err(other) => panic!("middle: {other}"),
        Ok(s) => {
            eprintln!("middle damage not detected at open (free pages?)");
            if let Ok(r) = s.range(RangeRequest::prefix("key-")).await {
                assert_eq!(r.count, 300);
                assert!(r.kvs.iter().all(|kv| kv.value.as_ref() == [b'x'; 512]));
            }
            s.close().await.unwrap();
        }
    }
}

const EFBIG_ENV: &str = "SKIFF_STORE_EFBIG_CHILD";

/// The child of `write_errors_do_not_outlast_their_cause`: a file size
/// limit makes the store's writes fail with EFBIG (as a full disk fails
/// them with ENOSPC); raising it again must let writes through without a
/// restart. Prints "efbig ok" when every check held.
#[test]
fn efbig_child() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    use nix::sys::signal::{SigSet, Signal};
    let Ok(path) = std::env::var(EFBIG_ENV) else {
        return;
    };
    // Crossing the limit also raises SIGXFSZ, whose default action kills
    // the process (the control plane catches it); blocked here, before the
    // runtime and the writer thread inherit the mask.
    let mut xfsz = SigSet::empty();
    xfsz.add(Signal::SIGXFSZ);
    xfsz.thread_block().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = Store::open(&path, opts()).await.unwrap();
        let mut acked = Vec::new();
        for i in 0..50 {
            acked.push((
                format!("small{i}"),
                s.put(format!("small{i}"), "v").await.unwrap().revision,
            ));
        }
        let (_, hard) = getrlimit(Resource::RLIMIT_FSIZE).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        setrlimit(Resource::RLIMIT_FSIZE, len + (256 << 10), hard).unwrap();
        let big = vec![b'b'; 64 << 10];
        let mut failed = None;
        for i in 0..400 {
            match s.put(format!("big{i}"), big.clone()).await {
                Ok(r) => acked.push((format!("big{i}"), r.revision)),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let err = failed.expect("no write crossed the file size limit");
        eprintln!("write refused: {err}");
        // Reads keep working while the cause lasts, and writes fail cleanly.
        assert_eq!(s.get("small0").await.unwrap().unwrap().value.as_ref(), b"v");
        assert!(s.put("during", big.clone()).await.is_err());
        assert_eq!(s.get("small1").await.unwrap().unwrap().value.as_ref(), b"v");
        // The cause goes away: writes work again, with no restart.
        setrlimit(Resource::RLIMIT_FSIZE, hard, hard).unwrap();
        let after = s
            .put("after", big.clone())
            .await
            .expect("write after the limit was raised");
        assert_eq!(
            after.revision,
            acked.len() as u64 + 1,
            "revisions stay gap-free"
        );
        for (k, rev) in &acked {
            assert_eq!(
                s.get(k.clone()).await.unwrap().unwrap().mod_revision,
                *rev,
                "{k}"
            );
        }
        s.close().await.unwrap();
        let s = Store::open(&path, opts()).await.unwrap();
        assert_eq!(s.current_revision(), acked.len() as u64 + 1);
        assert!(s.get("after").await.unwrap().is_some());
        s.close().await.unwrap();
    });
    println!("efbig ok");
}

#[test]
fn write_errors_do_not_outlast_their_cause() {
    let dir = tempfile::tempdir().unwrap();
    let out = Proc::new(std::env::current_exe().unwrap())
        .args(["--exact", "efbig_child", "--nocapture", "--test-threads=1"])
        .env(EFBIG_ENV, dir.path().join("db"))
        .output()
        .unwrap();
    let (so, se) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && so.contains("efbig ok"),
        "child failed ({}):\n{so}\n{se}",
        out.status
    );
    assert!(se.contains("File too large"), "{se}");
}

#[tokio::test]
async fn periodic_compaction_bounds_history() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path().join("db"),
        Options {
            auto_compaction: Some(AutoCompaction {
                interval: Duration::from_millis(100),
                retain_revisions: 5,
            }),
            ..opts()
        },
    )
    .await
    .unwrap();
    for i in 0..30 {
        s.put("k", format!("{i}")).await.unwrap();
    }
    let start = Instant::now();
    while s.compacted_revision() < 25 {
        assert!(start.elapsed() < Duration::from_secs(30), "no compaction");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        s.range(RangeRequest::key("k").at_revision(3))
            .await
            .is_err()
    );
    s.close().await.unwrap();
}

// ---------------------------------------------------------------------------
// Crash test: a child process (this test binary re-executed) writes under
// load and prints each acknowledged (key, revision); we SIGKILL it at random
// moments, reopen, and check every acknowledged write and the revision log.

const CHILD_ENV: &str = "SKIFF_STORE_CRASH_CHILD";

/// Only does something when re-executed by `crash_sigkill_keeps_acked_writes`.
#[test]
fn crash_child() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let s = Store::open(&path, opts()).await.unwrap();
        let base = s.current_revision();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for w in 0..16 {
            let s = s.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                for i in 0.. {
                    let key = format!("b{base}/w{w}/{i}");
                    let rev = if w % 2 == 0 {
                        s.put(key.clone(), key.clone()).await.unwrap().revision
                    } else {
                        // A two-key txn: after a crash both keys or neither.
                        let txn = Txn {
                            success: vec![
                                Op::put(key.clone(), key.clone()),
                                Op::put(format!("pair/{key}"), key.clone()),
                            ],
                            ..Txn::default()
                        };
                        s.txn(txn).await.unwrap().revision
                    };
                    tx.send(format!("{key} {rev}")).unwrap();
                }
            });
        }
        let mut out = std::io::stdout().lock();
        println!("ready");
        while let Some(line) = rx.recv().await {
            writeln!(out, "{line}").unwrap();
            out.flush().unwrap();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_sigkill_keeps_acked_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db");
    let exe = std::env::current_exe().unwrap();
    let mut acked_total = 0usize;
    let mut last_rev = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for round in 0..8 {
        let mut child = Proc::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_ack, acks_started) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut ready = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.ends_with("ready") {
                    ready = true;
                    continue;
                }
                if let Some((k, r)) = line.split_once(' ')
                    && let Ok(r) = r.parse::<u64>()
                {
                    if acked.is_empty() {
                        let _ = first_ack.send(());
                    }
                    acked.push((k.to_string(), r));
                }
            }
            (ready, acked)
        });
        // Once writes are flowing (however slow the machine is), let it run
        // 0..400 ms more, then SIGKILL: the kill lands anywhere in the
        // write path, often in the middle of a group commit.
        acks_started
            .recv_timeout(Duration::from_secs(60))
            .expect("child acknowledged no write");
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 400));
        child.kill().unwrap(); // SIGKILL on unix
        child.wait().unwrap();
        let (ready, acked) = reader.join().unwrap();
        assert!(ready, "round {round}: child did not start");
        eprintln!("round {round}: {} acknowledged writes", acked.len());

        let s = open(&db).await;
        let cur = s.current_revision();
        for (k, r) in &acked {
            assert!(*r > last_rev, "round {round}: revision {r} reused");
            let kv = s
                .get(k.clone())
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("round {round}: acked {k}@{r} lost"));
            assert_eq!(kv.mod_revision, *r, "{k}");
            assert_eq!(kv.value.as_ref(), k.as_bytes());
        }
        // Atomicity, acknowledged or not: every txn left both keys or none.
        let all = s.range(RangeRequest::prefix("")).await.unwrap().kvs;
        let by_key: std::collections::HashMap<&[u8], &KeyValue> =
            all.iter().map(|kv| (kv.key.as_ref(), kv)).collect();
        for kv in &all {
            if let Some(k) = kv.key.strip_prefix(b"pair/") {
                let other = by_key.get(k).expect("txn half-applied");
                assert_eq!(other.mod_revision, kv.mod_revision);
            } else if kv.key.split(|&c| c == b'/').nth(1).is_some_and(|w| {
                w.strip_prefix(b"w")
                    .and_then(|n| std::str::from_utf8(n).ok()?.parse::<u32>().ok())
                    .is_some_and(|n| n % 2 == 1)
            }) {
                let pair = [b"pair/".as_slice(), kv.key.as_ref()].concat();
                assert!(by_key.contains_key(pair.as_slice()), "txn half-applied");
            }
        }
        let mut revs: Vec<u64> = acked.iter().map(|a| a.1).collect();
        revs.sort();
        revs.dedup();
        assert_eq!(revs.len(), acked.len(), "round {round}: duplicate revision");
        // The revision history is gap-free: one event per revision.
        let mut w = s
            .watch(WatchRequest::new(KeySet::prefix(""), last_rev + 1))
            .await
            .unwrap();
        let ev = if cur > last_rev {
            collect(&mut w, cur).await
        } else {
            Vec::new()
        };
        // Every revision present once (a txn's two events share one), in order.
        let mut got: Vec<u64> = ev.iter().map(Event::revision).collect();
        assert!(got.windows(2).all(|w| w[0] <= w[1]), "round {round}: order");
        got.dedup();
        let want: Vec<u64> = (last_rev + 1..=cur).collect();
        assert!(got == want, "round {round}: revision history has gaps");
        acked_total += acked.len();
        last_rev = cur;
        drop(w);
        s.close().await.unwrap();
    }
    assert!(acked_total >= 5, "too little load: {acked_total}");
}

/// Writes 8 rounds of 320 puts of 4 KiB to 16 keys (10 MiB of history);
/// returns the file size after each round.
async fn churn(path: &Path, compact: bool) -> Vec<u64> {
    let s = open(path).await;
    let mut sizes = Vec::new();
    for round in 0..8u8 {
        let mut tasks = Vec::new();
        for c in 0..16 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..20 {
                    s.put(format!("k{}", (c + i) % 16), vec![round; 4096])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        if compact {
            s.compact(s.current_revision()).await.unwrap();
        }
        sizes.push(std::fs::metadata(path).unwrap().len());
    }
    s.close().await.unwrap();
    sizes
}

#[tokio::test]
async fn compaction_bounds_disk_use() {
    let dir = tempfile::tempdir().unwrap();
    let with = churn(&dir.path().join("compacted"), true).await;
    let without = churn(&dir.path().join("kept"), false).await;
    eprintln!("file sizes with compaction {with:?}, without {without:?}");
    // Freed pages are reused: the file stops growing.
    assert!(with[7] <= with[2] * 3 / 2, "grew: {with:?}");
    assert!(with[7] < without[7], "{with:?} vs {without:?}");
}
