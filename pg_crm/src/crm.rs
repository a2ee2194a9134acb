//! The CRM's rules as SQL-callable functions: thin wrappers over [`crate::domain`] that the
//! triggers and `api` functions of `sql/crm.sql` call. None of them reads a table (no SPI):
//! the SQL side passes what the rule needs, so each is IMMUTABLE and costs a function call.

use crate::domain::{currency, duplicates, fields, import, pipeline};
use crate::error::{CrmError, OrRaise};
use pgrx::prelude::*;
use pgrx::JsonB;
use serde_json::{json, Value};

/// Whether a code is an active ISO 4217 currency (the deals table's CHECK).
#[pg_extern(immutable, strict, parallel_safe, requires = ["schema"])]
fn currency_known(code: &str) -> bool {
    currency::is_known(code)
}

/// The standard pipeline every new tenant gets.
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn default_stages() -> TableIterator<
    'static,
    (
        name!(key, String),
        name!(label, String),
        name!(position, i32),
        name!(probability, i16),
        name!(kind, String),
    ),
> {
    TableIterator::new(pipeline::DEFAULT_STAGES.iter().enumerate().map(
        |(i, (key, label, probability, kind))| {
            (
                (*key).to_owned(),
                (*label).to_owned(),
                i32::try_from(i * 10).unwrap_or(i32::MAX),
                i16::from(*probability),
                kind_name(*kind).to_owned(),
            )
        },
    ))
}

fn kind_name(kind: pipeline::StageKind) -> &'static str {
    match kind {
        pipeline::StageKind::Open => "open",
        pipeline::StageKind::Won => "won",
        pipeline::StageKind::Lost => "lost",
    }
}

fn stage(key: &str, kind: &str, default_probability: i32) -> pipeline::Stage {
    pipeline::Stage {
        key: key.to_owned(),
        kind: match kind {
            "won" => pipeline::StageKind::Won,
            "lost" => pipeline::StageKind::Lost,
            _ => pipeline::StageKind::Open,
        },
        default_probability: u8::try_from(default_probability.clamp(0, 100)).unwrap_or(0),
    }
}

fn transition_error(e: pipeline::TransitionError) -> CrmError {
    use pipeline::TransitionError as T;
    let field = match e {
        T::ReasonRequired | T::ReasonTooLong | T::ReasonNotExpected => "reason",
        T::Probability(_) => "probability",
        T::SameStage | T::Closed | T::NotClosed | T::ReopenIntoClosedStage => "stage",
    };
    CrmError::invalid(field, e.to_string())
}

/// What a deal's move from one stage to another does (domain::pipeline): `{probability,
/// closes, reopens, lost_reason}`, or 22023 naming the field that breaks a rule. A NULL
/// `from_key` is a new deal entering its first stage; `reopen` is an explicit reopen.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn stage_transition(
    from_key: Option<&str>,
    from_kind: Option<&str>,
    to_key: &str,
    to_kind: &str,
    to_default_probability: i32,
    probability: Option<i32>,
    reason: Option<&str>,
    reopen: bool,
) -> JsonB {
    let target = stage(to_key, to_kind, to_default_probability);
    let given = probability.map(i64::from);
    let outcome = match (from_key, from_kind) {
        (Some(key), Some(kind)) if reopen => {
            pipeline::reopen(&stage(key, kind, 0), &target, given).map_err(transition_error)
        }
        (Some(key), Some(kind)) => {
            pipeline::move_deal(&stage(key, kind, 0), &target, given, reason)
                .map_err(transition_error)
        }
        // A new deal: it enters its stage from nowhere.
        _ => pipeline::move_deal(&stage("", "open", 0), &target, given, reason)
            .map_err(transition_error),
    }
    .or_raise();
    JsonB(json!({
        "probability": outcome.probability,
        "closes": outcome.closes,
        "reopens": outcome.reopens,
        "lost_reason": outcome.lost_reason,
    }))
}

