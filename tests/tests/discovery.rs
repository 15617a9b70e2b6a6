//! A real Prometheus finds the operator and the worker pods the way it would in a cluster: the
//! chart installed into the devcluster runs the operator from its Deployment; Prometheus discovers
//! it and the workers' sidecars through `http_sd_configs` fed from the devcluster's pods and
//! Services (`capsule_e2e::sd_server`, the `__meta_kubernetes_*` labels of kubernetes_sd), with the
//! relabeling prometheus-operator would generate from the chart's rendered ServiceMonitor and
//! PodMonitor (`capsule_e2e::prom_operator`). Two pools named `p` in two namespaces must come out
//! of the chart's alert expressions and the dashboard's queries as two answers, each with its own
//! namespace, never merged nor renamed `exported_namespace`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use capsule_e2e::prom_operator::{pod_monitor_jobs, service_monitor_jobs};
use capsule_e2e::prometheus::{promql_series, start_prometheus_with};
use capsule_e2e::sd_server::start_sd_server;
use capsule_e2e::{reachable_bin, tool, wait_for, workspace, DevCluster};
use serde_json::Value;

const RELEASE: &str = "capsule";
const NAMESPACE: &str = "capsule-system";
const FULLNAME: &str = "capsule-capsule-operator";
const TEAMS: [&str; 2] = ["team-a", "team-b"];

/// One operator replica answering heartbeats on its own pod IP (the devcluster has no Service
/// routing); fast status and scrapes.
const VALUES: &[&str] = &[
    "operator.listenOnPodIP=true",
    "operator.heartbeatUrl=http://$(POD_IP):8080/v1/heartbeats",
    "operator.statusIntervalSeconds=1",
    "operator.logFormat=text",
    "leaderElection.enabled=false",
    "replicaCount=1",
    "serviceMonitor.interval=1s",
    "serviceMonitor.scrapeTimeout=1s",
    "podMonitor.interval=1s",
    "podMonitor.scrapeTimeout=1s",
];

/// The monitoring objects, rendered only: the devcluster has no prometheus-operator CRDs.
const MONITORING: &[&str] = &[
    "serviceMonitor.enabled=true",
    "podMonitor.enabled=true",
    "prometheusRule.enabled=true",
    "dashboard.enabled=true",
];

fn helm(args: &[&str]) -> Output {
    let home = |name: &str| std::env::temp_dir().join(format!("capsule-helm-{name}"));
    Command::new(tool("helm"))
        .args(args)
        .env("HELM_CACHE_HOME", home("cache"))
        .env("HELM_CONFIG_HOME", home("config"))
        .env("HELM_DATA_HOME", home("data"))
        .output()
        .expect("helm runs")
}

fn helm_args<'a>(verb: &'a str, chart: &'a str, sets: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![verb, RELEASE, chart, "--namespace", NAMESPACE];
    for set in sets {
        args.extend(["--set", set]);
    }
    args
}

fn chart() -> PathBuf {
    workspace().join("charts/capsule-operator")
}

fn render() -> Vec<Value> {
    let chart = chart();
    let sets: Vec<&str> = VALUES.iter().chain(MONITORING).copied().collect();
    let out = helm(&helm_args("template", chart.to_str().unwrap(), &sets));
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&String::from_utf8_lossy(&out.stdout))
        .map(|doc| {
            serde_json::to_value(
                <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap(),
            )
            .unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn install(cluster: &DevCluster) {
    let chart = chart();
    let mut args = helm_args("install", chart.to_str().unwrap(), VALUES);
    let kubeconfig = cluster.kubeconfig.to_str().unwrap();
    args.extend([
        "--kubeconfig",
        kubeconfig,
        "--create-namespace",
        "--timeout",
        "60s",
    ]);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pool `p` in `namespace`: one worker at most, so a second session misses and times out.
fn pool(namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {namespace}\n---\n\
         apiVersion: capsule.dev/v1alpha1\nkind: CapsulePool\nmetadata:\n  name: p\n  namespace: {namespace}\n\
         spec:\n  replicas: 1\n  maxWorkers: 1\n  template:\n    image: capsule-worker:dev\n\
         \x20 heartbeat:\n    intervalSeconds: 1\n    stalenessSeconds: 10\n\
         \x20 sessions:\n    acquireTimeoutSeconds: 2\n"
    )
}

fn session(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: capsule.dev/v1alpha1\nkind: CapsuleSession\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  pool: p\n"
    )
}

fn label<'a>(series: &'a Value, name: &str) -> &'a str {
    series["metric"][name].as_str().unwrap_or("")
}

fn namespaces(series: &[Value]) -> BTreeSet<String> {
    series
        .iter()
        .map(|s| label(s, "namespace").to_string())
        .collect()
}

