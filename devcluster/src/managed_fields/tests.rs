use super::*;

const NOW: &str = "2026-01-01T00:00:00Z";
const MAIN: Scope = Scope::Main {
    status_is_separate: true,
};

/// Applies `config` over `live` as `manager` to the main resource (`force` takes conflicting
/// fields).
fn apply_as(live: &Value, config: Value, manager: &str, force: bool) -> Result<Value> {
    apply(live, &config, manager, force, MAIN, "v1", NOW)
}

#[test]
fn fields_v1_round_trips() {
    let object = json!({"spec": {"replicas": 1, "containers": [{"name": "a", "image": "x"}]}});
    let set = leaves(&object);
    assert_eq!(from_fields_v1(&to_fields_v1(&set)), set);
}

#[test]
fn apply_conflicts_between_managers_unless_forced() {
    let live = json!({"metadata": {"name": "x"}});
    let a = apply_as(&live, json!({"spec": {"replicas": 1}}), "a", false).unwrap();
    let err = apply_as(&a, json!({"spec": {"replicas": 2}}), "b", false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"a\": .spec.replicas"
    );
    let same = apply_as(&a, json!({"spec": {"replicas": 1}}), "b", false).unwrap();
    assert_eq!(read_entries(&same).len(), 2);
    let forced = apply_as(&a, json!({"spec": {"replicas": 2}}), "b", true).unwrap();
    assert_eq!(forced["spec"]["replicas"], 2);
    assert_eq!(read_entries(&forced).len(), 1);
}

#[test]
fn apply_removes_fields_the_manager_stopped_applying() {
    let live = json!({"metadata": {"name": "x"}});
    let first = apply_as(&live, json!({"spec": {"a": 1, "b": 2}}), "m", false).unwrap();
    let second = apply_as(&first, json!({"spec": {"a": 1}}), "m", false).unwrap();
    assert_eq!(second["spec"], json!({"a": 1}));
}
