//! `x-kubernetes-validations`: CEL rules evaluated with the `cel` crate, failures worded like the
//! real server's (`spec: Invalid value: "object": <message>` or `... failed rule: <rule>`).
//! Transition rules (those naming `oldSelf`) run on updates only. The Kubernetes CEL extension
//! libraries (quantity, URL, IP, regex-free list helpers) are not available.

use cel::objects::Map;
use cel::{Context, Program, Value as CelValue};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;

/// `(field path, status reason, message)`, the shape of a validation cause.
pub type Cause = (String, String, String);

pub fn to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => CelValue::Int(i),
            None => n
                .as_u64()
                .map(CelValue::UInt)
                .unwrap_or_else(|| CelValue::Float(n.as_f64().unwrap_or(0.0))),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => {
            let entries: HashMap<String, CelValue> =
                map.iter().map(|(k, v)| (k.clone(), to_cel(v))).collect();
            CelValue::Map(Map::from(entries))
        }
    }
}

/// `Invalid value: "object": …` uses the schema type's name.
pub fn type_name(schema: &Value, value: &Value) -> &'static str {
    match schema["type"].as_str() {
        Some("object") => "object",
        Some("array") => "array",
        Some("string") => "string",
        Some("integer") => "integer",
        Some("number") => "number",
        Some("boolean") => "boolean",
        _ => match value {
            Value::Object(_) => "object",
            Value::Array(_) => "array",
            Value::String(_) => "string",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::Bool(_) => "boolean",
            Value::Null => "null",
        },
    }
}

fn cause_for(reason: &str, field: String, type_name: &str, message: &str) -> Cause {
    let text = match reason {
        "FieldValueForbidden" => format!("Forbidden: {message}"),
        "FieldValueRequired" => format!("Required value: {message}"),
        "FieldValueDuplicate" => format!("Duplicate value: \"{type_name}\""),
        _ => format!("Invalid value: \"{type_name}\": {message}"),
    };
    (field, reason.to_string(), text)
}

/// Evaluates the rules of one schema node against its value.
pub fn evaluate(schema: &Value, value: &Value, old: Option<&Value>, field: &str) -> Vec<Cause> {
    let Some(rules) = schema["x-kubernetes-validations"].as_array() else {
        return Vec::new();
    };
    let type_name = type_name(schema, value);
    let mut causes = Vec::new();
    for rule in rules {
        let text = rule["rule"].as_str().unwrap_or_default();
        let program = match Program::compile(text) {
            Ok(p) => p,
            Err(error) => {
                causes.push(cause_for(
                    "FieldValueInvalid",
                    field.into(),
                    type_name,
                    &format!("compilation failed: {error}"),
                ));
                continue;
            }
        };
        let transition = program.references().has_variable("oldSelf");
        if transition && old.is_none() {
            continue;
        }
        let mut context = Context::default();
        context.add_variable_from_value("self", to_cel(value));
        if let Some(old) = old {
            context.add_variable_from_value("oldSelf", to_cel(old));
        }
        let reason = rule["reason"].as_str().unwrap_or("FieldValueInvalid");
        let target = match rule["fieldPath"].as_str() {
            Some(p) if !p.is_empty() => format!("{field}{p}"),
            _ => field.to_string(),
        };
        match program.execute(&context) {
            Ok(CelValue::Bool(true)) => {}
            Ok(CelValue::Bool(false)) => {
                let message = rule["messageExpression"]
                    .as_str()
                    .and_then(|expression| Program::compile(expression).ok())
                    .and_then(|p| p.execute(&context).ok())
                    .and_then(|v| match v {
                        CelValue::String(s) if !s.is_empty() => Some(s.to_string()),
                        _ => None,
                    })
                    .or_else(|| {
                        rule["message"]
                            .as_str()
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                    })
                    .unwrap_or_else(|| format!("failed rule: {text}"));
                causes.push(cause_for(reason, target, type_name, &message));
            }
            Ok(_) => causes.push(cause_for(
                "FieldValueInvalid",
                target,
                type_name,
                &format!("rule did not evaluate to a bool evaluating rule: {text}"),
            )),
            Err(error) => causes.push(cause_for(
                "FieldValueInvalid",
                target,
                type_name,
                &format!(
                    "{} evaluating rule: {text}",
                    error.to_string().to_lowercase()
                ),
            )),
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn failing_rules_are_worded_like_the_real_server() {
        let schema = json!({"type": "object", "x-kubernetes-validations": [
            {"rule": "self.min <= self.max"},
            {"rule": "self.max < 10", "message": "max must be below 10"},
        ]});
        let causes = evaluate(&schema, &json!({"min": 5, "max": 12}), None, "spec");
        assert_eq!(causes.len(), 1);
        assert_eq!(
            causes[0].2,
            "Invalid value: \"object\": max must be below 10"
        );
        let causes = evaluate(&schema, &json!({"min": 5, "max": 3}), None, "spec");
        assert_eq!(
            causes[0].2,
            "Invalid value: \"object\": failed rule: self.min <= self.max"
        );
    }

    #[test]
    fn transition_rules_run_on_update_only() {
        let schema = json!({"type": "string", "x-kubernetes-validations": [{"rule": "self == oldSelf", "message": "is immutable"}]});
        assert!(evaluate(&schema, &json!("a"), None, "spec.name").is_empty());
        let causes = evaluate(&schema, &json!("b"), Some(&json!("a")), "spec.name");
        assert_eq!(causes[0].0, "spec.name");
        assert_eq!(causes[0].2, "Invalid value: \"string\": is immutable");
    }
}
