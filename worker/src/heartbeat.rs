//! The heartbeat loop: reports to the operator every interval and obeys its reply.
//!
//! It runs in its own task and never touches the executor's path except to queue a reset, so it
//! never blocks execution; a failed send is logged and retried with exponential backoff (capped at
//! [`MAX_BACKOFF`]) and the loop only stops at shutdown, after one last heartbeat that carries the
//! final counters (executions finished since the previous heartbeat would otherwise never reach
//! the pool's totals when the pod is deleted).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use crate::procstat::{rss_bytes, ticks_to_millis, CpuSampler};
use crate::runtime::Runtime;
use crate::session::Precondition;
use capsule_protocol::frame::MAX_FRAME_BYTES;
use capsule_protocol::heartbeat::{Capabilities, Heartbeat, HeartbeatReply};

/// Longest wait between failed sends.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Bound on one heartbeat request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the last heartbeat at shutdown: the pod's grace period is ticking.
const FINAL_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest heartbeat reply read, in bytes.
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

fn capabilities(runtime: &Runtime) -> Capabilities {
    let config = &runtime.config;
    Capabilities {
        worker_version: env!("CARGO_PKG_VERSION").to_owned(),
        python_version: runtime.python_version(),
        max_request_bytes: config.max_request_bytes,
        max_frame_bytes: MAX_FRAME_BYTES as u64,
        output_queue_capacity: config.output_queue_capacity,
        backpressure: config.backpressure.as_str().to_owned(),
        execution_queue_limit: config.execution_queue_limit,
        drain_timeout_ms: config.drain_timeout_ms,
        input_timeout_ms: config.input_timeout_ms,
        promise_timeout_ms: config.promise_timeout_ms,
        cancel_grace_ms: config.cancel_grace_ms,
    }
}

/// RSS and accumulated CPU ticks of the worker's interpreters, the standby and the fork server
/// (their memory and CPU are the worker's too), the worker's own ticks included. In an interpreter
/// container their pids are not the worker's: the fork server reports them for the container.
fn interpreters_usage(runtime: &Runtime, cpu: &mut CpuSampler) -> (u64, u64) {
    if let Some((rss, ticks)) = runtime.fork_server.remote_usage() {
        return (rss, cpu.read_total(&[std::process::id()], Some(ticks)));
    }
    let pids = [
        runtime.interpreter_pid.load(Relaxed),
        runtime.standby_pid.load(Relaxed),
        runtime.fork_server.pid(),
    ];
    let rss = pids
        .iter()
        .filter(|&&pid| pid != 0)
        .map(|pid| rss_bytes(&pid.to_string()))
        .sum();
    // Accumulated per pid: a reset's new interpreter does not take the old one's ticks away.
    let ticks = cpu.read_total(&[std::process::id(), pids[0], pids[1], pids[2]], None);
    (rss, ticks)
}

/// Builds the heartbeat body from the current counters.
pub fn build(
    runtime: &Runtime,
    seq: u64,
    with_capabilities: bool,
    cpu: &mut CpuSampler,
) -> Heartbeat {
    let worker_rss = rss_bytes("self");
    let (rss, ticks) = interpreters_usage(runtime, cpu);
    let rss = worker_rss + rss;
    Heartbeat {
        pod: runtime.config.pod_name.clone(),
        namespace: runtime.config.pod_namespace.clone(),
        pool: runtime.config.pool.clone(),
        seq,
        sent_at: jiff::Timestamp::now().to_string(),
        started_at: runtime.started_at.to_string(),
        capabilities: with_capabilities.then(|| capabilities(runtime)),
        state: runtime.state(),
        session: runtime.session.session_name(),
        rss_bytes: rss,
        worker_rss_bytes: worker_rss,
        cpu_percent: cpu.sample(ticks),
        cpu_millis: ticks_to_millis(ticks),
        namespace_size: runtime.stats.namespace_size.load(Relaxed),
        interpreter_restarts: runtime.stats.interpreter_restarts.load(Relaxed),
        executions: runtime.stats.executions(),
        executor: runtime.stats.executor(),
        bridge: runtime.bridge.counters(),
        cancels: runtime.stats.cancels(),
        modes: runtime.stats.modes(),
        blocking_call_warnings: runtime.stats.blocking_call_warnings.load(Relaxed),
        transactions_rolled_back: runtime.stats.transactions_rolled_back.load(Relaxed),
        trace: runtime.trace.counters(),
        warmup_failure: runtime
            .warmup_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone(),
        checkpoints_created: runtime.stats.checkpoints_created.load(Relaxed),
        checkpoints_restored: runtime.stats.checkpoints_restored.load(Relaxed),
        checkpoint_failures: runtime.stats.checkpoint_failures.load(Relaxed),
        last_checkpoint: runtime.last_checkpoint(),
    }
}

