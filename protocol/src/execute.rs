//! The execute API: request bodies, the NDJSON events of an execution stream, and the other JSON
//! bodies of the worker's HTTP API. Clients, tests and the worker share these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::heartbeat::{
    BridgeCounters, CancelCounters, ExecutionCounts, ExecutorCounters, ModeCounts, WorkerState,
};

/// Content type of an execution stream: one JSON [`ExecutionEvent`] per line.
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";
/// Response header carrying the execution id, sent before the first event.
pub const EXECUTION_ID_HEADER: &str = "x-capsule-execution-id";
/// Most caller metadata entries accepted on an execute request or a checkpoint.
pub const MAX_METADATA_ENTRIES: usize = 32;

/// `POST /v1/executions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecuteRequest {
    pub code: String,
    /// Wall-clock limit from the moment the code starts running; absent = no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Caller labels (at most [`MAX_METADATA_ENTRIES`]), copied into trace events truncated.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Run the code in a transaction (see [`Transaction`]); absent = changes stay whatever happens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<Transaction>,
}

/// How an execution treats the namespace when it does not succeed. Decoded from a string so an
/// unknown value is refused with a message naming the field and the accepted values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "String")]
pub enum Transaction {
    /// The namespace is put back as it was before the code when the code raises, is cancelled or
    /// times out; the final event then carries `rolledBack: true`.
    RollbackOnError,
}

impl Transaction {
    /// Every accepted value, as it is written in JSON.
    pub const ACCEPTED: &'static [&'static str] = &["rollbackOnError"];
}

impl TryFrom<String> for Transaction {
    type Error = String;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        match value.as_str() {
            "rollbackOnError" => Ok(Transaction::RollbackOnError),
            other => Err(format!(
                "`transaction` must be one of: {} (got `{}`)",
                Transaction::ACCEPTED.join(", "),
                other.chars().take(64).collect::<String>()
            )),
        }
    }
}

/// Which stream an output chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// How the code ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ExecutionMode {
    Plain,
    TopLevelAwait,
    AsyncDef,
}

/// One line of an execution stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionEvent {
    pub execution_id: String,
    /// On the final event of a transaction (`transaction: rollbackOnError`) that did not succeed:
    /// the namespace was put back as it was before the code. Absent (false) otherwise, including
    /// when the interpreter had to be killed (`namespaceLost: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rolled_back: bool,
    /// On the final event: output chunks of this execution that never reached the client (dropped
    /// by a `DropNew` or `DropOldest` policy, or discarded at a drain timeout). Absent (0) when
    /// every chunk arrived.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub output_dropped: u64,
    #[serde(flatten)]
    pub body: EventBody,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What happened. `accepted`, `started`, `output` and `inputRequest` come first, in order; the
/// stream then ends with exactly one final event ([`EventBody::is_final`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum EventBody {
    /// The execution was queued; `queuePosition` 0 means it runs next.
    #[serde(rename_all = "camelCase")]
    Accepted { queue_position: u64 },
    /// The code started running. `namespaceLost` is true when the interpreter restarted since the
    /// previous execution (a crash outside any execution), so earlier names are gone.
    #[serde(rename_all = "camelCase")]
    Started { namespace_lost: bool },
    /// A chunk of stdout or stderr, in the order the code wrote it.
    #[serde(rename_all = "camelCase")]
    Output { stream: OutputStream, text: String },
    /// The code called `input()`: answer with `POST /v1/executions/{id}/input`.
    #[serde(rename_all = "camelCase")]
    InputRequest {
        input_id: String,
        prompt: String,
        timeout_ms: u64,
    },
    /// Final: the code finished; `repr` is the repr of the last expression, if any.
    #[serde(rename_all = "camelCase")]
    Result {
        repr: Option<String>,
        mode: ExecutionMode,
        duration_ms: u64,
    },
    /// Final: the code raised (or the worker failed it, e.g. `OutputQueueFull`, `WorkerShutdown`).
    #[serde(rename_all = "camelCase")]
    Error {
        ename: String,
        evalue: String,
        traceback: Vec<String>,
    },
    /// Final: cancelled through the API (or by a client disconnect). `namespaceLost` is true when
    /// the interrupt had no effect and the interpreter was killed and restarted.
    #[serde(rename_all = "camelCase")]
    Cancelled { namespace_lost: bool },
    /// Final: the execution's `timeoutMs` passed.
    #[serde(rename_all = "camelCase")]
    TimedOut {
        timeout_ms: u64,
        namespace_lost: bool,
    },
    /// Final: the client did not take the output within the drain timeout; `pending` outputs were
    /// discarded.
    #[serde(rename_all = "camelCase")]
    OutputDrainTimeout {
        pending: u64,
        queue_size: u64,
        sent: u64,
        dropped: u64,
    },
    /// Final: the interpreter died during the execution and was restarted; the namespace is lost.
    #[serde(rename_all = "camelCase")]
    InterpreterRestarted {
        exit_code: Option<i32>,
        reason: String,
    },
}

