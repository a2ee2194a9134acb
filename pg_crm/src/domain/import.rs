//! Importing contacts and organizations from CSV (journey 1.7): which column of a file feeds
//! which field, and what one row's cells make of a record.
//!
//! The edge streams the file's rows into a staging table as text; the database then checks
//! them set-based (`sql/import.sql`). What can be decided from a row alone is decided here,
//! with the same rules as every other write ([`fields`]): so a value the API would refuse is
//! refused on import too, naming the same field. What needs the database stays there: that
//! a referenced organization or member exists, duplicates, uniqueness.
//!
//! The export's own CSV files import as they are: their bookkeeping columns (`tenant_id`,
//! the stamps, `merged_into`) are left to the database, `deleted_at` brings a record that was
//! deleted in the source back deleted (so what refers to it still finds it), `id` keeps the
//! record's id (so references between the files survive), and `custom.<key>` columns hold
//! custom fields. Any other file maps its
//! columns with a mapping `{"<column>": "<field>" | null}`; an unknown column is refused, so a
//! misspelt field never silently drops a column.

use crate::domain::fields::{self, Definition, Entity, FieldType};
use crate::error::CrmError;
use serde_json::{Map, Value};

/// What can be imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Contacts,
    Organizations,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "contacts" => Some(Kind::Contacts),
            "organizations" => Some(Kind::Organizations),
            _ => None,
        }
    }

    pub fn entity(self) -> Entity {
        match self {
            Kind::Contacts => Entity::Contact,
            Kind::Organizations => Entity::Organization,
        }
    }

    fn singular(self) -> &'static str {
        match self {
            Kind::Contacts => "a contact",
            Kind::Organizations => "an organization",
        }
    }
}

/// The export's columns that the database writes itself: an import leaves them out.
const BOOKKEEPING: [&str; 11] = [
    "tenant_id",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
    "deleted_by",
    "merged_into",
    "website_domain",
    "phone_digits",
    "sort_name",
    "search_text",
];

/// The most columns a file may have.
pub const MAX_COLUMNS: usize = 200;

/// What one column of a file feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A field of the record (`first_name`, `organization_id`, …).
    Field(String),
    /// The record's id: kept for a new record, and matched against existing ones.
    Id,
    /// Non-empty: when the record was deleted in the source (it is imported deleted).
    DeletedAt,
    /// One custom field (`custom.<key>`).
    Custom(String),
    /// A JSON object of custom field values (`custom_fields`).
    CustomObject,
    /// Not imported.
    Ignored,
}

impl Target {
    /// The name a target is written as in a plan (`None` for an ignored column).
    pub fn name(&self) -> Option<String> {
        match self {
            Target::Field(f) => Some(f.clone()),
            Target::Id => Some("id".to_owned()),
            Target::DeletedAt => Some("deleted_at".to_owned()),
            Target::Custom(key) => Some(format!("custom.{key}")),
            Target::CustomObject => Some("custom_fields".to_owned()),
            Target::Ignored => None,
        }
    }

    /// Reads a plan's name back (the inverse of [`Target::name`]; anything else is ignored).
    pub fn from_name(kind: Kind, name: Option<&str>) -> Target {
        name.and_then(|n| field_target(kind, n))
            .unwrap_or(Target::Ignored)
    }
}

/// The target a field name stands for, if it is one.
fn field_target(kind: Kind, name: &str) -> Option<Target> {
    match name {
        "id" => Some(Target::Id),
        "deleted_at" => Some(Target::DeletedAt),
        "custom_fields" => Some(Target::CustomObject),
        _ => {
            if let Some(key) = name.strip_prefix("custom.") {
                return (!key.is_empty()).then(|| Target::Custom(key.to_owned()));
            }
            fields::is_field(kind.entity(), name).then(|| Target::Field(name.to_owned()))
        }
    }
}

