//! The one error type of the edge and its one mapping to HTTP.
//!
//! Every failure, from a missing token to a dropped database connection, becomes an [`Error`]
//! and leaves as `{"code", "message", "details", "hint"}` (PostgREST's shape, so Supabase
//! clients understand it). Database errors keep their SQLSTATE as `code` and map to a status by
//! [`status_for_sqlstate`]. A 5xx never shows internals: its message is generic and the real
//! error travels to the request log in an [`InternalDetail`] response extension.
//!
//! Messages can quote what a client sent (an argument name, a value PostgreSQL could not
//! convert), so every field is cut to [`MAX_FIELD_CHARS`]: an error never echoes unbounded
//! input. Errors the edge raises itself where no SQLSTATE fits use the nearest one: 54000
//! (program limit exceeded) for a body or head over its limit, 57014 (canceled) for a body
//! that took too long, 53300 (too many connections) when a tenant holds its share of them.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::config::ConfigError;

/// Seconds a client is told to wait (`Retry-After`) when the database is unavailable.
pub const RETRY_AFTER_SECS: u64 = 5;
/// Seconds a tenant over its share of the connections is told to wait (`Retry-After`).
pub const TENANT_RETRY_AFTER_SECS: u64 = 1;
/// The longest message, details or hint a client is sent, in characters.
pub const MAX_FIELD_CHARS: usize = 500;
/// Argument names quoted in a 404: at most this many, each cut to a PostgreSQL identifier's length.
const MAX_ARGS_SHOWN: usize = 10;

const UNAVAILABLE_MESSAGE: &str = "The database is unavailable; retry shortly.";

/// Everything that can go wrong in the edge.
#[derive(Debug)]
pub enum Error {
    /// No `Authorization: Bearer` token (401, `PGRST302`).
    NoToken,
    /// The token was rejected; the message says why and never quotes the token (401, `PGRST301`).
    BadToken(String),
    /// Malformed JSON, a body that is not an object, bad query string (400, `PGRST102`).
    BadRequest(String),
    /// No callable `api` function with that name and those argument names (404, `PGRST202`).
    NoFunction { name: String, args: Vec<String> },
    /// A VOLATILE function called with GET, or a verb the route does not take (405,
    /// `PGRST101`); `allow` is the route's `Allow` header.
    MethodNotAllowed {
        message: String,
        allow: &'static str,
    },
    /// No such route (404, `PGRST125`).
    NoRoute,
    /// The request body is over the limit (413, `54000`).
    PayloadTooLarge { limit: usize },
    /// The request head is over the limit (431, `54000`).
    HeadersTooLarge { limit: usize },
    /// The request body did not arrive in time (408, `57014`).
    BodyTimeout,
    /// The body is not of a media type the route reads (415, `PGRST107`).
    UnsupportedMediaType(String),
    /// An uploaded file cannot be read (400): `code` 22P04 (bad CSV), 22021 (not UTF-8) or
    /// 54000 (a record over the limit); the message names the line.
    BadFile {
        code: &'static str,
        line: u64,
        message: String,
    },
    /// As many imports as may hold connections at once are running (429, `53300`,
    /// `Retry-After`).
    ImportsBusy,
    /// An all-or-nothing import found rows with errors and wrote nothing (400, `22023`);
    /// the body carries the import's report beside the usual fields.
    ImportRejected(serde_json::Value),
    /// The tenant already holds its share of the database connections and its queue is full
    /// or did not move in time (429, `53300`, `Retry-After`).
    TenantBusy,
    /// The user has used up their requests for this minute (429, `53400`, `Retry-After` and
    /// the `RateLimit-*` headers, see [`crate::ratelimit`]).
    RateLimited { limit: u32 },
    /// An error raised by PostgreSQL during the request, mapped by its SQLSTATE.
    Db(DbError),
    /// The database cannot be reached or the connection broke (503, `PGRST001`).
    Unavailable(String),
    /// A bug or an unexpected state in the edge (500, `XX000`).
    Internal(String),
    /// Invalid configuration (startup only).
    Config(ConfigError),
    /// Binding or serving the socket failed (startup only).
    Io(std::io::Error),
}

/// An error reported by PostgreSQL, with the fields a client may see.
#[derive(Debug, Clone, PartialEq)]
pub struct DbError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Raised inside a function (the error has a context), not by the statement itself.
    pub in_function: bool,
}

