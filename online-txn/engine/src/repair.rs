//! In-doubt repair plans (seed 002 修复方案): what to do with transactions whose outcome at the
//! host is still unknown after the reversal worker gave up.
//!
//! **Items** needing repair are journal rows in `IN_DOUBT` without a pending reversal: their
//! reversal ended `FAILED` (out of attempts, expired, or a refusal asking again cannot change),
//! or they never got one. Each belongs to the **system group of its back end**: [`HOST_GROUP`]
//! for the `[host]` link, and for a `[[backends]]` entry its name in capitals with `-` and `.`
//! as `_` ([`group_of`]: `core-json` → `CORE_JSON`). Rows of other back ends are items once
//! their own reversal worker gave up (`backends::reversal` then leaves a `FAILED` reversal row
//! as the durable mark).
//!
//! A **plan** (`repair_plan`) is selected by its system group and fix code, and says how many
//! times an item may be retried (`max_retries`, 0–99: an item gets at most `1 + max_retries`
//! attempts from a plan; a successful one is not repeated unless the item needs repair again),
//! when it runs (`AUTOMATIC` on its cron schedule, or `MANUAL` through the admin API), whether it
//! may run at all (`valid`, 正常/失效) and how important it is. Fix codes:
//!
//! - [`FixCode::ReversalRetry`] (`REVERSAL_RETRY`): re-queues the reversal (`FAILED` →
//!   `PENDING`, attempts reset, expiry renewed) — or queues one if there was none — and wakes the
//!   reversal worker, which delivers it like any other; for another back end the `FAILED` mark
//!   is removed, which hands the row back to that back end's reversal worker (it picks it up
//!   within two seconds, attempts counted from zero);
//! - [`FixCode::MarkReversedManually`] (`MARK_REVERSED_MANUALLY`): for cases an operator
//!   confirmed with the host out of band: the reversal → `DONE` and the row → `REVERSED` with
//!   the operator's note. Only `MANUAL` plans, only for the journal ids named in the run
//!   request, never for a row whose reversal is pending.
//!
//! Every attempt is recorded (`repair_attempt`) with its outcome `SUCCESS`, `FAILED` or
//! `SKIPPED`. An item out of retries is skipped; that is recorded once, not at every run.
//!
//! **Cron**: 6 fields (`sec min hour day-of-month month day-of-week`), optionally a 7th (year),
//! Quartz style as in the seed (`0 0/10 * * * ?`; day of week 1–7 = SUN–SAT or names); a
//! 5-field Unix expression is accepted as `0 <expr>` (seconds 0), but only with names or `*`/`?`
//! in its day-of-week field, because Unix numbers days 0–6 from Sunday. Schedules are evaluated
//! in the server's local time zone. The scheduler ([`Repair::run_scheduler`]) sleeps until the
//! next due automatic, valid plan; a fire missed while the engine was down or busy is not
//! caught up. Engines sharing one PostgreSQL journal claim each fire time, so a scheduled run
//! happens once.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use sqlx::any::AnyRow;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::journal::{Journal, JournalError, now_ms};

/// The system group of the engine's back channel to the host (`[host]`, back end `host`).
pub const HOST_GROUP: &str = "HOST";

/// The system group of back end `backend`: [`HOST_GROUP`] for `host`, else the name in
/// capitals with every character but letters and digits as `_`, at most 32 characters.
pub fn group_of(backend: &str) -> String {
    if backend == crate::router::DEFAULT_BACKEND {
        return HOST_GROUP.to_owned();
    }
    backend
        .chars()
        .take(32)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}
/// Most items one run handles (the rest wait for the next run).
pub const MAX_ITEMS_PER_RUN: i64 = 1_000;
/// Most journal ids one run request may name.
pub const MAX_RUN_JOURNAL_IDS: usize = 100;
/// Longest plan description, in characters.
pub const MAX_DESCRIPTION: usize = 200;
/// Longest operator note, in characters.
pub const MAX_NOTE: usize = 200;
/// Default schedule (seed 002: every two minutes).
pub const DEFAULT_CRON: &str = "0 0/2 * * * ?";
/// The scheduler re-reads the plans at least this often (changes by another engine instance).
const RESCAN: Duration = Duration::from_secs(30);

/// What a plan does to an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FixCode {
    /// Re-queue the reversal so the worker delivers it again.
    ReversalRetry,
    /// Operator-confirmed: record the reversal as done and the row as reversed.
    MarkReversedManually,
}

impl FixCode {
    /// Every fix code.
    pub const ALL: [FixCode; 2] = [FixCode::ReversalRetry, FixCode::MarkReversedManually];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            FixCode::ReversalRetry => "REVERSAL_RETRY",
            FixCode::MarkReversedManually => "MARK_REVERSED_MANUALLY",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<FixCode> {
        FixCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// How a plan is triggered (seed 002 执行方式).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Runs on its cron schedule (and may also be run by hand).
    Automatic,
    /// Runs only through the API.
    Manual,
}

impl Mode {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Automatic => "AUTOMATIC",
            Mode::Manual => "MANUAL",
        }
    }

    fn parse(s: &str) -> Option<Mode> {
        [Mode::Automatic, Mode::Manual]
            .into_iter()
            .find(|m| m.as_str() == s)
    }
}

/// How important the data a plan repairs is (seed 002 方案等级).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Importance {
    /// 不重要.
    Low,
    /// 一般.
    Normal,
    /// 重要.
    High,
    /// 非常重要 (the default).
    Critical,
}

impl Importance {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Importance::Low => "LOW",
            Importance::Normal => "NORMAL",
            Importance::High => "HIGH",
            Importance::Critical => "CRITICAL",
        }
    }

    fn parse(s: &str) -> Option<Importance> {
        [
            Importance::Low,
            Importance::Normal,
            Importance::High,
            Importance::Critical,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Trigger {
    /// The API (an operator).
    Manual,
    /// The plan's cron schedule.
    Schedule,
}

impl Trigger {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Manual => "MANUAL",
            Trigger::Schedule => "SCHEDULE",
        }
    }
}

