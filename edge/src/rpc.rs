//! Turning an HTTP call into one `api` function call, PostgREST-style.
//!
//! No request value is ever written into SQL. The request's keys only select arguments from
//! the catalog; the statement names those arguments and their catalog types, and the values
//! travel as one `jsonb` parameter unpacked by `jsonb_to_record`, so PostgreSQL itself converts
//! (and rejects, with 22xxx) each value using the argument's type. PostgreSQL's message does
//! not say which argument it could not convert: [`Call::probes`] hold one statement per
//! argument that converts only that one, which the edge runs when (and only when) a call fails
//! that way, to name the field in the 400.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::catalog::{Function, Volatility};
use crate::error::{cut, DbError, Error};

/// A statement ready to run: `sql` takes the arguments object as `$1` when `takes_args`.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub sql: String,
    pub takes_args: bool,
    /// A `void` function: run it and answer `null`.
    pub returns_void: bool,
    pub volatility: Volatility,
    /// Per passed argument: its name and a statement converting `$1` (the argument alone, in
    /// an object) to the argument's type, as the call does.
    pub probes: Vec<(String, String)>,
}

/// `^[a-z_][a-z0-9_]{0,62}$`: the names the edge will look up at all.
pub fn valid_function_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && (bytes[0].is_ascii_lowercase() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

/// A double-quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The statement calling `f` with the catalog arguments named in `keys` (already checked by
/// [`crate::catalog::Catalog::resolve`]).
pub fn build_call(f: &Function, keys: &BTreeSet<String>) -> Call {
    let passed: Vec<_> = f.args.iter().filter(|a| keys.contains(&a.name)).collect();
    let named_args: Vec<String> = passed
        .iter()
        .map(|a| {
            let variadic = if a.variadic { "VARIADIC " } else { "" };
            format!("{variadic}{0} => _a.{0}", quote_ident(&a.name))
        })
        .collect();
    let invocation = format!("api.{}({})", quote_ident(&f.name), named_args.join(", "));
    let record = if passed.is_empty() {
        None
    } else {
        let columns: Vec<String> = passed
            .iter()
            .map(|a| format!("{} {}", quote_ident(&a.name), a.type_sql))
            .collect();
        Some(format!(
            "jsonb_to_record($1::jsonb) AS _a({})",
            columns.join(", ")
        ))
    };
    let probes = passed
        .iter()
        .map(|a| {
            let sql = format!(
                "SELECT FROM jsonb_to_record($1::jsonb) AS _a({} {})",
                quote_ident(&a.name),
                a.type_sql
            );
            (a.name.clone(), sql)
        })
        .collect();
    let returns_void = !f.returns_set && f.return_type == "void";
    let sql = match (f.returns_set, record) {
        (true, Some(record)) => {
            format!("SELECT coalesce(jsonb_agg(_r), '[]'::jsonb) FROM {record}, {invocation} AS _r")
        }
        (true, None) => {
            format!("SELECT coalesce(jsonb_agg(_r), '[]'::jsonb) FROM {invocation} AS _r")
        }
        (false, Some(record)) if returns_void => format!("SELECT {invocation} FROM {record}"),
        (false, Some(record)) => format!("SELECT to_jsonb({invocation}) FROM {record}"),
        (false, None) if returns_void => format!("SELECT {invocation}"),
        (false, None) => format!("SELECT to_jsonb({invocation})"),
    };
    Call {
        sql,
        takes_args: !passed.is_empty(),
        returns_void,
        volatility: f.volatility,
        probes,
    }
}

/// Checks the arguments of the simple types whose values the edge can judge exactly as
/// PostgreSQL would (uuid, integers, boolean) before anything is sent: a value PostgreSQL
/// cannot convert makes its input function raise an error that quotes the value, and
/// PostgreSQL logs that error, so an email pasted into an id would land in the server log
/// (NFR-S9). The answer is the 400 PostgreSQL's error would get, naming the field, without
/// the value. Other types (text, jsonb, numeric, dates) are left to PostgreSQL.
pub fn check_args(f: &Function, args: &Map<String, Value>) -> Result<(), Error> {
    for a in &f.args {
        let Some(value) = args.get(&a.name) else {
            continue;
        };
        if value.is_null() {
            continue;
        }
        let (min, max) = match a.type_sql.as_str() {
            "smallint" => (i64::from(i16::MIN), i64::from(i16::MAX)),
            "integer" => (i64::from(i32::MIN), i64::from(i32::MAX)),
            _ => (i64::MIN, i64::MAX),
        };
        // (SQLSTATE, what is wrong) as PostgreSQL would raise it.
        let refusal = match a.type_sql.as_str() {
            "uuid" if !value.as_str().is_some_and(is_uuid_input) => {
                Some(("22P02", "not a valid uuid"))
            }
            "smallint" | "integer" | "bigint" => match integer_input(value) {
                IntegerInput::Valid(n) if n < min || n > max => Some(("22003", "out of range")),
                IntegerInput::Valid(_) => None,
                IntegerInput::OutOfRange => Some(("22003", "out of range")),
                IntegerInput::Invalid => Some(("22P02", "not a valid integer")),
            },
            "boolean" if !(value.is_boolean() || value.as_str().is_some_and(is_boolean_input)) => {
                Some(("22P02", "not a valid boolean"))
            }
            _ => None,
        };
        if let Some((code, what)) = refusal {
            return Err(Error::Db(DbError {
                code: code.to_owned(),
                message: format!("invalid {}: {what} ({})", a.name, a.type_sql),
                detail: Some(format!("field: {}", a.name)),
                hint: None,
                in_function: false,
            }));
        }
    }
    Ok(())
}

/// What PostgreSQL's uuid input accepts: 32 hex digits, optionally in braces, with hyphens
/// after groups of four.
fn is_uuid_input(s: &str) -> bool {
    let s = s
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .unwrap_or(s);
    let mut digits = 0;
    for (i, c) in s.chars().enumerate() {
        match c {
            '-' if i > 0 && digits % 4 == 0 && digits < 32 => {}
            c if c.is_ascii_hexdigit() => digits += 1,
            _ => return false,
        }
    }
    digits == 32 && !s.ends_with('-')
}

enum IntegerInput {
    Valid(i64),
    OutOfRange,
    Invalid,
}

/// A JSON integer, or a string PostgreSQL's integer input reads (spaces around, a sign).
fn integer_input(value: &Value) -> IntegerInput {
    let digits = |s: &str| {
        let t = s.strip_prefix(['+', '-']).unwrap_or(s);
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
    };
    match value {
        Value::Number(n) => match n.as_i64() {
            Some(i) => IntegerInput::Valid(i),
            None if n.is_u64() || digits(&n.to_string()) => IntegerInput::OutOfRange,
            None => IntegerInput::Invalid,
        },
        Value::String(s) => match s.trim().parse::<i64>() {
            Ok(i) => IntegerInput::Valid(i),
            Err(_) if digits(s.trim()) => IntegerInput::OutOfRange,
            Err(_) => IntegerInput::Invalid,
        },
        _ => IntegerInput::Invalid,
    }
}

/// PostgreSQL's boolean spellings: any prefix of true, false, yes, no (at least the letter
/// that tells them apart), on, off, 1 and 0, in any case, spaces around.
fn is_boolean_input(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    !s.is_empty()
        && (["true", "false", "yes", "no"]
            .iter()
            .any(|w| w.starts_with(&s))
            || ["on", "off", "1", "0"].contains(&s.as_str()))
        && s != "o"
}

/// A POST body: empty means `{}`, anything else must be a JSON object.
pub fn args_from_body(body: &[u8]) -> Result<Map<String, Value>, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::BadRequest(
            "The request body must be a JSON object of named arguments".to_owned(),
        )),
        Err(e) => Err(Error::BadRequest(format!(
            "The request body is not valid JSON: {e}"
        ))),
    }
}

