//! The `host-sim` command line: exit codes, config errors, control subcommands.

mod common;

use std::process::{Command, Output};

use common::*;

fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("HOST_SIM_CONTROL")
        .output()
        .unwrap()
}

fn code_of(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    assert_eq!(code_of(&run(&[])), 64);
    assert_eq!(code_of(&run(&["bogus"])), 64);
    assert_eq!(code_of(&run(&["serve"])), 64);
    assert_eq!(code_of(&run(&["faults", "set", "--drop-rate", "x"])), 64);
    assert_eq!(code_of(&run(&["--help"])), 0);
    assert_eq!(code_of(&run(&["--version"])), 0);
    // `faults set` with nothing to set.
    assert_eq!(
        code_of(&run(&["faults", "set", "--control", "http://127.0.0.1:9"])),
        64
    );
}

#[test]
fn bad_configuration_exits_78_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    // Something listens on the configured port: if host-sim tried to bind first, it would
    // fail with 69, not 78.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    for (name, body) in [
        (
            "bad-key.toml",
            format!("listen = \"127.0.0.1:{port}\"\n[keys]\nzpk = \"00\"\nzak = \"{ZAK}\"\n"),
        ),
        (
            "bad-field.toml",
            format!(
                "listen = \"127.0.0.1:{port}\"\nfoo = 1\n[keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n"
            ),
        ),
        (
            "bad-accounts.toml",
            format!(
                "listen = \"127.0.0.1:{port}\"\naccounts = \"missing.toml\"\n[keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n"
            ),
        ),
        (
            "bad-faults.toml",
            format!(
                "listen = \"127.0.0.1:{port}\"\n[keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n[faults]\ndrop_rate = 7\n"
            ),
        ),
        ("not-toml.toml", "[[[".to_owned()),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        let o = run(&["serve", "--config", path.to_str().unwrap()]);
        assert_eq!(
            code_of(&o),
            78,
            "{name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stderr).contains("bad configuration"));
    }
    let o = run(&["serve", "--config", "/nonexistent/host-sim.toml"]);
    assert_eq!(code_of(&o), 78);
    // A good config on a taken port: 69.
    let path = dir.path().join("taken.toml");
    std::fs::write(
        &path,
        format!("listen = \"127.0.0.1:{port}\"\ncontrol = \"127.0.0.1:0\"\n[keys]\nzpk = \"{ZPK}\"\nzak = \"{ZAK}\"\n"),
    )
    .unwrap();
    assert_eq!(
        code_of(&run(&["serve", "--config", path.to_str().unwrap()])),
        69
    );
    drop(taken);
}

#[test]
fn shipped_config_is_valid() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/host-sim.toml");
    let cfg = openteller_host_sim::Config::load(std::path::Path::new(config)).unwrap();
    assert!(cfg.accounts.iter().any(|a| a.pan == ZHANG));
}

#[test]
fn control_subcommands_talk_to_a_running_host() {
    let sim = Sim::start("");
    let control = sim.control.clone();
    let ok = |args: &[&str]| -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["--control", &control]);
        let o = run(&all);
        assert_eq!(
            code_of(&o),
            0,
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let f = ok(&[
        "faults",
        "set",
        "--delay-ms",
        "250",
        "--response-code",
        "96",
        "--response-rate",
        "0.5",
    ]);
    assert_eq!(f["delay_ms"], 250);
    assert_eq!(f["response_rate"], 0.5);
    let f = ok(&["faults", "set", "--drop-rate", "0.1"]);
    assert_eq!(f["delay_ms"], 250);
    assert_eq!(ok(&["faults", "show"])["drop_rate"], 0.1);
    assert_eq!(ok(&["faults", "clear"])["delay_ms"], 0);
    assert_eq!(ok(&["disconnect"])["closed"], 0);
    assert_eq!(ok(&["accounts"])["totals"]["accounts"], 105);
    assert_eq!(ok(&["accounts", "--pan", ZHANG])["available"], 100_000_000);
    assert_eq!(ok(&["unlock", ZHANG])["status"], "active");
    assert_eq!(ok(&["transactions"])["next"], 1);

    // Refused by the API: 65, with the error on stderr.
    let o = run(&["faults", "set", "--drop-rate", "3", "--control", &control]);
    assert_eq!(code_of(&o), 65);
    assert!(String::from_utf8_lossy(&o.stderr).contains("INVALID_FAULTS"));
    let o = run(&["unlock", "123", "--control", &control]);
    assert_eq!(code_of(&o), 65);
    // The control URL can come from the environment.
    let o = Command::new(bin())
        .args(["faults", "show"])
        .env("HOST_SIM_CONTROL", &control)
        .output()
        .unwrap();
    assert_eq!(code_of(&o), 0);
}

#[test]
fn unreachable_control_api_exits_69() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", free.local_addr().unwrap());
    drop(free);
    assert_eq!(code_of(&run(&["faults", "show", "--control", &url])), 69);
    assert_eq!(code_of(&run(&["disconnect", "--control", &url])), 69);
}
