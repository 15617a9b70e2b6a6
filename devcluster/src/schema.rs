//! Structural-schema handling of custom resources on write, in the real server's order: unknown
//! fields are pruned (an error under `fieldValidation=Strict`, a warning otherwise), defaults are
//! applied, then the value is validated (types, required, enum, bounds, pattern, lengths, items,
//! `x-kubernetes-validations` CEL rules) with errors worded like the real server's.

use crate::cel_rules::{self, Cause};
use crate::cluster::{invalid, FieldValidation};
use crate::error::{Error, Result};
use crate::resources::ResourceInfo;
use serde_json::Value;

fn child_path(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

/// Removes fields the schema does not know, recording their paths.
fn prune(value: &mut Value, schema: &Value, path: &str, root: bool, unknown: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            let additional = &schema["additionalProperties"];
            let embedded = schema["x-kubernetes-embedded-resource"].as_bool() == Some(true);
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child = child_path(path, &key);
                if (root || embedded) && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    if let (Some(v), Some(s)) =
                        (map.get_mut(&key), properties.and_then(|p| p.get(&key)))
                    {
                        if key != "metadata" {
                            prune(v, s, &child, false, unknown);
                        }
                    }
                    continue;
                }
                if let Some(property) = properties.and_then(|p| p.get(&key)) {
                    if let Some(v) = map.get_mut(&key) {
                        prune(v, property, &child, false, unknown);
                    }
                } else if additional.is_object() {
                    if let Some(v) = map.get_mut(&key) {
                        prune(v, additional, &child, false, unknown);
                    }
                } else if additional.as_bool() == Some(true) || preserves_unknown(schema) {
                    // Kept as-is.
                } else {
                    unknown.push(child);
                    map.remove(&key);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                prune(
                    item,
                    &schema["items"],
                    &format!("{path}[{i}]"),
                    false,
                    unknown,
                );
            }
        }
        _ => {}
    }
}

