//! The object store: packages, journals, screenshots and uploads, kept as whole objects under
//! string keys.
//!
//! [`ObjectStore`] has two backends behind one API:
//!
//! * **a local directory** (the embedded default, `objects.dir = "PATH"`), laid out so an
//!   operator can read it: the object `packages/atm-1.2.tar.gz` is the file
//!   `PATH/packages/atm-1.2.tar.gz`. See [`ObjectStore::dir`] for the layout and guarantees;
//! * **any S3 API** (`[objects.s3]`: MinIO, AWS, s3s-fs, …) through `rust-s3`, path-style by
//!   default.
//!
//! Keys are checked before any backend sees them ([`validate_key`]): ASCII letters, digits,
//! `-`, `_`, `.` and `/` as a separator, no empty segment, no segment starting with `.` (so
//! no `..`), at most [`MAX_KEY_LEN`] bytes. A key that passes is a safe relative path on every
//! file system and needs no escaping in a URL. Callers that store user-supplied file names keep
//! those names in the database and use their own ids as keys.
//!
//! What this module must never do: write outside its root directory, follow a symbolic link,
//! create an executable file, expose a half-written object, or panic on a key.

mod dir;
mod s3;

use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use serde::Deserialize;

/// The longest key accepted, in bytes (S3 allows 1024; half leaves room for prefixes).
pub const MAX_KEY_LEN: usize = 512;

/// The longest segment between two `/` accepted, in bytes (`NAME_MAX` of common file systems).
pub const MAX_SEGMENT_LEN: usize = 255;

/// The longest content type accepted, in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

/// The `[objects]` configuration section: a local directory or an S3 bucket, exactly one.
///
/// ```toml
/// [objects]
/// dir = ".state/backoffice/objects"
/// ```
///
/// or
///
/// ```toml
/// [objects.s3]
/// endpoint = "http://127.0.0.1:9000"
/// bucket = "openteller"
/// region = "us-east-1"          # optional, this is the default
/// access_key = "…"
/// secret_key = "…"
/// path_style = true             # optional, this is the default
/// ```
///
/// Unknown keys are refused, and so are both or neither of `dir` and `s3`: a layered
/// configuration must therefore not put a default `dir` under a file that sets `s3`; use
/// [`ObjectsConfig::default`] when the section is absent instead.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawObjectsConfig")]
pub enum ObjectsConfig {
    /// Objects are files under this directory (created if missing).
    Dir(PathBuf),
    /// Objects are in an S3 bucket.
    S3(S3Config),
}

impl Default for ObjectsConfig {
    /// The embedded default: `.state/backoffice/objects`, relative to the working directory.
    fn default() -> Self {
        Self::Dir(PathBuf::from(".state/backoffice/objects"))
    }
}

impl std::fmt::Debug for ObjectsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Dir(path) => f.debug_tuple("Dir").field(path).finish(),
            Self::S3(s3) => f.debug_tuple("S3").field(s3).finish(),
        }
    }
}

/// The shape of `[objects]` as written; [`ObjectsConfig`] is what it means.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawObjectsConfig {
    dir: Option<PathBuf>,
    s3: Option<S3Config>,
}

impl TryFrom<RawObjectsConfig> for ObjectsConfig {
    type Error = String;

    fn try_from(raw: RawObjectsConfig) -> Result<Self, Self::Error> {
        match (raw.dir, raw.s3) {
            (Some(dir), None) => Ok(Self::Dir(dir)),
            (None, Some(s3)) => Ok(Self::S3(s3)),
            (Some(_), Some(_)) => Err("objects: set either `dir` or `s3`, not both".to_owned()),
            (None, None) => {
                Err("objects: set `dir = \"PATH\"` or an `[objects.s3]` table".to_owned())
            }
        }
    }
}

/// `[objects.s3]`: where the bucket is and how to sign requests.
///
/// `Debug` shows everything but the secret key.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Base URL of the S3 API, `http://HOST:PORT` or `https://HOST`.
    pub endpoint: String,
    /// The bucket; created by [`ObjectStore::ensure_bucket`] when missing.
    pub bucket: String,
    /// The signing region (`us-east-1` when absent; most S3 servers other than AWS ignore it).
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id.
    pub access_key: String,
    /// The secret access key.
    pub secret_key: String,
    /// Path-style addressing (`ENDPOINT/BUCKET/KEY`, the default) rather than virtual-hosted
    /// (`BUCKET.ENDPOINT/KEY`, which needs wildcard DNS).
    #[serde(default = "default_path_style")]
    pub path_style: bool,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

fn default_path_style() -> bool {
    true
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .field("secret_key", &"<redacted>")
            .field("path_style", &self.path_style)
            .finish()
    }
}

