//! Where sealed checkpoints live. [`CheckpointStore`] is the seam: [`DirStore`] keeps them in a
//! directory (the worker's scratch volume, or a PersistentVolume mounted by the pool); an object
//! store can implement the same trait later. Files are sealed before they get here
//! ([`super::seal`]): a store never has to be trusted with integrity.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::error::{Error, Result};

/// The session a checkpoint belongs to. Keyed by uid, so a new session with an old one's name
/// never sees its checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub namespace: String,
    pub session: String,
    pub uid: String,
}

impl Scope {
    /// The AEAD associated data of checkpoint `id` of this session (`part` tells data from
    /// metadata). NUL separators cannot occur in Kubernetes names.
    pub fn aad(&self, id: &str, part: &str) -> Vec<u8> {
        [
            "capsule.dev/checkpoint/v1",
            &self.namespace,
            &self.session,
            &self.uid,
            id,
            part,
        ]
        .join("\0")
        .into_bytes()
    }
}

/// A checkpoint's two blobs: the sealed data and its small sealed metadata.
pub enum Blob {
    Data,
    Meta,
}

/// Keeps sealed checkpoints per session. Ids sort by creation time.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// Stores both blobs; the checkpoint is listed only once both are in place.
    fn put(&self, scope: &Scope, id: &str, data: &[u8], meta: &[u8]) -> Result<()>;
    /// Reads a blob, refusing (without reading it) one larger than `max_bytes`.
    fn get(&self, scope: &Scope, id: &str, blob: Blob, max_bytes: u64) -> Result<Vec<u8>>;
    /// Ids of the session's complete checkpoints, newest first.
    fn list(&self, scope: &Scope) -> Result<Vec<String>>;
    fn delete(&self, scope: &Scope, id: &str) -> Result<()>;
}

/// Checkpoints as files: `<root>/<namespace>/<session>/<uid>/<id>.ckpt` and `<id>.meta`, written
/// to a temporary name and renamed, so a reader never sees half a file.
#[derive(Debug)]
pub struct DirStore {
    root: PathBuf,
}

/// Whether `part` can be one path component as is: no separators, no `..`, no hidden names.
fn safe_component(part: &str) -> bool {
    !part.is_empty()
        && part.len() <= 253
        && !part.starts_with('.')
        && part
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Whether `id` has the shape of an id this worker makes (`<ms>-<hex>`).
pub fn valid_id(id: &str) -> bool {
    id.len() <= 64 && safe_component(id)
}

fn io_error(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let what = format!("{what} {}", path.display());
    move |source| Error::Scratch { what, source }
}

impl DirStore {
    pub fn new(root: PathBuf) -> Self {
        DirStore { root }
    }

    fn dir(&self, scope: &Scope) -> Result<PathBuf> {
        for (field, part) in [
            ("namespace", &scope.namespace),
            ("session", &scope.session),
            ("sessionUid", &scope.uid),
        ] {
            if !safe_component(part) {
                return Err(Error::CheckpointFailed(format!(
                    "the binding's {field} cannot name a checkpoint directory: use [A-Za-z0-9._-], not starting with a dot"
                )));
            }
        }
        Ok(self
            .root
            .join(&scope.namespace)
            .join(&scope.session)
            .join(&scope.uid))
    }

    fn path(&self, scope: &Scope, id: &str, blob: Blob) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(Error::CheckpointNotFound { id: id.to_owned() });
        }
        let ext = match blob {
            Blob::Data => "ckpt",
            Blob::Meta => "meta",
        };
        Ok(self.dir(scope)?.join(format!("{id}.{ext}")))
    }

    fn write_atomically(&self, dir: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
        let suffix: [u8; 8] = rand::rng().random();
        let temp = dir.join(format!(".tmp-{}", hex::encode(suffix)));
        let written = (|| {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io_error("writing checkpoint", path))
    }
}

impl CheckpointStore for DirStore {
    fn put(&self, scope: &Scope, id: &str, data: &[u8], meta: &[u8]) -> Result<()> {
        let dir = self.dir(scope)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(io_error("creating checkpoint directory", &dir))?;
        self.write_atomically(&dir, &self.path(scope, id, Blob::Data)?, data)?;
        // The metadata last: its presence is what lists the checkpoint.
        self.write_atomically(&dir, &self.path(scope, id, Blob::Meta)?, meta)
    }

    fn get(&self, scope: &Scope, id: &str, blob: Blob, max_bytes: u64) -> Result<Vec<u8>> {
        let path = self.path(scope, id, blob)?;
        // Never through a symlink planted in the store (same-uid code can write it).
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::CheckpointNotFound { id: id.to_owned() })
            }
            Err(e) => return Err(io_error("opening checkpoint", &path)(e)),
        };
        let size = file
            .metadata()
            .map_err(io_error("reading checkpoint", &path))?
            .len();
        if size > max_bytes {
            return Err(Error::CheckpointTooLarge {
                size,
                max: max_bytes,
            });
        }
        let mut bytes = Vec::with_capacity(size as usize);
        // `take` keeps the bound even if the file grows after the size check.
        file.take(max_bytes + 1)
            .read_to_end(&mut bytes)
            .map_err(io_error("reading checkpoint", &path))?;
        if bytes.len() as u64 > max_bytes {
            return Err(Error::CheckpointTooLarge {
                size: bytes.len() as u64,
                max: max_bytes,
            });
        }
        Ok(bytes)
    }

    fn list(&self, scope: &Scope) -> Result<Vec<String>> {
        let dir = self.dir(scope)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error("listing checkpoints in", &dir)(e)),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
            .filter_map(|name| name.strip_suffix(".meta").map(str::to_owned))
            .filter(|id| valid_id(id))
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        Ok(ids)
    }

    fn delete(&self, scope: &Scope, id: &str) -> Result<()> {
        // The metadata first, so a half-deleted checkpoint is no longer listed.
        for blob in [Blob::Meta, Blob::Data] {
            let path = self.path(scope, id, blob)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_error("deleting checkpoint", &path)(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(uid: &str) -> Scope {
        Scope {
            namespace: "ns".into(),
            session: "s1".into(),
            uid: uid.into(),
        }
    }

    #[test]
    fn put_list_get_delete_by_uid() {
        let root = tempfile::tempdir().unwrap();
        let store = DirStore::new(root.path().to_owned());
        store
            .put(&scope("u1"), "0001-a", b"data1", b"meta1")
            .unwrap();
        store
            .put(&scope("u1"), "0002-b", b"data2", b"meta2")
            .unwrap();
        assert_eq!(store.list(&scope("u1")).unwrap(), ["0002-b", "0001-a"]);
        assert!(store.list(&scope("u2")).unwrap().is_empty(), "another uid");
        assert_eq!(
            store.get(&scope("u1"), "0001-a", Blob::Data, 100).unwrap(),
            b"data1"
        );
        assert!(matches!(
            store.get(&scope("u1"), "0001-a", Blob::Data, 4),
            Err(Error::CheckpointTooLarge { size: 5, max: 4 })
        ));
        store.delete(&scope("u1"), "0001-a").unwrap();
        assert_eq!(store.list(&scope("u1")).unwrap(), ["0002-b"]);
        assert!(matches!(
            store.get(&scope("u1"), "0001-a", Blob::Data, 100),
            Err(Error::CheckpointNotFound { .. })
        ));
        assert!(matches!(
            store.get(&scope("u1"), "../x", Blob::Data, 100),
            Err(Error::CheckpointNotFound { .. })
        ));
        let mut bad = scope("u1");
        bad.session = "../../etc".into();
        assert!(store.list(&bad).is_err());
    }
}
