//! The proxy over real HTTP against a stand-in worker on a loopback port: auth, every error body,
//! headers and query passed through, streaming without buffering, and a client disconnect dropping
//! the upstream request. The devcluster end-to-end test is tests/tests/gateway.rs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use capsule_crds::session::CapsuleSession;
use capsule_gateway::index::Index;
use capsule_gateway::AppState;
use capsule_protocol::{auth, names};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event;
use serde_json::{json, Value};

const TOKEN: &str = "session-token";

/// Set when the worker's streaming response body is dropped before its end.
struct Dropped(Arc<AtomicBool>, bool);
impl Dropped {
    /// Marks the stream complete once its last line (index 2) is produced.
    fn saw(&mut self, line: u32) -> u32 {
        self.1 |= line == 2;
        line
    }
}
impl Drop for Dropped {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

async fn worker(dropped: Arc<AtomicBool>) -> String {
    let stream = move || {
        let dropped = dropped.clone();
        async move {
            let mut guard = Dropped(dropped, false);
            let body = async_stream(move |i| guard.saw(i));
            (
                [
                    ("content-type", "application/x-ndjson"),
                    ("x-capsule-execution-id", "e-1"),
                ],
                body,
            )
        }
    };
    let echo = |headers: HeaderMap, uri: axum::http::Uri| async move {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        axum::Json(
            json!({"authorization": h("authorization"), "traceparent": h("traceparent"),
            "query": uri.query()}),
        )
    };
    let app = Router::new()
        .route("/v1/executions", post(stream))
        .route("/v1/stats", get(echo))
        .route(
            "/v1/reset",
            post(|body: String| async move { (axum::http::StatusCode::ACCEPTED, body) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Three NDJSON lines, one second apart; `step` sees each index as it is sent.
fn async_stream(mut step: impl FnMut(u32) -> u32 + Send + 'static) -> Body {
    let lines = futures::stream::iter(0..3u32).then(move |i| {
        let i = step(i);
        async move {
            if i > 0 {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Ok::<_, std::io::Error>(format!("{{\"line\":{i}}}\n"))
        }
    });
    Body::from_stream(lines)
}

fn session(name: &str, phase: &str, endpoint: &str) -> CapsuleSession {
    serde_json::from_value(json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
        "metadata": {"name": name, "namespace": "ns"}, "spec": {"pool": "p"},
        "status": {"phase": phase, "worker": "w1", "endpoint": endpoint,
            "reason": if phase == "Failed" { Some("WorkerLost") } else { None },
            "message": if phase == "Failed" { Some("worker pod w1 is gone") } else { None }},
    }))
    .unwrap()
}

fn pod() -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "w1", "namespace": "ns",
        "labels": {names::SESSION: "s"},
        "annotations": {names::SESSION_TOKEN_SHA256: auth::token_sha256_hex(TOKEN)}}}))
    .unwrap()
}

/// A gateway serving sessions `s` (bound to `endpoint`) and `failed`, with 64-byte bodies.
async fn gateway(endpoint: &str) -> (String, Arc<AppState>) {
    let index = Arc::new(Index::default());
    index.apply_session(Event::Apply(session("s", "Bound", endpoint)));
    index.apply_session(Event::Apply(session("failed", "Failed", endpoint)));
    index.apply_pod(Event::Apply(pod()));
    let state = Arc::new(AppState::new(index, 64).unwrap());
    let app = capsule_gateway::router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(capsule_gateway::serve(
        listener,
        app,
        std::future::pending(),
    ));
    (url, state)
}

async fn error(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn the_proxy_authenticates_forwards_and_answers_every_error_as_json() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (gw, _) = gateway(&worker(dropped).await).await;
    let http = reqwest::Client::new();
    let base = format!("{gw}/v1/sessions/ns/s");

    let ok = http
        .get(format!("{base}/stats?k=v&x=1"))
        .bearer_auth(TOKEN)
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let echoed: Value = ok.json().await.unwrap();
    assert_eq!(echoed["authorization"], format!("Bearer {TOKEN}"));
    assert_eq!(
        echoed["traceparent"],
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    );
    assert_eq!(echoed["query"], "k=v&x=1");

    // The worker's status code and body come back as they are.
    let reset = http
        .post(format!("{base}/reset"))
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 202);
    assert_eq!(reset.text().await.unwrap(), "{}");

    let wrong = http
        .get(format!("{base}/stats"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    assert_eq!(error(wrong).await.1["code"], "unauthorized");
    let missing = http.get(format!("{base}/stats")).send().await.unwrap();
    assert_eq!(error(missing).await.0, 401);

    let (status, body) = error(
        http.get(format!("{gw}/v1/sessions/ns/nobody/stats"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("sessionNotFound"))
    );
    let (status, body) = error(
        http.get(format!("{gw}/v1/sessions/ns/failed/stats"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("sessionNotBound"))
    );
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("Failed") && message.contains("WorkerLost"),
        "{message}"
    );
    let (status, body) = error(
        http.get(format!("{base}/namespace"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (404, Some("notFound")));
    let (status, _) = error(http.get(format!("{gw}/elsewhere")).send().await.unwrap()).await;
    assert_eq!(status, 404);

    let big = http
        .post(format!("{base}/reset"))
        .bearer_auth(TOKEN)
        .body(vec![b'x'; 65])
        .send()
        .await
        .unwrap();
    let (status, body) = error(big).await;
    assert_eq!((status, body["code"].as_str()), (413, Some("bodyTooLarge")));
}

#[tokio::test]
async fn an_unreachable_worker_is_a_502() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (gw, state) = gateway(&format!("http://{closed}")).await;
    let http = reqwest::Client::new();
    let response = http
        .get(format!("{gw}/v1/sessions/ns/s/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let (status, body) = error(response).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("workerUnreachable"))
    );
    let metrics = http
        .get(format!("{gw}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("capsule_gateway_upstream_errors_total{route=\"stats\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capsule_gateway_requests_total{route=\"stats\",status_class=\"5xx\"} 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("\"ns\"") && !metrics.contains("\"s\""),
        "no session names: {metrics}"
    );
    assert_eq!(state.metrics.open_streams.get(), 0);
}

#[tokio::test]
async fn a_stream_arrives_line_by_line_and_a_disconnect_drops_the_upstream() {
    let dropped = Arc::new(AtomicBool::new(false));
    let (gw, state) = gateway(&worker(dropped.clone()).await).await;
    let http = reqwest::Client::new();
    let url = format!("{gw}/v1/sessions/ns/s/executions");

    let started = Instant::now();
    let response = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    assert_eq!(response.headers()["x-capsule-execution-id"], "e-1");
    let mut chunks = response.bytes_stream();
    let first = chunks.next().await.unwrap().unwrap();
    assert_eq!(&first[..], b"{\"line\":0}\n");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "first line after {:?}",
        started.elapsed()
    );
    assert_eq!(state.metrics.open_streams.get(), 1);
    let rest: Vec<_> = chunks.collect().await;
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(rest.len(), 2);
    assert!(
        !dropped.load(Ordering::SeqCst),
        "a complete stream is not a disconnect"
    );

    // The client reads the first line and goes away: the worker's body is dropped.
    let response = http
        .post(&url)
        .bearer_auth(TOKEN)
        .body("{}")
        .send()
        .await
        .unwrap();
    let mut chunks = response.bytes_stream();
    chunks.next().await.unwrap().unwrap();
    drop(chunks);
    let deadline = Instant::now() + Duration::from_secs(3);
    while !dropped.load(Ordering::SeqCst) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "the upstream request outlived its client"
    );
    assert_eq!(state.metrics.open_streams.get(), 0);
}
