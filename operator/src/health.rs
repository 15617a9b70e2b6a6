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
