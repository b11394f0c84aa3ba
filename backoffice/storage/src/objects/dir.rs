//! The local-directory backend. Every operation runs as one blocking closure on tokio's
//! blocking pool (file I/O and `fsync` would stall the async workers). The layout is
//! documented on [`ObjectStore::dir`](super::ObjectStore::dir).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::{ObjectError, ObjectMeta, validate_key};

const TMP_DIR: &str = ".tmp";
const META_DIR: &str = ".meta";
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
/// Leftover temporary files older than this are from crashed writers.
const STALE_TMP: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone)]
pub(crate) struct DirStore {
    root: Arc<PathBuf>,
}

impl DirStore {
    pub(crate) async fn open(root: PathBuf) -> Result<Self, ObjectError> {
        blocking(move || {
            make_dirs(&root)?;
            let root = fs::canonicalize(&root).map_err(io_err("resolve", &root))?;
            let store = Self {
                root: Arc::new(root),
            };
            store.ensure_sync()?;
            store.sweep_tmp();
            Ok(store)
        })
        .await
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) async fn ensure(&self) -> Result<(), ObjectError> {
        let store = self.clone();
        blocking(move || store.ensure_sync()).await
    }

    pub(crate) async fn ping(&self) -> Result<(), ObjectError> {
        let store = self.clone();
        blocking(move || {
            store.ensure_sync()?;
            // Writable: create and remove a temporary file.
            let (path, file) = store.tmp_file()?;
            drop(file);
            fs::remove_file(&path).map_err(io_err("remove", &path))
        })
        .await
    }

