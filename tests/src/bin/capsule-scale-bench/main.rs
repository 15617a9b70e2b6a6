//! `capsule-scale-bench`: one operator running many pools, at rest. Reports the operator's CPU,
//! RSS and API requests per minute (watches aside, from the devcluster's request log), in total
//! and per pool, beside the same figures for one pool measured first in the same run.
//!
//! The devcluster runs without its kubelet: the bench plays the kubelet (it marks each worker pod
//! Running and Ready) and the workers (each pod heartbeats every `--heartbeat-seconds` with its own
//! credential), so a thousand pools fit on one machine. What is measured is the operator's own
//! work: pool passes, heartbeat ingest, status writes.
//!
//! Usage: `capsule-scale-bench [--pools 1000] [--workers 3] [--measure-seconds 60]
//! [--status-interval-seconds 10] [--heartbeat-seconds 5] [--staleness-seconds 120] [--json PATH]`. Binaries come from this
//! executable's directory; `CAPSULE_BENCH_KEEP=1` keeps the state directory with the logs.

use std::path::PathBuf;
use std::time::Duration;

use capsule_e2e::{finish_bench, free_port, start_bench_operator, DevCluster};
use clap::Parser;

mod measure;
mod pools;
mod workers;

const NS: &str = "default";

#[derive(Parser, Clone)]
struct Args {
    /// Pools at rest in the measured period.
    #[arg(long, default_value_t = 1000)]
    pools: usize,
    /// Warm workers per pool.
    #[arg(long, default_value_t = 3)]
    workers: i32,
    /// Length of each measured period.
    #[arg(long, default_value_t = 60)]
    measure_seconds: u64,
    /// The operator's `--status-interval-seconds`.
    #[arg(long, default_value_t = 10)]
    status_interval_seconds: u64,
    /// How often each simulated worker heartbeats.
    #[arg(long, default_value_t = 5)]
    heartbeat_seconds: u64,
    /// The pools' `spec.heartbeat.stalenessSeconds`. Generous by default: on one machine the
    /// bench's own heartbeats can fall behind while the pools come up, and the operator would then
    /// rightly replace "stale" workers, which measures the bench rather than the operator at rest.
    #[arg(long, default_value_t = 120)]
    staleness_seconds: u64,
    /// Also write the figures as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> BenchResult<()> {
    let args = Args::parse();
    let state = std::env::temp_dir().join(format!("capsule-scale-bench-{}", std::process::id()));
    std::fs::create_dir_all(&state)?;
    let cluster = DevCluster::start_configured(
        &state,
        &["--no-kubelet".to_string()],
        Some(capsule_e2e::REQUEST_LOG_FILTER),
    );
    let port = free_port();
    let mut operator = start_bench_operator(&cluster, port, args.status_interval_seconds, &state);
    let runtime = tokio::runtime::Runtime::new()?;
    let outcome = runtime.block_on(measure::run(&args, &cluster, port, operator.pid()));
    operator.stop(Duration::from_secs(10));
    let figures = outcome?;
    measure::print(&figures);
    finish_bench(&figures, args.json.as_deref(), cluster, &state)?;
    Ok(())
}
