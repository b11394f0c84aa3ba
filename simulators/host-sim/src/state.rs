//! The host's books: accounts, remembered transactions (for retransmissions and
//! reversals), the in-memory transaction log and counters.
//!
//! Everything here is synchronous and runs under one mutex that is never held across an
//! `.await`; each request holds it for a few microseconds.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::mpsc;

use bytes::Bytes;
use openteller_crypto::zeroize::Zeroizing;
use serde::Serialize;

use crate::accounts::{AccountSeed, Status};
use crate::clock;
use crate::wire::{mask_pan, rc};

/// Identity of a transaction: MTI class (2 financial, 4 reversal), terminal (F41), STAN
/// (F11) and local date (F13).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TxnKey {
    pub(crate) class: u8,
    pub(crate) terminal: String,
    pub(crate) stan: u32,
    pub(crate) date: u16,
}

/// A clear PIN kept to undo a PIN change; never shown by `Debug`.
#[derive(Clone)]
pub(crate) struct KeptPin(pub(crate) Zeroizing<String>);

impl std::fmt::Debug for KeptPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeptPin(***)")
    }
}

/// What an approved transaction did, so that a reversal can undo it.
#[derive(Debug, Clone)]
pub(crate) enum Effect {
    /// Nothing to undo (declined, inquiry, reversal).
    None,
    /// The PIN of `pan` went from `old` to `new`.
    PinChange {
        pan: String,
        old: KeptPin,
        new: KeptPin,
    },
    /// Money left `pan` on host day `day`.
    Withdrawal { pan: String, amount: i64, day: i64 },
    /// Money moved from `from` to `to`.
    Transfer {
        from: String,
        to: String,
        amount: i64,
    },
}

/// A remembered transaction.
#[derive(Debug)]
pub(crate) struct Record {
    /// Hash of the request content (MTI repeat digit and MAC excluded).
    pub(crate) fingerprint: u64,
    /// The encoded response, answered again to a retransmission; `None` marks an original
    /// that was reversed before it arrived: it is declined if it ever does.
    pub(crate) response: Option<Bytes>,
    pub(crate) effect: Effect,
    pub(crate) kind: TxnKind,
    pub(crate) rrn: String,
    pub(crate) reversed: bool,
}

/// Kind of an applied transaction in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnKind {
    /// Balance inquiry (never journaled: it changes nothing).
    Inquiry,
    /// Cash withdrawal.
    Withdrawal,
    /// Transfer between two accounts.
    Transfer,
    /// PIN change.
    PinChange,
    /// Reversal of an approved withdrawal, transfer or PIN change.
    Reversal,
}

/// The original transaction a reversal undid.
#[derive(Debug, Clone, Serialize)]
pub struct OriginalRef {
    /// Kind of the original.
    pub kind: TxnKind,
    /// Its STAN (F11).
    pub stan: String,
    /// Its local date MMDD (F13).
    pub date: String,
    /// The RRN the host gave it.
    pub rrn: String,
}

/// One applied transaction (a line of the journal file, an item of
/// `GET /state/transactions`). PANs are masked.
#[derive(Debug, Clone, Serialize)]
pub struct JournalEntry {
    /// Sequence number, from 1, in the order of application.
    pub seq: u64,
    /// When it was applied (UTC, RFC 3339).
    pub time: String,
    /// What was applied.
    pub kind: TxnKind,
    /// MTI of the request.
    pub mti: String,
    /// Terminal (F41).
    pub terminal: String,
    /// STAN (F11).
    pub stan: String,
    /// Local date MMDD (F13).
    pub date: String,
    /// RRN given in the response (F37).
    pub rrn: String,
    /// Card (masked).
    pub pan: String,
    /// Transfer destination (masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_pan: Option<String>,
    /// Amount in minor units: debited, transferred, or restored by a reversal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<i64>,
    /// For a partial reversal (F95): the amount of the original that stands (e.g. the notes
    /// actually dispensed); `amount` is what the reversal restored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replacement: Option<i64>,
    /// Currency (ISO 4217 numeric).
    pub currency: String,
    /// For a reversal: what it undid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalRef>,
}

/// A count and a sum of amounts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    /// How many.
    pub count: u64,
    /// Sum of the amounts, minor units.
    pub amount: i64,
}

