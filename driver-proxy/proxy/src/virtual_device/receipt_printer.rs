//! The virtual receipt printer: prints text and simple forms, saves each receipt in the state
//! directory as text and as PDF, models the paper roll (low / out / jam) and the customer taking
//! the receipt.
//!
//! Forms are templates with `${field}` (required) and `${field?}` (optional) placeholders: the
//! built-in `withdrawal`, `balance`, `transfer` and `pin-change`, or `<state>/forms/<name>.form`.
//! A field named `card` is always masked to first 6 / last 4 digits (invariant 3).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use openteller_proto::device::v1::{
    Capabilities, DeviceClass, DeviceState, DeviceStatus, MediaTaken, PaperState, PaperThreshold,
    PrintResult, PrinterMedia, Receipt, ReceiptList, ReceiptPrinterEvent, ReceiptPrinterResult,
    ReceiptPrinterStatus, command, command_completion, device_event, device_status,
    receipt_printer_command::Command as Ptr, receipt_printer_event::Event as PtrEvent,
    receipt_printer_result, receipt_printer_sim_action::Action as SimPtr, simulator_reply,
    simulator_request,
};
use serde::{Deserialize, Serialize};

use super::common::SimCommon;
use super::{common_action, now_ms, wrong_class};
use crate::backend::{Backend, CommandContext, Failure, Hub, Outcome};
use crate::codes::{generic, ptr};
use crate::store::{StateFile, StoreError};

/// Characters per receipt line; longer lines wrap.
pub const LINE_WIDTH: usize = 40;
/// Most lines one receipt may have.
pub const MAX_LINES: usize = 200;
/// Lines on a full roll.
const FULL_ROLL: u32 = 20_000;
/// At or below this many lines the paper is LOW.
const LOW_MARK: u32 = 1_000;

const BUILT_IN_FORMS: &[(&str, &str)] = &[
    ("withdrawal", include_str!("forms/withdrawal.form")),
    ("balance", include_str!("forms/balance.form")),
    ("transfer", include_str!("forms/transfer.form")),
    ("pin-change", include_str!("forms/pin-change.form")),
];

#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    /// Lines left on the roll.
    paper_lines: u32,
    jammed: bool,
    receipts_printed: u32,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            paper_lines: FULL_ROLL,
            jammed: false,
            receipts_printed: 0,
        }
    }
}

impl Persisted {
    fn paper(&self) -> PaperState {
        if self.jammed {
            PaperState::Jammed
        } else if self.paper_lines == 0 {
            PaperState::Out
        } else if self.paper_lines <= LOW_MARK {
            PaperState::Low
        } else {
            PaperState::Full
        }
    }
}

struct State {
    common: SimCommon,
    persisted: Persisted,
    media: PrinterMedia,
}

/// The virtual printer.
pub struct VirtualPrinter {
    state: Mutex<State>,
    store: StateFile,
    dir: PathBuf,
    hub: Arc<Hub>,
}

