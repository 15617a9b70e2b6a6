//! Property-based fuzzing of the execute API over real HTTP against the real worker and
//! interpreter: arbitrary and mutated bodies on every JSON endpoint and arbitrary checkpoint query
//! strings. Every answer is a success or a JSON `ErrorBody` with a 4xx status (never a 5xx, never
//! a hang), and the worker still runs code afterwards. `PROPTEST_CASES` sets the cases per
//! endpoint (default 256).

mod common;

use capsule_protocol::execute::ErrorBody;
use common::{Worker, SESSION_TOKEN, WORKER_TOKEN};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Valid bodies to mutate, per endpoint; every execution carries a timeout.
const EXECUTE_SEEDS: &[&str] = &[
    r#"{"code":"1 + 1","timeoutMs":5000}"#,
    r#"{"code":"x = 2","timeoutMs":5000,"metadata":{"user":"alice"}}"#,
];
const INPUT_SEEDS: &[&str] = &[r#"{"inputId":"i1","value":"yes"}"#];
const RESOLVE_SEEDS: &[&str] = &[r#"{"value":{"a":[1,2]}}"#];
const REJECT_SEEDS: &[&str] = &[r#"{"reason":"no"}"#];

fn body(seeds: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            prop::sample::select(seeds),
            prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 0..5),
        )
            .prop_map(|(seed, edits)| {
                let mut bytes = seed.as_bytes().to_vec();
                for (at, byte, op) in edits {
                    let at = at % (bytes.len() + 1);
                    match op {
                        0 if at < bytes.len() => bytes[at] = byte,
                        1 => bytes.insert(at, byte),
                        _ => bytes.truncate(at),
                    }
                }
                bytes
            }),
    ]
}

/// Sends one request and checks the answer's shape.
async fn check(worker: &Worker, request: reqwest::RequestBuilder) -> Result<u16, String> {
    let response = request
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| format!("body failed: {e}"))?;
    if status >= 500 {
        return Err(format!("{status}: {text}"));
    }
    if status >= 400 {
        let error: ErrorBody = serde_json::from_str(&text)
            .map_err(|_| format!("{status} without ErrorBody: {text}"))?;
        if error.code.is_empty() || error.message.is_empty() {
            return Err(format!("empty error: {text}"));
        }
    }
    let _ = worker;
    Ok(status)
}

fn run(
    runtime: &tokio::runtime::Runtime,
    worker: &Worker,
    strategy: impl Strategy<Value = Vec<u8>>,
    request: impl Fn(Vec<u8>) -> reqwest::RequestBuilder,
    allowed: &[u16],
) {
    let mut runner = TestRunner::new(Config::default());
    runner
        .run(&strategy, |bytes| {
            let status = runtime
                .block_on(check(worker, request(bytes)))
                .map_err(TestCaseError::fail)?;
            prop_assert!(allowed.contains(&status), "status {status}");
            Ok(())
        })
        .unwrap();
}

#[test]
fn api_bodies_and_queries_never_break_the_worker() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let worker = runtime.block_on(Worker::start(&[("CAPSULE_MAX_REQUEST_BYTES", "4096")]));
    let post = |path: &str, token: &str, bytes: Vec<u8>| {
        worker
            .client
            .post(worker.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(bytes)
    };

    run(
        &runtime,
        &worker,
        body(EXECUTE_SEEDS),
        |b| post("/v1/executions", SESSION_TOKEN, b),
        &[200, 400],
    );
    run(
        &runtime,
        &worker,
        body(INPUT_SEEDS),
        |b| post("/v1/executions/e1/input", SESSION_TOKEN, b),
        &[400, 404],
    );
    run(
        &runtime,
        &worker,
        body(RESOLVE_SEEDS),
        |b| post("/v1/promises/p1/resolve", SESSION_TOKEN, b),
        &[400, 404],
    );
    run(
        &runtime,
        &worker,
        body(REJECT_SEEDS),
        |b| post("/v1/promises/p1/reject", SESSION_TOKEN, b),
        &[400, 404],
    );
    // Bodies over the limit: 413 with the bound named, whatever their content.
    run(
        &runtime,
        &worker,
        prop::collection::vec(any::<u8>(), 4097..6000),
        |b| post("/v1/executions", SESSION_TOKEN, b),
        &[413],
    );
    // Checkpoint query strings, percent-escapes and all.
    run(
        &runtime,
        &worker,
        prop::collection::vec(
            prop_oneof![
                Just(b'&'),
                Just(b'='),
                Just(b'%'),
                Just(b'+'),
                prop::sample::select(b"0123456789abcdefXYZ_-.~".to_vec()),
            ],
            0..200,
        ),
        |b| {
            let query = String::from_utf8(b).unwrap();
            worker
                .client
                .get(worker.url(&format!("/v1/checkpoint?{query}")))
                .bearer_auth(WORKER_TOKEN)
        },
        &[200, 400],
    );

    // Still healthy and still running code.
    let events = runtime.block_on(worker.run("6 * 7"));
    assert_eq!(common::result_repr(&events).as_deref(), Some("42"));
}
