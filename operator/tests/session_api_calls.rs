//! Exact API calls of the session controller, against kube's tower-test mock: the finalizer and the
//! binding in one pass, a hit counted once even when a status write fails, a session whose pool
//! does not exist, and a bound session's live view and idle timeout.

mod fake_api;

use std::sync::{Arc, Mutex};

use capsule_crds::{CapsuleSession, CapsuleSessionStatus, PoolCounters};
use capsule_operator::context::Context;
use capsule_operator::relay::directory::{Directory, PodFacts};
use capsule_operator::session;
use capsule_protocol::heartbeat::SessionBinding;
use fake_api::{list, not_found, Call};
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

const NS: &str = "default";
const SESSIONS: &str = "/apis/capsule.dev/v1alpha1/namespaces/default/capsulesessions";

fn session_object(created: &str, finalizer: bool, status: Value) -> Value {
    let finalizers = if finalizer {
        json!(["capsule.dev/release"])
    } else {
        json!([])
    };
    json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
        "metadata": {"name": "s1", "namespace": NS, "uid": "uid-s1", "generation": 1,
                     "resourceVersion": "7", "creationTimestamp": created,
                     "finalizers": finalizers},
        "spec": {"pool": "p"},
        "status": status,
    })
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn pool_object(idle_timeout_seconds: i64, persistence: bool) -> Value {
    let mut pool = json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
        "metadata": {"name": "p", "namespace": NS, "uid": "uid-p", "generation": 1,
                     "resourceVersion": "3"},
        "spec": {"replicas": 1, "maxWorkers": 2, "template": {"image": "capsule-worker:test"},
                 "sessions": {"idleTimeoutSeconds": idle_timeout_seconds}},
        "status": {"pool": PoolCounters { hits: 5, ..Default::default() }},
    });
    if persistence {
        pool["spec"]["checkpoints"] = json!({"store": "Volume", "volume": {"claimName": "ckpt"}});
        pool["spec"]["sessions"]["persistence"] = json!({"enabled": true});
    }
    pool
}

fn idle_pod(session: Option<&str>, ready: bool) -> Value {
    let mut labels =
        json!({"capsule.dev/pool": "p", "app.kubernetes.io/managed-by": "capsule-operator"});
    if let Some(s) = session {
        labels["capsule.dev/session"] = json!(s);
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p-a", "namespace": NS, "uid": "uid-p-a", "resourceVersion": "11",
                     "creationTimestamp": "2026-11-27T10:00:00Z", "labels": labels},
        "spec": {"containers": [{"name": "worker", "image": "capsule-worker:test"}]},
        "status": {"phase": "Running", "podIP": "127.0.0.9",
                   "containerStatuses": [{"name": "worker", "ready": ready, "restartCount": 0,
                                          "image": "capsule-worker:test", "imageID": "",
                                          "state": {"running": {}}}],
                   "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]},
    })
}

/// What the fake API server holds, changed by the calls it answers.
struct World {
    pool_exists: bool,
    pod_session: Option<String>,
    /// The session as a fresh GET returns it.
    stored_session: Value,
    /// Status writes to refuse (500) before accepting.
    failing_status_writes: usize,
    /// Whether the session's token Secret exists (a second create is refused with 409).
    secret_exists: bool,
    /// The uid of the session the stored token Secret belongs to.
    secret_owner: &'static str,
    /// The pool's `spec.sessions.idleTimeoutSeconds` (0: none).
    idle_timeout_seconds: i64,
    /// The pool keeps checkpoints on a volume and moves sessions that lose their worker.
    persistence: bool,
    /// The worker pod `p-a` is gone.
    pod_gone: bool,
    /// The worker pod's Ready condition (false: its first readiness probe has not passed yet).
    pod_ready: bool,
}

struct Harness {
    ctx: Arc<Context>,
    calls: Arc<Mutex<Vec<Call>>>,
    world: Arc<Mutex<World>>,
}

