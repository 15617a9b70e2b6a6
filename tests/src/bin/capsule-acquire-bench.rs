//! `capsule-acquire-bench`: how long a client waits for a Python session, measured end to end on
//! the devcluster with the real binaries (devcluster, operator, worker and sidecar processes).
//!
//! One sample is a `CapsuleSession` created through the API server, then watched until it is
//! `Bound`, then its token Secret read and `1+1` executed on its endpoint until the final event:
//! the client's wait from create to first result. Warm hits find an idle worker: once with the pool
//! at rest before each session (`warm_hit`: the previous session's worker reset and back, then
//! `--gap-ms`), once back to back (`warm_hit_back_to_back`: each session created as soon as the
//! previous one's delete returns, so the operator releases one worker while it binds the next).
//! Misses run with a pool at zero idle workers, so a worker must be created and warmed for each.
//! A burst creates `--burst` sessions at once on a pool with as many warm workers: every one a
//! warm hit, each measured under the load of the others.
//!
//! It also counts the operator's pool status writes during a steady period with heartbeating
//! workers (`capsule_pool_status_writes_total`), as writes per pool per minute.
//!
//! Usage: `capsule-acquire-bench [--warm 3] [--hits 30] [--misses 5] [--burst 50] [--steady-seconds 60]
//! [--status-interval-seconds 10] [--gap-ms 250] [--json PATH]`. For profiling:
//! `CAPSULE_BENCH_OPERATOR_LOG` sets the operator's `RUST_LOG` (default `warn`), `RUST_LOG` the
//! devcluster's (`capsule_devcluster::api=debug` logs every request with its duration), and
//! `CAPSULE_BENCH_KEEP=1` keeps the state directory with both logs. Binaries come from this executable's directory
//! (build them with `cargo build -p capsule-operator -p capsule-worker -p capsule-sidecar
//! -p capsule-devcluster --bins`); kubectl is not needed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use capsule_crds::{CapsulePool, CapsuleSession, SessionPhase};
use capsule_e2e::{free_port, DevCluster, OperatorRun, Process};
use clap::Parser;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;

const NS: &str = "default";
const POOL: &str = "bench";
const WAIT: Duration = Duration::from_secs(120);

