//! A pod's container turned into a runtime launch: argv from the image map, env and paths rewritten
//! onto the materialised volumes, probes against the pod IP.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, PodSecurityContext, PodSpec, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::env::EnvList;
use super::mounts::MountTable;
use crate::error::{Error, Result};
use crate::image_map::ImageMap;
use crate::runtime::{
    Backoff, ContainerLaunch, ProbeAction, ProbeSpec, ProcessSecurity, ProcessSpec, RestartPolicy,
};

/// `runAsUser` / `runAsGroup` (the container's over the pod's; the group defaults to the user, where
/// a runtime would take the image's) and `allowPrivilegeEscalation: false`.
pub fn process_security(
    container: &Container,
    pod: Option<&PodSecurityContext>,
) -> ProcessSecurity {
    let own = container.security_context.as_ref();
    let uid = own
        .and_then(|c| c.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user));
    let gid = own
        .and_then(|c| c.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group));
    ProcessSecurity {
        user: uid.map(|uid| (uid as u32, gid.unwrap_or(uid) as u32)),
        no_new_privileges: own.and_then(|c| c.allow_privilege_escalation) == Some(false),
    }
}

pub fn restart_policy(spec: &PodSpec) -> RestartPolicy {
    match spec.restart_policy.as_deref() {
        Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        _ => RestartPolicy::Always,
    }
}

pub fn termination_grace(spec: &PodSpec) -> Duration {
    Duration::from_secs(spec.termination_grace_period_seconds.unwrap_or(30).max(0) as u64)
}

pub struct LaunchSettings<'a> {
    pub image_map: &'a ImageMap,
    pub pod_security: Option<&'a PodSecurityContext>,
    pub pod_dir: &'a Path,
    pub pod_ip: &'a str,
    pub restart_policy: RestartPolicy,
    pub termination_grace: Duration,
    pub backoff: Backoff,
    pub max_log_bytes: u64,
}

pub fn build_launch(
    container: &Container,
    env: EnvList,
    mounts: &MountTable,
    settings: &LaunchSettings<'_>,
    initial_restart_count: i32,
) -> Result<ContainerLaunch> {
    let process = host_process(container, env, mounts, settings)?;
    finish_launch(container, process, mounts, settings, initial_restart_count)
}

/// A container as a host process: argv from the image map, mount paths rewritten onto the pod's
/// volume directories.
fn host_process(
    container: &Container,
    env: EnvList,
    mounts: &MountTable,
    settings: &LaunchSettings<'_>,
) -> Result<ProcessSpec> {
    let image = container.image.clone().unwrap_or_default();
    let command: Vec<String> = container
        .command
        .iter()
        .flatten()
        .map(|w| env.expand(w))
        .collect();
    let args: Vec<String> = container
        .args
        .iter()
        .flatten()
        .map(|w| env.expand(w))
        .collect();
    let argv = settings
        .image_map
        .argv(&image, &command, &args)?
        .iter()
        .map(|word| mounts.rewrite(word))
        .collect();
    let mut env = env;
    for (_, value) in env.iter_mut() {
        *value = mounts.rewrite(value);
    }
    let working_dir = match container.working_dir.as_deref() {
        Some(dir) if !dir.is_empty() => {
            let rewritten = mounts.rewrite(dir);
            if rewritten != dir {
                PathBuf::from(rewritten)
            } else {
                settings
                    .pod_dir
                    .join("rootfs")
                    .join(dir.trim_start_matches('/'))
            }
        }
        _ => settings.pod_dir.join("containers").join(&container.name),
    };
    Ok(ProcessSpec {
        argv,
        env: env.into_vec(),
        working_dir,
        security: process_security(container, settings.pod_security),
        sandbox: None,
    })
}

/// The launch of `process`: probes (exec probe commands rewritten by `mounts`), restarts, logs.
pub fn finish_launch(
    container: &Container,
    process: ProcessSpec,
    mounts: &MountTable,
    settings: &LaunchSettings<'_>,
    initial_restart_count: i32,
) -> Result<ContainerLaunch> {
    let probe = |probe: &Option<Probe>| -> Result<Option<ProbeSpec>> {
        probe
            .as_ref()
            .map(|p| probe_spec(p, container, mounts, settings.pod_ip))
            .transpose()
    };
    Ok(ContainerLaunch {
        name: container.name.clone(),
        process,
        log_dir: settings.pod_dir.to_path_buf(),
        max_log_bytes: settings.max_log_bytes,
        startup_probe: probe(&container.startup_probe)?,
        liveness_probe: probe(&container.liveness_probe)?,
        readiness_probe: probe(&container.readiness_probe)?,
        restart_policy: settings.restart_policy,
        termination_grace: settings.termination_grace,
        backoff: settings.backoff,
        initial_restart_count,
    })
}

fn port_number(port: &IntOrString, container: &Container) -> Result<u16> {
    match port {
        IntOrString::Int(number) => u16::try_from(*number)
            .map_err(|_| Error::MissingField(container.name.clone(), "valid probe port")),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .and_then(|p| u16::try_from(p.container_port).ok())
            .ok_or_else(|| {
                Error::MissingField(container.name.clone(), "container port named by its probe")
            }),
    }
}

fn probe_spec(
    probe: &Probe,
    container: &Container,
    mounts: &MountTable,
    pod_ip: &str,
) -> Result<ProbeSpec> {
    let action = if let Some(exec) = &probe.exec {
        ProbeAction::Exec {
            argv: exec
                .command
                .iter()
                .flatten()
                .map(|w| mounts.rewrite(w))
                .collect(),
        }
    } else if let Some(http) = &probe.http_get {
        ProbeAction::HttpGet {
            host: http
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_owned()),
            port: port_number(&http.port, container)?,
            path: http.path.clone().unwrap_or_else(|| "/".into()),
            headers: http
                .http_headers
                .iter()
                .flatten()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
        }
    } else if let Some(tcp) = &probe.tcp_socket {
        ProbeAction::TcpSocket {
            host: tcp
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| pod_ip.to_owned()),
            port: port_number(&tcp.port, container)?,
        }
    } else {
        ProbeAction::Unsupported {
            kind: "grpc".into(),
        }
    };
    let seconds = |value: Option<i32>, default: i32| {
        Duration::from_secs(value.unwrap_or(default).max(0) as u64)
    };
    Ok(ProbeSpec {
        action,
        initial_delay: seconds(probe.initial_delay_seconds, 0),
        period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: seconds(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
    })
}