/// The outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Outcome {
    /// The fix was applied.
    Success,
    /// The fix could not be applied (it counts as an attempt and is retried).
    Failed,
    /// Nothing was done: out of retries, or the item no longer needs repair.
    Skipped,
}

impl Outcome {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "SUCCESS",
            Outcome::Failed => "FAILED",
            Outcome::Skipped => "SKIPPED",
        }
    }
}

/// A stored plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Row id.
    pub id: i64,
    /// System group (seed: 系统组别, the production system's code).
    pub system_group: String,
    /// Fix code (seed: 修复代号), one of [`FixCode`].
    pub fix_code: String,
    /// Retries per item after the first attempt, 0–99.
    pub max_retries: i64,
    /// Cron schedule (see the module docs).
    pub cron: String,
    /// Automatic or manual.
    pub mode: Mode,
    /// Whether the plan may run (正常) or not (失效).
    pub valid: bool,
    /// Importance.
    pub importance: Importance,
    /// What the plan is for.
    pub description: String,
    /// Created, ms since the epoch.
    pub created_ms: i64,
    /// Last change, ms since the epoch.
    pub updated_ms: i64,
    /// Last run (manual or scheduled), ms since the epoch.
    pub last_run_ms: Option<i64>,
    /// Next scheduled run for an automatic, valid plan, ms since the epoch.
    pub next_run_ms: Option<i64>,
}

/// The body of a create or update request. On create, `systemGroup` and `fixCode` are
/// required and the rest default to seed 002's defaults (`maxRetries` 0, `cron`
/// [`DEFAULT_CRON`], `mode` AUTOMATIC, `valid` true, `importance` CRITICAL, empty
/// description); on update, an absent field keeps its value.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PlanInput {
    /// See [`Plan::system_group`].
    #[serde(default)]
    pub system_group: Option<String>,
    /// See [`Plan::fix_code`].
    #[serde(default)]
    pub fix_code: Option<String>,
    /// See [`Plan::max_retries`].
    #[serde(default)]
    pub max_retries: Option<i64>,
    /// See [`Plan::cron`].
    #[serde(default)]
    pub cron: Option<String>,
    /// `AUTOMATIC` or `MANUAL`.
    #[serde(default)]
    pub mode: Option<String>,
    /// See [`Plan::valid`].
    #[serde(default)]
    pub valid: Option<bool>,
    /// `LOW`, `NORMAL`, `HIGH` or `CRITICAL`.
    #[serde(default)]
    pub importance: Option<String>,
    /// See [`Plan::description`].
    #[serde(default)]
    pub description: Option<String>,
}

/// The body of a run request (optional for `REVERSAL_RETRY`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RunOptions {
    /// Only these journal rows (at most [`MAX_RUN_JOURNAL_IDS`]); required for
    /// `MARK_REVERSED_MANUALLY`. Empty: every item of the plan's group.
    #[serde(default)]
    pub journal_ids: Vec<i64>,
    /// The operator's note, required for `MARK_REVERSED_MANUALLY` (at most [`MAX_NOTE`]
    /// characters).
    #[serde(default)]
    pub note: Option<String>,
}

/// One recorded attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// Row id.
    pub id: i64,
    /// The plan (which may have been deleted since).
    pub plan_id: i64,
    /// The plan's system group at the time.
    pub system_group: String,
    /// The plan's fix code at the time.
    pub fix_code: String,
    /// `MANUAL` or `SCHEDULE`.
    pub trigger: String,
    /// The journal row repaired.
    pub journal_id: i64,
    /// Its reversal, when it has one.
    pub reversal_id: Option<i64>,
    /// Started, ms since the epoch.
    pub started_ms: i64,
    /// Finished, ms since the epoch.
    pub finished_ms: i64,
    /// `SUCCESS`, `FAILED` or `SKIPPED`.
    pub outcome: String,
    /// What happened.
    pub detail: String,
}

/// What one run did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    /// The plan.
    pub plan_id: i64,
    /// Its system group.
    pub system_group: String,
    /// Its fix code.
    pub fix_code: String,
    /// What started the run.
    pub trigger: Trigger,
    /// Started, ms since the epoch.
    pub started_ms: i64,
    /// Finished, ms since the epoch.
    pub finished_ms: i64,
    /// Items considered.
    pub candidates: usize,
    /// Attempts that succeeded.
    pub succeeded: usize,
    /// Attempts that failed.
    pub failed: usize,
    /// Items skipped (out of retries, or no longer needing repair).
    pub skipped: usize,
    /// The attempts recorded by this run.
    pub attempts: Vec<Attempt>,
    /// A remark, e.g. why there was nothing to do.
    pub note: Option<String>,
}

/// A reversal as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReversalInfo {
    /// Queue row.
    pub id: i64,
    /// `PENDING`, `DONE` or `FAILED`.
    pub state: String,
    /// Why it was queued.
    pub reason: String,
    /// Attempts since it was (re-)queued.
    pub attempts: i64,
    /// The last attempt's result.
    pub last_result: Option<String>,
    /// When it stops being deliverable.
    pub expires_ms: i64,
    /// Last change.
    pub updated_ms: i64,
    /// A partial reversal: the amount that stands (F95); `null` for a full reversal.
    pub replacement_minor: Option<i64>,
    /// The amount the reversal gives back.
    pub reversed_minor: i64,
}

/// A journal row as the admin API shows it: masked PAN, no request digest, no stored answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalView {
    /// Row id.
    pub id: i64,
    /// F41.
    pub terminal_id: String,
    /// F11.
    pub stan: String,
    /// F13.
    pub txn_date: String,
    /// Request MTI.
    pub mti: String,
    /// F3.
    pub processing_code: String,
    /// F4, minor units.
    pub amount_minor: i64,
    /// F49.
    pub currency: String,
    /// PAN, first 6 / last 4 only.
    pub pan_masked: String,
    /// Journal state.
    pub state: String,
    /// F39 of the answer.
    pub response_code: Option<String>,
    /// F37.
    pub rrn: Option<String>,
    /// F38.
    pub auth_code: Option<String>,
    /// Created.
    pub created_ms: i64,
    /// Last change.
    pub updated_ms: i64,
    /// The back end it was sent to (`host`: the `[host]` link).
    pub backend: String,
    /// Its reversal, if one was queued.
    pub reversal: Option<ReversalInfo>,
}

