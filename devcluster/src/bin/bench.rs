//! `capsule-devcluster-bench`: the devcluster's own overhead, so it can be told apart when the
//! operator is measured on it. Creates pods through kube-rs (objects created per second), then
//! patches each pod once while several watchers run and measures watch delivery latency (from just
//! before the patch is sent to the watcher receiving the MODIFIED event). Prints a table and
//! writes the figures as JSON.

use capsule_devcluster::{DevCluster, DevClusterConfig};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

#[derive(Parser)]
#[command(
    name = "capsule-devcluster-bench",
    about = "Measures the devcluster's own throughput and watch latency"
)]
struct Args {
    /// Pods to create.
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Concurrent watchers on pods.
    #[arg(long, default_value_t = 10)]
    watchers: usize,
    /// Requests in flight at once while creating and patching.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Where to write the JSON figures.
    #[arg(long, default_value = "bench-devcluster.json")]
    output: PathBuf,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("bench-{i}"), "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]},
    }))
    .expect("valid pod")
}

type SentAt = Arc<Mutex<HashMap<String, Instant>>>;
type Latencies = Arc<Mutex<Vec<f64>>>;

/// What one run measured; `samples` are the watch delivery latencies in ms, sorted.
struct Figures {
    creates_per_second: f64,
    patches_per_second: f64,
    list_ms: f64,
    samples: Vec<f64>,
}

/// Creates the pods, `concurrency` requests at a time; returns pods created per second.
async fn create_pods(pods: &Api<Pod>, args: &Args) -> capsule_devcluster::Result<f64> {
    let started = Instant::now();
    futures::stream::iter(0..args.pods)
        .map(|i| {
            let pods = pods.clone();
            async move { pods.create(&PostParams::default(), &pod(i)).await }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let create_seconds = started.elapsed().as_secs_f64();
    Ok(args.pods as f64 / create_seconds)
}

/// Starts the watchers from `rv`; each records, for every MODIFIED pod, the time since its
/// patch was sent, and ends after `args.pods` of them.
async fn start_watchers(
    pods: &Api<Pod>,
    rv: &str,
    args: &Args,
    sent: &SentAt,
    latencies: &Latencies,
) -> capsule_devcluster::Result<Vec<JoinHandle<()>>> {
    let mut watchers = Vec::new();
    for _ in 0..args.watchers {
        let stream = pods.watch(&WatchParams::default().timeout(290), rv).await?;
        let sent = sent.clone();
        let latencies = latencies.clone();
        let expected = args.pods;
        watchers.push(tokio::spawn(async move {
            let mut stream = stream.boxed();
            let mut seen = 0;
            while let Some(Ok(event)) = stream.next().await {
                if let WatchEvent::Modified(pod) = event {
                    let name = pod.metadata.name.unwrap_or_default();
                    let start = sent.lock().expect("not poisoned").get(&name).copied();
                    if let Some(start) = start {
                        latencies
                            .lock()
                            .expect("not poisoned")
                            .push(start.elapsed().as_secs_f64() * 1000.0);
                    }
                    seen += 1;
                    if seen == expected {
                        return;
                    }
                }
            }
        }));
    }
    Ok(watchers)
}

/// Patches each pod once, noting when each patch was sent; returns patches per second.
async fn patch_pods(
    pods: &Api<Pod>,
    args: &Args,
    sent: &SentAt,
) -> capsule_devcluster::Result<f64> {
    let patch_started = Instant::now();
    futures::stream::iter(0..args.pods)
        .map(|i| {
            let pods = pods.clone();
            let sent = sent.clone();
            async move {
                let name = format!("bench-{i}");
                let patch = json!({"metadata": {"labels": {"bench-round": "1"}}});
                sent.lock()
                    .expect("not poisoned")
                    .insert(name.clone(), Instant::now());
                pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            }
        })
        .buffer_unordered(args.concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(args.pods as f64 / patch_started.elapsed().as_secs_f64())
}

fn figures_json(args: &Args, figures: &Figures) -> serde_json::Value {
    let samples = &figures.samples;
    json!({
        "pods": args.pods,
        "watchers": args.watchers,
        "concurrency": args.concurrency,
        "creates_per_second": figures.creates_per_second,
        "patches_per_second": figures.patches_per_second,
        "list_all_pods_ms": figures.list_ms,
        "watch_events_delivered": samples.len(),
        "watch_events_expected": args.pods * args.watchers,
        "watch_latency_ms": {
            "p50": percentile(samples, 0.50),
            "p95": percentile(samples, 0.95),
            "p99": percentile(samples, 0.99),
            "max": samples.last().copied().unwrap_or(f64::NAN),
        },
    })
}

fn print_table(args: &Args, figures: &Figures) {
    let delivered = figures.samples.len();
    println!(
        "capsule-devcluster benchmark ({} pods, {} watchers, {} in flight)",
        args.pods, args.watchers, args.concurrency
    );
    println!("{:<34} {:>12}", "measure", "value");
    println!(
        "{:<34} {:>12.0}",
        "pods created / s", figures.creates_per_second
    );
    println!(
        "{:<34} {:>12.0}",
        "pods patched / s (10 watchers)", figures.patches_per_second
    );
    println!("{:<34} {:>12.1}", "list all pods (ms)", figures.list_ms);
    println!(
        "{:<34} {:>12}",
        "watch events delivered",
        format!("{delivered}/{}", args.pods * args.watchers)
    );
    for (label, p) in [("p50", 0.50), ("p95", 0.95), ("p99", 0.99)] {
        println!(
            "{:<34} {:>12.2}",
            format!("watch delivery latency {label} (ms)"),
            percentile(&figures.samples, p)
        );
    }
}

#[tokio::main]
async fn main() -> capsule_devcluster::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("capsule-devcluster-bench-{}", std::process::id()));
    let cluster = DevCluster::start(DevClusterConfig::new(&dir)).await?;
    let client = cluster.client().await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");

    let creates_per_second = create_pods(&pods, &args).await?;

    let list_started = Instant::now();
    let listed = pods.list(&ListParams::default()).await?;
    let list_ms = list_started.elapsed().as_secs_f64() * 1000.0;
    let rv = listed.metadata.resource_version.unwrap_or_default();

    let sent: SentAt = Arc::new(Mutex::new(HashMap::new()));
    let latencies: Latencies = Arc::new(Mutex::new(Vec::new()));
    let watchers = start_watchers(&pods, &rv, &args, &sent, &latencies).await?;
    let patches_per_second = patch_pods(&pods, &args, &sent).await?;
    for watcher in watchers {
        let _ = tokio::time::timeout(Duration::from_secs(60), watcher).await;
    }
    let mut samples = latencies.lock().expect("not poisoned").clone();
    samples.sort_by(|a, b| a.total_cmp(b));
    let figures = Figures {
        creates_per_second,
        patches_per_second,
        list_ms,
        samples,
    };
    let json = figures_json(&args, &figures);
    print_table(&args, &figures);
    std::fs::write(&args.output, serde_json::to_vec_pretty(&json)?)?;
    println!("figures written to {}", args.output.display());
    cluster.shutdown().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
