//! docs/crd-reference.md is what the generator prints from the current CRD schemas.

#[path = "../examples/crd_reference.rs"]
#[allow(dead_code)]
mod crd_reference;

use kube::CustomResourceExt;

const COMMITTED: &str = include_str!("../../docs/crd-reference.md");

#[test]
fn committed_crd_reference_is_fresh() {
    assert!(
        COMMITTED == crd_reference::render(),
        "docs/crd-reference.md is stale: run \
         `cargo run -q -p capsule-crds --example crd_reference > docs/crd-reference.md` and commit it"
    );
}

#[test]
fn reference_covers_every_spec_field_with_its_bounds() {
    let doc = crd_reference::render();
    for wanted in [
        "## CapsulePool",
        "## CapsuleSession",
        "| `spec.replicas` | integer (int32) | `1` | 0 to 1000 |",
        "| `spec.executor.backpressure` | string | `\"Block\"` | one of `Block`, `DropNew`, `DropOldest`, `Error` |",
        "| `spec.pool` | string |",
        "`self.maxWorkers >= self.replicas`",
        "short names `cpool`",
        "`scale` (spec replicas `.spec.replicas`, status replicas `.status.unbound`",
    ] {
        assert!(doc.contains(wanted), "{wanted} missing from the reference");
    }
    // Every top-level spec field of the pool is documented.
    let crd = serde_json::to_value(capsule_crds::CapsulePool::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for name in spec["properties"].as_object().unwrap().keys() {
        assert!(
            doc.contains(&format!("| `spec.{name}` |")),
            "spec.{name} missing"
        );
    }
}
