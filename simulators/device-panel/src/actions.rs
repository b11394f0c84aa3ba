//! Building simulator requests from what testers type, and describing them without their data.

use openteller_proto::device::v1::ApduRule;
use openteller_proto::device::v1::{
    Card, CardReaderSimAction, CashDispenserSimAction, CashUnit, ChipCard, CompletionCode,
    DeviceState, InvalidCard, MagneticCard, MediaStatus, PaperState, PinPadSimAction,
    ReceiptPrinterSimAction, SimulatorReply, SimulatorRequest, card, card_reader_sim_action,
    cash_dispenser_sim_action, pin_pad_sim_action, receipt_printer_sim_action, simulator_request,
};

/// Wraps one action into a request.
pub(crate) fn request(action: simulator_request::Action) -> SimulatorRequest {
    SimulatorRequest {
        action: Some(action),
    }
}

/// A card reader action.
pub(crate) fn card_reader(action: card_reader_sim_action::Action) -> SimulatorRequest {
    request(simulator_request::Action::CardReader(CardReaderSimAction {
        action: Some(action),
    }))
}

/// A PIN pad action.
pub(crate) fn pin_pad(action: pin_pad_sim_action::Action) -> SimulatorRequest {
    request(simulator_request::Action::PinPad(PinPadSimAction {
        action: Some(action),
    }))
}

/// A cash dispenser action.
pub(crate) fn cash_dispenser(action: cash_dispenser_sim_action::Action) -> SimulatorRequest {
    request(simulator_request::Action::CashDispenser(
        CashDispenserSimAction {
            action: Some(action),
        },
    ))
}

/// A receipt printer action.
pub(crate) fn receipt_printer(action: receipt_printer_sim_action::Action) -> SimulatorRequest {
    request(simulator_request::Action::ReceiptPrinter(
        ReceiptPrinterSimAction {
            action: Some(action),
        },
    ))
}

/// True when the reply's completion is SUCCESS.
pub(crate) fn succeeded(reply: &SimulatorReply) -> bool {
    reply
        .result
        .as_ref()
        .is_some_and(|c| c.code == CompletionCode::Success as i32)
}

/// Decodes hex, ignoring spaces and colons (`3B 6E 00`, `3b:6e:00`, `3B6E00`).
pub(crate) fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !matches!(b, b' ' | b':' | b'\t'))
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("hex needs an even number of digits".to_owned());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                // Both digits are below 16, so the byte fits.
                (Some(h), Some(l)) => Ok(u8::try_from(h * 16 + l).unwrap_or_default()),
                _ => Err("hex may only contain 0-9 and A-F".to_owned()),
            }
        })
        .collect()
}

/// Parses an enum value by its full proto name (`DEVICE_STATE_ONLINE`) or without the prefix
/// (`ONLINE`, `online`, `hardware-error`).
pub(crate) fn parse_enum<E>(
    text: &str,
    prefix: &str,
    from_str_name: fn(&str) -> Option<E>,
    what: &str,
) -> Result<E, String> {
    let upper = text.trim().to_ascii_uppercase().replace('-', "_");
    let full = if upper.starts_with(prefix) {
        upper
    } else {
        format!("{prefix}{upper}")
    };
    from_str_name(&full).ok_or_else(|| format!("{text:?} is not a {what}"))
}

/// A device state as the Status dialog offers it.
pub(crate) fn parse_device_state(text: &str) -> Result<DeviceState, String> {
    parse_enum(
        text,
        "DEVICE_STATE_",
        DeviceState::from_str_name,
        "device state (e.g. ONLINE, HARDWARE_ERROR)",
    )
}

/// A card reader media state.
pub(crate) fn parse_media(text: &str) -> Result<MediaStatus, String> {
    parse_enum(
        text,
        "MEDIA_STATUS_",
        MediaStatus::from_str_name,
        "media state (e.g. NOT_PRESENT, JAMMED)",
    )
}

