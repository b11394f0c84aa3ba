//! The command line: `devsim panel ...` and the scriptable subcommands driving one proxy.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use openteller_proto::Endpoint;
use openteller_proto::device::v1::{
    ClearErrors, CloseDevice, Completion, CompletionCode, DeleteCard, InsertCard, ListCards,
    ListReceipts, NotTakeCard, OpenDevice, PressKeys, PutCard, SetCashUnits, SetDeviceState,
    SetError, SetPaper, SetRetainTimeout, SetTakeTimeout, SimulatorReply, SimulatorRequest,
    TakeCard, TakeItems, TakeReceipt, card_reader_sim_action as idc,
    cash_dispenser_sim_action as cdm, command_reply, pin_pad_sim_action as pin,
    receipt_printer_sim_action as ptr, simulator_request,
};
use serde::Serialize;

use crate::actions::{self, CardSpec};
use crate::conn::{CallError, DeviceConn};

/// Exit status: the device refused (completion not SUCCESS) or answered with an error.
pub(crate) const EXIT_REFUSED: u8 = 1;
/// Exit status: the proxy cannot be reached.
pub(crate) const EXIT_UNREACHABLE: u8 = 2;
/// Exit status: bad arguments (`EX_USAGE`).
pub(crate) const EXIT_USAGE: u8 = 64;

/// Testers' tools for OpenTeller virtual devices (seed 001 §12): a web panel and a CLI over
/// the simulator-control API of running driver-proxies.
///
/// Exit status: 0 success, 1 the device refused (the completion is printed), 2 the device cannot
/// be reached, 64 bad arguments.
#[derive(Debug, Parser)]
#[command(name = "devsim", version)]
pub(crate) struct Cli {
    /// The proxy to drive, `unix:PATH` or `tcp:HOST:PORT`; needed by every subcommand but `panel`.
    #[arg(long, value_name = "ENDPOINT")]
    pub(crate) device: Option<Endpoint>,
    /// Time limit of one call to the proxy, in milliseconds.
    #[arg(long, global = true, default_value_t = 10_000, value_name = "MS")]
    pub(crate) timeout_ms: u64,
    /// Pretty-print JSON output.
    #[arg(long, global = true)]
    pub(crate) pretty: bool,
    /// What to do.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve the web panel for one or more proxies.
    Panel(PanelArgs),
    /// Print the device status.
    Status,
    /// Print the device capabilities.
    Capabilities,
    /// Print the device's notices as JSON lines (the first is the current status).
    Events {
        /// Stop after this many notices.
        #[arg(long)]
        count: Option<u64>,
    },
    /// Run a device command (as the ATM application would) and print its events and completion
    /// as JSON lines, e.g. '{"cardReader":{"readRawData":{"track2":true}}}'.
    Exec {
        /// A `Command` in proto3 JSON; a missing requestId is filled in.
        json: String,
    },
    /// Send a raw SimulatorRequest in proto3 JSON, e.g. '{"openDevice":{}}'.
    Sim {
        /// The request.
        json: String,
    },
    /// Card reader: insert, take, the card library (seed 001 §12.1 TakeCard, §12.2 InsertCard, §12.5 CardInfo).
    #[command(subcommand)]
    Card(CardCommand),
    /// Preset or clear simulated errors (seed 001 §12.3 ErrorSimulating).
    #[command(subcommand)]
    Error(ErrorCommand),
    /// Set the device state and, for a card reader, the media state (seed 001 §12.4 Status).
    State {
        /// ONLINE, OFFLINE, NO_DEVICE, HARDWARE_ERROR, USER_ERROR or BUSY (full names too).
        #[arg(long = "device", value_name = "STATE", value_parser = actions::parse_device_state)]
        device_state: Option<openteller_proto::device::v1::DeviceState>,
        /// Card reader media: NOT_PRESENT, PRESENT, ENTERING, JAMMED, LATCHED, UNKNOWN.
        #[arg(long, value_parser = actions::parse_media)]
        media: Option<openteller_proto::device::v1::MediaStatus>,
    },
    /// Power the device on (Open Device).
    Open,
    /// Power the device off (Close Device).
    Close,
    /// PIN pad keys.
    #[command(subcommand)]
    Pin(PinCommand),
    /// Cash dispenser: cassettes and the customer taking notes.
    #[command(subcommand)]
    Cash(CashCommand),
    /// List the printed receipts, newest first.
    Receipts {
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: u32,
    },
    /// Set the printer's paper supply: FULL, LOW, OUT or JAMMED.
    Paper {
        /// The paper state.
        #[arg(value_parser = actions::parse_paper)]
        state: openteller_proto::device::v1::PaperState,
    },
    /// Receipt printer customer actions.
    #[command(subcommand)]
    Printer(PrinterCommand),
}

