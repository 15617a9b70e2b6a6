//! Whatever the CRD admits, the worker accepts: for the lowest and the highest value the schema
//! allows in each numeric field of `spec.executor` and `spec.heartbeat`, the operator's own pod
//! builder makes the worker's environment and a real `capsule-worker` starts with it (a worker that
//! refused its settings would crash-loop in an admitted pool).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use capsule_crds::CapsulePool;
use capsule_e2e::bin;
use capsule_operator::config::OperatorConfig;
use capsule_operator::pool::worker_pod;
use kube::CustomResourceExt;
use serde_json::{json, Map, Value};

/// `spec.<section>` with every integer field at the schema's `minimum` (or `maximum`).
fn extremes(section: &str, pick: &str) -> Map<String, Value> {
    let crd = serde_json::to_value(CapsulePool::crd()).unwrap();
    let properties = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
        ["properties"][section]["properties"];
    properties
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, p)| p["type"] == "integer")
        .map(|(name, p)| {
            let bound = p[pick]
                .as_i64()
                .or_else(|| p[pick].as_f64().map(|f| f as i64))
                .unwrap_or_else(|| panic!("spec.{section}.{name} has no {pick}: bound it"));
            (name.clone(), json!(bound))
        })
        .collect()
}

fn pool_at(pick: &str) -> CapsulePool {
    let mut heartbeat = extremes("heartbeat", pick);
    // The CEL rule wants staleness above the interval; both stay within their own bounds.
    let interval = heartbeat["intervalSeconds"].as_i64().unwrap();
    let staleness = heartbeat["stalenessSeconds"].as_i64().unwrap();
    if staleness <= interval {
        heartbeat.insert("intervalSeconds".into(), json!(staleness - 1));
    }
    serde_json::from_value(json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
        "metadata": {"name": "p", "namespace": "default", "uid": "u-1"},
        "spec": {"replicas": 1, "maxWorkers": 1, "template": {"image": "capsule-worker:dev"},
                 "executor": extremes("executor", pick), "heartbeat": heartbeat},
    }))
    .unwrap()
}

fn worker_starts_with_the_env_the_operator_builds(pick: &str) {
    let pool = pool_at(pick);
    let pod = worker_pod::build(&pool, &OperatorConfig::default(), "p-bound");
    let container = &pod.spec.unwrap().containers[0];
    let scratch = tempfile::tempdir().unwrap();
    let mut command = Command::new(bin("capsule-worker"));
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            command.env(&var.name, value);
        }
    }
    command
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_SCRATCH_DIR", scratch.path())
        .env_remove("CAPSULE_HEARTBEAT_URL")
        .env_remove("CAPSULE_TRACE_SOCKET");
    let mut child = command.spawn().expect("start capsule-worker");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let started = Instant::now();
    let mut line = String::new();
    let read = stdout.read_line(&mut line).unwrap_or(0);
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    assert!(
        read > 0 && line.starts_with("capsule-worker listening on"),
        "the worker refused the settings at the schema's {pick} ({:?}): {}",
        started.elapsed().min(Duration::from_secs(60)),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_worker_accepts_the_lowest_settings_the_crd_admits() {
    worker_starts_with_the_env_the_operator_builds("minimum");
}

#[test]
fn the_worker_accepts_the_highest_settings_the_crd_admits() {
    worker_starts_with_the_env_the_operator_builds("maximum");
}
