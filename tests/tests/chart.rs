//! The Helm chart (charts/capsule-operator) with a real helm v4 (`scripts/install-tools.sh helm`):
//! lint, templates with defaults and with every optional feature, values refused by the schema,
//! the PrometheusRule through `promtool check rules`, the chart's CRDs equal to the generated ones,
//! and `helm install` into the devcluster with the operator running from the chart's Deployment and
//! reconciling the minimal example pool.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use capsule_e2e::{bin, reachable_bin, tool, wait_for, workspace, DevCluster};
use serde_json::Value;

const RELEASE: &str = "capsule";
const NAMESPACE: &str = "capsule-system";
/// `<release>-<chart>` unless the release name already contains the chart name.
const FULLNAME: &str = "capsule-capsule-operator";

/// Every optional object of the chart switched on.
const EVERY_OPTION: &[&str] = &[
    "serviceMonitor.enabled=true",
    "podMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "dashboard.enabled=true",
    "networkPolicy.enabled=true",
    "podDisruptionBudget.enabled=true",
    "sidecarRbac.serviceAccounts[0].name=capsule-worker",
    "sidecarRbac.serviceAccounts[0].namespace=team-a",
    "sidecarRbac.serviceAccounts[1].name=capsule-worker",
    "sidecarRbac.serviceAccounts[1].namespace=team-b",
    "sidecarRbac.serviceAccounts[2].name=batch",
    "sidecarRbac.serviceAccounts[2].namespace=team-b",
    "sidecarRbac.createServiceAccounts=true",
    "gateway.enabled=true",
    "gateway.externalUrl=https://capsule.example.com",
    "gateway.watchNamespace=team-a",
];

fn chart_dir() -> PathBuf {
    workspace().join("charts/capsule-operator")
}

fn helm(args: &[&str]) -> Output {
    Command::new(tool("helm"))
        .args(args)
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
        .expect("helm runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` with `--set` values; panics with helm's stderr when it fails.
fn template(sets: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--namespace",
        NAMESPACE,
    ];
    for set in sets {
        args.extend(["--set", *set]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template {sets:?} failed: {}",
        text(&out.stderr)
    );
    parse_documents(&text(&out.stdout))
}

fn parse_documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .filter_map(|doc| {
            let value = serde_json::to_value(
                <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                    .expect("helm output is YAML"),
            )
            .expect("YAML converts to JSON");
            (!value.is_null()).then_some(value)
        })
        .collect()
}

fn kinds(objects: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for object in objects {
        *counts
            .entry(object["kind"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} not rendered"))
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn rule<'a>(role: &'a Value, group: &str, resource: &str) -> Vec<&'a str> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            strings(&r["apiGroups"]).contains(&group)
                && strings(&r["resources"]).contains(&resource)
        })
        .flat_map(|r| strings(&r["verbs"]))
        .collect()
}

