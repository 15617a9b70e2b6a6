//! Heartbeat ingest benchmark: the operator's real ingest endpoint (axum router, token check, pod
//! check against a pod cache of real worker pods, index update) in a child process, fed by
//! simulated workers over loopback HTTP. In the same run and the same server it measures a
//! reference endpoint that only reads the body, the floor of HTTP alone. Prints CPU-seconds per
//! 1,000 heartbeats, the cores 100,000 workers at a 5 s interval (the target's load) would take,
//! and the server's RSS; writes the figures as JSON.
//!
//! `capsule-operator-bench [--workers 100000] [--rounds 5] [--concurrency 32] [--json PATH]`

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::Instant;

use axum::routing::post;
use capsule_crds::{CapsulePool, CapsulePoolSpec};
use capsule_operator::config::OperatorConfig;
use capsule_operator::labels;
use capsule_operator::leader::Leadership;
use capsule_operator::pool::worker_pod;
use capsule_operator::relay::directory::StoreDirectory;
use capsule_operator::relay::index::WorkerIndex;
use capsule_operator::relay::ingest::{self, IngestMetrics, IngestState};
use capsule_operator::relay::limits::{IngestLimits, Rate};
use capsule_operator::watch_cache::reflect_grouped;
use capsule_protocol::auth::worker_credential;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Secret};
use k8s_openapi::ByteString;
use kube::runtime::watcher;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 100_000)]
    workers: usize,
    /// Heartbeats each worker sends.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Heartbeat interval the figures are scaled to, seconds.
    #[arg(long, default_value_t = 5.0)]
    interval: f64,
    /// Where the JSON goes.
    #[arg(long, default_value = "target/bench/operator-ingest.json")]
    json: std::path::PathBuf,
    /// Internal: run as the ingest server.
    #[arg(long, hide = true)]
    serve: bool,
}

const POOLS: usize = 100;
const NAMESPACE: &str = "bench";
const TOKEN: &str = "bench-pool-token";
/// The load the target is stated for: 100,000 workers at a 5 s interval.
const TARGET_RATE: f64 = 100_000.0 / 5.0;
const TARGET_CORES: f64 = 0.25;

/// Worker `i` is pod `w<i>` of pool `p<i % 100>`.
fn pool_name(i: usize) -> String {
    format!("p{}", i % POOLS)
}

fn pool(name: &str) -> CapsulePool {
    let spec: CapsulePoolSpec =
        serde_json::from_value(json!({"template": {"image": "capsule-worker"}})).unwrap();
    let mut pool = CapsulePool::new(name, spec);
    pool.metadata.namespace = Some(NAMESPACE.into());
    pool.metadata.uid = Some(format!("uid-{name}"));
    pool
}

