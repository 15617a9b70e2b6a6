//! `capsule-worker-bench`: execute round trip and stdout throughput of capsule-worker, next to the
//! same figures for a Jupyter kernel (ipykernel + jupyter_client from `$CAPSULE_TOOLS_DIR/venv`).
//!
//! Starts the real `capsule-worker` binary (from the same target directory unless `--worker-bin`),
//! drives it over HTTP on loopback, prints a table and writes the figures as JSON to `--json`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use capsule_protocol::execute::{EventBody, ExecuteRequest, ExecutionEvent, WorkerStats};
use capsule_protocol::heartbeat::SessionBinding;
use clap::Parser;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};

#[path = "../../bench/checkpoint.rs"]
mod checkpoint;
#[path = "../../bench/transaction.rs"]
mod transaction;

const JUPYTER_SCRIPT: &str = include_str!("../../bench/jupyter_bench.py");
const WORKER_TOKEN: &str = "bench-pool-token";
const SESSION_TOKEN: &str = "bench-session-token";

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
    /// Bytes printed (in 1 KiB lines) by the throughput run.
    #[arg(long, default_value_t = 20 * 1024 * 1024)]
    throughput_bytes: usize,
    /// Throughput runs; the median is reported.
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
    /// Where `scripts/install-tools.sh jupyter` put the venv.
    #[arg(long, env = "CAPSULE_TOOLS_DIR")]
    tools_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct Figures {
    p50_ms: f64,
    p99_ms: f64,
    throughput_mbps: f64,
    /// Every throughput run, sorted (the machine's load shows in their spread).
    throughput_runs_mbps: Vec<f64>,
    all_output_received: bool,
    outputs_dropped: u64,
}

/// A reset (fresh interpreter for the next session) until the next `1+1` result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ResetFigures {
    /// `POST /v1/reset` round trip: the swap itself.
    swap_p50_ms: f64,
    swap_p99_ms: f64,
    /// From the reset request to the next execution's result.
    to_first_result_p50_ms: f64,
    to_first_result_p99_ms: f64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    iterations: usize,
    throughput_bytes: usize,
    capsule_worker: Figures,
    jupyter: Figures,
    /// With the warmed standby (the default) and, as the reference, starting one on demand.
    reset_with_standby: ResetFigures,
    reset_without_standby: ResetFigures,
    checkpoints: Vec<checkpoint::CheckpointFigures>,
    /// Transaction overhead by case (bench/transaction.rs).
    transaction: Vec<transaction::Case>,
    targets: serde_json::Value,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

fn fail(message: &str) -> ! {
    eprintln!("capsule-worker-bench: {message}");
    std::process::exit(1);
}

struct WorkerProcess {
    _child: tokio::process::Child,
    base: String,
    client: reqwest::Client,
}

async fn start_worker(args: &Args) -> WorkerProcess {
    start_worker_with(args, &[]).await
}

async fn start_worker_with(args: &Args, env: &[(&str, &str)]) -> WorkerProcess {
    let bin = args.worker_bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .expect("own path")
            .with_file_name("capsule-worker")
    });
    let mut child = tokio::process::Command::new(&bin)
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_WORKER_TOKEN", WORKER_TOKEN)
        .env("CAPSULE_PYTHON", &args.python)
        .env("CAPSULE_WORKER_THREADS", args.worker_threads.to_string())
        .env("RUST_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot start {}: {e} (build it: cargo build --release -p capsule-worker)",
                bin.display()
            ))
        });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .ok()
        .and_then(|l| l.ok().flatten())
        .unwrap_or_else(|| fail("capsule-worker did not start"));
    let addr = line
        .trim_start_matches("capsule-worker listening on ")
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .unwrap();
    let base = format!("http://{addr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        if Instant::now() > deadline {
            fail("capsule-worker never became ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bound = client
        .put(format!("{base}/v1/session"))
        .bearer_auth(WORKER_TOKEN)
        .json(&SessionBinding {
            session: "bench".into(),
            namespace: "bench".into(),
            token_sha256: capsule_protocol::auth::token_sha256_hex(SESSION_TOKEN),
            session_uid: None,
            checkpoint_key: None,
        })
        .send()
        .await
        .unwrap();
    assert_eq!(bound.status(), 204, "session binding");
    WorkerProcess {
        _child: child,
        base,
        client,
    }
}

/// An event line read without copying its text: the client validates the JSON (serde checks the
/// string) and counts the decoded bytes, like a client that forwards output without keeping it.
#[derive(serde::Deserialize)]
struct LinePeek<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(borrow, default)]
    text: Option<&'a serde_json::value::RawValue>,
}

