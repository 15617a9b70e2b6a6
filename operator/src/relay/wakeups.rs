//! Pools whose waiting sessions should look for a worker again because a worker announced itself
//! idle in a heartbeat before its pod turned Ready (a readiness probe runs at most once a second;
//! the worker's announcement comes the moment its interpreter is warm). Ingest wakes, the session
//! controller takes: wake-ups coalesce per pool, so the set never holds more than one entry per
//! known pool.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::{Stream, StreamExt};
use tokio::sync::Notify;

use crate::context::PoolKey;

#[derive(Default)]
pub struct PoolWakeups {
    pending: Mutex<HashSet<PoolKey>>,
    notify: Notify,
}

impl PoolWakeups {
    pub fn wake(&self, namespace: &str, pool: &str) {
        let key = (namespace.to_owned(), pool.to_owned());
        let inserted = self.lock().insert(key);
        if inserted {
            self.notify.notify_one();
        }
    }

    /// Waits for a wake-up, then takes every one pending.
    pub async fn next(&self) -> Vec<PoolKey> {
        loop {
            let taken: Vec<PoolKey> = self.lock().drain().collect();
            if !taken.is_empty() {
                return taken;
            }
            self.notify.notified().await;
        }
    }

    /// The wake-ups one by one, for a controller's trigger.
    pub fn stream(self: Arc<Self>) -> impl Stream<Item = PoolKey> + Send + 'static {
        futures::stream::unfold(self, |wakeups| async move {
            let batch = wakeups.next().await;
            Some((futures::stream::iter(batch), wakeups))
        })
        .flatten()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PoolKey>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wakeups_of_one_pool_coalesce_until_taken() {
        let wakeups = Arc::new(PoolWakeups::default());
        wakeups.wake("ns", "a");
        wakeups.wake("ns", "a");
        wakeups.wake("ns", "b");
        let mut batch = wakeups.next().await;
        batch.sort();
        assert_eq!(
            batch,
            vec![("ns".into(), "a".into()), ("ns".into(), "b".into())]
        );
        let later = tokio::spawn({
            let wakeups = wakeups.clone();
            async move { Box::pin(wakeups.stream()).next().await }
        });
        tokio::task::yield_now().await;
        wakeups.wake("ns", "a");
        assert_eq!(later.await.unwrap(), Some(("ns".into(), "a".into())));
    }
}