/// A paper state.
pub(crate) fn parse_paper(text: &str) -> Result<PaperState, String> {
    parse_enum(
        text,
        "PAPER_STATE_",
        PaperState::from_str_name,
        "paper state (FULL, LOW, OUT or JAMMED)",
    )
}

/// The keys a PIN pad accepts from the simulator.
pub(crate) const FUNCTION_KEYS: [&str; 4] = ["ENTER", "CANCEL", "CLEAR", "BACKSPACE"];

/// Normalises PIN pad key names: digits (a run like `1234` is split into single keys) and the
/// function keys, case-insensitive. The error never repeats what was typed: it may be a PIN.
pub(crate) fn parse_keys<S: AsRef<str>>(tokens: &[S]) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    for token in tokens {
        let token = token.as_ref().trim();
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            keys.extend(token.chars().map(String::from));
            continue;
        }
        let upper = token.to_ascii_uppercase();
        if let Some(k) = FUNCTION_KEYS.iter().find(|k| **k == upper) {
            keys.push((*k).to_owned());
        } else {
            return Err(format!(
                "key {} of {} is not a digit or one of {}",
                keys.len() + 1,
                tokens.len(),
                FUNCTION_KEYS.join(", ")
            ));
        }
    }
    if keys.is_empty() {
        return Err("give at least one key".to_owned());
    }
    Ok(keys)
}

/// What a tester tells about a card on the command line.
#[derive(Debug, Default, Clone)]
pub(crate) struct CardSpec {
    /// Track 1 contents.
    pub(crate) track1: Option<String>,
    /// Track 2 contents.
    pub(crate) track2: Option<String>,
    /// Track 3 contents.
    pub(crate) track3: Option<String>,
    /// Hex ATR: makes it a chip card.
    pub(crate) chip_atr: Option<String>,
    /// `PREFIX=RESPONSE` hex pairs for the chip.
    pub(crate) apdu: Vec<String>,
    /// An unreadable card.
    pub(crate) invalid: bool,
}

impl CardSpec {
    /// True when nothing about the card was given.
    pub(crate) fn is_empty(&self) -> bool {
        self.track1.is_none()
            && self.track2.is_none()
            && self.track3.is_none()
            && self.chip_atr.is_none()
            && self.apdu.is_empty()
            && !self.invalid
    }

    /// The card: invalid, chip (with the tracks as its stripe) or magnetic.
    pub(crate) fn to_card(&self, name: &str) -> Result<Card, String> {
        let stripe = MagneticCard {
            track1: self.track1.clone().unwrap_or_default(),
            track2: self.track2.clone().unwrap_or_default(),
            track3: self.track3.clone().unwrap_or_default(),
        };
        let kind = if self.invalid {
            if self.chip_atr.is_some() || !self.apdu.is_empty() || stripe != MagneticCard::default()
            {
                return Err("an invalid card has no tracks or chip".to_owned());
            }
            card::Kind::Invalid(InvalidCard {})
        } else if let Some(atr) = &self.chip_atr {
            let atr = parse_hex(atr).map_err(|e| format!("--chip-atr: {e}"))?;
            let apdu_rules = self
                .apdu
                .iter()
                .map(|r| parse_apdu_rule(r))
                .collect::<Result<_, _>>()?;
            let stripe = (stripe != MagneticCard::default()).then_some(stripe);
            card::Kind::Chip(ChipCard {
                atr,
                apdu_rules,
                stripe,
            })
        } else if !self.apdu.is_empty() {
            return Err("--apdu needs --chip-atr".to_owned());
        } else {
            card::Kind::Magnetic(stripe)
        };
        Ok(Card {
            name: name.to_owned(),
            kind: Some(kind),
        })
    }
}

/// `PREFIX=RESPONSE`, both hex.
fn parse_apdu_rule(text: &str) -> Result<ApduRule, String> {
    let (prefix, response) = text
        .split_once('=')
        .ok_or_else(|| format!("--apdu {text:?} must be COMMAND_PREFIX=RESPONSE (hex)"))?;
    Ok(ApduRule {
        command_prefix: parse_hex(prefix).map_err(|e| format!("--apdu prefix: {e}"))?,
        response: parse_hex(response).map_err(|e| format!("--apdu response: {e}"))?,
    })
}

