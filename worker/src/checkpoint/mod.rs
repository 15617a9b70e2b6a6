//! Checkpoints that restore (issue #18): the driver pickles the namespace into a file in its
//! working directory, the worker seals it ([`seal`]) under the session's key and keeps it in a
//! [`store::CheckpointStore`]; a restore opens it (authenticated before any byte reaches Python)
//! and loads it into a fresh interpreter. Runs on the executor task, between executions, so the
//! namespace never changes under a save. Format and choices: docs/checkpoints.md.

pub mod api;
pub mod auto;
pub mod driver;
pub mod seal;
pub mod store;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::interpreter::Interpreter;
use crate::runtime::Runtime;
use crate::session::CheckpointIdentity;
use crate::standby::Standby;
use capsule_protocol::checkpoint::{
    CheckpointCreated, CheckpointList, CheckpointRestored, CheckpointSummary, LastCheckpoint,
    LATEST, MAX_LISTED_CHECKPOINTS,
};
use capsule_protocol::trace::{session_trace_id, TraceEvent, TraceEventKind};
use driver::{Loaded, Saved};
use store::{Blob, CheckpointStore, Scope};

/// Largest sealed metadata blob read (names are bounded, so far below this).
const MAX_META_BYTES: u64 = 1024 * 1024;

/// What a checkpoint call needs: the store and the bound session.
fn context(runtime: &Runtime) -> Result<(Arc<dyn CheckpointStore>, CheckpointIdentity)> {
    let store = runtime
        .checkpoint_store
        .clone()
        .ok_or(Error::CheckpointsDisabled)?;
    let identity = runtime
        .session
        .checkpoint_identity()
        .ok_or_else(|| Error::CheckpointFailed("no session is bound to this worker".into()))?;
    Ok((store, identity))
}

fn new_id() -> String {
    let ms = jiff::Timestamp::now().as_millisecond().max(0);
    format!("{ms:013}-{}", hex::encode(rand::random::<[u8; 4]>()))
}

/// Saves the namespace; the interpreter is handed back (a fresh one if it died meanwhile).
pub async fn create(
    runtime: &Arc<Runtime>,
    interpreter: Interpreter,
    standby: &mut Standby,
) -> (Interpreter, Result<CheckpointCreated>) {
    let started = Instant::now();
    let context = match context(runtime) {
        Ok(context) => context,
        Err(error) => return (interpreter, Err(record_failure(runtime, "create", error))),
    };
    let (interpreter, saved) = driver::save(runtime, interpreter, standby).await;
    let result = match saved {
        Ok(saved) => store_saved(runtime, context, saved, started).await,
        Err(error) => Err(error),
    };
    let result = match result {
        Ok(created) => Ok(record_created(runtime, created)),
        Err(error) => Err(record_failure(runtime, "create", error)),
    };
    (interpreter, result)
}

/// Seals the driver's file and stores it, then keeps only the newest `CAPSULE_CHECKPOINT_KEEP`.
async fn store_saved(
    runtime: &Arc<Runtime>,
    (store, identity): (Arc<dyn CheckpointStore>, CheckpointIdentity),
    saved: Saved,
    started: Instant,
) -> Result<CheckpointCreated> {
    let max = runtime.config.checkpoint_max_bytes;
    let keep = runtime.config.checkpoint_keep as usize;
    let id = new_id();
    tokio::task::spawn_blocking(move || {
        let plain = saved.read_file(max.saturating_sub(seal::OVERHEAD))?;
        let sealed = seal::seal(&identity.key, &identity.scope.aad(&id, "data"), &plain);
        drop(plain);
        let summary = CheckpointSummary {
            id: id.clone(),
            size_bytes: sealed.len() as u64,
            names: saved.names.clone(),
            names_total: saved.names_total,
            created_at: jiff::Timestamp::now().to_string(),
        };
        let meta = serde_json::to_vec(&summary).expect("a summary serialises");
        let meta = seal::seal(&identity.key, &identity.scope.aad(&id, "meta"), &meta);
        store.put(&identity.scope, &id, &sealed, &meta)?;
        prune(&*store, &identity.scope, keep);
        Ok(CheckpointCreated {
            id,
            size_bytes: summary.size_bytes,
            raw_bytes: saved.raw_bytes,
            names: summary.names,
            names_total: summary.names_total,
            skipped: saved.skipped,
            skipped_total: saved.skipped_total,
            duration_ms: started.elapsed().as_millis() as u64,
            created_at: summary.created_at,
        })
    })
    .await
    .unwrap_or_else(|e| Err(Error::CheckpointFailed(format!("sealing task: {e}"))))
}