/// An item needing repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepairItem {
    /// `REVERSAL_FAILED` (the reversal was given up), `NO_REVERSAL` (none was queued) or
    /// `REVERSAL_DONE` (acknowledged, but the row stayed in doubt).
    pub kind: String,
    /// The system group it belongs to (its back end's, [`group_of`]).
    pub system_group: String,
    /// The journal row.
    pub journal: JournalView,
}

/// Defence in depth: the journal stores masked PANs; anything that still looks like a full
/// PAN is masked again before it leaves.
pub(crate) fn mask(pan: &str) -> String {
    let digits = pan.chars().filter(char::is_ascii_digit).count();
    if pan.contains('*') || digits < 11 {
        return pan.to_owned();
    }
    let chars: Vec<char> = pan.chars().collect();
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 6 || i + 4 >= chars.len() {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// A page request: `pageNo` from 1, `pageSize` 1–100.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    /// Page number, from 1.
    pub page_no: i64,
    /// Rows per page.
    pub page_size: i64,
}

impl PageRequest {
    /// Largest page size.
    pub const MAX_SIZE: i64 = 100;
    /// Default page size.
    pub const DEFAULT_SIZE: i64 = 20;
    /// Largest page number.
    pub const MAX_NO: i64 = 1_000_000;

    /// Validates; absent values default to page 1 of 20.
    pub fn new(page_no: Option<i64>, page_size: Option<i64>) -> Result<PageRequest, RepairError> {
        let page_no = page_no.unwrap_or(1);
        let page_size = page_size.unwrap_or(Self::DEFAULT_SIZE);
        if !(1..=Self::MAX_NO).contains(&page_no) {
            return Err(invalid(
                "pageNo",
                format!("pageNo must be 1..={}, got {page_no}", Self::MAX_NO),
            ));
        }
        if !(1..=Self::MAX_SIZE).contains(&page_size) {
            return Err(invalid(
                "pageSize",
                format!("pageSize must be 1..={}, got {page_size}", Self::MAX_SIZE),
            ));
        }
        Ok(PageRequest { page_no, page_size })
    }

    fn offset(self) -> i64 {
        (self.page_no - 1) * self.page_size
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        PageRequest {
            page_no: 1,
            page_size: Self::DEFAULT_SIZE,
        }
    }
}

/// One page of a list (seed 001 §6.3.1's paging structure).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// Page number, from 1.
    pub page_no: i64,
    /// Rows per page.
    pub page_size: i64,
    /// Rows in all pages.
    pub total_count: i64,
    /// Number of pages.
    pub total_pages: i64,
    /// This page's rows.
    pub rows: Vec<T>,
}

impl<T> Page<T> {
    fn new(req: PageRequest, total_count: i64, rows: Vec<T>) -> Page<T> {
        Page {
            page_no: req.page_no,
            page_size: req.page_size,
            total_count,
            total_pages: (total_count + req.page_size - 1) / req.page_size,
            rows,
        }
    }
}

/// Filters of the attempt list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptFilter {
    /// Only this plan's attempts.
    pub plan_id: Option<i64>,
    /// Only attempts on this journal row.
    pub journal_id: Option<i64>,
}