fn teams() -> BTreeSet<String> {
    TEAMS.iter().map(|t| t.to_string()).collect()
}

/// Every answer is one pool's: namespace team-a or team-b, pool p.
fn assert_per_pool(what: &str, series: &[Value]) {
    for s in series {
        assert!(
            TEAMS.contains(&label(s, "namespace")) && label(s, "pool") == "p",
            "{what}: {s}"
        );
    }
}

/// Waits until `query` answers one series per team namespace.
fn wait_both(prometheus: u16, query: &str) -> Vec<Value> {
    wait_for(query, Duration::from_secs(90), || {
        let series = promql_series(prometheus, query);
        (namespaces(&series) == teams() && series.len() == 2)
            .then_some(series.clone())
            .ok_or(format!("{series:?}"))
    })
}

fn wait_phase(cluster: &DevCluster, namespace: &str, name: &str, phase: &str) {
    wait_for(
        &format!("{namespace}/{name} {phase}"),
        Duration::from_secs(90),
        || {
            let out = cluster.kubectl_output(
                &[
                    "get",
                    "csess",
                    name,
                    "-n",
                    namespace,
                    "-o",
                    "jsonpath={.status.phase}",
                ],
                None,
            );
            let got = String::from_utf8_lossy(&out.stdout).into_owned();
            (got == phase).then_some(()).ok_or(got)
        },
    );
}

fn start_operator_from_chart(cluster: &DevCluster) {
    install(cluster);
    let selector = "app.kubernetes.io/component=operator";
    wait_for("the operator pod Ready", Duration::from_secs(60), || {
        let out = cluster.kubectl_output(
            &[
                "get",
                "pods",
                "-n",
                NAMESPACE,
                "-l",
                selector,
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ],
            None,
        );
        let ready = String::from_utf8_lossy(&out.stdout).into_owned();
        (ready == "True").then_some(()).ok_or(ready)
    });
}

/// The operator through the ServiceMonitor's job, the two sidecars through the PodMonitor's, each
/// with the target labels prometheus-operator gives them.
fn check_targets(prometheus: u16) {
    let operator = wait_for("the operator's target up", Duration::from_secs(60), || {
        let up = promql_series(
            prometheus,
            &format!("up{{job=\"{FULLNAME}-metrics\"}} == 1"),
        );
        (up.len() == 1)
            .then(|| up[0].clone())
            .ok_or(format!("{up:?}"))
    });
    assert_eq!(label(&operator, "namespace"), NAMESPACE, "{operator}");
    assert_eq!(
        label(&operator, "service"),
        format!("{FULLNAME}-metrics"),
        "{operator}"
    );
    assert_eq!(label(&operator, "endpoint"), "http-metrics", "{operator}");
    assert!(label(&operator, "pod").starts_with(FULLNAME), "{operator}");
    assert_eq!(label(&operator, "container"), "operator", "{operator}");
    let sidecars = wait_both(
        prometheus,
        &format!("up{{job=\"{NAMESPACE}/{FULLNAME}-sidecars\"}} == 1"),
    );
    assert_per_pool("sidecar targets", &sidecars);
    for s in &sidecars {
        assert_eq!(label(s, "endpoint"), "introspection", "{s}");
        assert!(label(s, "pod").starts_with("p-"), "{s}");
    }
    // Nothing was renamed: the pool series keep their own namespace and pod labels.
    for renamed in ["exported_namespace", "exported_pod", "exported_job"] {
        let series = promql_series(prometheus, &format!("{{{renamed}=~\".+\"}}"));
        let names: BTreeSet<&str> = series.iter().map(|s| label(s, "__name__")).collect();
        assert!(series.is_empty(), "{renamed} on {names:?}");
    }
}

/// One session bound and a second timing out (a miss, an acquisition timeout) in each pool.
fn exhaust_pools(cluster: &DevCluster) {
    for team in TEAMS {
        cluster.apply(&session(team, "s1"));
    }
    for team in TEAMS {
        wait_phase(cluster, team, "s1", "Bound");
        cluster.apply(&session(team, "s2"));
    }
    for team in TEAMS {
        wait_phase(cluster, team, "s2", "Failed");
    }
}

