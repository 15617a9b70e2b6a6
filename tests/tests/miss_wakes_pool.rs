//! A session that finds no idle worker (a miss) starts one at once: the pool controller is woken
//! by the session's watch event and counts it from the same watch's cache, rather than waiting for
//! its periodic pass. The operator runs with a 10-minute status interval, so the periodic pass
//! cannot be what binds the session here.

use std::time::Duration;

use capsule_e2e::{free_port, wait_for, wait_session_phase, DevCluster, OperatorRun};

const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: cold
  namespace: default
spec:
  replicas: 0
  maxWorkers: 1
  scaleDownDelaySeconds: 0
  template:
    image: capsule-worker:dev
"#;

const SESSION: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsuleSession
metadata:
  name: first
  namespace: default
spec:
  pool: cold
"#;

#[test]
fn a_session_that_misses_starts_a_worker_without_waiting_for_the_periodic_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    let port = free_port();
    let mut run = OperatorRun::on_port(port);
    run.status_interval_seconds = 600;
    let _operator = run.start(&cluster, &dir.path().join("operator.log"));

    // The pool settles with no workers: its first passes are done and the next periodic one is
    // ten minutes away.
    cluster.apply(POOL);
    wait_for("the empty pool reconciled", Duration::from_secs(60), || {
        let ready = cluster.jsonpath(
            &["cpool", "cold"],
            "{.status.conditions[?(@.type==\"Ready\")].status}",
        );
        let workers = cluster.jsonpath(&["cpool", "cold"], "{.status.workers}");
        if !ready.is_empty() && workers == "0" {
            Ok(())
        } else {
            Err(format!("ready={ready:?} workers={workers:?}"))
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let pods = cluster.kubectl(&["get", "pods", "-l", "capsule.dev/pool=cold", "-o", "name"]);
    assert_eq!(pods.trim(), "", "replicas 0 starts no worker");

    cluster.apply(SESSION);
    // The session is bound to a worker started for it.
    wait_session_phase(&cluster, "first", "Bound", Duration::from_secs(90));
    assert_eq!(
        cluster.jsonpath(&["csess", "first"], "{.status.warmHit}"),
        "false",
        "it was a miss"
    );
    wait_for(
        "the miss counted on the pool",
        Duration::from_secs(30),
        || {
            let misses = cluster.jsonpath(&["cpool", "cold"], "{.status.pool.misses}");
            if misses == "1" {
                Ok(())
            } else {
                Err(format!("misses={misses:?}"))
            }
        },
    );
}