/// Deletes all but the newest `keep` checkpoints; a failure is logged, the new one stays.
fn prune(store: &dyn CheckpointStore, scope: &Scope, keep: usize) {
    let ids = match store.list(scope) {
        Ok(ids) => ids,
        Err(error) => return tracing::warn!(%error, "could not list checkpoints to prune"),
    };
    for old in ids.iter().skip(keep) {
        if let Err(error) = store.delete(scope, old) {
            tracing::warn!(%error, checkpoint = %old, "could not delete an old checkpoint");
        }
    }
}

/// Loads checkpoint `id` (or `latest`) into a fresh interpreter. Everything that can be checked
/// without Python (existence, size, authentication) is checked before the current interpreter
/// is replaced; a failure after that leaves a fresh, empty namespace.
pub async fn restore(
    runtime: &Arc<Runtime>,
    interpreter: Interpreter,
    standby: &mut Standby,
    id: &str,
) -> (Interpreter, Result<CheckpointRestored>) {
    let started = Instant::now();
    let opened = match context(runtime) {
        Ok(context) => open_checkpoint(runtime, context, id).await,
        Err(error) => Err(error),
    };
    let (id, plain) = match opened {
        Ok(opened) => opened,
        Err(error) => return (interpreter, Err(record_failure(runtime, "restore", error))),
    };
    // As a reset: the old process and all it started are gone before the checkpoint loads.
    interpreter.kill(Some(&runtime.writer)).await;
    runtime
        .fork_server
        .sweep(&runtime.config.scratch_dir())
        .await;
    let fresh = standby.next(runtime).await;
    standby.wait_protected().await;
    let (fresh, loaded) = driver::load(runtime, fresh, standby, &id, plain).await;
    let result = match loaded {
        Ok(Loaded {
            names,
            names_total,
            namespace_size,
        }) => {
            runtime.stats.namespace_size.store(namespace_size, Relaxed);
            Ok(record_restored(
                runtime,
                CheckpointRestored {
                    id,
                    names,
                    names_total,
                    duration_ms: started.elapsed().as_millis() as u64,
                },
            ))
        }
        Err(error) => Err(record_failure(runtime, "restore", error)),
    };
    (fresh, result)
}

/// Resolves `latest`, reads the sealed file within the bound and authenticates it.
async fn open_checkpoint(
    runtime: &Runtime,
    (store, identity): (Arc<dyn CheckpointStore>, CheckpointIdentity),
    id: &str,
) -> Result<(String, Vec<u8>)> {
    let max = runtime.config.checkpoint_max_bytes;
    let id = id.to_owned();
    tokio::task::spawn_blocking(move || {
        let id = if id == LATEST {
            store
                .list(&identity.scope)?
                .into_iter()
                .next()
                .ok_or(Error::CheckpointNotFound { id })?
        } else {
            id
        };
        let mut sealed = store.get(&identity.scope, &id, Blob::Data, max)?;
        let aad = identity.scope.aad(&id, "data");
        let plain = seal::open(&identity.key, &aad, &mut sealed)
            .map_err(|e| Error::CheckpointCorrupt {
                id: id.clone(),
                reason: e.to_string(),
            })?
            .to_vec();
        Ok((id, plain))
    })
    .await
    .unwrap_or_else(|e| Err(Error::CheckpointFailed(format!("opening task: {e}"))))
}

