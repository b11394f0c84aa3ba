//! The accounts file: cards the host knows, with their PINs and balances (test data).
//!
//! ```toml
//! [[account]]
//! pan = "6222020200112233445"
//! pin = "1234"              # clear digits: this is a simulator's test data
//! name = "ZHANG/SAN"        # optional
//! currency = "156"          # ISO 4217 numeric, default 156 (CNY)
//! balance = 100000000       # minor units; sets ledger and available
//! # ledger = ... / available = ...  (instead of balance, when they differ)
//! daily_limit = 2000000     # optional daily withdrawal limit, minor units
//! expiry = "4912"           # YYMM
//! status = "active"         # or "locked"
//!
//! [[generate]]              # many accounts for load tests
//! prefix = "6222020299"     # PAN = prefix + index, zero-padded to `length` digits
//! count = 100
//! start = 0                 # first index, default 0
//! length = 19               # default 19
//! pin = "1234"
//! balance = 100000000
//! ```

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

/// Largest absolute balance or limit: 12 digits of minor units (the size of F4 / F54).
pub const MAX_AMOUNT: i64 = 999_999_999_999;
/// Most accounts one `[[generate]]` table may create.
pub const MAX_GENERATED: u64 = 10_000_000;

/// Whether a card may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Usable.
    #[default]
    Active,
    /// Locked (PIN tries exceeded, or seeded so): every PIN transaction answers 75 until
    /// `POST /accounts/{pan}/unlock`.
    Locked,
}

/// One seeded account, validated.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountSeed {
    /// Primary account number, 13 to 19 digits.
    pub pan: String,
    /// Clear PIN, 4 to 12 digits (test data).
    pub pin: String,
    /// Cardholder name (informational).
    pub name: Option<String>,
    /// ISO 4217 numeric currency, 3 digits.
    pub currency: String,
    /// Ledger balance, minor units.
    pub ledger: i64,
    /// Available balance, minor units.
    pub available: i64,
    /// Daily withdrawal limit, minor units (`None`: unlimited).
    pub daily_limit: Option<i64>,
    /// Expiry, YYMM.
    pub expiry: String,
    /// Initial status.
    pub status: Status,
}

impl std::fmt::Debug for AccountSeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountSeed")
            .field("pan", &crate::wire::mask_pan(&self.pan))
            .field("pin", &"<redacted>")
            .field("currency", &self.currency)
            .field("ledger", &self.ledger)
            .field("available", &self.available)
            .finish_non_exhaustive()
    }
}

/// The `[[account]]` and `[[generate]]` tables of an accounts (or config) file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccountTables {
    #[serde(default)]
    pub(crate) account: Vec<RawAccount>,
    #[serde(default)]
    pub(crate) generate: Vec<RawGenerate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAccount {
    pan: String,
    pin: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    balance: Option<i64>,
    #[serde(default)]
    ledger: Option<i64>,
    #[serde(default)]
    available: Option<i64>,
    #[serde(default)]
    daily_limit: Option<i64>,
    #[serde(default)]
    expiry: Option<String>,
    #[serde(default)]
    status: Status,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGenerate {
    prefix: String,
    count: u64,
    #[serde(default)]
    start: u64,
    #[serde(default)]
    length: Option<usize>,
    pin: String,
    balance: i64,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    daily_limit: Option<i64>,
    #[serde(default)]
    expiry: Option<String>,
}

/// Why accounts could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AccountsError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, AccountsError> {
    Err(AccountsError(msg.into()))
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit())
}

fn check_amount(what: &str, pan: &str, v: i64) -> Result<i64, AccountsError> {
    if v.abs() > MAX_AMOUNT {
        return err(format!(
            "account {}: {what} {v} has more than 12 digits",
            crate::wire::mask_pan(pan)
        ));
    }
    Ok(v)
}

fn check_common(
    pan: &str,
    pin: &str,
    currency: &str,
    expiry: &str,
    daily_limit: Option<i64>,
) -> Result<(), AccountsError> {
    let m = crate::wire::mask_pan(pan);
    if !digits(pan) || !(13..=19).contains(&pan.len()) {
        return err(format!("account {m}: pan must be 13 to 19 digits"));
    }
    if !digits(pin) || !(4..=12).contains(&pin.len()) {
        return err(format!("account {m}: pin must be 4 to 12 digits"));
    }
    if !digits(currency) || currency.len() != 3 {
        return err(format!(
            "account {m}: currency must be 3 digits (ISO 4217 numeric), got {currency:?}"
        ));
    }
    let month = expiry.get(2..4).and_then(|s| s.parse::<u32>().ok());
    if !digits(expiry) || expiry.len() != 4 || !matches!(month, Some(1..=12)) {
        return err(format!("account {m}: expiry must be YYMM, got {expiry:?}"));
    }
    if let Some(l) = daily_limit
        && !(0..=MAX_AMOUNT).contains(&l)
    {
        return err(format!(
            "account {m}: daily_limit must be 0 to 12 digits, got {l}"
        ));
    }
    Ok(())
}

