//! JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch for the built-in kinds.

use crate::error::{Error, Result};
use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Result<Self> {
        let media = content_type.split(';').next().unwrap_or_default().trim();
        match media {
            "application/merge-patch+json" => Ok(PatchKind::Merge),
            "application/json-patch+json" => Ok(PatchKind::Json),
            "application/strategic-merge-patch+json" => Ok(PatchKind::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Ok(PatchKind::Apply),
            other => Err(Error::UnsupportedMediaType {
                message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other:?})"),
            }),
        }
    }
}

/// The field a list of objects is keyed by, for strategic merge and server-side apply. The real
/// server reads this from the Go types (`patchMergeKey`) and from `x-kubernetes-list-map-keys`; here
/// a table of the list names in use stands in for both.
pub fn merge_key(list_name: &str, items: &[Value]) -> Option<&'static str> {
    let key = match list_name {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "containerStatuses"
        | "initContainerStatuses" => "name",
        "volumeMounts" => "mountPath",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "ports" => {
            if items.iter().all(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        _ => return None,
    };
    items.iter().all(|i| i.get(key).is_some()).then_some(key)
}

pub fn apply_merge_patch(target: &Value, patch: &Value) -> Value {
    let mut out = target.clone();
    json_patch::merge(&mut out, patch);
    out
}

pub fn apply_json_patch(target: &Value, patch: &Value) -> Result<Value> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| {
        Error::bad_request(format!(
            "the server rejected our request due to an error in our request: {e}"
        ))
    })?;
    let mut out = target.clone();
    json_patch::patch(&mut out, &operations).map_err(|e| Error::Invalid {
        message: format!("the server rejected our request due to an error in our request: {e}"),
        group: String::new(),
        kind: String::new(),
        name: String::new(),
        causes: Vec::new(),
    })?;
    Ok(out)
}

/// Strategic merge: like a merge patch, but lists with a merge key merge element by element, and
/// `$patch: delete|replace`, `$retainKeys`, `$setElementOrder/…` and `$deleteFromPrimitiveList/…`
/// directives are honoured (element order directives are accepted and ignored).
pub fn apply_strategic_merge_patch(target: &Value, patch: &Value) -> Value {
    strategic_merge(target, patch, "")
}

fn strategic_merge(target: &Value, patch: &Value, field_name: &str) -> Value {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            if p.get("$patch").and_then(Value::as_str) == Some("replace") {
                let mut replaced = p.clone();
                replaced.remove("$patch");
                return Value::Object(replaced);
            }
            if p.get("$patch").and_then(Value::as_str) == Some("delete") {
                return Value::Null;
            }
            let mut out = t.clone();
            if let Some(retain) = p.get("$retainKeys").and_then(Value::as_array) {
                let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
                out.retain(|k, _| keep.contains(&k.as_str()));
            }
            for (key, value) in p {
                if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
                    continue;
                }
                if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
                    if let (Some(Value::Array(existing)), Some(remove)) =
                        (out.get_mut(list), value.as_array())
                    {
                        existing.retain(|e| !remove.contains(e));
                    }
                    continue;
                }
                if value.is_null() {
                    out.remove(key);
                    continue;
                }
                let merged = match out.get(key) {
                    Some(existing) => strategic_merge(existing, value, key),
                    None => strip_directives(value),
                };
                if merged.is_null() {
                    out.remove(key);
                } else {
                    out.insert(key.clone(), merged);
                }
            }
            Value::Object(out)
        }
        (Value::Array(t), Value::Array(p)) => {
            let all: Vec<Value> = t.iter().chain(p.iter()).cloned().collect();
            let Some(key) = merge_key(field_name, &all) else {
                return strip_directives(patch);
            };
            if p.iter()
                .any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace"))
            {
                return Value::Array(
                    p.iter()
                        .filter(|e| e.get("$patch").is_none())
                        .map(strip_directives)
                        .collect(),
                );
            }
            let mut out: Vec<Value> = t.clone();
            for element in p {
                let id = &element[key];
                let position = out.iter().position(|e| &e[key] == id);
                let delete = element.get("$patch").and_then(Value::as_str) == Some("delete");
                match (position, delete) {
                    (Some(i), true) => {
                        out.remove(i);
                    }
                    (Some(i), false) => out[i] = strategic_merge(&out[i], element, ""),
                    (None, false) => out.push(strip_directives(element)),
                    (None, true) => {}
                }
            }
            Value::Array(out)
        }
        _ => strip_directives(patch),
    }
}

fn strip_directives(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect::<Map<_, _>>(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merge_merges_containers_by_name() {
        let pod = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        let patch = json!({"spec": {"containers": [{"name": "b", "image": "z"}, {"name": "c", "image": "w"}]}});
        let out = apply_strategic_merge_patch(&pod, &patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "x"}, {"name": "b", "image": "z"}, {"name": "c", "image": "w"}])
        );
        let delete = json!({"spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        let out = apply_strategic_merge_patch(&out, &delete);
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn merge_patch_removes_nulls() {
        let out = apply_merge_patch(&json!({"a": 1, "b": {"c": 2}}), &json!({"b": {"c": null}}));
        assert_eq!(out, json!({"a": 1, "b": {}}));
    }
}
