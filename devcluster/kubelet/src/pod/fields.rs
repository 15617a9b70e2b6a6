//! Downward-API field paths (`fieldRef`, `resourceFieldRef`) resolved against a pod.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The value of a `fieldRef.fieldPath`, None when the path is not one the downward API offers.
pub fn field_value(pod: &Pod, path: &str, pod_ip: &str, host_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let quoted_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("']"))
            .map(str::to_owned)
    };
    if let Some(key) = quoted_key("metadata.labels['") {
        return Some(
            meta.labels
                .as_ref()
                .and_then(|m| m.get(&key).cloned())
                .unwrap_or_default(),
        );
    }
    if let Some(key) = quoted_key("metadata.annotations['") {
        return Some(
            meta.annotations
                .as_ref()
                .and_then(|m| m.get(&key).cloned())
                .unwrap_or_default(),
        );
    }
    Some(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_lines(meta.labels.as_ref()),
        "metadata.annotations" => map_lines(meta.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_owned(),
        _ => return None,
    })
}

/// `key="value"` lines, the downward API's format for whole label and annotation maps.
fn map_lines(map: Option<&std::collections::BTreeMap<String, String>>) -> String {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...): the container's own
/// figure, or the machine's for an unset limit (as a real kubelet uses node allocatable). The divisor
/// is not applied: the quantity is returned as written.
pub fn resource_value(container: &Container, resource: &str) -> Option<String> {
    let (kind, name) = resource.split_once('.')?;
    let resources = container.resources.as_ref();
    let set = match kind {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    if let Some(quantity) = set.and_then(|m| m.get(name)) {
        return Some(quantity.0.clone());
    }
    match name {
        "cpu" if kind == "limits" => Some(
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .to_string(),
        ),
        "memory" if kind == "limits" => Some(machine_memory_bytes().to_string()),
        _ => Some("0".into()),
    }
}

pub fn machine_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<u64>()
                        .ok()
                })
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}
