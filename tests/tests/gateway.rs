//! The session gateway end to end, with real processes: the devcluster, the operator (with
//! `--gateway-url`), workers, and the `capsule-gateway` binary, reached over HTTP as a client
//! outside the cluster would. Executes, streams, answers input, cancels, refuses wrong tokens and
//! unknown sessions, reports a lost worker as 409 WorkerLost, and follows a session created again
//! under the same name to its new worker and token.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use capsule_e2e::{
    free_port, http, session_token, start_gateway, wait_for, wait_session_phase, DevCluster,
    OperatorRun,
};
use serde_json::{json, Value};

const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: gw
  namespace: default
spec:
  replicas: 1
  maxWorkers: 3
  scaleDownDelaySeconds: 0
  template:
    image: capsule-worker:dev
  heartbeat:
    intervalSeconds: 1
    stalenessSeconds: 4
  sessions:
    idleTimeoutSeconds: 0
"#;

fn session(name: &str) -> String {
    format!(
        "apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  pool: gw\n"
    )
}

/// The session's token (read once, as a client that may read its Secret does) and its worker.
fn token_and_worker(cluster: &DevCluster, name: &str) -> (String, String) {
    wait_session_phase(cluster, name, "Bound", Duration::from_secs(90));
    let worker = cluster.jsonpath(&["csess", name], "{.status.worker}");
    (session_token(cluster, name), worker)
}

/// Posts `code` and returns the stream's events as they arrive, each with its arrival time.
fn execute(base: &str, token: &str, code: &str) -> impl Iterator<Item = (Instant, Value)> {
    let response = http()
        .post(format!("{base}/executions"))
        .bearer_auth(token)
        .json(&json!({"code": code}))
        .send()
        .expect("execute through the gateway");
    assert_eq!(response.status(), 200, "execute status");
    assert!(response.headers().contains_key("x-capsule-execution-id"));
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    BufReader::new(response).lines().map(|line| {
        (
            Instant::now(),
            serde_json::from_str(&line.unwrap()).unwrap(),
        )
    })
}

fn final_event(base: &str, token: &str, code: &str) -> Value {
    execute(base, token, code).last().expect("a final event").1
}

/// An answer's status and error code; the message (or, for a success, the whole body) for
/// inspection. A success has no code, which tests waiting for an error must survive.
fn error_of(response: reqwest::blocking::Response) -> (u16, String, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().unwrap();
    let code = body["code"].as_str().unwrap_or_default().to_string();
    let message = match body["message"].as_str() {
        Some(message) => message.to_string(),
        None => body.to_string(),
    };
    (status, code, message)
}

