//! The fields of the CRM's records (organizations, contacts, deals, activities) and of the
//! custom fields a tenant defines for them: which exist, which are required, what each may
//! hold, and the form it is stored in.
//!
//! The SQL functions pass the caller's JSON on as it came and write what comes back, so each
//! rule about a field's content is stated once, here, and a client learns which field is
//! wrong, and why, before anything is written. What needs the database is left to it: that a
//! referenced row exists in the tenant, that a stage key is one of the tenant's stages, and
//! uniqueness (emails are unique case-insensitively, which is why they are stored as typed).
//!
//! Custom field values live in each record's `custom_fields` object. Their definitions can be
//! changed or deleted at any time, so only the values a write changes are checked against
//! them: a row that was valid when written stays writable.

use crate::domain::{currency, web_url};
use crate::error::CrmError;
use serde_json::{Map, Number, Value};
use std::borrow::Cow;

pub const NAME_MAX: usize = 200;
pub const PERSON_NAME_MAX: usize = 100;
pub const INDUSTRY_MAX: usize = 100;
pub const LOCATION_MAX: usize = 200;
pub const TITLE_MAX: usize = 200;
pub const EMAIL_MAX: usize = 254;
pub const PHONE_MAX: usize = 40;
pub const PHONE_DIGITS_MIN: usize = 4;
pub const NOTES_MAX: usize = 10_000;
pub const DESCRIPTION_MAX: usize = 10_000;
/// Amounts are below 10^15, in at most two decimal places.
pub const AMOUNT_INTEGER_DIGITS: usize = 15;
pub const AMOUNT_DECIMALS: usize = 2;
/// An amount with a fractional part travels as a binary float (serde_json's numbers); up
/// to 15 significant digits survive that exactly.
pub const AMOUNT_SIGNIFICANT_DIGITS: usize = 15;
pub const PROBABILITY_MAX: i64 = 100;
/// Stage keys and custom field keys: a lowercase letter, then letters, digits, underscores.
pub const KEY_MAX: usize = 40;
pub const LABEL_MAX: usize = 100;
pub const OPTION_MAX: usize = 100;
pub const OPTIONS_MAX: usize = 100;
pub const CUSTOM_TEXT_MAX: usize = 1000;
pub const YEAR_MIN: u32 = 1900;
pub const YEAR_MAX: u32 = 9999;

pub const ORGANIZATION_SIZES: [&str; 7] = [
    "1-10",
    "11-50",
    "51-200",
    "201-500",
    "501-1000",
    "1001-5000",
    "5001+",
];
pub const ACTIVITY_TYPES: [&str; 4] = ["call", "email", "meeting", "note"];

/// Columns every record has that only the database writes.
const STAMPS: [&str; 8] = [
    "id",
    "tenant_id",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
    "deleted_at",
    "deleted_by",
];

const NOT_AN_AMOUNT: &str = "must be an amount such as 1200.50";
const NOT_A_PROBABILITY: &str = "must be a whole number from 0 to 100";
const NOT_A_DATE: &str = "must be a date such as 2026-12-31";
const NOT_A_TIMESTAMP: &str = "must be a timestamp such as 2026-11-24T10:00:00Z";
const NOT_A_KEY: &str =
    "must be a key such as contract_value: a lowercase letter, then up to 39 lowercase letters, digits or underscores";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Organization,
    Contact,
    Deal,
    Activity,
}

impl Entity {
    pub fn parse(s: &str) -> Option<Entity> {
        match s {
            "organization" => Some(Entity::Organization),
            "contact" => Some(Entity::Contact),
            "deal" => Some(Entity::Deal),
            "activity" => Some(Entity::Activity),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Organization => "organization",
            Entity::Contact => "contact",
            Entity::Deal => "deal",
            Entity::Activity => "activity",
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            Entity::Organization => "an organization",
            Entity::Contact => "a contact",
            Entity::Deal => "a deal",
            Entity::Activity => "an activity",
        }
    }

    fn fields(self) -> &'static [Field] {
        match self {
            Entity::Organization => &ORGANIZATION,
            Entity::Contact => &CONTACT,
            Entity::Deal => &DEAL,
            Entity::Activity => &ACTIVITY,
        }
    }
}

/// Why: create (required fields must be present) or update (only the keys given are checked; a
/// key whose value is JSON null means "clear it", refused for required fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Create,
    Update,
}

/// What a field holds.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// One line of text, at most this many characters.
    Text(usize),
    /// Text that may span lines (newlines and tabs allowed), at most this many characters.
    LongText(usize),
    OneOf(&'static [&'static str]),
    Email,
    Phone,
    Website,
    Uuid,
    Amount,
    Currency,
    StageKey,
    Probability,
    Date,
    Timestamp,
    /// `custom_fields`: its content is checked by [`custom_values`], against the definitions.
    Object,
}

#[derive(Debug)]
struct Field {
    name: &'static str,
    kind: Kind,
    required: bool,
    /// Set only on create; the message says how it changes afterwards.
    changed_by: Option<&'static str>,
}

const fn field(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
        changed_by: None,
    }
}

const fn required(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
        changed_by: None,
    }
}

const fn create_only(name: &'static str, kind: Kind, changed_by: &'static str) -> Field {
    Field {
        name,
        kind,
        required: false,
        changed_by: Some(changed_by),
    }
}

const ORGANIZATION: [Field; 7] = [
    required("name", Kind::Text(NAME_MAX)),
    field("industry", Kind::Text(INDUSTRY_MAX)),
    field("size", Kind::OneOf(&ORGANIZATION_SIZES)),
    field("location", Kind::Text(LOCATION_MAX)),
    field("website", Kind::Website),
    field("parent_id", Kind::Uuid),
    field("custom_fields", Kind::Object),
];

const CONTACT: [Field; 8] = [
    required("first_name", Kind::Text(PERSON_NAME_MAX)),
    field("last_name", Kind::Text(PERSON_NAME_MAX)),
    field("email", Kind::Email),
    field("phone", Kind::Phone),
    field("title", Kind::Text(TITLE_MAX)),
    field("organization_id", Kind::Uuid),
    create_only("assigned_to", Kind::Uuid, "change it with assign_contact"),
    field("custom_fields", Kind::Object),
];

const DEAL: [Field; 11] = [
    required("name", Kind::Text(NAME_MAX)),
    field("amount", Kind::Amount),
    field("currency", Kind::Currency),
    create_only(
        "stage",
        Kind::StageKey,
        "change it with move_deal (or reopen_deal)",
    ),
    field("probability", Kind::Probability),
    field("expected_close_date", Kind::Date),
    field("contact_id", Kind::Uuid),
    field("organization_id", Kind::Uuid),
    create_only("assigned_to", Kind::Uuid, "change it with assign_deal"),
    field("notes", Kind::LongText(NOTES_MAX)),
    field("custom_fields", Kind::Object),
];

const ACTIVITY: [Field; 5] = [
    required("type", Kind::OneOf(&ACTIVITY_TYPES)),
    required("description", Kind::LongText(DESCRIPTION_MAX)),
    field("occurred_at", Kind::Timestamp),
    required("contact_id", Kind::Uuid),
    field("deal_id", Kind::Uuid),
];

