//! CSV as the export writes it and the import reads it: RFC 4180 (comma, CRLF, double
//! quotes), UTF-8, and safe to open in a spreadsheet.
//!
//! The import's [`Reader`] is strict where a lenient reader would guess: a quote inside an
//! unquoted field, text after a closing quote, a quoted field never closed, bytes that are
//! not UTF-8 and an overlong record are errors naming the line (a guess would import
//! shifted or merged columns without a word). It takes the body in chunks as they arrive,
//! so a file is never held whole.
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

/// One record of a file, with the line it starts on (1 for the header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub line: u64,
    pub fields: Vec<String>,
}

/// Why a file cannot be read, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadError {
    pub line: u64,
    pub problem: Problem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    QuoteInUnquotedField,
    TextAfterClosingQuote,
    UnclosedQuote,
    NotUtf8,
    NulByte,
    RecordTooLong(usize),
    TooManyFields(usize),
}

impl ReadError {
    /// The SQLSTATE it is reported with: 22021 for bad encoding, 54000 for a limit,
    /// 22P04 (bad copy file format) for the rest.
    pub fn code(&self) -> &'static str {
        match self.problem {
            Problem::NotUtf8 | Problem::NulByte => "22021",
            Problem::RecordTooLong(_) | Problem::TooManyFields(_) => "54000",
            _ => "22P04",
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: ", self.line)?;
        match self.problem {
            Problem::QuoteInUnquotedField => f.write_str(
                "a quote inside an unquoted field (quote the whole field and double the quote)",
            ),
            Problem::TextAfterClosingQuote => f.write_str(
                "text after a closing quote (a quoted field ends at a comma or the line end)",
            ),
            Problem::UnclosedQuote => f.write_str("a quoted field is never closed"),
            Problem::NotUtf8 => f.write_str("the text is not UTF-8 (save the file as UTF-8)"),
            Problem::NulByte => f.write_str("a NUL byte (the file is not text)"),
            Problem::RecordTooLong(max) => write!(f, "a record longer than {max} bytes"),
            Problem::TooManyFields(max) => write!(f, "more than {max} fields"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a record.
    RecordStart,
    /// At the start of a field (after a comma).
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: a doubled quote or the field's end.
    QuoteInQuoted,
    /// After a CR that ended a record: a LF belongs to it.
    AfterCr,
}

/// A streaming, strict RFC 4180 reader (see the module's docs). A UTF-8 byte order mark at
/// the start is skipped; empty lines between records are skipped; a record may end with
/// CRLF, LF or CR.
pub struct Reader {
    max_record_bytes: usize,
    max_fields: usize,
    state: State,
    /// Bytes of a possible byte order mark still to match at the start.
    bom_seen: usize,
    started: bool,
    field: Vec<u8>,
    fields: Vec<Vec<u8>>,
    record_bytes: usize,
    /// The physical line being read.
    line: u64,
    /// The line the current record started on.
    record_line: u64,
    /// Inside a quoted field, the last byte was a CR (counted as a line end; a LF after it
    /// belongs to it).
    quoted_cr: bool,
}

impl Reader {
    pub fn new(max_record_bytes: usize, max_fields: usize) -> Reader {
        Reader {
            max_record_bytes,
            max_fields,
            state: State::RecordStart,
            bom_seen: 0,
            started: false,
            field: Vec::new(),
            fields: Vec::new(),
            record_bytes: 0,
            line: 1,
            record_line: 1,
            quoted_cr: false,
        }
    }

    /// Reads a chunk; complete records are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Record>) -> Result<(), ReadError> {
        let mut bytes = chunk;
        while !self.started {
            let Some((&b, rest)) = bytes.split_first() else {
                return Ok(());
            };
            if b == BOM[self.bom_seen] {
                self.bom_seen += 1;
                bytes = rest;
                if self.bom_seen == BOM.len() {
                    self.started = true;
                }
            } else {
                // Not a byte order mark after all: what was taken for one is text.
                self.started = true;
                let taken = BOM[..self.bom_seen].to_vec();
                for b in taken {
                    self.byte(b, out)?;
                }
            }
        }
        for &b in bytes {
            self.byte(b, out)?;
        }
        Ok(())
    }

    /// The end of the file: the last record, if it did not end with a line end.
    pub fn finish(&mut self, out: &mut Vec<Record>) -> Result<(), ReadError> {
        if !self.started {
            self.started = true;
            let taken = BOM[..self.bom_seen].to_vec();
            for b in taken {
                self.byte(b, out)?;
            }
        }
        match self.state {
            State::RecordStart | State::AfterCr => Ok(()),
            State::Quoted => Err(self.error(Problem::UnclosedQuote)),
            State::FieldStart | State::Unquoted | State::QuoteInQuoted => self.end_record(out),
        }
    }

    fn error(&self, problem: Problem) -> ReadError {
        ReadError {
            line: self.record_line,
            problem,
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<Record>) -> Result<(), ReadError> {
        if self.state == State::AfterCr {
            self.state = State::RecordStart;
            if b == b'\n' {
                return Ok(());
            }
        }
        if self.state == State::RecordStart {
            self.record_line = self.line;
            match b {
                // An empty line between records.
                b'\n' | b'\r' => {
                    self.line += 1;
                    if b == b'\r' {
                        self.state = State::AfterCr;
                    }
                    return Ok(());
                }
                _ => self.state = State::FieldStart,
            }
        }
        self.record_bytes += 1;
        if self.record_bytes > self.max_record_bytes {
            return Err(self.error(Problem::RecordTooLong(self.max_record_bytes)));
        }
        if b == 0 {
            // Valid UTF-8, but no PostgreSQL text can hold it.
            return Err(self.error(Problem::NulByte));
        }
        let after_cr = std::mem::take(&mut self.quoted_cr);
        match (self.state, b) {
            (State::FieldStart, b'"') => self.state = State::Quoted,
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b',') => {
                self.end_field()?;
                self.state = State::FieldStart;
            }
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b'\n') => {
                self.line += 1;
                self.end_record(out)?;
            }
            (State::FieldStart | State::Unquoted | State::QuoteInQuoted, b'\r') => {
                self.line += 1;
                self.end_record(out)?;
                self.state = State::AfterCr;
            }
            (State::Unquoted, b'"') => return Err(self.error(Problem::QuoteInUnquotedField)),
            (State::FieldStart | State::Unquoted, _) => {
                self.field.push(b);
                self.state = State::Unquoted;
            }
            (State::Quoted, b'"') => self.state = State::QuoteInQuoted,
            (State::Quoted, _) => {
                match b {
                    b'\r' => {
                        self.line += 1;
                        self.quoted_cr = true;
                    }
                    b'\n' if !after_cr => self.line += 1,
                    _ => {}
                }
                self.field.push(b);
            }
            (State::QuoteInQuoted, b'"') => {
                self.field.push(b'"');
                self.state = State::Quoted;
            }
            (State::QuoteInQuoted, _) => return Err(self.error(Problem::TextAfterClosingQuote)),
            (State::RecordStart | State::AfterCr, _) => unreachable!("handled above"),
        }
        Ok(())
    }

    fn end_field(&mut self) -> Result<(), ReadError> {
        if self.fields.len() >= self.max_fields {
            return Err(self.error(Problem::TooManyFields(self.max_fields)));
        }
        self.fields.push(std::mem::take(&mut self.field));
        Ok(())
    }

    fn end_record(&mut self, out: &mut Vec<Record>) -> Result<(), ReadError> {
        self.end_field()?;
        let fields = std::mem::take(&mut self.fields)
            .into_iter()
            .map(String::from_utf8)
            .collect::<Result<Vec<String>, _>>()
            .map_err(|_| self.error(Problem::NotUtf8))?;
        out.push(Record {
            line: self.record_line,
            fields,
        });
        self.record_bytes = 0;
        self.state = State::RecordStart;
        Ok(())
    }
}

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