/// Counters since start; never truncated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// 8583 requests received (decodable ones).
    pub requests: u64,
    /// Responses formed, by response code (dropped ones included).
    pub responses: BTreeMap<String, u64>,
    /// Retransmissions answered from memory.
    pub retransmissions: u64,
    /// Responses dropped by fault injection.
    pub dropped: u64,
    /// Responses answered by the `response_code` fault.
    pub injected: u64,
    /// Approved withdrawals (before reversals).
    pub withdrawals: Totals,
    /// Approved transfers (before reversals).
    pub transfers: Totals,
    /// Reversals that restored money (withdrawals and transfers).
    pub reversals: Totals,
    /// The part of `reversals` that undid withdrawals: money that came back into the bank.
    pub withdrawals_reversed: Totals,
    /// Of `reversals`, the partial ones (F95); their amount is what they restored.
    pub partial_reversals: Totals,
    /// Approved PIN changes.
    pub pin_changes: u64,
    /// PIN changes undone by a reversal (the old PIN restored).
    pub pin_changes_reversed: u64,
}

/// A live account.
pub(crate) struct Account {
    pub(crate) pan: String,
    pub(crate) pin: Zeroizing<String>,
    pub(crate) name: Option<String>,
    pub(crate) currency: String,
    pub(crate) ledger: i64,
    pub(crate) available: i64,
    pub(crate) daily_limit: Option<i64>,
    pub(crate) withdrawn_today: i64,
    pub(crate) withdrawn_day: i64,
    pub(crate) expiry: String,
    pub(crate) locked: bool,
    pub(crate) pin_tries: u8,
}

/// An account as the control API shows it (PAN masked, no PIN).
#[derive(Debug, Clone, Serialize)]
pub struct AccountView {
    /// Masked PAN.
    pub pan: String,
    /// Cardholder name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Currency.
    pub currency: String,
    /// Ledger balance, minor units.
    pub ledger: i64,
    /// Available balance, minor units.
    pub available: i64,
    /// Daily withdrawal limit, minor units.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_limit: Option<i64>,
    /// Withdrawn on the host's current day (UTC), minor units.
    pub withdrawn_today: i64,
    /// Expiry YYMM.
    pub expiry: String,
    /// `active` or `locked`.
    pub status: Status,
    /// Consecutive wrong PINs.
    pub pin_tries: u8,
}

impl Account {
    fn from_seed(s: &AccountSeed) -> Account {
        Account {
            pan: s.pan.clone(),
            pin: Zeroizing::new(s.pin.clone()),
            name: s.name.clone(),
            currency: s.currency.clone(),
            ledger: s.ledger,
            available: s.available,
            daily_limit: s.daily_limit,
            withdrawn_today: 0,
            withdrawn_day: 0,
            expiry: s.expiry.clone(),
            locked: s.status == Status::Locked,
            pin_tries: 0,
        }
    }

    pub(crate) fn view(&self, today: i64) -> AccountView {
        AccountView {
            pan: mask_pan(&self.pan),
            name: self.name.clone(),
            currency: self.currency.clone(),
            ledger: self.ledger,
            available: self.available,
            daily_limit: self.daily_limit,
            withdrawn_today: if self.withdrawn_day == today {
                self.withdrawn_today
            } else {
                0
            },
            expiry: self.expiry.clone(),
            status: if self.locked {
                Status::Locked
            } else {
                Status::Active
            },
            pin_tries: self.pin_tries,
        }
    }

    fn expired(&self, now_yymm: u32) -> bool {
        self.expiry
            .parse::<u32>()
            .map(|e| e < now_yymm)
            .unwrap_or(true)
    }
}

/// A PIN as decrypted from a PIN block, or the fact that the block did not decrypt to a
/// well-formed PIN block (wrong key, wrong PAN, garbage): that counts as a wrong PIN.
pub(crate) enum PinAttempt {
    Clear(Zeroizing<String>),
    Undecodable,
    /// No PIN block, and F22 says the point of service has no PIN entry capability (a
    /// channel such as mobile banking): allowed for inquiries and transfers only.
    Absent,
}

