//! Model-based test: random sequences of puts, deletes, txns, compactions,
//! range reads at old revisions and watches, run against the store and a
//! plain in-memory model; revisions, values, errors and every watch event
//! stream must agree.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use skiff_store::*;

const KEYS: usize = 6;

fn key(i: usize) -> Bytes {
    Bytes::from(format!("k{i}"))
}

#[derive(Clone, Debug)]
enum MOp {
    Put(usize, u8),
    /// Put attached to lease `1 + idx` (which may not exist).
    PutLease(usize, u8, u64),
    Grant,
    Revoke(u64),
    /// `[start, end)` by key index, or one key.
    Delete(usize, Option<usize>),
    Txn {
        cmp_key: usize,
        cmp: Cmp,
        success: Vec<(bool, usize, u8)>,
        failure: Vec<(bool, usize, u8)>,
    },
    /// Fraction of the way from `compacted` to `revision` (may hit compacted).
    Compact(f64),
    RangeAt(f64, Option<usize>),
    Watch(f64, Option<usize>),
}

#[derive(Clone, Debug)]
enum Cmp {
    ModRevCurrent,
    ModRev(u64),
    Missing,
    Exists,
    Value(u8),
}

fn op_strategy() -> impl Strategy<Value = MOp> {
    let small_op = (any::<bool>(), 0..KEYS, any::<u8>());
    prop_oneof![
        4 => (0..KEYS, any::<u8>()).prop_map(|(k, v)| MOp::Put(k, v)),
        2 => (0..KEYS, any::<u8>(), 0..3u64).prop_map(|(k, v, l)| MOp::PutLease(k, v, l)),
        1 => Just(MOp::Grant),
        1 => (0..3u64).prop_map(MOp::Revoke),
        2 => (0..KEYS, proptest::option::of(0..KEYS + 1)).prop_map(|(k, e)| MOp::Delete(k, e)),
        3 => (
            0..KEYS,
            prop_oneof![
                Just(Cmp::ModRevCurrent),
                (0u64..10).prop_map(Cmp::ModRev),
                Just(Cmp::Missing),
                Just(Cmp::Exists),
                (0u8..3).prop_map(Cmp::Value),
            ],
            proptest::collection::vec(small_op.clone(), 0..3),
            proptest::collection::vec(small_op, 0..3),
        )
            .prop_map(|(cmp_key, cmp, success, failure)| MOp::Txn {
                cmp_key,
                cmp,
                success,
                failure
            }),
        1 => (0.0..1.0f64).prop_map(MOp::Compact),
        2 => (0.0..1.0f64, proptest::option::of(0..KEYS)).prop_map(|(f, k)| MOp::RangeAt(f, k)),
        2 => (0.0..1.0f64, proptest::option::of(0..KEYS)).prop_map(|(f, k)| MOp::Watch(f, k)),
    ]
}

#[derive(Default)]
struct Model {
    leases: Vec<u64>,
    next_lease: u64,
    rev: u64,
    compacted: u64,
    live: BTreeMap<Bytes, KeyValue>,
    /// State after each revision (index = revision).
    states: Vec<BTreeMap<Bytes, KeyValue>>,
    events: Vec<Event>,
}

fn keyset(start: usize, end: Option<usize>) -> KeySet {
    match end {
        None => KeySet::Key(key(start)),
        Some(e) => KeySet::Range {
            start: key(start),
            end: Some(key(e)),
        },
    }
}

fn to_ops(ops: &[(bool, usize, u8)]) -> Vec<Op> {
    ops.iter()
        .map(|&(put, k, v)| {
            if put {
                Op::put(key(k), vec![v])
            } else {
                Op::delete(KeySet::key(key(k)))
            }
        })
        .collect()
}

impl Model {
    fn new() -> Self {
        Model {
            states: vec![BTreeMap::new()],
            next_lease: 1,
            ..Model::default()
        }
    }

    fn frac_rev(&self, f: f64, lo: u64) -> u64 {
        lo + ((self.rev.saturating_sub(lo)) as f64 * f).round() as u64
    }

