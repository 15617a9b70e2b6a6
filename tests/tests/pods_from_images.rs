//! The e2e main scenario with worker pods run from the real images (#22): the devcluster's kubelet
//! runs the worker and sidecar containers from `capsule-worker` / `capsule-sidecar` images
//! (`--image-root`, built by `scripts/images.sh` from the debug binaries), each in its own mount
//! and PID namespaces with a read-only root, as the image's user. The operator (a host process)
//! warms a pool, a session binds, code runs, status and Prometheus see it. Then what the image
//! mode adds is checked from inside the interpreter: it runs as 65533 in the pod's `interpreter`
//! container, its `/proc` shows that container's processes only (the fork server as PID 1, no
//! worker), its root is read-only, and it sees the image's files, not the host's.
//!
//! Needs root and buildah (installed by `scripts/install-tools.sh buildah mmdebstrap`, as CI runs).

use std::time::{Duration, Instant};

use capsule_e2e::images::{ensure_images, image, script};
use capsule_e2e::prometheus::{promql, start_prometheus};
use capsule_e2e::{
    free_port, http, session_token, start_operator, wait_for, wait_session_phase, workspace,
    DevCluster,
};
use serde_json::{json, Value};

const POOL: &str = r#"
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata:
  name: img
  namespace: default
spec:
  replicas: 2
  maxWorkers: 3
  template:
    image: capsule-worker:dev
  heartbeat:
    intervalSeconds: 1
    stalenessSeconds: 6
"#;

const SESSION: &str = "apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata:\n  name: s1\n  namespace: default\nspec:\n  pool: img\n";

/// A pod from the worker image with a writable root (no `readOnlyRootFilesystem`): it writes into
/// its image's home; `reader` then looks for that file from a second pod of the same image.
fn python_pod(name: &str, code: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  restartPolicy: Never\n  automountServiceAccountToken: false\n  containers:\n  - name: c\n    image: capsule-worker:dev\n    command: [/usr/bin/python3, -c]\n    args: [{code:?}]\n"
    )
}

const PROBED_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: probed, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  automountServiceAccountToken: false
  containers:
  - name: c
    image: capsule-worker:dev
    command: [/usr/bin/python3, -c]
    args: ["import time; open('/home/capsule/ready', 'w').close(); time.sleep(600)"]
    readinessProbe:
      exec: {command: [test, -f, /home/capsule/ready]}
      periodSeconds: 1
"#;

const MISSING_POD: &str = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: missing\n  namespace: default\nspec:\n  containers:\n  - name: c\n    image: capsule-missing:1\n";

/// Waits for pod `name` to succeed; returns its log.
fn pod_output(cluster: &DevCluster, name: &str) -> String {
    wait_for(
        &format!("pod {name} succeeded"),
        Duration::from_secs(60),
        || {
            let phase = cluster.jsonpath(&["pod", name], "{.status.phase}");
            (phase == "Succeeded").then_some(()).ok_or(phase)
        },
    );
    cluster.kubectl(&["logs", name])
}

/// Process names that must not show in a worker container's `/proc` (other pods, the sidecar of
/// its own pod, the devcluster, the operator, Prometheus); `comm` is cut to 15 characters.
const FOREIGN: &[&str] = &[
    "capsule-sidecar",
    "capsule-devclus",
    "capsule-operato",
    "prometheus",
    "cargo",
];

/// Runs `code` with the session's token; the repr of its result (panics on anything else).
fn execute(endpoint: &str, token: &str, code: &str) -> String {
    let response = http()
        .post(format!("{endpoint}/v1/executions"))
        .bearer_auth(token)
        .json(&json!({"code": code, "timeoutMs": 20_000}))
        .send()
        .expect("execute request");
    assert_eq!(response.status(), 200, "execute {code}");
    let body = response.text().unwrap();
    let last: Value = body
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no events for {code}: {body}"));
    assert_eq!(last["type"], "result", "{code}: {body}");
    last["repr"].as_str().unwrap_or_default().to_string()
}

/// What the interpreter sees, as a Python literal: uid, gid, the `comm` of every process in its
/// `/proc` with PID 1's first, whether its root filesystem is read-only, whether the image's worker
/// binary and the host's workspace are there.
fn isolation_probe() -> String {
    let workspace = workspace().join("Cargo.toml");
    format!(
        r#"import os
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
names = [open(f'/proc/{{p}}/comm').read().strip() for p in pids]
read_only_root = bool(os.statvfs('/').f_flag & os.ST_RDONLY)
(os.getuid(), os.getgid(), pids[0], names, read_only_root,
 os.path.exists('/usr/local/bin/capsule-worker'), os.path.exists({workspace:?}))"#
    )
}

