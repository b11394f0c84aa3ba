//! One object-store suite, run against the local directory and a real S3 server (s3s-fs).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime};

use openteller_backoffice_storage::objects::{KeyError, MAX_KEY_LEN};
use openteller_backoffice_storage::{ObjectError, ObjectStore, ObjectsConfig, S3Config};

use crate::helpers::{S3_ACCESS_KEY, S3_SECRET_KEY, spawn_s3s_fs};

/// Deterministic bytes that compress badly (xorshift).
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn assert_recent(time: Option<SystemTime>) {
    let time = time.expect("last_modified is reported");
    let age = SystemTime::now()
        .duration_since(time)
        .unwrap_or_else(|e| e.duration()); // clocks may differ by a little
    assert!(
        age < Duration::from_secs(120),
        "last_modified {age:?} away from now"
    );
}

fn assert_invalid_key<T: std::fmt::Debug>(result: Result<T, ObjectError>, key: &str) {
    match result {
        Err(ObjectError::InvalidKey { .. }) => {}
        other => panic!("key {key:?}: expected InvalidKey, got {other:?}"),
    }
}

/// The suite every backend must pass. The store must be empty.
async fn suite(store: &ObjectStore) {
    store.ping().await.expect("ping");
    assert_eq!(store.list("").await.expect("list empty"), vec![]);

    // Round trip: put, get, head, list, delete.
    store
        .put(
            "packages/atm-1.2.tar.gz",
            b"hello".as_slice(),
            "application/gzip",
        )
        .await
        .expect("put");
    let (bytes, meta) = store
        .get("packages/atm-1.2.tar.gz")
        .await
        .expect("get")
        .expect("the object is there");
    assert_eq!(&bytes[..], b"hello");
    assert_eq!(meta.key, "packages/atm-1.2.tar.gz");
    assert_eq!(meta.size, 5);
    assert_eq!(meta.content_type.as_deref(), Some("application/gzip"));
    assert_recent(meta.last_modified);
    let head = store
        .head("packages/atm-1.2.tar.gz")
        .await
        .expect("head")
        .expect("head finds it");
    assert_eq!(head.key, meta.key);
    assert_eq!(head.size, 5);
    assert_eq!(head.content_type.as_deref(), Some("application/gzip"));
    assert_recent(head.last_modified);
    let listed = store.list("").await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, "packages/atm-1.2.tar.gz");
    assert_eq!(listed[0].size, 5);
    assert_recent(listed[0].last_modified);

    // Overwrite: new bytes, new size, new content type.
    store
        .put(
            "packages/atm-1.2.tar.gz",
            b"hello, again".to_vec(),
            "application/octet-stream",
        )
        .await
        .expect("overwrite");
    let (bytes, meta) = store
        .get("packages/atm-1.2.tar.gz")
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(&bytes[..], b"hello, again");
    assert_eq!(meta.size, 12);
    assert_eq!(
        meta.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(store.list("").await.expect("list").len(), 1);

    // Delete, and delete again (idempotent).
    store
        .delete("packages/atm-1.2.tar.gz")
        .await
        .expect("delete");
    assert!(
        store
            .get("packages/atm-1.2.tar.gz")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .head("packages/atm-1.2.tar.gz")
            .await
            .expect("head")
            .is_none()
    );
    store
        .delete("packages/atm-1.2.tar.gz")
        .await
        .expect("delete twice");
    assert_eq!(store.list("").await.expect("list"), vec![]);

    // Missing keys.
    assert!(
        store
            .get("never/written")
            .await
            .expect("get missing")
            .is_none()
    );
    assert!(
        store
            .head("never/written")
            .await
            .expect("head missing")
            .is_none()
    );
    store.delete("never/written").await.expect("delete missing");

    // Binary content: every byte value, NUL and invalid UTF-8 included.
    let binary: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    store
        .put("journals/bin", binary.clone(), "application/octet-stream")
        .await
        .expect("put binary");
    let (bytes, meta) = store
        .get("journals/bin")
        .await
        .expect("get")
        .expect("binary");
    assert_eq!(&bytes[..], &binary[..]);
    assert_eq!(meta.size, 512);
    // An empty object is an object.
    store
        .put("journals/empty", Vec::new(), "text/plain")
        .await
        .expect("put empty");
    let (bytes, meta) = store
        .get("journals/empty")
        .await
        .expect("get")
        .expect("empty");
    assert!(bytes.is_empty());
    assert_eq!(meta.size, 0);

    // Large-ish: 5 MiB.
    let large = noise(5 * 1024 * 1024 + 7, 42);
    store
        .put(
            "uploads/large.bin",
            large.clone(),
            "application/octet-stream",
        )
        .await
        .expect("put large");
    let (bytes, meta) = store
        .get("uploads/large.bin")
        .await
        .expect("get")
        .expect("large");
    assert_eq!(bytes.len(), large.len());
    assert!(bytes[..] == large[..], "large object differs");
    assert_eq!(meta.size, large.len() as u64);
    let head = store
        .head("uploads/large.bin")
        .await
        .expect("head")
        .expect("large");
    assert_eq!(head.size, large.len() as u64);

    // Bad keys are refused by every operation, before any I/O.
    let long = "a".repeat(MAX_KEY_LEN + 1);
    for key in [
        "",
        "/etc/passwd",
        "../escape",
        "a/../../b",
        "a//b",
        "a/",
        ".",
        "..",
        ".hidden",
        "a\0b",
        "a b",
        "a\\b",
        "a?b",
        "naïve",
        "a\nb",
        &long,
    ] {
        assert_invalid_key(store.put(key, b"x".as_slice(), "text/plain").await, key);
        assert_invalid_key(store.get(key).await, key);
        assert_invalid_key(store.head(key).await, key);
        assert_invalid_key(store.delete(key).await, key);
    }
    for prefix in ["/", "../", "a//", "a b"] {
        assert_invalid_key(store.list(prefix).await, prefix);
    }
    match store.put("ok", b"x".as_slice(), "").await {
        Err(ObjectError::InvalidContentType(_)) => {}
        other => panic!("empty content type: {other:?}"),
    }
    match store
        .put("ok", b"x".as_slice(), "text/plain\r\nX-Injected: 1")
        .await
    {
        Err(ObjectError::InvalidContentType(_)) => {}
        other => panic!("header injection: {other:?}"),
    }
    assert!(
        store.get("ok").await.expect("get").is_none(),
        "a refused put wrote"
    );
    match store.get("a/../b").await {
        Err(ObjectError::InvalidKey { reason, .. }) => assert_eq!(reason, KeyError::DotSegment),
        other => panic!("{other:?}"),
    }

    // List by prefix: a plain string prefix, sorted by key.
    for (key, len) in [
        ("journals/2024/02/t2", 2),
        ("journals/2024/01/t1", 1),
        ("journals-old/x", 3),
        ("packages/p", 4),
    ] {
        store
            .put(key, vec![b'x'; len], "text/plain")
            .await
            .expect("put for listing");
    }
    let keys = |list: Vec<openteller_backoffice_storage::ObjectMeta>| {
        list.into_iter()
            .map(|m| (m.key, m.size))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(store.list("journals/2024/").await.expect("list")),
        [
            ("journals/2024/01/t1".to_owned(), 1),
            ("journals/2024/02/t2".to_owned(), 2)
        ]
    );
    assert_eq!(
        keys(store.list("journals/2024/0").await.expect("list")).len(),
        2,
        "a prefix may end inside a segment"
    );
    assert_eq!(
        keys(store.list("journals").await.expect("list")),
        [
            ("journals-old/x".to_owned(), 3),
            ("journals/2024/01/t1".to_owned(), 1),
            ("journals/2024/02/t2".to_owned(), 2),
            ("journals/bin".to_owned(), 512),
            ("journals/empty".to_owned(), 0),
        ]
    );
    assert_eq!(
        keys(store.list("journals/2024/01/t1").await.expect("list")).len(),
        1
    );
    assert_eq!(store.list("zzz").await.expect("list"), vec![]);
    assert_eq!(store.list("packages/p/").await.expect("list"), vec![]);
    let all = keys(store.list("").await.expect("list all"));
    assert_eq!(
        all.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        [
            "journals-old/x",
            "journals/2024/01/t1",
            "journals/2024/02/t2",
            "journals/bin",
            "journals/empty",
            "packages/p",
            "uploads/large.bin",
        ]
    );

    // Clean up through the API: the store ends empty.
    for (key, _) in all {
        store.delete(&key).await.expect("delete");
    }
    assert_eq!(store.list("").await.expect("list"), vec![]);
    store.ping().await.expect("ping at the end");
}

