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
/// Highest capability number this code knows a name for; the bounding set is dropped up to 63.
const MAX_CAPABILITY: u32 = 63;

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

/// Writes a fixed message to stderr (the container's log): the only way to say which step failed,
/// as only the errno crosses back to the kubelet.
fn say(message: &str) {
    // SAFETY: write(2) on fd 2 with a valid buffer; async-signal-safe.
    unsafe {
        libc::write(2, message.as_ptr().cast(), message.len());
    }
}

fn check(result: libc::c_int, step: &str) -> std::io::Result<()> {
    if result == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    say("capsule-kubelet: container setup failed at: ");
    say(step);
    say("\n");
    Err(error)
}

const NULL: *const libc::c_char = std::ptr::null();

impl Sandbox {
    /// Enters the sandbox. Called between fork and exec (no allocation, syscalls only). The calling
    /// process stays outside as a shim that waits for the container's PID 1 and exits as it did;
    /// only that PID 1 returns from here.
    ///
    /// # Safety
    /// Only in a freshly forked child (a `pre_exec` closure).
    pub unsafe fn enter(&self) -> std::io::Result<()> {
        check(
            libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID),
            "unshare",
        )?;
        match libc::fork() {
            -1 => return Err(std::io::Error::last_os_error()),
            0 => {}
            pid => shim(pid),
        }
        // PID 1 of the new namespace: it dies with the shim, and everything in it dies with it.
        check(
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong),
            "pdeathsig",
        )?;
        self.mount_root()?;
        self.drop_privileges()?;
        check(
            libc::chdir(self.working_dir.as_ptr()),
            "chdir to workingDir",
        )
    }

    unsafe fn mount_root(&self) -> std::io::Result<()> {
        // Nothing mounted here may show on the host.
        check(
            libc::mount(
                NULL,
                c"/".as_ptr(),
                NULL,
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ),
            "private mounts",
        )?;
        match &self.overlay {
            Some((options, merged)) => check(
                libc::mount(
                    c"overlay".as_ptr(),
                    merged.as_ptr(),
                    c"overlay".as_ptr(),
                    0,
                    options.as_ptr().cast(),
                ),
                "overlay root",
            )?,
            // A chroot directory must be a mount point before it can be remounted read-only.
            None => check(
                libc::mount(
                    self.root.as_ptr(),
                    self.root.as_ptr(),
                    NULL,
                    libc::MS_BIND,
                    std::ptr::null(),
                ),
                "bind root",
            )?,
        }
        self.mount_dev()?;
        for mount in &self.mounts {
            check(
                libc::mount(
                    mount.source.as_ptr(),
                    mount.target.as_ptr(),
                    NULL,
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ),
                "volume mount",
            )?;
            if mount.read_only {
                remount_read_only(&mount.target, "read-only volume")?;
            }
        }
        check(
            libc::mount(
                c"proc".as_ptr(),
                self.proc_dir.as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ),
            "mount /proc",
        )?;
        if self.read_only_root {
            remount_read_only(&self.root, "read-only root")?;
        }
        check(libc::chdir(self.root.as_ptr()), "chdir to root")?;
        check(libc::chroot(c".".as_ptr()), "chroot")?;
        check(libc::chdir(c"/".as_ptr()), "chdir /")
    }

    unsafe fn mount_dev(&self) -> std::io::Result<()> {
        let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
        check(
            libc::mount(
                c"tmpfs".as_ptr(),
                self.dev.as_ptr(),
                c"tmpfs".as_ptr(),
                flags,
                self.dev_tmpfs.as_ptr().cast(),
            ),
            "mount /dev",
        )?;
        for (path, device) in &self.devices {
            check(
                libc::mknod(path.as_ptr(), libc::S_IFCHR | 0o666, *device),
                "mknod in /dev",
            )?;
            // The umask must not narrow a device everybody may use.
            check(libc::chmod(path.as_ptr(), 0o666), "chmod in /dev")?;
        }
        for (target, link) in &self.dev_links {
            check(
                libc::symlink(target.as_ptr(), link.as_ptr()),
                "links in /dev",
            )?;
        }
        check(libc::mkdir(self.shm.as_ptr(), 0o1777), "mkdir /dev/shm")?;
        check(
            libc::mount(
                c"shm".as_ptr(),
                self.shm.as_ptr(),
                c"tmpfs".as_ptr(),
                flags | libc::MS_NODEV,
                self.shm_tmpfs.as_ptr().cast(),
            ),
            "mount /dev/shm",
        )
    }

    unsafe fn drop_privileges(&self) -> std::io::Result<()> {
        for capability in 0..=MAX_CAPABILITY {
            let kept = self.keep_capabilities & (1 << capability) != 0;
            // EINVAL: a number past this kernel's last capability.
            if !kept
                && libc::prctl(libc::PR_CAPBSET_DROP, capability as libc::c_ulong, 0, 0, 0) != 0
                && *libc::__errno_location() != libc::EINVAL
            {
                return check(-1, "drop capabilities");
            }
        }
        check(
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            ),
            "clear ambient capabilities",
        )?;
        if self.no_new_privileges {
            check(
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
                "no_new_privs",
            )?;
        }
        check(
            libc::setgroups(self.groups.len(), self.groups.as_ptr()),
            "setgroups",
        )?;
        check(libc::setgid(self.gid), "setgid")?;
        check(libc::setuid(self.uid), "setuid")?;
        if self.uid == 0 {
            // Root keeps its permitted set through setuid(0): narrow it to the kept capabilities.
            set_capabilities(self.keep_capabilities)?;
        }
        Ok(())
    }
}

unsafe fn remount_read_only(target: &CString, step: &str) -> std::io::Result<()> {
    check(
        libc::mount(
            NULL,
            target.as_ptr(),
            NULL,
            libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
            std::ptr::null(),
        ),
        step,
    )
}

unsafe fn set_capabilities(keep: u64) -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |bits: u64| Data {
        effective: bits as u32,
        permitted: bits as u32,
        inheritable: 0,
    };
    let data = [half(keep), half(keep >> 32)];
    check(
        libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) as libc::c_int,
        "capset",
    )
}

/// The process left outside the namespaces: waits for the container's PID 1 and ends as it did.
/// It ignores the polite signals (the kubelet signals the whole process group, which reaches PID 1
/// directly) and holds no descriptor, so the kubelet's exec-status pipe and the log see EOF.
unsafe fn shim(child: libc::pid_t) -> ! {
    for signal in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        libc::signal(signal, libc::SIG_IGN);
    }
    libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
    let mut status = 0;
    loop {
        let waited = libc::waitpid(child, &mut status, 0);
        if waited == child {
            break;
        }
        if waited == -1 && *libc::__errno_location() != libc::EINTR {
            libc::_exit(255);
        }
    }
    if libc::WIFEXITED(status) {
        libc::_exit(libc::WEXITSTATUS(status));
    }
    let signal = libc::WTERMSIG(status);
    libc::signal(signal, libc::SIG_DFL);
    libc::kill(libc::getpid(), signal);
    libc::_exit(128 + signal)
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