#[test]
fn lint_is_clean_and_strict() {
    let chart = chart_dir();
    let no_values: &[&str] = &[];
    for (strict, sets) in [(false, no_values), (true, no_values), (true, EVERY_OPTION)] {
        let mut args = vec!["lint", chart.to_str().unwrap()];
        if strict {
            args.push("--strict");
        }
        for set in sets {
            args.extend(["--set", *set]);
        }
        let out = helm(&args);
        let stdout = text(&out.stdout);
        assert!(
            out.status.success(),
            "helm {args:?} failed:\n{stdout}{}",
            text(&out.stderr)
        );
        assert!(
            stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{stdout}"
        );
        assert!(
            !stdout.contains("[WARNING]") && !stdout.contains("[ERROR]"),
            "helm {args:?} reported problems:\n{stdout}"
        );
    }
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let generated =
        std::fs::read_to_string(workspace().join("crds/capsule.dev_crds.yaml")).unwrap();
    let in_chart = std::fs::read_to_string(chart_dir().join("crds/capsule.dev_crds.yaml")).unwrap();
    assert!(
        generated == in_chart,
        "charts/capsule-operator/crds/capsule.dev_crds.yaml differs from crds/capsule.dev_crds.yaml: \
         copy it (cp crds/capsule.dev_crds.yaml charts/capsule-operator/crds/)"
    );
    let entries: Vec<_> = std::fs::read_dir(chart_dir().join("crds"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        entries.len(),
        1,
        "the chart's crds/ holds only the generated file: {entries:?}"
    );
    let out = helm(&["show", "crds", chart_dir().to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = parse_documents(&text(&out.stdout))
        .iter()
        .map(|crd| crd["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        ["capsulepools.capsule.dev", "capsulesessions.capsule.dev"]
    );
}

#[test]
fn template_with_defaults() {
    let objects = template(&[]);
    let expected: BTreeMap<String, usize> = [
        ("ClusterRole", 6),
        ("ClusterRoleBinding", 1),
        ("Deployment", 1),
        ("PodDisruptionBudget", 1),
        ("Role", 1),
        ("RoleBinding", 1),
        ("Service", 2),
        ("ServiceAccount", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(kinds(&objects), expected);
    let single = template(&["replicaCount=1"]);
    assert!(
        !kinds(&single).contains_key("PodDisruptionBudget"),
        "with one replica a PDB would block every node drain"
    );

    let deployment = find(&objects, "Deployment", FULLNAME);
    assert_eq!(deployment["metadata"]["namespace"], NAMESPACE);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], FULLNAME);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let container = &pod["containers"][0];
    // The chart's appVersion follows the workspace version: images are tagged with it.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(container["image"], format!("capsule-operator:{version}"));
    let args = strings(&container["args"]);
    assert_eq!(args[0], "run");
    let sidecar_image = format!("--sidecar-image=capsule-sidecar:{version}");
    for wanted in [
        "--leader-election",
        "--listen=0.0.0.0:8080",
        "--heartbeat-url=http://capsule-capsule-operator.capsule-system.svc:8080/v1/heartbeats",
        &sidecar_image,
    ] {
        assert!(args.contains(&wanted), "{wanted} missing from {args:?}");
    }
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(
        env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(container["ports"][0]["containerPort"], 8080);
    assert_eq!(container["ports"][0]["name"], "http");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    let metrics = find(&objects, "Service", &format!("{FULLNAME}-metrics"));
    assert_eq!(metrics["spec"]["ports"][0]["name"], "http-metrics");
    assert_eq!(metrics["spec"]["ports"][0]["port"], 8080);
    assert!(metrics["spec"]["selector"]["capsule.dev/leader"].is_null());
    let heartbeats = find(&objects, "Service", FULLNAME);
    assert_eq!(heartbeats["spec"]["selector"]["capsule.dev/leader"], "true");
    assert_eq!(heartbeats["spec"]["ports"][0]["port"], 8080);

    // Least privilege: exactly what the controllers do, nothing cluster-wide beyond it.
    let role = find(&objects, "ClusterRole", FULLNAME);
    assert_eq!(
        rule(role, "", "pods"),
        ["get", "list", "watch", "create", "delete", "patch"]
    );
    assert_eq!(
        rule(role, "", "secrets"),
        ["get", "list", "watch", "create", "delete", "patch"]
    );
    assert_eq!(rule(role, "", "events"), ["create", "patch"]);
    assert_eq!(rule(role, "events.k8s.io", "events"), ["create", "patch"]);
    assert_eq!(
        rule(role, "networking.k8s.io", "networkpolicies"),
        ["get", "list", "watch", "create", "update", "delete"],
        "each pool's NetworkPolicy, watched so a pool at rest reads nothing"
    );
    assert!(rule(role, "capsule.dev", "capsulepools/status").contains(&"patch"));
    assert!(rule(role, "capsule.dev", "capsulesessions/finalizers").contains(&"update"));
    assert!(rule(role, "capsule.dev", "capsulesessions").contains(&"delete"));
    assert!(
        !rule(role, "capsule.dev", "capsulepools").contains(&"delete"),
        "the operator never deletes a pool"
    );
    assert!(rule(role, "coordination.k8s.io", "leases").is_empty());
    for r in role["rules"].as_array().unwrap() {
        for field in ["apiGroups", "resources", "verbs"] {
            assert!(!strings(&r[field]).contains(&"*"), "wildcard in {r}");
        }
    }
    let leases = find(&objects, "Role", &format!("{FULLNAME}-leader-election"));
    assert_eq!(leases["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        rule(leases, "coordination.k8s.io", "leases"),
        ["get", "create", "update", "patch"]
    );
    // The sidecar: the reviews (cluster-scoped) in one ClusterRole, and nothing else in it; reading
    // pools in another, which only RoleBindings grant (template_with_every_option_on).
    let reviews = find(
        &objects,
        "ClusterRole",
        &format!("{FULLNAME}-sidecar-reviews"),
    );
    assert_eq!(
        rule(reviews, "authentication.k8s.io", "tokenreviews"),
        ["create"]
    );
    assert_eq!(reviews["rules"].as_array().unwrap().len(), 1, "{reviews}");
    let pools = find(
        &objects,
        "ClusterRole",
        &format!("{FULLNAME}-sidecar-pools"),
    );
    assert_eq!(
        pools["rules"],
        serde_json::json!([
            {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
            {"apiGroups": ["capsule.dev"], "resources": ["capsulepools"], "verbs": ["get"]}
        ])
    );
    // Without listed accounts nothing is bound and no account is made.
    assert!(!objects.iter().any(|o| o["metadata"]["name"]
        .as_str()
        .is_some_and(|n| n.contains("sidecar"))
        && (o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding")));
    // Each pool's NetworkPolicy admits the operator's pods by the labels the chart gives them.
    let selector = args
        .iter()
        .find_map(|a| a.strip_prefix("--operator-pod-selector="))
        .expect("--operator-pod-selector passed");
    for term in selector.split(',') {
        let (key, value) = term.split_once('=').unwrap();
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["labels"][key], value,
            "operator pods carry {term}"
        );
    }
    let introspection = find(&objects, "ClusterRole", "capsule-introspection");
    assert_eq!(
        rule(introspection, "capsule.dev", "capsulepools/introspection"),
        ["get"]
    );
}

/// The PodMonitor selects the pods the operator really builds, on their sidecar's port.
fn assert_pod_monitor_selects_worker_sidecars(monitor: &Value) {
    let pool: capsule_crds::CapsulePool = serde_json::from_value(serde_json::json!({
        "apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
        "metadata": {"name": "p", "namespace": "team-a", "uid": "uid-p"},
        "spec": {"template": {"image": "capsule-worker:test"}},
    }))
    .unwrap();
    let config = capsule_operator::config::OperatorConfig::default();
    let pod = serde_json::to_value(capsule_operator::pool::worker_pod::build(
        &pool, &config, "p-x",
    ))
    .unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&pod["metadata"]["labels"][key], value, "label {key}");
    }
    assert_eq!(monitor["spec"]["namespaceSelector"]["any"], true);
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    let ports: Vec<&Value> = pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter(|p| p["name"] == endpoint["port"])
        .collect();
    assert_eq!(ports.len(), 1, "port {} on {pod}", endpoint["port"]);
    assert_eq!(ports[0]["containerPort"], config.sidecar_port);
    assert_eq!(endpoint["relabelings"][0]["targetLabel"], "pool");
}

#[test]
fn template_with_every_option_on() {
    let objects = template(EVERY_OPTION);
    let counts = kinds(&objects);
    for (kind, n) in [
        ("ServiceMonitor", 1),
        ("PodMonitor", 1),
        ("PrometheusRule", 1),
        ("ConfigMap", 1),
        ("NetworkPolicy", 1),
        ("PodDisruptionBudget", 1),
        ("ClusterRoleBinding", 3),
        ("RoleBinding", 3),
        ("ServiceAccount", 5),
        ("Deployment", 2),
        ("Service", 3),
    ] {
        assert_eq!(counts.get(kind), Some(&n), "{kind} in {counts:?}");
    }
    assert_gateway_rendered(&objects, "https://capsule.example.com");
    let monitor = find(&objects, "ServiceMonitor", FULLNAME);
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["honorLabels"], true,
        "the pools' own namespace label is kept, not renamed exported_namespace"
    );
    assert_pod_monitor_selects_worker_sidecars(find(
        &objects,
        "PodMonitor",
        &format!("{FULLNAME}-sidecars"),
    ));
    let metrics = find(&objects, "Service", &format!("{FULLNAME}-metrics"));
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&metrics["metadata"]["labels"][key], value, "label {key}");
    }
    let dashboard = find(&objects, "ConfigMap", &format!("{FULLNAME}-dashboard"));
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json: Value =
        serde_json::from_str(dashboard["data"]["capsule-operator.json"].as_str().unwrap())
            .expect("the dashboard is JSON");
    assert_eq!(json["uid"], "capsule-operator");
    let exprs: Vec<&str> = json["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    assert!(exprs.len() >= 10, "{exprs:?}");
    assert_metric_names_are_documented(exprs.iter().copied());
    // The reviews are cluster-scoped: one ClusterRoleBinding for every listed account.
    let binding = find(
        &objects,
        "ClusterRoleBinding",
        &format!("{FULLNAME}-sidecar-reviews"),
    );
    assert_eq!(
        binding["roleRef"]["name"],
        format!("{FULLNAME}-sidecar-reviews")
    );
    let subjects: Vec<(&str, &str)> = binding["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        subjects,
        [
            ("team-a", "capsule-worker"),
            ("team-b", "capsule-worker"),
            ("team-b", "batch")
        ]
    );
    // Reading pools: a RoleBinding in each account's namespace, for that namespace's accounts only.
    let pool_bindings: Vec<&Value> = objects
        .iter()
        .filter(|o| {
            o["kind"] == "RoleBinding"
                && o["metadata"]["name"] == format!("{FULLNAME}-sidecar-pools")
        })
        .collect();
    let bound: Vec<(&str, Vec<&str>)> = pool_bindings
        .iter()
        .map(|b| {
            assert_eq!(b["roleRef"]["kind"], "ClusterRole");
            assert_eq!(b["roleRef"]["name"], format!("{FULLNAME}-sidecar-pools"));
            let ns = b["metadata"]["namespace"].as_str().unwrap();
            let names = b["subjects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    assert_eq!(s["namespace"], ns);
                    s["name"].as_str().unwrap()
                })
                .collect();
            (ns, names)
        })
        .collect();
    assert_eq!(
        bound,
        [
            ("team-a", vec!["capsule-worker"]),
            ("team-b", vec!["capsule-worker", "batch"])
        ]
    );
    assert!(
        !objects.iter().any(|o| o["kind"] == "ClusterRoleBinding"
            && o["roleRef"]["name"] == format!("{FULLNAME}-sidecar-pools")),
        "reading pools is never granted cluster-wide"
    );
    // The workers' own accounts, with no token mounted by default.
    for (namespace, name) in subjects {
        let account = objects
            .iter()
            .find(|o| {
                o["kind"] == "ServiceAccount"
                    && o["metadata"]["name"] == name
                    && o["metadata"]["namespace"] == namespace
            })
            .unwrap_or_else(|| panic!("ServiceAccount {namespace}/{name} not rendered"));
        assert_eq!(account["automountServiceAccountToken"], false);
    }
    let pdb = find(&objects, "PodDisruptionBudget", FULLNAME);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let policy = find(&objects, "NetworkPolicy", FULLNAME);
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], "http");
}

/// The gateway's objects: read-only RBAC on sessions and pods alone, its Service, and the operator
/// told the URL clients reach it at.
fn assert_gateway_rendered(objects: &[Value], url: &str) {
    let name = format!("{FULLNAME}-gateway");
    let role = find(objects, "ClusterRole", &name);
    assert_eq!(
        rule(role, "capsule.dev", "capsulesessions"),
        ["get", "list", "watch"]
    );
    assert_eq!(rule(role, "", "pods"), ["get", "list", "watch"]);
    assert!(
        rule(role, "", "secrets").is_empty(),
        "the gateway never reads Secrets"
    );
    assert_eq!(role["rules"].as_array().unwrap().len(), 2, "{role}");
    let binding = find(objects, "ClusterRoleBinding", &name);
    assert_eq!(binding["subjects"][0]["name"], name);
    let service = find(objects, "Service", &name);
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(
        service["spec"]["selector"]["app.kubernetes.io/component"],
        "gateway"
    );
    let gateway = find(objects, "Deployment", &name);
    assert_eq!(
        gateway["spec"]["template"]["spec"]["serviceAccountName"],
        name
    );
    let operator = find(objects, "Deployment", FULLNAME);
    let args = strings(&operator["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert!(
        args.contains(&format!("--gateway-url={url}").as_str()),
        "{args:?}"
    );
    // The pools' NetworkPolicies admit the gateway by labels its pods really carry.
    let selector = args
        .iter()
        .find_map(|a| a.strip_prefix("--gateway-pod-selector="))
        .unwrap_or_else(|| panic!("no --gateway-pod-selector in {args:?}"));
    let pod_labels = &gateway["spec"]["template"]["metadata"]["labels"];
    for pair in selector.split(',') {
        let (key, value) = pair.split_once('=').unwrap();
        assert_eq!(pod_labels[key], value, "{key} in {pod_labels}");
    }
}

#[test]
fn the_gateway_is_off_by_default_and_on_defaults_to_its_service_url() {
    let objects = template(&[]);
    assert!(!objects
        .iter()
        .any(|o| o["metadata"]["name"] == format!("{FULLNAME}-gateway")));
    let objects = template(&["gateway.enabled=true"]);
    assert_gateway_rendered(
        &objects,
        &format!("http://{FULLNAME}-gateway.{NAMESPACE}.svc:80"),
    );
    let gateway = find(&objects, "Deployment", &format!("{FULLNAME}-gateway"));
    assert_eq!(gateway["spec"]["replicas"], 2);
    // Every flag it passes is one the gateway accepts: clap stops at --help only after parsing them.
    let args: Vec<String> = strings(&gateway["spec"]["template"]["spec"]["containers"][0]["args"])
        .iter()
        .map(|a| a.replace("$(POD_IP)", "127.0.0.1"))
        .collect();
    let out = Command::new(bin("capsule-gateway"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("capsule-gateway runs");
    assert!(
        out.status.success(),
        "capsule-gateway refuses {args:?}: {}",
        text(&out.stderr)
    );
}

/// Every `capsule_*` name an alert or panel queries is one the operator exposes (docs/metrics.md
/// lists them; histogram suffixes are stripped).
fn assert_metric_names_are_documented<'a>(exprs: impl Iterator<Item = &'a str>) {
    let documented = std::fs::read_to_string(workspace().join("docs/metrics.md")).unwrap();
    for expr in exprs {
        for (start, _) in expr.match_indices("capsule_") {
            let name: String = expr[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = name.strip_suffix("_bucket").unwrap_or(&name);
            assert!(
                documented.contains(&format!("`{base}`")),
                "{name} (in {expr}) is not a metric of docs/metrics.md"
            );
        }
    }
}

#[test]
fn prometheus_rules_pass_promtool() {
    let objects = template(&["prometheusRule.enabled=true"]);
    let rule = find(&objects, "PrometheusRule", FULLNAME);
    let groups = &rule["spec"]["groups"];
    let alerts: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["alert"].as_str().unwrap())
        .collect();
    for wanted in [
        "CapsuleHeartbeatsStale",
        "CapsulePoolExhausted",
        "CapsuleSessionsWaiting",
        "CapsuleOutputDropped",
        "CapsuleReconcileErrors",
        "CapsuleOperatorLeaderless",
        "CapsuleOperatorDown",
    ] {
        assert!(alerts.contains(&wanted), "{wanted} missing from {alerts:?}");
    }
    let runbooks = std::fs::read_to_string(workspace().join("docs/operations.md")).unwrap();
    for rule in groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        let alert = rule["alert"].as_str().unwrap();
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        assert!(
            url.ends_with(&format!("docs/operations.md#{}", alert.to_lowercase())),
            "{alert}: runbook_url {url:?}"
        );
        assert!(
            runbooks.contains(&format!("\n### {alert}\n")),
            "{alert} has no runbook section in docs/operations.md"
        );
    }
    let exprs: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .map(|r| r["expr"].as_str().unwrap())
        .collect();
    assert_metric_names_are_documented(exprs.iter().copied());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rules.yaml");
    let rules_file = serde_json::json!({ "groups": groups });
    std::fs::write(&file, serde_yaml::to_string(&rules_file).unwrap()).unwrap();
    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    let report = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{report}"
    );
    assert!(
        report.contains(&format!("SUCCESS: {} rules found", alerts.len())),
        "{report}"
    );
}

#[test]
fn alerts_can_be_left_out_one_by_one() {
    let objects = template(&[
        "prometheusRule.enabled=true",
        "prometheusRule.disabled.CapsuleOutputDropped=true",
        "prometheusRule.disabled.CapsuleOperatorDown=true",
        "prometheusRule.runbookUrl=https://runbooks.example/capsule",
    ]);
    let rules: Vec<Value> = find(&objects, "PrometheusRule", FULLNAME)["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(alerts.len(), 7, "{alerts:?}");
    assert!(!alerts.contains(&"CapsuleOutputDropped") && !alerts.contains(&"CapsuleOperatorDown"));
    assert_eq!(
        rules[0]["annotations"]["runbook_url"],
        "https://runbooks.example/capsule#capsuleheartbeatsstale"
    );
}

/// Synthetic series for `promtool test rules`: pool a/full is at its maximum with nothing idle,
/// silent, and keeps missing; pool a/ok has idle workers and drops output; the pool controller
/// fails half its reconciles; heartbeats are refused for a bad token (and rate limited, which is
/// not an alert).
const ALERT_UNIT_TESTS: &str = r#"
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'capsule_pool_workers{namespace="a", pool="full", phase="Bound"}'
        values: '5x40'
      - series: 'capsule_pool_workers{namespace="a", pool="full", phase="Idle"}'
        values: '0x40'
      - series: 'capsule_pool_workers{namespace="a", pool="full", phase="Terminating"}'
        values: '1x40'
      - series: 'capsule_pool_max_workers{namespace="a", pool="full"}'
        values: '5x40'
      - series: 'capsule_pool_heartbeat_age_seconds{namespace="a", pool="full"}'
        values: '100x40'
      - series: 'capsule_pool_misses_total{namespace="a", pool="full"}'
        values: '0+1x40'
      - series: 'capsule_pool_workers{namespace="a", pool="ok", phase="Bound"}'
        values: '3x40'
      - series: 'capsule_pool_workers{namespace="a", pool="ok", phase="Idle"}'
        values: '2x40'
      - series: 'capsule_pool_max_workers{namespace="a", pool="ok"}'
        values: '5x40'
      - series: 'capsule_pool_heartbeat_age_seconds{namespace="a", pool="ok"}'
        values: '4x40'
      - series: 'capsule_pool_misses_total{namespace="a", pool="ok"}'
        values: '0+1x40'
      - series: 'capsule_pool_outputs_total{namespace="a", pool="ok", result="dropped"}'
        values: '0+10x40'
      - series: 'capsule_pool_outputs_total{namespace="a", pool="full", result="dropped"}'
        values: '7x40'
      - series: 'capsule_reconcile_runs_total{controller="pool"}'
        values: '0+10x40'
      - series: 'capsule_reconcile_failures_total{controller="pool", error_kind="conflict"}'
        values: '0+5x40'
      - series: 'capsule_reconcile_runs_total{controller="session"}'
        values: '0+10x40'
      - series: 'capsule_reconcile_failures_total{controller="session", error_kind="conflict"}'
        values: '0x40'
      - series: 'capsule_heartbeats_rejected_total{reason="bad_token"}'
        values: '0+2x40'
      - series: 'capsule_heartbeats_rejected_total{reason="rate_limited_pod"}'
        values: '0+50x40'
      - series: 'capsule_operator_leader{namespace="capsule-system", pod="capsule-a"}'
        values: '1x10 0x30'
      - series: 'capsule_operator_leader{namespace="capsule-system", pod="capsule-b"}'
        values: '0x40'
    alert_rule_test:
      # Conditions hold from the start, but `for` keeps the alerts pending at first.
      - eval_time: 4m
        alertname: CapsulePoolExhausted
        exp_alerts: []
      - eval_time: 4m
        alertname: CapsuleHeartbeatsStale
        exp_alerts: []
      - eval_time: 30m
        alertname: CapsulePoolExhausted
        exp_alerts:
          - exp_labels: {severity: warning, namespace: a, pool: full}
      - eval_time: 30m
        alertname: CapsuleHeartbeatsStale
        exp_alerts:
          - exp_labels: {severity: warning, namespace: a, pool: full}
      - eval_time: 30m
        alertname: CapsuleSessionsWaiting
        exp_alerts:
          - exp_labels: {severity: warning, namespace: a, pool: full}
      - eval_time: 30m
        alertname: CapsuleSessionAcquisitionTimeouts
        exp_alerts: []
      - eval_time: 30m
        alertname: CapsuleOutputDropped
        exp_alerts:
          - exp_labels: {severity: info, namespace: a, pool: ok}
      - eval_time: 30m
        alertname: CapsuleReconcileErrors
        exp_alerts:
          - exp_labels: {severity: warning, controller: pool}
      - eval_time: 9m
        alertname: CapsuleOperatorLeaderless
        exp_alerts: []
      - eval_time: 30m
        alertname: CapsuleOperatorLeaderless
        exp_alerts:
          - exp_labels: {severity: critical, namespace: capsule-system}
      - eval_time: 30m
        alertname: CapsuleHeartbeatsRejected
        exp_alerts:
          - exp_labels: {severity: warning, reason: bad_token}
      - eval_time: 30m
        alertname: CapsuleOperatorDown
        exp_alerts: []
  # Every replica stops being scraped after 5 minutes: no series, so only CapsuleOperatorDown sees it.
  - interval: 1m
    input_series:
      - series: 'capsule_operator_leader{namespace="capsule-system", pod="capsule-a"}'
        values: '1x5 _x30'
    alert_rule_test:
      - eval_time: 12m
        alertname: CapsuleOperatorDown
        exp_alerts: []
      - eval_time: 25m
        alertname: CapsuleOperatorDown
        exp_alerts:
          - exp_labels: {severity: critical, namespace: capsule-system}
      - eval_time: 25m
        alertname: CapsuleOperatorLeaderless
        exp_alerts: []
"#;

#[test]
fn alerts_fire_on_the_conditions_they_name() {
    let objects = template(&["prometheusRule.enabled=true"]);
    let mut groups = find(&objects, "PrometheusRule", FULLNAME)["spec"]["groups"].clone();
    // promtool compares annotations too when an alert fires; the tests here are about when
    // alerts fire and with which labels (`promtool check rules` validates the annotations).
    for group in groups.as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            rule.as_object_mut().unwrap().remove("annotations");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&serde_json::json!({ "groups": groups })).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("tests.yaml"), ALERT_UNIT_TESTS).unwrap();
    let out = Command::new(tool("promtool"))
        .args(["test", "rules", "tests.yaml"])
        .current_dir(dir.path())
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn a_single_namespace_operator_gets_a_role_in_that_namespace_only() {
    let objects = template(&["operator.watchNamespace=team-a"]);
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "ClusterRole" && o["metadata"]["name"] == FULLNAME),
        "no cluster-wide grant"
    );
    let role = find(&objects, "Role", FULLNAME);
    assert_eq!(role["metadata"]["namespace"], "team-a");
    assert!(rule(role, "", "secrets").contains(&"get"));
    let binding = find(&objects, "RoleBinding", FULLNAME);
    assert_eq!(binding["metadata"]["namespace"], "team-a");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["subjects"][0]["namespace"], NAMESPACE);
}

