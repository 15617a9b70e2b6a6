//! `capsule-gateway-bench`: what the gateway adds to an execute round trip. Starts one
//! `capsule-worker` on loopback, binds it to a session, and serves that session through an
//! in-process gateway (its index fed the session and pod objects a watch would deliver: the API
//! server is not on the request path). Then alternates `1+1` round trips direct and through the
//! gateway, the same client and connection pooling for both, and prints p50/p99 of each and the
//! difference; `--json FILE` writes them for `scripts/bench-table.py`.
//!
//! Usage: `capsule-gateway-bench [--iterations 2000] [--warmup 200] [--json PATH]`; the worker
//! binary comes from this executable's directory (`cargo build --release -p capsule-worker`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use capsule_gateway::index::Index;
use capsule_gateway::AppState;
use capsule_protocol::{auth, heartbeat::SessionBinding, names};
use clap::Parser;
use kube::runtime::watcher::Event;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

const WORKER_CREDENTIAL: &str = "bench-worker-credential";
const SESSION_TOKEN: &str = "bench-session-token";

#[derive(Parser)]
struct Args {
    /// Round trips measured on each path.
    #[arg(long, default_value_t = 2000)]
    iterations: usize,
    /// Round trips on each path before measuring.
    #[arg(long, default_value_t = 200)]
    warmup: usize,
    /// The Python the worker runs.
    #[arg(long, default_value = "python3")]
    python: String,
    /// Where to write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn fail(message: &str) -> ! {
    eprintln!("capsule-gateway-bench: {message}");
    std::process::exit(1)
}

/// Starts a worker, waits for it and binds it to the bench session; returns it and its base URL.
async fn start_worker(args: &Args, http: &reqwest::Client) -> (tokio::process::Child, String) {
    let bin = std::env::current_exe()
        .expect("own path")
        .with_file_name("capsule-worker");
    let mut child = tokio::process::Command::new(&bin)
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_WORKER_TOKEN", WORKER_CREDENTIAL)
        .env("CAPSULE_PYTHON", &args.python)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            fail(&format!(
                "cannot start {}: {e} (cargo build --release -p capsule-worker)",
                bin.display()
            ))
        });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .ok()
        .and_then(|l| l.ok().flatten())
        .unwrap_or_else(|| fail("capsule-worker did not start"));
    let base = format!(
        "http://{}",
        line.trim_start_matches("capsule-worker listening on ")
    );
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
    {
        if Instant::now() > deadline {
            fail("capsule-worker never became ready");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let binding = SessionBinding {
        session: "bench".into(),
        namespace: "bench".into(),
        token_sha256: auth::token_sha256_hex(SESSION_TOKEN),
        session_uid: None,
        checkpoint_key: None,
    };
    let bound = http
        .put(format!("{base}/v1/session"))
        .bearer_auth(WORKER_CREDENTIAL)
        .json(&binding)
        .send()
        .await;
    if !bound.is_ok_and(|r| r.status() == 204) {
        fail("the worker refused the session binding");
    }
    (child, base)
}

/// An in-process gateway whose index holds session bench/bench bound to the worker at `endpoint`.
async fn start_gateway(endpoint: &str) -> String {
    let index = Arc::new(Index::default());
    let session = serde_json::from_value(json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
        "metadata": {"name": "bench", "namespace": "bench"}, "spec": {"pool": "p"},
        "status": {"phase": "Bound", "worker": "w", "endpoint": endpoint}}))
    .expect("a session object");
    let pod = serde_json::from_value(json!({"metadata": {"name": "w", "namespace": "bench",
        "labels": {names::SESSION: "bench"},
        "annotations": {names::SESSION_TOKEN_SHA256: auth::token_sha256_hex(SESSION_TOKEN)}}}))
    .expect("a pod object");
    index.apply_session(Event::Apply(session));
    index.apply_pod(Event::Apply(pod));
    let state = AppState::new(index, capsule_gateway::DEFAULT_MAX_BODY_BYTES)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/v1/sessions/bench/bench",
        listener.local_addr().unwrap()
    );
    let app = capsule_gateway::router(Arc::new(state));
    tokio::spawn(capsule_gateway::serve(
        listener,
        app,
        std::future::pending(),
    ));
    url
}

/// One `1+1` round trip to `base` (a worker's `/v1` or the gateway's session URL), to the end of
/// the stream; milliseconds.
async fn round_trip(http: &reqwest::Client, base: &str) -> f64 {
    let started = Instant::now();
    let body = http
        .post(format!("{base}/executions"))
        .bearer_auth(SESSION_TOKEN)
        .json(&json!({"code": "1+1"}))
        .send()
        .await
        .unwrap_or_else(|e| fail(&format!("execute: {e}")))
        .text()
        .await
        .unwrap_or_else(|e| fail(&format!("execute stream: {e}")));
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    if !body.contains(r#""type":"result""#) || !body.contains(r#""repr":"2""#) {
        fail(&format!("unexpected stream: {body}"));
    }
    elapsed
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if cfg!(debug_assertions) {
        eprintln!("capsule-gateway-bench: debug build; figures are only meaningful with --release");
    }
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .unwrap();
    let (_worker, endpoint) = start_worker(&args, &http).await;
    let gateway = start_gateway(&endpoint).await;
    let direct_base = format!("{endpoint}/v1");
    let (mut direct, mut via) = (Vec::new(), Vec::new());
    // Alternating, so both paths see the same machine load.
    for i in 0..args.warmup + args.iterations {
        let d = round_trip(&http, &direct_base).await;
        let g = round_trip(&http, &gateway).await;
        if i >= args.warmup {
            direct.push(d);
            via.push(g);
        }
    }
    direct.sort_by(f64::total_cmp);
    via.sort_by(f64::total_cmp);
    let figures = |s: &[f64]| json!({"p50Ms": percentile(s, 0.5), "p99Ms": percentile(s, 0.99)});
    let added = percentile(&via, 0.5) - percentile(&direct, 0.5);
    let report = json!({
        "iterations": args.iterations,
        "direct": figures(&direct),
        "viaGateway": figures(&via),
        "addedP50Ms": added,
        "targets": {"addedP50Ms": 1.0},
    });
    println!(
        "capsule-gateway-bench ({} round trips of `1+1` on each path, alternating)",
        args.iterations
    );
    println!("{:<12} {:>10} {:>10}", "path", "p50 ms", "p99 ms");
    for (name, s) in [("direct", &direct), ("gateway", &via)] {
        println!(
            "{name:<12} {:>10.3} {:>10.3}",
            percentile(s, 0.5),
            percentile(s, 0.99)
        );
    }
    println!(
        "added p50: {added:.3} ms (target <= 1 ms: {})",
        if added <= 1.0 { "met" } else { "missed" }
    );
    if let Some(path) = &args.json {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(path, serde_json::to_vec_pretty(&report).unwrap())
            .unwrap_or_else(|e| fail(&format!("cannot write {}: {e}", path.display())));
        println!("figures written to {}", path.display());
    }
}