impl VirtualPrinter {
    /// Opens the printer; receipts go to `dir/receipts`.
    pub fn open(dir: &Path, hub: Arc<Hub>) -> Result<Arc<Self>, StoreError> {
        let store = StateFile::new(dir, "receipt-printer.json")?;
        let persisted = store.load()?.unwrap_or_default();
        let receipts = dir.join("receipts");
        std::fs::create_dir_all(&receipts).map_err(|source| StoreError::Io {
            path: receipts,
            source,
        })?;
        Ok(Arc::new(VirtualPrinter {
            state: Mutex::new(State {
                common: SimCommon::new(DeviceClass::ReceiptPrinter),
                persisted,
                media: PrinterMedia::NotPresent,
            }),
            store,
            dir: dir.to_owned(),
            hub,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn commit(&self, state: &State, paper_before: PaperState) -> Result<(), Failure> {
        self.store.save(&state.persisted).map_err(|e| {
            tracing::error!(error = %e, "cannot persist printer state");
            Failure::xfs(generic::INTERNAL_ERROR, "cannot persist the printer state")
        })?;
        let paper = state.persisted.paper();
        if paper != paper_before && paper != PaperState::Full {
            self.hub
                .event(ptr_event(PtrEvent::PaperThreshold(PaperThreshold {
                    paper: paper as i32,
                })));
        }
        Ok(())
    }

    fn form(&self, name: &str) -> Result<String, Failure> {
        if let Some((_, body)) = BUILT_IN_FORMS.iter().find(|(n, _)| *n == name) {
            return Ok((*body).to_owned());
        }
        let valid = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let path = self.dir.join("forms").join(format!("{name}.form"));
        match std::fs::read_to_string(&path) {
            Ok(body) if valid => Ok(body),
            _ => Err(Failure::xfs(
                ptr::FORMNOTFOUND,
                format!("no form named {name:?}"),
            )),
        }
    }

    fn print(&self, text: &str) -> Result<Outcome, Failure> {
        let lines = layout(text)?;
        let mut state = self.lock();
        let paper_before = state.persisted.paper();
        match paper_before {
            PaperState::Jammed => {
                return Err(Failure::xfs(ptr::PAPERJAMMED, "the paper is jammed"));
            }
            PaperState::Out => {
                return Err(Failure::xfs(ptr::PAPEROUT, "the printer is out of paper"));
            }
            _ => {}
        }
        let used = lines.len() as u32;
        if used > state.persisted.paper_lines {
            // The roll runs out mid-receipt: what was printed is lost, the paper is out.
            state.persisted.paper_lines = 0;
            self.commit(&state, paper_before)?;
            return Err(Failure::xfs(
                ptr::PAPEROUT,
                "the paper ran out while printing",
            ));
        }
        state.persisted.paper_lines -= used;
        state.persisted.receipts_printed += 1;
        let receipt_id = format!(
            "receipt-{:06}-{}",
            state.persisted.receipts_printed,
            now_ms()
        );
        let body = lines.join("\n") + "\n";
        let receipts = self.dir.join("receipts");
        let written = std::fs::write(receipts.join(format!("{receipt_id}.txt")), &body)
            .and_then(|()| std::fs::write(receipts.join(format!("{receipt_id}.pdf")), pdf(&lines)));
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot save the receipt");
            return Err(Failure::xfs(
                generic::INTERNAL_ERROR,
                "cannot save the receipt",
            ));
        }
        state.media = PrinterMedia::Presented;
        self.commit(&state, paper_before)?;
        Ok(Outcome::ok(ptr_result(
            receipt_printer_result::Result::Print(PrintResult {
                receipt_id,
                lines: used,
            }),
        )))
    }

    fn list(&self, limit: u32) -> Result<ReceiptList, Failure> {
        let limit = if limit == 0 { 20 } else { limit.min(200) } as usize;
        let dir = self.dir.join("receipts");
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .map_err(|_| Failure::xfs(generic::INTERNAL_ERROR, "cannot read the receipts"))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".txt").map(str::to_owned))
            .collect();
        // Ids start with a zero-padded sequence number, so the name order is the print order.
        names.sort_unstable_by(|a, b| b.cmp(a));
        let receipts = names
            .into_iter()
            .take(limit)
            .filter_map(|id| {
                let text = std::fs::read_to_string(dir.join(format!("{id}.txt"))).ok()?;
                let printed_at_unix_ms = id.rsplit('-').next()?.parse().ok()?;
                Some(Receipt {
                    receipt_id: id,
                    text,
                    printed_at_unix_ms,
                })
            })
            .collect();
        Ok(ReceiptList { receipts })
    }
}

/// Wraps text into receipt lines and rejects control characters.
fn layout(text: &str) -> Result<Vec<String>, Failure> {
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(Failure::xfs(
            ptr::CHARSETDATA,
            "only printable characters and line breaks can be printed",
        ));
    }
    let mut lines = Vec::new();
    for line in text.trim_end_matches('\n').split('\n') {
        let chars: Vec<char> = line.chars().collect();
        if chars.is_empty() {
            lines.push(String::new());
        }
        for chunk in chars.chunks(LINE_WIDTH) {
            lines.push(chunk.iter().collect());
        }
    }
    if lines.len() > MAX_LINES {
        return Err(Failure::xfs(
            ptr::MEDIAOVERFLOW,
            format!("a receipt has at most {MAX_LINES} lines"),
        ));
    }
    Ok(lines)
}