/// What is known about a stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The object's key.
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// The content type given to [`ObjectStore::put`], when the backend reports it (S3 listings
    /// do not; `get` and `head` do on both backends).
    pub content_type: Option<String>,
    /// When it was last written, when the backend reports it.
    pub last_modified: Option<SystemTime>,
}

/// Why a key (or a listing prefix) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The key is empty.
    #[error("the key is empty")]
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`] bytes.
    #[error("the key is {len} bytes long; at most {max} are allowed", max = MAX_KEY_LEN)]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// A segment is longer than [`MAX_SEGMENT_LEN`] bytes.
    #[error("a key segment is {len} bytes long; at most {max} are allowed", max = MAX_SEGMENT_LEN)]
    SegmentTooLong {
        /// The segment's length in bytes.
        len: usize,
    },
    /// The key starts with `/` (keys are relative).
    #[error("the key starts with '/'")]
    LeadingSlash,
    /// The key ends with `/` (that names a folder, not an object).
    #[error("the key ends with '/'")]
    TrailingSlash,
    /// The key holds `//`.
    #[error("the key has an empty segment ('//')")]
    EmptySegment,
    /// A segment starts with `.`; this refuses `.` and `..` and keeps names the local
    /// directory backend reserves for itself.
    #[error("a key segment starts with '.'")]
    DotSegment,
    /// A character outside `A-Z a-z 0-9 - _ . /` (NUL and control characters included).
    #[error("character {ch:?} at byte {at} is not allowed; keys use A-Z a-z 0-9 - _ . /")]
    BadChar {
        /// The character refused.
        ch: char,
        /// Its byte offset in the key.
        at: usize,
    },
}

/// Errors of the object store.
///
/// [`InvalidKey`](Self::InvalidKey), [`InvalidContentType`](Self::InvalidContentType) and
/// [`Conflict`](Self::Conflict) are the caller's doing (HTTP 400 / 409); the others mean the
/// storage failed or is unreachable. The `Display` text does not repeat the source: log the
/// whole chain.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObjectError {
    /// The key (or listing prefix) is not acceptable.
    #[error("invalid object key {key:?}")]
    InvalidKey {
        /// The key as given, cut to 100 characters.
        key: String,
        /// What is wrong with it.
        #[source]
        reason: KeyError,
    },
    /// The content type is empty, too long or not printable ASCII.
    #[error("invalid content type {0:?}")]
    InvalidContentType(String),
    /// The local directory cannot hold the key: a parent of it is an object (`a` exists and
    /// `a/b` is written), it is a folder of other objects, or a symbolic link is in the way.
    /// S3 has no such limit.
    #[error("object key {key:?} cannot be stored: {reason}")]
    Conflict {
        /// The key.
        key: String,
        /// Why.
        reason: &'static str,
    },
    /// The configuration cannot work (bad endpoint URL, empty bucket name, …).
    #[error("invalid object store configuration: {0}")]
    Config(String),
    /// A file-system operation of the local directory backend failed.
    #[error("object store: {op} {path} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The S3 server answered with an error status.
    #[error("S3 {op} failed: HTTP {status} {code}")]
    S3Status {
        /// What was being done.
        op: &'static str,
        /// The HTTP status.
        status: u16,
        /// The S3 error code from the body (`NoSuchBucket`, `AccessDenied`, …), or empty.
        code: String,
    },
    /// The S3 request failed without an answer (connection, TLS, timeout, bad XML, …).
    #[error("S3 {op} failed")]
    S3 {
        /// What was being done.
        op: &'static str,
        /// The underlying client error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Checks a key against the rules in the [module documentation](self).
pub fn validate_key(key: &str) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong { len: key.len() });
    }
    if let Some((at, ch)) = key
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')))
    {
        return Err(KeyError::BadChar { ch, at });
    }
    if key.starts_with('/') {
        return Err(KeyError::LeadingSlash);
    }
    if key.ends_with('/') {
        return Err(KeyError::TrailingSlash);
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err(KeyError::EmptySegment);
        }
        if segment.starts_with('.') {
            return Err(KeyError::DotSegment);
        }
        if segment.len() > MAX_SEGMENT_LEN {
            return Err(KeyError::SegmentTooLong { len: segment.len() });
        }
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a valid key, or a valid key followed by `/`.
pub fn validate_prefix(prefix: &str) -> Result<(), KeyError> {
    if prefix.is_empty() {
        return Ok(());
    }
    validate_key(prefix.strip_suffix('/').unwrap_or(prefix))
}

fn check_key(key: &str) -> Result<(), ObjectError> {
    validate_key(key).map_err(|reason| invalid_key(key, reason))
}

fn check_prefix(prefix: &str) -> Result<(), ObjectError> {
    validate_prefix(prefix).map_err(|reason| invalid_key(prefix, reason))
}

fn invalid_key(key: &str, reason: KeyError) -> ObjectError {
    ObjectError::InvalidKey {
        key: key.chars().take(100).collect(),
        reason,
    }
}