#[tokio::test]
async fn objects_dir() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = ObjectStore::open(&ObjectsConfig::Dir(dir.path().join("objects")))
        .await
        .expect("open dir store");
    assert_eq!(store.backend_name(), "dir");
    suite(&store).await;
}

#[tokio::test]
async fn objects_s3() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("s3");
    std::fs::create_dir(&root).expect("s3s-fs root");
    let server = spawn_s3s_fs(&root);
    let config = S3Config {
        endpoint: format!("http://127.0.0.1:{}", server.port),
        bucket: "openteller-test".to_owned(),
        region: "us-east-1".to_owned(),
        access_key: S3_ACCESS_KEY.to_owned(),
        secret_key: S3_SECRET_KEY.to_owned(),
        path_style: true,
    };
    // open() creates the missing bucket; a second ensure_bucket finds it.
    let store = ObjectStore::open(&ObjectsConfig::S3(config.clone()))
        .await
        .expect("open S3 store (creates the bucket)");
    assert_eq!(store.backend_name(), "s3");
    assert!(
        root.join("openteller-test").is_dir(),
        "bucket created on the server"
    );
    store
        .ensure_bucket()
        .await
        .expect("ensure_bucket is idempotent");

    suite(&store).await;

    // Wrong credentials are an S3 error, not a missing object.
    let wrong = ObjectStore::s3(&S3Config {
        secret_key: "wrong".to_owned(),
        ..config
    })
    .expect("build");
    match wrong.get("anything").await {
        Err(ObjectError::S3Status { status, .. }) => {
            assert!(status == 403 || status == 401, "{status}")
        }
        other => panic!("wrong secret: {other:?}"),
    }
    drop(server);
    // A server that is gone is an error too.
    assert!(
        store.ping().await.is_err(),
        "ping succeeds with the server stopped"
    );
}

