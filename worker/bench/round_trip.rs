//! Round trip and stdout throughput of `capsule-worker-bench`: `1+1` latency percentiles and MB/s
//! of two stdout shapes, with tracing on (a sidecar on the trace socket), the figures Jupyter and
//! the pipe floor are measured with too (bench/jupyter.rs, bench/pipe_floor.rs).

use std::time::Instant;

use capsule_protocol::execute::EventBody;
use serde::Serialize;

use super::trace_peer::TracePeer;
use super::worker_process::{cpu_micros, health, own_cpu_micros, WorkerProcess};
use super::{execute, percentile, start_worker_with, stats, Args};

/// The stdout shapes every runtime is measured with, by name.
#[derive(Debug, Clone, Copy)]
pub(crate) enum StdoutShape {
    /// `print` of 1 KiB lines: many small writes for the driver to gather.
    Lines1KiB,
    /// `sys.stdout.write` of 64 KiB blocks (of 1 KiB lines): writes as large as a chunk.
    Writes64KiB,
}

impl StdoutShape {
    pub(crate) const ALL: [StdoutShape; 2] = [StdoutShape::Lines1KiB, StdoutShape::Writes64KiB];

    pub(crate) fn name(self) -> &'static str {
        match self {
            StdoutShape::Lines1KiB => "lines1KiB",
            StdoutShape::Writes64KiB => "writes64KiB",
        }
    }

    /// The code printing about `total` bytes in this shape, and the bytes it prints exactly.
    pub(crate) fn code(self, total: usize) -> (String, usize) {
        match self {
            StdoutShape::Lines1KiB => {
                let lines = total / 1024;
                let code = format!("line = 'x' * 1023\nfor _ in range({lines}):\n    print(line)");
                (code, lines * 1024)
            }
            StdoutShape::Writes64KiB => {
                let blocks = total / 65536;
                let code = format!(
                    "import sys\nblock = ('x' * 1023 + '\\n') * 64\nfor _ in range({blocks}):\n    sys.stdout.write(block)"
                );
                (code, blocks * 65536)
            }
        }
    }
}

/// MB/s of one stdout shape over several runs.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Throughput {
    pub(crate) name: &'static str,
    pub(crate) min_mbps: f64,
    pub(crate) median_mbps: f64,
    pub(crate) max_mbps: f64,
    /// Every run, sorted (the machine's load shows in their spread).
    pub(crate) runs_mbps: Vec<f64>,
}

impl Throughput {
    pub(crate) fn from_runs(name: &'static str, mut runs: Vec<f64>) -> Throughput {
        runs.sort_by(f64::total_cmp);
        let at = |i: usize| runs.get(i).copied().unwrap_or(f64::NAN);
        Throughput {
            name,
            min_mbps: at(0),
            median_mbps: at(runs.len() / 2),
            max_mbps: at(runs.len().saturating_sub(1)),
            runs_mbps: runs,
        }
    }

    /// `min/median/max` for the tables.
    pub(crate) fn spread(&self) -> String {
        format!(
            "{:.0}/{:.0}/{:.0}",
            self.min_mbps, self.median_mbps, self.max_mbps
        )
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Figures {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    /// One entry per [`StdoutShape`].
    pub(crate) stdout: Vec<Throughput>,
    pub(crate) all_output_received: bool,
    pub(crate) outputs_dropped: u64,
}

/// What only capsule-worker reports: where the round trip's time and CPU go, and the tracing.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkerDetail {
    /// `GET /healthz` on the same client and connection: the HTTP layer alone.
    pub(crate) healthz_p50_ms: f64,
    pub(crate) healthz_p99_ms: f64,
    /// CPU per measured `1+1` round trip (user + system, from /proc; 10 ms ticks over many).
    pub(crate) worker_cpu_us_per_execute: f64,
    pub(crate) interpreter_cpu_us_per_execute: f64,
    /// CPU per stdout run of each shape: what the throughput costs whatever the machine's load.
    pub(crate) stdout_cpu: Vec<StdoutCpu>,
    /// Who read the trace socket: `capsule-sidecar` or the stand-in reader.
    pub(crate) trace_peer: &'static str,
    pub(crate) trace_events_sent: u64,
    pub(crate) trace_events_dropped: u64,
}

/// CPU ms per stdout run, by process: on 2 cores the three share them, so each one's cost bounds
/// the throughput of all.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StdoutCpu {
    pub(crate) name: &'static str,
    pub(crate) worker_ms_per_run: f64,
    pub(crate) interpreter_ms_per_run: f64,
    /// This bench's own HTTP client, reading and checking every line.
    pub(crate) client_ms_per_run: f64,
}

