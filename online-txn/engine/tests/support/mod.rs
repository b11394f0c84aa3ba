//! Process helpers shared by the engine's integration tests: spawn the real `online-txn` and
//! `host-sim` binaries, read their `... listening: name=ADDR` line, kill them on drop.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A child process killed (and reaped) when dropped, also when a test fails.
pub(crate) struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `host-sim` binary of this workspace, built from the current sources once per test
/// process (see [`private_bins`]).
pub(crate) fn host_sim_bin() -> PathBuf {
    private_bins().1.clone()
}

/// The `online-txn` binary under test (see [`private_bins`]).
pub(crate) fn engine_bin() -> PathBuf {
    private_bins().0.clone()
}

/// (`online-txn`, `host-sim`), built from the current sources once per test process and
/// hard-linked to paths of this process: the shared target directory may be rewritten by
/// builds of other checkouts while the tests run, and a link keeps the build it was made of.
/// Links of earlier runs (over an hour old) are removed.
fn private_bins() -> &'static (PathBuf, PathBuf) {
    static BINS: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    BINS.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_BIN_EXE_online-txn"))
            .parent()
            .unwrap()
            .to_owned();
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "-p",
                "openteller-host-sim",
                "--bin",
                "host-sim",
                "-p",
                "openteller-online-txn",
                "--bin",
                "online-txn",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success());
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let old = (name.starts_with("online-txn-test-") || name.starts_with("host-sim-test-"))
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t.elapsed().is_ok_and(|e| e.as_secs() > 3600));
            if old {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let link = |name: &str| {
            let private = dir.join(format!("{name}-test-{}", std::process::id()));
            let _ = std::fs::remove_file(&private);
            std::fs::hard_link(dir.join(name), &private)
                .or_else(|_| std::fs::copy(dir.join(name), &private).map(|_| ()))
                .unwrap();
            private
        };
        (link("online-txn"), link("host-sim"))
    })
}

/// Spawns a server and reads its `... listening: name=ADDR ...` line; stderr goes to `log`.
pub(crate) fn spawn(mut cmd: Command, log: &Path) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .env("RUST_LOG", "info")
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        !line.is_empty(),
        "server did not start: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    (Proc(child), line)
}

/// The value after `key` in a listening line (`terminals=`, `control=`, ...).
pub(crate) fn word<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or_else(|| panic!("{key} in {line}"))
}