/// `devsim panel`.
#[derive(Debug, Args)]
pub(crate) struct PanelArgs {
    /// Address to serve the panel on (keep it on loopback: the panel has no authentication).
    #[arg(long, default_value = "127.0.0.1:8090")]
    pub(crate) listen: SocketAddr,
    /// A device to show, `NAME=ENDPOINT`, e.g. `idc=unix:/run/ot/idc.sock`; repeat per device.
    #[arg(long = "device", value_name = "NAME=ENDPOINT", required = true, value_parser = parse_named_device)]
    pub(crate) devices: Vec<NamedDevice>,
}

impl PanelArgs {
    /// Refuses a device name given twice (before anything is bound).
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        match self.devices.iter().find(|d| !seen.insert(d.name.as_str())) {
            Some(d) => Err(format!("device name {:?} is given twice", d.name)),
            None => Ok(()),
        }
    }
}

/// One `--device NAME=ENDPOINT` of the panel.
#[derive(Debug, Clone)]
pub(crate) struct NamedDevice {
    /// The name shown and used in URLs.
    pub(crate) name: String,
    /// Where its proxy listens.
    pub(crate) endpoint: Endpoint,
}

fn parse_named_device(text: &str) -> Result<NamedDevice, String> {
    let (name, endpoint) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} must be NAME=ENDPOINT, e.g. idc=unix:/run/ot/idc.sock"))?;
    let valid = !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(format!(
            "device name {name:?} must be 1-32 letters, digits, '-' or '_'"
        ));
    }
    let endpoint = endpoint.parse::<Endpoint>().map_err(|e| e.to_string())?;
    Ok(NamedDevice {
        name: name.to_owned(),
        endpoint,
    })
}

/// Card reader subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CardCommand {
    /// Insert a card into a waiting read (refused when no read is waiting).
    Insert {
        /// A card of the library, by name; given tracks or chip override its contents.
        #[arg(long)]
        library: Option<String>,
        /// The card.
        #[command(flatten)]
        card: CardArgs,
    },
    /// The customer takes the card from the slot ("Take Away Card").
    Take,
    /// The customer leaves the card in the slot ("Not Take Card"); the reader retains it.
    NotTake,
    /// List the card library.
    List,
    /// Add or replace a card in the library.
    Put {
        /// The card's library name.
        #[arg(long)]
        name: String,
        /// The card.
        #[command(flatten)]
        card: CardArgs,
    },
    /// Remove a card from the library.
    Delete {
        /// The card's library name.
        #[arg(long)]
        name: String,
    },
    /// How long a card left in the slot stays before the reader retains it.
    RetainTimeout {
        /// Milliseconds.
        ms: u32,
    },
}

/// A card's contents.
#[derive(Debug, Args)]
pub(crate) struct CardArgs {
    /// Track 1 data, without sentinels.
    #[arg(long)]
    track1: Option<String>,
    /// Track 2 data, without sentinels (e.g. 6222020200112233445=25122010000000000000).
    #[arg(long)]
    track2: Option<String>,
    /// Track 3 data, without sentinels.
    #[arg(long)]
    track3: Option<String>,
    /// Makes it a chip (IC) card with this answer-to-reset, in hex.
    #[arg(long, value_name = "HEX")]
    chip_atr: Option<String>,
    /// A scripted chip answer, `COMMAND_PREFIX=RESPONSE` in hex; repeatable.
    #[arg(long, value_name = "PREFIX=RESPONSE")]
    apdu: Vec<String>,
    /// A card that cannot be read.
    #[arg(long)]
    invalid: bool,
}

