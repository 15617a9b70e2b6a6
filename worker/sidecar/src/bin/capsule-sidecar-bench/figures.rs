//! The measurements: ingest rate, memory per buffered event, execute round trips with tracing on
//! and off, and a warm worker's memory.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::calls::{bind, metric, percentile, round_trip, wait_received, write_events};
use crate::procs::{cpu_micros, descendants, rss, sidecar, worker, Proc};
use crate::Args;

/// Resident bytes of one warm, traced worker pod's processes after its round trips.
pub struct WarmMemory {
    pub worker: u64,
    pub sidecar: u64,
    /// The worker's child processes: fork server, interpreter, standby.
    pub interpreters: u64,
    /// A bare `python3` waiting on stdin, measured in the same run.
    pub bare_python: u64,
}

pub fn measure_warm_memory(worker: &Proc, sidecar: &Proc) -> WarmMemory {
    let mut python = Command::new(std::env::var_os("CAPSULE_PYTHON").unwrap_or("python3".into()))
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3");
    std::thread::sleep(Duration::from_millis(300));
    let bare_python = rss(python.id());
    let _ = python.kill();
    let _ = python.wait();
    WarmMemory {
        worker: rss(worker.child.id()),
        sidecar: rss(sidecar.child.id()),
        interpreters: descendants(worker.child.id()).into_iter().map(rss).sum(),
        bare_python,
    }
}

pub struct IngestFigures {
    pub events_per_second: f64,
    pub rss: u64,
}

pub struct MemoryFigures {
    pub buffered: f64,
    pub rss_per_event: f64,
    pub accounted_per_event: f64,
}

/// Milliseconds for the latencies, microseconds for the CPU times.
pub struct RoundTripFigures {
    pub off_p50: f64,
    pub on_p50: f64,
    pub off_p99: f64,
    pub on_p99: f64,
    pub overhead: f64,
    pub received: f64,
    pub cpu_plain: f64,
    pub cpu_traced: f64,
    pub cpu_sidecar: f64,
}

/// Ingest rate: the buffer bounded at its defaults, so eviction is part of the cost.
pub async fn measure_ingest(http: &reqwest::Client, dir: &Path, events: u64) -> IngestFigures {
    let socket = dir.join("ingest.sock");
    let ingest = sidecar(&socket, 10_000, 16 * 1024 * 1024);
    let started = Instant::now();
    let path = socket.clone();
    let writer = std::thread::spawn(move || write_events(&path, events));
    wait_received(http, &ingest, events).await;
    writer.join().unwrap();
    IngestFigures {
        events_per_second: events as f64 / started.elapsed().as_secs_f64(),
        rss: rss(ingest.child.id()),
    }
}

/// Resident bytes per buffered event: nothing evicted, RSS growth over the events held.
pub async fn measure_memory(http: &reqwest::Client, dir: &Path, events: u64) -> MemoryFigures {
    let socket = dir.join("memory.sock");
    let memory = sidecar(&socket, events, 1024 * 1024 * 1024);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = rss(memory.child.id());
    write_events(&socket, events);
    wait_received(http, &memory, events).await;
    let after = rss(memory.child.id());
    let buffered = metric(http, &memory, "capsule_sidecar_trace_buffer_events").await;
    let accounted = metric(http, &memory, "capsule_sidecar_trace_buffer_bytes").await;
    MemoryFigures {
        buffered,
        rss_per_event: after.saturating_sub(before) as f64 / buffered.max(1.0),
        accounted_per_event: accounted / buffered.max(1.0),
    }
}

/// Round trips: two workers up at once, one tracing to a sidecar, requests alternating; then the
/// traced pair's memory.
pub async fn measure_round_trips(
    http: &reqwest::Client,
    dir: &Path,
    args: &Args,
) -> (RoundTripFigures, WarmMemory) {
    let socket = dir.join("trace.sock");
    let traced_sidecar = sidecar(&socket, 10_000, 16 * 1024 * 1024);
    let plain = worker(None, None);
    let traced = worker(Some(&socket), args.trace_linger_ms);
    bind(http, &plain).await;
    bind(http, &traced).await;
    for _ in 0..20 {
        round_trip(http, &plain).await;
        round_trip(http, &traced).await;
    }
    let (mut off, mut on) = (Vec::new(), Vec::new());
    let cpu = |p: &Proc| cpu_micros(p.child.id());
    let cpu_before = (cpu(&plain), cpu(&traced), cpu(&traced_sidecar));
    for n in 0..args.round_trips {
        if n % 2 == 0 {
            off.push(round_trip(http, &plain).await);
            on.push(round_trip(http, &traced).await);
        } else {
            on.push(round_trip(http, &traced).await);
            off.push(round_trip(http, &plain).await);
        }
    }
    // Let the last batch of events arrive before reading CPU time and counters.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let per_execution = |before: f64, after: f64| (after - before) / args.round_trips as f64;
    let cpu_plain = per_execution(cpu_before.0, cpu(&plain));
    let cpu_traced = per_execution(cpu_before.1, cpu(&traced));
    let cpu_sidecar = per_execution(cpu_before.2, cpu(&traced_sidecar));
    let received = metric(
        http,
        &traced_sidecar,
        "capsule_sidecar_trace_events_received_total",
    )
    .await;
    let (off_p50, on_p50) = (percentile(&mut off, 0.5), percentile(&mut on, 0.5));
    let (off_p99, on_p99) = (percentile(&mut off, 0.99), percentile(&mut on, 0.99));
    let warm = measure_warm_memory(&traced, &traced_sidecar);
    let figures = RoundTripFigures {
        off_p50,
        on_p50,
        off_p99,
        on_p99,
        overhead: (on_p50 - off_p50) / off_p50 * 100.0,
        received,
        cpu_plain,
        cpu_traced,
        cpu_sidecar,
    };
    (figures, warm)
}