/// Decoded UTF-8 length of a JSON string literal (`raw` includes the quotes).
fn unescaped_len(raw: &str) -> usize {
    let bytes = &raw.as_bytes()[1..raw.len() - 1];
    let mut length = 0;
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] != b'\\' {
            length += 1;
            index += 1;
        } else if bytes[index + 1] == b'u' {
            let hex = &raw[index + 3..index + 7];
            let code = u32::from_str_radix(hex, 16).unwrap_or(0xFFFD);
            // A surrogate pair (two escapes) encodes one 4-byte character.
            length += match code {
                0xD800..=0xDBFF => 4,
                0xDC00..=0xDFFF => 0,
                0..=0x7F => 1,
                0x80..=0x7FF => 2,
                _ => 3,
            };
            index += 6;
        } else {
            length += 1;
            index += 2;
        }
    }
    length
}

/// Runs code and returns (output bytes, final event).
async fn execute(worker: &WorkerProcess, code: &str) -> (usize, EventBody) {
    let request = ExecuteRequest {
        code: code.into(),
        ..Default::default()
    };
    execute_request(worker, &request).await
}

/// [`execute`] with a whole request.
async fn execute_request(worker: &WorkerProcess, request: &ExecuteRequest) -> (usize, EventBody) {
    let mut response = worker
        .client
        .post(format!("{}/v1/executions", worker.base))
        .bearer_auth(SESSION_TOKEN)
        .json(request)
        .send()
        .await
        .unwrap();
    let mut buffer: Vec<u8> = Vec::new();
    let mut output = 0usize;
    let mut last = None;
    // Bytes of `buffer` already searched for a newline (a long line arrives over many chunks).
    let mut searched = 0;
    while let Some(chunk) = response.chunk().await.unwrap() {
        buffer.extend_from_slice(&chunk);
        let mut start = 0;
        while let Some(pos) = buffer[searched..].iter().position(|b| *b == b'\n') {
            let pos = searched + pos - start;
            searched = start + pos + 1;
            let line = &buffer[start..start + pos];
            let peek: LinePeek<'_> = serde_json::from_slice(line).unwrap();
            match (peek.kind, peek.text) {
                ("output", Some(text)) => output += unescaped_len(text.get()),
                _ => {
                    let event: ExecutionEvent = serde_json::from_slice(line).unwrap();
                    if event.body.is_final() {
                        last = Some(event.body);
                    }
                }
            }
            start += pos + 1;
        }
        buffer.drain(..start);
        searched = buffer.len();
    }
    (
        output,
        last.unwrap_or_else(|| fail("stream ended without a final event")),
    )
}

