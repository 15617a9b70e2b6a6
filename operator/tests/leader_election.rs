//! Leader election against an in-memory Lease API behind kube's `tower-test` mock, on tokio's
//! paused clock: two candidates never lead at once, a dead leader is replaced after the lease
//! duration, and a leader whose API calls hang steps down within its renew deadline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_operator::leader::{self, Ended, Leadership, LeaseSettings};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

/// The one Lease object, shared by every candidate's fake API server.
#[derive(Default)]
struct LeaseStore {
    lease: Mutex<Option<Value>>,
    version: Mutex<u64>,
}

fn status(code: u16, reason: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}),
    )
}

impl LeaseStore {
    fn answer(&self, method: &Method, body: Value) -> (StatusCode, Value) {
        let mut lease = self.lease.lock().unwrap();
        let mut version = self.version.lock().unwrap();
        match *method {
            Method::GET => match &*lease {
                Some(l) => (StatusCode::OK, l.clone()),
                None => status(404, "NotFound"),
            },
            Method::POST => {
                if lease.is_some() {
                    return status(409, "AlreadyExists");
                }
                *version += 1;
                let mut created = body;
                created["metadata"]["resourceVersion"] = json!(version.to_string());
                *lease = Some(created.clone());
                (StatusCode::CREATED, created)
            }
            Method::PUT => {
                let current = lease
                    .as_ref()
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current != Some(body["metadata"]["resourceVersion"].clone()) {
                    return status(409, "Conflict");
                }
                *version += 1;
                let mut replaced = body;
                replaced["metadata"]["resourceVersion"] = json!(version.to_string());
                *lease = Some(replaced.clone());
                (StatusCode::OK, replaced)
            }
            _ => status(405, "MethodNotAllowed"),
        }
    }

    fn holder(&self) -> Option<String> {
        self.lease.lock().unwrap().as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    }
}

/// A client whose API server answers from `store`, or never answers while `hang` is set.
fn client(store: Arc<LeaseStore>, hang: Arc<AtomicBool>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut unanswered = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            if hang.load(Ordering::SeqCst) {
                unanswered.push(send);
                continue;
            }
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (code, reply) = store.answer(&parts.method, body);
            send.send_response(
                Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap(),
            );
        }
    });
    Client::new(service, "default")
}

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        lease_name: "capsule-operator".into(),
        namespace: "default".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(10),
        renew_deadline: Duration::from_secs(7),
        retry_period: Duration::from_secs(2),
    }
}

async fn wait_leading(leadership: &mut Leadership, within: Duration) -> bool {
    tokio::time::timeout(within, leadership.acquired())
        .await
        .is_ok()
}

#[tokio::test(start_paused = true)]
async fn one_leader_at_a_time_and_a_dead_one_is_replaced_after_the_lease_duration() {
    let store = Arc::new(LeaseStore::default());
    let never = Arc::new(AtomicBool::new(false));
    let (mut a, task_a) = leader::start(
        client(store.clone(), never.clone()),
        settings("a"),
        CancellationToken::new(),
    );
    assert!(wait_leading(&mut a, Duration::from_secs(5)).await);
    let (mut b, _task_b) = leader::start(
        client(store.clone(), never.clone()),
        settings("b"),
        CancellationToken::new(),
    );
    // However long both run, b never leads while a renews.
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(a.is_leading());
        assert!(!b.is_leading());
        assert_eq!(store.holder().as_deref(), Some("a"));
    }
    // a dies without releasing: b takes over once the record has not changed for 10 s.
    task_a.abort();
    let died = tokio::time::Instant::now();
    assert!(wait_leading(&mut b, Duration::from_secs(30)).await);
    let takeover = died.elapsed();
    assert!(
        takeover >= Duration::from_secs(8) && takeover <= Duration::from_secs(13),
        "takeover after {takeover:?}"
    );
    assert_eq!(store.holder().as_deref(), Some("b"));
    let transitions =
        store.lease.lock().unwrap().as_ref().unwrap()["spec"]["leaseTransitions"].clone();
    assert_eq!(transitions, json!(1));
}

#[tokio::test(start_paused = true)]
async fn a_leader_whose_api_hangs_steps_down_before_anyone_may_take_over() {
    let store = Arc::new(LeaseStore::default());
    let hang_a = Arc::new(AtomicBool::new(false));
    let (mut a, task_a) = leader::start(
        client(store.clone(), hang_a.clone()),
        settings("a"),
        CancellationToken::new(),
    );
    assert!(wait_leading(&mut a, Duration::from_secs(5)).await);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (mut b, _task_b) = leader::start(
        client(store.clone(), Arc::new(AtomicBool::new(false))),
        settings("b"),
        CancellationToken::new(),
    );
    hang_a.store(true, Ordering::SeqCst);
    let hung = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(8), a.lost())
        .await
        .expect("a steps down within its renew deadline");
    let stepped_down = hung.elapsed();
    assert_eq!(task_a.await.unwrap(), Ended::Lost);
    // b could not have led before a stepped down: a's last renewal is less than 10 s old.
    assert!(!b.is_leading(), "b leads {stepped_down:?} after a hung");
    assert!(wait_leading(&mut b, Duration::from_secs(20)).await);
}

#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_hands_the_lease_over_at_once() {
    let store = Arc::new(LeaseStore::default());
    let never = Arc::new(AtomicBool::new(false));
    let stop_a = CancellationToken::new();
    let (mut a, task_a) = leader::start(
        client(store.clone(), never.clone()),
        settings("a"),
        stop_a.clone(),
    );
    assert!(wait_leading(&mut a, Duration::from_secs(5)).await);
    let (mut b, _task_b) = leader::start(
        client(store.clone(), never.clone()),
        settings("b"),
        CancellationToken::new(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop_a.cancel();
    assert_eq!(task_a.await.unwrap(), Ended::Shutdown);
    let released = tokio::time::Instant::now();
    assert!(wait_leading(&mut b, Duration::from_secs(10)).await);
    assert!(
        released.elapsed() <= Duration::from_secs(4),
        "took {:?}",
        released.elapsed()
    );
}
