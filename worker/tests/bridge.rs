//! Interactive input and promises through the bridge, against a real python3.

mod common;

use capsule_protocol::execute::{EventBody, ExecuteRequest, InputReply, PromiseReject};
use common::{final_event, outputs, result_repr, Worker, WAIT};
use serde_json::json;
use std::sync::{Arc, Mutex};

#[tokio::test]
async fn input_is_answered_through_the_api_and_another_times_out() {
    let worker = Worker::start(&[("CAPSULE_INPUT_TIMEOUT_MS", "1500")]).await;
    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "name = input('Your name? ')\nprint('hello', name)\nname.upper()".into(),
            ..Default::default()
        })
        .await;
    let (execution_id, input_id) = loop {
        let event = stream.expect_next().await;
        if let EventBody::InputRequest {
            input_id,
            prompt,
            timeout_ms,
        } = event.body
        {
            assert_eq!(prompt, "Your name? ");
            assert_eq!(timeout_ms, 1500);
            break (event.execution_id, input_id);
        }
    };
    let pending = worker.stats().await.pending_promises;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, "input");
    assert_eq!(pending[0].execution_id, execution_id);
    let wrong = worker
        .post(&format!("/v1/executions/{execution_id}/input"))
        .json(&InputReply {
            input_id: "not-a-request".into(),
            value: "x".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 404);
    let answer = worker
        .post(&format!("/v1/executions/{execution_id}/input"))
        .json(&InputReply {
            input_id,
            value: "ada".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 204);
    let rest = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    assert_eq!(result_repr(&rest).as_deref(), Some("'ADA'"));
    assert_eq!(
        outputs(&rest),
        vec![("stdout".into(), "hello ada\n".into())]
    );

    let events = worker
        .run("try:\n    input('never answered')\nexcept TimeoutError as e:\n    caught = str(e)\ncaught")
        .await;
    let repr = result_repr(&events).unwrap();
    assert!(repr.contains("was not answered in time"), "{repr}");
    assert!(events
        .iter()
        .any(|e| matches!(e.body, EventBody::InputRequest { .. })));
    let bridge = worker.stats().await.bridge;
    assert_eq!(bridge.created, 2);
    assert_eq!(bridge.resolved, 1);
    assert_eq!(bridge.timed_out, 1);
    assert_eq!(bridge.pending, 0);
    assert_eq!(bridge.high_water, 1);
}

#[tokio::test]
async fn promises_resolve_reject_and_time_out() {
    let worker = Worker::start(&[]).await;
    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "import capsule\nvalue = await capsule.promise('order-1', timeout=30)\nvalue['total'] * 2".into(),
            ..Default::default()
        })
        .await;
    // The promise exists once the bridge lists it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending = worker.stats().await.pending_promises;
        if pending
            .iter()
            .any(|p| p.id == "order-1" && p.kind == "promise" && p.timeout_ms == 30_000)
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "promise never became pending"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let resolved = worker
        .post("/v1/promises/order-1/resolve")
        .json(&json!({"value": {"total": 21}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), 204);
    let events = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    assert_eq!(result_repr(&events).as_deref(), Some("42"));

    let again = worker
        .post("/v1/promises/order-1/resolve")
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        again.status(),
        404,
        "a settled promise cannot be settled twice"
    );

    let events = worker
        .run("try:\n    await capsule.promise('late', timeout=0.3)\nexcept capsule.PromiseTimeout as e:\n    caught = type(e).__name__\ncaught")
        .await;
    assert_eq!(result_repr(&events).as_deref(), Some("'PromiseTimeout'"));

    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "p = capsule.promise('refused', timeout=30)\nprint('waiting', flush=True)\np.result()".into(),
            ..Default::default()
        })
        .await;
    loop {
        if let EventBody::Output { .. } = stream.expect_next().await.body {
            break;
        }
    }
    let rejected = worker
        .post("/v1/promises/refused/reject")
        .json(&PromiseReject {
            reason: "payment declined".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 204);
    let events = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    match final_event(&events) {
        EventBody::Error { ename, evalue, .. } => {
            assert_eq!(ename, "PromiseError");
            assert!(evalue.contains("payment declined"), "{evalue}");
        }
        other => panic!("{other:?}"),
    }

    // A promise left pending when its execution ends is cancelled with it.
    let events = worker
        .run("orphan = capsule.promise('orphan', timeout=30)\n1")
        .await;
    assert_eq!(result_repr(&events).as_deref(), Some("1"));
    let bridge = worker.stats().await.bridge;
    assert_eq!(bridge.created, 4);
    assert_eq!(bridge.resolved, 1);
    assert_eq!(bridge.rejected, 1);
    assert_eq!(bridge.timed_out, 1);
    assert_eq!(bridge.cancelled, 1);
    assert_eq!(bridge.pending, 0);
}