    /// Apply ops of one branch; returns whether anything changed.
    fn apply(&mut self, ops: &[Op]) -> bool {
        let rev = self.rev + 1;
        let mut changed = false;
        for op in ops {
            match op {
                Op::Put { key, value, lease } => {
                    let prev = self.live.get(key).cloned();
                    let kv = KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: prev.as_ref().map_or(rev, |p| p.create_revision),
                        mod_revision: rev,
                        version: prev.as_ref().map_or(1, |p| p.version + 1),
                        lease: *lease,
                    };
                    self.live.insert(key.clone(), kv.clone());
                    self.events.push(Event {
                        kind: EventKind::Put,
                        kv,
                        prev_kv: prev,
                    });
                    changed = true;
                }
                Op::Delete { keys } => {
                    let gone: Vec<Bytes> = self
                        .live
                        .keys()
                        .filter(|k| keys.contains(k))
                        .cloned()
                        .collect();
                    for k in gone {
                        let prev = self.live.remove(&k);
                        self.events.push(Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                key: k,
                                value: Bytes::new(),
                                create_revision: 0,
                                mod_revision: rev,
                                version: 0,
                                lease: 0,
                            },
                            prev_kv: prev,
                        });
                        changed = true;
                    }
                }
                Op::Range(_) => unreachable!(),
            }
        }
        if changed {
            self.rev = rev;
            self.states.push(self.live.clone());
        }
        changed
    }

    fn valid(ops: &[Op]) -> bool {
        let mut puts = Vec::new();
        for op in ops {
            if let Op::Put { key, .. } = op {
                if puts.contains(key) {
                    return false;
                }
                puts.push(key.clone());
            }
        }
        ops.iter().all(|op| match op {
            Op::Delete { keys } => puts.iter().all(|k| !keys.contains(k)),
            _ => true,
        })
    }
}

struct Watch {
    w: Watcher,
    start: u64,
    keys: KeySet,
    got: Vec<Event>,
}

impl Watch {
    fn expected(&self, m: &Model) -> Vec<Event> {
        m.events
            .iter()
            .filter(|e| e.revision() >= self.start && self.keys.contains(&e.kv.key))
            .cloned()
            .collect()
    }
}

