//! Every counter a worker keeps, driven on the real path (a session on a devcluster pool, real
//! executions over HTTP) and then read back three ways: the pool's status, the session's live view,
//! and a real Prometheus scraping the operator; then the pool is exhausted (hits, a miss, an
//! acquire timeout) and its worn-out worker recycled. A second pool whose warm-up always raises shows the
//! warm-up failure the same ways.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use capsule_e2e::prometheus::{promql, start_prometheus};
use capsule_e2e::{
    free_port, http, session_token, start_operator, wait_for, wait_session_phase, DevCluster,
};
use serde_json::{json, Value};

/// One worker, small output queue dropping new chunks, short timeouts so each one can be hit,
/// recycled once it has run `maxExecutions` (only while idle, so after the session).
const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: c
  namespace: default
spec:
  replicas: 1
  maxWorkers: 2
  template:
    image: capsule-worker:dev
  heartbeat:
    intervalSeconds: 1
    stalenessSeconds: 10
  recycle:
    onRelease: Reset
    maxExecutions: 10
  sessions:
    idleTimeoutSeconds: 0
    acquireTimeoutSeconds: 2
  executor:
    outputQueueCapacity: 4
    backpressure: DropNew
    drainTimeoutMs: 500
    inputTimeoutSeconds: 1
    cancelGraceMs: 300
---
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: bad
  namespace: default
spec:
  replicas: 1
  template:
    image: capsule-worker:dev
  heartbeat:
    intervalSeconds: 1
    stalenessSeconds: 10
  warmup:
    code: "raise ValueError('the warm-up of this pool always fails')"
"#;

fn session(name: &str) -> String {
    format!(
        "apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  pool: c\n"
    )
}

fn wait_idle(cluster: &DevCluster, want: i64) {
    wait_for(&format!("{want} idle"), Duration::from_secs(120), || {
        let idle = pool_status(cluster, "c")["idle"].clone();
        (idle == want).then_some(()).ok_or(idle.to_string())
    });
}

