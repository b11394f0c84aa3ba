//! Real servers for the suites: an `s3s-fs` process per test, the machine's Redis, and a
//! private `redis-server` for the reconnection test.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A prefix no other run uses, so runs against one Redis never see each other's keys.
pub(crate) fn unique_prefix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("openteller-test:{}-{nanos}:", std::process::id())
}

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A child process killed (and reaped) on drop, so a failing test leaves no server behind.
pub(crate) struct Server {
    child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn spawn(program: &Path, args: &[String], port: u16, log: PathBuf) -> Self {
        let stderr = std::fs::File::create(&log).expect("server log file");
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stderr.try_clone().map_or(Stdio::null(), Stdio::from))
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let mut server = Self { child, port, log };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "server exited ({status}) before listening on {addr}; its log:\n{}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server does not listen on {addr} after 15 s");
    }
}

/// `$OPENTELLER_S3S_FS`, else `s3s-fs` on PATH, else `$CARGO_HOME/bin/s3s-fs` (`~/.cargo`).
fn s3s_fs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("OPENTELLER_S3S_FS") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "OPENTELLER_S3S_FS={} is not a file. {INSTALL_S3S_FS}",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("s3s-fs"))
            .find(|candidate| candidate.is_file())
    });
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")));
    let in_cargo = cargo_home
        .map(|dir| dir.join("bin/s3s-fs"))
        .filter(|candidate| candidate.is_file());
    on_path.or(in_cargo).unwrap_or_else(|| {
        panic!(
            "the S3 suite needs the s3s-fs binary and found none (checked $OPENTELLER_S3S_FS, \
             PATH and ~/.cargo/bin). {INSTALL_S3S_FS}"
        )
    })
}

const INSTALL_S3S_FS: &str = "Install it with: bash -c '. deploy/local/lib.sh && ensure_s3s_fs' \
     (or: cargo install s3s-fs@0.14.1 --locked --features binary), or set OPENTELLER_S3S_FS \
     to its path";

pub(crate) const S3_ACCESS_KEY: &str = "openteller-test";
pub(crate) const S3_SECRET_KEY: &str = "openteller-test-secret";

/// An s3s-fs serving `root` on a free port, with the test credentials.
pub(crate) fn spawn_s3s_fs(root: &Path) -> Server {
    let port = free_port();
    let args = [
        "--host".to_owned(),
        "127.0.0.1".to_owned(),
        "--port".to_owned(),
        port.to_string(),
        "--access-key".to_owned(),
        S3_ACCESS_KEY.to_owned(),
        "--secret-key".to_owned(),
        S3_SECRET_KEY.to_owned(),
        root.display().to_string(),
    ];
    let log = root.with_extension("log");
    Server::spawn(&s3s_fs_binary(), &args, port, log)
}

/// A throw-away `redis-server` on `port` (no persistence), for tests that kill Redis.
pub(crate) fn spawn_redis_server(port: u16, log: PathBuf) -> Server {
    let program = std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("redis-server"))
                .find(|candidate| candidate.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "redis-server is not installed; run: bash -c '. deploy/local/lib.sh && ensure_redis'"
            )
        });
    let args = [
        "--port".to_owned(),
        port.to_string(),
        "--bind".to_owned(),
        "127.0.0.1".to_owned(),
        "--save".to_owned(),
        String::new(),
        "--appendonly".to_owned(),
        "no".to_owned(),
    ];
    Server::spawn(&program, &args, port, log)
}

/// The shared Redis: `$OPENTELLER_TEST_REDIS` or `redis://127.0.0.1:6379/`.
pub(crate) fn redis_url() -> String {
    std::env::var("OPENTELLER_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned())
}

pub(crate) fn redis_unavailable(url: &str, error: &dyn std::fmt::Display) -> ! {
    panic!(
        "the cache/bus suite needs Redis at {url} ({error}). Start it with: \
         bash -c '. deploy/local/lib.sh && ensure_redis', or point OPENTELLER_TEST_REDIS at one"
    )
}