fn harness(world: World) -> Harness {
    let world = Arc::new(Mutex::new(world));
    let shared = world.clone();
    let responder: fake_api::Responder = Arc::new(move |call: &Call| {
        let mut w = world.lock().unwrap();
        let p = call.path.as_str();
        match (&call.method, p) {
            (
                &Method::PATCH,
                "/apis/capsule.dev/v1alpha1/namespaces/default/capsulesessions/s1",
            ) => {
                let mut s = w.stored_session.clone();
                s["metadata"]["finalizers"] = call.body["metadata"]["finalizers"].clone();
                s["metadata"]["resourceVersion"] = json!("8");
                w.stored_session = s.clone();
                (StatusCode::OK, s)
            }
            (
                &Method::PATCH,
                "/apis/capsule.dev/v1alpha1/namespaces/default/capsulesessions/s1/status",
            ) => {
                if w.failing_status_writes > 0 {
                    w.failing_status_writes -= 1;
                    return (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "message": "etcd timeout", "code": 500}),
                    );
                }
                let mut s = w.stored_session.clone();
                s["status"] = call.body["status"].clone();
                w.stored_session = s.clone();
                (StatusCode::OK, s)
            }
            (&Method::GET, "/apis/capsule.dev/v1alpha1/namespaces/default/capsulesessions/s1") => {
                (StatusCode::OK, w.stored_session.clone())
            }
            (&Method::GET, "/apis/capsule.dev/v1alpha1/namespaces/default/capsulepools/p") => {
                if w.pool_exists {
                    (
                        StatusCode::OK,
                        pool_object(w.idle_timeout_seconds, w.persistence),
                    )
                } else {
                    not_found("capsulepools \"p\"")
                }
            }
            (&Method::GET, "/api/v1/namespaces/default/pods") if w.pod_gone => {
                list("PodList", vec![])
            }
            (&Method::GET, "/api/v1/namespaces/default/pods") => list(
                "PodList",
                vec![idle_pod(w.pod_session.as_deref(), w.pod_ready)],
            ),
            (&Method::GET, "/api/v1/namespaces/default/pods/p-a") if w.pod_gone => {
                not_found("pods \"p-a\"")
            }
            (&Method::GET, "/api/v1/namespaces/default/pods/p-a") => (
                StatusCode::OK,
                idle_pod(w.pod_session.as_deref(), w.pod_ready),
            ),
            (&Method::DELETE, "/api/v1/namespaces/default/pods/p-a") => (
                StatusCode::OK,
                idle_pod(w.pod_session.as_deref(), w.pod_ready),
            ),
            (&Method::PATCH, "/api/v1/namespaces/default/pods/p-a") => {
                let session = call.body["metadata"]["labels"]["capsule.dev/session"]
                    .as_str()
                    .map(String::from);
                w.pod_session = session.clone();
                (StatusCode::OK, idle_pod(session.as_deref(), w.pod_ready))
            }
            (&Method::POST, "/api/v1/namespaces/default/secrets") if w.secret_exists => (
                StatusCode::CONFLICT,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                       "reason": "AlreadyExists", "message": "exists", "code": 409}),
            ),
            (&Method::POST, "/api/v1/namespaces/default/secrets") => {
                w.secret_exists = true;
                let mut secret = call.body.clone();
                secret["data"]["token"] = json!("dG9rZW4=");
                (StatusCode::CREATED, secret)
            }
            (&Method::GET, "/api/v1/namespaces/default/secrets/s1-session-token") => (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "s1-session-token", "namespace": NS, "uid": "secret-uid",
                                    "ownerReferences": [{"apiVersion": "capsule.dev/v1alpha1",
                                        "kind": "CapsuleSession", "name": "s1", "uid": w.secret_owner}]},
                       "data": {"token": "dG9rZW4="}}),
            ),
            (&Method::DELETE, "/api/v1/namespaces/default/secrets/s1-session-token") => {
                w.secret_exists = false;
                (
                    StatusCode::OK,
                    json!({"kind": "Status", "status": "Success"}),
                )
            }
            (&Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events") => {
                (StatusCode::CREATED, call.body.clone())
            }
            _ => fake_api::unexpected(call),
        }
    });
    let (ctx, calls) = fake_api::context(responder);
    Harness {
        ctx,
        calls,
        world: shared,
    }
}

