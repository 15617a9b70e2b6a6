//! Where a pool's workers keep session checkpoints, and whether sessions outlive their worker.
//! See docs/checkpoints.md.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The largest `spec.checkpoints.maxBytes`; the worker refuses a larger bound too.
pub const MAX_CHECKPOINT_BYTES_LIMIT: i64 = 4 * 1024 * 1024 * 1024;
/// The smallest `spec.checkpoints.maxBytes`.
pub const MIN_CHECKPOINT_BYTES: i64 = 1024 * 1024;
/// Where a `Volume` store's claim is mounted in the worker container.
pub const CHECKPOINT_VOLUME_MOUNT: &str = "/var/lib/capsule/checkpoints";

/// Where checkpoints are kept.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CheckpointStore {
    /// In the worker pod's scratch volume: restorable while the worker lives, gone with it.
    #[default]
    Worker,
    /// On the PersistentVolumeClaim `volume.claimName`, mounted in every worker of the pool: a
    /// checkpoint outlives its worker, so a session can move to another worker (see
    /// `sessions.persistence`). Use a ReadWriteMany claim when workers run on several nodes.
    Volume,
}

/// The claim a `Volume` store uses.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointVolume {
    /// Name of a PersistentVolumeClaim in the pool's namespace.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// Session checkpoints: the namespace serialized, compressed and sealed under a per-session key.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("self.store != 'Volume' || has(self.volume)").message("spec.checkpoints.store is Volume but spec.checkpoints.volume is not set: name a PersistentVolumeClaim in volume.claimName, or use store: Worker").field_path(".volume"))]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSpec {
    /// Where checkpoints are kept.
    #[serde(default)]
    pub store: CheckpointStore,

    /// The claim of a `Volume` store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<CheckpointVolume>,

    /// Largest stored checkpoint in bytes (compressed); a larger one is refused with
    /// `checkpointTooLarge`.
    #[serde(default = "default_max_bytes")]
    #[schemars(range(min = 1048576, max = 4294967296_i64))]
    pub max_bytes: i64,

    /// How many checkpoints of a session are kept; older ones are deleted.
    #[serde(default = "default_keep")]
    #[schemars(range(min = 1, max = 20))]
    pub keep: i32,
}

fn default_max_bytes() -> i64 {
    256 * 1024 * 1024
}
fn default_keep() -> i32 {
    3
}

// Written out so the schema's object-level default agrees with the field defaults.
impl Default for CheckpointSpec {
    fn default() -> Self {
        Self {
            store: CheckpointStore::default(),
            volume: None,
            max_bytes: default_max_bytes(),
            keep: default_keep(),
        }
    }
}

/// Sessions that survive their worker: when a bound session's worker is lost (deleted, drained,
/// recycled, restarted or silent), the session moves to another worker of the pool, which restores
/// its latest checkpoint; the session keeps its name, token and gateway path.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PersistenceSpec {
    /// Move sessions to a new worker instead of failing them with `WorkerLost`. Needs
    /// `spec.checkpoints.store: Volume`, so a checkpoint outlives the worker that wrote it.
    #[serde(default)]
    pub enabled: bool,

    /// Checkpoint automatically after a successful execution that took at least this many
    /// milliseconds. 0 turns this trigger off.
    #[serde(default = "default_after_execution_ms")]
    #[schemars(range(min = 0, max = 86400000))]
    pub checkpoint_after_execution_ms: i64,

    /// Checkpoint automatically after this many seconds without an execution, when the namespace
    /// changed since the last checkpoint. 0 turns this trigger off.
    #[serde(default = "default_idle_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub checkpoint_idle_seconds: i64,
}

fn default_after_execution_ms() -> i64 {
    1000
}
fn default_idle_seconds() -> i64 {
    10
}

// Written out so the schema's object-level default agrees with the field defaults.
impl Default for PersistenceSpec {
    fn default() -> Self {
        Self {
            enabled: false,
            checkpoint_after_execution_ms: default_after_execution_ms(),
            checkpoint_idle_seconds: default_idle_seconds(),
        }
    }
}
