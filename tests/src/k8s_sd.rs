//! Prometheus service discovery for the devcluster: the targets `kubernetes_sd_configs` would find
//! (roles `endpoints` and `pod`, with the same `__meta_kubernetes_*` labels), as `http_sd_configs`
//! target groups. Debian's Prometheus build has no kubernetes_sd, and the devcluster has no
//! endpoints controller, so the endpoints role derives each Service's endpoints from its selector
//! and the Ready pods it selects, as the endpoints controller would.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, Service, ServicePort};
use serde_json::{json, Value};

type Labels = BTreeMap<String, String>;

/// A Kubernetes label or annotation name as kubernetes_sd writes it into a meta label name.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// `prefix_label_<name>` and `prefix_labelpresent_<name>` for each label, and the same for
/// annotations.
fn object_meta(
    labels: &mut Labels,
    prefix: &str,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) {
    for (kind, map) in [("label", &meta.labels), ("annotation", &meta.annotations)] {
        for (k, v) in map.iter().flatten() {
            labels.insert(format!("{prefix}_{kind}_{}", sanitize(k)), v.clone());
            labels.insert(
                format!("{prefix}_{kind}present_{}", sanitize(k)),
                "true".into(),
            );
        }
    }
}

fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .into_iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True")
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

/// The labels kubernetes_sd gives every target of a pod (both roles).
fn pod_meta(pod: &Pod) -> Labels {
    let mut labels = Labels::new();
    let meta = &pod.metadata;
    let status = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let k = "__meta_kubernetes";
    labels.insert(
        format!("{k}_namespace"),
        meta.namespace.clone().unwrap_or_default(),
    );
    labels.insert(
        format!("{k}_pod_name"),
        meta.name.clone().unwrap_or_default(),
    );
    labels.insert(format!("{k}_pod_ip"), status.pod_ip.unwrap_or_default());
    labels.insert(format!("{k}_pod_ready"), pod_ready(pod).to_string());
    labels.insert(format!("{k}_pod_phase"), status.phase.unwrap_or_default());
    labels.insert(
        format!("{k}_pod_node_name"),
        spec.node_name.unwrap_or_default(),
    );
    labels.insert(
        format!("{k}_pod_host_ip"),
        status.host_ip.unwrap_or_default(),
    );
    labels.insert(format!("{k}_pod_uid"), meta.uid.clone().unwrap_or_default());
    if let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        labels.insert(format!("{k}_pod_controller_kind"), owner.kind.clone());
        labels.insert(format!("{k}_pod_controller_name"), owner.name.clone());
    }
    object_meta(&mut labels, &format!("{k}_pod"), meta);
    labels
}

fn container_meta(labels: &mut Labels, container: &Container, port: Option<&ContainerPort>) {
    let k = "__meta_kubernetes_pod_container";
    labels.insert(format!("{k}_name"), container.name.clone());
    labels.insert(
        format!("{k}_image"),
        container.image.clone().unwrap_or_default(),
    );
    labels.insert(format!("{k}_init"), "false".into());
    if let Some(port) = port {
        labels.insert(
            format!("{k}_port_name"),
            port.name.clone().unwrap_or_default(),
        );
        labels.insert(format!("{k}_port_number"), port.container_port.to_string());
        let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
        labels.insert(format!("{k}_port_protocol"), protocol);
    }
}

fn group(address: String, mut labels: Labels) -> Value {
    labels.insert("__address__".into(), address);
    json!({"targets": [labels["__address__"]], "labels": labels})
}

/// Role `pod`: one target per declared container port of every pod with an IP (a container
/// without ports: one target on the pod IP alone).
pub fn pod_targets(pods: &[Pod]) -> Vec<Value> {
    let mut groups = Vec::new();
    for pod in pods {
        let Some(ip) = pod_ip(pod) else { continue };
        let base = pod_meta(pod);
        for container in pod.spec.iter().flat_map(|s| &s.containers) {
            let ports = container.ports.clone().unwrap_or_default();
            if ports.is_empty() {
                let mut labels = base.clone();
                container_meta(&mut labels, container, None);
                groups.push(group(ip.clone(), labels));
            }
            for port in &ports {
                let mut labels = base.clone();
                container_meta(&mut labels, container, Some(port));
                groups.push(group(format!("{ip}:{}", port.container_port), labels));
            }
        }
    }
    groups
}

