//! Exact API calls of the pool controller, against kube's tower-test mock.

mod fake_api;
mod homes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use capsule_crds::CapsuleSession;
use capsule_crds::{CapsulePool, CapsulePoolStatus};
use capsule_operator::config::OperatorConfig;
use capsule_operator::context::Context;
use capsule_operator::pool::{self, worker_pod};
use capsule_operator::relay::directory::{Directory, PodFacts};
use capsule_operator::watch_cache::reflect_grouped;
use capsule_protocol::auth::worker_credential;
use fake_api::{list, not_found, Call};
use futures::StreamExt;
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Action;
use kube::runtime::watcher;

type SessionEvents =
    futures::channel::mpsc::UnboundedSender<watcher::Result<watcher::Event<CapsuleSession>>>;

/// How long a pass asked to wait before the next one, for a check of a range (an exact value is
/// compared with `Action::requeue`). kube's `Action` keeps the duration private; its Debug output
/// (`Action { requeue_after: Some(1.5s) }`) names it.
fn requeue_after(action: &Action) -> Option<Duration> {
    let text = format!("{action:?}");
    let value = text.split("Some(").nth(1)?.split(')').next()?;
    let (number, unit) = value.split_at(value.find(|c: char| c.is_alphabetic() || c == 'µ')?);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit {
        "s" => number,
        "ms" => number / 1e3,
        "µs" => number / 1e6,
        "ns" => number / 1e9,
        other => panic!("unknown unit {other} in {text}"),
    };
    Some(Duration::from_secs_f64(seconds))
}
use serde_json::{json, Value};

const NS: &str = "default";
const POOL_UID: &str = "6b0f3c1e-0000-4000-8000-000000000001";

fn pool(spec: Value, status: Option<CapsulePoolStatus>) -> CapsulePool {
    let mut pool: CapsulePool = serde_json::from_value(json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
        "metadata": {"name": "p", "namespace": NS, "uid": POOL_UID, "generation": 3,
                     "resourceVersion": "41"},
        "spec": spec,
    }))
    .unwrap();
    pool.status = status;
    pool
}

fn sound_spec(replicas: i32, max: i32) -> Value {
    json!({"replicas": replicas, "maxWorkers": max, "template": {"image": "capsule-worker:test"}})
}

/// A worker pod of `pool` as the API server would hold it, in the given state.
fn worker(pool: &CapsulePool, name: &str, state: &str) -> Value {
    let pod = worker_pod::build(pool, &OperatorConfig::default(), name);
    let mut pod = pod;
    pod.metadata.uid = Some(format!("uid-{name}"));
    pod.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        format!("2026-11-27T10:00:0{}Z", name.len() % 10)
            .parse()
            .unwrap(),
    ));
    let mut value = serde_json::to_value(&pod).unwrap();
    let status = match state {
        "idle" => json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}),
        "bound" => {
            value["metadata"]["labels"]["capsule.dev/session"] = json!("s1");
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
        }
        "failed" => json!({"phase": "Failed"}),
        "pending" => json!({"phase": "Pending"}),
        // Running, not ready: its worker container started an hour ago, or just now.
        "warming-for-an-hour" | "warming-since-now" => {
            let started = if state == "warming-for-an-hour" {
                k8s_openapi::jiff::Timestamp::now()
                    - k8s_openapi::jiff::SignedDuration::from_secs(3600)
            } else {
                k8s_openapi::jiff::Timestamp::now()
            };
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}],
                   "containerStatuses": [{"name": "worker", "image": "capsule-worker:test",
                       "imageID": "", "ready": false, "restartCount": 0,
                       "state": {"running": {"startedAt": started.to_string()}}}]})
        }
        other => panic!("unknown state {other}"),
    };
    value["status"] = status;
    value
}

struct Harness {
    ctx: Arc<Context>,
    registry: prometheus_client::registry::Registry,
    calls: Arc<Mutex<Vec<Call>>>,
    /// What the fake API server lists; a test may change it between passes.
    pods: Arc<Mutex<Vec<Value>>>,
}