/// Why a repair request was refused. Each has a stable [`code`](RepairError::code); a refused
/// request changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// A field is missing or out of range (`INVALID_ARGUMENT`).
    #[error("{message}")]
    InvalidArgument {
        /// The offending field (the API's name).
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// No such plan or journal row (`NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// Another plan has the same system group and fix code (`CONFLICT`).
    #[error("{0}")]
    Conflict(String),
    /// The plan cannot run as asked: invalid (失效), or a fix code's precondition
    /// (`FAILED_PRECONDITION`).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The journal database failed (`INTERNAL`) or is shutting down (`UNAVAILABLE`).
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl From<sqlx::Error> for RepairError {
    fn from(e: sqlx::Error) -> Self {
        RepairError::Journal(JournalError::Database(e))
    }
}

impl RepairError {
    /// The stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            RepairError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            RepairError::NotFound(_) => "NOT_FOUND",
            RepairError::Conflict(_) => "CONFLICT",
            RepairError::FailedPrecondition(_) => "FAILED_PRECONDITION",
            RepairError::Journal(JournalError::Closed | JournalError::Unavailable) => "UNAVAILABLE",
            RepairError::Journal(_) => "INTERNAL",
        }
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> RepairError {
    RepairError::InvalidArgument {
        field,
        message: message.into(),
    }
}

/// Parses a plan's cron expression (see the module docs for the accepted forms).
pub fn parse_cron(expr: &str) -> Result<cron::Schedule, String> {
    let expr = expr.trim();
    if expr.is_empty() {
        return Err("cron must not be empty".into());
    }
    if expr.len() > 120 {
        return Err("cron must be at most 120 characters".into());
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let full = match fields.len() {
        _ if expr.starts_with('@') => expr.to_owned(),
        5 => {
            if fields[4].chars().any(|c| c.is_ascii_digit()) {
                return Err(format!(
                    "cron {expr:?}: in a 5-field expression write the day of week with names \
                     (MON-FRI) or * / ?, because Unix numbers days 0-6 from Sunday and this \
                     schedule numbers them 1-7"
                ));
            }
            format!("0 {}", fields.join(" "))
        }
        6 | 7 => fields.join(" "),
        n => {
            return Err(format!(
                "cron {expr:?} has {n} fields: use 6 (sec min hour day-of-month month \
                 day-of-week), 7 (with year) or 5 (Unix, seconds 0)"
            ));
        }
    };
    let schedule = cron::Schedule::from_str(&full).map_err(|e| format!("cron {expr:?}: {e}"))?;
    if schedule.upcoming(Local).next().is_none() {
        return Err(format!("cron {expr:?} never fires"));
    }
    Ok(schedule)
}

fn next_fire(schedule: &cron::Schedule, after: DateTime<Local>) -> Option<DateTime<Local>> {
    schedule.after(&after).next()
}

fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// A plan's fields, validated.
#[derive(Debug, Clone)]
struct Draft {
    system_group: String,
    fix_code: FixCode,
    max_retries: i64,
    cron: String,
    mode: Mode,
    valid: bool,
    importance: Importance,
    description: String,
}

impl Draft {
    fn from_plan(p: &Plan) -> Draft {
        Draft {
            system_group: p.system_group.clone(),
            fix_code: FixCode::parse(&p.fix_code).unwrap_or(FixCode::ReversalRetry),
            max_retries: p.max_retries,
            cron: p.cron.clone(),
            mode: p.mode,
            valid: p.valid,
            importance: p.importance,
            description: p.description.clone(),
        }
    }

    /// A new plan's fields: required ones checked, the rest seed 002's defaults.
    fn create(input: &PlanInput) -> Result<Draft, RepairError> {
        let required = |v: &Option<String>, field: &'static str| {
            v.clone()
                .ok_or_else(|| invalid(field, format!("{field} is required")))
        };
        let system_group = required(&input.system_group, "systemGroup")?;
        let fix_code = required(&input.fix_code, "fixCode")?;
        let mut draft = Draft {
            system_group,
            fix_code: FixCode::ReversalRetry,
            max_retries: 0,
            cron: DEFAULT_CRON.into(),
            mode: Mode::Automatic,
            valid: true,
            importance: Importance::Critical,
            description: String::new(),
        };
        draft.apply(&PlanInput {
            fix_code: Some(fix_code),
            ..input.clone()
        })?;
        Ok(draft)
    }

    /// Applies the fields present in `input`, then checks the whole plan.
    fn apply(&mut self, input: &PlanInput) -> Result<(), RepairError> {
        if let Some(g) = &input.system_group {
            if !is_code(g) {
                return Err(invalid(
                    "systemGroup",
                    format!("systemGroup {g:?} must be 1 to 32 characters of A-Z, 0-9 and _"),
                ));
            }
            self.system_group = g.clone();
        }
        if let Some(f) = &input.fix_code {
            if !is_code(f) {
                return Err(invalid(
                    "fixCode",
                    format!("fixCode {f:?} must be 1 to 32 characters of A-Z, 0-9 and _"),
                ));
            }
            self.fix_code = FixCode::parse(f).ok_or_else(|| {
                invalid(
                    "fixCode",
                    format!(
                        "fixCode {f:?} is not a known fix: use {}",
                        FixCode::ALL.map(FixCode::as_str).join(" or ")
                    ),
                )
            })?;
        }
        if let Some(n) = input.max_retries {
            if !(0..=99).contains(&n) {
                return Err(invalid(
                    "maxRetries",
                    format!("maxRetries must be 0..=99, got {n}"),
                ));
            }
            self.max_retries = n;
        }
        if let Some(c) = &input.cron {
            parse_cron(c).map_err(|m| invalid("cron", m))?;
            self.cron = c.trim().to_owned();
        }
        if let Some(m) = &input.mode {
            self.mode = Mode::parse(m).ok_or_else(|| {
                invalid("mode", format!("mode {m:?} must be AUTOMATIC or MANUAL"))
            })?;
        }
        if let Some(v) = input.valid {
            self.valid = v;
        }
        if let Some(i) = &input.importance {
            self.importance = Importance::parse(i).ok_or_else(|| {
                invalid(
                    "importance",
                    format!("importance {i:?} must be LOW, NORMAL, HIGH or CRITICAL"),
                )
            })?;
        }
        if let Some(d) = &input.description {
            if d.chars().count() > MAX_DESCRIPTION {
                return Err(invalid(
                    "description",
                    format!("description must be at most {MAX_DESCRIPTION} characters"),
                ));
            }
            if d.chars().any(char::is_control) {
                return Err(invalid(
                    "description",
                    "description must not contain control characters",
                ));
            }
            self.description = d.clone();
        }
        if self.fix_code == FixCode::MarkReversedManually && self.mode != Mode::Manual {
            return Err(invalid(
                "mode",
                "a MARK_REVERSED_MANUALLY plan must be MANUAL: it records operator-confirmed \
                 outcomes and never runs by itself",
            ));
        }
        Ok(())
    }
}

const PLAN_COLUMNS: &str = "id, system_group, fix_code, max_retries, cron, mode, valid, importance, \
     description, created_ms, updated_ms, last_run_ms";

fn plan_row(r: &AnyRow) -> Result<Plan, RepairError> {
    let corrupt = |what: &str, v: &str| {
        RepairError::Journal(JournalError::Corrupt(format!(
            "repair_plan: unknown {what} {v:?}"
        )))
    };
    let mode: String = r.try_get("mode")?;
    let importance: String = r.try_get("importance")?;
    let valid: i64 = r.try_get("valid")?;
    let mut plan = Plan {
        id: r.try_get("id")?,
        system_group: r.try_get("system_group")?,
        fix_code: r.try_get("fix_code")?,
        max_retries: r.try_get("max_retries")?,
        cron: r.try_get("cron")?,
        mode: Mode::parse(&mode).ok_or_else(|| corrupt("mode", &mode))?,
        valid: valid != 0,
        importance: Importance::parse(&importance)
            .ok_or_else(|| corrupt("importance", &importance))?,
        description: r.try_get("description")?,
        created_ms: r.try_get("created_ms")?,
        updated_ms: r.try_get("updated_ms")?,
        last_run_ms: r.try_get("last_run_ms")?,
        next_run_ms: None,
    };
    if plan.valid && plan.mode == Mode::Automatic {
        plan.next_run_ms = parse_cron(&plan.cron)
            .ok()
            .and_then(|s| next_fire(&s, Local::now()))
            .map(|t| t.timestamp_millis());
    }
    Ok(plan)
}

const ATTEMPT_COLUMNS: &str = "id, plan_id, system_group, fix_code, run_trigger, journal_id, reversal_id, \
     started_ms, finished_ms, outcome, detail";

fn attempt_row(r: &AnyRow) -> Result<Attempt, RepairError> {
    Ok(Attempt {
        id: r.try_get("id")?,
        plan_id: r.try_get("plan_id")?,
        system_group: r.try_get("system_group")?,
        fix_code: r.try_get("fix_code")?,
        trigger: r.try_get("run_trigger")?,
        journal_id: r.try_get("journal_id")?,
        reversal_id: r.try_get("reversal_id")?,
        started_ms: r.try_get("started_ms")?,
        finished_ms: r.try_get("finished_ms")?,
        outcome: r.try_get("outcome")?,
        detail: r.try_get("detail")?,
    })
}

/// What a fix did to one item (from `journal_repair.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FixResult {
    /// Applied; the reversal id and what happened.
    Applied(Option<i64>, String),
    /// Nothing to do any more (why).
    NotNeeded(String),
}

