//! Heartbeats to a stand-in operator endpoint (a real axum server in the test).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use capsule_protocol::heartbeat::{Heartbeat, HeartbeatReply, SessionBinding, WorkerState};
use common::{result_repr, sha256_hex, Worker, WAIT, WORKER_TOKEN};

#[derive(Default)]
struct Operator {
    received: Vec<Heartbeat>,
    refuse_next: usize,
    reply: HeartbeatReply,
    bad_auth: usize,
}

type Shared = Arc<Mutex<Operator>>;

async fn heartbeat(
    State(operator): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Heartbeat>,
) -> Result<Json<HeartbeatReply>, StatusCode> {
    let mut operator = operator.lock().unwrap();
    let authorized = headers.get("authorization").and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {WORKER_TOKEN}"));
    if !authorized {
        operator.bad_auth += 1;
        return Err(StatusCode::UNAUTHORIZED);
    }
    operator.received.push(body);
    if operator.refuse_next > 0 {
        operator.refuse_next -= 1;
        return Err(StatusCode::SERVICE_UNAVAILABLE);
    }
    Ok(Json(std::mem::take(&mut operator.reply)))
}

async fn start_operator(operator: Shared) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/heartbeats", post(heartbeat))
        .with_state(operator);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1/heartbeats")
}

