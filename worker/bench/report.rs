//! The full report of `capsule-worker-bench`: every figure in one JSON document, and the tables
//! printed from it, ending with the targets met or missed.

use serde::Serialize;

use super::pipe_floor::PipeFigures;
use super::reset::ResetFigures;
use super::round_trip::{Figures, WorkerDetail};
use super::{checkpoint, transaction, Args};

/// The round trip and stdout figures with their references, all from the same run.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoundTrips {
    pub(crate) iterations: usize,
    pub(crate) throughput_bytes: usize,
    pub(crate) capsule_worker: Figures,
    pub(crate) capsule_worker_detail: WorkerDetail,
    pub(crate) jupyter: Figures,
    pub(crate) pipe_floor: PipeFigures,
    pub(crate) targets: serde_json::Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    #[serde(flatten)]
    pub(crate) round_trips: RoundTrips,
    /// With the warmed standby (the default) and, as the reference, starting one on demand.
    pub(crate) reset_with_standby: ResetFigures,
    /// With a standby, the fork server in another process over its socket (the pod's
    /// `interpreter` container).
    pub(crate) reset_interpreter_container: ResetFigures,
    pub(crate) reset_without_standby: ResetFigures,
    pub(crate) checkpoints: Vec<checkpoint::CheckpointFigures>,
    /// Transaction overhead by case (bench/transaction.rs).
    pub(crate) transaction: Vec<transaction::Case>,
}

/// Targets of issue #21: `1+1` round trip with tracing on, and stdout MB/s in both shapes.
const TARGET_P50_MS: f64 = 0.2;
const TARGET_P99_MS: f64 = 0.5;
const TARGET_STDOUT_MBPS: f64 = 600.0;

pub(crate) fn targets() -> serde_json::Value {
    serde_json::json!({
        "p50Ms": TARGET_P50_MS,
        "p99Ms": TARGET_P99_MS,
        "stdoutMBps": TARGET_STDOUT_MBPS,
    })
}

/// Prints every table of the report.
pub(crate) fn print(report: &Report, args: &Args) {
    print_round_trips(&report.round_trips, args);
    print_resets(report, args);
    checkpoint::print(&report.checkpoints);
    transaction::print(&report.transaction, args.transaction_iterations);
    print_targets(&report.round_trips);
}

/// The round trip table, its references and the targets.
pub(crate) fn print_round_trips(report: &RoundTrips, args: &Args) {
    let mb = args.throughput_bytes as f64 / 1e6;
    let detail = &report.capsule_worker_detail;
    println!(
        "capsule-worker-bench ({} round trips of `1+1`, tracing to {}; stdout {mb:.1} MB per run, {} runs, MB/s min/median/max)",
        args.iterations, detail.trace_peer, args.runs
    );
    println!(
        "{:<16} {:>8} {:>8} {:>18} {:>18} {:>9}",
        "runtime", "p50 ms", "p99 ms", "1 KiB lines", "64 KiB writes", "complete"
    );
    for (name, f) in [
        ("capsule-worker", &report.capsule_worker),
        ("jupyter", &report.jupyter),
    ] {
        let shape = |i: usize| f.stdout.get(i).map(|t| t.spread()).unwrap_or_default();
        println!(
            "{:<16} {:>8.3} {:>8.3} {:>18} {:>18} {:>9}",
            name,
            f.p50_ms,
            f.p99_ms,
            shape(0),
            shape(1),
            f.all_output_received
        );
    }
    let pipe = &report.pipe_floor;
    println!(
        "{:<16} {:>8.3} {:>8.3} {:>18} {:>18}",
        "pipe floor",
        pipe.p50_ms,
        pipe.p99_ms,
        "-",
        pipe.stdout.spread()
    );
    println!(
        "capsule-worker: p50 {:.1}x the pipe floor, {:.1}x faster than jupyter; GET /healthz p50 {:.3} ms p99 {:.3} ms; \
         CPU per execute: worker {:.0} µs, interpreter {:.0} µs; trace events sent {}, dropped {}",
        report.capsule_worker.p50_ms / pipe.p50_ms,
        report.jupyter.p50_ms / report.capsule_worker.p50_ms,
        detail.healthz_p50_ms,
        detail.healthz_p99_ms,
        detail.worker_cpu_us_per_execute,
        detail.interpreter_cpu_us_per_execute,
        detail.trace_events_sent,
        detail.trace_events_dropped,
    );
    for cpu in &detail.stdout_cpu {
        println!(
            "capsule-worker stdout {}: CPU ms per run: worker {:.1}, interpreter {:.1}, bench client {:.1}",
            cpu.name, cpu.worker_ms_per_run, cpu.interpreter_ms_per_run, cpu.client_ms_per_run
        );
    }
}

fn print_resets(report: &Report, args: &Args) {
    println!(
        "reset ({} samples, warm-up `{}`): {:<16} {:>12} {:>12} {:>18} {:>18}",
        args.resets,
        args.reset_warmup,
        "",
        "swap p50 ms",
        "swap p99 ms",
        "to result p50 ms",
        "to result p99 ms"
    );
    for (name, f) in [
        ("standby", &report.reset_with_standby),
        ("interp container", &report.reset_interpreter_container),
        ("no standby (ref)", &report.reset_without_standby),
    ] {
        println!(
            "{:<16} {:>12.2} {:>12.2} {:>18.2} {:>18.2}",
            name, f.swap_p50_ms, f.swap_p99_ms, f.to_first_result_p50_ms, f.to_first_result_p99_ms
        );
    }
}

pub(crate) fn print_targets(report: &RoundTrips) {
    let worker = &report.capsule_worker;
    let met = |ok: bool| if ok { "met" } else { "missed" };
    let stdout: Vec<String> = worker
        .stdout
        .iter()
        .map(|t| {
            format!(
                "{} median {:.0} ({}, min {:.0})",
                t.name,
                t.median_mbps,
                met(t.median_mbps >= TARGET_STDOUT_MBPS),
                t.min_mbps
            )
        })
        .collect();
    println!(
        "targets: p50 <= {TARGET_P50_MS} ms ({}), p99 <= {TARGET_P99_MS} ms ({}), stdout >= {TARGET_STDOUT_MBPS} MB/s: {}; nothing dropped under Block ({})",
        met(worker.p50_ms <= TARGET_P50_MS),
        met(worker.p99_ms <= TARGET_P99_MS),
        stdout.join(", "),
        met(worker.outputs_dropped == 0 && worker.all_output_received),
    );
}