/// Checks and normalises the fields of a record being created (`mode` 'create') or changed
/// ('update') (domain::fields): the object to write, or 22023 naming the field.
#[pg_extern(immutable, strict, parallel_safe, requires = ["schema"])]
fn fields_check(entity: &str, mode: &str, values: JsonB) -> JsonB {
    let entity = fields::Entity::parse(entity)
        .ok_or_else(|| {
            CrmError::invalid("entity", "must be organization, contact, deal or activity")
        })
        .or_raise();
    let mode = if mode == "create" {
        fields::Mode::Create
    } else {
        fields::Mode::Update
    };
    JsonB(Value::Object(
        fields::validate(entity, mode, &values.0).or_raise(),
    ))
}

/// Checks a record's custom field values against the tenant's definitions (a JSON array
/// of `{key, label, type, required, options}`): the object to store, or 22023 naming
/// `custom_fields.<key>`.
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn custom_fields_check(definitions: JsonB, old: Option<JsonB>, new: JsonB) -> JsonB {
    let definitions = fields::definitions_from_json(&definitions.0).or_raise();
    JsonB(Value::Object(
        fields::custom_values(&definitions, old.as_ref().map(|o| &o.0), &new.0).or_raise(),
    ))
}

/// Checks a custom field definition: `{key, label, type, required, options}` normalised, or
/// 22023 naming the argument.
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn custom_field_definition(
    key: Option<&str>,
    label: Option<&str>,
    field_type: Option<&str>,
    required: Option<bool>,
    options: Option<JsonB>,
) -> JsonB {
    let options: Vec<String> = match options.map(|o| o.0) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|item| match item {
                Value::String(s) => Ok(s),
                _ => Err(CrmError::invalid("options", "must be a list of strings")),
            })
            .collect::<Result<_, _>>()
            .or_raise(),
        Some(_) => CrmError::invalid("options", "must be a list of strings").raise(),
    };
    let definition = fields::definition(
        key.unwrap_or_default(),
        label.unwrap_or_default(),
        field_type.unwrap_or_default(),
        required.unwrap_or(false),
        &options,
    )
    .or_raise();
    JsonB(json!({
        "key": definition.key,
        "label": definition.label,
        "type": definition.field_type.as_str(),
        "required": definition.required,
        "options": definition.options,
    }))
}

fn found(m: Option<duplicates::Match>) -> Option<JsonB> {
    m.map(|m| {
        JsonB(json!({
            "score": (m.score * 1000.0).round() / 1000.0,
            "reason": m.reason.as_str(),
        }))
    })
}

/// How likely contact b duplicates contact a (domain::duplicates): `{score, reason}` or NULL.
#[allow(clippy::too_many_arguments)]
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn contact_duplicate(
    first_name: Option<&str>,
    last_name: Option<&str>,
    email: Option<&str>,
    phone: Option<&str>,
    organization_id: Option<pgrx::Uuid>,
    other_first_name: Option<&str>,
    other_last_name: Option<&str>,
    other_email: Option<&str>,
    other_phone: Option<&str>,
    other_organization_id: Option<pgrx::Uuid>,
) -> Option<JsonB> {
    let (org_a, org_b) = (
        organization_id.map(|u| u.to_string()),
        other_organization_id.map(|u| u.to_string()),
    );
    let a = duplicates::Person {
        first_name: first_name.unwrap_or_default(),
        last_name: last_name.unwrap_or_default(),
        email,
        phone,
        organization_id: org_a.as_deref(),
    };
    let b = duplicates::Person {
        first_name: other_first_name.unwrap_or_default(),
        last_name: other_last_name.unwrap_or_default(),
        email: other_email,
        phone: other_phone,
        organization_id: org_b.as_deref(),
    };
    found(duplicates::score(&a, &b))
}

/// How likely organization b duplicates organization a: `{score, reason}` or NULL.
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn organization_duplicate(
    name: Option<&str>,
    website_domain: Option<&str>,
    other_name: Option<&str>,
    other_website_domain: Option<&str>,
) -> Option<JsonB> {
    let a = duplicates::Company {
        name: name.unwrap_or_default(),
        website_domain,
    };
    let b = duplicates::Company {
        name: other_name.unwrap_or_default(),
        website_domain: other_website_domain,
    };
    found(duplicates::score_company(&a, &b))
}

