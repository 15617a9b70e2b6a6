//! The bench's client: sessions acquired and timed end to end, the pool brought to rest between
//! samples, and the operator's status write count.

use std::time::{Duration, Instant};

use capsule_crds::{CapsulePool, CapsuleSession, SessionPhase};
use capsule_e2e::{metric_label, metric_samples, DevCluster};
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;

use crate::{Args, BenchResult, NS, POOL, WAIT};

/// One acquisition as the client saw it.
pub struct Sample {
    pub bound_ms: f64,
    pub first_result_ms: f64,
    pub warm_hit: bool,
    pub operator_latency_ms: i64,
}

async fn wait_until<F, Fut>(what: &str, mut check: F) -> BenchResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = BenchResult<bool>>,
{
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if check().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("timed out waiting for {what}").into())
}

pub struct Bench {
    pools: Api<CapsulePool>,
    pods: Api<Pod>,
    sessions: Api<CapsuleSession>,
    secrets: Api<Secret>,
    http: reqwest::Client,
    metrics_url: String,
    /// The pool's warm target as created.
    warm: i32,
}

impl Bench {
    /// Waits until the pool's status shows `idle` idle workers and none bound, starting or warming.
    pub async fn settle(&self, idle: i32) -> BenchResult<()> {
        wait_until(&format!("{idle} idle workers"), || async {
            let pool = self.pools.get(POOL).await?;
            Ok(pool.status.is_some_and(|s| {
                s.idle == idle && s.bound == 0 && s.starting == 0 && s.warming == 0
            }))
        })
        .await
    }

