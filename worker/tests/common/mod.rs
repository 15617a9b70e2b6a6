//! Shared helpers: start the real `capsule-worker` binary against a real python3 and talk HTTP.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use capsule_protocol::execute::{EventBody, ExecuteRequest, ExecutionEvent, WorkerStats};
use capsule_protocol::heartbeat::SessionBinding;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const WORKER_TOKEN: &str = "pool-token-for-tests";
pub const SESSION_TOKEN: &str = "session-token-for-tests";
/// Generous bound for anything a loaded 2-core machine should finish.
pub const WAIT: Duration = Duration::from_secs(30);

/// The python3 the tests use: `$CAPSULE_TOOLS_DIR/bin/python3` when present, else `python3`.
pub fn python() -> String {
    if let Ok(dir) = std::env::var("CAPSULE_TOOLS_DIR") {
        let candidate = format!("{dir}/bin/python3");
        if std::path::Path::new(&candidate).exists() {
            return candidate;
        }
    }
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 (3.8+) is required by the capsule-worker tests: install it (apt-get install python3) \
         or put one in $CAPSULE_TOOLS_DIR/bin/python3"
    );
    "python3".to_owned()
}

pub fn sha256_hex(value: &str) -> String {
    capsule_protocol::auth::token_sha256_hex(value)
}

pub struct Worker {
    child: Child,
    pub base: String,
    pub client: reqwest::Client,
    /// Where a copy of the binary runs from, for a worker started as another user.
    _copy_dir: Option<tempfile::TempDir>,
}

impl Worker {
    /// Starts a worker with extra env vars, waits until it is ready, and binds the test session.
    pub async fn start(envs: &[(&str, &str)]) -> Worker {
        let worker = Self::start_unbound(envs).await;
        worker.wait_ready().await;
        worker.bind().await;
        worker
    }

    /// Starts a worker (and so its interpreter) as `uid`:`uid`, ready and bound.
    pub async fn start_as(uid: u32, envs: &[(&str, &str)]) -> Worker {
        let worker = Self::spawn(Some(uid), envs, Stdio::inherit()).await;
        worker.wait_ready().await;
        worker.bind().await;
        worker
    }

    /// Starts a worker without waiting for readiness or binding a session.
    pub async fn start_unbound(envs: &[(&str, &str)]) -> Worker {
        Self::spawn(None, envs, Stdio::inherit()).await
    }

    /// [`Worker::start`] with the worker's log written to `log`.
    pub async fn start_logging_to(log: &std::path::Path, envs: &[(&str, &str)]) -> Worker {
        let file = std::fs::File::create(log).expect("log file");
        let worker = Self::spawn(None, envs, Stdio::from(file)).await;
        worker.wait_ready().await;
        worker.bind().await;
        worker
    }

    async fn spawn(uid: Option<u32>, envs: &[(&str, &str)], stderr: Stdio) -> Worker {
        let (copy_dir, binary) = match uid {
            Some(_) => {
                let (dir, copy) = reachable_copy(env!("CARGO_BIN_EXE_capsule-worker"));
                (Some(dir), copy)
            }
            None => (None, env!("CARGO_BIN_EXE_capsule-worker").into()),
        };
        let mut command = Command::new(binary);
        if let Some(uid) = uid {
            command.uid(uid).gid(uid);
        }
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
            .env("CAPSULE_WORKER_TOKEN", WORKER_TOKEN)
            .env("CAPSULE_PYTHON", python())
            .env("POD_NAME", "worker-0")
            .env("POD_NAMESPACE", "tests")
            .env("CAPSULE_POOL", "pool-a")
            .env("RUST_LOG", "capsule_worker=warn")
            // A loaded machine may take a while to schedule the interrupted interpreter; tests
            // that want the kill path set a short grace themselves.
            .env("CAPSULE_CANCEL_GRACE_MS", "15000")
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        for (key, value) in envs {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start capsule-worker");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("worker printed its address in time")
            .unwrap()
            .expect("worker printed a line");
        let addr = line
            .strip_prefix("capsule-worker listening on ")
            .unwrap_or_else(|| panic!("unexpected first line: {line}"))
            .to_owned();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Worker {
            child,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            _copy_dir: copy_dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = self.client.get(self.url("/readyz")).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "worker not ready in time"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn bind(&self) {
        let response = self
            .client
            .put(self.url("/v1/session"))
            .bearer_auth(WORKER_TOKEN)
            .json(&SessionBinding {
                session: "session-a".into(),
                namespace: "tests".into(),
                token_sha256: sha256_hex(SESSION_TOKEN),
                session_uid: None,
                checkpoint_key: None,
            })
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 204);
    }

    /// Releases the session as the operator does for `onRelease: Reset`.
    pub async fn release_with_reset(&self) {
        let released = self
            .client
            .delete(self.url("/v1/session?reset=true"))
            .bearer_auth(WORKER_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(released.status(), 204);
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.url(path)).bearer_auth(SESSION_TOKEN)
    }

    /// Cancels execution `id` and returns the reply (`status`: `cancelling` or `notRunning`).
    pub async fn cancel(&self, id: &str) -> serde_json::Value {
        let reply = self
            .post(&format!("/v1/executions/{id}/cancel"))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), 200, "cancel refused");
        reply.json().await.unwrap()
    }

