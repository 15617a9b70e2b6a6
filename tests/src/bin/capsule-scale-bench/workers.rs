//! The kubelet's and the workers' part, played by the bench from watch caches (a list of every
//! pod each second would load the API server more than the operator does): each worker pod the
//! operator creates is marked Running and Ready, then heartbeats with its own credential like a
//! warm idle worker.

use std::time::Duration;

use capsule_protocol::auth::worker_credential;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::pools::CONCURRENCY;
use crate::NS;

const MANAGED: &str = "app.kubernetes.io/managed-by=capsule-operator";

/// The operator's pods and Secrets as the bench's watches see them.
pub struct Cluster {
    pub pods: Store<Pod>,
    pub secrets: Store<Secret>,
}

/// Starts both watches; every pod that is not Ready yet is marked Running and Ready.
pub fn play_kubelet(client: Client) -> Cluster {
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), NS);
    let secrets_api: Api<Secret> = Api::namespaced(client, NS);
    let config = watcher::Config::default().labels(MANAGED);
    let (secrets, writer) = reflector::store();
    let secret_stream = watcher(secrets_api, config.clone())
        .default_backoff()
        .reflect(writer)
        .for_each(|_| async {});
    tokio::spawn(secret_stream);
    let (pods, writer) = reflector::store();
    let marking = pods_api.clone();
    let pod_stream = watcher(pods_api, config)
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .filter_map(|pod| async move { pod.ok().filter(|p| !ready(p)) })
        .for_each_concurrent(CONCURRENCY, move |pod| mark_ready(marking.clone(), pod));
    tokio::spawn(pod_stream);
    Cluster { pods, secrets }
}

fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

async fn mark_ready(pods: Api<Pod>, pod: Pod) {
    if pod.metadata.deletion_timestamp.is_some() {
        return;
    }
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    let _ = pods
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await;
}

/// Sends every Ready worker's heartbeat to the operator each `every`, until the process ends.
pub fn heartbeat(cluster: &Cluster, url: String, every: Duration) {
    let (pods, secrets) = (cluster.pods.clone(), cluster.secrets.clone());
    tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            seq += 1;
            let beats: Vec<(String, String, String)> = pods
                .state()
                .iter()
                .filter(|p| ready(p) && p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| {
                    let pool = p.labels().get("capsule.dev/pool")?.clone();
                    let key = pool_key(&secrets, &pool)?;
                    Some((
                        worker_credential(&key, NS, &p.name_any()),
                        p.name_any(),
                        pool,
                    ))
                })
                .collect();
            futures::stream::iter(beats)
                .for_each_concurrent(CONCURRENCY * 4, |(credential, pod, pool)| {
                    let request = http
                        .post(&url)
                        .bearer_auth(credential)
                        .json(&idle_heartbeat(&pod, &pool, seq));
                    async move {
                        let _ = request.send().await;
                    }
                })
                .await;
        }
    });
}

fn pool_key(secrets: &Store<Secret>, pool: &str) -> Option<String> {
    let secret = secrets.get(&ObjectRef::new(&format!("{pool}-pool-token")).within(NS))?;
    let bytes = secret.data.as_ref()?.get("token")?.0.clone();
    String::from_utf8(bytes).ok()
}

fn idle_heartbeat(pod: &str, pool: &str, seq: u64) -> serde_json::Value {
    json!({"pod": pod, "namespace": NS, "pool": pool, "seq": seq,
        "sentAt": "2026-11-30T00:00:00Z", "startedAt": "2026-11-30T00:00:00Z", "state": "idle",
        "session": null, "rssBytes": 30_000_000, "cpuPercent": 0.0, "namespaceSize": 0,
        "interpreterRestarts": 0,
        "executions": {"ok": 0, "error": 0, "cancelled": 0, "timedOut": 0},
        "executor": {"outputsEnqueued": 0, "outputsSent": 0, "outputsDropped": 0,
                     "maxQueueDepth": 0, "drainTimeouts": 0},
        "bridge": {"pending": 0, "highWater": 0, "created": 0, "resolved": 0, "rejected": 0,
                   "timedOut": 0, "cancelled": 0},
        "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0}})
}