fn check_content_type(content_type: &str) -> Result<(), ObjectError> {
    let printable = content_type.bytes().all(|b| (0x20..0x7f).contains(&b));
    if content_type.is_empty() || content_type.len() > MAX_CONTENT_TYPE_LEN || !printable {
        return Err(ObjectError::InvalidContentType(
            content_type.chars().take(100).collect(),
        ));
    }
    Ok(())
}

/// The object store; cheap to clone (clones share the backend).
///
/// Build it with [`ObjectStore::open`] from configuration, or [`ObjectStore::dir`] /
/// [`ObjectStore::s3`] directly.
#[derive(Clone)]
pub struct ObjectStore {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Dir(dir::DirStore),
    S3(s3::S3Store),
}

impl std::fmt::Debug for ObjectStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.backend {
            Backend::Dir(store) => f
                .debug_tuple("ObjectStore::Dir")
                .field(&store.root())
                .finish(),
            Backend::S3(store) => f
                .debug_struct("ObjectStore::S3")
                .field("endpoint", &store.endpoint())
                .field("bucket", &store.bucket_name())
                .finish(),
        }
    }
}

impl ObjectStore {
    /// Builds the store the configuration describes and makes it usable: creates the
    /// directory, or the bucket when missing ([`ensure_bucket`](Self::ensure_bucket)). Fails
    /// when the S3 server does not answer, so a bad configuration stops the process at start.
    pub async fn open(config: &ObjectsConfig) -> Result<Self, ObjectError> {
        let store = match config {
            ObjectsConfig::Dir(root) => Self::dir(root.clone()).await?,
            ObjectsConfig::S3(s3) => Self::s3(s3)?,
        };
        store.ensure_bucket().await?;
        Ok(store)
    }

    /// A store in a local directory, created (mode 0750) when missing.
    ///
    /// Layout under `root`:
    ///
    /// * `KEY` — the object's bytes, mode 0640 (never executable), replaced atomically: each
    ///   write goes to `.tmp/`, is flushed with `fsync`, then renamed over `KEY`, and the
    ///   folder is flushed too. Readers see the old object or the new one, never a mix.
    /// * `.meta/KEY` — a sidecar holding the content type as one line of text, written the
    ///   same way just after the object. A crash between the two leaves the previous content
    ///   type (or none) with the new bytes.
    /// * `.tmp/` — writes in flight; leftovers of crashed writers older than a day are
    ///   removed when a store is opened.
    ///
    /// Keys cannot name these (segments never start with `.`). A path with a symbolic link
    /// in it is never followed: reads treat it as absent, writes refuse it. One limit S3 does
    /// not have: an object cannot be stored under another (`a` and `a/b`); the second write
    /// gets [`ObjectError::Conflict`]. Several processes may share one directory.
    pub async fn dir(root: impl Into<PathBuf>) -> Result<Self, ObjectError> {
        let store = dir::DirStore::open(root.into()).await?;
        Ok(Self {
            backend: Backend::Dir(store),
        })
    }

    /// A store in an S3 bucket. Does no I/O: call [`ensure_bucket`](Self::ensure_bucket)
    /// (or use [`open`](Self::open)) before first use.
    pub fn s3(config: &S3Config) -> Result<Self, ObjectError> {
        Ok(Self {
            backend: Backend::S3(s3::S3Store::new(config)?),
        })
    }

