//! Structural-schema handling of custom resources on write, in the real server's order: unknown
//! fields are pruned (an error under `fieldValidation=Strict`, a warning otherwise), defaults are
//! applied, then the value is validated (types, required, enum, bounds, pattern, lengths, items,
//! `x-kubernetes-validations` CEL rules) with errors worded like the real server's.

use crate::cel_rules::Cause;
use crate::cluster::{invalid, FieldValidation};
use crate::error::{Error, Result};
use crate::resources::ResourceInfo;
use serde_json::Value;

mod validation;

use validation::{validate, Causes};

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
