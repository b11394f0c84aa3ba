//! The stable error catalogue of the HTTP API (docs/backoffice.md, "Error codes"). Handlers
//! return [`ApiError`]; its code decides the HTTP status and is what clients match on. Causes
//! of `INTERNAL` are logged with the trace id and never sent to the client.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

/// A stable error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Malformed or invalid input.
    InvalidArgument,
    /// The password policy is not met.
    WeakPassword,
    /// No valid session.
    Unauthenticated,
    /// Login with a wrong user name or password.
    BadCredentials,
    /// The caller lacks the permission or data scope.
    PermissionDenied,
    /// Login of a disabled user.
    AccountDisabled,
    /// The user or address is blacklisted.
    Blacklisted,
    /// Too many failed logins; wait.
    AccountLocked,
    /// Frozen after repeated lockouts; an administrator must unfreeze.
    AccountFrozen,
    /// No such object or route.
    NotFound,
    /// Duplicate, or still in use.
    Conflict,
    /// The object's state forbids the operation.
    FailedPrecondition,
    /// Mutually exclusive roles.
    RoleConflict,
    /// Technical and business roles or permissions mixed.
    DomainMismatch,
    /// The body or upload is too large.
    PayloadTooLarge,
    /// Not JSON, or an upload type that is refused.
    UnsupportedMediaType,
    /// A bug.
    Internal,
    /// A dependency does not answer.
    Unavailable,
}

impl Code {
    /// The wire form, e.g. `INVALID_ARGUMENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidArgument => "INVALID_ARGUMENT",
            Code::WeakPassword => "WEAK_PASSWORD",
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::BadCredentials => "BAD_CREDENTIALS",
            Code::PermissionDenied => "PERMISSION_DENIED",
            Code::AccountDisabled => "ACCOUNT_DISABLED",
            Code::Blacklisted => "BLACKLISTED",
            Code::AccountLocked => "ACCOUNT_LOCKED",
            Code::AccountFrozen => "ACCOUNT_FROZEN",
            Code::NotFound => "NOT_FOUND",
            Code::Conflict => "CONFLICT",
            Code::FailedPrecondition => "FAILED_PRECONDITION",
            Code::RoleConflict => "ROLE_CONFLICT",
            Code::DomainMismatch => "DOMAIN_MISMATCH",
            Code::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Code::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Code::Internal => "INTERNAL",
            Code::Unavailable => "UNAVAILABLE",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidArgument | Code::WeakPassword => StatusCode::BAD_REQUEST,
            Code::Unauthenticated | Code::BadCredentials => StatusCode::UNAUTHORIZED,
            Code::PermissionDenied | Code::AccountDisabled | Code::Blacklisted => {
                StatusCode::FORBIDDEN
            }
            Code::AccountLocked | Code::AccountFrozen => StatusCode::LOCKED,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::Conflict
            | Code::FailedPrecondition
            | Code::RoleConflict
            | Code::DomainMismatch => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error answer: code, human message, optional data.
#[derive(Debug)]
pub struct ApiError {
    /// The stable code.
    pub code: Code,
    /// A message for people.
    pub message: String,
    /// Extra data (e.g. when a lockout ends).
    pub data: Value,
}

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
            data: Value::Null,
        }
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::InvalidArgument, message)
    }

    /// `NOT_FOUND` for a kind of object.
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(Code::NotFound, format!("no such {what}"))
    }

    /// `CONFLICT`.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::Conflict, message)
    }

    /// `PERMISSION_DENIED`.
    pub fn denied(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::PermissionDenied, message)
    }

    /// `FAILED_PRECONDITION`.
    pub fn precondition(message: impl Into<String>) -> ApiError {
        ApiError::new(Code::FailedPrecondition, message)
    }

    /// Attaches data.
    pub fn with_data(mut self, data: Value) -> ApiError {
        self.data = data;
        self
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            return ApiError::conflict("an object with this code or name exists already");
        }
        let code = match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                Code::Unavailable
            }
            _ => Code::Internal,
        };
        tracing::error!(error = %e, "database error");
        ApiError::new(
            code,
            "the database failed; see the server log for this trace id",
        )
    }
}

impl From<openteller_backoffice_storage::CacheError> for ApiError {
    fn from(e: openteller_backoffice_storage::CacheError) -> ApiError {
        tracing::error!(error = %e, "cache error");
        ApiError::new(Code::Unavailable, "the cache does not answer")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::http::envelope(
            self.code.status(),
            self.code.as_str(),
            &self.message,
            self.data,
        )
    }
}

/// What handlers return.
pub type ApiResult<T> = Result<T, ApiError>;
