//! The CRDs' generated form: committed YAML is fresh, and the schema carries what kubectl and the
//! API server need (names, columns, subresources, validation).

use capsule_crds::{all_crds, crds_yaml, CapsulePool, CapsuleSession};
use kube::CustomResourceExt;
use serde_json::{json, Value};

const COMMITTED: &str = include_str!("../capsule.dev_crds.yaml");

#[test]
fn committed_crd_yaml_is_fresh() {
    assert!(
        COMMITTED == crds_yaml(),
        "crds/capsule.dev_crds.yaml is stale: run `make crds` and commit the result"
    );
}

fn crd_json<T: CustomResourceExt>() -> Value {
    serde_json::to_value(T::crd()).unwrap()
}

#[test]
fn pool_names_columns_and_subresources() {
    let crd = crd_json::<CapsulePool>();
    assert_eq!(crd["metadata"]["name"], "capsulepools.capsule.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["cpool"]));
    assert_eq!(crd["spec"]["names"]["categories"], json!(["capsule"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    assert_eq!(
        version["subresources"]["scale"]["specReplicasPath"],
        ".spec.replicas"
    );
    assert_eq!(
        version["subresources"]["scale"]["statusReplicasPath"],
        ".status.unbound"
    );
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["Warm", "Idle", "Bound", "Unhealthy", "Ready", "Age"] {
        assert!(
            columns.contains(&want),
            "pool column {want} missing from {columns:?}"
        );
    }
}

#[test]
fn session_names_and_columns() {
    let crd = crd_json::<CapsuleSession>();
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["csess"]));
    assert_eq!(crd["spec"]["names"]["categories"], json!(["capsule"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["Phase", "Pool", "Worker", "Gateway", "Age"] {
        assert!(
            columns.contains(&want),
            "session column {want} missing from {columns:?}"
        );
    }
}

#[test]
fn schema_carries_enums_bounds_and_defaults() {
    let crd = crd_json::<CapsulePool>();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let executor = &spec["properties"]["executor"]["properties"];
    assert_eq!(
        executor["backpressure"]["enum"],
        json!(["Block", "DropNew", "DropOldest", "Error"])
    );
    assert_eq!(executor["backpressure"]["default"], "Block");
    assert_eq!(
        spec["properties"]["replicas"]["minimum"].as_f64(),
        Some(0.0)
    );
    assert_eq!(
        spec["properties"]["maxWorkers"]["maximum"].as_f64(),
        Some(1000.0)
    );
    assert_eq!(
        spec["properties"]["heartbeat"]["properties"]["intervalSeconds"]["default"],
        5
    );
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
    assert_eq!(status["properties"]["workerSummaries"]["maxItems"], 50);
}

#[test]
fn every_field_has_a_description_for_kubectl_explain() {
    fn walk(path: &str, schema: &Value, missing: &mut Vec<String>) {
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let here = format!("{path}.{name}");
                // metadata is documented by Kubernetes itself.
                if here == ".metadata" {
                    continue;
                }
                if child.get("description").is_none() && !here.contains("conditions") {
                    missing.push(here.clone());
                }
                walk(&here, child, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    for crd in all_crds() {
        let crd = serde_json::to_value(crd).unwrap();
        let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        walk("", &root["properties"]["spec"], &mut missing);
        // Status rows are explained by their parents; the spec is what users write.
        assert!(
            missing.is_empty(),
            "{}: spec fields without docs: {missing:?}",
            crd["metadata"]["name"]
        );
    }
}

/// Walks a schema and checks that an object's own `default` agrees with the `default` of each of
/// its properties: kubectl and the API server apply the object default when the object is absent,
/// and the field defaults when it is present, so a user would see two different defaults.
fn defaults_agree(schema: &Value, path: &str, problems: &mut Vec<String>) {
    if let (Some(object_default), Some(properties)) = (
        schema.get("default").and_then(Value::as_object),
        schema.get("properties").and_then(Value::as_object),
    ) {
        for (name, property) in properties {
            if let (Some(field_default), Some(given)) =
                (property.get("default"), object_default.get(name))
            {
                if field_default != given {
                    problems.push(format!(
                        "{path}.{name}: field default {field_default} but {path} defaults it to {given}"
                    ));
                }
            }
        }
    }
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            defaults_agree(property, &format!("{path}.{name}"), problems);
        }
    }
    if let Some(items) = schema.get("items") {
        defaults_agree(items, &format!("{path}[]"), problems);
    }
}

#[test]
fn object_defaults_agree_with_field_defaults() {
    let mut problems = Vec::new();
    for (kind, crd) in [
        ("CapsulePool", crd_json::<CapsulePool>()),
        ("CapsuleSession", crd_json::<CapsuleSession>()),
    ] {
        let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        defaults_agree(schema, kind, &mut problems);
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
