//! What /healthz and /readyz report: real state of the controllers, not a constant.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    controllers_running: AtomicBool,
    watches_synced: AtomicBool,
}

impl Health {
    pub fn set_running(&self, running: bool) {
        self.controllers_running.store(running, Ordering::SeqCst);
    }
    pub fn set_synced(&self, synced: bool) {
        self.watches_synced.store(synced, Ordering::SeqCst);
    }
    /// Live while the controller loops run; a loop that ended makes the process unhealthy so the
    /// kubelet restarts it.
    pub fn healthy(&self) -> bool {
        self.controllers_running.load(Ordering::SeqCst)
    }
    /// Ready once the controllers' watches have listed everything once.
    pub fn ready(&self) -> bool {
        self.healthy() && self.watches_synced.load(Ordering::SeqCst)
    }
}

/// Waits until a reflector store has listed everything once. Polls instead of awaiting
/// `Store::wait_until_ready`: kube-runtime 5 wakes only the last task waiting on a store, and the
/// controller's own runner waits on the same store, so a second waiter could sleep forever.
pub async fn store_ready<K>(store: &kube::runtime::reflector::Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    use futures::FutureExt;
    loop {
        if let Some(result) = store.wait_until_ready().now_or_never() {
            return result.is_ok();
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
