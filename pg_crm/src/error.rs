//! The one error type of pg_crm and its one mapping to SQLSTATE.
//!
//! Clients see the SQLSTATE (the edge turns it into an HTTP status), the message and,
//! where useful, a hint. Messages name the rule that was broken, never internals.

use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};
use std::borrow::Cow;
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrmError {
    /// The caller may not do this (42501 → HTTP 403).
    Forbidden {
        message: String,
        hint: Option<&'static str>,
    },
    /// An argument is invalid (22023 → HTTP 400); `field` names the argument.
    InvalidInput {
        field: Cow<'static, str>,
        message: String,
    },
    /// The thing named does not exist (P0002 → HTTP 404).
    NotFound(String),
    /// It would duplicate something unique (23505 → HTTP 409).
    Conflict(String),
}

impl CrmError {
    pub fn forbidden(message: impl Into<String>) -> Self {
        CrmError::Forbidden {
            message: message.into(),
            hint: None,
        }
    }

    pub fn invalid(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        CrmError::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn sqlstate(&self) -> PgSqlErrorCode {
        match self {
            CrmError::Forbidden { .. } => PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            CrmError::InvalidInput { .. } => PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            CrmError::NotFound(_) => PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            CrmError::Conflict(_) => PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION,
        }
    }

    /// Raise this error in PostgreSQL (aborting the statement and its transaction).
    pub fn raise(self) -> ! {
        let mut report = ErrorReport::new(self.sqlstate(), self.to_string(), "pg_crm");
        if let CrmError::Forbidden {
            hint: Some(hint), ..
        } = &self
        {
            report = report.set_hint(*hint);
        }
        if let CrmError::InvalidInput { field, .. } = &self {
            report = report.set_detail(format!("field: {field}"));
        }
        report.report(PgLogLevel::ERROR);
        unreachable!("an ERROR report does not return")
    }
}

impl fmt::Display for CrmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CrmError::Forbidden { message, .. } => f.write_str(message),
            CrmError::InvalidInput { field, message } => write!(f, "invalid {field}: {message}"),
            CrmError::NotFound(message) | CrmError::Conflict(message) => f.write_str(message),
        }
    }
}

impl std::error::Error for CrmError {}

/// Unwrap a result or raise its error in PostgreSQL.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for Result<T, CrmError> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| e.raise())
    }
}

/// SPI failures are internal errors: report them as such (SQLSTATE XX000), without the
/// query text.
impl<T> OrRaise<T> for Result<T, pgrx::spi::Error> {
    fn or_raise(self) -> T {
        self.unwrap_or_else(|e| {
            ErrorReport::new(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("pg_crm: {e}"),
                "pg_crm",
            )
            .report(PgLogLevel::ERROR);
            unreachable!("an ERROR report does not return")
        })
    }
}
