//! Private working directories of an interpreter: one for its warm-up, and a fresh one made when
//! it starts serving a session (after the previous session's processes were killed, so they
//! cannot have planted modules or configuration in it). Removed with everything in them once the
//! interpreter is gone, so no file outlives the session that wrote it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::{Error, Result};
use crate::fork_server::ZygoteLink;

/// The folder of the scratch volume where working directories are made: only the worker's uid can
/// add entries to it (mode 0711), so code under another uid cannot plant anything beside them;
/// whatever session code leaves elsewhere in the volume is swept at each reset.
pub const SESSIONS_DIR: &str = "sessions";

/// An interpreter's working directory (also its `HOME` and `TMPDIR`); removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
    /// The fork server of an interpreter container, which removes what session code made there.
    remover: Option<ZygoteLink>,
}

impl WorkDir {
    /// Creates `<scratch>/sessions/<128 random bits>`, mode 0700, or 0777 when `shared` with an
    /// interpreter container's uid (the worker's uid cannot give it away; the name is the secret,
    /// and the container holds one session's processes at a time). The directory is made through
    /// a handle on `sessions/` opened without following links and checked to be the worker's:
    /// code under another uid can rename entries of the scratch volume, never make the worker
    /// create a directory where it can list it.
    pub fn create(scratch: &Path, shared: bool) -> Result<WorkDir> {
        let name = hex::encode(rand::rng().random::<[u8; 16]>());
        let sessions = scratch.join(SESSIONS_DIR);
        let path = sessions.join(&name);
        let io = |what: &Path| {
            let what = what.display().to_string();
            move |source| Error::Scratch {
                what: format!("preparing the interpreter directory {what}"),
                source,
            }
        };
        std::fs::create_dir_all(scratch).map_err(io(scratch))?;
        let folder = match own_folder(&sessions) {
            Ok(folder) => folder,
            Err(_) => {
                // Moved aside, not trusted: the next reset's sweep removes it.
                let aside = scratch.join(format!("{SESSIONS_DIR}.replaced-{name}"));
                tracing::warn!(folder = %sessions.display(), "the working directories' folder was replaced; setting it aside");
                std::fs::rename(&sessions, &aside).map_err(io(&sessions))?;
                own_folder(&sessions).map_err(io(&sessions))?
            }
        };
        let mode = if shared { 0o777 } else { 0o700 };
        make_dir_in(&folder, &name, mode).map_err(io(&path))?;
        Ok(WorkDir {
            path,
            remover: None,
        })
    }

    /// Has `remover` (an interpreter container's fork server) remove the directory on drop.
    pub fn remove_through(&mut self, remover: Option<ZygoteLink>) {
        self.remover = remover;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        // Another uid's fork server removes what session code made that the worker's uid cannot;
        // the worker removes the rest, and the directory itself, once it can.
        let attempts = match self.remover.take() {
            Some(remover) if remover.remove_dir(&path) => REMOVE_ATTEMPTS,
            _ => 1,
        };
        // Off the executor's path: a session may have left many files.
        let remove = move || remove_eventually(&path, attempts);
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// `dir` (made when missing), opened without following a link, when it is a directory of the
/// worker's uid; made mode 0711 (others may enter, not list or add).
fn own_folder(dir: &Path) -> std::io::Result<std::fs::File> {
    match std::fs::create_dir(dir) {
        Err(error) if error.kind() != std::io::ErrorKind::AlreadyExists => return Err(error),
        _ => {}
    }
    open_own_folder(dir)
}

fn open_own_folder(dir: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let folder = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(dir)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if folder.metadata()?.uid() != unsafe { libc::geteuid() } {
        return Err(std::io::Error::other(
            "it belongs to another user: something replaced the worker's folder",
        ));
    }
    folder.set_permissions(std::fs::Permissions::from_mode(0o711))?;
    Ok(folder)
}

/// Makes `name` in `folder` (through the handle, wherever the folder is now) with `mode`.
fn make_dir_in(folder: &std::fs::File, name: &str, mode: u32) -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let name = std::ffi::CString::new(name)?;
    // SAFETY: mkdirat and openat read a NUL-terminated name relative to a directory fd we hold.
    let dir = unsafe {
        if libc::mkdirat(folder.as_raw_fd(), name.as_ptr(), 0o700) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = libc::openat(
            folder.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        );
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        std::fs::File::from_raw_fd(fd)
    };
    // Not through mkdirat's mode, which the umask narrows.
    dir.set_permissions(std::fs::Permissions::from_mode(mode))
}

/// Tries for this long (times [`REMOVE_RETRY`]) while a fork server removes its part.
const REMOVE_ATTEMPTS: u32 = 100;
const REMOVE_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

fn remove_eventually(path: &Path, attempts: u32) {
    for attempt in 1..=attempts {
        match std::fs::remove_dir_all(path) {
            Ok(()) => return,
            // Gone, or an entry removed meanwhile by the fork server.
            Err(_) if std::fs::symlink_metadata(path).is_err() => return,
            Err(error) if attempt == attempts => {
                tracing::warn!(%error, path = %path.display(), "could not remove an interpreter directory");
            }
            Err(_) => std::thread::sleep(REMOVE_RETRY),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_is_private_and_gone_after_drop() {
        let scratch =
            std::env::temp_dir().join(format!("capsule-workdir-test-{}", std::process::id()));
        let dir = WorkDir::create(&scratch, false).unwrap();
        let path = dir.path().to_owned();
        std::fs::write(path.join("left-behind"), b"x").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        drop(dir);
        for _ in 0..100 {
            if !path.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!path.exists());
        std::fs::remove_dir_all(scratch).unwrap();
    }
}