impl EventBody {
    /// Whether this event ends the stream.
    pub fn is_final(&self) -> bool {
        !matches!(
            self,
            EventBody::Accepted { .. }
                | EventBody::Started { .. }
                | EventBody::Output { .. }
                | EventBody::InputRequest { .. }
        )
    }
}

/// `POST /v1/executions/{id}/input`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputReply {
    pub input_id: String,
    pub value: String,
}

/// `POST /v1/promises/{id}/resolve`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromiseResolve {
    #[serde(default)]
    pub value: serde_json::Value,
}

/// `POST /v1/promises/{id}/reject`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromiseReject {
    pub reason: String,
}

/// Body of every 4xx/5xx reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `unauthorized`, `queueFull`, `noSession`.
    pub code: String,
    /// What went wrong, for humans.
    pub message: String,
}

/// Reply of `POST /v1/executions/{id}/cancel`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelReply {
    pub execution_id: String,
    /// `cancelling` (queued or running: the final event follows on its stream) or `notRunning`.
    pub status: String,
}

/// What the interpreter namespace holds, in counts: the part the checkpoint reply, the namespace
/// listing and the driver's report share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceCounts {
    /// User names (not starting with `__`).
    pub names: u64,
    pub functions: u64,
    pub classes: u64,
    pub modules: u64,
    /// Estimate of the pickled size of the non-module names, in bytes.
    pub estimated_bytes: u64,
    /// Names that could not be pickled (their in-memory size is counted instead).
    pub unpicklable: u64,
}

/// Reply of `GET /v1/checkpoint`: metadata about the namespace, never values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    #[serde(flatten)]
    pub counts: NamespaceCounts,
    /// RFC 3339.
    pub taken_at: String,
    /// Caller metadata from the query string, echoed back.
    pub metadata: BTreeMap<String, String>,
}

/// Most entries `GET /v1/namespace` lists (the largest names first).
pub const MAX_NAMESPACE_ENTRIES: usize = 1000;
/// Longest name listed, in bytes; longer names are cut (on a character boundary).
pub const MAX_NAMESPACE_NAME_BYTES: usize = 128;
/// Longest type name listed, in bytes.
pub const MAX_NAMESPACE_TYPE_BYTES: usize = 64;

/// One name of the interpreter namespace: its name, its type's name and its estimated size.
/// Never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceEntry {
    pub name: String,
    /// The value's type name (`int`, `DataFrame`, `module`, ...).
    #[serde(rename = "type")]
    pub type_name: String,
    /// Pickled size estimate (in-memory size when it cannot be pickled; 0 for modules).
    pub size_bytes: u64,
}

/// Reply of `GET /v1/namespace` (worker credential only): the checkpoint counts plus a bounded list of
/// names, largest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceListing {
    #[serde(flatten)]
    pub counts: NamespaceCounts,
    /// At most [`MAX_NAMESPACE_ENTRIES`], largest first.
    pub entries: Vec<NamespaceEntry>,
    /// Whether names were left out of `entries` by the bound.
    pub truncated: bool,
    /// RFC 3339.
    pub taken_at: String,
}