/// Applies the operator's reply: the session binding (level-triggered), unless the binding changed
/// after the heartbeat was built (`seen` is the session store's change count then): the operator's
/// direct bind or release, which may have crossed the reply, is newer than the view it replied from.
pub fn apply_reply(runtime: &Arc<Runtime>, reply: HeartbeatReply, seen: u64) {
    let precondition = Precondition::Unchanged(seen);
    match reply.session {
        None => {}
        Some(None) => {
            runtime.release_session_if(false, precondition);
        }
        Some(Some(binding)) => {
            if let Err(message) = runtime.bind_session_if(binding, precondition) {
                tracing::warn!(%message, "heartbeat reply carried an invalid session binding");
            }
        }
    }
}

/// One heartbeat per interval, backoff after failures, until `stop` turns true; then one last
/// heartbeat with the final counters.
pub async fn run(runtime: Arc<Runtime>, url: String, mut stop: tokio::sync::watch::Receiver<bool>) {
    let client = match reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build() {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the heartbeat HTTP client; heartbeats disabled");
            return;
        }
    };
    let interval = runtime.config.heartbeat_interval();
    let mut cpu = CpuSampler::new();
    let mut seq = 0u64;
    let mut capabilities_acknowledged = false;
    let mut failures = 0u32;
    loop {
        seq += 1;
        let seen = runtime.session.changes();
        let heartbeat = build(&runtime, seq, !capabilities_acknowledged, &mut cpu);
        // Capabilities are resent until the operator accepted a copy that names the Python version
        // (unknown while the first interpreter starts).
        let complete_capabilities = heartbeat
            .capabilities
            .as_ref()
            .is_some_and(|c| !c.python_version.is_empty());
        let delay = match send(request(&client, &url, &runtime, &heartbeat)).await {
            Ok(reply) => {
                if failures > 0 {
                    tracing::info!(failures, "heartbeats delivered again");
                }
                failures = 0;
                capabilities_acknowledged |= complete_capabilities;
                apply_reply(&runtime, reply, seen);
                interval
            }
            Err(message) => {
                failures += 1;
                let backoff = Duration::from_millis(500)
                    .saturating_mul(1u32 << failures.min(6))
                    .min(MAX_BACKOFF);
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(%message, failures, retry_in_ms = backoff.as_millis() as u64, "heartbeat failed");
                }
                backoff
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            // A permit stored while the last heartbeat was under way is taken here at once.
            _ = runtime.became_ready.notified() => {}
            // The guard `wait_for` returns must not live across the send below.
            _ = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
                seq += 1;
                let heartbeat = build(&runtime, seq, false, &mut cpu);
                let last = request(&client, &url, &runtime, &heartbeat).timeout(FINAL_REQUEST_TIMEOUT);
                match send(last).await {
                    Ok(_) => tracing::info!("last heartbeat delivered"),
                    Err(message) => tracing::warn!(%message, "last heartbeat failed"),
                }
                return;
            }
        }
    }
}

/// The POST of one heartbeat with the worker credential.
fn request(
    client: &reqwest::Client,
    url: &str,
    runtime: &Runtime,
    heartbeat: &Heartbeat,
) -> reqwest::RequestBuilder {
    let request = client.post(url).json(heartbeat);
    match &runtime.config.worker_token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
}

async fn send(request: reqwest::RequestBuilder) -> Result<HeartbeatReply, String> {
    let response = request.send().await.map_err(|e| e.to_string())?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("operator answered {status}"));
    }
    let body = response.bytes().await.map_err(|e| e.to_string())?;
    if body.len() > MAX_REPLY_BYTES {
        return Err(format!("reply larger than {MAX_REPLY_BYTES} bytes"));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(HeartbeatReply::default());
    }
    serde_json::from_slice(&body).map_err(|e| format!("malformed heartbeat reply: {e}"))
}