impl DbError {
    /// A data error (class 22) of the statement itself, not of the function it called: in an
    /// RPC call, a value PostgreSQL could not convert to its argument's type.
    pub fn is_argument_conversion(&self) -> bool {
        self.code.starts_with("22") && !self.in_function
    }

    /// Names the argument the value of which could not be converted.
    pub fn for_argument(self, name: &str) -> DbError {
        DbError {
            message: format!("invalid {name}: {}", self.message),
            detail: Some(format!("field: {name}")),
            ..self
        }
    }
}

/// Attached to 5xx responses so the request log can record what the client is not shown.
#[derive(Debug, Clone)]
pub struct InternalDetail(pub String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::NoToken => f.write_str("no bearer token"),
            Error::BadToken(m) | Error::BadRequest(m) => f.write_str(m),
            Error::MethodNotAllowed { message, .. } => f.write_str(message),
            Error::NoFunction { name, args } => {
                let mut shown: Vec<String> = args
                    .iter()
                    .take(MAX_ARGS_SHOWN)
                    .map(|a| cut(a, 63))
                    .collect();
                if args.len() > MAX_ARGS_SHOWN {
                    shown.push(format!("… {} more", args.len() - MAX_ARGS_SHOWN));
                }
                write!(
                    f,
                    "Could not find the function api.{}({}) in the schema cache",
                    cut(name, 63),
                    shown.join(", ")
                )
            }
            Error::NoRoute => f.write_str("Not found: no such path"),
            Error::PayloadTooLarge { limit } => {
                write!(
                    f,
                    "The request body is larger than the limit of {limit} bytes"
                )
            }
            Error::HeadersTooLarge { limit } => {
                write!(
                    f,
                    "The request headers are larger than the limit of {limit} bytes"
                )
            }
            Error::BodyTimeout => f.write_str("The request body did not arrive in time"),
            Error::UnsupportedMediaType(m) | Error::BadFile { message: m, .. } => f.write_str(m),
            Error::ImportsBusy => f.write_str(
                "As many imports as the edge runs at once are running; retry shortly",
            ),
            Error::ImportRejected(report) => write!(
                f,
                "{} of {} rows have errors: nothing was imported",
                report["failed"], report["rows"]
            ),
            Error::TenantBusy => f.write_str(
                "Too many requests of this workspace are running at once; retry shortly",
            ),
            Error::RateLimited { limit } => write!(
                f,
                "Rate limit reached: {limit} requests a minute per user; retry after the Retry-After delay"
            ),
            Error::Db(e) => {
                write!(f, "{}: {}", e.code, e.message)?;
                if let Some(detail) = &e.detail {
                    write!(f, " (detail: {detail})")?;
                }
                Ok(())
            }
            Error::Unavailable(m) => write!(f, "database unavailable: {m}"),
            Error::Internal(m) => write!(f, "internal error: {m}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => Error::Db(DbError {
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
                detail: db.detail().map(str::to_owned),
                hint: db.hint().map(str::to_owned),
                in_function: db.where_().is_some(),
            }),
            None if is_connection_error(&e) => Error::Unavailable(e.to_string()),
            None => Error::Internal(e.to_string()),
        }
    }
}

impl From<deadpool_postgres::PoolError> for Error {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        use deadpool_postgres::PoolError;
        match e {
            // A failed connect, even one the server refused (e.g. 28P01 for a wrong
            // authenticator password), is the operator's problem, never the client's.
            PoolError::Timeout(_) | PoolError::Backend(_) | PoolError::Closed => {
                Error::Unavailable(e.to_string())
            }
            other => Error::Internal(other.to_string()),
        }
    }
}

/// True when the connection itself failed (closed, reset, I/O, shutdown), so the pooled
/// client must be discarded and the request may be answered with 503.
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.as_db_error() {
        Some(db) => is_unavailable_sqlstate(db.code().code()),
        None => {
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                if s.is::<std::io::Error>() {
                    return true;
                }
                source = s.source();
            }
            false
        }
    }
}

