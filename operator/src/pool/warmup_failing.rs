//! A pool whose warm-up code keeps raising: each worker that reports it is removed
//! (`warmup_failed`), and new workers are started further and further apart (1 s, 2 s, 4 s … 256 s)
//! instead of crash-looping pods, until a worker of the current template warms up.

use std::time::{Duration, Instant};

use crate::error::backoff;

/// What the pool remembers while its warm-up fails.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmupFailing {
    /// Workers removed in a row because their warm-up raised.
    pub removed_in_a_row: u32,
    /// The last error, `ExceptionType: message`.
    pub error: String,
    /// No worker is created before this.
    pub create_not_before: Instant,
}

impl WarmupFailing {
    /// One more worker removed because its warm-up raised `error`.
    pub fn record(state: &mut Option<WarmupFailing>, error: String, now: Instant) {
        let removed_in_a_row = state.as_ref().map_or(0, |f| f.removed_in_a_row) + 1;
        *state = Some(WarmupFailing {
            removed_in_a_row,
            error,
            create_not_before: now + backoff(removed_in_a_row - 1),
        });
    }

    /// How long creations still wait, if they do.
    pub fn creates_held_for(&self, now: Instant) -> Option<Duration> {
        let left = self.create_not_before.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// The condition message: the error, and what the operator does about it.
    pub fn message(&self) -> String {
        format!(
            "spec.warmup.code raised {} in {} workers in a row; they were replaced and new workers start at most every {}s until one warms up: fix the warm-up code",
            self.error,
            self.removed_in_a_row,
            backoff(self.removed_in_a_row - 1).as_secs()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_doubles_the_wait_before_the_next_worker() {
        let now = Instant::now();
        let mut state = None;
        WarmupFailing::record(&mut state, "ValueError: boom".into(), now);
        let first = state.clone().unwrap();
        assert_eq!(first.removed_in_a_row, 1);
        assert_eq!(first.creates_held_for(now), Some(Duration::from_secs(1)));
        WarmupFailing::record(&mut state, "ValueError: boom".into(), now);
        WarmupFailing::record(&mut state, "ValueError: boom".into(), now);
        let third = state.unwrap();
        assert_eq!(third.creates_held_for(now), Some(Duration::from_secs(4)));
        assert_eq!(third.creates_held_for(now + Duration::from_secs(5)), None);
        let message = third.message();
        assert!(
            message.contains("ValueError: boom") && message.contains("3 workers in a row"),
            "{message}"
        );
    }
}
