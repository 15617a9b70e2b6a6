//! The operator's core job end to end, with real processes: the devcluster (API server and process
//! kubelet), the operator, capsule-worker and capsule-sidecar in each pod, real kubectl, and a real
//! Prometheus server scraping the operator.

use std::time::Duration;

use base64::Engine;
use capsule_e2e::prometheus::{promql, start_prometheus};
use capsule_e2e::{
    free_port, http, post_heartbeat, session_token, start_operator, wait_for, wait_session_phase,
    DevCluster,
};
use capsule_protocol::auth::worker_credential;
use serde_json::{json, Value};

const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: p
  namespace: default
spec:
  replicas: 2
  maxWorkers: 3
  scaleDownDelaySeconds: 4
  template:
    image: capsule-worker:dev
  heartbeat:
    intervalSeconds: 1
    stalenessSeconds: 4
  recycle:
    onRelease: Reset
  sessions:
    idleTimeoutSeconds: 0
"#;

fn session(name: &str) -> String {
    format!(
        "apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  pool: p\n"
    )
}

fn pool_field(cluster: &DevCluster, path: &str) -> String {
    cluster.jsonpath(&["cpool", "p"], path)
}

fn wait_idle(cluster: &DevCluster, want: &str, what: &str) {
    wait_for(what, Duration::from_secs(120), || {
        let idle = pool_field(cluster, "{.status.idle}");
        let bound = pool_field(cluster, "{.status.bound}");
        if idle == want {
            Ok(())
        } else {
            Err(format!("idle={idle:?} bound={bound:?}"))
        }
    });
}

/// The pid of the capsule-worker process of `pod`, found by its downward-API POD_NAME.
fn worker_pid(pod: &str) -> Option<i32> {
    let needle = format!("POD_NAME={pod}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if exe.file_name().is_none_or(|n| n != "capsule-worker") {
            continue;
        }
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|kv| kv == needle.as_bytes()) {
            return Some(pid);
        }
    }
    None
}

fn execute(endpoint: &str, token: &str, code: &str) -> (u16, Vec<Value>) {
    let response = http()
        .post(format!("{endpoint}/v1/executions"))
        .bearer_auth(token)
        .json(&json!({"code": code}))
        .send()
        .expect("execute request");
    let status = response.status().as_u16();
    let body = response.text().unwrap();
    let events = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    (status, events)
}

