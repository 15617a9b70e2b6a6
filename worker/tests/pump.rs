//! The output pump under each backpressure policy, with a client that reads late or not at all.

mod common;

use std::time::Duration;

use capsule_protocol::execute::{EventBody, ExecuteRequest};
use common::{final_event, Worker, SESSION_TOKEN, WAIT};

/// Prints about 48 MB in 64 KiB writes: enough to fill loopback TCP buffers and the queue.
const FLOOD: &str =
    "import sys\nchunk = 'y' * 65535 + '\\n'\nfor _ in range(768):\n    sys.stdout.write(chunk)";

async fn wait_for(
    worker: &Worker,
    what: &str,
    check: impl Fn(&capsule_protocol::execute::WorkerStats) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if check(&worker.stats().await) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the flood and returns the unread response.
async fn start_flood(worker: &Worker) -> reqwest::Response {
    let response = worker
        .client
        .post(worker.url("/v1/executions"))
        .bearer_auth(SESSION_TOKEN)
        .json(&ExecuteRequest {
            code: FLOOD.into(),
            ..Default::default()
        })
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

async fn read_all(response: reqwest::Response) -> Vec<capsule_protocol::execute::ExecutionEvent> {
    let body = tokio::time::timeout(Duration::from_secs(60), response.bytes())
        .await
        .unwrap()
        .unwrap();
    body.split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect()
}

fn output_bytes(events: &[capsule_protocol::execute::ExecutionEvent]) -> usize {
    events
        .iter()
        .map(|e| match &e.body {
            EventBody::Output { text, .. } => text.len(),
            _ => 0,
        })
        .sum()
}

#[tokio::test]
async fn block_loses_nothing() {
    let worker = Worker::start(&[("CAPSULE_OUTPUT_QUEUE_CAPACITY", "4")]).await;
    let events = worker.run(FLOOD).await;
    assert!(matches!(final_event(&events), EventBody::Result { .. }));
    assert_eq!(output_bytes(&events), 768 * 65536);
    let stats = worker.stats().await;
    assert_eq!(stats.executor.outputs_dropped, 0);
    assert_eq!(stats.executor.outputs_enqueued, stats.executor.outputs_sent);
    assert!(
        stats.executor.max_queue_depth <= 4 + 2,
        "{:?}",
        stats.executor
    );
}

#[tokio::test]
async fn drop_new_counts_what_it_drops() {
    let worker = Worker::start(&[
        ("CAPSULE_OUTPUT_QUEUE_CAPACITY", "2"),
        ("CAPSULE_BACKPRESSURE", "DropNew"),
        ("CAPSULE_DRAIN_TIMEOUT_MS", "60000"),
    ])
    .await;
    let response = start_flood(&worker).await;
    wait_for(&worker, "drops", |s| s.executor.outputs_dropped > 0).await;
    let events = read_all(response).await;
    assert!(
        matches!(final_event(&events), EventBody::Result { .. }),
        "{:?}",
        final_event(&events)
    );
    let stats = worker.stats().await;
    let told = events.last().map_or(0, |e| e.output_dropped);
    assert_eq!(
        told, stats.executor.outputs_dropped,
        "the final event tells the client how many chunks were dropped"
    );
    assert!(output_bytes(&events) < 768 * 65536);
    assert_eq!(
        stats.executor.outputs_enqueued, stats.executor.outputs_sent,
        "everything queued was sent"
    );
    assert!(stats.executor.outputs_dropped > 0);
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_output() {
    let worker = Worker::start(&[
        ("CAPSULE_OUTPUT_QUEUE_CAPACITY", "2"),
        ("CAPSULE_BACKPRESSURE", "DropOldest"),
        ("CAPSULE_DRAIN_TIMEOUT_MS", "60000"),
    ])
    .await;
    let response = worker
        .client
        .post(worker.url("/v1/executions"))
        .bearer_auth(SESSION_TOKEN)
        .json(&ExecuteRequest {
            code: format!("{FLOOD}\nsys.stdout.flush()\nprint('the end')"),
            ..Default::default()
        })
        .send()
        .await
        .unwrap();
    wait_for(&worker, "drops", |s| s.executor.outputs_dropped > 0).await;
    let events = read_all(response).await;
    assert!(matches!(final_event(&events), EventBody::Result { .. }));
    let last_output = events
        .iter()
        .rev()
        .find_map(|e| match &e.body {
            EventBody::Output { text, .. } => Some(text.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(last_output, "the end\n");
}

#[tokio::test]
async fn error_policy_fails_the_execution_clearly() {
    let worker = Worker::start(&[
        ("CAPSULE_OUTPUT_QUEUE_CAPACITY", "1"),
        ("CAPSULE_BACKPRESSURE", "Error"),
        ("CAPSULE_DRAIN_TIMEOUT_MS", "60000"),
    ])
    .await;
    let response = start_flood(&worker).await;
    wait_for(&worker, "a refused output", |s| {
        s.executor.outputs_dropped > 0
    })
    .await;
    let events = read_all(response).await;
    match final_event(&events) {
        EventBody::Error { ename, evalue, .. } => {
            assert_eq!(ename, "OutputQueueFull");
            assert!(evalue.contains("backpressure policy is Error"), "{evalue}");
        }
        other => panic!("{other:?}"),
    }
    let stats = worker.stats().await;
    assert_eq!(stats.executions.error, 1);
    let events = worker.run("'still works'").await;
    assert!(matches!(final_event(&events), EventBody::Result { .. }));
}

#[tokio::test]
async fn a_client_that_does_not_drain_gets_output_drain_timeout() {
    let worker = Worker::start(&[
        ("CAPSULE_OUTPUT_QUEUE_CAPACITY", "2"),
        ("CAPSULE_DRAIN_TIMEOUT_MS", "500"),
    ])
    .await;
    let response = start_flood(&worker).await;
    wait_for(&worker, "a drain timeout", |s| {
        s.executor.drain_timeouts == 1
    })
    .await;
    let events = read_all(response).await;
    match final_event(&events) {
        EventBody::OutputDrainTimeout {
            pending,
            queue_size,
            sent,
            dropped,
        } => {
            assert_eq!(*queue_size, 2);
            assert_eq!(*pending, 2, "the queue was full when the wait ran out");
            assert!(*sent > 0);
            assert_eq!(*dropped, 0, "Block drops nothing before the timeout");
        }
        other => panic!("{other:?}"),
    }
    let stats = worker.stats().await;
    assert_eq!(
        stats.executor.outputs_dropped, 3,
        "the two abandoned in the queue plus the chunk that waited"
    );
    assert_eq!(stats.executor.drain_timeouts, 1);
    assert_eq!(stats.executions.error, 1);
    let events = tokio::time::timeout(WAIT, worker.run("1")).await.unwrap();
    assert!(matches!(final_event(&events), EventBody::Result { .. }));
}
