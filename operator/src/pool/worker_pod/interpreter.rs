//! The `interpreter` container (`spec.template.interpreter.placement: OwnContainer`): session code
//! under a uid of its own, with no credential and no ServiceAccount token, in a PID namespace of
//! its own. Its entrypoint is the worker image's `capsule-worker`, which becomes the fork server
//! when `CAPSULE_FORK_SERVER_CONNECT` is set, and connects to the worker over a socket in an
//! in-memory emptyDir only these two containers mount. See docs/security.md.

use capsule_crds::{InterpreterPlacement, WorkerTemplate};
use k8s_openapi::api::core::v1::{Container, EnvVar, Volume, VolumeMount};

use super::{env::env, pull_policy};
use crate::pool::pod_security;

pub(in crate::pool) const INTERPRETER_CONTAINER: &str = "interpreter";
const FORK_DIR: &str = "/var/run/capsule-fork";
const FORK_SOCKET: &str = "/var/run/capsule-fork/fork.sock";
const FORK_VOLUME: &str = "capsule-fork";

/// What an own interpreter container adds to the pod: the container, the socket volume, the
/// mount the worker needs for it and the worker's setting naming the socket.
pub(super) struct OwnInterpreter {
    pub container: Container,
    pub volume: Volume,
    pub worker_mount: VolumeMount,
    pub worker_env: EnvVar,
}

/// The interpreter container of `template`, or `None` when the worker runs the interpreter.
pub(super) fn own_interpreter(
    template: &WorkerTemplate,
    scratch_mount: &VolumeMount,
) -> Option<OwnInterpreter> {
    if template.interpreter.placement != InterpreterPlacement::OwnContainer {
        return None;
    }
    let (volume, fork_mount) = pod_security::empty_dir(FORK_VOLUME, FORK_DIR, Some("Memory"));
    let mut security = pod_security::container_security_context(template);
    security.run_as_user = Some(template.interpreter.run_as_user);
    security.run_as_group = Some(template.interpreter.run_as_user);
    let mut container_env = vec![env("CAPSULE_FORK_SERVER_CONNECT", FORK_SOCKET)];
    // What the pool gives session code's environment goes where session code runs.
    container_env.extend(template.env.iter().cloned());
    let container = Container {
        name: INTERPRETER_CONTAINER.into(),
        image: template.image.clone(),
        image_pull_policy: pull_policy(template.image_pull_policy),
        env: Some(container_env),
        // Limits meant for session code keep bounding it when it moves to a container of its own.
        resources: template
            .interpreter
            .resources
            .clone()
            .or_else(|| template.resources.clone()),
        // Read-only: it connects to the socket (which a read-only mount allows), and session code
        // cannot replace or remove it.
        volume_mounts: Some(vec![
            VolumeMount {
                read_only: Some(true),
                ..fork_mount.clone()
            },
            scratch_mount.clone(),
        ]),
        // The image's working directory belongs to the worker's user; the scratch volume is
        // writable by any uid, as the fork server's directory is in the worker container.
        working_dir: Some(pod_security::SCRATCH_DIR.into()),
        security_context: Some(security),
        ..Default::default()
    };
    Some(OwnInterpreter {
        container,
        volume,
        worker_mount: fork_mount,
        worker_env: env("CAPSULE_FORK_SERVER_SOCKET", FORK_SOCKET),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use capsule_crds::InterpreterTemplate;
    use k8s_openapi::api::core::v1::ResourceRequirements;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn limits(memory: &str) -> ResourceRequirements {
        ResourceRequirements {
            limits: Some([("memory".to_string(), Quantity(memory.into()))].into()),
            ..Default::default()
        }
    }

    #[test]
    fn session_code_keeps_the_limits_set_for_it_unless_the_interpreter_has_its_own() {
        let scratch = VolumeMount::default();
        let mut template = WorkerTemplate {
            resources: Some(limits("1Gi")),
            ..Default::default()
        };
        let inherited = own_interpreter(&template, &scratch).unwrap().container;
        assert_eq!(inherited.resources, Some(limits("1Gi")));
        template.interpreter.resources = Some(limits("2Gi"));
        let own = own_interpreter(&template, &scratch).unwrap().container;
        assert_eq!(own.resources, Some(limits("2Gi")));
    }

    #[test]
    fn the_worker_container_placement_adds_nothing() {
        let template = WorkerTemplate {
            interpreter: InterpreterTemplate {
                placement: InterpreterPlacement::WorkerContainer,
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(own_interpreter(&template, &VolumeMount::default()).is_none());
    }
}
