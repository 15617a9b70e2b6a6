//! The full report of `capsule-worker-bench`: every figure in one JSON document, and the tables
//! printed from it, ending with the targets met or missed.

use serde::Serialize;

use super::reset::ResetFigures;
use super::round_trip::Figures;
use super::{checkpoint, transaction, Args};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    pub(crate) iterations: usize,
    pub(crate) throughput_bytes: usize,
    pub(crate) capsule_worker: Figures,
    pub(crate) jupyter: Figures,
    /// With the warmed standby (the default) and, as the reference, starting one on demand.
    pub(crate) reset_with_standby: ResetFigures,
    /// With a standby, the fork server in another process over its socket (the pod's
    /// `interpreter` container).
    pub(crate) reset_interpreter_container: ResetFigures,
    pub(crate) reset_without_standby: ResetFigures,
    pub(crate) checkpoints: Vec<checkpoint::CheckpointFigures>,
    /// Transaction overhead by case (bench/transaction.rs).
    pub(crate) transaction: Vec<transaction::Case>,
    pub(crate) targets: serde_json::Value,
}

/// Prints every table of the report.
pub(crate) fn print(report: &Report, args: &Args) {
    print_round_trips(report, args);
    print_resets(report, args);
    checkpoint::print(&report.checkpoints);
    transaction::print(&report.transaction, args.transaction_iterations);
    print_targets(&report.capsule_worker);
}

fn print_round_trips(report: &Report, args: &Args) {
    let mb = args.throughput_bytes as f64 / 1e6;
    println!("capsule-worker-bench ({} round trips of `1+1`, {mb:.1} MB printed in 1 KiB lines, median of {} runs)", args.iterations, args.runs);
    println!(
        "{:<16} {:>10} {:>10} {:>16} {:>22} {:>10}",
        "runtime", "p50 ms", "p99 ms", "stdout MB/s", "runs min..max MB/s", "complete"
    );
    for (name, f) in [
        ("capsule-worker", &report.capsule_worker),
        ("jupyter", &report.jupyter),
    ] {
        let runs = &f.throughput_runs_mbps;
        let spread = match (runs.first(), runs.last()) {
            (Some(min), Some(max)) => format!("{min:.1}..{max:.1}"),
            _ => "-".to_owned(),
        };
        println!(
            "{:<16} {:>10.3} {:>10.3} {:>16.1} {:>22} {:>10}",
            name, f.p50_ms, f.p99_ms, f.throughput_mbps, spread, f.all_output_received
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

fn print_targets(worker: &Figures) {
    println!(
        "targets: p50 <= 0.5 ms ({}), throughput >= 300 MB/s ({}), nothing dropped under Block ({})",
        if worker.p50_ms <= 0.5 { "met" } else { "missed" },
        if worker.throughput_mbps >= 300.0 { "met" } else { "missed" },
        if worker.outputs_dropped == 0 && worker.all_output_received { "met" } else { "missed" },
    );
}
