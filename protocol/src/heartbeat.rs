//! Heartbeat from a worker to the operator, and the operator's reply.
//!
//! Every counter is monotonic since the worker process started; gauges (`pending`, `namespaceSize`,
//! `rssBytes`, `cpuPercent`) are sampled when the heartbeat is built.

use serde::{Deserialize, Deserializer, Serialize};

/// Worker lifecycle state as reported to the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WorkerState {
    /// The interpreter is starting or running the pool's warm-up code.
    Warming,
    /// Ready and nothing running or queued.
    Idle,
    /// An execution is running or queued.
    Busy,
}

/// Executions by final outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionCounts {
    pub ok: u64,
    /// Errors raised by the code, plus executions that ended on an interpreter restart, an output
    /// drain timeout or a full output queue under the `Error` policy.
    pub error: u64,
    pub cancelled: u64,
    pub timed_out: u64,
}

/// Executions by how the code ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModeCounts {
    /// Plain statements.
    pub plain: u64,
    /// Code with a top-level `await` (ran on the interpreter's persistent event loop).
    pub top_level_await: u64,
    /// Code that defines `async def` functions without awaiting at top level.
    pub async_def: u64,
}

/// Output pump counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorCounters {
    pub outputs_enqueued: u64,
    pub outputs_sent: u64,
    pub outputs_dropped: u64,
    pub max_queue_depth: u64,
    pub drain_timeouts: u64,
}

/// Promise bridge counters (input requests and `capsule.promise` alike).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BridgeCounters {
    /// Pending now (a gauge).
    pub pending: u64,
    /// Most promises pending at once since start.
    pub high_water: u64,
    pub created: u64,
    pub resolved: u64,
    pub rejected: u64,
    pub timed_out: u64,
    pub cancelled: u64,
}

/// Cancellation counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelCounters {
    /// Cancel requests received.
    pub requested: u64,
    /// Requests that ended a queued or running execution.
    pub effective: u64,
    /// Requests for an execution that was not queued or running.
    pub noop: u64,
    /// Executions ended by `KeyboardInterrupt` raised in the code (cancel or timeout).
    pub interrupted: u64,
    /// Executions whose interpreter had to be killed because the interrupt had no effect in time.
    #[serde(default)]
    pub killed: u64,
}

/// Versions and limits, sent in the first heartbeat after start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    pub worker_version: String,
    pub python_version: String,
    pub max_request_bytes: u64,
    pub max_frame_bytes: u64,
    pub output_queue_capacity: u64,
    pub backpressure: String,
    pub execution_queue_limit: u64,
    pub drain_timeout_ms: u64,
    pub input_timeout_ms: u64,
    /// Absent from workers before it was reported.
    #[serde(default)]
    pub promise_timeout_ms: u64,
    pub cancel_grace_ms: u64,
}

/// Worker → operator, every heartbeat interval, `POST $CAPSULE_HEARTBEAT_URL` with the worker credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub pod: String,
    pub namespace: String,
    pub pool: String,
    /// Starts at 1 and grows by one per heartbeat attempt.
    pub seq: u64,
    /// RFC 3339.
    pub sent_at: String,
    /// RFC 3339: when this worker process started.
    pub started_at: String,
    /// Present until the operator has accepted one heartbeat from this process whose capabilities
    /// name the Python version (empty while the first interpreter starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    pub state: WorkerState,
    pub session: Option<String>,
    /// Resident memory of the worker plus its interpreter.
    pub rss_bytes: u64,
    /// Resident memory of the `capsule-worker` process alone: its cost beyond the interpreters.
    /// Absent (0) from workers before it was reported.
    #[serde(default)]
    pub worker_rss_bytes: u64,
    /// CPU of the worker plus its interpreter since the previous heartbeat, 100 = one core.
    pub cpu_percent: f64,
    /// CPU time of the worker plus its interpreters since the worker started, in milliseconds:
    /// monotonic across interpreter resets (each process's last reading stays counted). Absent
    /// (0) from workers before it was reported.
    #[serde(default)]
    pub cpu_millis: u64,
    /// Number of user names in the interpreter namespace.
    pub namespace_size: u64,
    pub interpreter_restarts: u64,
    pub executions: ExecutionCounts,
    pub executor: ExecutorCounters,
    pub bridge: BridgeCounters,
    pub cancels: CancelCounters,
    /// Executions by mode. Absent from workers before it was reported.
    #[serde(default)]
    pub modes: ModeCounts,
    /// Executions whose async code contained a blocking call such as `time.sleep`.
    #[serde(default)]
    pub blocking_call_warnings: u64,
    /// Transactions (`transaction: rollbackOnError`) whose namespace was rolled back. Absent from
    /// workers before it was reported.
    #[serde(default)]
    pub transactions_rolled_back: u64,
    /// Trace events handed to the sidecar, and dropped when its socket was gone or full.
    #[serde(default)]
    pub trace: crate::execute::TraceCounters,
    /// Set while the pool's warm-up code raises in this worker's interpreters (it keeps retrying
    /// with backoff and is not ready meanwhile); absent once a warm-up succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup_failure: Option<WarmupFailure>,
    /// Checkpoints written, restored, and create or restore calls that failed.
    #[serde(default)]
    pub checkpoints_created: u64,
    #[serde(default)]
    pub checkpoints_restored: u64,
    #[serde(default)]
    pub checkpoint_failures: u64,
    /// The newest checkpoint this worker process wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<crate::checkpoint::LastCheckpoint>,
}