impl CardArgs {
    fn spec(&self) -> CardSpec {
        CardSpec {
            track1: self.track1.clone(),
            track2: self.track2.clone(),
            track3: self.track3.clone(),
            chip_atr: self.chip_atr.clone(),
            apdu: self.apdu.clone(),
            invalid: self.invalid,
        }
    }
}

/// ErrorSimulating subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ErrorCommand {
    /// Fail the next COUNT commands named COMMAND with CODE.
    Set {
        /// e.g. CardReader.Eject (see `capabilities`).
        #[arg(long)]
        command: String,
        /// A CEN/XFS 3.x error number, e.g. -200 (MEDIAJAM).
        #[arg(long, allow_negative_numbers = true)]
        code: i32,
        /// How many commands fail.
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Remove every preset error.
    Clear,
}

/// PIN pad subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PinCommand {
    /// Press keys: digits and ENTER, CANCEL, CLEAR, BACKSPACE (`1234` presses four digits).
    Press {
        /// The keys.
        #[arg(required = true, num_args = 1..)]
        keys: Vec<String>,
    },
}

/// Cash dispenser subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum CashCommand {
    /// Replace the cash unit table: a JSON array of CashUnit (or {"units": [...]}, or @FILE).
    SetUnits {
        /// The table.
        json: String,
    },
    /// The customer takes the presented notes.
    Take,
    /// Default time a customer has to take presented notes.
    TakeTimeout {
        /// Milliseconds.
        ms: u32,
    },
}

/// Receipt printer subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum PrinterCommand {
    /// The customer takes the receipt.
    Take,
}

/// How a CLI run ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Done.
    Success,
    /// The device refused; the reply was printed.
    Refused,
    /// A failure to report on stderr, with its exit status.
    Failed(u8, String),
}

impl Outcome {
    fn usage(message: impl Into<String>) -> Self {
        Outcome::Failed(EXIT_USAGE, message.into())
    }
}

impl From<CallError> for Outcome {
    fn from(e: CallError) -> Self {
        let status = if e.is_unreachable() {
            EXIT_UNREACHABLE
        } else {
            EXIT_REFUSED
        };
        Outcome::Failed(status, e.to_string())
    }
}

/// Runs one non-panel subcommand.
pub(crate) async fn run(cli: Cli) -> Outcome {
    let Some(endpoint) = cli.device.clone() else {
        return Outcome::usage(
            "--device ENDPOINT is required (e.g. --device unix:/run/ot/idc.sock)",
        );
    };
    let conn = match DeviceConn::new(endpoint, Duration::from_millis(cli.timeout_ms.max(1))) {
        Ok(c) => c,
        Err(e) => return Outcome::usage(format!("bad endpoint: {e}")),
    };
    let out = Printer { pretty: cli.pretty };
    let request = match simulator_request_for(&cli.command) {
        Ok(Some(request)) => request,
        Ok(None) => return run_device_call(&conn, &cli.command, out).await,
        Err(message) => return Outcome::usage(message),
    };
    tracing::debug!(
        action = actions::action_label(&request),
        "simulator request"
    );
    match conn.simulate(request).await {
        Ok(reply) => report(&reply, out),
        Err(e) => e.into(),
    }
}