/// The pods of every pool as the pool controller builds them, Ready, as the pod cache holds them;
/// built as the cache takes them, as a list's pages come.
fn worker_pods(workers: usize) -> impl Iterator<Item = Pod> {
    let config = OperatorConfig::default();
    let pools: Vec<CapsulePool> = (0..POOLS).map(|i| pool(&pool_name(i))).collect();
    (0..workers).map(move |i| {
        let mut pod = worker_pod::build(&pools[i % POOLS], &config, &format!("w{i}"));
        pod.metadata.uid = Some(format!("pod-uid-{i}"));
        pod.metadata.resource_version = Some(i.to_string());
        pod.status = Some(PodStatus {
            phase: Some("Running".into()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        pod
    })
}

fn pool_secret(pool: &str) -> Secret {
    let mut secret = Secret::default();
    secret.metadata.name = Some(labels::pool_token_secret(pool));
    secret.metadata.namespace = Some(NAMESPACE.into());
    secret.data = Some(
        [(labels::TOKEN_KEY.to_string(), ByteString(TOKEN.into()))]
            .into_iter()
            .collect(),
    );
    secret
}

/// The operator's own directory over caches listed once with every pool's key and worker pod.
async fn directory(workers: usize) -> StoreDirectory {
    let (secrets, mut writer) = kube::runtime::reflector::store();
    writer.apply_watcher_event(&watcher::Event::Init);
    for i in 0..POOLS {
        writer.apply_watcher_event(&watcher::Event::InitApply(pool_secret(&pool_name(i))));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let events = futures::stream::iter(
        std::iter::once(watcher::Event::Init)
            .chain(worker_pods(workers).map(|mut pod| {
                // As the operator's pod watch caches it.
                capsule_operator::relay::pod_trim::trim_pod(&mut pod);
                watcher::Event::InitApply(pod)
            }))
            .chain(std::iter::once(watcher::Event::InitDone))
            .map(Ok),
    )
    .chain(futures::stream::pending());
    let (pods, touched) = reflect_grouped(events, capsule_operator::relay::caches::pod_pool);
    tokio::spawn(touched.for_each(|_| async {}));
    pods.listed().await;
    StoreDirectory::new(secrets, pods)
}

/// The reference endpoint: reads the body and answers, as ingest's own route does, nothing else.
async fn reference(body: axum::body::Bytes) -> axum::Json<serde_json::Value> {
    std::hint::black_box(body);
    axum::Json(json!({}))
}

async fn serve(workers: usize) {
    let mut registry = prometheus_client::registry::Registry::default();
    let state = IngestState {
        index: Arc::new(WorkerIndex::default()),
        directory: Arc::new(directory(workers).await),
        metrics: IngestMetrics::register(&mut registry),
        // The benchmark measures ingest work, not the limiter refusing a synthetic flood.
        limits: Arc::new(IngestLimits::new(
            Rate::new(u32::MAX / 2, u32::MAX / 2).unwrap(),
            Rate::new(u32::MAX / 2, u32::MAX / 2).unwrap(),
        )),
        leadership: Leadership::always(),
        wakeups: Default::default(),
    };
    let router = ingest::router(state).route("/reference", post(reference));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // The parent learns where to send and how much the caches alone take.
    let (cached, _) = rss_mib(std::process::id());
    println!("{} {cached}", listener.local_addr().unwrap());
    axum::serve(listener, router).await.unwrap();
}

/// User + system CPU seconds of a process, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// Resident and peak resident memory of a process in MiB, from /proc.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |field: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (kib("VmRSS:") / 1024.0, kib("VmHWM:") / 1024.0)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.serve {
        return serve(args.workers).await;
    }
    let (mut child, base, cached) = spawn_server(args.workers);
    let pid = child.id();
    let load = Load {
        client: reqwest::Client::new(),
        // Each simulated worker presents its own credential, as real ones do.
        credentials: (0..args.workers)
            .map(|i| worker_credential(TOKEN, NAMESPACE, &format!("w{i}")))
            .collect(),
        concurrency: args.concurrency,
    };
    let ingest_url = format!("{base}/v1/heartbeats");
    // One warm-up round each fills the index and the server's buffers, then the measured rounds.
    load.send_round(&ingest_url, 1).await;
    let reference = load
        .measure(&format!("{base}/reference"), pid, args.rounds)
        .await;
    let ingest = load.measure(&ingest_url, pid, args.rounds).await;
    let (rss, peak) = rss_mib(pid);
    let _ = child.kill();
    let _ = child.wait();
    report(&args, &ingest, &reference, Rss { cached, rss, peak });
}

/// This binary again, as the ingest server; returns it, its base URL and its RSS in MiB once its
/// caches hold every pod.
fn spawn_server(workers: usize) -> (std::process::Child, String, f64) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--serve", "--workers", &workers.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ingest server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (addr, cached) = line.trim().split_once(' ').expect("address and RSS");
    (child, format!("http://{addr}"), cached.parse().unwrap())
}

fn heartbeat(i: usize, seq: u64) -> serde_json::Value {
    json!({"pod": format!("w{i}"), "namespace": NAMESPACE, "pool": pool_name(i), "seq": seq,
        "sentAt": "2026-11-27T00:00:00Z", "startedAt": "2026-11-27T00:00:00Z", "state": "idle",
        "session": null, "rssBytes": 40_000_000 + seq, "cpuPercent": 1.5, "namespaceSize": 12,
        "interpreterRestarts": 0,
        "executions": {"ok": seq, "error": 0, "cancelled": 0, "timedOut": 0},
        "executor": {"outputsEnqueued": seq * 10, "outputsSent": seq * 10, "outputsDropped": 0, "maxQueueDepth": 3, "drainTimeouts": 0},
        "bridge": {"pending": 0, "highWater": 1, "created": seq, "resolved": seq, "rejected": 0, "timedOut": 0, "cancelled": 0},
        "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0}})
}

/// The simulated workers' side.
struct Load {
    client: reqwest::Client,
    credentials: Vec<String>,
    concurrency: usize,
}

impl Load {
    /// `rounds` rounds to `url` after the warm-up's sequence number: wall-clock and server CPU.
    async fn measure(&self, url: &str, pid: u32, rounds: usize) -> Measured {
        let cpu_before = cpu_seconds(pid);
        let started = Instant::now();
        let mut statuses: HashMap<u16, usize> = HashMap::new();
        for seq in 2..(2 + rounds as u64) {
            for (k, v) in self.send_round(url, seq).await {
                *statuses.entry(k).or_default() += v;
            }
        }
        Measured {
            wall: started.elapsed().as_secs_f64(),
            cpu: cpu_seconds(pid) - cpu_before,
            sent: self.credentials.len() * rounds,
            statuses,
        }
    }

    /// One heartbeat from every worker; the count of each response status.
    async fn send_round(&self, url: &str, seq: u64) -> HashMap<u16, usize> {
        futures::stream::iter(0..self.credentials.len())
            .map(|i| async move {
                let r = self
                    .client
                    .post(url)
                    .bearer_auth(&self.credentials[i])
                    .json(&heartbeat(i, seq))
                    .send()
                    .await
                    .unwrap();
                r.status().as_u16()
            })
            .buffer_unordered(self.concurrency)
            .fold(
                HashMap::<u16, usize>::new(),
                |mut counts, status| async move {
                    *counts.entry(status).or_default() += 1;
                    counts
                },
            )
            .await
    }
}

/// Measured rounds: wall-clock and server CPU seconds, and the statuses received.
struct Measured {
    wall: f64,
    cpu: f64,
    sent: usize,
    statuses: HashMap<u16, usize>,
}

impl Measured {
    fn accepted(&self) -> usize {
        self.statuses.get(&200).copied().unwrap_or(0)
    }
    fn per_thousand(&self) -> f64 {
        self.cpu / self.sent as f64 * 1000.0
    }
    /// Cores at `rate` heartbeats per second.
    fn cores(&self, rate: f64) -> f64 {
        self.per_thousand() / 1000.0 * rate
    }
}

/// The server's resident memory, MiB: once its caches were filled, at the end, and at its peak.
struct Rss {
    cached: f64,
    rss: f64,
    peak: f64,
}

fn report(args: &Args, ingest: &Measured, reference: &Measured, rss: Rss) {
    let Rss { cached, rss, peak } = rss;
    let rate = args.workers as f64 / args.interval;
    let micros = |m: &Measured| m.per_thousand() * 1000.0;
    println!(
        "heartbeat ingest ({} workers, {} measured rounds, {} in flight)",
        args.workers, args.rounds, args.concurrency
    );
    println!("| figure | value |");
    println!("| --- | --- |");
    let (accepted, sent, statuses) = (ingest.accepted(), ingest.sent, &ingest.statuses);
    println!("| heartbeats accepted | {accepted} of {sent} (statuses {statuses:?}) |");
    println!(
        "| ingest rate | {:.0} heartbeats/s |",
        sent as f64 / ingest.wall
    );
    println!(
        "| server CPU per heartbeat | {:.1} µs (reference, HTTP alone: {:.1} µs) |",
        micros(ingest),
        micros(reference)
    );
    println!(
        "| cores for {} workers every {} s | {:.4} |",
        args.workers,
        args.interval,
        ingest.cores(rate)
    );
    println!(
        "| cores for 100,000 workers every 5 s | {:.4} (target <= {TARGET_CORES}; reference {:.4}) |",
        ingest.cores(TARGET_RATE),
        reference.cores(TARGET_RATE)
    );
    println!(
        "| server RSS | {rss:.0} MiB (peak {peak:.0} MiB; {cached:.0} MiB once the pod cache was filled) |"
    );
    let report = json!({"workers": args.workers, "rounds": args.rounds, "sent": sent,
        "accepted": accepted, "heartbeatsPerSecond": sent as f64 / ingest.wall,
        "cpuSecondsPer1000": ingest.per_thousand(), "coresAtInterval": ingest.cores(rate),
        "intervalSeconds": args.interval, "cpuMicrosPerHeartbeat": micros(ingest),
        "coresAt100kWorkers5s": ingest.cores(TARGET_RATE),
        "serverRssMiB": rss, "serverPeakRssMiB": peak, "serverRssCachesFilledMiB": cached,
        "reference": {"accepted": reference.accepted(), "cpuSecondsPer1000": reference.per_thousand(),
            "cpuMicrosPerHeartbeat": micros(reference), "coresAt100kWorkers5s": reference.cores(TARGET_RATE)},
        "targets": {"coresAtInterval": TARGET_CORES, "coresAt100kWorkers5s": TARGET_CORES}});
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
}
