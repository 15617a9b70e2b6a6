//! A container run from its image (`--image-root`): the process a runtime would start, from the
//! image's config and the container's spec, as Kubernetes combines them. Paths stay as written: the
//! container sees its own root, so nothing is rewritten onto the host (unlike [`super::mounts`]).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, PodSecurityContext};

use super::env::EnvList;
use crate::error::{Error, Result};
use crate::image_root::{image_user, ImageRootfs};
use crate::runtime::{BindMount, ProcessSecurity, ProcessSpec, Sandbox, SandboxRequest};

/// Capability names by number (linux/capability.h), for `capabilities.add` / `drop`.
const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];
/// What a container runtime (containerd, CRI-O) grants when the spec says nothing.
const RUNTIME_DEFAULT: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "NET_RAW",
    "SYS_CHROOT",
    "MKNOD",
    "AUDIT_WRITE",
    "SETFCAP",
];
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn capability_bits(container: &str, names: &[String]) -> Result<u64> {
    let mut bits = 0u64;
    for name in names {
        let bare = name.strip_prefix("CAP_").unwrap_or(name);
        let number = CAPABILITIES
            .iter()
            .position(|c| c.eq_ignore_ascii_case(bare))
            .ok_or_else(|| {
                Error::MissingField(
                    format!("container {container}: securityContext.capabilities names `{name}`"),
                    "known capability (e.g. NET_BIND_SERVICE, or ALL in drop)",
                )
            })?;
        bits |= 1 << number;
    }
    Ok(bits)
}

/// The capability bounding set the container keeps: the runtime default, minus `drop` (`ALL`:
/// everything), plus `add`; everything with `privileged`.
fn kept_capabilities(container: &Container) -> Result<u64> {
    let context = container.security_context.as_ref();
    if context.and_then(|c| c.privileged) == Some(true) {
        return Ok(u64::MAX);
    }
    let capabilities = context.and_then(|c| c.capabilities.as_ref());
    let drop = capabilities
        .and_then(|c| c.drop.clone())
        .unwrap_or_default();
    let add = capabilities.and_then(|c| c.add.clone()).unwrap_or_default();
    let defaults: Vec<String> = RUNTIME_DEFAULT.iter().map(|c| c.to_string()).collect();
    let mut kept = capability_bits(&container.name, &defaults)?;
    if drop.iter().any(|d| d.eq_ignore_ascii_case("ALL")) {
        kept = 0;
    } else {
        kept &= !capability_bits(&container.name, &drop)?;
    }
    Ok(kept | capability_bits(&container.name, &add)?)
}

/// The image's environment first, then `base` (the kubelet's and the container's), which wins.
pub fn image_env(image: &ImageRootfs, base: EnvList) -> EnvList {
    let mut env = EnvList::default();
    env.set("PATH", DEFAULT_PATH.into());
    for (name, value) in &image.config.env {
        env.set(name, value.clone());
    }
    for (name, value) in base.into_vec() {
        env.set(&name, value);
    }
    env
}

/// `command` replaces the image's entrypoint (and drops its cmd); `args` replace its cmd.
fn argv(container: &Container, image: &ImageRootfs, env: &EnvList) -> Result<Vec<String>> {
    let expand = |words: &Option<Vec<String>>| -> Option<Vec<String>> {
        words
            .as_ref()
            .map(|w| w.iter().map(|w| env.expand(w)).collect())
    };
    let (command, args) = (expand(&container.command), expand(&container.args));
    let argv: Vec<String> = match command {
        Some(command) => command
            .into_iter()
            .chain(args.unwrap_or_default())
            .collect(),
        None => image
            .config
            .entrypoint
            .iter()
            .cloned()
            .chain(args.unwrap_or_else(|| image.config.cmd.clone()))
            .collect(),
    };
    if argv.is_empty() {
        return Err(Error::MissingField(
            format!("container {} (image {})", container.name, image.image),
            "command: the image declares no entrypoint or cmd",
        ));
    }
    Ok(argv)
}

/// uid, gid and supplementary groups: the container's securityContext, then the pod's, then the
/// image's `USER`; `runAsNonRoot` refuses a root result, as a kubelet does.
fn identity(
    container: &Container,
    pod: Option<&PodSecurityContext>,
    image: &ImageRootfs,
) -> Result<(u32, u32, Vec<u32>)> {
    let own = container.security_context.as_ref();
    let (image_uid, image_gid) = image_user(&image.image, &image.config.user)?;
    let spec_uid = own
        .and_then(|c| c.run_as_user)
        .or_else(|| pod.and_then(|p| p.run_as_user))
        .map(|u| u as u32);
    let spec_gid = own
        .and_then(|c| c.run_as_group)
        .or_else(|| pod.and_then(|p| p.run_as_group))
        .map(|g| g as u32);
    // The group defaults to the image's when the user is the image's, else to the uid's number
    // (the devcluster reads no /etc/group).
    let (uid, default_gid) = match spec_uid {
        Some(uid) => (uid, uid),
        None => (image_uid, image_gid.unwrap_or(image_uid)),
    };
    let gid = spec_gid.unwrap_or(default_gid);
    let non_root = own
        .and_then(|c| c.run_as_non_root)
        .or_else(|| pod.and_then(|p| p.run_as_non_root));
    if uid == 0 && non_root == Some(true) {
        return Err(Error::RunAsRoot {
            container: container.name.clone(),
            image: image.image.clone(),
        });
    }
    let groups = pod
        .into_iter()
        .flat_map(|p| {
            p.supplemental_groups
                .iter()
                .flatten()
                .copied()
                .chain(p.fs_group)
        })
        .map(|g| g as u32)
        .collect();
    Ok((uid, gid, groups))
}

