//! Entering a built [`Sandbox`]: the steps run between fork and exec, syscalls only, in the
//! order the module docs of `sandbox` explain.

use std::ffi::CString;

use super::Sandbox;

/// Highest capability number this code knows a name for; the bounding set is dropped up to 63.
const MAX_CAPABILITY: u32 = 63;

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