/// An API server with the given pods and (optionally) the pool's token Secret.
fn harness(pods: Vec<Value>, secret_exists: bool) -> Harness {
    let listed = Arc::new(Mutex::new(pods));
    let pods = listed.clone();
    let responder: fake_api::Responder = Arc::new(move |call: &Call| {
        let p = call.path.as_str();
        match (&call.method, p) {
            (&Method::GET, "/api/v1/namespaces/default/secrets/p-pool-token") => {
                if secret_exists {
                    (
                        StatusCode::OK,
                        json!({"apiVersion": "v1", "kind": "Secret",
                        "metadata": {"name": "p-pool-token", "namespace": NS}, "data": {"token": "dG9r"}}),
                    )
                } else {
                    not_found("secrets \"p-pool-token\"")
                }
            }
            (&Method::POST, "/api/v1/namespaces/default/secrets") => {
                (StatusCode::CREATED, call.body.clone())
            }
            // The pool's NetworkPolicy: network_policy_api_calls.rs asserts its calls.
            (
                &Method::GET,
                "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies/p-workers",
            ) => not_found("networkpolicies.networking.k8s.io \"p-workers\""),
            (&Method::POST, "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies") => {
                (StatusCode::CREATED, call.body.clone())
            }
            (&Method::GET, "/api/v1/namespaces/default/pods") => {
                list("PodList", pods.lock().unwrap().clone())
            }
            (&Method::PATCH, _) if p.starts_with("/api/v1/namespaces/default/secrets/") => {
                (StatusCode::OK, call.body.clone())
            }
            (&Method::POST, "/api/v1/namespaces/default/pods") => {
                let mut pod = call.body.clone();
                pod["metadata"]["uid"] = json!("uid-created");
                pod["metadata"]["resourceVersion"] = json!("100");
                (StatusCode::CREATED, pod)
            }
            (&Method::DELETE, _) if p.starts_with("/api/v1/namespaces/default/pods/") => (
                StatusCode::OK,
                json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": p.rsplit('/').next()}}),
            ),
            (&Method::PATCH, _) if p.starts_with("/api/v1/namespaces/default/pods/") => {
                let name = p.rsplit('/').next().unwrap();
                let mut pod = pods
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|v| v["metadata"]["name"] == name)
                    .cloned()
                    .expect("patched pod exists");
                pod["metadata"]["ownerReferences"] =
                    call.body["metadata"]["ownerReferences"].clone();
                (StatusCode::OK, pod)
            }
            (&Method::GET, "/apis/capsule.dev/v1alpha1/namespaces/default/capsulesessions/s1") => {
                not_found("capsulesessions \"s1\"")
            }
            (&Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events") => {
                (StatusCode::CREATED, call.body.clone())
            }
            (
                &Method::PATCH,
                "/apis/capsule.dev/v1alpha1/namespaces/default/capsulepools/p/status",
            ) => {
                let mut obj = call.body.clone();
                obj["metadata"] = json!({"name": "p", "namespace": NS, "uid": POOL_UID});
                obj["spec"] = json!({});
                (StatusCode::OK, obj)
            }
            _ => fake_api::unexpected(call),
        }
    });
    let (ctx, calls, registry) = fake_api::context_and_registry(responder);
    Harness {
        ctx,
        registry,
        calls,
        pods: listed,
    }
}

impl Harness {
    async fn reconcile(&self, pool: CapsulePool) -> Result<Action, capsule_operator::Error> {
        pool::reconcile(Arc::new(pool), self.ctx.clone()).await
    }

    /// Gives the pool controller a session cache fed by the returned sender, as its watch would.
    fn session_cache(&mut self) -> SessionEvents {
        let (events, rx) = futures::channel::mpsc::unbounded();
        let (cache, touched) = reflect_grouped(rx, pool::session_pool);
        tokio::spawn(touched.for_each(|_| async {}));
        let ctx = Arc::get_mut(&mut self.ctx).expect("no pass has started yet");
        ctx.sessions = Some(cache);
        events
    }

    /// Gives the pool controller a pod cache that shows what the returned cell holds (`None`: it
    /// has not listed yet) and has the pool's key.
    fn pod_cache(&mut self) -> Arc<Mutex<Option<Vec<Value>>>> {
        let shown = Arc::new(Mutex::new(None));
        let ctx = Arc::get_mut(&mut self.ctx).expect("no pass has started yet");
        ctx.directory = Some(Arc::new(PodCache {
            shown: shown.clone(),
        }));
        shown
    }

    /// The calls other than Event writes and NetworkPolicy calls, which are asserted separately.
    fn api_calls(&self) -> Vec<Call> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.path.contains("/events") && !c.path.contains("/networkpolicies"))
            .cloned()
            .collect()
    }

    /// One line per call; a worker's random name is shown as `{worker}`.
    fn lines(&self) -> Vec<String> {
        self.api_calls()
            .iter()
            .map(|c| {
                let line = c.line();
                match line.strip_suffix("-credential") {
                    Some(head) => format!(
                        "{}/{{worker}}-credential",
                        &head[..head.rfind('/').unwrap()]
                    ),
                    None => line,
                }
            })
            .collect()
    }

    fn events(&self) -> Vec<String> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path.contains("/events"))
            .map(|c| c.body["reason"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The message of a condition in the last status written.
    fn condition_message(&self, type_: &str) -> String {
        self.status_written()
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_} condition"))
            .message
    }

    fn status_written(&self) -> CapsulePoolStatus {
        let calls = self.api_calls();
        let patch = calls
            .iter()
            .rev()
            .find(|c| c.method == Method::PATCH && c.path.ends_with("/status"))
            .expect("a status write");
        assert!(
            patch.query.contains("fieldManager=capsule-operator"),
            "{}",
            patch.query
        );
        assert!(patch.query.contains("force=true"), "{}", patch.query);
        serde_json::from_value(patch.body["status"].clone()).unwrap()
    }
}

/// The relay's pod cache as the pool controller reads it.
struct PodCache {
    shown: Arc<Mutex<Option<Vec<Value>>>>,
}

impl Directory for PodCache {
    fn pool_key(&self, _: &str, _: &str) -> Option<String> {
        Some("tok".into())
    }
    fn pod(&self, _: &str, _: &str) -> Option<PodFacts> {
        None
    }
    fn pool_pods(&self, _: &str, _: &str) -> Option<Vec<Pod>> {
        let shown = self.shown.lock().unwrap().clone()?;
        Some(
            shown
                .into_iter()
                .map(|p| serde_json::from_value(p).unwrap())
                .collect(),
        )
    }
}

