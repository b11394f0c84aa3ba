//! The platform service (seed 001 §6.5, §6.6, §7.1): organisations, users, roles and
//! permissions, menus, the data dictionary, i18n entries, scheduled tasks, the blacklist, and
//! the login and access-authorisation logs. Every mutation is authorised through
//! [`crate::auth::Ctx`] and audited in its own transaction.

pub mod blacklist;
pub mod bootstrap;
pub mod dictionary;
pub mod logs;
pub mod menus;
pub mod orgs;
pub mod roles;
pub(crate) mod rows;
pub mod settings;
pub mod tasks;
pub mod users;

use axum::Router;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// The platform service's routes.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(orgs::routes())
        .merge(users::routes())
        .merge(roles::routes())
        .merge(menus::routes())
        .merge(dictionary::routes())
        .merge(blacklist::routes())
        .merge(tasks::routes())
        .merge(logs::routes())
}

/// Parses an id sent as a decimal string.
pub fn parse_id(raw: &str, field: &str) -> ApiResult<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::invalid(format!("{field} must be a decimal id")))
}

/// Trims `value` and checks its length in characters; control characters are refused.
pub fn text(field: &str, value: &str, min: usize, max: usize) -> ApiResult<String> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min || n > max {
        return Err(ApiError::invalid(format!(
            "{field} must have {min} to {max} characters"
        )));
    }
    if v.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} must not contain control characters"
        )));
    }
    Ok(v.to_owned())
}

/// A code: 1–`max` characters of letters, digits, `_`, `-` and `.`.
pub fn code(field: &str, value: &str, max: usize) -> ApiResult<String> {
    let ok = !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ApiError::invalid(format!(
            "{field} must be 1 to {max} letters, digits, '_', '-' or '.'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_checks() {
        assert_eq!(parse_id("42", "x").unwrap(), 42);
        assert!(parse_id("-1", "x").is_err());
        assert!(parse_id("4e2", "x").is_err());
        assert_eq!(text("n", "  a b ", 1, 5).unwrap(), "a b");
        assert!(text("n", "", 1, 5).is_err());
        assert!(text("n", "a\u{0}b", 1, 5).is_err());
        assert!(code("c", "HO-01.x", 10).is_ok());
        assert!(code("c", "a b", 10).is_err());
        assert!(code("c", "' OR 1=1 --", 32).is_err());
    }
}