async fn run(ops: Vec<MOp>, ring: usize) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path().join("db"),
        Options {
            auto_compaction: None,
            watch_ring_events: ring,
            // Small steps split compactions into several commands.
            compaction_step: if ring < 10 { 2 } else { 10_000 },
            ..Options::default()
        },
    )
    .await
    .unwrap();
    let mut m = Model::new();
    let mut watches: Vec<Watch> = Vec::new();
    for op in ops {
        match op {
            MOp::Put(k, v) => {
                let r = s.put(key(k), vec![v]).await.unwrap();
                let prev = m.live.get(&key(k)).cloned();
                m.apply(&[Op::put(key(k), vec![v])]);
                assert_eq!(r.revision, m.rev);
                assert_eq!(r.prev_kv, prev);
            }
            MOp::PutLease(k, v, l) => {
                let id = l + 1;
                let op = Op::Put {
                    key: key(k),
                    value: Bytes::from(vec![v]),
                    lease: id,
                };
                let r = s.put_with_lease(key(k), vec![v], id).await;
                if m.leases.contains(&id) {
                    r.unwrap();
                    m.apply(&[op]);
                } else {
                    assert!(
                        matches!(r, Err(Error::LeaseNotFound(x)) if x == id),
                        "{r:?}"
                    );
                }
            }
            MOp::Grant => {
                let id = s.lease_grant(0, 3600).await.unwrap();
                assert_eq!(id, m.next_lease);
                m.leases.push(id);
                m.next_lease += 1;
            }
            MOp::Revoke(l) => {
                let id = l + 1;
                let r = s.lease_revoke(id).await;
                if let Some(i) = m.leases.iter().position(|x| *x == id) {
                    m.leases.remove(i);
                    let ops: Vec<Op> = m
                        .live
                        .values()
                        .filter(|kv| kv.lease == id)
                        .map(|kv| Op::delete(KeySet::Key(kv.key.clone())))
                        .collect();
                    m.apply(&ops);
                    assert_eq!(r.unwrap(), m.rev);
                } else {
                    assert!(matches!(r, Err(Error::LeaseNotFound(_))), "{r:?}");
                }
            }
            MOp::Delete(k, e) => {
                let ks = keyset(k, e);
                let r = s.delete_range(ks.clone()).await.unwrap();
                let before = m.events.len();
                m.apply(&[Op::delete(ks)]);
                assert_eq!(r.revision, m.rev);
                assert_eq!(r.deleted as usize, m.events.len() - before);
            }
            MOp::Txn {
                cmp_key,
                cmp,
                success,
                failure,
            } => {
                let cur = m.live.get(&key(cmp_key));
                let (compare, holds) = match cmp {
                    Cmp::ModRevCurrent => {
                        let r = cur.map_or(0, |kv| kv.mod_revision);
                        (Compare::mod_revision(key(cmp_key), r), true)
                    }
                    Cmp::ModRev(r) => (
                        Compare::mod_revision(key(cmp_key), r),
                        cur.map_or(0, |kv| kv.mod_revision) == r,
                    ),
                    Cmp::Missing => (Compare::missing(key(cmp_key)), cur.is_none()),
                    Cmp::Exists => (Compare::exists(key(cmp_key)), cur.is_some()),
                    Cmp::Value(v) => (
                        Compare::new(
                            key(cmp_key),
                            CompareOp::Equal,
                            CompareTarget::Value(Bytes::from(vec![v])),
                        ),
                        cur.is_some_and(|kv| kv.value.as_ref() == [v]),
                    ),
                };
                let txn = Txn {
                    compare: vec![compare],
                    success: to_ops(&success),
                    failure: to_ops(&failure),
                };
                let valid = Model::valid(&txn.success) && Model::valid(&txn.failure);
                let r = s.txn(txn.clone()).await;
                if !valid {
                    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
                    continue;
                }
                let r = r.unwrap();
                assert_eq!(r.succeeded, holds);
                m.apply(if holds { &txn.success } else { &txn.failure });
                assert_eq!(r.revision, m.rev);
            }
            MOp::Compact(f) => {
                let target = m.frac_rev(f, m.compacted);
                let r = s.compact(target).await;
                if target <= m.compacted {
                    assert!(matches!(r, Err(Error::Compacted { .. })), "{r:?}");
                } else {
                    r.unwrap();
                    m.compacted = target;
                }
            }
            MOp::RangeAt(f, k) => {
                let at = m.frac_rev(f, m.compacted);
                let ks = match k {
                    Some(k) => KeySet::key(key(k)),
                    None => KeySet::prefix("k"),
                };
                let mut req = RangeRequest::new(ks.clone());
                req.revision = at;
                let r = s.range(req).await;
                if at == 0 {
                    // 0 means "current".
                    let want: Vec<KeyValue> = m
                        .live
                        .values()
                        .filter(|kv| ks.contains(&kv.key))
                        .cloned()
                        .collect();
                    assert_eq!(r.unwrap().kvs, want);
                } else if at < m.compacted {
                    assert!(matches!(r, Err(Error::Compacted { .. })));
                } else {
                    let want: Vec<KeyValue> = m.states[at as usize]
                        .values()
                        .filter(|kv| ks.contains(&kv.key))
                        .cloned()
                        .collect();
                    let r = r.unwrap();
                    assert_eq!(r.kvs, want, "range at {at}");
                    assert_eq!(r.revision, at);
                }
            }
            MOp::Watch(f, k) => {
                // From `compacted` (refused) up to `rev + 1` (future only).
                let start = m.frac_rev(f, m.compacted) + u64::from(f > 0.5);
                let ks = match k {
                    Some(k) => KeySet::prefix(format!("k{k}")),
                    None => KeySet::prefix(""),
                };
                let r = s.watch(WatchRequest::new(ks.clone(), start)).await;
                // 0 means "from the next revision".
                let start = if start == 0 { m.rev + 1 } else { start };
                if start <= m.compacted {
                    assert!(matches!(r, Err(Error::Compacted { .. })), "{r:?}");
                } else {
                    watches.push(Watch {
                        w: r.unwrap(),
                        start,
                        keys: ks,
                        got: Vec::new(),
                    });
                }
            }
        }
        // Every watch has delivered exactly the model's events so far.
        let mut i = 0;
        while i < watches.len() {
            let w = &mut watches[i];
            let want = w.expected(&m);
            let mut dead = false;
            while w.got.len() < want.len() {
                let batch = tokio::time::timeout(Duration::from_secs(10), w.w.next())
                    .await
                    .expect("watch stalled");
                match batch {
                    Ok(batch) => w.got.extend(batch),
                    // A watcher that fell behind the in-memory ring and whose
                    // next revision was compacted meanwhile: legitimate (etcd
                    // cancels such watchers too), but the error must be exact.
                    Err(Error::Compacted {
                        requested,
                        compacted,
                    }) => {
                        let next = w.got.last().map_or(w.start, |e| e.revision() + 1);
                        assert!(requested >= next && requested <= compacted);
                        assert_eq!(compacted, m.compacted);
                        assert!(
                            want[w.got.len()..]
                                .iter()
                                .all(|e| e.revision() >= requested),
                            "no event skipped before the error"
                        );
                        dead = true;
                        break;
                    }
                    Err(e) => panic!("watch failed: {e}"),
                }
            }
            if dead {
                watches.remove(i);
                continue;
            }
            assert_eq!(w.got, want, "watch from {} on {:?}", w.start, w.keys);
            i += 1;
        }
    }
    assert_eq!(s.current_revision(), m.rev);
    drop(watches);
    s.close().await.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn store_matches_model(
        ops in proptest::collection::vec(op_strategy(), 1..40),
        ring in prop_oneof![Just(2usize), Just(1024usize)],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(ops, ring));
    }
}
