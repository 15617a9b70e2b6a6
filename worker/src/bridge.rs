//! The promise bridge: pending `input()` requests and `capsule.promise(...)` promises, settled
//! through the API, by their timeout, with their execution, or at shutdown.
//!
//! The worker is the single source of truth for timeouts: when one fires the bridge rejects the
//! promise and the driver raises a timeout error inside the code.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::AbortHandle;

use crate::interpreter::{DriverWriter, ToDriver};
use crate::trace_sender::TraceSender;
use capsule_protocol::execute::PendingPromise;
use capsule_protocol::heartbeat::BridgeCounters;
use capsule_protocol::trace::{TraceEvent, TraceEventKind};

/// Most promises pending at once; creating more rejects the new one.
pub const MAX_PENDING_PROMISES: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromiseKind {
    Input,
    Promise,
}

impl PromiseKind {
    fn as_str(self) -> &'static str {
        match self {
            PromiseKind::Input => "input",
            PromiseKind::Promise => "promise",
        }
    }
}

/// Where a new promise comes from, for introspection and trace events.
#[derive(Debug, Clone)]
pub struct PromiseOrigin {
    pub execution_id: String,
    pub session: Option<String>,
    pub traceparent: Option<String>,
}

#[derive(Debug)]
struct Pending {
    kind: PromiseKind,
    origin: PromiseOrigin,
    created: Instant,
    timeout: Duration,
    timer: AbortHandle,
}

/// Why a settle call found nothing to settle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleError {
    NotFound,
}

/// Why a promise could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateError {
    Duplicate,
    TooMany,
}

#[derive(Debug)]
enum Settlement {
    Resolved(Value),
    Rejected(String),
    TimedOut,
    Cancelled,
    Shutdown(String),
}

/// What the driver is told about a settled promise, and the trace event it makes.
#[derive(Debug)]
struct SettleReply {
    ok: bool,
    value: Value,
    kind: &'static str,
    reason: String,
    trace_kind: TraceEventKind,
}

impl SettleReply {
    fn failed(kind: &'static str, reason: String, trace_kind: TraceEventKind) -> Self {
        SettleReply {
            ok: false,
            value: Value::Null,
            kind,
            reason,
            trace_kind,
        }
    }
}

#[derive(Debug)]
pub struct Bridge {
    pending: Mutex<HashMap<String, Pending>>,
    writer: Arc<DriverWriter>,
    trace: Arc<TraceSender>,
    high_water: AtomicU64,
    created: AtomicU64,
    resolved: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    cancelled: AtomicU64,
}

