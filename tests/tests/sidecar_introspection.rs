//! Introspection the way a user meets it: the operator runs a pool whose pods use a ServiceAccount;
//! the sidecar in each pod reviews callers with its pod's own identity (the kubelet's `KUBECONFIG`
//! with the service-account token, not the admin kubeconfig), and callers bring tokens from
//! `kubectl create token <sa>`. Checks 503 while the sidecar's account lacks its RBAC, then
//! 401 / 403 / 200 (RoleBinding to `capsule-introspection`) / 404 for a disabled view, the
//! namespace view's hashed names, and one audit record per request in `kubectl logs`. The sidecar's
//! RBAC is the Helm chart's (`helm template`), so this shows the chart's narrowed grant is enough:
//! reviews cluster-wide, reading pools in its own namespace only.

use std::time::Duration;

use capsule_e2e::{free_port, http, start_operator, tool, wait_for, workspace, DevCluster};
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

fn get(base: &str, view: &str, token: Option<&str>) -> (u16, Value) {
    let mut request = http().get(format!("{base}/v1/introspection/{view}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().expect("introspection request");
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(Value::Null))
}

/// The chart's sidecar RBAC for the pool's account `team-a/capsule-worker`, as `helm template`
/// renders it: (its ClusterRoles, its bindings).
fn chart_sidecar_rbac() -> (String, String) {
    let chart = workspace().join("charts/capsule-operator");
    let out = std::process::Command::new(tool("helm"))
        .args(["template", "capsule"])
        .arg(&chart)
        .args([
            "--show-only",
            "templates/sidecar-rbac.yaml",
            "--set",
            "sidecarRbac.serviceAccounts[0].name=capsule-worker",
            "--set",
            "sidecarRbac.serviceAccounts[0].namespace=team-a",
        ])
        .env(
            "HELM_CACHE_HOME",
            std::env::temp_dir().join("capsule-helm-cache"),
        )
        .env(
            "HELM_CONFIG_HOME",
            std::env::temp_dir().join("capsule-helm-config"),
        )
        .env(
            "HELM_DATA_HOME",
            std::env::temp_dir().join("capsule-helm-data"),
        )
        .output()
        .expect("helm runs");
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (roles, bindings): (Vec<&str>, Vec<&str>) = text
        .split("\n---")
        .filter(|doc| doc.contains("kind: "))
        // The object's own kind, at the start of a line (a binding's roleRef has one indented).
        .partition(|doc| doc.lines().any(|line| line == "kind: ClusterRole"));
    (roles.join("\n---\n"), bindings.join("\n---\n"))
}

/// Whether the API server lets the workers' account `verb` `resource` in `namespace` (or at the
/// cluster scope when empty), by a SubjectAccessReview.
fn worker_account_may(
    cluster: &DevCluster,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: &str,
) -> bool {
    let review = serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {"user": "system:serviceaccount:team-a:capsule-worker",
                 "groups": ["system:serviceaccounts", "system:serviceaccounts:team-a"],
                 "resourceAttributes": {"verb": verb, "group": group, "resource": resource,
                                        "namespace": namespace}},
    });
    let out = cluster.kubectl_output(
        // kubectl's client-side validation cannot read the devcluster's OpenAPI for review kinds
        // (it falls back to /openapi/v2 in protobuf, served as JSON only); the server checks it.
        &["create", "--validate=false", "-f", "-", "-o", "json"],
        Some(&review.to_string()),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    answer["status"]["allowed"] == true
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
    let (sidecar_roles, sidecar_bindings) = chart_sidecar_rbac();
    cluster.apply(&sidecar_roles);
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

    cluster.apply(&sidecar_bindings);
    // Least privilege: token reviews cluster-wide; access reviews and pools of its own namespace.
    let may = |verb, group, resource, namespace| {
        worker_account_may(&cluster, verb, group, resource, namespace)
    };
    assert!(may("create", "authentication.k8s.io", "tokenreviews", ""));
    assert!(!may(
        "create",
        "authorization.k8s.io",
        "subjectaccessreviews",
        ""
    ));
    assert!(may(
        "create",
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        NAMESPACE
    ));
    assert!(!may(
        "create",
        "authorization.k8s.io",
        "localsubjectaccessreviews",
        "default"
    ));
    assert!(may("get", "capsule.dev", "capsulepools", NAMESPACE));
    assert!(!may("get", "capsule.dev", "capsulepools", "default"));
    assert!(!may("list", "capsule.dev", "capsulepools", NAMESPACE));
    assert!(!may("get", "", "secrets", NAMESPACE));
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