/// A pending promise or input request, for introspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingPromise {
    pub id: String,
    pub execution_id: String,
    /// `input` or `promise`.
    pub kind: String,
    pub age_ms: u64,
    pub timeout_ms: u64,
}

/// Trace sender counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceCounters {
    pub sent: u64,
    pub dropped: u64,
}

/// Reply of `GET /v1/stats`: the heartbeat's counters plus introspection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStats {
    pub state: WorkerState,
    pub session: Option<String>,
    pub draining: bool,
    pub namespace_size: u64,
    pub interpreter_restarts: u64,
    pub executions: ExecutionCounts,
    pub modes: ModeCounts,
    pub executor: ExecutorCounters,
    pub bridge: BridgeCounters,
    pub cancels: CancelCounters,
    pub trace: TraceCounters,
    /// Executions whose async code contained a blocking call such as `time.sleep`.
    pub blocking_call_warnings: u64,
    /// Transactions whose namespace was rolled back (the code raised, was cancelled or timed out).
    #[serde(default)]
    pub transactions_rolled_back: u64,
    pub pending_promises: Vec<PendingPromise>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_flat_tagged_camel_case() {
        let event = ExecutionEvent {
            execution_id: "e1".into(),
            rolled_back: false,
            output_dropped: 0,
            body: EventBody::OutputDrainTimeout {
                pending: 1,
                queue_size: 2,
                sent: 3,
                dropped: 4,
            },
        };
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(
            value,
            json!({"executionId": "e1", "type": "outputDrainTimeout", "pending": 1,
                   "queueSize": 2, "sent": 3, "dropped": 4})
        );
        let back: ExecutionEvent = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
        assert!(back.body.is_final());
    }

    #[test]
    fn request_rejects_unknown_fields() {
        assert!(serde_json::from_value::<ExecuteRequest>(json!({"code": "1", "x": 1})).is_err());
        let request: ExecuteRequest =
            serde_json::from_value(json!({"code": "1", "timeoutMs": 5})).unwrap();
        assert_eq!(request.timeout_ms, Some(5));
        assert_eq!(request.transaction, None);
    }

    #[test]
    fn transaction_accepts_its_value_and_names_the_field_otherwise() {
        let request: ExecuteRequest =
            serde_json::from_value(json!({"code": "1", "transaction": "rollbackOnError"})).unwrap();
        assert_eq!(request.transaction, Some(Transaction::RollbackOnError));
        assert_eq!(
            serde_json::to_value(&request).unwrap()["transaction"],
            "rollbackOnError"
        );
        let error =
            serde_json::from_value::<ExecuteRequest>(json!({"code": "1", "transaction": "always"}))
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("`transaction` must be one of: rollbackOnError"),
            "{error}"
        );
    }

    #[test]
    fn output_dropped_is_written_only_when_some_output_was_dropped() {
        let mut event = ExecutionEvent {
            execution_id: "e".into(),
            rolled_back: false,
            output_dropped: 0,
            body: EventBody::Result {
                repr: None,
                mode: ExecutionMode::Plain,
                duration_ms: 1,
            },
        };
        let value = serde_json::to_value(&event).unwrap();
        assert!(value.get("outputDropped").is_none(), "{value}");
        event.output_dropped = 7;
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["outputDropped"], 7);
        assert_eq!(
            serde_json::from_value::<ExecutionEvent>(value).unwrap(),
            event
        );
    }

    #[test]
    fn rolled_back_is_written_only_when_true() {
        let mut event = ExecutionEvent {
            execution_id: "e".into(),
            rolled_back: false,
            output_dropped: 0,
            body: EventBody::Cancelled {
                namespace_lost: false,
            },
        };
        assert!(serde_json::to_value(&event)
            .unwrap()
            .get("rolledBack")
            .is_none());
        event.rolled_back = true;
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["rolledBack"], true);
        assert_eq!(
            serde_json::from_value::<ExecutionEvent>(value).unwrap(),
            event
        );
    }
}
