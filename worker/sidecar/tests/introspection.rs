//! The introspection gate against the real `capsule-devcluster` (TokenReview and
//! SubjectAccessReview from its RBAC), the real worker and the real sidecar: no token → 401, a
//! token without the permission → 403, with it → 200 under each redaction policy, a disabled view
//! → 404, and one audit record per request in the sidecar's log.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use capsule_sidecar::redaction::keyed_hash;
use common::*;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use serde_json::Value;

const NAMESPACE: &str = "team-a";
const POOL: &str = "pool-a";

const RBAC: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: viewer, namespace: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: stranger, namespace: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: capsule-introspection}
rules:
- apiGroups: [capsule.dev]
  resources: [capsulepools/introspection]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewer-introspection, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: capsule-introspection}
subjects:
- {kind: ServiceAccount, name: viewer, namespace: team-a}
---
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata: {name: pool-a, namespace: team-a}
spec: {template: {image: "capsule-worker:dev"}}
"#;

fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write;
    let mut child = Command::new(tool("bin/kubectl", "kubectl"))
        .env("KUBECONFIG", kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .output_piped();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

trait Piped {
    fn output_piped(&mut self) -> std::process::Child;
}

impl Piped for Command {
    fn output_piped(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn")
    }
}

async fn token(client: &kube::Client, account: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![],
            expiration_seconds: Some(3600),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), NAMESPACE)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .expect("token request")
        .status
        .expect("token status")
        .token
}

struct Cluster {
    _process: Running,
    kubeconfig: PathBuf,
    client: kube::Client,
}

async fn start_cluster(dir: &Path) -> Cluster {
    let state = dir.join("devcluster");
    let mut command = Command::new(sibling_binary("capsule-devcluster", "capsule-devcluster"));
    command
        .args([
            "serve",
            "--no-kubelet",
            "--listen",
            "127.0.0.1:0",
            "--state-dir",
        ])
        .arg(&state)
        .env("RUST_LOG", "warn");
    let process = start_with_ready_line(command, "ready", &dir.join("devcluster.stderr"));
    let kubeconfig = state.join("kubeconfig");
    kubectl(
        &kubeconfig,
        &[
            "apply",
            "-f",
            &common::workspace_root()
                .join("crds/capsule.dev_crds.yaml")
                .to_string_lossy(),
        ],
        None,
    );
    // The CRD is served at once; the pool follows.
    kubectl(&kubeconfig, &["apply", "-f", "-"], Some(RBAC));
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    Cluster {
        _process: process,
        kubeconfig,
        client,
    }
}

fn audit_lines(sidecar: &Running) -> Vec<Value> {
    sidecar
        .stderr()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["audit"] == true)
        .collect()
}

