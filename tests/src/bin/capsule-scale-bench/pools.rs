//! The pools: CRDs installed, pools created, and waiting until each shows its workers idle.

use std::time::{Duration, Instant};

use capsule_crds::{CapsulePool, CapsuleSession};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, CustomResourceExt};
use serde_json::json;

use crate::{Args, BenchResult, NS};

/// Requests the bench keeps in flight at once when it creates or patches many objects.
pub const CONCURRENCY: usize = 16;

pub async fn install_crds(client: &Client) -> BenchResult<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [CapsulePool::crd(), CapsuleSession::crd()] {
        crds.create(&PostParams::default(), &crd).await?;
    }
    // The devcluster serves a new CRD's resources once it is established.
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

pub fn pool_name(index: usize) -> String {
    format!("scale-{index:05}")
}

/// Creates pools `range` with `--workers` warm workers each.
pub async fn create(
    client: &Client,
    range: std::ops::Range<usize>,
    args: &Args,
) -> BenchResult<()> {
    let workers = args.workers;
    let heartbeat = json!({"intervalSeconds": args.heartbeat_seconds,
                           "stalenessSeconds": args.staleness_seconds});
    let pools: Api<CapsulePool> = Api::namespaced(client.clone(), NS);
    futures::stream::iter(range.map(|i| {
        let (pools, heartbeat) = (pools.clone(), heartbeat.clone());
        async move {
            let pool: CapsulePool = serde_json::from_value(json!({
                "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
                "metadata": {"name": pool_name(i), "namespace": NS},
                "spec": {"replicas": workers, "maxWorkers": workers, "heartbeat": heartbeat,
                         "template": {"image": "capsule-worker:dev"}},
            }))?;
            pools.create(&PostParams::default(), &pool).await?;
            BenchResult::Ok(())
        }
    }))
    .buffer_unordered(CONCURRENCY)
    .try_collect::<Vec<()>>()
    .await?;
    Ok(())
}

/// Waits until `count` pools show `workers` idle workers each, at most `limit`.
pub async fn wait_all_idle(
    client: &Client,
    count: usize,
    workers: i32,
    limit: Duration,
) -> BenchResult<()> {
    let pools: Api<CapsulePool> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + limit;
    loop {
        let listed = pools.list(&ListParams::default()).await?.items;
        let idle = listed
            .iter()
            .filter(|p| p.status.as_ref().is_some_and(|s| s.idle == workers))
            .count();
        if idle >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{idle} of {count} pools idle after {limit:?}").into());
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
