//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side apply: which manager owns
//! which field, conflicts between managers, and removal of fields a manager stopped applying.
//!
//! Lists of objects with a merge key (containers by name, conditions by type...) are tracked per
//! element (`k:{"name":"a"}`); every other list is atomic, as for a CRD without list-type markers.

use crate::error::{Error, Result};
use crate::patch::merge_key;
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

/// A leaf path: tokens like `f:spec`, `k:{"name":"a"}`, `.` (the list element itself).
pub type FieldPath = Vec<String>;
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Everything but `status` (when the kind has a status subresource) and server-owned metadata.
    Main { status_is_separate: bool },
    /// `status` only.
    Status,
}

impl Scope {
    pub fn subresource(self) -> Option<&'static str> {
        match self {
            Scope::Status => Some("status"),
            Scope::Main { .. } => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

const TRACKED_METADATA: &[&str] = &["labels", "annotations", "finalizers", "ownerReferences"];

/// The part of `object` whose fields `scope` tracks.
pub fn tracked_part(object: &Value, scope: Scope) -> Value {
    let mut out = Map::new();
    let Some(map) = object.as_object() else {
        return Value::Object(out);
    };
    for (key, value) in map {
        match (key.as_str(), scope) {
            ("apiVersion" | "kind", _) => {}
            ("status", Scope::Status) => {
                out.insert(key.clone(), value.clone());
            }
            (_, Scope::Status) => {}
            (
                "status",
                Scope::Main {
                    status_is_separate: true,
                },
            ) => {}
            ("metadata", Scope::Main { .. }) => {
                let kept: Map<String, Value> = value
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter(|(k, _)| TRACKED_METADATA.contains(&k.as_str()))
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                if !kept.is_empty() {
                    out.insert(key.clone(), Value::Object(kept));
                }
            }
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
    Value::Object(out)
}

fn key_token(item: &Value, key: &str) -> String {
    let mut fields = Map::new();
    fields.insert(key.to_string(), item[key].clone());
    format!("k:{}", Value::Object(fields))
}

/// Every leaf path of `value`.
pub fn leaves(value: &Value) -> FieldSet {
    let mut set = FieldSet::new();
    collect(value, &mut Vec::new(), "", &mut set);
    set
}

fn collect(value: &Value, prefix: &mut FieldPath, name: &str, set: &mut FieldSet) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                prefix.push(format!("f:{k}"));
                collect(v, prefix, k, set);
                prefix.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match merge_key(name, items) {
            Some(key) => {
                for item in items {
                    prefix.push(key_token(item, key));
                    prefix.push(".".into());
                    set.insert(prefix.clone());
                    prefix.pop();
                    collect(item, prefix, "", set);
                    prefix.pop();
                }
            }
            None => {
                set.insert(prefix.clone());
            }
        },
        _ => {
            if !prefix.is_empty() {
                set.insert(prefix.clone());
            }
        }
    }
}

/// The value at a leaf path, if present.
pub fn get_at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut current = value;
    for token in path {
        if token == "." {
            continue;
        }
        if let Some(field) = token.strip_prefix("f:") {
            current = current.get(field)?;
        } else if let Some(key) = token.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            current = current
                .as_array()?
                .iter()
                .find(|item| key.iter().all(|(k, v)| &item[k] == v))?;
        } else {
            return None;
        }
    }
    Some(current)
}

/// Removes the leaf at `path` (a `.` leaf removes the list element).
fn remove_at(value: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        let Some((element, parents)) = parents.split_last() else {
            return;
        };
        if let (Some(Value::Array(items)), Some(key)) =
            (get_mut_at(value, parents), element.strip_prefix("k:"))
        {
            if let Ok(key) = serde_json::from_str::<Map<String, Value>>(key) {
                items.retain(|item| !key.iter().all(|(k, v)| &item[k] == v));
            }
        }
        return;
    }
    if let (Some(Value::Object(map)), Some(field)) =
        (get_mut_at(value, parents), last.strip_prefix("f:"))
    {
        map.remove(field);
    }
}