/// The session's checkpoints, newest first; unreadable metadata is skipped with a warning.
pub async fn list(runtime: &Runtime) -> Result<CheckpointList> {
    let (store, identity) = context(runtime)?;
    tokio::task::spawn_blocking(move || {
        let ids = store.list(&identity.scope)?;
        let checkpoints = ids
            .iter()
            .take(MAX_LISTED_CHECKPOINTS)
            .filter_map(|id| match summary(&*store, &identity, id) {
                Ok(summary) => Some(summary),
                Err(error) => {
                    tracing::warn!(%error, checkpoint = %id, "skipped an unreadable checkpoint");
                    None
                }
            })
            .collect();
        Ok(CheckpointList { checkpoints })
    })
    .await
    .unwrap_or_else(|e| Err(Error::CheckpointFailed(format!("listing task: {e}"))))
}

fn summary(
    store: &dyn CheckpointStore,
    identity: &CheckpointIdentity,
    id: &str,
) -> Result<CheckpointSummary> {
    let mut sealed = store.get(&identity.scope, id, Blob::Meta, MAX_META_BYTES)?;
    let corrupt = |reason: String| Error::CheckpointCorrupt {
        id: id.to_owned(),
        reason,
    };
    let plain = seal::open(&identity.key, &identity.scope.aad(id, "meta"), &mut sealed)
        .map_err(|e| corrupt(e.to_string()))?;
    serde_json::from_slice(plain).map_err(|e| corrupt(e.to_string()))
}

fn trace(runtime: &Runtime, kind: TraceEventKind) -> TraceEvent {
    let session = runtime.session.session_name().unwrap_or_default();
    TraceEvent::new(kind, &session_trace_id(&session), Some(&session))
}

fn record_created(runtime: &Runtime, created: CheckpointCreated) -> CheckpointCreated {
    runtime.stats.checkpoints_created.fetch_add(1, Relaxed);
    *runtime
        .last_checkpoint
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(LastCheckpoint::from(&created));
    runtime.trace.send(
        trace(runtime, TraceEventKind::CheckpointCreated)
            .with_duration_ms(created.duration_ms)
            .with_attribute("checkpointId", &created.id)
            .with_attribute("sizeBytes", created.size_bytes)
            .with_attribute("rawBytes", created.raw_bytes)
            .with_attribute("names", created.names.len())
            .with_attribute("skipped", created.skipped_total),
    );
    tracing::info!(
        checkpoint = %created.id,
        size_bytes = created.size_bytes,
        raw_bytes = created.raw_bytes,
        names = created.names.len(),
        skipped = created.skipped_total,
        duration_ms = created.duration_ms,
        "checkpoint created"
    );
    created
}

fn record_restored(runtime: &Runtime, restored: CheckpointRestored) -> CheckpointRestored {
    runtime.stats.checkpoints_restored.fetch_add(1, Relaxed);
    runtime.trace.send(
        trace(runtime, TraceEventKind::CheckpointRestored)
            .with_duration_ms(restored.duration_ms)
            .with_attribute("checkpointId", &restored.id)
            .with_attribute("names", restored.names.len()),
    );
    tracing::info!(checkpoint = %restored.id, names = restored.names.len(), duration_ms = restored.duration_ms, "checkpoint restored");
    restored
}

/// Counts, traces and logs a failure (its message holds sizes and ids, never values).
fn record_failure(runtime: &Runtime, call: &str, error: Error) -> Error {
    if matches!(error, Error::CheckpointsDisabled | Error::CheckpointBusy) {
        return error;
    }
    runtime.stats.checkpoint_failures.fetch_add(1, Relaxed);
    runtime.trace.send(
        trace(runtime, TraceEventKind::CheckpointFailed)
            .with_attribute("call", call)
            .with_attribute("code", error_code(&error)),
    );
    tracing::warn!(call, code = error_code(&error), %error, "checkpoint call failed");
    error
}

/// The API error code of a checkpoint failure.
pub fn error_code(error: &Error) -> &'static str {
    match error {
        Error::CheckpointsDisabled => "checkpointsDisabled",
        Error::CheckpointNotFound { .. } => "checkpointNotFound",
        Error::CheckpointTooLarge { .. } => "checkpointTooLarge",
        Error::CheckpointCorrupt { .. } => "checkpointCorrupt",
        Error::CheckpointBusy => "executionRunning",
        _ => "checkpointFailed",
    }
}