/// The targets of a file's columns, from its header and the caller's mapping (column →
/// field name, or null to leave the column out). Refuses (22023, naming the column or the
/// mapping key): a column that is neither a field nor one of the export's bookkeeping
/// columns, a mapping key that is not a column, a mapping to something that is not a field,
/// and two columns feeding one field.
pub fn targets(
    kind: Kind,
    header: &[String],
    mapping: &Map<String, Value>,
) -> Result<Vec<Target>, CrmError> {
    if header.len() > MAX_COLUMNS {
        return Err(CrmError::invalid(
            "columns",
            format!("a file may have at most {MAX_COLUMNS} columns"),
        ));
    }
    for key in mapping.keys() {
        if !header.iter().any(|h| h.trim() == key) {
            return Err(CrmError::invalid(
                format!("mapping.{key}"),
                "is not a column of the file",
            ));
        }
    }
    let mut out: Vec<Target> = Vec::with_capacity(header.len());
    for column in header {
        let column = column.trim();
        let target = match mapping.get(column) {
            Some(Value::Null) => Target::Ignored,
            Some(Value::String(field)) => field_target(kind, field).ok_or_else(|| {
                CrmError::invalid(
                    format!("mapping.{column}"),
                    format!(
                        "{field:?} is not a field of {} (or custom.<key>)",
                        kind.singular()
                    ),
                )
            })?,
            Some(_) => {
                return Err(CrmError::invalid(
                    format!("mapping.{column}"),
                    "must be a field name or null",
                ))
            }
            None if BOOKKEEPING.contains(&column) => Target::Ignored,
            None => field_target(kind, column).ok_or_else(|| {
                let shown = if column.is_empty() { "(empty)" } else { column };
                CrmError::invalid(
                    format!("columns.{shown}"),
                    format!(
                        "is not a field of {}: map it to one, or to null to leave it out (mapping)",
                        kind.singular()
                    ),
                )
            })?,
        };
        if target != Target::Ignored && out.contains(&target) {
            return Err(CrmError::invalid(
                format!("columns.{column}"),
                format!(
                    "feeds {} like an earlier column",
                    target.name().unwrap_or_default()
                ),
            ));
        }
        out.push(target);
    }
    Ok(out)
}

/// What one row makes of a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The record's id, if the row gives one.
    pub id: Option<String>,
    /// When the record was deleted in the source: it is imported deleted.
    pub deleted_at: Option<String>,
    /// The fields the row gives, normalised; `custom_fields` holds the custom values given
    /// (checked against the definitions). Empty cells give nothing.
    pub record: Map<String, Value>,
    /// Required fields (and required custom fields) the row does not give: refused if the
    /// row creates a record, fine if it updates one.
    pub missing: Vec<String>,
}

/// One row's cells (in the header's order) as a record: the first rule it breaks is the
/// error, naming the field (`custom_fields.<key>` for a custom field).
pub fn row(
    kind: Kind,
    targets: &[Target],
    definitions: &[Definition],
    cells: &[Option<String>],
) -> Result<Row, CrmError> {
    if cells.len() != targets.len() {
        return Err(CrmError::invalid(
            "row",
            format!(
                "has {} fields where the header has {}",
                cells.len(),
                targets.len()
            ),
        ));
    }
    let mut given = Map::new();
    let mut custom = Map::new();
    let mut custom_object = Map::new();
    let mut id = None;
    let mut deleted_at = None;
    for (target, cell) in targets.iter().zip(cells) {
        let Some(cell) = cell.as_deref().map(str::trim).filter(|c| !c.is_empty()) else {
            continue;
        };
        match target {
            Target::Field(name) => {
                given.insert(name.clone(), Value::String(cell.to_owned()));
            }
            Target::Id => id = Some(uuid(cell)?),
            Target::DeletedAt => {
                if !fields::is_timestamp_text(cell) {
                    return Err(CrmError::invalid(
                        "deleted_at",
                        "must be a timestamp such as 2026-11-24T10:00:00Z",
                    ));
                }
                deleted_at = Some(cell.to_owned());
            }
            Target::Custom(key) => {
                custom.insert(key.clone(), custom_cell(definitions, key, cell));
            }
            Target::CustomObject => match serde_json::from_str::<Value>(cell) {
                Ok(Value::Object(values)) => custom_object = values,
                _ => {
                    return Err(CrmError::invalid(
                        "custom_fields",
                        "must be a JSON object of custom field values",
                    ))
                }
            },
            Target::Ignored => {}
        }
    }
    // A custom.<key> column wins over the same key in a custom_fields object.
    for (key, value) in custom_object {
        custom.entry(key).or_insert(value);
    }
    let (mut record, missing_fields) = fields::validate_import(kind.entity(), &given)?;
    // As on an update: nothing is demanded of the custom fields here (see `missing`).
    let custom = fields::custom_values(
        definitions,
        Some(&Value::Object(Map::new())),
        &Value::Object(custom),
    )?;
    let mut missing: Vec<String> = missing_fields.iter().map(|f| (*f).to_owned()).collect();
    missing.extend(
        definitions
            .iter()
            .filter(|d| d.required && !custom.contains_key(&d.key))
            .map(|d| format!("custom_fields.{}", d.key)),
    );
    record.insert("custom_fields".to_owned(), Value::Object(custom));
    Ok(Row {
        id,
        deleted_at,
        record,
        missing,
    })
}