/// Fills in `default`s of absent properties, recursively (defaults inside defaults too).
fn apply_defaults(value: &mut Value, schema: &Value) {
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (key, property) in properties {
                    if !map.contains_key(key) {
                        if let Some(default) = property.get("default") {
                            map.insert(key.clone(), default.clone());
                        }
                    }
                    if let Some(child) = map.get_mut(key) {
                        apply_defaults(child, property);
                    }
                }
            }
            if schema["additionalProperties"].is_object() {
                for (_, child) in map.iter_mut() {
                    apply_defaults(child, &schema["additionalProperties"]);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                apply_defaults(item, &schema["items"]);
            }
        }
        _ => {}
    }
}

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
struct Causes {
    schema: Vec<Cause>,
    rules: Vec<Cause>,
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
    if let Some(max) = schema["maxItems"].as_u64() {
        if items.len() as u64 > max {
            causes.push((
                path.into(),
                "FieldValueTooMany".into(),
                format!("Too many: {}: must have at most {max} items", items.len()),
            ));
        }
    }
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
    if let Some(max) = schema["maxProperties"].as_u64() {
        if map.len() as u64 > max {
            causes.push((
                path.into(),
                "FieldValueTooMany".into(),
                format!("Too many: {}: must have at most {max} items", map.len()),
            ));
        }
    }
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

fn validate(
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

pub fn validate_for_write(
    info: &ResourceInfo,
    object: &mut Value,
    old: Option<&Value>,
    validation: FieldValidation,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let Some(schema) = info.schema.as_ref() else {
        return Ok(());
    };
    let mut unknown = Vec::new();
    prune(object, schema, "", true, &mut unknown);
    if !unknown.is_empty() {
        let fields: Vec<String> = unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect();
        match validation {
            FieldValidation::Strict => {
                return Err(Error::bad_request(format!(
                    "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
                    fields.join(", "),
                    kind = info.kind,
                    version = info.version,
                )))
            }
            FieldValidation::Warn => warnings.extend(fields),
            FieldValidation::Ignore => {}
        }
    }
    apply_defaults(object, schema);
    let mut all = Causes::default();
    validate(object, schema, "", old, true, &mut all);
    let causes = if all.schema.is_empty() {
        all.rules
    } else {
        all.schema
    };
    if causes.is_empty() {
        return Ok(());
    }
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Err(invalid(info, &name, causes))
}

/// Checks the real server makes when a CRD is written: its name, and that every CEL rule compiles.
pub fn validate_crd(crd: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    let spec = &crd["spec"];
    let expected = format!(
        "{}.{}",
        spec["names"]["plural"].as_str().unwrap_or_default(),
        spec["group"].as_str().unwrap_or_default()
    );
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    if name != expected {
        causes.push((
            "metadata.name".into(),
            "FieldValueInvalid".into(),
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    fn walk(schema: &Value, path: &str, causes: &mut Vec<Cause>) {
        if let Some(rules) = schema["x-kubernetes-validations"].as_array() {
            for (i, rule) in rules.iter().enumerate() {
                let text = rule["rule"].as_str().unwrap_or_default();
                if let Err(error) = cel::Program::compile(text) {
                    causes.push((
                        format!("{path}.x-kubernetes-validations[{i}].rule"),
                        "FieldValueInvalid".into(),
                        format!("Invalid value: \"{text}\": compilation failed: {error}"),
                    ));
                }
            }
        }
        if let Some(properties) = schema["properties"].as_object() {
            for (key, child) in properties {
                walk(child, &format!("{path}.properties[{key}]"), causes);
            }
        }
        for nested in ["items", "additionalProperties"] {
            if schema[nested].is_object() {
                walk(&schema[nested], &format!("{path}.{nested}"), causes);
            }
        }
    }
    if let Some(versions) = spec["versions"].as_array() {
        for (i, version) in versions.iter().enumerate() {
            walk(
                &version["schema"]["openAPIV3Schema"],
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                &mut causes,
            );
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::resources_from_crd;
    use serde_json::json;

    fn info() -> ResourceInfo {
        let crd = json!({"spec": {"group": "t.dev", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {"spec": {"type": "object", "required": ["size"],
                    "x-kubernetes-validations": [{"rule": "self.size <= self.max", "message": "size must not exceed max"}],
                    "properties": {
                        "size": {"type": "integer", "minimum": 0},
                        "max": {"type": "integer", "default": 10},
                        "mode": {"type": "string", "enum": ["A", "B"]}}}}}}}]}});
        resources_from_crd(&crd).remove(0)
    }

    #[test]
    fn defaults_prune_and_validate() {
        let info = info();
        let mut object = json!({"metadata": {"name": "w"}, "spec": {"size": 3, "extra": 1}});
        let mut warnings = Vec::new();
        validate_for_write(
            &info,
            &mut object,
            None,
            FieldValidation::Warn,
            &mut warnings,
        )
        .unwrap();
        assert_eq!(object["spec"], json!({"size": 3, "max": 10}));
        assert_eq!(warnings, vec!["unknown field \"spec.extra\"".to_string()]);

        let mut strict = json!({"metadata": {"name": "w"}, "spec": {"size": 3, "extra": 1}});
        let err = validate_for_write(
            &info,
            &mut strict,
            None,
            FieldValidation::Strict,
            &mut warnings,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "Widget in version \"v1\" cannot be handled as a Widget: strict decoding error: unknown field \"spec.extra\"");

        let mut bad = json!({"metadata": {"name": "w"}, "spec": {"size": "big", "mode": "C"}});
        let err = validate_for_write(&info, &mut bad, None, FieldValidation::Warn, &mut warnings)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Widget.t.dev \"w\" is invalid: [spec.mode: Unsupported value: \"C\": supported values: \"A\", \"B\", spec.size: Invalid value: \"string\": spec.size in body must be of type integer: \"string\"]"
        );

        let mut rule = json!({"metadata": {"name": "w"}, "spec": {"size": 30}});
        let err = validate_for_write(&info, &mut rule, None, FieldValidation::Warn, &mut warnings)
            .unwrap_err();
        assert_eq!(err.to_string(), "Widget.t.dev \"w\" is invalid: spec: Invalid value: \"object\": size must not exceed max");

        let mut negative = json!({"metadata": {"name": "w"}, "spec": {"size": -1}});
        let err = validate_for_write(
            &info,
            &mut negative,
            None,
            FieldValidation::Warn,
            &mut warnings,
        )
        .unwrap_err();
        assert!(err.to_string().ends_with("spec.size: Invalid value: -1: spec.size in body should be greater than or equal to 0"), "{err}");
    }
}