impl PinAttempt {
    fn matches(&self, pin: &str) -> bool {
        match self {
            PinAttempt::Clear(p) => ct_eq(p.as_bytes(), pin.as_bytes()),
            PinAttempt::Undecodable | PinAttempt::Absent => false,
        }
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a financial request asks for, parsed and with its PIN blocks decrypted.
pub(crate) struct FinRequest {
    pub(crate) kind: TxnKind,
    pub(crate) mti: String,
    pub(crate) key: TxnKey,
    pub(crate) stan: String,
    pub(crate) date: String,
    pub(crate) fingerprint: u64,
    pub(crate) pan: String,
    pub(crate) expiry: Option<String>,
    pub(crate) amount: Option<i64>,
    pub(crate) currency: Option<String>,
    pub(crate) pin: PinAttempt,
    pub(crate) new_pin: Option<Zeroizing<String>>,
    pub(crate) to_pan: Option<String>,
}

/// A parsed reversal.
pub(crate) struct RevRequest {
    pub(crate) mti: String,
    pub(crate) key: TxnKey,
    pub(crate) stan: String,
    pub(crate) date: String,
    pub(crate) fingerprint: u64,
    pub(crate) original: TxnKey,
    pub(crate) pan: Option<String>,
    pub(crate) amount: Option<i64>,
    /// F95: the amount of the original that stands (`None`: reverse it all).
    pub(crate) replacement: Option<i64>,
}

/// The outcome of a financial request or reversal, decided under the lock.
pub(crate) struct Decision {
    pub(crate) code: &'static str,
    pub(crate) effect: Effect,
    /// (currency, available) of the card's account, for F54 on approval.
    pub(crate) balance: Option<(String, i64)>,
    pub(crate) journal: Option<Draft>,
}

/// A journal entry before it gets its sequence number, time and RRN.
pub(crate) struct Draft {
    kind: TxnKind,
    pan: String,
    to_pan: Option<String>,
    amount: Option<i64>,
    replacement: Option<i64>,
    currency: String,
    original: Option<OriginalRef>,
}

impl Decision {
    fn decline(code: &'static str) -> Decision {
        Decision {
            code,
            effect: Effect::None,
            balance: None,
            journal: None,
        }
    }
}

/// The books.
pub(crate) struct State {
    pub(crate) accounts: HashMap<String, Account>,
    records: HashMap<TxnKey, Record>,
    order: VecDeque<TxnKey>,
    remember: usize,
    log: VecDeque<JournalEntry>,
    next_seq: u64,
    pub(crate) summary: Summary,
    journal: Option<mpsc::Sender<JournalEntry>>,
}

/// Where a request stands before it is decided.
pub(crate) enum Seen {
    /// Never seen: decide it.
    New,
    /// A retransmission: answer this again.
    Again(Bytes),
    /// Answer this code without remembering anything.
    Refuse(&'static str),
}

impl State {
    pub(crate) fn new(
        seeds: &[AccountSeed],
        remember: usize,
        journal: Option<mpsc::Sender<JournalEntry>>,
    ) -> State {
        State {
            accounts: seeds
                .iter()
                .map(|s| (s.pan.clone(), Account::from_seed(s)))
                .collect(),
            records: HashMap::new(),
            order: VecDeque::new(),
            remember,
            log: VecDeque::new(),
            next_seq: 1,
            summary: Summary::default(),
            journal,
        }
    }

    /// Stops journaling (the writer thread then drains and exits).
    pub(crate) fn close_journal(&mut self) {
        self.journal = None;
    }

    pub(crate) fn count_response(&mut self, code: &str) {
        if let Some(n) = self.summary.responses.get_mut(code) {
            *n += 1;
        } else {
            self.summary.responses.insert(code.to_owned(), 1);
        }
    }

    /// Whether `key` was seen, and with the same content.
    pub(crate) fn seen(&mut self, key: &TxnKey, fingerprint: u64) -> Seen {
        match self.records.get(key) {
            None => Seen::New,
            Some(Record { response: None, .. }) => Seen::Refuse(rc::INVALID_TRANSACTION),
            Some(Record {
                response: Some(bytes),
                fingerprint: fp,
                ..
            }) => {
                if *fp == fingerprint {
                    self.summary.retransmissions += 1;
                    Seen::Again(bytes.clone())
                } else {
                    Seen::Refuse(rc::DUPLICATE)
                }
            }
        }
    }

    /// Remembers a transaction, forgetting the oldest beyond the `remember` limit.
    pub(crate) fn remember(&mut self, key: TxnKey, record: Record) {
        if self.records.insert(key.clone(), record).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.remember {
            if let Some(old) = self.order.pop_front() {
                self.records.remove(&old);
            }
        }
    }

    /// Appends an applied transaction to the log and the journal file.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn journal(
        &mut self,
        draft: Draft,
        now_ms: u64,
        mti: &str,
        terminal: &str,
        stan: &str,
        date: &str,
        rrn: &str,
    ) {
        let entry = JournalEntry {
            seq: self.next_seq,
            time: clock::rfc3339(now_ms),
            kind: draft.kind,
            mti: mti.to_owned(),
            terminal: terminal.to_owned(),
            stan: stan.to_owned(),
            date: date.to_owned(),
            rrn: rrn.to_owned(),
            pan: mask_pan(&draft.pan),
            to_pan: draft.to_pan.as_deref().map(mask_pan),
            amount: draft.amount,
            replacement: draft.replacement,
            currency: draft.currency,
            original: draft.original,
        };
        self.next_seq += 1;
        if let Some(tx) = &self.journal
            && tx.send(entry.clone()).is_err()
        {
            self.journal = None;
        }
        self.log.push_back(entry);
        while self.log.len() > self.remember {
            self.log.pop_front();
        }
    }

    /// Entries with `seq >= since`, at most `limit`.
    pub(crate) fn transactions(&self, since: u64, limit: usize) -> (Vec<JournalEntry>, u64) {
        let first = self.log.front().map(|e| e.seq).unwrap_or(self.next_seq);
        let skip = usize::try_from(since.saturating_sub(first)).unwrap_or(usize::MAX);
        let items: Vec<JournalEntry> = self.log.iter().skip(skip).take(limit).cloned().collect();
        let next = items.last().map(|e| e.seq + 1).unwrap_or(since.max(first));
        (items, next)
    }

    /// Decides (and applies) a financial request that was not seen before.
    pub(crate) fn decide(&mut self, req: &FinRequest, now_ms: u64, max_tries: u8) -> Decision {
        let today = clock::day(now_ms);
        let Some(acct) = self.accounts.get_mut(&req.pan) else {
            return Decision::decline(rc::INVALID_CARD);
        };
        if acct.locked {
            return Decision::decline(rc::PIN_TRIES_EXCEEDED);
        }
        if acct.expired(clock::yymm(now_ms))
            || req.expiry.as_deref().is_some_and(|e| e != acct.expiry)
        {
            return Decision::decline(rc::EXPIRED_CARD);
        }
        if matches!(req.pin, PinAttempt::Absent) {
            // Money leaving the bank (withdrawal) and PIN changes need the cardholder's PIN;
            // the wrong-PIN count is not touched: nothing wrong was entered.
            if !matches!(req.kind, TxnKind::Inquiry | TxnKind::Transfer) {
                return Decision::decline(rc::INCORRECT_PIN);
            }
        } else if !req.pin.matches(&acct.pin) {
            acct.pin_tries = acct.pin_tries.saturating_add(1);
            if acct.pin_tries >= max_tries {
                acct.locked = true;
                return Decision::decline(rc::PIN_TRIES_EXCEEDED);
            }
            return Decision::decline(rc::INCORRECT_PIN);
        } else {
            acct.pin_tries = 0;
        }
        if req.currency.as_deref().is_some_and(|c| c != acct.currency) {
            return Decision::decline(rc::INVALID_AMOUNT);
        }
        let currency = acct.currency.clone();
        match req.kind {
            TxnKind::Inquiry => Decision {
                code: rc::APPROVED,
                effect: Effect::None,
                balance: Some((currency, acct.available)),
                journal: None,
            },
            TxnKind::Withdrawal => {
                let amount = req.amount.unwrap_or(0);
                if acct.available < amount {
                    return Decision::decline(rc::INSUFFICIENT_FUNDS);
                }
                if acct.withdrawn_day != today {
                    acct.withdrawn_day = today;
                    acct.withdrawn_today = 0;
                }
                if acct
                    .daily_limit
                    .is_some_and(|l| acct.withdrawn_today.saturating_add(amount) > l)
                {
                    return Decision::decline(rc::EXCEEDS_LIMIT);
                }
                acct.ledger = acct.ledger.saturating_sub(amount);
                acct.available = acct.available.saturating_sub(amount);
                acct.withdrawn_today = acct.withdrawn_today.saturating_add(amount);
                self.summary.withdrawals.count += 1;
                self.summary.withdrawals.amount =
                    self.summary.withdrawals.amount.saturating_add(amount);
                Decision {
                    code: rc::APPROVED,
                    effect: Effect::Withdrawal {
                        pan: req.pan.clone(),
                        amount,
                        day: today,
                    },
                    balance: Some((currency.clone(), acct.available)),
                    journal: Some(Draft {
                        kind: TxnKind::Withdrawal,
                        pan: req.pan.clone(),
                        to_pan: None,
                        amount: Some(amount),
                        replacement: None,
                        currency,
                        original: None,
                    }),
                }
            }
            TxnKind::Transfer => {
                let amount = req.amount.unwrap_or(0);
                let available = acct.available;
                let Some(to) = req.to_pan.as_deref() else {
                    return Decision::decline(rc::FORMAT_ERROR);
                };
                if to == req.pan {
                    return Decision::decline(rc::INVALID_TRANSACTION);
                }
                match self.accounts.get(to) {
                    None => return Decision::decline(rc::INVALID_CARD),
                    Some(t) if t.currency != currency => {
                        return Decision::decline(rc::INVALID_TRANSACTION);
                    }
                    Some(_) => {}
                }
                if available < amount {
                    return Decision::decline(rc::INSUFFICIENT_FUNDS);
                }
                let mut after = 0;
                if let Some(from) = self.accounts.get_mut(&req.pan) {
                    from.ledger = from.ledger.saturating_sub(amount);
                    from.available = from.available.saturating_sub(amount);
                    after = from.available;
                }
                if let Some(t) = self.accounts.get_mut(to) {
                    t.ledger = t.ledger.saturating_add(amount);
                    t.available = t.available.saturating_add(amount);
                }
                self.summary.transfers.count += 1;
                self.summary.transfers.amount =
                    self.summary.transfers.amount.saturating_add(amount);
                Decision {
                    code: rc::APPROVED,
                    effect: Effect::Transfer {
                        from: req.pan.clone(),
                        to: to.to_owned(),
                        amount,
                    },
                    balance: Some((currency.clone(), after)),
                    journal: Some(Draft {
                        kind: TxnKind::Transfer,
                        pan: req.pan.clone(),
                        to_pan: Some(to.to_owned()),
                        amount: Some(amount),
                        replacement: None,
                        currency,
                        original: None,
                    }),
                }
            }
            TxnKind::PinChange => {
                let Some(new_pin) = &req.new_pin else {
                    return Decision::decline(rc::FORMAT_ERROR);
                };
                let old = std::mem::replace(&mut acct.pin, new_pin.clone());
                self.summary.pin_changes += 1;
                Decision {
                    code: rc::APPROVED,
                    effect: Effect::PinChange {
                        pan: req.pan.clone(),
                        old: KeptPin(old),
                        new: KeptPin(new_pin.clone()),
                    },
                    balance: None,
                    journal: Some(Draft {
                        kind: TxnKind::PinChange,
                        pan: req.pan.clone(),
                        to_pan: None,
                        amount: None,
                        replacement: None,
                        currency,
                        original: None,
                    }),
                }
            }
            TxnKind::Reversal => Decision::decline(rc::INVALID_TRANSACTION),
        }
    }

    /// Decides (and applies) a reversal that was not seen before.
    pub(crate) fn reverse(&mut self, rev: &RevRequest) -> Decision {
        if !self.records.contains_key(&rev.original) {
            // Reversed before it arrived (or forgotten): make sure a late original is
            // declined rather than applied.
            self.remember(
                rev.original.clone(),
                Record {
                    fingerprint: 0,
                    response: None,
                    effect: Effect::None,
                    kind: TxnKind::Reversal,
                    rrn: String::new(),
                    reversed: true,
                },
            );
            return Decision::decline(rc::ORIGINAL_NOT_FOUND);
        }
        let Some(rec) = self.records.get_mut(&rev.original) else {
            return Decision::decline(rc::ORIGINAL_NOT_FOUND);
        };
        if rec.response.is_none() {
            return Decision::decline(rc::ORIGINAL_NOT_FOUND);
        }
        let approved_none = Decision::decline(rc::APPROVED);
        if rec.reversed {
            return approved_none;
        }
        let original = OriginalRef {
            kind: rec.kind,
            stan: format!("{:06}", rev.original.stan),
            date: format!("{:04}", rev.original.date),
            rrn: rec.rrn.clone(),
        };
        let (pan, to, full) = match &rec.effect {
            Effect::None => return approved_none,
            Effect::PinChange { pan, old, new } => {
                if rev.pan.as_deref().is_some_and(|p| p != pan) {
                    return Decision::decline(rc::ORIGINAL_NOT_FOUND);
                }
                let (pan, old, new) = (pan.clone(), old.clone(), new.clone());
                rec.reversed = true;
                return self.undo_pin_change(pan, old, new, original);
            }
            Effect::Withdrawal { pan, amount, .. } => (pan.clone(), None, *amount),
            Effect::Transfer { from, to, amount } => (from.clone(), Some(to.clone()), *amount),
        };
        if rev.pan.as_deref().is_some_and(|p| p != pan) {
            return Decision::decline(rc::ORIGINAL_NOT_FOUND);
        }
        if rev.amount.is_some_and(|a| a != full) {
            return Decision::decline(rc::INVALID_AMOUNT);
        }
        // A partial reversal gives back only what does not stand; one that would give back
        // nothing (or less) is refused and changes nothing.
        if rev.replacement.is_some_and(|r| r >= full) {
            return Decision::decline(rc::INVALID_AMOUNT);
        }
        let amount = full - rev.replacement.unwrap_or(0);
        rec.reversed = true;
        let day = match &rec.effect {
            Effect::Withdrawal { day, .. } => Some(*day),
            _ => None,
        };
        let mut currency = String::new();
        if let Some(a) = self.accounts.get_mut(&pan) {
            a.ledger = a.ledger.saturating_add(amount);
            a.available = a.available.saturating_add(amount);
            if day == Some(a.withdrawn_day) {
                a.withdrawn_today = (a.withdrawn_today - amount).max(0);
            }
            currency = a.currency.clone();
        }
        if let Some(t) = to.as_deref().and_then(|t| self.accounts.get_mut(t)) {
            t.ledger = t.ledger.saturating_sub(amount);
            t.available = t.available.saturating_sub(amount);
        }
        if day.is_some() {
            self.summary.withdrawals_reversed.count += 1;
            self.summary.withdrawals_reversed.amount = self
                .summary
                .withdrawals_reversed
                .amount
                .saturating_add(amount);
        }
        self.summary.reversals.count += 1;
        self.summary.reversals.amount = self.summary.reversals.amount.saturating_add(amount);
        if rev.replacement.is_some() {
            self.summary.partial_reversals.count += 1;
            self.summary.partial_reversals.amount =
                self.summary.partial_reversals.amount.saturating_add(amount);
        }
        Decision {
            code: rc::APPROVED,
            effect: Effect::None,
            balance: None,
            journal: Some(Draft {
                kind: TxnKind::Reversal,
                pan,
                to_pan: to,
                amount: Some(amount),
                replacement: rev.replacement,
                currency,
                original: Some(original),
            }),
        }
    }

    /// Undoes a PIN change: the old PIN comes back — unless the PIN was changed again since
    /// (it is no longer the one this change set), in which case the later change stands and
    /// nothing changes. Either way the answer is 00 and the change counts as reversed.
    fn undo_pin_change(
        &mut self,
        pan: String,
        old: KeptPin,
        new: KeptPin,
        original: OriginalRef,
    ) -> Decision {
        let Some(acct) = self.accounts.get_mut(&pan) else {
            return Decision::decline(rc::APPROVED);
        };
        if !ct_eq(acct.pin.as_bytes(), new.0.as_bytes()) {
            return Decision::decline(rc::APPROVED);
        }
        acct.pin = old.0;
        let currency = acct.currency.clone();
        self.summary.pin_changes_reversed += 1;
        Decision {
            code: rc::APPROVED,
            effect: Effect::None,
            balance: None,
            journal: Some(Draft {
                kind: TxnKind::Reversal,
                pan,
                to_pan: None,
                amount: None,
                replacement: None,
                currency,
                original: Some(original),
            }),
        }
    }
}