/// Check and normalise `values` (a JSON object) for `entity`. Errors are CrmError::InvalidInput
/// naming the field (e.g. field "email", message "must be an email address").
///
/// The result holds exactly the keys given, normalised; a key holding JSON null is to be
/// cleared. On create, required fields that are absent are refused.
pub fn validate(
    entity: Entity,
    mode: Mode,
    values: &Value,
) -> Result<Map<String, Value>, CrmError> {
    let given = values
        .as_object()
        .ok_or_else(|| CrmError::invalid("changes", "must be a JSON object"))?;
    if mode == Mode::Update && given.is_empty() {
        return Err(CrmError::invalid(
            "changes",
            "name at least one field to change",
        ));
    }
    let fields = entity.fields();
    let mut out = Map::new();
    for (key, value) in given {
        if entity == Entity::Activity && mode == Mode::Update {
            return Err(CrmError::invalid(
                key.clone(),
                "activities cannot be changed once logged",
            ));
        }
        if STAMPS.contains(&key.as_str()) {
            return Err(CrmError::invalid(key.clone(), "is set by the database"));
        }
        let field = fields.iter().find(|f| f.name == key).ok_or_else(|| {
            CrmError::invalid(
                key.clone(),
                format!("is not a field of {}", entity.with_article()),
            )
        })?;
        if let (Mode::Update, Some(how)) = (mode, field.changed_by) {
            return Err(CrmError::invalid(field.name, how));
        }
        let checked = check(field, value).map_err(|m| CrmError::invalid(field.name, m))?;
        out.insert(key.clone(), checked);
    }
    if mode == Mode::Create {
        if let Some(missing) = fields
            .iter()
            .find(|f| f.required && !given.contains_key(f.name))
        {
            return Err(CrmError::invalid(missing.name, "is required"));
        }
    }
    Ok(out)
}

/// What an import row gives (see [`crate::domain::import`]): each value checked as
/// [`validate`] checks it, but whether the row creates a record or updates one is decided
/// later, by the database (it depends on what exists). So nothing is refused for being
/// create-only, and the required fields that are absent are returned instead of refused.
pub fn validate_import(
    entity: Entity,
    given: &Map<String, Value>,
) -> Result<(Map<String, Value>, Vec<&'static str>), CrmError> {
    let fields = entity.fields();
    let mut out = Map::new();
    for (key, value) in given {
        let field = fields
            .iter()
            .find(|f| f.name == key && !STAMPS.contains(&f.name))
            .ok_or_else(|| {
                CrmError::invalid(
                    key.clone(),
                    format!("is not a field of {}", entity.with_article()),
                )
            })?;
        let checked = check(field, value).map_err(|m| CrmError::invalid(field.name, m))?;
        if !checked.is_null() {
            out.insert(key.clone(), checked);
        }
    }
    let missing = fields
        .iter()
        .filter(|f| f.required && !out.contains_key(f.name))
        .map(|f| f.name)
        .collect();
    Ok((out, missing))
}

/// Whether `name` is a field of `entity` a caller may give (not one of the stamps).
pub fn is_field(entity: Entity, name: &str) -> bool {
    entity.fields().iter().any(|f| f.name == name)
}

/// One field's value, normalised; JSON null to clear it.
fn check(field: &Field, value: &Value) -> Result<Value, String> {
    let empty = || {
        if field.required {
            Err("must not be empty".to_owned())
        } else {
            Ok(Value::Null)
        }
    };
    match field.kind {
        // Emptied with `{}`, never cleared: a record always has its (possibly empty) object.
        Kind::Object => {
            return if value.is_object() {
                Ok(value.clone())
            } else {
                Err("must be a JSON object".to_owned())
            };
        }
        _ if value.is_null() => {
            return if field.required {
                Err("is required".to_owned())
            } else {
                Ok(Value::Null)
            };
        }
        Kind::Amount => {
            return match amount(value)? {
                Some(n) => Ok(Value::Number(n)),
                None => empty(),
            };
        }
        Kind::Probability => {
            return match probability(value)? {
                Some(p) => Ok(Value::from(p)),
                None => empty(),
            };
        }
        _ => {}
    }
    let s = string(value, matches!(field.kind, Kind::LongText(_)))?;
    if s.is_empty() {
        return empty();
    }
    let normalised = match field.kind {
        Kind::Text(max) | Kind::LongText(max) => at_most(s, max)?,
        Kind::OneOf(choices) => one_of(s, choices)?,
        Kind::Email => {
            let s = at_most(s, EMAIL_MAX)?;
            if !is_email(&s) {
                return Err("must be an email address".to_owned());
            }
            s
        }
        Kind::Phone => {
            let s = at_most(s, PHONE_MAX)?;
            if !is_phone(&s) {
                return Err("must be a phone number".to_owned());
            }
            s
        }
        Kind::Website => web_url::http_url(field.name, &s).map_err(message)?,
        Kind::Uuid => uuid(&s)?,
        Kind::Currency => {
            let code = s.to_ascii_uppercase();
            if !currency::is_known(&code) {
                return Err("must be an ISO 4217 currency code such as USD or EUR".to_owned());
            }
            code
        }
        Kind::StageKey => {
            if !is_key(&s) {
                return Err("must be a stage key such as prospect".to_owned());
            }
            s
        }
        Kind::Date => {
            date(&s)?;
            s
        }
        Kind::Timestamp => {
            if !is_timestamp(&s) {
                return Err(NOT_A_TIMESTAMP.to_owned());
            }
            s
        }
        Kind::Object | Kind::Amount | Kind::Probability => unreachable!("handled above"),
    };
    Ok(Value::String(normalised))
}

/// The message of an error whose field the caller names itself.
fn message(e: CrmError) -> String {
    match e {
        CrmError::InvalidInput { message, .. } => message,
        other => other.to_string(),
    }
}

/// A JSON string, trimmed, without control characters (but for newlines and tabs in
/// `multiline` text).
fn string(value: &Value, multiline: bool) -> Result<String, String> {
    clean(value.as_str().ok_or("must be a string")?, multiline)
}

fn clean(s: &str, multiline: bool) -> Result<String, String> {
    let s = s.trim();
    if s.chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\t')))
    {
        return Err("must not contain control characters".to_owned());
    }
    Ok(s.to_owned())
}

fn at_most(s: String, max: usize) -> Result<String, String> {
    if s.chars().count() > max {
        Err(format!("must be at most {max} characters"))
    } else {
        Ok(s)
    }
}

fn one_of<S: AsRef<str>>(s: String, choices: &[S]) -> Result<String, String> {
    if choices.iter().any(|c| c.as_ref() == s) {
        Ok(s)
    } else {
        let list: Vec<&str> = choices.iter().map(|c| c.as_ref()).collect();
        Err(format!("must be one of {}", list.join(", ")))
    }
}

/// One @, something before it, a dotted domain after it, no whitespace: what mail systems
/// accept, without pretending to parse RFC 5322.
fn is_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !s.chars().any(char::is_whitespace)
                && !domain.contains('@')
                && domain.split('.').count() >= 2
                && domain.split('.').all(|label| !label.is_empty())
        }
        None => false,
    }
}

/// A number as people write them, `+44 20 7946 0958`, `(555) 010-0200 x12`: digits and the
/// usual separators, at least [`PHONE_DIGITS_MIN`] digits, and an optional extension at the
/// end (`x12`, `ext 12`, `ext. 12`).
fn is_phone(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let (number, extension) = match lower.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&lower[..i], Some(&lower[i..])),
        None => (lower.as_str(), None),
    };
    let extension_ok = extension.is_none_or(|ext| {
        let digits = ext
            .strip_prefix("ext")
            .or_else(|| ext.strip_prefix('x'))
            .map(|rest| rest.strip_prefix('.').unwrap_or(rest).trim_start());
        digits.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
    });
    extension_ok
        && number
            .chars()
            .all(|c| c.is_ascii_digit() || " +-()./".contains(c))
        && number.bytes().filter(u8::is_ascii_digit).count() >= PHONE_DIGITS_MIN
}