fn get_mut_at<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    let mut current = value;
    for token in path {
        if let Some(field) = token.strip_prefix("f:") {
            current = current.get_mut(field)?;
        } else if let Some(key) = token.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            current = current
                .as_array_mut()?
                .iter_mut()
                .find(|item| key.iter().all(|(k, v)| &item[k] == v))?;
        }
    }
    Some(current)
}

pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut node = &mut root;
        for token in path {
            node = node
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new()))
                .as_object_mut()
                .expect("fieldsV1 nodes are objects");
        }
    }
    Value::Object(root)
}

pub fn from_fields_v1(value: &Value) -> FieldSet {
    fn walk(node: &Value, prefix: &mut FieldPath, set: &mut FieldSet) {
        match node.as_object() {
            Some(map) if !map.is_empty() => {
                for (k, v) in map {
                    prefix.push(k.clone());
                    walk(v, prefix, set);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    set.insert(prefix.clone());
                }
            }
        }
    }
    let mut set = FieldSet::new();
    walk(value, &mut Vec::new(), &mut set);
    set
}

pub fn read_entries(object: &Value) -> Vec<ManagedEntry> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| ManagedEntry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or("Update").into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().map(str::to_string),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn write_entries(object: &mut Value, entries: &[ManagedEntry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(sub) = &e.subresource {
                v["subresource"] = json!(sub);
            }
            v
        })
        .collect();
    if let Some(meta) = object["metadata"].as_object_mut() {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(list));
        }
    }
}

fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn in_scope(entry: &ManagedEntry, scope: Scope) -> bool {
    entry.subresource.as_deref() == scope.subresource()
}

