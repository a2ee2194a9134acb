//! Business rules as plain Rust: no SPI, no settings, tested with `#[test]`.
//!
//! The SQL layer enforces the same limits again as CHECK constraints (the database is
//! the last line); these functions exist to give callers a precise error first.

pub mod claims;
pub mod currency;
pub mod duplicates;
pub mod fields;
pub mod import;
pub mod lifecycle;
pub mod password;
pub mod pipeline;
pub mod roles;
pub mod timezone;
pub mod web_url;
pub mod workspace;
