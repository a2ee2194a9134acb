//! Workspace metadata rules (PRD F1.2, F1.3): what a tenant's name, slug, logo URL,
//! industry and timezone may be, and how a partial update reads.

use crate::error::CrmError;

pub const NAME_MAX: usize = 200;
pub const INDUSTRY_MAX: usize = 100;
pub const URL_MAX: usize = 2048;
pub const SLUG_MAX: usize = 63;
pub const EMAIL_MAX: usize = 255;

/// A requested change to a field: keep it, set it, or (for optional fields) clear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Keep,
    Set(String),
    Clear,
}

impl Change {
    /// Database form: (present, new value). Keep → (false, None); Clear → (true, None).
    pub fn as_update(&self) -> (bool, Option<&str>) {
        match self {
            Change::Keep => (false, None),
            Change::Set(v) => (true, Some(v)),
            Change::Clear => (true, None),
        }
    }
}

/// A validated partial update of the workspace. Built by [`WorkspacePatch::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspacePatch {
    pub name: Change,
    pub logo_url: Change,
    pub industry: Change,
    /// Syntactically plausible; whether PostgreSQL knows the zone is checked in SQL.
    pub timezone: Change,
}

impl WorkspacePatch {
    /// `None` keeps a field. For the optional fields (logo URL, industry) an empty string
    /// clears it; name and timezone cannot be cleared.
    pub fn parse(
        name: Option<&str>,
        logo_url: Option<&str>,
        industry: Option<&str>,
        timezone: Option<&str>,
    ) -> Result<Self, CrmError> {
        Ok(WorkspacePatch {
            name: match name {
                None => Change::Keep,
                Some(n) => Change::Set(tenant_name(n)?),
            },
            logo_url: optional(logo_url, |u| http_url("logo_url", u))?,
            industry: optional(industry, |i| bounded_text("industry", i, INDUSTRY_MAX))?,
            timezone: match timezone {
                None => Change::Keep,
                Some(tz) => Change::Set(timezone_name(tz)?),
            },
        })
    }
}

fn optional(
    value: Option<&str>,
    check: impl FnOnce(&str) -> Result<String, CrmError>,
) -> Result<Change, CrmError> {
    match value {
        None => Ok(Change::Keep),
        Some(v) if v.trim().is_empty() => Ok(Change::Clear),
        Some(v) => check(v).map(Change::Set),
    }
}

/// A display name: trimmed, 1 to 200 characters, no control characters.
pub fn tenant_name(name: &str) -> Result<String, CrmError> {
    bounded_text("name", name, NAME_MAX)
}

fn bounded_text(field: &'static str, value: &str, max: usize) -> Result<String, CrmError> {
    let v = value.trim();
    if v.is_empty() {
        return Err(CrmError::invalid(field, "must not be empty"));
    }
    if v.chars().count() > max {
        return Err(CrmError::invalid(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(CrmError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(v.to_string())
}

/// An absolute http(s) URL without whitespace, at most 2048 characters.
pub fn http_url(field: &'static str, url: &str) -> Result<String, CrmError> {
    let u = url.trim();
    let lower = u.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(|| CrmError::invalid(field, "must be an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() || u.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(CrmError::invalid(
            field,
            "must be an http:// or https:// URL with a host",
        ));
    }
    if u.len() > URL_MAX {
        return Err(CrmError::invalid(
            field,
            format!("must be at most {URL_MAX} characters"),
        ));
    }
    Ok(u.to_string())
}

/// An IANA zone name's shape ("UTC", "Europe/Berlin", "America/Argentina/Buenos_Aires",
/// "Etc/GMT+5"). Only the shape: the database checks the zone exists.
pub fn timezone_name(tz: &str) -> Result<String, CrmError> {
    let t = tz.trim();
    let ok = !t.is_empty()
        && t.len() <= 64
        && t.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        });
    if ok {
        Ok(t.to_string())
    } else {
        Err(CrmError::invalid(
            "timezone",
            "must be an IANA time zone name such as Europe/Berlin",
        ))
    }
}

/// A workspace slug: lowercase letters, digits and inner hyphens, 1 to 63 characters.
pub fn slug(s: &str) -> Result<String, CrmError> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= SLUG_MAX
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(s.to_string())
    } else {
        Err(CrmError::invalid(
            "slug",
            "must be 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen",
        ))
    }
}