fn entry_for<'a>(
    entries: &'a mut Vec<ManagedEntry>,
    manager: &str,
    operation: &str,
    scope: Scope,
    api_version: &str,
    now: &str,
) -> &'a mut ManagedEntry {
    let position = entries
        .iter()
        .position(|e| e.manager == manager && e.operation == operation && in_scope(e, scope));
    let index = match position {
        Some(i) => i,
        None => {
            entries.push(ManagedEntry {
                manager: manager.into(),
                operation: operation.into(),
                api_version: api_version.into(),
                time: now.into(),
                subresource: scope.subresource().map(str::to_string),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    let entry = &mut entries[index];
    entry.time = now.into();
    entry.api_version = api_version.into();
    entry
}

/// Records an Update-operation write: `manager` now owns every field whose value it changed.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    api_version: &str,
    now: &str,
) {
    let mut entries = match old {
        Some(old) => read_entries(old),
        None => Vec::new(),
    };
    let new_part = tracked_part(new, scope);
    let old_part = old
        .map(|o| tracked_part(o, scope))
        .unwrap_or_else(|| json!({}));
    let present = leaves(&new_part);
    let changed: FieldSet = present
        .iter()
        .filter(|p| get_at(&old_part, p) != get_at(&new_part, p))
        .cloned()
        .collect();
    for entry in entries.iter_mut().filter(|e| in_scope(e, scope)) {
        entry
            .fields
            .retain(|p| present.contains(p) && !changed.iter().any(|c| c == p));
    }
    if !changed.is_empty() {
        entry_for(&mut entries, manager, "Update", scope, api_version, now)
            .fields
            .extend(changed);
    }
    entries.retain(|e| !e.fields.is_empty());
    write_entries(new, &entries);
}

/// Merges an applied configuration into the live object the way server-side apply does.
fn merge_applied(live: &Value, config: &Value, name: &str) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            let mut out = l.clone();
            for (k, v) in c {
                let merged = match out.get(k) {
                    Some(existing) => merge_applied(existing, v, k),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(c)) => {
            let all: Vec<Value> = l.iter().chain(c.iter()).cloned().collect();
            match merge_key(name, &all) {
                Some(key) => {
                    let mut out = l.clone();
                    for item in c {
                        match out.iter().position(|e| e[key] == item[key]) {
                            Some(i) => out[i] = merge_applied(&out[i], item, ""),
                            None => out.push(item.clone()),
                        }
                    }
                    Value::Array(out)
                }
                None => config.clone(),
            }
        }
        _ => config.clone(),
    }
}

fn format_path(path: &[String]) -> String {
    path.iter()
        .filter(|t| *t != ".")
        .map(|t| match t.strip_prefix("f:") {
            Some(field) => format!(".{field}"),
            None => format!(
                "[{}]",
                t.trim_start_matches("k:")
                    .trim_start_matches('{')
                    .trim_end_matches('}')
                    .replace('"', "")
                    .replace(':', "=")
            ),
        })
        .collect()
}

/// Server-side apply of `config` by `manager` onto `live` (the current object, or a fresh one with
/// only metadata for a create). Returns the new object with updated managedFields.
pub fn apply(
    live: &Value,
    config: &Value,
    manager: &str,
    force: bool,
    scope: Scope,
    api_version: &str,
    now: &str,
) -> Result<Value> {
    let mut entries = read_entries(live);
    let config_part = tracked_part(config, scope);
    let applied = leaves(&config_part);
    let live_part = tracked_part(live, scope);
    let mut conflicts: Vec<(String, Option<String>, FieldPath)> = Vec::new();
    for entry in entries.iter().filter(|e| in_scope(e, scope)) {
        if entry.manager == manager && entry.operation == "Apply" {
            continue;
        }
        for owned in &entry.fields {
            for path in applied.iter().filter(|p| overlaps(p, owned)) {
                if get_at(&live_part, path) != get_at(&config_part, path) {
                    let api_version =
                        (entry.operation == "Update").then(|| entry.api_version.clone());
                    conflicts.push((entry.manager.clone(), api_version, path.clone()));
                }
            }
        }
    }
    conflicts.dedup();
    if !conflicts.is_empty() && !force {
        return Err(conflict_error(&conflicts));
    }
    for entry in entries.iter_mut().filter(|e| in_scope(e, scope)) {
        if entry.manager == manager && entry.operation == "Apply" {
            continue;
        }
        entry
            .fields
            .retain(|owned| !conflicts.iter().any(|(_, _, p)| overlaps(p, owned)));
    }

    let previous: FieldSet = entries
        .iter()
        .find(|e| e.manager == manager && e.operation == "Apply" && in_scope(e, scope))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut object = merge_applied(live, &tracked_part(config, scope), "");
    for path in previous.difference(&applied) {
        let owned_by_other = entries.iter().any(|e| {
            !(e.manager == manager && e.operation == "Apply")
                && in_scope(e, scope)
                && e.fields.iter().any(|o| overlaps(o, path))
        });
        if !owned_by_other {
            remove_at(&mut object, path);
        }
    }
    entry_for(&mut entries, manager, "Apply", scope, api_version, now).fields = applied;
    entries.retain(|e| !e.fields.is_empty());
    write_entries(&mut object, &entries);
    Ok(object)
}

fn conflict_error(conflicts: &[(String, Option<String>, FieldPath)]) -> Error {
    let describe = |manager: &str, api_version: &Option<String>| match api_version {
        Some(v) => format!("conflict with \"{manager}\" using {v}"),
        None => format!("conflict with \"{manager}\""),
    };
    let message = if conflicts.len() == 1 {
        let (manager, api_version, path) = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: {}: {}",
            describe(manager, api_version),
            format_path(path)
        )
    } else {
        let mut text = format!("Apply failed with {} conflicts: ", conflicts.len());
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, v, p)| format!("{}: {}", describe(m, v), format_path(p)))
            .collect();
        text.push_str(&lines.join("\n"));
        text
    };
    let causes = conflicts
        .iter()
        .map(|(m, v, p)| json!({"reason": "FieldManagerConflict", "message": describe(m, v), "field": format_path(p)}))
        .collect();
    Error::ApplyConflict { message, causes }
}

#[cfg(test)]
mod tests;