#[test]
fn pool_warms_session_binds_and_code_runs_in_pods_from_the_images() {
    let started = Instant::now();
    ensure_images();
    let images_ready = started.elapsed();
    let dir = tempfile::tempdir().unwrap();
    let buildah = script("buildah.sh");
    let args: Vec<String> = [
        "--buildah".to_string(),
        buildah.display().to_string(),
        "--image-root".into(),
        format!("capsule-worker:*={}", image("capsule-worker")),
        "--image-root".into(),
        format!("capsule-sidecar:*={}", image("capsule-sidecar")),
        "--image-root".into(),
        "capsule-missing:*=localhost/capsule-e2e/never-built:0".into(),
    ]
    .into();
    let cluster = DevCluster::start_with_args(dir.path(), &args);
    cluster.install_crds();
    let port = free_port();
    let _operator = start_operator(&cluster, port, &dir.path().join("operator.log"), &[]);

    cluster.apply(POOL);
    wait_for("two idle workers", Duration::from_secs(120), || {
        let idle = cluster.jsonpath(&["cpool", "img"], "{.status.idle}");
        let pods = cluster.kubectl(&["get", "pods", "-o", "wide"]);
        (idle == "2")
            .then_some(())
            .ok_or(format!("idle={idle:?}\n{pods}"))
    });
    let warm = started.elapsed();

    cluster.apply(SESSION);
    wait_session_phase(&cluster, "s1", "Bound", Duration::from_secs(60));
    let endpoint = cluster.jsonpath(&["csess", "s1"], "{.status.endpoint}");
    let token = session_token(&cluster, "s1");
    assert_eq!(execute(&endpoint, &token, "1+1"), "2");

    let seen = execute(&endpoint, &token, &isolation_probe());
    eprintln!("inside the interpreter container: {seen}");
    assert!(
        seen.starts_with("(65533, 65533, 1, ['python3', 'python3', 'python3'"),
        "the interpreter runs under its own uid, PID 1 is the fork server, with the session's \
         interpreter and the standby: {seen}"
    );
    assert!(
        !seen.contains("'capsule-worker'"),
        "the worker is not in the interpreter container: {seen}"
    );
    for name in FOREIGN {
        assert!(
            !seen.contains(&format!("'{name}'")),
            "{name} shows in the container's /proc: {seen}"
        );
    }
    assert!(
        seen.ends_with("True, True, False)"),
        "read-only root, the image's files, no host workspace: {seen}"
    );

    wait_for(
        "status counts the executions",
        Duration::from_secs(30),
        || {
            let bound = cluster.jsonpath(&["cpool", "img"], "{.status.bound}");
            let ok = cluster.jsonpath(&["cpool", "img"], "{.status.executions.ok}");
            let done = bound == "1" && ok.parse::<i64>().unwrap_or(0) >= 2;
            done.then_some(()).ok_or(format!("bound={bound} ok={ok}"))
        },
    );
    let (_prometheus, prom_port) = start_prometheus(dir.path(), port);
    wait_for("Prometheus sees the pool", Duration::from_secs(60), || {
        let bound = promql(
            prom_port,
            "capsule_pool_workers{namespace=\"default\",pool=\"img\",phase=\"Bound\"}",
        );
        let hits = promql(
            prom_port,
            "capsule_pool_hits_total{namespace=\"default\",pool=\"img\"}",
        );
        (bound == Some(1.0) && hits == Some(1.0))
            .then_some(())
            .ok_or(format!("bound={bound:?} hits={hits:?}"))
    });

    // A writable root is a layer of the container's own: the image's rootfs, shared, stays as built.
    cluster.apply(&python_pod(
        "writer",
        "import os; open('/home/capsule/mark', 'w').write('x'); print(os.getuid(), os.path.exists('/home/capsule/mark'))",
    ));
    assert_eq!(pod_output(&cluster, "writer").trim(), "65532 True");
    cluster.apply(&python_pod(
        "reader",
        "import os; print(os.path.exists('/home/capsule/mark'))",
    ));
    assert_eq!(pod_output(&cluster, "reader").trim(), "False");

    // An exec probe runs inside the container: the file it tests exists only in the pod's root.
    cluster.apply(PROBED_POD);
    wait_for("the exec probe passes", Duration::from_secs(60), || {
        let ready = cluster.jsonpath(&["pod", "probed"], "{.status.containerStatuses[0].ready}");
        (ready == "true").then_some(()).ok_or(ready)
    });

    // An image that was never built: the pod says so, and how to fix it.
    cluster.apply(MISSING_POD);
    wait_for(
        "the missing image reported",
        Duration::from_secs(30),
        || {
            let reason = cluster.jsonpath(
                &["pod", "missing"],
                "{.status.containerStatuses[0].state.waiting.reason}",
            );
            let events = cluster.kubectl(&[
                "get",
                "events",
                "--field-selector",
                "involvedObject.name=missing",
            ]);
            (reason == "ErrImageNeverPull" && events.contains("make images"))
                .then_some(())
                .ok_or(format!("reason={reason:?} events={events}"))
        },
    );
    eprintln!(
        "images ready after {images_ready:?}, pool warm after {warm:?}, test took {:?}",
        started.elapsed()
    );
}
