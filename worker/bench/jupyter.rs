//! The Jupyter reference of `capsule-worker-bench`: the same round trip and throughput measured on
//! an ipykernel through jupyter_client (bench/jupyter_bench.py, from `$CAPSULE_TOOLS_DIR/venv`).

use std::process::Stdio;

use super::round_trip::{Figures, StdoutShape, Throughput};
use super::{fail, Args};

const JUPYTER_SCRIPT: &str = include_str!("jupyter_bench.py");

pub(crate) async fn bench(args: &Args) -> Figures {
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
        .arg(shapes_json(args.throughput_bytes))
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
    let runs = &value["stdoutRunsMBps"];
    Figures {
        p50_ms: value["p50Ms"].as_f64().unwrap_or(f64::NAN),
        p99_ms: value["p99Ms"].as_f64().unwrap_or(f64::NAN),
        stdout: StdoutShape::ALL
            .iter()
            .map(|shape| {
                let shape_runs = runs[shape.name()]
                    .as_array()
                    .map(|runs| runs.iter().filter_map(|v| v.as_f64()).collect())
                    .unwrap_or_default();
                Throughput::from_runs(shape.name(), shape_runs)
            })
            .collect(),
        all_output_received: value["allOutputReceived"].as_bool().unwrap_or(false),
        outputs_dropped: 0,
    }
}

/// The stdout shapes for jupyter_bench.py: the same code capsule-worker runs.
fn shapes_json(total: usize) -> String {
    let shapes: serde_json::Map<String, serde_json::Value> = StdoutShape::ALL
        .iter()
        .map(|shape| {
            let (code, bytes) = shape.code(total);
            let entry = serde_json::json!({ "code": code, "bytes": bytes });
            (shape.name().to_owned(), entry)
        })
        .collect();
    serde_json::Value::Object(shapes).to_string()
}
