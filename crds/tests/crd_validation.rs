//! The CEL rules in the schema reject specs that can never work, with messages that name the fix.
//! Evaluated with kube's client-side CEL validator against the generated schema, the same rules an
//! API server runs.

use capsule_crds::{CapsulePool, CapsuleSession};
use kube::CustomResourceExt;
use serde_json::{json, Value};

fn validate(crd_schema: &Value, object: &Value, old: Option<&Value>) -> Result<(), String> {
    kube::core::cel::Validator::new()
        .validate(crd_schema, object, old)
        .map_err(|errors| format!("{errors:?}"))
}

fn schema_of<T: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(T::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn pool(spec: Value) -> Value {
    json!({"apiVersion": "capsule.dev/v1alpha1", "kind": "CapsulePool",
           "metadata": {"name": "p", "namespace": "default"}, "spec": spec})
}

#[test]
fn a_sound_pool_passes() {
    let schema = schema_of::<CapsulePool>();
    let ok = pool(
        json!({"replicas": 2, "maxWorkers": 5, "template": {"image": "capsule-worker:dev"},
                         "heartbeat": {"intervalSeconds": 5, "stalenessSeconds": 30}}),
    );
    validate(&schema, &ok, None).expect("a sound pool validates");
}

#[test]
fn max_workers_below_the_warm_target_is_refused() {
    let schema = schema_of::<CapsulePool>();
    let bad = pool(json!({"replicas": 5, "maxWorkers": 2,
                          "heartbeat": {"intervalSeconds": 5, "stalenessSeconds": 30}}));
    let err = validate(&schema, &bad, None).expect_err("maxWorkers < replicas must be refused");
    assert!(
        err.contains("maxWorkers must be at least replicas"),
        "{err}"
    );
}

#[test]
fn staleness_not_longer_than_interval_is_refused() {
    let schema = schema_of::<CapsulePool>();
    let bad = pool(json!({"replicas": 1, "maxWorkers": 2,
                          "heartbeat": {"intervalSeconds": 10, "stalenessSeconds": 10}}));
    let err = validate(&schema, &bad, None).expect_err("staleness == interval must be refused");
    assert!(
        err.contains("stalenessSeconds must be longer than intervalSeconds"),
        "{err}"
    );
}

#[test]
fn a_session_cannot_move_to_another_pool() {
    let schema = schema_of::<CapsuleSession>();
    let session = |pool: &str| {
        json!({"apiVersion": "capsule.dev/v1alpha1", "kind": "CapsuleSession",
               "metadata": {"name": "s", "namespace": "default"}, "spec": {"pool": pool}})
    };
    validate(&schema, &session("a"), Some(&session("a"))).expect("unchanged pool is fine");
    let err = validate(&schema, &session("b"), Some(&session("a")))
        .expect_err("changing the pool must be refused");
    assert!(err.contains("pool is immutable"), "{err}");
}

#[test]
fn a_pool_without_an_image_or_with_a_reserved_env_name_is_refused_at_admission() {
    let schema = schema_of::<CapsulePool>();
    let no_image = pool(json!({"replicas": 1, "maxWorkers": 2, "template": {}}));
    let err = validate(&schema, &no_image, None).expect_err("an image is required");
    assert!(err.contains("spec.template.image is not set"), "{err}");
    let blank = pool(json!({"replicas": 1, "maxWorkers": 2, "template": {"image": "  "}}));
    assert!(validate(&schema, &blank, None).is_err(), "a blank image");
    for name in ["CAPSULE_POOL", "POD_IP"] {
        let reserved = pool(json!({"replicas": 1, "maxWorkers": 2,
            "template": {"image": "capsule-worker:dev", "env": [{"name": name, "value": "x"}]}}));
        let err = validate(&schema, &reserved, None).expect_err(name);
        assert!(err.contains("reserved for the operator"), "{name}: {err}");
    }
    let own = pool(json!({"replicas": 1, "maxWorkers": 2,
        "template": {"image": "capsule-worker:dev", "env": [{"name": "MY_SETTING", "value": "x"}]}}));
    validate(&schema, &own, None).expect("a variable of the user's own");
}

#[test]
fn persistence_without_a_volume_store_and_a_volume_store_without_a_claim_are_refused() {
    let schema = schema_of::<CapsulePool>();
    let spec = |extra: Value| {
        let mut spec = json!({"replicas": 1, "maxWorkers": 2, "template": {"image": "w"},
                              "heartbeat": {"intervalSeconds": 5, "stalenessSeconds": 30}});
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        pool(spec)
    };
    let persistent = json!({"enabled": true});
    let err = validate(
        &schema,
        &spec(json!({"sessions": {"persistence": persistent}})),
        None,
    )
    .expect_err("persistence on the worker store cannot outlive a worker");
    assert!(err.contains("spec.checkpoints.store to Volume"), "{err}");
    let err = validate(
        &schema,
        &spec(json!({"checkpoints": {"store": "Volume"}})),
        None,
    )
    .expect_err("a Volume store needs a claim");
    assert!(err.contains("volume.claimName"), "{err}");
    let ok = spec(
        json!({"checkpoints": {"store": "Volume", "volume": {"claimName": "ckpt"}},
                         "sessions": {"persistence": persistent}}),
    );
    validate(&schema, &ok, None).expect("persistence on a volume store validates");
}

#[test]
fn an_interpreter_under_the_workers_uid_is_refused_and_names_the_field() {
    let schema = schema_of::<CapsulePool>();
    let template = |extra: Value| {
        let mut template = json!({"image": "capsule-worker:dev"});
        template
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        pool(json!({"replicas": 1, "maxWorkers": 2, "template": template}))
    };
    for context in ["securityContext", "containerSecurityContext"] {
        let same = template(json!({
            context: {"runAsUser": 1000},
            "interpreter": {"placement": "OwnContainer", "runAsUser": 1000},
        }));
        let err = validate(&schema, &same, None).expect_err(context);
        assert!(
            err.contains("spec.template.interpreter.runAsUser is the worker's uid too"),
            "{context}: {err}"
        );
        let distinct = template(json!({
            context: {"runAsUser": 1000},
            "interpreter": {"placement": "OwnContainer", "runAsUser": 1001},
        }));
        validate(&schema, &distinct, None).expect("a uid of its own");
        let in_worker = template(json!({
            context: {"runAsUser": 1000},
            "interpreter": {"placement": "WorkerContainer", "runAsUser": 1000},
        }));
        validate(&schema, &in_worker, None).expect("no interpreter container: no conflict");
    }
    // Structural bounds, which an API server checks before CEL: never root, a placement it knows.
    let interpreter = &schema["properties"]["spec"]["properties"]["template"]["properties"]
        ["interpreter"]["properties"];
    assert_eq!(interpreter["runAsUser"]["minimum"], json!(1.0));
    assert_eq!(
        interpreter["placement"]["enum"],
        json!(["OwnContainer", "WorkerContainer"])
    );
}
