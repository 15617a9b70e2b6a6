//! ServiceMonitor and PodMonitor objects (as rendered by the chart) translated into Prometheus
//! scrape configs the way prometheus-operator generates them (its `generateServiceMonitorConfig`
//! and `generatePodMonitorConfig`): the job name, honorLabels, the selector and port keep rules,
//! the namespace / service / pod / container / job / endpoint target labels, then the monitor's
//! own relabelings. The one difference: discovery is `http_sd_configs` on [`crate::sd_server`],
//! so the namespace selector becomes a keep rule on `__meta_kubernetes_namespace` instead of the
//! kubernetes_sd `namespaces` field; it selects the same targets.

use serde_json::{json, Value};

use crate::k8s_sd::sanitize;

fn name_of(monitor: &Value) -> (String, String) {
    let meta = &monitor["metadata"];
    let text = |v: &Value| v.as_str().expect("monitor metadata").to_string();
    (text(&meta["namespace"]), text(&meta["name"]))
}

fn replace(source: &str, target: &str) -> Value {
    json!({"source_labels": [source], "target_label": target})
}

/// Keep rules for `selector.matchLabels` on `<prefix>_label_<k>` / `<prefix>_labelpresent_<k>`.
fn selector_rules(selector: &Value, prefix: &str) -> Vec<Value> {
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchExpressions are not translated"
    );
    let labels = selector["matchLabels"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    labels
        .iter()
        .map(|(k, v)| {
            let k = sanitize(k);
            json!({"action": "keep",
                   "source_labels": [format!("{prefix}_label_{k}"), format!("{prefix}_labelpresent_{k}")],
                   "regex": format!("({});true", v.as_str().expect("label value"))})
        })
        .collect()
}

/// `namespaceSelector`: `any: true`, `matchNames`, or (absent) the monitor's own namespace.
fn namespace_rule(monitor: &Value, own: &str) -> Option<Value> {
    let selector = &monitor["spec"]["namespaceSelector"];
    if selector["any"] == true {
        return None;
    }
    let names: Vec<&str> = match selector["matchNames"].as_array() {
        Some(list) => list.iter().map(|n| n.as_str().unwrap()).collect(),
        None => vec![own],
    };
    Some(
        json!({"action": "keep", "source_labels": ["__meta_kubernetes_namespace"],
                "regex": format!("({})", names.join("|"))}),
    )
}

/// A monitor's `relabelings` (camelCase) as Prometheus relabel configs (snake_case).
fn user_relabelings(endpoint: &Value) -> Vec<Value> {
    let fields = [
        ("sourceLabels", "source_labels"),
        ("separator", "separator"),
        ("targetLabel", "target_label"),
        ("regex", "regex"),
        ("modulus", "modulus"),
        ("replacement", "replacement"),
        ("action", "action"),
    ];
    let rules = endpoint["relabelings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    rules
        .iter()
        .map(|rule| {
            let mut out = serde_json::Map::new();
            for (from, to) in fields {
                if let Some(v) = rule.get(from) {
                    out.insert(to.into(), v.clone());
                }
            }
            Value::Object(out)
        })
        .collect()
}

/// The settings every generated job shares.
fn job(name: String, endpoint: &Value, sd_url: &str, relabel: Vec<Value>) -> Value {
    let mut job = json!({
        "job_name": name,
        "honor_labels": endpoint["honorLabels"].as_bool().unwrap_or(false),
        "metrics_path": endpoint["path"].as_str().unwrap_or("/metrics"),
        "http_sd_configs": [{"url": sd_url, "refresh_interval": "2s"}],
        "relabel_configs": relabel,
    });
    for (from, to) in [
        ("interval", "scrape_interval"),
        ("scrapeTimeout", "scrape_timeout"),
    ] {
        if let Some(v) = endpoint.get(from) {
            job[to] = v.clone();
        }
    }
    job
}

/// The scrape configs of a ServiceMonitor, one per endpoint; `sd_url` serves role `endpoints`.
pub fn service_monitor_jobs(monitor: &Value, sd_url: &str) -> Vec<Value> {
    let (namespace, name) = name_of(monitor);
    let spec = &monitor["spec"];
    let endpoints = spec["endpoints"]
        .as_array()
        .expect("ServiceMonitor endpoints");
    let k = "__meta_kubernetes";
    let mut jobs = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let port = endpoint["port"]
            .as_str()
            .expect("only named endpoint ports are translated");
        let mut relabel = vec![replace("job", "__tmp_prometheus_job_name")];
        relabel.extend(namespace_rule(monitor, &namespace));
        relabel.extend(selector_rules(&spec["selector"], &format!("{k}_service")));
        relabel.push(json!({"action": "keep", "source_labels": [format!("{k}_endpoint_port_name")], "regex": port}));
        for (kind, label) in [("Node", "node"), ("Pod", "pod")] {
            relabel.push(json!({"source_labels": [format!("{k}_endpoint_address_target_kind"), format!("{k}_endpoint_address_target_name")],
                                "separator": ";", "regex": format!("{kind};(.*)"), "replacement": "${1}", "target_label": label}));
        }
        relabel.push(replace(&format!("{k}_namespace"), "namespace"));
        relabel.push(replace(&format!("{k}_service_name"), "service"));
        relabel.push(replace(&format!("{k}_pod_name"), "pod"));
        relabel.push(replace(&format!("{k}_pod_container_name"), "container"));
        relabel.push(json!({"action": "drop", "source_labels": [format!("{k}_pod_phase")], "regex": "(Failed|Succeeded)"}));
        relabel.push(json!({"source_labels": [format!("{k}_service_name")], "target_label": "job", "replacement": "${1}"}));
        if let Some(job_label) = spec["jobLabel"].as_str() {
            relabel.push(
                json!({"source_labels": [format!("{k}_service_label_{}", sanitize(job_label))],
                                "target_label": "job", "regex": "(.+)", "replacement": "${1}"}),
            );
        }
        relabel.push(json!({"target_label": "endpoint", "replacement": port}));
        relabel.extend(user_relabelings(endpoint));
        jobs.push(job(
            format!("serviceMonitor/{namespace}/{name}/{i}"),
            endpoint,
            sd_url,
            relabel,
        ));
    }
    jobs
}

