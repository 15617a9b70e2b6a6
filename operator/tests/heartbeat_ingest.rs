//! Heartbeat ingest over real HTTP: bounds, rate limits and the follower refusal, each counted.

use std::sync::Arc;

use capsule_operator::leader::Leadership;
use capsule_operator::relay::directory::{CredentialKind, Directory, PodFacts};
use capsule_operator::relay::index::WorkerIndex;
use capsule_operator::relay::ingest::{self, IngestMetrics, IngestState, MAX_HEARTBEAT_BYTES};
use capsule_operator::relay::limits::{IngestLimits, Rate, DEFAULT_OVERALL};
use capsule_operator::relay::wakeups::PoolWakeups;
use capsule_protocol::auth::worker_credential;
use prometheus_client::registry::Registry;
use serde_json::json;

const POOL_KEY: &str = "pool-key";

/// The credential of pod `pod` of pool `demo`.
fn credential(pod: &str) -> String {
    worker_credential(POOL_KEY, "default", pod)
}

/// Pods `w0`..`w9` of pool `demo` in namespace `default`; `w9` was made before per-worker
/// credentials and holds the pool key; `w8` is not Ready yet.
struct Workers;

impl Directory for Workers {
    fn pool_key(&self, namespace: &str, pool: &str) -> Option<String> {
        (namespace == "default" && pool == "demo").then(|| POOL_KEY.to_string())
    }
    fn pod(&self, _namespace: &str, pod: &str) -> Option<PodFacts> {
        let i: usize = pod.strip_prefix('w')?.parse().ok()?;
        (i < 10).then(|| PodFacts {
            pool: Some("demo".into()),
            binding: None,
            credential: if i == 9 {
                CredentialKind::LegacyPoolKey
            } else {
                CredentialKind::PerWorker
            },
            ready: i != 8,
        })
    }
}

fn heartbeat(pod: &str, seq: u64) -> serde_json::Value {
    json!({"pod": pod, "namespace": "default", "pool": "demo", "seq": seq,
        "sentAt": "2026-11-28T00:00:00Z", "startedAt": "2026-11-28T00:00:00Z", "state": "idle",
        "session": null, "rssBytes": 1, "cpuPercent": 0.0, "namespaceSize": 0, "interpreterRestarts": 0,
        "executions": {"ok": 0, "error": 0, "cancelled": 0, "timedOut": 0},
        "executor": {"outputsEnqueued": 0, "outputsSent": 0, "outputsDropped": 0, "maxQueueDepth": 0, "drainTimeouts": 0},
        "bridge": {"pending": 0, "highWater": 0, "created": 0, "resolved": 0, "rejected": 0, "timedOut": 0, "cancelled": 0},
        "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0}})
}

struct Server {
    url: String,
    registry: Arc<Registry>,
    wakeups: Arc<PoolWakeups>,
}

impl Server {
    async fn start(limits: IngestLimits, leadership: Leadership) -> Server {
        let mut registry = Registry::default();
        let state = IngestState {
            index: Arc::new(WorkerIndex::default()),
            directory: Arc::new(Workers),
            metrics: IngestMetrics::register(&mut registry),
            limits: Arc::new(limits),
            leadership,
            wakeups: Arc::default(),
        };
        let wakeups = state.wakeups.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/v1/heartbeats", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, ingest::router(state)).await });
        Server {
            url,
            registry: Arc::new(registry),
            wakeups,
        }
    }

    fn rejected(&self, reason: &str) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        let prefix = format!("capsule_heartbeats_rejected_total{{reason=\"{reason}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }

    fn received(&self) -> u64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("capsule_heartbeats_received_total "))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0)
    }
}

/// Posts `body` with the credential of the pod it names (`w0` when it names none).
async fn send(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::Response {
    let named = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["pod"].as_str().map(str::to_owned));
    send_as(
        client,
        url,
        &credential(named.as_deref().unwrap_or("w0")),
        body,
    )
    .await
}