    /// Everything `input` holds, fed in chunks of `size` bytes.
    fn read(input: &[u8], size: usize) -> Result<Vec<Record>, ReadError> {
        let mut reader = Reader::new(64, 8);
        let mut out = Vec::new();
        for chunk in input.chunks(size) {
            reader.feed(chunk, &mut out)?;
        }
        reader.finish(&mut out)?;
        Ok(out)
    }

    fn record(line: u64, fields: &[&str]) -> Record {
        Record {
            line,
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    #[test]
    fn records_are_read_whatever_the_chunks() {
        let input = "\u{feff}id,name,notes\r\n1,Ann,\"say \"\"hi\"\", twice\"\r\n\r\n2,Bo,\"two\r\nlines\"\n3,,\n4,\"\",x";
        let want = vec![
            record(1, &["id", "name", "notes"]),
            record(2, &["1", "Ann", "say \"hi\", twice"]),
            record(4, &["2", "Bo", "two\r\nlines"]),
            record(6, &["3", "", ""]),
            record(7, &["4", "", "x"]),
        ];
        for size in [1, 2, 3, 7, 1000] {
            assert_eq!(
                read(input.as_bytes(), size).unwrap(),
                want,
                "chunks of {size}"
            );
        }
        // CR alone ends a line too, inside quotes as well; a file may end with its line end.
        assert_eq!(
            read(b"a,b\rc,d\r\"e\rf\",g\rh,i\r", 1).unwrap(),
            vec![
                record(1, &["a", "b"]),
                record(2, &["c", "d"]),
                record(3, &["e\rf", "g"]),
                record(5, &["h", "i"])
            ]
        );
        // Bytes that only begin like a byte order mark are text.
        assert_eq!(read(b"\xEF\xBBx", 1).unwrap_err().problem, Problem::NotUtf8);
        assert_eq!(read("\u{feff}".as_bytes(), 1).unwrap(), vec![]);
        assert_eq!(read(b"", 1).unwrap(), vec![]);
        // What the export writes reads back.
        let mut exported = BOM.to_vec();
        write_record(&mut exported, ["a,b", "=1+1", "line\nbreak", "\"q\""]);
        let back = read(&exported, 5).unwrap();
        assert_eq!(back[0].fields, ["a,b", "'=1+1", "line\nbreak", "\"q\""]);
        assert_eq!(restore(&back[0].fields[1]), "=1+1");
    }

    #[test]
    fn malformed_files_name_the_line() {
        let problem = |input: &str| {
            let e = read(input.as_bytes(), 4).unwrap_err();
            (e.line, e.problem)
        };
        assert_eq!(problem("a,b\nc,d\"e\n"), (2, Problem::QuoteInUnquotedField));
        assert_eq!(
            problem("a,b\n\"c\"d,e\n"),
            (2, Problem::TextAfterClosingQuote)
        );
        // An unclosed quote is reported where its record began.
        assert_eq!(
            problem("a,b\nc,d\n\"e,f\ng,h\n"),
            (3, Problem::UnclosedQuote)
        );
        assert_eq!(
            read(b"a,b\nc,\xff\xfe\n", 3).unwrap_err(),
            ReadError {
                line: 2,
                problem: Problem::NotUtf8
            }
        );
        let long = format!("a\n{}\n", "x".repeat(65));
        assert_eq!(problem(&long), (2, Problem::RecordTooLong(64)));
        assert_eq!(problem("a\n,,,,,,,,\n"), (2, Problem::TooManyFields(8)));
        assert_eq!(problem("a,b\nc,d\0\n"), (2, Problem::NulByte));
        let e = read(b"a\n\"b", 1).unwrap_err();
        assert_eq!(e.to_string(), "line 2: a quoted field is never closed");
        assert_eq!(e.code(), "22P04");
    }
}
