//! The windowed kiosk host end to end, under its own Xvfb: host-sim ← online-txn ← the real
//! `terminal-native` (no `--headless`: tao window + wry webview, bridge over wry's IPC) with
//! real driver-proxies. The business page (tests/fixtures/windowed) signs on, reads the card,
//! takes the PIN and asks for the balance; then it loads a second page, which ejects the card
//! through the fresh bridge the host gives every page load. The test plays the customer through
//! the virtual devices' simulator API and checks the electronic journal. Then it kills the
//! page's WebKit web process: the host reloads the page, which comes back through a new bridge.
//!
//! Needs the `window` feature, `Xvfb` and WebKitGTK 4.1 (deploy/local/lib.sh installs them).

#![cfg(feature = "window")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::host::{PAN, TRACK2, load_tmk, start_host_side};
use common::{Proc, Proxy};
use openteller_proto::device::v1::{
    Card, CardReaderSimAction, InsertCard, MagneticCard, PinPadSimAction, PressKeys,
    SimulatorReply, card, card_reader_sim_action, pin_pad_sim_action, simulator_request,
};

/// How long the whole customer flow may take on a loaded machine before the test gives up.
const PATIENCE: Duration = Duration::from_secs(180);

/// An Xvfb server on a display number nobody uses.
struct Xvfb {
    _proc: Proc,
    display: String,
}

fn start_xvfb(dir: &Path) -> Xvfb {
    for n in 90..190 {
        let socket = PathBuf::from(format!("/tmp/.X11-unix/X{n}"));
        let lock = PathBuf::from(format!("/tmp/.X{n}-lock"));
        if socket.exists() || lock.exists() {
            continue;
        }
        let mut child = Command::new("Xvfb")
            .arg(format!(":{n}"))
            .args(["-screen", "0", "1280x1024x24", "-nolisten", "tcp"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("xvfb-{n}.log"))).unwrap())
            .spawn()
            .expect("spawn Xvfb (install the xvfb package)");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if socket.exists() {
                return Xvfb {
                    _proc: Proc(child),
                    display: format!(":{n}"),
                };
            }
            if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
                // Lost a race for this display, or it did not come up: try the next one.
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    panic!("no free X display for Xvfb in :90..:190");
}

/// Today's e-journal text.
fn journal(dir: &Path) -> String {
    let mut text = String::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files {
            text.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
    }
    text
}