/// The non-simulator subcommands: status, capabilities, events.
async fn run_device_call(conn: &DeviceConn, command: &Command, out: Printer) -> Outcome {
    match command {
        Command::Status => match conn.status().await {
            Ok(s) => out.print(&s),
            Err(e) => e.into(),
        },
        Command::Capabilities => match conn.capabilities().await {
            Ok(c) => out.print(&c),
            Err(e) => e.into(),
        },
        Command::Events { count } => {
            let mut stream = match conn.subscribe().await {
                Ok(s) => s,
                Err(e) => return e.into(),
            };
            let mut printed = 0u64;
            while count.is_none_or(|n| printed < n) {
                match stream.message().await {
                    Ok(Some(notice)) => {
                        if let Outcome::Failed(code, m) = out.print(&notice) {
                            return Outcome::Failed(code, m);
                        }
                        printed += 1;
                    }
                    Ok(None) => {
                        return Outcome::Failed(
                            EXIT_UNREACHABLE,
                            format!("{} ended the stream", conn.endpoint()),
                        );
                    }
                    Err(status) => return conn.stream_error(&status).into(),
                }
            }
            Outcome::Success
        }
        Command::Exec { json } => execute(conn, json, out).await,
        _ => Outcome::usage("internal: not a device call"),
    }
}

/// `devsim exec`: one command, its events and completion as JSON lines.
async fn execute(conn: &DeviceConn, json: &str, out: Printer) -> Outcome {
    let mut command: openteller_proto::device::v1::Command = match serde_json::from_str(json) {
        Ok(c) => c,
        Err(e) => return Outcome::usage(format!("not a Command in proto3 JSON: {e}")),
    };
    if command.command.is_none() {
        return Outcome::usage(
            "the command is empty; e.g. {\"cardReader\":{\"readRawData\":{\"track2\":true}}}",
        );
    }
    if command.request_id.is_empty() {
        command.request_id = format!("devsim-{}", std::process::id());
    }
    let mut stream = match conn.execute(command).await {
        Ok(s) => s,
        Err(e) => return e.into(),
    };
    loop {
        match stream.message().await {
            Ok(Some(reply)) => {
                if let Outcome::Failed(code, m) = out.print(&reply) {
                    return Outcome::Failed(code, m);
                }
                if let Some(command_reply::Reply::Completion(c)) = reply.reply {
                    let completion = c.completion.unwrap_or_default();
                    return if completion.code == CompletionCode::Success as i32 {
                        Outcome::Success
                    } else {
                        eprintln!("devsim: refused: {}", describe(&completion));
                        Outcome::Refused
                    };
                }
            }
            Ok(None) => {
                return Outcome::Failed(
                    EXIT_UNREACHABLE,
                    "the stream ended without a completion".to_owned(),
                );
            }
            Err(status) => return conn.stream_error(&status).into(),
        }
    }
}

/// `CODE ERROR_NAME (error): description` for stderr.
fn describe(c: &Completion) -> String {
    let code = CompletionCode::try_from(c.code)
        .map_or_else(|_| c.code.to_string(), |k| k.as_str_name().to_owned());
    let error = if c.error_code == 0 {
        String::new()
    } else {
        format!(" {} ({})", c.error_name, c.error_code)
    };
    format!("{code}{error}: {}", c.description)
}