/// GET query parameters: each value is passed as a JSON string for PostgreSQL to convert,
/// except for `json`/`jsonb` arguments, whose text is parsed as JSON (as PostgreSQL would).
pub fn args_from_query(
    pairs: Vec<(String, String)>,
    is_json: impl Fn(&str) -> bool,
) -> Result<Map<String, Value>, Error> {
    let mut map = Map::new();
    for (key, value) in distinct_query(pairs)? {
        let value = if is_json(&key) {
            serde_json::from_str(&value).map_err(|_| {
                Error::BadRequest(format!(
                    "Query parameter {} is not valid JSON",
                    cut(&key, 63)
                ))
            })?
        } else {
            Value::String(value)
        };
        map.insert(key, value);
    }
    Ok(map)
}

/// A query string's pairs, each key once (a key given twice is a 400: which one would count
/// is a guess).
pub fn distinct_query(pairs: Vec<(String, String)>) -> Result<Vec<(String, String)>, Error> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    if let Some((key, _)) = pairs.iter().find(|(key, _)| !seen.insert(key.as_str())) {
        return Err(Error::BadRequest(format!(
            "Query parameter {} is given more than once",
            cut(key, 63)
        )));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::tests::function;
    use serde_json::json;

    fn keys(k: &[&str]) -> BTreeSet<String> {
        k.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn function_names() {
        for ok in ["a", "_", "list_contacts", "f2", &"x".repeat(63)] {
            assert!(valid_function_name(ok), "{ok}");
        }
        for bad in [
            "",
            "2f",
            "List",
            "a-b",
            "a b",
            "a;drop",
            "api.f",
            "é",
            "f\"",
            &"x".repeat(64),
        ] {
            assert!(!valid_function_name(bad), "{bad}");
        }
    }

    #[test]
    fn simple_arguments_are_checked_before_postgresql_sees_them() {
        let f = function(
            "f",
            &[
                ("id", "uuid"),
                ("n", "integer"),
                ("small", "smallint"),
                ("yes", "boolean"),
                ("q", "text"),
            ],
            1,
            Volatility::Stable,
        );
        let args = |v: Value| v.as_object().unwrap().clone();
        for good in [
            json!({"id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "n": 5, "small": "-7", "yes": true, "q": "x@y.test"}),
            json!({"id": "{A0EEBC99-9C0B4EF8-BB6D6BB9-BD380A11}", "n": " 42 ", "yes": "Y"}),
            json!({"id": "a0eebc999c0b4ef8bb6d6bb9bd380a11", "yes": "off", "n": null}),
        ] {
            assert!(check_args(&f, &args(good.clone())).is_ok(), "{good}");
        }
        for (bad, field) in [
            (json!({"id": "ann@example.test"}), "id"),
            (json!({"id": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1"}), "id"),
            (json!({"id": 5}), "id"),
            (json!({"n": "4.5"}), "n"),
            (json!({"n": 3_000_000_000_i64}), "n"),
            (json!({"small": 40000}), "small"),
            (json!({"n": "99999999999999999999"}), "n"),
            (json!({"yes": "maybe"}), "yes"),
            (json!({"yes": "o"}), "yes"),
        ] {
            match check_args(&f, &args(bad.clone())) {
                Err(Error::Db(db)) => {
                    let range = db.message.contains("out of range");
                    assert_eq!(db.code, if range { "22003" } else { "22P02" }, "{bad}");
                    assert_eq!(
                        db.detail.as_deref(),
                        Some(format!("field: {field}").as_str())
                    );
                    assert!(!db.message.contains("example.test"), "{}", db.message);
                }
                other => panic!("{bad}: {other:?}"),
            }
        }
    }

    #[test]
    fn scalar_call_quotes_names_and_never_inlines_values() {
        let f = function(
            "create_contact",
            &[("email", "text"), ("org_id", "uuid"), ("note", "text")],
            1,
            Volatility::Volatile,
        );
        let call = build_call(&f, &keys(&["email", "org_id"]));
        assert_eq!(
            call.sql,
            "SELECT to_jsonb(api.\"create_contact\"(\"email\" => _a.\"email\", \"org_id\" => _a.\"org_id\")) \
             FROM jsonb_to_record($1::jsonb) AS _a(\"email\" text, \"org_id\" uuid)"
        );
        assert!(call.takes_args);
        assert!(!call.returns_void);
        assert_eq!(
            call.probes,
            vec![
                (
                    "email".to_owned(),
                    "SELECT FROM jsonb_to_record($1::jsonb) AS _a(\"email\" text)".to_owned()
                ),
                (
                    "org_id".to_owned(),
                    "SELECT FROM jsonb_to_record($1::jsonb) AS _a(\"org_id\" uuid)".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn set_void_and_argless_calls() {
        let mut f = function(
            "list_deals",
            &[("stage", "crm.deal_stage")],
            1,
            Volatility::Stable,
        );
        f.returns_set = true;
        assert_eq!(
            build_call(&f, &keys(&["stage"])).sql,
            "SELECT coalesce(jsonb_agg(_r), '[]'::jsonb) FROM jsonb_to_record($1::jsonb) AS _a(\"stage\" crm.deal_stage), \
             api.\"list_deals\"(\"stage\" => _a.\"stage\") AS _r"
        );
        let call = build_call(&f, &keys(&[]));
        assert_eq!(
            call.sql,
            "SELECT coalesce(jsonb_agg(_r), '[]'::jsonb) FROM api.\"list_deals\"() AS _r"
        );
        assert!(!call.takes_args);

        let mut f = function("logout", &[], 0, Volatility::Volatile);
        f.return_type = "void".to_owned();
        let call = build_call(&f, &keys(&[]));
        assert_eq!(call.sql, "SELECT api.\"logout\"()");
        assert!(call.returns_void);
    }

    #[test]
    fn catalog_names_with_quotes_stay_identifiers() {
        let mut f = function("odd", &[("we\"ird", "text")], 0, Volatility::Volatile);
        f.args[0].variadic = true;
        let call = build_call(&f, &keys(&["we\"ird"]));
        assert!(
            call.sql
                .contains("VARIADIC \"we\"\"ird\" => _a.\"we\"\"ird\""),
            "{}",
            call.sql
        );
    }

    #[test]
    fn bodies_and_queries() {
        assert_eq!(args_from_body(b"").ok(), Some(Map::new()));
        assert_eq!(args_from_body(b" \n").ok(), Some(Map::new()));
        assert!(args_from_body(br#"{"a": 1}"#).is_ok());
        for bad in [&b"[1]"[..], b"null", b"\"x\"", b"{", b"{'a':1}"] {
            assert!(matches!(args_from_body(bad), Err(Error::BadRequest(_))));
        }
        let pairs = vec![
            ("a".to_owned(), "1".to_owned()),
            ("j".to_owned(), "{\"x\":1}".to_owned()),
        ];
        let map = args_from_query(pairs, |k| k == "j").expect("query");
        assert_eq!(map["a"], Value::String("1".into()));
        assert_eq!(map["j"]["x"], 1);
        let dup = vec![
            ("a".to_owned(), "1".to_owned()),
            ("a".to_owned(), "2".to_owned()),
        ];
        assert!(args_from_query(dup, |_| false).is_err());
    }
}
