//! A Deployment applied with kubectl runs its pods through a ReplicaSet; a deleted pod is replaced.

mod support;

use std::collections::HashSet;

use support::Cluster;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: default }
spec:
  replicas: 2
  selector:
    matchLabels: { app: web }
  template:
    metadata:
      labels: { app: web }
    spec:
      terminationGracePeriodSeconds: 5
      containers:
        - name: main
          image: busybox
          command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]
          readinessProbe:
            exec: { command: ["true"] }
            periodSeconds: 1
"#;

fn running_ready_pods(list: &serde_json::Value) -> HashSet<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| {
            pod["metadata"]["deletionTimestamp"].is_null() && support::pod_condition(pod, "Ready")
        })
        .filter_map(|pod| pod["metadata"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployment_runs_its_pods_and_a_deleted_pod_is_replaced() {
    let cluster = Cluster::start().await;
    cluster.apply(DEPLOYMENT).await;
    cluster
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let deployment = cluster.get_json(&["deployment", "web"]).await;
    assert_eq!(deployment["status"]["readyReplicas"], 2, "{deployment:#}");
    assert_eq!(deployment["status"]["availableReplicas"], 2);
    assert_eq!(deployment["status"]["updatedReplicas"], 2);

    let pods = cluster
        .wait_for("two ready pods", &["pods", "-l", "app=web"], |list| {
            running_ready_pods(list).len() == 2
        })
        .await;
    let before = running_ready_pods(&pods);
    for pod in pods["items"].as_array().unwrap() {
        let owner = &pod["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "ReplicaSet");
        assert!(pod["metadata"]["labels"]["pod-template-hash"].is_string());
    }

    let victim = before.iter().next().unwrap().clone();
    cluster
        .kubectl(&["delete", "pod", &victim, "--wait=true", "--timeout=60s"])
        .await;
    let after = cluster
        .wait_for("a replacement pod", &["pods", "-l", "app=web"], |list| {
            let ready = running_ready_pods(list);
            ready.len() == 2 && !ready.contains(&victim)
        })
        .await;
    let after = running_ready_pods(&after);
    assert_eq!(
        after.difference(&before).count(),
        1,
        "exactly one new pod: {before:?} → {after:?}"
    );

    // Scaling down removes pods too.
    cluster
        .kubectl(&["scale", "deployment/web", "--replicas=1"])
        .await;
    cluster
        .wait_for(
            "one pod after scaling down",
            &["pods", "-l", "app=web"],
            |list| {
                list["items"]
                    .as_array()
                    .is_some_and(|items| items.len() == 1)
            },
        )
        .await;
    cluster.shutdown().await;
}