/// The id a row gives, if it gives a valid one, whatever else is wrong with it (so that
/// the rows referring to a failed row can say which line failed).
pub fn row_id(targets: &[Target], cells: &[Option<String>]) -> Option<String> {
    let i = targets.iter().position(|t| *t == Target::Id)?;
    let cell = cells.get(i)?.as_deref()?.trim();
    uuid(cell).ok()
}

fn uuid(cell: &str) -> Result<String, CrmError> {
    let b = cell.as_bytes();
    let ok = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(cell.to_ascii_lowercase())
    } else {
        Err(CrmError::invalid("id", "must be a uuid"))
    }
}

/// A custom field's cell as the JSON value its definition takes: a boolean field reads
/// true/false (also yes/no, 1/0), everything else stays text ([`fields::custom_values`]
/// reads numbers from text). A key without a definition stays text, to be refused by name.
fn custom_cell(definitions: &[Definition], key: &str, cell: &str) -> Value {
    let boolean = definitions
        .iter()
        .any(|d| d.key == key && d.field_type == FieldType::Boolean);
    if boolean {
        match cell.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => return Value::Bool(true),
            "false" | "no" | "0" => return Value::Bool(false),
            _ => {}
        }
    }
    Value::String(cell.to_owned())
}

#[cfg(test)]
mod unit {
    use super::*;
    use serde_json::json;

    fn header(columns: &[&str]) -> Vec<String> {
        columns.iter().map(|c| (*c).to_owned()).collect()
    }