/// The operator's pod cache over the fake API server's pod: up to date, or (`shows_pod` false)
/// one that has not seen the pod yet.
struct PodCache {
    world: Arc<Mutex<World>>,
    shows_pod: bool,
}

impl Directory for PodCache {
    fn pool_key(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    fn pod(&self, _: &str, pod: &str) -> Option<PodFacts> {
        let w = self.world.lock().unwrap();
        let binding = w.pod_session.as_ref().map(|s| SessionBinding {
            session: s.clone(),
            namespace: NS.into(),
            token_sha256: capsule_protocol::auth::token_sha256_hex("token"),
            session_uid: None,
            checkpoint_key: None,
        });
        (self.shows_pod && pod == "p-a").then(|| PodFacts {
            pool: Some("p".into()),
            binding,
            credential: Default::default(),
            ready: w.pod_ready,
        })
    }
    fn pool_pods(&self, _: &str, _: &str) -> Option<Vec<Pod>> {
        let w = self.world.lock().unwrap();
        let pods = self
            .shows_pod
            .then(|| idle_pod(w.pod_session.as_deref(), w.pod_ready));
        Some(
            pods.into_iter()
                .map(|p| serde_json::from_value(p).unwrap())
                .collect(),
        )
    }
}

impl Harness {
    fn with_pod_cache(mut self, shows_pod: bool) -> Self {
        let cache = PodCache {
            world: self.world.clone(),
            shows_pod,
        };
        let ctx = Arc::get_mut(&mut self.ctx).expect("no pass has started yet");
        ctx.directory = Some(Arc::new(cache));
        self
    }
}

impl Harness {
    async fn reconcile(&self, session: &Value) -> Result<(), capsule_operator::Error> {
        let session: CapsuleSession = serde_json::from_value(session.clone()).unwrap();
        session::reconcile(Arc::new(session), self.ctx.clone())
            .await
            .map(|_| ())
    }

