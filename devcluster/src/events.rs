//! `events.k8s.io/v1` Events and core `v1` Events are two views of the same objects, as on a real
//! server: they are stored in the core form and converted when read or written through the
//! `events.k8s.io` group.

use crate::resources::ResourceInfo;
use serde_json::{Map, Value};

/// `(events.k8s.io/v1 field, core v1 field)`.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

pub fn is_events_group(info: &ResourceInfo) -> bool {
    info.group == "events.k8s.io" && info.plural == "events"
}

fn rename(object: &Value, to_core: bool, api_version: &str) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    for (key, value) in map {
        let renamed = RENAMED
            .iter()
            .find(|(events, core)| if to_core { events == key } else { core == key })
            .map(|(events, core)| if to_core { *core } else { *events })
            .unwrap_or(key.as_str());
        out.insert(renamed.to_string(), value.clone());
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    Value::Object(out)
}

/// An object written through `info` in the form it is stored in.
pub fn to_storage(info: &ResourceInfo, object: Value) -> Value {
    if is_events_group(info) {
        rename(&object, true, "v1")
    } else {
        object
    }
}

/// A stored object in the form `info` serves.
pub fn from_storage(info: &ResourceInfo, object: &Value) -> Value {
    if is_events_group(info) {
        rename(object, false, &info.api_version())
    } else {
        object.clone()
    }
}

/// The apiVersion objects of `info` carry in the store.
pub fn stored_api_version(info: &ResourceInfo) -> String {
    if is_events_group(info) {
        "v1".into()
    } else {
        info.api_version()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_groups() {
        let info = crate::resources::builtin_resources()
            .into_iter()
            .find(is_events_group)
            .unwrap();
        let event = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "note": "scaled", "regarding": {"name": "p"}, "reason": "Scaled"});
        let stored = to_storage(&info, event.clone());
        assert_eq!(stored["message"], "scaled");
        assert_eq!(stored["involvedObject"]["name"], "p");
        assert_eq!(stored["apiVersion"], "v1");
        assert_eq!(from_storage(&info, &stored), event);
    }
}
