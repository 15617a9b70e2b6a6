//! Introspection the way a user meets it: the operator runs a pool whose pods use a ServiceAccount;
//! the sidecar in each pod reviews callers with its pod's own identity (the kubelet's `KUBECONFIG`
//! with the service-account token, not the admin kubeconfig), and callers bring tokens from
//! `kubectl create token <sa>`. Checks 503 while the sidecar's account lacks its RBAC, then
//! 401 / 403 / 200 (RoleBinding to `capsule-introspection`) / 404 for a disabled view, the
//! namespace view's hashed names, and one audit record per request in `kubectl logs`.

use std::time::Duration;

use capsule_e2e::{free_port, http, start_operator, wait_for, workspace, DevCluster};
use serde_json::Value;

const NAMESPACE: &str = "team-a";

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: capsule-worker, namespace: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: oncall, namespace: team-a}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: stranger, namespace: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: oncall-introspection, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: capsule-introspection}
subjects:
- {kind: ServiceAccount, name: oncall, namespace: team-a}
---
apiVersion: capsule.dev/v1alpha1
kind: CapsulePool
metadata: {name: pool-a, namespace: team-a}
spec:
  replicas: 1
  maxWorkers: 1
  template:
    image: capsule-worker:dev
    serviceAccountName: capsule-worker
  introspection:
    enabled: true
    views: [Counters, Namespace, Pool]
    redaction: Hash
    audit: true
"#;

/// The sidecar's own grant (from worker/sidecar/deploy/rbac.yaml), bound to the pool's account.
const SIDECAR_BINDING: &str = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: capsule-sidecar-team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: capsule-sidecar}
subjects:
- {kind: ServiceAccount, name: capsule-worker, namespace: team-a}
"#;

fn get(base: &str, view: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().get(format!("{base}/v1/introspection/{view}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("introspection request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// The ClusterRoles of the sidecar's RBAC file, without its example bindings.
fn cluster_roles() -> String {
    let text =
        std::fs::read_to_string(workspace().join("worker/sidecar/deploy/rbac.yaml")).unwrap();
    text.split("\n---")
        .filter(|doc| doc.contains("kind: ClusterRole\n"))
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// Audit records in the sidecar's log (text format): `(user, view, decision, status)`.
fn audit_records(cluster: &DevCluster, pod: &str) -> Vec<(String, String, String, String)> {
    let logs = cluster.kubectl(&["logs", "-n", NAMESPACE, pod, "-c", "sidecar"]);
    let field = |line: &str, key: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .map(|v| v.trim_matches('"').to_owned())
            .unwrap_or_default()
    };
    logs.lines()
        .filter(|l| l.contains("capsule_sidecar::audit") && l.contains("audit=true"))
        .map(|l| {
            (
                field(l, "user"),
                field(l, "view"),
                field(l, "decision"),
                field(l, "status"),
            )
        })
        .collect()
}

#[test]
fn service_account_tokens_pass_the_gate_as_rbac_decides() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    cluster.apply(&cluster_roles());
    let port = free_port();
    let _operator = start_operator(&cluster, port, &dir.path().join("operator.log"), &[]);
    cluster.apply(SETUP);

    let (pod, ip) = wait_for("a running worker pod", Duration::from_secs(120), || {
        let out = cluster.kubectl(&[
            "get",
            "pods",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.podIP} {.status.phase}{\"\\n\"}{end}",
        ]);
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.len() == 3 && f[2] == "Running")
            .map(|f| (f[0].to_owned(), f[1].to_owned()))
            .ok_or(out)
    });
    let base = format!("http://{ip}:8001");
    wait_for("the sidecar serving", Duration::from_secs(60), || {
        http()
            .get(format!("{base}/healthz"))
            .send()
            .map_err(|e| e.to_string())
            .and_then(|r| {
                r.status()
                    .is_success()
                    .then_some(())
                    .ok_or("not yet".into())
            })
    });

    let oncall = cluster.kubectl(&["create", "token", "oncall", "-n", NAMESPACE]);
    let oncall = oncall.trim();
    let stranger = cluster.kubectl(&["create", "token", "stranger", "-n", NAMESPACE]);
    let stranger = stranger.trim();

    // The sidecar reviews with its pod's account, which may not create reviews yet: 503.
    let (status, body) = get(&base, "counters", Some(oncall));
    assert_eq!(status, 503, "{body}");

    cluster.apply(SIDECAR_BINDING);
    let (status, _) = get(&base, "counters", None);
    assert_eq!(status, 401, "no token");
    let (status, _) = get(&base, "counters", Some("not-a-token"));
    assert_eq!(status, 401, "a made-up token");
    let (status, _) = get(&base, "counters", Some(stranger));
    assert_eq!(status, 403, "a valid token without the RoleBinding");
    let (status, counters) = get(&base, "counters", Some(oncall));
    assert_eq!(status, 200, "{counters}");
    assert!(counters["worker"]["executions"].is_object(), "{counters}");
    let (status, _) = get(&base, "traces", Some(oncall));
    assert_eq!(status, 404, "Traces is not in the pool's views");
    let (status, pool) = get(&base, "pool", Some(oncall));
    assert_eq!(status, 200, "{pool}");
    assert_eq!(pool["pool"], "pool-a");
    let (status, namespace) = get(&base, "namespace", Some(oncall));
    assert_eq!(status, 200, "{namespace}");
    assert!(namespace["entries"].is_array(), "{namespace}");
    for entry in namespace["entries"].as_array().unwrap() {
        assert!(
            entry["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("hmac:")),
            "names are hashed under Hash: {entry}"
        );
    }

    let expected = [
        (
            "system:serviceaccount:team-a:oncall",
            "Counters",
            "unavailable",
            "503",
        ),
        ("system:anonymous", "Counters", "unauthenticated", "401"),
        ("system:anonymous", "Counters", "unauthenticated", "401"),
        (
            "system:serviceaccount:team-a:stranger",
            "Counters",
            "forbidden",
            "403",
        ),
        (
            "system:serviceaccount:team-a:oncall",
            "Counters",
            "allowed",
            "200",
        ),
        (
            "system:serviceaccount:team-a:oncall",
            "Traces",
            "disabled",
            "404",
        ),
        (
            "system:serviceaccount:team-a:oncall",
            "Pool",
            "allowed",
            "200",
        ),
        (
            "system:serviceaccount:team-a:oncall",
            "Namespace",
            "allowed",
            "200",
        ),
    ];
    let records = wait_for(
        "one audit record per request",
        Duration::from_secs(30),
        || {
            let records = audit_records(&cluster, &pod);
            if records.len() >= expected.len() {
                Ok(records)
            } else {
                Err(format!("{records:?}"))
            }
        },
    );
    assert_eq!(records.len(), expected.len(), "{records:?}");
    for (record, (user, view, decision, status)) in records.iter().zip(expected) {
        // An unavailable review never learns who asked.
        if decision != "unavailable" {
            assert_eq!(record.0, user, "{records:?}");
        }
        assert_eq!(
            (record.1.as_str(), record.2.as_str(), record.3.as_str()),
            (view, decision, status),
            "{records:?}"
        );
    }
    let logs = cluster.kubectl(&["logs", "-n", NAMESPACE, &pod, "-c", "sidecar"]);
    assert!(
        !logs.contains(oncall) && !logs.contains(stranger),
        "tokens never logged"
    );
}
