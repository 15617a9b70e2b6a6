//! The operator's load on the API server: a pool at rest is planned from the watch caches, so its
//! passes read nothing (no list of pods, no read of its NetworkPolicy, Secret or sessions), nor
//! does a bound session's periodic check (its worker and pool come from the caches), and a
//! NetworkPolicy deleted by hand is put back at once, woken by the policy watch rather than by the
//! next periodic pass (ten minutes away for the second operator run here).

use std::collections::BTreeMap;
use std::time::Duration;

use capsule_e2e::{
    free_port, http, metric_label, metric_samples, wait_for, wait_session_phase, ApiRequest,
    DevCluster, OperatorRun,
};

const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: rest
  namespace: default
spec:
  replicas: 2
  maxWorkers: 2
  template:
    image: capsule-worker:dev
"#;

const SESSION: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsuleSession
metadata:
  name: held
  namespace: default
spec:
  pool: rest
"#;

/// The operator's requests other than its long-lived watches, counted by method and path.
fn operator_requests(requests: &[ApiRequest]) -> BTreeMap<String, usize> {
    let mut counted = BTreeMap::new();
    for request in requests {
        if request.is_operator_call() {
            let path = request.uri.split('?').next().unwrap_or_default();
            *counted
                .entry(format!("{} {path}", request.method))
                .or_default() += 1;
        }
    }
    counted
}

/// How many pool passes the operator has run, from its metrics (0 before it serves them).
fn pool_passes(metrics_url: &str) -> u64 {
    let Ok(response) = http().get(metrics_url).send() else {
        return 0;
    };
    let text = response.text().unwrap();
    metric_samples(&text, "capsule_reconcile_runs_total")
        .filter(|(labels, _)| metric_label(labels, "controller") == Some("pool"))
        .map(|(_, value)| value)
        .sum::<f64>() as u64
}

#[test]
fn a_pool_at_rest_costs_no_read_request_and_a_deleted_policy_comes_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_logging_requests(dir.path());
    cluster.install_crds();
    let port = free_port();
    let mut run = OperatorRun::on_port(port);
    run.status_interval_seconds = 1;
    let mut operator = run.start(&cluster, &dir.path().join("operator.log"));
    cluster.apply(POOL);
    wait_for("two idle workers", Duration::from_secs(60), || {
        let idle = cluster.jsonpath(&["cpool", "rest"], "{.status.idle}");
        (idle == "2").then_some(()).ok_or(idle)
    });
    // Let the first heartbeats and status writes settle.
    std::thread::sleep(Duration::from_secs(3));

    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let (seen, passes_before) = (cluster.requests().len(), pool_passes(&metrics_url));
    let creates = operator_requests(&cluster.requests())
        .get("POST /api/v1/namespaces/default/pods")
        .copied();
    assert_eq!(creates, Some(2), "the operator's requests are told apart");
    std::thread::sleep(Duration::from_secs(6));
    let passes = pool_passes(&metrics_url) - passes_before;
    let at_rest = operator_requests(&cluster.requests()[seen..]);
    assert!(passes >= 4, "the pool passed {passes} times in 6 s");
    let reads: Vec<_> = at_rest.keys().filter(|k| k.starts_with("GET ")).collect();
    assert!(reads.is_empty(), "reads at rest: {at_rest:?}");
    let status_writes: usize = at_rest
        .iter()
        .filter(|(k, _)| k.ends_with("/capsulepools/rest/status"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        status_writes <= 7,
        "at most one status write per 1 s interval: {at_rest:?}"
    );
    eprintln!("{passes} pool passes at rest; requests: {at_rest:?}");

    // A bound session's periodic check reads its worker and pool from the caches too.
    cluster.apply(SESSION);
    wait_session_phase(&cluster, "held", "Bound", Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let seen = cluster.requests().len();
    std::thread::sleep(Duration::from_secs(11));
    let bound = operator_requests(&cluster.requests()[seen..]);
    let reads: Vec<_> = bound.keys().filter(|k| k.starts_with("GET ")).collect();
    assert!(reads.is_empty(), "reads with a bound session: {bound:?}");
    eprintln!("requests with a bound session: {bound:?}");

    // With a periodic pass ten minutes away, only the policy watch can bring it back.
    operator.stop(Duration::from_secs(10));
    run.status_interval_seconds = 600;
    let _operator = run.start(&cluster, &dir.path().join("operator-2.log"));
    wait_for(
        "the new operator's first pass",
        Duration::from_secs(30),
        || {
            let passes = pool_passes(&metrics_url);
            (passes >= 1).then_some(()).ok_or(passes.to_string())
        },
    );
    std::thread::sleep(Duration::from_secs(1));
    cluster.kubectl(&["delete", "networkpolicy", "rest-workers"]);
    wait_for("the policy recreated", Duration::from_secs(5), || {
        let out = cluster.kubectl_output(&["get", "networkpolicy", "rest-workers"], None);
        out.status
            .success()
            .then_some(())
            .ok_or_else(|| "not yet".to_string())
    });
}
