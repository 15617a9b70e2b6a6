//! Creating one worker: its credential Secret first (the pod's environment refers to it), then the
//! pod under the same name, then the Secret handed to the pod so it goes wherever the pod goes.

use capsule_crds::CapsulePool;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, ResourceExt};
use tracing::warn;

use super::{token, worker_pod};
use crate::config::OperatorConfig;
use crate::labels;

/// Names tried before giving up when a random worker name is taken.
const NAME_ATTEMPTS: usize = 3;

/// Creates a worker pod of `pool` with its own credential derived from the pool's `key`.
pub async fn create(
    pods: &Api<Pod>,
    secrets: &Api<Secret>,
    pool: &CapsulePool,
    key: &str,
    config: &OperatorConfig,
) -> Result<Pod, kube::Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let name = worker_pod::new_worker_name(&pool.name_any());
        match create_named(pods, secrets, pool, key, config, &name).await {
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < NAME_ATTEMPTS => {}
            done => return done,
        }
    }
}

async fn create_named(
    pods: &Api<Pod>,
    secrets: &Api<Secret>,
    pool: &CapsulePool,
    key: &str,
    config: &OperatorConfig,
    name: &str,
) -> Result<Pod, kube::Error> {
    let credential = token::worker_credential_secret(pool, key, name);
    secrets.create(&PostParams::default(), &credential).await?;
    let pod = match pods
        .create(
            &PostParams::default(),
            &worker_pod::build(pool, config, name),
        )
        .await
    {
        Ok(pod) => pod,
        Err(e) => {
            let secret = labels::worker_credential_secret(name);
            if let Err(cleanup) = secrets.delete(&secret, &DeleteParams::default()).await {
                // Still owned by the pool, so it goes with the pool at the latest.
                warn!(secret = %secret, error = %cleanup, "credential of an uncreated worker kept");
            }
            return Err(e);
        }
    };
    if let Err(e) = token::hand_to_pod(secrets, &pod).await {
        warn!(pod = %name, error = %e, "credential stays owned by the pool until the pool goes");
    }
    Ok(pod)
}