/// The pool's warm-up code raised. Warm-up code is the platform team's (the pool spec), not a
/// session's, so its exception type and message are reported, cut at [`MAX_WARMUP_MESSAGE_BYTES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WarmupFailure {
    pub ename: String,
    pub evalue: String,
    /// Warm-up attempts that raised in a row.
    pub attempts: u64,
}

/// The longest `ename` and `evalue` of a [`WarmupFailure`], in bytes.
pub const MAX_WARMUP_MESSAGE_BYTES: usize = 256;

impl WarmupFailure {
    /// The failure of an attempt, its texts cut to the bound on a character boundary.
    pub fn new(ename: &str, evalue: &str, attempts: u64) -> WarmupFailure {
        WarmupFailure {
            ename: cut(ename, MAX_WARMUP_MESSAGE_BYTES).to_owned(),
            evalue: cut(evalue, MAX_WARMUP_MESSAGE_BYTES).to_owned(),
            attempts,
        }
    }
}

fn cut(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A session binding: which session owns the worker and the sha256 of its token. Its `Debug`
/// leaves the checkpoint key out, so a logged binding never carries it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionBinding {
    pub session: String,
    pub namespace: String,
    /// Lower-case hex sha256 of the session token.
    pub token_sha256: String,
    /// The Session object's uid: checkpoints are stored under it, so a new session of the same
    /// name never sees an old one's. Absent from earlier operators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_uid: Option<String>,
    /// Lower-case hex of the 32-byte key checkpoints of this session are sealed with
    /// ([`crate::auth::checkpoint_key`]); every worker of the pool gets the same one for the same
    /// session. Absent: the worker seals under a random key of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_key: Option<String>,
}

impl SessionBinding {
    /// The binding with the session's checkpoint key derived from `pool_key`, when both the key
    /// and the session's uid are known.
    pub fn sealed_with(mut self, pool_key: Option<&str>) -> Self {
        if let (Some(key), Some(uid)) = (pool_key, self.session_uid.as_deref()) {
            self.checkpoint_key = Some(crate::auth::checkpoint_key(
                key.as_bytes(),
                &self.namespace,
                &self.session,
                uid,
            ));
        }
        self
    }
}

impl std::fmt::Debug for SessionBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionBinding")
            .field("session", &self.session)
            .field("namespace", &self.namespace)
            .field("token_sha256", &self.token_sha256)
            .field("session_uid", &self.session_uid)
            .field(
                "checkpoint_key",
                &self.checkpoint_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Operator → worker, the reply to a heartbeat. (Earlier operators also sent `instructions`; the
/// operator never asked for one, resets and releases go through the worker's API, so the field is
/// gone and ignored when present.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeartbeatReply {
    /// Level-triggered binding: field absent = no opinion (the worker keeps its binding);
    /// `null` = unbound; an object = bound to that session.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_field"
    )]
    pub session: Option<Option<SessionBinding>>,
}

/// Lets `Option<Option<T>>` tell an absent field (outer `None`) from an explicit `null`.
fn present_field<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reply_tells_absent_from_null_session() {
        let absent: HeartbeatReply = serde_json::from_value(json!({})).unwrap();
        assert_eq!(absent.session, None);
        let null: HeartbeatReply =
            serde_json::from_value(json!({"instructions": ["reset"], "session": null})).unwrap();
        assert_eq!(
            null.session,
            Some(None),
            "an earlier operator's instructions are ignored"
        );
        let bound: HeartbeatReply = serde_json::from_value(json!({
            "session": {"session": "s1", "namespace": "ns", "tokenSha256": "ab"}
        }))
        .unwrap();
        assert_eq!(
            bound.session,
            Some(Some(SessionBinding {
                session: "s1".into(),
                namespace: "ns".into(),
                token_sha256: "ab".into(),
                session_uid: None,
                checkpoint_key: None,
            }))
        );
    }

    #[test]
    fn binding_carries_uid_and_checkpoint_key_when_set() {
        let mut binding = SessionBinding {
            session: "s1".into(),
            namespace: "ns".into(),
            token_sha256: "ab".into(),
            session_uid: None,
            checkpoint_key: None,
        };
        let value = serde_json::to_value(&binding).unwrap();
        assert!(value.get("sessionUid").is_none() && value.get("checkpointKey").is_none());
        binding.session_uid = Some("u1".into());
        binding.checkpoint_key = Some("00".repeat(32));
        let value = serde_json::to_value(&binding).unwrap();
        assert_eq!(value["sessionUid"], json!("u1"));
        assert_eq!(value["checkpointKey"], json!("00".repeat(32)));
        let logged = format!("{binding:?}");
        assert!(
            logged.contains("<redacted>") && !logged.contains(&"00".repeat(32)),
            "{logged}"
        );
    }

    #[test]
    fn counters_are_camel_case() {
        let value = serde_json::to_value(CancelCounters::default()).unwrap();
        assert!(value.get("noop").is_some());
        let value = serde_json::to_value(ExecutionCounts::default()).unwrap();
        assert!(value.get("timedOut").is_some());
        let value = serde_json::to_value(BridgeCounters::default()).unwrap();
        assert!(value.get("highWater").is_some() && value.get("timedOut").is_some());
    }
}
