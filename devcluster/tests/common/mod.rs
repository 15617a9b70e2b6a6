//! Shared test harness: an in-process devcluster per test and a real `kubectl` pointed at it.
#![allow(dead_code)]

use capsule_devcluster::{DevCluster, DevClusterConfig};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Generous bound for anything a test waits on (a loaded 2-core machine is slow).
pub const WAIT: Duration = Duration::from_secs(30);

pub fn kubectl_path() -> PathBuf {
    let tools = std::env::var_os("CAPSULE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.tools"));
    let path = tools.join("bin/kubectl");
    assert!(
        path.exists(),
        "kubectl not found at {}: install it with `scripts/install-tools.sh kubectl` (or `make tools`)",
        path.display()
    );
    path
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn fresh_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "capsule-devcluster-test-{}-{}-{label}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub struct Output {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

pub struct TestCluster {
    pub cluster: DevCluster,
    pub dir: PathBuf,
}

impl TestCluster {
    pub async fn start(label: &str) -> Self {
        Self::start_with(label, |_| {}).await
    }

    pub async fn start_with(label: &str, adjust: impl FnOnce(&mut DevClusterConfig)) -> Self {
        let dir = fresh_dir(label);
        let mut config = DevClusterConfig::new(dir.join("state"));
        adjust(&mut config);
        let cluster = DevCluster::start(config).await.expect("devcluster starts");
        TestCluster { cluster, dir }
    }

    pub fn kubectl_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(kubectl_path());
        command
            .args(args)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .env("HOME", &self.dir)
            .kill_on_drop(true);
        command
    }

    /// Runs kubectl to completion, feeding `stdin` if given.
    pub async fn kubectl_in(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut command = self.kubectl_command(args);
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("kubectl runs");
        let mut input = child.stdin.take().expect("piped");
        if let Some(text) = stdin {
            input
                .write_all(text.as_bytes())
                .await
                .expect("stdin written");
        }
        drop(input);
        let output = tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in {WAIT:?}"))
            .expect("kubectl output");
        Output {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_in(args, None).await
    }

    /// Runs kubectl and panics with its stderr unless it succeeds.
    pub async fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args).await;
        assert!(out.success, "kubectl {args:?} failed: {}", out.stderr);
        out.stdout
    }

    pub async fn apply(&self, yaml: &str, extra: &[&str]) -> Output {
        let mut args = vec!["apply", "-f", "-"];
        args.extend_from_slice(extra);
        self.kubectl_in(&args, Some(yaml)).await
    }

    /// Polls `check` (every 200 ms) until it holds or [`WAIT`] passes.
    pub async fn eventually<F, Fut>(&self, what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + WAIT;
        while tokio::time::Instant::now() < deadline {
            if check().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("timed out waiting for {what}");
    }

    pub async fn stop(self) {
        self.cluster.shutdown().await.expect("clean shutdown");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
