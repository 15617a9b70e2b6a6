//! A reflector cache whose "listed once" state any number of tasks can wait on.
//!
//! kube-runtime 5's `Store::wait_until_ready` keeps a single waker (a oneshot inside
//! `DelayedInit`): a second task waiting on a store, or polling it, takes the wake-up away from
//! the controller runner that waits on the same store, and one of them sleeps until something
//! else wakes it. Here the watch stream itself reports its first complete list, through a
//! `tokio::sync::watch` flag, so nobody polls the store's own readiness.

use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use tokio::sync::watch;

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

    /// Waits until the first list is in the store; false when the watch ended before it.
    pub async fn listed(&self) -> bool {
        self.listed.clone().wait_for(|listed| *listed).await.is_ok()
    }

    /// Waits for the first list at most `limit`; true when it is in the store.
    pub async fn listed_within(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.listed())
            .await
            .unwrap_or(false)
    }
}

/// Caches the objects of `events` (a watcher stream). Returns the cache and the objects that
/// changed, for a controller's trigger: each object is in the store before it is yielded, so a
/// reconcile woken by it reads at least that version from the store.
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
    let (store, writer) = reflector::store();
    let (listed_tx, listed) = watch::channel(false);
    let touched = reflector::reflector(writer, events)
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                listed_tx.send_replace(true);
            }
        })
        .touched_objects();
    (WatchCache { store, listed }, touched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::channel::mpsc;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

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
                    cache.listed_within(Duration::from_secs(10)).await
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
        assert!(!cache.listed_within(Duration::from_millis(50)).await);
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
        assert!(!cache.listed().await, "the watch ended without a list");
    }
}
