//! The per-pool Secret holding the token workers present on heartbeats and the operator presents
//! to workers.

use std::collections::BTreeMap;

use capsule_crds::CapsulePool;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};
use rand::RngCore;

use crate::error::Result;
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
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: owner.namespace(),
            labels: Some(BTreeMap::from([
                (owner_label.to_string(), owner.name_any()),
                (labels::MANAGED_BY.to_string(), labels::MANAGER.to_string()),
            ])),
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

/// Makes sure the pool's token Secret exists. An existing Secret is kept as it is, so a user can
/// rotate the token by replacing it. Returns whether it was created.
pub async fn ensure(secrets: &Api<Secret>, pool: &CapsulePool) -> Result<bool> {
    let name = labels::pool_token_secret(&pool.name_any());
    if secrets.get_opt(&name).await?.is_some() {
        return Ok(false);
    }
    match secrets
        .create(&PostParams::default(), &build(pool, &new_token()))
        .await
    {
        Ok(_) => Ok(true),
        // Another pass created it between our read and our write.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}