#[derive(Parser)]
struct Args {
    /// Warm workers in the pool (its `spec.replicas`) for the warm hits.
    #[arg(long, default_value_t = 3)]
    warm: i32,
    /// Warm-hit sessions, one after another.
    #[arg(long, default_value_t = 30)]
    hits: usize,
    /// Miss sessions (pool at zero idle workers), one after another.
    #[arg(long, default_value_t = 5)]
    misses: usize,
    /// Sessions created at once on a pool with as many warm workers (`warm_hit_burst`: each a
    /// warm hit under the load of the others being created); 0 skips it.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    /// Quiet time after the previous session's worker is back, before an isolated warm hit.
    #[arg(long, default_value_t = 250)]
    gap_ms: u64,
    /// Length of the steady period in which status writes are counted.
    #[arg(long, default_value_t = 60)]
    steady_seconds: u64,
    /// The operator's `--status-interval-seconds`.
    #[arg(long, default_value_t = 10)]
    status_interval_seconds: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One acquisition as the client saw it.
struct Sample {
    bound_ms: f64,
    first_result_ms: f64,
    warm_hit: bool,
    operator_latency_ms: i64,
}

fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn summary(samples: &[Sample]) -> serde_json::Value {
    let first: Vec<f64> = samples.iter().map(|s| s.first_result_ms).collect();
    let bound: Vec<f64> = samples.iter().map(|s| s.bound_ms).collect();
    let operator: Vec<f64> = samples
        .iter()
        .map(|s| s.operator_latency_ms as f64)
        .collect();
    let mut each: Vec<u64> = first.iter().map(|ms| ms.round() as u64).collect();
    each.sort_unstable();
    eprintln!("first result, each sample (ms, sorted): {each:?}");
    json!({
        "samples": samples.len(),
        "warm_hits": samples.iter().filter(|s| s.warm_hit).count(),
        "first_result_ms": {"p50": quantile(&first, 0.5), "p99": quantile(&first, 0.99),
                             "max": quantile(&first, 1.0)},
        "bound_ms": {"p50": quantile(&bound, 0.5), "p99": quantile(&bound, 0.99)},
        "operator_acquisition_latency_ms": {"p50": quantile(&operator, 0.5),
                                            "p99": quantile(&operator, 0.99)},
    })
}

fn start_operator(cluster: &DevCluster, port: u16, interval: u64, log: PathBuf) -> Process {
    let mut run = OperatorRun::on_port(port);
    run.status_interval_seconds = interval;
    run.rust_log = std::env::var("CAPSULE_BENCH_OPERATOR_LOG").unwrap_or_else(|_| "warn".into());
    run.start(cluster, &log)
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

struct Bench {
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
    async fn settle(&self, idle: i32) -> BenchResult<()> {
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
    async fn quiesce(&self, idle: usize, exact: bool) -> BenchResult<()> {
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

    async fn acquire(&self, name: &str) -> BenchResult<Sample> {
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

    async fn set_replicas(&self, replicas: i32) -> BenchResult<()> {
        // No surplus kept: each miss must find the pool empty; room for a miss's new worker.
        let patch = json!({"spec": {"replicas": replicas, "scaleDownDelaySeconds": 0,
                                    "maxWorkers": replicas.max(self.warm) + 2}});
        self.pools
            .patch(POOL, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    async fn status_writes(&self) -> BenchResult<f64> {
        let text = self
            .http
            .get(&self.metrics_url)
            .send()
            .await?
            .text()
            .await?;
        let series = text
            .lines()
            .filter(|l| l.starts_with("capsule_pool_status_writes_total{"))
            .find(|l| l.contains(&format!("pool=\"{POOL}\"")))
            .ok_or("capsule_pool_status_writes_total for the pool is missing")?;
        let value = series
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or("unparsable status write count")?;
        Ok(value)
    }
}

async fn run(
    args: &Args,
    cluster: &DevCluster,
    operator_port: u16,
) -> BenchResult<serde_json::Value> {
    let kubeconfig = Kubeconfig::read_from(&cluster.kubeconfig)?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = Client::try_from(config)?;
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

    // Steady period: warm workers heartbeating, no sessions.
    tokio::time::sleep(Duration::from_secs(args.status_interval_seconds)).await;
    let before = bench.status_writes().await?;
    tokio::time::sleep(Duration::from_secs(args.steady_seconds)).await;
    let after = bench.status_writes().await?;
    let writes_per_minute = (after - before) * 60.0 / args.steady_seconds as f64;
    eprintln!("status writes per pool per minute: {writes_per_minute:.1}");

    // Isolated: each session finds the pool at rest, its previous session's worker reset and back.
    let mut hits = Vec::with_capacity(args.hits);
    for i in 0..args.hits {
        bench.quiesce(args.warm as usize, false).await?;
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
        hits.push(bench.acquire(&format!("hit-{i}")).await?);
    }
    // Back to back: each session is created as soon as the previous one's delete returns, so the
    // operator releases and resets one worker while it binds the next.
    bench.quiesce(args.warm as usize, false).await?;
    let mut back_to_back = Vec::with_capacity(args.hits);
    for i in 0..args.hits {
        back_to_back.push(bench.acquire(&format!("next-{i}")).await?);
    }
    let burst = if args.burst > 0 {
        bench.set_replicas(args.burst as i32).await?;
        bench.quiesce(args.burst, false).await?;
        let names: Vec<String> = (0..args.burst).map(|i| format!("burst-{i}")).collect();
        let samples = futures::future::join_all(names.iter().map(|n| bench.acquire(n))).await;
        samples.into_iter().collect::<BenchResult<Vec<Sample>>>()?
    } else {
        Vec::new()
    };
    bench.set_replicas(0).await?;
    let mut misses = Vec::with_capacity(args.misses);
    for i in 0..args.misses {
        bench.quiesce(0, true).await?;
        misses.push(bench.acquire(&format!("miss-{i}")).await?);
    }

    Ok(json!({
        "benchmark": "capsule-acquire-bench",
        "warm_workers": args.warm,
        "status_interval_seconds": args.status_interval_seconds,
        "steady_seconds": args.steady_seconds,
        "status_writes_per_pool_per_minute": writes_per_minute,
        "warm_hit": summary(&hits),
        "warm_hit_back_to_back": summary(&back_to_back),
        "warm_hit_burst": summary(&burst),
        "miss": summary(&misses),
    }))
}

fn print_table(figures: &serde_json::Value) {
    println!(
        "{:<22} {:>8} {:>10} {:>18} {:>18} {:>14} {:>14}",
        "kind",
        "samples",
        "warm hits",
        "first result p50",
        "first result p99",
        "bound p50",
        "bound p99"
    );
    for kind in [
        "warm_hit",
        "warm_hit_back_to_back",
        "warm_hit_burst",
        "miss",
    ] {
        let k = &figures[kind];
        println!(
            "{:<22} {:>8} {:>10} {:>15.1} ms {:>15.1} ms {:>11.1} ms {:>11.1} ms",
            kind,
            k["samples"],
            k["warm_hits"],
            k["first_result_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            k["first_result_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            k["bound_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            k["bound_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        );
    }
    println!(
        "status writes per pool per minute (steady, status interval {} s): {:.1}",
        figures["status_interval_seconds"],
        figures["status_writes_per_pool_per_minute"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
}

/// Puts the real `python3` first on the PATH the devcluster's pods inherit: a version manager's
/// shim (pyenv's takes ~150 ms a start here) is not what a worker image runs, and a reset starts
/// an interpreter.
fn use_real_python(state: &std::path::Path) -> BenchResult<()> {
    let output = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()?;
    let real = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let dir = state.join("python-bin");
    std::fs::create_dir_all(&dir)?;
    let link = dir.join("python3");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&real, &link)?;
    let path = std::env::var("PATH").unwrap_or_default();
    // SAFETY: single-threaded here, before any thread or child process starts.
    unsafe { std::env::set_var("PATH", format!("{}:{path}", dir.display())) };
    eprintln!("pods run {real}");
    Ok(())
}

fn main() -> BenchResult<()> {
    let args = Args::parse();
    let state = std::env::temp_dir().join(format!("capsule-acquire-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    use_real_python(&state)?;
    let cluster = DevCluster::start(&state);
    let port = free_port();
    let mut operator = start_operator(
        &cluster,
        port,
        args.status_interval_seconds,
        state.join("operator.log"),
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(run(&args, &cluster, port));
    operator.stop(Duration::from_secs(10));
    let figures = outcome?;
    print_table(&figures);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&figures)?)?;
    }
    drop(cluster);
    if std::env::var_os("CAPSULE_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&state);
    }
    Ok(())
}
