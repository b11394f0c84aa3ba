//! Persistent device state: one JSON document per device in the state directory, replaced
//! atomically (write a temporary file, fsync, rename, fsync the directory), so a `kill -9` at
//! any moment leaves either the old or the new state, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Serialize, de::DeserializeOwned};

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system error.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file exists but is not valid state.
    #[error("state file {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_json::Error,
    },
}

/// A JSON state file.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The file `name` in `dir`; the directory is created (mode 0700 on Unix).
    pub fn new(dir: &Path, name: &str) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
        }
        Ok(StateFile {
            path: dir.join(name),
        })
    }

    /// Loads the state, or `None` when the file does not exist yet.
    pub fn load<T: DeserializeOwned>(&self) -> Result<Option<T>, StoreError> {
        match fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| StoreError::Corrupt {
                        path: self.path.clone(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the state durably.
    pub fn save<T: Serialize>(&self, value: &T) -> Result<(), StoreError> {
        let io = |source| StoreError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
            path: self.path.clone(),
            source,
        })?;
        let tmp = self.path.with_extension("tmp");
        {
            let mut options = fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut f = options.open(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &self.path).map_err(io)?;
        if let Some(Ok(d)) = self.path.parent().map(fs::File::open) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// The file path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::new(dir.path(), "x.json").unwrap();
        assert_eq!(f.load::<Vec<u32>>().unwrap(), None);
        f.save(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(f.load::<Vec<u32>>().unwrap(), Some(vec![1, 2, 3]));
        fs::write(f.path(), b"{not json").unwrap();
        assert!(matches!(
            f.load::<Vec<u32>>(),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
