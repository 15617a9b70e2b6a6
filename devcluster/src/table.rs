//! Server-side `Table` output (`meta.k8s.io/v1`), so `kubectl get` prints the same columns as
//! against a real cluster: CRD `additionalPrinterColumns`, and the columns of the common built-ins.

use crate::resources::ResourceInfo;
use serde_json::{json, Value};
use std::sync::Arc;

/// `5s`, `3m20s`, `4h`, `2d3h`: kubectl's `HumanDuration`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    if s < 120 {
        format!("{s}s")
    } else if m < 10 {
        two_units(m, 'm', s % 60, 's')
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        two_units(h, 'h', m % 60, 'm')
    } else if h < 48 {
        format!("{h}h")
    } else if h < 24 * 8 {
        two_units(d, 'd', h % 24, 'h')
    } else if h < 24 * 365 * 2 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

/// `3m20s`, or `3m` when the smaller unit is zero.
fn two_units(large: i64, large_unit: char, small: i64, small_unit: char) -> String {
    if small == 0 {
        format!("{large}{large_unit}")
    } else {
        format!("{large}{large_unit}{small}{small_unit}")
    }
}

pub fn age(timestamp: &Value) -> Value {
    match timestamp
        .as_str()
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
    {
        Some(t) => json!(human_duration(
            jiff::Timestamp::now().as_second() - t.as_second()
        )),
        None => json!("<unknown>"),
    }
}

/// Evaluates the JSONPath subset printer columns use: `.a.b`, `.a[0]`, `.a[*].b`,
/// `.a[?(@.type=="Ready")].status`. Returns every match.
pub fn json_path(object: &Value, path: &str) -> Vec<Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut current = vec![object.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let field = &after[..end];
            current = current
                .iter()
                .filter_map(|v| v.get(field).cloned())
                .collect();
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let Some(end) = after.find(']') else { break };
            let selector = &after[..end];
            rest = &after[end + 1..];
            let items: Vec<Value> = current
                .iter()
                .filter_map(|v| v.as_array().cloned())
                .flatten()
                .collect();
            current = if selector == "*" {
                items
            } else if let Some(filter) = selector
                .strip_prefix("?(@.")
                .and_then(|f| f.strip_suffix(')'))
            {
                let (field, wanted) = match filter.split_once("==") {
                    Some((f, w)) => (
                        f.trim(),
                        Some(w.trim().trim_matches('"').trim_matches('\'')),
                    ),
                    None => (filter.trim(), None),
                };
                items
                    .into_iter()
                    .filter(|item| {
                        let value = crate::selectors::field_value(item, field);
                        match wanted {
                            Some(w) => value == w,
                            None => !value.is_empty(),
                        }
                    })
                    .collect()
            } else if let Ok(index) = selector.parse::<i64>() {
                let len = items.len() as i64;
                let i = if index < 0 { len + index } else { index };
                items.get(i as usize).cloned().into_iter().collect()
            } else {
                Vec::new()
            };
        } else {
            break;
        }
    }
    current
}

fn column(name: &str, kind: &str, format: &str, description: &str, priority: i64) -> Value {
    json!({"name": name, "type": kind, "format": format, "description": description, "priority": priority})
}

fn name_column() -> Value {
    column(
        "Name",
        "string",
        "name",
        "Name must be unique within a namespace.",
        0,
    )
}

