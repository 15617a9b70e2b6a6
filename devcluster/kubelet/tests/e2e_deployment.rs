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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_change_rolls_out_a_new_replica_set_and_retires_the_old() {
    let cluster = Cluster::start().await;
    cluster.apply(DEPLOYMENT).await;
    cluster
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let first: HashSet<String> =
        running_ready_pods(&cluster.get_json(&["pods", "-l", "app=web"]).await);

    cluster
        .kubectl(&["set", "env", "deployment/web", "ROLLOUT=2"])
        .await;
    cluster
        .kubectl(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    let replica_sets = cluster
        .wait_for(
            "the old replica set scaled to zero",
            &["replicasets", "-l", "app=web"],
            |list| {
                let items = list["items"].as_array().cloned().unwrap_or_default();
                items.len() == 2
                    && items
                        .iter()
                        .filter(|rs| rs["spec"]["replicas"] == 0)
                        .count()
                        == 1
            },
        )
        .await;
    let revisions: HashSet<String> = replica_sets["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|rs| {
            rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(revisions, HashSet::from(["1".to_owned(), "2".to_owned()]));
    let pods = cluster
        .wait_for("only new pods", &["pods", "-l", "app=web"], |list| {
            list["items"].as_array().is_some_and(|items| {
                items.len() == 2
                    && items.iter().all(|pod| {
                        pod["spec"]["containers"][0]["env"][0]["value"] == "2"
                            && support::pod_condition(pod, "Ready")
                    })
            })
        })
        .await;
    assert!(running_ready_pods(&pods).is_disjoint(&first));
    cluster.shutdown().await;
}
