//! The virtual cash dispenser: cassettes with thresholds driving their status, a mix algorithm,
//! dispense / present / retract / reject with XFS-style counters, items-taken events, a
//! notes-not-taken timeout, and jam and cash-unit-error injection.
//!
//! The counters are what the terminal reads after a fault or a restart to learn how many notes
//! really left each cassette (invariant 2): every movement is persisted before it is reported.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use openteller_proto::device::v1::{
    Capabilities, CashDispenserEvent, CashDispenserResult, CashDispenserStatus, CashUnit,
    CashUnitStatus, CashUnitThreshold, CashUnitType, Denomination, DenominationItem, DeviceClass,
    DeviceState, DeviceStatus, Dispense, DispenseResult, MixAlgorithm, MoveResult, OutputPosition,
    cash_dispenser_command::Command as Cdm, cash_dispenser_event::Event as CdmEvent,
    cash_dispenser_result, cash_dispenser_sim_action::Action as SimCdm, command,
    command_completion, device_event, device_status, simulator_reply, simulator_request,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::common::SimCommon;
use super::{common_action, wrong_class};
use crate::backend::{Backend, CommandContext, Failure, Hub, Outcome};
use crate::codes::{cdm, generic};
use crate::store::{StateFile, StoreError};

/// Most notes one dispense may pick (the presenter's capacity).
pub const MAX_DISPENSE_ITEMS: u32 = 40;
/// Default time the customer has to take presented notes.
pub const DEFAULT_TAKE_TIMEOUT_MS: u32 = 30_000;
const MAX_UNITS: usize = 8;
const MAX_UNIT_CAPACITY: u32 = 10_000;

#[derive(Debug, Serialize, Deserialize)]
struct Persisted {
    units: Vec<CashUnit>,
    /// Notes in the stacker or the shutter, by source cash unit.
    at_output: Vec<DenominationItem>,
    output: i32,
    take_timeout_ms: u32,
}

fn bill(number: u32, denomination: u64, count: u32) -> CashUnit {
    CashUnit {
        number,
        id: format!("CAS{number}"),
        unit_type: CashUnitType::BillCassette as i32,
        currency: "CNY".into(),
        denomination,
        count,
        initial_count: count,
        capacity: 2500,
        low_threshold: 100,
        ..Default::default()
    }
}

fn bin(number: u32, unit_type: CashUnitType) -> CashUnit {
    CashUnit {
        number,
        id: if unit_type == CashUnitType::Reject {
            "REJECT".into()
        } else {
            "RETRACT".into()
        },
        unit_type: unit_type as i32,
        capacity: 300,
        high_threshold: 250,
        ..Default::default()
    }
}

impl Default for Persisted {
    fn default() -> Self {
        let mut units = vec![
            bill(1, 10_000, 2000),
            bill(2, 10_000, 2000),
            bill(3, 5_000, 1000),
            bill(4, 2_000, 1000),
            bin(5, CashUnitType::Reject),
            bin(6, CashUnitType::Retract),
        ];
        units
            .iter_mut()
            .for_each(|u| u.status = unit_status(u) as i32);
        Persisted {
            units,
            at_output: Vec::new(),
            output: OutputPosition::Empty as i32,
            take_timeout_ms: DEFAULT_TAKE_TIMEOUT_MS,
        }
    }
}

/// A cash unit's status from its counts and thresholds; INOPERATIVE is sticky until replenished.
fn unit_status(u: &CashUnit) -> CashUnitStatus {
    if u.status == CashUnitStatus::Inoperative as i32 {
        return CashUnitStatus::Inoperative;
    }
    match u.unit_type() {
        CashUnitType::BillCassette => {
            if u.count == 0 {
                CashUnitStatus::Empty
            } else if u.count <= u.low_threshold {
                CashUnitStatus::Low
            } else {
                CashUnitStatus::Ok
            }
        }
        _ => {
            if u.capacity > 0 && u.count >= u.capacity {
                CashUnitStatus::Full
            } else if u.high_threshold > 0 && u.count >= u.high_threshold {
                CashUnitStatus::High
            } else {
                CashUnitStatus::Ok
            }
        }
    }
}

