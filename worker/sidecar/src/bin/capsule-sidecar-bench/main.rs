//! `capsule-sidecar-bench`: events per second the sidecar takes in, resident bytes per buffered
//! event, the execute round-trip p50 with tracing on versus off, and what a warm worker costs in
//! memory beyond its interpreters (worker and sidecar processes, a bare Python as reference). Runs the real binaries found
//! next to this one (`capsule-sidecar`, `capsule-worker`); prints a table and writes JSON.

use std::path::PathBuf;

use clap::Parser;

mod calls;
mod figures;
mod procs;
mod report;

use figures::{measure_ingest, measure_memory, measure_round_trips};
use report::{print_table, print_warm_memory, write_json};

#[derive(Parser)]
#[command(about = "Benchmark the capsule-sidecar")]
struct Args {
    /// Events written for the ingest rate.
    #[arg(long, default_value_t = 500_000)]
    events: u64,
    /// Events buffered for the memory figure.
    #[arg(long, default_value_t = 100_000)]
    buffered: u64,
    /// Execute round trips per mode (tracing on / off), after 20 warm-up ones.
    #[arg(long, default_value_t = 300)]
    round_trips: usize,
    /// The traced worker's `CAPSULE_TRACE_LINGER_MS` (its default when absent).
    #[arg(long)]
    trace_linger_ms: Option<u64>,
    /// Where the JSON goes.
    #[arg(long, default_value = "capsule-sidecar-bench.json")]
    json: PathBuf,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("capsule-sidecar-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let http = reqwest::Client::new();
    let ingest = measure_ingest(&http, &dir, args.events).await;
    let memory = measure_memory(&http, &dir, args.buffered).await;
    let (trips, warm) = measure_round_trips(&http, &dir, &args).await;
    let _ = std::fs::remove_dir_all(&dir);
    print_table(&args, &ingest, &memory, &trips);
    print_warm_memory(&warm);
    write_json(&args, &ingest, &memory, &trips, &warm);
}