    pub(crate) async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        let store = self.clone();
        let key = key.to_owned();
        let content_type = content_type.to_owned();
        blocking(move || {
            let target = store.root.join(&key);
            store.write_atomic(&key, &store.root, &target, &bytes)?;
            let meta_root = store.root.join(META_DIR);
            let sidecar = meta_root.join(&key);
            match store.write_atomic(&key, &meta_root, &sidecar, content_type.as_bytes()) {
                // Only a stale sidecar of a removed object can be in the way (the object
                // itself was accepted): keep the object, without its content type.
                Err(ObjectError::Conflict { reason, .. }) => {
                    tracing::warn!(key, reason, "object store: content type not recorded");
                    Ok(())
                }
                other => other,
            }
        })
        .await
    }

    pub(crate) async fn get(&self, key: &str) -> Result<Option<(Bytes, ObjectMeta)>, ObjectError> {
        let store = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let path = store.root.join(&key);
            if !store.is_plain_file(&key, &path)? {
                return Ok(None);
            }
            let mut file = match File::open(&path) {
                Ok(file) => file,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("open", &path)(e)),
            };
            let stat = file.metadata().map_err(io_err("stat", &path))?;
            let mut buf = Vec::with_capacity(usize::try_from(stat.len()).unwrap_or(0));
            file.read_to_end(&mut buf).map_err(io_err("read", &path))?;
            let meta = ObjectMeta {
                size: buf.len() as u64,
                content_type: store.content_type(&key),
                last_modified: stat.modified().ok(),
                key,
            };
            Ok(Some((Bytes::from(buf), meta)))
        })
        .await
    }

    pub(crate) async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        let store = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let path = store.root.join(&key);
            if !store.is_plain_file(&key, &path)? {
                return Ok(None);
            }
            let stat = match fs::symlink_metadata(&path) {
                Ok(stat) => stat,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("stat", &path)(e)),
            };
            Ok(Some(ObjectMeta {
                size: stat.len(),
                content_type: store.content_type(&key),
                last_modified: stat.modified().ok(),
                key,
            }))
        })
        .await
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let store = self.clone();
        let key = key.to_owned();
        blocking(move || {
            let path = store.root.join(&key);
            if store.is_plain_file(&key, &path)? {
                remove_if_exists(&path)?;
                store.prune_empty_parents(&store.root, &path);
            }
            // The sidecar goes even when the object is already gone (a crash between the two).
            let meta_root = store.root.join(META_DIR);
            let sidecar = meta_root.join(&key);
            if no_symlink_below(&meta_root, &key).unwrap_or(false)
                && fs::symlink_metadata(&sidecar).is_ok_and(|m| m.is_file())
            {
                remove_if_exists(&sidecar)?;
                store.prune_empty_parents(&meta_root, &sidecar);
            }
            Ok(())
        })
        .await
    }

    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let store = self.clone();
        let prefix = prefix.to_owned();
        blocking(move || {
            // Start at the deepest folder the prefix names in full.
            let folder = prefix.rfind('/').map_or("", |at| &prefix[..at]);
            let start = if folder.is_empty() {
                store.root.to_path_buf()
            } else {
                let folder_path = store.root.join(folder);
                let folder_ok = no_symlink_below(&store.root, folder)?
                    && fs::symlink_metadata(&folder_path).is_ok_and(|m| m.is_dir());
                if !folder_ok {
                    return Ok(Vec::new());
                }
                folder_path
            };
            let mut out = Vec::new();
            let mut stack = vec![(start, folder.to_owned())];
            while let Some((dir, dir_key)) = stack.pop() {
                let entries = match fs::read_dir(&dir) {
                    Ok(entries) => entries,
                    Err(e) if is_not_found_or_not_dir(&e) => continue,
                    Err(e) => return Err(io_err("list", &dir)(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_err("list", &dir))?;
                    let Ok(name) = entry.file_name().into_string() else {
                        continue;
                    };
                    // Dot names are ours (.tmp, .meta) or not valid keys.
                    if name.starts_with('.') {
                        continue;
                    }
                    let key = if dir_key.is_empty() {
                        name
                    } else {
                        format!("{dir_key}/{name}")
                    };
                    // file_type() does not follow symbolic links, which are skipped.
                    let Ok(kind) = entry.file_type() else {
                        continue;
                    };
                    if kind.is_dir() {
                        // Descend only where keys below can still match the prefix.
                        let as_folder = format!("{key}/");
                        if as_folder.starts_with(&prefix) || prefix.starts_with(&as_folder) {
                            stack.push((entry.path(), key));
                        }
                    } else if kind.is_file()
                        && key.starts_with(&prefix)
                        && validate_key(&key).is_ok()
                    {
                        let Ok(stat) = entry.metadata() else {
                            continue; // removed meanwhile
                        };
                        out.push(ObjectMeta {
                            size: stat.len(),
                            content_type: store.content_type(&key),
                            last_modified: stat.modified().ok(),
                            key,
                        });
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    fn ensure_sync(&self) -> Result<(), ObjectError> {
        make_dirs(&self.root.join(TMP_DIR))?;
        make_dirs(&self.root.join(META_DIR))
    }

    /// Removes temporary files left by writers that crashed long ago. Best effort: a
    /// failure here must not stop the store from opening.
    fn sweep_tmp(&self) {
        let tmp = self.root.join(TMP_DIR);
        let Ok(entries) = fs::read_dir(&tmp) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age > STALE_TMP));
            if old {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn tmp_file(&self) -> Result<(PathBuf, File), ObjectError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let tmp = self.root.join(TMP_DIR);
        make_dirs(&tmp)?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let path = tmp.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(io_err("create", &path))?;
        Ok((path, file))
    }

    /// Writes `bytes` to `target` (which is `base/key`) so that readers see the old content
    /// or the new, never a part: temporary file, fsync, rename, fsync of the folder.
    fn write_atomic(
        &self,
        key: &str,
        base: &Path,
        target: &Path,
        bytes: &[u8],
    ) -> Result<(), ObjectError> {
        let (tmp, mut file) = self.tmp_file()?;
        let result = (|| {
            file.write_all(bytes).map_err(io_err("write", &tmp))?;
            file.sync_all().map_err(io_err("fsync", &tmp))?;
            drop(file);
            // A concurrent delete may prune the freshly made folder before the rename: retry.
            let mut attempts = 0;
            loop {
                attempts += 1;
                self.prepare_parents(key, base, target)?;
                match fs::rename(&tmp, target) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempts < 3 => continue,
                    Err(e) if e.kind() == io::ErrorKind::IsADirectory => {
                        return Err(conflict(key, "it is a folder of other objects"));
                    }
                    Err(e) => return Err(io_err("rename", target)(e)),
                }
            }
            if let Some(parent) = target.parent() {
                sync_dir(parent)?;
            }
            Ok(())
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Creates the folders above `base/key`, refusing files and symbolic links in the way.
    fn prepare_parents(&self, key: &str, base: &Path, target: &Path) -> Result<(), ObjectError> {
        let mut path = base.to_path_buf();
        let parents = key.rsplit_once('/').map_or("", |(parents, _)| parents);
        for segment in parents.split('/').filter(|s| !s.is_empty()) {
            path.push(segment);
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(conflict(key, "a symbolic link is in its path"));
                }
                Ok(_) => return Err(conflict(key, "a parent of it is an object")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    match DirBuilder::new().mode(DIR_MODE).create(&path) {
                        Ok(()) => {}
                        // Made meanwhile by another writer: checked again on the next round.
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                            if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                                return Err(conflict(key, "a parent of it is an object"));
                            }
                        }
                        Err(e) => return Err(io_err("create folder", &path)(e)),
                    }
                }
                Err(e) => return Err(io_err("stat", &path)(e)),
            }
        }
        match fs::symlink_metadata(target) {
            Ok(m) if m.is_dir() => Err(conflict(key, "it is a folder of other objects")),
            // A symbolic link at the target itself is replaced by the rename, not followed.
            _ => Ok(()),
        }
    }

    /// Whether `root/key` is a regular file reached without any symbolic link.
    fn is_plain_file(&self, key: &str, path: &Path) -> Result<bool, ObjectError> {
        if !no_symlink_below(&self.root, key)? {
            return Ok(false);
        }
        match fs::symlink_metadata(path) {
            Ok(m) => Ok(m.is_file()),
            Err(e) if is_not_found_or_not_dir(&e) => Ok(false),
            Err(e) => Err(io_err("stat", path)(e)),
        }
    }

    fn content_type(&self, key: &str) -> Option<String> {
        let meta_root = self.root.join(META_DIR);
        if !no_symlink_below(&meta_root, key).unwrap_or(false) {
            return None;
        }
        let path = meta_root.join(key);
        if !fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            return None;
        }
        let mut text = String::new();
        File::open(&path)
            .ok()?
            .take(super::MAX_CONTENT_TYPE_LEN as u64 + 1)
            .read_to_string(&mut text)
            .ok()?;
        let text = text.trim();
        (!text.is_empty() && super::check_content_type(text).is_ok()).then(|| text.to_owned())
    }

    /// Removes the now empty folders between `path` and `base`, so that a key can become an
    /// object again after the objects below it are gone. Best effort.
    fn prune_empty_parents(&self, base: &Path, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == base || !d.starts_with(base) {
                break;
            }
            if fs::remove_dir(d).is_err() {
                break; // not empty, or in use
            }
            dir = d.parent();
        }
    }
}

