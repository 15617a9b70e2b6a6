//! `kubectl explain` has something to say for every field of both CRDs' status: each property
//! carries a description, and an enum's description names each of its values.

use capsule_crds::{CapsulePool, CapsuleSession};
use kube::CustomResourceExt;
use serde_json::Value;

/// Fields without a description, and enum fields whose description leaves out one of the values.
fn undescribed(schema: &Value, path: &str, out: &mut Vec<String>) {
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            let child_path = format!("{path}.{name}");
            let description = child["description"].as_str().unwrap_or_default();
            if description.is_empty() {
                out.push(child_path.clone());
            }
            for value in child["enum"].as_array().into_iter().flatten() {
                let value = value.as_str().unwrap_or_default();
                if !description.contains(value) {
                    out.push(format!("{child_path} (value {value})"));
                }
            }
            undescribed(child, &child_path, out);
        }
    }
    if schema["items"].is_object() {
        undescribed(&schema["items"], &format!("{path}[]"), out);
    }
}

fn status_schema(crd: Value) -> Value {
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"].clone()
}

#[test]
fn every_status_field_of_both_crds_has_a_description_naming_its_values() {
    let mut missing = Vec::new();
    for (kind, crd) in [
        (
            "CapsulePool",
            serde_json::to_value(CapsulePool::crd()).unwrap(),
        ),
        (
            "CapsuleSession",
            serde_json::to_value(CapsuleSession::crd()).unwrap(),
        ),
    ] {
        undescribed(&status_schema(crd), &format!("{kind}.status"), &mut missing);
    }
    assert!(missing.is_empty(), "no description: {missing:#?}");
}