const GET_SECRET: &str = "GET /api/v1/namespaces/default/secrets/p-pool-token";
const LIST_PODS: &str = "GET /api/v1/namespaces/default/pods";
const CREATE_CREDENTIAL: &str = "POST /api/v1/namespaces/default/secrets";
const CREATE_POD: &str = "POST /api/v1/namespaces/default/pods";
const HAND_CREDENTIAL_TO_POD: &str = "PATCH /api/v1/namespaces/default/secrets/{worker}-credential";
const WRITE_STATUS: &str =
    "PATCH /apis/capsule.dev/v1alpha1/namespaces/default/capsulepools/p/status";

/// Secret data as the API carries it (base64), decoded.
fn base64_decode(text: &str) -> Vec<u8> {
    serde_json::from_value::<k8s_openapi::ByteString>(json!(text))
        .unwrap()
        .0
}

fn env_of<'a>(container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("env {name} missing"))
}

/// The `interpreter` container: its own uid, no credential, no token, the fork socket shared with
/// the worker alone, the scratch volume at the worker's path.
fn session_code_runs_in_a_container_of_its_own(pod: &Value, worker: &Value, interpreter: &Value) {
    assert_eq!(interpreter["image"], worker["image"]);
    let names: Vec<&str> = interpreter["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["CAPSULE_FORK_SERVER_CONNECT"],
        "no credential, no identity"
    );
    let socket = env_of(interpreter, "CAPSULE_FORK_SERVER_CONNECT")["value"].clone();
    assert_eq!(
        env_of(worker, "CAPSULE_FORK_SERVER_SOCKET")["value"],
        socket
    );
    let security = &interpreter["securityContext"];
    assert_eq!(
        (&security["runAsUser"], &security["runAsGroup"]),
        (&json!(65533), &json!(65533))
    );
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    let mounts = |container: &Value| -> Vec<String> {
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                format!(
                    "{}={}",
                    m["name"].as_str().unwrap(),
                    m["mountPath"].as_str().unwrap()
                )
            })
            .collect()
    };
    let interpreter_mounts = mounts(interpreter);
    assert_eq!(
        interpreter_mounts,
        [
            "capsule-fork=/var/run/capsule-fork",
            "capsule-scratch=/var/run/capsule-scratch"
        ]
    );
    let worker_mounts = mounts(worker);
    assert!(
        interpreter_mounts.iter().all(|m| worker_mounts.contains(m)),
        "{worker_mounts:?}"
    );
    assert_eq!(pod["spec"]["automountServiceAccountToken"], false);
    assert_eq!(
        pod["spec"]["shareProcessNamespace"],
        Value::Null,
        "a PID namespace per container"
    );
}

#[tokio::test]
async fn new_pool_creates_its_key_and_warm_workers_each_with_a_credential_of_its_own() {
    let h = harness(vec![], false);
    h.reconcile(pool(sound_spec(2, 5), None)).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            "POST /api/v1/namespaces/default/secrets",
            LIST_PODS,
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            WRITE_STATUS
        ]
    );
    let calls = h.api_calls();

    let secret = &calls[1].body;
    assert_eq!(secret["metadata"]["name"], "p-pool-token");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["uid"], POOL_UID);
    assert_eq!(secret["metadata"]["ownerReferences"][0]["controller"], true);
    let token = secret["data"]["token"].as_str().unwrap();
    assert!(
        token.len() >= 64,
        "a random token of 32 bytes, base64 of its hex: {token}"
    );

    assert!(
        calls[2]
            .query
            .contains("labelSelector=capsule.dev%2Fpool%3Dp"),
        "{}",
        calls[2].query
    );

    let key_b64 = secret["data"]["token"].as_str().unwrap();
    let key = String::from_utf8(base64_decode(key_b64)).unwrap();

    let credential = &calls[3].body;
    let pod = &calls[4].body;
    let pod_name = pod["metadata"]["name"].as_str().unwrap();
    assert!(
        pod_name.len() == "p-".len() + 5 && pod_name.starts_with("p-"),
        "named as generateName would: {pod_name}"
    );
    assert_eq!(
        credential["metadata"]["name"],
        format!("{pod_name}-credential")
    );
    assert_eq!(
        credential["metadata"]["labels"]["capsule.dev/credential-of"],
        pod_name
    );
    assert!(
        credential["metadata"]["labels"]
            .get("app.kubernetes.io/managed-by")
            .is_none(),
        "kept out of the operator's Secret cache"
    );
    assert_eq!(
        credential["metadata"]["ownerReferences"][0]["uid"], POOL_UID,
        "owned by the pool until the pod exists"
    );
    assert_eq!(
        base64_decode(credential["data"]["token"].as_str().unwrap()),
        worker_credential(&key, NS, pod_name).into_bytes(),
        "derived from the pool key for this pod alone"
    );
    let handed = &calls[5];
    assert_eq!(
        handed.path,
        format!("/api/v1/namespaces/default/secrets/{pod_name}-credential")
    );
    assert_eq!(handed.body["metadata"]["ownerReferences"][0]["kind"], "Pod");
    assert_eq!(
        handed.body["metadata"]["ownerReferences"][0]["uid"],
        "uid-created"
    );
    assert_ne!(
        calls[7].body["metadata"]["name"], pod_name,
        "every worker has its own name and credential"
    );
    assert_eq!(pod["metadata"]["labels"]["capsule.dev/pool"], "p");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], POOL_UID);
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "CapsulePool");
    let containers = pod["spec"]["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["worker", "sidecar", "interpreter"]);
    let worker = &containers[0];
    assert_eq!(worker["image"], "capsule-worker:test");
    assert_eq!(
        env_of(worker, "POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env_of(worker, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env_of(worker, "POD_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    for container in &containers[..2] {
        assert_eq!(
            env_of(container, "CAPSULE_WORKER_TOKEN")["valueFrom"]["secretKeyRef"]["name"],
            format!("{pod_name}-credential")
        );
    }
    session_code_runs_in_a_container_of_its_own(pod, worker, &containers[2]);
    assert_eq!(
        env_of(worker, "CAPSULE_HEARTBEAT_URL")["value"],
        OperatorConfig::default().heartbeat_url
    );
    assert_eq!(worker["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(pod["spec"]["volumes"][0]["emptyDir"]["medium"], "Memory");
    assert_eq!(worker["volumeMounts"][0]["mountPath"], "/var/run/capsule");
    assert_eq!(
        containers[1]["volumeMounts"][0]["mountPath"],
        "/var/run/capsule"
    );

    let status = h.status_written();
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.idle, 0);
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "WarmingUp")
    );
    assert_eq!(status.pool.unwrap().workers_created, 2);
    assert_eq!(h.events(), ["WorkerCreated", "WorkerCreated"]);
}

#[tokio::test]
async fn scale_up_creates_only_the_missing_workers() {
    let p = pool(sound_spec(3, 5), None);
    let h = harness(vec![worker(&p, "p-aaaaa", "idle")], true);
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            LIST_PODS,
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            WRITE_STATUS
        ]
    );
}

