//! Time zone names a workspace may use: the IANA database's zones and links, held in the
//! extension (`iana_zones.txt`), so checking one costs a binary search instead of a scan
//! of `pg_timezone_names` (which reads ~1,200 zone files: 40–170 ms per call, measured
//! while one tenant's flood of such calls starved the others).
//!
//! The list is also what keeps server-dependent names out: `localtime` and `posixrules`
//! (files of the server's own installation), `Factory`, the `posix/` and `right/` trees,
//! and POSIX rule strings such as `EST5` or `<+03>-3`, all of which PostgreSQL would
//! accept but which mean different things on different servers.

use crate::error::CrmError;
use std::sync::OnceLock;

const ZONES: &str = include_str!("iana_zones.txt");

/// The names, sorted by their lowercase form, each with its IANA spelling.
fn zones() -> &'static [(String, &'static str)] {
    static SORTED: OnceLock<Vec<(String, &'static str)>> = OnceLock::new();
    SORTED.get_or_init(|| {
        let mut v: Vec<(String, &'static str)> = ZONES
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|name| (name.to_ascii_lowercase(), name))
            .collect();
        v.sort_unstable();
        v.dedup_by(|a, b| a.0 == b.0);
        v
    })
}

/// The IANA spelling of a zone name given in any letter case ("europe/berlin" gives
/// "Europe/Berlin"), or 22023 naming the field.
pub fn canonical(field: &'static str, tz: &str) -> Result<&'static str, CrmError> {
    let wanted = tz.trim();
    let unknown = || {
        let shown: String = wanted.chars().take(64).collect();
        CrmError::invalid(
            field,
            format!("unknown time zone \"{shown}\"; use an IANA name such as Europe/Berlin"),
        )
    };
    if wanted.is_empty() || wanted.len() > 64 {
        return Err(unknown());
    }
    let key = wanted.to_ascii_lowercase();
    let list = zones();
    list.binary_search_by(|(k, _)| k.as_str().cmp(&key))
        .map(|i| list[i].1)
        .map_err(|_| unknown())
}

/// Every accepted name, in IANA spelling (for tests that compare with a server's list).
pub fn all() -> impl Iterator<Item = &'static str> {
    zones().iter().map(|(_, name)| *name)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn iana_names_in_any_case() {
        for (given, want) in [
            ("UTC", "UTC"),
            ("utc", "UTC"),
            ("Europe/Berlin", "Europe/Berlin"),
            (" europe/berlin ", "Europe/Berlin"),
            (
                "America/Argentina/Buenos_Aires",
                "America/Argentina/Buenos_Aires",
            ),
            ("Etc/GMT+5", "Etc/GMT+5"),
            ("America/Port-au-Prince", "America/Port-au-Prince"),
            ("US/Eastern", "US/Eastern"),
            ("Asia/Calcutta", "Asia/Calcutta"),
        ] {
            assert_eq!(canonical("timezone", given), Ok(want), "{given}");
        }
    }

    #[test]
    fn server_dependent_and_made_up_names_are_refused() {
        let long = "A".repeat(65);
        for tz in [
            "",
            "localtime",
            "posixrules",
            "Factory",
            "posix/Europe/Berlin",
            "right/UTC",
            "EST5",
            "<+03>-3",
            "UTC+3",
            "Mars/Olympus_Mons",
            "Europe//Berlin",
            "Europe/Berlin'; DROP TABLE core.tenants; --",
            &long,
        ] {
            match canonical("timezone", tz) {
                Err(CrmError::InvalidInput { field, .. }) => assert_eq!(field, "timezone"),
                other => panic!("{tz:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn the_list_is_whole_and_sorted_once() {
        let names: Vec<&str> = all().collect();
        assert!(names.len() > 590, "{}", names.len());
        assert!(names.contains(&"Pacific/Auckland"));
        assert!(!names.contains(&"Factory"));
    }

    #[test]
    fn unknown_names_are_shown_cut() {
        let huge = "x".repeat(10_000);
        let err = canonical("timezone", &huge).unwrap_err().to_string();
        assert!(err.len() < 200, "{err}");
    }
}