pub(crate) fn is_unavailable_sqlstate(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// PostgREST's SQLSTATE → HTTP table, with the project's choices.
///
/// Class 42 (syntax, undefined object) other than 42501 is a fault in our own SQL, never
/// the caller's: the edge resolves function names and argument types itself (unknown ones are
/// 404 `PGRST202` before any SQL runs), so these are 500 and their text stays in the log.
/// Codes the table does not name: the classes that describe a bad request (`0A` feature not
/// supported, `20`/`21` case/cardinality, `22` data, `23` integrity, `24`/`26`/`34` cursor and
/// statement names, `27` triggered data change, `3D`/`3F` catalog/schema names, `44` check
/// option) are 400; every other class is a server problem and 500. `PTnnn` (PostgREST's custom
/// status convention for `RAISE ... USING ERRCODE = 'PT403'`) yields status nnn when valid.
pub fn status_for_sqlstate(code: &str) -> StatusCode {
    use StatusCode as S;
    if is_unavailable_sqlstate(code) {
        return S::SERVICE_UNAVAILABLE;
    }
    match code {
        "23503" | "23505" => return S::CONFLICT,
        "25006" => return S::METHOD_NOT_ALLOWED,
        "P0001" => return S::BAD_REQUEST,
        "P0002" => return S::NOT_FOUND,
        "42501" => return S::FORBIDDEN,
        _ => {}
    }
    if let Some(n) = code.strip_prefix("PT").and_then(|n| n.parse::<u16>().ok()) {
        if let (true, Ok(s)) = ((400..600).contains(&n), S::from_u16(n)) {
            return s;
        }
    }
    match code.get(..2).unwrap_or("") {
        "0L" | "0P" | "28" => S::FORBIDDEN,
        "53" => S::SERVICE_UNAVAILABLE,
        "0A" | "20" | "21" | "22" | "23" | "24" | "26" | "27" | "34" | "3D" | "3F" | "44" => {
            S::BAD_REQUEST
        }
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

impl Error {
    /// The HTTP status and the `code` field of the body.
    pub fn status_and_code(&self) -> (StatusCode, String) {
        let (status, code) = match self {
            Error::NoToken => (StatusCode::UNAUTHORIZED, "PGRST302"),
            Error::BadToken(_) => (StatusCode::UNAUTHORIZED, "PGRST301"),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "PGRST102"),
            Error::NoFunction { .. } => (StatusCode::NOT_FOUND, "PGRST202"),
            Error::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "PGRST101"),
            Error::NoRoute => (StatusCode::NOT_FOUND, "PGRST125"),
            Error::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "54000"),
            Error::HeadersTooLarge { .. } => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "54000"),
            Error::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "57014"),
            Error::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "PGRST107"),
            Error::BadFile { code, .. } => (StatusCode::BAD_REQUEST, *code),
            Error::ImportRejected(_) => (StatusCode::BAD_REQUEST, "22023"),
            Error::ImportsBusy => (StatusCode::TOO_MANY_REQUESTS, "53300"),
            Error::TenantBusy => (StatusCode::TOO_MANY_REQUESTS, "53300"),
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "53400"),
            Error::Db(e) => return (status_for_sqlstate(&e.code), e.code.clone()),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "PGRST001"),
            Error::Internal(_) | Error::Config(_) | Error::Io(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "XX000")
            }
        };
        (status, code.to_owned())
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let (message, details, hint) = if status == StatusCode::SERVICE_UNAVAILABLE {
            (UNAVAILABLE_MESSAGE.to_owned(), None, None)
        } else if status.is_server_error() {
            ("internal server error".to_owned(), None, None)
        } else {
            match &self {
                Error::Db(e) => (e.message.clone(), e.detail.clone(), e.hint.clone()),
                Error::NoToken => (
                    "No bearer token in the Authorization header".to_owned(),
                    None,
                    None,
                ),
                Error::NoFunction { .. } => (
                    self.to_string(),
                    None,
                    Some(
                        "Check the function name and the argument names (GET /rest/v1/ lists them)"
                            .to_owned(),
                    ),
                ),
                Error::BadFile { line, .. } => (self.to_string(), Some(format!("line: {line}")), None),
                Error::ImportRejected(_) => (
                    self.to_string(),
                    None,
                    Some(
                        "The report lists each row's error: fix them, or import with mode=skip_bad_rows"
                            .to_owned(),
                    ),
                ),
                Error::TenantBusy => (
                    self.to_string(),
                    None,
                    Some(
                        "Each workspace may use a share of the database connections at a time; retry after the Retry-After delay"
                            .to_owned(),
                    ),
                ),
                other => (other.to_string(), None, None),
            }
        };
        let capped = |s: Option<String>| s.map(|s| cut(&s, MAX_FIELD_CHARS));
        let mut body = json!({
            "code": code,
            "message": cut(&message, MAX_FIELD_CHARS),
            "details": capped(details),
            "hint": capped(hint),
        });
        if let Error::ImportRejected(report) = &self {
            body["report"] = report.clone();
        }
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Error::MethodNotAllowed { allow, .. } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            Error::TenantBusy => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(TENANT_RETRY_AFTER_SECS),
                );
            }
            Error::ImportsBusy => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
            }
            // The rest of the request was not read: the connection cannot carry another.
            Error::PayloadTooLarge { .. } | Error::HeadersTooLarge { .. } | Error::BodyTimeout => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if status.is_server_error() {
            response
                .extensions_mut()
                .insert(InternalDetail(self.to_string()));
        }
        response
    }
}

