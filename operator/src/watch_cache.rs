//! A reflector cache whose "listed once" state any number of tasks can wait on.
//!
//! kube-runtime 5's `Store::wait_until_ready` keeps a single waker (a oneshot inside
//! `DelayedInit`): a second task waiting on a store, or polling it, takes the wake-up away from
//! the controller runner that waits on the same store, and one of them sleeps until something
//! else wakes it. Here the watch stream itself reports its first complete list, through a
//! `tokio::sync::watch` flag, so nobody polls the store's own readiness.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::Resource;
use tokio::sync::watch;

mod groups;

pub use groups::GroupKey;
use groups::{GroupIndex, Groups};

/// The API of `K` the operator watches: in its one namespace, or in all of them.
pub fn scoped_api<K>(client: kube::Client, namespace: Option<&str>) -> kube::Api<K>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => kube::Api::namespaced(client, ns),
        None => kube::Api::all(client),
    }
}

/// Drops an object's managedFields before it is cached: the operator never reads them, and parsed
/// into JSON values they are most of a cached pod's or pool's memory.
pub fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// A store and whether its watch has listed everything once.
#[derive(Clone)]
pub struct WatchCache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store: Store<K>,
    listed: watch::Receiver<bool>,
}

impl<K> WatchCache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    pub fn store(&self) -> &Store<K> {
        &self.store
    }

    pub fn is_listed(&self) -> bool {
        *self.listed.borrow()
    }

    /// Waits for the first list at most `limit`.
    pub async fn wait_listed(&self, limit: Duration) -> Listing {
        match tokio::time::timeout(limit, self.listed()).await {
            Ok(true) => Listing::Listed,
            Ok(false) => Listing::WatchEnded,
            Err(_) => Listing::TimedOut,
        }
    }

    /// Waits until the first list is in the store; false when the watch ended before it.
    pub async fn listed(&self) -> bool {
        self.listed.clone().wait_for(|listed| *listed).await.is_ok()
    }
}

/// A [`WatchCache`] whose objects are also grouped by namespace and a key (see
/// [`reflect_grouped`]).
#[derive(Clone)]
pub struct GroupedCache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    cache: WatchCache<K>,
    index: GroupIndex<K>,
}

impl<K> std::ops::Deref for GroupedCache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    type Target = WatchCache<K>;
    fn deref(&self) -> &WatchCache<K> {
        &self.cache
    }
}

impl<K> GroupedCache<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    /// The cached objects of one group. An object being stored may be missing for a moment, as
    /// if the cache were that much behind.
    pub fn group(&self, namespace: &str, key: &str) -> Vec<Arc<K>> {
        let names = self.index.names(namespace, key);
        let store = self.cache.store();
        let stored = names.into_iter().filter_map(|name| {
            store.get(&ObjectRef::new_with(&name, Default::default()).within(namespace))
        });
        let still_in_group = |o: &Arc<K>| (self.index.key)(o).as_deref() == Some(key);
        stored.filter(still_in_group).collect()
    }
}

/// How a wait for a cache's first list ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Listed,
    TimedOut,
    /// The watch stopped before it listed (the process is shutting down).
    WatchEnded,
}

/// Caches the objects of `events` (a watcher stream). Returns the cache and the objects that
/// changed, for a controller's trigger: each object is in the store before it is yielded, so a
/// reconcile woken by it reads at least that version from the store. During a list (the first one
/// or a re-list after the watch broke) kube's store keeps the listed objects aside until the list
/// is complete, so they are yielded only then; until then the stream holds them too (one list's
/// worth, as the store does).
pub fn reflect<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
) -> (
    WatchCache<K>,
    impl Stream<Item = watcher::Result<K>> + Send + 'static,
)
where
    K: Resource + Clone + Send + Sync + std::fmt::Debug + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    reflect_indexed(events, None)
}

