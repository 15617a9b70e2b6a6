//! Shared by the integration tests: locating and starting the real binaries, reading metrics.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(30);

/// The workspace root (two levels above this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

pub fn tools_dir() -> PathBuf {
    std::env::var_os("CAPSULE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".tools"))
}

/// A tool under `$CAPSULE_TOOLS_DIR`; panics with the install hint when missing.
pub fn tool(relative: &str, install: &str) -> PathBuf {
    let path = tools_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run `scripts/install-tools.sh {install}` (or set CAPSULE_TOOLS_DIR)",
        path.display()
    );
    path
}

/// The target profile directory this test binary runs from (`<target>/<profile>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("target profile dir")
        .to_path_buf()
}

/// Another package's binary in the same target dir, built first when missing (fails loudly).
pub fn sibling_binary(package: &str, bin: &str) -> PathBuf {
    let dir = profile_dir();
    let path = dir.join(bin);
    if !path.exists() {
        let target_dir = dir.parent().expect("target dir");
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(workspace_root())
            .env("CARGO_TARGET_DIR", target_dir)
            .args(["build", "-p", package, "--bin", bin]);
        if dir.file_name().is_some_and(|n| n == "release") {
            command.arg("--release");
        }
        let status = command.status().expect("running cargo build");
        assert!(
            status.success() && path.exists(),
            "could not build {bin}: run `CARGO_TARGET_DIR={} cargo build -p {package}`",
            target_dir.display()
        );
    }
    path
}

/// A running child process, killed on drop.
pub struct Running {
    pub child: Child,
    pub addr: String,
    pub stderr_path: PathBuf,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then wait up to [`WAIT`].
    pub fn stop(&mut self) {
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status();
}

/// Starts `command`, waits for its `<prefix> <addr>` line on stdout, logs stderr to a file.
pub fn start_with_ready_line(mut command: Command, prefix: &str, stderr_path: &Path) -> Running {
    let stderr = std::fs::File::create(stderr_path).expect("stderr file");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr);
    let mut child = command.spawn().expect("spawning the process");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let wanted = prefix.to_owned();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            if let Some(rest) = line.strip_prefix(&wanted) {
                let _ = tx.send(rest.trim().to_owned());
                break;
            }
        }
        // Keep draining so the child never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(WAIT) {
        Ok(addr) => Running {
            child,
            addr,
            stderr_path: stderr_path.to_path_buf(),
        },
        Err(_) => {
            let _ = child.kill();
            panic!(
                "no ready line {prefix:?} within {WAIT:?}; stderr:\n{}",
                std::fs::read_to_string(stderr_path).unwrap_or_default()
            );
        }
    }
}

/// A `capsule-sidecar` command with a clean environment and the given socket; HTTP on a free port.
pub fn sidecar_command(socket: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_capsule-sidecar"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_TRACE_SOCKET", socket)
        .env("CAPSULE_POOL", "pool-a")
        .env("POD_NAMESPACE", "team-a")
        .env("POD_NAME", "pool-a-worker-1")
        .env("CAPSULE_WORKER_TOKEN", "pool-secret-token")
        .env("CAPSULE_LOG_FORMAT", "json")
        // No cluster credentials unless a test provides them.
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    command
}

pub fn start_sidecar(command: Command, dir: &Path) -> Running {
    start_with_ready_line(
        command,
        "capsule-sidecar listening on",
        &dir.join("sidecar.stderr"),
    )
}

/// Waits until `socket` exists.
pub fn wait_for_path(path: &Path) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One sample's value from Prometheus text (`name` with its labels exactly as printed).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

pub async fn scrape(sidecar: &Running) -> String {
    reqwest::get(sidecar.url("/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("metrics body")
}

/// Polls `/metrics` until `series` reaches `at_least`; returns the last scrape.
pub async fn wait_for_metric(sidecar: &Running, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = scrape(sidecar).await;
        if metric(&text, series).is_some_and(|v| v >= at_least) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}; last scrape:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory of `pid` in bytes (VmRSS).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// The python3 the worker should run (tools dir first, like the worker's own tests).
pub fn python() -> PathBuf {
    let tools = tools_dir().join("bin/python3");
    if tools.exists() {
        return tools;
    }
    PathBuf::from("python3")
}

/// A `capsule-worker` command on a free port with a session-less worker credential.
pub fn worker_command(trace_socket: Option<&Path>) -> Command {
    let mut command = Command::new(sibling_binary("capsule-worker", "capsule-worker"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("CAPSULE_LISTEN_ADDR", "127.0.0.1:0")
        .env("CAPSULE_WORKER_TOKEN", "pool-secret-token")
        .env("CAPSULE_PYTHON", python())
        .env("RUST_LOG", "warn");
    if let Some(socket) = trace_socket {
        command.env("CAPSULE_TRACE_SOCKET", socket);
    }
    command
}

pub fn start_worker(command: Command, dir: &Path) -> Running {
    start_with_ready_line(
        command,
        "capsule-worker listening on",
        &dir.join("worker.stderr"),
    )
}

/// Binds the worker to `session` with `session_token`, then waits until it is ready.
pub async fn bind_session(worker: &Running, session: &str, session_token: &str) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + WAIT;
    loop {
        let ready = http.get(worker.url("/readyz")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker never ready:\n{}",
            worker.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let response = http
        .put(worker.url("/v1/session"))
        .bearer_auth("pool-secret-token")
        .json(&serde_json::json!({
            "session": session,
            "namespace": "team-a",
            "tokenSha256": capsule_protocol::auth::token_sha256_hex(session_token),
        }))
        .send()
        .await
        .expect("bind session");
    assert_eq!(response.status(), 204, "binding the session");
}

/// Runs `code` with an optional traceparent; returns the NDJSON events.
pub async fn execute(
    worker: &Running,
    session_token: &str,
    code: &str,
    traceparent: Option<&str>,
) -> Vec<serde_json::Value> {
    let mut request = reqwest::Client::new()
        .post(worker.url("/v1/executions"))
        .bearer_auth(session_token)
        .json(&serde_json::json!({ "code": code }));
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    let response = request.send().await.expect("execute");
    assert_eq!(response.status(), 200, "execute status");
    let body = response.text().await.expect("execute body");
    body.lines()
        .map(|l| serde_json::from_str(l).expect("ndjson line"))
        .collect()
}
