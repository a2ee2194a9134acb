//! Workspace metadata rules (PRD F1.2, F1.3): what a tenant's name, slug, logo URL,
//! industry and timezone may be, and how a partial update reads.

use crate::domain::{timezone, web_url};
use crate::error::CrmError;

pub const NAME_MAX: usize = 200;
pub const INDUSTRY_MAX: usize = 100;
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
    /// An IANA zone name in its IANA spelling.
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
            logo_url: optional(logo_url, |u| web_url::http_url("logo_url", u))?,
            industry: optional(industry, |i| bounded_text("industry", i, INDUSTRY_MAX))?,
            timezone: match timezone {
                None => Change::Keep,
                Some(tz) => Change::Set(timezone::canonical("timezone", tz)?.to_string()),
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

/// A slug made from a workspace name: ASCII letters and digits lowercased, every other run
/// of characters one hyphen, at most 50 characters (so a uniqueness suffix still fits in
/// [`SLUG_MAX`]); `workspace` when nothing is left.
pub fn slugify(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 50 {
            break;
        }
    }
    let out = out.trim_end_matches('-');
    if out.is_empty() {
        "workspace".to_owned()
    } else {
        out.to_owned()
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

    fn field_of(e: CrmError) -> String {
        match e {
            CrmError::InvalidInput { field, .. } => field.into_owned(),
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
    fn urls_and_zones_are_normalised() {
        let p = WorkspacePatch::parse(
            None,
            Some("HTTPS://Cdn.Example.com"),
            None,
            Some("europe/berlin"),
        )
        .unwrap();
        assert_eq!(p.logo_url, Change::Set("https://cdn.example.com/".into()));
        assert_eq!(p.timezone, Change::Set("Europe/Berlin".into()));
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
    fn slugs_from_names() {
        assert_eq!(slugify("Acme Test Co"), "acme-test-co");
        assert_eq!(slugify("  Müller & Söhne GmbH!! "), "m-ller-s-hne-gmbh");
        assert_eq!(slugify("日本"), "workspace");
        assert_eq!(slugify(""), "workspace");
        let long = slugify(&"ab ".repeat(40));
        assert!(long.len() <= 50 && !long.ends_with('-'), "{long}");
        for name in ["Acme Test Co", "x", &"ab ".repeat(40), "--a--"] {
            let s = slugify(name);
            assert_eq!(
                slug(&format!("{s}-1a2b3c")).as_deref(),
                Ok(format!("{s}-1a2b3c").as_str())
            );
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
