//! One watch per kind shared by all controllers: a kube-runtime reflector
//! store plus a fan-out of every change (deletions included, which
//! kube-runtime's shared streams do not forward) to each subscriber, sent
//! after the store holds it so a reconcile triggered by it sees it.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt as _};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt as _;
use kube::runtime::reflector::{Lookup, Store, store::Writer};
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

type Subscribers<K> = Arc<Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>>;

pub struct Informer<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    subs: Subscribers<K>,
    task: JoinHandle<()>,
}

impl<K> Informer<K>
where
    K: Resource + Lookup + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    <K as Lookup>::DynamicType: Eq + Hash + Clone + Default + Send + Sync,
{
    /// Starts watching `api` on the current runtime.
    pub fn start(api: Api<K>) -> Informer<K> {
        Self::start_with(api, Default::default())
    }
}

impl<K> Informer<K>
where
    K: Resource + Lookup + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    <K as Lookup>::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    pub fn start_with(api: Api<K>, dyntype: <K as Lookup>::DynamicType) -> Informer<K> {
        let mut writer = Writer::new(dyntype);
        let store = writer.as_reader();
        let subs: Subscribers<K> = Arc::default();
        let task_subs = subs.clone();
        let task_store = store.clone();
        let task = tokio::spawn(async move {
            let mut events = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                let ev = match ev {
                    Ok(ev) => ev,
                    // The backoff retries; the store keeps its last state.
                    Err(_) => continue,
                };
                // The lock orders this change against a subscription
                // snapshotting the store.
                let mut subs = task_subs.lock().unwrap_or_else(|e| e.into_inner());
                writer.apply_watcher_event(&ev);
                let changed: Vec<Arc<K>> = match ev {
                    Event::Apply(o) | Event::Delete(o) => vec![Arc::new(o)],
                    Event::InitDone => task_store.state(),
                    Event::Init | Event::InitApply(_) => Vec::new(),
                };
                subs.retain(|tx| changed.iter().all(|o| tx.send(o.clone()).is_ok()));
            }
        });
        Informer { store, subs, task }
    }
}

impl<K: Lookup + Clone + 'static> Informer<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Every object now in the store, then every change (a deleted object
    /// comes with its last state).
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + use<K>
    where
        K: Send + Sync,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
            for o in self.store.state() {
                let _ = tx.send(o);
            }
            subs.push(tx);
        }
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|o| (o, rx)) })
    }

    /// Waits for the first full list.
    pub async fn ready(&self) {
        let _ = self.store.wait_until_ready().await;
    }
}

impl<K: Lookup + Clone + 'static> Drop for Informer<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}