/// Fills a form template; every `${name}` needs a field, `${name?}` may be absent.
fn fill(template: &str, fields: &HashMap<String, String>) -> Result<String, Failure> {
    for (k, v) in fields {
        if k.len() > 32 || v.chars().count() > 64 || v.chars().any(char::is_control) {
            return Err(Failure::xfs(
                ptr::FIELDERROR,
                format!("field {k:?}: names up to 32, values up to 64 printable characters"),
            ));
        }
    }
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            return Err(Failure::xfs(
                ptr::FIELDERROR,
                "the form has an unterminated placeholder",
            ));
        };
        let spec = &rest[start + 2..start + len];
        let (name, optional) = spec.strip_suffix('?').map_or((spec, false), |n| (n, true));
        match fields.get(name) {
            Some(v) if name == "card" => out.push_str(&mask_pan(v)),
            Some(v) => out.push_str(v),
            None if optional => {}
            None => {
                return Err(Failure::xfs(
                    ptr::FIELDNOTFOUND,
                    format!("the form needs field {name:?}"),
                ));
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// First 6 and last 4 digits of a card number, the rest as `*`.
pub fn mask_pan(pan: &str) -> String {
    let chars: Vec<char> = pan.chars().collect();
    if chars.len() <= 10 {
        return "*".repeat(chars.len());
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 6 || i >= chars.len() - 4 {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// A one-page PDF of the receipt, 80 mm wide, in Courier. Characters outside Latin-1 print
/// as `?` (the base-14 fonts have no CJK glyphs); the text file keeps them.
fn pdf(lines: &[String]) -> Vec<u8> {
    use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str};
    let (catalog, tree, page_id, font, contents) = (
        Ref::new(1),
        Ref::new(2),
        Ref::new(3),
        Ref::new(4),
        Ref::new(5),
    );
    let leading = 11.0;
    let width = 227.0;
    let height = 30.0 + leading * lines.len().max(1) as f32;
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids([page_id]).count(1);
    let mut page = pdf.page(page_id);
    page.media_box(Rect::new(0.0, 0.0, width, height));
    page.parent(tree);
    page.contents(contents);
    page.resources().fonts().pair(Name(b"F1"), font);
    page.finish();
    pdf.type1_font(font).base_font(Name(b"Courier"));
    let mut content = Content::new();
    content.begin_text();
    content.set_font(Name(b"F1"), 9.0);
    content.next_line(10.0, height - 20.0);
    for line in lines {
        let latin1: Vec<u8> = line
            .chars()
            .map(|c| u8::try_from(u32::from(c)).unwrap_or(b'?'))
            .collect();
        content.show(Str(&latin1));
        content.next_line(0.0, -leading);
    }
    content.end_text();
    pdf.stream(contents, &content.finish());
    pdf.finish()
}

fn ptr_event(e: PtrEvent) -> device_event::Event {
    device_event::Event::ReceiptPrinter(ReceiptPrinterEvent { event: Some(e) })
}

fn ptr_result(r: receipt_printer_result::Result) -> command_completion::Result {
    command_completion::Result::ReceiptPrinter(ReceiptPrinterResult { result: Some(r) })
}

#[async_trait]
impl Backend for VirtualPrinter {
    fn device_class(&self) -> DeviceClass {
        DeviceClass::ReceiptPrinter
    }

    fn capabilities(&self) -> Capabilities {
        super::capabilities(
            DeviceClass::ReceiptPrinter,
            format!("Virtual thermal receipt printer, {LINE_WIDTH} columns"),
            &["SetPaper", "TakeReceipt", "ListReceipts"],
        )
    }

    fn status(&self) -> DeviceStatus {
        let state = self.lock();
        DeviceStatus {
            device_class: DeviceClass::ReceiptPrinter as i32,
            device: state.common.device_state() as i32,
            queued_commands: 0,
            detail: Some(device_status::Detail::ReceiptPrinter(
                ReceiptPrinterStatus {
                    paper: state.persisted.paper() as i32,
                    media: state.media as i32,
                    receipts_printed: state.persisted.receipts_printed,
                },
            )),
        }
    }

    async fn execute(&self, command: command::Command, _ctx: &CommandContext) -> Outcome {
        let name = crate::backend::command_name(&command);
        let command::Command::ReceiptPrinter(openteller_proto::device::v1::ReceiptPrinterCommand {
            command: Some(c),
        }) = command
        else {
            return super::not_this_class();
        };
        let injected = {
            let mut state = self.lock();
            if let Err(f) = state.common.check_ready(matches!(c, Ptr::Reset(_))) {
                return f.into();
            }
            state.common.take_error(name)
        };
        let outcome: Outcome = if let Some(error) = injected {
            let mut state = self.lock();
            let before = state.persisted.paper();
            if error == ptr::PAPERJAMMED
                || error == ptr::MEDIAJAMMED
                || error == generic::HARDWARE_ERROR
            {
                state.persisted.jammed = error != generic::HARDWARE_ERROR;
                state.media = if state.persisted.jammed {
                    PrinterMedia::Jammed
                } else {
                    state.media
                };
                state.common.state = DeviceState::HardwareError;
            } else if error == ptr::PAPEROUT {
                state.persisted.paper_lines = 0;
            }
            let _ = self.commit(&state, before);
            Failure::xfs(error, format!("simulated error on {name}")).into()
        } else {
            match c {
                Ptr::PrintText(p) => self.print(&p.text).into(),
                Ptr::PrintForm(f) => self
                    .form(&f.form_name)
                    .and_then(|t| fill(&t, &f.fields))
                    .and_then(|text| self.print(&text))
                    .into(),
                Ptr::Reset(_) => {
                    let mut state = self.lock();
                    let before = state.persisted.paper();
                    state.persisted.jammed = false;
                    state.media = PrinterMedia::NotPresent;
                    state.common.state = DeviceState::Online;
                    self.commit(&state, before).map(|()| Outcome::done()).into()
                }
            }
        };
        self.hub.status(self.status());
        outcome
    }

    async fn simulate(
        &self,
        action: simulator_request::Action,
    ) -> Result<Option<simulator_reply::Data>, Failure> {
        use simulator_request::Action;
        if let Some(r) = common_action(&mut self.lock().common, &action) {
            return r.map(|()| None);
        }
        match action {
            Action::SetDeviceState(s) => self.lock().common.set_state(s.device()).map(|()| None),
            Action::ReceiptPrinter(a) => match a.action {
                Some(SimPtr::SetPaper(p)) => {
                    let mut state = self.lock();
                    let before = state.persisted.paper();
                    match p.paper() {
                        PaperState::Full => {
                            state.persisted.paper_lines = FULL_ROLL;
                            state.persisted.jammed = false;
                        }
                        PaperState::Low => {
                            state.persisted.paper_lines = LOW_MARK;
                            state.persisted.jammed = false;
                        }
                        PaperState::Out => {
                            state.persisted.paper_lines = 0;
                            state.persisted.jammed = false;
                        }
                        PaperState::Jammed => {
                            state.persisted.jammed = true;
                            state.common.state = DeviceState::HardwareError;
                        }
                        PaperState::Unspecified => {
                            return Err(Failure::invalid_data("choose FULL, LOW, OUT or JAMMED"));
                        }
                    }
                    self.commit(&state, before).map(|()| None)
                }
                Some(SimPtr::TakeReceipt(_)) => {
                    let mut state = self.lock();
                    if state.media != PrinterMedia::Presented {
                        return Err(Failure::sequence("there is no receipt in the slot"));
                    }
                    state.media = PrinterMedia::NotPresent;
                    drop(state);
                    self.hub
                        .event(ptr_event(PtrEvent::MediaTaken(MediaTaken {})));
                    Ok(None)
                }
                Some(SimPtr::ListReceipts(l)) => self
                    .list(l.limit)
                    .map(|r| Some(simulator_reply::Data::Receipts(r))),
                None => Err(Failure::invalid_data("the printer action is empty")),
            },
            _ => Err(wrong_class(DeviceClass::ReceiptPrinter)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_fill_mask_and_refuse() {
        let mut f = HashMap::new();
        f.insert("card".to_owned(), "6222020200112233445".to_owned());
        f.insert("x".to_owned(), "1".to_owned());
        assert_eq!(
            fill("C ${card} ${x} ${y?}.", &f).unwrap(),
            "C 622202*********3445 1 ."
        );
        assert_eq!(
            fill("${nope}", &f).unwrap_err().error,
            Some(ptr::FIELDNOTFOUND)
        );
        assert_eq!(fill("${x", &f).unwrap_err().error, Some(ptr::FIELDERROR));
        f.insert("bad".to_owned(), "a\u{7}b".to_owned());
        assert_eq!(fill("${x}", &f).unwrap_err().error, Some(ptr::FIELDERROR));
    }

    #[test]
    fn layout_wraps_and_limits() {
        let long = "x".repeat(LINE_WIDTH + 5);
        assert_eq!(layout(&long).unwrap().len(), 2);
        assert!(layout("a\u{1b}[2J").is_err());
        assert!(layout(&"l\n".repeat(MAX_LINES + 1)).is_err());
    }

    #[test]
    fn built_in_forms_fill_with_their_fields() {
        let mut f = HashMap::new();
        for k in [
            "terminal",
            "date",
            "time",
            "card",
            "amount",
            "currency",
            "stan",
            "rrn",
            "balance",
            "available",
            "to_account",
        ] {
            f.insert(k.to_owned(), "1234567890123".to_owned());
        }
        for (name, body) in BUILT_IN_FORMS {
            let text = fill(body, &f).unwrap_or_else(|e| panic!("{name}: {}", e.description));
            assert!(layout(&text).is_ok(), "{name}");
        }
    }

    #[test]
    fn pdf_is_a_pdf() {
        let bytes = pdf(&["HELLO".into(), "中文".into()]);
        assert!(bytes.starts_with(b"%PDF-"));
        assert!(bytes.windows(5).any(|w| w == b"HELLO"));
    }
}