async fn send_as(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> reqwest::Response {
    client
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413_and_counted() {
    let server = Server::start(IngestLimits::default(), Leadership::always()).await;
    let client = reqwest::Client::new();
    let mut body = heartbeat("w0", 1);
    body["padding"] = json!("x".repeat(MAX_HEARTBEAT_BYTES));
    let response = send(&client, &server.url, body.to_string().into_bytes()).await;
    assert_eq!(response.status(), 413);
    let text = response.text().await.unwrap();
    assert!(text.contains(&MAX_HEARTBEAT_BYTES.to_string()), "{text}");
    assert_eq!(server.rejected("too_large"), 1);
    let ok = send(
        &client,
        &server.url,
        heartbeat("w0", 2).to_string().into_bytes(),
    )
    .await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn a_flooding_pod_gets_429_while_the_others_are_served() {
    let server = Server::start(
        IngestLimits::new(DEFAULT_OVERALL, Rate::new(1, 5).unwrap()),
        Leadership::always(),
    )
    .await;
    let client = reqwest::Client::new();
    let body = heartbeat("w1", 1).to_string().into_bytes();
    let mut limited = 0;
    for _ in 0..200 {
        let response = send(&client, &server.url, body.clone()).await;
        if response.status() == 429 {
            assert_eq!(
                response
                    .headers()
                    .get("retry-after")
                    .unwrap()
                    .to_str()
                    .unwrap(),
                "1"
            );
            limited += 1;
        } else {
            assert_eq!(response.status(), 200);
        }
    }
    // The burst is 5 and the rate 1/s: however slow this machine, most of the flood is refused.
    assert!(limited >= 150, "only {limited} of 200 were limited");
    assert_eq!(server.rejected("rate_limited_pod"), limited);
    for pod in ["w2", "w3"] {
        let response = send(
            &client,
            &server.url,
            heartbeat(pod, 1).to_string().into_bytes(),
        )
        .await;
        assert_eq!(response.status(), 200, "{pod} was limited by w1's flood");
    }
}

#[tokio::test]
async fn the_overall_limit_is_checked_before_the_body_is_read() {
    let server = Server::start(
        IngestLimits::new(Rate::new(1, 3).unwrap(), Rate::new(1000, 1000).unwrap()),
        Leadership::always(),
    )
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..6 {
        // Garbage bodies: refused by the limiter before they are parsed once the budget is spent.
        let response = send(&client, &server.url, format!("not json {i}").into_bytes()).await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(&statuses[..3], &[400, 400, 400], "{statuses:?}");
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(server.rejected("rate_limited_overall"), 3);
    assert_eq!(server.rejected("invalid"), 3);
}

#[tokio::test]
async fn a_follower_refuses_heartbeats_with_503() {
    let server = Server::start(IngestLimits::default(), Leadership::fixed(false)).await;
    let client = reqwest::Client::new();
    let response = send(
        &client,
        &server.url,
        heartbeat("w0", 1).to_string().into_bytes(),
    )
    .await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().get("retry-after").is_some());
    assert_eq!(server.rejected("not_leader"), 1);
    assert_eq!(server.received(), 0);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_and_an_empty_token_is_no_token() {
    let server = Server::start(IngestLimits::default(), Leadership::always()).await;
    let client = reqwest::Client::new();
    let body = serde_json::to_vec(&heartbeat("w1", 1)).unwrap();
    let post = |authorization: String| {
        client
            .post(&server.url)
            .header("authorization", authorization)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
    };
    let lower = post(format!("bearer {}", credential("w1"))).await.unwrap();
    assert_eq!(
        lower.status(),
        200,
        "RFC 7235: the scheme is case-insensitive"
    );
    assert_eq!(server.received(), 1);

    let empty = post("Bearer ".into()).await.unwrap();
    assert_eq!(empty.status(), 401);
    let wrong = post("Bearer not-the-token".into()).await.unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(
        (
            server.rejected("unauthenticated"),
            server.rejected("bad_token")
        ),
        (1, 1),
        "an empty token is a missing one, a wrong one is a bad one"
    );
}

#[tokio::test]
async fn a_credential_of_one_worker_naming_another_is_refused_and_counted() {
    let server = Server::start(IngestLimits::default(), Leadership::always()).await;
    let client = reqwest::Client::new();
    let naming_w2 = || heartbeat("w2", 1).to_string().into_bytes();

    let stolen = send_as(&client, &server.url, &credential("w1"), naming_w2()).await;
    assert_eq!(stolen.status(), 401);
    let text = stolen.text().await.unwrap();
    assert!(text.contains("not the one of the pod"), "{text}");
    let pool_key = send_as(&client, &server.url, POOL_KEY, naming_w2()).await;
    assert_eq!(
        pool_key.status(),
        401,
        "the pool key is no worker's credential"
    );
    let unknown = send_as(
        &client,
        &server.url,
        &credential("w1"),
        heartbeat("w77", 1).to_string().into_bytes(),
    )
    .await;
    assert_eq!(
        unknown.status(),
        401,
        "a pod that does not exist is refused as a bad credential, not revealed as unknown"
    );
    assert_eq!(server.rejected("bad_token"), 3);
    assert_eq!(server.received(), 0);

    let own = send_as(&client, &server.url, &credential("w2"), naming_w2()).await;
    assert_eq!(own.status(), 200);
    assert_eq!(server.received(), 1);
}

#[tokio::test]
async fn a_worker_made_before_per_worker_credentials_reports_with_the_pool_key_for_itself_only() {
    let server = Server::start(IngestLimits::default(), Leadership::always()).await;
    let client = reqwest::Client::new();
    let body = |pod: &str| heartbeat(pod, 1).to_string().into_bytes();

    let legacy = send_as(&client, &server.url, POOL_KEY, body("w9")).await;
    assert_eq!(legacy.status(), 200, "w9 still holds the pool key");
    let derived = send_as(&client, &server.url, &credential("w9"), body("w9")).await;
    assert_eq!(derived.status(), 401, "w9 was never given a derived one");
    let other = send_as(&client, &server.url, POOL_KEY, body("w3")).await;
    assert_eq!(other.status(), 401, "w3 holds its own credential");
    assert_eq!((server.received(), server.rejected("bad_token")), (1, 2));
}

#[tokio::test]
async fn an_idle_worker_whose_pod_is_not_ready_yet_wakes_its_pools_sessions() {
    let server = Server::start(IngestLimits::default(), Leadership::always()).await;
    let client = reqwest::Client::new();
    let warming = json!({"state": "warming"});
    let mut first = heartbeat("w8", 1);
    first["state"] = warming["state"].clone();
    for body in [heartbeat("w1", 1), first] {
        let sent = send(&client, &server.url, body.to_string().into_bytes()).await;
        assert_eq!(sent.status(), 200);
    }
    let nothing =
        tokio::time::timeout(std::time::Duration::from_millis(100), server.wakeups.next());
    assert!(
        nothing.await.is_err(),
        "a Ready pod or a warming worker wakes nobody"
    );

    let announced = send(
        &client,
        &server.url,
        heartbeat("w8", 2).to_string().into_bytes(),
    )
    .await;
    assert_eq!(announced.status(), 200);
    assert_eq!(
        server.wakeups.next().await,
        vec![("default".to_string(), "demo".to_string())]
    );
}