/// Repeats a simulator action until the device accepts it (code 1): the page asks for the card
/// or the PIN when it gets there, and the virtual device refuses the action before that.
async fn until_accepted<F, Fut>(what: &str, diagnostics: impl Fn() -> String, mut action: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = SimulatorReply>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = action().await;
        if reply.result.as_ref().is_some_and(|r| r.code == 1) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never accepted (last: {reply:?})\n{}",
            diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_window_runs_a_balance_inquiry_over_ipc() {
    let dir = tempfile::Builder::new()
        .prefix("tn-windowed-")
        .tempdir()
        .unwrap();
    let d = dir.path();
    let xvfb = start_xvfb(d);
    let host = start_host_side(d);
    let idc = Proxy::start(d, "idc", "CardReader").await;
    let pin = Proxy::start(d, "pin", "PinPad").await;
    let cdm = Proxy::start(d, "cdm", "CashDispenser").await;
    load_tmk(&pin).await;

    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/windowed");
    let ej = d.join("ej");
    let config = format!(
        "terminal_id = \"T0000001\"\nbusiness_package = \"{}\"\njournal_dir = \"{}\"\nstate_dir = \"{}\"\n\
         [headless]\nlisten = \"127.0.0.1:0\"\n\
         [window]\nfullscreen = true\ncursor = false\n\
         [devices.idc]\nclass = \"CardReader\"\nendpoint = \"{}\"\n\
         [devices.pin]\nclass = \"PinPad\"\nendpoint = \"{}\"\n\
         [devices.cdm]\nclass = \"CashDispenser\"\nendpoint = \"{}\"\n\
         [online]\naddress = \"{}\"\npinpad = \"pin\"\nresponse_timeout_ms = 20000\n",
        package.display(),
        ej.display(),
        d.join("native-state").display(),
        idc.endpoint(),
        pin.endpoint(),
        cdm.endpoint(),
        host.terminals,
    );
    let config_path = d.join("native.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = d.join("native.log");
    let mut native = Proc(
        Command::new(env!("CARGO_BIN_EXE_terminal-native"))
            .arg("--config")
            .arg(&config_path)
            .env("DISPLAY", &xvfb.display)
            .env_remove("WAYLAND_DISPLAY")
            // Xvfb has no GPU: software rendering, no DMA-BUF renderer.
            .env("WEBKIT_DISABLE_DMABUF_RENDERER", "1")
            .env("LIBGL_ALWAYS_SOFTWARE", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn terminal-native"),
    );
    let diagnostics = || {
        format!(
            "--- e-journal\n{}\n--- terminal-native log\n{}",
            journal(&ej),
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };

    // The page signs on, then asks for the card.
    until_accepted("InsertCard", diagnostics, || {
        idc.control(simulator_request::Action::CardReader(CardReaderSimAction {
            action: Some(card_reader_sim_action::Action::InsertCard(InsertCard {
                library_name: String::new(),
                card: Some(Card {
                    name: String::new(),
                    kind: Some(card::Kind::Magnetic(MagneticCard {
                        track1: String::new(),
                        track2: TRACK2.into(),
                        track3: String::new(),
                    })),
                }),
            })),
        }))
    })
    .await;
    assert!(
        native.0.try_wait().unwrap().is_none(),
        "terminal-native exited\n{}",
        diagnostics()
    );
    // Then the PIN.
    until_accepted("PressKeys", diagnostics, || {
        pin.control(simulator_request::Action::PinPad(PinPadSimAction {
            action: Some(pin_pad_sim_action::Action::PressKeys(PressKeys {
                keys: ["1", "2", "3", "4", "ENTER"].map(String::from).to_vec(),
            })),
        }))
    })
    .await;

    // The inquiry is approved, and the second page (a new bridge) ejects the card.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = journal(&ej);
        if text.contains("idc CardReader.Eject eject-after-reload SUCCESS") {
            break;
        }
        assert!(
            native.0.try_wait().unwrap().is_none(),
            "terminal-native exited\n{}",
            diagnostics()
        );
        assert!(
            Instant::now() < deadline,
            "the page did not finish\n{}",
            diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let text = journal(&ej);
    let lines: Vec<&str> = text.lines().collect();
    let find = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no journal line with {needle:?}\n{text}"))
    };
    let sign_on = find("TXN SIGN-ON");
    let read = find("idc CardReader.ReadRawData read-1 SUCCESS");
    let got_pin = find("pin PinPad.GetPin pin-1 SUCCESS");
    let inquiry = lines
        .iter()
        .position(|l| l.contains("TXN INQUIRY") && l.contains("rc=00"))
        .unwrap_or_else(|| panic!("no approved inquiry\n{text}"));
    let eject = find("idc CardReader.Eject eject-after-reload SUCCESS");
    assert!(
        sign_on < read && read < got_pin && got_pin < inquiry && inquiry < eject,
        "journal out of order\n{text}"
    );
    assert!(!text.contains(PAN), "the journal never holds a full PAN");
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("page loading: new bridge"),
        "the reload got a new bridge\n{log_text}"
    );
    assert_eq!(
        text.matches("PAGE fixture loaded first").count(),
        1,
        "{text}"
    );
    assert_eq!(
        text.matches("PAGE fixture loaded inquiry").count(),
        1,
        "{text}"
    );

    // The page's web process crashes: the host reloads the page, which talks again through a
    // new bridge (its load line reaches the journal over IPC).
    let web = web_process(native.0.id())
        .unwrap_or_else(|| panic!("no WebKitWebProcess child\n{}", diagnostics()));
    let status = Command::new("kill")
        .args(["-KILL", &web.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + PATIENCE;
    while journal(&ej).matches("PAGE fixture loaded inquiry").count() < 2 {
        assert!(
            native.0.try_wait().unwrap().is_none(),
            "terminal-native exited\n{}",
            diagnostics()
        );
        assert!(
            Instant::now() < deadline,
            "the page did not come back after its web process was killed\n{}",
            diagnostics()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        log_text.contains("web process ended"),
        "the crash was seen\n{log_text}"
    );

    // SIGTERM: the window closes and the host exits 0.
    let pid = native.0.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success());
    let code = native.0.wait().unwrap();
    assert_eq!(code.code(), Some(0), "{}", diagnostics());
}

/// The WebKit web process among `pid`'s children.
fn web_process(pid: u32) -> Option<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .find(|child| {
            std::fs::read_to_string(format!("/proc/{child}/comm"))
                .is_ok_and(|c| c.starts_with("WebKitWebProces"))
        })
}

#[test]
fn no_display_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let package = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/windowed");
    let config = dir.path().join("native.toml");
    std::fs::write(
        &config,
        format!(
            "terminal_id = \"T1\"\nbusiness_package = \"{}\"\njournal_dir = \"{}\"\nstate_dir = \"{}\"\n\
             [headless]\nlisten = \"127.0.0.1:0\"\n",
            package.display(),
            dir.path().join("ej").display(),
            dir.path().join("st").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_terminal-native"))
        .arg("--config")
        .arg(&config)
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains("display") && err.contains("--headless"),
        "{err}"
    );
    // Nothing started: no journal.
    assert!(!dir.path().join("ej").exists());
}

#[test]
fn a_bad_window_section_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("native.toml");
    std::fs::write(
        &config,
        format!(
            "terminal_id = \"T1\"\nbusiness_package = \"{}\"\njournal_dir = \"{}\"\nstate_dir = \"{}\"\n\
             [headless]\nlisten = \"127.0.0.1:0\"\n[window]\nkiosk = \"maybe\"\n",
            dir.path().display(),
            dir.path().join("ej").display(),
            dir.path().join("st").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_terminal-native"))
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("kiosk"), "{err}");
}