#[tokio::test]
async fn scale_up_stops_at_max_workers_and_says_so() {
    let p = pool(sound_spec(2, 3), None);
    let h = harness(
        vec![
            worker(&p, "p-b1", "bound"),
            worker(&p, "p-b2", "bound"),
            worker(&p, "p-idle1", "idle"),
        ],
        true,
    );
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines(),
        [GET_SECRET, LIST_PODS, WRITE_STATUS],
        "no pod beyond maxWorkers"
    );
    let status = h.status_written();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "PoolExhausted");
    assert!(
        ready.message.contains("spec.maxWorkers"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn scale_down_deletes_idle_workers_never_bound_ones() {
    let p = pool(sound_spec(1, 5), None);
    let h = harness(
        vec![
            worker(&p, "p-bound", "bound"),
            worker(&p, "p-idle1", "idle"),
            worker(&p, "p-idle22", "idle"),
        ],
        true,
    );
    h.reconcile(p).await.unwrap();
    let lines = h.lines();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(&lines[..2], [GET_SECRET, LIST_PODS]);
    assert!(
        lines[2].starts_with("DELETE /api/v1/namespaces/default/pods/p-idle"),
        "{lines:?}"
    );
    assert_eq!(lines[3], WRITE_STATUS);
    let delete = &h.api_calls()[2];
    assert!(
        delete.body["preconditions"]["uid"]
            .as_str()
            .unwrap()
            .starts_with("uid-p-idle"),
        "deletes are guarded by the pod's uid: {}",
        delete.body
    );
    assert_eq!(h.events(), ["WorkerDeleted"]);
}

#[tokio::test]
async fn a_failed_worker_is_replaced() {
    let p = pool(sound_spec(1, 5), None);
    let h = harness(vec![worker(&p, "p-dead", "failed")], true);
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            LIST_PODS,
            "DELETE /api/v1/namespaces/default/pods/p-dead",
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            WRITE_STATUS
        ]
    );
    let counters = h.status_written().pool.unwrap();
    assert_eq!(
        (
            counters.workers_removed,
            counters.health.removals,
            counters.workers_created
        ),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn an_unusable_spec_is_degraded_with_the_field_named_and_nothing_created() {
    let h = harness(vec![], false);
    h.reconcile(pool(
        json!({"replicas": 2, "maxWorkers": 5, "template": {}}),
        None,
    ))
    .await
    .unwrap();
    assert_eq!(
        h.lines(),
        [LIST_PODS, WRITE_STATUS],
        "no Secret and no pod for a pool that cannot work"
    );
    let status = h.status_written();
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "InvalidSpec")
    );
    assert!(
        degraded.message.contains("spec.template.image"),
        "{}",
        degraded.message
    );
    assert_eq!(h.events(), ["InvalidSpec"]);
}

#[tokio::test]
async fn nothing_changed_means_no_writes() {
    // First pass against a steady pool: it writes the status once.
    let steady = pool(sound_spec(2, 5), None);
    let pods = vec![
        worker(&steady, "p-one", "idle"),
        worker(&steady, "p-two", "idle"),
    ];
    let first = harness(pods.clone(), true);
    first.reconcile(steady.clone()).await.unwrap();
    assert_eq!(first.lines(), [GET_SECRET, LIST_PODS, WRITE_STATUS]);
    let written = first.status_written();
    assert_eq!(written.idle, 2);

    // Second pass sees that status stored: nothing to do, nothing to write.
    let second = harness(pods, true);
    second
        .reconcile(pool(sound_spec(2, 5), Some(written)))
        .await
        .unwrap();
    assert_eq!(
        second.lines(),
        [GET_SECRET, LIST_PODS],
        "a pass with no change makes no write"
    );
    assert!(second.events().is_empty());
}