/// What only the directory backend promises: file modes, atomic writes, no symbolic links
/// followed, the layout on disk.
#[tokio::test]
async fn dir_backend_on_disk() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().join("objects");
    let store = ObjectStore::dir(&root).await.expect("open");

    store
        .put("packages/a.bin", b"data".as_slice(), "application/x-thing")
        .await
        .expect("put");
    let file = root.join("packages/a.bin");
    assert_eq!(std::fs::read(&file).expect("readable layout"), b"data");
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
    assert_eq!(mode & 0o111, 0, "executable object file: {mode:o}");
    assert_eq!(mode & 0o007, 0, "world-accessible object file: {mode:o}");
    assert_eq!(
        std::fs::read_to_string(root.join(".meta/packages/a.bin")).expect("sidecar"),
        "application/x-thing"
    );
    assert_eq!(
        std::fs::read_dir(root.join(".tmp")).expect("tmp").count(),
        0,
        "temporary files left behind"
    );

    // An object cannot sit under another in a directory.
    match store
        .put("packages/a.bin/inner", b"x".as_slice(), "text/plain")
        .await
    {
        Err(ObjectError::Conflict { .. }) => {}
        other => panic!("object under an object: {other:?}"),
    }
    match store.put("packages", b"x".as_slice(), "text/plain").await {
        Err(ObjectError::Conflict { .. }) => {}
        other => panic!("object over a folder: {other:?}"),
    }
    // Once the objects below are gone, the name is free again.
    store.delete("packages/a.bin").await.expect("delete");
    assert!(!root.join("packages").exists(), "empty folder left");
    store
        .put("packages", b"now a file".as_slice(), "text/plain")
        .await
        .expect("put");

    // Symbolic links are not followed, reading or writing.
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).expect("outside dir");
    std::fs::write(outside.join("secret"), b"secret").expect("outside file");
    std::os::unix::fs::symlink(&outside, root.join("link")).expect("symlink dir");
    std::os::unix::fs::symlink(outside.join("secret"), root.join("secret")).expect("symlink file");
    assert!(store.get("link/secret").await.expect("get").is_none());
    assert!(store.head("link/secret").await.expect("head").is_none());
    assert!(store.get("secret").await.expect("get").is_none());
    match store.put("link/new", b"x".as_slice(), "text/plain").await {
        Err(ObjectError::Conflict { .. }) => {}
        other => panic!("write through a symlink: {other:?}"),
    }
    assert!(!outside.join("new").exists(), "wrote outside the root");
    store
        .delete("link/secret")
        .await
        .expect("delete through link is a no-op");
    assert!(outside.join("secret").exists(), "deleted outside the root");
    let listed: Vec<String> = store
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["packages"], "symbolic links listed");
    // Writing over a symlinked object replaces the link, not its target.
    store
        .put("secret", b"mine".as_slice(), "text/plain")
        .await
        .expect("put over link");
    assert_eq!(
        std::fs::read(outside.join("secret")).expect("outside"),
        b"secret"
    );
    assert_eq!(
        &store.get("secret").await.expect("get").expect("mine").0[..],
        b"mine"
    );

    // Foreign files with names that are not keys are not listed.
    std::fs::write(root.join("bad name"), b"x").expect("foreign file");
    let listed: Vec<String> = store
        .list("")
        .await
        .expect("list")
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, ["packages", "secret"]);

    // Readers never see a partial object while writers replace it.
    let big_a = vec![b'a'; 2 * 1024 * 1024];
    let big_b = vec![b'b'; 3 * 1024 * 1024];
    store
        .put("race", big_a.clone(), "text/plain")
        .await
        .expect("put");
    let writer = {
        let store = store.clone();
        let (a, b) = (big_a.clone(), big_b.clone());
        tokio::spawn(async move {
            for i in 0..20 {
                let bytes = if i % 2 == 0 { b.clone() } else { a.clone() };
                store
                    .put("race", bytes, "text/plain")
                    .await
                    .expect("put in race");
            }
        })
    };
    let mut reads = 0;
    while !writer.is_finished() {
        let (bytes, _) = store.get("race").await.expect("get").expect("always there");
        assert!(
            bytes[..] == big_a[..] || bytes[..] == big_b[..],
            "a torn read of {} bytes",
            bytes.len()
        );
        reads += 1;
    }
    writer.await.expect("writer");
    assert!(reads > 0);

    // Config: a store reopened on the same directory sees the objects.
    let again = ObjectStore::open(&ObjectsConfig::Dir(root.clone()))
        .await
        .expect("reopen");
    assert!(again.head("packages").await.expect("head").is_some());
}