/// The scrape configs of a PodMonitor, one per pod metrics endpoint; `sd_url` serves role `pod`.
pub fn pod_monitor_jobs(monitor: &Value, sd_url: &str) -> Vec<Value> {
    let (namespace, name) = name_of(monitor);
    let spec = &monitor["spec"];
    let endpoints = spec["podMetricsEndpoints"]
        .as_array()
        .expect("PodMonitor podMetricsEndpoints");
    let k = "__meta_kubernetes";
    let mut jobs = Vec::new();
    for (i, endpoint) in endpoints.iter().enumerate() {
        let port = endpoint["port"]
            .as_str()
            .expect("only named pod ports are translated");
        let mut relabel = vec![replace("job", "__tmp_prometheus_job_name")];
        relabel.extend(namespace_rule(monitor, &namespace));
        relabel.extend(selector_rules(&spec["selector"], &format!("{k}_pod")));
        relabel.push(json!({"action": "drop", "source_labels": [format!("{k}_pod_phase")], "regex": "(Failed|Succeeded)"}));
        relabel.push(json!({"action": "keep", "source_labels": [format!("{k}_pod_container_port_name")], "regex": port}));
        relabel.push(replace(&format!("{k}_namespace"), "namespace"));
        relabel.push(replace(&format!("{k}_pod_container_name"), "container"));
        relabel.push(replace(&format!("{k}_pod_name"), "pod"));
        relabel.push(json!({"target_label": "job", "replacement": format!("{namespace}/{name}")}));
        if let Some(job_label) = spec["jobLabel"].as_str() {
            relabel.push(
                json!({"source_labels": [format!("{k}_pod_label_{}", sanitize(job_label))],
                                "target_label": "job", "regex": "(.+)", "replacement": "${1}"}),
            );
        }
        relabel.push(json!({"target_label": "endpoint", "replacement": port}));
        relabel.extend(user_relabelings(endpoint));
        jobs.push(job(
            format!("podMonitor/{namespace}/{name}/{i}"),
            endpoint,
            sd_url,
            relabel,
        ));
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_monitor_becomes_prometheus_operators_job() {
        let monitor = json!({
            "metadata": {"name": "op", "namespace": "sys"},
            "spec": {"selector": {"matchLabels": {"capsule.dev/service": "metrics"}},
                     "namespaceSelector": {"matchNames": ["sys"]},
                     "endpoints": [{"port": "http-metrics", "honorLabels": true, "interval": "5s"}]}
        });
        let jobs = service_monitor_jobs(&monitor, "http://sd/endpoints");
        assert_eq!(jobs.len(), 1);
        let job = &jobs[0];
        assert_eq!(job["job_name"], "serviceMonitor/sys/op/0");
        assert_eq!(job["honor_labels"], true);
        assert_eq!(job["scrape_interval"], "5s");
        let rules = job["relabel_configs"].as_array().unwrap();
        assert!(rules.contains(&json!({"action": "keep",
            "source_labels": ["__meta_kubernetes_service_label_capsule_dev_service",
                              "__meta_kubernetes_service_labelpresent_capsule_dev_service"],
            "regex": "(metrics);true"})));
        assert!(rules.contains(&json!({"action": "keep", "source_labels": ["__meta_kubernetes_namespace"], "regex": "(sys)"})));
        assert!(rules.contains(&json!({"target_label": "endpoint", "replacement": "http-metrics"})));
    }

    #[test]
    fn a_pod_monitor_keeps_its_own_relabelings_last() {
        let monitor = json!({
            "metadata": {"name": "side", "namespace": "sys"},
            "spec": {"selector": {"matchLabels": {"app": "w"}}, "namespaceSelector": {"any": true},
                     "podMetricsEndpoints": [{"port": "introspection", "relabelings": [
                         {"sourceLabels": ["__meta_kubernetes_pod_label_pool"], "targetLabel": "pool"}]}]}
        });
        let jobs = pod_monitor_jobs(&monitor, "http://sd/pod");
        let rules = jobs[0]["relabel_configs"].as_array().unwrap();
        assert_eq!(jobs[0]["honor_labels"], false);
        assert_eq!(
            rules.last().unwrap(),
            &json!({"source_labels": ["__meta_kubernetes_pod_label_pool"], "target_label": "pool"})
        );
        assert!(rules.contains(&json!({"target_label": "job", "replacement": "sys/side"})));
        // namespaceSelector any: no namespace keep rule.
        assert!(!rules.iter().any(
            |r| r["source_labels"][0] == "__meta_kubernetes_namespace" && r["action"] == "keep"
        ));
    }
}