/// [`reflect`], with the objects also grouped by namespace and `key` for [`GroupedCache::group`].
/// The groups follow the store: a list replaces them at once when it completes.
pub fn reflect_grouped<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    key: GroupKey<K>,
) -> (
    GroupedCache<K>,
    impl Stream<Item = watcher::Result<K>> + Send + 'static,
)
where
    K: Resource + Clone + Send + Sync + std::fmt::Debug + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let index = GroupIndex::new(key);
    let (cache, touched) = reflect_indexed(events, Some(index.clone()));
    (GroupedCache { cache, index }, touched)
}

fn reflect_indexed<K>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    groups: Option<GroupIndex<K>>,
) -> (
    WatchCache<K>,
    impl Stream<Item = watcher::Result<K>> + Send + 'static,
)
where
    K: Resource + Clone + Send + Sync + std::fmt::Debug + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default + Send + Sync,
{
    let (store, writer) = reflector::store();
    let (listed_tx, listed) = watch::channel(false);
    let touched = reflector::reflector(writer, events).scan(
        ListInProgress::default(),
        move |listing: &mut ListInProgress<K>, event| {
            let ready = listing.take(event, groups.as_ref(), &listed_tx);
            futures::future::ready(Some(futures::stream::iter(ready)))
        },
    );
    (WatchCache { store, listed }, touched.flatten())
}

/// A list in progress: its objects, yielded and grouped once it is complete, as the store has it.
struct ListInProgress<K> {
    objects: Vec<K>,
    groups: Groups,
}

impl<K> Default for ListInProgress<K> {
    fn default() -> Self {
        Self {
            objects: Vec::new(),
            groups: Groups::default(),
        }
    }
}

