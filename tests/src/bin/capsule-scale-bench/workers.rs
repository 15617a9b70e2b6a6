//! The kubelet's and the workers' part, played by the bench: each worker pod the operator creates
//! is marked Running and Ready, then heartbeats with its own credential like a warm idle worker.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_protocol::auth::worker_credential;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use crate::pools::CONCURRENCY;
use crate::NS;

/// The Ready worker pods, by name, with their pool.
pub type Workers = Arc<Mutex<BTreeMap<String, String>>>;

/// Marks new worker pods Running and Ready, once a second, until the process ends.
pub fn play_kubelet(client: Client, ready: Workers) {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, NS);
        let managed = ListParams::default().labels("app.kubernetes.io/managed-by=capsule-operator");
        loop {
            if let Ok(listed) = pods.list(&managed).await {
                let new: Vec<Pod> = {
                    let known = ready.lock().unwrap();
                    listed
                        .items
                        .into_iter()
                        .filter(|p| !known.contains_key(&p.name_any()))
                        .collect()
                };
                mark_ready(&pods, new, &ready).await;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

async fn mark_ready(pods: &Api<Pod>, new: Vec<Pod>, ready: &Workers) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "127.0.0.1",
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    futures::stream::iter(new)
        .for_each_concurrent(CONCURRENCY, |pod| {
            let status = status.clone();
            async move {
                let name = pod.name_any();
                let patched = pods
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
                let pool = pod.labels().get("capsule.dev/pool").cloned();
                if let (Ok(_), Some(pool)) = (patched, pool) {
                    ready.lock().unwrap().insert(name, pool);
                }
            }
        })
        .await;
}

/// Sends every Ready worker's heartbeat to the operator each `every`, until the process ends.
pub fn heartbeat(client: Client, ready: Workers, url: String, every: Duration) {
    tokio::spawn(async move {
        let secrets: Api<Secret> = Api::namespaced(client, NS);
        let http = reqwest::Client::new();
        let mut keys: HashMap<String, String> = HashMap::new();
        let mut seq = 0u64;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            seq += 1;
            let workers: Vec<(String, String)> =
                ready.lock().unwrap().clone().into_iter().collect();
            let mut beats = Vec::with_capacity(workers.len());
            for (pod, pool) in workers {
                let Some(key) = pool_key(&secrets, &mut keys, &pool).await else {
                    continue;
                };
                beats.push((worker_credential(&key, NS, &pod), pod, pool));
            }
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

async fn pool_key(
    secrets: &Api<Secret>,
    keys: &mut HashMap<String, String>,
    pool: &str,
) -> Option<String> {
    if let Some(key) = keys.get(pool) {
        return Some(key.clone());
    }
    let secret = secrets
        .get_opt(&format!("{pool}-pool-token"))
        .await
        .ok()??;
    let bytes = secret.data?.get("token")?.0.clone();
    let key = String::from_utf8(bytes).ok()?;
    keys.insert(pool.to_string(), key.clone());
    Some(key)
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