    /// Waits until the previous session is gone for good and nothing is in motion: no session
    /// left, no worker starting, warming, bound or terminating, and at least `idle` idle workers
    /// (exactly `idle` with `exact`: a surplus kept for `scaleDownDelaySeconds` may remain
    /// otherwise). The pool's status is coalesced, so it cannot tell this; the pods can.
    pub async fn quiesce(&self, idle: usize, exact: bool) -> BenchResult<()> {
        wait_until(
            &format!("{idle} free, ready workers and no session"),
            || async {
                if !self
                    .sessions
                    .list(&ListParams::default())
                    .await?
                    .items
                    .is_empty()
                {
                    return Ok(false);
                }
                let pods = self
                    .pods
                    .list(&ListParams::default().labels(&format!("capsule.dev/pool={POOL}")))
                    .await?
                    .items;
                let at_rest = pods.iter().all(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && !p.labels().contains_key("capsule.dev/session")
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                });
                Ok(at_rest
                    && if exact {
                        pods.len() == idle
                    } else {
                        pods.len() >= idle
                    })
            },
        )
        .await
    }

    pub async fn acquire(&self, name: &str) -> BenchResult<Sample> {
        let session: CapsuleSession = serde_json::from_value(json!({
            "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
            "metadata": {"name": name, "namespace": NS}, "spec": {"pool": POOL},
        }))?;
        // The client watches its session (as `kubectl wait` does) from before the create, so the
        // bound time is not rounded up to a poll period.
        let settled = |s: Option<&CapsuleSession>| {
            s.and_then(|s| s.status.as_ref())
                .is_some_and(|st| st.phase != SessionPhase::Pending)
        };
        let (api, owned) = (self.sessions.clone(), name.to_string());
        let watch = tokio::spawn(async move { await_condition(api, &owned, settled).await });
        let started = Instant::now();
        self.sessions
            .create(&PostParams::default(), &session)
            .await?;
        let got = tokio::time::timeout(WAIT, watch)
            .await
            .map_err(|_| format!("session {name} not bound within {WAIT:?}"))???
            .ok_or_else(|| format!("session {name} vanished"))?;
        let status = got.status.unwrap_or_default();
        if status.phase != SessionPhase::Bound {
            return Err(format!("session {name} ended as {:?}", status.phase).into());
        }
        let bound_ms = started.elapsed().as_secs_f64() * 1000.0;
        let secret_ref = status.token_secret.clone().ok_or("no token secret")?;
        let secret = self.secrets.get(&secret_ref.name).await?;
        let token = secret
            .data
            .as_ref()
            .and_then(|d| d.get(&secret_ref.key))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or("token missing from its secret")?;
        let endpoint = status.endpoint.clone().ok_or("no endpoint")?;
        let response = self
            .http
            .post(format!("{endpoint}/v1/executions"))
            .bearer_auth(token)
            .json(&json!({"code": "1+1"}))
            .send()
            .await?;
        let code = response.status();
        let body = response.text().await?;
        if !code.is_success() || !body.contains("\"result\"") {
            return Err(format!("execute answered {code}").into());
        }
        let first_result_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.sessions.delete(name, &DeleteParams::default()).await?;
        Ok(Sample {
            bound_ms,
            first_result_ms,
            warm_hit: status.warm_hit.unwrap_or(false),
            operator_latency_ms: status.acquisition_latency_ms.unwrap_or(-1),
        })
    }

    pub async fn set_replicas(&self, replicas: i32) -> BenchResult<()> {
        // No surplus kept: each miss must find the pool empty; room for a miss's new worker.
        let patch = json!({"spec": {"replicas": replicas, "scaleDownDelaySeconds": 0,
                                    "maxWorkers": replicas.max(self.warm) + 2}});
        self.pools
            .patch(POOL, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    /// Where the pool's interpreters run (`spec.template.interpreter.placement`).
    pub async fn set_placement(&self, placement: &str) -> BenchResult<()> {
        let patch = json!({"spec": {"template": {"interpreter": {"placement": placement}}}});
        self.pools
            .patch(POOL, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    pub async fn status_writes(&self) -> BenchResult<f64> {
        let text = self
            .http
            .get(&self.metrics_url)
            .send()
            .await?
            .text()
            .await?;
        let value = metric_samples(&text, "capsule_pool_status_writes_total")
            .find(|(labels, _)| metric_label(labels, "pool") == Some(POOL))
            .map(|(_, value)| value)
            .ok_or("capsule_pool_status_writes_total for the pool is missing")?;
        Ok(value)
    }
}

/// A client for the bench's namespace and the operator's metrics; also returns the plain client.
pub async fn connect(
    args: &Args,
    cluster: &DevCluster,
    operator_port: u16,
) -> BenchResult<(Bench, Client)> {
    let client = capsule_e2e::kube_client(&cluster.kubeconfig).await;
    let bench_client = client.clone();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let bench = Bench {
        pools: Api::namespaced(client.clone(), NS),
        pods: Api::namespaced(client.clone(), NS),
        sessions: Api::namespaced(client.clone(), NS),
        secrets: Api::namespaced(client, NS),
        metrics_url: format!("http://127.0.0.1:{operator_port}/metrics"),
        http,
        warm: args.warm,
    };
    Ok((bench, bench_client))
}

/// Installs the CRDs, waits for the operator, and creates the pool with `--warm` workers, warm.
pub async fn install_pool(
    args: &Args,
    bench: &Bench,
    bench_client: Client,
    operator_port: u16,
) -> BenchResult<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(bench_client.clone());
    for crd in [CapsulePool::crd(), CapsuleSession::crd()] {
        crds.create(&PostParams::default(), &crd).await?;
    }
    let ready = format!("http://127.0.0.1:{operator_port}/readyz");
    wait_until("the operator to be ready", || async {
        Ok(bench
            .http
            .get(&ready)
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()))
    })
    .await?;

    let pool: CapsulePool = serde_json::from_value(json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
        "metadata": {"name": POOL, "namespace": NS},
        "spec": {
            "replicas": args.warm,
            "maxWorkers": args.warm + 2,
            "template": {"image": "capsule-worker:dev"},
            "recycle": {"onRelease": "Reset"},
            "sessions": {"idleTimeoutSeconds": 0},
        },
    }))?;
    bench.pools.create(&PostParams::default(), &pool).await?;
    bench.settle(args.warm).await?;
    eprintln!("pool warm with {} workers", args.warm);
    Ok(())
}