fn age_column() -> Value {
    column("Age", "string", "", "CreationTimestamp is a timestamp representing the server time when this object was created.", 0)
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn pod_cells(pod: &Value) -> Vec<Value> {
    let statuses = pod["status"]["containerStatuses"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let total = pod["spec"]["containers"]
        .as_array()
        .map(|c| c.len())
        .unwrap_or(0);
    let ready = statuses
        .iter()
        .filter(|s| s["ready"].as_bool() == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
        .sum();
    let mut status = pod["status"]["reason"]
        .as_str()
        .or(pod["status"]["phase"].as_str())
        .unwrap_or("Pending")
        .to_string();
    for s in &statuses {
        if let Some(reason) = s["state"]["waiting"]["reason"].as_str() {
            status = reason.to_string();
        } else if let Some(reason) = s["state"]["terminated"]["reason"].as_str() {
            status = reason.to_string();
        }
    }
    if pod["metadata"].get("deletionTimestamp").is_some() {
        status = "Terminating".into();
    }
    vec![
        json!(format!("{ready}/{total}")),
        json!(status),
        json!(restarts),
    ]
}

fn condition_status(object: &Value, kind: &str) -> String {
    object["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .map(|c| {
            if c["status"] == "True" {
                kind.to_string()
            } else {
                format!("Not{kind}")
            }
        })
        .unwrap_or_else(|| "Unknown".into())
}

/// `(columns between Name and Age, cells for one object)` for a built-in kind.
fn builtin_columns(info: &ResourceInfo) -> Vec<Value> {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => vec![
            column("Ready", "string", "", "The aggregate readiness state of this pod for accepting traffic.", 0),
            column("Status", "string", "", "The aggregate status of the containers in this pod.", 0),
            column("Restarts", "string", "", "The number of times the containers in this pod have been restarted.", 0),
        ],
        ("", "Namespace") | ("", "Node") => vec![column("Status", "string", "", "The status of the object.", 0)],
        ("apps", "Deployment") => vec![
            column("Ready", "string", "", "Number of the pod with ready state", 0),
            column("Up-to-date", "string", "", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
            column("Available", "string", "", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
        ],
        ("apps", "ReplicaSet") => vec![
            column("Desired", "integer", "", "Number of desired pods.", 0),
            column("Current", "integer", "", "Number of actual replicas.", 0),
            column("Ready", "integer", "", "Number of ready replicas.", 0),
        ],
        ("", "Service") => vec![
            column("Type", "string", "", "The type of the service.", 0),
            column("Cluster-IP", "string", "", "The cluster IP of the service.", 0),
            column("Port(s)", "string", "", "The ports of the service.", 0),
        ],
        ("", "Secret") => vec![
            column("Type", "string", "", "The type of the secret.", 0),
            column("Data", "string", "", "The number of entries in the secret.", 0),
        ],
        ("", "ConfigMap") => vec![column("Data", "string", "", "The number of entries in the config map.", 0)],
        _ => Vec::new(),
    }
}

fn builtin_cells(info: &ResourceInfo, object: &Value) -> Vec<Value> {
    match (info.group.as_str(), info.kind.as_str()) {
        ("", "Pod") => pod_cells(object),
        ("", "Namespace") => vec![json!(object["status"]["phase"]
            .as_str()
            .unwrap_or("Active"))],
        ("", "Node") => vec![json!(condition_status(object, "Ready"))],
        ("apps", "Deployment") => {
            let s = &object["status"];
            vec![
                json!(format!(
                    "{}/{}",
                    s["readyReplicas"].as_i64().unwrap_or(0),
                    object["spec"]["replicas"].as_i64().unwrap_or(0)
                )),
                json!(s["updatedReplicas"].as_i64().unwrap_or(0)),
                json!(s["availableReplicas"].as_i64().unwrap_or(0)),
            ]
        }
        ("apps", "ReplicaSet") => vec![
            json!(object["spec"]["replicas"].as_i64().unwrap_or(0)),
            json!(object["status"]["replicas"].as_i64().unwrap_or(0)),
            json!(object["status"]["readyReplicas"].as_i64().unwrap_or(0)),
        ],
        ("", "Service") => {
            let ports: Vec<String> = object["spec"]["ports"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!(
                                "{}/{}",
                                text(&p["port"]),
                                p["protocol"].as_str().unwrap_or("TCP")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                json!(object["spec"]["type"].as_str().unwrap_or("ClusterIP")),
                json!(object["spec"]["clusterIP"].as_str().unwrap_or("<none>")),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
            ]
        }
        ("", "Secret") => vec![
            json!(object["type"].as_str().unwrap_or("Opaque")),
            json!(object["data"].as_object().map(|d| d.len()).unwrap_or(0)),
        ],
        ("", "ConfigMap") => vec![json!(
            object["data"].as_object().map(|d| d.len()).unwrap_or(0)
                + object["binaryData"]
                    .as_object()
                    .map(|d| d.len())
                    .unwrap_or(0)
        )],
        _ => Vec::new(),
    }
}

fn crd_cell(object: &Value, spec: &Value) -> Value {
    let values = json_path(object, spec["jsonPath"].as_str().unwrap_or_default());
    let Some(first) = values.first() else {
        return Value::Null;
    };
    match spec["type"].as_str() {
        Some("date") => age(first),
        Some("integer") => first
            .as_i64()
            .map(|i| json!(i))
            .unwrap_or_else(|| json!(text(first))),
        Some("number") => first
            .as_f64()
            .map(|f| json!(f))
            .unwrap_or_else(|| json!(text(first))),
        Some("boolean") => first
            .as_bool()
            .map(|b| json!(b))
            .unwrap_or_else(|| json!(text(first))),
        _ if values.len() > 1 => json!(values.iter().map(text).collect::<Vec<_>>().join(",")),
        _ => json!(text(first)),
    }
}

fn row_object(object: &Value, include: Option<&str>) -> Value {
    match include {
        Some("None") => Value::Null,
        Some("Object") => object.clone(),
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": object["metadata"]})
        }
    }
}

pub fn table(
    info: &ResourceInfo,
    objects: &[Arc<Value>],
    resource_version: &str,
    include_object: Option<&str>,
) -> Value {
    if info.kind == "Event" {
        return event_table(objects, resource_version, include_object);
    }
    let custom_columns = info.custom && !info.printer_columns.is_empty();
    let mut columns = vec![name_column()];
    if info.kind == "CustomResourceDefinition" {
        columns.push(column("Created At", "date", "", "", 0));
    } else if custom_columns {
        for c in &info.printer_columns {
            columns.push(column(
                c["name"].as_str().unwrap_or_default(),
                c["type"].as_str().unwrap_or("string"),
                c["format"].as_str().unwrap_or_default(),
                c["description"].as_str().unwrap_or_default(),
                c["priority"].as_i64().unwrap_or(0),
            ));
        }
        // A CRD that lists its own Age column keeps it; the server adds one otherwise.
        if !info.printer_columns.iter().any(|c| c["name"] == "Age") {
            columns.push(age_column());
        }
    } else {
        columns.extend(builtin_columns(info));
        columns.push(age_column());
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let mut cells = vec![object["metadata"]["name"].clone()];
            if info.kind == "CustomResourceDefinition" {
                cells.push(object["metadata"]["creationTimestamp"].clone());
            } else if custom_columns {
                cells.extend(info.printer_columns.iter().map(|c| crd_cell(object, c)));
                if !info.printer_columns.iter().any(|c| c["name"] == "Age") {
                    cells.push(age(&object["metadata"]["creationTimestamp"]));
                }
            } else {
                cells.extend(builtin_cells(info, object));
                cells.push(age(&object["metadata"]["creationTimestamp"]));
            }
            json!({"cells": cells, "object": row_object(object, include_object)})
        })
        .collect();
    table_object(resource_version, columns, rows)
}

/// The `meta.k8s.io/v1` Table holding `columns` and `rows`.
fn table_object(resource_version: &str, columns: Vec<Value>, rows: Vec<Value>) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": columns,
        "rows": rows,
    })
}