#[tokio::test]
async fn an_orphaned_worker_is_adopted_not_duplicated() {
    let p = pool(sound_spec(1, 5), None);
    let mut orphan = worker(&p, "p-orphan", "idle");
    orphan["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let h = harness(vec![orphan], true);
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            LIST_PODS,
            "PATCH /api/v1/namespaces/default/pods/p-orphan",
            WRITE_STATUS
        ],
        "the adopted worker counts as the warm one: no new pod"
    );
    let patch = &h.api_calls()[2];
    assert_eq!(
        patch.body["metadata"]["ownerReferences"][0]["uid"],
        POOL_UID
    );
}

#[tokio::test]
async fn a_worker_that_never_finishes_its_warm_up_is_replaced() {
    let mut spec = sound_spec(2, 5);
    spec["warmup"] = json!({"code": "import numpy", "timeoutSeconds": 60});
    let p = pool(spec, None);
    let h = harness(
        vec![
            worker(&p, "p-slow", "warming-for-an-hour"),
            worker(&p, "p-new", "warming-since-now"),
        ],
        true,
    );
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            LIST_PODS,
            "DELETE /api/v1/namespaces/default/pods/p-slow",
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            WRITE_STATUS
        ],
        "the worker past spec.warmup.timeoutSeconds is replaced; the young one keeps warming"
    );
    let status = h.status_written();
    let counters = status.pool.unwrap();
    assert_eq!((counters.health.removals, counters.health.triggers), (1, 1));
    assert_eq!(status.unhealthy, 1);
}

#[tokio::test]
async fn a_worker_bound_to_a_deleted_session_is_replaced_and_deletes_are_compare_and_swap() {
    let p = pool(sound_spec(1, 5), None);
    let mut bound = worker(&p, "p-bound", "bound");
    bound["metadata"]["resourceVersion"] = json!("77");
    let mut h = harness(vec![bound, worker(&p, "p-idle", "idle")], true);
    // A session cache without that session: it is read from the API server.
    let sessions = h.session_cache();
    sessions.unbounded_send(Ok(watcher::Event::Init)).unwrap();
    sessions
        .unbounded_send(Ok(watcher::Event::InitDone))
        .unwrap();
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            LIST_PODS,
            "GET /apis/capsule.dev/v1alpha1/namespaces/default/capsulesessions/s1",
            "DELETE /api/v1/namespaces/default/pods/p-bound",
            WRITE_STATUS
        ]
    );
    let delete = &h.api_calls()[3];
    assert_eq!(
        delete.body["preconditions"],
        json!({"uid": "uid-p-bound", "resourceVersion": "77"}),
        "a pod changed since the list (bound, say) is not deleted"
    );
}

fn session(name: &str, status: Value) -> capsule_crds::CapsuleSession {
    serde_json::from_value(json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
        "metadata": {"name": name, "namespace": NS}, "spec": {"pool": "p"}, "status": status,
    }))
    .unwrap()
}

#[tokio::test]
async fn a_pool_waits_for_the_session_cache_and_grows_only_for_sessions_that_missed() {
    let p = pool(sound_spec(1, 5), None);
    let mut h = harness(vec![worker(&p, "p-idle1", "idle")], true);
    let sessions = h.session_cache();
    let started = std::time::Instant::now();
    let pass = tokio::spawn({
        let ctx = h.ctx.clone();
        async move { pool::reconcile(Arc::new(p), ctx).await.map(|_| ()) }
    });
    // The session cache lists only now, as right after an operator start.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        h.lines().is_empty(),
        "nothing is read before the session cache listed: {:?}",
        h.lines()
    );
    for event in [
        watcher::Event::Init,
        watcher::Event::InitApply(session(
            "missed",
            json!({"phase": "Pending", "warmHit": false}),
        )),
        watcher::Event::InitApply(session("new", Value::Null)),
        watcher::Event::InitDone,
    ] {
        sessions.unbounded_send(Ok(event)).unwrap();
    }
    pass.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited for the list, not the timeout"
    );
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            LIST_PODS,
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            WRITE_STATUS
        ],
        "one worker for the session that missed; none for the one not looked at yet"
    );
}

