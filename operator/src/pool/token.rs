//! The Secrets behind worker credentials: the per-pool key (read by the operator alone) and one
//! Secret per worker pod holding the credential derived from it, which that pod's worker and
//! sidecar present on heartbeats and the operator presents to that worker.

use std::collections::BTreeMap;

use capsule_crds::CapsulePool;
use capsule_protocol::auth::worker_credential;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Resource, ResourceExt};
use rand::RngCore;

use crate::error::{Error, Result};
use crate::labels;

/// A fresh random token: 32 bytes, hex encoded.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn build(pool: &CapsulePool, token: &str) -> Secret {
    owned_token_secret(
        pool,
        labels::pool_token_secret(&pool.name_any()),
        labels::POOL,
        token,
    )
}

/// A token Secret owned by `owner` (a pool or a session), labelled with the owner's name under
/// `owner_label` so the operator's Secret watch finds it, and deleted with its owner.
pub fn owned_token_secret<K>(owner: &K, name: String, owner_label: &str, token: &str) -> Secret
where
    K: Resource<DynamicType = ()>,
{
    let labels = BTreeMap::from([
        (owner_label.to_string(), owner.name_any()),
        (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
    ]);
    token_secret(owner, name, labels, token)
}

fn token_secret<K>(owner: &K, name: String, labels: BTreeMap<String, String>, token: &str) -> Secret
where
    K: Resource<DynamicType = ()>,
{
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: owner.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner
                .controller_owner_ref(&())
                .expect("a stored object has a uid")]),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            labels::TOKEN_KEY.to_string(),
            ByteString(token.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

/// Makes sure the pool's key Secret exists and returns the key. An existing Secret is kept as it
/// is, so a user can rotate the key by replacing it (workers holding credentials of the old key are
/// then refused and replaced).
pub async fn ensure(secrets: &Api<Secret>, pool: &CapsulePool) -> Result<String> {
    let name = labels::pool_token_secret(&pool.name_any());
    if let Some(existing) = secrets.get_opt(&name).await? {
        return key_of(&existing, &name);
    }
    let key = new_token();
    match secrets
        .create(&PostParams::default(), &build(pool, &key))
        .await
    {
        Ok(_) => Ok(key),
        // Another pass created it between our read and our write.
        Err(kube::Error::Api(status)) if status.code == 409 => {
            key_of(&secrets.get(&name).await?, &name)
        }
        Err(e) => Err(e.into()),
    }
}

fn key_of(secret: &Secret, name: &str) -> Result<String> {
    crate::relay::directory::secret_token(secret)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            Error::PoolKey(format!(
                "Secret {name} has no non-empty UTF-8 `{}` key: delete it and the operator makes a new one",
                labels::TOKEN_KEY
            ))
        })
}

/// The credential Secret of the worker pod `pod` is about to be created as. It is owned by the
/// pool until the pod exists, then by the pod (see [`hand_to_pod`]), so it goes with either.
pub fn worker_credential_secret(pool: &CapsulePool, key: &str, pod: &str) -> Secret {
    let namespace = pool.namespace().unwrap_or_default();
    let labels = BTreeMap::from([
        (labels::CREDENTIAL_OF.to_string(), pod.to_string()),
        (labels::POOL.to_string(), pool.name_any()),
    ]);
    token_secret(
        pool,
        labels::worker_credential_secret(pod),
        labels,
        &worker_credential(key, &namespace, pod),
    )
}

/// Makes `pod` the owner of its credential Secret, so the garbage collector deletes the credential
/// whenever the pod goes, whoever deletes it.
pub async fn hand_to_pod(secrets: &Api<Secret>, pod: &Pod) -> Result<()> {
    let owner = pod
        .controller_owner_ref(&())
        .expect("a created pod has a uid");
    let patch = serde_json::json!({"metadata": {"ownerReferences": [owner]}});
    secrets
        .patch(
            &labels::worker_credential_secret(&pod.name_any()),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}
