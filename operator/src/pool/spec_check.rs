//! Checks that a pool the schema accepted can actually work. Each problem names the field and the fix;
//! a pool with a problem is Degraded and the operator leaves its workers as they are.

use capsule_crds::CapsulePoolSpec;

/// Environment variable names the operator sets itself on worker containers.
const RESERVED_ENV: [&str; 3] = ["POD_NAME", "POD_NAMESPACE", "POD_IP"];

/// Returns every problem found, each as `field: what is wrong; what to do`.
pub fn problems(spec: &CapsulePoolSpec) -> Vec<String> {
    let mut out = Vec::new();
    match spec.template.image.as_deref().map(str::trim) {
        None | Some("") => out.push(
            "spec.template.image is not set: name the worker image, for example `capsule-worker:0.1.0`".to_string(),
        ),
        Some(_) => {}
    }
    if let Some(image) = spec.template.sidecar_image.as_deref() {
        if image.trim().is_empty() {
            out.push("spec.template.sidecarImage is empty: remove it to use the operator's default, or name an image".into());
        }
    }
    if spec.max_workers < spec.replicas {
        out.push(format!(
            "spec.maxWorkers ({}) is below spec.replicas ({}): raise maxWorkers or lower replicas",
            spec.max_workers, spec.replicas
        ));
    }
    if spec.heartbeat.staleness_seconds <= spec.heartbeat.interval_seconds {
        out.push(format!(
            "spec.heartbeat.stalenessSeconds ({}) must be longer than intervalSeconds ({})",
            spec.heartbeat.staleness_seconds, spec.heartbeat.interval_seconds
        ));
    }
    for (i, var) in spec.template.env.iter().enumerate() {
        if var.name.starts_with("CAPSULE_") || RESERVED_ENV.contains(&var.name.as_str()) {
            out.push(format!(
                "spec.template.env[{i}].name {} is reserved for the operator: rename it",
                var.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::EnvVar;

    fn spec() -> CapsulePoolSpec {
        serde_json::from_value(serde_json::json!({"template": {"image": "capsule-worker:dev"}}))
            .unwrap()
    }

    #[test]
    fn a_sound_spec_has_no_problems() {
        assert!(problems(&spec()).is_empty());
    }

    #[test]
    fn each_problem_names_its_field() {
        let mut s = spec();
        s.template.image = None;
        s.template.env.push(EnvVar {
            name: "CAPSULE_POOL".into(),
            ..Default::default()
        });
        let found = problems(&s);
        assert!(found[0].starts_with("spec.template.image"), "{found:?}");
        assert!(
            found[1].starts_with("spec.template.env[0].name"),
            "{found:?}"
        );
    }
}