/// A cash unit table as JSON: an array of proto3-JSON `CashUnit`s or `{"units": [...]}`.
pub(crate) fn parse_cash_units(json: &str) -> Result<Vec<CashUnit>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("cash units: {e}"))?;
    let list = match value {
        serde_json::Value::Array(_) => value,
        serde_json::Value::Object(mut map) if map.len() == 1 && map.contains_key("units") => {
            map.remove("units").unwrap_or_default()
        }
        _ => {
            return Err(
                "cash units must be a JSON array of cash units or {\"units\": [...]}".to_owned(),
            );
        }
    };
    serde_json::from_value(list).map_err(|e| format!("cash units: {e}"))
}

/// A name for logs: the action's kind, never its data (key presses are PIN digits).
pub(crate) fn action_label(request: &SimulatorRequest) -> &'static str {
    use card_reader_sim_action::Action as Idc;
    use cash_dispenser_sim_action::Action as Cdm;
    use pin_pad_sim_action::Action as Pin;
    use receipt_printer_sim_action::Action as Ptr;
    use simulator_request::Action;
    match &request.action {
        None => "(empty)",
        Some(Action::SetError(_)) => "SetError",
        Some(Action::ClearErrors(_)) => "ClearErrors",
        Some(Action::SetDeviceState(_)) => "SetDeviceState",
        Some(Action::OpenDevice(_)) => "OpenDevice",
        Some(Action::CloseDevice(_)) => "CloseDevice",
        Some(Action::CardReader(a)) => match &a.action {
            None => "CardReader.(empty)",
            Some(Idc::InsertCard(_)) => "CardReader.InsertCard",
            Some(Idc::TakeCard(_)) => "CardReader.TakeCard",
            Some(Idc::NotTakeCard(_)) => "CardReader.NotTakeCard",
            Some(Idc::PutCard(_)) => "CardReader.PutCard",
            Some(Idc::DeleteCard(_)) => "CardReader.DeleteCard",
            Some(Idc::ListCards(_)) => "CardReader.ListCards",
            Some(Idc::SetRetainTimeout(_)) => "CardReader.SetRetainTimeout",
        },
        Some(Action::PinPad(a)) => match &a.action {
            None => "PinPad.(empty)",
            Some(Pin::PressKeys(_)) => "PinPad.PressKeys",
        },
        Some(Action::CashDispenser(a)) => match &a.action {
            None => "CashDispenser.(empty)",
            Some(Cdm::SetCashUnits(_)) => "CashDispenser.SetCashUnits",
            Some(Cdm::TakeItems(_)) => "CashDispenser.TakeItems",
            Some(Cdm::SetTakeTimeout(_)) => "CashDispenser.SetTakeTimeout",
        },
        Some(Action::ReceiptPrinter(a)) => match &a.action {
            None => "ReceiptPrinter.(empty)",
            Some(Ptr::SetPaper(_)) => "ReceiptPrinter.SetPaper",
            Some(Ptr::TakeReceipt(_)) => "ReceiptPrinter.TakeReceipt",
            Some(Ptr::ListReceipts(_)) => "ReceiptPrinter.ListReceipts",
        },
    }
}

/// Checks that a request names an action all the way down (the proxy refuses empty ones with a
/// gRPC error rather than a completion).
pub(crate) fn check_not_empty(request: &SimulatorRequest) -> Result<(), String> {
    let label = action_label(request);
    if label.ends_with("(empty)") {
        Err(format!(
            "the simulator request has no action ({label}); e.g. {{\"openDevice\":{{}}}}"
        ))
    } else {
        Ok(())
    }
}

