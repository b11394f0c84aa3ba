//! The library's in-process host (`HostSim::spawn`), as the engine's tests would use it.

use std::path::Path;

use openteller_host_sim::client::{HostClient, Terminal};
use openteller_host_sim::{Config, HostSim};

#[tokio::test]
async fn spawn_serve_and_stop_flushes_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml_str(
        r#"
listen = "127.0.0.1:0"
control = "127.0.0.1:0"
journal = "j.jsonl"
[keys]
zpk = "0123456789ABCDEFFEDCBA9876543210"
zak = "89ABCDEF0123456776543210FEDCBA98"
[[account]]
pan = "6222020200112233445"
pin = "1234"
balance = 100000000
"#,
        dir.path(),
    )
    .unwrap();
    let host = HostSim::spawn(config.clone()).await.unwrap();
    let mut client = HostClient::connect(host.addr()).await.unwrap();
    let mut atm = Terminal::new("ATM00001", "OPENTELLER00001", config.keys.clone());
    for _ in 0..20 {
        let mut req = atm.withdrawal("6222020200112233445", "1234", 100);
        let resp = client.call(&atm.seal(&mut req).unwrap()).await.unwrap();
        assert_eq!(resp.text(39), Some("00"));
    }
    let health: serde_json::Value = reqwest::get(format!("http://{}/healthz", host.control_addr()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["connections"], 1);
    host.stop().await.unwrap();
    // Stopped: the connection is closed and the journal holds every withdrawal.
    assert!(client.recv().await.map(|m| m.is_none()).unwrap_or(true));
    let journal = std::fs::read_to_string(Path::new(dir.path()).join("j.jsonl")).unwrap();
    assert_eq!(journal.lines().count(), 20);
}