#[test]
fn pools_warm_up_sessions_bind_execute_and_release_and_dead_workers_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());

    let port = free_port();
    let _operator = start_operator(&cluster, port, &dir.path().join("operator.log"), &[]);
    let base = format!("http://127.0.0.1:{port}");
    wait_for("operator ready", Duration::from_secs(60), || {
        match http().get(format!("{base}/readyz")).send() {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(e.to_string()),
        }
    });

    // A pool warms up: its workers run, heartbeat, and the numbers show in kubectl and status.
    cluster.apply(POOL);
    wait_idle(&cluster, "2", "two idle workers");
    let table = cluster.kubectl(&["get", "cpool", "p"]);
    let header = table.lines().next().unwrap();
    for column in ["WARM", "IDLE", "BOUND", "UNHEALTHY", "READY", "AGE"] {
        assert!(header.contains(column), "column {column} missing: {table}");
    }
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..6], ["p", "2", "2", "0", "0", "True"], "{table}");
    wait_for(
        "heartbeats relayed into status",
        Duration::from_secs(30),
        || {
            let summaries: Value =
                serde_json::from_str(&pool_field(&cluster, "{.status.workerSummaries}"))
                    .map_err(|e| e.to_string())?;
            let rows = summaries.as_array().ok_or("no summaries")?;
            let relayed = rows
                .iter()
                .filter(|r| {
                    let total = r["rssBytes"].as_i64().unwrap_or(0);
                    let worker = r["workerRssBytes"].as_i64().unwrap_or(0);
                    r["lastHeartbeat"].is_string() && worker > 0 && total > worker
                })
                .count();
            if relayed == 2 {
                Ok(())
            } else {
                Err(format!("{summaries}"))
            }
        },
    );

    // A session binds a warm worker; code runs on it with the session's token.
    cluster.apply(&session("s1"));
    wait_session_phase(&cluster, "s1", "Bound", Duration::from_secs(60));
    assert_eq!(
        cluster.jsonpath(&["csess", "s1"], "{.status.warmHit}"),
        "true"
    );
    let endpoint = cluster.jsonpath(&["csess", "s1"], "{.status.endpoint}");
    let token = session_token(&cluster, "s1");
    let worker_of_s1 = cluster.jsonpath(&["csess", "s1"], "{.status.worker}");

    let (status, _) = execute(&endpoint, "not-the-token", "1+1");
    assert_eq!(status, 401, "a wrong session token is refused");
    let (status, events) = execute(
        &endpoint,
        &token,
        "x = 21\nprint('hello from capsule')\nx * 2",
    );
    assert_eq!(status, 200, "{events:?}");
    let output: String = events
        .iter()
        .filter(|e| e["type"] == "output")
        .map(|e| e["text"].as_str().unwrap_or_default())
        .collect();
    assert!(output.contains("hello from capsule"), "{events:?}");
    let last = events.last().expect("a final event");
    assert_eq!(last["type"], "result", "{events:?}");
    assert_eq!(last["repr"], "42", "{events:?}");
    wait_for(
        "pool shows the bound worker",
        Duration::from_secs(30),
        || {
            let bound = pool_field(&cluster, "{.status.bound}");
            let ok = pool_field(&cluster, "{.status.executions.ok}");
            if bound == "1" && ok.parse::<i64>().unwrap_or(0) >= 1 {
                Ok(())
            } else {
                Err(format!("bound={bound} ok={ok}"))
            }
        },
    );

    // The session's own live view, from its worker's heartbeats: its executions only (not those
    // of earlier sessions on the worker), and the worker's memory.
    let (_, events) = execute(&endpoint, &token, "1 / 0");
    assert_eq!(events.last().unwrap()["type"], "error", "{events:?}");
    wait_for("the session's status.info", Duration::from_secs(30), || {
        let info = cluster.jsonpath(&["csess", "s1"], "{.status.info}");
        let view: Value = serde_json::from_str(&info).map_err(|_| info.clone())?;
        if view["executionsOk"] == 1
            && view["executionsFailed"] == 1
            && view["state"] == "idle"
            && view["memoryMib"].as_i64().unwrap_or(0) > 0
            && view["lastActivity"].is_string()
        {
            Ok(())
        } else {
            Err(info)
        }
    });

    // Forged heartbeats are refused and counted.
    let heartbeats = format!("{base}/v1/heartbeats");
    let forged = |token: &str, pod: &str| post_heartbeat(&heartbeats, token, pod, "p");
    assert_eq!(forged("forged-token", &worker_of_s1), 401, "wrong token");
    let secret = |name: &str| {
        let b64 = cluster.jsonpath(&["secret", name], "{.data.token}");
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .unwrap(),
        )
        .unwrap()
    };
    let pool_key = secret("p-pool-token");
    assert_eq!(
        forged(&pool_key, &worker_of_s1),
        401,
        "the pool key is no worker's credential"
    );
    let own = secret(&format!("{worker_of_s1}-credential"));
    assert_eq!(
        own,
        worker_credential(&pool_key, "default", &worker_of_s1),
        "each worker's Secret holds the credential derived for it"
    );
    assert_eq!(
        forged(&own, "another-worker-of-p"),
        401,
        "a worker's credential names that worker only"
    );
    assert_eq!(
        forged(
            &worker_credential(&pool_key, "default", "not-a-worker-of-p"),
            "not-a-worker-of-p"
        ),
        403,
        "a pod outside the pool"
    );
    let metrics = http()
        .get(format!("{base}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("capsule_heartbeats_rejected_total{reason=\"bad_token\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capsule_heartbeats_rejected_total{reason=\"wrong_pool\"} 1"),
        "{metrics}"
    );

    // Deleting the session resets the worker and gives it back to the pool. The pool refilled its
    // warm target while s1 held the worker, so it now has one idle worker too many: kept for
    // spec.scaleDownDelaySeconds (a next session would take it without a pod start), then removed.
    cluster.kubectl(&["delete", "csess", "s1", "--timeout=60s"]);
    wait_for("the surplus worker kept", Duration::from_secs(60), || {
        let idle = pool_field(&cluster, "{.status.idle}");
        let progressing = pool_field(
            &cluster,
            "{.status.conditions[?(@.type==\"Progressing\")].message}",
        );
        if idle == "3"
            && progressing
                .contains("1 surplus unbound workers kept for spec.scaleDownDelaySeconds (4s)")
        {
            Ok(())
        } else {
            Err(format!("idle={idle:?} progressing={progressing:?}"))
        }
    });
    wait_idle(&cluster, "2", "the surplus removed after the delay");
    let labels = cluster.jsonpath(&["pod", &worker_of_s1], "{.metadata.labels}");
    assert!(
        !labels.contains("capsule.dev/session"),
        "the reset worker is unbound: {labels}"
    );

    // A real Prometheus scrapes the operator: idle gauge and hit counter have the right values.
    let (_prometheus, prom_port) = start_prometheus(dir.path(), port);
    wait_for("Prometheus sees the pool", Duration::from_secs(60), || {
        let idle = promql(
            prom_port,
            "capsule_pool_workers{namespace=\"default\",pool=\"p\",phase=\"Idle\"}",
        );
        let hits = promql(
            prom_port,
            "capsule_pool_hits_total{namespace=\"default\",pool=\"p\"}",
        );
        if idle == Some(2.0) && hits == Some(1.0) {
            Ok(())
        } else {
            let scraped = http()
                .get(format!("{base}/metrics"))
                .header("accept", "application/openmetrics-text;version=1.0.0")
                .send()
                .map(|r| r.text().unwrap_or_default())
                .unwrap_or_default();
            let hits_lines: Vec<&str> = scraped.lines().filter(|l| l.contains("hits")).collect();
            let targets = http()
                .get(format!("http://127.0.0.1:{prom_port}/api/v1/targets"))
                .send()
                .map(|r| r.text().unwrap_or_default())
                .unwrap_or_default();
            Err(format!(
                "idle={idle:?} hits={hits:?}; operator says {hits_lines:?}; targets {targets}"
            ))
        }
    });

    // Killing a bound worker's process: the worker is unhealthy, replaced, and its session Failed.
    cluster.apply(&session("s2"));
    wait_session_phase(&cluster, "s2", "Bound", Duration::from_secs(60));
    let victim = cluster.jsonpath(&["csess", "s2"], "{.status.worker}");
    let pid = wait_for("the worker process", Duration::from_secs(10), || {
        worker_pid(&victim).ok_or("not found".to_string())
    });
    unsafe { libc_kill(pid) };
    // Two staleness periods (4 s each) plus the time to notice.
    wait_for("session s2 failed", Duration::from_secs(20), || {
        let phase = cluster.jsonpath(&["csess", "s2"], "{.status.phase}");
        if phase == "Failed" {
            Ok(())
        } else {
            Err(phase)
        }
    });
    assert_eq!(
        cluster.jsonpath(&["csess", "s2"], "{.status.reason}"),
        "WorkerLost"
    );
    wait_for("the dead worker replaced", Duration::from_secs(60), || {
        let pods = cluster.kubectl(&["get", "pods", "-l", "capsule.dev/pool=p", "-o", "name"]);
        if pods.contains(&victim) {
            Err(pods)
        } else {
            Ok(())
        }
    });
    wait_idle(&cluster, "2", "the pool back to its warm target");
    let triggers: i64 = pool_field(&cluster, "{.status.pool.health.triggers}")
        .parse()
        .unwrap_or(0);
    assert!(triggers >= 1, "health trigger counted");
}

unsafe fn libc_kill(pid: i32) {
    extern "C" {
        fn kill(pid: i32, sig: i32) -> i32;
    }
    kill(pid, 9);
}
