//! Checkpoints on the wire: what `POST /v1/checkpoints`, `GET /v1/checkpoints` and
//! `POST /v1/checkpoints/{id}/restore` answer, and the counters heartbeats carry. Metadata only:
//! names of the namespace, sizes and times, never a value. See docs/checkpoints.md.

use serde::{Deserialize, Serialize};

/// Most entries of [`CheckpointCreated::skipped`]; `skipped_total` counts them all.
pub const MAX_SKIPPED_NAMES: usize = 100;
/// Most checkpoints one [`CheckpointList`] carries (the store keeps fewer per session).
pub const MAX_LISTED_CHECKPOINTS: usize = 100;
/// Longest name listed in `names` or `skipped`, in bytes; longer ones are cut.
pub const MAX_LISTED_NAME_BYTES: usize = 256;
/// Most names listed in `names` of a checkpoint; the rest are still in the checkpoint.
pub const MAX_LISTED_NAMES: usize = 1000;
/// The id that `POST /v1/checkpoints/latest/restore` resolves to the newest checkpoint.
pub const LATEST: &str = "latest";

/// A name of the namespace that was not saved, and why (the exception type and a short message
/// from pickling; never the value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkippedName {
    pub name: String,
    pub reason: String,
}

/// Reply of `POST /v1/checkpoints` (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointCreated {
    pub id: String,
    /// Bytes stored: compressed and sealed.
    pub size_bytes: u64,
    /// Bytes pickled, before compression.
    pub raw_bytes: u64,
    /// Names saved (at most [`MAX_LISTED_NAMES`]).
    pub names: Vec<String>,
    /// All names saved, listed or not.
    #[serde(default)]
    pub names_total: u64,
    /// Names not saved, at most [`MAX_SKIPPED_NAMES`].
    pub skipped: Vec<SkippedName>,
    /// All names not saved, listed or not.
    pub skipped_total: u64,
    pub duration_ms: u64,
    /// RFC 3339.
    pub created_at: String,
}

/// One stored checkpoint of the session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSummary {
    pub id: String,
    pub size_bytes: u64,
    /// At most [`MAX_LISTED_NAMES`].
    pub names: Vec<String>,
    /// All names saved, listed or not (0 from workers before it was recorded).
    #[serde(default)]
    pub names_total: u64,
    /// RFC 3339.
    pub created_at: String,
}

/// Reply of `GET /v1/checkpoints`: the session's checkpoints, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointList {
    pub checkpoints: Vec<CheckpointSummary>,
}

/// Reply of `POST /v1/checkpoints/{id}/restore` (200): the namespace now in a fresh interpreter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointRestored {
    pub id: String,
    /// At most [`MAX_LISTED_NAMES`].
    pub names: Vec<String>,
    /// All names restored, listed or not.
    #[serde(default)]
    pub names_total: u64,
    pub duration_ms: u64,
}

/// The newest checkpoint this worker wrote, for heartbeats and stats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastCheckpoint {
    pub id: String,
    pub size_bytes: u64,
    pub duration_ms: u64,
    /// RFC 3339.
    pub created_at: String,
}

impl From<&CheckpointCreated> for LastCheckpoint {
    fn from(created: &CheckpointCreated) -> Self {
        LastCheckpoint {
            id: created.id.clone(),
            size_bytes: created.size_bytes,
            duration_ms: created.duration_ms,
            created_at: created.created_at.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn created_is_camel_case() {
        let created = CheckpointCreated {
            id: "c1".into(),
            size_bytes: 10,
            raw_bytes: 20,
            names: vec!["x".into()],
            names_total: 1,
            skipped: vec![SkippedName {
                name: "lock".into(),
                reason: "TypeError".into(),
            }],
            skipped_total: 1,
            duration_ms: 3,
            created_at: "2026-12-01T00:00:00Z".into(),
        };
        let value = serde_json::to_value(&created).unwrap();
        assert_eq!(value["sizeBytes"], json!(10));
        assert_eq!(value["rawBytes"], json!(20));
        assert_eq!(value["skippedTotal"], json!(1));
        assert_eq!(value["namesTotal"], json!(1));
        assert_eq!(LastCheckpoint::from(&created).size_bytes, 10);
    }
}
