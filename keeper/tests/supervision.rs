//! End-to-end: the real keeper binary supervising real driver-proxies and small shell scripts.

mod common;

use std::time::Duration;

use common::{Keeper, alive, cli, proxy_process, signal};
use serde_json::{Value, json};

const LONG: Duration = Duration::from_secs(30);

fn u64_of(v: &Value) -> u64 {
    v.as_u64().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_with_sigkill_is_restarted_and_healthy_again() {
    let keeper = Keeper::start(|dir| proxy_process(dir, "idc", "CardReader")).await;
    let first = keeper
        .wait_process("idc", "idc healthy", LONG, |p| {
            p["health"]["healthy"] == true
        })
        .await;
    assert_eq!(first["health"]["grpc"], "serving");
    let pid = u64_of(&first["pid"]);
    signal(pid as u32, rustix::process::Signal::KILL);
    let again = keeper
        .wait_process("idc", "idc restarted and healthy", LONG, |p| {
            p["restarts"] == 1 && p["health"]["healthy"] == true
        })
        .await;
    assert_ne!(u64_of(&again["pid"]), pid);
    assert_eq!(again["state"], "running");
    assert_eq!(again["last_exit"]["signal"], 9);
    assert_eq!(keeper.alarm_kinds("idc").await, ["process_exited"]);
    assert_eq!(
        keeper.call("GET", "/api/v1/service", None).await.data()["paused"],
        false
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_always_fails_spends_its_budget_and_pauses_the_service() {
    let keeper = Keeper::start(|_| {
        r#"
[[process]]
name = "flaky"
command = "/bin/sh"
args = ["-c", "exit 1"]
restart = { initial_backoff_ms = 50, max_backoff_ms = 200, jitter = 0.0, budget = 3, window_ms = 60000 }
"#
        .to_owned()
    })
    .await;
    let p = keeper
        .wait_process("flaky", "flaky failed", LONG, |p| p["state"] == "failed")
        .await;
    assert_eq!(p["restarts"], 3);
    assert_eq!(p["last_exit"]["code"], 1);
    assert!(p["detail"].as_str().unwrap().contains("budget"), "{p}");
    let service = keeper.call("GET", "/api/v1/service", None).await;
    assert_eq!(service.data()["paused"], true);
    assert_eq!(service.data()["paused_by"], "keeper");
    let kinds = keeper.alarm_kinds("flaky").await;
    assert_eq!(kinds.last().unwrap(), "restart_budget_exhausted");
    assert_eq!(kinds.iter().filter(|k| *k == "process_exited").count(), 3);
    assert_eq!(keeper.alarm_kinds("service").await, ["service_paused"]);
    // Given up means given up: no more starts.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(keeper.process("flaky").await["restarts"], 3);
    // An operator's restart gives it a fresh budget.
    let answer = keeper
        .call("POST", "/api/v1/processes/flaky/restart", None)
        .await;
    assert_eq!(answer.status, 202);
    keeper
        .wait_process("flaky", "flaky restarted by hand", LONG, |p| {
            u64_of(&p["restarts"]) >= 4
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_off_delays_grow() {
    let keeper = Keeper::start(|_| {
        r#"
[[process]]
name = "crashy"
command = "/bin/sh"
args = ["-c", "exit 2"]
restart = { initial_backoff_ms = 100, multiplier = 3.0, max_backoff_ms = 5000, jitter = 0.0, budget = 10 }
"#
        .to_owned()
    })
    .await;
    let p = keeper
        .wait_process("crashy", "four restarts", LONG, |p| {
            u64_of(&p["restarts"]) >= 4
        })
        .await;
    let times: Vec<u64> = p["restart_times_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(u64_of)
        .collect();
    let gaps: Vec<u64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    // Delays 100, 300, 900, 2700 ms: the gaps between restarts are 300, 900, 2700 plus the
    // (short) run time; bounds are generous, the growth is what matters.
    assert!(gaps.len() >= 3, "{times:?}");
    assert!(gaps[0] >= 250, "{gaps:?}");
    assert!(gaps[1] >= 800 && gaps[1] > gaps[0], "{gaps:?}");
    assert!(gaps[2] >= 2500 && gaps[2] > gaps[1], "{gaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_exit_code_is_not_restarted() {
    let keeper = Keeper::start(|_| {
        r#"
[[process]]
name = "misconfigured"
command = "/bin/sh"
args = ["-c", "exit 78"]
permanent_exit_codes = [64, 78]
restart = { initial_backoff_ms = 50 }
"#
        .to_owned()
    })
    .await;
    let p = keeper
        .wait_process("misconfigured", "failed", LONG, |p| p["state"] == "failed")
        .await;
    assert_eq!(p["last_exit"]["code"], 78);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = keeper.process("misconfigured").await;
    assert_eq!(p["restarts"], 0);
    assert_eq!(p["state"], "failed");
    assert_eq!(
        keeper.alarm_kinds("misconfigured").await,
        ["permanent_failure"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missed_heartbeat_restarts_the_process() {
    let keeper = Keeper::start(|_| {
        r#"
[[process]]
name = "native"
command = "/bin/sh"
args = ["-c", "exec sleep 1000"]
health = { heartbeat_timeout_ms = 600, start_grace_ms = 600 }
restart = { initial_backoff_ms = 50 }
"#
        .to_owned()
    })
    .await;
    let p = keeper
        .wait_process("native", "running", LONG, |p| p["state"] == "running")
        .await;
    let pid = u64_of(&p["pid"]);
    assert_eq!(
        p["health"]["healthy"], false,
        "healthy only after a heartbeat"
    );
    // Heartbeats keep it alive well past the timeout.
    for _ in 0..12 {
        let answer = keeper
            .call(
                "POST",
                "/api/v1/processes/native/heartbeat",
                Some(json!({"idle": true})),
            )
            .await;
        assert_eq!(answer.status, 200);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let p = keeper.process("native").await;
    assert_eq!(p["restarts"], 0);
    assert_eq!(p["health"]["healthy"], true);
    assert_eq!(
        keeper.call("GET", "/api/v1/service", None).await.data()["terminal_idle"],
        true
    );
    // Silence: hung → restarted.
    let p = keeper
        .wait_process("native", "restart after missed heartbeat", LONG, |p| {
            p["restarts"] == 1 && p["state"] == "running"
        })
        .await;
    assert_ne!(u64_of(&p["pid"]), pid);
    assert!(!alive(pid), "the hung process was stopped");
    assert!(
        p["last_exit"]["reason"]
            .as_str()
            .unwrap()
            .contains("heartbeat"),
        "{p}"
    );
    assert!(
        keeper
            .alarm_kinds("native")
            .await
            .contains(&"heartbeat_missed".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_restart_status_and_alarms_through_the_cli() {
    let keeper = Keeper::start(|_| {
        r#"
[[process]]
name = "worker"
command = "/bin/sh"
args = ["-c", "exec sleep 1000"]
"#
        .to_owned()
    })
    .await;
    let control = keeper.control_arg();
    let first = keeper
        .wait_process("worker", "running", LONG, |p| p["state"] == "running")
        .await;

    let (code, out, err) = cli(&[
        "pause",
        "--reason",
        "cash replenishment",
        "--control",
        &control,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("PAUSED by operator (cash replenishment)"),
        "{out}"
    );
    let service = keeper.call("GET", "/api/v1/service", None).await;
    assert_eq!(service.data()["paused"], true);
    assert_eq!(service.data()["reason"], "cash replenishment");

    let (code, out, _) = cli(&["status", "--control", &control]);
    assert_eq!(code, 0);
    assert!(out.contains("PAUSED"), "{out}");
    assert!(out.contains("worker") && out.contains("running"), "{out}");

    let (code, out, _) = cli(&["status", "--json", "--control", &control]);
    assert_eq!(code, 0);
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["processes"][0]["name"], "worker");

    let (code, out, _) = cli(&["resume", "--control", &control]);
    assert_eq!(code, 0);
    assert!(out.contains("in service"), "{out}");
    assert_eq!(
        keeper.call("GET", "/api/v1/service", None).await.data()["paused"],
        false
    );

    let (code, _, _) = cli(&["restart", "worker", "--control", &control]);
    assert_eq!(code, 0);
    let p = keeper
        .wait_process("worker", "restarted", LONG, |p| {
            p["restarts"] == 1 && p["state"] == "running"
        })
        .await;
    assert_ne!(p["pid"], first["pid"]);

    let (code, _, err) = cli(&["restart", "nobody", "--control", &control]);
    assert_eq!(code, 1);
    assert!(err.contains("NOT_FOUND"), "{err}");

    let (code, out, _) = cli(&["alarms", "--control", &control]);
    assert_eq!(code, 0);
    assert!(out.contains("service_paused"), "{out}");

    let missing = format!("unix:{}/nobody.sock", keeper.dir.path().display());
    let (code, _, _) = cli(&["status", "--control", &missing]);
    assert_eq!(code, 69);

    // Host commands: the seam exists, nothing executes them yet.
    let answer = keeper
        .call(
            "POST",
            "/api/v1/host-commands",
            Some(json!({"kind": "reboot"})),
        )
        .await;
    assert_eq!(answer.status, 501);
    assert_eq!(answer.body["code"], "NOT_IMPLEMENTED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dependents_wait_and_sigterm_leaves_no_children() {
    let mut keeper = Keeper::start(|dir| {
        let idc = dir.join("idc.sock");
        let pin = dir.join("pin.sock");
        let grandchild = dir.join("grandchild.pid");
        format!(
            r#"{idc_proc}{pin_proc}
# Stands in for terminal-native: refuses to run (permanent 78) unless both proxies serve, and
# forks a helper that must die with it.
[[process]]
name = "native"
command = "/bin/sh"
args = ["-c", "[ -S {idc} ] && [ -S {pin} ] || exit 78; sleep 1000 & echo $! > {grandchild}; wait"]
depends_on = ["idc", "pin"]
permanent_exit_codes = [78]

# Ignores SIGTERM: must be SIGKILLed after its stop timeout.
[[process]]
name = "stubborn"
command = "/bin/sh"
args = ["-c", "trap '' TERM; while true; do sleep 0.2; done"]
stop_timeout_ms = 500
"#,
            idc_proc = proxy_process(dir, "idc", "CardReader"),
            pin_proc = proxy_process(dir, "pin", "PinPad"),
            idc = idc.display(),
            pin = pin.display(),
            grandchild = grandchild.display(),
        )
    })
    .await;
    let native = keeper
        .wait_process("native", "native running", LONG, |p| {
            p["state"] == "running"
        })
        .await;
    let grandchild_file = keeper.dir.path().join("grandchild.pid");
    let grandchild: u64 = keeper
        .wait_for("the helper's pid", LONG, || async {
            std::fs::read_to_string(&grandchild_file)
                .ok()
                .and_then(|s| s.trim().parse().ok())
        })
        .await;
    let status = keeper.call("GET", "/api/v1/status", None).await;
    let mut pids = vec![grandchild];
    for p in status.data()["processes"].as_array().unwrap() {
        assert_eq!(p["state"], "running", "{p}");
        pids.push(u64_of(&p["pid"]));
    }
    // Start order: dependencies first, and the dependent started after they were healthy.
    let names: Vec<&str> = status.data()["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["idc", "pin", "native", "stubborn"]);
    assert_eq!(native["restarts"], 0);
    assert!(pids.iter().all(|&p| alive(p)), "{pids:?}");

    let exit = keeper
        .terminate(Duration::from_secs(30))
        .expect("keeper exited");
    assert_eq!(exit.code(), Some(0));
    let log = keeper.log();
    for &pid in &pids {
        assert!(!alive(pid), "pid {pid} outlived the keeper\n{log}");
    }
    assert!(
        log.contains("SIGKILL"),
        "the stubborn process needed SIGKILL\n{log}"
    );
    // Reverse start order.
    let lines: Vec<&str> = log.lines().collect();
    let line_of = |n: &str| {
        lines
            .iter()
            .position(|l| l.contains("stopping (SIGTERM)") && l.contains(&format!("process={n}")))
            .unwrap_or_else(|| panic!("no stop line for {n}\n{log}"))
    };
    assert!(line_of("stubborn") < line_of("native"), "{log}");
    assert!(line_of("native") < line_of("pin"), "{log}");
    assert!(line_of("pin") < line_of("idc"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_below_a_hard_minimum_starts_nothing() {
    let keeper = Keeper::start(|dir| {
        format!(
            r#"
[environment]
disk = [{{ path = "{dir}", min_free_mb = 999999999999 }}]

[[process]]
name = "worker"
command = "/bin/sh"
args = ["-c", "exec sleep 1000"]
"#,
            dir = dir.display()
        )
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = keeper.process("worker").await;
    assert_eq!(p["state"], "waiting");
    assert_eq!(p["pid"], Value::Null);
    assert!(
        p["detail"].as_str().unwrap().contains("hard minimum"),
        "{p}"
    );
    assert_eq!(keeper.alarm_kinds("host").await, ["environment_refused"]);
    let env = keeper.call("GET", "/api/v1/environment", None).await;
    assert_eq!(env.data()["blocked"], true);
    assert_eq!(env.data()["findings"][0]["kind"], "low_disk");
}

#[test]
fn bad_configuration_exits_64_before_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("started");
    let cases = [
        (
            "unknown field",
            format!(
                "[[process]]\nname = \"a\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"touch {m}\"]\nrestart_policy = 1\n",
                m = marker.display()
            ),
        ),
        (
            "unknown process",
            format!(
                "[[process]]\nname = \"a\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", \"touch {m}\"]\n[[process]]\nname = \"b\"\ncommand = \"/bin/true\"\ndepends_on = [\"c\"]\n",
                m = marker.display()
            ),
        ),
        ("no [[process]]", String::new()),
        ("expected", "this is not toml".to_owned()),
    ];
    for (want, text) in cases {
        let path = dir.path().join("keeper.toml");
        std::fs::write(&path, text).unwrap();
        let (code, _, err) = cli(&["--config", path.to_str().unwrap()]);
        assert_eq!(code, 64, "{want}: {err}");
        assert!(
            err.contains("bad configuration") && err.contains(want),
            "{want}: {err}"
        );
    }
    let (code, _, err) = cli(&["--config", "/nonexistent/keeper.toml"]);
    assert_eq!(code, 64);
    assert!(err.contains("cannot read"), "{err}");
    let (code, _, _) = cli(&["--bogus-flag"]);
    assert_eq!(code, 64);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !marker.exists(),
        "a process was started from a bad configuration"
    );
}
