//! The `capsule-devcluster serve` binary as a real process: ready line, kubeconfig, kubectl against
//! it, clean exit on SIGTERM with the snapshot saved, and objects back after a restart.

mod common;

use common::{kubectl_path, WAIT};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};

struct Served {
    child: tokio::process::Child,
    kubeconfig: String,
}

async fn serve(state_dir: &std::path::Path, snapshot: &std::path::Path) -> Served {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_capsule-devcluster"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-kubelet",
            "--state-dir",
        ])
        .arg(state_dir)
        .arg("--snapshot")
        .arg(snapshot)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("ready in time")
        .unwrap()
        .expect("a ready line");
    let mut parts = ready.split_whitespace();
    assert_eq!(parts.next(), Some("ready"), "{ready}");
    let kubeconfig = parts
        .next()
        .and_then(|p| p.strip_prefix("kubeconfig="))
        .expect("kubeconfig=")
        .to_string();
    let url = parts
        .next()
        .and_then(|p| p.strip_prefix("url="))
        .expect("url=");
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    Served { child, kubeconfig }
}

async fn kubectl(served: &Served, home: &std::path::Path, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(kubectl_path())
        .args(args)
        .env("KUBECONFIG", &served.kubeconfig)
        .env("HOME", home)
        .output()
        .await
        .expect("kubectl runs")
}

async fn terminate(mut served: Served) {
    let pid = served.child.id().expect("running").to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = tokio::time::timeout(WAIT, served.child.wait())
        .await
        .expect("exits in time")
        .unwrap();
    assert!(exit.success(), "clean exit on SIGTERM: {exit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_prints_ready_answers_kubectl_and_keeps_objects_across_restarts() {
    let dir =
        std::env::temp_dir().join(format!("capsule-devcluster-binary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (state, snapshot) = (dir.join("state"), dir.join("snapshot.json"));

    let served = serve(&state, &snapshot).await;
    let out = kubectl(
        &served,
        &dir,
        &["create", "configmap", "kept", "--from-literal=k=v"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    terminate(served).await;
    assert!(snapshot.exists(), "the snapshot is written at shutdown");

    let served = serve(&state, &snapshot).await;
    let out = kubectl(
        &served,
        &dir,
        &["get", "configmap", "kept", "-o", "jsonpath={.data.k}"],
    )
    .await;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "v",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    terminate(served).await;
    let _ = std::fs::remove_dir_all(&dir);
}