/// The simulator request of a subcommand; `None` for subcommands that are not simulator actions.
pub(crate) fn simulator_request_for(command: &Command) -> Result<Option<SimulatorRequest>, String> {
    use simulator_request::Action;
    let request = match command {
        Command::Panel(_)
        | Command::Status
        | Command::Capabilities
        | Command::Events { .. }
        | Command::Exec { .. } => return Ok(None),
        Command::Sim { json } => actions::parse_request(json.as_bytes())?,
        Command::Card(card) => card_request(card)?,
        Command::Error(ErrorCommand::Set {
            command,
            code,
            count,
        }) => actions::request(Action::SetError(SetError {
            command: command.clone(),
            error_code: *code,
            count: *count,
        })),
        Command::Error(ErrorCommand::Clear) => {
            actions::request(Action::ClearErrors(ClearErrors {}))
        }
        Command::State {
            device_state,
            media,
        } => {
            if device_state.is_none() && media.is_none() {
                return Err("give --device STATE and/or --media MEDIA".to_owned());
            }
            actions::request(Action::SetDeviceState(SetDeviceState {
                device: device_state.map_or(0, |s| s as i32),
                media: media.map_or(0, |m| m as i32),
            }))
        }
        Command::Open => actions::request(Action::OpenDevice(OpenDevice {})),
        Command::Close => actions::request(Action::CloseDevice(CloseDevice {})),
        Command::Pin(PinCommand::Press { keys }) => {
            let keys = actions::parse_keys(keys)?;
            actions::pin_pad(pin::Action::PressKeys(PressKeys { keys }))
        }
        Command::Cash(CashCommand::SetUnits { json }) => {
            let text = match json.strip_prefix('@') {
                Some(path) => {
                    std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?
                }
                None => json.clone(),
            };
            let units = actions::parse_cash_units(&text)?;
            actions::cash_dispenser(cdm::Action::SetCashUnits(SetCashUnits { units }))
        }
        Command::Cash(CashCommand::Take) => {
            actions::cash_dispenser(cdm::Action::TakeItems(TakeItems {}))
        }
        Command::Cash(CashCommand::TakeTimeout { ms }) => {
            actions::cash_dispenser(cdm::Action::SetTakeTimeout(SetTakeTimeout {
                timeout_ms: *ms,
            }))
        }
        Command::Receipts { limit } => {
            actions::receipt_printer(ptr::Action::ListReceipts(ListReceipts { limit: *limit }))
        }
        Command::Paper { state } => actions::receipt_printer(ptr::Action::SetPaper(SetPaper {
            paper: *state as i32,
        })),
        Command::Printer(PrinterCommand::Take) => {
            actions::receipt_printer(ptr::Action::TakeReceipt(TakeReceipt {}))
        }
    };
    Ok(Some(request))
}

fn card_request(command: &CardCommand) -> Result<SimulatorRequest, String> {
    let action = match command {
        CardCommand::Insert { library, card } => {
            let spec = card.spec();
            let library_name = library.clone().unwrap_or_default();
            if library_name.is_empty() && spec.is_empty() {
                return Err(
                    "give --library NAME, tracks (--track1/2/3), --chip-atr or --invalid"
                        .to_owned(),
                );
            }
            let card = if spec.is_empty() {
                None
            } else {
                Some(spec.to_card("")?)
            };
            idc::Action::InsertCard(InsertCard { library_name, card })
        }
        CardCommand::Take => idc::Action::TakeCard(TakeCard {}),
        CardCommand::NotTake => idc::Action::NotTakeCard(NotTakeCard {}),
        CardCommand::List => idc::Action::ListCards(ListCards {}),
        CardCommand::Put { name, card } => {
            let spec = card.spec();
            if spec.is_empty() {
                return Err("give tracks (--track1/2/3), --chip-atr or --invalid".to_owned());
            }
            idc::Action::PutCard(PutCard {
                card: Some(spec.to_card(name)?),
            })
        }
        CardCommand::Delete { name } => idc::Action::DeleteCard(DeleteCard { name: name.clone() }),
        CardCommand::RetainTimeout { ms } => {
            idc::Action::SetRetainTimeout(SetRetainTimeout { timeout_ms: *ms })
        }
    };
    Ok(actions::card_reader(action))
}

/// Prints a simulator reply; refused actions also get a line on stderr.
fn report(reply: &SimulatorReply, out: Printer) -> Outcome {
    if let Outcome::Failed(code, m) = out.print(reply) {
        return Outcome::Failed(code, m);
    }
    if actions::succeeded(reply) {
        return Outcome::Success;
    }
    eprintln!(
        "devsim: refused: {}",
        describe(&reply.result.clone().unwrap_or_default())
    );
    Outcome::Refused
}

/// JSON output to stdout, one value per line (or pretty).
#[derive(Debug, Clone, Copy)]
struct Printer {
    pretty: bool,
}