pub(crate) async fn bench(args: &Args) -> (Figures, WorkerDetail) {
    let peer = TracePeer::start().await;
    let worker = start_worker_with(args, &[("CAPSULE_TRACE_SOCKET", peer.socket_str())]).await;
    for _ in 0..args.warmup {
        execute(&worker, "1+1").await;
        health(&worker).await;
    }
    let (p50_ms, p99_ms, cpu) = round_trips(args, &worker).await;
    let (healthz_p50_ms, healthz_p99_ms) = health_round_trips(args, &worker).await;
    let dropped_before = stats(&worker).await.executor.outputs_dropped;
    let mut stdout = Vec::new();
    let mut stdout_cpu = Vec::new();
    let mut all_output_received = true;
    for shape in StdoutShape::ALL {
        let (code, expected) = shape.code(args.throughput_bytes);
        let mut runs = Vec::new();
        let (worker_before, client_before) = (cpu_micros(worker.pid), own_cpu_micros());
        for _ in 0..args.runs {
            let started = Instant::now();
            let (received, last) = execute(&worker, &code).await;
            let seconds = started.elapsed().as_secs_f64();
            all_output_received &= received == expected && matches!(last, EventBody::Result { .. });
            runs.push(received as f64 / seconds / 1e6);
        }
        let (worker_after, client_after) = (cpu_micros(worker.pid), own_cpu_micros());
        let per_run = |after: f64, before: f64| (after - before) / args.runs.max(1) as f64 / 1000.0;
        stdout_cpu.push(StdoutCpu {
            name: shape.name(),
            worker_ms_per_run: per_run(worker_after.0, worker_before.0),
            interpreter_ms_per_run: per_run(worker_after.1, worker_before.1),
            client_ms_per_run: per_run(client_after, client_before),
        });
        stdout.push(Throughput::from_runs(shape.name(), runs));
    }
    let after = stats(&worker).await;
    let figures = Figures {
        p50_ms,
        p99_ms,
        stdout,
        all_output_received,
        outputs_dropped: after.executor.outputs_dropped - dropped_before,
    };
    let detail = WorkerDetail {
        healthz_p50_ms,
        healthz_p99_ms,
        worker_cpu_us_per_execute: cpu.0,
        interpreter_cpu_us_per_execute: cpu.1,
        stdout_cpu,
        trace_peer: peer.name(),
        trace_events_sent: after.trace.sent,
        trace_events_dropped: after.trace.dropped,
    };
    (figures, detail)
}

/// p50 and p99 of `1+1`, and the CPU (µs) the worker and its interpreters spent per execution.
async fn round_trips(args: &Args, worker: &WorkerProcess) -> (f64, f64, (f64, f64)) {
    let cpu_before = cpu_micros(worker.pid);
    let mut samples = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let started = Instant::now();
        let (_, last) = execute(worker, "1+1").await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(matches!(last, EventBody::Result { .. }));
    }
    let cpu_after = cpu_micros(worker.pid);
    samples.sort_by(f64::total_cmp);
    let per_execute = |after: f64, before: f64| (after - before) / args.iterations.max(1) as f64;
    let cpu = (
        per_execute(cpu_after.0, cpu_before.0),
        per_execute(cpu_after.1, cpu_before.1),
    );
    (percentile(&samples, 0.5), percentile(&samples, 0.99), cpu)
}

async fn health_round_trips(args: &Args, worker: &WorkerProcess) -> (f64, f64) {
    let mut samples = Vec::with_capacity(args.iterations);
    for _ in 0..args.iterations {
        let started = Instant::now();
        health(worker).await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}