#[tokio::test]
async fn concurrent_passes_all_wake_when_the_session_cache_lists() {
    // kube's own Store::wait_until_ready wakes only the last waiter: with several pools, all but
    // one would sleep out the whole wait.
    let p = pool(sound_spec(1, 5), None);
    let mut h = harness(vec![worker(&p, "p-idle1", "idle")], true);
    let sessions = h.session_cache();
    let started = std::time::Instant::now();
    let passes: Vec<_> = (0..3)
        .map(|_| {
            let (ctx, p) = (h.ctx.clone(), p.clone());
            tokio::spawn(async move { pool::reconcile(Arc::new(p), ctx).await.map(|_| ()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    sessions.unbounded_send(Ok(watcher::Event::Init)).unwrap();
    sessions
        .unbounded_send(Ok(watcher::Event::InitDone))
        .unwrap();
    for pass in passes {
        pass.await.unwrap().unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "every pass went on once the cache listed, none waited out the 10 s limit: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_deferred_status_write_is_retried_within_the_write_gap_and_lands() {
    let p = pool(sound_spec(1, 5), None);
    let h = harness(vec![worker(&p, "p-idle1", "idle")], true);
    h.reconcile(p.clone()).await.unwrap();
    assert_eq!(h.lines(), [GET_SECRET, LIST_PODS, WRITE_STATUS]);

    // The watch has not brought the written status back yet, so the next pass sees a change;
    // it is within a second of the last write, so it waits and asks to come back in time.
    let action = h.reconcile(p.clone()).await.unwrap();
    assert_eq!(h.lines().len(), 5, "no second write yet: {:?}", h.lines());
    let wait = requeue_after(&action).expect("a requeue");
    assert!(
        wait > Duration::ZERO && wait <= Duration::from_secs(1),
        "back within the write gap, not the status interval: {wait:?}"
    );

    tokio::time::sleep(wait).await;
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines().last().map(String::as_str),
        Some(WRITE_STATUS),
        "the deferred write lands on the requeued pass: {:?}",
        h.lines()
    );
}

#[tokio::test]
async fn a_surplus_is_kept_for_the_scale_down_delay_unless_the_target_changed() {
    // A delay shorter than the status interval (10 s), so the pass must come back for it.
    let spec = |replicas, delay| {
        let mut spec = sound_spec(replicas, 5);
        spec["scaleDownDelaySeconds"] = json!(delay);
        spec
    };
    let one_idle = |p: &CapsulePool| vec![worker(p, "p-idle1", "idle")];
    let two_idle =
        |p: &CapsulePool| vec![worker(p, "p-idle1", "idle"), worker(p, "p-idle22", "idle")];
    let at_target = pool(spec(1, 3), None);
    let h = harness(one_idle(&at_target), true);
    h.reconcile(at_target.clone()).await.unwrap();
    assert_eq!(
        h.lines(),
        [GET_SECRET, LIST_PODS, WRITE_STATUS],
        "at target"
    );

    // The same target, one worker too many (as when a released worker returns while its
    // replacement warmed): kept, the status says why, and the pass comes back when it is due.
    // (A second apart: status writes of one pool are at least a second apart.)
    *h.pods.lock().unwrap() = two_idle(&at_target);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let action = h.reconcile(at_target.clone()).await.unwrap();
    assert!(
        !h.lines().iter().any(|l| l.starts_with("DELETE")),
        "{:?}",
        h.lines()
    );
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(3)),
        "back when the delay is over, before the status interval"
    );
    let progressing = h.condition_message("Progressing");
    assert!(
        progressing.contains("1 surplus unbound workers kept for spec.scaleDownDelaySeconds (3s)"),
        "{progressing}"
    );

    // An edit that leaves the target alone (a longer delay) keeps the surplus held, past the
    // first delay, and the delay in force is the new one.
    let mut longer = pool(spec(1, 60), None);
    longer.metadata.generation = Some(4);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    h.reconcile(longer).await.unwrap();
    assert!(
        !h.lines().iter().any(|l| l.starts_with("DELETE")),
        "{:?}",
        h.lines()
    );
    let progressing = h.condition_message("Progressing");
    assert!(
        progressing.contains("kept for spec.scaleDownDelaySeconds (60s)"),
        "{progressing}"
    );

    // Lowering the target applies at once.
    let mut lowered = pool(spec(0, 60), None);
    lowered.metadata.generation = Some(5);
    h.reconcile(lowered).await.unwrap();
    assert_eq!(
        h.lines()
            .iter()
            .filter(|l| l.starts_with("DELETE /api/v1/namespaces/default/pods/p-idle"))
            .count(),
        2,
        "{:?}",
        h.lines()
    );
}

/// A heartbeat of `pod` (pool `p`) saying the warm-up code raised.
fn warmup_failed_heartbeat(pod: &str) -> capsule_protocol::heartbeat::Heartbeat {
    fake_api::heartbeat(
        pod,
        json!({"state": "warming",
            "warmupFailure": {"ename": "ModuleNotFoundError", "evalue": "No module named 'numpyy'", "attempts": 2}}),
    )
}

#[tokio::test]
async fn a_worker_whose_warm_up_raises_is_replaced_and_the_pool_says_why_and_backs_off() {
    let mut spec = sound_spec(1, 5);
    spec["warmup"] = json!({"code": "import numpyy", "timeoutSeconds": 600});
    let p = pool(spec, None);
    let h = harness(vec![worker(&p, "p-broken", "warming-since-now")], true);
    h.ctx.index.record(
        &warmup_failed_heartbeat("p-broken"),
        false,
        std::time::Instant::now(),
    );
    let action = h.reconcile(p.clone()).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            LIST_PODS,
            "DELETE /api/v1/namespaces/default/pods/p-broken",
            WRITE_STATUS
        ],
        "removed, and no replacement before the backoff"
    );
    let events = h.events();
    assert_eq!(events, ["WarmupFailed"]);
    let event = h
        .calls
        .lock()
        .unwrap()
        .iter()
        .find(|c| c.path.contains("/events"))
        .cloned()
        .unwrap();
    assert_eq!(event.body["type"], "Warning");
    let note = event.body["note"].as_str().unwrap();
    assert!(
        note.contains("p-broken") && note.contains("ModuleNotFoundError: No module named 'numpyy'"),
        "{note}"
    );
    let status = h.status_written();
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .unwrap();
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "WarmupFailing")
    );
    assert!(
        degraded
            .message
            .contains("spec.warmup.code raised ModuleNotFoundError"),
        "{}",
        degraded.message
    );
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason, "WarmupFailing");
    assert_eq!(status.pool.unwrap().health.removals, 1);
    assert!(
        requeue_after(&action).is_some_and(|d| d <= Duration::from_secs(1)),
        "the next worker is created when the backoff ends: {action:?}"
    );

    // Once the backoff passed, the next worker is created.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    h.pods.lock().unwrap().clear();
    h.calls.lock().unwrap().clear();
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            GET_SECRET,
            LIST_PODS,
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            WRITE_STATUS
        ]
    );
}