    /// `"dir"` or `"s3"`, for logs and health reports.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Dir(_) => "dir",
            Backend::S3(_) => "s3",
        }
    }

    /// Makes sure the store can hold objects: creates the bucket when it does not exist (an
    /// existing bucket is left as is), or the directory's folders.
    pub async fn ensure_bucket(&self) -> Result<(), ObjectError> {
        match &self.backend {
            Backend::Dir(store) => store.ensure().await,
            Backend::S3(store) => store.ensure_bucket().await,
        }
    }

    /// Stores `bytes` under `key`, replacing any object there.
    pub async fn put(
        &self,
        key: &str,
        bytes: impl Into<Bytes>,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        check_key(key)?;
        check_content_type(content_type)?;
        let bytes = bytes.into();
        match &self.backend {
            Backend::Dir(store) => store.put(key, bytes, content_type).await,
            Backend::S3(store) => store.put(key, bytes, content_type).await,
        }
    }

    /// The object's bytes and metadata, or `None` when there is no object under `key`.
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, ObjectMeta)>, ObjectError> {
        check_key(key)?;
        match &self.backend {
            Backend::Dir(store) => store.get(key).await,
            Backend::S3(store) => store.get(key).await,
        }
    }

    /// The object's metadata, or `None` when there is no object under `key`.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, ObjectError> {
        check_key(key)?;
        match &self.backend {
            Backend::Dir(store) => store.head(key).await,
            Backend::S3(store) => store.head(key).await,
        }
    }

    /// Removes the object; removing a missing object succeeds.
    pub async fn delete(&self, key: &str) -> Result<(), ObjectError> {
        check_key(key)?;
        match &self.backend {
            Backend::Dir(store) => store.delete(key).await,
            Backend::S3(store) => store.delete(key).await,
        }
    }

    /// Every object whose key starts with `prefix` (a plain string prefix, as in S3: `jo`
    /// matches `journals/…` and `jobs/…`; `""` lists everything), sorted by key.
    ///
    /// Objects whose names are not valid keys (put there by other tools) are left out.
    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        check_prefix(prefix)?;
        let mut objects = match &self.backend {
            Backend::Dir(store) => store.list(prefix).await?,
            Backend::S3(store) => store.list(prefix).await?,
        };
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(objects)
    }

    /// Checks that the store answers: the directory exists and is writable, or the bucket
    /// can be listed.
    pub async fn ping(&self) -> Result<(), ObjectError> {
        match &self.backend {
            Backend::Dir(store) => store.ping().await,
            Backend::S3(store) => store.ping().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        for good in [
            "a",
            "packages/atm-1.2.tar.gz",
            "j/2024/01/02/x_y",
            "a.b",
            "a..b",
        ] {
            assert_eq!(validate_key(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_KEY_LEN + 1);
        let long_segment = format!("a/{}", "b".repeat(MAX_SEGMENT_LEN + 1));
        let cases: &[(&str, KeyError)] = &[
            ("", KeyError::Empty),
            (
                &long,
                KeyError::TooLong {
                    len: MAX_KEY_LEN + 1,
                },
            ),
            (
                &long_segment,
                KeyError::SegmentTooLong {
                    len: MAX_SEGMENT_LEN + 1,
                },
            ),
            ("/a", KeyError::LeadingSlash),
            ("a/", KeyError::TrailingSlash),
            ("a//b", KeyError::EmptySegment),
            ("..", KeyError::DotSegment),
            ("a/../b", KeyError::DotSegment),
            ("./a", KeyError::DotSegment),
            (".meta/a", KeyError::DotSegment),
            ("a\0b", KeyError::BadChar { ch: '\0', at: 1 }),
            ("a b", KeyError::BadChar { ch: ' ', at: 1 }),
            ("a\\b", KeyError::BadChar { ch: '\\', at: 1 }),
            ("é", KeyError::BadChar { ch: 'é', at: 0 }),
        ];
        for (key, want) in cases {
            assert_eq!(validate_key(key).as_ref(), Err(want), "{key:?}");
        }
    }

    #[test]
    fn prefixes() {
        for good in ["", "a", "a/", "a/b", "a/b/", "a/b."] {
            assert_eq!(validate_prefix(good), Ok(()), "{good}");
        }
        for bad in ["/", "/a", "a//", "../", "a/./", "a b"] {
            assert!(validate_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn content_types() {
        assert!(check_content_type("application/json; charset=utf-8").is_ok());
        assert!(check_content_type("").is_err());
        assert!(check_content_type("text/plain\r\nX-Evil: 1").is_err());
        assert!(check_content_type(&"a".repeat(MAX_CONTENT_TYPE_LEN + 1)).is_err());
    }

    #[test]
    fn config_shapes() {
        #[derive(Deserialize)]
        #[allow(dead_code)]
        struct File {
            objects: ObjectsConfig,
        }
        let dir: File = toml::from_str("[objects]\ndir = \"/srv/objects\"\n").expect("dir");
        assert_eq!(dir.objects, ObjectsConfig::Dir("/srv/objects".into()));

        let s3: File = toml::from_str(
            "[objects.s3]\nendpoint = \"http://127.0.0.1:9000\"\nbucket = \"b\"\n\
             access_key = \"ak\"\nsecret_key = \"sk\"\n",
        )
        .expect("s3");
        let ObjectsConfig::S3(s3) = s3.objects else {
            panic!("not s3: {:?}", s3.objects)
        };
        assert_eq!(s3.region, "us-east-1");
        assert!(s3.path_style);
        assert!(
            !format!("{s3:?}").contains("sk\""),
            "secret in Debug: {s3:?}"
        );

        for bad in [
            "[objects]\n",
            "[objects]\ndir = \"a\"\n[objects.s3]\nendpoint = \"http://x\"\nbucket = \"b\"\naccess_key = \"a\"\nsecret_key = \"s\"\n",
            "[objects]\ndir = \"a\"\nfoo = 1\n",
            "[objects.s3]\nendpoint = \"http://x\"\nbucket = \"b\"\naccess_key = \"a\"\nsecret_key = \"s\"\nacl = \"public\"\n",
        ] {
            assert!(toml::from_str::<File>(bad).is_err(), "accepted: {bad}");
        }
    }
}