async fn stats(worker: &WorkerProcess) -> WorkerStats {
    worker
        .client
        .get(format!("{}/v1/stats", worker.base))
        .bearer_auth(SESSION_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn bench_worker(args: &Args) -> Figures {
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

async fn bench_reset(args: &Args, standby: bool) -> ResetFigures {
    let standby_env = if standby { "true" } else { "false" };
    let worker = start_worker_with(
        args,
        &[
            ("CAPSULE_STANDBY_INTERPRETER", standby_env),
            ("CAPSULE_WARMUP_CODE", args.reset_warmup.as_str()),
        ],
    )
    .await;
    let mut swaps = Vec::with_capacity(args.resets);
    let mut firsts = Vec::with_capacity(args.resets);
    for _ in 0..args.resets {
        execute(&worker, "x = list(range(1000))").await;
        // Sessions are not released back to back: the standby has had time to warm.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let reset = worker
            .client
            .post(format!("{}/v1/reset", worker.base))
            .bearer_auth(SESSION_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(reset.status(), 200, "reset");
        swaps.push(started.elapsed().as_secs_f64() * 1000.0);
        let (_, last) = execute(&worker, "1+1").await;
        firsts.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(matches!(last, EventBody::Result { .. }));
    }
    swaps.sort_by(f64::total_cmp);
    firsts.sort_by(f64::total_cmp);
    ResetFigures {
        swap_p50_ms: percentile(&swaps, 0.5),
        swap_p99_ms: percentile(&swaps, 0.99),
        to_first_result_p50_ms: percentile(&firsts, 0.5),
        to_first_result_p99_ms: percentile(&firsts, 0.99),
    }
}

async fn bench_jupyter(args: &Args) -> Figures {
    let tools = args
        .tools_dir
        .clone()
        .unwrap_or_else(|| fail("CAPSULE_TOOLS_DIR is not set: run `scripts/install-tools.sh jupyter` and set it (the Makefile does)"));
    let python = tools.join("venv/bin/python");
    let check = tokio::process::Command::new(&python)
        .args(["-c", "import ipykernel, jupyter_client"])
        .status()
        .await;
    if !matches!(check, Ok(status) if status.success()) {
        fail(&format!(
            "ipykernel + jupyter_client are missing from {}: run `scripts/install-tools.sh jupyter`",
            python.display()
        ));
    }
    let output = tokio::process::Command::new(&python)
        .arg("-c")
        .arg(JUPYTER_SCRIPT)
        .arg(args.iterations.to_string())
        .arg(args.warmup.to_string())
        .arg(args.throughput_bytes.to_string())
        .arg(args.runs.to_string())
        .stderr(Stdio::inherit())
        .output()
        .await
        .unwrap_or_else(|e| fail(&format!("cannot run the Jupyter bench: {e}")));
    if !output.status.success() {
        fail("the Jupyter bench failed (see stderr)");
    }
    let value: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| fail(&format!("bad Jupyter bench output: {e}")));
    Figures {
        p50_ms: value["p50Ms"].as_f64().unwrap_or(f64::NAN),
        p99_ms: value["p99Ms"].as_f64().unwrap_or(f64::NAN),
        throughput_mbps: value["throughputMBps"].as_f64().unwrap_or(f64::NAN),
        throughput_runs_mbps: value["throughputRunsMBps"]
            .as_array()
            .map(|runs| runs.iter().filter_map(|v| v.as_f64()).collect())
            .unwrap_or_default(),
        all_output_received: value["allOutputReceived"].as_bool().unwrap_or(false),
        outputs_dropped: 0,
    }
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
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
    let worker = bench_worker(&args).await;
    let reset_with_standby = bench_reset(&args, true).await;
    let reset_without_standby = bench_reset(&args, false).await;
    let checkpoints = if args.checkpoint_runs > 0 {
        checkpoint::bench(&args).await
    } else {
        Vec::new()
    };
    let transaction = transaction::bench(&args).await;
    let jupyter = bench_jupyter(&args).await;
    let mb = args.throughput_bytes as f64 / 1e6;
    println!("capsule-worker-bench ({} round trips of `1+1`, {mb:.1} MB printed in 1 KiB lines, median of {} runs)", args.iterations, args.runs);
    println!(
        "{:<16} {:>10} {:>10} {:>16} {:>22} {:>10}",
        "runtime", "p50 ms", "p99 ms", "stdout MB/s", "runs min..max MB/s", "complete"
    );
    for (name, f) in [("capsule-worker", &worker), ("jupyter", &jupyter)] {
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
        ("standby", &reset_with_standby),
        ("no standby (ref)", &reset_without_standby),
    ] {
        println!(
            "{:<16} {:>12.2} {:>12.2} {:>18.2} {:>18.2}",
            name, f.swap_p50_ms, f.swap_p99_ms, f.to_first_result_p50_ms, f.to_first_result_p99_ms
        );
    }
    checkpoint::print(&checkpoints);
    transaction::print(&transaction, args.transaction_iterations);
    println!(
        "targets: p50 <= 0.5 ms ({}), throughput >= 300 MB/s ({}), nothing dropped under Block ({})",
        if worker.p50_ms <= 0.5 { "met" } else { "missed" },
        if worker.throughput_mbps >= 300.0 { "met" } else { "missed" },
        if worker.outputs_dropped == 0 && worker.all_output_received { "met" } else { "missed" },
    );
    let report = Report {
        iterations: args.iterations,
        throughput_bytes: args.throughput_bytes,
        capsule_worker: worker,
        jupyter,
        reset_with_standby,
        reset_without_standby,
        checkpoints,
        transaction,
        targets: serde_json::json!({"p50Ms": 0.5, "throughputMBps": 300.0}),
    };
    write_json(&args, &report);
}

fn write_json(args: &Args, report: &impl Serialize) {
    if let Some(parent) = args.json.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    std::fs::write(&args.json, serde_json::to_vec_pretty(report).unwrap())
        .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", args.json.display())));
    println!("figures written to {}", args.json.display());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescaped_length_matches_the_decoded_text() {
        for text in ["plain", "a\nb\t\"q\" \\ é ✓ 😀", "", "\u{1}"] {
            let raw = serde_json::to_string(text).unwrap();
            assert_eq!(unescaped_len(&raw), text.len(), "{raw}");
        }
        assert_eq!(unescaped_len(r#""\u00e9\ud83d\ude00\n""#), "é😀\n".len());
    }
}
