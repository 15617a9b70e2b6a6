//! Reads a heartbeat body from a worker: bytes from another process, so every field that ends up in
//! the index, the status or a metric is checked here, and nothing in the body can make the operator
//! panic or hold more than the body's own bound.

use capsule_protocol::heartbeat::{Heartbeat, MAX_WARMUP_MESSAGE_BYTES};

/// Longest name (pod, namespace, pool, session) accepted, as Kubernetes allows.
pub const MAX_NAME_BYTES: usize = 253;
/// Longest free-text field accepted (versions, backpressure mode).
pub const MAX_TEXT_BYTES: usize = 64;
/// Highest CPU share accepted: 100 per core, and no node has more than this many cores.
pub const MAX_CPU_PERCENT: f64 = 100.0 * 4096.0;

/// Why a heartbeat body was refused; the message names the field and is safe to return to the
/// sender (it never echoes the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid heartbeat: {0}")]
pub struct Invalid(pub String);

/// Parses and checks one heartbeat body.
pub fn parse_heartbeat(body: &[u8]) -> Result<Heartbeat, Invalid> {
    // The plain parse is the common case; tracking every field's path was a fifth of the parse
    // in a profile, so it is done only to describe a body already refused.
    let hb = match serde_json::from_slice::<Heartbeat>(body) {
        Ok(hb) => hb,
        Err(_) => return Err(explain(body)),
    };
    check(&hb)?;
    Ok(hb)
}

/// Why `body` is not a heartbeat, with the path of the offending field.
fn explain(body: &[u8]) -> Invalid {
    let mut reader = serde_json::Deserializer::from_slice(body);
    if let Err(e) = serde_path_to_error::deserialize::<_, Heartbeat>(&mut reader) {
        return Invalid(describe(&e));
    }
    match reader.end() {
        Err(_) => Invalid("trailing bytes after the heartbeat object".into()),
        // serde_json refused what the path-tracking parse accepted: not expected, still refused.
        Ok(()) => Invalid("malformed heartbeat".into()),
    }
}

