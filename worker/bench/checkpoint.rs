//! Checkpoint figures of `capsule-worker-bench`: create and restore time and stored size for a 1 MB
//! and a 100 MB namespace, beside a plain-Python reference measured in the same run (each name
//! pickled + zlib level 1, and back), the least any checkpoint of that namespace costs.

use std::time::Instant;

use serde::Serialize;

use super::{execute, fail, percentile, Args, WorkerProcess, SESSION_TOKEN};

const REFERENCE_SCRIPT: &str = include_str!("checkpoint_reference.py");

/// A namespace of about `bytes`: a quarter random bytes (incompressible), a quarter floats, half
/// text rows, the mix of a notebook holding a download, an array and a parsed table.
fn namespace_code(bytes: usize) -> String {
    format!(
        "import os, random, array\n\
         blob = os.urandom({q})\n\
         floats = array.array('d', [random.random() for _ in range({f})])\n\
         rows = [f'row {{i}}, value {{i * 7 % 1000}}, label item-{{i % 97}}' for i in range({r})]\n",
        q = bytes / 4,
        f = bytes / 4 / 8,
        r = bytes / 2 / 48,
    )
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointFigures {
    name: String,
    raw_bytes: u64,
    stored_bytes: u64,
    create_p50_ms: f64,
    restore_p50_ms: f64,
    /// Plain Python in the same run: pickle + zlib, and back, of the same namespace.
    reference_save_ms: f64,
    reference_load_ms: f64,
    reference_bytes: u64,
}

async fn post(worker: &WorkerProcess, path: &str) -> serde_json::Value {
    let response = worker
        .client
        .post(format!("{}{path}", worker.base))
        .bearer_auth(SESSION_TOKEN)
        .send()
        .await
        .unwrap();
    if !response.status().is_success() {
        fail(&format!("{path} answered {}", response.status()));
    }
    response.json().await.unwrap()
}

async fn reference(args: &Args, code: &str, runs: usize) -> serde_json::Value {
    let output = tokio::process::Command::new(&args.python)
        .arg("-c")
        .arg(REFERENCE_SCRIPT)
        .arg(code)
        .arg(runs.to_string())
        .output()
        .await
        .unwrap_or_else(|e| fail(&format!("cannot run the checkpoint reference: {e}")));
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| fail(&format!("bad checkpoint reference output: {e}")))
}

/// Create and restore `args.checkpoint_runs` times for each namespace size.
pub async fn bench(args: &Args) -> Vec<CheckpointFigures> {
    let dir = std::env::temp_dir().join(format!("capsule-checkpoint-bench-{}", std::process::id()));
    let dir_text = dir.to_string_lossy().into_owned();
    let worker = super::start_worker_with(
        args,
        &[
            ("CAPSULE_CHECKPOINT_DIR", dir_text.as_str()),
            ("CAPSULE_CHECKPOINT_MAX_BYTES", "1073741824"),
        ],
    )
    .await;
    let mut figures = Vec::new();
    for (name, bytes) in [("1MB", 1_000_000), ("100MB", 100_000_000)] {
        let code = namespace_code(bytes);
        execute(&worker, &code).await;
        let (mut creates, mut restores) = (Vec::new(), Vec::new());
        let mut last = serde_json::Value::Null;
        for _ in 0..args.checkpoint_runs {
            let started = Instant::now();
            last = post(&worker, "/v1/checkpoints").await;
            creates.push(started.elapsed().as_secs_f64() * 1000.0);
            let started = Instant::now();
            post(&worker, "/v1/checkpoints/latest/restore").await;
            restores.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        creates.sort_by(f64::total_cmp);
        restores.sort_by(f64::total_cmp);
        let reference = reference(args, &code, args.checkpoint_runs).await;
        figures.push(CheckpointFigures {
            name: name.to_owned(),
            raw_bytes: last["rawBytes"].as_u64().unwrap_or(0),
            stored_bytes: last["sizeBytes"].as_u64().unwrap_or(0),
            create_p50_ms: percentile(&creates, 0.5),
            restore_p50_ms: percentile(&restores, 0.5),
            reference_save_ms: reference["saveMs"].as_f64().unwrap_or(f64::NAN),
            reference_load_ms: reference["loadMs"].as_f64().unwrap_or(f64::NAN),
            reference_bytes: reference["sizeBytes"].as_u64().unwrap_or(0),
        });
    }
    drop(worker);
    let _ = std::fs::remove_dir_all(&dir);
    figures
}

pub fn print(figures: &[CheckpointFigures]) {
    println!(
        "checkpoints (median): {:<8} {:>12} {:>12} {:>10} {:>11} {:>14} {:>14}",
        "", "raw MB", "stored MB", "create ms", "restore ms", "ref save ms", "ref load ms"
    );
    for f in figures {
        println!(
            "{:<29} {:>12.1} {:>12.1} {:>10.1} {:>11.1} {:>14.1} {:>14.1}",
            f.name,
            f.raw_bytes as f64 / 1e6,
            f.stored_bytes as f64 / 1e6,
            f.create_p50_ms,
            f.restore_p50_ms,
            f.reference_save_ms,
            f.reference_load_ms
        );
    }
}