/// Parses a `SimulatorRequest` in proto3 JSON; unknown fields are refused.
pub(crate) fn parse_request(json: &[u8]) -> Result<SimulatorRequest, String> {
    let request: SimulatorRequest = serde_json::from_slice(json)
        .map_err(|e| format!("not a SimulatorRequest in proto3 JSON: {e}"))?;
    check_not_empty(&request)?;
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_forms() {
        assert_eq!(parse_hex("3B6E00").unwrap(), vec![0x3b, 0x6e, 0]);
        assert_eq!(parse_hex("3b:6e 00").unwrap(), vec![0x3b, 0x6e, 0]);
        assert!(parse_hex("3B6").is_err());
        assert!(parse_hex("ZZ").is_err());
        assert_eq!(parse_hex("").unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn enums_by_short_or_full_name() {
        assert_eq!(
            parse_device_state("hardware-error").unwrap(),
            DeviceState::HardwareError
        );
        assert_eq!(
            parse_device_state("DEVICE_STATE_ONLINE").unwrap(),
            DeviceState::Online
        );
        assert_eq!(parse_media("jammed").unwrap(), MediaStatus::Jammed);
        assert_eq!(parse_paper("OUT").unwrap(), PaperState::Out);
        assert!(parse_paper("WET").is_err());
    }

    #[test]
    fn keys_are_normalised_and_never_echoed() {
        assert_eq!(
            parse_keys(&["12", "3", "enter"]).unwrap(),
            vec!["1", "2", "3", "ENTER"]
        );
        let err = parse_keys(&["12a4"]).unwrap_err();
        assert!(!err.contains("12a4"), "{err}");
        assert!(parse_keys::<&str>(&[]).is_err());
    }

    #[test]
    fn card_kinds() {
        let magnetic = CardSpec {
            track2: Some("6222=2512".into()),
            ..CardSpec::default()
        };
        assert!(
            matches!(magnetic.to_card("").unwrap().kind, Some(card::Kind::Magnetic(m)) if m.track2 == "6222=2512")
        );
        let chip = CardSpec {
            chip_atr: Some("3B00".into()),
            apdu: vec!["00A4=9000".into()],
            ..CardSpec::default()
        };
        let Some(card::Kind::Chip(c)) = chip.to_card("ic").unwrap().kind else {
            panic!("not a chip card")
        };
        assert_eq!(c.atr, vec![0x3b, 0]);
        assert_eq!(c.apdu_rules[0].response, vec![0x90, 0]);
        assert!(c.stripe.is_none());
        let invalid = CardSpec {
            invalid: true,
            ..CardSpec::default()
        };
        assert!(matches!(
            invalid.to_card("x").unwrap().kind,
            Some(card::Kind::Invalid(_))
        ));
        let bad = CardSpec {
            invalid: true,
            track2: Some("1".into()),
            ..CardSpec::default()
        };
        assert!(bad.to_card("").is_err());
        assert!(CardSpec::default().is_empty());
    }

    #[test]
    fn requests_parse_strictly() {
        assert!(parse_request(br#"{"openDevice":{}}"#).is_ok());
        assert!(parse_request(br#"{"openDevice":{},"bogus":1}"#).is_err());
        assert!(parse_request(br#"{}"#).is_err());
        assert!(parse_request(br#"{"cardReader":{}}"#).is_err());
        assert!(parse_request(b"not json").is_err());
        let r = parse_request(br#"{"cardReader":{"insertCard":{"libraryName":"a"}}}"#).unwrap();
        assert_eq!(action_label(&r), "CardReader.InsertCard");
    }

    #[test]
    fn cash_units_in_both_shapes() {
        let a = parse_cash_units(
            r#"[{"number":1,"currency":"CNY","denomination":"10000","count":500}]"#,
        )
        .unwrap();
        assert_eq!(a[0].denomination, 10000);
        let b = parse_cash_units(r#"{"units":[{"number":2}]}"#).unwrap();
        assert_eq!(b[0].number, 2);
        assert!(parse_cash_units(r#"{"unit":[]}"#).is_err());
        assert!(parse_cash_units(r#"[{"nope":1}]"#).is_err());
    }
}
