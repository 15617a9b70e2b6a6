//! Every counter a worker reports has a home: a field of the pool's status (summed over its
//! workers) and a Prometheus series. A counter added to the worker's stats without both fails here;
//! `pool_api_calls.rs` shows each one reaching both through a reconcile.

use std::collections::BTreeSet;

mod homes;

use capsule_crds::CapsulePool;
use capsule_protocol::execute::WorkerStats;
use homes::{HOMES, NOT_COUNTERS};
use kube::CustomResourceExt;
use serde_json::{json, Value};

fn stats() -> Value {
    let zero = json!({"ok": 0, "error": 0, "cancelled": 0, "timedOut": 0});
    let stats: WorkerStats = serde_json::from_value(json!({
        "state": "idle", "session": null, "draining": false, "namespaceSize": 0,
        "interpreterRestarts": 0, "executions": zero,
        "modes": {"plain": 0, "topLevelAwait": 0, "asyncDef": 0},
        "executor": {"outputsEnqueued": 0, "outputsSent": 0, "outputsDropped": 0, "maxQueueDepth": 0, "drainTimeouts": 0},
        "bridge": {"pending": 0, "highWater": 0, "created": 0, "resolved": 0, "rejected": 0, "timedOut": 0, "cancelled": 0},
        "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0, "killed": 0},
        "trace": {"sent": 0, "dropped": 0},
        "blockingCallWarnings": 0, "pendingPromises": []}))
    .expect("the worker's stats shape");
    serde_json::to_value(stats).unwrap()
}

fn leaves(value: &Value, prefix: &str, out: &mut BTreeSet<String>) {
    match value.as_object() {
        Some(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                leaves(child, &path, out);
            }
        }
        None => {
            out.insert(prefix.to_owned());
        }
    }
}

#[test]
fn every_leaf_of_the_workers_stats_is_a_counter_with_a_home_or_says_where_it_shows() {
    let mut found = BTreeSet::new();
    leaves(&stats(), "", &mut found);
    let known: BTreeSet<String> = HOMES
        .iter()
        .map(|(stat, _, _)| stat.to_string())
        .chain(NOT_COUNTERS.iter().map(|(stat, _)| stat.to_string()))
        .collect();
    assert_eq!(
        found, known,
        "give each new counter of WorkerStats a status field and a metric (and list it here)"
    );
}

#[test]
fn every_home_in_status_is_in_the_crd_schema() {
    let crd = serde_json::to_value(CapsulePool::crd()).unwrap();
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    for (stat, path, _) in HOMES {
        let mut node = status;
        for part in path.split('.') {
            if node["type"] == "array" {
                node = &node["items"];
            }
            node = &node["properties"][part];
        }
        assert!(
            node.is_object(),
            "{stat}: status.{path} is not in the CapsulePool schema"
        );
        assert!(
            node["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{stat}: status.{path} has no description for kubectl explain"
        );
    }
}
