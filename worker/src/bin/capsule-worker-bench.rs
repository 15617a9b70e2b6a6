//! `capsule-worker-bench`: execute round trip and stdout throughput of capsule-worker, next to the
//! same figures for a Jupyter kernel (ipykernel + jupyter_client from `$CAPSULE_TOOLS_DIR/venv`).
//!
//! Starts the real `capsule-worker` binary (from the same target directory unless `--worker-bin`),
//! drives it over HTTP on loopback, prints a table and writes the figures as JSON to `--json`.

use std::path::PathBuf;

use clap::Parser;
use serde::Serialize;

#[path = "../../bench/checkpoint.rs"]
mod checkpoint;
#[path = "../../bench/jupyter.rs"]
mod jupyter;
#[path = "../../bench/pipe_floor.rs"]
mod pipe_floor;
#[path = "../../bench/report.rs"]
mod report;
#[path = "../../bench/reset.rs"]
mod reset;
#[path = "../../bench/round_trip.rs"]
mod round_trip;
#[path = "../../bench/trace_peer.rs"]
mod trace_peer;
#[path = "../../bench/transaction.rs"]
mod transaction;
#[path = "../../bench/worker_process.rs"]
mod worker_process;

use worker_process::{
    execute, execute_request, start_worker, start_worker_with, stats, WorkerProcess, SESSION_TOKEN,
};

#[derive(Debug, Parser)]
#[command(name = "capsule-worker-bench", about)]
struct Args {
    /// Where to write the figures as JSON.
    #[arg(long, default_value = "target/capsule-worker-bench.json")]
    json: PathBuf,
    /// Measured `1+1` round trips (after the warm-up ones).
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Unmeasured round trips first.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// Bytes printed by each throughput run (in 1 KiB lines, then in 64 KiB writes).
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    throughput_bytes: usize,
    /// Throughput runs per stdout shape; min, median and max are reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The capsule-worker binary (default: next to this one).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// CAPSULE_WORKER_THREADS for the measured worker.
    #[arg(long, default_value_t = 1)]
    worker_threads: u64,
    /// Python for capsule-worker.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Measured resets (a session released with `Reset`), with and without a standby interpreter.
    #[arg(long, default_value_t = 30)]
    resets: usize,
    /// Warm-up code of the reset bench's workers (what a pool would import before serving).
    #[arg(long, default_value = "import json, decimal, email.parser, asyncio")]
    reset_warmup: String,
    /// Checkpoint create + restore runs per namespace size (1 MB, 100 MB); 0 skips them.
    #[arg(long, default_value_t = 3)]
    checkpoint_runs: usize,
    /// Run only the checkpoint figures (print them, write no JSON).
    #[arg(long)]
    checkpoints_only: bool,
    /// Samples per side (plain, transaction) of each transaction case.
    #[arg(long, default_value_t = 200)]
    transaction_iterations: usize,
    /// Run the transaction cases only (writes just those to `--json`).
    #[arg(long)]
    transaction_only: bool,
    /// Run the round trip and stdout figures only, with their references (writes just those).
    #[arg(long)]
    round_trip_only: bool,
    /// Internal: be the pipe floor's relay (copy stdin to stdout).
    #[arg(long, hide = true)]
    pipe_relay: bool,
    /// Where `scripts/install-tools.sh jupyter` put the venv.
    #[arg(long, env = "CAPSULE_TOOLS_DIR")]
    tools_dir: Option<PathBuf>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn fail(message: &str) -> ! {
    eprintln!("capsule-worker-bench: {message}");
    std::process::exit(1);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if args.pipe_relay {
        return pipe_floor::relay();
    }
    if cfg!(debug_assertions) {
        eprintln!("capsule-worker-bench: debug build; figures are only meaningful with --release");
    }
    if args.transaction_only {
        let cases = transaction::bench(&args).await;
        transaction::print(&cases, args.transaction_iterations);
        write_json(&args, &serde_json::json!({ "transaction": cases }));
        return;
    }
    if args.checkpoints_only {
        return checkpoint::print(&checkpoint::bench(&args).await);
    }
    if args.round_trip_only {
        let round_trips = round_trips(&args).await;
        report::print_round_trips(&round_trips, &args);
        report::print_targets(&round_trips);
        return write_json(&args, &round_trips);
    }
    let round_trips = round_trips(&args).await;
    let reset_with_standby = reset::bench(&args, true).await;
    let reset_interpreter_container = reset::bench_interpreter_container(&args).await;
    let reset_without_standby = reset::bench(&args, false).await;
    let checkpoints = if args.checkpoint_runs > 0 {
        checkpoint::bench(&args).await
    } else {
        Vec::new()
    };
    let transaction = transaction::bench(&args).await;
    let report = report::Report {
        round_trips,
        reset_with_standby,
        reset_interpreter_container,
        reset_without_standby,
        checkpoints,
        transaction,
    };
    report::print(&report, &args);
    write_json(&args, &report);
}

/// capsule-worker's round trip and stdout figures, then the same for Jupyter and the pipe floor.
async fn round_trips(args: &Args) -> report::RoundTrips {
    let (capsule_worker, capsule_worker_detail) = round_trip::bench(args).await;
    let pipe_floor = pipe_floor::bench(args).await;
    let jupyter = jupyter::bench(args).await;
    report::RoundTrips {
        iterations: args.iterations,
        throughput_bytes: args.throughput_bytes,
        capsule_worker,
        capsule_worker_detail,
        jupyter,
        pipe_floor,
        targets: report::targets(),
    }
}

fn write_json(args: &Args, report: &impl Serialize) {
    if let Some(parent) = args.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(report).unwrap())
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", args.json.display())));
    println!("figures written to {}", args.json.display());
}
