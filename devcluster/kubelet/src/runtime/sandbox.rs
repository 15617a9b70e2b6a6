//! A container run inside its image's root filesystem: own mount and PID namespaces, the pod's
//! volumes bind-mounted, `/proc` of its own, a small `/dev`, a read-only root, then the
//! securityContext (capabilities, no_new_privs, groups, gid, uid), without a container runtime.
//!
//! Everything a step needs (paths as C strings, ids, masks) is computed before the fork by
//! [`Sandbox`]'s builder; [`Sandbox::enter`] runs between fork and exec and makes only syscalls.
//! Order matters: the capability bounding set can only be changed while still root, so it is
//! dropped *before* the uid switch; mounts and chroot come first, as they need CAP_SYS_ADMIN and
//! CAP_SYS_CHROOT.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

mod enter;

/// A bind mount of a pod volume into the container's root.
#[derive(Clone, Debug)]
pub struct BindMount {
    pub source: PathBuf,
    /// Path inside the container (`/var/run/capsule`).
    pub target: String,
    pub read_only: bool,
}

/// What the container asks for, in the container's own terms.
#[derive(Clone, Debug)]
pub struct SandboxRequest {
    /// The image's root filesystem (shared by every container of that image: never written).
    pub rootfs: PathBuf,
    /// `Some(dir)`: a writable root, an overlay of `rootfs` with its upper layer in `dir`
    /// (`readOnlyRootFilesystem` unset or false). None: `rootfs` itself, read-only.
    pub writable_layer: Option<PathBuf>,
    pub mounts: Vec<BindMount>,
    /// Working directory inside the container.
    pub working_dir: String,
    pub uid: u32,
    pub gid: u32,
    pub supplementary_groups: Vec<u32>,
    /// Capabilities kept in the bounding set (bit n = capability n); 0 drops them all.
    pub keep_capabilities: u64,
    pub no_new_privileges: bool,
}

/// A device node of the container's `/dev` (a tmpfs): name, major, minor.
const DEVICES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];
const DEV_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];
/// Bounds of the container's in-memory file systems (`/dev`, `/dev/shm`).
const DEV_TMPFS_OPTIONS: &str = "mode=755,size=64k";
const SHM_TMPFS_OPTIONS: &str = "mode=1777,size=64m";

struct Mount {
    source: CString,
    target: CString,
    read_only: bool,
}

/// A [`SandboxRequest`] resolved against the rootfs, ready for [`Sandbox::enter`].
pub struct Sandbox {
    root: CString,
    overlay: Option<(CString, CString)>,
    dev: CString,
    devices: Vec<(CString, libc::dev_t)>,
    dev_links: Vec<(CString, CString)>,
    shm: CString,
    dev_tmpfs: CString,
    shm_tmpfs: CString,
    mounts: Vec<Mount>,
    proc_dir: CString,
    read_only_root: bool,
    working_dir: CString,
    uid: u32,
    gid: u32,
    groups: Vec<libc::gid_t>,
    keep_capabilities: u64,
    no_new_privileges: bool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("root", &self.root)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

fn c_path(path: &Path) -> std::io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "NUL in a path"))
}

fn c_str(text: &str) -> std::io::Result<CString> {
    c_path(Path::new(text))
}

/// `path` (absolute, inside the container) as a path relative to `root`, with every symlink
/// followed *inside* `root`: Debian's `/var/run -> /run` must not lead to the host's `/run`.
/// Components that do not exist yet are kept as written.
pub fn resolve_in_root(root: &Path, path: &str) -> std::io::Result<PathBuf> {
    let mut pending: Vec<std::ffi::OsString> = Path::new(path)
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        match std::fs::symlink_metadata(root.join(&candidate)) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > 40 {
                    return Err(std::io::Error::other(format!("too many links in {path}")));
                }
                let target = std::fs::read_link(root.join(&candidate))?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => pending.push(p.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(resolved)
}

impl Sandbox {
    /// Resolves the request's paths in the rootfs and makes the mount points the image lacks (as
    /// files for file sources). Runs in the kubelet, before any fork.
    pub fn build(request: &SandboxRequest) -> std::io::Result<Sandbox> {
        let lower = &request.rootfs;
        let (root, overlay) = match &request.writable_layer {
            Some(layer) => {
                let (upper, work, merged) = (
                    layer.join("upper"),
                    layer.join("work"),
                    layer.join("merged"),
                );
                for dir in [&upper, &work, &merged] {
                    std::fs::create_dir_all(dir)?;
                }
                let options = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.display(),
                    upper.display(),
                    work.display()
                );
                (merged.clone(), Some((c_str(&options)?, c_path(&merged)?)))
            }
            None => (lower.clone(), None),
        };
        let mut mounts = Vec::new();
        for mount in &request.mounts {
            let inside = resolve_in_root(lower, &mount.target)?;
            let point = lower.join(&inside);
            if mount.source.is_dir() {
                std::fs::create_dir_all(&point)?;
            } else if !point.exists() {
                if let Some(parent) = point.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::File::create(&point)?;
            }
            mounts.push(Mount {
                source: c_path(&mount.source)?,
                target: c_path(&root.join(inside))?,
                read_only: mount.read_only,
            });
        }
        for dir in ["proc", "dev"] {
            std::fs::create_dir_all(lower.join(dir))?;
        }
        let devices = DEVICES
            .iter()
            .map(|(name, major, minor)| {
                Ok((
                    c_path(&root.join("dev").join(name))?,
                    libc::makedev(*major, *minor),
                ))
            })
            .collect::<std::io::Result<_>>()?;
        let dev_links = DEV_LINKS
            .iter()
            .map(|(name, target)| Ok((c_str(target)?, c_path(&root.join("dev").join(name))?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Sandbox {
            dev: c_path(&root.join("dev"))?,
            shm: c_path(&root.join("dev/shm"))?,
            proc_dir: c_path(&root.join("proc"))?,
            root: c_path(&root)?,
            overlay,
            devices,
            dev_links,
            dev_tmpfs: c_str(DEV_TMPFS_OPTIONS)?,
            shm_tmpfs: c_str(SHM_TMPFS_OPTIONS)?,
            mounts,
            read_only_root: request.writable_layer.is_none(),
            working_dir: c_str(&request.working_dir)?,
            uid: request.uid,
            gid: request.gid,
            groups: request.supplementary_groups.clone(),
            keep_capabilities: request.keep_capabilities,
            no_new_privileges: request.no_new_privileges,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("run")).unwrap();
        std::fs::create_dir_all(root.path().join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.path().join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../etc", root.path().join("run/up")).unwrap();
        assert_eq!(
            resolve_in_root(root.path(), "/var/run/capsule").unwrap(),
            PathBuf::from("run/capsule")
        );
        // `..` never climbs above the root.
        assert_eq!(
            resolve_in_root(root.path(), "/var/run/up/x").unwrap(),
            PathBuf::from("etc/x")
        );
        assert_eq!(
            resolve_in_root(root.path(), "/../../a").unwrap(),
            PathBuf::from("a")
        );
    }
}
