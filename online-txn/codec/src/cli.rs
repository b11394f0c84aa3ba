//! The command line for people who debug messages, mounted by the `online-txn` binary as
//! `online-txn codec ...` (and runnable alone as `online-txn-codec`).
//!
//! ```text
//! online-txn codec decode --spec <profile|path> [--hex <HEX>] [--framed binary2|bcd2|ascii4] [--compact]
//! online-txn codec encode --spec <profile|path> [--input <file.json>] [--framed ...]
//! online-txn codec convert --from <format> --to <format> [--map <mapping.toml>] [--input <file>]
//! online-txn codec profiles [<name>]
//! ```
//!
//! `decode` prints the message as JSON (see [`crate::message`] for the convention);
//! `encode` reads that JSON (stdin by default) and prints uppercase hex. Hex input may
//! contain whitespace. Errors go to stderr as `error[CODE]: message`, with exit codes:
//!
//! | exit | meaning |
//! |---|---|
//! | 0 | success |
//! | 64 | usage: bad arguments (clap's message, or `CODEC_USAGE`), unknown profile (`CODEC_UNKNOWN_PROFILE`) |
//! | 65 | bad data: hex, JSON, message, record (`CODEC_BAD_HEX`, `CODEC_BAD_LENGTH`, …) |
//! | 66 | a spec or input file cannot be read (`CODEC_IO`) |
//! | 74 | reading stdin or writing stdout failed (`CODEC_IO`) |
//! | 78 | a spec file is invalid (`CODEC_BAD_SPEC`) |

use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::BytesMut;
use clap::{Parser, Subcommand};

use crate::encoding::{from_hex, to_hex};
use crate::error::CodecError;
use crate::formats::Format;
use crate::framing::{Framer, LengthPrefix};
use crate::mapping::Mapping;
use crate::message::Message;
use crate::spec::Spec;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: command line usage error (EX_USAGE).
pub const EXIT_USAGE: u8 = 64;
/// Exit code: bad input data (EX_DATAERR).
pub const EXIT_DATAERR: u8 = 65;
/// Exit code: an input file cannot be read (EX_NOINPUT).
pub const EXIT_NOINPUT: u8 = 66;
/// Exit code: stdin/stdout failure (EX_IOERR).
pub const EXIT_IOERR: u8 = 74;
/// Exit code: invalid spec file (EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

/// `online-txn codec`: ISO 8583 and record format codec for debugging messages.
#[derive(Debug, Parser)]
#[command(name = "online-txn codec", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The codec's subcommands; a parent CLI can embed this enum with `#[command(subcommand)]`.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode a message given in hex and print its fields as JSON.
    Decode {
        /// Built-in profile (cup, iso87-ascii) or path of a profile .toml file.
        #[arg(long)]
        spec: String,
        /// The message in hex (whitespace allowed); read from stdin when absent.
        #[arg(long)]
        hex: Option<String>,
        /// The hex starts with a length prefix to check and strip.
        #[arg(long, value_parser = ["binary2", "bcd2", "ascii4"])]
        framed: Option<String>,
        /// Print compact JSON on one line instead of pretty JSON.
        #[arg(long)]
        compact: bool,
    },
    /// Read a message as JSON (stdin, or --input) and print it as hex.
    Encode {
        /// Built-in profile (cup, iso87-ascii) or path of a profile .toml file.
        #[arg(long)]
        spec: String,
        /// Read the JSON from this file instead of stdin.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Put a length prefix in front of the message.
        #[arg(long, value_parser = ["binary2", "bcd2", "ascii4"])]
        framed: Option<String>,
    },
    /// Convert one message between formats (ISO 8583 as hex, others as text).
    Convert {
        /// Source format: a built-in profile or a format spec file.
        #[arg(long)]
        from: String,
        /// Target format: a built-in profile or a format spec file.
        #[arg(long)]
        to: String,
        /// Mapping spec file; without it, record keys are copied as they are.
        #[arg(long)]
        map: Option<PathBuf>,
        /// Read the message from this file instead of stdin.
        #[arg(long)]
        input: Option<PathBuf>,
    },
    /// List the built-in profiles, or print one's TOML (a starting point for your own).
    Profiles {
        /// Profile to print.
        name: Option<String>,
    },
}

/// Runs the CLI with these arguments (the first is the program name) on the process's
/// stdin, stdout and stderr.
pub fn cli_main<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let code = run(
        args,
        &mut stdin.lock(),
        &mut stdout.lock(),
        &mut stderr.lock(),
    );
    ExitCode::from(code)
}

/// Runs the CLI on the given streams and returns the exit code.
pub fn run<I, T>(
    args: I,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => execute(&cli.command, stdin, stdout, stderr),
        Err(e) => {
            let text = e.render().to_string();
            match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    let _ = stdout.write_all(text.as_bytes());
                    EXIT_OK
                }
                _ => {
                    let _ = stderr.write_all(text.as_bytes());
                    EXIT_USAGE
                }
            }
        }
    }
}

/// Failure of a command: a codec error, or a broken stdin/stdout.
enum Failure {
    Codec(CodecError),
    Stream(std::io::Error),
    Usage(String),
}

impl From<CodecError> for Failure {
    fn from(e: CodecError) -> Self {
        Failure::Codec(e)
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure::Stream(e)
    }
}

