//! Validation of a value against its structural schema: type, enum, bounds, lengths, pattern,
//! items and properties (recursively), then the `x-kubernetes-validations` CEL rules.

use super::child_path;
use crate::cel_rules::{self, Cause};
use serde_json::Value;

fn value_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    let actual = value_type(value);
    actual == expected || (expected == "number" && actual == "integer")
}

/// `-1`, `"text"`: how the real server prints a bad value.
fn shown(value: &Value) -> String {
    match value {
        Value::Object(_) => "\"object\"".into(),
        Value::Array(_) => "\"array\"".into(),
        other => other.to_string(),
    }
}

fn invalid_cause(path: &str, value: &Value, message: String) -> Cause {
    (
        path.to_string(),
        "FieldValueInvalid".into(),
        format!("Invalid value: {}: {message}", shown(value)),
    )
}

/// Schema errors, and CEL rule failures (reported only when the schema checks pass, as on the real server).
#[derive(Default)]
pub(super) struct Causes {
    pub(super) schema: Vec<Cause>,
    pub(super) rules: Vec<Cause>,
}

/// A null where the schema wants a type (and is not nullable).
fn null_causes(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if schema["nullable"].as_bool() != Some(true) && schema["type"].is_string() {
        let expected = schema["type"].as_str().unwrap_or_default();
        causes.push((
            path.into(),
            "FieldValueTypeInvalid".into(),
            format!("Invalid value: \"null\": {path} in body must be of type {expected}: \"null\""),
        ));
    }
}

/// Whether the value has the schema's type (or is an int-or-string); a mismatch is a cause
/// and ends the checks of this value.
fn type_fits(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) -> bool {
    let int_or_string = schema["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if int_or_string {
        if !matches!(value_type(value), "integer" | "string") {
            causes.push(invalid_cause(
                path,
                value,
                format!(
                    "{path} in body must be of type integer-or-string: \"{}\"",
                    value_type(value)
                ),
            ));
            return false;
        }
    } else if let Some(expected) = schema["type"].as_str() {
        if !type_matches(expected, value) {
            causes.push((
                path.into(),
                "FieldValueTypeInvalid".into(),
                format!(
                    "Invalid value: \"{}\": {path} in body must be of type {expected}: \"{}\"",
                    value_type(value),
                    value_type(value)
                ),
            ));
            return false;
        }
    }
    true
}

fn enum_causes(value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed.iter().map(|v| v.to_string()).collect();
            causes.push((
                path.into(),
                "FieldValueNotSupported".into(),
                format!(
                    "Unsupported value: {}: supported values: {}",
                    value,
                    list.join(", ")
                ),
            ));
        }
    }
}

/// minimum, maximum (either exclusive) and multipleOf.
fn number_causes(
    n: &serde_json::Number,
    value: &Value,
    schema: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    let x = n.as_f64().unwrap_or(0.0);
    let exclusive_min = schema["exclusiveMinimum"].as_bool() == Some(true);
    let exclusive_max = schema["exclusiveMaximum"].as_bool() == Some(true);
    if let Some(min) = schema["minimum"].as_f64() {
        if exclusive_min && x <= min {
            causes.push(invalid_cause(
                path,
                value,
                format!(
                    "{path} in body should be greater than {}",
                    schema["minimum"]
                ),
            ));
        } else if x < min {
            causes.push(invalid_cause(
                path,
                value,
                format!(
                    "{path} in body should be greater than or equal to {}",
                    schema["minimum"]
                ),
            ));
        }
    }
    if let Some(max) = schema["maximum"].as_f64() {
        if exclusive_max && x >= max {
            causes.push(invalid_cause(
                path,
                value,
                format!("{path} in body should be less than {}", schema["maximum"]),
            ));
        } else if x > max {
            causes.push(invalid_cause(
                path,
                value,
                format!(
                    "{path} in body should be less than or equal to {}",
                    schema["maximum"]
                ),
            ));
        }
    }
    if let Some(m) = schema["multipleOf"].as_f64() {
        if m > 0.0 && (x / m).fract() != 0.0 {
            causes.push(invalid_cause(
                path,
                value,
                format!(
                    "{path} in body should be a multiple of {}",
                    schema["multipleOf"]
                ),
            ));
        }
    }
}

