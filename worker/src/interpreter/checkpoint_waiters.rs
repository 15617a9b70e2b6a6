//! Checkpoint requests waiting for the driver's answer, which the reader task hands over directly
//! (the driver answers them even while code runs).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::messages::CheckpointFrame;

/// Checkpoint requests waiting for the driver's answer.
#[derive(Debug, Default)]
pub struct CheckpointWaiters {
    next_id: AtomicU64,
    waiters: Mutex<HashMap<u64, oneshot::Sender<CheckpointFrame>>>,
}

impl CheckpointWaiters {
    pub fn register(&self) -> (u64, oneshot::Receiver<CheckpointFrame>) {
        let id = self.next_id.fetch_add(1, Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        self.lock().insert(id, tx);
        (id, rx)
    }

    pub fn forget(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub(super) fn complete(&self, id: u64, checkpoint: CheckpointFrame) {
        if let Some(tx) = self.lock().remove(&id) {
            let _ = tx.send(checkpoint);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<CheckpointFrame>>> {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}
