//! The figures: quantiles and a summary per kind of acquisition, and the printed table.

use serde_json::json;

use crate::bench::Sample;

fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn summary(samples: &[Sample]) -> serde_json::Value {
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

/// First-result p50 of `kind` over that of `reference`.
pub fn p50_ratio(kind: &serde_json::Value, reference: &serde_json::Value) -> f64 {
    let p50 = |k: &serde_json::Value| k["first_result_ms"]["p50"].as_f64().unwrap_or(f64::NAN);
    p50(kind) / p50(reference)
}

pub fn print_table(figures: &serde_json::Value) {
    println!(
        "{:<26} {:>8} {:>10} {:>18} {:>18} {:>14} {:>14}",
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
        "warm_hit_worker_container",
        "miss_worker_container",
    ] {
        let k = &figures[kind];
        println!(
            "{:<26} {:>8} {:>10} {:>15.1} ms {:>15.1} ms {:>11.1} ms {:>11.1} ms",
            kind,
            k["samples"],
            k["warm_hits"],
            k["first_result_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            k["first_result_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
            k["bound_ms"]["p50"].as_f64().unwrap_or(f64::NAN),
            k["bound_ms"]["p99"].as_f64().unwrap_or(f64::NAN),
        );
    }
    for (kind, ratio) in figures["p50_ratio_to_worker_container"]
        .as_object()
        .into_iter()
        .flatten()
    {
        println!(
            "{kind} p50, interpreter container / worker container: {:.2}x",
            ratio.as_f64().unwrap_or(f64::NAN)
        );
    }
    let figure = |key: &str| figures[key].as_f64().unwrap_or(f64::NAN);
    println!(
        "status writes per pool per minute (steady, status interval {} s): {:.1}",
        figures["status_interval_seconds"],
        figure("status_writes_per_pool_per_minute")
    );
    println!(
        "API requests per pool per minute at rest: {:.1} reads, {:.1} writes",
        figure("api_reads_per_pool_per_minute_at_rest"),
        figure("api_writes_per_pool_per_minute_at_rest")
    );
    println!(
        "API requests per session in the burst (release included): {:.1} reads, {:.1} writes",
        figure("api_reads_per_session_in_burst"),
        figure("api_writes_per_session_in_burst")
    );
}