/// An import file's columns (domain::import::targets): a JSON array with, per column, the
/// field it feeds (`first_name`, `id`, `deleted_at`, `custom.<key>`, `custom_fields`) or
/// null; or 22023 naming the column or mapping key. `kind`: contacts or organizations.
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn import_targets(kind: &str, header: Vec<Option<String>>, mapping: Option<JsonB>) -> JsonB {
    let kind = import_kind(kind);
    let header: Vec<String> = header.into_iter().map(Option::unwrap_or_default).collect();
    let mapping = match mapping.map(|m| m.0) {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => CrmError::invalid("mapping", "must be a JSON object of column: field").raise(),
    };
    let targets = import::targets(kind, &header, &mapping).or_raise();
    JsonB(Value::Array(
        targets
            .iter()
            .map(|t| t.name().map_or(Value::Null, Value::String))
            .collect(),
    ))
}

/// An import file's columns as import_targets gives them, but never raising (a refusal
/// raised would put the file's header, which may be a row of personal data when the file
/// has none, into the server log): `{columns}` or `{error: {field, message}}`.
#[pg_extern(immutable, parallel_safe, requires = ["schema"])]
fn import_targets_checked(
    kind: &str,
    header: Vec<Option<String>>,
    mapping: Option<JsonB>,
) -> JsonB {
    let kind = import_kind(kind);
    let header: Vec<String> = header.into_iter().map(Option::unwrap_or_default).collect();
    let checked = match mapping.map(|m| m.0) {
        None | Some(Value::Null) => Ok(serde_json::Map::new()),
        Some(Value::Object(m)) => Ok(m),
        Some(_) => Err(CrmError::invalid(
            "mapping",
            "must be a JSON object of column: field",
        )),
    }
    .and_then(|mapping| import::targets(kind, &header, &mapping));
    JsonB(match checked {
        Ok(targets) => json!({"columns": targets
            .iter()
            .map(|t| t.name().map_or(Value::Null, Value::String))
            .collect::<Vec<Value>>()}),
        Err(CrmError::InvalidInput { field, message }) => {
            json!({"error": {"field": field, "message": message}})
        }
        Err(other) => json!({"error": {"field": "columns", "message": other.to_string()}}),
    })
}

/// One import row (domain::import::row), never an error: `{id, deleted_at, record, missing}`,
/// or `{id, error: {field, message}}` for the first rule the row breaks (`id` if the row
/// gives a valid one). `targets` is what
/// import_targets returned, `definitions` the tenant's custom fields for the entity.
#[pg_extern(immutable, strict, parallel_safe, requires = ["schema"])]
fn import_row(kind: &str, targets: JsonB, definitions: JsonB, cells: Vec<Option<String>>) -> JsonB {
    let kind = import_kind(kind);
    let targets: Vec<import::Target> = match &targets.0 {
        Value::Array(names) => names
            .iter()
            .map(|n| import::Target::from_name(kind, n.as_str()))
            .collect(),
        _ => CrmError::invalid("targets", "must be a JSON array").raise(),
    };
    let definitions = fields::definitions_from_json(&definitions.0).or_raise();
    JsonB(match import::row(kind, &targets, &definitions, &cells) {
        Ok(row) => json!({
            "id": row.id,
            "deleted_at": row.deleted_at,
            "record": row.record,
            "missing": row.missing,
        }),
        Err(CrmError::InvalidInput { field, message }) => json!({
            "id": import::row_id(&targets, &cells),
            "error": {"field": field, "message": message},
        }),
        Err(other) => json!({
            "id": import::row_id(&targets, &cells),
            "error": {"field": "row", "message": other.to_string()},
        }),
    })
}

fn import_kind(kind: &str) -> import::Kind {
    import::Kind::parse(kind)
        .ok_or_else(|| CrmError::invalid("entity", "must be contacts or organizations"))
        .or_raise()
}