/// An email address in the loose sense mail systems accept: one @, a dotted domain.
/// Returned lowercased, as accounts are matched case-insensitively.
pub fn email(field: &'static str, e: &str) -> Result<String, CrmError> {
    let e = e.trim();
    let valid = e.len() <= EMAIL_MAX
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && match e.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(e.to_lowercase())
    } else {
        Err(CrmError::invalid(field, "must be an email address"))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn field_of(e: CrmError) -> &'static str {
        match e {
            CrmError::InvalidInput { field, .. } => field,
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    #[test]
    fn nothing_given_keeps_everything() {
        let p = WorkspacePatch::parse(None, None, None, None).unwrap();
        assert_eq!(p.name, Change::Keep);
        assert_eq!(p.logo_url, Change::Keep);
        assert_eq!(p.industry, Change::Keep);
        assert_eq!(p.timezone, Change::Keep);
        assert_eq!(p.logo_url.as_update(), (false, None));
    }

    #[test]
    fn values_are_trimmed_and_empty_optionals_clear() {
        let p = WorkspacePatch::parse(
            Some("  Acme GmbH "),
            Some(""),
            Some(" "),
            Some("Europe/Berlin"),
        )
        .unwrap();
        assert_eq!(p.name, Change::Set("Acme GmbH".into()));
        assert_eq!(p.logo_url, Change::Clear);
        assert_eq!(p.logo_url.as_update(), (true, None));
        assert_eq!(p.industry, Change::Clear);
        assert_eq!(p.timezone, Change::Set("Europe/Berlin".into()));
    }

    #[test]
    fn bad_values_name_their_field() {
        let long = "x".repeat(NAME_MAX + 1);
        type Case<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            &'a str,
        );
        let cases: [Case; 7] = [
            (Some(""), None, None, None, "name"),
            (Some(&long), None, None, None, "name"),
            (Some("a\u{0}b"), None, None, None, "name"),
            (None, Some("javascript:alert(1)"), None, None, "logo_url"),
            (None, Some("https://"), None, None, "logo_url"),
            (None, None, Some(&long), None, "industry"),
            (None, None, None, Some("Mars/Olympus Mons"), "timezone"),
        ];
        for (n, l, i, t, field) in cases {
            let err = WorkspacePatch::parse(n, l, i, t).unwrap_err();
            assert_eq!(field_of(err), field);
        }
        assert_eq!(
            field_of(WorkspacePatch::parse(None, None, None, Some("")).unwrap_err()),
            "timezone"
        );
    }

    #[test]
    fn names_count_characters_not_bytes() {
        let name = "é".repeat(NAME_MAX);
        assert!(tenant_name(&name).is_ok());
    }

    #[test]
    fn urls() {
        assert_eq!(
            http_url("u", " https://cdn.example.com/logo.png ").unwrap(),
            "https://cdn.example.com/logo.png"
        );
        assert!(http_url("u", "HTTP://Example.com").is_ok());
        assert!(http_url("u", "ftp://example.com/x").is_err());
        assert!(http_url("u", "https://exa mple.com").is_err());
        assert!(http_url("u", "https:///path").is_err());
        assert!(http_url("u", &format!("https://e.com/{}", "a".repeat(URL_MAX))).is_err());
    }

    #[test]
    fn timezones() {
        for tz in [
            "UTC",
            "Europe/Berlin",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            "America/Port-au-Prince",
        ] {
            assert!(timezone_name(tz).is_ok(), "{tz}");
        }
        for tz in [
            "",
            "/",
            "Europe//Berlin",
            "Europe/Berlin'",
            "Europe/Berlin; drop",
            &"A".repeat(65),
        ] {
            assert!(timezone_name(tz).is_err(), "{tz}");
        }
    }

    #[test]
    fn slugs() {
        for s in ["acme", "acme-2", "a", "0", &"a".repeat(63)] {
            assert!(slug(s).is_ok(), "{s}");
        }
        for s in [
            "",
            "-acme",
            "acme-",
            "Acme",
            "ac me",
            "acmé",
            &"a".repeat(64),
        ] {
            assert!(slug(s).is_err(), "{s}");
        }
    }

    #[test]
    fn emails() {
        assert_eq!(email("e", " Ana@Example.COM ").unwrap(), "ana@example.com");
        for e in [
            "",
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "ana@@example.com",
            "a na@example.com",
            "ana@.com",
            "ana@example.com.",
        ] {
            assert!(email("e", e).is_err(), "{e}");
        }
    }
}