    fn take_lines(&self) -> Vec<String> {
        let mut calls = self.calls.lock().unwrap();
        let lines = calls
            .iter()
            .filter(|c| !c.path.contains("/events"))
            .map(Call::line)
            .collect();
        calls.clear();
        lines
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn counters(&self) -> PoolCounters {
        self.ctx
            .ledger
            .update(&(NS.to_string(), "p".to_string()), |s| s.counters.clone())
    }
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[tokio::test]
async fn first_pass_adds_the_finalizer_and_binds_at_once() {
    let fresh = session_object(&now_rfc3339(), false, Value::Null);
    let h = harness(world_with(&fresh));
    h.reconcile(&fresh).await.unwrap();
    let calls = h.calls();
    let lines = h.take_lines();
    // The finalizer, the pool, the pods and the token Secret go out together (in any order), then
    // the compare-and-swap on the pod, then the status.
    assert_eq!(
        sorted(lines[..4].to_vec()),
        sorted(vec![
            format!("PATCH {SESSIONS}/s1"),
            "GET /apis/capsule.dev/v1alpha1/namespaces/default/capsulepools/p".into(),
            "GET /api/v1/namespaces/default/pods".into(),
            "POST /api/v1/namespaces/default/secrets".into(),
        ])
    );
    assert_eq!(
        lines[4..],
        [
            "PATCH /api/v1/namespaces/default/pods/p-a".to_string(),
            format!("PATCH {SESSIONS}/s1/status"),
        ]
    );
    let finalizer = calls
        .iter()
        .find(|c| c.path == format!("{SESSIONS}/s1"))
        .unwrap();
    assert_eq!(
        finalizer.body["metadata"]["finalizers"],
        json!(["capsule.dev/release"])
    );
    assert_eq!(finalizer.body["metadata"]["resourceVersion"], "7");
    let bind = calls
        .iter()
        .find(|c| c.path.ends_with("/pods/p-a"))
        .unwrap();
    assert_eq!(
        bind.body["metadata"]["resourceVersion"], "11",
        "the bind is a compare-and-swap on the pod"
    );
    assert_eq!(bind.body["metadata"]["labels"]["capsule.dev/session"], "s1");
    let status: CapsuleSessionStatus = serde_json::from_value(
        calls
            .iter()
            .find(|c| c.path.ends_with("/status"))
            .unwrap()
            .body["status"]
            .clone(),
    )
    .unwrap();
    let status_write = calls.iter().find(|c| c.path.ends_with("/status")).unwrap();
    assert!(
        status_write.query.contains("fieldManager=capsule-operator"),
        "{}",
        status_write.query
    );
    assert_eq!(status.worker.as_deref(), Some("p-a"));
    assert_eq!(status.endpoint.as_deref(), Some("http://127.0.0.9:8000"));
    assert_eq!(status.warm_hit, Some(true));
    let counters = h.counters();
    assert_eq!(
        counters.hits, 6,
        "seeded from the pool's status (5), then one hit"
    );
    assert_eq!(counters.acquisition.attempts, 1);
    assert_eq!(counters.acquisition.successes, 1);
}

#[tokio::test]
async fn a_failed_status_write_after_a_bind_counts_the_hit_once() {
    let fresh = session_object(&now_rfc3339(), true, Value::Null);
    let h = harness(World {
        failing_status_writes: 1,
        ..world_with(&fresh)
    });
    // The pod is bound, then the status write fails: nothing is counted yet.
    h.reconcile(&fresh).await.unwrap_err();
    assert_eq!(h.counters().hits, 5);
    h.take_lines();

    // The retry finds the pod already labelled with the session, reads the session fresh, and
    // finishes that binding: no second pod is taken.
    h.reconcile(&fresh).await.unwrap();
    let lines = h.take_lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("PATCH /api/v1/namespaces/default/pods/")),
        "{lines:?}"
    );
    assert!(lines.contains(&format!("GET {SESSIONS}/s1")), "{lines:?}");
    assert!(
        lines.contains(&format!("PATCH {SESSIONS}/s1/status")),
        "{lines:?}"
    );
    assert_eq!(h.counters().hits, 6);
    assert_eq!(h.counters().acquisition.successes, 1);

