//! Sessions that outlive their worker: on a pool with `spec.sessions.persistence` and a `Volume`
//! checkpoint store, a session whose worker pod is deleted moves to another worker, which restores
//! its latest checkpoint; the client keeps its token and its gateway address and sees its state.
//! The first checkpoint is asked for by the client, the second is taken automatically when the
//! session goes idle.

use std::time::Duration;

use capsule_e2e::{
    free_port, http, session_token, start_gateway, wait_for, wait_session_phase, DevCluster,
    OperatorRun,
};
use serde_json::{json, Value};

const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: keep
  namespace: default
spec:
  replicas: 1
  maxWorkers: 3
  scaleDownDelaySeconds: 0
  template:
    image: capsule-worker:dev
    # The devcluster runs host binaries: an interpreter container's own uid cannot reach a Python
    # under /root (where this machine's has cloudpickle, which session classes and closures need).
    interpreter:
      placement: WorkerContainer
  checkpoints:
    store: Volume
    volume:
      claimName: keep-checkpoints
  sessions:
    persistence:
      enabled: true
      checkpointAfterExecutionMs: 0
      checkpointIdleSeconds: 1
"#;

const SESSION: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsuleSession
metadata:
  name: notebook
  namespace: default
spec:
  pool: keep
"#;

/// Runs `code` through the gateway and returns the final event.
fn run(base: &str, token: &str, code: &str) -> Value {
    let response = http()
        .post(format!("{base}/executions"))
        .bearer_auth(token)
        .json(&json!({"code": code}))
        .send()
        .expect("execute through the gateway");
    assert_eq!(response.status(), 200, "execute {code:?}");
    let body = response.text().unwrap();
    let last = body.lines().rfind(|l| !l.trim().is_empty());
    serde_json::from_str(last.expect("a final event")).unwrap()
}

fn result_of(base: &str, token: &str, code: &str) -> String {
    let last = run(base, token, code);
    assert_eq!(last["type"], "result", "{code:?}: {last}");
    last["repr"].as_str().unwrap_or_default().to_owned()
}

/// Deletes the session's worker and waits until the session is bound again on another worker
/// after `moves` migrations; returns the new worker.
fn lose_worker(cluster: &DevCluster, moves: u32) -> String {
    let old = cluster.jsonpath(&["csess", "notebook"], "{.status.worker}");
    cluster.kubectl(&["delete", "pod", &old, "--wait=false"]);
    wait_for("the session moved", Duration::from_secs(120), || {
        let phase = cluster.jsonpath(&["csess", "notebook"], "{.status.phase}");
        let worker = cluster.jsonpath(&["csess", "notebook"], "{.status.worker}");
        let migrations = cluster.jsonpath(&["csess", "notebook"], "{.status.migrations}");
        let restored =
            cluster.jsonpath(&["csess", "notebook"], "{.status.lastMigration.restoredAt}");
        if phase == "Bound"
            && worker != old
            && migrations == moves.to_string()
            && !restored.is_empty()
        {
            Ok(())
        } else {
            Err(format!(
                "phase={phase} worker={worker} migrations={migrations} restored={restored}"
            ))
        }
    });
    assert_eq!(
        cluster.jsonpath(&["csess", "notebook"], "{.status.lastMigration.fromWorker}"),
        old
    );
    cluster.jsonpath(&["csess", "notebook"], "{.status.worker}")
}

#[test]
fn a_session_whose_worker_is_deleted_moves_to_a_new_worker_with_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    let gw_port = free_port();
    let gateway_url = format!("http://127.0.0.1:{gw_port}");
    let mut run_operator = OperatorRun::on_port(free_port());
    run_operator.extra_args = vec!["--gateway-url".into(), gateway_url.clone()];
    let _operator = run_operator.start(&cluster, &dir.path().join("operator.log"));
    let _gateway = start_gateway(&cluster, gw_port, &dir.path().join("gateway.log"));
    cluster.apply(POOL);
    cluster.apply(SESSION);
    wait_session_phase(&cluster, "notebook", "Bound", Duration::from_secs(90));
    let token = session_token(&cluster, "notebook");
    let base = cluster.jsonpath(&["csess", "notebook"], "{.status.gatewayUrl}");

    // State of every kind a notebook holds, then a checkpoint the client asks for.
    result_of(
        &base,
        &token,
        "import math\nclass Box:\n    def __init__(self, v): self.v = v\n\
         def make(n):\n    return lambda k: n * k\n\
         box = Box(41); triple = make(3); data = bytes(range(256)) * 4096",
    );
    let created = http()
        .post(format!("{base}/checkpoints"))
        .bearer_auth(&token)
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(created.status(), 201, "{}", created.text().unwrap());
    let created: Value = created.json().unwrap();
    assert!(created["sizeBytes"].as_u64().unwrap() > 0, "{created}");

    let moved_to = lose_worker(&cluster, 1);
    assert_eq!(
        cluster.jsonpath(&["csess", "notebook"], "{.status.lastMigration.checkpoint}"),
        created["id"].as_str().unwrap()
    );
    assert_eq!(
        result_of(
            &base,
            &token,
            "(box.v + 1, triple(14), len(data), math.floor(2.5))"
        ),
        "(42, 42, 1048576, 2)",
        "the state came along to {moved_to}"
    );

    // An automatic checkpoint after a second idle, then a second move.
    let before = cluster.jsonpath(&["cpool", "keep"], "{.status.checkpoints.created}");
    result_of(&base, &token, "later = 'kept'");
    wait_for("an automatic checkpoint", Duration::from_secs(60), || {
        let listed: Value = http()
            .get(format!("{base}/checkpoints"))
            .bearer_auth(&token)
            .send()
            .and_then(|r| r.json())
            .map_err(|e| e.to_string())?;
        let holds_later = listed["checkpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| {
                c["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|n| n == "later")
            });
        if holds_later {
            Ok(())
        } else {
            Err(format!("no checkpoint holds `later` yet: {listed}"))
        }
    });
    wait_for("the checkpoint counted", Duration::from_secs(30), || {
        let info = cluster.jsonpath(&["csess", "notebook"], "{.status.info.checkpoints}");
        let created = cluster.jsonpath(&["cpool", "keep"], "{.status.checkpoints.created}");
        if info.parse::<i64>().unwrap_or(0) >= 1 && created != before {
            Ok(())
        } else {
            Err(format!("session checkpoints={info} pool created={created}"))
        }
    });
    lose_worker(&cluster, 2);
    assert_eq!(result_of(&base, &token, "later, box.v"), "('kept', 41)");
    let restored = cluster.jsonpath(&["cpool", "keep"], "{.status.checkpoints.restored}");
    assert!(
        restored.parse::<i64>().unwrap_or(0) >= 1,
        "restores counted on the pool: {restored:?}"
    );
    let events = cluster.kubectl(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=notebook",
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    assert!(
        events.contains("Migrating") && events.contains("Migrated"),
        "{events}"
    );
}
