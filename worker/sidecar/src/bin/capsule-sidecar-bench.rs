//! `capsule-sidecar-bench`: events per second the sidecar takes in, resident bytes per buffered
//! event, the execute round-trip p50 with tracing on versus off, and what a warm worker costs in
//! memory beyond its interpreters (worker and sidecar processes, a bare Python as reference). Runs the real binaries found
//! next to this one (`capsule-sidecar`, `capsule-worker`); prints a table and writes JSON.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use capsule_protocol::frame;
use capsule_protocol::trace::{TraceEvent, TraceEventKind};
use clap::Parser;

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

struct Proc {
    child: Child,
    addr: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sibling(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let path = exe.parent().expect("bin dir").join(name);
    assert!(
        path.exists(),
        "{} missing: build it with `cargo build -p {} --release`",
        path.display(),
        if name == "capsule-worker" {
            "capsule-worker"
        } else {
            "capsule-sidecar"
        }
    );
    path
}

fn spawn(mut command: Command, prefix: &str) -> Proc {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let mut child = command.spawn().expect("spawn");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix(prefix) {
                    break rest.trim().to_owned();
                }
            }
            _ => panic!("{prefix}: no ready line"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Proc { child, addr }
}

fn sidecar(socket: &Path, max_events: u64, max_bytes: u64) -> Proc {
    let mut command = Command::new(sibling("capsule-sidecar"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_TRACE_SOCKET", socket)
        .env("CAPSULE_WORKER_TOKEN", "bench-token")
        .env("CAPSULE_TRACE_MAX_EVENTS", max_events.to_string())
        .env("CAPSULE_TRACE_MAX_BYTES", max_bytes.to_string())
        .env("KUBECONFIG", "/nonexistent")
        .env("RUST_LOG", "error");
    spawn(command, "capsule-sidecar listening on")
}

fn worker(socket: Option<&Path>, linger_ms: Option<u64>) -> Proc {
    let mut command = Command::new(sibling("capsule-worker"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_WORKER_TOKEN", "bench-token")
        .env(
            "CAPSULE_PYTHON",
            std::env::var_os("CAPSULE_PYTHON").unwrap_or("python3".into()),
        )
        .env("RUST_LOG", "error");
    if let Some(socket) = socket {
        command.env("CAPSULE_TRACE_SOCKET", socket);
    }
    if let Some(linger) = linger_ms {
        command.env("CAPSULE_TRACE_LINGER_MS", linger.to_string());
    }
    spawn(command, "capsule-worker listening on")
}

/// CPU time (user + system) a process has used so far, in microseconds (from /proc, clock ticks
/// assumed 100 Hz as on Linux).
fn cpu_micros(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let fields: Vec<&str> = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |n: usize| {
        fields
            .get(n)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 11 and 12 after the name.
    (ticks(11) + ticks(12)) * 10_000.0
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

async fn metric(http: &reqwest::Client, proc: &Proc, name: &str) -> f64 {
    let text = http
        .get(format!("http://{}/metrics", proc.addr))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn write_events(socket: &Path, count: u64) {
    let mut stream = BufWriter::new(UnixStream::connect(socket).expect("connect"));
    for n in 0..count {
        let event = TraceEvent::new(
            TraceEventKind::OutputFlush,
            &format!("exec-{}", n / 8),
            Some("bench"),
        )
        .with_duration_ms(n)
        .with_attribute("bytes", 1024);
        stream.write_all(&frame::encode(&event).unwrap()).unwrap();
    }
    stream.flush().unwrap();
}

async fn wait_received(http: &reqwest::Client, proc: &Proc, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while metric(http, proc, "capsule_sidecar_trace_events_received_total").await < count as f64 {
        assert!(Instant::now() < deadline, "events never all received");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn bind(http: &reqwest::Client, worker: &Proc) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = http
            .get(format!("http://{}/readyz", worker.addr))
            .send()
            .await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "worker never ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = http
        .put(format!("http://{}/v1/session", worker.addr))
        .bearer_auth("bench-token")
        .json(&serde_json::json!({
            "session": "bench", "namespace": "bench",
            "tokenSha256": capsule_protocol::auth::token_sha256_hex("session-token"),
        }))
        .send()
        .await
        .expect("bind")
        .status();
    assert_eq!(status, 204);
}

async fn round_trip(http: &reqwest::Client, worker: &Proc) -> Duration {
    let started = Instant::now();
    let body = http
        .post(format!("http://{}/v1/executions", worker.addr))
        .bearer_auth("session-token")
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&serde_json::json!({ "code": "1 + 1" }))
        .send()
        .await
        .expect("execute")
        .text()
        .await
        .expect("body");
    assert!(body.contains("\"result\""));
    started.elapsed()
}

fn percentile(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
    samples[index].as_secs_f64() * 1000.0
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

/// Resident bytes of one warm, traced worker pod's processes after its round trips.
struct WarmMemory {
    worker: u64,
    sidecar: u64,
    /// The worker's child processes: fork server, interpreter, standby.
    interpreters: u64,
    /// A bare `python3` waiting on stdin, measured in the same run.
    bare_python: u64,
}

/// Target for the worker and the sidecar process each (issue #21).
const WARM_PROCESS_TARGET_BYTES: u64 = 10 * 1024 * 1024;

fn measure_warm_memory(worker: &Proc, sidecar: &Proc) -> WarmMemory {
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

/// Every process below `pid`, from /proc's children lists.
fn descendants(pid: u32) -> Vec<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    let children: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    let below = children.iter().flat_map(|&c| descendants(c));
    children.iter().copied().chain(below).collect()
}

fn print_warm_memory(warm: &WarmMemory) {
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let verdict = |b: u64| {
        if b <= WARM_PROCESS_TARGET_BYTES {
            "met"
        } else {
            "missed"
        }
    };
    println!(
        "| warm worker RSS: capsule-worker (target ≤ 10 MiB) | {:.1} MiB ({}) |",
        mib(warm.worker),
        verdict(warm.worker)
    );
    println!(
        "| warm worker RSS: capsule-sidecar (target ≤ 10 MiB) | {:.1} MiB ({}) |",
        mib(warm.sidecar),
        verdict(warm.sidecar)
    );
    println!(
        "| warm worker RSS: fork server + interpreter + standby / bare python3 | {:.1} / {:.1} MiB |",
        mib(warm.interpreters),
        mib(warm.bare_python)
    );
}

struct IngestFigures {
    events_per_second: f64,
    rss: u64,
}

struct MemoryFigures {
    buffered: f64,
    rss_per_event: f64,
    accounted_per_event: f64,
}

/// Milliseconds for the latencies, microseconds for the CPU times.
struct RoundTripFigures {
    off_p50: f64,
    on_p50: f64,
    off_p99: f64,
    on_p99: f64,
    overhead: f64,
    received: f64,
    cpu_plain: f64,
    cpu_traced: f64,
    cpu_sidecar: f64,
}

/// Ingest rate: the buffer bounded at its defaults, so eviction is part of the cost.
async fn measure_ingest(http: &reqwest::Client, dir: &Path, events: u64) -> IngestFigures {
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
async fn measure_memory(http: &reqwest::Client, dir: &Path, events: u64) -> MemoryFigures {
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
async fn measure_round_trips(
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

fn print_table(
    args: &Args,
    ingest: &IngestFigures,
    memory: &MemoryFigures,
    trips: &RoundTripFigures,
) {
    println!("| figure | value |");
    println!("| --- | --- |");
    println!(
        "| events ingested per second ({} events) | {:.0} |",
        args.events, ingest.events_per_second
    );
    println!(
        "| sidecar RSS after ingest (bounded buffer) | {} B |",
        ingest.rss
    );
    println!(
        "| resident bytes per buffered event ({:.0} events) | {:.0} |",
        memory.buffered, memory.rss_per_event
    );
    println!(
        "| accounted bytes per buffered event | {:.0} |",
        memory.accounted_per_event
    );
    println!("| execute p50 tracing off | {:.3} ms |", trips.off_p50);
    println!("| execute p50 tracing on | {:.3} ms |", trips.on_p50);
    println!(
        "| execute p99 off / on | {:.3} / {:.3} ms |",
        trips.off_p99, trips.on_p99
    );
    println!("| p50 overhead (target ≤ 3 %) | {:.2} % |", trips.overhead);
    println!(
        "| trace events received during round trips | {:.0} |",
        trips.received
    );
    println!(
        "| worker CPU per execution, tracing off / on | {:.1} / {:.1} µs |",
        trips.cpu_plain, trips.cpu_traced
    );
    println!(
        "| sidecar CPU per traced execution | {:.1} µs |",
        trips.cpu_sidecar
    );
}

fn write_json(
    args: &Args,
    ingest: &IngestFigures,
    memory: &MemoryFigures,
    trips: &RoundTripFigures,
    warm: &WarmMemory,
) {
    let json = serde_json::json!({
        "warmWorkerRssBytes": {
            "worker": warm.worker,
            "sidecar": warm.sidecar,
            "interpreters": warm.interpreters,
            "barePythonReference": warm.bare_python,
            "targetPerProcess": WARM_PROCESS_TARGET_BYTES,
        },
        "eventsPerSecond": ingest.events_per_second,
        "ingestEvents": args.events,
        "ingestRssBytes": ingest.rss,
        "residentBytesPerBufferedEvent": memory.rss_per_event,
        "accountedBytesPerBufferedEvent": memory.accounted_per_event,
        "bufferedEvents": memory.buffered,
        "roundTrips": args.round_trips,
        "executeP50MsTracingOff": trips.off_p50,
        "executeP50MsTracingOn": trips.on_p50,
        "executeP99MsTracingOff": trips.off_p99,
        "executeP99MsTracingOn": trips.on_p99,
        "p50OverheadPercent": trips.overhead,
        "traceEventsReceived": trips.received,
        "workerCpuMicrosPerExecutionTracingOff": trips.cpu_plain,
        "workerCpuMicrosPerExecutionTracingOn": trips.cpu_traced,
        "sidecarCpuMicrosPerTracedExecution": trips.cpu_sidecar,
    });
    std::fs::write(&args.json, serde_json::to_vec_pretty(&json).unwrap()).expect("writing JSON");
    println!("wrote {}", args.json.display());
}