struct State {
    common: SimCommon,
    persisted: Persisted,
    /// A Present waiting for the customer to take the notes.
    take_waiter: Option<oneshot::Sender<()>>,
}

impl State {
    fn output(&self) -> OutputPosition {
        OutputPosition::try_from(self.persisted.output).unwrap_or(OutputPosition::Empty)
    }

    fn set_output(&mut self, o: OutputPosition) {
        self.persisted.output = o as i32;
    }

    fn unit_mut(&mut self, number: u32) -> Option<&mut CashUnit> {
        self.persisted.units.iter_mut().find(|u| u.number == number)
    }

    fn output_count(&self) -> u32 {
        self.persisted.at_output.iter().map(|i| i.count).sum()
    }
}

/// The virtual dispenser.
pub struct VirtualDispenser {
    state: Mutex<State>,
    store: StateFile,
    hub: Arc<Hub>,
}

impl VirtualDispenser {
    /// Opens the dispenser with its cassettes in `dir`.
    pub fn open(dir: &Path, hub: Arc<Hub>) -> Result<Arc<Self>, StoreError> {
        let store = StateFile::new(dir, "cash-dispenser.json")?;
        let persisted = match store.load()? {
            Some(p) => p,
            None => {
                let p = Persisted::default();
                store.save(&p)?;
                p
            }
        };
        Ok(Arc::new(VirtualDispenser {
            state: Mutex::new(State {
                common: SimCommon::new(DeviceClass::CashDispenser),
                persisted,
                take_waiter: None,
            }),
            store,
            hub,
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Recomputes unit statuses, persists, and reports threshold crossings.
    fn commit(&self, state: &mut State) -> Result<(), Failure> {
        let mut crossed = Vec::new();
        for u in &mut state.persisted.units {
            let s = unit_status(u) as i32;
            if s != u.status {
                u.status = s;
                crossed.push(u.clone());
            }
        }
        self.store.save(&state.persisted).map_err(|e| {
            tracing::error!(error = %e, "cannot persist dispenser state");
            Failure::xfs(
                generic::INTERNAL_ERROR,
                "cannot persist the dispenser state",
            )
        })?;
        for unit in crossed {
            self.hub
                .event(cdm_event(CdmEvent::CashUnitThreshold(CashUnitThreshold {
                    unit: Some(unit),
                })));
        }
        Ok(())
    }

    fn dispense(
        &self,
        req: &Dispense,
        injected: Option<crate::codes::XfsError>,
    ) -> Result<Outcome, Failure> {
        let mut state = self.lock();
        if state.output() != OutputPosition::Empty {
            return Err(Failure::sequence(
                "notes are still at the output; present, retract or reject them first",
            ));
        }
        let items = if req.items.is_empty() {
            denominate(&state.persisted.units, &req.currency, req.amount, req.mix())?
        } else {
            check_items(
                &state.persisted.units,
                &req.currency,
                req.amount,
                &req.items,
            )?
        };
        let amount = value_of(&state.persisted.units, &items);
        if let Some(error) = injected {
            if error == cdm::CASHUNITERROR {
                if let Some(first) = items.first().map(|i| i.unit_number) {
                    if let Some(u) = state.unit_mut(first) {
                        u.status = CashUnitStatus::Inoperative as i32;
                    }
                    self.commit(&mut state)?;
                }
                return Err(Failure::xfs(
                    error,
                    "simulated cash unit error; nothing was dispensed",
                ));
            }
            if error != generic::HARDWARE_ERROR {
                return Err(Failure::xfs(
                    error,
                    "simulated error; nothing was dispensed",
                ));
            }
        }
        // A jam stops the pick half-way: what was picked sits jammed in the transport.
        let picked: Vec<DenominationItem> = if injected.is_some() {
            let mut budget = items.iter().map(|i| i.count).sum::<u32>() / 2;
            items
                .iter()
                .filter_map(|i| {
                    let n = i.count.min(budget);
                    budget -= n;
                    (n > 0).then_some(DenominationItem {
                        unit_number: i.unit_number,
                        count: n,
                    })
                })
                .collect()
        } else {
            items.clone()
        };
        for i in &picked {
            if let Some(u) = state.unit_mut(i.unit_number) {
                u.count -= i.count;
                u.dispensed_count += i.count;
            }
        }
        let picked_amount = value_of(&state.persisted.units, &picked);
        state.persisted.at_output = picked.clone();
        let jammed = injected.is_some();
        state.set_output(if jammed {
            OutputPosition::Jammed
        } else {
            OutputPosition::Stacked
        });
        if jammed {
            state.common.state = DeviceState::HardwareError;
        }
        self.commit(&mut state)?;
        let dispensed = Denomination {
            currency: req.currency.clone(),
            amount: picked_amount,
            items: picked,
        };
        if jammed {
            let failure = Failure::xfs(
                generic::HARDWARE_ERROR,
                format!("notes jammed after picking {picked_amount} of {amount}"),
            );
            return Ok(Outcome {
                completion: failure.to_completion(),
                result: Some(cdm_result(cash_dispenser_result::Result::Dispense(
                    DispenseResult {
                        dispensed: Some(dispensed),
                    },
                ))),
            });
        }
        Ok(Outcome::ok(cdm_result(
            cash_dispenser_result::Result::Dispense(DispenseResult {
                dispensed: Some(dispensed),
            }),
        )))
    }

    async fn present(&self, take_timeout_ms: u32, ctx: &CommandContext) -> Result<(), Failure> {
        let (rx, timeout) = {
            let mut state = self.lock();
            match state.output() {
                OutputPosition::Stacked => {
                    let items = state.persisted.at_output.clone();
                    for i in &items {
                        if let Some(u) = state.unit_mut(i.unit_number) {
                            u.presented_count += i.count;
                        }
                    }
                    state.set_output(OutputPosition::Presented);
                    self.commit(&mut state)?;
                }
                OutputPosition::Presented => {}
                _ => return Err(Failure::xfs(cdm::NOITEMS, "there are no notes to present")),
            }
            let (tx, rx) = oneshot::channel();
            state.take_waiter = Some(tx);
            let ms = if take_timeout_ms == 0 {
                state.persisted.take_timeout_ms
            } else {
                take_timeout_ms
            };
            (rx, Duration::from_millis(u64::from(ms)))
        };
        self.hub.status(self.status());
        ctx.emit(cdm_event(CdmEvent::ItemsPresented(Default::default())));
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Failure::xfs(
                cdm::ITEMSNOTTAKEN,
                "the customer did not take the notes in time; they are still presented",
            )),
        }
    }

    /// Moves the notes at the output into the reject or retract bin.
    fn move_to_bin(&self, state: &mut State, to: CashUnitType) -> Result<u32, Failure> {
        let n = state.output_count();
        if n == 0 {
            return Err(Failure::xfs(
                cdm::NOITEMS,
                "there are no notes at the output",
            ));
        }
        let Some(bin) = state
            .persisted
            .units
            .iter_mut()
            .find(|u| u.unit_type() == to)
        else {
            return Err(Failure::xfs(
                cdm::CASHUNITERROR,
                format!("there is no {} bin", to.as_str_name()),
            ));
        };
        if bin.capacity > 0 && bin.count + n > bin.capacity {
            return Err(Failure::xfs(
                cdm::CASHUNITERROR,
                format!("the {} bin is full", to.as_str_name()),
            ));
        }
        bin.count += n;
        if to == CashUnitType::Reject {
            bin.rejected_count += n;
        } else {
            bin.retracted_count += n;
        }
        state.persisted.at_output.clear();
        state.set_output(OutputPosition::Empty);
        state.take_waiter = None;
        self.commit(state)?;
        Ok(n)
    }

    fn take_items(&self) -> Result<(), Failure> {
        let mut state = self.lock();
        if state.output() != OutputPosition::Presented {
            return Err(Failure::sequence("no notes are presented"));
        }
        state.persisted.at_output.clear();
        state.set_output(OutputPosition::Empty);
        self.commit(&mut state)?;
        let waiter = state.take_waiter.take();
        drop(state);
        self.hub
            .event(cdm_event(CdmEvent::ItemsTaken(Default::default())));
        if let Some(tx) = waiter {
            let _ = tx.send(());
        }
        Ok(())
    }

    fn set_cash_units(&self, units: Vec<CashUnit>) -> Result<(), Failure> {
        validate_units(&units)?;
        let mut state = self.lock();
        if state.output() != OutputPosition::Empty {
            return Err(Failure::sequence(
                "notes are at the output; clear it before replenishing",
            ));
        }
        state.persisted.units = units
            .into_iter()
            .map(|mut u| {
                u.initial_count = u.count;
                u.dispensed_count = 0;
                u.presented_count = 0;
                u.rejected_count = 0;
                u.retracted_count = 0;
                u.status = CashUnitStatus::Ok as i32;
                u.status = unit_status(&u) as i32;
                u
            })
            .collect();
        self.commit(&mut state)
    }

    async fn run(
        &self,
        c: Cdm,
        ctx: &CommandContext,
        injected: Option<crate::codes::XfsError>,
    ) -> Result<Outcome, Failure> {
        match c {
            Cdm::Denominate(d) => {
                let state = self.lock();
                let items = denominate(&state.persisted.units, &d.currency, d.amount, d.mix())?;
                let result = Denomination {
                    currency: d.currency,
                    amount: d.amount,
                    items,
                };
                Ok(Outcome::ok(cdm_result(
                    cash_dispenser_result::Result::Denomination(result),
                )))
            }
            Cdm::Dispense(d) => {
                let outcome = self.dispense(&d, injected)?;
                if d.present
                    && outcome.completion.code
                        == openteller_proto::device::v1::CompletionCode::Success as i32
                {
                    self.present(d.take_timeout_ms, ctx).await?;
                }
                Ok(outcome)
            }
            Cdm::Present(p) => self
                .present(p.take_timeout_ms, ctx)
                .await
                .map(|()| Outcome::done()),
            Cdm::Retract(_) => {
                let mut state = self.lock();
                if !matches!(
                    state.output(),
                    OutputPosition::Presented | OutputPosition::Stacked
                ) {
                    return Err(Failure::xfs(cdm::NOITEMS, "there are no notes to retract"));
                }
                let n = self.move_to_bin(&mut state, CashUnitType::Retract)?;
                Ok(Outcome::ok(cdm_result(
                    cash_dispenser_result::Result::Moved(MoveResult { count: n }),
                )))
            }
            Cdm::Reject(_) => {
                let mut state = self.lock();
                if state.output() != OutputPosition::Stacked {
                    return Err(Failure::xfs(
                        cdm::NOITEMS,
                        "there are no stacked notes to reject",
                    ));
                }
                let n = self.move_to_bin(&mut state, CashUnitType::Reject)?;
                Ok(Outcome::ok(cdm_result(
                    cash_dispenser_result::Result::Moved(MoveResult { count: n }),
                )))
            }
            Cdm::Reset(_) => {
                let mut state = self.lock();
                let moved = match state.output() {
                    OutputPosition::Presented => {
                        self.move_to_bin(&mut state, CashUnitType::Retract)?
                    }
                    OutputPosition::Stacked | OutputPosition::Jammed => {
                        self.move_to_bin(&mut state, CashUnitType::Reject)?
                    }
                    _ => 0,
                };
                state.common.state = DeviceState::Online;
                Ok(Outcome::ok(cdm_result(
                    cash_dispenser_result::Result::Moved(MoveResult { count: moved }),
                )))
            }
        }
    }
}

fn value_of(units: &[CashUnit], items: &[DenominationItem]) -> u64 {
    items
        .iter()
        .map(|i| {
            units
                .iter()
                .find(|u| u.number == i.unit_number)
                .map_or(0, |u| u.denomination * u64::from(i.count))
        })
        .sum()
}

fn check_currency(units: &[CashUnit], currency: &str) -> Result<(), Failure> {
    let valid = currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase());
    if !valid
        || !units
            .iter()
            .any(|u| u.unit_type() == CashUnitType::BillCassette && u.currency == currency)
    {
        return Err(Failure::xfs(
            cdm::INVALIDCURRENCY,
            format!("no cassette holds currency {currency:?}"),
        ));
    }
    Ok(())
}

fn usable(u: &CashUnit, currency: &str) -> bool {
    u.unit_type() == CashUnitType::BillCassette
        && u.currency == currency
        && u.count > 0
        && u.denomination > 0
        && u.status != CashUnitStatus::Inoperative as i32
}

/// Validates an explicit denomination against the cassettes.
fn check_items(
    units: &[CashUnit],
    currency: &str,
    amount: u64,
    items: &[DenominationItem],
) -> Result<Vec<DenominationItem>, Failure> {
    check_currency(units, currency)?;
    let mut total_items = 0u32;
    for i in items {
        let Some(u) = units.iter().find(|u| u.number == i.unit_number) else {
            return Err(Failure::xfs(
                cdm::INVALIDCASHUNIT,
                format!("there is no cash unit {}", i.unit_number),
            ));
        };
        if !usable(u, currency) || i.count > u.count {
            return Err(Failure::xfs(
                cdm::INVALIDDENOMINATION,
                format!("cash unit {} cannot give {} notes", i.unit_number, i.count),
            ));
        }
        total_items = total_items.saturating_add(i.count);
    }
    if total_items == 0 {
        return Err(Failure::xfs(
            cdm::INVALIDDENOMINATION,
            "the denomination has no notes",
        ));
    }
    if total_items > MAX_DISPENSE_ITEMS {
        return Err(Failure::xfs(
            cdm::TOOMANYITEMS,
            format!("at most {MAX_DISPENSE_ITEMS} notes per dispense"),
        ));
    }
    if amount != 0 && value_of(units, items) != amount {
        return Err(Failure::xfs(
            cdm::INVALIDDENOMINATION,
            "the notes do not add up to the amount",
        ));
    }
    Ok(items.iter().filter(|i| i.count > 0).cloned().collect())
}

/// Chooses notes for `amount` (minor units) from the usable cassettes of `currency`.
///
/// MINIMUM_NOTES is an exact bounded-knapsack search (fewest notes; it finds 60 = 3×20 where
/// greedy 50+… would fail). EQUAL_EMPTYING takes each note from the fullest cassette that fits,
/// and falls back to MINIMUM_NOTES when that leads nowhere.
pub fn denominate(
    units: &[CashUnit],
    currency: &str,
    amount: u64,
    mix: MixAlgorithm,
) -> Result<Vec<DenominationItem>, Failure> {
    check_currency(units, currency)?;
    if amount == 0 {
        return Err(Failure::invalid_data(
            "the amount must be greater than zero",
        ));
    }
    let candidates: Vec<&CashUnit> = units.iter().filter(|u| usable(u, currency)).collect();
    let largest = candidates.iter().map(|u| u.denomination).max().unwrap_or(0);
    if largest == 0 {
        return Err(Failure::xfs(cdm::NOTDISPENSABLE, "no usable cassette"));
    }
    if amount > largest.saturating_mul(u64::from(MAX_DISPENSE_ITEMS)) {
        return Err(Failure::xfs(
            cdm::TOOMANYITEMS,
            format!("the amount needs more than {MAX_DISPENSE_ITEMS} notes"),
        ));
    }
    if let Some(items) = (mix == MixAlgorithm::EqualEmptying)
        .then(|| equal_emptying(&candidates, amount))
        .flatten()
    {
        return Ok(items);
    }
    minimum_notes(&candidates, amount).ok_or_else(|| {
        Failure::xfs(
            cdm::NOTDISPENSABLE,
            format!("{amount} cannot be made from the notes available"),
        )
    })
}

fn minimum_notes(candidates: &[&CashUnit], amount: u64) -> Option<Vec<DenominationItem>> {
    let g = candidates.iter().fold(0u64, |g, u| gcd(g, u.denomination));
    if !amount.is_multiple_of(g) {
        return None;
    }
    let target = (amount / g) as usize;
    const NONE: u32 = u32::MAX;
    // best[s]: fewest notes making s·g with the units seen so far; choice[k][s]: notes of unit k.
    let mut best = vec![NONE; target + 1];
    best[0] = 0;
    let mut choice = vec![vec![0u32; target + 1]; candidates.len()];
    for (k, u) in candidates.iter().enumerate() {
        let step = (u.denomination / g) as usize;
        let limit = u.count.min(MAX_DISPENSE_ITEMS) as usize;
        let prev = best.clone();
        for s in 0..=target {
            for n in 1..=limit {
                let Some(rest) = s.checked_sub(n * step) else {
                    break;
                };
                if prev[rest] != NONE && prev[rest] + (n as u32) < best[s] {
                    best[s] = prev[rest] + n as u32;
                    choice[k][s] = n as u32;
                }
            }
        }
    }
    if best[target] == NONE || best[target] > MAX_DISPENSE_ITEMS {
        return None;
    }
    let mut items = Vec::new();
    let mut s = target;
    for k in (0..candidates.len()).rev() {
        let n = choice[k][s];
        if n > 0 {
            items.push(DenominationItem {
                unit_number: candidates[k].number,
                count: n,
            });
            s -= n as usize * (candidates[k].denomination / g) as usize;
        }
    }
    (s == 0).then(|| {
        items.reverse();
        items
    })
}

fn equal_emptying(candidates: &[&CashUnit], amount: u64) -> Option<Vec<DenominationItem>> {
    let mut left: Vec<u32> = candidates.iter().map(|u| u.count).collect();
    let mut taken = vec![0u32; candidates.len()];
    let mut remaining = amount;
    let mut notes = 0;
    while remaining > 0 && notes < MAX_DISPENSE_ITEMS {
        let pick = (0..candidates.len())
            .filter(|&k| left[k] > 0 && candidates[k].denomination <= remaining)
            .max_by_key(|&k| (left[k], candidates[k].denomination))?;
        left[pick] -= 1;
        taken[pick] += 1;
        remaining -= candidates[pick].denomination;
        notes += 1;
    }
    (remaining == 0).then(|| {
        candidates
            .iter()
            .zip(taken)
            .filter(|(_, n)| *n > 0)
            .map(|(u, n)| DenominationItem {
                unit_number: u.number,
                count: n,
            })
            .collect()
    })
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn validate_units(units: &[CashUnit]) -> Result<(), Failure> {
    if units.is_empty() || units.len() > MAX_UNITS {
        return Err(Failure::invalid_data(format!(
            "a dispenser has 1 to {MAX_UNITS} cash units"
        )));
    }
    let mut numbers: Vec<u32> = units.iter().map(|u| u.number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    if numbers.len() != units.len() || numbers.contains(&0) {
        return Err(Failure::invalid_data(
            "cash unit numbers must be unique and start at 1",
        ));
    }
    for u in units {
        let what = format!("cash unit {}", u.number);
        if u.capacity == 0 || u.capacity > MAX_UNIT_CAPACITY || u.count > u.capacity {
            return Err(Failure::invalid_data(format!(
                "{what}: count must not exceed capacity (1..={MAX_UNIT_CAPACITY})"
            )));
        }
        if u.low_threshold > u.capacity || u.high_threshold > u.capacity {
            return Err(Failure::invalid_data(format!(
                "{what}: thresholds must not exceed capacity"
            )));
        }
        match u.unit_type() {
            CashUnitType::BillCassette => {
                if u.currency.len() != 3 || !u.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(Failure::xfs(
                        cdm::INVALIDCURRENCY,
                        format!("{what}: currency must be an ISO 4217 code"),
                    ));
                }
                if u.denomination == 0 || u.denomination > 100_000_000 {
                    return Err(Failure::xfs(
                        cdm::INVALIDDENOMINATION,
                        format!("{what}: denomination out of range"),
                    ));
                }
            }
            CashUnitType::Reject | CashUnitType::Retract => {}
            CashUnitType::Unspecified => {
                return Err(Failure::invalid_data(format!(
                    "{what}: the unit type is required"
                )));
            }
        }
        if u.id.chars().count() > 16 {
            return Err(Failure::invalid_data(format!(
                "{what}: id has at most 16 characters"
            )));
        }
    }
    Ok(())
}

fn cdm_event(e: CdmEvent) -> device_event::Event {
    device_event::Event::CashDispenser(CashDispenserEvent { event: Some(e) })
}

fn cdm_result(r: cash_dispenser_result::Result) -> command_completion::Result {
    command_completion::Result::CashDispenser(CashDispenserResult { result: Some(r) })
}

#[async_trait]
impl Backend for VirtualDispenser {
    fn device_class(&self) -> DeviceClass {
        DeviceClass::CashDispenser
    }

    fn capabilities(&self) -> Capabilities {
        super::capabilities(
            DeviceClass::CashDispenser,
            format!(
                "Virtual dispenser, {MAX_UNITS} units, {MAX_DISPENSE_ITEMS} notes per dispense"
            ),
            &["SetCashUnits", "TakeItems", "SetTakeTimeout"],
        )
    }

    fn status(&self) -> DeviceStatus {
        let state = self.lock();
        DeviceStatus {
            device_class: DeviceClass::CashDispenser as i32,
            device: state.common.device_state() as i32,
            queued_commands: 0,
            detail: Some(device_status::Detail::CashDispenser(CashDispenserStatus {
                units: state.persisted.units.clone(),
                output: state.persisted.output,
                at_output: state.persisted.at_output.clone(),
            })),
        }
    }

    async fn execute(&self, command: command::Command, ctx: &CommandContext) -> Outcome {
        let name = crate::backend::command_name(&command);
        let command::Command::CashDispenser(openteller_proto::device::v1::CashDispenserCommand {
            command: Some(c),
        }) = command
        else {
            return super::not_this_class();
        };
        let injected = {
            let mut state = self.lock();
            if let Err(f) = state.common.check_ready(matches!(c, Cdm::Reset(_))) {
                return f.into();
            }
            state.common.take_error(name)
        };
        let outcome = match (injected, &c) {
            // Dispense models its faults itself (jam with a partial pick, cash unit error).
            (Some(_), Cdm::Dispense(_)) | (None, _) => self.run(c, ctx, injected).await.into(),
            (Some(error), _) => {
                if error == generic::HARDWARE_ERROR {
                    self.lock().common.state = DeviceState::HardwareError;
                }
                Failure::xfs(error, format!("simulated error on {name}")).into()
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
            Action::CashDispenser(a) => match a.action {
                Some(SimCdm::SetCashUnits(s)) => self.set_cash_units(s.units).map(|()| None),
                Some(SimCdm::TakeItems(_)) => self.take_items().map(|()| None),
                Some(SimCdm::SetTakeTimeout(t)) => {
                    if !(1_000..=600_000).contains(&t.timeout_ms) {
                        return Err(Failure::invalid_data(
                            "the take timeout must be 1000..=600000 ms",
                        ));
                    }
                    let mut state = self.lock();
                    state.persisted.take_timeout_ms = t.timeout_ms;
                    self.commit(&mut state).map(|()| None)
                }
                None => Err(Failure::invalid_data("the dispenser action is empty")),
            },
            _ => Err(wrong_class(DeviceClass::CashDispenser)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn units(spec: &[(u32, u64, u32)]) -> Vec<CashUnit> {
        spec.iter().map(|&(n, d, c)| bill(n, d, c)).collect()
    }

    fn total(u: &[CashUnit], items: &[DenominationItem]) -> (u64, u32) {
        (value_of(u, items), items.iter().map(|i| i.count).sum())
    }

    #[test]
    fn minimum_notes_is_exact_where_greedy_fails() {
        let u = units(&[(1, 5000, 10), (2, 2000, 10)]);
        let items = denominate(&u, "CNY", 6000, MixAlgorithm::MinimumNotes).unwrap();
        assert_eq!(
            items,
            vec![DenominationItem {
                unit_number: 2,
                count: 3
            }]
        );
        let items = denominate(&u, "CNY", 11000, MixAlgorithm::MinimumNotes).unwrap();
        assert_eq!(total(&u, &items), (11000, 4));
    }

    #[test]
    fn respects_counts_and_limits() {
        let u = units(&[(1, 10000, 1), (2, 5000, 100)]);
        let items = denominate(&u, "CNY", 30000, MixAlgorithm::MinimumNotes).unwrap();
        assert_eq!(total(&u, &items), (30000, 5));
        assert_eq!(
            denominate(&u, "CNY", 1000, MixAlgorithm::MinimumNotes)
                .unwrap_err()
                .error,
            Some(cdm::NOTDISPENSABLE)
        );
        assert_eq!(
            denominate(&u, "USD", 10000, MixAlgorithm::MinimumNotes)
                .unwrap_err()
                .error,
            Some(cdm::INVALIDCURRENCY)
        );
        assert_eq!(
            denominate(&u, "CNY", 10_000_000, MixAlgorithm::MinimumNotes)
                .unwrap_err()
                .error,
            Some(cdm::TOOMANYITEMS)
        );
        assert!(denominate(&u, "CNY", 0, MixAlgorithm::MinimumNotes).is_err());
    }

    #[test]
    fn equal_emptying_spreads_notes() {
        let u = units(&[(1, 10000, 50), (2, 10000, 60)]);
        let items = denominate(&u, "CNY", 40000, MixAlgorithm::EqualEmptying).unwrap();
        assert_eq!(total(&u, &items), (40000, 4));
        assert_eq!(
            items,
            vec![DenominationItem {
                unit_number: 2,
                count: 4
            }]
        );
        let u = units(&[(1, 10000, 50), (2, 10000, 50)]);
        let items = denominate(&u, "CNY", 40000, MixAlgorithm::EqualEmptying).unwrap();
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn thresholds_drive_status() {
        let mut u = bill(1, 10000, 101);
        assert_eq!(unit_status(&u), CashUnitStatus::Ok);
        u.count = 100;
        assert_eq!(unit_status(&u), CashUnitStatus::Low);
        u.count = 0;
        assert_eq!(unit_status(&u), CashUnitStatus::Empty);
        let mut r = bin(5, CashUnitType::Reject);
        r.count = 250;
        assert_eq!(unit_status(&r), CashUnitStatus::High);
        r.count = 300;
        assert_eq!(unit_status(&r), CashUnitStatus::Full);
    }

    #[test]
    fn unit_tables_are_validated() {
        assert!(validate_units(&[]).is_err());
        let mut u = units(&[(1, 10000, 10), (1, 5000, 10)]);
        assert!(validate_units(&u).is_err());
        u[1].number = 2;
        assert!(validate_units(&u).is_ok());
        u[0].count = 99_999;
        assert!(validate_units(&u).is_err());
        u[0].count = 10;
        u[0].currency = "cny".into();
        assert!(validate_units(&u).is_err());
    }
}