/// 8-4-4-4-12 hex digits, returned lowercase (PostgreSQL's own output form).
fn uuid(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(s.to_ascii_lowercase())
    } else {
        Err("must be a uuid".to_owned())
    }
}

fn is_key(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= KEY_MAX
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_')
}

/// All ASCII digits, at least one.
fn digits(s: &str) -> Option<u32> {
    if !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// A calendar date that exists, `YYYY-MM-DD`, in years [`YEAR_MIN`]–[`YEAR_MAX`].
fn date(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let parts = (b.len() == 10 && b[4] == b'-' && b[7] == b'-')
        .then(|| (digits(&s[..4]), digits(&s[5..7]), digits(&s[8..])));
    let Some((Some(year), Some(month), Some(day))) = parts else {
        return Err(NOT_A_DATE.to_owned());
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    if (YEAR_MIN..=YEAR_MAX).contains(&year) && (1..=days).contains(&day) {
        Ok(())
    } else {
        Err(NOT_A_DATE.to_owned())
    }
}

/// RFC 3339 with an offset (`2026-11-24T10:00:00Z`, `2026-11-24T10:00:00.250+01:00`), or
/// PostgreSQL's own output form (`2026-11-24 10:00:00+00`). A time without an offset is
/// refused: the database would read it in its session time zone, not the caller's.
/// Whether a text is a timestamp as the fields take it (ISO 8601 with a zone).
pub fn is_timestamp_text(s: &str) -> bool {
    is_timestamp(s)
}

fn is_timestamp(s: &str) -> bool {
    let (Some(day), Some(rest)) = (s.get(..10), s.get(10..)) else {
        return false;
    };
    let mut rest = rest.chars();
    if date(day).is_err() || !matches!(rest.next(), Some('T' | 't' | ' ')) {
        return false;
    }
    let rest = rest.as_str();
    let Some(time) = rest.get(..8) else {
        return false;
    };
    let t = time.as_bytes();
    let clock_ok = t[2] == b':'
        && t[5] == b':'
        && digits(&time[..2]).is_some_and(|h| h <= 23)
        && digits(&time[3..5]).is_some_and(|m| m <= 59)
        && digits(&time[6..]).is_some_and(|sec| sec <= 59);
    let mut offset = &rest[8..];
    if let Some(fraction) = offset.strip_prefix('.') {
        let n = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=9).contains(&n) {
            return false;
        }
        offset = &fraction[n..];
    }
    let offset_ok = match offset {
        "Z" | "z" => true,
        _ => match offset.strip_prefix(['+', '-']) {
            Some(hm) if hm.len() == 2 => digits(hm).is_some_and(|h| h <= 15),
            Some(hm) if hm.len() == 5 && hm.as_bytes()[2] == b':' => {
                digits(&hm[..2]).is_some_and(|h| h <= 15)
                    && digits(&hm[3..]).is_some_and(|m| m <= 59)
            }
            _ => false,
        },
    };
    clock_ok && offset_ok
}

/// A plain decimal, split into its digits: `-0012.50` reads as negative, "12", "5".
#[derive(Debug, PartialEq)]
struct Decimal {
    negative: bool,
    /// Without leading zeros; empty for zero.
    integer: String,
    /// Without trailing zeros.
    fraction: String,
}

impl Decimal {
    /// `[-]digits[.digits]`, and with `exponent` also `e[+-]digits` (how serde_json writes
    /// large and small floats).
    fn parse(s: &str, exponent: bool) -> Option<Decimal> {
        let (negative, s) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (mantissa, exp) = match s.find(['e', 'E']) {
            Some(i) if exponent => {
                let e = &s[i + 1..];
                let e_digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if e_digits.is_empty() || e_digits.len() > 3 {
                    return None;
                }
                (&s[..i], e.parse::<i64>().ok()?)
            }
            Some(_) => return None,
            None => (s, 0),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        if mantissa.contains('.') && frac.is_empty() {
            return None;
        }
        let digits = format!("{int}{frac}");
        let point = int.len() as i64 + exp;
        let (integer, fraction) = if point <= 0 {
            (String::new(), "0".repeat((-point) as usize) + &digits)
        } else if point as usize >= digits.len() {
            (
                digits.clone() + &"0".repeat(point as usize - digits.len()),
                String::new(),
            )
        } else {
            let (i, f) = digits.split_at(point as usize);
            (i.to_owned(), f.to_owned())
        };
        Some(Decimal {
            negative,
            integer: integer.trim_start_matches('0').to_owned(),
            fraction: fraction.trim_end_matches('0').to_owned(),
        })
    }

    fn is_zero(&self) -> bool {
        self.integer.is_empty() && self.fraction.is_empty()
    }

    fn significant_digits(&self) -> usize {
        format!("{}{}", self.integer, self.fraction)
            .trim_start_matches('0')
            .len()
    }

    /// As a JSON number: an integer exactly, a fraction as the nearest float.
    fn to_number(&self) -> Option<Number> {
        let sign = if self.negative && !self.is_zero() {
            "-"
        } else {
            ""
        };
        let integer = if self.integer.is_empty() {
            "0"
        } else {
            &self.integer
        };
        if self.fraction.is_empty() {
            if let Ok(n) = format!("{sign}{integer}").parse::<i64>() {
                return Some(Number::from(n));
            }
        }
        let text = format!("{sign}{integer}.{}", self.fraction);
        Number::from_f64(text.parse::<f64>().ok()?)
    }
}

/// A deal amount; `None` for a blank string (clear it).
fn amount(value: &Value) -> Result<Option<Number>, String> {
    let parsed = match value {
        Value::Number(n) => Decimal::parse(&n.to_string(), true),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => Decimal::parse(s.trim(), false),
        _ => None,
    };
    let d = parsed.ok_or(NOT_AN_AMOUNT)?;
    if d.negative && !d.is_zero() {
        return Err("must not be negative".to_owned());
    }
    if d.fraction.len() > AMOUNT_DECIMALS {
        return Err(format!(
            "must have at most {AMOUNT_DECIMALS} decimal places"
        ));
    }
    if d.integer.len() > AMOUNT_INTEGER_DIGITS {
        return Err(format!(
            "must be less than 1{}",
            "0".repeat(AMOUNT_INTEGER_DIGITS)
        ));
    }
    if !d.fraction.is_empty() && d.significant_digits() > AMOUNT_SIGNIFICANT_DIGITS {
        return Err(format!(
            "must have at most {AMOUNT_SIGNIFICANT_DIGITS} significant digits"
        ));
    }
    d.to_number()
        .map(Some)
        .ok_or_else(|| NOT_AN_AMOUNT.to_owned())
}

/// A probability in percent; `None` for a blank string (clear it).
fn probability(value: &Value) -> Result<Option<i64>, String> {
    let p = match value {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    match p {
        Some(p) if (0..=PROBABILITY_MAX).contains(&p) => Ok(Some(p)),
        _ => Err(NOT_A_PROBABILITY.to_owned()),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    Text,
    Number,
    Date,
    Boolean,
    Select,
    Url,
}

const FIELD_TYPES: [(&str, FieldType); 6] = [
    ("text", FieldType::Text),
    ("number", FieldType::Number),
    ("date", FieldType::Date),
    ("boolean", FieldType::Boolean),
    ("select", FieldType::Select),
    ("url", FieldType::Url),
];

impl FieldType {
    pub fn parse(s: &str) -> Option<FieldType> {
        FIELD_TYPES.iter().find(|(n, _)| *n == s).map(|(_, t)| *t)
    }

    pub fn as_str(self) -> &'static str {
        FIELD_TYPES
            .iter()
            .find(|(_, t)| *t == self)
            .map(|(n, _)| *n)
            .expect("every type is listed")
    }
}

/// A tenant's custom field on one kind of record.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    pub key: String,
    pub label: String,
    pub field_type: FieldType,
    pub required: bool,
    /// The choices of a select field, in display order; empty for the other types.
    pub options: Vec<String>,
}

/// Check a new definition (what define_custom_field receives). key: ^[a-z][a-z0-9_]{0,39}$ (field "key");
/// label 1–100 chars, trimmed (field "label"); type one of text, number, date, boolean, select, url (field "type");
/// options: required non-empty list of distinct non-empty trimmed strings (each ≤100, at most 100 of them) for select,
/// and must be empty/absent for other types (field "options"). Returns the normalised Definition.
pub fn definition(
    key: &str,
    label: &str,
    field_type: &str,
    required: bool,
    options: &[String],
) -> Result<Definition, CrmError> {
    let key = key.trim();
    if !is_key(key) {
        return Err(CrmError::invalid("key", NOT_A_KEY));
    }
    let label = clean(label, false)
        .and_then(|l| {
            if l.is_empty() {
                Err("must not be empty".to_owned())
            } else {
                at_most(l, LABEL_MAX)
            }
        })
        .map_err(|m| CrmError::invalid("label", m))?;
    let field_type = FieldType::parse(field_type.trim()).ok_or_else(|| {
        let names: Vec<&str> = FIELD_TYPES.iter().map(|(n, _)| *n).collect();
        CrmError::invalid("type", format!("must be one of {}", names.join(", ")))
    })?;
    let options =
        select_options(field_type, options).map_err(|m| CrmError::invalid("options", m))?;
    Ok(Definition {
        key: key.to_owned(),
        label,
        field_type,
        required,
        options,
    })
}

fn select_options(field_type: FieldType, options: &[String]) -> Result<Vec<String>, String> {
    if field_type != FieldType::Select {
        return if options.is_empty() {
            Ok(Vec::new())
        } else {
            Err("only a select field has options".to_owned())
        };
    }
    if options.is_empty() {
        return Err("a select field needs at least one option".to_owned());
    }
    if options.len() > OPTIONS_MAX {
        return Err(format!("must have at most {OPTIONS_MAX} options"));
    }
    let mut out: Vec<String> = Vec::with_capacity(options.len());
    for option in options {
        let o = clean(option, false)?;
        if o.is_empty() {
            return Err("must not contain an empty option".to_owned());
        }
        if o.chars().count() > OPTION_MAX {
            return Err(format!(
                "each option must be at most {OPTION_MAX} characters"
            ));
        }
        if out.contains(&o) {
            return Err(format!("must not list {o:?} twice"));
        }
        out.push(o);
    }
    Ok(out)
}

/// Parse the definitions the database passes: a JSON array of {key, label, type, required, options}.
/// Malformed input is a bug in the caller: return Err(CrmError::invalid("custom_fields", "...")).
///
/// The definitions were checked when they were made; they are not checked again here, so a
/// rule tightened later does not make existing definitions unusable. `required` and
/// `options` may be absent or null (false, none).
pub fn definitions_from_json(v: &Value) -> Result<Vec<Definition>, CrmError> {
    let malformed = |m: String| CrmError::invalid("custom_fields", m);
    let list = v
        .as_array()
        .ok_or_else(|| malformed("the definitions must be a JSON array".to_owned()))?;
    list.iter()
        .enumerate()
        .map(|(i, d)| {
            let d = d
                .as_object()
                .ok_or_else(|| malformed(format!("definition {i} is not a JSON object")))?;
            let text = |name: &str| {
                d.get(name)
                    .and_then(Value::as_str)
                    .ok_or_else(|| malformed(format!("definition {i} has no string {name:?}")))
            };
            let key = text("key")?;
            let label = text("label")?;
            let field_type = FieldType::parse(text("type")?)
                .ok_or_else(|| malformed(format!("definition {i} ({key}) has an unknown type")))?;
            let required = match d.get("required") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => {
                    return Err(malformed(format!(
                        "definition {i} ({key}) has a non-boolean \"required\""
                    )))
                }
            };
            let options = match d.get("options") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(options)) => options
                    .iter()
                    .map(|o| o.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| {
                        malformed(format!("definition {i} ({key}) has a non-string option"))
                    })?,
                Some(_) => {
                    return Err(malformed(format!(
                        "definition {i} ({key}) has \"options\" that are not an array"
                    )))
                }
            };
            Ok(Definition {
                key: key.to_owned(),
                label: label.to_owned(),
                field_type,
                required,
                options,
            })
        })
        .collect()
}