/// The PrometheusRule's alerts: those the exhausted pools trip answer once per pool; the pool
/// alerts never answer outside a pool; the operator, scraped in its namespace, is neither down
/// nor leaderless.
fn check_alerts(prometheus: u16, rule: &Value) {
    let tripped = [
        "CapsulePoolExhausted",
        "CapsuleSessionsWaiting",
        "CapsuleSessionAcquisitionTimeouts",
    ];
    let quiet = [
        "CapsuleOperatorDown",
        "CapsuleOperatorLeaderless",
        "CapsuleHeartbeatsStale",
    ];
    let mut seen = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for alert in group["rules"].as_array().unwrap() {
            let (Some(name), Some(expr)) = (alert["alert"].as_str(), alert["expr"].as_str()) else {
                continue;
            };
            seen.insert(name);
            if tripped.contains(&name) {
                let series = wait_both(prometheus, expr);
                assert_per_pool(name, &series);
            } else if quiet.contains(&name) {
                let series = promql_series(prometheus, expr);
                assert!(series.is_empty(), "{name} answers {series:?}");
            } else if group["name"] == "capsule-operator.pools" {
                assert_per_pool(name, &promql_series(prometheus, expr));
            }
        }
    }
    for name in tripped.iter().chain(&quiet) {
        assert!(
            seen.contains(name),
            "{name} is not in the rendered PrometheusRule"
        );
    }
}

fn exprs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(expr)) = map.get("expr") {
                out.push(expr.clone());
            }
            map.values().for_each(|v| exprs(v, out));
        }
        Value::Array(list) => list.iter().for_each(|v| exprs(v, out)),
        _ => {}
    }
}

fn substitute(expr: &str, namespace: &str) -> String {
    expr.replace("$namespace", namespace)
        .replace("$pool", "p")
        .replace("$__rate_interval", "1m")
}

/// The dashboard's variables list both namespaces and the pool; each pool panel, for one
/// namespace, answers that namespace's pool only; its gauges answer both with "All".
fn check_dashboard(prometheus: u16, config_map: &Value) {
    let json = config_map["data"]["capsule-operator.json"]
        .as_str()
        .expect("the dashboard JSON");
    let dashboard: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let namespace_query = variables.iter().find(|v| v["name"] == "namespace").unwrap()
        ["definition"]
        .as_str()
        .unwrap();
    assert_eq!(
        namespace_query,
        "label_values(capsule_pool_warm_target, namespace)"
    );
    let listed = promql_series(
        prometheus,
        "group by (namespace) (capsule_pool_warm_target)",
    );
    assert_eq!(namespaces(&listed), teams(), "$namespace values");
    let mut all = Vec::new();
    exprs(&dashboard["panels"], &mut all);
    let pool_exprs: Vec<&String> = all.iter().filter(|e| e.contains("$namespace")).collect();
    assert!(pool_exprs.len() >= 10, "{all:?}");
    for expr in &pool_exprs {
        let gauge = !expr.contains("rate(") && !expr.contains("increase(");
        for team in TEAMS {
            let query = substitute(expr, team);
            let series = promql_series(prometheus, &query);
            assert!(
                series
                    .iter()
                    .all(|s| label(s, "namespace") == team && label(s, "pool") == "p"),
                "{query}: {series:?}"
            );
            assert!(!gauge || !series.is_empty(), "{query} answers nothing");
        }
        if gauge {
            let query = substitute(expr, ".*");
            assert_eq!(
                namespaces(&promql_series(prometheus, &query)),
                teams(),
                "{query}"
            );
        }
    }
    let leader = promql_series(
        prometheus,
        &substitute("sum by (namespace) (capsule_operator_leader)", ""),
    );
    assert!(
        all.iter()
            .any(|e| e == "sum by (namespace) (capsule_operator_leader)"),
        "{all:?}"
    );
    assert_eq!(
        namespaces(&leader),
        BTreeSet::from([NAMESPACE.to_string()]),
        "{leader:?}"
    );
    for expr in all.iter().filter(|e| !e.contains("$namespace")) {
        promql_series(prometheus, &substitute(expr, ""));
    }
}

#[test]
fn prometheus_discovers_the_operator_and_workers_and_keeps_same_named_pools_apart() {
    let state = tempfile::tempdir().unwrap();
    // The chart runs the operator as uid 65532.
    let operator_map = format!(
        "capsule-operator:*={} {{args}}",
        reachable_bin(state.path(), "capsule-operator").display()
    );
    let cluster = DevCluster::start_with_image_maps(state.path(), &[operator_map]);
    start_operator_from_chart(&cluster);
    for team in TEAMS {
        cluster.apply(&pool(team));
    }

    let objects = render();
    let sd = start_sd_server(&cluster.kubeconfig);
    let mut jobs = service_monitor_jobs(find(&objects, "ServiceMonitor"), &sd.url("endpoints"));
    jobs.extend(pod_monitor_jobs(
        find(&objects, "PodMonitor"),
        &sd.url("pod"),
    ));
    let (_prometheus_process, prometheus) = start_prometheus_with(state.path(), &jobs);

    check_targets(prometheus);
    // Every pool counter starts at 0, so increase() sees the first miss.
    wait_both(prometheus, "capsule_pool_misses_total{pool=\"p\"} == 0");
    exhaust_pools(&cluster);
    check_alerts(prometheus, find(&objects, "PrometheusRule"));
    check_dashboard(prometheus, find(&objects, "ConfigMap"));
}