/// Names the field and the kind of problem, never the value that was sent: serde's own messages
/// quote strings and variants from the body.
fn describe(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    use serde_json::error::Category;
    let path = e.path().to_string();
    let inner = e.inner();
    match inner.classify() {
        Category::Io => "the body could not be read".into(),
        Category::Syntax => format!("malformed JSON at byte column {}", inner.column()),
        Category::Eof => "truncated JSON".into(),
        Category::Data => {
            let message = inner.to_string();
            match message.strip_prefix("missing field `") {
                Some(rest) => {
                    let field = rest.split('`').next().unwrap_or_default();
                    let field = truncate(field, MAX_TEXT_BYTES);
                    if path == "." {
                        format!("missing field {field}")
                    } else {
                        format!("missing field {path}.{field}")
                    }
                }
                None => format!("{} has the wrong type or value", truncate(&path, 200)),
            }
        }
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The checks after parsing: names are DNS-sized, text is short, numbers are sane.
pub fn check(hb: &Heartbeat) -> Result<(), Invalid> {
    for (field, value) in [
        ("pod", &hb.pod),
        ("namespace", &hb.namespace),
        ("pool", &hb.pool),
    ] {
        if value.is_empty() || value.len() > MAX_NAME_BYTES {
            return Err(Invalid(format!(
                "{field} must be 1 to {MAX_NAME_BYTES} bytes"
            )));
        }
    }
    let session = hb.session.as_deref().unwrap_or_default();
    at_most(MAX_NAME_BYTES, "", &[("session", session)])?;
    let times = [
        ("sentAt", hb.sent_at.as_str()),
        ("startedAt", &hb.started_at),
    ];
    at_most(MAX_TEXT_BYTES, "an RFC 3339 time of ", &times)?;
    if let Some(caps) = &hb.capabilities {
        let texts = [
            ("capabilities.workerVersion", caps.worker_version.as_str()),
            ("capabilities.pythonVersion", &caps.python_version),
            ("capabilities.backpressure", &caps.backpressure),
        ];
        at_most(MAX_TEXT_BYTES, "", &texts)?;
    }
    if let Some(failure) = &hb.warmup_failure {
        let texts = [
            ("warmupFailure.ename", failure.ename.as_str()),
            ("warmupFailure.evalue", &failure.evalue),
        ];
        at_most(MAX_WARMUP_MESSAGE_BYTES, "", &texts)?;
    }
    if !hb.cpu_percent.is_finite() || !(0.0..=MAX_CPU_PERCENT).contains(&hb.cpu_percent) {
        return Err(Invalid(format!(
            "cpuPercent must be a finite number from 0 to {MAX_CPU_PERCENT}"
        )));
    }
    Ok(())
}

/// Refuses the first of `fields` longer than `max` bytes; `what` says what the field must be.
fn at_most(max: usize, what: &str, fields: &[(&str, &str)]) -> Result<(), Invalid> {
    match fields.iter().find(|(_, value)| value.len() > max) {
        Some((field, _)) => Err(Invalid(format!(
            "{field} must be {what}at most {max} bytes"
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> serde_json::Value {
        serde_json::json!({
            "pod": "w-1", "namespace": "default", "pool": "demo", "seq": 1,
            "sentAt": "2026-11-28T00:00:00Z", "startedAt": "2026-11-28T00:00:00Z",
            "state": "idle", "session": null, "rssBytes": 1, "cpuPercent": 0.5,
            "namespaceSize": 0, "interpreterRestarts": 0,
            "executions": {"ok": 0, "error": 0, "cancelled": 0, "timedOut": 0},
            "executor": {"outputsEnqueued": 0, "outputsSent": 0, "outputsDropped": 0, "maxQueueDepth": 0, "drainTimeouts": 0},
            "bridge": {"pending": 0, "highWater": 0, "created": 0, "resolved": 0, "rejected": 0, "timedOut": 0, "cancelled": 0},
            "cancels": {"requested": 0, "effective": 0, "noop": 0, "interrupted": 0}
        })
    }

    #[test]
    fn a_valid_heartbeat_parses() {
        let hb = parse_heartbeat(valid().to_string().as_bytes()).unwrap();
        assert_eq!(hb.pool, "demo");
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(&str, serde_json::Value, &str); 5] = [
            ("pod", serde_json::json!(""), "pod must be"),
            ("pool", serde_json::json!("x".repeat(254)), "pool must be"),
            ("cpuPercent", serde_json::json!(-1.0), "cpuPercent must be"),
            ("cpuPercent", serde_json::json!(1e12), "cpuPercent must be"),
            (
                "sentAt",
                serde_json::json!("9".repeat(65)),
                "sentAt must be",
            ),
        ];
        for (field, value, expected) in cases {
            let mut body = valid();
            body[field] = value;
            let err = parse_heartbeat(body.to_string().as_bytes()).unwrap_err();
            assert!(err.0.contains(expected), "{field}: {err}");
        }
    }

    #[test]
    fn a_wrong_type_names_the_path_and_not_the_value() {
        let mut body = valid();
        body["executions"]["ok"] = serde_json::json!("secret-looking-value");
        body["state"] = serde_json::json!("idle");
        let err = parse_heartbeat(body.to_string().as_bytes()).unwrap_err();
        assert!(err.0.contains("executions.ok"), "{err}");
        assert!(!err.0.contains("secret-looking-value"), "{err}");
        let mut body = valid();
        body["state"] = serde_json::json!("secret-variant");
        let err = parse_heartbeat(body.to_string().as_bytes()).unwrap_err();
        assert!(err.0.contains("state"), "{err}");
        assert!(!err.0.contains("secret-variant"), "{err}");
    }

    #[test]
    fn a_missing_field_is_named_and_no_value_is_echoed() {
        let mut body = valid();
        body.as_object_mut().unwrap().remove("rssBytes");
        body["pod"] = serde_json::json!("secret-looking-value");
        let err = parse_heartbeat(body.to_string().as_bytes()).unwrap_err();
        assert!(err.0.contains("rssBytes"), "{err}");
        assert!(!err.0.contains("secret-looking-value"), "{err}");
    }
}