/// host-sim's control API: an account's available balance.
pub(crate) async fn available(http: &reqwest::Client, control: &str, pan: &str) -> i64 {
    let v: serde_json::Value = http
        .get(format!("{control}/state/accounts/{pan}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["available"].as_i64().unwrap_or_else(|| panic!("{v}"))
}

/// host-sim's control API: sets faults.
pub(crate) async fn set_faults(http: &reqwest::Client, control: &str, body: serde_json::Value) {
    let r = http
        .post(format!("{control}/faults"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

/// host-sim's control API: clears faults.
pub(crate) async fn clear_faults(http: &reqwest::Client, control: &str) {
    http.delete(format!("{control}/faults"))
        .send()
        .await
        .unwrap();
}

/// Signs terminal T0000001 on at the engine (0800, F60.3 = 003), checks the working keys' check
/// values, and returns a client holding the new TPK and TAK.
pub(crate) async fn sign_on(
    engine: std::net::SocketAddr,
    tmk_hex: &str,
) -> (
    openteller_host_sim::client::HostClient,
    openteller_host_sim::client::Terminal,
) {
    use openteller_codec::{FieldValue, Message, Subfield};
    use openteller_crypto::{self as crypto, Algorithm, Key};
    use openteller_host_sim::HostKeys;
    use openteller_host_sim::client::{HostClient, Terminal};

    let mut client = HostClient::connect(engine).await.unwrap();
    let spec = client.spec().clone();
    let req = Message::new("0800")
        .with_tpdu(vec![0x60, 0, 0x01, 0, 0])
        .with_header(vec![0x60, 0x31, 0, 0, 0, 0])
        .with(11, "000001")
        .with(41, "T0000001")
        .with(42, "OPENTELLER00001")
        .with(
            60,
            FieldValue::Subfields(vec![
                Subfield::new("1", "00"),
                Subfield::new("2", "000001"),
                Subfield::new("3", "003"),
            ]),
        );
    let answer = client.call(&spec.encode(&req).unwrap()).await.unwrap();
    assert_eq!(answer.mti, "0810");
    assert_eq!(answer.get(39).and_then(FieldValue::as_text), Some("00"));
    let f62 = answer
        .get(62)
        .and_then(FieldValue::as_bytes)
        .expect("working keys")
        .to_vec();
    assert_eq!(f62.len(), 38);
    let tmk = Key::from_hex(Algorithm::Tdes, tmk_hex).unwrap();
    let unwrap = |wrapped: &[u8], kcv: &[u8]| {
        let clear = crypto::ecb_decrypt(&tmk, wrapped).unwrap();
        assert_eq!(
            crypto::kcv(&Key::new(Algorithm::Tdes, &clear).unwrap()).as_slice(),
            kcv,
            "check value"
        );
        hex::encode_upper(clear)
    };
    let tpk = unwrap(&f62[..16], &f62[16..19]);
    let tak = unwrap(&f62[19..35], &f62[35..38]);
    let keys = HostKeys::from_hex("tdes", &tpk, &tak, None, None).unwrap();
    (
        client,
        Terminal::new("T0000001", "OPENTELLER00001", keys).with_stan(100),
    )
}

/// The master key every test engine seals its keys under.
pub const MASTER: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
/// Terminal T0000001's master key.
pub const TMK: &str = "0123456789ABCDEFFEDCBA9876543210";
/// The host's PIN key (host-sim and the engine's `host/ZPK`).
pub const ZPK: &str = "11111111111111112222222222222222";
/// The host's MAC key.
pub const ZAK: &str = "33333333333333334444444444444444";
/// Test accounts at host-sim.
pub const ZHANG: &str = "6222020200112233445";
/// See [`ZHANG`].
pub const LI: &str = "6222020200198765432";

/// A running host-sim: the process, its control URL and its 8583 address.
pub struct HostSim {
    /// Killed on drop.
    pub proc: Proc,
    /// `http://127.0.0.1:PORT`.
    pub control: String,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its `host-sim listening: ...` line (format listeners as `NAME=ADDR`).
    pub line: String,
}

/// Starts host-sim in `dir` with the accounts ZHANG (1,000,000.00) and LI (500,000.00), PIN
/// 1234, under [`ZPK`] / [`ZAK`].
pub fn start_host_sim(dir: &Path) -> HostSim {
    start_host_sim_with(dir, "")
}

/// [`start_host_sim`] with `extra` appended to its configuration's top level (e.g.
/// `[[listeners]]`).
pub fn start_host_sim_with(dir: &Path, extra: &str) -> HostSim {
    let accounts = format!(
        "[[account]]\npan = \"{ZHANG}\"\npin = \"1234\"\nbalance = 100000000\n\n[[account]]\npan = \"{LI}\"\npin = \"1234\"\nbalance = 50000000\n"
    );
    std::fs::write(dir.join("accounts.toml"), accounts).unwrap();
    let config = dir.join("host-sim.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:0\"\ncontrol = \"127.0.0.1:0\"\naccounts = \"accounts.toml\"\n{extra}\n[keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n"),
    )
    .unwrap();
    let mut cmd = Command::new(host_sim_bin());
    cmd.args(["serve", "--config"]).arg(&config);
    let (proc, line) = spawn(cmd, &dir.join("host.log"));
    let control = word(&line, "control=").to_owned();
    let addr = word(&line, "iso8583=").to_owned();
    HostSim {
        proc,
        control,
        addr,
        line,
    }
}

/// Imports a clear key into the engine's key store with `online-txn keys import`.
pub fn import_key(config: &Path, name: &str, usage: &str, hex: &str, env: &[(&str, &str)]) {
    let out = Command::new(engine_bin())
        .args(["keys", "--config"])
        .arg(config)
        .args(["import", "--name", name, "--usage", usage, "--hex", hex])
        .env("OPENTELLER_MASTER_KEY", MASTER)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A database of its own on the test PostgreSQL server (`OPENTELLER_TEST_POSTGRES`, default
/// `postgres://postgres@127.0.0.1:5432/postgres`), dropped by [`FreshPostgres::drop_db`].
pub struct FreshPostgres {
    /// URL of the new database.
    pub url: String,
    name: String,
    admin: sqlx::AnyConnection,
}

impl FreshPostgres {
    /// Creates (or re-creates) the database `<prefix>_<pid>`.
    pub async fn create(prefix: &str) -> FreshPostgres {
        let admin_url = std::env::var("OPENTELLER_TEST_POSTGRES")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        sqlx::any::install_default_drivers();
        let name = format!("{prefix}_{}", std::process::id());
        let mut admin = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin_url)
            .await
            .expect("PostgreSQL must run for this test (deploy/local/test.sh starts it)");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
        FreshPostgres { url, name, admin }
    }

    /// Drops the database (closing its connections).
    pub async fn drop_db(mut self) {
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&mut self.admin)
        .await
        .unwrap();
    }
}