/// `s` cut to at most `max` characters, the cut marked with `…`.
pub fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((end, _)) => {
            let keep = s[..end]
                .char_indices()
                .nth(max.saturating_sub(1))
                .map_or(end, |(i, _)| i);
            format!("{}…", &s[..keep])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstate_table() {
        let table = "08006 503  08P01 503  09000 500  0L000 403  0P000 403  23503 409  23505 409
            23514 400  23502 400  25006 405  25P02 500  28000 403  2D000 500  38001 500  39004 500
            3B000 500  40001 500  40P01 500  53300 503  54000 500  55P03 500  57014 500  57P01 503
            57P02 503  57P03 503  58030 500  F0000 500  HV000 500  P0001 400  P0002 404  P0003 500
            XX000 500  42883 500  42P01 500  42P17 500  42501 403  42703 500  22P02 400  22023 400
            0A000 400  21000 400  2F005 500  72000 500  PT403 403  PT999 500  PT200 500  ZZ 500";
        let cells: Vec<&str> = table.split_whitespace().collect();
        for pair in cells.chunks(2) {
            let want: u16 = pair[1].parse().expect("status");
            assert_eq!(
                status_for_sqlstate(pair[0]).as_u16(),
                want,
                "SQLSTATE {}",
                pair[0]
            );
        }
    }

    #[test]
    fn server_errors_hide_internals() {
        let e = Error::Db(DbError {
            code: "XX000".into(),
            message: "secret table crm.foo is corrupt".into(),
            detail: Some("page 7".into()),
            hint: None,
            in_function: false,
        });
        let r = e.into_response();
        assert_eq!(r.status(), 500);
        let detail = r.extensions().get::<InternalDetail>().map(|d| d.0.clone());
        assert!(detail.is_some_and(|d| d.contains("corrupt")));
    }

    #[test]
    fn every_field_is_capped() {
        assert_eq!(cut("short", 10), "short");
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("ééééé", 3).chars().count(), 3);
        let huge = "x".repeat(2_000_000);
        let e = Error::Db(DbError {
            code: "22P02".into(),
            message: format!("invalid input syntax for type integer: \"{huge}\""),
            detail: Some(huge.clone()),
            hint: Some(huge.clone()),
            in_function: false,
        });
        let e2 = Error::NoFunction {
            name: "f".into(),
            args: (0..100).map(|i| format!("{i}{huge}")).collect(),
        };
        for e in [e, e2] {
            let body = body_of(e.into_response());
            for field in ["message", "details", "hint"] {
                let n = body[field].as_str().map_or(0, |s| s.chars().count());
                assert!(n <= MAX_FIELD_CHARS, "{field}: {n} characters");
            }
        }
    }

    fn body_of(r: Response) -> serde_json::Value {
        let bytes = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(axum::body::to_bytes(r.into_body(), usize::MAX))
            .expect("body");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn edge_errors_have_their_status_and_headers() {
        let r = Error::MethodNotAllowed {
            message: "no".into(),
            allow: "GET, HEAD, OPTIONS",
        }
        .into_response();
        assert_eq!(r.status(), 405);
        assert_eq!(r.headers()[header::ALLOW], "GET, HEAD, OPTIONS");
        let r = Error::TenantBusy.into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        for (e, status) in [
            (Error::PayloadTooLarge { limit: 10 }, 413),
            (Error::HeadersTooLarge { limit: 10 }, 431),
            (Error::BodyTimeout, 408),
        ] {
            let r = e.into_response();
            assert_eq!(r.status(), status);
            assert_eq!(r.headers()[header::CONNECTION], "close");
        }
    }

    #[test]
    fn unavailable_carries_retry_after_and_unauthorized_www_authenticate() {
        let r = Error::Unavailable("connection refused".into()).into_response();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()[header::RETRY_AFTER], "5");
        let r = Error::BadToken("JWT expired".into()).into_response();
        assert_eq!(r.status(), 401);
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }
}