impl<K: Resource> ListInProgress<K> {
    /// The objects that `event` makes ready to yield, with the groups brought up to date.
    fn take(
        &mut self,
        event: watcher::Result<watcher::Event<K>>,
        index: Option<&GroupIndex<K>>,
        listed: &watch::Sender<bool>,
    ) -> Vec<watcher::Result<K>> {
        match event {
            Ok(watcher::Event::Apply(obj)) => {
                if let Some(index) = index {
                    index.update(|g| g.apply(&obj, index.key));
                }
                vec![Ok(obj)]
            }
            Ok(watcher::Event::Delete(obj)) => {
                if let Some(index) = index {
                    index.update(|g| g.delete(&obj));
                }
                vec![Ok(obj)]
            }
            Ok(watcher::Event::Init) => {
                self.objects.clear();
                self.groups = Groups::default();
                Vec::new()
            }
            Ok(watcher::Event::InitApply(obj)) => {
                if let Some(index) = index {
                    self.groups.apply(&obj, index.key);
                }
                self.objects.push(obj);
                Vec::new()
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(index) = index {
                    index.replace(std::mem::take(&mut self.groups));
                }
                listed.send_replace(true);
                std::mem::take(&mut self.objects)
                    .into_iter()
                    .map(Ok)
                    .collect()
            }
            Err(error) => vec![Err(error)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use kube::ResourceExt;

    fn config_map(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn every_waiter_wakes_when_the_first_list_is_in() {
        let (events, rx) = mpsc::unbounded();
        let (cache, touched) = reflect::<ConfigMap>(rx);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move {
                    cache.wait_listed(Duration::from_secs(10)).await == Listing::Listed
                        && cache.store().state().len() == 1
                })
            })
            .collect();
        let drive = tokio::spawn(touched.for_each(|_| async {}));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!cache.is_listed());
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(config_map("a")),
            watcher::Event::InitDone,
        ] {
            events.unbounded_send(Ok(event)).unwrap();
        }
        for waiter in waiters {
            assert!(waiter.await.unwrap(), "each waiter saw the listed store");
        }
        drop(events);
        drive.await.unwrap();
    }

    #[tokio::test]
    async fn a_waiter_gives_up_after_its_limit_and_an_object_is_stored_before_it_is_yielded() {
        let (events, rx) = mpsc::unbounded();
        let (cache, touched) = reflect::<ConfigMap>(rx);
        assert_eq!(
            cache.wait_listed(Duration::from_millis(50)).await,
            Listing::TimedOut
        );
        events
            .unbounded_send(Ok(watcher::Event::Apply(config_map("b"))))
            .unwrap();
        let mut touched = Box::pin(touched);
        let first = touched.next().await.unwrap().unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("b"));
        assert_eq!(cache.store().state().len(), 1, "in the store first");
        drop(events);
        assert!(touched.next().await.is_none());
        drop(touched);
        assert_eq!(
            cache.wait_listed(Duration::from_secs(10)).await,
            Listing::WatchEnded,
            "the watch ended without a list"
        );
    }

    #[tokio::test]
    async fn a_listed_object_is_yielded_once_the_list_is_in_the_store() {
        let (events, rx) = mpsc::unbounded();
        let (cache, touched) = reflect::<ConfigMap>(rx);
        let mut touched = Box::pin(touched);
        for event in [
            watcher::Event::Init,
            watcher::Event::InitApply(config_map("a")),
            watcher::Event::InitDone,
            // A re-list after the watch broke: "b" is new, "a" is gone.
            watcher::Event::Init,
            watcher::Event::InitApply(config_map("b")),
        ] {
            events.unbounded_send(Ok(event)).unwrap();
        }
        let first = touched.next().await.unwrap().unwrap();
        assert_eq!(first.metadata.name.as_deref(), Some("a"));
        assert_eq!(cache.store().state().len(), 1);
        // "b" waits for its list to complete: the store still holds the last complete list.
        let early = tokio::time::timeout(Duration::from_millis(50), touched.next()).await;
        assert!(early.is_err(), "yielded before its list was in the store");
        events.unbounded_send(Ok(watcher::Event::InitDone)).unwrap();
        let second = touched.next().await.unwrap().unwrap();
        assert_eq!(second.metadata.name.as_deref(), Some("b"));
        let names: Vec<_> = cache.store().state().iter().map(|c| c.name_any()).collect();
        assert_eq!(names, ["b"], "the store has the new list when b is yielded");
    }

    fn in_group(name: &str, group: Option<&str>) -> ConfigMap {
        let mut object = config_map(name);
        if let Some(group) = group {
            object.metadata.labels = Some([("group".to_string(), group.to_string())].into());
        }
        object
    }

    fn group_label(object: &ConfigMap) -> Option<String> {
        object.labels().get("group").cloned()
    }

    fn names(objects: Vec<Arc<ConfigMap>>) -> Vec<String> {
        objects.iter().map(|o| o.name_any()).collect()
    }

    #[tokio::test]
    async fn a_group_follows_applies_moves_and_deletes_and_a_relist_replaces_it_when_complete() {
        let (events, rx) = mpsc::unbounded();
        let (cache, touched) = reflect_grouped::<ConfigMap>(rx, group_label);
        let mut touched = Box::pin(touched);
        let send = |event| events.unbounded_send(Ok(event)).unwrap();
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(in_group("a", Some("x"))));
        send(watcher::Event::InitApply(in_group("b", Some("y"))));
        send(watcher::Event::InitApply(in_group("c", None)));
        send(watcher::Event::InitDone);
        for _ in 0..3 {
            touched.next().await.unwrap().unwrap();
        }
        assert_eq!(names(cache.group("default", "x")), ["a"]);
        assert!(cache.group("other", "x").is_empty(), "another namespace");
        send(watcher::Event::Apply(in_group("b", Some("x"))));
        send(watcher::Event::Delete(in_group("a", Some("x"))));
        send(watcher::Event::Apply(in_group("c", Some("x"))));
        for _ in 0..3 {
            touched.next().await.unwrap().unwrap();
        }
        assert_eq!(names(cache.group("default", "x")), ["b", "c"]);
        assert!(cache.group("default", "y").is_empty(), "b moved out of y");
        // A re-list: the old groups answer until it is complete.
        send(watcher::Event::Init);
        send(watcher::Event::InitApply(in_group("d", Some("y"))));
        let early = tokio::time::timeout(Duration::from_millis(50), touched.next()).await;
        assert!(early.is_err());
        assert_eq!(names(cache.group("default", "x")), ["b", "c"]);
        send(watcher::Event::InitDone);
        touched.next().await.unwrap().unwrap();
        assert!(cache.group("default", "x").is_empty());
        assert_eq!(names(cache.group("default", "y")), ["d"]);
    }
}
