//! An in-process devcluster (the real API server from `capsule-devcluster`) with this crate's
//! kubelet, driven by the real `kubectl`.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use capsule_kubelet::runtime::Backoff;
use capsule_kubelet::{KubeletConfig, KubeletOptions};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(60);
pub const NODE: &str = "devcluster";

/// `kubectl` from `$CAPSULE_TOOLS_DIR/bin` (default: the repo's `.tools`); panics with the install
/// hint when it is missing.
pub fn kubectl_path() -> PathBuf {
    let tools = std::env::var_os("CAPSULE_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools"));
    let kubectl = tools.join("bin/kubectl");
    assert!(
        kubectl.exists(),
        "kubectl not found at {}: run `scripts/install-tools.sh kubectl` (or set CAPSULE_TOOLS_DIR)",
        kubectl.display()
    );
    kubectl
}

/// The image map every e2e test uses: `busybox*` runs the container's own command, `kubectl*`
/// runs the real kubectl with the container's args.
pub fn image_map() -> Vec<(String, Vec<String>)> {
    vec![
        ("busybox*".into(), vec!["{args}".into()]),
        (
            "kubectl*".into(),
            vec![
                kubectl_path().to_string_lossy().into_owned(),
                "{args}".into(),
            ],
        ),
    ]
}

/// `kubectl` against one kubeconfig.
pub struct Kubectl {
    pub kubeconfig: PathBuf,
}

pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub kubectl: Kubectl,
    pub state_dir: PathBuf,
    server: Option<capsule_devcluster::DevCluster>,
    stop: CancellationToken,
    kubelet: Option<tokio::task::JoinHandle<capsule_kubelet::Result<()>>>,
}

pub fn options() -> KubeletOptions {
    KubeletOptions {
        restart_backoff: Backoff {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(2),
        },
        ..KubeletOptions::default()
    }
}

impl Cluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = capsule_devcluster::DevCluster::start(
            capsule_devcluster::DevClusterConfig::new(dir.path()),
        )
        .await
        .expect("devcluster starts");
        let client = server.client().await.expect("admin client");
        let state_dir = server.state_dir().to_path_buf();
        let config = KubeletConfig {
            node_name: NODE.into(),
            state_dir: state_dir.clone(),
            image_map: image_map(),
        };
        let stop = CancellationToken::new();
        let kubelet = tokio::spawn(capsule_kubelet::run_with_options(
            client,
            config,
            options(),
            stop.clone(),
        ));
        Cluster {
            kubectl: Kubectl {
                kubeconfig: server.kubeconfig.clone(),
            },
            state_dir,
            dir,
            server: Some(server),
            stop,
            kubelet: Some(kubelet),
        }
    }

    /// Stops the kubelet (pods get SIGTERM, grace, SIGKILL) and then the server.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(kubelet) = self.kubelet.take() {
            tokio::time::timeout(WAIT, kubelet)
                .await
                .expect("kubelet stops in time")
                .expect("kubelet task")
                .expect("kubelet ran cleanly");
        }
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("server stops");
        }
    }
}

impl std::ops::Deref for Cluster {
    type Target = Kubectl;
    fn deref(&self) -> &Kubectl {
        &self.kubectl
    }
}

impl Kubectl {
    /// Runs kubectl; panics with its stderr when it fails.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_output(args, None).await;
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub async fn kubectl_output(&self, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use tokio::io::AsyncWriteExt;
        let mut command = tokio::process::Command::new(kubectl_path());
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("kubectl runs");
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).await.unwrap();
        }
        drop(input);
        tokio::time::timeout(WAIT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} hung"))
            .unwrap()
    }

    pub async fn apply(&self, manifest: &str) {
        let output = self
            .kubectl_output(&["apply", "-f", "-"], Some(manifest))
            .await;
        assert!(
            output.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub async fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["get"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&full).await).expect("kubectl prints JSON")
    }

    /// Polls `kubectl get ... -o json` until `condition` holds; panics with the last object.
    pub async fn wait_for(
        &self,
        what: &str,
        args: &[&str],
        mut condition: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut full = vec!["get"];
            full.extend_from_slice(args);
            full.extend_from_slice(&["-o", "json"]);
            let output = self.kubectl_output(&full, None).await;
            let value: serde_json::Value =
                serde_json::from_slice(&output.stdout).unwrap_or_default();
            if output.status.success() && condition(&value) {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("timed out waiting for {what}; last: {value:#}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// True while `pid` is a live (not zombie) process.
pub fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

pub fn pod_condition(pod: &serde_json::Value, kind: &str) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}