async fn wait_until(operator: &Shared, what: &str, check: impl Fn(&Operator) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check(&operator.lock().unwrap()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn heartbeats_report_counters_and_the_reply_is_obeyed() {
    let operator: Shared = Arc::new(Mutex::new(Operator {
        refuse_next: 1,
        ..Default::default()
    }));
    let url = start_operator(operator.clone()).await;
    let worker = Worker::start_unbound(&[
        ("CAPSULE_HEARTBEAT_URL", &url),
        ("CAPSULE_HEARTBEAT_INTERVAL_SECONDS", "1"),
    ])
    .await;
    worker.wait_ready().await;

    // The first send is refused: it is retried with backoff and keeps the capabilities.
    wait_until(&operator, "two heartbeats", |o| o.received.len() >= 2).await;
    {
        let operator = operator.lock().unwrap();
        let first = &operator.received[0];
        assert_eq!(first.seq, 1);
        assert_eq!(first.pod, "worker-0");
        assert_eq!(first.namespace, "tests");
        assert_eq!(first.pool, "pool-a");
        assert!(first.capabilities.is_some());
        let second = &operator.received[1];
        assert_eq!(second.seq, 2);
        let capabilities = second.capabilities.as_ref().expect("resent until accepted");
        assert_eq!(capabilities.backpressure, "Block");
        assert_eq!(operator.bad_auth, 0);
    }
    wait_until(&operator, "a heartbeat without capabilities", |o| {
        o.received.iter().any(|h| h.capabilities.is_none())
    })
    .await;
    {
        let operator = operator.lock().unwrap();
        let index = operator
            .received
            .iter()
            .position(|h| h.capabilities.is_none())
            .unwrap();
        let accepted = operator.received[index - 1].capabilities.as_ref().unwrap();
        assert!(accepted.python_version.starts_with("3."), "{accepted:?}");
        assert!(operator.received[index..]
            .iter()
            .all(|h| h.capabilities.is_none()));
        let later = &operator.received[index];
        assert_eq!(later.state, WorkerState::Idle);
        assert_eq!(later.session, None);
        assert!(
            later.rss_bytes > 1_000_000,
            "worker + interpreter RSS: {}",
            later.rss_bytes
        );
        assert!(
            later.worker_rss_bytes > 0 && later.worker_rss_bytes < later.rss_bytes,
            "the worker process alone: {} of {}",
            later.worker_rss_bytes,
            later.rss_bytes
        );
    }

    // Level-triggered binding through the reply.
    operator.lock().unwrap().reply = HeartbeatReply {
        session: Some(Some(SessionBinding {
            session: "session-a".into(),
            namespace: "tests".into(),
            token_sha256: sha256_hex(common::SESSION_TOKEN),
            session_uid: None,
            checkpoint_key: None,
        })),
    };
    wait_until(&operator, "a heartbeat naming the session", |o| {
        o.received.last().and_then(|h| h.session.as_deref()) == Some("session-a")
    })
    .await;
    let events = worker.run("kept = 1\nprint('x')\n1 + 1").await;
    assert_eq!(result_repr(&events).as_deref(), Some("2"));
    wait_until(&operator, "counters in a heartbeat", |o| {
        o.received.last().is_some_and(|h| {
            h.executions.ok == 1 && h.namespace_size == 1 && h.executor.outputs_sent == 1
        })
    })
    .await;

    // `session: null` releases the binding.
    operator.lock().unwrap().reply = HeartbeatReply {
        session: Some(None),
    };
    wait_until(&operator, "a heartbeat without session", |o| {
        o.received.last().is_some_and(|h| h.session.is_none())
    })
    .await;
    let seqs: Vec<u64> = operator
        .lock()
        .unwrap()
        .received
        .iter()
        .map(|h| h.seq)
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
}

#[tokio::test]
async fn heartbeats_never_block_execution_when_the_operator_is_down() {
    // Nothing listens on this address: every send fails.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1/heartbeats", listener.local_addr().unwrap());
    drop(listener);
    let worker = Worker::start(&[
        ("CAPSULE_HEARTBEAT_URL", &dead),
        ("CAPSULE_HEARTBEAT_INTERVAL_SECONDS", "1"),
    ])
    .await;
    for n in 0..3 {
        let events = worker.run(&format!("{n} * 2")).await;
        assert_eq!(result_repr(&events), Some((n * 2).to_string()));
    }
}

#[tokio::test]
async fn a_last_heartbeat_at_shutdown_carries_the_final_counters() {
    let operator: Shared = Arc::new(Mutex::new(Operator::default()));
    let url = start_operator(operator.clone()).await;
    // One heartbeat at start, the next only a minute later: a later one can only be the last.
    let worker = Worker::start(&[
        ("CAPSULE_HEARTBEAT_URL", &url),
        ("CAPSULE_HEARTBEAT_INTERVAL_SECONDS", "60"),
    ])
    .await;
    wait_until(&operator, "the first heartbeat", |o| !o.received.is_empty()).await;
    let events = worker.run("6 * 7").await;
    assert_eq!(result_repr(&events).as_deref(), Some("42"));
    assert_eq!(
        operator
            .lock()
            .unwrap()
            .received
            .last()
            .unwrap()
            .executions
            .ok,
        0
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &worker.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until(&operator, "a last heartbeat with the execution", |o| {
        o.received.last().is_some_and(|h| h.executions.ok == 1)
    })
    .await;
    let operator = operator.lock().unwrap();
    let last = operator.received.last().unwrap();
    let previous = &operator.received[operator.received.len() - 2];
    assert!(
        last.seq > previous.seq,
        "the index ignores a seq that does not grow"
    );
}

#[tokio::test]
async fn warm_up_code_that_raises_keeps_the_worker_unready_and_heartbeats_say_why() {
    let operator: Shared = Arc::new(Mutex::new(Operator::default()));
    let url = start_operator(operator.clone()).await;
    let long_message = "é".repeat(400);
    let code = format!("raise ValueError({long_message:?})");
    let worker = Worker::start_unbound(&[
        ("CAPSULE_HEARTBEAT_URL", &url),
        ("CAPSULE_HEARTBEAT_INTERVAL_SECONDS", "1"),
        ("CAPSULE_WARMUP_CODE", &code),
    ])
    .await;
    wait_until(&operator, "two failed warm-ups reported", |o| {
        o.received
            .last()
            .and_then(|h| h.warmup_failure.as_ref())
            .is_some_and(|f| f.attempts >= 2)
    })
    .await;
    let last = operator.lock().unwrap().received.last().cloned().unwrap();
    assert_eq!(last.state, WorkerState::Warming);
    let failure = last.warmup_failure.unwrap();
    assert_eq!(failure.ename, "ValueError");
    assert!(
        failure.evalue.len() <= 256 && failure.evalue.starts_with("éé"),
        "cut at 256 bytes on a character boundary: {} bytes",
        failure.evalue.len()
    );
    let ready = reqwest::get(worker.url("/readyz")).await.unwrap();
    assert_eq!(
        ready.status(),
        503,
        "a worker whose warm-up raises is not ready"
    );
}

#[tokio::test]
async fn a_worker_announces_itself_the_moment_its_interpreter_is_warm() {
    let operator: Shared = Arc::default();
    let url = start_operator(operator.clone()).await;
    let worker = Worker::start_unbound(&[
        ("CAPSULE_HEARTBEAT_URL", &url),
        ("CAPSULE_HEARTBEAT_INTERVAL_SECONDS", "3600"),
        ("CAPSULE_WARMUP_CODE", "import time\ntime.sleep(0.3)"),
    ])
    .await;
    worker.wait_ready().await;
    wait_until(
        &operator,
        "an idle heartbeat long before the interval",
        |o| o.received.iter().any(|h| h.state == WorkerState::Idle),
    )
    .await;
    let operator = operator.lock().unwrap();
    let states: Vec<WorkerState> = operator.received.iter().map(|h| h.state).collect();
    assert_eq!(
        states,
        [WorkerState::Warming, WorkerState::Idle],
        "one at start, one when warm"
    );
}
