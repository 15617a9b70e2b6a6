//! Readers of JSON request bodies shared by the handlers.

use serde_json::Value;

/// The strings of a JSON array (other items skipped); empty when `value` is not an array.
pub(crate) fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}