/// Check the custom field values of a record being written. `new` is the full custom_fields
/// object as it will be stored, `old` the stored one (None on insert).
/// - `new` must be an object (field "custom_fields").
/// - Only keys whose value differs from `old` (or every key on insert) are checked: each must have a
///   definition (error field "custom_fields.<key>", message "no such custom field") and a value of its type:
///   text: string ≤ 1000 chars, no control chars except \n \t; number: JSON number (or a numeric string, stored as a number);
///   date: "YYYY-MM-DD" real date; boolean: JSON bool; select: one of the options (message lists them);
///   url: http_url (normalised). A JSON null value removes the key (unless the field is required).
/// - Keys unchanged from `old` are kept as they are even if their definition is gone (deleting a definition never breaks existing rows).
/// - Required fields: on insert each required definition must be present with a non-null value; on update a required key that is
///   present in old may not be removed or nulled ("custom_fields.<key>: is required"); a required field defined after the row
///   was written is not demanded on update.
///
/// Returns the object to store (nulls removed, values normalised). Error field names are "custom_fields.<key>".
/// A blank string counts as null, as for the built-in fields; a null for a key whose
/// definition is gone removes the old value.
pub fn custom_values(
    defs: &[Definition],
    old: Option<&Value>,
    new: &Value,
) -> Result<Map<String, Value>, CrmError> {
    let new = new
        .as_object()
        .ok_or_else(|| CrmError::invalid("custom_fields", "must be a JSON object"))?;
    let inserting = old.is_none();
    let none = Map::new();
    let old = old.and_then(Value::as_object).unwrap_or(&none);
    let name = |key: &str| -> Cow<'static, str> { format!("custom_fields.{key}").into() };
    let mut out = Map::new();
    for (key, value) in new {
        if !inserting && !value.is_null() && old.get(key) == Some(value) {
            out.insert(key.clone(), value.clone());
            continue;
        }
        let checked = match defs.iter().find(|d| d.key == *key) {
            Some(def) => custom_value(def, value).map_err(|m| CrmError::invalid(name(key), m))?,
            None if value.is_null() && old.contains_key(key) => Value::Null,
            None => return Err(CrmError::invalid(name(key), "no such custom field")),
        };
        if !checked.is_null() {
            out.insert(key.clone(), checked);
        }
    }
    for def in defs.iter().filter(|d| d.required) {
        let demanded = inserting || old.get(&def.key).is_some_and(|v| !v.is_null());
        if demanded && !out.contains_key(&def.key) {
            return Err(CrmError::invalid(name(&def.key), "is required"));
        }
    }
    Ok(out)
}