/// The repair service: plans, runs, attempts, and the scheduler.
pub struct Repair {
    journal: Journal,
    reversal_ttl: Duration,
    reversal_wake: Option<Arc<Notify>>,
    /// System group → back end, `HOST` → `host` included.
    groups: HashMap<String, String>,
    plans_changed: Notify,
    runs: Mutex<()>,
}

impl Repair {
    /// A service over `journal`. Re-queued reversals get `reversal_ttl` to be delivered;
    /// `reversal_wake` wakes the reversal worker (else it finds them on its next poll).
    pub fn new(
        journal: Journal,
        reversal_ttl: Duration,
        reversal_wake: Option<Arc<Notify>>,
    ) -> Arc<Repair> {
        Repair::with_backends(journal, reversal_ttl, reversal_wake, &[])
    }

    /// [`Repair::new`] that also repairs the rows of these `[[backends]]` (by name), each in
    /// its own system group ([`group_of`]).
    pub fn with_backends(
        journal: Journal,
        reversal_ttl: Duration,
        reversal_wake: Option<Arc<Notify>>,
        backends: &[String],
    ) -> Arc<Repair> {
        let mut groups = HashMap::new();
        groups.insert(
            HOST_GROUP.to_owned(),
            crate::router::DEFAULT_BACKEND.to_owned(),
        );
        for b in backends {
            groups.entry(group_of(b)).or_insert_with(|| b.clone());
        }
        Arc::new(Repair {
            journal,
            reversal_ttl,
            reversal_wake,
            groups,
            plans_changed: Notify::new(),
            runs: Mutex::new(()),
        })
    }