    // A pass that still sees the stale cached (Pending) session neither writes nor counts again.
    h.reconcile(&fresh).await.unwrap();
    let lines = h.take_lines();
    assert!(!lines.iter().any(|l| l.ends_with("/status")), "{lines:?}");
    assert_eq!(h.counters().hits, 6);
    assert_eq!(h.counters().acquisition.successes, 1);
}

#[tokio::test]
async fn a_token_secret_left_by_an_earlier_session_of_the_same_name_is_deleted_never_reused() {
    let fresh = session_object(&now_rfc3339(), true, Value::Null);
    let h = harness(World {
        secret_exists: true,
        secret_owner: "uid-of-the-deleted-s1",
        ..world_with(&fresh)
    });
    // The first pass creates its Secret, finds the old one, deletes it and tries again later.
    h.reconcile(&fresh).await.unwrap_err();
    let lines = h.take_lines();
    assert!(
        lines.contains(&"DELETE /api/v1/namespaces/default/secrets/s1-session-token".to_string()),
        "{lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("PATCH /api/v1/namespaces/default/pods/")),
        "no worker bound with the old token: {lines:?}"
    );
    // The retry creates a Secret of its own.
    h.reconcile(&fresh).await.unwrap();
    let lines = h.take_lines();
    assert!(
        lines.contains(&"POST /api/v1/namespaces/default/secrets".to_string()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_session_whose_pool_never_appears_fails_after_the_default_acquire_timeout() {
    // Created just now: it waits, with a condition naming the missing pool.
    let young = session_object(&now_rfc3339(), true, Value::Null);
    let h = harness(World {
        pool_exists: false,
        ..world_with(&young)
    });
    h.reconcile(&young).await.unwrap();
    let status = last_status(&h);
    assert_eq!(status["phase"], "Pending");
    assert_eq!(status["conditions"][0]["reason"], "PoolNotFound");
    assert!(status["conditions"][0]["message"]
        .as_str()
        .unwrap()
        .contains("CapsulePool p"));

    // Created an hour ago: past the default acquireTimeoutSeconds (300), it fails.
    let old_time =
        k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(3600);
    let old = session_object(&old_time.to_string(), true, Value::Null);
    let h = harness(World {
        pool_exists: false,
        ..world_with(&old)
    });
    h.reconcile(&old).await.unwrap();
    let status = last_status(&h);
    assert_eq!(status["phase"], "Failed");
    assert_eq!(status["reason"], "PoolNotFound");
    assert!(status["message"].as_str().unwrap().contains("300s"));
}

fn last_status(h: &Harness) -> Value {
    h.calls()
        .iter()
        .rev()
        .find(|c| c.path.ends_with("/status"))
        .expect("a status write")
        .body["status"]
        .clone()
}

/// A heartbeat of worker `p-a` bound to `s1`, idle.
fn idle_heartbeat() -> capsule_protocol::heartbeat::Heartbeat {
    fake_api::heartbeat(
        "p-a",
        json!({"session": "s1", "rssBytes": 64_000_000, "namespaceSize": 2,
            "executions": {"ok": 3, "error": 0, "cancelled": 0, "timedOut": 0}}),
    )
}

#[tokio::test]
async fn a_bound_session_idle_past_the_pools_idle_timeout_is_released_and_its_worker_replaced() {
    let (h, bound) = idle_bound_session();
    h.ctx
        .index
        .record(&idle_heartbeat(), true, std::time::Instant::now());

    // Not idle long enough yet: nothing is released, and the live view is written.
    h.reconcile(&bound).await.unwrap();
    let calls = h.calls();
    let lines = h.take_lines();
    assert!(!lines.iter().any(|l| l.starts_with("DELETE")), "{lines:?}");
    let info = &calls
        .iter()
        .find(|c| c.path.ends_with("/status"))
        .expect("the live view written")
        .body["status"]["info"];
    assert_eq!(
        (
            info["state"].as_str(),
            info["executionsOk"].as_i64(),
            info["memoryMib"].as_i64()
        ),
        (Some("idle"), Some(3), Some(61)),
        "{info}"
    );

    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    h.reconcile(&bound).await.unwrap();
    let calls = h.calls();
    let lines = h.take_lines();
    let status = calls
        .iter()
        .find(|c| c.path.ends_with("/status"))
        .expect("a status write");
    assert_eq!(status.body["status"]["phase"], "Released", "{lines:?}");
    assert_eq!(status.body["status"]["reason"], "IdleTimeout");
    let message = status.body["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("spec.sessions.idleTimeoutSeconds") && message.contains("1s"),
        "{message}"
    );
    let status_at = lines
        .iter()
        .position(|l| l.ends_with("/s1/status"))
        .unwrap();
    let delete_at = lines
        .iter()
        .position(|l| l == "DELETE /api/v1/namespaces/default/pods/p-a")
        .expect("the worker, which could not be reset here, is replaced");
    assert!(
        status_at < delete_at,
        "status first, so a crash in between finishes the release: {lines:?}"
    );
}

#[tokio::test]
async fn a_session_of_a_persistent_pool_whose_worker_is_gone_moves_instead_of_failing() {
    let bound = session_object(
        &now_rfc3339(),
        true,
        json!({"phase": "Bound", "worker": "p-a", "endpoint": "http://127.0.0.9:8000",
               "gatewayUrl": "https://gw/v1/sessions/default/s1"}),
    );
    let world = |persistence| World {
        pool_exists: true,
        pod_session: None,
        stored_session: bound.clone(),
        failing_status_writes: 0,
        secret_exists: true,
        secret_owner: "uid-s1",
        idle_timeout_seconds: 0,
        persistence,
        pod_gone: true,
        pod_ready: true,
    };

    let h = harness(world(true));
    h.reconcile(&bound).await.unwrap();
    let calls = h.calls();
    let lines = h.take_lines();
    let status = &calls
        .iter()
        .find(|c| c.path.ends_with("/status"))
        .expect("a status write")
        .body["status"];
    assert_eq!(status["phase"], "Pending", "{lines:?}");
    assert_eq!(status["migrations"], 1);
    assert_eq!(status["lastMigration"]["reason"], "WorkerGone");
    assert_eq!(status["lastMigration"]["fromWorker"], "p-a");
    assert!(status["lastMigration"]["restoredAt"].is_null());
    assert!(status["worker"].is_null() && status["endpoint"].is_null());
    let bound_condition = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Bound")
        .unwrap();
    assert_eq!(bound_condition["reason"], "Migrating");
    assert!(
        !lines.iter().any(|l| l.starts_with("DELETE")),
        "the token stays, the session stays: {lines:?}"
    );

    // The same loss without persistence fails the session, as before.
    let h = harness(world(false));
    h.reconcile(&bound).await.unwrap();
    let calls = h.calls();
    let status = &calls
        .iter()
        .find(|c| c.path.ends_with("/status"))
        .expect("a status write")
        .body["status"];
    assert_eq!(
        (status["phase"].as_str(), status["reason"].as_str()),
        (Some("Failed"), Some("WorkerLost"))
    );
    assert!(status["migrations"].is_null());
}

#[tokio::test]
async fn a_worker_that_announced_itself_idle_is_taken_before_its_pod_turns_ready() {
    let fresh = session_object(&now_rfc3339(), true, Value::Null);
    let h = harness(World {
        pod_ready: false,
        ..world_with(&fresh)
    });
    let mut warming = fake_api::heartbeat("p-a", json!({}));
    warming.state = capsule_protocol::heartbeat::WorkerState::Warming;
    h.ctx
        .index
        .record(&warming, false, std::time::Instant::now());
    h.reconcile(&fresh).await.unwrap();
    let lines = h.take_lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("PATCH /api/v1/namespaces/default/pods/p-a")),
        "a worker still warming is not taken: {lines:?}"
    );

    let mut announced = fake_api::heartbeat("p-a", json!({"seq": 2}));
    announced.state = capsule_protocol::heartbeat::WorkerState::Idle;
    h.ctx
        .index
        .record(&announced, false, std::time::Instant::now());
    h.reconcile(&fresh).await.unwrap();
    let status = last_status(&h);
    let lines = h.take_lines();
    assert!(
        lines.contains(&"PATCH /api/v1/namespaces/default/pods/p-a".to_string()),
        "{lines:?}"
    );
    assert_eq!(
        (status["phase"].as_str(), status["worker"].as_str()),
        (Some("Bound"), Some("p-a"))
    );
}

/// The pool and one idle, Ready worker pod; `session` as a fresh GET returns it.
fn world_with(session: &Value) -> World {
    World {
        pool_exists: true,
        pod_session: None,
        stored_session: session.clone(),
        failing_status_writes: 0,
        secret_exists: false,
        secret_owner: "uid-s1",
        idle_timeout_seconds: 0,
        persistence: false,
        pod_gone: false,
        pod_ready: true,
    }
}

#[tokio::test]
async fn a_warm_hit_takes_its_worker_from_the_pod_cache_without_a_list() {
    let fresh = session_object(&now_rfc3339(), true, Value::Null);
    let h = harness(world_with(&fresh)).with_pod_cache(true);
    h.reconcile(&fresh).await.unwrap();
    let lines = h.take_lines();
    assert!(
        !lines.contains(&"GET /api/v1/namespaces/default/pods".to_string()),
        "{lines:?}"
    );
    assert!(
        lines.contains(&"PATCH /api/v1/namespaces/default/pods/p-a".to_string()),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_miss_on_the_pod_cache_is_confirmed_on_a_fresh_list_which_finds_the_worker() {
    let fresh = session_object(&now_rfc3339(), true, Value::Null);
    let h = harness(world_with(&fresh)).with_pod_cache(false);
    // The binding then waits for the cache to show the label, which this one never does.
    h.reconcile(&fresh).await.unwrap();
    let lines = h.take_lines();
    let list = position_of(
        &lines,
        "GET /api/v1/namespaces/default/pods",
        "a fresh list after the cache showed no worker",
    );
    let patch = position_of(
        &lines,
        "PATCH /api/v1/namespaces/default/pods/p-a",
        "the worker the list found is taken",
    );
    assert!(list < patch, "{lines:?}");
    assert_eq!(h.counters().misses, 0, "no miss counted: {lines:?}");
}

/// A session bound to worker p-a of a pool whose idle timeout is one second.
fn idle_bound_session() -> (Harness, Value) {
    let bound = session_object(
        &now_rfc3339(),
        true,
        json!({"phase": "Bound", "worker": "p-a", "endpoint": "http://127.0.0.9:8000"}),
    );
    let h = harness(World {
        pod_session: Some("s1".into()),
        secret_exists: true,
        idle_timeout_seconds: 1,
        ..world_with(&bound)
    });
    (h, bound)
}

/// Where `line` is among the calls, failing with `what` when it is missing.
fn position_of(lines: &[String], line: &str, what: &str) -> usize {
    let found = lines.iter().position(|l| l == line);
    found.unwrap_or_else(|| panic!("{what}: {lines:?}"))
}

/// A bound session past its idle timeout, in a harness whose pod cache shows its worker.
async fn idle_bound_session_with_pod_cache() -> (Harness, Value) {
    let (h, bound) = idle_bound_session();
    let h = h.with_pod_cache(true);
    let long_ago = std::time::Instant::now() - std::time::Duration::from_secs(5);
    h.ctx.index.record(&idle_heartbeat(), true, long_ago);
    (h, bound)
}

#[tokio::test]
async fn a_release_finds_its_worker_in_the_pod_cache_when_the_cache_shows_every_write() {
    let (h, bound) = idle_bound_session_with_pod_cache().await;
    h.reconcile(&bound).await.unwrap();
    let lines = h.take_lines();
    assert!(
        lines.contains(&"DELETE /api/v1/namespaces/default/pods/p-a".to_string()),
        "released: {lines:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l == "GET /api/v1/namespaces/default/pods"),
        "no list: {lines:?}"
    );
}

#[tokio::test]
async fn a_release_lists_fresh_while_the_cache_lacks_a_write_of_this_process() {
    let (h, bound) = idle_bound_session_with_pod_cache().await;
    let newer: Pod = serde_json::from_value(json!({"metadata": {
        "name": "p-b", "namespace": NS, "resourceVersion": "99"}}))
    .unwrap();
    let key = (NS.to_string(), "p".to_string());
    h.ctx.ledger.record_pod_write(&key, &Ok(newer));
    h.reconcile(&bound).await.unwrap();
    let lines = h.take_lines();
    let list = position_of(
        &lines,
        "GET /api/v1/namespaces/default/pods",
        "a fresh list: the cache may miss a binding",
    );
    let delete = position_of(
        &lines,
        "DELETE /api/v1/namespaces/default/pods/p-a",
        "the listed worker is released",
    );
    assert!(list < delete, "{lines:?}");
}