/// One custom value, normalised; JSON null to remove it.
fn custom_value(def: &Definition, value: &Value) -> Result<Value, String> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    match def.field_type {
        FieldType::Boolean => {
            return if value.is_boolean() {
                Ok(value.clone())
            } else {
                Err("must be true or false".to_owned())
            };
        }
        FieldType::Number => {
            return match value {
                Value::Number(_) => Ok(value.clone()),
                Value::String(s) if s.trim().is_empty() => Ok(Value::Null),
                Value::String(s) => Decimal::parse(s.trim(), false)
                    .and_then(|d| d.to_number())
                    .map(Value::Number)
                    .ok_or_else(|| "must be a number".to_owned()),
                _ => Err("must be a number".to_owned()),
            };
        }
        _ => {}
    }
    let s = string(value, def.field_type == FieldType::Text)?;
    if s.is_empty() {
        return Ok(Value::Null);
    }
    let normalised = match def.field_type {
        FieldType::Text => at_most(s, CUSTOM_TEXT_MAX)?,
        FieldType::Date => {
            date(&s)?;
            s
        }
        FieldType::Select => one_of(s, &def.options)?,
        FieldType::Url => web_url::http_url("url", &s).map_err(message)?,
        FieldType::Boolean | FieldType::Number => unreachable!("handled above"),
    };
    Ok(Value::String(normalised))
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    /// The field and message of an InvalidInput error.
    fn refused<T: std::fmt::Debug>(r: Result<T, CrmError>) -> (String, String) {
        match r {
            Err(CrmError::InvalidInput { field, message }) => (field.into_owned(), message),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn create(entity: Entity, values: Value) -> Result<Map<String, Value>, CrmError> {
        validate(entity, Mode::Create, &values)
    }

    fn update(entity: Entity, values: Value) -> Result<Map<String, Value>, CrmError> {
        validate(entity, Mode::Update, &values)
    }

    /// The message for a single deal field set on update.
    fn deal_field(key: &str, value: Value) -> Result<Value, String> {
        match update(Entity::Deal, json!({ key: value })) {
            Ok(mut out) => Ok(out.remove(key).expect("the key comes back")),
            Err(e) => {
                let (field, message) = refused::<()>(Err(e));
                assert_eq!(field, key);
                Err(message)
            }
        }
    }

    fn select(key: &str, options: &[&str], required: bool) -> Definition {
        let options: Vec<String> = options.iter().map(|o| o.to_string()).collect();
        definition(key, "Tier", "select", required, &options).unwrap()
    }

    fn text(key: &str, required: bool) -> Definition {
        definition(key, key, "text", required, &[]).unwrap()
    }

    #[test]
    fn entity_names_round_trip() {
        for e in [
            Entity::Organization,
            Entity::Contact,
            Entity::Deal,
            Entity::Activity,
        ] {
            assert_eq!(Entity::parse(e.as_str()), Some(e));
        }
        assert_eq!(Entity::parse("Contact"), None);
        assert_eq!(Entity::parse("contacts"), None);
    }

    #[test]
    fn a_new_contact_comes_back_trimmed_and_normalised() {
        let out = create(
            Entity::Contact,
            json!({
                "first_name": "  Ana María ",
                "last_name": "Ruiz Ortega",
                "email": " Ana.Ruiz@Example.COM ",
                "phone": "+1 (555) 010-0200 ext. 12",
                "title": "",
                "organization_id": "6F9619FF-8B86-D011-B42D-00C04FC964FF",
                "custom_fields": {"tier": "Gold"},
            }),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({
                "first_name": "Ana María",
                "last_name": "Ruiz Ortega",
                "email": "Ana.Ruiz@Example.COM",
                "phone": "+1 (555) 010-0200 ext. 12",
                "title": null,
                "organization_id": "6f9619ff-8b86-d011-b42d-00c04fc964ff",
                "custom_fields": {"tier": "Gold"},
            })
        );
    }

    #[test]
    fn required_fields_on_create() {
        assert_eq!(
            refused(create(Entity::Contact, json!({"last_name": "Ruiz"}))),
            ("first_name".into(), "is required".into())
        );
        assert_eq!(
            refused(create(Entity::Contact, json!({"first_name": null}))),
            ("first_name".into(), "is required".into())
        );
        assert_eq!(
            refused(create(Entity::Organization, json!({"name": "   "}))),
            ("name".into(), "must not be empty".into())
        );
        assert_eq!(
            refused(create(
                Entity::Activity,
                json!({"type": "call", "description": "Intro call"})
            )),
            ("contact_id".into(), "is required".into())
        );
        assert!(create(Entity::Organization, json!({"name": "Acme GmbH"})).is_ok());
    }

    #[test]
    fn an_update_checks_only_what_it_names_and_clears_with_null_or_blank() {
        let out = update(
            Entity::Contact,
            json!({"title": null, "last_name": "  ", "phone": "+44 20 7946 0958"}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"title": null, "last_name": null, "phone": "+44 20 7946 0958"})
        );
        assert_eq!(
            refused(update(Entity::Contact, json!({"first_name": null}))),
            ("first_name".into(), "is required".into())
        );
        assert_eq!(
            refused(update(Entity::Deal, json!({"name": ""}))),
            ("name".into(), "must not be empty".into())
        );
    }

    #[test]
    fn changes_are_a_non_empty_object() {
        for values in [json!(["name"]), json!("name"), json!(null)] {
            assert_eq!(
                refused(update(Entity::Deal, values.clone())),
                ("changes".into(), "must be a JSON object".into())
            );
            assert_eq!(
                refused(create(Entity::Deal, values)).0,
                "changes".to_owned()
            );
        }
        assert_eq!(
            refused(update(Entity::Organization, json!({}))),
            ("changes".into(), "name at least one field to change".into())
        );
        assert_eq!(
            refused(create(Entity::Organization, json!({}))),
            ("name".into(), "is required".into())
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        let err = create(
            Entity::Contact,
            json!({"first_name": "Ana", "colour": "blue"}),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid colour: is not a field of a contact"
        );
        assert_eq!(
            refused(update(Entity::Organization, json!({"first_name": "Ana"}))),
            (
                "first_name".into(),
                "is not a field of an organization".into()
            )
        );
        assert_eq!(
            refused(update(Entity::Deal, json!({"Amount": 10}))),
            ("Amount".into(), "is not a field of a deal".into())
        );
    }

    #[test]
    fn stamp_columns_are_the_databases() {
        for (entity, key) in [
            (Entity::Contact, "tenant_id"),
            (Entity::Deal, "id"),
            (Entity::Organization, "created_at"),
            (Entity::Activity, "created_by"),
            (Entity::Deal, "deleted_at"),
        ] {
            assert_eq!(
                refused(create(entity, json!({ key: "x" }))),
                (key.into(), "is set by the database".into())
            );
        }
        assert_eq!(
            refused(update(Entity::Deal, json!({"updated_by": null}))),
            ("updated_by".into(), "is set by the database".into())
        );
    }

    #[test]
    fn owners_and_stages_change_through_their_own_functions() {
        let owner = "0b7c5a6e-2f4d-4c1a-9e3b-5d8f7a6b4c2e";
        assert_eq!(
            refused(update(Entity::Contact, json!({"assigned_to": owner}))),
            ("assigned_to".into(), "change it with assign_contact".into())
        );
        assert_eq!(
            deal_field("assigned_to", json!(owner)),
            Err("change it with assign_deal".into())
        );
        assert_eq!(
            deal_field("stage", json!("won")),
            Err("change it with move_deal (or reopen_deal)".into())
        );
        let out = create(
            Entity::Deal,
            json!({"name": "Acme renewal 2027", "stage": "proposal", "assigned_to": owner}),
        )
        .unwrap();
        assert_eq!(out["stage"], json!("proposal"));
        assert_eq!(out["assigned_to"], json!(owner));
    }

    #[test]
    fn activities_are_immutable() {
        for key in ["description", "type", "colour", "id"] {
            assert_eq!(
                refused(update(Entity::Activity, json!({ key: "x" }))),
                (
                    key.into(),
                    "activities cannot be changed once logged".into()
                )
            );
        }
    }

    #[test]
    fn a_new_activity() {
        let contact = "3f2b8c1d-9a4e-4f6b-8c2d-1e0a9b8c7d6e";
        let out = create(
            Entity::Activity,
            json!({
                "type": "meeting",
                "description": " Demo with Ana.\n\tAgreed on a pilot. ",
                "occurred_at": "2026-11-24T10:00:00+01:00",
                "contact_id": contact,
            }),
        )
        .unwrap();
        assert_eq!(
            out["description"],
            json!("Demo with Ana.\n\tAgreed on a pilot.")
        );
        assert_eq!(out["occurred_at"], json!("2026-11-24T10:00:00+01:00"));
        assert_eq!(
            refused(create(
                Entity::Activity,
                json!({"type": "lunch", "description": "x", "contact_id": contact})
            )),
            (
                "type".into(),
                "must be one of call, email, meeting, note".into()
            )
        );
    }

    #[test]
    fn strings_are_strings_without_control_characters() {
        assert_eq!(
            refused(create(Entity::Contact, json!({"first_name": 42}))),
            ("first_name".into(), "must be a string".into())
        );
        assert_eq!(
            deal_field("notes", json!(true)),
            Err("must be a string".into())
        );
        assert_eq!(
            deal_field("name", json!("Acme\u{0} renewal")),
            Err("must not contain control characters".into())
        );
        assert_eq!(
            deal_field("name", json!("Acme\nrenewal")),
            Err("must not contain control characters".into())
        );
        assert_eq!(
            deal_field("notes", json!("Call back\r\nin May")),
            Err("must not contain control characters".into())
        );
        assert_eq!(
            deal_field(
                "notes",
                json!("Budget:\n\t- 40k licences\n\t- 10k services")
            ),
            Ok(json!("Budget:\n\t- 40k licences\n\t- 10k services"))
        );
    }

    #[test]
    fn lengths_count_characters() {
        let at_limit = "é".repeat(PERSON_NAME_MAX);
        assert!(create(Entity::Contact, json!({ "first_name": at_limit })).is_ok());
        assert_eq!(
            refused(create(
                Entity::Contact,
                json!({ "first_name": "é".repeat(PERSON_NAME_MAX + 1) })
            )),
            ("first_name".into(), "must be at most 100 characters".into())
        );
        assert_eq!(
            deal_field("notes", json!("n".repeat(NOTES_MAX + 1))),
            Err("must be at most 10000 characters".into())
        );
    }

    #[test]
    fn emails() {
        for ok in [
            "ana@example.com",
            "Ana.Ruiz+crm@mail.example.co.uk",
            "o'brien@example.ie",
        ] {
            let out = update(Entity::Contact, json!({ "email": ok })).unwrap();
            assert_eq!(out["email"], json!(ok));
        }
        for bad in [
            "ana",
            "ana@",
            "@example.com",
            "ana@example",
            "ana@@example.com",
            "ana@ex@ample.com",
            "ana maria@example.com",
            "ana@example..com",
            "ana@.example.com",
            "ana@example.com.",
        ] {
            assert_eq!(
                refused(update(Entity::Contact, json!({ "email": bad }))),
                ("email".into(), "must be an email address".into()),
                "{bad}"
            );
        }
        let long = format!("{}@example.com", "a".repeat(EMAIL_MAX));
        assert_eq!(
            refused(update(Entity::Contact, json!({ "email": long }))).1,
            "must be at most 254 characters"
        );
    }

    #[test]
    fn phones() {
        for ok in [
            "+1 (555) 010-0200 ext. 12",
            "+44 20 7946 0958",
            "030/123 456",
            "555.010.0200 x123",
            "(555) 010-0200 ext 7",
            "0200",
        ] {
            assert!(
                update(Entity::Contact, json!({ "phone": ok })).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "call me",
            "123",
            "+1 555 CALL-NOW",
            "555-0100 ext.",
            "555-0100 x12 x13",
            "555-0100 ext 12a",
            "+1 555 010 0200 #12",
            "５５５-０１００",
        ] {
            assert_eq!(
                refused(update(Entity::Contact, json!({ "phone": bad }))),
                ("phone".into(), "must be a phone number".into()),
                "{bad}"
            );
        }
        assert_eq!(
            refused(update(
                Entity::Contact,
                json!({ "phone": "1".repeat(PHONE_MAX + 1) })
            ))
            .1,
            "must be at most 40 characters"
        );
    }

    #[test]
    fn organizations_websites_and_sizes() {
        let out = create(
            Entity::Organization,
            json!({"name": "Acme GmbH", "website": " HTTPS://Acme.Example ", "size": "51-200"}),
        )
        .unwrap();
        assert_eq!(out["website"], json!("https://acme.example/"));
        assert_eq!(out["size"], json!("51-200"));
        assert_eq!(
            refused(update(
                Entity::Organization,
                json!({"website": "javascript:alert(1)"})
            ))
            .0,
            "website"
        );
        assert_eq!(
            refused(update(Entity::Organization, json!({"size": "50-200"}))),
            (
                "size".into(),
                "must be one of 1-10, 11-50, 51-200, 201-500, 501-1000, 1001-5000, 5001+".into()
            )
        );
        assert_eq!(
            refused(update(
                Entity::Organization,
                json!({"custom_fields": ["tier"]})
            )),
            ("custom_fields".into(), "must be a JSON object".into())
        );
        assert_eq!(
            refused(update(Entity::Organization, json!({"custom_fields": null}))),
            ("custom_fields".into(), "must be a JSON object".into())
        );
    }

    #[test]
    fn uuids() {
        assert_eq!(
            deal_field(
                "contact_id",
                json!(" 3F2B8C1D-9A4E-4F6B-8C2D-1E0A9B8C7D6E ")
            ),
            Ok(json!("3f2b8c1d-9a4e-4f6b-8c2d-1e0a9b8c7d6e"))
        );
        assert_eq!(deal_field("contact_id", json!("")), Ok(Value::Null));
        for bad in [
            "3f2b8c1d9a4e4f6b8c2d1e0a9b8c7d6e",
            "{3f2b8c1d-9a4e-4f6b-8c2d-1e0a9b8c7d6e}",
            "3f2b8c1d-9a4e-4f6b-8c2d-1e0a9b8c7d6",
            "3f2b8c1d-9a4e-4f6b-8c2d-1e0a9b8c7d6g",
            "3f2b8c1d-9a4e4-f6b-8c2d-1e0a9b8c7d6e",
        ] {
            assert_eq!(
                deal_field("organization_id", json!(bad)),
                Err("must be a uuid".into()),
                "{bad}"
            );
        }
        assert_eq!(
            deal_field("organization_id", json!(42)),
            Err("must be a string".into())
        );
    }

    #[test]
    fn amounts() {
        assert_eq!(deal_field("amount", json!("1200.5")), Ok(json!(1200.5)));
        assert_eq!(deal_field("amount", json!(" 1200.50 ")), Ok(json!(1200.5)));
        assert_eq!(deal_field("amount", json!(1200.5)), Ok(json!(1200.5)));
        assert_eq!(deal_field("amount", json!(48000)), Ok(json!(48000)));
        assert_eq!(deal_field("amount", json!("0")), Ok(json!(0)));
        assert_eq!(deal_field("amount", json!("-0.00")), Ok(json!(0)));
        assert_eq!(deal_field("amount", json!(1e3)), Ok(json!(1000)));
        assert_eq!(deal_field("amount", json!("")), Ok(Value::Null));
        assert_eq!(
            deal_field("amount", json!("999999999999999")),
            Ok(json!(999_999_999_999_999_i64))
        );
        assert_eq!(
            deal_field("amount", json!("9999999999999.99")),
            Ok(json!(9_999_999_999_999.99))
        );
        assert_eq!(
            deal_field("amount", json!(-1)),
            Err("must not be negative".into())
        );
        assert_eq!(
            deal_field("amount", json!("-0.01")),
            Err("must not be negative".into())
        );
        for too_precise in [json!(1.234), json!("1.234"), json!(0.1 + 0.2)] {
            assert_eq!(
                deal_field("amount", too_precise),
                Err("must have at most 2 decimal places".into())
            );
        }
        for too_big in [json!("1000000000000000"), json!(1e15), json!(1e300)] {
            assert_eq!(
                deal_field("amount", too_big),
                Err("must be less than 1000000000000000".into())
            );
        }
        assert_eq!(
            deal_field("amount", json!("99999999999999.99")),
            Err("must have at most 15 significant digits".into())
        );
        for bad in [
            json!("1,200.50"),
            json!("1e3"),
            json!("$1200"),
            json!("12."),
            json!(".5"),
            json!(true),
            json!([1200]),
        ] {
            assert_eq!(
                deal_field("amount", bad.clone()),
                Err(NOT_AN_AMOUNT.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn currencies_are_iso_4217_uppercased() {
        assert_eq!(deal_field("currency", json!(" eur ")), Ok(json!("EUR")));
        assert_eq!(deal_field("currency", json!("")), Ok(Value::Null));
        for bad in ["XXX", "EURO", "€", "ABC"] {
            assert_eq!(
                deal_field("currency", json!(bad)),
                Err("must be an ISO 4217 currency code such as USD or EUR".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn probabilities() {
        assert_eq!(deal_field("probability", json!(0)), Ok(json!(0)));
        assert_eq!(deal_field("probability", json!(100)), Ok(json!(100)));
        assert_eq!(deal_field("probability", json!(" 75 ")), Ok(json!(75)));
        assert_eq!(deal_field("probability", json!(40.0)), Ok(json!(40)));
        assert_eq!(deal_field("probability", json!(null)), Ok(Value::Null));
        for bad in [
            json!(101),
            json!(-1),
            json!(50.5),
            json!("ten"),
            json!("50%"),
            json!(false),
        ] {
            assert_eq!(
                deal_field("probability", bad.clone()),
                Err(NOT_A_PROBABILITY.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn dates_are_real_calendar_dates() {
        for ok in [
            "2026-12-31",
            "2028-02-29",
            "2000-02-29",
            "1900-01-01",
            "9999-12-31",
        ] {
            assert_eq!(
                deal_field("expected_close_date", json!(ok)),
                Ok(json!(ok)),
                "{ok}"
            );
        }
        for bad in [
            "2026-02-29",
            "1900-02-29",
            "2026-04-31",
            "2026-13-01",
            "2026-00-10",
            "2026-01-00",
            "2026-1-5",
            "1899-12-31",
            "31.12.2026",
            "2026-12-31T00:00:00Z",
            "+2026-12-31",
        ] {
            assert_eq!(
                deal_field("expected_close_date", json!(bad)),
                Err(NOT_A_DATE.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn timestamps_carry_an_offset() {
        let contact = "3f2b8c1d-9a4e-4f6b-8c2d-1e0a9b8c7d6e";
        let logged = |at: &str| {
            create(
                Entity::Activity,
                json!({"type": "call", "description": "Follow-up", "contact_id": contact, "occurred_at": at}),
            )
        };
        for ok in [
            "2026-11-24T10:00:00Z",
            "2026-11-24T10:00:00+01:00",
            "2026-11-24t10:00:00.250z",
            "2026-11-24T23:59:59.123456-05:30",
            "2026-11-24 10:00:00+00",
        ] {
            assert_eq!(logged(ok).unwrap()["occurred_at"], json!(ok));
        }
        for bad in [
            "2026-11-24",
            "2026-11-24T10:00:00",
            "2026-11-24T10:00Z",
            "2026-11-24T24:00:00Z",
            "2026-11-24T10:60:00Z",
            "2026-02-30T10:00:00Z",
            "2026-11-24T10:00:00.Z",
            "2026-11-24T10:00:00+0100",
            "2026-11-24T10:00:00+16:00",
            "2026-11-24T10:00:00 UTC",
            "24/11/2026 10:00",
        ] {
            assert_eq!(
                refused(logged(bad)),
                ("occurred_at".into(), NOT_A_TIMESTAMP.into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn stage_keys() {
        let deal = |stage: &str| create(Entity::Deal, json!({"name": "Pilot", "stage": stage}));
        assert!(deal("negotiation").is_ok());
        assert!(deal("stage_2b").is_ok());
        for bad in [
            "Proposal",
            "2nd_call",
            "_won",
            "closed-won",
            &"s".repeat(KEY_MAX + 1),
        ] {
            assert_eq!(
                refused(deal(bad)),
                (
                    "stage".into(),
                    "must be a stage key such as prospect".into()
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn field_types_round_trip() {
        for (name, t) in FIELD_TYPES {
            assert_eq!(FieldType::parse(name), Some(t));
            assert_eq!(t.as_str(), name);
        }
        assert_eq!(FieldType::parse("Text"), None);
        assert_eq!(FieldType::parse("money"), None);
    }

    #[test]
    fn a_select_definition_is_normalised() {
        let options = [
            " Gold ".to_owned(),
            "Silver".to_owned(),
            "Bronze".to_owned(),
        ];
        assert_eq!(
            definition(" tier ", "  Customer tier ", "select", true, &options),
            Ok(Definition {
                key: "tier".into(),
                label: "Customer tier".into(),
                field_type: FieldType::Select,
                required: true,
                options: vec!["Gold".into(), "Silver".into(), "Bronze".into()],
            })
        );
        let contract =
            definition("contract_value", "Contract value", "number", false, &[]).unwrap();
        assert_eq!(contract.field_type, FieldType::Number);
        assert!(contract.options.is_empty());
    }

    #[test]
    fn definitions_are_refused_naming_the_argument() {
        let some = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for key in ["Tier", "2tier", "tier-level", "", &"k".repeat(KEY_MAX + 1)] {
            assert_eq!(
                refused(definition(key, "Tier", "text", false, &[])),
                ("key".into(), NOT_A_KEY.into()),
                "{key:?}"
            );
        }
        assert_eq!(
            refused(definition("tier", "  ", "text", false, &[])),
            ("label".into(), "must not be empty".into())
        );
        assert_eq!(
            refused(definition(
                "tier",
                &"L".repeat(LABEL_MAX + 1),
                "text",
                false,
                &[]
            )),
            ("label".into(), "must be at most 100 characters".into())
        );
        assert_eq!(
            refused(definition("tier", "Tier", "money", false, &[])),
            (
                "type".into(),
                "must be one of text, number, date, boolean, select, url".into()
            )
        );
        assert_eq!(
            refused(definition("tier", "Tier", "text", false, &some(&["Gold"]))),
            ("options".into(), "only a select field has options".into())
        );
        assert_eq!(
            refused(definition("tier", "Tier", "select", false, &[])),
            (
                "options".into(),
                "a select field needs at least one option".into()
            )
        );
        assert_eq!(
            refused(definition(
                "tier",
                "Tier",
                "select",
                false,
                &some(&["Gold", " "])
            )),
            ("options".into(), "must not contain an empty option".into())
        );
        assert_eq!(
            refused(definition(
                "tier",
                "Tier",
                "select",
                false,
                &some(&["Gold", "Gold "])
            )),
            ("options".into(), "must not list \"Gold\" twice".into())
        );
        assert_eq!(
            refused(definition(
                "tier",
                "Tier",
                "select",
                false,
                &some(&[&"o".repeat(OPTION_MAX + 1)])
            )),
            (
                "options".into(),
                "each option must be at most 100 characters".into()
            )
        );
        let many: Vec<String> = (0..=OPTIONS_MAX).map(|i| format!("Option {i}")).collect();
        assert_eq!(
            refused(definition("tier", "Tier", "select", false, &many)),
            ("options".into(), "must have at most 100 options".into())
        );
    }

    #[test]
    fn definitions_from_the_database() {
        let defs = definitions_from_json(&json!([
            {"key": "tier", "label": "Tier", "type": "select", "required": true, "options": ["Gold", "Silver"]},
            {"key": "renewal_on", "label": "Renewal", "type": "date", "required": false, "options": null},
            {"key": "vip", "label": "VIP", "type": "boolean"},
        ]))
        .unwrap();
        assert_eq!(defs.len(), 3);
        assert_eq!(defs[0], select("tier", &["Gold", "Silver"], true));
        assert_eq!(
            (defs[1].field_type, defs[1].required, defs[1].options.len()),
            (FieldType::Date, false, 0)
        );
        assert_eq!(defs[2].field_type, FieldType::Boolean);
        assert_eq!(definitions_from_json(&json!([])), Ok(Vec::new()));
        for malformed in [
            json!({"key": "tier"}),
            json!([{"label": "Tier", "type": "text"}]),
            json!([{"key": "tier", "label": "Tier", "type": "money"}]),
            json!([{"key": "tier", "label": "Tier", "type": "text", "required": "yes"}]),
            json!([{"key": "tier", "label": "Tier", "type": "select", "options": [1, 2]}]),
            json!(["tier"]),
        ] {
            assert_eq!(
                refused(definitions_from_json(&malformed)).0,
                "custom_fields",
                "{malformed}"
            );
        }
    }

    #[test]
    fn custom_values_on_insert_are_checked_and_normalised() {
        let defs = definitions_from_json(&json!([
            {"key": "tier", "label": "Tier", "type": "select", "options": ["Gold", "Silver", "Bronze"]},
            {"key": "seats", "label": "Seats", "type": "number"},
            {"key": "renewal_on", "label": "Renewal", "type": "date"},
            {"key": "vip", "label": "VIP", "type": "boolean"},
            {"key": "portal", "label": "Portal", "type": "url"},
            {"key": "remarks", "label": "Remarks", "type": "text"},
        ]))
        .unwrap();
        let out = custom_values(
            &defs,
            None,
            &json!({
                "tier": " Gold ",
                "seats": "250",
                "renewal_on": "2028-02-29",
                "vip": true,
                "portal": "HTTPS://Portal.Acme.Example",
                "remarks": "Prefers email.\nNo calls on Fridays.",
            }),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({
                "tier": "Gold",
                "seats": 250,
                "renewal_on": "2028-02-29",
                "vip": true,
                "portal": "https://portal.acme.example/",
                "remarks": "Prefers email.\nNo calls on Fridays.",
            })
        );
        let out = custom_values(
            &defs,
            None,
            &json!({"seats": 12.5, "vip": null, "remarks": " "}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"seats": 12.5}),
            "nulls and blanks are dropped"
        );

        for (values, field, message) in [
            (
                json!({"tier": "Platinum"}),
                "custom_fields.tier",
                "must be one of Gold, Silver, Bronze",
            ),
            (
                json!({"seats": "many"}),
                "custom_fields.seats",
                "must be a number",
            ),
            (
                json!({"seats": [250]}),
                "custom_fields.seats",
                "must be a number",
            ),
            (
                json!({"renewal_on": "2026-02-29"}),
                "custom_fields.renewal_on",
                NOT_A_DATE,
            ),
            (
                json!({"vip": "yes"}),
                "custom_fields.vip",
                "must be true or false",
            ),
            (
                json!({"portal": "ftp://files.acme.example"}),
                "custom_fields.portal",
                "must be an http:// or https:// URL with a host",
            ),
            (
                json!({"remarks": "a\u{7}b"}),
                "custom_fields.remarks",
                "must not contain control characters",
            ),
            (
                json!({"colour": "blue"}),
                "custom_fields.colour",
                "no such custom field",
            ),
        ] {
            assert_eq!(
                refused(custom_values(&defs, None, &values)),
                (field.into(), message.into()),
                "{values}"
            );
        }
        assert_eq!(
            refused(custom_values(
                &defs,
                None,
                &json!({"remarks": "r".repeat(CUSTOM_TEXT_MAX + 1)})
            ))
            .1,
            "must be at most 1000 characters"
        );
        assert_eq!(
            refused(custom_values(&defs, None, &json!("tier=Gold"))),
            ("custom_fields".into(), "must be a JSON object".into())
        );
    }

    #[test]
    fn a_required_custom_field_missing_on_insert() {
        let defs = [
            select("tier", &["Gold", "Silver"], true),
            text("remarks", false),
        ];
        for values in [
            json!({"remarks": "New lead"}),
            json!({"tier": null}),
            json!({"tier": ""}),
        ] {
            assert_eq!(
                refused(custom_values(&defs, None, &values)),
                ("custom_fields.tier".into(), "is required".into()),
                "{values}"
            );
        }
        assert!(custom_values(&defs, None, &json!({"tier": "Silver"})).is_ok());
    }

    #[test]
    fn deleting_a_definition_keeps_the_old_values() {
        // "region" was defined when the row was written, and has since been deleted.
        let defs = [text("remarks", false)];
        let old = json!({"region": "EMEA", "remarks": "Key account"});
        let out = custom_values(
            &defs,
            Some(&old),
            &json!({"region": "EMEA", "remarks": "Key account, renews in May"}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"region": "EMEA", "remarks": "Key account, renews in May"})
        );
        assert_eq!(
            refused(custom_values(&defs, Some(&old), &json!({"region": "APAC"}))),
            ("custom_fields.region".into(), "no such custom field".into())
        );
        let out = custom_values(
            &defs,
            Some(&old),
            &json!({"region": null, "remarks": "Key account"}),
        )
        .unwrap();
        assert_eq!(Value::Object(out), json!({"remarks": "Key account"}));
    }

    #[test]
    fn unchanged_values_are_not_checked_again() {
        // The options changed since the row was written: "Platinum" is no longer one of them.
        let defs = [
            select("tier", &["Gold", "Silver"], false),
            text("remarks", false),
        ];
        let old = json!({"tier": "Platinum"});
        let out = custom_values(
            &defs,
            Some(&old),
            &json!({"tier": "Platinum", "remarks": "ok"}),
        )
        .unwrap();
        assert_eq!(
            Value::Object(out),
            json!({"tier": "Platinum", "remarks": "ok"})
        );
        assert_eq!(
            refused(custom_values(&defs, None, &json!({"tier": "Platinum"}))).0,
            "custom_fields.tier",
            "on insert every value is checked"
        );
    }

    #[test]
    fn required_custom_fields_on_update() {
        let defs = [
            select("tier", &["Gold", "Silver"], true),
            text("remarks", true),
        ];
        // Written before "remarks" was defined (or made required): not demanded now.
        let old = json!({"tier": "Gold"});
        let out = custom_values(&defs, Some(&old), &json!({"tier": "Silver"})).unwrap();
        assert_eq!(Value::Object(out), json!({"tier": "Silver"}));
        for new in [json!({}), json!({"tier": null}), json!({"tier": "  "})] {
            assert_eq!(
                refused(custom_values(&defs, Some(&old), &new)),
                ("custom_fields.tier".into(), "is required".into()),
                "{new}"
            );
        }
    }
}
