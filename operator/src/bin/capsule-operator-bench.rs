//! Heartbeat ingest benchmark: the operator's real ingest endpoint (axum router, token check, pod
//! check, index update) in a child process, fed by simulated workers over loopback HTTP. Prints
//! CPU-seconds per 1,000 heartbeats and the cores that 10,000 workers at a 5 s interval would take,
//! and writes the figures as JSON.
//!
//! `capsule-operator-bench [--workers 10000] [--rounds 5] [--concurrency 32] [--json PATH]`

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::Instant;

use capsule_operator::leader::Leadership;
use capsule_operator::relay::directory::{Directory, PodFacts};
use capsule_operator::relay::index::WorkerIndex;
use capsule_operator::relay::ingest::{self, IngestMetrics, IngestState};
use capsule_operator::relay::limits::{IngestLimits, Rate};
use capsule_protocol::auth::worker_credential;
use clap::Parser;
use futures::StreamExt;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Simulated workers.
    #[arg(long, default_value_t = 10_000)]
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
const TOKEN: &str = "bench-pool-token";

/// Every simulated worker belongs to pool `p<i % 100>` in namespace `bench`.
struct StaticDirectory {
    workers: usize,
}

impl Directory for StaticDirectory {
    fn pool_key(&self, namespace: &str, _pool: &str) -> Option<String> {
        (namespace == "bench").then(|| TOKEN.to_string())
    }
    fn pod(&self, _namespace: &str, pod: &str) -> Option<PodFacts> {
        let i: usize = pod.strip_prefix('w')?.parse().ok()?;
        (i < self.workers).then(|| PodFacts {
            pool: Some(format!("p{}", i % POOLS)),
            binding: None,
            credential: Default::default(),
            ready: true,
        })
    }
}

fn heartbeat(i: usize, seq: u64) -> serde_json::Value {
    json!({"pod": format!("w{i}"), "namespace": "bench", "pool": format!("p{}", i % POOLS), "seq": seq,
        "sentAt": "2026-11-27T00:00:00Z", "startedAt": "2026-11-27T00:00:00Z", "state": "idle",
        "session": null, "rssBytes": 40_000_000 + seq, "cpuPercent": 1.5, "namespaceSize": 12,
        "interpreterRestarts": 0,
        "executions": {"ok": seq, "error": 0, "cancelled": 0, "timedOut": 0},
        "executor": {"outputsEnqueued": seq * 10, "outputsSent": seq * 10, "outputsDropped": 0, "maxQueueDepth": 3, "drainTimeouts": 0},
        "bridge": {"pending": 0, "highWater": 1, "created": seq, "resolved": seq, "rejected": 0, "timedOut": 0, "cancelled": 0},
        "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0}})
}

async fn serve(workers: usize) {
    let mut registry = prometheus_client::registry::Registry::default();
    let state = IngestState {
        index: Arc::new(WorkerIndex::default()),
        directory: Arc::new(StaticDirectory { workers }),
        metrics: IngestMetrics::register(&mut registry),
        // The benchmark measures ingest work, not the limiter refusing a synthetic flood.
        limits: Arc::new(IngestLimits::new(
            Rate::new(u32::MAX / 2, u32::MAX / 2).unwrap(),
            Rate::new(u32::MAX / 2, u32::MAX / 2).unwrap(),
        )),
        leadership: Leadership::always(),
        wakeups: Default::default(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("{}", listener.local_addr().unwrap());
    axum::serve(listener, ingest::router(state)).await.unwrap();
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

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.serve {
        return serve(args.workers).await;
    }
    let (mut child, url) = spawn_server(args.workers);
    let load = Load {
        client: reqwest::Client::new(),
        url,
        // Each simulated worker presents its own credential, as real ones do.
        credentials: (0..args.workers)
            .map(|i| worker_credential(TOKEN, "bench", &format!("w{i}")))
            .collect(),
        concurrency: args.concurrency,
    };
    // One warm-up round fills the index, then the measured rounds.
    load.send_round(1).await;
    let cpu_before = cpu_seconds(child.id());
    let started = Instant::now();
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    for seq in 2..(2 + args.rounds as u64) {
        for (k, v) in load.send_round(seq).await {
            *statuses.entry(k).or_default() += v;
        }
    }
    let measured = Measured {
        wall: started.elapsed().as_secs_f64(),
        cpu: cpu_seconds(child.id()) - cpu_before,
        statuses,
    };
    let _ = child.kill();
    let _ = child.wait();
    report(&args, &measured);
}

/// This binary again, as the ingest server; returns it and its heartbeat URL.
fn spawn_server(workers: usize) -> (std::process::Child, String) {
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--serve", "--workers", &workers.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ingest server starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, format!("http://{}/v1/heartbeats", line.trim()))
}

/// The simulated workers' side.
struct Load {
    client: reqwest::Client,
    url: String,
    credentials: Vec<String>,
    concurrency: usize,
}

impl Load {
    /// One heartbeat from every worker; the count of each response status.
    async fn send_round(&self, seq: u64) -> HashMap<u16, usize> {
        futures::stream::iter(0..self.credentials.len())
            .map(|i| async move {
                let r = self
                    .client
                    .post(&self.url)
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

/// The measured rounds: wall-clock and server CPU seconds, and the statuses received.
struct Measured {
    wall: f64,
    cpu: f64,
    statuses: HashMap<u16, usize>,
}

fn report(args: &Args, measured: &Measured) {
    let Measured {
        wall,
        cpu,
        statuses,
    } = measured;
    let sent = args.workers * args.rounds;
    let accepted = statuses.get(&200).copied().unwrap_or(0);
    let per_thousand = cpu / sent as f64 * 1000.0;
    let rate_needed = args.workers as f64 / args.interval;
    let cores = per_thousand / 1000.0 * rate_needed;

    println!(
        "heartbeat ingest ({} workers, {} measured rounds, {} in flight)",
        args.workers, args.rounds, args.concurrency
    );
    println!("| figure | value |");
    println!("| --- | --- |");
    println!("| heartbeats accepted | {accepted} of {sent} (statuses {statuses:?}) |");
    println!("| ingest rate | {:.0} heartbeats/s |", sent as f64 / wall);
    println!("| server CPU per 1,000 heartbeats | {per_thousand:.4} CPU-s |");
    println!(
        "| cores for {} workers every {} s | {cores:.4} (target <= 0.25) |",
        args.workers, args.interval
    );
    let report = json!({"workers": args.workers, "rounds": args.rounds, "sent": sent,
        "accepted": accepted, "heartbeatsPerSecond": sent as f64 / wall,
        "cpuSecondsPer1000": per_thousand, "coresAtInterval": cores, "intervalSeconds": args.interval,
        "targets": {"coresAtInterval": 0.25}});
    if let Some(parent) = args.json.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(&report).unwrap()).unwrap();
}