    /// Starts an execution and returns its open event stream.
    pub async fn stream(&self, request: &ExecuteRequest) -> EventStream {
        let response = self
            .post("/v1/executions")
            .json(request)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "execute refused");
        assert_eq!(response.headers()["content-type"], "application/x-ndjson",);
        EventStream {
            response,
            buffer: Vec::new(),
        }
    }

    /// Runs code to its final event and returns every event.
    pub async fn run(&self, code: &str) -> Vec<ExecutionEvent> {
        self.run_request(&ExecuteRequest {
            code: code.into(),
            ..Default::default()
        })
        .await
    }

    pub async fn run_request(&self, request: &ExecuteRequest) -> Vec<ExecutionEvent> {
        let mut stream = self.stream(request).await;
        tokio::time::timeout(Duration::from_secs(60), stream.collect())
            .await
            .expect("execution finished in time")
    }

    pub async fn stats(&self) -> WorkerStats {
        self.client
            .get(self.url("/v1/stats"))
            .bearer_auth(SESSION_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }
}

/// A copy of `binary` any uid can run, removed with the returned directory: the build tree may
/// sit under a directory only root can cross.
pub fn reachable_copy(binary: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("capsule-worker");
    std::fs::copy(binary, &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, copy)
}

pub struct EventStream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl EventStream {
    pub async fn next(&mut self) -> Option<ExecutionEvent> {
        loop {
            if let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buffer.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("valid NDJSON event"));
            }
            match self.response.chunk().await.unwrap() {
                Some(chunk) => self.buffer.extend_from_slice(&chunk),
                None => {
                    assert!(self.buffer.is_empty(), "stream ended mid-line");
                    return None;
                }
            }
        }
    }

    /// Next event, with a generous timeout.
    pub async fn expect_next(&mut self) -> ExecutionEvent {
        tokio::time::timeout(WAIT, self.next())
            .await
            .expect("event in time")
            .expect("stream still open")
    }

    /// Reads events until one `is` matches, and returns the execution's id.
    pub async fn id_once(&mut self, is: impl Fn(&EventBody) -> bool) -> String {
        loop {
            let event = self.expect_next().await;
            if is(&event.body) {
                return event.execution_id;
            }
        }
    }

    pub async fn collect(&mut self) -> Vec<ExecutionEvent> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

/// The final event, checking there is exactly one and that it is last.
pub fn final_event(events: &[ExecutionEvent]) -> &EventBody {
    let finals: Vec<_> = events.iter().filter(|e| e.body.is_final()).collect();
    assert_eq!(finals.len(), 1, "exactly one final event: {events:?}");
    let last = &events.last().unwrap().body;
    assert!(last.is_final(), "final event is last: {events:?}");
    last
}

/// Concatenated output as (stream, text) runs, merged when consecutive chunks share a stream.
pub fn outputs(events: &[ExecutionEvent]) -> Vec<(String, String)> {
    let mut runs: Vec<(String, String)> = Vec::new();
    for event in events {
        if let EventBody::Output { stream, text } = &event.body {
            let name = format!("{stream:?}").to_lowercase();
            match runs.last_mut() {
                Some((last, acc)) if *last == name => acc.push_str(text),
                _ => runs.push((name, text.clone())),
            }
        }
    }
    runs
}

pub fn result_repr(events: &[ExecutionEvent]) -> Option<String> {
    match final_event(events) {
        EventBody::Result { repr, .. } => repr.clone(),
        other => panic!("expected a result, got {other:?}"),
    }
}
