//! Log a noisy condition once per process instead of once per occurrence.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug)]
pub struct WarnOnce(AtomicBool);

impl WarnOnce {
    pub const fn new() -> Self {
        WarnOnce(AtomicBool::new(false))
    }

    /// Runs `log` the first time only.
    pub fn warn(&self, log: impl FnOnce()) {
        if !self.0.swap(true, Ordering::Relaxed) {
            log();
        }
    }
}

impl Default for WarnOnce {
    fn default() -> Self {
        Self::new()
    }
}