#[test]
fn a_client_reaches_its_session_through_the_gateway_and_follows_a_rebinding() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    let gw_port = free_port();
    let gateway_url = format!("http://127.0.0.1:{gw_port}");
    let mut run = OperatorRun::on_port(free_port());
    run.extra_args = vec!["--gateway-url".into(), gateway_url.clone()];
    let _operator = run.start(&cluster, &dir.path().join("operator.log"));
    let _gateway = start_gateway(&cluster, gw_port, &dir.path().join("gateway.log"));
    cluster.apply(POOL);
    cluster.apply(&session("s1"));
    let (token, worker) = token_and_worker(&cluster, "s1");
    let base = cluster.jsonpath(&["csess", "s1"], "{.status.gatewayUrl}");
    assert_eq!(base, format!("{gateway_url}/v1/sessions/default/s1"));

    let last = final_event(&base, &token, "1 + 1");
    assert_eq!(
        (last["type"].as_str(), last["repr"].as_str()),
        (Some("result"), Some("2")),
        "{last}"
    );

    let wrong = http()
        .post(format!("{base}/executions"))
        .bearer_auth("not-the-token")
        .json(&json!({"code": "1"}))
        .send()
        .unwrap();
    assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    assert_eq!(error_of(wrong).1, "unauthorized");
    let unknown = http()
        .get(format!("{gateway_url}/v1/sessions/default/nobody/stats"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    let (status, code, _) = error_of(unknown);
    assert_eq!((status, code.as_str()), (404, "sessionNotFound"));
    let stats = http()
        .get(format!("{base}/stats"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(stats.status(), 200);

    streams_without_buffering(&base, &token);
    answers_input_and_cancels(&base, &token);

    // The bound worker pod goes: the operator fails the session, the gateway says why.
    cluster.kubectl(&["delete", "pod", &worker, "--wait=false"]);
    wait_for(
        "409 WorkerLost from the gateway",
        Duration::from_secs(60),
        || {
            let response = http()
                .get(format!("{base}/stats"))
                .bearer_auth(&token)
                .send()
                .unwrap();
            match error_of(response) {
                (409, code, message)
                    if code == "sessionNotBound" && message.contains("WorkerLost") =>
                {
                    assert!(message.contains("Failed"), "{message}");
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            }
        },
    );

    // Created again under the same name: a new worker and a new token; the old token is refused.
    cluster.kubectl(&["delete", "csess", "s1", "--timeout=60s"]);
    wait_for(
        "the old session's token Secret collected",
        Duration::from_secs(60),
        || {
            let out = cluster.kubectl_output(&["get", "secret", "s1-session-token"], None);
            if out.status.success() {
                Err("still there".to_string())
            } else {
                Ok(())
            }
        },
    );
    cluster.apply(&session("s1"));
    let (new_token, new_worker) = token_and_worker(&cluster, "s1");
    assert_ne!(new_worker, worker);
    assert_ne!(new_token, token);
    wait_for(
        "the gateway follows the new binding",
        Duration::from_secs(30),
        || {
            let response = http()
                .get(format!("{base}/stats"))
                .bearer_auth(&new_token)
                .send()
                .unwrap();
            if response.status() == 200 {
                Ok(())
            } else {
                Err(format!("{:?}", error_of(response)))
            }
        },
    );
    let last = final_event(&base, &new_token, "6 * 7");
    assert_eq!(last["repr"], "42", "{last}");
    let old = http()
        .get(format!("{base}/stats"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(error_of(old).0, 401);

    let metrics = http()
        .get(format!("{gateway_url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics
            .contains("capsule_gateway_requests_total{route=\"executions\",status_class=\"2xx\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("capsule_gateway_sessions_indexed 1"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("s1"),
        "no session names in metrics: {metrics}"
    );
    capsule_e2e::prometheus::assert_promtool_clean("the gateway's /metrics", &metrics);
}

/// Code that prints, sleeps 2 s and prints: the first line arrives long before the end.
fn streams_without_buffering(base: &str, token: &str) {
    let code = "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second')";
    let events: Vec<(Instant, Value)> = execute(base, token, code).collect();
    let first = events
        .iter()
        .find(|(_, e)| e["type"] == "output" && e["text"].as_str().unwrap_or("").contains("first"))
        .expect("first output");
    let (end, last) = events.last().unwrap();
    assert_eq!(last["type"], "result", "{last}");
    let gap = end.duration_since(first.0);
    assert!(
        gap >= Duration::from_millis(1500),
        "the first line arrived only {gap:?} before the end"
    );
}

/// `input()` answered and a running execution cancelled, both through the gateway.
fn answers_input_and_cancels(base: &str, token: &str) {
    let mut events = execute(base, token, "name = input('who? ')\nname.upper()");
    let (_, request) = events
        .by_ref()
        .find(|(_, e)| e["type"] == "inputRequest")
        .expect("an input request");
    let id = request["executionId"].as_str().unwrap();
    let answer = http()
        .post(format!("{base}/executions/{id}/input"))
        .bearer_auth(token)
        .json(&json!({"inputId": request["inputId"], "value": "bob"}))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 204);
    let (_, last) = events.last().unwrap();
    assert_eq!(last["repr"], "'BOB'", "{last}");

    let mut events = execute(base, token, "import time\ntime.sleep(30)");
    let (_, started) = events
        .by_ref()
        .find(|(_, e)| e["type"] == "started")
        .expect("started");
    let id = started["executionId"].as_str().unwrap();
    let cancel = http()
        .post(format!("{base}/executions/{id}/cancel"))
        .bearer_auth(token)
        .send()
        .unwrap();
    assert_eq!(cancel.status(), 200);
    let reply: Value = cancel.json().unwrap();
    assert_eq!(reply["status"], "cancelling", "{reply}");
    let (_, last) = events.last().unwrap();
    assert_eq!(last["type"], "cancelled", "{last}");
}
