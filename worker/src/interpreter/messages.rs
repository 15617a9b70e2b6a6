//! The frames the worker and the driver exchange, as typed messages ([`ToDriver`], [`FromDriver`]),
//! each with the `type` name diagnostics report.

use serde::{Deserialize, Serialize};

use capsule_protocol::checkpoint::SkippedName;
use capsule_protocol::execute::{ExecutionMode, NamespaceCounts, NamespaceEntry, OutputStream};

/// Worker → driver frames.
#[derive(Debug, Clone, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ToDriver<'a> {
    Execute {
        id: &'a str,
        code: &'a str,
        /// Roll the namespace back when the code does not succeed (`transaction: rollbackOnError`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        transaction: bool,
    },
    Cancel {
        id: &'a str,
    },
    Settle {
        promise_id: &'a str,
        ok: bool,
        value: &'a serde_json::Value,
        kind: &'a str,
        reason: &'a str,
    },
    Checkpoint {
        request_id: u64,
        /// Also list the names (`GET /v1/namespace`), not only count them.
        list_names: bool,
    },
    /// Serve a session from `dir`: the driver makes it the working directory, `HOME` and `TMPDIR`.
    Enter {
        dir: &'a str,
    },
    /// Pickle and compress the namespace into the file at `path` (see worker/src/checkpoint).
    CheckpointSave {
        request_id: u64,
        path: &'a str,
    },
    /// Load the namespace from the (opened) checkpoint file at `path`, then delete it.
    CheckpointLoad {
        request_id: u64,
        path: &'a str,
    },
}

/// Namespace metadata the driver reports for `GET /v1/checkpoint`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointFrame {
    #[serde(flatten)]
    pub counts: NamespaceCounts,
    /// Present when the request asked for names; bounded again by the worker.
    #[serde(default)]
    pub entries: Vec<NamespaceEntry>,
    #[serde(default)]
    pub truncated: bool,
}

/// Driver → worker frames.
#[derive(Debug, Clone, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum FromDriver {
    /// The process is non-dumpable (`ok`), as it was from its fork on; sent before the driver starts.
    Protected {
        ok: bool,
    },
    Ready {
        python_version: String,
    },
    Output {
        id: Option<String>,
        stream: OutputStream,
        text: String,
    },
    InputRequest {
        id: Option<String>,
        input_id: String,
        prompt: String,
    },
    PromiseCreate {
        id: Option<String>,
        promise_id: String,
        timeout_ms: Option<u64>,
    },
    Result {
        id: Option<String>,
        repr: Option<String>,
        mode: ExecutionMode,
        #[serde(default)]
        blocking_calls: Vec<String>,
        namespace_size: u64,
    },
    Error {
        id: Option<String>,
        ename: String,
        evalue: String,
        traceback: Vec<String>,
        mode: ExecutionMode,
        #[serde(default)]
        blocking_calls: Vec<String>,
        interrupted: bool,
        namespace_size: u64,
        /// The execution ran in a transaction and the namespace was put back.
        #[serde(default)]
        rolled_back: bool,
        /// Reached values whose contents could not be backed up or restored (names still were).
        #[serde(default)]
        rollback_skipped: u64,
    },
    Checkpoint {
        request_id: u64,
        #[serde(flatten)]
        checkpoint: CheckpointFrame,
    },
    DriverError {
        message: String,
    },
    /// The namespace is in the file the worker named; lists bounded by the driver.
    CheckpointSaved {
        request_id: u64,
        raw_bytes: u64,
        names: Vec<String>,
        /// All names saved; `names` lists at most the driver's bound.
        names_total: u64,
        skipped: Vec<SkippedName>,
        skipped_total: u64,
    },
    CheckpointLoaded {
        request_id: u64,
        names: Vec<String>,
        names_total: u64,
        namespace_size: u64,
    },
    /// Saving or loading failed as a whole (`stage` says where: decompress, unpickle, write...).
    CheckpointFailed {
        request_id: u64,
        stage: String,
        message: String,
    },
}

impl ToDriver<'_> {
    /// The frame's `type`, for diagnostics.
    pub fn kind(&self) -> &'static str {
        match self {
            ToDriver::Execute { .. } => "execute",
            ToDriver::Cancel { .. } => "cancel",
            ToDriver::Settle { .. } => "settle",
            ToDriver::Checkpoint { .. } => "checkpoint",
            ToDriver::Enter { .. } => "enter",
            ToDriver::CheckpointSave { .. } => "checkpointSave",
            ToDriver::CheckpointLoad { .. } => "checkpointLoad",
        }
    }
}

impl FromDriver {
    /// The frame's `type`, for diagnostics.
    pub fn kind(&self) -> &'static str {
        match self {
            FromDriver::Protected { .. } => "protected",
            FromDriver::Ready { .. } => "ready",
            FromDriver::Output { .. } => "output",
            FromDriver::InputRequest { .. } => "inputRequest",
            FromDriver::PromiseCreate { .. } => "promiseCreate",
            FromDriver::Result { .. } => "result",
            FromDriver::Error { .. } => "error",
            FromDriver::Checkpoint { .. } => "checkpoint",
            FromDriver::DriverError { .. } => "driverError",
            FromDriver::CheckpointSaved { .. } => "checkpointSaved",
            FromDriver::CheckpointLoaded { .. } => "checkpointLoaded",
            FromDriver::CheckpointFailed { .. } => "checkpointFailed",
        }
    }
}