fn selects(service: &Service, pod: &Pod) -> bool {
    let selector = service.spec.as_ref().and_then(|s| s.selector.as_ref());
    let Some(selector) = selector.filter(|s| !s.is_empty()) else {
        return false;
    };
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    pod.metadata.namespace == service.metadata.namespace
        && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The container and port a Service port's targetPort names (or numbers) on `pod`.
fn resolve_port<'a>(
    pod: &'a Pod,
    port: &ServicePort,
) -> Option<(&'a Container, &'a ContainerPort)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let target = port
        .target_port
        .clone()
        .unwrap_or(IntOrString::Int(port.port));
    pod.spec.iter().flat_map(|s| &s.containers).find_map(|c| {
        let found = c.ports.iter().flatten().find(|p| match &target {
            IntOrString::Int(n) => p.container_port == *n,
            IntOrString::String(name) => p.name.as_deref() == Some(name),
        })?;
        Some((c, found))
    })
}

/// Role `endpoints`: one target per (Service port, Ready selected pod), labelled with the
/// Endpoints object (named as its Service), the endpoint port, the Service and the pod.
pub fn endpoints_targets(services: &[Service], pods: &[Pod]) -> Vec<Value> {
    let k = "__meta_kubernetes";
    let mut groups = Vec::new();
    for service in services {
        let ports = service.spec.iter().flat_map(|s| s.ports.iter().flatten());
        for port in ports {
            for pod in pods.iter().filter(|p| selects(service, p) && pod_ready(p)) {
                let (Some(ip), Some((container, cport))) = (pod_ip(pod), resolve_port(pod, port))
                else {
                    continue;
                };
                let mut labels = pod_meta(pod);
                container_meta(&mut labels, container, Some(cport));
                let name = service.metadata.name.clone().unwrap_or_default();
                labels.insert(format!("{k}_endpoints_name"), name.clone());
                object_meta(&mut labels, &format!("{k}_endpoints"), &service.metadata);
                labels.insert(format!("{k}_service_name"), name);
                object_meta(&mut labels, &format!("{k}_service"), &service.metadata);
                labels.insert(format!("{k}_endpoint_ready"), "true".into());
                labels.insert(
                    format!("{k}_endpoint_port_name"),
                    port.name.clone().unwrap_or_default(),
                );
                let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
                labels.insert(format!("{k}_endpoint_port_protocol"), protocol);
                labels.insert(format!("{k}_endpoint_address_target_kind"), "Pod".into());
                let pod_name = pod.metadata.name.clone().unwrap_or_default();
                labels.insert(format!("{k}_endpoint_address_target_name"), pod_name);
                groups.push(group(format!("{ip}:{}", cport.container_port), labels));
            }
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ready: bool) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "op-1", "namespace": "sys", "labels": {"app.kubernetes.io/name": "op"}},
            "spec": {"nodeName": "n", "containers": [{"name": "operator", "image": "op:1",
                "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"phase": "Running", "podIP": "127.0.3.4",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
        .unwrap()
    }

    fn service() -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "op-metrics", "namespace": "sys", "labels": {"capsule.dev/service": "metrics"}},
            "spec": {"selector": {"app.kubernetes.io/name": "op"},
                "ports": [{"name": "http-metrics", "port": 8080, "targetPort": "http"}]}
        }))
        .unwrap()
    }

    #[test]
    fn pod_role_labels_each_container_port() {
        let groups = pod_targets(&[pod(true)]);
        assert_eq!(groups.len(), 1);
        let labels = &groups[0]["labels"];
        assert_eq!(groups[0]["targets"][0], "127.0.3.4:8080");
        assert_eq!(
            labels["__meta_kubernetes_pod_label_app_kubernetes_io_name"],
            "op"
        );
        assert_eq!(
            labels["__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name"],
            "true"
        );
        assert_eq!(labels["__meta_kubernetes_pod_container_port_name"], "http");
        assert_eq!(labels["__meta_kubernetes_pod_ready"], "true");
    }

    #[test]
    fn endpoints_role_resolves_named_target_ports_on_ready_pods_only() {
        let groups = endpoints_targets(&[service()], &[pod(true)]);
        assert_eq!(groups.len(), 1);
        let labels = &groups[0]["labels"];
        assert_eq!(groups[0]["targets"][0], "127.0.3.4:8080");
        assert_eq!(
            labels["__meta_kubernetes_endpoint_port_name"],
            "http-metrics"
        );
        assert_eq!(
            labels["__meta_kubernetes_service_label_capsule_dev_service"],
            "metrics"
        );
        assert_eq!(
            labels["__meta_kubernetes_endpoint_address_target_name"],
            "op-1"
        );
        assert!(endpoints_targets(&[service()], &[pod(false)]).is_empty());
    }
}