/// A heartbeat of `pod` (pool `p`) whose every counter is set, each to a value of its own.
fn busy_heartbeat(pod: &str) -> capsule_protocol::heartbeat::Heartbeat {
    fake_api::heartbeat(
        pod,
        json!({
            "capabilities": {"workerVersion": "0.1.0", "pythonVersion": "3.11.2", "maxRequestBytes": 1,
                "maxFrameBytes": 1, "outputQueueCapacity": 1, "backpressure": "Block",
                "executionQueueLimit": 1, "drainTimeoutMs": 1, "inputTimeoutMs": 1, "cancelGraceMs": 1},
            "namespaceSize": 7, "interpreterRestarts": 11,
            "executions": {"ok": 101, "error": 102, "cancelled": 103, "timedOut": 104},
            "modes": {"plain": 201, "topLevelAwait": 202, "asyncDef": 203}, "blockingCallWarnings": 204,
            "executor": {"outputsEnqueued": 301, "outputsSent": 302, "outputsDropped": 303, "maxQueueDepth": 304, "drainTimeouts": 305},
            "bridge": {"pending": 3, "highWater": 401, "created": 402, "resolved": 403, "rejected": 404, "timedOut": 405, "cancelled": 406},
            "cancels": {"requested": 501, "effective": 502, "noop": 503, "interrupted": 504, "killed": 505},
            "trace": {"sent": 601, "dropped": 602},
            "checkpointsCreated": 701, "checkpointsRestored": 702, "checkpointFailures": 703,
            "transactionsRolledBack": 801}),
    )
}

#[tokio::test]
async fn every_counter_a_worker_reports_reaches_pool_status_and_prometheus() {
    let p = pool(sound_spec(1, 5), None);
    let h = harness(vec![worker(&p, "p-busy", "idle")], true);
    h.ctx
        .index
        .record(&busy_heartbeat("p-busy"), false, std::time::Instant::now());
    h.reconcile(p).await.unwrap();

    let status = serde_json::to_value(h.status_written()).unwrap();
    assert_eq!(status["pythonVersions"], json!(["3.11.2"]));
    let metrics = scrape(&h);
    for (stat, path, family) in homes::HOMES {
        let mut node = &status;
        for part in path.split('.') {
            node = match node {
                Value::Array(rows) => &rows[0][part],
                other => &other[part],
            };
        }
        assert!(
            node.as_i64().is_some_and(|v| v > 0),
            "{stat}: status.{path} is {node}"
        );
        let series = metrics
            .lines()
            .filter(|l| l.starts_with(family) && l.contains("pool=\"p\""))
            .collect::<Vec<_>>();
        assert!(
            series
                .iter()
                .any(|l| l.rsplit(' ').next().is_some_and(|v| v != "0")),
            "{stat}: no nonzero series of {family} in:\n{metrics}"
        );
    }
}

/// The registry's text exposition, one series a line.
fn scrape(h: &Harness) -> String {
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &h.registry).unwrap();
    metrics
}

#[tokio::test]
async fn per_worker_series_follow_spec_metrics_per_worker_and_go_with_the_pool() {
    let mut spec = sound_spec(1, 5);
    spec["metrics"] = json!({"perWorker": true});
    let p = pool(spec, None);
    let h = harness(vec![worker(&p, "p-busy", "idle")], true);
    let mut hb = busy_heartbeat("p-busy");
    hb.rss_bytes = 4242;
    h.ctx.index.record(&hb, false, std::time::Instant::now());
    h.reconcile(p).await.unwrap();

    let metrics = scrape(&h);
    for series in [
        "capsule_worker_rss_bytes{namespace=\"default\",pool=\"p\",pod=\"p-busy\"} 4242",
        "capsule_pool_rss_bytes{namespace=\"default\",pool=\"p\"} 4242",
        "capsule_pool_executions_total{namespace=\"default\",pool=\"p\",outcome=\"ok\"} 101",
        "# TYPE capsule_worker_heartbeat_age_seconds gauge",
        "# HELP capsule_pool_cpu_seconds CPU time of the pool's workers and interpreters, across interpreter resets",
    ] {
        assert!(metrics.contains(series), "missing {series} in:\n{metrics}");
    }

    // What the pool controller does for a deleted pool (pool::forget).
    h.ctx.index.forget_pool("default", "p");
    h.ctx
        .metrics
        .forget_pool(&capsule_operator::metrics::PoolLabels {
            namespace: "default".into(),
            pool: "p".into(),
        });
    let metrics = scrape(&h);
    assert!(
        !metrics.contains("pool=\"p\""),
        "series of a forgotten pool remain:\n{metrics}"
    );
}

