//! CSV as the export writes it and the import reads it: RFC 4180 (comma, CRLF, double
//! quotes), UTF-8, and safe to open in a spreadsheet.
//!
//! A spreadsheet runs a cell that starts with `=`, `+`, `-`, `@`, a tab or a carriage return
//! as a formula, so such a cell is written with a leading `'` (OWASP's advice), which
//! spreadsheets show as text. The import takes the `'` off again, and the rule is made
//! reversible so that every value survives an export and an import unchanged: a value that
//! starts with `'` followed by something that would itself need the prefix gets one more.

use std::borrow::Cow;

/// What makes a spreadsheet treat a cell as a formula.
fn starts_like_formula(s: &str) -> bool {
    matches!(
        s.as_bytes().first(),
        Some(b'=' | b'+' | b'-' | b'@' | b'\t' | b'\r')
    )
}

/// Whether a value is written with the `'` prefix: it starts like a formula, or it is a
/// prefix followed by such a value (so that [`restore`] can tell the two apart).
fn needs_prefix(s: &str) -> bool {
    starts_like_formula(s) || s.strip_prefix('\'').is_some_and(needs_prefix)
}

/// The cell a value is written as.
pub fn neutralise(value: &str) -> Cow<'_, str> {
    if needs_prefix(value) {
        Cow::Owned(format!("'{value}"))
    } else {
        Cow::Borrowed(value)
    }
}

/// The value a cell written by [`neutralise`] stands for (any other cell is its own value).
pub fn restore(cell: &str) -> &str {
    match cell.strip_prefix('\'') {
        Some(rest) if needs_prefix(rest) => rest,
        _ => cell,
    }
}

/// Appends one record: cells neutralised, quoted when they hold a comma, a quote, CR or LF,
/// and the line ended with CRLF.
pub fn write_record<'a>(out: &mut Vec<u8>, cells: impl IntoIterator<Item = &'a str>) {
    for (i, value) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let cell = neutralise(value);
        if cell
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
        {
            out.push(b'"');
            for b in cell.bytes() {
                if b == b'"' {
                    out.push(b'"');
                }
                out.push(b);
            }
            out.push(b'"');
        } else {
            out.extend_from_slice(cell.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The byte order mark that makes spreadsheets read a CSV file as UTF-8.
pub const BOM: &[u8] = b"\xEF\xBB\xBF";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_neutralised_and_restored() {
        for (value, cell) in [
            ("=1+1", "'=1+1"),
            ("+1 555 0100", "'+1 555 0100"),
            ("-5", "'-5"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\tx", "'\tx"),
            ("\rx", "'\rx"),
            ("plain", "plain"),
            ("", ""),
            ("'quoted", "'quoted"),
            ("'=x", "''=x"),
            ("''=x", "'''=x"),
            ("a=b", "a=b"),
        ] {
            assert_eq!(neutralise(value), cell, "{value:?}");
            assert_eq!(restore(cell), value, "{cell:?}");
        }
    }

    #[test]
    fn every_value_round_trips() {
        let pieces = ["", "'", "=", "+", "-", "@", "\t", "\r", "a", "''"];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let value = format!("{a}{b}{c}");
                    let cell = neutralise(&value);
                    assert!(!starts_like_formula(&cell), "{value:?} -> {cell:?}");
                    assert_eq!(restore(&cell), value);
                }
            }
        }
    }

    #[test]
    fn records_follow_rfc_4180() {
        let mut out = Vec::new();
        write_record(&mut out, ["a", "b,c", "say \"hi\"", "two\nlines", ""]);
        write_record(&mut out, ["=cmd|' /C calc'!A0", "x"]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a,\"b,c\",\"say \"\"hi\"\"\",\"two\nlines\",\r\n'=cmd|' /C calc'!A0,x\r\n"
        );
    }
}