/// Whether none of the folders above `base/key` is a symbolic link (missing ones are fine).
fn no_symlink_below(base: &Path, key: &str) -> Result<bool, ObjectError> {
    let mut path = base.to_path_buf();
    let mut segments = key.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segments.peek().is_none() {
            break;
        }
        path.push(segment);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => return Ok(false),
            Ok(_) => {}
            Err(e) if is_not_found_or_not_dir(&e) => return Ok(true),
            Err(e) => return Err(io_err("stat", &path)(e)),
        }
    }
    Ok(true)
}

fn make_dirs(path: &Path) -> Result<(), ObjectError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
        .map_err(io_err("create folder", path))
}

fn remove_if_exists(path: &Path) -> Result<(), ObjectError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

fn sync_dir(path: &Path) -> Result<(), ObjectError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", path))
}

fn is_not_found_or_not_dir(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn conflict(key: &str, reason: &'static str) -> ObjectError {
    ObjectError::Conflict {
        key: key.to_owned(),
        reason,
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ObjectError {
    let path = path.to_path_buf();
    move |source| ObjectError::Io { op, path, source }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ObjectError> + Send + 'static,
) -> Result<T, ObjectError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ObjectError::Io {
            op: "run blocking task",
            path: PathBuf::new(),
            source: io::Error::other(e),
        })?
}