#[test]
fn otel_values_become_the_standard_variables_with_headers_from_a_secret() {
    let container = |sets: &[&str]| {
        let objects = template(sets);
        find(&objects, "Deployment", FULLNAME)["spec"]["template"]["spec"]["containers"][0].clone()
    };
    let env_names = |c: &Value| -> Vec<String> {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let off = container(&[]);
    assert!(
        !env_names(&off).iter().any(|n| n.starts_with("OTEL_")),
        "{off}"
    );

    let on = container(&[
        "otel.endpoint=http://collector.observability:4317",
        "otel.protocol=grpc",
        "otel.serviceName=platform-capsule",
        "otel.sampler=parentbased_traceidratio",
        "otel.samplerArg=0.25",
        "otel.resourceAttributes=deployment.environment=prod",
        "otel.headersSecret.name=otlp-auth",
        "otel.headersSecret.key=headers",
    ]);
    let env: BTreeMap<&str, &Value> = on["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    for (name, value) in [
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://collector.observability:4317",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_SERVICE_NAME", "platform-capsule"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
    ] {
        assert_eq!(env[name]["value"], value, "{name}: {on}");
    }
    let headers = &env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"];
    assert_eq!(headers["name"], "otlp-auth");
    assert_eq!(headers["key"], "headers");
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let chart = chart_dir();
    let cases: &[(&[&str], &str)] = &[
        (
            &["replicaCount=two"],
            "at '/replicaCount': got string, want integer",
        ),
        (
            &["replicaCount=-1"],
            "at '/replicaCount': minimum: got -1, want 0",
        ),
        (
            &["replicaCunt=2"],
            "additional properties 'replicaCunt' not allowed",
        ),
        (
            &["image.pullPolicy=Sometimes"],
            "at '/image/pullPolicy': value must be one of",
        ),
        (
            &["operator.logFormat=xml"],
            "at '/operator/logFormat': value must be one of 'text', 'json'",
        ),
        (&["service.port=70000"], "at '/service/port': maximum"),
        (
            &["prometheusRule.for.poolExhausted=soon"],
            "at '/prometheusRule/for/poolExhausted'",
        ),
        (
            &["otel.protocol=http/json"],
            "at '/otel/protocol': value must be one of 'http/protobuf', 'grpc'",
        ),
        (&["otel.endpoint=collector:4317"], "at '/otel/endpoint'"),
        (&["otel.samplerArg=1.5"], "at '/otel/samplerArg'"),
        (
            &["otel.headersSecret.name=otlp-auth"],
            "properties 'key' required, if 'name' exists",
        ),
        (
            &["prometheusRule.disabled.CapsuleOutputDroped=true"],
            "additional properties 'CapsuleOutputDroped' not allowed",
        ),
        (
            &["sidecarRbac.serviceAccounts[0].name=default"],
            "missing property 'namespace'",
        ),
        (
            &["gateway.externalUrl=ftp://capsule.example.com"],
            "at '/gateway/externalUrl'",
        ),
        (
            &["gateway.replicaCount=0"],
            "at '/gateway/replicaCount': minimum",
        ),
        // Two replicas without leader election would reconcile every pool twice.
        (
            &["leaderElection.enabled=false"],
            "at '/replicaCount': maximum: got 2, want 1",
        ),
    ];
    for (sets, message) in cases {
        let mut args = vec!["template", RELEASE, chart.to_str().unwrap()];
        for set in *sets {
            args.extend(["--set", *set]);
        }
        let out = helm(&args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{sets:?} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "{sets:?}: {stderr}"
        );
        assert!(
            stderr.contains(message),
            "{sets:?}: want {message:?} in {stderr}"
        );
    }
    // The same single-replica setting is fine once replicas drop to one.
    template(&["leaderElection.enabled=false", "replicaCount=1"]);
}

fn operator_help() -> String {
    let out = Command::new(bin("capsule-operator"))
        .args(["run", "--help"])
        .output()
        .expect("capsule-operator runs");
    text(&out.stdout)
}

fn pods(cluster: &DevCluster, namespace: &str, selector: &str) -> Vec<Value> {
    let out = cluster.kubectl(&["get", "pods", "-n", namespace, "-l", selector, "-o", "json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn pod_ready(pod: &Value) -> bool {
    pod["status"]["phase"] == "Running"
        && pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn pod_summary(pods: &[Value]) -> String {
    pods.iter()
        .map(|p| {
            format!(
                "{} {} {}",
                p["metadata"]["name"], p["status"]["phase"], p["status"]["containerStatuses"]
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[test]
fn helm_install_ha_runs_the_operator_which_reconciles_a_pool_and_fails_over() {
    assert!(
        operator_help().contains("--leader-election"),
        "capsule-operator run has no --leader-election, which the chart passes by default"
    );
    install_and_reconcile(true);
}

#[test]
fn helm_install_single_replica_without_leader_election() {
    install_and_reconcile(false);
}

#[test]
fn every_flag_the_chart_passes_is_one_the_operator_accepts() {
    for sets in [
        &[][..],
        &[
            "operator.watchNamespace=team-a",
            "operator.listenOnPodIP=true",
            "operator.logFormat=text",
            "operator.heartbeatUrl=http://example.test:8080/v1/heartbeats",
        ][..],
    ] {
        let objects = template(sets);
        let deployment = find(&objects, "Deployment", FULLNAME);
        let args: Vec<String> =
            strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"])
                .iter()
                .map(|a| a.replace("$(POD_IP)", "127.0.0.1"))
                .collect();
        // clap stops at --help only once every argument before it parsed: an unknown flag or a
        // bad value fails first.
        let out = Command::new(bin("capsule-operator"))
            .args(&args)
            .arg("--help")
            .output()
            .expect("capsule-operator runs");
        assert!(
            out.status.success(),
            "capsule-operator refuses the chart's arguments {args:?}: {}",
            text(&out.stderr)
        );
    }
}

/// `helm install` into a fresh devcluster, then: the operator pods Ready as the chart's
/// ServiceAccount, the heartbeat Service selecting one pod, health and metrics on every pod IP,
/// the example pool reconciled, failover (with election), and `helm uninstall`.
fn install_and_reconcile(leader_election: bool) {
    let state = tempfile::tempdir().unwrap();
    // The chart runs the operator as uid 65532.
    let operator_map = format!(
        "capsule-operator:*={} {{args}}",
        reachable_bin(state.path(), "capsule-operator").display()
    );
    let cluster = DevCluster::start_with_image_maps(state.path(), &[operator_map]);
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let chart = chart_dir();

    let mut args = vec![
        "install",
        RELEASE,
        chart.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.as_str(),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--timeout",
        "60s",
        // The devcluster's pods share the machine's network: each binds its own loopback pod IP.
        "--set",
        "operator.listenOnPodIP=true",
        "--set",
        "operator.statusIntervalSeconds=1",
        "--set",
        "operator.logFormat=text",
        "--set",
        "dashboard.enabled=true",
        "--set",
        "networkPolicy.enabled=true",
        "--set",
        "podDisruptionBudget.enabled=true",
        "--set",
        "sidecarRbac.serviceAccounts[0].name=default",
        "--set",
        "sidecarRbac.serviceAccounts[0].namespace=default",
    ];
    if !leader_election {
        args.extend([
            "--set",
            "leaderElection.enabled=false",
            "--set",
            "replicaCount=1",
        ]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm install failed: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let notes = text(&out.stdout);
    assert!(notes.contains("STATUS: deployed"), "{notes}");
    assert!(
        notes.contains("kubectl apply -f examples/pool-minimal.yaml"),
        "NOTES.txt tells what to do next: {notes}"
    );
    let replicas = if leader_election { 2 } else { 1 };

    let selector =
        format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator");
    wait_for(
        "the operator pods Running and Ready",
        Duration::from_secs(45),
        || {
            let pods = pods(&cluster, NAMESPACE, &selector);
            let ready = pods.iter().filter(|p| pod_ready(p)).count();
            if ready == replicas {
                Ok(())
            } else {
                Err(format!("{ready}/{replicas} ready: {}", pod_summary(&pods)))
            }
        },
    );
    let operator_pods = pods(&cluster, NAMESPACE, &selector);
    let pod = &operator_pods[0];
    assert_eq!(
        pod["spec"]["serviceAccountName"], FULLNAME,
        "the operator acts as the chart's ServiceAccount, so the chart's RBAC is what it has"
    );
    // The heartbeat Service selects exactly one pod: the leader (with election, once it labelled
    // itself) or the only replica.
    let service: Value = serde_json::from_str(
        &cluster.kubectl(&["get", "service", "-n", NAMESPACE, FULLNAME, "-o", "json"]),
    )
    .unwrap();
    let service_selector = service["spec"]["selector"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect::<Vec<_>>()
        .join(",");
    assert_eq!(
        service_selector.contains("capsule.dev/leader=true"),
        leader_election
    );
    wait_for(
        "the heartbeat Service selecting one pod",
        Duration::from_secs(30),
        || {
            let selected = pods(&cluster, NAMESPACE, &service_selector);
            if selected.len() == 1 && pod_ready(&selected[0]) {
                Ok(())
            } else {
                Err(format!(
                    "{} selected: {}",
                    selected.len(),
                    pod_summary(&selected)
                ))
            }
        },
    );
    // Every replica serves health and metrics on its pod IP, port 8080 (the metrics Service's
    // endpoints).
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for pod in &pods(&cluster, NAMESPACE, &selector) {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let ready = http.get(format!("http://{ip}:8080/readyz")).send().unwrap();
        assert_eq!(ready.status(), 200, "{ip}: /readyz");
        let metrics = http
            .get(format!("http://{ip}:8080/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap();
        assert!(
            metrics.contains("# TYPE capsule_"),
            "{ip}: /metrics: {metrics}"
        );
    }

    let pool = std::fs::read_to_string(workspace().join("examples/pool-minimal.yaml")).unwrap();
    cluster.apply(&pool);
    wait_for(
        "the pool's token Secret, worker pods and status from the chart's operator",
        Duration::from_secs(45),
        || {
            let secret = cluster.jsonpath(&["secret", "demo-pool-token"], "{.metadata.name}");
            let workers = pods(&cluster, "default", "capsule.dev/pool=demo").len();
            let generation = cluster.jsonpath(&["cpool", "demo"], "{.metadata.generation}");
            let observed = cluster.jsonpath(&["cpool", "demo"], "{.status.observedGeneration}");
            let conditions = cluster.jsonpath(&["cpool", "demo"], "{.status.conditions[*].type}");
            if secret == "demo-pool-token"
                && workers >= 2
                && !generation.is_empty()
                && observed == generation
                && conditions.contains("Ready")
            {
                Ok(())
            } else {
                Err(format!(
                    "secret={secret:?} workers={workers} generation={generation:?} \
                     observed={observed:?} conditions={conditions:?}"
                ))
            }
        },
    );

    // The pool's NetworkPolicy, made by the chart's operator (its RBAC allows it): the pool's
    // workers, reachable from the operator's pods in the release namespace by the chart's labels.
    let policy = wait_for("the pool's NetworkPolicy", Duration::from_secs(30), || {
        let out = cluster.kubectl_output(
            &["get", "networkpolicy", "demo-workers", "-o", "json"],
            None,
        );
        if out.status.success() {
            Ok(serde_json::from_slice::<Value>(&out.stdout).unwrap())
        } else {
            Err(text(&out.stderr))
        }
    });
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        serde_json::json!({"capsule.dev/pool": "demo", "app.kubernetes.io/managed-by": "capsule-operator"})
    );
    assert_eq!(
        policy["metadata"]["ownerReferences"][0]["kind"],
        "CapsulePool"
    );
    let operator_peer = &policy["spec"]["ingress"][0]["from"][0];
    assert_eq!(
        operator_peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        NAMESPACE
    );
    assert_eq!(
        operator_peer["podSelector"]["matchLabels"]["app.kubernetes.io/instance"],
        RELEASE
    );
    cluster.kubectl(&[
        "patch",
        "cpool",
        "demo",
        "--type=merge",
        "-p",
        r#"{"spec":{"networkPolicy":{"enabled":false}}}"#,
    ]);
    wait_for(
        "the NetworkPolicy gone once the pool disables it",
        Duration::from_secs(30),
        || {
            let name = cluster.jsonpath(&["networkpolicy", "demo-workers"], "{.metadata.name}");
            if name.is_empty() {
                Ok(())
            } else {
                Err(name)
            }
        },
    );

    if leader_election {
        // Failover through the chart's wiring: the leader pod goes, a follower takes the Lease,
        // labels itself, and the heartbeat Service selects it (the Deployment replaces the pod).
        let leader_selector = format!("{selector},capsule.dev/leader=true");
        let old_leader = pods(&cluster, NAMESPACE, &leader_selector)[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_string();
        cluster.kubectl(&[
            "delete",
            "pod",
            "-n",
            NAMESPACE,
            &old_leader,
            "--wait=false",
        ]);
        wait_for(
            "a follower to take over as the Service's one leader",
            Duration::from_secs(45),
            || {
                let selected = pods(&cluster, NAMESPACE, &service_selector);
                let names: Vec<&str> = selected
                    .iter()
                    .filter_map(|p| p["metadata"]["name"].as_str())
                    .collect();
                if selected.len() == 1 && names[0] != old_leader && pod_ready(&selected[0]) {
                    Ok(())
                } else {
                    Err(format!("selected {names:?}, old leader {old_leader}"))
                }
            },
        );

        // An upgrade that changes the pod template rolls every replica; the new pods elect a
        // leader among themselves and it reconciles a change to the pool.
        let out = helm(&[
            "upgrade",
            RELEASE,
            chart.to_str().unwrap(),
            "--kubeconfig",
            kubeconfig.as_str(),
            "--namespace",
            NAMESPACE,
            "--reuse-values",
            "--set",
            "operator.statusIntervalSeconds=2",
        ]);
        assert!(
            out.status.success(),
            "helm upgrade failed: {}",
            text(&out.stderr)
        );
        wait_for(
            "every replica from the upgraded template, one of them the Service's leader",
            Duration::from_secs(45),
            || {
                let all = pods(&cluster, NAMESPACE, &selector);
                let upgraded = all
                    .iter()
                    .filter(|p| {
                        p["metadata"]["deletionTimestamp"].is_null()
                            && strings(&p["spec"]["containers"][0]["args"])
                                .contains(&"--status-interval-seconds=2")
                            && pod_ready(p)
                    })
                    .count();
                let selected = pods(&cluster, NAMESPACE, &service_selector);
                let selected_upgraded = selected.len() == 1
                    && strings(&selected[0]["spec"]["containers"][0]["args"])
                        .contains(&"--status-interval-seconds=2");
                if all.len() == replicas && upgraded == replicas && selected_upgraded {
                    Ok(())
                } else {
                    Err(format!(
                        "{upgraded}/{replicas} upgraded and ready, {} selected: {}",
                        selected.len(),
                        pod_summary(&all)
                    ))
                }
            },
        );
        cluster.kubectl(&["scale", "cpool", "demo", "--replicas=3"]);
        wait_for(
            "the upgraded leader reconciling the scaled pool",
            Duration::from_secs(45),
            || {
                let workers = pods(&cluster, "default", "capsule.dev/pool=demo").len();
                let generation = cluster.jsonpath(&["cpool", "demo"], "{.metadata.generation}");
                let observed = cluster.jsonpath(&["cpool", "demo"], "{.status.observedGeneration}");
                if workers >= 3 && observed == generation {
                    Ok(())
                } else {
                    Err(format!(
                        "workers={workers} generation={generation:?} observed={observed:?}"
                    ))
                }
            },
        );
    }

    let out = helm(&[
        "uninstall",
        RELEASE,
        "--kubeconfig",
        kubeconfig.as_str(),
        "--namespace",
        NAMESPACE,
    ]);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "helm uninstall failed: {stderr}");
    // Helm deletes its release record (a Secret) with protobuf DeleteOptions: it must be gone too.
    let records = cluster.kubectl(&[
        "get",
        "secrets",
        "-n",
        NAMESPACE,
        "-l",
        "owner=helm",
        "-o",
        "name",
    ]);
    assert!(records.trim().is_empty(), "release records left: {records}");
    wait_for("the chart's objects gone", Duration::from_secs(30), || {
        let left: Vec<String> = [
            vec!["deployment", "-n", NAMESPACE, FULLNAME],
            vec!["clusterrole", FULLNAME],
            vec!["service", "-n", NAMESPACE, FULLNAME],
        ]
        .iter()
        .map(|what| cluster.jsonpath(what, "{.metadata.name}"))
        .filter(|name| !name.is_empty())
        .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("left: {left:?}"))
        }
    });
}

/// Whether `kubectl --token <token> <args>` succeeds; the error text when it does not.
fn as_user(
    cluster: &DevCluster,
    token: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<(), String> {
    let mut all = vec!["--token", token];
    all.extend_from_slice(args);
    let out = cluster.kubectl_output(&all, stdin);
    if out.status.success() {
        Ok(())
    } else {
        Err(text(&out.stderr))
    }
}

#[test]
fn namespace_edit_and_view_reach_pools_and_sessions_through_aggregation() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_crds(dir.path());
    let chart = chart_dir();
    let out = helm(&[
        "template",
        RELEASE,
        chart.to_str().unwrap(),
        "--show-only",
        "templates/aggregate-roles.yaml",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    cluster.apply(&text(&out.stdout));
    cluster.apply(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: team-a}\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata: {name: team-b}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: alice, namespace: team-a}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: bob, namespace: team-a}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: alice-edit, namespace: team-a}\n\
         subjects: [{kind: ServiceAccount, name: alice, namespace: team-a}]\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: bob-view, namespace: team-a}\n\
         subjects: [{kind: ServiceAccount, name: bob, namespace: team-a}]\n\
         roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}\n",
    );
    let alice = cluster.kubectl(&["create", "token", "alice", "-n", "team-a"]);
    let bob = cluster.kubectl(&["create", "token", "bob", "-n", "team-a"]);
    let session = "apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata: {name: s, namespace: team-a}\nspec: {pool: p}\n";

    // `edit` (through the chart's role aggregated into it) creates sessions and reads pools in
    // its own namespace, and nothing in another one, nor the session token Secrets.
    let alice = alice.trim();
    as_user(&cluster, alice, &["apply", "-f", "-"], Some(session)).expect("edit creates a session");
    as_user(&cluster, alice, &["get", "cpool", "-n", "team-a"], None).expect("edit lists pools");
    let denied = as_user(&cluster, alice, &["get", "cpool", "-n", "team-b"], None).unwrap_err();
    assert!(denied.contains("forbidden"), "{denied}");
    let denied = as_user(&cluster, alice, &["get", "secrets", "-n", "team-a"], None).unwrap_err();
    assert!(denied.contains("forbidden"), "{denied}");

    // `view` reads sessions (edit aggregates view too) but creates nothing.
    let bob = bob.trim();
    as_user(&cluster, bob, &["get", "csess", "s", "-n", "team-a"], None)
        .expect("view reads a session");
    let session_b = session.replace("name: s,", "name: s2,");
    let denied = as_user(&cluster, bob, &["create", "-f", "-"], Some(&session_b)).unwrap_err();
    assert!(denied.contains("forbidden"), "{denied}");
    as_user(
        &cluster,
        alice,
        &["delete", "csess", "s", "-n", "team-a", "--wait=false"],
        None,
    )
    .expect("edit deletes its session");
}

/// `helm install` with `gateway.enabled`: both gateway replicas run from the chart's Deployment as
/// its ServiceAccount (so its read-only RBAC is all they have), the operator writes each session's
/// `status.gatewayUrl` with the gateway Service's URL, and every replica reaches the session's
/// worker with the session token.
#[test]
fn helm_install_with_the_gateway_reaches_a_session_through_every_replica() {
    let state = tempfile::tempdir().unwrap();
    let map = |image: &str| {
        format!(
            "{image}:*={} {{args}}",
            reachable_bin(state.path(), image).display()
        )
    };
    let cluster = DevCluster::start_with_image_maps(
        state.path(),
        &[map("capsule-operator"), map("capsule-gateway")],
    );
    let kubeconfig = cluster.kubeconfig.to_str().unwrap().to_string();
    let chart = chart_dir();
    let out = helm(&[
        "install",
        RELEASE,
        chart.to_str().unwrap(),
        "--kubeconfig",
        kubeconfig.as_str(),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--timeout",
        "60s",
        "--set",
        "operator.listenOnPodIP=true",
        "--set",
        "operator.statusIntervalSeconds=1",
        "--set",
        "leaderElection.enabled=false",
        "--set",
        "replicaCount=1",
        "--set",
        "gateway.enabled=true",
        "--set",
        "gateway.listenOnPodIP=true",
    ]);
    assert!(
        out.status.success(),
        "helm install failed: {}",
        text(&out.stderr)
    );

    let selector =
        format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=gateway");
    wait_for("both gateway pods Ready", Duration::from_secs(45), || {
        let pods = pods(&cluster, NAMESPACE, &selector);
        let ready = pods.iter().filter(|p| pod_ready(p)).count();
        if ready == 2 {
            Ok(())
        } else {
            Err(pod_summary(&pods))
        }
    });
    let gateway = format!("{FULLNAME}-gateway");
    assert_eq!(
        pods(&cluster, NAMESPACE, &selector)[0]["spec"]["serviceAccountName"],
        gateway
    );

    let pool = std::fs::read_to_string(workspace().join("examples/pool-minimal.yaml")).unwrap();
    cluster.apply(&pool);
    cluster.apply("apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata:\n  name: s\n  namespace: default\nspec:\n  pool: demo\n");
    let url = wait_for(
        "session s Bound with its gateway URL",
        Duration::from_secs(90),
        || {
            let phase = cluster.jsonpath(&["csess", "s"], "{.status.phase}");
            let url = cluster.jsonpath(&["csess", "s"], "{.status.gatewayUrl}");
            if phase == "Bound" && !url.is_empty() {
                Ok(url)
            } else {
                Err(format!("{phase:?} {url:?}"))
            }
        },
    );
    assert_eq!(
        url,
        format!("http://{gateway}.{NAMESPACE}.svc:80/v1/sessions/default/s")
    );
    let token = capsule_e2e::session_token(&cluster, "s");

    // The devcluster has no cluster DNS: each replica is reached on its pod IP, the Service's
    // endpoints.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    for pod in pods(&cluster, NAMESPACE, &selector) {
        let ip = pod["status"]["podIP"].as_str().unwrap();
        let base = format!("http://{ip}:8080/v1/sessions/default/s");
        let body = http
            .post(format!("{base}/executions"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"code": "40 + 2"}))
            .send()
            .unwrap()
            .text()
            .unwrap();
        let last: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
        assert_eq!(last["repr"], "42", "{ip}: {body}");
        let refused = http
            .get(format!("{base}/stats"))
            .bearer_auth("wrong")
            .send()
            .unwrap();
        assert_eq!(refused.status(), 401, "{ip}");
    }
}