/// Bind mounts of the container's `volumeMounts` (`volumes`: volume name → host path).
pub fn bind_mounts(
    container: &Container,
    volumes: &HashMap<String, PathBuf>,
) -> Result<Vec<BindMount>> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .map(|mount| {
            let base = volumes.get(&mount.name).ok_or_else(|| Error::Volume {
                volume: mount.name.clone(),
                message: format!(
                    "container {} mounts a volume the pod does not define",
                    container.name
                ),
            })?;
            let source = match mount.sub_path.as_deref() {
                Some(sub) if !sub.is_empty() => base.join(sub),
                _ => base.clone(),
            };
            Ok(BindMount {
                source,
                target: mount.mount_path.clone(),
                read_only: mount.read_only == Some(true),
            })
        })
        .collect()
}

/// The process of a container run from `image`, with `mounts` bound into its root.
pub fn image_process(
    container: &Container,
    env: EnvList,
    image: &ImageRootfs,
    mounts: Vec<BindMount>,
    pod_security: Option<&PodSecurityContext>,
    pod_dir: &Path,
) -> Result<ProcessSpec> {
    let argv = argv(container, image, &env)?;
    let (uid, gid, supplementary_groups) = identity(container, pod_security, image)?;
    let own = container.security_context.as_ref();
    let read_only = own.and_then(|c| c.read_only_root_filesystem) == Some(true);
    let working_dir = container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .or_else(|| Some(image.config.working_dir.clone()).filter(|d| !d.is_empty()))
        .unwrap_or_else(|| "/".into());
    let request = SandboxRequest {
        rootfs: image.rootfs.clone(),
        writable_layer: (!read_only).then(|| pod_dir.join("rootfs").join(&container.name)),
        mounts,
        working_dir: working_dir.clone(),
        uid,
        gid,
        supplementary_groups,
        keep_capabilities: kept_capabilities(container)?,
        no_new_privileges: own.and_then(|c| c.allow_privilege_escalation) == Some(false),
    };
    let sandbox = Sandbox::build(&request).map_err(|e| Error::io(&image.rootfs, e))?;
    Ok(ProcessSpec {
        argv,
        env: env.into_vec(),
        working_dir: PathBuf::from(working_dir),
        security: ProcessSecurity {
            user: Some((uid, gid)),
            no_new_privileges: request.no_new_privileges,
        },
        sandbox: Some(Arc::new(sandbox)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_root::ImageConfig;
    use k8s_openapi::api::core::v1::{Capabilities, SecurityContext};

    fn image(entrypoint: &[&str], cmd: &[&str], user: &str) -> ImageRootfs {
        ImageRootfs::for_tests(
            "img",
            ImageConfig {
                user: user.into(),
                entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            },
        )
    }

    fn words(list: &[&str]) -> Option<Vec<String>> {
        Some(list.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn command_and_args_combine_with_the_image_as_kubernetes_does() {
        let img = image(&["/entry"], &["--default"], "");
        let env = EnvList::default();
        let mut c = Container::default();
        assert_eq!(argv(&c, &img, &env).unwrap(), ["/entry", "--default"]);
        c.args = words(&["--x"]);
        assert_eq!(argv(&c, &img, &env).unwrap(), ["/entry", "--x"]);
        c.command = words(&["/bin/sh"]);
        c.args = None;
        assert_eq!(argv(&c, &img, &env).unwrap(), ["/bin/sh"]);
    }

    #[test]
    fn identity_comes_from_the_spec_then_the_image_and_refuses_root() {
        let img = image(&["/e"], &[], "65532:65532");
        let mut c = Container::default();
        assert_eq!(identity(&c, None, &img).unwrap(), (65532, 65532, vec![]));
        c.security_context = Some(SecurityContext {
            run_as_user: Some(1000),
            ..Default::default()
        });
        assert_eq!(identity(&c, None, &img).unwrap().0, 1000);
        let root = image(&["/e"], &[], "");
        let non_root = PodSecurityContext {
            run_as_non_root: Some(true),
            ..Default::default()
        };
        let c = Container::default();
        assert!(matches!(
            identity(&c, Some(&non_root), &root),
            Err(Error::RunAsRoot { .. })
        ));
    }

    #[test]
    fn capabilities_drop_all_keeps_only_added_ones() {
        let mut c = Container {
            security_context: Some(SecurityContext {
                capabilities: Some(Capabilities {
                    drop: words(&["ALL"]),
                    add: words(&["NET_BIND_SERVICE"]),
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(kept_capabilities(&c).unwrap(), 1 << 10);
        c.security_context = None;
        assert_eq!(kept_capabilities(&c).unwrap().count_ones(), 14);
        c.security_context = Some(SecurityContext {
            capabilities: Some(Capabilities {
                drop: words(&["CAP_BOGUS"]),
                add: None,
            }),
            ..Default::default()
        });
        assert!(kept_capabilities(&c).is_err());
    }
}
