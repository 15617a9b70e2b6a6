//! Killing the process that runs the devcluster and its kubelet (SIGKILL: no chance to clean up)
//! leaves no pod process behind, not even a grandchild the container forked.
//!
//! The devcluster runs in a child process: this test binary run again with only the ignored
//! `devcluster_host` helper selected.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{process_alive, Kubectl, WAIT};

const HOST_DIR_ENV: &str = "CAPSULE_KUBELET_E2E_HOST_DIR";

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: { name: family, namespace: default }
spec:
  volumes:
    - { name: data, emptyDir: {} }
  containers:
    - name: main
      image: busybox
      command: ["sh", "-c", "echo $$$$ > /data/parent; sleep 1000 & echo $! > /data/child; wait"]
      volumeMounts:
        - { name: data, mountPath: /data }
"#;

#[test]
#[ignore = "helper: run in a child process by killing_the_devcluster_leaves_no_pod_process_behind"]
fn devcluster_host() {
    let dir = PathBuf::from(std::env::var_os(HOST_DIR_ENV).expect("the host directory"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let server =
            capsule_devcluster::DevCluster::start(capsule_devcluster::DevClusterConfig::new(&dir))
                .await
                .expect("devcluster starts");
        let client = server.client().await.expect("admin client");
        let config = capsule_kubelet::KubeletConfig {
            node_name: support::NODE.into(),
            state_dir: server.state_dir().to_path_buf(),
            image_map: support::image_map(),
        };
        let never = tokio_util::sync::CancellationToken::new();
        capsule_kubelet::run_with_options(client, config, support::options(), never)
            .await
            .expect("kubelet runs");
    });
}

async fn read_pid(path: &Path) -> i32 {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_devcluster_leaves_no_pod_process_behind() {
    support::kubectl_path();
    let dir = tempfile::tempdir().unwrap();
    let mut host = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "devcluster_host",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOST_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("host process starts");
    let kubectl = Kubectl {
        kubeconfig: dir.path().join("kubeconfig"),
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while !kubectl
        .kubectl_output(&["get", "node", support::NODE], None)
        .await
        .status
        .success()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the devcluster never registered its node"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    kubectl.apply(POD).await;
    let pod = kubectl
        .wait_for("the pod running", &["pod", "family"], |pod| {
            pod["status"]["phase"] == "Running"
        })
        .await;
    let pod_dir = dir.path().join("pods").join(format!(
        "default_family_{}",
        pod["metadata"]["uid"].as_str().unwrap()
    ));
    let parent = read_pid(&pod_dir.join("volumes/data/parent")).await;
    let child = read_pid(&pod_dir.join("volumes/data/child")).await;
    assert!(process_alive(parent) && process_alive(child));

    host.start_kill().unwrap();
    host.wait().await.unwrap();

    let deadline = tokio::time::Instant::now() + WAIT;
    while process_alive(parent) || process_alive(child) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pod processes outlived the devcluster: parent alive {}, child alive {}",
            process_alive(parent),
            process_alive(child)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