impl Printer {
    fn print<T: Serialize>(self, value: &T) -> Outcome {
        let text = if self.pretty {
            serde_json::to_string_pretty(value)
        } else {
            serde_json::to_string(value)
        };
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                return Outcome::Failed(
                    EXIT_REFUSED,
                    format!("cannot print the answer as JSON: {e}"),
                );
            }
        };
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (e.g. `| head`) is not worth an error.
        let _ = writeln!(stdout, "{text}");
        let _ = stdout.flush();
        Outcome::Success
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openteller_proto::device::v1::{card, card_reader_sim_action};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("devsim").chain(args.iter().copied()))
    }

    fn request(args: &[&str]) -> Result<Option<SimulatorRequest>, String> {
        simulator_request_for(&parse(args).expect("arguments parse").command)
    }

    #[test]
    fn card_insert_from_library_or_tracks() {
        let r = request(&["--device", "unix:/x", "card", "insert", "--library", "visa"])
            .unwrap()
            .unwrap();
        let Some(simulator_request::Action::CardReader(a)) = r.action else {
            panic!()
        };
        let Some(card_reader_sim_action::Action::InsertCard(i)) = a.action else {
            panic!()
        };
        assert_eq!(i.library_name, "visa");
        assert!(i.card.is_none());

        let r = request(&["card", "insert", "--track2", "1234=99"])
            .unwrap()
            .unwrap();
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"cardReader":{"insertCard":{"card":{"magnetic":{"track2":"1234=99"}}}}}"#
        );

        assert!(request(&["card", "insert"]).is_err());
        assert!(parse(&["card", "insert", "--invalid"]).is_ok());
    }

    #[test]
    fn card_put_chip() {
        let r = request(&[
            "card",
            "put",
            "--name",
            "ic",
            "--chip-atr",
            "3B00",
            "--track2",
            "1=2",
        ])
        .unwrap()
        .unwrap();
        let Some(simulator_request::Action::CardReader(a)) = r.action else {
            panic!()
        };
        let Some(card_reader_sim_action::Action::PutCard(p)) = a.action else {
            panic!()
        };
        let card = p.card.unwrap();
        assert_eq!(card.name, "ic");
        assert!(
            matches!(card.kind, Some(card::Kind::Chip(c)) if c.stripe.as_ref().is_some_and(|s| s.track2 == "1=2"))
        );
    }

    #[test]
    fn error_state_pin_paper() {
        let r = request(&[
            "error",
            "set",
            "--command",
            "CardReader.Eject",
            "--code",
            "-200",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"setError":{"command":"CardReader.Eject","errorCode":-200,"count":1}}"#
        );
        let r = request(&["state", "--device", "HARDWARE_ERROR", "--media", "jammed"])
            .unwrap()
            .unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"setDeviceState":{"device":"DEVICE_STATE_HARDWARE_ERROR","media":"MEDIA_STATUS_JAMMED"}}"#
        );
        assert!(request(&["state"]).is_err());
        let r = request(&["pin", "press", "12", "ENTER"]).unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"pinPad":{"pressKeys":{"keys":["1","2","ENTER"]}}}"#
        );
        assert!(request(&["pin", "press", "x"]).is_err());
        let r = request(&["paper", "low"]).unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"receiptPrinter":{"setPaper":{"paper":"PAPER_STATE_LOW"}}}"#
        );
        assert!(parse(&["paper", "WET"]).is_err());
    }

    #[test]
    fn panel_devices() {
        let cli = parse(&[
            "panel",
            "--device",
            "idc=unix:/tmp/a.sock",
            "--device",
            "pin=tcp:127.0.0.1:7001",
        ])
        .unwrap();
        let Command::Panel(p) = cli.command else {
            panic!()
        };
        assert_eq!(p.devices.len(), 2);
        assert_eq!(p.devices[0].name, "idc");
        assert!(parse(&["panel", "--device", "bad name=unix:/a"]).is_err());
        assert!(parse(&["panel", "--device", "idc=/a"]).is_err());
        assert!(parse(&["panel"]).is_err());
        let twice = parse(&["panel", "--device", "a=unix:/x", "--device", "a=unix:/y"]).unwrap();
        let Command::Panel(p) = twice.command else {
            panic!()
        };
        assert!(p.check().is_err());
    }

    #[test]
    fn sim_raw_is_strict() {
        assert!(request(&["sim", r#"{"openDevice":{}}"#]).unwrap().is_some());
        assert!(request(&["sim", r#"{"openDevice":{},"x":1}"#]).is_err());
        assert!(request(&["sim", "{}"]).is_err());
    }
}
