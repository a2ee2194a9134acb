//! The pieces of the auth service that are more than a query: password hashing and rules,
//! random secrets, email and slug normalisation. The flows themselves (signup, grants,
//! sessions, verification, invitations) are PL/pgSQL in `sql/auth.sql`, whose plans are
//! kept per connection; they call these functions. None is exposed over HTTP, and EXECUTE is
//! granted only to the role the edge's auth endpoints run as (see `sql/grants.sql`).

use crate::domain::{password, workspace};
use pgrx::prelude::*;

/// A bcrypt hash (`$2a$`, GoTrue's form) of a password that passed
/// [`password_problem`].
#[pg_extern(volatile, strict, parallel_safe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn password_hash(password: &str) -> String {
    password::hash(password, password::COST)
        .unwrap_or_else(|e| error!("pg_crm: could not hash a password: {e}"))
}

/// Whether a password matches a stored bcrypt hash; false for a NULL or non-bcrypt hash.
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn password_matches(password: Option<&str>, hash: Option<&str>) -> bool {
    match (password, hash) {
        (Some(p), Some(h)) => password::matches(p, h),
        _ => false,
    }
}

/// Why a new password is refused: `NULL` if it is acceptable, `length` if it is shorter than
/// `min_length` characters, `too_long` beyond bcrypt's 72 bytes.
#[pg_extern(immutable, strict, parallel_safe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn password_problem(password: &str, min_length: i32) -> Option<&'static str> {
    match password::check(password, usize::try_from(min_length).unwrap_or(0)) {
        Ok(()) => None,
        Err(password::Problem::TooShort { .. }) => Some("length"),
        Err(password::Problem::TooLong) => Some("too_long"),
    }
}

/// `bytes` random bytes from the operating system, base64url without padding.
#[pg_extern(volatile, strict, parallel_safe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn random_token(bytes: i32) -> String {
    use base64::Engine;
    let n = usize::try_from(bytes.clamp(8, 64)).unwrap_or(32);
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).unwrap_or_else(|e| error!("pg_crm: no randomness: {e}"));
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// `digits` random decimal digits (a one-time code), uniformly distributed.
#[pg_extern(volatile, strict, parallel_safe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn random_digits(digits: i32) -> String {
    let n = usize::try_from(digits.clamp(4, 12)).unwrap_or(6);
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let mut b = [0u8; 1];
        getrandom::fill(&mut b).unwrap_or_else(|e| error!("pg_crm: no randomness: {e}"));
        if b[0] < 250 {
            out.push(char::from(b'0' + b[0] % 10));
        }
    }
    out
}

/// The lowercased, trimmed address if it is an email address, else NULL.
#[pg_extern(immutable, strict, parallel_safe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn normalize_email(email: &str) -> Option<String> {
    workspace::email("email", email).ok()
}

/// A workspace slug made from a name: lowercase ASCII letters, digits and dashes, at most
/// 50 characters (room for a uniqueness suffix), `workspace` when nothing is left.
#[pg_extern(immutable, strict, parallel_safe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn slugify(name: &str) -> String {
    workspace::slugify(name)
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for a query value).
#[pg_extern(immutable, strict, parallel_safe, requires = ["schema"])]
#[search_path(pg_catalog, pg_temp)]
fn url_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
