//! A shell-command pod on the real devcluster, driven by kubectl: it runs, turns Ready through its
//! probe, crashes and is restarted with a rising restartCount, shows its output through
//! `kubectl logs`, and stops within its grace period when deleted.

mod support;

use std::time::{Duration, Instant};

use support::{pod_condition, process_alive, Cluster};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: shell
  namespace: default
spec:
  terminationGracePeriodSeconds: 30
  restartPolicy: Always
  volumes:
    - name: data
      emptyDir: {}
  containers:
    - name: main
      image: busybox:1.36
      env:
        - name: POD_NAME
          valueFrom: { fieldRef: { fieldPath: metadata.name } }
        - name: POD_IP
          valueFrom: { fieldRef: { fieldPath: status.podIP } }
        - name: GREETING
          value: "hello from $(POD_NAME) at $(POD_IP)"
      command: ["sh", "-c"]
      args:
        - |
          echo "$GREETING"
          echo run >> /data/runs
          if [ "$(wc -l < /data/runs)" -le 2 ]; then echo crashing; exit 3; fi
          echo $$$$ > /data/pid  # `$$` is Kubernetes' escaped `$`
          trap 'echo got SIGTERM; exit 0' TERM
          touch /data/ready
          while true; do sleep 0.2; done
      volumeMounts:
        - { name: data, mountPath: /data }
      readinessProbe:
        exec: { command: ["test", "-f", "/data/ready"] }
        periodSeconds: 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_pod_runs_turns_ready_restarts_logs_and_stops_within_its_grace_period() {
    let cluster = Cluster::start().await;
    cluster.apply(POD).await;

    let pod = cluster
        .wait_for(
            "the pod Ready after two crashes",
            &["pod", "shell"],
            |pod| {
                pod_condition(pod, "Ready")
                    && pod["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(2)
            },
        )
        .await;
    assert_eq!(pod["spec"]["nodeName"], support::NODE);
    assert_eq!(pod["status"]["phase"], "Running");
    let status = &pod["status"]["containerStatuses"][0];
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3);
    assert!(status["state"]["running"].is_object(), "{status:#}");
    let pod_ip = pod["status"]["podIP"]
        .as_str()
        .expect("a pod IP")
        .to_owned();
    assert!(
        pod_ip.starts_with("127.0.") && pod_ip != "127.0.0.1",
        "{pod_ip}"
    );

    let logs = cluster.kubectl(&["logs", "shell"]).await;
    assert!(
        logs.contains(&format!("hello from shell at {pod_ip}")),
        "{logs}"
    );

    let pod_dir = cluster.state_dir.join("pods").join(format!(
        "default_shell_{}",
        pod["metadata"]["uid"].as_str().unwrap()
    ));
    let pid: i32 = std::fs::read_to_string(pod_dir.join("volumes/data/pid"))
        .expect("the container wrote its pid into its emptyDir")
        .trim()
        .parse()
        .unwrap();
    assert!(process_alive(pid));

    let started = Instant::now();
    cluster
        .kubectl(&["delete", "pod", "shell", "--wait=true", "--timeout=60s"])
        .await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "deletion took {took:?}, beyond the grace period"
    );
    assert!(
        !process_alive(pid),
        "the pod's process outlived its deletion"
    );
    let gone = cluster.kubectl_output(&["get", "pod", "shell"], None).await;
    assert!(!gone.status.success(), "the pod object is still there");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmapped_image_leaves_the_pod_pending_with_a_reason_and_an_event() {
    let cluster = Cluster::start().await;
    cluster
        .apply(
            r#"
apiVersion: v1
kind: Pod
metadata: { name: unmapped, namespace: default }
spec:
  containers:
    - { name: main, image: "registry.example/unknown:1.0" }
"#,
        )
        .await;
    let pod = cluster
        .wait_for("the ImageNotMapped reason", &["pod", "unmapped"], |pod| {
            pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImageNotMapped"
        })
        .await;
    assert_eq!(pod["status"]["phase"], "Pending");
    let events = cluster
        .wait_for(
            "the ImageNotMapped event",
            &["events", "-n", "default"],
            |list| {
                list["items"]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|e| e["reason"] == "ImageNotMapped"))
            },
        )
        .await;
    assert!(events.to_string().contains("registry.example/unknown:1.0"));
    cluster.shutdown().await;
}