    fn mapping(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    fn refused<T: std::fmt::Debug>(r: Result<T, CrmError>) -> (String, String) {
        match r {
            Err(CrmError::InvalidInput { field, message }) => (field.into_owned(), message),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }

    fn cells(values: &[&str]) -> Vec<Option<String>> {
        values.iter().map(|v| Some((*v).to_owned())).collect()
    }

    fn definitions() -> Vec<Definition> {
        fields::definitions_from_json(&json!([
            {"key": "tier", "label": "Tier", "type": "select", "required": false, "options": ["gold", "silver"]},
            {"key": "vip", "label": "VIP", "type": "boolean"},
            {"key": "score", "label": "Score", "type": "number"},
            {"key": "region", "label": "Region", "type": "text", "required": true}
        ]))
        .expect("valid definitions")
    }

    /// The header of the export's contacts.csv.
    const EXPORT_CONTACTS: [&str; 17] = [
        "tenant_id",
        "id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "title",
        "organization_id",
        "assigned_to",
        "merged_into",
        "deleted_at",
        "deleted_by",
        "created_at",
        "updated_at",
        "created_by",
        "updated_by",
        "custom.tier",
    ];

    #[test]
    fn the_exports_own_columns_import_as_they_are() {
        let t = targets(Kind::Contacts, &header(&EXPORT_CONTACTS), &Map::new()).unwrap();
        let names: Vec<Option<String>> = t.iter().map(Target::name).collect();
        assert_eq!(
            names,
            [
                None,
                Some("id"),
                Some("first_name"),
                Some("last_name"),
                Some("email"),
                Some("phone"),
                Some("title"),
                Some("organization_id"),
                Some("assigned_to"),
                None,
                Some("deleted_at"),
                None,
                None,
                None,
                None,
                None,
                Some("custom.tier"),
            ]
            .map(|n| n.map(str::to_owned))
        );
        for (target, name) in t.iter().zip(&names) {
            assert_eq!(&Target::from_name(Kind::Contacts, name.as_deref()), target);
        }
    }

    #[test]
    fn other_files_map_their_columns() {
        let t = targets(
            Kind::Contacts,
            &header(&["Given name", "E-mail", "Notes", "phone"]),
            &mapping(json!({"Given name": "first_name", "E-mail": "email", "Notes": null})),
        )
        .unwrap();
        assert_eq!(
            t,
            [
                Target::Field("first_name".into()),
                Target::Field("email".into()),
                Target::Ignored,
                Target::Field("phone".into()),
            ]
        );
        // An organization's fields are its own.
        let t = targets(
            Kind::Organizations,
            &header(&["name", "parent_id", "website", "custom_fields"]),
            &Map::new(),
        )
        .unwrap();
        assert_eq!(t[3], Target::CustomObject);
    }

    #[test]
    fn unknown_columns_and_bad_mappings_are_refused_by_name() {
        assert_eq!(
            refused(targets(
                Kind::Contacts,
                &header(&["first_name", "emial"]),
                &Map::new()
            )),
            (
                "columns.emial".to_owned(),
                "is not a field of a contact: map it to one, or to null to leave it out (mapping)"
                    .to_owned()
            )
        );
        // A contact's field is not an organization's.
        assert_eq!(
            refused(targets(
                Kind::Organizations,
                &header(&["name", "email"]),
                &Map::new()
            ))
            .0,
            "columns.email"
        );
        assert_eq!(
            refused(targets(
                Kind::Contacts,
                &header(&["first_name"]),
                &mapping(json!({"Name": "first_name"}))
            )),
            (
                "mapping.Name".to_owned(),
                "is not a column of the file".to_owned()
            )
        );
        assert_eq!(
            refused(targets(
                Kind::Contacts,
                &header(&["Name"]),
                &mapping(json!({"Name": "full_name"}))
            ))
            .0,
            "mapping.Name"
        );
        assert_eq!(
            refused(targets(
                Kind::Contacts,
                &header(&["Name"]),
                &mapping(json!({"Name": 1}))
            ))
            .1,
            "must be a field name or null"
        );
        assert_eq!(
            refused(targets(
                Kind::Contacts,
                &header(&["first_name", "Mail", "email"]),
                &mapping(json!({"Mail": "email"}))
            )),
            (
                "columns.email".to_owned(),
                "feeds email like an earlier column".to_owned()
            )
        );
        // A file that only updates may leave the required field out (each row that would
        // create a record is refused by name instead, see `Row::missing`).
        assert!(targets(Kind::Contacts, &header(&["email", "title"]), &Map::new()).is_ok());
        let wide: Vec<String> = (0..=MAX_COLUMNS).map(|i| format!("c{i}")).collect();
        assert_eq!(
            refused(targets(Kind::Contacts, &wide, &Map::new())).0,
            "columns"
        );
    }

    fn contact_targets(columns: &[&str]) -> Vec<Target> {
        targets(Kind::Contacts, &header(columns), &Map::new()).unwrap()
    }

    #[test]
    fn a_row_becomes_a_checked_record() {
        let t = contact_targets(&[
            "id",
            "first_name",
            "email",
            "phone",
            "custom.tier",
            "custom.vip",
            "custom.score",
            "custom.region",
            "deleted_at",
            "created_at",
        ]);
        let r = row(
            Kind::Contacts,
            &t,
            &definitions(),
            &cells(&[
                "0F8FAD5B-D9CB-469F-A165-70867728950E",
                "  Zoë ",
                "zoe@example.test",
                "",
                "gold",
                "Yes",
                "12.5",
                "North",
                "",
                "2020-01-01",
            ]),
        )
        .unwrap();
        assert_eq!(
            r.id.as_deref(),
            Some("0f8fad5b-d9cb-469f-a165-70867728950e")
        );
        assert_eq!(r.deleted_at, None);
        assert!(r.missing.is_empty());
        assert_eq!(
            Value::Object(r.record),
            json!({"first_name": "Zoë", "email": "zoe@example.test",
                   "custom_fields": {"tier": "gold", "vip": true, "score": 12.5, "region": "North"}})
        );
    }

    #[test]
    fn what_a_new_record_would_lack_is_listed_not_refused() {
        let t = contact_targets(&["first_name", "email", "custom.tier"]);
        let r = row(
            Kind::Contacts,
            &t,
            &definitions(),
            &[None, Some("a@b.test".into()), None],
        )
        .unwrap();
        assert_eq!(r.missing, ["first_name", "custom_fields.region"]);
        assert_eq!(
            Value::Object(r.record),
            json!({"email": "a@b.test", "custom_fields": {}})
        );
    }

    #[test]
    fn the_first_broken_rule_names_its_field() {
        let t = contact_targets(&[
            "id",
            "first_name",
            "email",
            "organization_id",
            "custom.tier",
            "custom.shoe_size",
            "custom_fields",
        ]);
        let defs = definitions();
        let check = |values: &[&str]| refused(row(Kind::Contacts, &t, &defs, &cells(values)));
        assert_eq!(
            check(&["x", "Ann", "", "", "", "", ""]),
            ("id".to_owned(), "must be a uuid".to_owned())
        );
        assert_eq!(
            check(&["", "Ann", "not-an-email", "", "", "", ""]),
            ("email".to_owned(), "must be an email address".to_owned())
        );
        assert_eq!(
            check(&["", "Ann", "", "42", "", "", ""]).0,
            "organization_id"
        );
        assert_eq!(
            check(&["", "Ann", "", "", "bronze", "", ""]),
            (
                "custom_fields.tier".to_owned(),
                "must be one of gold, silver".to_owned()
            )
        );
        assert_eq!(
            check(&["", "Ann", "", "", "", "44", ""]),
            (
                "custom_fields.shoe_size".to_owned(),
                "no such custom field".to_owned()
            )
        );
        assert_eq!(
            check(&["", "Ann", "", "", "", "", "[1]"]).0,
            "custom_fields"
        );
        assert_eq!(
            refused(row(Kind::Contacts, &t, &defs, &cells(&["", "Ann"]))),
            (
                "row".to_owned(),
                "has 2 fields where the header has 7".to_owned()
            )
        );
        // A control character is refused as the API refuses it.
        assert_eq!(check(&["", "Ann\u{7}", "", "", "", "", ""]).0, "first_name");
    }

    #[test]
    fn custom_values_from_a_json_column_and_from_their_own_columns() {
        let t = contact_targets(&["first_name", "custom_fields", "custom.tier"]);
        let r = row(
            Kind::Contacts,
            &t,
            &definitions(),
            &cells(&[
                "Ann",
                r#"{"tier": "silver", "score": "3", "region": "West"}"#,
                "gold",
            ]),
        )
        .unwrap();
        assert_eq!(
            r.record["custom_fields"],
            json!({"tier": "gold", "score": 3, "region": "West"})
        );
        // Booleans read as the export writes them, and refuse anything else.
        let t = contact_targets(&["first_name", "custom.vip"]);
        let vip = |cell: &str| row(Kind::Contacts, &t, &definitions(), &cells(&["Ann", cell]));
        assert_eq!(vip("false").unwrap().record["custom_fields"]["vip"], false);
        assert_eq!(vip("1").unwrap().record["custom_fields"]["vip"], true);
        assert_eq!(
            refused(vip("maybe")),
            (
                "custom_fields.vip".to_owned(),
                "must be true or false".to_owned()
            )
        );
    }

    #[test]
    fn a_failing_row_still_names_its_id() {
        let t = contact_targets(&["first_name", "id", "email"]);
        let id = "0f8fad5b-d9cb-469f-a165-70867728950e";
        assert!(row(Kind::Contacts, &t, &[], &cells(&["Ann", id, "nope"])).is_err());
        assert_eq!(
            row_id(&t, &cells(&["Ann", id, "nope"])).as_deref(),
            Some(id)
        );
        assert_eq!(row_id(&t, &cells(&["Ann", "x", "nope"])), None);
        assert_eq!(row_id(&t, &cells(&["Ann"])), None);
        assert_eq!(
            row_id(&contact_targets(&["first_name"]), &cells(&["Ann"])),
            None
        );
    }

    #[test]
    fn a_row_deleted_in_the_source_keeps_its_time() {
        let t = contact_targets(&["first_name", "deleted_at"]);
        let deleted = |cell: &str| row(Kind::Contacts, &t, &[], &cells(&["Ann", cell]));
        // As the export writes it (PostgreSQL's JSON of a timestamptz).
        let r = deleted("2026-01-02T03:04:05.123456+00:00").unwrap();
        assert_eq!(
            r.deleted_at.as_deref(),
            Some("2026-01-02T03:04:05.123456+00:00")
        );
        assert_eq!(
            refused(deleted("yesterday")),
            (
                "deleted_at".to_owned(),
                "must be a timestamp such as 2026-11-24T10:00:00Z".to_owned()
            )
        );
    }

    #[test]
    fn organizations() {
        let t = targets(
            Kind::Organizations,
            &header(&["id", "name", "size", "website", "parent_id"]),
            &Map::new(),
        )
        .unwrap();
        let r = row(
            Kind::Organizations,
            &t,
            &[],
            &cells(&["", "Acme", "11-50", "https://acme.test", ""]),
        )
        .unwrap();
        assert_eq!(
            Value::Object(r.record),
            json!({"name": "Acme", "size": "11-50", "website": "https://acme.test/", "custom_fields": {}})
        );
        assert_eq!(
            refused(row(
                Kind::Organizations,
                &t,
                &[],
                &cells(&["", "Acme", "12", "", ""])
            ))
            .0,
            "size"
        );
    }
}