/// The exit code for an error.
pub fn exit_code(e: &CodecError) -> u8 {
    match e {
        CodecError::UnknownProfile { .. } => EXIT_USAGE,
        CodecError::Io { .. } => EXIT_NOINPUT,
        CodecError::BadSpec { .. } => EXIT_CONFIG,
        _ => EXIT_DATAERR,
    }
}

/// Runs one subcommand and returns the exit code.
pub fn execute(
    cmd: &Command,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
    stderr: &mut dyn Write,
) -> u8 {
    match execute_inner(cmd, stdin, stdout) {
        Ok(()) => EXIT_OK,
        Err(Failure::Codec(e)) => {
            let _ = writeln!(stderr, "error[{}]: {e}", e.code());
            exit_code(&e)
        }
        Err(Failure::Stream(e)) => {
            let _ = writeln!(stderr, "error[CODEC_IO]: stdin/stdout: {e}");
            EXIT_IOERR
        }
        Err(Failure::Usage(msg)) => {
            let _ = writeln!(stderr, "error[CODEC_USAGE]: {msg}");
            EXIT_USAGE
        }
    }
}

fn read_input(input: Option<&PathBuf>, stdin: &mut dyn Read) -> Result<Vec<u8>, Failure> {
    match input {
        Some(p) => std::fs::read(p).map_err(|e| {
            Failure::Codec(CodecError::Io {
                path: p.display().to_string(),
                detail: e.to_string(),
            })
        }),
        None => {
            let mut buf = Vec::new();
            stdin.read_to_end(&mut buf)?;
            Ok(buf)
        }
    }
}

fn framer(name: &Option<String>) -> Option<Framer> {
    name.as_deref()
        .and_then(LengthPrefix::parse)
        .map(|p| Framer::new(p, usize::MAX))
}

fn hex_text(bytes: &[u8]) -> Result<Vec<u8>, Failure> {
    let text = std::str::from_utf8(bytes).map_err(|_| CodecError::BadHex {
        detail: "input is not text".into(),
    })?;
    Ok(from_hex(text)?)
}

fn execute_inner(
    cmd: &Command,
    stdin: &mut dyn Read,
    stdout: &mut dyn Write,
) -> Result<(), Failure> {
    match cmd {
        Command::Decode {
            spec,
            hex,
            framed,
            compact,
        } => {
            let spec = Spec::by_name_or_path(spec)?;
            let mut bytes = match hex {
                Some(h) => from_hex(h)?,
                None => hex_text(&read_input(None, stdin)?)?,
            };
            if bytes.is_empty() {
                return Err(Failure::Usage(
                    "no message: give --hex <HEX> or pipe the hex on stdin".into(),
                ));
            }
            if let Some(f) = framer(framed) {
                let mut buf = BytesMut::from(&bytes[..]);
                let frame = f
                    .decode_frame(&mut buf)?
                    .ok_or_else(|| CodecError::BadFrame {
                        detail: "the frame is shorter than its length prefix says".into(),
                    })?;
                if !buf.is_empty() {
                    return Err(CodecError::BadFrame {
                        detail: format!("{} byte(s) after the frame", buf.len()),
                    }
                    .into());
                }
                bytes = frame.to_vec();
            }
            let msg = spec.decode(&bytes)?;
            let json = if *compact {
                msg.to_json()
            } else {
                msg.to_json_pretty()
            };
            writeln!(stdout, "{json}")?;
        }
        Command::Encode {
            spec,
            input,
            framed,
        } => {
            let spec = Spec::by_name_or_path(spec)?;
            let json = read_input(input.as_ref(), stdin)?;
            let text = std::str::from_utf8(&json).map_err(|_| CodecError::BadJson {
                detail: "input is not UTF-8".into(),
            })?;
            let msg = Message::from_json(text)?;
            let mut bytes = spec.encode(&msg)?;
            if let Some(f) = framer(framed) {
                bytes = f.frame(&bytes)?;
            }
            writeln!(stdout, "{}", to_hex(&bytes))?;
        }
        Command::Convert {
            from,
            to,
            map,
            input,
        } => {
            let from = Format::by_name_or_path(from)?;
            let to = Format::by_name_or_path(to)?;
            let mut data = read_input(input.as_ref(), stdin)?;
            if from.is_binary() {
                data = hex_text(&data)?;
            }
            let record = from.decode_record(&data)?;
            let record = match map {
                Some(p) => Mapping::from_file(p)?.apply(&record)?,
                None => record,
            };
            let out = to.encode_record(&record)?;
            if to.is_binary() {
                writeln!(stdout, "{}", to_hex(&out))?;
            } else {
                stdout.write_all(&out)?;
                writeln!(stdout)?;
            }
        }
        Command::Profiles { name } => match name {
            None => {
                for n in Spec::builtin_names() {
                    let s = Spec::builtin(n)?;
                    writeln!(stdout, "{n}\t{}", s.description())?;
                }
            }
            Some(n) => {
                let src = Spec::builtin_source(n)
                    .ok_or_else(|| CodecError::UnknownProfile { name: n.clone() })?;
                stdout.write_all(src.as_bytes())?;
            }
        },
    }
    stdout.flush()?;
    Ok(())
}
