//! Web addresses people store and other people's clients later open: a workspace logo,
//! an avatar, an organization's website.
//!
//! They are parsed with a real URL parser (WHATWG rules, as browsers read them) rather
//! than matched by pattern, and stored in the parser's normalised form, so what is saved is
//! exactly what a browser will fetch. Refused: anything but http and https, userinfo
//! (`https://bank.test@evil.test/` reads as a bank's address but goes to evil.test), and
//! quotes, backticks, angle brackets, backslashes, whitespace and control characters in
//! the raw text: they have no place in an address someone types, and they are how a value
//! breaks out of an HTML attribute when a client renders it unescaped.

use crate::error::CrmError;

/// The longest address accepted, before and after normalisation.
pub const URL_MAX: usize = 2048;

/// A normalised absolute http(s) URL, or 22023 naming `field`.
pub fn http_url(field: &'static str, raw: &str) -> Result<String, CrmError> {
    let given = raw.trim();
    if given.len() > URL_MAX {
        return Err(CrmError::invalid(
            field,
            format!("must be at most {URL_MAX} characters"),
        ));
    }
    if let Some(c) = given.chars().find(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, '"' | '\'' | '`' | '<' | '>' | '\\')
    }) {
        let what = match c {
            '"' | '\'' | '`' => "quotes",
            '<' | '>' => "angle brackets",
            '\\' => "backslashes",
            _ => "whitespace or control characters",
        };
        return Err(CrmError::invalid(
            field,
            format!("must be a URL without {what}"),
        ));
    }
    let not_web = || CrmError::invalid(field, "must be an http:// or https:// URL with a host");
    let lower = given.to_ascii_lowercase();
    let after_scheme = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(not_web)?;
    // `https:///path` reads as host "path" to a URL parser; nobody means that.
    if after_scheme.is_empty() || after_scheme.starts_with('/') {
        return Err(not_web());
    }
    let url = url::Url::parse(given).map_err(|_| not_web())?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err(not_web());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(CrmError::invalid(
            field,
            "must not contain a user name or password",
        ));
    }
    let normalised = String::from(url);
    if normalised.len() > URL_MAX {
        return Err(CrmError::invalid(
            field,
            format!("must be at most {URL_MAX} characters"),
        ));
    }
    Ok(normalised)
}

#[cfg(test)]
mod unit {
    use super::*;

    fn refused(raw: &str) -> String {
        match http_url("logo_url", raw) {
            Err(CrmError::InvalidInput { field, message }) => {
                assert_eq!(field, "logo_url");
                message
            }
            other => panic!("{raw:?} was accepted: {other:?}"),
        }
    }

    #[test]
    fn normalised_before_storing() {
        for (raw, want) in [
            (
                " https://cdn.example.com/logo.png ",
                "https://cdn.example.com/logo.png",
            ),
            ("HTTP://Example.COM", "http://example.com/"),
            ("https://example.com:443/a/../b", "https://example.com/b"),
            (
                "http://example.com:8080/x?y=1#z",
                "http://example.com:8080/x?y=1#z",
            ),
            ("https://bücher.example/", "https://xn--bcher-kva.example/"),
        ] {
            assert_eq!(http_url("u", raw).as_deref(), Ok(want), "{raw}");
        }
    }

    #[test]
    fn only_web_urls_with_a_host() {
        for raw in [
            "javascript:alert(1)",
            "ftp://example.com/x",
            "data:text/html,hi",
            "https://",
            "https:///path",
            "//example.com/x",
            "example.com",
            "mailto:a@example.com",
        ] {
            refused(raw);
        }
    }

    #[test]
    fn no_userinfo() {
        for raw in [
            "https://a@evil.test/",
            "https://bank.test:pw@evil.test/",
            "https://:pw@evil.test/",
        ] {
            assert!(refused(raw).contains("user name"), "{raw}");
        }
    }

    #[test]
    fn nothing_that_breaks_out_of_markup() {
        for raw in [
            "https://x.test/\"><script>alert(1)</script>",
            "https://x.test/'onload='x",
            "https://x.test/`x`",
            "https://x.test/<b>",
            "https://x.test\\@evil.test/",
            "https://exa mple.com",
            "https://x.test/\u{0}",
            "https://x.test/\u{2028}a",
        ] {
            refused(raw);
        }
    }

    #[test]
    fn length_is_capped() {
        let long = format!("https://e.com/{}", "a".repeat(URL_MAX));
        assert!(refused(&long).contains("at most"));
        // Percent-encoding can lengthen an address past the cap.
        let grows = format!("https://e.com/{}", "é".repeat(URL_MAX / 2 - 10));
        assert!(refused(&grows).contains("at most"));
    }
}