    /// The journal it repairs.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Creates a plan.
    pub async fn create_plan(&self, input: PlanInput) -> Result<Plan, RepairError> {
        let draft = Draft::create(&input)?;
        let now = now_ms();
        let pool = self.journal.pool();
        let mut tx = pool.begin().await?;
        self.check_unique(&mut tx, &draft, None).await?;
        let row = sqlx::query(
            "INSERT INTO repair_plan (system_group, fix_code, max_retries, cron, mode, valid, importance, \
             description, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) RETURNING id",
        )
        .bind(&draft.system_group)
        .bind(draft.fix_code.as_str())
        .bind(draft.max_retries)
        .bind(&draft.cron)
        .bind(draft.mode.as_str())
        .bind(i64::from(draft.valid))
        .bind(draft.importance.as_str())
        .bind(&draft.description)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| unique_conflict(e, &draft))?;
        let id: i64 = row.try_get("id")?;
        tx.commit().await.map_err(|e| unique_conflict(e, &draft))?;
        tracing::info!(plan_id = id, group = %draft.system_group, fix = draft.fix_code.as_str(), "repair plan created");
        self.plans_changed.notify_one();
        self.plan(id).await
    }

    async fn check_unique(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        draft: &Draft,
        except: Option<i64>,
    ) -> Result<(), RepairError> {
        let other = sqlx::query(
            "SELECT id FROM repair_plan WHERE system_group = $1 AND fix_code = $2 AND id <> $3",
        )
        .bind(&draft.system_group)
        .bind(draft.fix_code.as_str())
        .bind(except.unwrap_or(0))
        .fetch_optional(&mut **tx)
        .await?;
        match other {
            Some(r) => {
                let id: i64 = r.try_get("id")?;
                Err(RepairError::Conflict(format!(
                    "plan {id} already has system group {} and fix code {}",
                    draft.system_group,
                    draft.fix_code.as_str()
                )))
            }
            None => Ok(()),
        }
    }

    /// One plan.
    pub async fn plan(&self, id: i64) -> Result<Plan, RepairError> {
        let row = sqlx::query(&format!(
            "SELECT {PLAN_COLUMNS} FROM repair_plan WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(self.journal.pool())
        .await?
        .ok_or_else(|| RepairError::NotFound(format!("repair plan {id} does not exist")))?;
        plan_row(&row)
    }

    /// Plans, by id.
    pub async fn plans(&self, page: PageRequest) -> Result<Page<Plan>, RepairError> {
        let pool = self.journal.pool();
        let total: i64 = sqlx::query("SELECT COUNT(*) AS n FROM repair_plan")
            .fetch_one(pool)
            .await?
            .try_get("n")?;
        let rows = sqlx::query(&format!(
            "SELECT {PLAN_COLUMNS} FROM repair_plan ORDER BY id LIMIT $1 OFFSET $2"
        ))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(pool)
        .await?;
        let rows = rows.iter().map(plan_row).collect::<Result<_, _>>()?;
        Ok(Page::new(page, total, rows))
    }

    /// Changes the fields present in `input`.
    pub async fn update_plan(&self, id: i64, input: PlanInput) -> Result<Plan, RepairError> {
        let current = self.plan(id).await?;
        let mut draft = Draft::from_plan(&current);
        draft.apply(&input)?;
        let pool = self.journal.pool();
        let mut tx = pool.begin().await?;
        self.check_unique(&mut tx, &draft, Some(id)).await?;
        let done = sqlx::query(
            "UPDATE repair_plan SET system_group = $1, fix_code = $2, max_retries = $3, cron = $4, mode = $5, \
             valid = $6, importance = $7, description = $8, updated_ms = $9 WHERE id = $10",
        )
        .bind(&draft.system_group)
        .bind(draft.fix_code.as_str())
        .bind(draft.max_retries)
        .bind(&draft.cron)
        .bind(draft.mode.as_str())
        .bind(i64::from(draft.valid))
        .bind(draft.importance.as_str())
        .bind(&draft.description)
        .bind(now_ms().max(current.updated_ms + 1))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_conflict(e, &draft))?;
        if done.rows_affected() == 0 {
            return Err(RepairError::NotFound(format!(
                "repair plan {id} does not exist"
            )));
        }
        tx.commit().await.map_err(|e| unique_conflict(e, &draft))?;
        tracing::info!(plan_id = id, "repair plan changed");
        self.plans_changed.notify_one();
        self.plan(id).await
    }

    /// Deletes a plan; its attempts stay (they carry the plan's group and fix code).
    pub async fn delete_plan(&self, id: i64) -> Result<(), RepairError> {
        let done = sqlx::query("DELETE FROM repair_plan WHERE id = $1")
            .bind(id)
            .execute(self.journal.pool())
            .await?;
        if done.rows_affected() == 0 {
            return Err(RepairError::NotFound(format!(
                "repair plan {id} does not exist"
            )));
        }
        tracing::info!(plan_id = id, "repair plan deleted");
        self.plans_changed.notify_one();
        Ok(())
    }

    /// Recorded attempts, newest first.
    pub async fn attempts(
        &self,
        filter: AttemptFilter,
        page: PageRequest,
    ) -> Result<Page<Attempt>, RepairError> {
        // 0 matches no row id: an absent filter is "any".
        let where_ = "($1 = 0 OR plan_id = $1) AND ($2 = 0 OR journal_id = $2)";
        let pool = self.journal.pool();
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM repair_attempt WHERE {where_}"
        ))
        .bind(filter.plan_id.unwrap_or(0))
        .bind(filter.journal_id.unwrap_or(0))
        .fetch_one(pool)
        .await?
        .try_get("n")?;
        let rows = sqlx::query(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM repair_attempt WHERE {where_} ORDER BY id DESC LIMIT $3 OFFSET $4"
        ))
        .bind(filter.plan_id.unwrap_or(0))
        .bind(filter.journal_id.unwrap_or(0))
        .bind(page.page_size)
        .bind(page.offset())
        .fetch_all(pool)
        .await?;
        let rows = rows.iter().map(attempt_row).collect::<Result<_, _>>()?;
        Ok(Page::new(page, total, rows))
    }

    /// What needs repair now, oldest first.
    pub async fn items(&self, page: PageRequest) -> Result<Page<RepairItem>, RepairError> {
        let total = self.journal.repair_item_count().await?;
        let rows = self
            .journal
            .repair_items(page.page_size, page.offset())
            .await?;
        Ok(Page::new(page, total, rows))
    }

    /// One journal row with its reversal (masked).
    pub async fn journal_entry(&self, id: i64) -> Result<JournalView, RepairError> {
        match self.journal.journal_view(id).await {
            Err(JournalError::NotFound(_)) => Err(RepairError::NotFound(format!(
                "journal row {id} does not exist"
            ))),
            other => Ok(other?),
        }
    }

    /// Runs a plan now (an operator's request, seed 002 异常处理 手动点击执行).
    pub async fn run_plan(&self, id: i64, options: RunOptions) -> Result<RunSummary, RepairError> {
        self.run(id, Trigger::Manual, options, None).await
    }

    async fn run(
        &self,
        id: i64,
        trigger: Trigger,
        options: RunOptions,
        fire_ms: Option<i64>,
    ) -> Result<RunSummary, RepairError> {
        let plan = self.plan(id).await?;
        if !plan.valid {
            return Err(RepairError::FailedPrecondition(format!(
                "repair plan {id} is invalid (失效); make it valid before running it"
            )));
        }
        let fix = FixCode::parse(&plan.fix_code).ok_or_else(|| {
            RepairError::FailedPrecondition(format!(
                "repair plan {id} has an unknown fix code {:?}",
                plan.fix_code
            ))
        })?;
        if options.journal_ids.len() > MAX_RUN_JOURNAL_IDS {
            return Err(invalid(
                "journalIds",
                format!("journalIds may name at most {MAX_RUN_JOURNAL_IDS} rows"),
            ));
        }
        let mut ids = options.journal_ids.clone();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != options.journal_ids.len() || ids.iter().any(|&i| i <= 0) {
            return Err(invalid(
                "journalIds",
                "journalIds must be distinct positive row ids",
            ));
        }
        let note = options.note.as_deref().map(str::trim).unwrap_or_default();
        if note.chars().count() > MAX_NOTE || note.chars().any(char::is_control) {
            return Err(invalid(
                "note",
                format!("note must be at most {MAX_NOTE} characters without control characters"),
            ));
        }
        if fix == FixCode::MarkReversedManually {
            if trigger != Trigger::Manual || plan.mode != Mode::Manual {
                return Err(RepairError::FailedPrecondition(
                    "MARK_REVERSED_MANUALLY runs only by hand, from a MANUAL plan".into(),
                ));
            }
            if ids.is_empty() {
                return Err(invalid(
                    "journalIds",
                    "MARK_REVERSED_MANUALLY needs the journalIds the operator confirmed",
                ));
            }
            if note.is_empty() {
                return Err(invalid(
                    "note",
                    "MARK_REVERSED_MANUALLY needs the operator's note (who confirmed what)",
                ));
            }
        }
        for &jid in &ids {
            if !self.journal.journal_exists(jid).await? {
                return Err(RepairError::NotFound(format!(
                    "journal row {jid} does not exist"
                )));
            }
        }

        let _one_run_at_a_time = self.runs.lock().await;
        if let Some(fire) = fire_ms {
            // Claim this fire time (several engines may share one journal database).
            let claimed = sqlx::query(
                "UPDATE repair_plan SET last_fire_ms = $1 WHERE id = $2 AND valid = 1 AND mode = 'AUTOMATIC' \
                 AND COALESCE(last_fire_ms, 0) < $1",
            )
            .bind(fire)
            .bind(id)
            .execute(self.journal.pool())
            .await?;
            if claimed.rows_affected() == 0 {
                return Err(RepairError::FailedPrecondition(format!(
                    "repair plan {id}: this fire time was taken or the plan changed"
                )));
            }
        }
        let started_ms = now_ms();
        let mut summary = RunSummary {
            plan_id: id,
            system_group: plan.system_group.clone(),
            fix_code: plan.fix_code.clone(),
            trigger,
            started_ms,
            finished_ms: started_ms,
            candidates: 0,
            succeeded: 0,
            failed: 0,
            skipped: 0,
            attempts: Vec::new(),
            note: None,
        };
        // (journal id, reversal id) of each candidate, or why a named row is not one.
        let mut candidates: Vec<(i64, Option<i64>, Option<String>)> = Vec::new();
        let backend = self.groups.get(&plan.system_group);
        if backend.is_none() {
            let mut known: Vec<&str> = self.groups.keys().map(String::as_str).collect();
            known.sort_unstable();
            summary.note = Some(format!(
                "system group {} has no in-doubt items in this engine (its groups: {})",
                plan.system_group,
                known.join(", ")
            ));
        } else if ids.is_empty() {
            let backend = backend.map(String::as_str).unwrap_or_default();
            for item in self
                .journal
                .repair_items_of(Some(backend), MAX_ITEMS_PER_RUN, 0)
                .await?
            {
                candidates.push((item.journal.id, item.journal.reversal.map(|r| r.id), None));
            }
        } else {
            for &jid in &ids {
                match self.journal.repair_item(jid).await? {
                    Some(item) if item.system_group != plan.system_group => candidates.push((
                        jid,
                        None,
                        Some(format!(
                            "journal row {jid} belongs to system group {}, not {}",
                            item.system_group, plan.system_group
                        )),
                    )),
                    Some(item) => {
                        candidates.push((jid, item.journal.reversal.map(|r| r.id), None))
                    }
                    None => candidates.push((
                        jid,
                        None,
                        Some(format!(
                            "journal row {jid} does not need repair (not in doubt, or its reversal is pending)"
                        )),
                    )),
                }
            }
        }
        summary.candidates = candidates.len();
        let mut requeued = false;
        for (journal_id, reversal_id, not_needed) in candidates {
            let started = now_ms();
            let (used, last) = self.history(id, journal_id).await?;
            let (outcome, reversal_id, detail) = if let Some(why) = not_needed {
                (Outcome::Skipped, reversal_id, why)
            } else if used > plan.max_retries {
                if last.as_deref() == Some(Outcome::Skipped.as_str()) {
                    // Recorded once already; do not fill the log at every run.
                    summary.skipped += 1;
                    continue;
                }
                (
                    Outcome::Skipped,
                    reversal_id,
                    format!(
                        "retries exhausted: {used} attempts made, the plan allows 1 + maxRetries {}",
                        plan.max_retries
                    ),
                )
            } else {
                let result = match fix {
                    FixCode::ReversalRetry => {
                        self.journal
                            .requeue_reversal(
                                journal_id,
                                self.reversal_ttl,
                                &format!("repair plan {id}"),
                            )
                            .await
                    }
                    FixCode::MarkReversedManually => {
                        self.journal.mark_reversed_manually(journal_id, note).await
                    }
                };
                match result {
                    Ok(FixResult::Applied(rid, what)) => {
                        requeued |= fix == FixCode::ReversalRetry;
                        (Outcome::Success, rid.or(reversal_id), what)
                    }
                    Ok(FixResult::NotNeeded(why)) => (Outcome::Skipped, reversal_id, why),
                    Err(e) => {
                        tracing::warn!(plan_id = id, journal_id, error = %e, "repair attempt failed");
                        (Outcome::Failed, reversal_id, e.to_string())
                    }
                }
            };
            match outcome {
                Outcome::Success => summary.succeeded += 1,
                Outcome::Failed => summary.failed += 1,
                Outcome::Skipped => summary.skipped += 1,
            }
            let attempt = self
                .record(
                    &plan,
                    trigger,
                    journal_id,
                    reversal_id,
                    started,
                    outcome,
                    &detail,
                )
                .await?;
            summary.attempts.push(attempt);
        }
        summary.finished_ms = now_ms();
        sqlx::query("UPDATE repair_plan SET last_run_ms = $1 WHERE id = $2")
            .bind(summary.finished_ms)
            .bind(id)
            .execute(self.journal.pool())
            .await?;
        if requeued && let Some(wake) = &self.reversal_wake {
            wake.notify_one();
        }
        if summary.candidates > 0 {
            tracing::info!(
                plan_id = id,
                trigger = trigger.as_str(),
                candidates = summary.candidates,
                succeeded = summary.succeeded,
                failed = summary.failed,
                skipped = summary.skipped,
                "repair plan ran"
            );
        }
        Ok(summary)
    }

    /// Attempts that count against the plan's retries for this item, and the last outcome.
    async fn history(
        &self,
        plan_id: i64,
        journal_id: i64,
    ) -> Result<(i64, Option<String>), RepairError> {
        let pool = self.journal.pool();
        let used: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM repair_attempt WHERE plan_id = $1 AND journal_id = $2 \
             AND outcome IN ('SUCCESS', 'FAILED')",
        )
        .bind(plan_id)
        .bind(journal_id)
        .fetch_one(pool)
        .await?
        .try_get("n")?;
        let last = sqlx::query(
            "SELECT outcome FROM repair_attempt WHERE plan_id = $1 AND journal_id = $2 ORDER BY id DESC LIMIT 1",
        )
        .bind(plan_id)
        .bind(journal_id)
        .fetch_optional(pool)
        .await?
        .map(|r| r.try_get::<String, _>("outcome"))
        .transpose()?;
        Ok((used, last))
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        plan: &Plan,
        trigger: Trigger,
        journal_id: i64,
        reversal_id: Option<i64>,
        started_ms: i64,
        outcome: Outcome,
        detail: &str,
    ) -> Result<Attempt, RepairError> {
        let finished_ms = now_ms();
        let detail: String = detail.chars().take(500).collect();
        let row = sqlx::query(
            "INSERT INTO repair_attempt (plan_id, system_group, fix_code, run_trigger, journal_id, reversal_id, \
             started_ms, finished_ms, outcome, detail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
        )
        .bind(plan.id)
        .bind(&plan.system_group)
        .bind(&plan.fix_code)
        .bind(trigger.as_str())
        .bind(journal_id)
        .bind(reversal_id)
        .bind(started_ms)
        .bind(finished_ms)
        .bind(outcome.as_str())
        .bind(&detail)
        .fetch_one(self.journal.pool())
        .await?;
        Ok(Attempt {
            id: row.try_get("id")?,
            plan_id: plan.id,
            system_group: plan.system_group.clone(),
            fix_code: plan.fix_code.clone(),
            trigger: trigger.as_str().to_owned(),
            journal_id,
            reversal_id,
            started_ms,
            finished_ms,
            outcome: outcome.as_str().to_owned(),
            detail,
        })
    }

    /// Runs the automatic, valid plans on their schedules until `shutdown`. Wakes for the
    /// next due plan, when a plan is created, changed or deleted, and at least every 30 s
    /// (plans changed by another engine sharing the database).
    pub async fn run_scheduler(self: Arc<Self>, shutdown: CancellationToken) {
        // Plan id → (its updated_ms, its schedule, its next fire time).
        let mut next: HashMap<i64, (i64, cron::Schedule, DateTime<Local>)> = HashMap::new();
        loop {
            let mut wait = RESCAN;
            match self.scheduled_plans().await {
                Ok(plans) => {
                    let mut fresh = HashMap::with_capacity(plans.len());
                    for p in plans {
                        let entry = match next.remove(&p.id) {
                            Some(e) if e.0 == p.updated_ms => Some(e),
                            _ => match parse_cron(&p.cron) {
                                Ok(s) => next_fire(&s, Local::now()).map(|t| (p.updated_ms, s, t)),
                                Err(e) => {
                                    tracing::error!(plan_id = p.id, error = %e, "repair plan has a bad schedule");
                                    None
                                }
                            },
                        };
                        if let Some(e) = entry {
                            fresh.insert(p.id, e);
                        }
                    }
                    next = fresh;
                    let now = Local::now();
                    let due: Vec<(i64, i64)> = next
                        .iter()
                        .filter(|(_, e)| e.2 <= now)
                        .map(|(id, e)| (*id, e.2.timestamp_millis()))
                        .collect();
                    for (id, fire_ms) in due {
                        if shutdown.is_cancelled() {
                            return;
                        }
                        match self
                            .run(id, Trigger::Schedule, RunOptions::default(), Some(fire_ms))
                            .await
                        {
                            Ok(_) | Err(RepairError::FailedPrecondition(_)) => {}
                            Err(e) => {
                                tracing::error!(plan_id = id, error = %e, "scheduled repair run failed")
                            }
                        }
                        if let Some(e) = next.get_mut(&id) {
                            match next_fire(&e.1, Local::now()) {
                                Some(t) => e.2 = t,
                                None => {
                                    next.remove(&id);
                                }
                            }
                        }
                    }
                    let now = Local::now();
                    if let Some(soonest) = next.values().map(|e| e.2).min() {
                        wait = (soonest - now).to_std().unwrap_or_default().min(RESCAN);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the repair plans");
                    wait = Duration::from_secs(5);
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = self.plans_changed.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn scheduled_plans(&self) -> Result<Vec<Plan>, RepairError> {
        let rows = sqlx::query(&format!(
            "SELECT {PLAN_COLUMNS} FROM repair_plan WHERE valid = 1 AND mode = 'AUTOMATIC' ORDER BY id"
        ))
        .fetch_all(self.journal.pool())
        .await?;
        rows.iter().map(plan_row).collect()
    }
}

fn unique_conflict(e: sqlx::Error, draft: &Draft) -> RepairError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => RepairError::Conflict(format!(
            "another plan already has system group {} and fix code {}",
            draft.system_group,
            draft.fix_code.as_str()
        )),
        _ => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_forms() {
        assert!(parse_cron("0 0/10 * * * ?").is_ok());
        assert!(parse_cron("* * * * * *").is_ok());
        assert!(parse_cron("0 0 2 * * ? 2099").is_ok());
        assert!(parse_cron("*/5 * * * *").is_ok(), "5 fields get seconds 0");
        assert!(parse_cron("0 9 * * MON-FRI").is_ok());
        assert!(parse_cron("0 9 * * 1-5").unwrap_err().contains("names"));
        assert!(parse_cron("* * *").unwrap_err().contains("3 fields"));
        assert!(parse_cron("0 61 * * * ?").is_err());
        assert!(
            parse_cron("0 0 0 1 1 ? 2001")
                .unwrap_err()
                .contains("never")
        );
        assert!(parse_cron("").is_err());
        assert!(parse_cron("0 0 0 31 2 ?").unwrap_err().contains("never"));
    }

    #[test]
    fn masks_what_looks_like_a_pan() {
        assert_eq!(mask("622202*********3445"), "622202*********3445");
        assert_eq!(mask("6222020200112233445"), "622202*********3445");
        assert_eq!(mask("12345"), "12345");
    }

    #[test]
    fn pages() {
        let p = PageRequest::new(Some(2), Some(10)).unwrap();
        assert_eq!(p.offset(), 10);
        assert_eq!(Page::new(p, 21, Vec::<()>::new()).total_pages, 3);
        assert_eq!(Page::new(p, 0, Vec::<()>::new()).total_pages, 0);
        assert_eq!(
            PageRequest::new(Some(0), None).unwrap_err().code(),
            "INVALID_ARGUMENT"
        );
        assert!(PageRequest::new(None, Some(101)).is_err());
    }
}