#[tokio::test]
async fn cancelling_an_execution_cancels_its_promises() {
    let worker = Worker::start(&[]).await;
    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "import capsule\nprint('ready', flush=True)\nawait capsule.promise('waits', timeout=60)".into(),
            ..Default::default()
        })
        .await;
    let id = stream
        .id_once(|body| matches!(body, EventBody::Output { .. }))
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while worker.stats().await.bridge.pending == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    worker.cancel(&id).await;
    let events = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    assert!(matches!(final_event(&events), EventBody::Cancelled { .. }));
    let bridge = worker.stats().await.bridge;
    assert_eq!(bridge.cancelled, 1);
    assert_eq!(bridge.pending, 0);
}

#[tokio::test]
async fn shutdown_rejects_pending_promises_with_a_clear_reason() {
    let worker = Worker::start(&[]).await;
    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "import capsule\nawait capsule.promise('forever', timeout=600)".into(),
            ..Default::default()
        })
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while worker.stats().await.bridge.pending == 0 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = std::process::Command::new("kill")
        .args(["-TERM", &worker.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let events = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    match final_event(&events) {
        EventBody::Error { ename, evalue, .. } => {
            assert_eq!(ename, "PromiseError");
            assert!(evalue.contains("shutting down"), "{evalue}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_promise_without_a_timeout_gets_the_promise_timeout_not_the_input_timeout() {
    let worker = Worker::start(&[
        ("CAPSULE_PROMISE_TIMEOUT_MS", "300"),
        ("CAPSULE_INPUT_TIMEOUT_MS", "600000"),
    ])
    .await;
    let events = worker
        .run("import capsule\ntry:\n    await capsule.promise('no-timeout')\nexcept capsule.PromiseTimeout as e:\n    caught = type(e).__name__\ncaught")
        .await;
    assert_eq!(result_repr(&events).as_deref(), Some("'PromiseTimeout'"));
    assert_eq!(worker.stats().await.bridge.timed_out, 1);
}

#[tokio::test]
async fn the_default_promise_timeout_is_a_minute() {
    let worker = Worker::start(&[]).await;
    let _stream = worker
        .stream(&ExecuteRequest {
            code: "import capsule\nawait capsule.promise('waits')".into(),
            ..Default::default()
        })
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let pending = worker.stats().await.pending_promises;
        if let Some(promise) = pending.iter().find(|p| p.id == "waits") {
            assert_eq!(promise.timeout_ms, 60_000);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never pending");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn rejected_and_cancelled_promises_and_the_session_lifecycle_reach_the_trace() {
    use capsule_protocol::trace::{TraceEvent, TraceEventKind};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("trace.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let kinds = Arc::new(Mutex::new(Vec::<(TraceEventKind, Option<String>)>::new()));
    let seen = kinds.clone();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        while let Ok(event) =
            capsule_protocol::frame::read_frame_async::<_, TraceEvent>(&mut stream).await
        {
            seen.lock().unwrap().push((event.kind, event.session));
        }
    });
    let worker = Worker::start(&[
        ("CAPSULE_TRACE_SOCKET", socket.to_str().unwrap()),
        ("CAPSULE_TRACE_LINGER_MS", "1"),
    ])
    .await;
    let mut stream = worker
        .stream(&ExecuteRequest {
            code: "import capsule\np = capsule.promise('refused', timeout=30)\nprint('waiting', flush=True)\ntry:\n    p.result()\nexcept capsule.PromiseError:\n    pass\norphan = capsule.promise('orphan', timeout=30)\n1".into(),
            ..Default::default()
        })
        .await;
    loop {
        if let EventBody::Output { .. } = stream.expect_next().await.body {
            break;
        }
    }
    let rejected = worker
        .post("/v1/promises/refused/reject")
        .json(&PromiseReject {
            reason: "no".into(),
        })
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status(), 204);
    let events = tokio::time::timeout(WAIT, stream.collect()).await.unwrap();
    assert_eq!(result_repr(&events).as_deref(), Some("1"));
    worker.release_with_reset().await;

    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let seen = kinds.lock().unwrap().clone();
        let has = |kind| seen.iter().any(|(k, _)| *k == kind);
        if has(TraceEventKind::PromiseRejected)
            && has(TraceEventKind::PromiseCancelled)
            && has(TraceEventKind::SessionBound)
            && has(TraceEventKind::SessionReleased)
        {
            assert!(seen
                .iter()
                .filter(|(k, _)| matches!(
                    k,
                    TraceEventKind::SessionBound | TraceEventKind::SessionReleased
                ))
                .all(|(_, session)| session.is_some()));
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