#[tokio::test]
async fn idle_workers_past_max_rss_bytes_or_max_age_seconds_are_recycled_and_bound_ones_kept() {
    let mut spec = sound_spec(3, 6);
    spec["recycle"] = json!({"maxRssBytes": 100_000_000, "maxAgeSeconds": 3600});
    let p = pool(spec, None);
    // Workers made in 2026-11-27 (see `worker`): older than an hour.
    let mut fresh = worker(&p, "p-young", "idle");
    fresh["metadata"]["creationTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
    let mut heavy = worker(&p, "p-heavy", "idle");
    heavy["metadata"]["creationTimestamp"] = json!(k8s_openapi::jiff::Timestamp::now().to_string());
    let mut heavy_bound = worker(&p, "p-heavy-bound", "bound");
    heavy_bound["metadata"]["creationTimestamp"] =
        json!(k8s_openapi::jiff::Timestamp::now().to_string());
    let h = harness(
        vec![fresh, heavy, heavy_bound, worker(&p, "p-old", "idle")],
        true,
    );
    let now = std::time::Instant::now();
    for (pod, rss) in [
        ("p-young", 50_000_000u64),
        ("p-heavy", 150_000_000),
        ("p-heavy-bound", 150_000_000),
    ] {
        let mut hb = busy_heartbeat(pod);
        hb.rss_bytes = rss;
        h.ctx.index.record(&hb, pod.ends_with("bound"), now);
    }
    h.reconcile(p).await.unwrap();
    let deleted: Vec<String> = h
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("DELETE"))
        .collect();
    assert_eq!(
        deleted,
        [
            "DELETE /api/v1/namespaces/default/pods/p-heavy",
            "DELETE /api/v1/namespaces/default/pods/p-old"
        ],
        "over maxRssBytes, and past maxAgeSeconds; the bound one finishes its session"
    );
    assert_eq!(h.status_written().pool.unwrap().workers_recycled, 2);
}

#[tokio::test]
async fn a_pool_at_rest_plans_from_the_pod_cache_and_reads_nothing() {
    let p = pool(sound_spec(2, 5), None);
    let pods = vec![worker(&p, "p-one", "idle"), worker(&p, "p-two", "idle")];
    let mut h = harness(pods.clone(), true);
    let cache = h.pod_cache();
    h.reconcile(p).await.unwrap();
    assert_eq!(
        h.lines(),
        [LIST_PODS, WRITE_STATUS],
        "a cache that has not listed yet is not read"
    );
    let written = h.status_written();
    h.calls.lock().unwrap().clear();
    *cache.lock().unwrap() = Some(pods);
    h.reconcile(pool(sound_spec(2, 5), Some(written)))
        .await
        .unwrap();
    assert_eq!(h.lines(), Vec::<String>::new(), "no read, no write");
}

#[tokio::test]
async fn after_creating_a_worker_a_pool_lists_fresh_until_its_cache_shows_the_worker() {
    let p = pool(sound_spec(1, 5), None);
    let mut h = harness(vec![], true);
    let cache = h.pod_cache();
    *cache.lock().unwrap() = Some(vec![]);
    h.reconcile(p.clone()).await.unwrap();
    assert_eq!(
        h.lines(),
        [
            CREATE_CREDENTIAL,
            CREATE_POD,
            HAND_CREDENTIAL_TO_POD,
            WRITE_STATUS
        ],
        "an empty cache with nothing written is trusted"
    );
    let created = h
        .api_calls()
        .into_iter()
        .find(|c| c.line() == CREATE_POD)
        .unwrap()
        .body;
    let mut stored = created;
    stored["metadata"]["uid"] = json!("uid-created");
    stored["metadata"]["resourceVersion"] = json!("100");
    h.pods.lock().unwrap().push(stored.clone());

    // The cache has not seen the new pod: a fresh list finds it, and nothing is created twice.
    h.calls.lock().unwrap().clear();
    h.reconcile(p.clone()).await.unwrap();
    let lines = h.lines();
    assert_eq!(lines.first().map(String::as_str), Some(LIST_PODS));
    assert!(!lines.contains(&CREATE_POD.to_string()), "{lines:?}");

    // Once the cache shows it at the version the create returned (or later), no more lists.
    stored["metadata"]["resourceVersion"] = json!("101");
    *cache.lock().unwrap() = Some(vec![stored]);
    h.calls.lock().unwrap().clear();
    h.reconcile(p).await.unwrap();
    let lines = h.lines();
    assert!(!lines.contains(&LIST_PODS.to_string()), "{lines:?}");
    assert!(!lines.contains(&CREATE_POD.to_string()), "{lines:?}");
}

#[tokio::test]
async fn after_deleting_a_worker_a_pool_lists_fresh_until_its_cache_shows_it_gone() {
    let p = pool(sound_spec(1, 5), None);
    let failed = worker(&p, "p-failed", "failed");
    let idle = worker(&p, "p-idle", "idle");
    let mut h = harness(vec![failed.clone(), idle.clone()], true);
    let cache = h.pod_cache();
    *cache.lock().unwrap() = Some(vec![failed.clone(), idle.clone()]);
    h.reconcile(p.clone()).await.unwrap();
    let delete = "DELETE /api/v1/namespaces/default/pods/p-failed".to_string();
    assert!(h.lines().contains(&delete), "{:?}", h.lines());
    h.pods.lock().unwrap().retain(|pod| pod != &failed);

    h.calls.lock().unwrap().clear();
    h.reconcile(p.clone()).await.unwrap();
    let lines = h.lines();
    assert_eq!(
        lines.first().map(String::as_str),
        Some(LIST_PODS),
        "the cache still shows the deleted pod"
    );
    assert!(!lines.contains(&delete), "{lines:?}");

    *cache.lock().unwrap() = Some(vec![idle]);
    h.calls.lock().unwrap().clear();
    h.reconcile(p).await.unwrap();
    assert!(
        !h.lines().contains(&LIST_PODS.to_string()),
        "{:?}",
        h.lines()
    );
}