/// The scale subresource describes the warm pool: the unbound workers, selected without the
/// worker `s` holds, so an autoscaler counts and measures the same pods.
fn check_scale_subresource(cluster: &DevCluster, bound_worker: &str) {
    let scale: Value = serde_json::from_str(&cluster.kubectl(&[
        "get",
        "cpool",
        "c",
        "--subresource=scale",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(scale["spec"]["replicas"], 1, "{scale}");
    assert_eq!(scale["status"]["replicas"], 1, "{scale}");
    let selector = scale["status"]["selector"].as_str().unwrap();
    let pods = cluster.kubectl(&["get", "pods", "-l", selector, "-o", "name"]);
    assert_eq!(pods.lines().count(), 1, "{selector}: {pods}");
    assert!(!pods.contains(bound_worker), "{selector}: {pods}");
}

/// With `s` holding one worker, `s2` takes the other (maxWorkers 2) and `s3` finds none within
/// the pool's acquireTimeoutSeconds.
fn exhaust_pool(cluster: &DevCluster, bound_worker: &str) {
    wait_idle(cluster, 1);
    check_scale_subresource(cluster, bound_worker);
    cluster.apply(&session("s2"));
    wait_session_phase(cluster, "s2", "Bound", Duration::from_secs(60));
    cluster.apply(&format!("{}  ttlSecondsAfterFinished: 2\n", session("s3")));
    wait_session_phase(cluster, "s3", "Failed", Duration::from_secs(30));
    assert_eq!(
        cluster.jsonpath(&["csess", "s3"], "{.status.reason}"),
        "AcquireTimeout"
    );
    // Finished, its token Secret goes at once and the session itself after its TTL.
    wait_for("s3 and its token gone", Duration::from_secs(30), || {
        let left = cluster.kubectl_output(
            &["get", "csess/s3", "secret/s3-session-token", "-o", "name"],
            None,
        );
        let text = String::from_utf8_lossy(&left.stdout).into_owned();
        text.trim().is_empty().then_some(()).ok_or(text)
    });
    cluster.kubectl(&["delete", "csess", "s2", "--timeout=60s"]);
}

/// A session's worker API, as a client of it sees it.
struct Client {
    endpoint: String,
    token: String,
}

impl Client {
    fn post(&self, path: &str, body: Value) -> reqwest::blocking::Response {
        http()
            .post(format!("{}/v1{path}", self.endpoint))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .expect("worker request")
    }

    /// Runs `code`, calling `on_event` for each event as it arrives; returns the final event.
    fn run(&self, code: &str, timeout_ms: Option<u64>, on_event: impl FnMut(&Value)) -> Value {
        let mut body = json!({"code": code});
        if let Some(ms) = timeout_ms {
            body["timeoutMs"] = json!(ms);
        }
        self.run_request(body, on_event)
    }

    /// Posts an execute request `body`, calling `on_event` for each event; returns the final one.
    fn run_request(&self, body: Value, mut on_event: impl FnMut(&Value)) -> Value {
        let response = self.post("/executions", body.clone());
        assert_eq!(response.status(), 200, "execute {body}");
        let mut last = Value::Null;
        for line in BufReader::new(response).lines() {
            let line = line.expect("stream line");
            if line.trim().is_empty() {
                continue;
            }
            last = serde_json::from_str(&line).expect("an NDJSON event");
            on_event(&last);
        }
        last
    }

    /// Runs `code` and checks its final event's type (and the result's repr, when given).
    fn expect(&self, code: &str, final_type: &str, repr: Option<&str>) {
        let last = self.run(code, None, |_| {});
        assert_eq!(last["type"], final_type, "{code:?} ended with {last}");
        if let Some(repr) = repr {
            assert_eq!(last["repr"], repr, "{code:?} ended with {last}");
        }
    }

    fn cancel(&self, execution: &str) -> Value {
        self.post(&format!("/executions/{execution}/cancel"), json!({}))
            .json()
            .expect("cancel answer")
    }

    /// An event handler that, once the code started, waits for promise `id` and settles it
    /// (`action` = `resolve` or `reject`).
    fn settle_when_started<'a>(
        &'a self,
        id: &'a str,
        action: &'a str,
        body: Value,
    ) -> impl FnMut(&Value) + 'a {
        move |event| {
            if event["type"] == "started" {
                self.wait_pending(id);
                let path = format!("/promises/{id}/{action}");
                assert_eq!(self.post(&path, body.clone()).status(), 204);
            }
        }
    }

    /// Waits until promise `id` is pending on the worker (its code registered it).
    fn wait_pending(&self, id: &str) {
        wait_for(
            &format!("promise {id} pending"),
            Duration::from_secs(10),
            || {
                let stats: Value = http()
                    .get(format!("{}/v1/stats", self.endpoint))
                    .bearer_auth(&self.token)
                    .send()
                    .and_then(|r| r.json())
                    .map_err(|e| e.to_string())?;
                let pending = stats["pendingPromises"].as_array().cloned();
                if pending.unwrap_or_default().iter().any(|p| p["id"] == id) {
                    Ok(())
                } else {
                    Err(stats["pendingPromises"].to_string())
                }
            },
        );
    }
}

/// Outcomes, cancels and restarts: 3 ok, 2 errors (one a transaction rolled back, one an
/// interpreter restart), 2 cancelled (one interrupted, one killed past the grace), 1 timed out,
/// and a cancel of nothing.
fn run_outcomes(client: &Client) {
    client.expect("1 + 1", "result", Some("2"));
    let body = json!({"code": "x = 1\n1 / 0", "transaction": "rollbackOnError"});
    let last = client.run_request(body, |_| {});
    assert_eq!(
        (&last["type"], &last["rolledBack"]),
        (&json!("error"), &json!(true)),
        "{last}"
    );
    let last = client.run("import time\ntime.sleep(5)", Some(300), |_| {});
    assert_eq!(last["type"], "timedOut", "{last}");
    let interrupted = client.run("import time\ntime.sleep(30)", None, |event| {
        if event["type"] == "started" {
            let id = event["executionId"].as_str().unwrap();
            assert_eq!(client.cancel(id)["status"], "cancelling");
        }
    });
    assert_eq!(interrupted["type"], "cancelled", "{interrupted}");
    let stubborn = "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except KeyboardInterrupt:\n        pass";
    let killed = client.run(stubborn, None, |event| {
        if event["type"] == "started" {
            std::thread::sleep(Duration::from_millis(200));
            client.cancel(event["executionId"].as_str().unwrap());
        }
    });
    assert_eq!(killed["type"], "cancelled", "{killed}");
    assert_eq!(killed["namespaceLost"], true, "{killed}");
    assert_eq!(client.cancel("not-an-execution")["status"], "notRunning");
    let restarted = client.run("import os\nos._exit(3)", None, |_| {});
    assert_eq!(restarted["type"], "interpreterRestarted", "{restarted}");
}

/// The three modes and a blocking call in async code: all ok.
fn run_modes(client: &Client) {
    client.expect(
        "import asyncio\nawait asyncio.sleep(0)\n'tla'",
        "result",
        Some("'tla'"),
    );
    client.expect(
        "async def f():\n    return 1\n'defined'",
        "result",
        Some("'defined'"),
    );
    client.expect(
        "import asyncio, time\ntime.sleep(0.01)\nawait asyncio.sleep(0)\n'blocked'",
        "result",
        Some("'blocked'"),
    );
}

/// The bridge: an input answered and one timed out; promises resolved, rejected, timed out and
/// left pending at the end of their execution (cancelled). All six executions end ok.
fn run_bridge(client: &Client) {
    let answered = client.run("input('name? ')", None, |event| {
        if event["type"] == "inputRequest" {
            let path = format!(
                "/executions/{}/input",
                event["executionId"].as_str().unwrap()
            );
            let body = json!({"inputId": event["inputId"], "value": "ada"});
            assert_eq!(client.post(&path, body).status(), 204);
        }
    });
    assert_eq!(answered["repr"], "'ada'", "{answered}");
    client.expect(
        "try:\n    input()\nexcept TimeoutError:\n    r = 'no answer'\nr",
        "result",
        Some("'no answer'"),
    );
    let resolved = client.run(
        "import capsule\ncapsule.promise('p-ok', timeout=30).result()",
        None,
        client.settle_when_started("p-ok", "resolve", json!({"value": 7})),
    );
    assert_eq!(resolved["repr"], "7", "{resolved}");
    let rejected = client.run(
        "import capsule\ntry:\n    capsule.promise('p-no', timeout=30).result()\nexcept capsule.PromiseError:\n    r = 'rejected'\nr",
        None,
        client.settle_when_started("p-no", "reject", json!({"reason": "no"})),
    );
    assert_eq!(rejected["repr"], "'rejected'", "{rejected}");
    client.expect(
        "import capsule\ntry:\n    capsule.promise('p-late', timeout=0.3).result()\nexcept capsule.PromiseTimeout:\n    r = 'late'\nr",
        "result",
        Some("'late'"),
    );
    client.expect(
        "import capsule\np = capsule.promise('p-left', timeout=60)\n'left'",
        "result",
        Some("'left'"),
    );
}

/// 64 MiB of output over about a second to a client that reads nothing for a while: the socket
/// fills, the 4-chunk queue drops new chunks, and once the code ends the queued rest is not taken
/// within the drain timeout (error). Spread over time so the socket is surely full at the end: a
/// fast interpreter outruns the stream, and 64 MiB written at once may leave it half empty.
fn run_backpressure(client: &Client) {
    let code = "import sys, time\nfor _ in range(1024):\n    sys.stdout.write('y' * 65536)\n    \
                time.sleep(0.001)\n'done'";
    let response = client.post("/executions", json!({"code": code}));
    assert_eq!(response.status(), 200);
    std::thread::sleep(Duration::from_secs(4));
    let last = BufReader::new(response)
        .lines()
        .map(|l| l.expect("stream line"))
        .filter(|l| !l.trim().is_empty())
        .last()
        .expect("a final event");
    let last: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(last["type"], "outputDrainTimeout", "{last}");
    assert!(last["dropped"].as_i64().unwrap() > 0, "{last}");
}

/// Executions run: 16 (10 ok, 3 errors, 2 cancelled, 1 timed out).
const EXPECTED_OUTCOMES: [(&str, &str, f64); 4] = [
    ("ok", "ok", 10.0),
    ("error", "error", 3.0),
    ("cancelled", "cancelled", 2.0),
    ("timedOut", "timed_out", 1.0),
];

fn pool_status(cluster: &DevCluster, pool: &str) -> Value {
    let json = cluster.kubectl(&["get", "cpool", pool, "-o", "json"]);
    serde_json::from_str::<Value>(&json).unwrap()["status"].clone()
}

/// Each `(status path, least value)` holds in the pool's status.
fn check_pool_status(status: &Value) -> Result<(), String> {
    let at_least = [
        ("/executor/outputsDropped", 1),
        ("/executor/drainTimeouts", 1),
        ("/executor/maxQueueDepth", 4),
        ("/executor/interpreterRestarts", 1),
        ("/bridge/created", 6),
        ("/bridge/resolved", 2),
        ("/bridge/rejected", 1),
        ("/bridge/timeouts", 2),
        ("/bridge/cancellations", 1),
        ("/bridge/highWater", 1),
        ("/cancels/requested", 3),
        ("/cancels/effective", 2),
        ("/cancels/noop", 1),
        ("/cancels/interrupted", 1),
        ("/cancels/killed", 1),
        ("/modes/plain", 10),
        ("/modes/topLevelAwait", 2),
        ("/modes/asyncDef", 1),
        ("/modes/blockingCallWarnings", 1),
        ("/executions/rolledBack", 1),
        ("/trace/sent", 1),
    ];
    let mut missing = Vec::new();
    for (path, least) in at_least {
        let got = status.pointer(path).and_then(Value::as_i64).unwrap_or(-1);
        if got < least {
            missing.push(format!("{path}={got} (want >= {least})"));
        }
    }
    for (field, _, want) in EXPECTED_OUTCOMES {
        let got = status["executions"][field].as_f64().unwrap_or(-1.0);
        if got != want {
            missing.push(format!("executions.{field}={got} (want {want})"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

/// Each `(query, least value)` holds in Prometheus.
fn check_prometheus(port: u16) -> Result<(), String> {
    let pool = r#"namespace="default",pool="c""#;
    let queries: Vec<(String, f64)> = EXPECTED_OUTCOMES
        .iter()
        .map(|(_, outcome, want)| {
            (
                format!(r#"capsule_pool_executions_total{{{pool},outcome="{outcome}"}}"#),
                *want,
            )
        })
        .collect();
    let at_least = [
        (r#"capsule_pool_outputs_total{POOL,result="dropped"}"#, 1.0),
        ("capsule_pool_output_drain_timeouts_total{POOL}", 1.0),
        ("capsule_pool_output_queue_max_depth{POOL}", 4.0),
        ("capsule_pool_interpreter_restarts_total{POOL}", 1.0),
        (r#"capsule_pool_promises_total{POOL,event="created"}"#, 6.0),
        (r#"capsule_pool_promises_total{POOL,event="resolved"}"#, 2.0),
        (r#"capsule_pool_promises_total{POOL,event="rejected"}"#, 1.0),
        (
            r#"capsule_pool_promises_total{POOL,event="timed_out"}"#,
            2.0,
        ),
        (
            r#"capsule_pool_promises_total{POOL,event="cancelled"}"#,
            1.0,
        ),
        ("capsule_pool_promises_high_water{POOL}", 1.0),
        (r#"capsule_pool_cancels_total{POOL,kind="requested"}"#, 3.0),
        (r#"capsule_pool_cancels_total{POOL,kind="effective"}"#, 2.0),
        (r#"capsule_pool_cancels_total{POOL,kind="noop"}"#, 1.0),
        (
            r#"capsule_pool_cancels_total{POOL,kind="interrupted"}"#,
            1.0,
        ),
        (r#"capsule_pool_cancels_total{POOL,kind="killed"}"#, 1.0),
        (
            r#"capsule_pool_execution_modes_total{POOL,mode="plain"}"#,
            10.0,
        ),
        (
            r#"capsule_pool_execution_modes_total{POOL,mode="top_level_await"}"#,
            2.0,
        ),
        (
            r#"capsule_pool_execution_modes_total{POOL,mode="async_def"}"#,
            1.0,
        ),
        ("capsule_pool_blocking_call_warnings_total{POOL}", 1.0),
        ("capsule_pool_transactions_rolled_back_total{POOL}", 1.0),
        (
            r#"capsule_pool_trace_events_total{POOL,result="sent"}"#,
            1.0,
        ),
        (
            r#"capsule_pool_workers_removed_total{POOL,reason="recycled"}"#,
            1.0,
        ),
        ("capsule_build_info", 1.0),
        (r#"process_cpu_seconds_total{job="capsule-operator"}"#, 0.01),
        (
            r#"process_resident_memory_bytes{job="capsule-operator"}"#,
            1e6,
        ),
        ("capsule_pool_hits_total{POOL}", 2.0),
        ("capsule_pool_misses_total{POOL}", 1.0),
        ("capsule_pool_acquisition_timeouts_total{POOL}", 1.0),
        ("capsule_pool_acquisition_seconds_count{POOL}", 2.0),
        ("capsule_pool_warmup_triggers_total{POOL}", 1.0),
        (
            r#"capsule_pool_workers_removed_total{namespace="default",pool="bad",reason="warmup_failed"}"#,
            1.0,
        ),
    ];
    let mut failed = Vec::new();
    for (query, want) in &queries {
        let got = promql(port, query);
        if got != Some(*want) {
            failed.push(format!("{query} = {got:?} (want {want})"));
        }
    }
    for (query, least) in at_least {
        let query = query.replace("POOL", pool);
        let got = promql(port, &query);
        if got.is_none_or(|v| v < least) {
            failed.push(format!("{query} = {got:?} (want >= {least})"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("\n"))
    }
}

#[test]
fn every_worker_counter_reaches_pool_status_session_status_and_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    let port = free_port();
    let _operator = start_operator(&cluster, port, &dir.path().join("operator.log"), &[]);
    let (_prometheus, prom_port) = start_prometheus(dir.path(), port);
    cluster.apply(POOL);
    wait_idle(&cluster, 1);
    cluster.apply(&session("s"));
    wait_session_phase(&cluster, "s", "Bound", Duration::from_secs(120));
    let client = Client {
        endpoint: cluster.jsonpath(&["csess", "s"], "{.status.endpoint}"),
        token: session_token(&cluster, "s"),
    };
    let worker = cluster.jsonpath(&["csess", "s"], "{.status.worker}");

    let started = Instant::now();
    run_outcomes(&client);
    run_modes(&client);
    run_bridge(&client);
    run_backpressure(&client);
    eprintln!("16 executions ran in {:?}", started.elapsed());

    wait_for("the session's live view", Duration::from_secs(30), || {
        let info = cluster.jsonpath(&["csess", "s"], "{.status.info}");
        let view: Value = serde_json::from_str(&info).map_err(|_| info.clone())?;
        let settled = view["executionsOk"] == 10
            && view["executionsFailed"] == 6
            && view["pendingPromises"] == 0
            && view["state"] == "idle";
        settled.then_some(()).ok_or(info)
    });
    wait_for(
        "every counter in the pool's status",
        Duration::from_secs(30),
        || check_pool_status(&pool_status(&cluster, "c")),
    );
    exhaust_pool(&cluster, &worker);
    let counters = wait_for(
        "the exhausted pool's counters",
        Duration::from_secs(30),
        || {
            let counters = pool_status(&cluster, "c")["pool"].clone();
            let acquisition = &counters["acquisition"];
            let settled = acquisition["attempts"] == 3 && acquisition["timeouts"] == 1;
            settled
                .then_some(counters.clone())
                .ok_or(counters.to_string())
        },
    );
    assert_eq!(counters["hits"], 2, "{counters}");
    assert_eq!(counters["misses"], 1, "{counters}");
    assert_eq!(counters["hitRatePercent"], "66.7", "{counters}");
    assert_eq!(counters["acquisition"]["successes"], 2, "{counters}");
    assert!(
        counters["warmup"]["triggers"].as_i64() >= Some(1),
        "{counters}"
    );
    let acquisition = &counters["acquisition"];
    assert!(acquisition["latencyP50Ms"].is_i64(), "{counters}");
    assert!(acquisition["latencyP99Ms"].as_i64() >= acquisition["latencyP50Ms"].as_i64());

    // Released, the worker is past maxExecutions: it is recycled (only idle workers are) and the
    // pool keeps its totals though the worker that counted them is gone.
    cluster.kubectl(&["delete", "csess", "s", "--timeout=60s"]);
    wait_for(
        "the worn-out worker recycled",
        Duration::from_secs(60),
        || {
            let status = pool_status(&cluster, "c");
            let recycled = status["pool"]["workersRecycled"].as_i64().unwrap_or(0);
            let pods = cluster.kubectl(&["get", "pods", "-l", "capsule.dev/pool=c", "-o", "name"]);
            (recycled >= 1 && !pods.contains(&worker))
                .then_some(())
                .ok_or(format!("recycled={recycled} pods={pods}"))
        },
    );
    check_pool_status(&pool_status(&cluster, "c")).expect("totals kept after the recycle");

    wait_for(
        "the warm-up failure in status",
        Duration::from_secs(60),
        || {
            let status = pool_status(&cluster, "bad");
            let conditions = status["conditions"].to_string();
            conditions
                .contains("WarmupFailing")
                .then_some(())
                .ok_or(conditions)
        },
    );
    wait_for(
        "every counter in Prometheus",
        Duration::from_secs(60),
        || check_prometheus(prom_port),
    );
}

/// One worker that keeps its pod across releases: each release swaps in a fresh interpreter.
const CPU_POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: cpu
  namespace: default
spec:
  replicas: 1
  maxWorkers: 1
  template:
    image: capsule-worker:dev
  heartbeat:
    intervalSeconds: 1
    stalenessSeconds: 10
  recycle:
    onRelease: Reset
"#;

/// About half a second of one core in the interpreter.
const BURN: &str = "sum(i * i for i in range(4_000_000))";
const CPU_SECONDS: &str = r#"capsule_pool_cpu_seconds_total{pool="cpu"}"#;

/// Binds session `name` to pool cpu's worker, burns CPU in it, and returns the worker's
/// interpreter pid and endpoint.
fn burn_in_session(cluster: &DevCluster, name: &str) -> (u64, String) {
    cluster.apply(&format!(
        "apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  pool: cpu\n"
    ));
    wait_session_phase(cluster, name, "Bound", Duration::from_secs(120));
    let client = Client {
        endpoint: cluster.jsonpath(&["csess", name], "{.status.endpoint}"),
        token: session_token(cluster, name),
    };
    client.expect(BURN, "result", None);
    (interpreter_pid(&client.endpoint), client.endpoint)
}

fn interpreter_pid(endpoint: &str) -> u64 {
    let health: Value = http()
        .get(format!("{endpoint}/healthz"))
        .send()
        .and_then(|r| r.json())
        .expect("the worker's /healthz");
    health["interpreterPid"].as_u64().expect("interpreterPid")
}

/// Waits until Prometheus has `capsule_pool_cpu_seconds_total` of pool cpu at `least` or more.
fn wait_cpu_seconds(prometheus: u16, least: f64) -> f64 {
    wait_for(
        &format!("{CPU_SECONDS} >= {least}"),
        Duration::from_secs(60),
        || {
            let got = promql(prometheus, CPU_SECONDS);
            got.filter(|v| *v >= least).ok_or(format!("{got:?}"))
        },
    )
}

#[test]
fn cpu_seconds_keep_counting_across_a_reset_release() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    let port = free_port();
    let _operator = start_operator(&cluster, port, &dir.path().join("operator.log"), &[]);
    let (_prometheus, prom_port) = start_prometheus(dir.path(), port);
    cluster.apply(CPU_POOL);

    let (first_pid, endpoint) = burn_in_session(&cluster, "burn-1");
    let before = wait_cpu_seconds(prom_port, 0.2);
    // Released with Reset: the interpreter that burned the CPU is gone, a fresh one serves.
    cluster.kubectl(&["delete", "csess", "burn-1", "--timeout=60s"]);
    let (second_pid, second_endpoint) = burn_in_session(&cluster, "burn-2");
    assert_eq!(
        second_endpoint, endpoint,
        "the same worker pod serves both sessions"
    );
    assert_ne!(
        second_pid, first_pid,
        "the release swapped in a new interpreter"
    );
    // The second burn adds to the first instead of starting over.
    let after = wait_cpu_seconds(prom_port, before + 0.2);
    eprintln!(
        "{CPU_SECONDS}: {before} after the first burn, {after} after the reset and the second"
    );
    for (query, want) in [
        (format!("resets({CPU_SECONDS}[10m])"), 0.0),
        // A worker counter going backwards would read as a worker process restart.
        (
            r#"capsule_pool_worker_restarts_total{pool="cpu"}"#.to_string(),
            0.0,
        ),
    ] {
        assert_eq!(promql(prom_port, &query), Some(want), "{query}");
    }
}
