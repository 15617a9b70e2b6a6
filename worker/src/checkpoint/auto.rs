//! Automatic checkpoints, the policy the operator sets from the pool spec: after a successful
//! execution that took at least `CAPSULE_CHECKPOINT_AFTER_MS`, and after
//! `CAPSULE_CHECKPOINT_IDLE_SECONDS` idle when an execution ran since the last checkpoint. A
//! failure is counted and logged (the next trigger tries again), never reported to the code.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::interpreter::Interpreter;
use crate::runtime::Runtime;
use crate::standby::Standby;

#[derive(Debug)]
pub struct AutoCheckpoint {
    enabled: bool,
    after: Option<Duration>,
    idle: Option<Duration>,
    /// When the idle checkpoint is due: set by each execution, cleared by each checkpoint.
    idle_deadline: Option<Instant>,
}

impl AutoCheckpoint {
    pub fn new(config: &Config) -> Self {
        AutoCheckpoint {
            enabled: config.checkpoint_dir.is_some(),
            after: config.checkpoint_after_ms.map(Duration::from_millis),
            idle: config.checkpoint_idle_seconds.map(Duration::from_secs),
            idle_deadline: None,
        }
    }

    /// Notes an execution (it may have changed the namespace); whether it calls for a checkpoint
    /// now.
    pub fn after_execution(&mut self, ok: bool, took: Duration) -> bool {
        if !self.enabled {
            return false;
        }
        self.idle_deadline = self.idle.map(|idle| Instant::now() + idle);
        ok && self.after.is_some_and(|after| took >= after)
    }

    /// A checkpoint was taken or restored: nothing changed since.
    pub fn saved(&mut self) {
        self.idle_deadline = None;
    }

    pub fn idle_pending(&self) -> bool {
        self.idle_deadline.is_some()
    }

    /// Resolves when the idle checkpoint is due (never when none is pending).
    pub async fn idle_due(&self) {
        match self.idle_deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    pub async fn checkpoint(
        &mut self,
        runtime: &Arc<Runtime>,
        interpreter: Interpreter,
        standby: &mut Standby,
        trigger: &'static str,
    ) -> Interpreter {
        self.idle_deadline = None;
        if runtime.session.checkpoint_identity().is_none() {
            return interpreter;
        }
        let (interpreter, result) = super::create(runtime, interpreter, standby).await;
        match result {
            Ok(created) => {
                tracing::info!(trigger, checkpoint = %created.id, "automatic checkpoint taken")
            }
            Err(error) => tracing::warn!(trigger, %error, "automatic checkpoint failed"),
        }
        interpreter
    }
}
