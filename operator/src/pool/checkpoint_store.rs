//! How a worker pod reaches its pool's checkpoint store: the worker's environment and, for a
//! `Volume` store, the claim mounted into the worker container alone (the sidecar never reads
//! checkpoints). See docs/checkpoints.md.

use capsule_crds::{CapsulePool, CheckpointStore, CHECKPOINT_VOLUME_MOUNT};
use k8s_openapi::api::core::v1::{EnvVar, PersistentVolumeClaimVolumeSource, Volume, VolumeMount};

use super::pod_security::empty_dir;
use super::worker_pod::env::env;

const VOLUME_NAME: &str = "capsule-checkpoints";
/// The `Worker` store: an emptyDir in the worker container alone, gone with the pod.
const WORKER_STORE_DIR: &str = "/var/run/capsule-checkpoints";

/// The worker's checkpoint settings and, for a `Volume` store, the pod volume and its mount.
pub struct CheckpointAccess {
    pub env: Vec<EnvVar>,
    pub volume: Option<(Volume, VolumeMount)>,
}

/// What the worker container of `pool` needs to keep checkpoints where the pool says.
pub fn access(pool: &CapsulePool) -> CheckpointAccess {
    let spec = &pool.spec.checkpoints;
    let (dir, volume) = match (&spec.store, &spec.volume) {
        (CheckpointStore::Volume, Some(claim)) => {
            let volume = Volume {
                name: VOLUME_NAME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: claim.claim_name.clone(),
                    read_only: Some(false),
                }),
                ..Default::default()
            };
            let mount = VolumeMount {
                name: VOLUME_NAME.into(),
                mount_path: CHECKPOINT_VOLUME_MOUNT.into(),
                ..Default::default()
            };
            (CHECKPOINT_VOLUME_MOUNT.to_string(), Some((volume, mount)))
        }
        // A Volume store without a claim is refused at admission; the worker's own emptyDir is
        // the fallback of a pool stored before that rule. Not the scratch volume: the interpreter
        // container mounts that one, and session code could move or delete the store there.
        _ => {
            let (volume, mount) = empty_dir(VOLUME_NAME, WORKER_STORE_DIR, None);
            (WORKER_STORE_DIR.to_string(), Some((volume, mount)))
        }
    };
    let mut vars = vec![
        env("CAPSULE_CHECKPOINT_DIR", dir),
        env("CAPSULE_CHECKPOINT_MAX_BYTES", spec.max_bytes.to_string()),
        env("CAPSULE_CHECKPOINT_KEEP", spec.keep.to_string()),
    ];
    let persistence = &pool.spec.sessions.persistence;
    if persistence.enabled {
        if persistence.checkpoint_after_execution_ms > 0 {
            vars.push(env(
                "CAPSULE_CHECKPOINT_AFTER_MS",
                persistence.checkpoint_after_execution_ms.to_string(),
            ));
        }
        if persistence.checkpoint_idle_seconds > 0 {
            vars.push(env(
                "CAPSULE_CHECKPOINT_IDLE_SECONDS",
                persistence.checkpoint_idle_seconds.to_string(),
            ));
        }
    }
    CheckpointAccess { env: vars, volume }
}

/// Whether sessions of `pool` move to a new worker when they lose theirs.
pub fn sessions_migrate(pool: &CapsulePool) -> bool {
    pool.spec.sessions.persistence.enabled && pool.spec.checkpoints.store == CheckpointStore::Volume
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_crds::{CapsulePoolSpec, CheckpointVolume};

    fn pool(edit: impl FnOnce(&mut CapsulePoolSpec)) -> CapsulePool {
        let mut spec: CapsulePoolSpec =
            serde_json::from_value(serde_json::json!({"template": {"image": "w"}})).unwrap();
        edit(&mut spec);
        CapsulePool::new("p", spec)
    }

    fn value<'a>(access: &'a CheckpointAccess, name: &str) -> Option<&'a str> {
        access
            .env
            .iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value.as_deref())
    }

    #[test]
    fn a_default_pool_keeps_checkpoints_in_a_volume_of_the_worker_alone_without_automatic_ones() {
        let access = access(&pool(|_| {}));
        assert_eq!(
            value(&access, "CAPSULE_CHECKPOINT_DIR"),
            Some("/var/run/capsule-checkpoints")
        );
        let (volume, mount) = access.volume.as_ref().expect("an emptyDir of its own");
        assert!(volume.empty_dir.is_some() && mount.mount_path == "/var/run/capsule-checkpoints");
        assert_eq!(
            value(&access, "CAPSULE_CHECKPOINT_MAX_BYTES"),
            Some("268435456")
        );
        assert_eq!(value(&access, "CAPSULE_CHECKPOINT_KEEP"), Some("3"));
        assert!(value(&access, "CAPSULE_CHECKPOINT_AFTER_MS").is_none());
        assert!(!sessions_migrate(&pool(|_| {})));
    }

    #[test]
    fn a_volume_store_mounts_the_claim_and_persistence_turns_on_automatic_checkpoints() {
        let pool = pool(|s| {
            s.checkpoints.store = CheckpointStore::Volume;
            s.checkpoints.volume = Some(CheckpointVolume {
                claim_name: "ckpt".into(),
            });
            s.sessions.persistence.enabled = true;
        });
        let access = access(&pool);
        assert_eq!(
            value(&access, "CAPSULE_CHECKPOINT_DIR"),
            Some(CHECKPOINT_VOLUME_MOUNT)
        );
        assert_eq!(value(&access, "CAPSULE_CHECKPOINT_AFTER_MS"), Some("1000"));
        assert_eq!(
            value(&access, "CAPSULE_CHECKPOINT_IDLE_SECONDS"),
            Some("10")
        );
        let (volume, mount) = access.volume.expect("the claim is mounted");
        assert_eq!(
            volume.persistent_volume_claim.unwrap().claim_name,
            "ckpt".to_string()
        );
        assert_eq!(mount.mount_path, CHECKPOINT_VOLUME_MOUNT);
        assert!(sessions_migrate(&pool));
    }
}