async fn get(sidecar: &Running, path: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new().get(sidecar.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_answers_401_403_404_200_with_redaction_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path()).await;
    let viewer = token(&cluster.client, "viewer").await;
    let stranger = token(&cluster.client, "stranger").await;

    let socket = dir.path().join("trace.sock");
    let mut worker = start_worker(worker_command(Some(&socket)), dir.path());
    bind_session(&worker, "session-1", "session-token").await;

    // A pending promise for the Promises view: the execution waits on it.
    let worker_url = worker.url("");
    let waiting = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{worker_url}/v1/executions"))
            .bearer_auth("session-token")
            .json(&serde_json::json!({
                "code": "import capsule\nawait capsule.promise('order-1', timeout=120)"
            }))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });

    let key = b"pool-secret-token";
    for (mode, expected_id) in [
        ("Hash", Some(keyed_hash(key, "order-1"))),
        ("None", Some("order-1".to_owned())),
        ("Drop", None),
    ] {
        let sidecar_dir = dir.path().join(mode);
        std::fs::create_dir_all(&sidecar_dir).unwrap();
        let mut command = sidecar_command(&sidecar_dir.join("unused.sock"));
        command
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("CAPSULE_WORKER_URL", worker.url(""))
            .env(
                "CAPSULE_INTROSPECTION_VIEWS",
                "Traces,Promises,Counters,Pool",
            )
            .env("CAPSULE_INTROSPECTION_REDACTION", mode)
            // The polling below must not meet the rate limit (tests/rate_limit.rs covers it).
            .env("CAPSULE_INTROSPECTION_CLIENT_RATE", "1000");
        let mut sidecar = start_sidecar(command, &sidecar_dir);

        let (status, _) = get(&sidecar, "/v1/introspection/promises", None).await;
        assert_eq!(status, 401, "no token");
        let (status, _) = get(&sidecar, "/v1/introspection/promises", Some("forged-token")).await;
        assert_eq!(status, 401, "unknown token");
        let (status, _) = get(&sidecar, "/v1/introspection/promises", Some(&stranger)).await;
        assert_eq!(status, 403, "token without the permission");
        let (status, _) = get(&sidecar, "/v1/introspection/namespace", Some(&viewer)).await;
        assert_eq!(status, 404, "view disabled by the policy");

        // The execution may take a moment to register its promise.
        let deadline = Instant::now() + WAIT;
        let mut requests = 4;
        let body = loop {
            let (status, body) = get(&sidecar, "/v1/introspection/promises", Some(&viewer)).await;
            requests += 1;
            assert_eq!(status, 200, "{body}");
            if body["pending"] == 1 {
                break body;
            }
            assert!(Instant::now() < deadline, "promise never pending: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let promise = &body["promises"][0];
        assert_eq!(promise["kind"], "promise");
        assert_eq!(promise["timeoutMs"], 120_000);
        match &expected_id {
            Some(id) => assert_eq!(promise["id"].as_str(), Some(id.as_str()), "{mode}: {body}"),
            None => assert!(promise.get("id").is_none(), "{mode}: {body}"),
        }
        if mode == "Drop" {
            assert!(promise.get("executionId").is_none());
        }

        let (status, counters) = get(&sidecar, "/v1/introspection/counters", Some(&viewer)).await;
        assert_eq!(status, 200);
        assert_eq!(counters["worker"]["bridge"]["pending"], 1);
        match mode {
            "None" => assert_eq!(counters["worker"]["session"], "session-1"),
            "Hash" => assert_eq!(counters["worker"]["session"], keyed_hash(key, "session-1")),
            _ => assert!(counters["worker"].get("session").is_none()),
        }
        let (status, pool) = get(&sidecar, "/v1/introspection/pool", Some(&viewer)).await;
        assert_eq!(status, 200, "{pool}");
        assert_eq!(pool["pool"], POOL);
        assert_eq!(pool["namespace"], NAMESPACE);
        let (status, traces) = get(&sidecar, "/v1/introspection/traces", Some(&viewer)).await;
        assert_eq!(status, 200);
        assert!(traces["executions"].is_array());
        requests += 3;

        // One audit record per request, with who, what, which pool, the decision and the time.
        let deadline = Instant::now() + WAIT;
        let records = loop {
            let records = audit_lines(&sidecar);
            if records.len() >= requests || Instant::now() > deadline {
                break records;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(records.len(), requests, "{mode}: {records:?}");
        let decisions: Vec<&str> = records
            .iter()
            .map(|r| r["decision"].as_str().unwrap())
            .collect();
        assert_eq!(
            &decisions[..4],
            [
                "unauthenticated",
                "unauthenticated",
                "forbidden",
                "disabled"
            ]
        );
        assert!(decisions[4..].iter().all(|d| *d == "allowed"));
        assert_eq!(records[2]["user"], "system:serviceaccount:team-a:stranger");
        assert_eq!(records[3]["user"], "system:serviceaccount:team-a:viewer");
        assert_eq!(records[3]["view"], "Namespace");
        for record in &records {
            assert_eq!(record["pool"], POOL);
            assert_eq!(record["namespace"], NAMESPACE);
            assert!(record["time"]
                .as_str()
                .is_some_and(|t| t.parse::<jiff::Timestamp>().is_ok()));
        }
        let logs = sidecar.stderr();
        assert!(
            !logs.contains(&viewer) && !logs.contains(&stranger),
            "tokens never logged"
        );

        let metrics = scrape(&sidecar).await;
        assert_eq!(
            metric(
                &metrics,
                r#"capsule_sidecar_introspection_requests_total{decision="forbidden"}"#
            ),
            Some(1.0),
            "{metrics}"
        );
        sidecar.stop();
    }

    let resolved = reqwest::Client::new()
        .post(worker.url("/v1/promises/order-1/resolve"))
        .bearer_auth("session-token")
        .json(&serde_json::json!({ "value": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resolved.status(), 204);
    let stream = tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    assert!(stream.contains("\"result\""), "{stream}");
    worker.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_view_lists_names_under_each_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = start_cluster(dir.path()).await;
    let viewer = token(&cluster.client, "viewer").await;
    let mut worker = start_worker(worker_command(None), dir.path());
    bind_session(&worker, "session-1", "session-token").await;
    let events = execute(
        &worker,
        "session-token",
        "customer_table = 'SECRETVALUE' * 100\nretries = 3",
        None,
    )
    .await;
    assert_eq!(events.last().unwrap()["type"], "result", "{events:?}");

    let key = b"pool-secret-token";
    for mode in ["Hash", "None", "Drop"] {
        let sidecar_dir = dir.path().join(mode);
        std::fs::create_dir_all(&sidecar_dir).unwrap();
        let mut command = sidecar_command(&sidecar_dir.join("unused.sock"));
        command
            .env("KUBECONFIG", &cluster.kubeconfig)
            .env("CAPSULE_WORKER_URL", worker.url(""))
            .env("CAPSULE_INTROSPECTION_VIEWS", "Namespace")
            .env("CAPSULE_INTROSPECTION_REDACTION", mode);
        let mut sidecar = start_sidecar(command, &sidecar_dir);
        let (status, body) = get(&sidecar, "/v1/introspection/namespace", Some(&viewer)).await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert!(
            !body.to_string().contains("SECRETVALUE"),
            "values never shown"
        );
        assert_eq!(body["names"], 2, "{body}");
        assert_eq!(body["truncated"], false);
        let entries = body["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2, "{body}");
        // Largest first: the string, then the int.
        assert_eq!(entries[0]["type"], "str");
        assert!(entries[0]["sizeBytes"].as_u64().unwrap() >= 1100);
        assert_eq!(entries[1]["type"], "int");
        let names: Vec<Option<&str>> = entries.iter().map(|e| e["name"].as_str()).collect();
        match mode {
            "None" => assert_eq!(names, [Some("customer_table"), Some("retries")]),
            "Hash" => assert_eq!(
                names,
                [
                    Some(keyed_hash(key, "customer_table").as_str()),
                    Some(keyed_hash(key, "retries").as_str())
                ]
            ),
            _ => assert_eq!(names, [None, None], "Drop removes names: {body}"),
        }
        sidecar.stop();
    }
    worker.stop();
}

/// A sidecar serving the Traces view unredacted, a worker sending it trace events, and a viewer's
/// token (the cluster lives as long as the struct).
struct TracesOnly {
    _cluster: Cluster,
    viewer: String,
    sidecar: Running,
    worker: Running,
}

async fn start_traces_only(dir: &Path) -> TracesOnly {
    let cluster = start_cluster(dir).await;
    let viewer = token(&cluster.client, "viewer").await;
    let socket = dir.join("trace.sock");
    let mut command = sidecar_command(&socket);
    command
        .env("KUBECONFIG", &cluster.kubeconfig)
        .env("CAPSULE_INTROSPECTION_VIEWS", "Traces")
        .env("CAPSULE_INTROSPECTION_REDACTION", "None")
        .env("CAPSULE_TRACE_REDACTION", "None");
    TracesOnly {
        sidecar: start_sidecar(command, dir),
        worker: start_worker(worker_command(Some(&socket)), dir),
        _cluster: cluster,
        viewer,
    }
}

#[tokio::test]
async fn traces_filtered_by_session_return_that_sessions_executions_and_lifecycle_only() {
    let dir = tempfile::tempdir().unwrap();
    let TracesOnly {
        _cluster,
        viewer,
        mut sidecar,
        mut worker,
    } = start_traces_only(dir.path()).await;

    // Two sessions in turn on one worker, released with a reset between them.
    for session in ["session-1", "session-2"] {
        bind_session(&worker, session, "session-token").await;
        let events = execute(&worker, "session-token", "6 * 7", None).await;
        assert_eq!(events.last().unwrap()["type"], "result");
        let released = reqwest::Client::new()
            .delete(worker.url("/v1/session?reset=true"))
            .bearer_auth("pool-secret-token")
            .send()
            .await
            .unwrap();
        assert_eq!(released.status(), 204);
    }

    for (session, other) in [("session-1", "session-2"), ("session-2", "session-1")] {
        let deadline = Instant::now() + WAIT;
        let body = loop {
            let path = format!("/v1/introspection/traces?session={session}");
            let (status, body) = get(&sidecar, &path, Some(&viewer)).await;
            assert_eq!(status, 200, "{body}");
            let kinds: Vec<&str> = body["executions"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|e| e["events"].as_array().unwrap())
                .filter_map(|e| e["kind"].as_str())
                .collect();
            if ["sessionBound", "sessionReleased", "submit", "result"]
                .iter()
                .all(|k| kinds.contains(k))
            {
                break body;
            }
            assert!(Instant::now() < deadline, "{session}: {body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let text = body.to_string();
        assert!(!text.contains(other), "{session} shows {other}: {text}");
        for execution in body["executions"].as_array().unwrap() {
            for event in execution["events"].as_array().unwrap() {
                assert_eq!(event["session"], session, "{event}");
            }
        }
    }
    worker.stop();
    sidecar.stop();
}

/// The events of one execution in the Traces view, polled until `kinds` all showed up.
async fn execution_view(sidecar: &Running, viewer: &str, id: &str, kinds: &[&str]) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get(
            sidecar,
            &format!("/v1/introspection/traces/{id}"),
            Some(viewer),
        )
        .await;
        let seen: Vec<&str> = body["events"]
            .as_array()
            .map(|events| events.iter().filter_map(|e| e["kind"].as_str()).collect())
            .unwrap_or_default();
        if status == 200 && kinds.iter().all(|k| seen.contains(k)) {
            return body;
        }
        assert!(Instant::now() < deadline, "{id}: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_execution_view_shows_one_execution_and_a_shutdown_shows_its_rejected_promises() {
    let dir = tempfile::tempdir().unwrap();
    let TracesOnly {
        _cluster,
        viewer,
        mut sidecar,
        mut worker,
    } = start_traces_only(dir.path()).await;
    bind_session(&worker, "s", "session-token").await;

    let ok = execute(&worker, "session-token", "6 * 7", None).await;
    let failed = execute(&worker, "session-token", "1 / 0", None).await;
    let (ok_id, failed_id) = (
        ok[0]["executionId"].as_str().unwrap(),
        failed[0]["executionId"].as_str().unwrap(),
    );
    let body = execution_view(&sidecar, &viewer, ok_id, &["submit", "result"]).await;
    assert_eq!(body["executionId"], ok_id);
    let text = body.to_string();
    assert!(
        !text.contains(failed_id) && !text.contains("\"error\""),
        "{text}"
    );
    execution_view(&sidecar, &viewer, failed_id, &["submit", "error"]).await;
    let (status, _) = get(
        &sidecar,
        "/v1/introspection/traces/no-such-execution",
        Some(&viewer),
    )
    .await;
    assert_eq!(status, 404);

    // A promise still pending when the worker stops is rejected; the trace says so for the
    // execution and, once for the whole bridge, under the execution id `worker`.
    let url = worker.url("/v1/executions");
    let held = tokio::spawn(async move {
        let response = reqwest::Client::new()
            .post(url)
            .bearer_auth("session-token")
            .json(&serde_json::json!({"code": "import capsule\nawait capsule.promise('held', timeout=600)"}))
            .send()
            .await
            .expect("execute");
        response.text().await.expect("execute body")
    });
    let deadline = Instant::now() + WAIT;
    while !reqwest::Client::new()
        .get(worker.url("/v1/stats"))
        .bearer_auth("session-token")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        .contains("\"held\"")
    {
        assert!(
            Instant::now() < deadline,
            "the promise never became pending"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.stop();
    let stream = held.await.unwrap();
    let last: Value = serde_json::from_str(stream.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "error", "{stream}");
    assert!(
        last["evalue"].as_str().unwrap().contains("shutting down"),
        "{last}"
    );
    let held_id = last["executionId"].as_str().unwrap();
    execution_view(
        &sidecar,
        &viewer,
        held_id,
        &["promiseCreated", "promiseRejected"],
    )
    .await;
    let bridge = execution_view(&sidecar, &viewer, "worker", &["bridgeShutdown"]).await;
    assert!(bridge.to_string().contains("\"pending\""), "{bridge}");
    sidecar.stop();
}