impl AccountTables {
    /// Parses the tables of a TOML document that may contain other keys (a config file).
    pub(crate) fn resolve(self, out: &mut Vec<AccountSeed>) -> Result<(), AccountsError> {
        for a in self.account {
            let currency = a.currency.unwrap_or_else(|| "156".to_owned());
            let expiry = a.expiry.unwrap_or_else(|| "4912".to_owned());
            check_common(&a.pan, &a.pin, &currency, &expiry, a.daily_limit)?;
            let (ledger, available) = match (a.balance, a.ledger, a.available) {
                (Some(b), None, None) => (b, b),
                (None, Some(l), Some(v)) => (l, v),
                (None, Some(l), None) => (l, l),
                (None, None, Some(v)) => (v, v),
                (None, None, None) => (0, 0),
                _ => {
                    return err(format!(
                        "account {}: give either balance or ledger/available",
                        crate::wire::mask_pan(&a.pan)
                    ));
                }
            };
            out.push(AccountSeed {
                ledger: check_amount("ledger", &a.pan, ledger)?,
                available: check_amount("available", &a.pan, available)?,
                pan: a.pan,
                pin: a.pin,
                name: a.name,
                currency,
                daily_limit: a.daily_limit,
                expiry,
                status: a.status,
            });
        }
        for g in self.generate {
            let length = g.length.unwrap_or(19);
            let currency = g.currency.unwrap_or_else(|| "156".to_owned());
            let expiry = g.expiry.unwrap_or_else(|| "4912".to_owned());
            if !digits(&g.prefix) {
                return err(format!(
                    "generate: prefix must be digits, got {:?}",
                    g.prefix
                ));
            }
            if g.count > MAX_GENERATED {
                return err(format!("generate: count must be at most {MAX_GENERATED}"));
            }
            let width = length.saturating_sub(g.prefix.len());
            let last = g.start.saturating_add(g.count.saturating_sub(1));
            if !(13..=19).contains(&length) || width == 0 || last.to_string().len() > width {
                return err(format!(
                    "generate: prefix {:?} + index up to {last} does not fit in {length} digits (13 to 19)",
                    g.prefix
                ));
            }
            for i in g.start..g.start + g.count {
                let pan = format!("{}{i:0width$}", g.prefix);
                check_common(&pan, &g.pin, &currency, &expiry, g.daily_limit)?;
                out.push(AccountSeed {
                    ledger: check_amount("balance", &pan, g.balance)?,
                    available: g.balance,
                    pan,
                    pin: g.pin.clone(),
                    name: None,
                    currency: currency.clone(),
                    daily_limit: g.daily_limit,
                    expiry: expiry.clone(),
                    status: Status::Active,
                });
            }
        }
        Ok(())
    }
}

/// Parses an accounts file's text.
pub fn parse_accounts(text: &str) -> Result<Vec<AccountSeed>, AccountsError> {
    let tables: AccountTables = toml::from_str(text).map_err(|e| AccountsError(e.to_string()))?;
    let mut out = Vec::new();
    tables.resolve(&mut out)?;
    check_unique(&out)?;
    Ok(out)
}

/// Reads and parses an accounts file.
pub fn load_accounts(path: &Path) -> Result<Vec<AccountSeed>, AccountsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| AccountsError(format!("{}: {e}", path.display())))?;
    parse_accounts(&text).map_err(|e| AccountsError(format!("{}: {}", path.display(), e.0)))
}

/// Fails if two seeds have the same PAN.
pub(crate) fn check_unique(seeds: &[AccountSeed]) -> Result<(), AccountsError> {
    let mut seen = HashSet::with_capacity(seeds.len());
    for s in seeds {
        if !seen.insert(s.pan.as_str()) {
            return err(format!(
                "account {} is defined twice",
                crate::wire::mask_pan(&s.pan)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_accounts_file_parses() {
        let text = include_str!("../accounts.toml");
        let accounts = parse_accounts(text).unwrap();
        let pans: Vec<&str> = accounts.iter().map(|a| a.pan.as_str()).collect();
        for pan in [
            "6222020200112233445",
            "6222020200198765432",
            "6222020200155550000",
            "6222020299000000000",
            "6222020299000000099",
        ] {
            assert!(pans.contains(&pan), "{pan}");
        }
    }

    #[test]
    fn generate_and_errors() {
        let a = parse_accounts(
            r#"
[[generate]]
prefix = "62220202990"
count = 3
start = 7
pin = "1234"
balance = 500
"#,
        )
        .unwrap();
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].pan, "6222020299000000007");
        assert_eq!(a[2].pan, "6222020299000000009");
        for bad in [
            "[[account]]\npan = \"123\"\npin = \"1234\"",
            "[[account]]\npan = \"6222020200112233445\"\npin = \"12\"",
            "[[account]]\npan = \"6222020200112233445\"\npin = \"1234\"\nexpiry = \"4913\"",
            "[[account]]\npan = \"6222020200112233445\"\npin = \"1234\"\nbalance = 1\nledger = 2",
            "[[account]]\npan = \"6222020200112233445\"\npin = \"1234\"\nbogus = 1",
            "[[account]]\npan = \"6222020200112233445\"\npin = \"1234\"\n[[account]]\npan = \"6222020200112233445\"\npin = \"1234\"",
            "[[generate]]\nprefix = \"622202029900000000\"\ncount = 20\npin = \"1234\"\nbalance = 1",
        ] {
            assert!(parse_accounts(bad).is_err(), "{bad}");
        }
    }
}