impl Bridge {
    pub fn new(writer: Arc<DriverWriter>, trace: Arc<TraceSender>) -> Arc<Self> {
        Arc::new(Bridge {
            pending: Mutex::new(HashMap::new()),
            writer,
            trace,
            high_water: AtomicU64::new(0),
            created: AtomicU64::new(0),
            resolved: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a pending promise and arms its timeout.
    pub fn create(
        self: &Arc<Self>,
        id: &str,
        kind: PromiseKind,
        origin: PromiseOrigin,
        timeout: Duration,
    ) -> Result<(), CreateError> {
        let mut pending = self.lock();
        if pending.contains_key(id) {
            return Err(CreateError::Duplicate);
        }
        if pending.len() >= MAX_PENDING_PROMISES {
            return Err(CreateError::TooMany);
        }
        let timer = {
            let bridge = Arc::downgrade(self);
            let id = id.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(timeout).await;
                if let Some(bridge) = bridge.upgrade() {
                    bridge.settle(&id, Settlement::TimedOut, None).await.ok();
                }
            })
            .abort_handle()
        };
        self.trace.send(
            TraceEvent::new(
                TraceEventKind::PromiseCreated,
                &origin.execution_id,
                origin.session.as_deref(),
            )
            .with_traceparent(origin.traceparent.as_deref())
            .with_attribute("kind", kind.as_str())
            .with_attribute("timeoutMs", timeout.as_millis()),
        );
        pending.insert(
            id.to_owned(),
            Pending {
                kind,
                origin,
                created: Instant::now(),
                timeout,
                timer,
            },
        );
        self.created.fetch_add(1, Relaxed);
        self.high_water.fetch_max(pending.len() as u64, Relaxed);
        Ok(())
    }

    /// Resolves a promise (any kind) with a JSON value.
    pub async fn resolve(&self, id: &str, value: Value) -> Result<(), SettleError> {
        self.settle(id, Settlement::Resolved(value), None).await
    }

    /// Answers an input request of `execution_id`.
    pub async fn answer_input(
        &self,
        execution_id: &str,
        input_id: &str,
        value: String,
    ) -> Result<(), SettleError> {
        let filter =
            |p: &Pending| p.kind == PromiseKind::Input && p.origin.execution_id == execution_id;
        self.settle(
            input_id,
            Settlement::Resolved(Value::String(value)),
            Some(&filter),
        )
        .await
    }

    /// Rejects a promise with the caller's reason.
    pub async fn reject(&self, id: &str, reason: String) -> Result<(), SettleError> {
        self.settle(id, Settlement::Rejected(reason), None).await
    }

    /// Cancels every promise of an execution that ended; returns how many.
    pub async fn cancel_execution(&self, execution_id: &str) -> usize {
        let ids: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, p)| p.origin.execution_id == execution_id)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &ids {
            self.settle(id, Settlement::Cancelled, None).await.ok();
        }
        ids.len()
    }

    /// Rejects every pending promise because the worker stops.
    pub async fn shutdown(&self, reason: &str) {
        let ids: Vec<String> = self.lock().keys().cloned().collect();
        if !ids.is_empty() {
            self.trace.send(
                TraceEvent::new(TraceEventKind::BridgeShutdown, "worker", None)
                    .with_attribute("pending", ids.len()),
            );
        }
        for id in ids {
            self.settle(&id, Settlement::Shutdown(reason.to_owned()), None)
                .await
                .ok();
        }
    }

    /// Tells the driver a promise it asked for cannot exist (duplicate id, too many pending).
    pub async fn refuse(&self, id: &str, reason: &str) {
        let message = ToDriver::Settle {
            promise_id: id,
            ok: false,
            value: &Value::Null,
            kind: "rejected",
            reason,
        };
        if let Err(error) = self.writer.send(&message).await {
            tracing::debug!(%error, "could not refuse a promise: interpreter gone");
        }
    }

    async fn settle(
        &self,
        id: &str,
        settlement: Settlement,
        filter: Option<&(dyn Fn(&Pending) -> bool + Sync)>,
    ) -> Result<(), SettleError> {
        let entry = {
            let mut pending = self.lock();
            match pending.get(id) {
                Some(p) if filter.is_none_or(|f| f(p)) => pending.remove(id),
                _ => None,
            }
        };
        let entry = entry.ok_or(SettleError::NotFound)?;
        entry.timer.abort();
        let age_ms = entry.created.elapsed().as_millis() as u64;
        let reply = self.count_settlement(id, settlement, entry.timeout);
        self.trace.send(
            TraceEvent::new(
                reply.trace_kind,
                &entry.origin.execution_id,
                entry.origin.session.as_deref(),
            )
            .with_traceparent(entry.origin.traceparent.as_deref())
            .with_duration_ms(age_ms)
            .with_attribute("kind", entry.kind.as_str()),
        );
        let message = ToDriver::Settle {
            promise_id: id,
            ok: reply.ok,
            value: &reply.value,
            kind: reply.kind,
            reason: &reply.reason,
        };
        if let Err(error) = self.writer.send(&message).await {
            tracing::debug!(%error, "promise settled while no interpreter runs");
        }
        Ok(())
    }

    /// Counts a settlement and words what the driver is told about it.
    fn count_settlement(&self, id: &str, settlement: Settlement, timeout: Duration) -> SettleReply {
        let (counter, reply) = match settlement {
            Settlement::Resolved(value) => (
                &self.resolved,
                SettleReply {
                    ok: true,
                    value,
                    kind: "resolved",
                    reason: String::new(),
                    trace_kind: TraceEventKind::PromiseResolved,
                },
            ),
            Settlement::Rejected(reason) => (
                &self.rejected,
                SettleReply::failed(
                    "rejected",
                    format!("promise {id} rejected: {reason}"),
                    TraceEventKind::PromiseRejected,
                ),
            ),
            Settlement::TimedOut => (
                &self.timed_out,
                SettleReply::failed(
                    "timedOut",
                    format!("promise {id} timed out after {} ms", timeout.as_millis()),
                    TraceEventKind::PromiseTimedOut,
                ),
            ),
            Settlement::Cancelled => (
                &self.cancelled,
                SettleReply::failed(
                    "cancelled",
                    format!("promise {id} cancelled with its execution"),
                    TraceEventKind::PromiseCancelled,
                ),
            ),
            Settlement::Shutdown(reason) => (
                &self.rejected,
                SettleReply::failed(
                    "shutdown",
                    format!("promise {id} rejected: {reason}"),
                    TraceEventKind::PromiseRejected,
                ),
            ),
        };
        counter.fetch_add(1, Relaxed);
        reply
    }

    pub fn counters(&self) -> BridgeCounters {
        BridgeCounters {
            pending: self.lock().len() as u64,
            high_water: self.high_water.load(Relaxed),
            created: self.created.load(Relaxed),
            resolved: self.resolved.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            timed_out: self.timed_out.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
        }
    }

    /// Metadata of pending promises, oldest first.
    pub fn pending(&self) -> Vec<PendingPromise> {
        let mut list: Vec<(Instant, PendingPromise)> = self
            .lock()
            .iter()
            .map(|(id, p)| {
                (
                    p.created,
                    PendingPromise {
                        id: id.clone(),
                        execution_id: p.origin.execution_id.clone(),
                        kind: p.kind.as_str().to_owned(),
                        age_ms: p.created.elapsed().as_millis() as u64,
                        timeout_ms: p.timeout.as_millis() as u64,
                    },
                )
            })
            .collect();
        list.sort_by_key(|(created, _)| *created);
        list.into_iter().map(|(_, p)| p).collect()
    }
}
