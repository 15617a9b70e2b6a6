//! Round trip and stdout throughput of `capsule-worker-bench`: `1+1` latency percentiles and MB/s
//! of printed lines, the figures Jupyter is measured with too (bench/jupyter.rs).

use std::time::Instant;

use capsule_protocol::execute::EventBody;
use serde::Serialize;

use super::{execute, percentile, start_worker, stats, Args};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Figures {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) throughput_mbps: f64,
    /// Every throughput run, sorted (the machine's load shows in their spread).
    pub(crate) throughput_runs_mbps: Vec<f64>,
    pub(crate) all_output_received: bool,
    pub(crate) outputs_dropped: u64,
}

pub(crate) async fn bench(args: &Args) -> Figures {
    let worker = start_worker(args).await;
    for _ in 0..args.warmup {
        execute(&worker, "1+1").await;
    }
    let mut samples = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let started = Instant::now();
        let (_, last) = execute(&worker, "1+1").await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(matches!(last, EventBody::Result { .. }));
    }
    samples.sort_by(f64::total_cmp);
    let lines = args.throughput_bytes / 1024;
    let code = format!("line = 'x' * 1023\nfor _ in range({lines}):\n    print(line)");
    let dropped_before = stats(&worker).await.executor.outputs_dropped;
    let mut throughputs = Vec::new();
    let mut all_received = true;
    for _ in 0..args.runs {
        let started = Instant::now();
        let (received, last) = execute(&worker, &code).await;
        let seconds = started.elapsed().as_secs_f64();
        all_received &= received == lines * 1024 && matches!(last, EventBody::Result { .. });
        throughputs.push(received as f64 / seconds / 1e6);
    }
    throughputs.sort_by(f64::total_cmp);
    let dropped = stats(&worker).await.executor.outputs_dropped - dropped_before;
    Figures {
        p50_ms: percentile(&samples, 0.5),
        p99_ms: percentile(&samples, 0.99),
        throughput_mbps: throughputs[throughputs.len() / 2],
        throughput_runs_mbps: throughputs.clone(),
        all_output_received: all_received,
        outputs_dropped: dropped,
    }
}
