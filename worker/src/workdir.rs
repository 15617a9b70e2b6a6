//! A private working directory per interpreter: created empty before it starts, removed with
//! everything in it once the interpreter is gone, so no file outlives the session that wrote it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::error::{Error, Result};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// An interpreter's working directory (also its `HOME` and `TMPDIR`); removed on drop.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `<scratch>/interpreter-<n>`, readable by its owner only.
    pub fn create(scratch: &Path) -> Result<WorkDir> {
        let path = scratch.join(format!("interpreter-{}", NEXT.fetch_add(1, Relaxed)));
        let io = |source| Error::Scratch {
            what: format!("creating the interpreter directory {}", path.display()),
            source,
        };
        // A directory left by an earlier process of the same pid namespace is not reused.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(&path).map_err(io)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        // Off the executor's path: a session may have left many files.
        let remove = move || {
            if let Err(error) = std::fs::remove_dir_all(&path) {
                if error.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(%error, path = %path.display(), "could not remove an interpreter directory");
                }
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => drop(handle.spawn_blocking(remove)),
            Err(_) => remove(),
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
        let dir = WorkDir::create(&scratch).unwrap();
        let path = dir.path().to_owned();
        std::fs::write(path.join("left-behind"), b"x").unwrap();
        use std::os::unix::fs::PermissionsExt;
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