/// Events print like `kubectl get events` against a real cluster: no Name column in front.
fn event_table(
    objects: &[Arc<Value>],
    resource_version: &str,
    include_object: Option<&str>,
) -> Value {
    let columns = vec![
        column("Last Seen", "string", "", "Time of the last occurrence.", 0),
        column(
            "Type",
            "string",
            "",
            "Type of this event (Normal, Warning).",
            0,
        ),
        column("Reason", "string", "", "Why the action was taken.", 0),
        column("Object", "string", "", "The object this event is about.", 0),
        column(
            "Message",
            "string",
            "",
            "A human-readable description of the event.",
            0,
        ),
        column(
            "Name",
            "string",
            "name",
            "Name must be unique within a namespace.",
            1,
        ),
    ];
    let rows: Vec<Value> = objects
        .iter()
        .map(|e| {
            let last = [
                &e["lastTimestamp"],
                &e["series"]["lastObservedTime"],
                &e["eventTime"],
                &e["deprecatedLastTimestamp"],
                &e["metadata"]["creationTimestamp"],
            ]
            .into_iter()
            .find(|v| v.is_string())
            .cloned()
            .unwrap_or(Value::Null);
            let about = if e["involvedObject"].is_object() {
                &e["involvedObject"]
            } else {
                &e["regarding"]
            };
            let object = format!(
                "{}/{}",
                about["kind"].as_str().unwrap_or_default().to_lowercase(),
                about["name"].as_str().unwrap_or_default()
            );
            let message = e["message"]
                .as_str()
                .or(e["note"].as_str())
                .unwrap_or_default();
            let cells = vec![
                age(&last),
                e["type"].clone(),
                e["reason"].clone(),
                json!(object),
                json!(message),
                e["metadata"]["name"].clone(),
            ];
            json!({"cells": cells, "object": row_object(e, include_object)})
        })
        .collect();
    table_object(resource_version, columns, rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_path_subset() {
        let o = json!({"status": {"conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}], "n": 3}});
        assert_eq!(json_path(&o, ".status.n"), vec![json!(3)]);
        assert_eq!(
            json_path(&o, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(
            json_path(&o, ".status.conditions[0].type"),
            vec![json!("A")]
        );
        assert_eq!(json_path(&o, ".status.conditions[*].type").len(), 2);
    }

    #[test]
    fn human_durations_match_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(200), "3m20s");
        assert_eq!(human_duration(3600 * 5), "5h");
        assert_eq!(human_duration(86400 * 3 + 3600), "3d1h");
    }
}