/// minLength, maxLength and pattern.
fn string_causes(s: &str, value: &Value, schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    let length = s.chars().count() as u64;
    if let Some(min) = schema["minLength"].as_u64() {
        if length < min {
            causes.push(invalid_cause(
                path,
                value,
                format!("{path} in body should be at least {min} chars long"),
            ));
        }
    }
    if let Some(max) = schema["maxLength"].as_u64() {
        if length > max {
            causes.push((
                path.into(),
                "FieldValueTooLong".into(),
                format!("Too long: may not be more than {max} bytes"),
            ));
        }
    }
    if let Some(pattern) = schema["pattern"].as_str() {
        if let Ok(re) = regex::Regex::new(pattern) {
            if !re.is_match(s) {
                causes.push(invalid_cause(
                    path,
                    value,
                    format!("{path} in body should match '{pattern}'"),
                ));
            }
        }
    }
}

/// minItems, maxItems, and uniqueness for sets.
fn array_causes(items: &[Value], schema: &Value, path: &str, causes: &mut Vec<Cause>) {
    if let Some(min) = schema["minItems"].as_u64() {
        if (items.len() as u64) < min {
            causes.push(invalid_cause(
                path,
                &Value::from(items.len()),
                format!("{path} in body should have at least {min} items"),
            ));
        }
    }
    too_many(items.len(), schema["maxItems"].as_u64(), path, causes);
    if schema["uniqueItems"].as_bool() == Some(true)
        || schema["x-kubernetes-list-type"].as_str() == Some("set")
    {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                causes.push((
                    format!("{path}[{i}]"),
                    "FieldValueDuplicate".into(),
                    format!("Duplicate value: {item}"),
                ));
            }
        }
    }
}

/// `maxItems` or `maxProperties`: more than `max` entries is `FieldValueTooMany`.
fn too_many(count: usize, max: Option<u64>, path: &str, causes: &mut Vec<Cause>) {
    if let Some(max) = max.filter(|max| count as u64 > *max) {
        causes.push((
            path.into(),
            "FieldValueTooMany".into(),
            format!("Too many: {count}: must have at most {max} items"),
        ));
    }
}

/// required fields and maxProperties.
fn object_causes(
    map: &serde_json::Map<String, Value>,
    schema: &Value,
    path: &str,
    causes: &mut Vec<Cause>,
) {
    if let Some(required) = schema["required"].as_array() {
        for field in required.iter().filter_map(Value::as_str) {
            if !map.contains_key(field) {
                causes.push((
                    child_path(path, field),
                    "FieldValueRequired".into(),
                    "Required value".into(),
                ));
            }
        }
    }
    too_many(map.len(), schema["maxProperties"].as_u64(), path, causes);
}

fn validate_items(
    items: &[Value],
    schema: &Value,
    path: &str,
    old: Option<&Value>,
    all: &mut Causes,
) {
    for (i, item) in items.iter().enumerate() {
        let old_item = old.and_then(|o| o.get(i));
        validate(
            item,
            &schema["items"],
            &format!("{path}[{i}]"),
            old_item,
            false,
            all,
        );
    }
}

/// Each known property against its schema (or additionalProperties); at the root the type
/// and object metadata are not the schema's business.
fn validate_properties(
    map: &serde_json::Map<String, Value>,
    schema: &Value,
    path: &str,
    old: Option<&Value>,
    root: bool,
    all: &mut Causes,
) {
    let properties = schema["properties"].as_object();
    for (key, child) in map {
        if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        let child_schema = match properties.and_then(|p| p.get(key)) {
            Some(s) => s,
            None if schema["additionalProperties"].is_object() => &schema["additionalProperties"],
            None => continue,
        };
        let old_child = old.and_then(|o| o.get(key));
        validate(
            child,
            child_schema,
            &child_path(path, key),
            old_child,
            false,
            all,
        );
    }
}

pub(super) fn validate(
    value: &Value,
    schema: &Value,
    path: &str,
    old: Option<&Value>,
    root: bool,
    all: &mut Causes,
) {
    let causes = &mut all.schema;
    if value.is_null() {
        null_causes(schema, path, causes);
        return;
    }
    if !type_fits(value, schema, path, causes) {
        return;
    }
    enum_causes(value, schema, path, causes);
    match value {
        Value::Number(n) => number_causes(n, value, schema, path, causes),
        Value::String(s) => string_causes(s, value, schema, path, causes),
        Value::Array(items) => {
            array_causes(items, schema, path, causes);
            validate_items(items, schema, path, old, all);
        }
        Value::Object(map) => {
            object_causes(map, schema, path, causes);
            validate_properties(map, schema, path, old, root, all);
        }
        _ => {}
    }
    // Root-level rules see the whole object; the real server names that field "<nil>".
    let field = if root { "<nil>" } else { path };
    all.rules
        .extend(cel_rules::evaluate(schema, value, old, field));
}
