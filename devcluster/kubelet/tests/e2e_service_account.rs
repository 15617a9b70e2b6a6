//! A pod's own API requests use its service account: its token (TokenRequest, mounted through the
//! projected volume) reaches the API server through the pod's kubeconfig, and RBAC decides. The pod
//! runs the real kubectl: forbidden without a RoleBinding, allowed with one.

mod support;

use support::Cluster;

fn reader_pod(name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{ name: {name}, namespace: default }}
spec:
  serviceAccountName: reader
  restartPolicy: Never
  containers:
    - name: main
      image: kubectl:1.37
      args: ["get", "pods", "-o", "name"]
"#
    )
}

const ACCOUNT: &str = r#"
apiVersion: v1
kind: ServiceAccount
metadata: { name: reader, namespace: default }
"#;

const GRANT: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: { name: pod-reader, namespace: default }
rules:
  - apiGroups: [""]
    resources: ["pods"]
    verbs: ["get", "list", "watch"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: { name: reader-reads-pods, namespace: default }
subjects:
  - { kind: ServiceAccount, name: reader, namespace: default }
roleRef: { apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader }
"#;

fn finished(pod: &serde_json::Value) -> bool {
    matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded") | Some("Failed")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_requests_use_its_service_account_and_rbac_decides() {
    let cluster = Cluster::start().await;
    cluster.apply(ACCOUNT).await;

    cluster.apply(&reader_pod("denied")).await;
    let pod = cluster
        .wait_for("the first pod to finish", &["pod", "denied"], finished)
        .await;
    let logs = cluster.kubectl(&["logs", "denied"]).await;
    assert_eq!(
        pod["status"]["phase"], "Failed",
        "listing pods without a grant succeeded: {logs}"
    );
    assert!(
        logs.contains("system:serviceaccount:default:reader"),
        "{logs}"
    );
    assert!(logs.to_lowercase().contains("forbidden"), "{logs}");

    cluster.apply(GRANT).await;
    cluster.apply(&reader_pod("allowed")).await;
    let pod = cluster
        .wait_for("the second pod to finish", &["pod", "allowed"], finished)
        .await;
    let logs = cluster.kubectl(&["logs", "allowed"]).await;
    assert_eq!(pod["status"]["phase"], "Succeeded", "{logs}");
    assert!(logs.contains("pod/denied"), "{logs}");
    cluster.shutdown().await;
}
